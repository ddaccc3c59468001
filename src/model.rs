//! The one device seam: a model with its KV cache, and `forward(tokens) -> logits`.
//! Inputs are checked here (Result with a clear message); inside, the hot path asserts.

use anyhow::{bail, Result};
use clap::ValueEnum;

use crate::config::{Config, RopeTable};
use crate::cpu::{self, ops::argmax, KvCache, Logits};
use crate::gpu::{GpuModel, GpuRequest};
use crate::weights::Weights;

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// A hardware GPU if there is one, else the CPU.
    Auto,
    /// The CPU reference path.
    Cpu,
    /// WGSL kernels through wgpu (a hardware GPU, or a CPU adapter such as lavapipe).
    Gpu,
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
    Gpu(Box<GpuModel>),
}

impl Model {
    /// Build the model on `device`; `adapter` picks a GPU adapter by name substring.
    pub fn new(cfg: Config, weights: Weights<Vec<f32>>, device: Device, adapter: Option<&str>) -> Result<Self> {
        let req = |allow_cpu_adapter| GpuRequest {
            adapter: adapter.map(str::to_string),
            allow_cpu_adapter,
        };
        let on_gpu = match device {
            Device::Cpu => false,
            Device::Gpu => true,
            // Auto: a hardware GPU, or the adapter named; otherwise the CPU path.
            Device::Auto => {
                adapter.is_some()
                    || crate::gpu::list_adapters()
                        .iter()
                        .any(|a| a.device_type != wgpu::DeviceType::Cpu)
            }
        };
        if on_gpu {
            let gpu = GpuModel::new(&cfg, &weights, &req(true), None)?;
            return Ok(Model {
                cfg,
                backend: Backend::Gpu(Box::new(gpu)),
            });
        }
        let rope = RopeTable::new(&cfg);
        let cache = KvCache::new(&cfg);
        Ok(Model {
            cfg,
            backend: Backend::Cpu { weights, rope, cache },
        })
    }

    /// Build on the GPU with storage bindings capped at `max_binding` bytes (tests use this to
    /// exercise tables split by rows).
    pub fn new_gpu_with_binding_limit(
        cfg: Config,
        weights: &Weights<Vec<f32>>,
        req: &GpuRequest,
        max_binding: u64,
    ) -> Result<Self> {
        let gpu = GpuModel::new(&cfg, weights, req, Some(max_binding))?;
        Ok(Model {
            cfg,
            backend: Backend::Gpu(Box::new(gpu)),
        })
    }

    /// Where the forward pass runs, in words.
    pub fn device_name(&self) -> String {
        match &self.backend {
            Backend::Cpu { .. } => format!("cpu ({} threads)", rayon::current_num_threads()),
            Backend::Gpu(g) => format!("gpu: {}", g.gpu.describe()),
        }
    }

    /// Positions already in the KV cache.
    pub fn pos(&self) -> usize {
        match &self.backend {
            Backend::Cpu { cache, .. } => cache.len,
            Backend::Gpu(g) => g.pos(),
        }
    }

    /// Forget positions from `len` on (keep a shared prefix); 0 empties the cache.
    pub fn truncate(&mut self, len: usize) {
        let kv_dim = self.cfg.kv_dim();
        match &mut self.backend {
            Backend::Cpu { cache, .. } => cache.truncate(len.min(cache.len), kv_dim),
            Backend::Gpu(g) => g.truncate(len),
        }
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
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
        Ok(())
    }

    /// Run `tokens` at the next positions; logits for the last position or for all of them.
    pub fn forward(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        self.check(tokens)?;
        match &mut self.backend {
            Backend::Cpu { weights, rope, cache } => Ok(cpu::forward(&self.cfg, weights, rope, cache, tokens, want)),
            Backend::Gpu(g) => g.forward(tokens, want),
        }
    }

    /// Run `tokens` and return the most likely next token (the first on ties). The GPU picks it
    /// on the device and reads back only the id.
    pub fn forward_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        self.check(tokens)?;
        match &mut self.backend {
            Backend::Cpu { weights, rope, cache } => {
                Ok(argmax(&cpu::forward(&self.cfg, weights, rope, cache, tokens, Logits::Last)) as u32)
            }
            Backend::Gpu(g) => g.forward_argmax(tokens),
        }
    }
}
