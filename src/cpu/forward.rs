//! The CPU reference forward pass, shaped like llama2.c's `forward`: read it top to bottom.
//! It runs T tokens at positions pos..pos+T (prefill when T > 1, one decode step when T = 1),
//! appends their keys and values to the cache, and returns the logits asked for.

use super::ops::{add, attention, matmul, rmsnorm, rope, swiglu};
use crate::arch::Field;
use crate::config::{Config, RopeTable};
use crate::lora::Lora;
use crate::moe::{self, Route};
use crate::options::Want;
use crate::weights::{Tensor, Weights};

/// Keys and values of every position so far, per layer. Grows as tokens are added.
#[derive(Clone)]
pub struct KvCache {
    pub k: Vec<Vec<f32>>, // n_layers × (len, n_kv_heads·head_dim)
    pub v: Vec<Vec<f32>>, // n_layers × (len, n_kv_heads·head_dim)
    pub len: usize,       // positions held
}

impl KvCache {
    pub fn new(cfg: &Config) -> Self {
        KvCache {
            k: vec![vec![]; cfg.n_layers],
            v: vec![vec![]; cfg.n_layers],
            len: 0,
        }
    }
    /// Forget positions from `len` on (to reuse a shared prefix).
    pub fn truncate(&mut self, len: usize, kv_dim: usize) {
        assert!(len <= self.len);
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            buf.truncate(len * kv_dim);
        }
        self.len = len;
    }
}

#[allow(clippy::too_many_arguments)] // the state of the step, plus a sequence's adapters and a routing record
pub fn forward(
    cfg: &Config,
    w: &Weights<Tensor>,
    rope_table: &RopeTable,
    cache: &mut KvCache,
    tokens: &[u32],
    want: Want,
    lora: &[(&Lora, f32)], // the sequence's adapters with their factors (empty: the base model)
    mut routes: Option<&mut Vec<(usize, Vec<Route>)>>, // MoE: each MoE layer's routing of the T rows
) -> Vec<f32> {
    let (dim, hd, q_dim, kv_dim, hidden) = (cfg.dim, cfg.head_dim, cfg.q_dim(), cfg.kv_dim(), cfg.hidden_dim);
    let t_n = tokens.len();
    let pos = cache.len;
    assert!(
        t_n > 0 && pos + t_n <= cfg.seq_len,
        "forward: {t_n} tokens at {pos} exceed the context {}",
        cfg.seq_len
    );

    // State, one row per token.
    let mut x = vec![0f32; t_n * dim]; // (T, dim) residual stream
    let mut xb = vec![0f32; t_n * dim]; // (T, dim) normalised input / block output
    let mut q = vec![0f32; t_n * q_dim]; // (T, n_heads·hd)
    let mut k = vec![0f32; t_n * kv_dim]; // (T, n_kv_heads·hd)
    let mut v = vec![0f32; t_n * kv_dim]; // (T, n_kv_heads·hd)
    let mut att = vec![0f32; t_n * q_dim]; // (T, n_heads·hd) attention output
    let mut hb = vec![0f32; t_n * hidden]; // (T, hidden_dim) gate, then SwiGLU
    let mut hb2 = vec![0f32; t_n * hidden]; // (T, hidden_dim) up

    // Token embeddings.
    for (t, &tok) in tokens.iter().enumerate() {
        let tok = tok as usize;
        assert!(tok < cfg.vocab_size, "token id {tok} >= vocab {}", cfg.vocab_size);
        w.embed.row_f32(tok, &mut x[t * dim..(t + 1) * dim]);
    }

    for (l, layer) in w.layers.iter().enumerate() {
        // y += factor · s · (x Aᵀ) Bᵀ of each adapter that trains `f` (LoRA, unmerged)
        let adapt = |f: Field, y: &mut [f32], x: &[f32]| {
            for (a, factor) in lora {
                if let Some(p) = a.pair(l, f) {
                    p.apply(x, y, *factor);
                }
            }
        };
        // Norm weights and biases as f32 (borrowed when stored as f32, else decoded: small)
        let (bq, bk) = (layer.bq.as_ref().map(Tensor::f32s), layer.bk.as_ref().map(Tensor::f32s));
        let (bv, bo) = (layer.bv.as_ref().map(Tensor::f32s), layer.bo.as_ref().map(Tensor::f32s));
        // Attention block: x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
        rmsnorm(&mut xb, &x, &layer.attn_norm.f32s(), cfg.norm_eps);
        matmul(&mut q, &xb, &layer.wq, bq.as_deref(), dim);
        matmul(&mut k, &xb, &layer.wk, bk.as_deref(), dim);
        matmul(&mut v, &xb, &layer.wv, bv.as_deref(), dim);
        adapt(Field::Wq, &mut q, &xb);
        adapt(Field::Wk, &mut k, &xb);
        adapt(Field::Wv, &mut v, &xb);
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            // Qwen3: RMSNorm over each head of q and of k (weights of head_dim), before RoPE
            let (q_in, k_in) = (q.clone(), k.clone());
            rmsnorm(&mut q, &q_in, &qn.f32s(), cfg.norm_eps);
            rmsnorm(&mut k, &k_in, &kn.f32s(), cfg.norm_eps);
        }
        for t in 0..t_n {
            rope(&mut q[t * q_dim..(t + 1) * q_dim], pos + t, hd, rope_table);
            rope(&mut k[t * kv_dim..(t + 1) * kv_dim], pos + t, hd, rope_table);
        }
        cache.k[l].extend_from_slice(&k);
        cache.v[l].extend_from_slice(&v);
        attention(
            &mut att,
            &q,
            &cache.k[l],
            &cache.v[l],
            pos,
            cfg.n_heads,
            cfg.n_kv_heads,
            hd,
        );
        matmul(&mut xb, &att, &layer.wo, bo.as_deref(), q_dim);
        adapt(Field::Wo, &mut xb, &att);
        add(&mut x, &xb);

        // Feed-forward block: x += W_down · (silu(W_gate·norm(x)) * W_up·norm(x)), or an MoE
        // block: x += Σ over the row's top-k experts of weight · expert(norm(x)) (moe.rs)
        rmsnorm(&mut xb, &x, &layer.ffn_norm.f32s(), cfg.norm_eps);
        match (&layer.moe, &cfg.moe, &layer.mlp) {
            (Some(m), Some(mc), shared) => {
                let xn = xb.clone();
                let r = moe::block(mc, m, shared.as_ref(), &xn, &mut xb);
                if let Some(routes) = routes.as_deref_mut() {
                    routes.push((l, r));
                }
            }
            (_, _, Some(mlp)) => {
                matmul(&mut hb, &xb, &mlp.gate, None, dim);
                matmul(&mut hb2, &xb, &mlp.up, None, dim);
                adapt(Field::WGate, &mut hb, &xb);
                adapt(Field::WUp, &mut hb2, &xb);
                swiglu(&mut hb, &hb2);
                matmul(&mut xb, &hb, &mlp.down, None, hidden);
                adapt(Field::WDown, &mut xb, &hb);
            }
            _ => unreachable!("a layer is dense or MoE"),
        }
        add(&mut x, &xb);
    }
    cache.len += t_n;

    // Final norm and LM head, for the rows asked for.
    let rows = &x[(t_n - want.rows(t_n)) * dim..];
    let mut xn = vec![0f32; rows.len()];
    rmsnorm(&mut xn, rows, &w.norm.f32s(), cfg.norm_eps);
    let mut logits = vec![0f32; rows.len() / dim * cfg.vocab_size];
    matmul(&mut logits, &xn, w.lm_head(), None, dim);
    logits
}
