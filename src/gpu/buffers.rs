//! Every buffer a step reads or writes, declared once with its shape (llama2.c's `RunState`),
//! allocated at load for the most rows a step carries (MAX_STEP_TOKENS).

use anyhow::Result;

use super::context::Gpu;
use super::kernels::{MAX_PART_ROWS, MAX_STEP_TOKENS, UNIFORM_X_BYTES};
use super::weights::ActTex;
use crate::config::{Config, MoeConfig};
use crate::options::Attention;

type Buf = wgpu::Buffer;

/// Most bytes of the all-rows logits buffer: 170 rows of a 49152-word vocabulary, 55 of a
/// 151936-word one. Scoring a longer text takes more steps; generation needs one row a sequence.
pub const LOGITS_BYTES: u64 = 32 << 20;

/// The activations of one step, a row per token (T ≤ MAX_STEP_TOKENS). Those a GEMV reads hold
/// at least its 64 KiB uniform window.
pub struct Activations {
    pub x: Buf,               // (T, dim) residual stream
    pub xl: Buf,              // (1, dim) the last row, normalised, for the LM head
    pub q: Buf,               // (T, n_heads·hd) queries after RoPE
    pub qkv: Buf,             // (T, q_dim + 2 kv_dim) the QKV product's rows, when q/k are normed (Qwen3); else (4,)
    pub att: Buf,             // (T, n_heads·hd) attention output
    pub hb: Buf,              // (T, hidden) silu(gate) * up
    pub xt_dim: ActTex,       // (T, dim/4 texels) rmsnorm(x), for the GEMMs that read it
    pub xt_q: ActTex,         // (T, q_dim/4 texels) att, for the Wo GEMM
    pub xt_hidden: ActTex,    // (T, hidden/4 texels) hb, for the W_down GEMM
    pub part: Buf,            // (T × n_splits ≤ MAX_PART_ROWS, n_heads, hd + 2) split-K partials: acc, m, l
    pub scores: Buf,          // naive attention: (T, n_heads, seq_len); flash: unused (1,)
    pub logits: Buf,          // (all_rows, vocab)
    pub next_id: Buf,         // (all_rows,) u32 the device's argmax of each logits row
    pub all_rows: usize,      // most rows of logits one step returns (the logits buffer's rows)
    pub moe: Option<MoeActs>, // MoE blocks' scratch (gpu/moe.rs)
}

impl Activations {
    /// Buffers for `cfg`; `max_binding` caps the logits buffer (rows of all-position logits).
    pub fn new(gpu: &Gpu, cfg: &Config, attention: Attention, max_binding: u64) -> Result<Self> {
        // hb holds a dense layer's or a shared expert's hidden rows
        let shared = cfg.moe.as_ref().map_or(0, |m| m.shared_hidden);
        let (dim, q_dim, hidden, vocab) = (cfg.dim, cfg.q_dim(), cfg.hidden_dim.max(shared), cfg.vocab_size);
        let t = MAX_STEP_TOKENS;
        let act = |name: &str, n: usize| gpu.zeros(name, n.max(UNIFORM_X_BYTES as usize / 4));
        let all_rows = ((max_binding.min(LOGITS_BYTES) / (vocab as u64 * 4)) as usize).clamp(1, t);
        Ok(Activations {
            x: act("x", t * dim)?,
            xl: act("xl", dim)?,
            q: gpu.zeros("q", t * q_dim)?,
            qkv: gpu.zeros("qkv", if cfg.qk_norm { t * (q_dim + 2 * cfg.kv_dim()) } else { 4 })?,
            att: act("att", t * q_dim)?,
            hb: act("hb", t * hidden)?,
            xt_dim: ActTex::new(gpu, "xt_dim", dim, t)?,
            xt_q: ActTex::new(gpu, "xt_q", q_dim, t)?,
            xt_hidden: ActTex::new(gpu, "xt_hidden", hidden, t)?,
            part: gpu.zeros("part", MAX_PART_ROWS * cfg.n_heads * (cfg.head_dim + 2))?,
            scores: match attention {
                Attention::Naive => gpu.zeros("scores", t * cfg.n_heads * cfg.seq_len).map_err(|e| {
                    e.context(
                        "naive attention materialises (256 rows × n_heads × context) scores; use --attention flash",
                    )
                })?,
                Attention::Flash => gpu.zeros("scores", 1)?,
            },
            logits: gpu.zeros("logits", all_rows * vocab)?,
            next_id: gpu.zeros("next_id", all_rows)?,
            all_rows,
            moe: cfg.moe.as_ref().map(|m| MoeActs::new(gpu, cfg, m)).transpose()?,
        })
    }
}

/// Bytes of one KV cache row (kv_dim values) of one layer, K or V: f16 values two to a u32 word
/// (lib/kv.wgsl), else f32.
pub fn kv_row_bytes(cfg: &Config, f16: bool) -> usize {
    cfg.kv_dim() * if f16 { 2 } else { 4 }
}

/// The KV cache: per layer a pool of pages, `kv_cache::KvPages` saying which row holds what.
pub struct KvBuffers {
    pub k: Vec<Buf>,     // n_layers × (pool rows, kv_dim) f32, or f16 pairs in u32 words (lib/kv.wgsl)
    pub v: Vec<Buf>,     // n_layers × (pool rows, kv_dim) likewise
    pub tables: Buf,     // (max_seqs, max_blocks) u32 block tables
    pub block_copy: Buf, // (page, kv_dim) staging for copy-on-write of a shared page
}

impl KvBuffers {
    /// Pools of `pool_rows` rows of kv_dim values, f16 (two a word, lib/kv.wgsl) or f32.
    pub fn new(gpu: &Gpu, cfg: &Config, pool_rows: usize, page: usize, tables: usize, f16: bool) -> Result<Self> {
        let words = kv_row_bytes(cfg, f16) / 4; // a row's u32 words
        let per_layer = |name: &str| -> Result<Vec<Buf>> {
            (0..cfg.n_layers)
                .map(|l| gpu.zeros(&format!("{name}.{l}"), pool_rows * words))
                .collect()
        };
        Ok(KvBuffers {
            k: per_layer("k_cache")?,
            v: per_layer("v_cache")?,
            tables: gpu.zeros("tables", tables)?,
            block_copy: gpu.zeros("block_copy", page * words)?,
        })
    }
}

/// The scratch every MoE block shares, a row per (token, slot) assignment.
pub struct MoeActs {
    pub hb: Buf,                   // (T·k, hidden) silu(gate_e x) * up_e x, at least a GEMV's 64 KiB window
    pub xt: ActTex,                // (T·k, hidden/4 texels) hb, for the W_down GEMM
    pub y: Buf,                    // (T·k, dim) the experts' rows
    pub y_shared: Buf,             // (T, dim) the shared expert's rows (or (4,))
    pub xt_shared: Option<ActTex>, // (T, shared_hidden/4 texels) its hb, for its W_down GEMM
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
