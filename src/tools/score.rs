//! Perplexity: mean negative log-likelihood (natural log) of tokens 1..len-1 of each window of
//! `window` tokens, each given its prefix in the window.

use anyhow::{bail, Result};

use crate::cpu::ops::logsumexp;
use crate::engine::PREFILL_CHUNK;
use crate::model::{Entry, Model, Want};

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

/// Score `tokens` in windows of `window`, each in a fresh sequence (released afterwards).
pub fn score(model: &mut Model, tokens: &[u32], window: usize) -> Result<Score> {
    score_rows(model, tokens, window, |_, _| {})
}

/// `score`, also handing each scored row of logits (vocab,) and its target to `each` in order
/// (the KL-divergence harness, src/tools/kl.rs, compares these rows between runs).
pub fn score_rows(
    model: &mut Model,
    tokens: &[u32],
    window: usize,
    mut each: impl FnMut(&[f32], u32),
) -> Result<Score> {
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
    let seq = model.new_seq()?;
    let r = (|| -> Result<()> {
        for win in tokens.chunks(window) {
            model.truncate(seq, 0);
            for (c, chunk) in win.chunks(PREFILL_CHUNK).enumerate() {
                let entry = Entry {
                    seq,
                    tokens: chunk,
                    want: Want::All,
                };
                let logits = model.forward(&[entry])?.remove(0);
                for (i, row) in logits.chunks_exact(vocab).enumerate() {
                    let t = c * PREFILL_CHUNK + i; // position in the window
                    if let Some(&target) = win.get(t + 1) {
                        s.sum_nll += logsumexp(row) - row[target as usize] as f64;
                        s.n_scored += 1;
                        each(row, target);
                    }
                }
            }
        }
        Ok(())
    })();
    model.release(seq);
    r?;
    if s.n_scored == 0 {
        bail!("no token was scored: every window holds a single token; use a larger --ctx");
    }
    Ok(s)
}
