//! Typed launchers: one method per kernel family, each owning its kernel's binding order, its
//! Shape uniform and its grid, so that a caller says what to compute (`matmul(x, w, bias,
//! Epilogue::Add(&x))`) and never restates a binding list. The forward pass (gpu/forward.rs),
//! `bench attention`, `bench kernels` and the kernel tests all record through these.
//! Each method returns the `Op`s of one call site; the bind groups are made here, once, at load.

use std::cell::RefCell;
use std::collections::HashMap;

use super::context::Gpu;
use super::kernels::{Dims, Fusion, Grid, Kernel, Kernels, MatmulKind, Op, Res, Shape, Store, UNIFORM_X_BYTES};
use super::lora::GpuLora;
use super::weights::{ActTex, WeightTex};
use crate::options::Attention;

type Buf = wgpu::Buffer;

/// What a matrix product reads as x.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// GEMV of row 0 (decode steps, the LM head of the last row): x through matvec's uniform
    /// window; with `norm`, x' = rmsnorm(x) * norm computed by the GEMV itself.
    Gemv { x: &'a Buf, norm: Option<&'a Buf> },
    /// GEMM over all rows of the step: x read from the texture `to_texture` wrote (normalised
    /// there where a norm comes first).
    Gemm(&'a ActTex),
}

/// Where a matrix product's rows go (the epilogue fused into the product).
#[derive(Clone, Copy)]
pub enum Epilogue<'a> {
    /// out = W x (+ bias)
    Write(&'a Buf),
    /// out += W x (+ bias): the residual add
    Add(&'a Buf),
    /// W = W_gate;W_up: out[t, j] = silu(W_gate[j] x) * (W_up[j] x)
    SwiGlu(&'a Buf),
    /// W = Wq;Wk;Wv: q = rope(Wq x), k_cache[slot] = rope(Wk x), v_cache[slot] = Wv x
    RopeKv {
        q: &'a Buf,
        k_cache: &'a Buf,
        v_cache: &'a Buf,
    },
}

/// What an MoE expert product reads besides a product's inputs (`Launch::matmul_moe`).
#[derive(Clone, Copy)]
pub struct MoeSite<'a> {
    /// What moe_route.wgsl wrote: each row's experts and weights, each expert's rows.
    pub routing: &'a Buf,
    /// Experts a token picks.
    pub k: usize,
    /// Experts W stacks (its rows are n_experts × an expert's).
    pub n_experts: usize,
    /// x has a row per token (W_gate;W_up), else a row per (token, slot) (W_down).
    pub x_per_token: bool,
}

/// The model facts the fused products need: RMSNorm's epsilon, RoPE's head_dim, query and key
/// rows of the stacked QKV matrix, and the host-computed RoPE tables (config::RopeTable).
#[derive(Clone)]
pub struct Fused {
    pub norm_eps: f32,
    pub head_dim: usize,
    pub q_dim: usize,
    pub kv_dim: usize,
    /// q and k are RMS-normalised per head before RoPE (Qwen3): the QKV product writes plain
    /// rows (GEMV variants with the input norm are compiled for it) and `qk_norm_rope` follows.
    pub qk_norm: bool,
    pub cos: Buf, // (seq_len, head_dim / 2)
    pub sin: Buf, // (seq_len, head_dim / 2)
}

/// The buffers of one attention call site (shapes in the kernels' headers).
pub struct AttnBufs<'a> {
    pub q: &'a Buf,       // (T, n_heads, head_dim)
    pub k_cache: &'a Buf, // (pool rows, n_kv_heads, head_dim)
    pub v_cache: &'a Buf, // (pool rows, n_kv_heads, head_dim)
    pub tables: &'a Buf,  // (max_seqs, max_blocks) u32 block tables
    pub out: &'a Buf,     // (T, n_heads, head_dim)
    pub scores: &'a Buf,  // naive only: (T, n_heads, score_len)
    pub part: &'a Buf,    // split-K partials: (T, n_heads, n_splits, head_dim + 2), T × n_splits ≤ MAX_PART_ROWS
}

/// Sizes an attention call site needs in its Shape uniform.
#[derive(Clone, Copy)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub max_blocks: usize, // block-table row length
    pub score_len: usize,  // naive: length of a score row (the context)
}

/// Which attention a step runs: over one sequence's consecutive new rows (prefill), or over
/// rows of any sequences (decode, batches: split-K).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AttnRows {
    Prefill,
    Rows,
}

/// The launchers of one recording: the kernels, the Step buffer every dispatch reads, and the
/// Shape uniforms (shared between call sites with equal shapes).
pub struct Launch<'a> {
    pub gpu: &'a Gpu,
    pub k: &'a Kernels,
    pub kind: MatmulKind,
    pub step: &'a Buf,
    /// The model's facts (the fused products need them).
    fused: Option<Fused>,
    shapes: RefCell<HashMap<Shape, Buf>>,
    dummy: Buf,      // (4,) a bias or table a kernel does not read
    spare: [Buf; 2], // (4,) each: the outputs an unsplit product does not write
    dummy_norm: Buf, // matvec's norm window without NORM
}

impl<'a> Launch<'a> {
    /// Launchers over `k`'s kernels, every dispatch reading `step`; `fused` (the model's facts)
    /// for the fused products the forward pass uses. Products compile their kernel variant (weight
    /// format, bias, store, fusion) when first recorded; the GPU's pipeline cache shares them.
    pub fn new(gpu: &'a Gpu, k: &'a Kernels, step: &'a Buf, fused: Option<Fused>) -> anyhow::Result<Self> {
        Ok(Launch {
            gpu,
            k,
            kind: k.kind,
            step,
            fused,
            shapes: RefCell::default(),
            dummy: gpu.zeros("dummy", 4)?,
            spare: [gpu.zeros("spare_out2", 4)?, gpu.zeros("spare_out3", 4)?],
            dummy_norm: gpu.zeros("dummy_norm", UNIFORM_X_BYTES as usize / 4)?,
        })
    }

    /// RMSNorm's epsilon (the model's facts, from `Launch::new`).
    pub fn norm_eps(&self) -> f32 {
        self.fused.as_ref().expect("the model's facts").norm_eps
    }

    fn shape(&self, s: Shape) -> Buf {
        let mut shapes = self.shapes.borrow_mut();
        shapes
            .entry(s)
            .or_insert_with(|| self.gpu.uniform("shape", bytemuck::bytes_of(&s)))
            .clone()
    }

    fn op(&self, kern: &Kernel, s: Shape, res: &[Res], grid: Grid) -> Op {
        Op::new(self.gpu, kern, self.step, &self.shape(s), res, grid)
    }

    fn bufs<'b>(bufs: &[&'b Buf]) -> Vec<Res<'b>> {
        bufs.iter().map(|b| Res::Buf(b)).collect()
    }

    /// x (T, dim) = embed[token of each row]: embed.wgsl.
    pub fn embed(&self, table: &WeightTex, x: &Buf) -> anyhow::Result<Op> {
        let dim = table.cols;
        let grid: Grid = Box::new(move |d: Dims| [dim.div_ceil(64) as u32, d.t, 1]);
        let kern = Kernels::embed_kernel(self.gpu, table.format)?;
        Ok(self.op(
            &kern,
            Shape::new(dim, 0, 0, 0),
            &[Res::Tex(&table.view), Res::Buf(x)],
            grid,
        ))
    }

    /// out (1, d) = rmsnorm(x[T-1]) * weight: rmsnorm.wgsl on the last row only (the one row
    /// the LM head of `Want::Last` reads).
    pub fn rmsnorm_last(&self, x: &Buf, weight: &Buf, out: &Buf, d: usize, eps: f32) -> Op {
        let s = Shape::new(d, eps.to_bits() as usize, 1, 0);
        self.op(
            &self.k.rmsnorm,
            s,
            &Self::bufs(&[x, weight, out]),
            Box::new(|_| [1, 1, 1]),
        )
    }

    /// out (T, d) = rmsnorm(x) * weight, every row: rmsnorm.wgsl.
    pub fn rmsnorm(&self, x: &Buf, weight: &Buf, out: &Buf, d: usize, eps: f32) -> Op {
        let s = Shape::new(d, eps.to_bits() as usize, 0, 0);
        self.op(
            &self.k.rmsnorm,
            s,
            &Self::bufs(&[x, weight, out]),
            Box::new(|d: Dims| [d.t, 1, 1]),
        )
    }

    /// Qwen3's attention input from the QKV product's rows qkv (T, q_dim + 2 kv_dim): each head
    /// of q and k RMS-normalised (qk_norm (2, head_dim): q_norm; k_norm) and rotated, q to `q`,
    /// k and v into their cache rows: qk_norm_rope.wgsl.
    pub fn qk_norm_rope(&self, qkv: &Buf, qk_norm: &Buf, q: &Buf, k_cache: &Buf, v_cache: &Buf) -> Op {
        let f = self.fused.as_ref().expect("the model's facts");
        let heads = ((f.q_dim + 2 * f.kv_dim) / f.head_dim) as u32;
        self.op(
            &self.k.qk_norm_rope,
            Shape::new(f.q_dim, f.kv_dim, f.norm_eps.to_bits() as usize, 0),
            &Self::bufs(&[qkv, qk_norm, q, k_cache, v_cache, &f.cos, &f.sin]),
            Box::new(move |d: Dims| [heads, d.t, 1]),
        )
    }

    /// xt (T, d/4 texels) = x (T, d), or rmsnorm(x) * norm with `norm`: to_texture.wgsl, the
    /// copy before a GEMM. Returns the GEMM's input.
    pub fn to_texture<'b>(&self, x: &Buf, norm: Option<(&Buf, f32)>, xt: &'b ActTex) -> (Op, Input<'b>) {
        self.to_texture_rows(x, norm, xt, 1)
    }

    /// `to_texture` with the norm of the rows the step's rows[t].x name, compacted: row t of xt
    /// is rmsnorm(x[rows[t].x]) * weight (the LM head of the rows a step returns).
    pub fn to_texture_gather<'b>(&self, x: &Buf, weight: &Buf, eps: f32, xt: &'b ActTex) -> (Op, Input<'b>) {
        let s = Shape::new(xt.d, eps.to_bits() as usize, 0, 0);
        let grid: Grid = Box::new(|dims: Dims| [dims.t.div_ceil(64), 1, 1]);
        let op = self.op(
            &self.k.to_texture_gather,
            s,
            &[Res::Buf(x), Res::Buf(weight), Res::Tex(&xt.view)],
            grid,
        );
        (op, Input::Gemm(xt))
    }

    /// `to_texture` of `per_token` rows a token (an MoE block's (T·k, hidden) rows; no norm).
    pub fn to_texture_rows<'b>(
        &self,
        x: &Buf,
        norm: Option<(&Buf, f32)>,
        xt: &'b ActTex,
        per_token: usize,
    ) -> (Op, Input<'b>) {
        let d = xt.d;
        let (kern, s, grid): (&Kernel, Shape, Grid) = match norm {
            Some((_, eps)) => (
                &self.k.to_texture_norm,
                Shape::new(d, eps.to_bits() as usize, 0, 0),
                Box::new(|dims: Dims| [dims.t.div_ceil(64), 1, 1]),
            ),
            None => (
                &self.k.to_texture,
                Shape::new(d, 0, per_token, 0),
                Box::new(move |dims: Dims| [(d / 4).div_ceil(64) as u32, dims.t * per_token as u32, 1]),
            ),
        };
        let w = norm.map_or(&self.dummy, |(w, _)| w);
        let op = self.op(kern, s, &[Res::Buf(x), Res::Buf(w), Res::Tex(&xt.view)], grid);
        (op, Input::Gemm(xt))
    }

    /// A product of x with W (rows, cols) (+ bias), its rows stored as `epi` says: matvec.wgsl /
    /// matmat.wgsl (or their _plain twins). A normalising GEMV and the RoPE epilogue need the
    /// model's facts (`Launch::new` with `Fused`).
    pub fn matmul(&self, x: Input, w: &WeightTex, bias: Option<&Buf>, epi: Epilogue) -> anyhow::Result<Op> {
        self.matmul_lora(x, w, bias, epi, None)
    }

    /// `matmul` adding each row's LoRA update to the product before the epilogue: the sum over
    /// adapters a of the row's sequence's factor times lora.delta[t, a, o] (lib/epilogue.wgsl's
    /// LORA_ADAPTERS), where the forward recorded B_a·A_a·x' just before (gpu/lora.rs).
    pub fn matmul_lora(
        &self,
        x: Input,
        w: &WeightTex,
        bias: Option<&Buf>,
        epi: Epilogue,
        lora: Option<&GpuLora>,
    ) -> anyhow::Result<Op> {
        self.product(x, w, bias, epi, lora, None)
    }

    /// An MoE block's expert product: W stacks every expert's rows, and each row of the step
    /// multiplies the rows of the experts `moe.routing` gives it (lib/epilogue.wgsl's MOE_K): a
    /// GEMV runs the one token's k slots (the grid's z), a GEMM each expert over the rows
    /// routed to it (the grid's z; workgroups past an expert's rows return at once).
    pub fn matmul_moe(&self, x: Input, w: &WeightTex, epi: Epilogue, moe: MoeSite) -> anyhow::Result<Op> {
        self.product(x, w, None, epi, None, Some(moe))
    }

    fn product(
        &self,
        x: Input,
        w: &WeightTex,
        bias: Option<&Buf>,
        epi: Epilogue,
        lora: Option<&GpuLora>,
        moe: Option<MoeSite>,
    ) -> anyhow::Result<Op> {
        let gemm = matches!(x, Input::Gemm(_));
        let norm = match x {
            Input::Gemv { norm, .. } => norm,
            Input::Gemm(_) => None,
        };
        let (store, outs) = match epi {
            Epilogue::Write(o) => (Store::Write, [o, &self.spare[0], &self.spare[1]]),
            Epilogue::Add(o) => (Store::Accumulate, [o, &self.spare[0], &self.spare[1]]),
            Epilogue::SwiGlu(o) => (Store::SwiGlu, [o, &self.spare[0], &self.spare[1]]),
            Epilogue::RopeKv { q, k_cache, v_cache } => (Store::RopeKv, [q, k_cache, v_cache]),
        };
        let f = (norm.is_some() || store == Store::RopeKv).then(|| {
            self.fused
                .as_ref()
                .expect("a normalising or RoPE product needs the model's facts")
        });
        let fusion = f.map(|f| Fusion {
            norm_eps: f.norm_eps,
            head_dim: f.head_dim,
            kv_f16: self.k.kv_f16,
        });
        let kind = self.kind.with(w.format);
        let n_lora = lora.map_or(0, |g| g.n_adapters);
        let moe_k = moe.map(|m| (m.k, m.x_per_token));
        let kern = Kernels::matmul_kernel(self.gpu, kind, gemm, bias.is_some(), store, fusion, n_lora, moe_k)?;
        let rows = w.rows / moe.map_or(1, |m| m.n_experts); // an expert's rows
        let s = match (store, f) {
            (Store::RopeKv, Some(f)) => Shape::new(w.cols, rows, f.q_dim, f.kv_dim),
            (Store::SwiGlu, _) => Shape::new(w.cols, rows, rows / 2, 0),
            _ => Shape::new(w.cols, rows, 0, rows),
        };
        // MoE: z over a GEMV's slots or a GEMM's experts
        let z = moe.map_or(1, |m| if gemm { m.n_experts } else { m.k }) as u32;
        let grid: Grid = Box::new(move |d: Dims| {
            let [gx, gy, _] = Kernels::matmul_grid(kind, gemm, rows, d.t as usize);
            [gx, gy, z]
        });
        let (cos, sin) = f.map_or((&self.dummy, &self.dummy), |f| (&f.cos, &f.sin));
        let mut res = vec![
            match x {
                Input::Gemv { x, .. } => Res::UniformX(x),
                Input::Gemm(xt) => Res::Tex(&xt.view),
            },
            Res::Tex(&w.view),
            Res::Buf(bias.unwrap_or(&self.dummy)),
            Res::Buf(outs[0]),
            Res::Buf(outs[1]),
            Res::Buf(outs[2]),
        ];
        let (delta, factors) = lora.map_or((&self.dummy, &self.dummy_norm), |g| (&g.delta, &g.factors));
        // binding 10: LoRA's delta or MoE's routing (no product has both)
        assert!(lora.is_none() || moe.is_none(), "a product with LoRA and MoE");
        let aux = moe.map_or(delta, |m| m.routing);
        res.extend([Res::Buf(cos), Res::Buf(sin), Res::Buf(aux), Res::Buf(factors)]);
        if !gemm {
            res.push(Res::UniformX(norm.unwrap_or(&self.dummy_norm)));
        }
        Ok(self.op(&kern, s, &res, grid))
    }

    /// attention of the step's rows over the cache: naive (scores in memory), or flash (tiles
    /// with an online softmax for a prefill; split-K partitions and a log-sum-exp reduce for
    /// rows of any sequences).
    pub fn attention(&self, kind: Attention, rows: AttnRows, s: AttnShape, b: &AttnBufs) -> Vec<Op> {
        let nh = s.n_heads as u32;
        match (kind, rows) {
            (Attention::Naive, _) => vec![self.op(
                &self.k.attention_naive,
                Shape::new(s.n_heads, s.n_kv_heads, s.max_blocks, s.score_len),
                &Self::bufs(&[b.q, b.k_cache, b.v_cache, b.tables, b.scores, b.out]),
                Box::new(move |d: Dims| [nh, d.t, 1]),
            )],
            (Attention::Flash, AttnRows::Prefill) => {
                let (rows, nkv) = (self.k.flash_rows, s.n_kv_heads as u32);
                vec![self.op(
                    &self.k.attention_flash,
                    Shape::new(s.n_heads, s.n_kv_heads, s.max_blocks, 0),
                    &Self::bufs(&[b.q, b.k_cache, b.v_cache, b.tables, b.out]),
                    Box::new(move |d: Dims| Kernels::flash_grid(rows, d.t, nh, nkv)),
                )]
            }
            (Attention::Flash, AttnRows::Rows) => vec![
                self.op(
                    &self.k.attention_decode,
                    Shape::new(s.n_heads, s.n_kv_heads, s.max_blocks, 0),
                    &Self::bufs(&[b.q, b.k_cache, b.v_cache, b.tables, b.part, b.out]),
                    {
                        let groups = nh / self.k.decode_group as u32;
                        Box::new(move |d: Dims| [groups, d.t, d.n_splits])
                    },
                ),
                self.op(
                    &self.k.attention_reduce,
                    Shape::new(s.n_heads, 0, 0, 0),
                    &Self::bufs(&[b.part, b.out]),
                    Box::new(move |d: Dims| if d.n_splits > 1 { [nh, d.t, 1] } else { [0, 0, 0] }),
                ),
            ],
        }
    }

    /// An MoE block's routing from its router logits (T, stride): moe_route.wgsl.
    pub fn moe_route(
        &self,
        logits: &Buf,
        stride: usize,
        routing: &Buf,
        k: usize,
        n_experts: usize,
        norm: bool,
    ) -> anyhow::Result<Op> {
        let kern = Kernels::moe(self.gpu, "moe_route.wgsl", n_experts, k, ("NORM_TOPK", norm))?;
        Ok(self.op(
            &kern,
            Shape::new(stride, 0, 0, 0),
            &Self::bufs(&[logits, routing]),
            Box::new(|_| [1, 1, 1]),
        ))
    }

    /// x (T, dim) += the routed experts' rows y (T·k, dim) weighted, plus with `shared` =
    /// (y_shared (T, dim), logits (T, stride)) the shared expert's rows times their gate:
    /// moe_combine.wgsl.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_combine(
        &self,
        routing: &Buf,
        y: &Buf,
        shared: Option<(&Buf, &Buf, usize)>,
        x: &Buf,
        dim: usize,
        k: usize,
        n_experts: usize,
    ) -> anyhow::Result<Op> {
        let kern = Kernels::moe(self.gpu, "moe_combine.wgsl", n_experts, k, ("SHARED", shared.is_some()))?;
        let (ys, logits, stride) = shared.unwrap_or((&self.dummy, &self.dummy, 0));
        let s = Shape::new(dim, stride, 0, 0);
        let grid: Grid = Box::new(move |d: Dims| [dim.div_ceil(64) as u32, d.t, 1]);
        Ok(self.op(&kern, s, &Self::bufs(&[routing, y, ys, logits, x]), grid))
    }

    /// next_id (R,) u32 = argmax of each logits row (the first on ties): argmax.wgsl. R is 1,
    /// or with `every_row` the step's T (the rows the gathering head wrote).
    pub fn argmax(&self, logits: &Buf, vocab: usize, next_id: &Buf, every_row: bool) -> Op {
        let s = Shape::new(vocab, 0, 0, 0);
        let grid: Grid = if every_row {
            Box::new(|d: Dims| [d.t, 1, 1])
        } else {
            Box::new(|_| [1, 1, 1])
        };
        self.op(&self.k.argmax, s, &Self::bufs(&[logits, next_id]), grid)
    }
}
