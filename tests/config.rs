//! Reading config.json (src/config.rs): HF's field names and defaults per architecture, RoPE
//! scaling, the bounds on untrusted values, and the derived sizes.

use anyhow::Result;
use tinfer::config::*;

fn cfg(extra: &str) -> Result<Config> {
    let base = r#""hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 256"#;
    HfConfig::from_json(&format!("{{{base}{extra}}}"))?.resolve()
}

#[test]
fn resolves_defaults_and_gqa() {
    let c = cfg(r#", "num_key_value_heads": 2, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}"#)
        .unwrap();
    assert_eq!((c.head_dim, c.kv_mul, c.rope_theta), (16, 2, 100000.0));
    assert!(!c.qkv_bias);
    let q = cfg(r#", "model_type": "qwen2", "rope_theta": 500.0"#).unwrap();
    assert!(q.qkv_bias && !q.o_bias);
    assert_eq!(q.rope_theta, 500.0);
}

#[test]
fn heads_that_do_not_divide_are_an_error() {
    let e = HfConfig::from_json(
        r#"{"hidden_size": 576, "intermediate_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 9, "num_key_value_heads": 2, "vocab_size": 8}"#,
    )
    .unwrap()
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a multiple of num_key_value_heads"), "{e}");
}

#[test]
fn unsupported_things_are_named() {
    for (extra, needle) in [
        (r#", "model_type": "gpt2""#, "model_type"),
        (r#", "hidden_act": "gelu""#, "hidden_act"),
        (r#", "head_dim": 15"#, "head_dim"),
        (r#", "rope_scaling": {"rope_type": "yarn"}"#, "factor"),
        (
            r#", "rope_scaling": {"rope_type": "dynamic", "factor": 2.0}"#,
            "dynamic",
        ),
        (
            r#", "rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}"#,
            "longrope",
        ),
        (r#", "partial_rotary_factor": 0.5"#, "partial_rotary_factor"),
        (
            r#", "layer_types": ["linear_attention", "full_attention"]"#,
            "linear_attention",
        ),
        (
            r#", "max_position_embeddings": 1099511627776"#,
            "max_position_embeddings",
        ),
        (r#", "max_position_embeddings": 0"#, "max_position_embeddings"),
        (r#", "head_dim": 1048576"#, "head_dim"),
        (r#", "rms_norm_eps": -1.0"#, "rms_norm_eps"),
    ] {
        let e = cfg(extra).unwrap_err().to_string();
        assert!(e.contains(needle), "{extra}: {e}");
    }
}

#[test]
fn mistral_window_limits_context() {
    let c = cfg(r#", "model_type": "mistral", "max_position_embeddings": 32768, "sliding_window": 4096"#).unwrap();
    assert_eq!(c.seq_len, 4096);
    let layers = r#", "layer_types": ["full_attention", "sliding_attention"]"#;
    let c = cfg(&format!(
        r#", "model_type": "qwen3", "sliding_window": 1024, "max_position_embeddings": 4096{layers}"#
    ));
    assert_eq!(c.unwrap().seq_len, 1024);
}
