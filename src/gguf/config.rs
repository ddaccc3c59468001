//! A GGUF file's metadata as an HF config.json (`Gguf::hf_config`): llama.cpp's `{arch}.*`
//! keys mapped to transformers' names, MoE keys included.

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value as Json};

use super::{Gguf, Value};
use crate::arch::Arch;

impl Gguf {
    /// The HF config.json this file's metadata amounts to (what `HfConfig::resolve` reads).
    pub fn hf_config(&self) -> Result<Json> {
        let arch = self.architecture()?;
        if Arch::for_gguf(arch).is_none() {
            bail!(
                "architecture {arch:?} is not supported (tinfer runs \"llama\", which covers Llama, SmolLM, Mistral and \
                 Mixtral, \"qwen2\", \"qwen3\", \"qwen2moe\" and \"qwen3moe\"); `tinfer tokenize` and `tinfer info` still \
                 read the file's tokenizer"
            );
        }
        let k = |s: &str| format!("{arch}.{s}");
        let experts = self.get(&k("expert_count")).and_then(Value::as_u64).unwrap_or(0);
        let (architecture, model_type) = match arch {
            "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
            "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
            "qwen2moe" => ("Qwen2MoeForCausalLM", "qwen2_moe"),
            "qwen3moe" => ("Qwen3MoeForCausalLM", "qwen3_moe"),
            _ if experts > 0 => ("MixtralForCausalLM", "mixtral"),
            _ => ("LlamaForCausalLM", "llama"),
        };
        let dim = self.req_u64(&k("embedding_length"))?;
        let n_heads = self.req_u64(&k("attention.head_count"))?;
        let n_kv_heads = match self.get(&k("attention.head_count_kv")) {
            Some(v) => v
                .as_u64()
                .with_context(|| format!("{} = {v} is not an integer", k("attention.head_count_kv")))?,
            None => n_heads,
        };
        ensure!(n_heads > 0, "{} is 0", k("attention.head_count"));
        let head_dim = match self.get(&k("attention.key_length")) {
            Some(v) => v.as_u64().context("attention.key_length is not an integer")?,
            None => dim / n_heads,
        };
        if let Some(rd) = self.get(&k("rope.dimension_count")).and_then(Value::as_u64) {
            ensure!(
                rd == head_dim,
                "partial RoPE (rope.dimension_count {rd} != head_dim {head_dim}) is not supported"
            );
        }
        let rope_scaling = self.rope_scaling(arch)?;
        let n_vocab = match self.get(&k("vocab_size")).and_then(Value::as_u64) {
            Some(v) => v,
            None => self
                .get("tokenizer.ggml.tokens")
                .and_then(Value::as_array)
                .map(|a| a.len() as u64)
                .context("neither llama.vocab_size nor tokenizer.ggml.tokens is present")?,
        };
        let eps = self
            .require(&k("attention.layer_norm_rms_epsilon"))?
            .as_f64()
            .context("bad rms epsilon")?;
        let theta = self
            .get(&k("rope.freq_base"))
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        let tok_id = |key: &str| self.get(key).and_then(Value::as_u64);
        let mut cfg = json!({
            "architectures": [architecture],
            "model_type": model_type,
            "hidden_size": dim,
            // an all-MoE qwen2moe / qwen3moe file may leave the dense width out
            "intermediate_size": match self.get(&k("feed_forward_length")) {
                Some(v) => v.as_u64().context("feed_forward_length is not an integer")?,
                None if experts > 0 => self.req_u64(&k("expert_feed_forward_length"))?,
                None => self.req_u64(&k("feed_forward_length"))?,
            },
            "num_hidden_layers": self.req_u64(&k("block_count"))?,
            "num_attention_heads": n_heads,
            "num_key_value_heads": n_kv_heads,
            "head_dim": head_dim,
            "vocab_size": n_vocab,
            "max_position_embeddings": self.req_u64(&k("context_length"))?,
            "rms_norm_eps": eps,
            "rope_theta": theta,
            "hidden_act": "silu",
            // qwen2's q/k/v biases come with its model_type; attention_bias is llama's (o too)
            "attention_bias": !model_type.starts_with("qwen2") && self.tensor("blk.0.attn_q.bias").is_some(),
            "qkv_bias": self.tensor("blk.0.attn_q.bias").is_some(),
            "rope_scaling": rope_scaling,
            "rope_freq_factors": self.rope_freq_factors()?,
            "mlp_bias": false,
            "tie_word_embeddings": self.tensor("output.weight").is_none(),
            "bos_token_id": tok_id("tokenizer.ggml.bos_token_id"),
            "eos_token_id": tok_id("tokenizer.ggml.eos_token_id"),
            "torch_dtype": "float32",
        });
        if experts > 0 {
            self.moe_config(arch, &mut cfg)?;
        } else if self.tensor("blk.0.ffn_gate_exps.weight").is_some() || arch.ends_with("moe") {
            bail!(
                "{} is missing or 0, but this is a Mixture-of-Experts file",
                k("expert_count")
            );
        }
        Ok(cfg)
    }

    /// The MoE keys of an HF config from `{arch}.expert_*` (llama.cpp's names): the experts, the
    /// experts a token uses, their width (`expert_feed_forward_length`; Mixtral's is
    /// `feed_forward_length`), the shared expert's (qwen2moe), whether the chosen weights are
    /// renormalised (`expert_weights_norm`, else llama.cpp's choice per architecture: Mixtral
    /// and qwen3moe yes, qwen2moe no), and the dense layers: those without `ffn_gate_inp`.
    fn moe_config(&self, arch: &str, cfg: &mut Json) -> Result<()> {
        let k = |s: &str| format!("{arch}.{s}");
        let n = |s: &str| self.get(&k(s)).and_then(Value::as_u64);
        let layers = cfg["num_hidden_layers"].as_u64().unwrap_or(0);
        let dense: Vec<u64> = (0..layers)
            .filter(|l| self.tensor(&format!("blk.{l}.ffn_gate_inp.weight")).is_none())
            .collect();
        let norm = match self.get(&k("expert_weights_norm")) {
            Some(Value::Bool(b)) => *b,
            _ => arch != "qwen2moe",
        };
        let hidden = match arch {
            "llama" => cfg["intermediate_size"].as_u64(),
            _ => n("expert_feed_forward_length"),
        };
        let n_exp = n("expert_count").unwrap_or(0);
        let used = n("expert_used_count").with_context(|| format!("{} is missing", k("expert_used_count")))?;
        ensure!(
            (1..=n_exp).contains(&used),
            "{} = {used} is outside 1..={n_exp} (its {})",
            k("expert_used_count"),
            k("expert_count")
        );
        let hidden = hidden.with_context(|| format!("{} is missing", k("expert_feed_forward_length")))?;
        // the shared expert's width: its key, else its tensor's, else none
        let shexp = self
            .tensor("blk.0.ffn_gate_shexp.weight")
            .and_then(|t| t.ne.get(1).copied());
        let shared = n("expert_shared_feed_forward_length").or(shexp).unwrap_or(0);
        let o = cfg.as_object_mut().expect("an object");
        // HF's key per model type (MixtralConfig: num_local_experts)
        let count = if arch == "llama" {
            "num_local_experts"
        } else {
            "num_experts"
        };
        o.insert(count.into(), json!(n_exp));
        o.insert("num_experts_per_tok".into(), json!(used));
        o.insert("moe_intermediate_size".into(), json!(hidden));
        o.insert("shared_expert_intermediate_size".into(), json!(shared));
        o.insert("norm_topk_prob".into(), json!(norm));
        o.insert("mlp_only_layers".into(), json!(dense));
        Ok(())
    }

    /// This file's architecture (names and layout facts).
    pub fn arch(&self) -> Result<&'static Arch> {
        let name = self.architecture()?;
        if name == "llama" && self.get("llama.expert_count").and_then(Value::as_u64).unwrap_or(0) > 0 {
            return Ok(&crate::arch::MIXTRAL);
        }
        Arch::for_gguf(name).with_context(|| format!("architecture {name:?} is not supported from GGUF"))
    }
}
