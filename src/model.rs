//! The one device seam: a model with its KV cache, and `forward(tokens) -> logits`.
//! Inputs are checked here (Result with a clear message); inside, the hot path asserts.

use anyhow::{bail, Result};
use clap::ValueEnum;

use crate::config::{Config, RopeTable};
use crate::cpu::{self, KvCache, Logits};
use crate::weights::Weights;

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// The CPU reference path.
    Cpu,
}

pub struct Model {
    pub cfg: Config,
    backend: Backend,
}

enum Backend {
    Cpu {
        weights: Weights<Vec<f32>>,
        rope: RopeTable,
        cache: KvCache,
    },
}

impl Model {
    pub fn new(cfg: Config, weights: Weights<Vec<f32>>, device: Device) -> Result<Self> {
        match device {
            Device::Cpu => {
                let rope = RopeTable::new(&cfg);
                let cache = KvCache::new(&cfg);
                Ok(Model {
                    cfg,
                    backend: Backend::Cpu { weights, rope, cache },
                })
            }
        }
    }

    /// Positions already in the KV cache.
    pub fn pos(&self) -> usize {
        match &self.backend {
            Backend::Cpu { cache, .. } => cache.len,
        }
    }

    /// Forget positions from `len` on (keep a shared prefix); 0 empties the cache.
    pub fn truncate(&mut self, len: usize) {
        let kv_dim = self.cfg.kv_dim();
        match &mut self.backend {
            Backend::Cpu { cache, .. } => cache.truncate(len.min(cache.len), kv_dim),
        }
    }

    /// Run `tokens` at the next positions; logits for the last position or for all of them.
    pub fn forward(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            bail!("nothing to run: the token list is empty");
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            );
        }
        let pos = self.pos();
        if pos + tokens.len() > self.cfg.seq_len {
            bail!(
                "context full: {pos} tokens in the cache + {} new exceed the model's context of {} tokens",
                tokens.len(),
                self.cfg.seq_len
            );
        }
        match &mut self.backend {
            Backend::Cpu { weights, rope, cache } => Ok(cpu::forward(&self.cfg, weights, rope, cache, tokens, want)),
        }
    }
}
