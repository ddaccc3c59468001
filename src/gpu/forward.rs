//! The forward pass on the GPU, line for line like `cpu::forward`. Everything is built at load:
//! weights uploaded, buffers allocated, pipelines compiled, and every dispatch of the pass
//! recorded as (pipeline, bind group, grid). A step is then one write of the Step buffer (plus
//! the block tables when a page was taken), one compute pass holding the whole forward, one
//! submit and one readback (the logits, or the next token id).
//!
//! The KV cache is a pool of pages per layer; `kv_cache::KvPages` decides which row each
//! position lives in, the kernels only see slots and block tables. A step may carry several
//! sequences (each row has its own sequence and position).

use std::cell::RefCell;
use std::collections::HashMap;

use anyhow::{bail, Result};

use super::context::{Gpu, GpuRequest};
use super::kernels::{
    split_plan, step_bytes, step_size, Fusion, Kernel, Kernels, MatmulKind, Res, Row, Shape, Store, FLASH_TILE,
    MAX_SPLITS, MAX_STEP_TOKENS, UNIFORM_X_BYTES,
};
use crate::config::{Config, RopeTable};
use crate::cpu::Logits;
use crate::kv_cache::KvPages;
use crate::model::{Attention, Dtype, KvLayout, Options};
use crate::weights::Weights;

/// A weight matrix (rows, cols) on the device: a 2D-array texture of Rgba32Uint texels, each 16
/// bytes along a row holding 8 f16 or 4 f32 values, bound as a read-only storage texture.
/// Rows are padded with zeros to a multiple of TEXEL_CHUNK texels (matvec reads whole chunks)
/// and stored in groups of `group` rows interleaved texel by texel: texel k of row o is at
/// x = k * group + o % group of texture row o / group, texture rows past the layer height going
/// to further array layers (`weight_row` in shaders/prelude.wgsl). The `group` rows that
/// neighbouring invocations compute are then read from contiguous memory.
/// Why textures, not storage buffers: on lavapipe a texel load fetches 16 bytes for 8 invocations
/// at once, where a storage load costs a scalar load per invocation and component, and a storage
/// texture skips the mip-level arithmetic of a sampled one (benches/RESULTS.md); on GPUs it goes
/// through the texture cache. No storage binding limit applies, so a large LM head needs no
/// splitting.
pub struct WeightTex {
    pub view: wgpu::TextureView,
    pub rows: usize,
    pub cols: usize,
    pub f16: bool,
}

/// Rows interleaved per texture row (the subgroup width the matrix kernels are tuned for);
/// fewer where a row is too wide for that many in one texture row.
pub const ROW_GROUP: usize = 8;

impl WeightTex {
    pub fn upload(gpu: &Gpu, name: &str, data: &[f32], cols: usize, f16: bool) -> Result<Self> {
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        Self::upload_as(gpu, name, data, cols, f16, ROW_GROUP, max_dim)
    }

    /// `upload` with at most `group` rows interleaved and at most `height` texture rows a layer
    /// (the tests use small values to reach several groups and layers cheaply).
    pub fn upload_as(
        gpu: &Gpu,
        name: &str,
        data: &[f32],
        cols: usize,
        f16: bool,
        group: usize,
        height: usize,
    ) -> Result<Self> {
        assert!(group >= 1 && height >= 1 && cols > 0 && data.len() % cols == 0);
        let rows = data.len() / cols;
        let per = if f16 { 8 } else { 4 }; // values per texel
        if cols % per != 0 {
            bail!("{name}: {cols} columns are not a multiple of {per}, which the GPU matrix kernels read per texel; use --dtype f32 (multiples of 4) or --device cpu");
        }
        let texels = (cols / per).div_ceil(TEXEL_CHUNK) * TEXEL_CHUNK; // a row, padded
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        if texels > max_dim {
            bail!("{name}: a row of {cols} values is {texels} texels, over this device's texture width limit of {max_dim}; use --device cpu");
        }
        let group = group.min(max_dim / texels);
        let groups = rows.div_ceil(group).max(1);
        let height = groups.min(height).min(max_dim);
        let layers = groups.div_ceil(height);
        let max_layers = gpu.limits.max_texture_array_layers as usize;
        if layers > max_layers {
            bail!("{name}: {rows} rows need {layers} texture layers of {height} × {group} rows, over this device's limit of {max_layers}; use --device cpu");
        }
        let width = texels * group;
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(name),
            size: wgpu::Extent3d {
                width: width as u32,
                height: height as u32,
                depth_or_array_layers: layers as u32,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        // 4 words per texel: f32 bit patterns, or two f16 per word (the first in the low half, as
        // unpack2x16float reads them); padding texels and rows are zero.
        let mut words = vec![0u32; groups * width * 4];
        for (o, row) in data.chunks_exact(cols).enumerate() {
            let first = (o / group * width + o % group) * 4; // word 0 of texel 0
            for k in 0..cols / per {
                let dst = &mut words[first + k * group * 4..][..4];
                let src = &row[k * per..(k + 1) * per];
                if f16 {
                    for (d, p) in dst.iter_mut().zip(src.chunks_exact(2)) {
                        *d = u32::from(half::f16::from_f32(p[0]).to_bits())
                            | (u32::from(half::f16::from_f32(p[1]).to_bits()) << 16);
                    }
                } else {
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d = v.to_bits();
                    }
                }
            }
        }
        for layer in 0..layers {
            let g0 = layer * height;
            let n = height.min(groups - g0);
            gpu.queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: 0,
                        z: layer as u32,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                bytemuck::cast_slice(&words[g0 * width * 4..(g0 + n) * width * 4]),
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some((width * 16) as u32),
                    rows_per_image: Some(n as u32),
                },
                wgpu::Extent3d {
                    width: width as u32,
                    height: n as u32,
                    depth_or_array_layers: 1,
                },
            );
        }
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        Ok(WeightTex { view, rows, cols, f16 })
    }

    /// Bytes one pass over the matrix reads.
    pub fn bytes(&self) -> usize {
        self.rows * self.cols * if self.f16 { 2 } else { 4 }
    }
}

/// Activation rows as a texture for matmat.wgsl (to_texture.wgsl writes it): (d/4, T_max, 1)
/// texels of 4 f32 bit patterns.
pub struct ActTex {
    pub view: wgpu::TextureView,
    pub d: usize,
}

impl ActTex {
    pub fn new(gpu: &Gpu, name: &str, d: usize, rows: usize) -> Result<Self> {
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        if d / 4 > max_dim {
            bail!("{name}: rows of {d} values are wider than this device's texture limit of {max_dim} texels; use --device cpu");
        }
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(name),
            size: wgpu::Extent3d {
                width: (d / 4) as u32,
                height: rows as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::STORAGE_BINDING,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        Ok(ActTex { view, d })
    }
}

/// Texels matvec.wgsl reads per round (one per lane of 8); weight rows are padded to it.
pub const TEXEL_CHUNK: usize = 8;

/// One transformer block on the device: `weights::Layer` with the Q, K, V projections stacked
/// into one matrix and gate and up into another (each one product, split three or two ways).
struct GpuLayer {
    attn_norm: wgpu::Buffer,    // (dim,)
    wqkv: WeightTex,            // (q_dim + 2 kv_dim, dim): Wq; Wk; Wv
    bqkv: Option<wgpu::Buffer>, // (q_dim + 2 kv_dim,) bq; bk; bv (zeros for a missing part)
    wo: WeightTex,              // (dim, q_dim)
    bo: Option<wgpu::Buffer>,   // (dim,)
    ffn_norm: wgpu::Buffer,     // (dim,)
    w_gate_up: WeightTex,       // (2 hidden, dim): W_gate; W_up
    w_down: WeightTex,          // (dim, hidden)
}

/// What a dispatch's grid depends on: the step's row count T and its split-K partitions.
#[derive(Clone, Copy)]
pub struct Dims {
    pub t: u32,
    pub n_splits: u32,
}

pub type Grid = Box<dyn Fn(Dims) -> [u32; 3]>;

/// One recorded dispatch.
pub struct Op {
    pub name: String, // the kernel (file and overrides), for profiles
    pub pipeline: wgpu::ComputePipeline,
    pub bind: wgpu::BindGroup,
    pub grid: Grid,
}

impl Op {
    /// `kern` bound to the step buffer, a shape uniform and `resources` (in its header's order).
    pub fn new(
        gpu: &Gpu,
        kern: &Kernel,
        step: &wgpu::Buffer,
        shape: &wgpu::Buffer,
        resources: &[Res],
        grid: Grid,
    ) -> Op {
        Op {
            name: kern.name.clone(),
            pipeline: kern.pipeline.clone(),
            bind: kern.bind_res(gpu, &kern.name, step, shape, resources),
            grid,
        }
    }
}

/// Record `ops` into one compute pass.
pub fn record(encoder: &mut wgpu::CommandEncoder, ops: &[&Op], dims: Dims) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("forward"),
        timestamp_writes: None,
    });
    for op in ops {
        let [gx, gy, gz] = (op.grid)(dims);
        if gx * gy * gz == 0 {
            continue;
        }
        pass.set_pipeline(&op.pipeline);
        pass.set_bind_group(0, &op.bind, &[]);
        pass.dispatch_workgroups(gx, gy, gz);
    }
}

/// Record `ops` into a fresh encoder, submit, wait: milliseconds from submit to done (benches and
/// profiles; the forward pass reads its result through `Gpu::submit_and_read`).
pub fn run_timed(gpu: &Gpu, ops: &[&Op], dims: Dims, what: &str) -> Result<f64> {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    record(&mut encoder, ops, dims);
    let start = std::time::Instant::now();
    let index = gpu.queue.submit(Some(encoder.finish()));
    gpu.device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(index),
            timeout: None,
        })
        .map_err(|e| anyhow::anyhow!("{what} did not finish: {e}"))?;
    gpu.check(what)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// Where the time of one step goes (GpuModel::profile).
pub struct Profile {
    pub kernels: Vec<(String, usize, f64)>, // kernel, dispatches, ms (its dispatches in one submit)
    pub step_ms: f64,                       // the whole step in one submit
}

/// The attention of one layer for the three kinds of step, with the buffers it reads and writes.
pub struct AttentionOps {
    pub prefill: Vec<Op>, // rows of ONE sequence at consecutive positions
    pub rows: Vec<Op>,    // rows of any sequences (decode, batches)
}

pub struct GpuModel {
    pub gpu: Gpu,
    pub kind: MatmulKind, // weight dtype and matrix-kernel variant
    cfg: Config,
    pub kv: KvPages,            // which cache row holds each position of each sequence
    min_split_keys: usize,      // split-K: keys per decode partition at least
    workers: usize,             // workgroups the device runs at once, roughly (split-K aims at it)
    k_cache: Vec<wgpu::Buffer>, // n_layers × (n_blocks * page, kv_dim) pool of pages
    v_cache: Vec<wgpu::Buffer>, // n_layers × (n_blocks * page, kv_dim)
    block_copy: wgpu::Buffer,   // (page, kv_dim) staging for copy-on-write of a shared page
    tables: wgpu::Buffer,       // (max_seqs, max_blocks) u32 block tables
    max_blocks: usize,          // block-table row length
    step: wgpu::Buffer,         // Step: T, split plan, rows (token, pos, slot, seq)
    logits: wgpu::Buffer,       // (all_rows, vocab)
    next_id: wgpu::Buffer,      // (1,) u32
    staging: wgpu::Buffer,      // readback
    all_rows: usize,            // most rows of logits one step can return
    prefill: Vec<Op>,           // embedding + layers with GEMMs, prefill attention (one sequence, T > 1)
    batch: Vec<Op>,             // embedding + layers with GEMMs, row attention (several sequences)
    decode: Vec<Op>,            // embedding + layers with GEMVs, row attention (T = 1)
    head_last: Vec<Op>,         // final norm + LM head of the last row
    head_all: Vec<Op>,          // final norm + LM head of every row
    argmax: Op,                 // greedy choice on the device
}

fn div_up(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

/// Sizes an attention call site needs in its Shape uniform.
#[derive(Clone, Copy)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub max_blocks: usize, // block-table row length
    pub score_len: usize,  // naive: length of a score row (the context)
}

/// The buffers of an attention call site (shapes in the kernels' headers).
pub struct AttnBufs<'a> {
    pub q: &'a wgpu::Buffer,
    pub k_cache: &'a wgpu::Buffer,
    pub v_cache: &'a wgpu::Buffer,
    pub tables: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
    pub scores: &'a wgpu::Buffer, // naive only: (T, n_heads, score_len)
    pub part: &'a wgpu::Buffer,   // split-K partials: (T, n_heads, MAX_SPLITS, head_dim + 2)
}

/// The dispatches of one attention call site, for a prefill step and for a step of rows.
/// `shape` makes (or reuses) a Shape uniform.
pub fn attention_ops(
    gpu: &Gpu,
    k: &Kernels,
    kind: Attention,
    step: &wgpu::Buffer,
    shape: &dyn Fn(Shape) -> wgpu::Buffer,
    s: AttnShape,
    b: &AttnBufs,
) -> AttentionOps {
    let op = |kern: &Kernel, sh: Shape, bufs: &[&wgpu::Buffer], grid: Grid| {
        let res: Vec<Res> = bufs.iter().map(|b| Res::Buf(b)).collect();
        Op::new(gpu, kern, step, &shape(sh), &res, grid)
    };
    let nh = s.n_heads as u32;
    let flash_rows = k.flash_rows as u32;
    let naive = || {
        op(
            &k.attention_naive,
            Shape::new(s.n_heads, s.n_kv_heads, s.max_blocks, s.score_len),
            &[b.q, b.k_cache, b.v_cache, b.tables, b.scores, b.out],
            Box::new(move |d: Dims| [nh, d.t, 1]),
        )
    };
    match kind {
        Attention::Naive => AttentionOps {
            prefill: vec![naive()],
            rows: vec![naive()],
        },
        Attention::Flash => AttentionOps {
            prefill: vec![op(
                &k.attention_flash,
                Shape::new(s.n_heads, s.n_kv_heads, s.max_blocks, 0),
                &[b.q, b.k_cache, b.v_cache, b.tables, b.out],
                Box::new(move |d: Dims| [d.t.div_ceil(flash_rows), nh, 1]),
            )],
            rows: vec![
                op(
                    &k.attention_decode,
                    Shape::new(s.n_heads, s.n_kv_heads, s.max_blocks, MAX_SPLITS),
                    &[b.q, b.k_cache, b.v_cache, b.tables, b.part, b.out],
                    Box::new(move |d: Dims| [nh, d.t, d.n_splits]),
                ),
                op(
                    &k.attention_reduce,
                    Shape::new(s.n_heads, 0, 0, MAX_SPLITS),
                    &[b.part, b.out],
                    Box::new(move |d: Dims| if d.n_splits > 1 { [nh, d.t, 1] } else { [0, 0, 0] }),
                ),
            ],
        },
    }
}

impl GpuModel {
    pub fn new(
        cfg: &Config,
        w: &Weights<Vec<f32>>,
        req: &GpuRequest,
        max_binding: Option<u64>,
        opts: &Options,
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
        // The KV pool: pages of `page` rows (contiguous: one page of the whole context per sequence).
        let kv_row_bytes = (cfg.kv_dim() * 4) as u64;
        let kv = match opts.kv {
            KvLayout::Contiguous => KvPages::contiguous(cfg.seq_len, opts.max_seqs, FLASH_TILE),
            KvLayout::Paged => {
                if opts.page == 0 || opts.page % FLASH_TILE != 0 {
                    bail!("--page {} must be a positive multiple of {FLASH_TILE}", opts.page);
                }
                let per_block = opts.page as u64 * kv_row_bytes * 2 * cfg.n_layers as u64;
                let n_blocks = match (opts.kv_blocks, opts.kv_memory) {
                    (Some(n), _) => n,
                    (None, Some(bytes)) => (bytes / per_block) as usize,
                    (None, None) => opts.max_seqs * cfg.seq_len.div_ceil(opts.page),
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
        let kind = MatmulKind {
            f16: match opts.dtype {
                Dtype::F16 => true,
                Dtype::F32 => false,
                Dtype::Auto => gpu.features.contains(wgpu::Features::SHADER_F16),
            },
            subgroups: opts.subgroups && gpu.has_subgroups(8),
        };
        let k = Kernels::new(&gpu, cfg.head_dim, kv.page, kind)?;
        let (dim, q_dim, kv_dim, hidden, vocab) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.hidden_dim, cfg.vocab_size);
        let t_max = MAX_STEP_TOKENS;

        // Weights, uploaded once: matrices in textures, vectors in storage buffers. The Q, K, V
        // projections are stacked into one matrix and so are gate and up (one product each).
        let vec = |name: &str, v: &[f32]| gpu.upload(name, v);
        // RMSNorm weights, which matvec reads through its 64 KiB uniform window
        let norm_vec = |name: &str, v: &[f32]| {
            let mut padded = v.to_vec();
            padded.resize(v.len().max(UNIFORM_X_BYTES as usize / 4), 0.0);
            gpu.upload(name, &padded)
        };
        let mat = |name: &str, v: &[f32], cols| WeightTex::upload(&gpu, name, v, cols, kind.f16);
        let mut layers = vec![];
        for (l, lw) in w.layers.iter().enumerate() {
            let name = |n: &str| format!("layers.{l}.{n}");
            let bqkv = if lw.bq.is_some() || lw.bk.is_some() || lw.bv.is_some() {
                let part = |b: &Option<Vec<f32>>, n: usize| b.clone().unwrap_or_else(|| vec![0.0; n]);
                let stacked = [part(&lw.bq, q_dim), part(&lw.bk, kv_dim), part(&lw.bv, kv_dim)].concat();
                Some(vec(&name("bq;bk;bv"), &stacked)?)
            } else {
                None
            };
            layers.push(GpuLayer {
                attn_norm: norm_vec(&name("attn_norm"), &lw.attn_norm)?,
                wqkv: mat(&name("wq;wk;wv"), &[&lw.wq[..], &lw.wk, &lw.wv].concat(), dim)?,
                bqkv,
                wo: mat(&name("wo"), &lw.wo, q_dim)?,
                bo: lw.bo.as_ref().map(|b| vec(&name("bo"), b)).transpose()?,
                ffn_norm: norm_vec(&name("ffn_norm"), &lw.ffn_norm)?,
                w_gate_up: mat(&name("w_gate;w_up"), &[&lw.w_gate[..], &lw.w_up].concat(), dim)?,
                w_down: mat(&name("w_down"), &lw.w_down, hidden)?,
            });
        }
        let embed = mat("embed", &w.embed, dim)?;
        let lm_head = w.lm_head.as_ref().map(|h| mat("lm_head", h, dim)).transpose()?;
        let dummy_out2 = gpu.zeros("dummy_out2", 4)?; // the unused outputs of an unsplit product
        let dummy_out3 = gpu.zeros("dummy_out3", 4)?;
        let norm = vec("norm", &w.norm)?;
        let rope = RopeTable::new(cfg);
        let cos = gpu.upload("rope.cos", &rope.cos)?;
        let sin = gpu.upload("rope.sin", &rope.sin)?;
        let dummy = gpu.zeros("dummy_bias", 4)?;
        let dummy_norm = gpu.zeros("dummy_norm", UNIFORM_X_BYTES as usize / 4)?; // matvec without NORM

        // Activations, one row per token of a step (those matvec reads hold at least its 64 KiB
        // uniform window).
        let act = |name: &str, n: usize| gpu.zeros(name, n.max(UNIFORM_X_BYTES as usize / 4));
        let x = act("x", t_max * dim)?; // (T, dim) residual stream
        let xl = act("xl", dim)?; // (1, dim) the last row, normalised, for the LM head
        let q = gpu.zeros("q", t_max * q_dim)?; // (T, n_heads·hd)
        let att = act("att", t_max * q_dim)?; // (T, n_heads·hd) attention output
        let hb = act("hb", t_max * hidden)?; // (T, hidden) SwiGLU of gate and up

        // Rows as textures, for the GEMMs of prefill and batch steps.
        let xt_dim = ActTex::new(&gpu, "xt_dim", dim, t_max)?; // (dim/4, T) texels of rmsnorm(x)
        let xt_q = ActTex::new(&gpu, "xt_q", q_dim, t_max)?; // (q_dim/4, T) texels of att
        let xt_hidden = ActTex::new(&gpu, "xt_hidden", hidden, t_max)?; // (hidden/4, T) texels of hb
        let all_rows = ((limit / (vocab as u64 * 4)) as usize).clamp(1, t_max);
        let logits = gpu.zeros("logits", all_rows * vocab)?; // (all_rows, vocab)
        let next_id = gpu.zeros("next_id", 1)?; // (1,) u32
        let staging = gpu.staging("staging", (all_rows * vocab * 4) as u64);
        // KV cache: a pool of (n_blocks * page, kv_dim) per layer.
        let mut k_cache = vec![];
        let mut v_cache = vec![];
        for l in 0..cfg.n_layers {
            k_cache.push(gpu.zeros(&format!("k_cache.{l}"), pool_rows * kv_dim)?);
            v_cache.push(gpu.zeros(&format!("v_cache.{l}"), pool_rows * kv_dim)?);
        }
        let max_blocks = kv.max_blocks_per_seq(cfg.seq_len);
        let tables = gpu.zeros("tables", opts.max_seqs * max_blocks)?; // (max_seqs, max_blocks) u32
        let block_copy = gpu.zeros("block_copy", kv.page * kv_dim)?; // (page, kv_dim)
        let step = gpu.zeros("step", step_size(t_max) / 4)?; // Step: T, split plan, rows
        let part = gpu.zeros("part", t_max * cfg.n_heads * MAX_SPLITS * (cfg.head_dim + 2))?; // split-K partials
        let scores = match opts.attention {
            Attention::Naive => gpu.zeros("scores", t_max * cfg.n_heads * cfg.seq_len).map_err(|e| {
                e.context("naive attention materialises (256 rows × n_heads × context) scores; use --attention flash")
            })?, // (T_max, n_heads, seq_len)
            Attention::Flash => gpu.zeros("scores", 1)?,
        };

        // Recording helpers. Shape uniforms are shared between call sites with equal shapes.
        let shapes: RefCell<HashMap<Shape, wgpu::Buffer>> = RefCell::default();
        let shape = |s: Shape| {
            shapes
                .borrow_mut()
                .entry(s)
                .or_insert_with(|| gpu.uniform("shape", bytemuck::bytes_of(&s)))
                .clone()
        };
        let op = |kern: &Kernel, shape: wgpu::Buffer, bufs: &[&wgpu::Buffer], grid: Grid| {
            let res: Vec<Res> = bufs.iter().map(|b| Res::Buf(b)).collect();
            Op::new(&gpu, kern, &step, &shape, &res, grid)
        };
        let eps = (cfg.norm_eps as f32).to_bits() as usize;
        // out (1, dim) = rmsnorm(x[T-1]) * weight: the one row the LM head of Logits::Last reads
        let rmsnorm_last = |x: &wgpu::Buffer, weight: &wgpu::Buffer, out: &wgpu::Buffer| {
            op(
                &k.rmsnorm,
                shape(Shape::new(dim, eps, 1, 0)),
                &[x, weight, out],
                Box::new(|_| [1, 1, 1]),
            )
        };
        // xt (T, d/4) = x (T, d) as texels, before the GEMMs that read x; with `norm`, the rows
        // RMS-normalised on the way: xt = rmsnorm(x) * norm
        let to_tex = |x: &wgpu::Buffer, norm: Option<&wgpu::Buffer>, xt: &ActTex| {
            let d = xt.d;
            let (kern, s) = match norm {
                Some(_) => (&k.to_texture_norm, Shape::new(xt.d, eps, 0, 0)),
                None => (&k.to_texture, Shape::new(xt.d, 0, 0, 0)),
            };
            Op::new(
                &gpu,
                kern,
                &step,
                &shape(s),
                &[Res::Buf(x), Res::Buf(norm.unwrap_or(&dummy)), Res::Tex(&xt.view)],
                match norm {
                    Some(_) => Box::new(move |dims: Dims| [div_up(dims.t as usize, 64), 1, 1]),
                    None => Box::new(move |dims: Dims| [div_up(d / 4, 64), dims.t, 1]),
                },
            )
        };
        // The products with fusions of this model: QKV with RoPE and the cache write, GEMV and
        // GEMM, with a bias or without; the decode steps' gate and up with SwiGLU (the GEMVs
        // RMS-normalise their x themselves).
        let fusion = Some(Fusion {
            norm_eps: cfg.norm_eps as f32,
            head_dim: cfg.head_dim,
        });
        let mut fused_qkv = vec![];
        for gemm in [false, true] {
            for bias in [false, true] {
                fused_qkv.push(Kernels::matmul_kernel(&gpu, kind, gemm, bias, Store::RopeKv, fusion)?);
            }
        }
        let fused_swiglu = Kernels::matmul_kernel(&gpu, kind, false, false, Store::SwiGlu, fusion)?;
        // out (T, n) (+)= x' (T, d) · Wᵀ (+ bias): GEMM over all rows (reading x' as the texture
        // xt, already normalised where a norm comes first), or GEMV of row 0 (decode steps have
        // one row; the LM head of the last row reads it normalised into row 0) reading x' =
        // rmsnorm(x) * norm itself when given a `norm`. `store` says where rows go: out, added
        // into out (the residual stream), Wq;Wk;Wv's rows (`widths`: q and k rows) as q,
        // k_cache and v_cache after RoPE to outs[0], outs[1], outs[2], or SwiGLU of the stacked
        // gate and up to out.
        let matmul = |gemm: bool,
                      (x, norm, xt): (&wgpu::Buffer, Option<&wgpu::Buffer>, &ActTex),
                      w: &WeightTex,
                      bias: Option<&wgpu::Buffer>,
                      outs: [&wgpu::Buffer; 3],
                      store: Store,
                      widths: [usize; 2]| {
            let kern = match (gemm, norm, store) {
                (_, _, Store::RopeKv) => &fused_qkv[gemm as usize * 2 + bias.is_some() as usize],
                (false, Some(_), Store::SwiGlu) => &fused_swiglu,
                (false, Some(_), _) => unreachable!("no normalising GEMV for {store:?}"),
                _ => k.matmul(gemm, bias.is_some(), store),
            };
            let s = match store {
                Store::RopeKv => shape(Shape::new(w.cols, w.rows, widths[0], widths[1])),
                Store::SwiGlu => shape(Shape::new(w.cols, w.rows, w.rows / 2, 0)),
                _ => shape(Shape::new(w.cols, w.rows, 0, w.rows)),
            };
            let rows = w.rows;
            let grid: Grid = Box::new(move |d: Dims| Kernels::matmul_grid(kind, gemm, rows, d.t as usize));
            let bias = Res::Buf(bias.unwrap_or(&dummy));
            let mut res = vec![
                if gemm { Res::Tex(&xt.view) } else { Res::UniformX(x) },
                Res::Tex(&w.view),
                bias,
                Res::Buf(outs[0]),
                Res::Buf(outs[1]),
                Res::Buf(outs[2]),
            ];
            if !gemm {
                res.push(Res::UniformX(norm.unwrap_or(&dummy_norm)));
            }
            res.extend([Res::Buf(&cos), Res::Buf(&sin)]);
            Op::new(&gpu, kern, &step, &s, &res, grid)
        };
        let one = |out| [out, &dummy_out2, &dummy_out3];

        // Step kinds: GEMM or GEMV matmuls; attention over one sequence's prompt or over rows.
        let body = |gemm: bool, prefill_attention: bool| -> Vec<Op> {
            let mut ops = vec![];
            // Token embeddings.
            ops.push(Op::new(
                &gpu,
                &k.embed,
                &step,
                &shape(Shape::new(dim, 0, 0, 0)),
                &[Res::Tex(&embed.view), Res::Buf(&x)],
                Box::new(move |d: Dims| [div_up(dim, 64), d.t, 1]),
            ));
            for (l, layer) in layers.iter().enumerate() {
                // Attention block: x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
                // xb = rmsnorm(x) * attn_norm: into the GEMM's texture, or inside the GEMV
                if gemm {
                    ops.push(to_tex(&x, Some(&layer.attn_norm), &xt_dim));
                }
                // q = rope(Wq · xb), k_cache[slot] = rope(Wk · xb), v_cache[slot] = Wv · xb: one
                // product of the stacked matrix, RoPE and the cache write as its rows are stored
                ops.push(matmul(
                    gemm,
                    (&x, Some(&layer.attn_norm), &xt_dim),
                    &layer.wqkv,
                    layer.bqkv.as_ref(),
                    [&q, &k_cache[l], &v_cache[l]],
                    Store::RopeKv,
                    [q_dim, kv_dim],
                ));
                let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
                let bufs = AttnBufs {
                    q: &q,
                    k_cache: &k_cache[l],
                    v_cache: &v_cache[l],
                    tables: &tables,
                    out: &att,
                    scores: &scores,
                    part: &part,
                };
                let dims = AttnShape {
                    n_heads: nh,
                    n_kv_heads: nkv,
                    max_blocks,
                    score_len: cfg.seq_len,
                };
                let attn = attention_ops(&gpu, &k, opts.attention, &step, &shape, dims, &bufs);
                ops.extend(if prefill_attention { attn.prefill } else { attn.rows });
                // x += Wo · att (the residual add fused into the matmul)
                if gemm {
                    ops.push(to_tex(&att, None, &xt_q));
                }
                ops.push(matmul(
                    gemm,
                    (&att, None, &xt_q),
                    &layer.wo,
                    layer.bo.as_ref(),
                    one(&x),
                    Store::Accumulate,
                    [0, 0],
                ));

                // Feed-forward block: x += W_down · (silu(W_gate·norm(x)) * W_up·norm(x))
                // xb = rmsnorm(x) * ffn_norm: into the GEMM's texture, or inside the GEMV
                if gemm {
                    ops.push(to_tex(&x, Some(&layer.ffn_norm), &xt_dim));
                }
                // hb = silu(W_gate · xb) * (W_up · xb), one product of the stacked matrix
                ops.push(matmul(
                    gemm,
                    (&x, Some(&layer.ffn_norm), &xt_dim),
                    &layer.w_gate_up,
                    None,
                    one(&hb),
                    Store::SwiGlu,
                    [hidden, hidden],
                ));
                if gemm {
                    ops.push(to_tex(&hb, None, &xt_hidden));
                }
                ops.push(matmul(
                    gemm,
                    (&hb, None, &xt_hidden),
                    &layer.w_down,
                    None,
                    one(&x),
                    Store::Accumulate,
                    [0, 0],
                ));
            }
            ops
        };
        let prefill = body(true, true);
        let batch = body(true, false);
        let decode = body(false, false);
        let head = lm_head.as_ref().unwrap_or(&embed);
        // Final norm and LM head: of the last row, or of every row.
        let head_last = vec![
            rmsnorm_last(&x, &norm, &xl),
            matmul(
                false,
                (&xl, None, &xt_dim),
                head,
                None,
                one(&logits),
                Store::Write,
                [0, 0],
            ),
        ];
        let head_all = vec![
            to_tex(&x, Some(&norm), &xt_dim),
            matmul(
                true,
                (&x, None, &xt_dim),
                head,
                None,
                one(&logits),
                Store::Write,
                [0, 0],
            ),
        ];
        let argmax = op(
            &k.argmax,
            shape(Shape::new(vocab, 0, 0, 0)),
            &[&logits, &next_id],
            Box::new(|_| [1, 1, 1]),
        );
        gpu.check("building the GPU forward pass")?;
        let is_cpu = gpu.is_cpu_adapter();
        let mut model = GpuModel {
            gpu,
            kind,
            cfg: cfg.clone(),
            kv,
            min_split_keys: opts.min_split_keys,
            workers: opts.split_workers.unwrap_or(if is_cpu {
                std::thread::available_parallelism().map_or(2, |n| n.get())
            } else {
                1024
            }),
            k_cache,
            v_cache,
            block_copy,
            tables,
            max_blocks,
            step,
            logits,
            next_id,
            staging,
            all_rows,
            prefill,
            batch,
            decode,
            head_last,
            head_all,
            argmax,
        };
        model.kv.add_seq()?; // sequence 0, the one `forward` runs
        Ok(model)
    }

    /// The weight element type of the matrices: "f16" or "f32".
    pub fn dtype_name(&self) -> &'static str {
        if self.kind.f16 {
            "f16"
        } else {
            "f32"
        }
    }

    /// Dispatches of one greedy decode step (T = 1, one split-K partition).
    pub fn dispatches_per_token(&self) -> usize {
        let d = Dims { t: 1, n_splits: 1 };
        let ops = self.decode.iter().chain(&self.head_last).chain([&self.argmax]);
        ops.filter(|op| (op.grid)(d).iter().product::<u32>() > 0).count()
    }

    /// Positions held by sequence `seq`.
    pub fn pos(&self, seq: usize) -> usize {
        self.kv.len(seq)
    }

    /// Forget positions of `seq` from `len` on (their pages go back to the pool).
    pub fn truncate(&mut self, seq: usize, len: usize) {
        self.kv.truncate(seq, len);
    }

    /// A new sequence sharing every page of `parent`.
    pub fn fork(&mut self, parent: usize) -> Result<usize> {
        Ok(self.kv.fork(parent)?)
    }

    pub fn release(&mut self, seq: usize) {
        self.kv.release(seq);
    }

    /// Run one step: `batch` lists (sequence, tokens) pairs, at most MAX_STEP_TOKENS tokens in
    /// all, each sequence's tokens at its next positions. Returns the bytes read back for `head`.
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
        let gpu = &self.gpu;
        // Split-K only pays where the rows × heads leave the device idle: aim at `workers`
        // workgroups in all (a CPU adapter has a few threads; a GPU has many compute units).
        let want = self.workers.div_ceil(t * self.cfg.n_heads);
        let (n_splits, split_len) = split_plan(max_len, self.min_split_keys.max(max_len.div_ceil(want)));
        gpu.queue
            .write_buffer(&self.step, 0, &step_bytes(&rows, n_splits, split_len));
        if self.kv.tables_dirty {
            let mut table = vec![0u32; self.kv.max_seqs() * self.max_blocks];
            for s in self.kv.seq_ids() {
                let b = self.kv.block_table(s);
                table[s * self.max_blocks..s * self.max_blocks + b.len()].copy_from_slice(b);
            }
            gpu.queue.write_buffer(&self.tables, 0, bytemuck::cast_slice(&table));
            self.kv.tables_dirty = false;
        }
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        // Copy-on-write of shared pages, before anything writes them.
        let row_bytes = (self.cfg.kv_dim() * 4) as u64;
        let page_bytes = self.kv.page as u64 * row_bytes;
        for c in &copies {
            for cache in self.k_cache.iter().chain(&self.v_cache) {
                let n = c.rows as u64 * row_bytes;
                encoder.copy_buffer_to_buffer(cache, c.src as u64 * page_bytes, &self.block_copy, 0, n);
                encoder.copy_buffer_to_buffer(&self.block_copy, 0, cache, c.dst as u64 * page_bytes, n);
            }
        }
        let body = if t == 1 {
            &self.decode
        } else if batch.len() == 1 {
            &self.prefill
        } else {
            &self.batch
        };
        let (head_ops, argmax): (&[Op], Option<&Op>) = match head {
            Head::Last => (&self.head_last, None),
            Head::All => (&self.head_all, None),
            Head::Argmax => (&self.head_last, Some(&self.argmax)),
        };
        let ops: Vec<&Op> = body.iter().chain(head_ops).chain(argmax).collect();
        let dims = Dims {
            t: t as u32,
            n_splits: n_splits as u32,
        };
        record(&mut encoder, &ops, dims);
        let (src, bytes) = match head {
            Head::Last => (&self.logits, (self.cfg.vocab_size * 4) as u64),
            Head::All => (&self.logits, (t * self.cfg.vocab_size * 4) as u64),
            Head::Argmax => (&self.next_id, 4),
        };
        encoder.copy_buffer_to_buffer(src, 0, &self.staging, 0, bytes);
        gpu.submit_and_read(encoder, &self.staging, bytes, "the forward step")
    }

    /// Where a step's time goes: each kernel's dispatches of a step of `t` rows of sequence 0 at
    /// its current end (decode when t == 1, else prefill; LM head of the last row), recorded
    /// `reps` times in one pass and timed together. Returns (kernel, dispatches per step, ms per
    /// step), slowest first. The cache rows written are given back afterwards.
    pub fn profile(&mut self, t: usize, reps: usize) -> Result<Profile> {
        assert!((1..=MAX_STEP_TOKENS).contains(&t) && reps > 0);
        let pos0 = self.kv.len(0);
        if pos0 + t > self.cfg.seq_len {
            bail!("a profile of {t} rows at position {pos0} exceeds the context");
        }
        let (slots, _) = self.kv.append(0, t)?;
        let rows: Vec<Row> = slots
            .iter()
            .enumerate()
            .map(|(i, &slot)| Row {
                token: (i % self.cfg.vocab_size) as u32,
                pos: (pos0 + i) as u32,
                slot,
                seq: 0,
            })
            .collect();
        let want = self.workers.div_ceil(t * self.cfg.n_heads);
        let len = pos0 + t;
        let (n_splits, split_len) = split_plan(len, self.min_split_keys.max(len.div_ceil(want)));
        self.gpu
            .queue
            .write_buffer(&self.step, 0, &step_bytes(&rows, n_splits, split_len));
        let mut table = vec![0u32; self.kv.max_seqs() * self.max_blocks];
        let b = self.kv.block_table(0);
        table[..b.len()].copy_from_slice(b);
        self.gpu
            .queue
            .write_buffer(&self.tables, 0, bytemuck::cast_slice(&table));
        let body = if t == 1 { &self.decode } else { &self.prefill };
        let all: Vec<&Op> = body.iter().chain(&self.head_last).collect();
        let dims = Dims {
            t: t as u32,
            n_splits: n_splits as u32,
        };
        let mut names: Vec<&str> = all.iter().map(|o| o.name.as_str()).collect();
        names.sort();
        names.dedup();
        let mut out = vec![];
        for name in names {
            let ops: Vec<&Op> = all.iter().copied().filter(|o| o.name == name).collect();
            let run = |reps: usize| -> Result<f64> {
                let repeated: Vec<&Op> = (0..reps).flat_map(|_| ops.iter().copied()).collect();
                run_timed(&self.gpu, &repeated, dims, &format!("the profile of {name}"))
            };
            run(1)?; // warm-up
            out.push((name.to_string(), ops.len(), run(reps)? / reps as f64));
        }
        // The whole step in one submit, kernels interleaved as a real step runs them.
        let repeated: Vec<&Op> = (0..reps).flat_map(|_| all.iter().copied()).collect();
        run_timed(&self.gpu, &all, dims, "the profiled step")?; // warm-up
        let step_ms = run_timed(&self.gpu, &repeated, dims, "the profiled step")? / reps as f64;
        self.gpu.check("the profile")?;
        self.kv.truncate(0, pos0);
        self.kv.tables_dirty = true;
        out.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(Profile { kernels: out, step_ms })
    }

    /// Run `tokens` of sequence `seq` at its next positions (in steps of at most
    /// MAX_STEP_TOKENS, or fewer when every row's logits are wanted and they would not fit one
    /// buffer).
    pub fn forward(&mut self, seq: usize, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        let chunk = match want {
            Logits::Last => MAX_STEP_TOKENS,
            Logits::All => self.all_rows,
        };
        let mut out = vec![];
        for c in tokens.chunks(chunk) {
            let head = if want == Logits::All { Head::All } else { Head::Last };
            let bytes = self.step(&[(seq, c)], head)?;
            let values: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
            if want == Logits::All {
                out.extend_from_slice(&values);
            } else {
                out = values;
            }
        }
        Ok(out)
    }

    /// Run `tokens` of sequence `seq` and return the most likely next token, chosen on the
    /// device (4 bytes read back).
    pub fn forward_argmax(&mut self, seq: usize, tokens: &[u32]) -> Result<u32> {
        // All but the last step's tokens only fill the cache; the last step picks the token.
        let (head, tail) = tokens.split_at(tokens.len() - tokens.len().min(MAX_STEP_TOKENS));
        if !head.is_empty() {
            self.forward(seq, head, Logits::Last)?;
        }
        let bytes = self.step(&[(seq, tail)], Head::Argmax)?;
        Ok(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
    }

    /// One step over several sequences; the last position's logits of each, in batch order.
    pub fn forward_batch(&mut self, batch: &[(usize, &[u32])]) -> Result<Vec<Vec<f32>>> {
        let vocab = self.cfg.vocab_size;
        let t: usize = batch.iter().map(|(_, toks)| toks.len()).sum();
        if batch.len() == 1 || t > self.all_rows.min(MAX_STEP_TOKENS) {
            // one sequence, or too many rows for one step: sequence by sequence
            return batch
                .iter()
                .map(|&(s, toks)| self.forward(s, toks, Logits::Last))
                .collect();
        }
        let bytes = self.step(batch, Head::All)?;
        let all: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let mut end = 0;
        Ok(batch
            .iter()
            .map(|(_, toks)| {
                end += toks.len();
                all[(end - 1) * vocab..end * vocab].to_vec()
            })
            .collect())
    }
}

#[derive(Clone, Copy)]
pub enum Head {
    Last,
    All,
    Argmax,
}
