//! The command line's arguments (clap derive): every command, its flags and their help text.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use tinfer::model::{Attention, Device, Dtype, Gemm, Gemv, HeadSplit, KvDtype, KvLayout, Limits, Options};
use tinfer::sampler::{Sampler, SamplerConfig};
use tinfer::tools::convert::OutDtype;

pub use super::parse::{parse_size, process_escapes};

#[derive(Parser)]
#[command(name = "tinfer", version, about = "A tiny LLM inference engine for Llama-family models", long_about = None)]
#[command(args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// A usage mistake (a flag's value out of range, flags that do not go together): exit code 1,
/// like clap's own parse errors.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Fail with a usage error (exit code 1).
macro_rules! usage {
    ($($t:tt)*) => { return Err(anyhow::Error::new($crate::cli::args::Usage(format!($($t)*)))) };
}
pub(crate) use usage;

pub use super::model_path::ModelPath;

#[derive(Args, Clone)]
pub struct ModelArgs {
    #[command(flatten)]
    pub path: ModelPath,
    /// Where the forward pass runs: auto picks a hardware GPU when there is one, else the CPU;
    /// gpu also accepts a CPU Vulkan adapter such as lavapipe.
    #[arg(long, value_enum, default_value = "auto", env = "TINFER_DEVICE")]
    pub device: Device,
    /// Pick the GPU adapter whose name contains NAME (case-insensitive), e.g. llvmpipe or nvidia.
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Cache KV blocks by prefix (set by the commands that reuse prompts: serve, chat).
    #[arg(skip)]
    pub prefix_cache: bool,
    /// GPU attention kernels: flash (tiled prefill with online softmax, split-K decode) or naive
    /// (scores materialised in memory; the slow twin).
    #[arg(long, value_enum, default_value = "flash")]
    pub attention: Attention,
    /// GPU KV cache layout: paged (pages from a pool through block tables, shared between
    /// sequences) or contiguous (one region of the whole context per sequence).
    #[arg(long, value_enum, default_value = "paged")]
    pub kv: KvLayout,
    /// Tokens per KV page (a multiple of 16).
    #[arg(long, default_value_t = 16)]
    pub page: usize,
    /// KV pool size in pages (default: enough for every sequence to reach the full context, or
    /// what one storage binding holds if less: sequences then share it and are preempted).
    #[arg(long, value_name = "N")]
    pub kv_blocks: Option<usize>,
    /// KV pool size in bytes over all layers, e.g. 64MiB or 1GiB (instead of --kv-blocks).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "kv_blocks")]
    pub kv_memory: Option<u64>,
    /// GPU weight storage: auto (a GGUF's quantized blocks as stored where the GPU has a kernel
    /// for them, the rest f16), f16 (f32
    /// accumulation), f32 (matches the CPU reference to rounding), q8_0 or q4_k (quantized at
    /// load with llama.cpp's reference quantizers). The CPU path always computes in f32.
    #[arg(long, value_enum, default_value = "auto")]
    pub dtype: Dtype,
    /// GPU KV cache values: auto (f16 on a hardware GPU unless --dtype f32; f32 on a CPU adapter
    /// such as lavapipe), f16 (half the memory; rounded once when written), f32 (matches the
    /// CPU reference to rounding).
    #[arg(long, value_enum, default_value = "auto")]
    pub kv_dtype: KvDtype,
    /// GPU decode GEMVs: auto (split on hardware GPUs, rows on CPU adapters), split (each row
    /// across a workgroup: fills a large GPU), rows (a row per invocation: fastest on lavapipe).
    #[arg(long, value_enum, default_value = "auto")]
    pub gemv: Gemv,
    /// GPU prompt GEMMs: auto (tiled on hardware GPUs, rows on CPU adapters), tiled (64 × 64
    /// output tiles staged through workgroup memory), rows (four rows × 8 tokens an invocation,
    /// no barriers: fastest on lavapipe).
    #[arg(long, value_enum, default_value = "auto")]
    pub gemm: Gemm,
    /// GPU attention kernels (prefill and decode): auto (lanes on hardware GPUs, whole on CPU
    /// adapters), lanes (head_dim split across lanes: 18 floats of state an invocation at any
    /// head_dim), whole (the whole head in an invocation's registers, no barriers in the key
    /// loop: fastest on lavapipe).
    #[arg(long, value_enum, default_value = "auto")]
    pub head_split: HeadSplit,
    /// GPU limits to request: adapter (all it offers) or webgpu (WebGPU's defaults only: 128 MiB
    /// storage bindings, 8192-texel textures with 256 layers), to check a model fits a browser.
    #[arg(long, value_enum, default_value = "adapter")]
    pub limits: Limits,
    /// Greedy decode steps submitted to the GPU together (1 to 64): each step's token is picked
    /// and fed to the next on the device, and the ids are read back together. Default 8 on a
    /// GPU; 1 gives a submit and a readback per token. Same tokens either way; a larger N
    /// streams the text in bursts of N tokens and computes up to N - 1 steps in vain when the
    /// reply ends early (or on Ctrl-C). Applies to greedy decoding without a repetition penalty
    /// or --ignore-eos (those pick each token on the host).
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub decode_ahead: Option<u16>,
    #[command(flatten)]
    pub lora: super::lora_args::LoraArgs,
}

impl ModelArgs {
    /// `--decode-ahead`, else the engine's default for the device the model runs on.
    pub fn decode_ahead(&self, model: &tinfer::model::Model) -> usize {
        match self.decode_ahead {
            Some(n) => n as usize,
            None if model.is_gpu() => tinfer::engine::DECODE_AHEAD,
            None => 1,
        }
    }

    pub fn options(&self, max_seqs: usize) -> Options {
        Options {
            attention: self.attention,
            kv: self.kv,
            page: self.page,
            kv_blocks: self.kv_blocks,
            kv_memory: self.kv_memory,
            max_seqs,
            dtype: self.dtype,
            kv_dtype: self.kv_dtype,
            gemv: self.gemv,
            gemm: self.gemm,
            head_split: self.head_split,
            limits: self.limits,
            prefix_cache: self.prefix_cache,
            ..Options::default()
        }
    }
}

/// `--seed`: a number, or -1 for a fresh one.
#[derive(Clone, Copy, Debug)]
pub enum Seed {
    Fixed(u64),
    Random,
}

fn parse_seed(s: &str) -> Result<Seed, String> {
    if s.trim() == "-1" {
        return Ok(Seed::Random);
    }
    s.trim().parse::<u64>().map(Seed::Fixed).map_err(|_| {
        format!("{s:?} is not a seed: use a whole number from 0 to 18446744073709551615, or -1 for a random one")
    })
}

/// A fresh seed: the clock's nanoseconds mixed with the process id (runs started together
/// differ, and --n-seq's SEED+i of one run do not land on another's).
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut rng = tinfer::sampler::Rng::new(nanos ^ (u64::from(std::process::id()) << 32));
    rng.next_u64()
}

/// How a command that runs the model uses the CPU and the context.
#[derive(Args, Clone)]
pub struct RunArgs {
    /// CPU threads: the CPU forward's thread pool (and lavapipe's, LP_NUM_THREADS); -1 or none:
    /// one per core. (llama-cli's -t; the temperature is --temperature / --temp.)
    #[arg(long, short = 't', value_name = "N", allow_negative_numbers = true)]
    pub threads: Option<i64>,
    /// Context size in tokens, at most the model's own (default: the model's, at most 4096, as
    /// llama.cpp); it sizes the KV cache.
    #[arg(long, short = 'c', value_name = "N", allow_negative_numbers = true)]
    pub ctx_size: Option<usize>,
}

impl RunArgs {
    /// Set the CPU threads for the whole process; call before anything starts a thread pool.
    pub fn apply_threads(&self) -> Result<()> {
        let n = match self.threads {
            None | Some(-1) => return Ok(()),
            Some(n) if !(1..=1024).contains(&n) => {
                usage!("--threads must be between 1 and 1024, or -1 for one per core, got {n}")
            }
            Some(n) => n as usize,
        };
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        if n > cores {
            eprintln!("warning: --threads {n} is more than the {cores} cores here: expect it to be slower, not faster");
        }
        if std::env::var_os("LP_NUM_THREADS").is_none() {
            std::env::set_var("LP_NUM_THREADS", n.to_string());
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {n} CPU threads: {e}"))
    }
}

/// Where the prompt comes from, and whether to show what the model receives.
#[derive(Args, Clone)]
pub struct PromptArgs {
    /// The prompt (default: read from stdin; one final newline is dropped, as `echo` adds it).
    /// Escapes typed here (\n, \t, \\, \xHH) are read as llama-cli reads them, unless
    /// --no-escape; a prompt from a file or stdin is taken as it is.
    #[arg(long, short, conflicts_with = "file", allow_hyphen_values = true)]
    pub prompt: Option<String>,
    /// Take --prompt and --stop as typed, backslashes and all.
    #[arg(long)]
    pub no_escape: bool,
    /// Read the prompt from FILE (UTF-8; one final "\n" is dropped, as llama-cli does).
    #[arg(long, short, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Print the prompt the model receives (after the chat template) and its tokens, id and
    /// text of each, on stderr.
    #[arg(long)]
    pub verbose_prompt: bool,
}

#[derive(Args, Clone)]
pub struct SampleArgs {
    /// Maximum number of tokens to generate; -1: until an end token or the end of the context.
    #[arg(
        long,
        short = 'n',
        default_value_t = 256,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    pub max_tokens: i64,
    /// Sampling temperature; 0 picks the most likely token every time (greedy, deterministic).
    #[arg(long, visible_alias = "temp", default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Sample only among the K most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub top_k: i64,
    /// Sample only among the most likely tokens whose probabilities add up to P (1 = no limit).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0 = off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalise tokens already in the context: positive logits are divided by R, negative
    /// multiplied (1 = off; 1.1 to 1.3 are common).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Subtract P from the logit of every token generated so far (0 = off; -2 to 2; OpenAI's
    /// presence_penalty).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Subtract P times its count from the logit of every token generated so far (0 = off;
    /// -2 to 2; OpenAI's frequency_penalty).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Random seed (0 to 2^64-1): the same seed and settings give the same text; -1 or none: a
    /// fresh seed, printed in the stats line.
    #[arg(long, short = 's', allow_negative_numbers = true, value_parser = parse_seed)]
    pub seed: Option<Seed>,
    /// Do not stop at the model's end tokens, and never sample them (llama-cli's --ignore-eos).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Stop when the text contains STRING (repeatable); the stop string is not printed. Escapes
    /// are read as llama-cli reads them: \n, \r, \t, \\, \", \' and \xHH.
    #[arg(long, value_name = "STRING", allow_hyphen_values = true)]
    pub stop: Vec<String>,
}

impl SampleArgs {
    pub fn sampler(&self) -> Result<Sampler> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            usage!("--temperature must be a number >= 0 (0 = greedy), got {t}");
        }
        for (name, v) in [("--top-p", self.top_p), ("--min-p", self.min_p)] {
            if !(0.0..=1.0).contains(&v) {
                usage!("{name} must be between 0 and 1, got {v}");
            }
        }
        if self.top_k < 0 {
            usage!("--top-k must be >= 0 (0 = no limit), got {}", self.top_k);
        }
        let r = self.repeat_penalty;
        if !r.is_finite() || r <= 0.0 {
            usage!("--repeat-penalty must be a number > 0 (1 = off), got {r}");
        }
        for (name, v) in [
            ("--presence-penalty", self.presence_penalty),
            ("--frequency-penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                usage!("{name} must be between -2 and 2 (0 = off), got {v}");
            }
        }
        if self.max_tokens < -1 {
            usage!(
                "-n/--max-tokens must be >= 0, or -1 for no limit, got {}",
                self.max_tokens
            );
        }
        let seed = match self.seed {
            None | Some(Seed::Random) => random_seed(),
            Some(Seed::Fixed(s)) => s,
        };
        Ok(Sampler::new(SamplerConfig {
            temperature: t,
            top_k: self.top_k as usize,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: r,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            seed,
        }))
    }

    /// The stop strings, escapes read unless `no_escape`; an empty one is a usage error.
    pub fn stops(&self, no_escape: bool) -> Result<Vec<String>> {
        let mut out = vec![];
        for stop in &self.stop {
            let s = if no_escape {
                stop.clone()
            } else {
                process_escapes(stop).map_err(|e| anyhow::Error::new(Usage(format!("--stop {e}"))))?
            };
            if s.is_empty() {
                usage!("--stop needs a string: an empty one would stop before anything is generated (it must not be empty)");
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The output budget: -1 is no limit (the context ends it).
    pub fn max_tokens(&self) -> usize {
        usize::try_from(self.max_tokens).unwrap_or(usize::MAX)
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Continue a text: stdout gets only the generated text, streamed as it is produced, and a
    /// final newline; the stats go to stderr.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        input: PromptArgs,
        /// Print the prompt before the generated text.
        #[arg(long)]
        echo: bool,
        /// Sample K continuations of the prompt at once: the prompt is run once and its KV pages
        /// are shared; each step runs the K sequences in one batch. Continuation i uses seed
        /// SEED + i. Printed one after another when all are done.
        #[arg(long, value_name = "K", default_value_t = 1)]
        n_seq: usize,
        /// The --lora adapters of each continuation, comma-separated, side by side: `base` (none),
        /// or --lora numbers from 1 joined by +, each with its own optional :SCALE (`1+2:0.5` is
        /// adapter 1 at 1 plus adapter 2 at 0.5). --n-seq defaults to the number of entries.
        #[arg(long, value_name = "LIST")]
        lora_seq: Option<String>,
        #[command(flatten)]
        spec: super::spec_args::SpecArgs,
        #[command(flatten)]
        sample: SampleArgs,
    },
    /// Chat through the model's chat template: one turn with --prompt or --file, else an
    /// interactive session (the KV cache is kept across turns; /help lists the commands; Ctrl-C
    /// stops a reply, Ctrl-C at the prompt or Ctrl-D ends).
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        input: PromptArgs,
        /// System message (default: the template's own, if it has one).
        #[arg(long, allow_hyphen_values = true)]
        system: Option<String>,
        /// When the conversation outgrows the context, fail the turn instead of dropping the
        /// oldest messages (the system message is always kept).
        #[arg(long)]
        no_context_shift: bool,
        #[command(flatten)]
        spec: super::spec_args::SpecArgs,
        #[command(flatten)]
        sample: SampleArgs,
    },
    /// Print the token ids of a text (default: read from stdin).
    Tokenize {
        #[command(flatten)]
        model: ModelPath,
        /// Print a JSON array (of {"id", "piece"} objects with --pieces).
        #[arg(long)]
        json: bool,
        /// Print each id with its token's text ("id<TAB>piece" per line).
        #[arg(long)]
        pieces: bool,
        /// Treat special-token text such as <|im_start|> as plain text, not as the special token.
        #[arg(long)]
        no_special: bool,
        /// Read the text from FILE (llama-tokenize's -f), all of it, as it is.
        #[arg(long, short, value_name = "FILE", conflicts_with = "text")]
        file: Option<PathBuf>,
        /// The text (default: read from stdin, all of it).
        #[arg(allow_hyphen_values = true)]
        text: Option<String>,
    },
    /// Mean negative log-likelihood and perplexity of a text file, in windows of --ctx tokens.
    Perplexity {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        run: RunArgs,
        /// The text file to score.
        #[arg(long, short)]
        file: PathBuf,
        /// Window size in tokens (default: the context, -c, so a text that fits is one window); also
        /// the context when -c is not given.
        #[arg(long)]
        ctx: Option<usize>,
        /// Score only the first N windows (llama-perplexity's --chunks): `--ctx 8192 --chunks 1`
        /// scores exactly the first 8192 tokens of a longer text.
        #[arg(long, value_name = "N")]
        chunks: Option<usize>,
        /// Print {"mean_nll", "ppl", "n_scored"} as JSON (with --kl-base, the KL report too).
        #[arg(long)]
        json: bool,
        /// Save this run's distributions (the top --kl-top log-probabilities of each scored
        /// position, the mass of the rest, the NLL) as the base for a later --kl-base run.
        #[arg(long, value_name = "FILE")]
        save_logits: Option<PathBuf>,
        /// Compare this run with a saved base (same text, --ctx and --chunks): mean, median and
        /// 99th-percentile KL divergence, top-1 agreement, perplexity difference ± its error.
        #[arg(long, value_name = "FILE", conflicts_with = "save_logits")]
        kl_base: Option<PathBuf>,
        /// How many of each position's most likely tokens --save-logits keeps.
        #[arg(long, value_name = "K", default_value_t = 256)]
        kl_top: usize,
    },
    /// The logits of a prompt's last position (every position with --all): the top tokens as a
    /// table, all of them as JSON, or a float32 .npy file.
    Logits(LogitsArgs),
    /// Describe a model: architecture, sizes, dtypes, memory, tokenizer, chat template.
    Info {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        run: RunArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks: `bench attention` times the attention variants (naive, flash, split-K) and KV
    /// layouts (paged, contiguous) over sequence lengths, head layouts and head dims.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Convert a GGUF file to an HF model directory (dequantised safetensors + tokenizer files).
    Convert {
        /// The .gguf file to read.
        input: PathBuf,
        /// The directory to write.
        output: PathBuf,
        /// Element type of the written weights (f32 keeps every dequantised value exactly).
        #[arg(long, value_enum, default_value = "f32")]
        dtype: OutDtype,
    },
    /// LoRA adapters: merge one into a model (`tinfer lora merge BASE ADAPTER OUT_DIR`).
    #[command(subcommand)]
    Lora(super::lora_args::LoraCommand),
    /// An OpenAI-compatible HTTP server: /v1/completions and /v1/chat/completions (streamed
    /// or not), /v1/models, /health, /tokenize, /detokenize; requests share the engine's
    /// batched steps.
    Serve {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        run: RunArgs,
        #[command(flatten)]
        serve: super::serve_args::ServeArgs,
    },
}

#[derive(Subcommand)]
pub enum BenchWhat {
    /// Attention kernels on random Q/K/V: prefill (N rows over N keys) and decode (1 row over N).
    Attention(AttentionArgs),
    /// The matrix kernels (GEMV, GEMM) and RMSNorm at a model's shapes, every variant the adapter
    /// runs, each checked against its CPU twin, then timed (GB/s against the measured host
    /// memory bandwidth, GFLOP/s).
    Kernels(KernelBenchArgs),
    /// Whole-model speed like llama-bench: prompt processing (ppN) and token generation (tgN) in
    /// tokens/s, median over repeats.
    Model(ModelBenchArgs),
    /// Speculative decoding: a prompt set (code edits, a summary, prose) greedily with and
    /// without --spec, decode tokens/s side by side, acceptance, and whether the texts agree.
    Spec(SpecBenchArgs),
}

#[derive(Args)]
pub struct ModelBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Random weights with the shapes of smollm2-135m, smollm2-360m, smollm2-1.7b,
    /// qwen2.5-0.5b, qwen2.5-1.5b, qwen3-0.6b, llama-3.2-1b, llama-3.2-3b, llama-3-8b,
    /// mistral-7b, qwen3-30b-a3b-2l (two MoE layers of Qwen3-30B-A3B, vocabulary cut to 16384)
    /// and qwen3-30b-a3b-2l-dense (its dense twin), or of a config.json file, instead of --model.
    #[arg(long, value_name = "NAME|CONFIG", conflicts_with = "model")]
    pub synthetic: Option<String>,
    /// With --synthetic: only the first N layers (a big shape's kernels without all its weights).
    #[arg(long, value_name = "N", requires = "synthetic")]
    pub layers: Option<usize>,
    /// With --synthetic: the context (default: the shape's, at most 4096).
    #[arg(long, short = 'c', value_name = "N", requires = "synthetic")]
    pub ctx_size: Option<usize>,
    /// Prompt lengths to process.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    pub pp: Vec<usize>,
    /// Generation lengths.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    pub tg: Vec<usize>,
    /// Timed runs per measurement, after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Print {"device", "adapter", "dtype", "ppN", "tgN", "dispatches_per_token", "bytes_per_token"}.
    #[arg(long)]
    pub json: bool,
    /// Also time each GPU kernel of a decode step, of a prefill step of this many rows, and of a
    /// batch step of this many sequences a row each (a server's decode step): dispatches and
    /// milliseconds per step, on stderr.
    #[arg(long, value_name = "ROWS")]
    pub profile: Option<usize>,
    /// Tokens in the cache before the profiled steps (attention grows with the context).
    #[arg(long, value_name = "POS", default_value_t = 1)]
    pub profile_at: usize,
}

#[derive(Args)]
pub struct KernelBenchArgs {
    /// Pick the GPU adapter whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Shapes of smollm2-135m, smollm2-360m, smollm2-1.7b, qwen2.5-0.5b, qwen2.5-1.5b,
    /// qwen3-0.6b, llama-3.2-1b, llama-3.2-3b, llama-3-8b, mistral-7b, or of a config.json file.
    #[arg(long, value_name = "NAME|CONFIG", default_value = "smollm2-135m")]
    pub shapes: String,
    /// Token rows of the GEMMs (prefill).
    #[arg(long, default_value_t = 64)]
    pub tokens: usize,
    /// Timed calls per measurement (median), after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Print the records as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only the variants and matrices whose "variant matrix" name contains one of these words,
    /// e.g. "f16 subgroups w_gate,lm_head".
    #[arg(long, value_delimiter = ',', value_name = "WORDS")]
    pub only: Vec<String>,
    /// Refuse to time (exit 2) a kernel whose output is off its CPU twin's by more than
    /// TOL × (1 + |want|) anywhere.
    #[arg(long, value_name = "TOL", default_value_t = tinfer::tools::bench_kernels::VALIDATE_TOL)]
    pub max_err: f64,
}

#[derive(Args)]
pub struct AttentionArgs {
    /// Pick the GPU adapter whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    pub adapter: Option<String>,
    /// Sequence lengths.
    #[arg(long, value_delimiter = ',', default_value = "128,512,1024,2048,4096,8192")]
    pub seq_lens: Vec<usize>,
    /// Head layouts: mha (8 query heads, 8 KV heads), gqa (8 over 2), mqa (8 over 1).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mha,gqa,mqa")]
    pub layouts: Vec<tinfer::tools::bench_attention::HeadLayout>,
    /// Head dimensions.
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    pub head_dims: Vec<usize>,
    /// Phases: prefill, decode.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "prefill,decode")]
    pub phases: Vec<tinfer::tools::bench_attention::Phase>,
    /// KV layouts: paged, contiguous.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "paged,contiguous")]
    pub kv: Vec<KvLayout>,
    /// Timed calls per measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Naive prefill only up to this length (its O(N²) work makes it slow beyond).
    #[arg(long, default_value_t = 4096)]
    pub naive_prefill_max: usize,
    /// Print the records as a JSON list instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw time against length for each variant into FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// `tinfer logits`: what to run and how to give its logits.
#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub input: PromptArgs,
    /// Token ids instead of a text, e.g. 1,2,3 (commas or spaces between them).
    #[arg(long, value_name = "IDS", conflicts_with_all = ["prompt", "file", "ids_file"], allow_hyphen_values = true)]
    pub ids: Option<String>,
    /// Read token ids from FILE (separated by whitespace or commas).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompt", "file"])]
    pub ids_file: Option<PathBuf>,
    /// Every position's logits (T rows), not only the last one's.
    #[arg(long)]
    pub all: bool,
    /// Write the logits to FILE as a float32 little-endian .npy of shape (vocab,), or
    /// (T, vocab) with --all.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print {"ids": [...], "logits": [...]} (a list of lists with --all).
    #[arg(long, conflicts_with = "out")]
    pub json: bool,
    /// Mixture-of-Experts models: add "routing" to the JSON (implies --json): per MoE layer and
    /// position the chosen experts (sorted), their weights and the router-logit gap between the
    /// k-th chosen and the best expert left out (how close the choice of the set was).
    #[arg(long, conflicts_with = "out")]
    pub routing: bool,
    /// Tokens per position in the table.
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub top: usize,
}

/// `tinfer bench spec`: each prompt greedily with and without speculation, side by side.
#[derive(Args)]
pub struct SpecBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// The drafter (default --spec lookup) and its settings.
    #[command(flatten)]
    pub spec: super::spec_args::SpecArgs,
    /// A user message to run through the chat template (repeatable; default: the four in
    /// benches/spec-prompts: two code edits, a summary, free prose).
    #[arg(long = "prompt-file", value_name = "FILE")]
    pub prompt_files: Vec<PathBuf>,
    /// Tokens to generate per prompt at most.
    #[arg(long, short = 'n', default_value_t = 256)]
    pub max_tokens: usize,
    /// Runs of each prompt with and without speculation, alternating; the median is reported
    /// (the drafted and accepted counts are the last run's).
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Print a JSON array (the table goes to stderr) of {"prompt", "tokens", "plain_tok_s", "spec_tok_s", "speedup", "drafted",
    /// "accepted", "acceptance", "accepted_per_verify", "same_text"}.
    #[arg(long)]
    pub json: bool,
}
