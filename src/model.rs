//! The one device seam: a model with the KV caches of its sequences. A sequence is made with
//! `new_seq` (or `fork`), shortened with `truncate` and ended with `release`; `forward` runs one
//! batch of (sequence, next tokens, rows wanted) and returns the logits asked for.
//! Inputs are checked here (Result with a clear message); inside, the hot path asserts.

mod prefix;

use anyhow::{bail, Result};

pub use self::prefix::PrefixStats;
use crate::config::{Config, RopeTable};
use crate::cpu::{self, ops::argmax, KvCache};
use crate::gpu::{GpuModel, GpuRequest};
use crate::lora::Lora;
use crate::moe::Route;
pub use crate::options::{
    Attention, Batch, Device, Dtype, Entry, Gemm, Gemv, HeadSplit, KvDtype, KvLayout, Limits, Options, SeqId, Want,
};
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

/// Most LoRA adapters one model applies at once (each adds its rows to every adapted GPU
/// product's B; the GPU's factor table also bounds sequences × adapters: gpu::lora::MAX_FACTORS).
pub const MAX_LORAS: usize = 31;

/// Logits of the rows an entry asked for, (rows, vocab_size) row-major.
pub type Logits = Vec<f32>;

pub struct Model {
    pub cfg: Config,
    backend: Backend,
    /// LoRA adapters loaded with the model (Model::with_loras), in `--lora` order.
    loras: Vec<Lora>,
    /// (max_seqs) × (loras): each live sequence's factor per adapter (0: off).
    lora_factors: Vec<Vec<f32>>,
    /// MoE routing of every row forwarded since `record_routing(true)`: (layer, position, route).
    routing: Option<Vec<(usize, usize, Route)>>,
    /// Prefix caching (Options::prefix_cache; model/prefix.rs); None: off.
    prefix: Option<prefix::Prefix>,
}

/// Positions the CPU's prefix cache keeps by default (its blocks are copies).
pub const CPU_PREFIX_TOKENS: usize = 8192;

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
        Self::with_loras(cfg, weights, vec![], device, adapter, opts)
    }

    /// `with_options` with LoRA adapters applied unmerged (lora.rs; each checked against
    /// `cfg` by `Lora::load`). A new sequence uses each at its `default_factor`;
    /// `set_lora` picks others. At most MAX_LORAS.
    pub fn with_loras(
        cfg: Config,
        weights: Weights<Tensor>,
        loras: Vec<Lora>,
        device: Device,
        adapter: Option<&str>,
        opts: &Options,
    ) -> Result<Self> {
        if opts.max_seqs == 0 {
            bail!("at least one sequence is needed");
        }
        if loras.len() > MAX_LORAS {
            bail!("{} LoRA adapters given; tinfer applies at most {MAX_LORAS} at once (merge some with `tinfer lora merge`)", loras.len());
        }
        let lora_factors = vec![vec![]; opts.max_seqs];
        let req = |allow_cpu_adapter| GpuRequest {
            adapter: adapter.map(str::to_string),
            allow_cpu_adapter,
            webgpu_limits: opts.limits == Limits::Webgpu,
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
        let prefix = |cpu_blocks| {
            let paged = !on_gpu || opts.kv == KvLayout::Paged;
            (opts.prefix_cache && paged).then(|| prefix::Prefix::new(opts.page, opts.max_seqs, cpu_blocks))
        };
        if on_gpu {
            let gpu = GpuModel::new(&cfg, &weights, &req(true), None, opts, &loras)?;
            return Ok(Model {
                cfg,
                backend: Backend::Gpu(Box::new(gpu)),
                loras,
                lora_factors,
                routing: None,
                prefix: prefix(None),
            });
        }
        let cpu_blocks = opts.kv_blocks.unwrap_or(CPU_PREFIX_TOKENS / opts.page);
        let rope = RopeTable::new(&cfg);
        let caches = vec![None; opts.max_seqs];
        Ok(Model {
            cfg,
            backend: Backend::Cpu {
                weights: Box::new(weights),
                rope,
                caches,
            },
            loras,
            lora_factors,
            routing: None,
            prefix: prefix(Some(cpu_blocks)),
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
        let gpu = GpuModel::new(&cfg, weights, req, Some(max_binding), &Options::default(), &[])?;
        Ok(Model {
            cfg,
            backend: Backend::Gpu(Box::new(gpu)),
            loras: vec![],
            lora_factors: vec![vec![]; Options::default().max_seqs],
            routing: None,
            prefix: None,
        })
    }

    /// Whether the forward pass runs on a GPU adapter (lavapipe included).
    pub fn is_gpu(&self) -> bool {
        matches!(self.backend, Backend::Gpu(_))
    }

    /// Where the forward pass runs, in words.
    pub fn device_name(&self) -> String {
        match &self.backend {
            Backend::Cpu { .. } => format!("cpu ({} threads)", rayon::current_num_threads()),
            Backend::Gpu(g) => format!("gpu: {}", g.gpu.describe()),
        }
    }

    /// A new, empty sequence (the lowest free id).
    pub fn new_seq(&mut self) -> Result<SeqId> {
        let seq = match &mut self.backend {
            Backend::Cpu { caches, .. } => {
                let id = free_slot(caches)?;
                caches[id] = Some(KvCache::new(&self.cfg));
                SeqId(id)
            }
            Backend::Gpu(g) => SeqId(g.kv.add_seq()?),
        };
        let defaults: Vec<f32> = self.loras.iter().map(|l| l.default_factor).collect();
        self.put_lora(seq, defaults);
        if let Some(p) = self.prefix.as_mut() {
            p.reset(seq, None);
        }
        Ok(seq)
    }

    /// Run `seq` with these LoRA factors, one per adapter in the order given to `with_loras` (0 turns one off;
    /// an adapter's own α/r scale is applied on top). Only before its first token: its cache
    /// would hold keys and values computed with other weights. Errors: a dead or started
    /// sequence, a wrong count.
    pub fn set_lora(&mut self, seq: SeqId, factors: &[f32]) -> Result<()> {
        self.live(seq)?;
        if factors.len() != self.loras.len() {
            bail!(
                "{} LoRA factors given for {} adapters loaded",
                factors.len(),
                self.loras.len()
            );
        }
        if self.len(seq) > 0 {
            bail!(
                "sequence {} already holds {} positions: choose its adapters before its first token",
                seq.0,
                self.len(seq)
            );
        }
        self.put_lora(seq, factors.to_vec());
        Ok(())
    }

    /// The LoRA factors `seq` runs with.
    pub fn lora_factors(&self, seq: SeqId) -> &[f32] {
        &self.lora_factors[seq.0]
    }

    fn put_lora(&mut self, seq: SeqId, factors: Vec<f32>) {
        if let Backend::Gpu(g) = &mut self.backend {
            g.set_lora_factors(seq.0, &factors);
        }
        self.lora_factors[seq.0] = factors;
    }

    /// A new sequence that continues `parent`: it holds the same positions (on the GPU with a
    /// paged cache, the same pages, shared until written).
    pub fn fork(&mut self, parent: SeqId) -> Result<SeqId> {
        self.live(parent)?;
        let seq = match &mut self.backend {
            Backend::Cpu { caches, .. } => {
                let id = free_slot(caches)?;
                caches[id] = caches[parent.0].clone();
                SeqId(id)
            }
            Backend::Gpu(g) => SeqId(g.kv.fork(parent.0)?),
        };
        self.put_lora(seq, self.lora_factors[parent.0].clone());
        if let Some(p) = self.prefix.as_mut() {
            p.reset(seq, Some(parent));
        }
        Ok(seq)
    }

    /// Positions held in the KV cache of `seq`.
    pub fn len(&self, seq: SeqId) -> usize {
        match &self.backend {
            Backend::Cpu { caches, .. } => caches[seq.0].as_ref().expect("live sequence").len,
            Backend::Gpu(g) => g.kv.len(seq.0),
        }
    }

    /// Forget positions of `seq` from `len` on (keep a shared prefix); 0 empties it.
    pub fn truncate(&mut self, seq: SeqId, len: usize) {
        let kv_dim = self.cfg.kv_dim();
        match &mut self.backend {
            Backend::Cpu { caches, .. } => {
                let cache = caches[seq.0].as_mut().expect("live sequence");
                cache.truncate(len.min(cache.len), kv_dim)
            }
            Backend::Gpu(g) => g.kv.truncate(seq.0, len),
        }
        if let Some(p) = self.prefix.as_mut() {
            p.truncate(seq, len);
        }
    }

    /// End `seq` and free its cache (on the GPU, its pages no other sequence shares).
    pub fn release(&mut self, seq: SeqId) {
        match &mut self.backend {
            Backend::Cpu { caches, .. } => {
                assert!(caches[seq.0].take().is_some(), "release of a dead sequence {seq:?}")
            }
            Backend::Gpu(g) => g.kv.release(seq.0),
        }
        if let Some(p) = self.prefix.as_mut() {
            p.reset(seq, None);
        }
    }

    /// Whether the KV pool has the blocks for a new sequence of `n` positions (free pages and
    /// cached pages nobody holds; the CPU's caches grow as needed).
    pub fn kv_room_new(&self, n: usize) -> bool {
        match &self.backend {
            Backend::Cpu { .. } => true,
            Backend::Gpu(g) => n.div_ceil(g.kv.page) <= g.kv.alloc.n_free(),
        }
    }

    /// Whether the KV pool has the blocks to add `n` positions to each (sequence, n) of
    /// `wants` (the scheduler asks before a step; the CPU's caches grow as needed).
    pub fn kv_room(&self, wants: &[(SeqId, usize)]) -> bool {
        match &self.backend {
            Backend::Cpu { .. } => true,
            Backend::Gpu(g) => {
                let needed: usize = wants.iter().map(|&(s, n)| g.kv.blocks_needed(s.0, n)).sum();
                needed <= g.kv.alloc.n_free()
            }
        }
    }

    /// Per-kernel time of a GPU step of `t` rows at the end of `seqs[0]`, or of one row of each
    /// of several `seqs` (see GpuModel::profile); None on the CPU.
    pub fn profile(&mut self, seqs: &[SeqId], t: usize, reps: usize) -> Result<Option<crate::gpu::model::Profile>> {
        match &mut self.backend {
            Backend::Cpu { .. } => Ok(None),
            Backend::Gpu(g) => {
                let seqs: Vec<usize> = seqs.iter().map(|s| s.0).collect();
                g.profile(&seqs, t, reps).map(Some)
            }
        }
    }

    /// The weight formats the forward pass reads: "f32", "f16", or the block formats kept on
    /// the GPU ("Q5_0+Q8_0+Q4_K+Q6_K").
    pub fn dtype_name(&self) -> String {
        match &self.backend {
            Backend::Cpu { .. } => "f32".into(),
            Backend::Gpu(g) => g.dtype_name(),
        }
    }

    /// Bytes of weight matrices one decode step reads: the device's (quantized blocks as laid
    /// out, padding included) on the GPU, f32 on the CPU.
    pub fn weight_bytes(&self) -> usize {
        match &self.backend {
            Backend::Cpu { .. } => self.cfg.weight_bytes_per_token(4) as usize,
            Backend::Gpu(g) => g.weight_bytes,
        }
    }

    /// Bytes of all weight matrices on the GPU (blocks as laid out, padding included); None on
    /// the CPU.
    pub fn device_weight_bytes(&self) -> Option<usize> {
        match &self.backend {
            Backend::Cpu { .. } => None,
            Backend::Gpu(g) => Some(g.device_bytes),
        }
    }

    /// "f16" or "f32": the GPU KV cache's values; None on the CPU (f32, no cache format).
    pub fn kv_dtype_name(&self) -> Option<&'static str> {
        match &self.backend {
            Backend::Cpu { .. } => None,
            Backend::Gpu(g) => Some(if g.kv_f16 { "f16" } else { "f32" }),
        }
    }

    /// Device memory the GPU model holds, by part (weights, KV cache, scratch); None on the CPU.
    pub fn device_memory(&self) -> Option<crate::gpu::model::DeviceMemory> {
        match &self.backend {
            Backend::Cpu { .. } => None,
            Backend::Gpu(g) => Some(g.memory),
        }
    }

    /// Submits a GPU prompt step of `t` rows is cut into (Options::submit_macs); None on the CPU.
    pub fn prefill_submits(&self, t: usize) -> Option<usize> {
        match &self.backend {
            Backend::Cpu { .. } => None,
            Backend::Gpu(g) => Some(g.prefill_submits(t)),
        }
    }

    /// The GPU kernel shapes in use ("gemv split, gemm tiled, attention lanes"); None on the CPU.
    pub fn kernel_names(&self) -> Option<String> {
        match &self.backend {
            Backend::Cpu { .. } => None,
            Backend::Gpu(g) => Some(g.kernel_names()),
        }
    }

    /// Rows a step of several rows computes for the price of one: the GPU GEMM's token tile (8
    /// rows, 64 tiled); 1 on the CPU, where every row costs its own products. Speculation fills
    /// its verify steps up to it.
    pub fn row_tile(&self) -> usize {
        match &self.backend {
            Backend::Cpu { .. } => 1,
            Backend::Gpu(g) if g.kind.gemm_tiled => 64,
            Backend::Gpu(_) => 8,
        }
    }

    /// Dispatches of one greedy decode step on the GPU; None on the CPU.
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

    fn live(&self, seq: SeqId) -> Result<()> {
        let live = match &self.backend {
            Backend::Cpu { caches, .. } => caches.get(seq.0).is_some_and(Option::is_some),
            Backend::Gpu(g) => g.kv.seq_ids().any(|s| s == seq.0),
        };
        if !live {
            bail!("sequence {} is not live (never made, or released)", seq.0);
        }
        Ok(())
    }

    fn check(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            bail!("nothing to run: the batch is empty");
        }
        for (i, e) in batch.iter().enumerate() {
            self.live(e.seq)?;
            if batch[..i].iter().any(|o| o.seq == e.seq) {
                bail!("sequence {} appears twice in one batch", e.seq.0);
            }
            if e.tokens.is_empty() {
                bail!("nothing to run: the token list is empty");
            }
            if let Want::LastN(n) = e.want {
                if n == 0 || n > e.tokens.len() {
                    bail!("LastN({n}) asks for 1 to {} rows (the tokens run)", e.tokens.len());
                }
            }
            if let Some(&bad) = e.tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
                bail!(
                    "token id {bad} is outside the vocabulary (size {})",
                    self.cfg.vocab_size
                );
            }
            let pos = self.len(e.seq);
            if pos + e.tokens.len() > self.cfg.seq_len {
                bail!(
                    "context full: {pos} tokens in the cache + {} new exceed the model's context of {} tokens",
                    e.tokens.len(),
                    self.cfg.seq_len
                );
            }
        }
        Ok(())
    }

    /// Run each entry's tokens at the next positions of its sequence; per entry, the logits of
    /// the rows it wants, in batch order. On the GPU several sequences run as one step where
    /// they fit; a long entry runs in steps.
    pub fn forward(&mut self, batch: &Batch) -> Result<Vec<Logits>> {
        self.check(batch)?;
        let out = self.forward_unnoted(batch)?;
        for e in batch {
            self.note_tokens(e.seq, e.tokens);
        }
        Ok(out)
    }

    fn forward_unnoted(&mut self, batch: &Batch) -> Result<Vec<Logits>> {
        match &mut self.backend {
            // every entry's rows in one pass (weights read once a step)
            Backend::Cpu { weights, rope, caches } if self.routing.is_none() => {
                let mut items: Vec<cpu::Item> = vec![];
                let mut rest: Vec<Option<&mut KvCache>> = caches.iter_mut().map(Option::as_mut).collect();
                for e in batch {
                    items.push(cpu::Item {
                        cache: rest[e.seq.0].take().expect("a live sequence, once in the batch"),
                        tokens: e.tokens,
                        want: e.want,
                        lora: (self.loras.iter())
                            .zip(self.lora_factors[e.seq.0].iter().copied())
                            .filter(|&(_, f)| f != 0.0)
                            .collect(),
                    });
                }
                Ok(cpu::forward_batch(&self.cfg, weights, rope, &mut items, None))
            }
            // recording MoE routing: an entry at a time, its rows' positions known
            Backend::Cpu { weights, rope, caches } => Ok(batch
                .iter()
                .map(|e| {
                    let cache = caches[e.seq.0].as_mut().expect("live sequence");
                    let lora: Vec<(&Lora, f32)> = (self.loras.iter())
                        .zip(self.lora_factors[e.seq.0].iter().copied())
                        .filter(|&(_, f)| f != 0.0)
                        .collect();
                    let pos = cache.len;
                    let mut routes = Vec::new();
                    let out = cpu::forward(
                        &self.cfg,
                        weights,
                        rope,
                        cache,
                        e.tokens,
                        e.want,
                        &lora,
                        Some(&mut routes),
                    );
                    for (l, rows) in routes {
                        let all = self.routing.as_mut().expect("recording");
                        all.extend(rows.into_iter().enumerate().map(|(i, r)| (l, pos + i, r)));
                    }
                    out
                })
                .collect()),
            Backend::Gpu(g) if self.routing.is_some() => {
                let pos: Vec<usize> = batch.iter().map(|e| g.seq_len(e.seq)).collect();
                let out = g.forward(batch)?;
                self.routing.as_mut().unwrap().extend(g.routing(batch, &pos)?);
                Ok(out)
            }
            Backend::Gpu(g) => g.forward(batch),
        }
    }

    /// Most rows one forward runs in one step (the GPU's routing is read back per step; the
    /// CPU runs any number).
    pub fn step_rows(&self) -> usize {
        match &self.backend {
            Backend::Cpu { .. } => usize::MAX,
            Backend::Gpu(g) => g.step_rows(),
        }
    }

    /// Start (`true`) or stop recording the MoE routing of the rows forwarded from now on
    /// (`tinfer logits --routing`); `take_routing` returns it. A dense model records nothing.
    pub fn record_routing(&mut self, on: bool) {
        self.routing = on.then(Vec::new);
    }

    /// The routing recorded so far, (layer, position, route) in the order the rows ran; the
    /// record is emptied.
    pub fn take_routing(&mut self) -> Vec<(usize, usize, Route)> {
        self.routing.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// `forward` of entries that each want `Last`, then the most likely next token of each (the
    /// first on ties). The GPU picks it on the device for a batch of one sequence and reads back
    /// only the id: greedy decoding's step.
    pub fn forward_argmax(&mut self, batch: &Batch) -> Result<Vec<u32>> {
        if let Some(e) = batch.iter().find(|e| e.want != Want::Last) {
            bail!(
                "forward_argmax picks from the last row: sequence {} wants {:?}",
                e.seq.0,
                e.want
            );
        }
        self.check(batch)?;
        match &mut self.backend {
            Backend::Gpu(g) if self.routing.is_none() => {
                let ids = g.forward_argmax_batch(batch)?;
                for e in batch {
                    self.note_tokens(e.seq, e.tokens);
                }
                Ok(ids)
            }
            _ => Ok(self.forward(batch)?.iter().map(|l| argmax(l) as u32).collect()),
        }
    }

    /// Greedy decoding of `seq` from `token` (its last token, not yet in the cache): up to `n`
    /// next ids, each fed back as the next step's token. On the GPU the steps are recorded into
    /// one submit with the argmax fed to the next embedding on the device and the ids read back
    /// together (GpuModel::decode_greedy, at most gpu::MAX_AHEAD); on the CPU, one forward_argmax
    /// after another (its slow twin). Fewer than `n` come back where the context or the KV pool
    /// ends sooner. Afterwards the cache holds `token` and every id returned but the last.
    /// Errors: a dead sequence, a full context, a full KV pool.
    pub fn decode_greedy(&mut self, seq: SeqId, token: u32, n: usize) -> Result<Vec<u32>> {
        self.live(seq)?;
        let len = self.len(seq);
        if len >= self.cfg.seq_len {
            bail!(
                "sequence {} already fills the context of {} tokens",
                seq.0,
                self.cfg.seq_len
            );
        }
        if token as usize >= self.cfg.vocab_size {
            bail!("token id {token} is out of the vocabulary of {}", self.cfg.vocab_size);
        }
        let n = n.clamp(1, crate::gpu::MAX_AHEAD).min(self.cfg.seq_len - len);
        match &mut self.backend {
            Backend::Gpu(g) => {
                let ids = g.decode_greedy(seq.0, token, n)?;
                let fed: Vec<u32> = std::iter::once(token)
                    .chain(ids[..ids.len() - 1].iter().copied())
                    .collect();
                self.note_tokens(seq, &fed);
                Ok(ids)
            }
            Backend::Cpu { .. } => {
                let mut ids = vec![token];
                for _ in 0..n {
                    let tokens = [*ids.last().unwrap()];
                    let entry = Entry {
                        seq,
                        tokens: &tokens,
                        want: Want::Last,
                    };
                    ids.push(self.forward_argmax(&[entry])?[0]);
                }
                Ok(ids.split_off(1))
            }
        }
    }
}

/// The lowest free slot of the CPU's caches.
fn free_slot(caches: &[Option<KvCache>]) -> Result<usize> {
    caches
        .iter()
        .position(Option::is_none)
        .ok_or_else(|| anyhow::anyhow!("too many sequences: all {} are in use; raise --n-seq", caches.len()))
}
