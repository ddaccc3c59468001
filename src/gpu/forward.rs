//! The forward pass on the GPU, recorded once at load for each kind of step: one launcher call
//! per line of `cpu::forward` (src/gpu/launch.rs says what each kernel family binds). A step at
//! run time (gpu/model.rs) then writes the Step buffer and replays one of these lists in one
//! compute pass.
//!
//! Products read x in one of two ways: a GEMV (decode: one row) reads x itself and RMS-normalises
//! it inside when a norm comes first; a GEMM (prefill, batches) reads x from a texture that
//! `to_texture` fills, normalising on the way. `input` hides that difference.

use super::buffers::{Activations, KvBuffers};
use super::kernels::Op;
use super::launch::{AttnBufs, AttnRows, AttnShape, Epilogue, Input, Launch};
use super::lora::{GpuLora, LoraLayer, LoraSite};
use super::params::GpuWeights;
use super::weights::ActTex;
use crate::options::Attention;

/// The kinds of step, each recorded once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StepKind {
    /// One row (a decode step): GEMVs, split-K attention.
    Decode,
    /// Rows of ONE sequence at consecutive positions (a prompt): GEMMs, flash attention.
    Prefill,
    /// Rows of several sequences: GEMMs, split-K attention (each row its own sequence).
    Batch,
}

/// The dispatches of a step of `kind`: embedding and every layer, up to the final residual
/// stream x (the LM head is `record_head`); and the index of each layer's first dispatch (a long
/// step is submitted in pieces cut there). With `lora`, the products its adapters train add
/// their rows' LoRA updates.
#[allow(clippy::too_many_arguments)]
pub fn record(
    l: &Launch,
    w: &GpuWeights,
    a: &Activations,
    kv: &KvBuffers,
    lora: Option<&GpuLora>,
    attention: Attention,
    s: AttnShape,
    kind: StepKind,
) -> anyhow::Result<(Vec<Op>, Vec<usize>)> {
    let gemm = kind != StepKind::Decode;
    let rows = if kind == StepKind::Prefill {
        AttnRows::Prefill
    } else {
        AttnRows::Rows
    };
    let mut r = Rec {
        l,
        gemm,
        eps: l.norm_eps(),
        ops: vec![],
    };
    r.ops.push(l.embed(&w.embed, &a.x)?); // x = embed[tokens]
    let mut layer_starts = vec![];
    for (i, lw) in w.layers.iter().enumerate() {
        layer_starts.push(r.ops.len());
        let (k_cache, v_cache) = (&kv.k[i], &kv.v[i]);
        // Attention block: x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
        // (Qwen3: rope(q_norm(Wq·norm(x))), rope(k_norm(Wk·norm(x))))
        let xb = r.input(&a.x, Some(&lw.attn_norm), &a.xt_dim);
        let d_qkv = r.lora(lora, |s| s.qkv.as_ref(), i, xb)?; // LoRA: delta = B·A·x' first
        let qkv = Epilogue::RopeKv {
            q: &a.q,
            k_cache,
            v_cache,
        }; // k, v straight into the cache
        match &lw.qk_norm {
            // Qwen3: q;k;v rows first, then each head of q and k normalised and rotated
            Some(qk_norm) => {
                let write = Epilogue::Write(&a.qkv);
                r.ops.push(l.matmul_lora(xb, &lw.wqkv, lw.bqkv.as_ref(), write, d_qkv)?);
                r.ops.push(l.qk_norm_rope(&a.qkv, qk_norm, &a.q, k_cache, v_cache));
            }
            None => r.ops.push(l.matmul_lora(xb, &lw.wqkv, lw.bqkv.as_ref(), qkv, d_qkv)?),
        }
        let b = AttnBufs {
            q: &a.q,
            k_cache,
            v_cache,
            tables: &kv.tables,
            out: &a.att,
            scores: &a.scores,
            part: &a.part,
        };
        r.ops.extend(l.attention(attention, rows, s, &b));
        let att = r.input(&a.att, None, &a.xt_q);
        let d_o = r.lora(lora, |s| s.o.as_ref(), i, att)?;
        r.ops
            .push(l.matmul_lora(att, &lw.wo, lw.bo.as_ref(), Epilogue::Add(&a.x), d_o)?);

        // Feed-forward block: x += W_down · (silu(W_gate·norm(x)) * W_up·norm(x)), or an MoE
        // block: x += Σ over the row's top-k experts of weight · expert(norm(x)) (gpu/moe.rs)
        let xb = r.input(&a.x, Some(&lw.ffn_norm), &a.xt_dim);
        if let (Some(m), Some(mc), Some(acts)) = (&lw.moe, &w.moe_config, &a.moe) {
            let norm = (&lw.ffn_norm, r.eps);
            r.ops
                .extend(super::moe::record(l, mc, m, lw.mlp.as_ref(), acts, a, xb, norm)?);
            continue;
        }
        let mlp = lw.mlp.as_ref().expect("a dense layer has its MLP");
        let d_gu = r.lora(lora, |s| s.gate_up.as_ref(), i, xb)?;
        r.ops
            .push(l.matmul_lora(xb, &mlp.gate_up, None, Epilogue::SwiGlu(&a.hb), d_gu)?);
        let hb = r.input(&a.hb, None, &a.xt_hidden);
        let d_down = r.lora(lora, |s| s.down.as_ref(), i, hb)?;
        r.ops
            .push(l.matmul_lora(hb, &mlp.down, None, Epilogue::Add(&a.x), d_down)?);
    }
    Ok((r.ops, layer_starts))
}

/// Final norm and LM head: logits (1, vocab) of the last row (a GEMV of its normalised copy
/// xl), or with `gather` logits (R, vocab) of the R rows of x that `l`'s Step names (a GEMM
/// over the gathered rows: a batch step's last row of each sequence, or a prompt's wanted rows).
pub fn record_head(l: &Launch, w: &GpuWeights, a: &Activations, gather: bool) -> anyhow::Result<Vec<Op>> {
    let eps = l.norm_eps();
    let head = w.lm_head.as_ref().unwrap_or(&w.embed);
    if gather {
        let (copy, xn) = l.to_texture_gather(&a.x, &w.norm, eps, &a.xt_dim);
        Ok(vec![copy, l.matmul(xn, head, None, Epilogue::Write(&a.logits))?])
    } else {
        let xn = Input::Gemv { x: &a.xl, norm: None };
        Ok(vec![
            l.rmsnorm_last(&a.x, &w.norm, &a.xl, w.embed.cols, eps),
            l.matmul(xn, head, None, Epilogue::Write(&a.logits))?,
        ])
    }
}

/// A recording in progress: the ops so far, and whether products are GEMMs.
struct Rec<'l, 'g> {
    l: &'l Launch<'g>,
    gemm: bool,
    eps: f32,
    ops: Vec<Op>,
}

impl Rec<'_, '_> {
    /// The input of a product: x (normalised by `norm` first, if given) as the GEMV reads it, or
    /// copied (and normalised) into the texture `xt` the GEMM reads.
    fn input<'b>(&mut self, x: &'b wgpu::Buffer, norm: Option<&'b wgpu::Buffer>, xt: &'b ActTex) -> Input<'b> {
        if !self.gemm {
            return Input::Gemv { x, norm };
        }
        let (op, input) = self.l.to_texture(x, norm.map(|n| (n, self.eps)), xt);
        self.ops.push(op);
        input
    }

    /// LoRA: when an adapter trains the product that reads `x` (the site `pick` gives in
    /// `layer`), record u = A·x' and delta = B·u (per adapter) with the matrix kernels; the
    /// product then adds delta times each row's factors (`matmul_lora`). Returns the adapters
    /// the product adds (None: no adapter trains it).
    fn lora<'a>(
        &mut self,
        lora: Option<&'a GpuLora>,
        pick: fn(&LoraLayer) -> Option<&LoraSite>,
        layer: usize,
        x: Input,
    ) -> anyhow::Result<Option<&'a GpuLora>> {
        let Some((g, site)) = lora.and_then(|g| pick(&g.layers[layer]).map(|s| (g, s))) else {
            return Ok(None);
        };
        self.ops.push(self.l.matmul(x, &site.a, None, Epilogue::Write(&g.u))?);
        let u = self.input(&g.u, None, &site.ut);
        self.ops
            .push(self.l.matmul(u, &site.b, None, Epilogue::Write(&g.delta))?);
        Ok(Some(g))
    }
}
