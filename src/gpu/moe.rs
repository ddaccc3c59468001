//! Mixture-of-Experts blocks on the GPU, recorded into the step like every other block: the
//! router product, the choice on the device (moe_route.wgsl), the grouped expert products (the
//! matrix kernels with lib/epilogue.wgsl's MOE_K: a decode step's GEMVs read only its k experts'
//! rows, a prompt's GEMMs run each expert once over the rows routed to it, as llama.cpp's
//! `mul_mat_id`), the shared expert, and the weighted sum into the residual stream
//! (moe_combine.wgsl). Nothing waits on the host. CPU twin: moe::block (src/moe.rs).

use anyhow::Result;

use super::buffers::Activations;
use super::context::Gpu;
use super::kernels::{Op, MAX_STEP_TOKENS, UNIFORM_X_BYTES};
use super::launch::{Epilogue, Input, Launch, MoeSite};
use super::weights::{ActTex, GpuMlp, WeightTex};
use crate::config::{Config, MoeConfig};
use crate::weights::{Moe, Tensor};

type Buf = wgpu::Buffer;

/// One MoE block's matrices and its routing buffers (a layer's own, so that `--routing` can
/// read every layer's after a step).
pub struct GpuMoe {
    /// (n_experts, dim) f32 W_router, and the shared expert's gate as row n_experts (Qwen2-MoE)
    pub router: WeightTex,
    /// (n_experts × 2 hidden, dim): W_gate_e; W_up_e of expert 0, then expert 1, ...
    pub gate_up: WeightTex,
    /// (n_experts × dim, hidden): W_down_e of each expert in turn
    pub down: WeightTex,
    /// (MAX_STEP_TOKENS, router rows) router logits
    pub logits: Buf,
    /// moe_route.wgsl's output: ids, weights, per-expert assignment lists
    pub routing: Buf,
}

/// The scratch every MoE block shares, a row per (token, slot) assignment.
pub struct MoeActs {
    pub hb: Buf,                   // (T·k, hidden) silu(gate_e x) * up_e x, at least a GEMV's 64 KiB window
    pub xt: ActTex,                // (T·k, hidden/4 texels) hb, for the W_down GEMM
    pub y: Buf,                    // (T·k, dim) the experts' rows
    pub y_shared: Buf,             // (T, dim) the shared expert's rows (or (4,))
    pub xt_shared: Option<ActTex>, // (T, shared_hidden/4 texels) its hb, for its W_down GEMM
}

/// Words of a routing buffer for top `k` of `n_experts` (moe_route.wgsl's header).
pub fn routing_words(k: usize, n_experts: usize) -> usize {
    2 * MAX_STEP_TOKENS * k + n_experts * (MAX_STEP_TOKENS + 1)
}

/// The MoE matrices of a layer as the device holds them: (name, parts stacked row after row,
/// f32 only): the router (+ the shared gate), the experts' W_gate;W_up, their W_down.
pub fn parts<'a>(l: usize, m: &'a Moe<Tensor>) -> [(String, Vec<&'a Tensor>, bool); 3] {
    let router = std::iter::once(&m.router).chain(&m.shared_gate).collect();
    let gate_up = m.gate.iter().zip(&m.up).flat_map(|(g, u)| [g, u]).collect();
    [
        (format!("layers.{l}.router"), router, true),
        (format!("layers.{l}.experts.w_gate;w_up"), gate_up, false),
        (format!("layers.{l}.experts.w_down"), m.down.iter().collect(), false),
    ]
}

impl GpuMoe {
    /// Upload a layer's MoE block, `mat(name, parts, f32)` making each matrix.
    pub fn upload(
        gpu: &Gpu,
        mc: &MoeConfig,
        l: usize,
        m: &Moe<Tensor>,
        mut mat: impl FnMut(&str, &[&Tensor], bool) -> Result<WeightTex>,
    ) -> Result<Self> {
        let [r, gu, d] = parts(l, m).map(|(name, parts, f32)| mat(&name, &parts, f32));
        let router = r?;
        Ok(GpuMoe {
            logits: gpu.zeros(&format!("layers.{l}.router_logits"), MAX_STEP_TOKENS * router.rows)?,
            routing: gpu.zeros(&format!("layers.{l}.routing"), routing_words(mc.top_k, mc.n_experts))?,
            router,
            gate_up: gu?,
            down: d?,
        })
    }
}

impl MoeActs {
    pub fn new(gpu: &Gpu, cfg: &Config, mc: &MoeConfig) -> Result<Self> {
        let rows = MAX_STEP_TOKENS * mc.top_k;
        Ok(MoeActs {
            hb: gpu.zeros("moe_hb", (rows * mc.hidden).max(UNIFORM_X_BYTES as usize / 4))?,
            xt: ActTex::new(gpu, "moe_xt", mc.hidden, rows)?,
            y: gpu.zeros("moe_y", rows * cfg.dim)?,
            y_shared: gpu.zeros(
                "moe_y_shared",
                if mc.shared_hidden > 0 {
                    MAX_STEP_TOKENS * cfg.dim
                } else {
                    4
                },
            )?,
            xt_shared: (mc.shared_hidden > 0)
                .then(|| ActTex::new(gpu, "moe_xt_shared", mc.shared_hidden, MAX_STEP_TOKENS))
                .transpose()?,
        })
    }
}

/// Record an MoE block: x += Σ_s weight_s · expert_s(x') (+ sigmoid(x' · g) · shared(x')),
/// where `xn` is x' = rmsnorm(x) · ffn_norm as the products read it (a GEMV's fused norm, or
/// the texture of a GEMM) and `norm` the norm for a GEMM input made here. A decode step whose k
/// rows of hb overflow a GEMV's 64 KiB window runs its expert products as GEMMs.
#[allow(clippy::too_many_arguments)]
pub fn record(
    l: &Launch,
    mc: &MoeConfig,
    m: &GpuMoe,
    shared: Option<&GpuMlp>,
    acts: &MoeActs,
    a: &Activations,
    xn: Input,
    norm: (&Buf, f32),
) -> Result<Vec<Op>> {
    let (k, n_experts, stride, dim) = (mc.top_k, mc.n_experts, m.router.rows, m.down.rows / mc.n_experts);
    let site = |x_per_token| MoeSite {
        routing: &m.routing,
        k,
        n_experts,
        x_per_token,
    };
    // router logits (T, n_experts [+ 1]) = x' · W_routerᵀ; the choice, on the device
    let mut ops = vec![
        l.matmul(xn, &m.router, None, Epilogue::Write(&m.logits))?,
        l.moe_route(&m.logits, stride, &m.routing, k, n_experts, mc.norm_topk_prob)?,
    ];
    let gemv_fits = k * mc.hidden * 4 <= UNIFORM_X_BYTES as usize;
    let xe = match xn {
        Input::Gemv { .. } if !gemv_fits => {
            let (op, input) = l.to_texture(&a.x, Some(norm), &a.xt_dim);
            ops.push(op);
            input
        }
        _ => xn,
    };
    // hb[a] = silu(W_gate_e x') * (W_up_e x'), y[a] = W_down_e hb[a] for each assignment a
    ops.push(l.matmul_moe(xe, &m.gate_up, Epilogue::SwiGlu(&acts.hb), site(true))?);
    let hb = match xe {
        Input::Gemv { .. } => Input::Gemv {
            x: &acts.hb,
            norm: None,
        },
        Input::Gemm(_) => {
            let (op, input) = l.to_texture_rows(&acts.hb, None, &acts.xt, k);
            ops.push(op);
            input
        }
    };
    ops.push(l.matmul_moe(hb, &m.down, Epilogue::Write(&acts.y), site(false))?);
    // the shared expert: y_shared = W_down (silu(W_gate x') * (W_up x'))
    if let Some(s) = shared {
        ops.push(l.matmul(xn, &s.gate_up, None, Epilogue::SwiGlu(&a.hb))?);
        let hb = match xn {
            Input::Gemv { .. } => Input::Gemv { x: &a.hb, norm: None },
            Input::Gemm(_) => {
                let xt = acts.xt_shared.as_ref().expect("a shared expert's texture");
                let (op, input) = l.to_texture(&a.hb, None, xt);
                ops.push(op);
                input
            }
        };
        ops.push(l.matmul(hb, &s.down, None, Epilogue::Write(&acts.y_shared))?);
    }
    let shared = shared.map(|_| (&acts.y_shared, &m.logits, stride));
    ops.push(l.moe_combine(&m.routing, &acts.y, shared, &a.x, dim, k, n_experts)?);
    Ok(ops)
}
