//! The CPU reference forward pass, shaped like llama2.c's `forward`: read it top to bottom.
//! It runs T tokens at positions pos..pos+T (prefill when T > 1, one decode step when T = 1),
//! appends their keys and values to the cache, and returns the logits asked for. Several
//! sequences run as one batch of rows (`forward_batch`): every product reads its weights once
//! for all rows (each row's result is the same dot, bit for bit, as alone); attention, RoPE
//! and LoRA go by each sequence's own rows.

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

/// One sequence's part of a batch: its cache, the tokens to run at its next positions, the
/// rows whose logits it wants, and its LoRA adapters with their factors (empty: the base model).
pub struct Item<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    pub want: Want,
    pub lora: Vec<(&'a Lora, f32)>,
}

/// One sequence's forward (see `forward_batch`); `routes`: MoE layers' routing of its T rows.
#[allow(clippy::too_many_arguments)] // the state of the step, plus a sequence's adapters and a routing record
pub fn forward(
    cfg: &Config,
    w: &Weights<Tensor>,
    rope_table: &RopeTable,
    cache: &mut KvCache,
    tokens: &[u32],
    want: Want,
    lora: &[(&Lora, f32)],
    routes: Option<&mut Vec<(usize, Vec<Route>)>>,
) -> Vec<f32> {
    let item = Item {
        cache,
        tokens,
        want,
        lora: lora.to_vec(),
    };
    forward_batch(cfg, w, rope_table, &mut [item], routes).remove(0)
}

/// Run each item's tokens at its sequence's next positions, all rows in one pass; per item,
/// the logits of the rows it wants, (rows, vocab) row-major. `routes`: each MoE layer's
/// routing of the batch's rows, in batch order.
pub fn forward_batch(
    cfg: &Config,
    w: &Weights<Tensor>,
    rope_table: &RopeTable,
    items: &mut [Item],
    mut routes: Option<&mut Vec<(usize, Vec<Route>)>>,
) -> Vec<Vec<f32>> {
    let (dim, hd, q_dim, kv_dim, hidden) = (cfg.dim, cfg.head_dim, cfg.q_dim(), cfg.kv_dim(), cfg.hidden_dim);
    // each item's rows: [start, start + T) of the batch's, at positions pos..pos + T
    let mut start = vec![0usize];
    for it in items.iter() {
        let (t, pos) = (it.tokens.len(), it.cache.len);
        assert!(
            t > 0 && pos + t <= cfg.seq_len,
            "forward: {t} tokens at {pos} exceed the context {}",
            cfg.seq_len
        );
        start.push(start.last().unwrap() + t);
    }
    let t_n = *start.last().unwrap();
    let rows = |i: usize| start[i]..start[i + 1];

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
    for (t, &tok) in items.iter().flat_map(|it| it.tokens).enumerate() {
        let tok = tok as usize;
        assert!(tok < cfg.vocab_size, "token id {tok} >= vocab {}", cfg.vocab_size);
        w.embed.row_f32(tok, &mut x[t * dim..(t + 1) * dim]);
    }

    let loras: Vec<Vec<(&Lora, f32)>> = items.iter().map(|it| it.lora.clone()).collect();
    for (l, layer) in w.layers.iter().enumerate() {
        // y += factor · s · (x Aᵀ) Bᵀ of each adapter that trains `f`, over each item's rows
        // (LoRA, unmerged; d_in / d_out: values per row of x / y)
        let adapt = |f: Field, y: &mut [f32], d_out: usize, x: &[f32], d_in: usize| {
            for (i, lora) in loras.iter().enumerate() {
                for (a, factor) in lora {
                    if let Some(p) = a.pair(l, f) {
                        let r = rows(i);
                        p.apply(
                            &x[r.start * d_in..r.end * d_in],
                            &mut y[r.start * d_out..r.end * d_out],
                            *factor,
                        );
                    }
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
        adapt(Field::Wq, &mut q, q_dim, &xb, dim);
        adapt(Field::Wk, &mut k, kv_dim, &xb, dim);
        adapt(Field::Wv, &mut v, kv_dim, &xb, dim);
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            // Qwen3: RMSNorm over each head of q and of k (weights of head_dim), before RoPE
            let (q_in, k_in) = (q.clone(), k.clone());
            rmsnorm(&mut q, &q_in, &qn.f32s(), cfg.norm_eps);
            rmsnorm(&mut k, &k_in, &kn.f32s(), cfg.norm_eps);
        }
        for (i, it) in items.iter_mut().enumerate() {
            let (r, pos) = (rows(i), it.cache.len);
            for (j, t) in r.clone().enumerate() {
                rope(&mut q[t * q_dim..(t + 1) * q_dim], pos + j, hd, rope_table);
                rope(&mut k[t * kv_dim..(t + 1) * kv_dim], pos + j, hd, rope_table);
            }
            let c = &mut *it.cache;
            c.k[l].extend_from_slice(&k[r.start * kv_dim..r.end * kv_dim]);
            c.v[l].extend_from_slice(&v[r.start * kv_dim..r.end * kv_dim]);
            attention(
                &mut att[r.start * q_dim..r.end * q_dim],
                &q[r.start * q_dim..r.end * q_dim],
                &c.k[l],
                &c.v[l],
                pos,
                cfg.n_heads,
                cfg.n_kv_heads,
                hd,
            );
        }
        matmul(&mut xb, &att, &layer.wo, bo.as_deref(), q_dim);
        adapt(Field::Wo, &mut xb, dim, &att, q_dim);
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
                adapt(Field::WGate, &mut hb, hidden, &xb, dim);
                adapt(Field::WUp, &mut hb2, hidden, &xb, dim);
                swiglu(&mut hb, &hb2);
                matmul(&mut xb, &hb, &mlp.down, None, hidden);
                adapt(Field::WDown, &mut xb, dim, &hb, hidden);
            }
            _ => unreachable!("a layer is dense or MoE"),
        }
        add(&mut x, &xb);
    }

    // Final norm and LM head, for the rows each item asks for.
    let mut wanted = vec![];
    for (i, it) in items.iter_mut().enumerate() {
        let t = it.tokens.len();
        it.cache.len += t;
        wanted.extend_from_slice(&x[(start[i + 1] - it.want.rows(t)) * dim..start[i + 1] * dim]);
    }
    let mut xn = vec![0f32; wanted.len()];
    rmsnorm(&mut xn, &wanted, &w.norm.f32s(), cfg.norm_eps);
    let mut logits = vec![0f32; wanted.len() / dim * cfg.vocab_size];
    matmul(&mut logits, &xn, w.lm_head(), None, dim);
    let mut out = vec![];
    let mut rest = &logits[..];
    for it in items.iter() {
        let (mine, more) = rest.split_at(it.want.rows(it.tokens.len()) * cfg.vocab_size);
        out.push(mine.to_vec());
        rest = more;
    }
    out
}
