//! Synthetic models for benchmarks: the configs of known sizes and random weights of any shape.

use crate::sampler::Rng;
use crate::weights::{Mlp, Moe, Tensor};

/// config.json of known model sizes, for `--synthetic NAME` (shapes only; weights are random).
pub fn synthetic_config(name: &str) -> Option<&'static str> {
    Some(match name {
        "smollm2-135m" => {
            r#"{"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
            "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true}"#
        }
        "smollm2-360m" => {
            r#"{"model_type": "llama", "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
            "num_attention_heads": 15, "num_key_value_heads": 5, "vocab_size": 49152, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true}"#
        }
        "smollm2-1.7b" => {
            r#"{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49152, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 130000.0, "tie_word_embeddings": true}"#
        }
        // Shapes of real checkpoints users run (config.json values from their model cards), for
        // loading and memory checks at real sizes (random weights).
        "qwen2.5-0.5b" => {
            r#"{"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true}"#
        }
        "qwen2.5-1.5b" => {
            r#"{"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
            "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true}"#
        }
        "qwen3-0.6b" => {
            r#"{"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
            "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": true}"#
        }
        "llama-3.2-1b" => {
            r#"{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}"#
        }
        "llama-3.2-3b" => {
            r#"{"model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
            "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256,
            "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true,
            "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}"#
        }
        "llama-3-8b" => {
            r#"{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": false}"#
        }
        // Two layers of Qwen3-30B-A3B (128 experts of width 768, top 8, hidden 2048) and its
        // dense twin with the same active FFN (8 × 768 = 6144), vocabulary cut to 16384 so that
        // the layers, not the LM head, set the bytes a token reads (`bench model`, issue 20).
        "qwen3-30b-a3b-2l" => {
            r#"{"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 2,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 16384,
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": false,
            "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768, "norm_topk_prob": true}"#
        }
        "qwen3-30b-a3b-2l-dense" => {
            r#"{"model_type": "qwen3", "hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 2,
            "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 16384,
            "max_position_embeddings": 40960, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": false}"#
        }
        "mistral-7b" => {
            r#"{"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 32768, "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false}"#
        }
        _ => return None,
    })
}

/// The names `synthetic_config` knows.
pub const SYNTHETIC_NAMES: [&str; 12] = [
    "smollm2-135m",
    "smollm2-360m",
    "smollm2-1.7b",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen3-0.6b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "llama-3-8b",
    "mistral-7b",
    "qwen3-30b-a3b-2l",
    "qwen3-30b-a3b-2l-dense",
];

/// Random weights with the shapes of `cfg`: matrices uniform in ±1/√in, norms 1, biases small.
pub fn random_weights(cfg: &crate::config::Config, seed: u64) -> crate::weights::Weights<Tensor> {
    let mut rng = Rng::new(seed);
    let mut mat = |rows: usize, cols: usize| -> Tensor {
        let a = 1.0 / (cols as f64).sqrt();
        let v = (0..rows * cols)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * a) as f32)
            .collect();
        Tensor::from_f32(vec![rows, cols], v)
    };
    let vector = |n: usize, x: f32| Tensor::from_f32(vec![n], vec![x; n]);
    let (d, q, kv, h) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.hidden_dim);
    let layers = (0..cfg.n_layers)
        .map(|l| crate::weights::Layer {
            attn_norm: vector(d, 1.0),
            wq: mat(q, d),
            wk: mat(kv, d),
            wv: mat(kv, d),
            wo: mat(d, q),
            bq: cfg.qkv_bias.then(|| vector(q, 0.01)),
            bk: cfg.qkv_bias.then(|| vector(kv, 0.01)),
            bv: cfg.qkv_bias.then(|| vector(kv, 0.01)),
            bo: cfg.o_bias.then(|| vector(d, 0.01)),
            q_norm: cfg.qk_norm.then(|| vector(cfg.head_dim, 1.0)),
            k_norm: cfg.qk_norm.then(|| vector(cfg.head_dim, 1.0)),
            ffn_norm: vector(d, 1.0),
            mlp: match &cfg.moe {
                Some(m) if m.layers[l] => (m.shared_hidden > 0).then(|| Mlp {
                    gate: mat(m.shared_hidden, d),
                    up: mat(m.shared_hidden, d),
                    down: mat(d, m.shared_hidden),
                }),
                _ => Some(Mlp {
                    gate: mat(h, d),
                    up: mat(h, d),
                    down: mat(d, h),
                }),
            },
            moe: cfg.moe.as_ref().filter(|m| m.layers[l]).map(|m| Moe {
                router: mat(m.n_experts, d),
                shared_gate: (m.shared_hidden > 0).then(|| mat(1, d)),
                gate: (0..m.n_experts).map(|_| mat(m.hidden, d)).collect(),
                up: (0..m.n_experts).map(|_| mat(m.hidden, d)).collect(),
                down: (0..m.n_experts).map(|_| mat(d, m.hidden)).collect(),
            }),
        })
        .collect();
    crate::weights::Weights {
        embed: mat(cfg.vocab_size, d),
        layers,
        norm: vector(d, 1.0),
        lm_head: (!cfg.tied_embeddings).then(|| mat(cfg.vocab_size, d)),
    }
}
