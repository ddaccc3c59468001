//! The `tinfer` command line: generate | chat | tokenize | perplexity | info | convert.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use tinfer::convert::{convert, OutDtype};
use tinfer::generate::{generate, generate_many, score, Generation};
use tinfer::loader::{self, Loaded};
use tinfer::model::{Attention, Device, Dtype, KvLayout, Model, Options};
use tinfer::sampler::{Sampler, SamplerConfig};
use tinfer::tokenizer::{Message, TokenStream, Tokenizer};

#[derive(Parser)]
#[command(name = "tinfer", version, about = "A tiny LLM inference engine for Llama-family models", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model: an HF directory (config.json, model.safetensors, tokenizer.json) or a .gguf file.
    #[arg(long, short, env = "TINFER_MODEL", default_value = "models/smollm2-135m-instruct")]
    model: PathBuf,
    /// Where the forward pass runs: auto picks a hardware GPU when there is one, else the CPU;
    /// gpu also accepts a CPU Vulkan adapter such as lavapipe.
    #[arg(long, value_enum, default_value = "auto", env = "TINFER_DEVICE")]
    device: Device,
    /// Pick the GPU adapter whose name contains NAME (case-insensitive), e.g. llvmpipe or nvidia.
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// GPU attention kernels: flash (tiled prefill with online softmax, split-K decode) or naive
    /// (scores materialised in memory; the slow twin).
    #[arg(long, value_enum, default_value = "flash")]
    attention: Attention,
    /// GPU KV cache layout: paged (pages from a pool through block tables, shared between
    /// sequences) or contiguous (one region of the whole context per sequence).
    #[arg(long, value_enum, default_value = "paged")]
    kv: KvLayout,
    /// Tokens per KV page (a multiple of 16).
    #[arg(long, default_value_t = 16)]
    page: usize,
    /// KV pool size in pages (default: enough for every sequence to reach the full context).
    #[arg(long, value_name = "N")]
    kv_blocks: Option<usize>,
    /// KV pool size in bytes over all layers, e.g. 64MiB or 1GiB (instead of --kv-blocks).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "kv_blocks")]
    kv_memory: Option<u64>,
    /// GPU weight storage: f16 (half the bytes, f32 accumulation), f32 (matches the CPU
    /// reference to rounding), or auto (f16 where the adapter has SHADER_F16). The CPU path
    /// always computes in f32.
    #[arg(long, value_enum, default_value = "auto")]
    dtype: Dtype,
}

impl ModelArgs {
    fn options(&self, max_seqs: usize) -> Options {
        Options {
            attention: self.attention,
            kv: self.kv,
            page: self.page,
            kv_blocks: self.kv_blocks,
            kv_memory: self.kv_memory,
            max_seqs,
            dtype: self.dtype,
            ..Options::default()
        }
    }
}

/// "4096", "64KiB", "256MiB", "2GiB" (also KB/MB/GB, as powers of 1024) -> bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Args, Clone)]
struct SampleArgs {
    /// Maximum number of tokens to generate.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 picks the most likely token every time (greedy, deterministic).
    #[arg(long, short, default_value_t = 0.0)]
    temperature: f32,
    /// Sample only among the K most likely tokens (0 = no limit).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample only among the most likely tokens whose probabilities add up to P (1 = no limit).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// Penalise tokens already in the context: positive logits are divided by R, negative
    /// multiplied (1 = off; 1.1 to 1.3 are common).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Random seed: the same seed and settings give the same text (default: a fresh seed, printed
    /// in the stats line).
    #[arg(long)]
    seed: Option<u64>,
}

impl SampleArgs {
    fn sampler(&self) -> Result<Sampler> {
        if self.temperature.is_nan()
            || self.temperature < 0.0
            || !(0.0..=1.0).contains(&self.top_p)
            || !(0.0..=1.0).contains(&self.min_p)
        {
            bail!("--temperature must be >= 0, --top-p and --min-p between 0 and 1");
        }
        if self.repeat_penalty.is_nan() || self.repeat_penalty <= 0.0 {
            bail!("--repeat-penalty must be > 0");
        }
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        Ok(Sampler::new(SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed,
        }))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Continue a text: stdout gets only the generated text, streamed as it is produced.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// The prompt (default: read from stdin).
        #[arg(long, short)]
        prompt: Option<String>,
        /// Print the prompt before the generated text.
        #[arg(long)]
        echo: bool,
        /// Sample K continuations of the prompt at once: the prompt is run once and its KV pages
        /// are shared; each step runs the K sequences in one batch. Continuation i uses seed
        /// SEED + i. Printed one after another when all are done.
        #[arg(long, value_name = "K", default_value_t = 1)]
        n_seq: usize,
        #[command(flatten)]
        sample: SampleArgs,
    },
    /// Chat through the model's chat template: one turn with --prompt, else an interactive session
    /// (the KV cache is kept across turns; /reset clears the conversation, /exit or Ctrl-D ends).
    Chat {
        #[command(flatten)]
        model: ModelArgs,
        /// System message (default: the template's own, if it has one).
        #[arg(long)]
        system: Option<String>,
        /// One user message: print the assistant's reply and exit.
        #[arg(long, short)]
        prompt: Option<String>,
        #[command(flatten)]
        sample: SampleArgs,
    },
    /// Print the token ids of a text (default: read from stdin).
    Tokenize {
        #[command(flatten)]
        model: ModelArgs,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        text: Option<String>,
    },
    /// Mean negative log-likelihood and perplexity of a text file, in windows of --ctx tokens.
    Perplexity {
        #[command(flatten)]
        model: ModelArgs,
        /// The text file to score.
        #[arg(long, short)]
        file: PathBuf,
        /// Window size in tokens (default: the model's context, so a text that fits is one window).
        #[arg(long)]
        ctx: Option<usize>,
        /// Print {"mean_nll", "ppl", "n_scored"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Describe a model: architecture, sizes, dtypes, memory, tokenizer, chat template.
    Info {
        #[command(flatten)]
        model: ModelArgs,
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
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Attention kernels on random Q/K/V: prefill (N rows over N keys) and decode (1 row over N).
    Attention(AttentionArgs),
    /// The matrix kernels (GEMV, GEMM) and RMSNorm at a model's shapes, every variant the adapter
    /// runs, each checked against its CPU twin, then timed (GB/s against the measured host
    /// memory bandwidth, GFLOP/s).
    Kernels(KernelBenchArgs),
    /// Whole-model speed like llama-bench: prompt processing (ppN) and token generation (tgN) in
    /// tokens/s, median over repeats.
    Model(ModelBenchArgs),
}

#[derive(Args)]
struct ModelBenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Random weights with the shapes of smollm2-135m, smollm2-360m, smollm2-1.7b, or of a
    /// config.json file, instead of --model.
    #[arg(long, value_name = "NAME|CONFIG")]
    synthetic: Option<String>,
    /// Prompt lengths to process.
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    pp: Vec<usize>,
    /// Generation lengths.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    tg: Vec<usize>,
    /// Timed runs per measurement, after one warm-up.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print {"device", "adapter", "dtype", "ppN", "tgN", "dispatches_per_token", "bytes_per_token"}.
    #[arg(long)]
    json: bool,
    /// Also time each GPU kernel of a decode step and of a prefill step of this many rows
    /// (dispatches and milliseconds per step, on stderr).
    #[arg(long, value_name = "ROWS")]
    profile: Option<usize>,
    /// Tokens in the cache before the profiled steps (attention grows with the context).
    #[arg(long, value_name = "POS", default_value_t = 1)]
    profile_at: usize,
}

#[derive(Args)]
struct KernelBenchArgs {
    /// Pick the GPU adapter whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// Shapes of smollm2-135m, smollm2-360m, smollm2-1.7b, or of a config.json file.
    #[arg(long, value_name = "NAME|CONFIG", default_value = "smollm2-135m")]
    shapes: String,
    /// Token rows of the GEMMs (prefill).
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    /// Timed calls per measurement (median), after one warm-up.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Print the records as JSON.
    #[arg(long)]
    json: bool,
    /// Only the variants and matrices whose "variant matrix" name contains one of these words,
    /// e.g. "f16 subgroups w_gate,lm_head".
    #[arg(long, value_delimiter = ',', value_name = "WORDS")]
    only: Vec<String>,
}

#[derive(Args)]
struct AttentionArgs {
    /// Pick the GPU adapter whose name contains NAME.
    #[arg(long, value_name = "NAME")]
    adapter: Option<String>,
    /// Sequence lengths.
    #[arg(long, value_delimiter = ',', default_value = "128,512,1024,2048,4096,8192")]
    seq_lens: Vec<usize>,
    /// Head layouts: mha (8 query heads, 8 KV heads), gqa (8 over 2), mqa (8 over 1).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "mha,gqa,mqa")]
    layouts: Vec<tinfer::bench::HeadLayout>,
    /// Head dimensions.
    #[arg(long, value_delimiter = ',', default_value = "64,128")]
    head_dims: Vec<usize>,
    /// Phases: prefill, decode.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "prefill,decode")]
    phases: Vec<tinfer::bench::Phase>,
    /// KV layouts: paged, contiguous.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "paged,contiguous")]
    kv: Vec<KvLayout>,
    /// Timed calls per measurement (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Naive prefill only up to this length (its O(N²) work makes it slow beyond).
    #[arg(long, default_value_t = 4096)]
    naive_prefill_max: usize,
    /// Print the records as a JSON list instead of the table.
    #[arg(long)]
    json: bool,
    /// Draw time against length for each variant into FILE (SVG).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Vulkan loaders and Mesa complain on stderr when XDG_RUNTIME_DIR is unset (headless
    // machines, CI); give them a private directory so only tinfer's own messages remain.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("tinfer-xdg-{}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_ok() {
            std::env::set_var("XDG_RUNTIME_DIR", &dir);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; usage mistakes exit 1.
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let device = e.chain().any(|c| c.is::<tinfer::gpu::context::DeviceError>());
            ExitCode::from(if device { 3 } else { 2 })
        }
    }
}

fn load(args: &ModelArgs) -> Result<(Model, Loaded)> {
    load_seqs(args, 1)
}

/// Load for up to `max_seqs` sequences alive at once.
fn load_seqs(args: &ModelArgs, max_seqs: usize) -> Result<(Model, Loaded)> {
    let mut loaded = loader::load(&args.model)?;
    let weights = loaded.weights.take().expect("load() returns weights");
    let model = Model::with_options(
        loaded.cfg.clone(),
        weights,
        args.device,
        args.adapter.as_deref(),
        &args.options(max_seqs),
    )?;
    if args.device == Device::Auto {
        eprintln!("device: {}", model.device_name());
    }
    Ok((model, loaded))
}

fn need_tokenizer(loaded: &Loaded) -> Result<&Tokenizer> {
    loaded.tokenizer.as_ref().with_context(|| {
        format!(
            "this command needs a tokenizer: {}",
            loaded.tokenizer_error.as_deref().unwrap_or("none found")
        )
    })
}

/// --prompt, or all of stdin.
fn prompt_text(prompt: Option<String>) -> Result<String> {
    if let Some(p) = prompt {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        bail!("no prompt: pass --prompt TEXT or pipe the text on stdin");
    }
    let mut bytes = vec![];
    std::io::stdin().read_to_end(&mut bytes).context("cannot read stdin")?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "stdin is not valid UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Generate and stream the decoded text to stdout.
/// A newline ends the text when `newline` (interactive chat) or when stdout is a terminal.
fn stream(
    model: &mut Model,
    tok: &Tokenizer,
    prompt: &[u32],
    context: &[u32],
    sampler: &mut Sampler,
    max: usize,
    newline: bool,
) -> Result<Generation> {
    let mut out = std::io::stdout().lock();
    let mut ts = TokenStream::new(tok);
    let g = generate(model, prompt, context, sampler, max, |id| {
        if let Some(text) = ts.push(id)? {
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    })?;
    if let Some(text) = ts.finish()? {
        out.write_all(text.as_bytes())?;
    }
    if newline || out.is_terminal() {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(g)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate {
            model: margs,
            prompt,
            echo,
            n_seq,
            sample,
        } => {
            let text = prompt_text(prompt)?;
            let mut sampler = sample.sampler()?;
            if n_seq == 0 || n_seq > 64 {
                bail!("--n-seq must be between 1 and 64, got {n_seq}");
            }
            let (mut model, loaded) = load_seqs(&margs, n_seq)?;
            let tok = need_tokenizer(&loaded)?;
            let ids = tok.encode(&text)?;
            if n_seq > 1 {
                let seed = sampler.cfg.seed;
                let mut samplers: Vec<Sampler> = (0..n_seq as u64)
                    .map(|i| {
                        Sampler::new(SamplerConfig {
                            seed: seed.wrapping_add(i),
                            ..sampler.cfg.clone()
                        })
                    })
                    .collect();
                let (gens, kv) = generate_many(&mut model, &ids, &mut samplers, sample.max_tokens)?;
                let mut out = std::io::stdout().lock();
                for (i, g) in gens.iter().enumerate() {
                    let body = tok.decode(&g.tokens, true)?;
                    writeln!(
                        out,
                        "--- continuation {} (seed {}) ---",
                        i + 1,
                        seed.wrapping_add(i as u64)
                    )?;
                    writeln!(out, "{}{body}", if echo { text.as_str() } else { "" })?;
                    eprintln!("[{}] {}", i + 1, g.stats());
                }
                if let Some(kv) = kv {
                    eprintln!(
                        "kv: {} of {} pages of {} tokens in use at the last step (the prompt's shared), {:.1}% of their rows unfilled",
                        kv.pages_used,
                        kv.pages,
                        kv.page,
                        kv.waste * 100.0
                    );
                }
                return Ok(());
            }
            if echo {
                print!("{text}");
            }
            let g = stream(&mut model, tok, &ids, &[], &mut sampler, sample.max_tokens, false)?;
            eprintln!("{} | seed {}", g.stats(), sampler.cfg.seed);
        }
        Command::Chat {
            model: margs,
            system,
            prompt,
            sample,
        } => {
            let mut sampler = sample.sampler()?;
            let (mut model, loaded) = load(&margs)?;
            let tok = need_tokenizer(&loaded)?;
            let mut messages: Vec<Message> = system.iter().map(|s| Message::new("system", s)).collect();
            if let Some(p) = prompt {
                messages.push(Message::new("user", &p));
                let ids = tok.encode_raw(&tok.apply_chat_template(&messages, true)?)?;
                let g = stream(&mut model, tok, &ids, &[], &mut sampler, sample.max_tokens, false)?;
                eprintln!("{} | seed {}", g.stats(), sampler.cfg.seed);
                return Ok(());
            }
            chat_loop(&mut model, tok, messages, &mut sampler, sample.max_tokens)?;
        }
        Command::Tokenize {
            model: margs,
            json,
            text,
        } => {
            let tok = loader::load_tokenizer(&margs.model)?;
            let ids = tok.encode(&prompt_text(text)?)?;
            if json {
                println!("{}", serde_json::to_string(&ids)?);
            } else {
                println!("{}", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "));
            }
        }
        Command::Perplexity {
            model: margs,
            file,
            ctx,
            json,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
            let (mut model, loaded) = load(&margs)?;
            let ids = need_tokenizer(&loaded)?.encode(&text)?;
            let window = ctx.unwrap_or(model.cfg.seq_len);
            let s = score(&mut model, &ids, window)?;
            if json {
                println!(
                    "{}",
                    json!({"mean_nll": s.mean_nll(), "ppl": s.ppl(), "n_scored": s.n_scored})
                );
            } else {
                println!(
                    "tokens: {}  scored: {}  mean NLL: {:.6}  perplexity: {:.4}",
                    ids.len(),
                    s.n_scored,
                    s.mean_nll(),
                    s.ppl()
                );
            }
        }
        Command::Info { model: margs, json } => info(&margs, json)?,
        Command::Bench {
            what: BenchWhat::Attention(args),
        } => bench_attention(args)?,
        Command::Bench {
            what: BenchWhat::Model(args),
        } => bench_model(args)?,
        Command::Bench {
            what: BenchWhat::Kernels(args),
        } => bench_kernels(args)?,
        Command::Convert { input, output, dtype } => {
            convert(&input, &output, dtype, std::io::stderr().is_terminal())?;
            eprintln!("wrote {}", output.display());
        }
    }
    Ok(())
}

/// Interactive multi-turn chat. The KV cache keeps the conversation: each turn only the tokens
/// after the longest prefix shared with what the cache holds are run.
fn chat_loop(
    model: &mut Model,
    tok: &Tokenizer,
    system: Vec<Message>,
    sampler: &mut Sampler,
    max: usize,
) -> Result<()> {
    let mut messages = system.clone();
    let mut cached: Vec<u32> = vec![]; // the tokens whose K/V the cache holds
    let stdin = std::io::stdin();
    eprintln!("chat: type a message, /reset to start over, /exit or Ctrl-D to quit");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).context("cannot read stdin")? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                messages = system.clone();
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", line));
        let ids = tok.encode_raw(&tok.apply_chat_template(&messages, true)?)?;
        let mut shared = cached.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        shared = shared.min(ids.len() - 1); // run at least one token to get logits
        model.truncate(shared);
        cached.truncate(shared);
        let g = match stream(model, tok, &ids[shared..], &cached, sampler, max, true) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e:#}");
                model.truncate(0);
                cached.clear();
                messages.pop();
                continue;
            }
        };
        cached.extend_from_slice(&ids[shared..]);
        cached.extend_from_slice(&g.tokens[..g.tokens.len().saturating_sub(1)]);
        // The last sampled token was never run through the model: it is not in the cache.
        model.truncate(cached.len());
        messages.push(Message::new("assistant", &tok.decode(&g.tokens, true)?));
        eprintln!("[{}]", g.stats());
    }
}

fn info(args: &ModelArgs, as_json: bool) -> Result<()> {
    let loaded = loader::load(&args.model)?;
    let gpu = match args.device {
        Device::Cpu => None,
        Device::Gpu => Some(gpu_info(args.adapter.as_deref(), true)?),
        Device::Auto => gpu_info(args.adapter.as_deref(), args.adapter.is_some()).ok(),
    };
    let cfg = &loaded.cfg;
    let n_params = cfg.n_params();
    let tok = loaded.tokenizer.as_ref();
    let j = json!({
        "source": loaded.source,
        "model_type": cfg.model_type,
        "architectures": loaded.hf_config.get("architectures"),
        "n_params": n_params,
        "dim": cfg.dim,
        "hidden_dim": cfg.hidden_dim,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "context": cfg.seq_len,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.norm_eps,
        "tied_embeddings": cfg.tied_embeddings,
        "qkv_bias": cfg.qkv_bias,
        "stored_dtypes": loaded.dtypes,
        "weights_bytes_f32": n_params * 4,
        "kv_cache_bytes_per_token": 2 * cfg.n_layers * cfg.kv_dim() * 4,
        "eos_token_ids": cfg.eos_token_ids,
        "tokenizer": tok.map(|t| json!({
            "vocab_size": t.vocab_size(),
            "bos_token": t.bos_token,
            "eos_token": t.eos_token,
            "chat_template": t.chat_template.is_some(),
        })),
        "tokenizer_error": loaded.tokenizer_error,
        "gpu": gpu,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!("model        {}", loaded.source);
    println!(
        "architecture {} ({} layers, dim {}, ffn {})",
        cfg.model_type, cfg.n_layers, cfg.dim, cfg.hidden_dim
    );
    println!(
        "attention    {} query heads, {} KV heads (GQA x{}), head_dim {}, rope_theta {}",
        cfg.n_heads, cfg.n_kv_heads, cfg.kv_mul, cfg.head_dim, cfg.rope_theta
    );
    println!(
        "parameters   {:.1} M{}",
        n_params as f64 / 1e6,
        if cfg.tied_embeddings {
            " (LM head tied to the embedding)"
        } else {
            ""
        }
    );
    println!("stored as    {}", loaded.dtypes);
    println!(
        "memory       {:.1} MiB of f32 weights; KV cache {:.1} KiB per token",
        mib(n_params * 4),
        2 * cfg.n_layers * cfg.kv_dim() * 4 / 1024
    );
    println!(
        "context      {} tokens, vocab {}, eos ids {:?}",
        cfg.seq_len, cfg.vocab_size, cfg.eos_token_ids
    );
    match tok {
        Some(t) => println!(
            "tokenizer    {} tokens, bos {:?}, eos {:?}, chat template: {}",
            t.vocab_size(),
            t.bos_token.as_deref().unwrap_or("-"),
            t.eos_token.as_deref().unwrap_or("-"),
            if t.chat_template.is_some() { "yes" } else { "no" }
        ),
        None => println!(
            "tokenizer    none ({})",
            loaded.tokenizer_error.as_deref().unwrap_or("")
        ),
    }
    if let Some(g) = gpu {
        let name = |k: &str| g[k].as_str().unwrap_or("").to_string();
        println!(
            "gpu          {} ({}, {})",
            name("name"),
            name("device_type"),
            name("backend")
        );
        println!("             features: {}", name("features"));
        let l = &g["limits"];
        let n = |k: &str| l[k].as_u64().unwrap_or(0);
        println!(
            "             max storage binding {} MiB, max buffer {} MiB, workgroup memory {} KiB, {} invocations per workgroup",
            n("max_storage_buffer_binding_size") >> 20,
            n("max_buffer_size") >> 20,
            n("max_compute_workgroup_storage_size") >> 10,
            n("max_compute_invocations_per_workgroup")
        );
        println!("             adapters: {}", g["all_adapters"]);
    }
    Ok(())
}

/// The adapter `--device gpu` would use: name, backend, limits and features.
fn gpu_info(adapter: Option<&str>, allow_cpu_adapter: bool) -> Result<serde_json::Value> {
    let req = tinfer::gpu::GpuRequest {
        adapter: adapter.map(str::to_string),
        allow_cpu_adapter,
    };
    let gpu = tinfer::gpu::Gpu::new(&req)?;
    let l = &gpu.limits;
    let all: Vec<String> = tinfer::gpu::list_adapters()
        .iter()
        .map(tinfer::gpu::context::describe)
        .collect();
    Ok(json!({
        "name": gpu.info.name,
        "device_type": format!("{:?}", gpu.info.device_type),
        "backend": format!("{:?}", gpu.info.backend),
        "driver": format!("{} {}", gpu.info.driver, gpu.info.driver_info),
        "features": format!("{:?}", gpu.adapter.features()),
        "shader_f16": gpu.features.contains(wgpu::Features::SHADER_F16),
        "limits": {
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_buffer_size": l.max_buffer_size,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
        },
        "all_adapters": all,
    }))
}

fn bench_attention(a: AttentionArgs) -> Result<()> {
    use tinfer::bench::{self, AttnBench, Phase};
    if a.seq_lens.iter().any(|&n| n == 0 || n > 1 << 16) || a.repeats == 0 {
        bail!("sequence lengths must be between 1 and 65536 and --repeats at least 1");
    }
    let gpu = tinfer::gpu::Gpu::new(&tinfer::gpu::GpuRequest {
        adapter: a.adapter,
        allow_cpu_adapter: true,
    })?;
    let (json, svg) = (a.json, a.svg);
    let cfg = AttnBench {
        seq_lens: a.seq_lens,
        layouts: a.layouts,
        head_dims: a.head_dims,
        phases: a.phases,
        kv: a.kv,
        repeats: a.repeats,
        naive_prefill_max: a.naive_prefill_max,
    };
    eprintln!("adapter: {}", gpu.describe());
    let header = format!(
        "{:<12} {:<10} {:<7} {:>6} {:>5} {:>4} {:>10} {:>8} {:>10} {:>9} {:>6}",
        "variant", "kv", "phase", "N", "heads", "hd", "ms", "GB/s", "mem MiB", "max err", "splits"
    );
    if json {
        eprintln!("{header}");
    } else {
        println!("{header}");
    }
    let records = bench::bench_attention(&gpu, &cfg, |r| {
        let line = format!(
            "{:<12} {:<10} {:<7} {:>6} {:>2}/{:<2} {:>4} {:>10.3} {:>8.2} {:>10.2} {:>9.1e} {:>6}",
            r.variant,
            r.kv,
            format!("{:?}", r.phase).to_lowercase(),
            r.seq_len,
            r.n_heads,
            r.n_kv_heads,
            r.head_dim,
            r.ms,
            r.gbps,
            r.mem_bytes as f64 / (1 << 20) as f64,
            r.max_abs_err,
            r.splits
        );
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    })?;
    // The targets, read off this run.
    let find = |variant: &str, kv: &str, phase: Phase, n: usize| {
        let v: Vec<f64> = records
            .iter()
            .filter(|r| r.variant == variant && r.kv == kv && r.phase == phase && r.seq_len == n)
            .map(|r| r.ms)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut summary = vec![];
    if let (Some(naive), Some(flash)) = (
        find("naive", "paged", Phase::Prefill, 4096),
        find("flash", "paged", Phase::Prefill, 4096),
    ) {
        summary.push(format!(
            "prefill at 4096: flash {:.1}x faster than naive (mean over layouts and head dims)",
            naive / flash
        ));
    }
    if let (Some(one), Some(split)) = (
        find("flash", "paged", Phase::Decode, 8192),
        find("flash-split", "paged", Phase::Decode, 8192),
    ) {
        summary.push(format!(
            "decode at 8192: split-K {:.2}x faster than single-pass",
            one / split
        ));
    }
    let decode_lens: Vec<usize> = cfg.seq_lens.clone();
    let (mut p, mut c) = (0.0, 0.0);
    for &n in &decode_lens {
        if let (Some(a), Some(b)) = (
            find("flash-split", "paged", Phase::Decode, n),
            find("flash-split", "contiguous", Phase::Decode, n),
        ) {
            p += a;
            c += b;
        }
    }
    if c > 0.0 {
        summary.push(format!(
            "decode, split-K, all lengths: paged takes {:+.1}% of contiguous's time",
            (p / c - 1.0) * 100.0
        ));
    }
    summary.push(format!(
        "KV pages of 16 for 64 sequences of 1..8192 tokens: {:.2}% of the rows in use unfilled",
        bench::page_waste(16, 64, 8192, 1) * 100.0
    ));
    for line in &summary {
        eprintln!("{line}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    if let Some(path) = svg {
        std::fs::write(
            &path,
            bench::svg(&records, &format!("tinfer bench attention on {}", gpu.describe())),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

fn bench_kernels(a: KernelBenchArgs) -> Result<()> {
    if a.repeats == 0 || !(1..=256).contains(&a.tokens) {
        bail!("--repeats must be at least 1 and --tokens 1..=256");
    }
    let text = match tinfer::bench::synthetic_config(&a.shapes) {
        Some(t) => t.to_string(),
        None => loader::read_text(std::path::Path::new(&a.shapes), 1 << 20).with_context(|| {
            format!(
                "--shapes {}: not smollm2-135m, smollm2-360m, smollm2-1.7b or a readable config.json",
                a.shapes
            )
        })?,
    };
    let cfg = tinfer::config::HfConfig::from_json(&text)?.resolve()?;
    let gpu = tinfer::gpu::Gpu::new(&tinfer::gpu::GpuRequest {
        adapter: a.adapter,
        allow_cpu_adapter: true,
    })?;
    let bandwidth = tinfer::kernel_bench::host_bandwidth();
    eprintln!(
        "adapter: {} | shapes: {} | host memory bandwidth (copy, all threads): {bandwidth:.1} GB/s",
        gpu.describe(),
        a.shapes
    );
    let print = |line: String| {
        if a.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    print(tinfer::kernel_bench::header());
    let records = tinfer::kernel_bench::bench_kernels(&gpu, &cfg, a.tokens, a.repeats, &a.only, bandwidth, |r| {
        print(tinfer::kernel_bench::row(r))
    })?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"adapter": gpu.describe(), "host_bandwidth_gbps": bandwidth, "records": records})
            )?
        );
    }
    Ok(())
}

fn bench_model(a: ModelBenchArgs) -> Result<()> {
    if a.repeats == 0 || a.pp.iter().chain(&a.tg).any(|&n| n == 0) {
        bail!("--repeats and every --pp / --tg length must be at least 1");
    }
    let (mut model, source) = match &a.synthetic {
        Some(name) => {
            let text = match tinfer::bench::synthetic_config(name) {
                Some(t) => t.to_string(),
                None => loader::read_text(std::path::Path::new(name), 1 << 20).with_context(|| {
                    format!(
                        "--synthetic {name}: not smollm2-135m, smollm2-360m, smollm2-1.7b or a readable config.json"
                    )
                })?,
            };
            let cfg = tinfer::config::HfConfig::from_json(&text)?.resolve()?;
            let weights = tinfer::bench::random_weights(&cfg, 1);
            let opts = a.model.options(1);
            let m = Model::with_options(cfg, weights, a.model.device, a.model.adapter.as_deref(), &opts)?;
            (m, format!("synthetic {name}"))
        }
        None => {
            let (m, _) = load(&a.model)?;
            (m, a.model.model.display().to_string())
        }
    };
    let longest = a.pp.iter().chain(&a.tg).max().copied().unwrap_or(0);
    if longest > model.cfg.seq_len {
        bail!(
            "a length of {longest} exceeds the model's context of {}",
            model.cfg.seq_len
        );
    }
    let device = model.device_name();
    eprintln!("model: {source} | device: {device}");
    let (pp, tg) = tinfer::bench::bench_model(&mut model, &a.pp, &a.tg, a.repeats)?;
    if let Some(rows) = a.profile {
        if !(1..=256).contains(&rows) {
            bail!("--profile ROWS must be 1..=256 (one step)");
        }
        if a.profile_at < 1 || a.profile_at + rows > model.cfg.seq_len {
            bail!(
                "--profile-at {} with {rows} rows does not fit the context of {}",
                a.profile_at,
                model.cfg.seq_len
            );
        }
        model.forward(&vec![1; a.profile_at], tinfer::cpu::Logits::Last)?; // the context of the profiled steps
        for t in [1, rows] {
            if let Some(p) = model.profile(t, a.repeats.max(3))? {
                let total: f64 = p.kernels.iter().map(|r| r.2).sum();
                eprintln!(
                    "\nprofile of one step of {t} row(s): {total:.2} ms in kernels, {:.2} ms as one submit",
                    p.step_ms
                );
                eprintln!("{:>9} {:>6} {:>10}  kernel", "ms", "%", "dispatches");
                for (name, n, ms) in &p.kernels {
                    eprintln!("{ms:>9.3} {:>6.1} {n:>10}  {name}", ms / total * 100.0);
                }
            }
        }
        model.truncate(0);
    }
    let dtype = model.dtype_name();
    let bytes = tinfer::bench::weight_bytes_per_token(&model.cfg, if dtype == "f16" { 2 } else { 4 });
    let dispatches = model.dispatches_per_token();
    if a.json {
        let mut j = json!({
            "device": if device.starts_with("gpu") { "gpu" } else { "cpu" },
            "adapter": device.strip_prefix("gpu: ").unwrap_or(&device),
            "dtype": dtype,
            "dispatches_per_token": dispatches,
            "bytes_per_token": bytes,
        });
        for (name, r) in pp.iter().chain(&tg) {
            j[name] = json!(r.median);
            j[format!("{name}_min")] = json!(r.min);
            j[format!("{name}_max")] = json!(r.max);
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{:<8} {:>12} {:>12} {:>12}", "test", "tok/s", "min", "max");
        for (name, r) in pp.iter().chain(&tg) {
            println!("{name:<8} {:>12.2} {:>12.2} {:>12.2}", r.median, r.min, r.max);
        }
        println!(
            "weights read per decoded token: {:.1} MB ({dtype}); dispatches per token: {}",
            bytes as f64 / 1e6,
            dispatches.map_or("- (cpu)".to_string(), |d| d.to_string())
        );
    }
    Ok(())
}
