//! The generation loop: prefill the prompt, then sample and run one token at a time until an
//! end token, the token budget, or the end of the context.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::cpu::ops::logsumexp;
use crate::cpu::Logits;
use crate::model::{KvUsage, Model};
use crate::sampler::Sampler;

/// Prompt tokens run per forward call: bounds the activations a long prompt needs at once.
pub const PREFILL_CHUNK: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end token (not included in the output).
    Eos,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
}

#[derive(Clone, Debug)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub stop: StopReason,
    pub prompt_tokens: usize,
    pub prompt_time: Duration,
    pub gen_time: Duration,
}

impl Generation {
    /// "prompt: 24 tokens, 180.2 tok/s | generated: 32 tokens, 25.1 tok/s"
    pub fn stats(&self) -> String {
        let rate = |n: usize, d: Duration| {
            if d.as_secs_f64() > 0.0 {
                n as f64 / d.as_secs_f64()
            } else {
                0.0
            }
        };
        format!(
            "prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | stop: {:?}",
            self.prompt_tokens,
            rate(self.prompt_tokens, self.prompt_time),
            self.tokens.len(),
            rate(self.tokens.len(), self.gen_time),
            self.stop
        )
    }
}

/// Run `tokens` through the model in chunks; returns the last position's logits.
pub fn prefill(model: &mut Model, tokens: &[u32]) -> Result<Vec<f32>> {
    if tokens.is_empty() {
        bail!("the prompt is empty: give some text with --prompt or on stdin");
    }
    let mut logits = vec![];
    for chunk in tokens.chunks(PREFILL_CHUNK) {
        logits = model.forward(chunk, Logits::Last)?;
    }
    Ok(logits)
}

/// Generate after `prompt` (appended to whatever the model's cache already holds; `context` is
/// every token in the cache so far, for the repetition penalty). `on_token` sees each new token
/// as it is produced.
pub fn generate(
    model: &mut Model,
    prompt: &[u32],
    context: &[u32],
    sampler: &mut Sampler,
    max_tokens: usize,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    let ctx = model.cfg.seq_len;
    if model.pos() + prompt.len() > ctx {
        bail!(
            "the prompt is {} tokens but the model's context holds {} ({} already used): shorten the prompt",
            prompt.len(),
            ctx,
            model.pos()
        );
    }
    let eos = model.cfg.eos_token_ids.clone();
    let mut history: Vec<u32> = context.iter().chain(prompt).copied().collect();
    let mut tokens = vec![];
    if prompt.is_empty() {
        bail!("the prompt is empty: give some text with --prompt or on stdin");
    }
    let start = Instant::now();
    // The prompt: all but its last chunk only fill the cache; the last chunk gives the first token.
    let last_chunk = prompt.len() - (prompt.len() - 1) % PREFILL_CHUNK - 1;
    if last_chunk > 0 {
        prefill(model, &prompt[..last_chunk])?;
    }
    let mut next = next_token(model, sampler, &prompt[last_chunk..], &history)?;
    let prompt_time = start.elapsed();
    let start = Instant::now();
    let stop = loop {
        if tokens.len() >= max_tokens {
            break StopReason::MaxTokens;
        }
        if eos.contains(&next) {
            break StopReason::Eos;
        }
        tokens.push(next);
        history.push(next);
        on_token(next)?;
        if tokens.len() >= max_tokens {
            break StopReason::MaxTokens;
        }
        if model.pos() >= ctx {
            break StopReason::ContextFull;
        }
        next = next_token(model, sampler, &[next], &history)?;
    };
    Ok(Generation {
        tokens,
        stop,
        prompt_tokens: prompt.len(),
        prompt_time,
        gen_time: start.elapsed(),
    })
}

/// Several continuations of one prompt: the prompt is prefilled once (sequence 0), then forked
/// into `samplers.len()` sequences that share its KV pages; each step runs one token of every
/// unfinished sequence in one batched forward. Continuation i samples with `samplers[i]`, so a
/// seeded sampler makes it reproducible on its own.
pub fn generate_many(
    model: &mut Model,
    prompt: &[u32],
    samplers: &mut [Sampler],
    max_tokens: usize,
) -> Result<(Vec<Generation>, Option<KvUsage>)> {
    let ctx = model.cfg.seq_len;
    if prompt.is_empty() {
        bail!("the prompt is empty: give some text with --prompt or on stdin");
    }
    if model.pos() + prompt.len() > ctx {
        bail!(
            "the prompt is {} tokens but the model's context holds {}: shorten the prompt",
            prompt.len(),
            ctx
        );
    }
    let eos = model.cfg.eos_token_ids.clone();
    let start = Instant::now();
    let logits = prefill(model, prompt)?;
    let prompt_time = start.elapsed();
    let start = Instant::now();
    let n = samplers.len();
    let mut seqs = vec![0];
    for _ in 1..n {
        seqs.push(model.fork(0)?);
    }
    let mut out: Vec<Generation> = (0..n)
        .map(|_| Generation {
            tokens: vec![],
            stop: StopReason::MaxTokens,
            prompt_tokens: prompt.len(),
            prompt_time,
            gen_time: Default::default(),
        })
        .collect();
    let mut next: Vec<u32> = samplers.iter_mut().map(|s| s.sample(&logits, prompt)).collect();
    let mut live: Vec<usize> = (0..n).collect();
    let mut usage = model.kv_usage();
    loop {
        // finish the sequences that stop here
        live.retain(|&i| {
            let g = &mut out[i];
            let stop = if g.tokens.len() >= max_tokens {
                Some(StopReason::MaxTokens)
            } else if eos.contains(&next[i]) {
                Some(StopReason::Eos)
            } else if prompt.len() + g.tokens.len() >= ctx {
                Some(StopReason::ContextFull)
            } else {
                None
            };
            if let Some(s) = stop {
                g.stop = s;
                g.gen_time = start.elapsed();
            } else {
                g.tokens.push(next[i]);
            }
            stop.is_none()
        });
        if live.is_empty() {
            break;
        }
        let toks: Vec<[u32; 1]> = live.iter().map(|&i| [next[i]]).collect();
        let batch: Vec<(usize, &[u32])> = live.iter().zip(&toks).map(|(&i, t)| (seqs[i], &t[..])).collect();
        let logits = model.forward_batch(&batch)?;
        usage = model.kv_usage().or(usage);
        for (&i, l) in live.iter().zip(&logits) {
            let history: Vec<u32> = prompt.iter().chain(&out[i].tokens).copied().collect();
            next[i] = samplers[i].sample(l, &history);
        }
    }
    for &s in &seqs[1..] {
        model.release(s);
    }
    Ok((out, usage))
}

/// Run `tokens` and choose the next token: on the device when greedy (only the id comes back),
/// else by sampling the last position's logits.
fn next_token(model: &mut Model, sampler: &mut Sampler, tokens: &[u32], history: &[u32]) -> Result<u32> {
    if sampler.is_greedy() {
        return model.forward_argmax(tokens);
    }
    let logits = model.forward(tokens, Logits::Last)?;
    Ok(sampler.sample(&logits, history))
}

/// Scoring for perplexity: mean negative log-likelihood (natural log) of tokens 1..len-1 of
/// each window of `window` tokens, each given its prefix in the window.
#[derive(Clone, Copy, Debug)]
pub struct Score {
    pub sum_nll: f64,
    pub n_scored: usize,
}

impl Score {
    pub fn mean_nll(&self) -> f64 {
        self.sum_nll / self.n_scored as f64
    }
    pub fn ppl(&self) -> f64 {
        self.mean_nll().exp()
    }
}

pub fn score(model: &mut Model, tokens: &[u32], window: usize) -> Result<Score> {
    if window < 2 || window > model.cfg.seq_len {
        bail!(
            "--ctx must be between 2 and the model's context ({}), got {window}",
            model.cfg.seq_len
        );
    }
    if tokens.len() < 2 {
        bail!("the text has {} token(s): perplexity needs at least 2", tokens.len());
    }
    let vocab = model.cfg.vocab_size;
    let mut s = Score {
        sum_nll: 0.0,
        n_scored: 0,
    };
    for win in tokens.chunks(window) {
        model.truncate(0);
        for (c, chunk) in win.chunks(PREFILL_CHUNK).enumerate() {
            let logits = model.forward(chunk, Logits::All)?;
            for (i, row) in logits.chunks_exact(vocab).enumerate() {
                let t = c * PREFILL_CHUNK + i; // position in the window
                if let Some(&target) = win.get(t + 1) {
                    s.sum_nll += logsumexp(row) - row[target as usize] as f64;
                    s.n_scored += 1;
                }
            }
        }
    }
    model.truncate(0);
    if s.n_scored == 0 {
        bail!("no token was scored: every window holds a single token; use a larger --ctx");
    }
    Ok(s)
}
