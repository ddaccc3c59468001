//! What a request is: its sequence in the model, its tokens (prompt and output), its sampler,
//! when it stops, and where it stands.

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::model::SeqId;
use crate::sampler::Sampler;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end token (not included in the output).
    Eos,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The KV cache pool has no page for its next token and nothing else to preempt: the pool
    /// (`--kv-blocks`, `--kv-memory`) is smaller than its context.
    KvFull,
    /// The text reached one of the caller's stop strings (`--stop`), which is not output.
    StopString,
    /// The caller ended it early (Ctrl-C, a client that went away).
    Cancelled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Prompt tokens still to run.
    Waiting,
    /// Decoding: its last output token is still to run.
    Running,
    Finished(StopReason),
}

/// A rule on what a sequence may produce (structured output): given the output so far, it sets
/// the logits of the tokens that may not come next to -inf. Stateless (the output says where it
/// stands), so the forks of a prompt share one.
pub trait Constraint: Send + Sync {
    fn mask(&self, output: &[u32], logits: &mut [f32]);
}

/// The stop rules: end tokens, the output budget, the end of the context.
#[derive(Clone, Debug)]
pub struct Stop {
    pub eos: Vec<u32>,
    pub max_tokens: usize,
    /// Positions the context holds (the model's seq_len).
    pub context: usize,
}

impl Stop {
    /// The model's end tokens and context, and `max_tokens`.
    pub fn new(cfg: &Config, max_tokens: usize) -> Self {
        Stop {
            eos: cfg.eos_token_ids.clone(),
            max_tokens,
            context: cfg.seq_len,
        }
    }
}

pub struct Sequence {
    /// Its KV cache in the model: made when the engine takes it, or an existing one it continues.
    pub id: Option<SeqId>,
    /// Tokens the cache already holds before the prompt (for the repetition penalty).
    pub context: Vec<u32>,
    pub prompt: Vec<u32>,
    pub output: Vec<u32>,
    pub sampler: Sampler,
    pub stop: Stop,
    pub status: Status,
    /// Keep the cache when finished (the caller truncates or releases it); else the engine
    /// releases it.
    pub keep: bool,
    /// After the prompt, fork once per sampler: each fork shares the prompt's cache and samples
    /// its first token from the same logits.
    pub forks: Vec<Sampler>,
    /// Engine handles of the forks made, in the order of `forks`.
    pub forked: Vec<usize>,
    /// Positions of `prompt` (and, after a preemption, of `output`) in the cache so far.
    pub prefilled: usize,
    /// Prompt tokens whose keys and values came from the prefix cache instead of a forward
    /// (OpenAI's `usage.prompt_tokens_details.cached_tokens`).
    pub cached: usize,
    /// Times the scheduler took its cache away to make room (it then recomputes prompt and
    /// output so far, as vLLM's recompute preemption).
    pub preempted: usize,
    /// Tokens never sampled (their logits set to -inf first): the end tokens under
    /// `--ignore-eos`, like llama.cpp's `--ignore-eos` (a logit bias of -inf).
    pub banned: Vec<u32>,
    /// LoRA factors, one per adapter of the model (Model::set_lora); None: the model's defaults.
    pub lora: Option<Vec<f32>>,
    /// Record each produced token's log-probability and the `n` most likely (OpenAI's
    /// `logprobs` / `top_logprobs`) in `token_logprobs`; None: nothing recorded.
    pub logprobs: Option<usize>,
    /// Which tokens may come next (structured output, e.g. JSON): applied to the logits before
    /// sampling; None: any.
    pub constraint: Option<std::sync::Arc<dyn Constraint>>,
    /// Per output token: its log-probability under the model's distribution (before
    /// temperature, top-k/p and penalties) and the most likely (id, log-probability), first first.
    pub token_logprobs: Vec<(f32, Vec<(u32, f32)>)>,
    /// Decode steps run (forwards after the prompt's, or tokens taken from `ahead`), for the
    /// decode rate.
    pub(crate) decode_steps: usize,
    /// Greedy ids decoded ahead on the device (Model::decode_greedy) and not yet taken: the
    /// engine hands out one a step, so stops see them as single steps would. The cache holds
    /// all but the last of them; the engine truncates the rest when the sequence ends early.
    pub(crate) ahead: std::collections::VecDeque<u32>,
    /// Speculative decoding's verify steps, drafted and accepted tokens.
    pub(crate) spec: crate::engine::SpecStats,
    /// `ahead` holds a verify step's tokens (not decode-ahead's).
    pub(crate) ahead_spec: bool,
    /// Timings: added, first token produced, finished.
    pub(crate) added: Instant,
    pub(crate) first: Option<Instant>,
    pub(crate) finished: Option<Instant>,
}

impl Sequence {
    /// A new request: run `prompt` in a new sequence, then generate.
    pub fn new(prompt: Vec<u32>, sampler: Sampler, stop: Stop) -> Self {
        Sequence {
            id: None,
            context: vec![],
            prompt,
            output: vec![],
            sampler,
            stop,
            status: Status::Waiting,
            keep: false,
            forks: vec![],
            forked: vec![],
            prefilled: 0,
            cached: 0,
            preempted: 0,
            banned: vec![],
            lora: None,
            logprobs: None,
            constraint: None,
            token_logprobs: vec![],
            decode_steps: 0,
            ahead: Default::default(),
            spec: Default::default(),
            ahead_spec: false,
            added: Instant::now(),
            first: None,
            finished: None,
        }
    }

    /// Continue sequence `id`, whose cache holds `context`, and keep it when finished.
    pub fn continuing(mut self, id: SeqId, context: Vec<u32>) -> Self {
        self.id = Some(id);
        self.context = context;
        self.keep = true;
        self
    }

    /// After the prompt, fork it once per sampler (`generate --n-seq`).
    pub fn with_forks(mut self, samplers: Vec<Sampler>) -> Self {
        self.forks = samplers;
        self
    }

    /// Run with these LoRA factors (one per adapter the model holds) instead of the defaults.
    pub fn with_lora(mut self, factors: Vec<f32>) -> Self {
        self.lora = Some(factors);
        self
    }

    /// Record log-probabilities of each produced token and its `top` most likely alternatives.
    pub fn with_logprobs(mut self, top: usize) -> Self {
        self.logprobs = Some(top);
        self
    }

    /// Its next token can be chosen on the device: greedy, nothing banned, no log-probabilities
    /// wanted.
    pub fn greedy_on_device(&self) -> bool {
        self.sampler.is_greedy() && self.banned.is_empty() && self.logprobs.is_none() && self.constraint.is_none()
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status, Status::Finished(_))
    }

    /// The tokens its prefill runs: the prompt, and after a preemption the output so far too.
    pub(crate) fn to_run(&self) -> Vec<u32> {
        [&self.prompt[..], &self.output].concat()
    }

    /// Every token so far: context, prompt, output (what the repetition penalty looks at).
    pub fn history(&self) -> Vec<u32> {
        [&self.context[..], &self.prompt, &self.output].concat()
    }

    /// Take the token just produced, with `cached` positions in the cache: stop before it (no
    /// budget, or an end token), or append it and stop after it when the budget or the context
    /// is used up. The one stop rule of every path. Returns whether it was appended.
    pub fn push(&mut self, token: u32, cached: usize) -> bool {
        let s = &self.stop;
        if self.output.len() >= s.max_tokens {
            self.finish(StopReason::MaxTokens);
            return false;
        }
        if s.eos.contains(&token) {
            self.finish(StopReason::Eos);
            return false;
        }
        self.output.push(token);
        if self.output.len() >= s.max_tokens {
            self.finish(StopReason::MaxTokens);
        } else if cached >= s.context {
            self.finish(StopReason::ContextFull);
        }
        true
    }

    /// Never produce `tokens` (see `banned`).
    pub fn with_banned(mut self, tokens: Vec<u32>) -> Self {
        self.banned = tokens;
        self
    }

    /// End it now (its cache is released by the engine as for any finished sequence).
    pub(crate) fn finish(&mut self, r: StopReason) {
        self.status = Status::Finished(r);
        self.finished = Some(Instant::now());
    }

    /// The output and its timings.
    pub fn generation(&self) -> Generation {
        let now = Instant::now();
        let first = self.first.unwrap_or(now);
        Generation {
            tokens: self.output.clone(),
            stop: match self.status {
                Status::Finished(r) => r,
                _ => StopReason::MaxTokens,
            },
            // the prompt tokens run (all, unless it was cancelled during the prompt)
            prompt_tokens: self.prefilled.min(self.prompt.len()),
            cached: self.cached,
            prompt_len: self.prompt.len(),
            decode_steps: self.decode_steps,
            spec: self.spec,
            prompt_time: first - self.added,
            gen_time: self.finished.unwrap_or(now) - first,
        }
    }
}

/// A finished generation: its tokens, why it stopped, and how fast it went.
#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    /// Of `prompt_tokens`, those whose KV blocks came from the prefix cache (not run).
    pub cached: usize,
    /// Tokens in the prompt (more than `prompt_tokens` when cancelled during it).
    pub prompt_len: usize,
    /// Forwards after the prompt's (the prompt's forward gives the first token).
    pub decode_steps: usize,
    /// Speculative decoding's counts (all 0 without it).
    pub spec: crate::engine::SpecStats,
    pub prompt_time: Duration,
    pub gen_time: Duration,
}

impl Generation {
    /// "prompt: 24 tokens, 180.2 tok/s | generated: 32 tokens | decode: 25.1 tok/s over 32 steps |
    /// stop: Eos" (prompt: the tokens run, fewer than the prompt's when cancelled during it). The first generated token comes out of the prompt's forward, so the decode
    /// rate is decode steps (one per later token, plus the one that produced the end token) over
    /// their time.
    pub fn stats(&self) -> String {
        let steps = self.decode_steps;
        let secs = self.gen_time.as_secs_f64();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let decode = if steps == 0 || secs <= 0.0 {
            "decode: no steps".to_string()
        } else {
            format!(
                "decode: {:.1} tok/s over {}",
                steps as f64 / secs,
                plural(steps, "step")
            )
        };
        let prompt_secs = self.prompt_time.as_secs_f64();
        let run = self.prompt_tokens - self.cached.min(self.prompt_tokens);
        let prompt_rate = if prompt_secs > 0.0 {
            run as f64 / prompt_secs
        } else {
            0.0
        };
        let sp = self.spec;
        let spec = if sp.verifies == 0 {
            String::new()
        } else {
            format!(
                " | drafted: {}, accepted: {} ({:.1}%), {:.2} accepted a verify over {}",
                sp.drafted,
                sp.accepted,
                100.0 * sp.accepted as f64 / sp.drafted.max(1) as f64,
                sp.accepted as f64 / sp.verifies as f64,
                plural(sp.verifies, "verify step")
            )
        };
        format!(
            "prompt: {}{}{}, {prompt_rate:.1} tok/s | generated: {} | {decode}{spec} | stop: {:?}",
            if self.prompt_tokens < self.prompt_len {
                format!("{} of ", self.prompt_tokens)
            } else {
                String::new()
            },
            plural(self.prompt_len, "token"),
            if self.cached > 0 {
                format!(" ({} cached)", self.cached)
            } else {
                String::new()
            },
            plural(self.tokens.len(), "token"),
            self.stop
        )
    }
}
