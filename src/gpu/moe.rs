//! Mixture-of-Experts blocks on the GPU, recorded into the step like every other block: the
//! router product, the choice on the device (moe_route.wgsl), the grouped expert products (the
//! matrix kernels with lib/epilogue.wgsl's MOE_K: a decode step's GEMVs read only its k experts'
//! rows, a prompt's GEMMs run each expert once over the rows routed to it, as llama.cpp's
//! `mul_mat_id`), the shared expert, and the weighted sum into the residual stream
//! (moe_combine.wgsl). Nothing waits on the host. CPU twin: moe::block (src/moe.rs).

use anyhow::Result;

use super::buffers::{Activations, MoeActs};
use super::context::Gpu;
use super::kernels::{Op, MAX_STEP_TOKENS, UNIFORM_X_BYTES};
use super::launch::{Epilogue, Input, Launch, MoeSite};
use super::params::{GpuMlp, GpuMoe};
use crate::config::MoeConfig;
use crate::moe::Route;

type Buf = wgpu::Buffer;

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

/// The MoE routing of the last step, which ran `rows` rows (entries of `lens` rows starting at
/// positions `pos`), read back from each MoE layer's (layer, routing, router logits, router
/// rows): (layer, position, route) per MoE layer and row, the gap computed from the logits as
/// moe::route does.
pub fn read_routing(
    gpu: &Gpu,
    mc: &MoeConfig,
    bufs: &[(usize, Buf, Buf, usize)],
    lens: &[usize],
    pos: &[usize],
) -> Result<Vec<(usize, usize, Route)>> {
    let (k, t) = (mc.top_k, lens.iter().sum::<usize>());
    let mut out = vec![];
    for (l, routing, logits, stride) in bufs {
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&gpu.read(routing, (2 * MAX_STEP_TOKENS * k * 4) as u64)?);
        let logits: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.read(logits, (t * stride * 4) as u64)?);
        let mut row = 0;
        for (&n, &p) in lens.iter().zip(pos) {
            for i in 0..n {
                let weights = &words[MAX_STEP_TOKENS * k + row * k..][..k];
                let route = Route {
                    experts: words[row * k..(row + 1) * k].to_vec(),
                    weights: weights.iter().map(|&b| f32::from_bits(b)).collect(),
                    gap: crate::moe::route(&logits[row * stride..][..mc.n_experts], k, false).gap,
                };
                out.push((*l, p + i, route));
                row += 1;
            }
        }
    }
    Ok(out)
}
