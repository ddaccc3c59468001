//! The one device seam: a model with its KV cache, and `forward(tokens) -> logits`.
//! Inputs are checked here (Result with a clear message); inside, the hot path asserts.

use anyhow::{bail, Result};

use crate::config::{Config, RopeTable};
use crate::cpu::{self, ops::argmax, KvCache, Logits};
use crate::gpu::{GpuModel, GpuRequest};
pub use crate::options::{Attention, Device, Dtype, KvLayout, Options};
use crate::weights::{Tensor, Weights};

/// How much of the KV pool is in use.
#[derive(Clone, Copy, Debug)]
pub struct KvUsage {
    pub pages_used: usize,
    pub pages: usize,
    pub page: usize, // tokens per page
    /// Fraction of the rows in used pages that hold no position (partly filled last pages).
    pub waste: f64,
}

pub struct Model {
    pub cfg: Config,
    backend: Backend,
}

enum Backend {
    Cpu {
        weights: Box<Weights<Tensor>>,
        rope: RopeTable,
        caches: Vec<Option<KvCache>>, // (max_seqs,) one contiguous cache per live sequence
    },
    Gpu(Box<GpuModel>),
}

impl Model {
    /// Build the model on `device`; `adapter` picks a GPU adapter by name substring.
    pub fn new(cfg: Config, weights: Weights<Tensor>, device: Device, adapter: Option<&str>) -> Result<Self> {
        Self::with_options(cfg, weights, device, adapter, &Options::default())
    }

    /// Build the model on `device` with engine options (attention kernels, KV layout, sequences).
    pub fn with_options(
        cfg: Config,
        weights: Weights<Tensor>,
        device: Device,
        adapter: Option<&str>,
        opts: &Options,
    ) -> Result<Self> {
        if opts.max_seqs == 0 {
            bail!("at least one sequence is needed");
        }
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
            let gpu = GpuModel::new(&cfg, &weights, &req(true), None, opts)?;
            return Ok(Model {
                cfg,
                backend: Backend::Gpu(Box::new(gpu)),
            });
        }
        let rope = RopeTable::new(&cfg);
        let mut caches = vec![None; opts.max_seqs];
        caches[0] = Some(KvCache::new(&cfg));
        Ok(Model {
            cfg,
            backend: Backend::Cpu {
                weights: Box::new(weights),
                rope,
                caches,
            },
        })
    }

    /// Build on the GPU with storage bindings capped at `max_binding` bytes (tests use this to
    /// exercise tables split by rows).
    pub fn new_gpu_with_binding_limit(
        cfg: Config,
        weights: &Weights<Tensor>,
        req: &GpuRequest,
        max_binding: u64,
    ) -> Result<Self> {
        let gpu = GpuModel::new(&cfg, weights, req, Some(max_binding), &Options::default())?;
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

    /// Positions already in the KV cache of sequence 0 (the one `forward` runs).
    pub fn pos(&self) -> usize {
        self.pos_of(0)
    }

    /// Positions already in the KV cache of sequence `seq`.
    pub fn pos_of(&self, seq: usize) -> usize {
        match &self.backend {
            Backend::Cpu { caches, .. } => caches[seq].as_ref().expect("live sequence").len,
            Backend::Gpu(g) => g.pos(seq),
        }
    }

    /// Forget positions of sequence 0 from `len` on (keep a shared prefix); 0 empties the cache.
    pub fn truncate(&mut self, len: usize) {
        let kv_dim = self.cfg.kv_dim();
        match &mut self.backend {
            Backend::Cpu { caches, .. } => {
                let cache = caches[0].as_mut().expect("sequence 0 lives");
                cache.truncate(len.min(cache.len), kv_dim)
            }
            Backend::Gpu(g) => g.truncate(0, len),
        }
    }

    /// A new sequence that continues `parent`: it holds the same positions (on the GPU with a
    /// paged cache, the same pages, shared until written). Returns its id.
    pub fn fork(&mut self, parent: usize) -> Result<usize> {
        match &mut self.backend {
            Backend::Cpu { caches, .. } => {
                let copy = caches[parent].clone().expect("live parent");
                let id = caches.iter().position(Option::is_none).ok_or_else(|| {
                    anyhow::anyhow!("too many sequences: all {} are in use; raise --n-seq", caches.len())
                })?;
                caches[id] = Some(copy);
                Ok(id)
            }
            Backend::Gpu(g) => g.fork(parent),
        }
    }

    /// End sequence `seq` (not 0) and free its cache.
    pub fn release(&mut self, seq: usize) {
        assert!(seq != 0, "sequence 0 is never released");
        match &mut self.backend {
            Backend::Cpu { caches, .. } => caches[seq] = None,
            Backend::Gpu(g) => g.release(seq),
        }
    }

    /// Dispatches of one greedy decode step on the GPU; None on the CPU.
    /// Per-kernel time of a GPU step of `t` rows (see GpuModel::profile); None on the CPU.
    pub fn profile(&mut self, t: usize, reps: usize) -> Result<Option<crate::gpu::model::Profile>> {
        match &mut self.backend {
            Backend::Cpu { .. } => Ok(None),
            Backend::Gpu(g) => g.profile(t, reps).map(Some),
        }
    }

    /// The weight element type the forward pass reads: "f16" or "f32".
    pub fn dtype_name(&self) -> &'static str {
        match &self.backend {
            Backend::Cpu { .. } => "f32",
            Backend::Gpu(g) => g.dtype_name(),
        }
    }

    pub fn dispatches_per_token(&self) -> Option<usize> {
        match &self.backend {
            Backend::Cpu { .. } => None,
            Backend::Gpu(g) => Some(g.dispatches_per_token()),
        }
    }

    /// The GPU KV pool's use now; None on the CPU.
    pub fn kv_usage(&self) -> Option<KvUsage> {
        match &self.backend {
            Backend::Cpu { .. } => None,
            Backend::Gpu(g) => Some(KvUsage {
                pages_used: g.kv.blocks_in_use(),
                pages: g.kv.alloc.n_blocks(),
                page: g.kv.page,
                waste: g.kv.waste(),
            }),
        }
    }

    fn check(&self, seq: usize, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            bail!("nothing to run: the token list is empty");
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            bail!(
                "token id {bad} is outside the vocabulary (size {})",
                self.cfg.vocab_size
            );
        }
        let pos = self.pos_of(seq);
        if pos + tokens.len() > self.cfg.seq_len {
            bail!(
                "context full: {pos} tokens in the cache + {} new exceed the model's context of {} tokens",
                tokens.len(),
                self.cfg.seq_len
            );
        }
        Ok(())
    }

    /// Run `tokens` at the next positions of sequence 0; logits for the last position or for all.
    pub fn forward(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        self.check(0, tokens)?;
        match &mut self.backend {
            Backend::Cpu { weights, rope, caches } => Ok(cpu::forward(
                &self.cfg,
                weights,
                rope,
                caches[0].as_mut().unwrap(),
                tokens,
                want,
            )),
            Backend::Gpu(g) => g.forward(0, tokens, want),
        }
    }

    /// Run `tokens` on sequence 0 and return the most likely next token (the first on ties).
    /// The GPU picks it on the device and reads back only the id.
    pub fn forward_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        self.check(0, tokens)?;
        match &mut self.backend {
            Backend::Cpu { weights, rope, caches } => Ok(argmax(&cpu::forward(
                &self.cfg,
                weights,
                rope,
                caches[0].as_mut().unwrap(),
                tokens,
                Logits::Last,
            )) as u32),
            Backend::Gpu(g) => g.forward_argmax(0, tokens),
        }
    }

    /// One forward over several sequences, each (sequence, its next tokens): on the GPU one
    /// pass where it fits (each row with its own position and block table). Returns the last
    /// position's logits of each, in order.
    pub fn forward_batch(&mut self, batch: &[(usize, &[u32])]) -> Result<Vec<Vec<f32>>> {
        for (i, &(seq, toks)) in batch.iter().enumerate() {
            self.check(seq, toks)?;
            if batch[..i].iter().any(|&(s, _)| s == seq) {
                bail!("sequence {seq} appears twice in one batch");
            }
        }
        match &mut self.backend {
            Backend::Cpu { weights, rope, caches } => Ok(batch
                .iter()
                .map(|&(seq, toks)| {
                    let cache = caches[seq].as_mut().expect("live sequence");
                    cpu::forward(&self.cfg, weights, rope, cache, toks, Logits::Last)
                })
                .collect()),
            Backend::Gpu(g) => g.forward_batch(batch),
        }
    }
}
