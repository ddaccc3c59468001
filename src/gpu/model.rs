//! The GPU model at run time: the plan built at load (src/gpu/forward.rs), and one step =
//! write the Step buffer (and block tables), record the planned dispatches, submit, read back.

use anyhow::{bail, Result};

use super::buffers::{kv_row_bytes, Activations, KvBuffers};
use super::context::{Gpu, GpuRequest};
use super::forward::{record, record_head, StepKind};
use super::kernels::{
    record as record_ops, split_plan, step_bytes, step_size, Dims, Kernels, MatmulKind, Op, Row, FLASH_TILE,
    MAX_STEP_TOKENS, UNIFORM_X_BYTES,
};
use super::launch::{AttnShape, Fused, Launch};
use super::lora::GpuLora;
use super::params::GpuWeights;
use super::weights::WeightPlan;
use crate::config::{Config, RopeTable};
use crate::kv_cache::KvPages;
use crate::moe::Route;
use crate::options::{Batch, SeqId};
use crate::options::{Dtype, Gemm, Gemv, HeadSplit, KvDtype, KvLayout, Options};
use crate::weights::{Format, Tensor, Weights};

mod steps;

/// Most decode steps `decode_greedy` records into one submit.
pub const MAX_AHEAD: usize = 64;

/// A step of one sequence of at most this many rows (a speculative verify step) runs the batch
/// body, split-K attention per row, where the prefill's flash kernel takes the rows of one query
/// head a workgroup (attention_flash_lanes: 32 rows at head_dim 64) and would mostly idle on a
/// few. attention_flash_sg (CPU adapters) takes a few rows of every query head of a KV head in
/// one subgroup and leaves idle subgroups out, so there, up to head_dim 64 (`flash_pairs`), a step
/// of one sequence always runs the prefill body (lavapipe, Qwen2.5-0.5B, 9 rows after 300 keys:
/// its attention 11 ms against 55 ms of split-K attention per row). At head_dim 128 its four
/// rows' q and acc an invocation spill (Qwen2.5-1.5B, 6 rows: 380 ms against 119; benches/RESULTS.md).
pub const FEW_ROWS: usize = 16;

/// Where the time of one step goes (GpuModel::profile).
pub struct Profile {
    pub kernels: Vec<(String, usize, f64)>, // kernel, dispatches, ms (its dispatches in one submit)
    pub step_ms: f64,                       // the whole step in one submit
}

/// Bytes of device memory a GpuModel holds, by part, as allocated (Gpu::allocated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceMemory {
    /// matrices (textures, layout padding included) and vectors (norms, biases)
    pub weights: u64,
    /// K and V pools of every layer, block tables, the copy-on-write page
    pub kv_cache: u64,
    /// activations, split-K partials, logits, step and shape uniforms, RoPE tables
    pub scratch: u64,
}

impl DeviceMemory {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.scratch
    }
}

pub struct GpuModel {
    pub gpu: Gpu,
    pub memory: DeviceMemory,
    /// attention kernels split head_dim across lanes (attention_*_lanes.wgsl)
    pub head_lanes: bool,
    pub kind: MatmulKind, // float weight dtype and matrix-kernel variant
    /// bytes of weight matrices a decode step reads (GpuWeights::read_bytes)
    pub weight_bytes: usize,
    /// bytes of all weight matrices on the device
    pub device_bytes: usize,
    /// the matrices' device formats, each once, in the order of the forward pass
    formats: Vec<Format>,
    pub cfg: Config,
    pub kv: KvPages,                // which cache row holds each position of each sequence
    pub kv_f16: bool,               // the cache holds f16 values (lib/kv.wgsl), else f32
    pub min_split_keys: usize,      // split-K: keys per decode partition at least
    pub workers: usize,             // workgroups the device runs at once, roughly (split-K aims at it)
    decode_group: usize,            // query heads a workgroup of the decode attention takes
    flash_pairs: bool,              // the prefill attention is attention_flash_sg, head_dim ≤ 64
    pub k_cache: Vec<wgpu::Buffer>, // n_layers × (n_blocks * page, kv_dim) pool of pages
    pub v_cache: Vec<wgpu::Buffer>, // n_layers × (n_blocks * page, kv_dim)
    pub block_copy: wgpu::Buffer,   // (page, kv_dim) staging for copy-on-write of a shared page
    pub tables: wgpu::Buffer,       // (max_seqs, max_blocks) u32 block tables
    pub max_blocks: usize,          // block-table row length
    pub step: wgpu::Buffer,         // Step: T, split plan, rows (token, pos, slot, seq)
    pub head_step: wgpu::Buffer,    // the gathering head's Step: R, rows[r].x = the step row it reads
    pub logits: wgpu::Buffer,       // (all_rows, vocab)
    pub next_id: wgpu::Buffer,      // (all_rows,) u32 argmax of each logits row
    pub ahead_steps: wgpu::Buffer,  // (MAX_AHEAD,) Step records of one row: decode_greedy's steps
    pub staging: wgpu::Buffer,      // readback
    /// Most multiply-adds one submit of a prefill or batch step records (Options::submit_macs).
    pub submit_macs: u64,
    layer_macs: u64,            // multiply-adds of one layer's products per row
    pub all_rows: usize,        // most rows of logits one step can return
    pub prefill: Vec<Op>,       // embedding + layers with GEMMs, prefill attention (one sequence, T > 1)
    pub batch: Vec<Op>,         // embedding + layers with GEMMs, row attention (several sequences)
    prefill_starts: Vec<usize>, // where each layer's ops begin in prefill (submit cuts)
    batch_starts: Vec<usize>,   // where each layer's ops begin in batch
    pub decode: Vec<Op>,        // embedding + layers with GEMVs, row attention (T = 1)
    pub head_last: Vec<Op>,     // final norm + LM head of the last row
    pub head_rows: Vec<Op>,     // final norm + LM head of the rows head_step names
    pub argmax: Op,             // greedy choice on the device (logits row 0)
    pub argmax_rows: Op,        // of each of head_step's rows
    lora: Option<GpuLora>,      // LoRA adapters, unmerged
    /// Each MoE block's (layer, routing, router logits, router rows), for `routing`
    moe_bufs: Vec<(usize, wgpu::Buffer, wgpu::Buffer, usize)>,
}

impl GpuModel {
    /// Build the model on the device: upload the weights, allocate every buffer, compile every
    /// pipeline and record the dispatches of each kind of step (nothing is allocated later).
    /// `max_binding` caps storage bindings below the device's (tests reach split tables with it).
    pub fn new(
        cfg: &Config,
        w: &Weights<Tensor>,
        req: &GpuRequest,
        max_binding: Option<u64>,
        opts: &Options,
        loras: &[crate::lora::Lora],
    ) -> Result<Self> {
        let gpu = Gpu::new(req)?;
        let limit = max_binding.unwrap_or(gpu.max_binding).min(gpu.max_binding);
        for (name, v) in [
            ("hidden_size", cfg.dim),
            ("intermediate_size", cfg.hidden_dim),
            ("n_heads * head_dim", cfg.q_dim()),
        ] {
            if v % 4 != 0 {
                bail!("{name} = {v} is not a multiple of 4, which the GPU matmul kernels (vec4 loads) need; use --device cpu");
            }
            if v as u64 * 4 > UNIFORM_X_BYTES {
                bail!("{name} = {v} is over 16384, the longest row the GPU matvec kernel reads from its 64 KiB uniform; use --device cpu");
            }
        }
        let kv_f16 = match opts.kv_dtype {
            KvDtype::F16 => true,
            KvDtype::F32 => false,
            KvDtype::Auto => !gpu.is_cpu_adapter() && opts.dtype != Dtype::F32,
        };
        let kv = kv_pool(&gpu, cfg, opts, kv_f16)?;
        let subgroups = opts.subgroups && gpu.has_subgroups(8);
        let plan = WeightPlan::new(opts.dtype, subgroups).exact_layers(!gpu.is_cpu_adapter());
        let gemv_split = match opts.gemv {
            Gemv::Split => true,
            Gemv::Rows => false,
            Gemv::Auto => !gpu.is_cpu_adapter(),
        };
        let gemm_tiled = match opts.gemm {
            Gemm::Tiled => true,
            Gemm::Rows => false,
            Gemm::Auto => !gpu.is_cpu_adapter(),
        };
        let kind = MatmulKind::float(plan.f16, subgroups)
            .gemv_split(gemv_split)
            .gemm_tiled(gemm_tiled);
        // Kernels::new picks the attention kernels for the adapter (lanes on GPUs); an explicit
        // --head-split replaces them
        let k = Kernels::new(&gpu, cfg.head_dim, kv.page, kind, kv_f16)?;
        let (k, lanes) = match opts.head_split {
            HeadSplit::Auto => (k, !gpu.is_cpu_adapter()),
            forced => {
                let lanes = forced == HeadSplit::Lanes;
                (k.with_head_split(&gpu, cfg.head_dim, kv.page, lanes)?, lanes)
            }
        };
        let k = k.with_gqa(&gpu, cfg.head_dim, kv.page, cfg.n_heads / cfg.n_kv_heads)?;

        // Weights (matrices in textures, vectors in storage buffers), activations, KV cache.
        let before = gpu.allocated();
        let w = GpuWeights::upload(&gpu, cfg, w, plan)?;
        let weights_bytes = gpu.allocated() - before;
        let k_of_n = cfg.moe.as_ref().map_or((1, 1), |m| (m.top_k, m.n_experts));
        let (weight_bytes, device_bytes) = (w.read_bytes(k_of_n), w.matrix_bytes());
        let formats = w.formats();
        let moe_bufs = (w.layers.iter().enumerate())
            .filter_map(|(l, lw)| {
                lw.moe
                    .as_ref()
                    .map(|m| (l, m.routing.clone(), m.logits.clone(), m.router.rows))
            })
            .collect();
        let a = Activations::new(&gpu, cfg, opts.attention, limit)?;
        let max_blocks = kv.max_blocks_per_seq(cfg.seq_len);
        let pool_rows = kv.alloc.n_blocks() * kv.page;
        let before_kv = gpu.allocated();
        let kvb = KvBuffers::new(&gpu, cfg, pool_rows, kv.page, opts.max_seqs * max_blocks, kv_f16)?;
        let kv_bytes = gpu.allocated() - before_kv;
        let step = gpu.zeros("step", step_size(MAX_STEP_TOKENS) / 4)?; // Step: T, split plan, rows
        let head_step = gpu.zeros("head_step", step_size(a.all_rows) / 4)?;
        let staging = gpu.staging("staging", (a.all_rows * cfg.vocab_size * 4) as u64);
        let ahead_steps = gpu.zeros("ahead_steps", MAX_AHEAD * step_size(1) / 4)?;
        let lora = GpuLora::upload(&gpu, cfg, loras, opts.max_seqs)?;

        // The dispatches of each kind of step, recorded once.
        let rope = RopeTable::new(cfg);
        let fused = Fused {
            norm_eps: cfg.norm_eps as f32,
            head_dim: cfg.head_dim,
            q_dim: cfg.q_dim(),
            kv_dim: cfg.kv_dim(),
            qk_norm: cfg.qk_norm,
            cos: gpu.upload("rope.cos", &rope.cos)?,
            sin: gpu.upload("rope.sin", &rope.sin)?,
        };
        let l = Launch::new(&gpu, &k, &step, Some(fused.clone()))?;
        let lh = Launch::new(&gpu, &k, &head_step, Some(fused))?;
        let s = AttnShape {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            max_blocks,
            score_len: cfg.seq_len,
        };
        let body = |kind| record(&l, &w, &a, &kvb, lora.as_ref(), opts.attention, s, kind);
        let ((prefill, prefill_starts), (batch, batch_starts), (decode, _)) = (
            body(StepKind::Prefill)?,
            body(StepKind::Batch)?,
            body(StepKind::Decode)?,
        );
        let head_last = record_head(&l, &w, &a, false)?;
        let head_rows = record_head(&lh, &w, &a, true)?;
        let argmax = l.argmax(&a.logits, cfg.vocab_size, &a.next_id, false);
        let argmax_rows = lh.argmax(&a.logits, cfg.vocab_size, &a.next_id, true);
        drop((l, lh));
        gpu.check("building the GPU forward pass")?;
        let workers = opts.split_workers.unwrap_or(if gpu.is_cpu_adapter() {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            1024
        });
        let memory = DeviceMemory {
            weights: weights_bytes,
            kv_cache: kv_bytes,
            scratch: gpu.allocated() - before - weights_bytes - kv_bytes,
        };
        Ok(GpuModel {
            memory,
            head_lanes: lanes,
            decode_group: k.decode_group,
            flash_pairs: k.flash_rows == super::kernels::FLASH_SG_ROWS && cfg.head_dim <= 64,
            kind,
            weight_bytes,
            device_bytes,
            formats,
            cfg: cfg.clone(),
            kv,
            kv_f16,
            min_split_keys: opts.min_split_keys,
            workers,
            k_cache: kvb.k,
            v_cache: kvb.v,
            block_copy: kvb.block_copy,
            tables: kvb.tables,
            max_blocks,
            logits: a.logits,
            next_id: a.next_id,
            all_rows: a.all_rows,
            step,
            head_step,
            ahead_steps,
            staging,
            submit_macs: opts.submit_macs.max(1),
            layer_macs: cfg.layer_macs_per_token(),
            prefill,
            batch,
            prefill_starts,
            batch_starts,
            decode,
            head_last,
            head_rows,
            argmax,
            argmax_rows,
            lora,
            moe_bufs,
            gpu,
        })
    }

    /// Sequence `seq`'s LoRA factors, one per adapter (Model::set_lora).
    pub fn set_lora_factors(&mut self, seq: usize, factors: &[f32]) {
        if let Some(g) = &self.lora {
            g.set_factors(&self.gpu, seq, factors);
        }
    }

    /// The weight formats of the matrices, e.g. "f16", or "Q5_0+Q8_0+Q4_K+Q6_K" for a file
    /// kept as stored.
    pub fn dtype_name(&self) -> String {
        let names: Vec<String> = self
            .formats
            .iter()
            .map(|f| match f {
                f if !f.is_quantized() => f.to_string().to_lowercase(),
                f => f.to_string(),
            })
            .collect();
        names.join("+")
    }

    /// The kernel shapes in use, e.g. "gemv split, gemm tiled, attention lanes".
    pub fn kernel_names(&self) -> String {
        let pick = |on: bool, a: &'static str, b: &'static str| if on { a } else { b };
        format!(
            "gemv {}, gemm {}, attention {}",
            pick(self.kind.gemv_split, "split", "rows"),
            pick(self.kind.gemm_tiled, "tiled", "rows"),
            pick(self.head_lanes, "lanes", "whole")
        )
    }

    /// Dispatches of one greedy decode step (T = 1, one split-K partition).
    pub fn dispatches_per_token(&self) -> usize {
        let d = Dims { t: 1, n_splits: 1 };
        let ops = self.decode.iter().chain(&self.head_last).chain([&self.argmax]);
        ops.filter(|op| (op.grid)(d).iter().product::<u32>() > 0).count()
    }

    /// Run one step: `batch` lists (sequence, tokens) pairs, at most MAX_STEP_TOKENS tokens in
    /// all, each sequence's tokens at its next positions. Returns the bytes read back for `head`.
    /// A step of many rows is cut into several submits at layer boundaries, each of at most
    /// `submit_macs` multiply-adds, so that no submit runs long enough for an OS GPU watchdog
    /// (Windows resets a GPU busy for 2 s on one command buffer).
    pub fn step(&mut self, batch: &[(usize, &[u32])], head: Head) -> Result<Vec<u8>> {
        let t: usize = batch.iter().map(|(_, toks)| toks.len()).sum();
        assert!((1..=MAX_STEP_TOKENS).contains(&t), "a step of {t} tokens");
        // Reserve cache rows; refuse the whole step if the pool cannot hold it.
        let needed: usize = batch
            .iter()
            .map(|&(s, toks)| self.kv.blocks_needed(s, toks.len()))
            .sum();
        if needed > self.kv.alloc.n_free() {
            return Err(crate::kv_cache::KvError::Full {
                needed,
                free: self.kv.alloc.n_free(),
                total: self.kv.alloc.n_blocks(),
                page: self.kv.page,
            }
            .into());
        }
        let mut rows = Vec::with_capacity(t);
        let mut copies = vec![];
        let mut max_len = 0;
        for &(seq, toks) in batch {
            let pos0 = self.kv.len(seq);
            assert!(pos0 + toks.len() <= self.cfg.seq_len, "context overflow");
            let (slots, c) = self.kv.append(seq, toks.len())?;
            copies.extend(c);
            for (i, (&token, slot)) in toks.iter().zip(slots).enumerate() {
                rows.push(Row {
                    token,
                    pos: (pos0 + i) as u32,
                    slot,
                    seq: seq as u32,
                });
            }
            max_len = max_len.max(pos0 + toks.len());
        }
        let (n_splits, split_len) = self.split(t, max_len);
        self.gpu
            .queue
            .write_buffer(&self.step, 0, &step_bytes(&rows, n_splits, split_len));
        self.write_tables();
        let mut encoder = self.encoder();
        self.copy_on_write(&mut encoder, &copies);
        let (body, starts) = if t == 1 {
            (&self.decode, &[][..])
        } else if batch.len() == 1 && (t > FEW_ROWS || self.flash_pairs) {
            (&self.prefill, &self.prefill_starts[..])
        } else {
            (&self.batch, &self.batch_starts[..])
        };
        let dims = Dims {
            t: t as u32,
            n_splits: n_splits as u32,
        };
        let vocab_bytes = (self.cfg.vocab_size * 4) as u64;
        let (head_ops, argmax, head_dims, src, bytes) = match head {
            Head::Last => (&self.head_last[..], None, dims, &self.logits, vocab_bytes),
            Head::Argmax => (&self.head_last[..], Some(&self.argmax), dims, &self.next_id, 4),
            Head::Rows { rows: wanted, argmax } => {
                assert!(
                    (1..=self.all_rows).contains(&wanted.len()),
                    "{} rows of logits",
                    wanted.len()
                );
                assert!(wanted.iter().all(|&r| (r as usize) < t), "a wanted row past the step");
                self.write_head_rows(wanted);
                let n = wanted.len() as u64;
                let (src, bytes) = if argmax {
                    (&self.next_id, 4 * n)
                } else {
                    (&self.logits, vocab_bytes * n)
                };
                let head_dims = Dims {
                    t: n as u32,
                    n_splits: 1,
                };
                (
                    &self.head_rows[..],
                    argmax.then_some(&self.argmax_rows),
                    head_dims,
                    src,
                    bytes,
                )
            }
        };
        // Every submit but the last (a step of few rows has one).
        let cuts = self.submit_cuts(t, starts);
        let mut from = 0;
        for &cut in &cuts {
            let ops: Vec<&Op> = body[from..cut].iter().collect();
            record_ops(&mut encoder, &ops, dims);
            self.gpu.queue.submit(Some(encoder.finish()));
            encoder = self.encoder();
            from = cut;
        }
        let ops: Vec<&Op> = body[from..].iter().collect();
        record_ops(&mut encoder, &ops, dims);
        let ops: Vec<&Op> = head_ops.iter().chain(argmax).collect();
        record_ops(&mut encoder, &ops, head_dims);
        encoder.copy_buffer_to_buffer(src, 0, &self.staging, 0, bytes);
        self.gpu
            .submit_and_read(encoder, &self.staging, bytes, "the forward step")
    }

    /// Greedy decoding of sequence `seq` from `token` (its last token, not yet in the cache):
    /// up to `n` (at most MAX_AHEAD) decode steps recorded into ONE submit, where step i's
    /// embedding reads step i-1's argmax on the device (copied into its Step row), and the ids
    /// come back together: no round trip to the host between tokens. `n` must fit the context
    /// (Model::decode_greedy clamps it). Returns the ids, fewer than `n` where the KV pool ends
    /// sooner (at least one, else the KV-full error);
    /// the cache then holds `token` and every id but the last, as after that many `step`s.
    pub fn decode_greedy(&mut self, seq: usize, token: u32, n: usize) -> Result<Vec<u32>> {
        assert!((1..=MAX_AHEAD).contains(&n), "{n} steps ahead");
        let pos0 = self.kv.len(seq);
        assert!(pos0 + n <= self.cfg.seq_len, "context overflow");
        let mut n = n;
        while n > 1 && self.kv.blocks_needed(seq, n) > self.kv.alloc.n_free() {
            n -= 1;
        }
        let (slots, copies) = self.kv.append(seq, n)?; // one step that does not fit: KV full
        let mut records = Vec::with_capacity(n * step_size(1));
        let mut dims = Vec::with_capacity(n);
        for (i, &slot) in slots.iter().enumerate() {
            let (n_splits, split_len) = self.split(1, pos0 + i + 1);
            let row = Row {
                token: if i == 0 { token } else { 0 }, // later rows: the previous step's argmax
                pos: (pos0 + i) as u32,
                slot,
                seq: seq as u32,
            };
            records.extend(step_bytes(&[row], n_splits, split_len));
            dims.push(Dims {
                t: 1,
                n_splits: n_splits as u32,
            });
        }
        self.gpu.queue.write_buffer(&self.ahead_steps, 0, &records);
        self.write_tables();
        let mut encoder = self.encoder();
        self.copy_on_write(&mut encoder, &copies);
        let ops: Vec<&Op> = self
            .decode
            .iter()
            .chain(&self.head_last)
            .chain([&self.argmax])
            .collect();
        let (record, token_at) = (step_size(1) as u64, 16); // Step.rows[0].x
        for (i, &d) in dims.iter().enumerate() {
            let i = i as u64;
            encoder.copy_buffer_to_buffer(&self.ahead_steps, i * record, &self.step, 0, record);
            if i > 0 {
                encoder.copy_buffer_to_buffer(&self.next_id, 0, &self.step, token_at, 4);
            }
            record_ops(&mut encoder, &ops, d);
            encoder.copy_buffer_to_buffer(&self.next_id, 0, &self.staging, i * 4, 4);
        }
        let bytes = n as u64 * 4;
        let out = self
            .gpu
            .submit_and_read(encoder, &self.staging, bytes, "the decode steps")?;
        Ok(bytemuck::pod_collect_to_vec(&out))
    }

    /// The split-K plan of a step of `t` rows whose longest sequence has `max_len` keys. Split-K
    /// only pays where the rows × heads leave the device idle: aim at `workers` workgroups in all
    /// (a CPU adapter has a few threads; a GPU has many compute units).
    fn split(&self, t: usize, max_len: usize) -> (usize, usize) {
        let want = self.workers.div_ceil(t * self.cfg.n_heads / self.decode_group);
        split_plan(max_len, self.min_split_keys.max(max_len.div_ceil(want)), t)
    }

    /// The gathering head's Step: its rows are the step rows `rows` names (Head::Rows).
    fn write_head_rows(&self, rows: &[u32]) {
        let rows: Vec<Row> = (rows.iter())
            .map(|&r| Row {
                token: r,
                pos: 0,
                slot: 0,
                seq: 0,
            })
            .collect();
        self.gpu
            .queue
            .write_buffer(&self.head_step, 0, &step_bytes(&rows, 1, 0));
    }

    /// Upload the block tables if a sequence's pages changed since the last step.
    fn write_tables(&mut self) {
        if self.kv.tables_dirty {
            let mut table = vec![0u32; self.kv.max_seqs() * self.max_blocks];
            for s in self.kv.seq_ids() {
                let b = self.kv.block_table(s);
                table[s * self.max_blocks..s * self.max_blocks + b.len()].copy_from_slice(b);
            }
            self.gpu
                .queue
                .write_buffer(&self.tables, 0, bytemuck::cast_slice(&table));
            self.kv.tables_dirty = false;
        }
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") })
    }

    /// Copy-on-write of shared pages, before anything writes them.
    fn copy_on_write(&self, encoder: &mut wgpu::CommandEncoder, copies: &[crate::kv_cache::BlockCopy]) {
        let row_bytes = kv_row_bytes(&self.cfg, self.kv_f16) as u64;
        let page_bytes = self.kv.page as u64 * row_bytes;
        for c in copies {
            for cache in self.k_cache.iter().chain(&self.v_cache) {
                let n = c.rows as u64 * row_bytes;
                encoder.copy_buffer_to_buffer(cache, c.src as u64 * page_bytes, &self.block_copy, 0, n);
                encoder.copy_buffer_to_buffer(&self.block_copy, 0, cache, c.dst as u64 * page_bytes, n);
            }
        }
    }

    /// Where a step of `t` rows is cut into submits: indices into its ops at layer `starts`,
    /// each submit holding whole layers of at most `submit_macs` multiply-adds (at least one
    /// layer). Empty when the step fits one submit.
    fn submit_cuts(&self, t: usize, starts: &[usize]) -> Vec<usize> {
        let per_layer = (t as u64 * self.layer_macs).max(1);
        let layers = (self.submit_macs / per_layer).max(1) as usize;
        starts.iter().skip(layers).step_by(layers).copied().collect()
    }

    /// Submits a prefill step of `t` rows of one sequence takes.
    pub fn prefill_submits(&self, t: usize) -> usize {
        self.submit_cuts(t, &self.prefill_starts).len() + 1
    }

    /// Positions sequence `seq` holds.
    pub fn seq_len(&self, seq: SeqId) -> usize {
        self.kv.len(seq.0)
    }

    /// Most rows one step runs when every row's logits are wanted (a batch of more runs in
    /// several steps).
    pub fn step_rows(&self) -> usize {
        self.all_rows.min(MAX_STEP_TOKENS)
    }

    /// The MoE routing of the last step, which ran `batch` (each entry starting at `pos`):
    /// (layer, position, route) per MoE layer and row, read back from each layer's routing and
    /// router-logits buffers (the gap from the logits, as moe::route computes it). Fails when
    /// the batch took more than one step.
    pub fn routing(&self, batch: &Batch, pos: &[usize]) -> Result<Vec<(usize, usize, Route)>> {
        let Some(mc) = &self.cfg.moe else { return Ok(vec![]) };
        let t: usize = batch.iter().map(|e| e.tokens.len()).sum();
        if t > self.step_rows() {
            bail!(
                "routing is read from one step: forward at most {} rows at a time",
                self.step_rows()
            );
        }
        let lens: Vec<usize> = batch.iter().map(|e| e.tokens.len()).collect();
        super::moe::read_routing(&self.gpu, mc, &self.moe_bufs, &lens, pos)
    }
}

/// What a step reads back.
#[derive(Clone, Copy)]
pub enum Head<'a> {
    /// The logits of the step's last row (a GEMV).
    Last,
    /// The id of the step's last row's largest logit, picked on the device.
    Argmax,
    /// The logits (or, with `argmax`, the ids picked on the device) of the step's `rows`, in
    /// that order: at most `all_rows`, the final norm gathering them first (a GEMM over them
    /// alone, however many rows the step ran).
    Rows { rows: &'a [u32], argmax: bool },
}

/// The KV pool: pages of `opts.page` rows (contiguous: one page of the whole context per
/// sequence), as many as `--kv-blocks` / `--kv-memory` say, by default enough for every
/// sequence to reach the full context as long as one layer's pool fits a storage binding (else
/// what fits); refused when a pool asked for exceeds a storage binding.
fn kv_pool(gpu: &Gpu, cfg: &Config, opts: &Options, f16: bool) -> Result<KvPages> {
    let kv_row_bytes = kv_row_bytes(cfg, f16) as u64;
    let kv = match opts.kv {
        KvLayout::Contiguous => KvPages::contiguous(cfg.seq_len, opts.max_seqs, FLASH_TILE),
        KvLayout::Paged => {
            if opts.page == 0 || !opts.page.is_multiple_of(FLASH_TILE) {
                bail!("--page {} must be a positive multiple of {FLASH_TILE}", opts.page);
            }
            let per_block = opts.page as u64 * kv_row_bytes * 2 * cfg.n_layers as u64;
            let n_blocks = match (opts.kv_blocks, opts.kv_memory) {
                (Some(n), _) => n,
                (None, Some(bytes)) => (bytes / per_block) as usize,
                // every sequence's whole context, or as many pages as one binding holds (then
                // sequences share the pool and the engine preempts when it runs out)
                (None, None) => (opts.max_seqs * cfg.seq_len.div_ceil(opts.page))
                    .min((gpu.max_binding / (opts.page as u64 * kv_row_bytes)) as usize),
            };
            if n_blocks == 0 {
                bail!("the KV pool has no blocks: one block of {} tokens takes {per_block} bytes; raise --kv-blocks or --kv-memory", opts.page);
            }
            KvPages::new(opts.page, n_blocks, opts.max_seqs)
        }
    };
    let pool_rows = kv.alloc.n_blocks() * kv.page;
    if pool_rows as u64 * kv_row_bytes > gpu.max_binding {
        bail!(
            "the KV cache of one layer needs {} MiB ({pool_rows} rows of {kv_row_bytes} bytes), over the device's storage binding limit of {} MiB; lower --kv-blocks / --kv-memory or --n-seq",
            (pool_rows as u64 * kv_row_bytes) >> 20,
            gpu.max_binding >> 20
        );
    }
    Ok(kv)
}
