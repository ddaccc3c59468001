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
    step_size, Fusion, Kernel, Kernels, MatmulKind, Res, Shape, Store, FLASH_TILE, MAX_SPLITS, MAX_STEP_TOKENS,
    UNIFORM_X_BYTES,
};
use super::model::GpuModel;
use super::weights::{ActTex, GpuWeights, WeightTex};
use crate::config::{Config, RopeTable};
use crate::kv_cache::KvPages;
use crate::model::{Attention, Dtype, KvLayout, Options};
use crate::weights::Weights;

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

/// The attention of one layer for the three kinds of step, with the buffers it reads and writes.
pub struct AttentionOps {
    pub prefill: Vec<Op>, // rows of ONE sequence at consecutive positions
    pub rows: Vec<Op>,    // rows of any sequences (decode, batches)
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

        // Weights, uploaded once: matrices in textures, vectors in storage buffers.
        let GpuWeights {
            layers,
            embed,
            lm_head,
            norm,
        } = GpuWeights::upload(&gpu, cfg, w, kind.f16)?;
        let dummy_out2 = gpu.zeros("dummy_out2", 4)?; // the unused outputs of an unsplit product
        let dummy_out3 = gpu.zeros("dummy_out3", 4)?;
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
        let model = GpuModel {
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
        Ok(model)
    }
}
