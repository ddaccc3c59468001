//! Per-architecture facts, in one table each: checkpoint (HF) and GGUF tensor names for every
//! field of `weights::Weights`, the row order GGUF stores Q/K in, and which matrices the GPU
//! stacks into one product. The Llama family (HF model_type llama, mistral, qwen2, qwen3, smollm;
//! GGUF architectures "llama", "qwen2", "qwen3"); a new architecture is a new `Arch` value.

use crate::config::Config;
use crate::weights::{Layer, Mlp, Moe, Weights};

/// A field of `Weights` / `Layer`, by role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Embed,
    Norm,
    LmHead,
    AttnNorm,
    Wq,
    Wk,
    Wv,
    Wo,
    Bq,
    Bk,
    Bv,
    Bo,
    QNorm,
    KNorm,
    FfnNorm,
    WGate,
    WUp,
    WDown,
    /// MoE block: the router (n_experts, dim)
    Router,
    /// each expert's W_gate, W_up (hidden, dim) and W_down (dim, hidden); stacked (n_experts, ..)
    ExpGate,
    ExpUp,
    ExpDown,
    /// Qwen2-MoE's shared expert: a SwiGLU FFN (shared_hidden) every token runs, scaled by
    /// sigmoid(x · ShGateInp), ShGateInp (1, dim)
    ShGate,
    ShUp,
    ShDown,
    ShGateInp,
}

impl Field {
    pub const GLOBAL: [Field; 3] = [Field::Embed, Field::Norm, Field::LmHead];
    pub const LAYER: [Field; 23] = [
        Field::AttnNorm,
        Field::Wq,
        Field::Wk,
        Field::Wv,
        Field::Wo,
        Field::Bq,
        Field::Bk,
        Field::Bv,
        Field::Bo,
        Field::QNorm,
        Field::KNorm,
        Field::FfnNorm,
        Field::WGate,
        Field::WUp,
        Field::WDown,
        Field::Router,
        Field::ExpGate,
        Field::ExpUp,
        Field::ExpDown,
        Field::ShGate,
        Field::ShUp,
        Field::ShDown,
        Field::ShGateInp,
    ];
    /// The fields with a tensor per expert.
    pub const EXPERTS: [Field; 3] = [Field::ExpGate, Field::ExpUp, Field::ExpDown];

    /// The HF shape `cfg` implies, outermost first (an expert field: one expert's).
    pub fn shape(self, cfg: &Config) -> Vec<usize> {
        let (d, q, kv, h, v) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.hidden_dim, cfg.vocab_size);
        let (n_exp, eh, sh) = cfg
            .moe
            .as_ref()
            .map_or((0, 0, 0), |m| (m.n_experts, m.hidden, m.shared_hidden));
        match self {
            Field::Embed | Field::LmHead => vec![v, d],
            Field::Norm | Field::AttnNorm | Field::FfnNorm | Field::Bo => vec![d],
            Field::Wq => vec![q, d],
            Field::Wk | Field::Wv => vec![kv, d],
            Field::Wo => vec![d, q],
            Field::Bq => vec![q],
            Field::Bk | Field::Bv => vec![kv],
            Field::QNorm | Field::KNorm => vec![cfg.head_dim],
            Field::WGate | Field::WUp => vec![h, d],
            Field::WDown => vec![d, h],
            Field::Router => vec![n_exp, d],
            Field::ExpGate | Field::ExpUp => vec![eh, d],
            Field::ExpDown => vec![d, eh],
            Field::ShGate | Field::ShUp => vec![sh, d],
            Field::ShDown => vec![d, sh],
            Field::ShGateInp => vec![1, d],
        }
    }

    /// Whether layer `l` of a model with `cfg` has this tensor (it must then be present;
    /// otherwise absent).
    pub fn present(self, cfg: &Config, l: usize) -> bool {
        let shared = cfg.moe.as_ref().is_some_and(|m| m.shared_hidden > 0);
        match self {
            Field::LmHead => !cfg.tied_embeddings,
            Field::Bq | Field::Bk | Field::Bv => cfg.qkv_bias,
            Field::Bo => cfg.o_bias,
            Field::QNorm | Field::KNorm => cfg.qk_norm,
            Field::WGate | Field::WUp | Field::WDown => !cfg.is_moe(l),
            Field::Router | Field::ExpGate | Field::ExpUp | Field::ExpDown => cfg.is_moe(l),
            Field::ShGate | Field::ShUp | Field::ShDown | Field::ShGateInp => cfg.is_moe(l) && shared,
            _ => true,
        }
    }

    /// Whether this is a per-layer field.
    pub fn per_layer(self) -> bool {
        !Self::GLOBAL.contains(&self)
    }
}

/// How many heads a tensor's rows split into, for GGUF's Q/K row permutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heads {
    Query,
    KeyValue,
}

/// One architecture's names and layout facts.
pub struct Arch {
    /// GGUF `general.architecture`.
    pub gguf_arch: &'static str,
    /// HF `model_type` values it covers.
    pub hf_model_types: &'static [&'static str],
    /// (field, HF name, GGUF name); per-layer names are suffixes after `model.layers.{l}.` and
    /// `blk.{l}.`.
    pub names: &'static [(Field, &'static str, &'static str)],
    /// The same for the MoE fields. An expert field's HF name has `{e}` for the expert (HF files
    /// hold a tensor per expert); without `.{e}` it names the stacked (n_experts, ..) tensor that
    /// GGUF's `*_exps` hold.
    pub moe_names: &'static [(Field, &'static str, &'static str)],
    /// Fields whose rows GGUF stores permuted per head (llama.cpp's convert_hf_to_gguf.py
    /// `LlamaModel.permute` on q_proj / k_proj), to be put back in HF order at load.
    pub gguf_permuted: &'static [(Field, Heads)],
    /// The GPU's stacked products: rows of these matrices one after another (Wq; Wk; Wv).
    pub stack_qkv: [Field; 3],
    /// W_gate; W_up.
    pub stack_gate_up: [Field; 2],
    /// HF tensors that may be present and are ignored (rotary inv_freq buffers).
    pub hf_ignored_suffixes: &'static [&'static str],
}

pub const LLAMA: Arch = Arch {
    gguf_arch: "llama",
    hf_model_types: &["llama", "mistral", "qwen2", "smollm", "smollm2"],
    names: &[
        (Field::Embed, "model.embed_tokens.weight", "token_embd.weight"),
        (Field::Norm, "model.norm.weight", "output_norm.weight"),
        (Field::LmHead, "lm_head.weight", "output.weight"),
        (Field::AttnNorm, "input_layernorm.weight", "attn_norm.weight"),
        (Field::Wq, "self_attn.q_proj.weight", "attn_q.weight"),
        (Field::Wk, "self_attn.k_proj.weight", "attn_k.weight"),
        (Field::Wv, "self_attn.v_proj.weight", "attn_v.weight"),
        (Field::Wo, "self_attn.o_proj.weight", "attn_output.weight"),
        (Field::Bq, "self_attn.q_proj.bias", "attn_q.bias"),
        (Field::Bk, "self_attn.k_proj.bias", "attn_k.bias"),
        (Field::Bv, "self_attn.v_proj.bias", "attn_v.bias"),
        (Field::Bo, "self_attn.o_proj.bias", "attn_output.bias"),
        (Field::QNorm, "self_attn.q_norm.weight", "attn_q_norm.weight"),
        (Field::KNorm, "self_attn.k_norm.weight", "attn_k_norm.weight"),
        (Field::FfnNorm, "post_attention_layernorm.weight", "ffn_norm.weight"),
        (Field::WGate, "mlp.gate_proj.weight", "ffn_gate.weight"),
        (Field::WUp, "mlp.up_proj.weight", "ffn_up.weight"),
        (Field::WDown, "mlp.down_proj.weight", "ffn_down.weight"),
    ],
    gguf_permuted: &[
        (Field::Wq, Heads::Query),
        (Field::Bq, Heads::Query),
        (Field::Wk, Heads::KeyValue),
        (Field::Bk, Heads::KeyValue),
    ],
    moe_names: &[
        (Field::Router, "mlp.gate.weight", "ffn_gate_inp.weight"),
        (
            Field::ExpGate,
            "mlp.experts.{e}.gate_proj.weight",
            "ffn_gate_exps.weight",
        ),
        (Field::ExpUp, "mlp.experts.{e}.up_proj.weight", "ffn_up_exps.weight"),
        (
            Field::ExpDown,
            "mlp.experts.{e}.down_proj.weight",
            "ffn_down_exps.weight",
        ),
        (
            Field::ShGate,
            "mlp.shared_expert.gate_proj.weight",
            "ffn_gate_shexp.weight",
        ),
        (Field::ShUp, "mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"),
        (
            Field::ShDown,
            "mlp.shared_expert.down_proj.weight",
            "ffn_down_shexp.weight",
        ),
        (
            Field::ShGateInp,
            "mlp.shared_expert_gate.weight",
            "ffn_gate_inp_shexp.weight",
        ),
    ],
    stack_qkv: [Field::Wq, Field::Wk, Field::Wv],
    stack_gate_up: [Field::WGate, Field::WUp],
    hf_ignored_suffixes: &["rotary_emb.inv_freq"],
};

/// Mixtral: Llama with `block_sparse_moe` blocks (HF `experts.E.w1` = gate, `w3` = up, `w2` =
/// down); in GGUF architecture "llama" with `llama.expert_count` (`Gguf::arch`).
pub const MIXTRAL: Arch = Arch {
    hf_model_types: &["mixtral"],
    moe_names: &[
        (Field::Router, "block_sparse_moe.gate.weight", "ffn_gate_inp.weight"),
        (
            Field::ExpGate,
            "block_sparse_moe.experts.{e}.w1.weight",
            "ffn_gate_exps.weight",
        ),
        (
            Field::ExpUp,
            "block_sparse_moe.experts.{e}.w3.weight",
            "ffn_up_exps.weight",
        ),
        (
            Field::ExpDown,
            "block_sparse_moe.experts.{e}.w2.weight",
            "ffn_down_exps.weight",
        ),
    ],
    ..LLAMA
};

/// Qwen2-MoE (q/k/v biases, a shared expert) and Qwen3-MoE (q/k norm): Qwen's names, GGUF rows
/// in HF order.
pub const QWEN2_MOE: Arch = Arch {
    gguf_arch: "qwen2moe",
    hf_model_types: &["qwen2_moe"],
    gguf_permuted: &[],
    ..LLAMA
};
pub const QWEN3_MOE: Arch = Arch {
    gguf_arch: "qwen3moe",
    hf_model_types: &["qwen3_moe"],
    gguf_permuted: &[],
    ..LLAMA
};

/// Qwen2 in GGUF: the Llama names (with q/k/v biases), but llama.cpp's converter leaves Q/K rows
/// in HF order (it runs Qwen2 with NEOX-style RoPE, HF's rotate-half pairing). HF checkpoints
/// of model_type qwen2 load through `LLAMA`.
pub const QWEN2: Arch = Arch {
    gguf_arch: "qwen2",
    hf_model_types: &[],
    gguf_permuted: &[],
    ..LLAMA
};

/// Qwen3: Llama's names plus q_norm / k_norm (RMSNorm over each head of q and k, before RoPE),
/// no biases; GGUF rows in HF order as for Qwen2 (llama.cpp runs it with NEOX RoPE).
pub const QWEN3: Arch = Arch {
    gguf_arch: "qwen3",
    hf_model_types: &["qwen3"],
    gguf_permuted: &[],
    ..LLAMA
};

const ARCHS: [&Arch; 6] = [&LLAMA, &QWEN2, &QWEN3, &MIXTRAL, &QWEN2_MOE, &QWEN3_MOE];

impl Arch {
    /// The architecture of an HF `model_type`.
    pub fn for_hf(model_type: &str) -> Option<&'static Arch> {
        ARCHS.into_iter().find(|a| a.hf_model_types.contains(&model_type))
    }

    /// The architecture of a GGUF `general.architecture`.
    pub fn for_gguf(arch: &str) -> Option<&'static Arch> {
        ARCHS.into_iter().find(|a| a.gguf_arch == arch)
    }

    fn all_names(&self) -> impl Iterator<Item = &(Field, &'static str, &'static str)> {
        self.names.iter().chain(self.moe_names)
    }

    fn entry(&self, f: Field) -> (&'static str, &'static str) {
        let &(_, hf, gguf) = self.all_names().find(|e| e.0 == f).expect("every field is named");
        (hf, gguf)
    }

    /// The HF checkpoint name of field `f` (of layer `layer` for per-layer fields; of an expert
    /// field the stacked tensor).
    pub fn hf_name(&self, f: Field, layer: usize) -> String {
        let hf = self.entry(f).0.replace(".{e}", "");
        if f.per_layer() {
            format!("model.layers.{layer}.{hf}")
        } else {
            hf
        }
    }

    /// The HF name of expert `e`'s tensor of expert field `f` in layer `layer`.
    pub fn hf_expert_name(&self, f: Field, layer: usize, e: usize) -> String {
        format!(
            "model.layers.{layer}.{}",
            self.entry(f).0.replace("{e}", &e.to_string())
        )
    }

    /// A GGUF tensor name -> (field, layer).
    pub fn parse_gguf(&self, name: &str) -> Option<(Field, usize)> {
        if let Some(&(f, _, _)) = self.all_names().find(|e| !e.0.per_layer() && e.2 == name) {
            return Some((f, 0));
        }
        let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        let &(f, _, _) = self.all_names().find(|e| e.0.per_layer() && e.2 == rest)?;
        Some((f, layer))
    }

    /// GGUF tensor name -> HF tensor name.
    pub fn gguf_to_hf(&self, name: &str) -> Option<String> {
        self.parse_gguf(name).map(|(f, l)| self.hf_name(f, l))
    }

    /// Whether GGUF stores `f`'s rows permuted, and over which heads.
    pub fn gguf_heads(&self, f: Field) -> Option<Heads> {
        self.gguf_permuted.iter().find(|e| e.0 == f).map(|e| e.1)
    }

    /// Whether an HF tensor name is harmless to ignore.
    pub fn hf_ignored(&self, name: &str) -> bool {
        self.hf_ignored_suffixes.iter().any(|s| name.ends_with(s))
    }
}

impl<T> Layer<T> {
    /// The layer's tensor for a per-layer field (None for an absent bias).
    pub fn field(&self, f: Field) -> Option<&T> {
        match f {
            Field::AttnNorm => Some(&self.attn_norm),
            Field::Wq => Some(&self.wq),
            Field::Wk => Some(&self.wk),
            Field::Wv => Some(&self.wv),
            Field::Wo => Some(&self.wo),
            Field::Bq => self.bq.as_ref(),
            Field::Bk => self.bk.as_ref(),
            Field::Bv => self.bv.as_ref(),
            Field::Bo => self.bo.as_ref(),
            Field::QNorm => self.q_norm.as_ref(),
            Field::KNorm => self.k_norm.as_ref(),
            Field::FfnNorm => Some(&self.ffn_norm),
            Field::WGate | Field::ShGate => self.mlp.as_ref().map(|m| &m.gate),
            Field::WUp | Field::ShUp => self.mlp.as_ref().map(|m| &m.up),
            Field::WDown | Field::ShDown => self.mlp.as_ref().map(|m| &m.down),
            Field::Router => self.moe.as_ref().map(|m| &m.router),
            Field::ShGateInp => self.moe.as_ref().and_then(|m| m.shared_gate.as_ref()),
            Field::Embed | Field::Norm | Field::LmHead | Field::ExpGate | Field::ExpUp | Field::ExpDown => None,
        }
    }

    /// An expert field's tensors, one per expert (None for other fields and dense layers).
    pub fn experts(&self, f: Field) -> Option<&[T]> {
        let m = self.moe.as_ref()?;
        match f {
            Field::ExpGate => Some(&m.gate),
            Field::ExpUp => Some(&m.up),
            Field::ExpDown => Some(&m.down),
            _ => None,
        }
    }

    /// The matrix of projection `f` (Wq, Wk, Wv, Wo, WGate, WUp, WDown) to change (a LoRA merge);
    /// None for other fields.
    pub fn projection_mut(&mut self, f: Field) -> Option<&mut T> {
        match f {
            Field::Wq => Some(&mut self.wq),
            Field::Wk => Some(&mut self.wk),
            Field::Wv => Some(&mut self.wv),
            Field::Wo => Some(&mut self.wo),
            Field::WGate => self.mlp.as_mut().map(|m| &mut m.gate),
            Field::WUp => self.mlp.as_mut().map(|m| &mut m.up),
            Field::WDown => self.mlp.as_mut().map(|m| &mut m.down),
            _ => None,
        }
    }

    /// Build a layer from functions giving each field's tensor (None for absent ones) and each
    /// expert field's tensors; `moe`: whether it is an MoE block.
    pub fn from_fn(
        moe: bool,
        mut get: impl FnMut(Field) -> Option<T>,
        mut experts: impl FnMut(Field) -> Option<Vec<T>>,
    ) -> Option<Self> {
        let mlp = |get: &mut dyn FnMut(Field) -> Option<T>, f: [Field; 3]| {
            Some(Mlp {
                gate: get(f[0])?,
                up: get(f[1])?,
                down: get(f[2])?,
            })
        };
        let (mlp, moe) = if moe {
            let moe = Moe {
                router: get(Field::Router)?,
                shared_gate: get(Field::ShGateInp),
                gate: experts(Field::ExpGate)?,
                up: experts(Field::ExpUp)?,
                down: experts(Field::ExpDown)?,
            };
            (mlp(&mut get, [Field::ShGate, Field::ShUp, Field::ShDown]), Some(moe))
        } else {
            (Some(mlp(&mut get, [Field::WGate, Field::WUp, Field::WDown])?), None)
        };
        Some(Layer {
            attn_norm: get(Field::AttnNorm)?,
            wq: get(Field::Wq)?,
            wk: get(Field::Wk)?,
            wv: get(Field::Wv)?,
            wo: get(Field::Wo)?,
            bq: get(Field::Bq),
            bk: get(Field::Bk),
            bv: get(Field::Bv),
            bo: get(Field::Bo),
            q_norm: get(Field::QNorm),
            k_norm: get(Field::KNorm),
            ffn_norm: get(Field::FfnNorm)?,
            mlp,
            moe,
        })
    }
}

impl<T> Weights<T> {
    /// Build weights for `cfg` from functions giving each (field, layer)'s tensor and each
    /// (expert field, layer)'s tensors.
    pub fn from_fn(
        cfg: &Config,
        mut get: impl FnMut(Field, usize) -> Option<T>,
        mut experts: impl FnMut(Field, usize) -> Option<Vec<T>>,
    ) -> Option<Self> {
        let layers = (0..cfg.n_layers)
            .map(|l| Layer::from_fn(cfg.is_moe(l), |f| get(f, l), |f| experts(f, l)))
            .collect::<Option<Vec<_>>>()?;
        Some(Weights {
            embed: get(Field::Embed, 0)?,
            layers,
            norm: get(Field::Norm, 0)?,
            lm_head: get(Field::LmHead, 0),
        })
    }
}

/// Undo llama.cpp's Q/K row permutation on `rows` rows of `row_len` items (f32 values, or the
/// bytes of a row of blocks: whole rows move, so any storage format works). Its converter
/// reorders each head's rows so that interleaved RoPE (pairs 2i, 2i+1) computes what HF's
/// rotate-half RoPE (pairs i, i + d/2) computes on the original rows: GGUF row `h*d + 2i + j`
/// holds HF row `h*d + j*d/2 + i`.
pub fn unpermute_rows<T: Copy>(data: &mut [T], rows: usize, row_len: usize, n_head: usize) {
    assert_eq!(data.len(), rows * row_len);
    let d = rows / n_head;
    let src = data.to_vec();
    for h in 0..n_head {
        for i in 0..d / 2 {
            for j in 0..2 {
                let gguf_row = h * d + 2 * i + j;
                let hf_row = h * d + j * d / 2 + i;
                data[hf_row * row_len..(hf_row + 1) * row_len]
                    .copy_from_slice(&src[gguf_row * row_len..(gguf_row + 1) * row_len]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_names_round_trip() {
        let a = Arch::for_gguf("llama").unwrap();
        assert!(std::ptr::eq(a, Arch::for_hf("qwen2").unwrap()));
        assert_eq!(a.gguf_to_hf("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert_eq!(
            a.gguf_to_hf("blk.12.attn_k.bias").unwrap(),
            "model.layers.12.self_attn.k_proj.bias"
        );
        assert_eq!(a.parse_gguf("blk.3.ffn_up.weight"), Some((Field::WUp, 3)));
        for bad in [
            "blk.x.attn_q.weight",
            "blk.0.attn_qkv.weight",
            "output.bias",
            "blk.0.token_embd.weight",
        ] {
            assert_eq!(a.parse_gguf(bad), None, "{bad}");
        }
        assert_eq!(a.gguf_heads(Field::Wk), Some(Heads::KeyValue));
        assert_eq!(a.gguf_heads(Field::Wv), None);
        // every field has exactly one name
        for f in Field::GLOBAL.iter().chain(&Field::LAYER) {
            assert_eq!(a.all_names().filter(|e| e.0 == *f).count(), 1, "{f:?}");
        }
        let m = Arch::for_hf("mixtral").unwrap();
        assert_eq!(m.parse_gguf("blk.1.ffn_up_exps.weight"), Some((Field::ExpUp, 1)));
        assert_eq!(
            m.hf_name(Field::ExpUp, 1),
            "model.layers.1.block_sparse_moe.experts.w3.weight"
        );
        assert_eq!(
            m.hf_expert_name(Field::ExpDown, 0, 3),
            "model.layers.0.block_sparse_moe.experts.3.w2.weight"
        );
    }
}
