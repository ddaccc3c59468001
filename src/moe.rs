//! Mixture of Experts on the host (Shazeer et al. 2017; Mixtral, Jiang et al. 2024): the
//! router's choice and the CPU reference block, the twins of shaders/moe_route.wgsl and the
//! GPU's grouped expert products. Follows HF transformers' `MixtralSparseMoeBlock`,
//! `Qwen2MoeSparseMoeBlock` and `Qwen3MoeSparseMoeBlock`: p = softmax(x · W_routerᵀ) over all
//! experts, the top_k of p, their p as weights (divided by their sum when `norm_topk_prob`),
//! out = Σ weight_e · down_e(silu(gate_e x) * up_e x) (+ sigmoid(x · shared_gate) · shared(x)).

use crate::config::MoeConfig;
use crate::cpu::ops::{dot, matmul, swiglu};
use crate::weights::{Mlp, Moe, Tensor};

/// One token's routing in one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// The chosen experts, highest router logit first (ties: the lower index first).
    pub experts: Vec<u32>,
    /// Their weights (softmax probabilities, renormalised over the k when the model says so).
    pub weights: Vec<f32>,
    /// Router logit of the k-th chosen expert minus that of the best expert left out (infinite
    /// when k = n_experts): how close the choice of the SET was.
    pub gap: f32,
}

/// Route a token from its router logits (n_experts,): top `k` by logit, ties to the lower index
/// (torch.topk's order on a CPU), softmax computed in f64 and rounded to f32.
pub fn route(logits: &[f32], k: usize, norm_topk_prob: bool) -> Route {
    assert!(k >= 1 && k <= logits.len(), "route: top {k} of {}", logits.len());
    // NaN ranks last, as moe_route.wgsl's comparisons leave it
    let key = |e: usize| {
        if logits[e].is_nan() {
            f32::NEG_INFINITY
        } else {
            logits[e]
        }
    };
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    let max = logits[order[0]] as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let p = |e: usize| (logits[e] as f64 - max).exp() / sum;
    let chosen = &order[..k];
    let scale = if norm_topk_prob {
        chosen.iter().map(|&e| p(e)).sum()
    } else {
        1.0
    };
    Route {
        experts: chosen.iter().map(|&e| e as u32).collect(),
        weights: chosen.iter().map(|&e| (p(e) / scale) as f32).collect(),
        gap: order
            .get(k)
            .map_or(f32::INFINITY, |&o| logits[order[k - 1]] - logits[o]),
    }
}

/// out (T, dim) = down · (silu(gate · x) * (up · x)) for x (T, dim): a SwiGLU FFN.
pub fn mlp(gate: &Tensor, up: &Tensor, down: &Tensor, x: &[f32], out: &mut [f32], dim: usize) {
    let (t_n, h) = (x.len() / dim, gate.rows());
    let (mut g, mut u) = (vec![0f32; t_n * h], vec![0f32; t_n * h]);
    matmul(&mut g, x, gate, None, dim);
    matmul(&mut u, x, up, None, dim);
    swiglu(&mut g, &u);
    matmul(out, &g, down, None, h);
}

/// An MoE block on x (T, dim), the normalised residual stream: out (T, dim) as the module doc
/// says. Each expert runs once over the rows routed to it (the grouped products of the GPU);
/// `shared` is the shared expert (Qwen2-MoE). Returns each row's `Route`.
pub fn block(
    cfg: &MoeConfig,
    moe: &Moe<Tensor>,
    shared: Option<&Mlp<Tensor>>,
    x: &[f32],
    out: &mut [f32],
) -> Vec<Route> {
    let dim = moe.router.cols();
    let t_n = x.len() / dim;
    let mut logits = vec![0f32; t_n * cfg.n_experts];
    matmul(&mut logits, x, &moe.router, None, dim);
    let picked: Vec<Route> = logits
        .chunks_exact(cfg.n_experts)
        .map(|l| route(l, cfg.top_k, cfg.norm_topk_prob))
        .collect();
    out.fill(0.0);
    for e in 0..cfg.n_experts {
        // the rows routed to expert e, with their weights
        let rows: Vec<(usize, f32)> = picked
            .iter()
            .enumerate()
            .filter_map(|(t, r)| r.experts.iter().position(|&x| x == e as u32).map(|i| (t, r.weights[i])))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let xs: Vec<f32> = rows
            .iter()
            .flat_map(|&(t, _)| &x[t * dim..(t + 1) * dim])
            .copied()
            .collect();
        let mut ys = vec![0f32; xs.len()];
        mlp(&moe.gate[e], &moe.up[e], &moe.down[e], &xs, &mut ys, dim);
        for (&(t, w), y) in rows.iter().zip(ys.chunks_exact(dim)) {
            for (o, y) in out[t * dim..(t + 1) * dim].iter_mut().zip(y) {
                *o += w * y;
            }
        }
    }
    if let Some(sh) = shared {
        let mut ys = vec![0f32; x.len()];
        mlp(&sh.gate, &sh.up, &sh.down, x, &mut ys, dim);
        let g = moe.shared_gate.as_ref().map(|g| g.f32s());
        for t in 0..t_n {
            let xt = &x[t * dim..(t + 1) * dim];
            let s = g
                .as_ref()
                .map_or(1.0, |g| 1.0 / (1.0 + (-dot(xt, g) as f64).exp()) as f32);
            for (o, y) in out[t * dim..(t + 1) * dim].iter_mut().zip(&ys[t * dim..]) {
                *o += s * y;
            }
        }
    }
    picked
}
