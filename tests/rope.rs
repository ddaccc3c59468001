//! RoPE scaling (linear, llama3, yarn, llama.cpp's rope_freqs): the host tables
//! (`config::RopeTable`) against the published formulas, evaluated here independently in f64
//! at several positions, and against the tables HF transformers computed for the tiny models
//! (../shared/golden/tiny-llama3-rope, tiny-qwen2-yarn: inv_freq, and cos/sin of 300 positions).

mod common;
use common::*;

use std::f64::consts::{LN_2, PI};
use tinfer::config::{Config, HfConfig, RopeScaling, RopeTable};

fn config(extra: &str) -> Config {
    let base = r#""hidden_size": 256, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 4, "vocab_size": 16, "max_position_embeddings": 4096"#;
    HfConfig::from_json(&format!("{{{base}{extra}}}"))
        .unwrap()
        .resolve()
        .unwrap()
}

/// f32 tolerance for a table value that went through f32 rounding of inv_freq and the angle.
const TABLE: Tol = Tol { abs: 2e-6, rel: 2e-6 };

/// cos/sin at `positions` from `inv` (f64) and an attention factor, vs the table.
fn check_table(what: &str, cfg: &Config, inv: &[f64], attn: f64) {
    let t = RopeTable::new(cfg);
    let got_inv: Vec<f32> = RopeTable::inv_freq(cfg);
    let inv32: Vec<f32> = inv.iter().map(|&x| x as f32).collect();
    assert_close(
        &format!("{what} inv_freq"),
        &got_inv,
        &inv32,
        Tol { abs: 0.0, rel: 1e-6 },
    );
    let h = cfg.head_dim / 2;
    for pos in [0, 1, 17, 63, 64, 65, 1000, 4095] {
        let angle = |i: usize| (pos as f32 * inv32[i]) as f64; // HF's f32 angle
        let want_cos: Vec<f32> = (0..h).map(|i| (angle(i).cos() * attn) as f32).collect();
        let want_sin: Vec<f32> = (0..h).map(|i| (angle(i).sin() * attn) as f32).collect();
        assert_close(
            &format!("{what} cos at {pos}"),
            &t.cos[pos * h..(pos + 1) * h],
            &want_cos,
            TABLE,
        );
        assert_close(
            &format!("{what} sin at {pos}"),
            &t.sin[pos * h..(pos + 1) * h],
            &want_sin,
            TABLE,
        );
    }
}

fn default_inv(theta: f64, d: usize) -> Vec<f64> {
    (0..d / 2).map(|i| theta.powf(-(2.0 * i as f64) / d as f64)).collect()
}

#[test]
fn linear_scaling_divides_every_frequency() {
    let cfg = config(r#", "rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 4.0}"#);
    assert_eq!(cfg.rope_scaling, RopeScaling::Linear { factor: 4.0 });
    let inv: Vec<f64> = default_inv(1e4, 64).iter().map(|f| f / 4.0).collect();
    check_table("linear", &cfg, &inv, 1.0);
}

/// Llama 3.1 (transformers `_compute_llama3_parameters`): wavelength 2π/f; under L/high kept,
/// over L/low divided by the factor, between blended with s = (L/wavelen - low)/(high - low).
#[test]
fn llama3_scaling_follows_the_formula() {
    let cfg = config(
        r#", "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}"#,
    );
    let (factor, lo, hi, l) = (8.0, 1.0, 4.0, 8192.0);
    let inv: Vec<f64> = default_inv(5e5, 64)
        .into_iter()
        .map(|f| {
            let wavelen = 2.0 * PI / f;
            let s = ((l / wavelen - lo) / (hi - lo)).clamp(0.0, 1.0);
            (1.0 - s) * f / factor + s * f
        })
        .collect();
    // some frequencies of each kind at head_dim 64
    let kept = inv.iter().zip(default_inv(5e5, 64)).filter(|(a, b)| **a == *b).count();
    let divided = inv
        .iter()
        .zip(default_inv(5e5, 64))
        .filter(|(a, b)| **a == *b / 8.0)
        .count();
    assert!(
        kept > 0 && divided > 0 && kept + divided < 32,
        "{kept} kept, {divided} divided"
    );
    check_table("llama3", &cfg, &inv, 1.0);
}

/// YaRN (Peng et al. 2023; transformers `_compute_yarn_parameters`): the correction range
/// [floor(corr(beta_fast)), ceil(corr(beta_slow))] with corr(r) = d ln(L / (2π r)) / (2 ln θ),
/// a linear ramp over it from extrapolated (f) to interpolated (f / factor) frequencies, and
/// cos/sin times 0.1 ln(factor) + 1.
#[test]
fn yarn_scaling_follows_the_formula() {
    for (theta, factor, l, d) in [(1e6f64, 4.0f64, 32768.0, 64usize), (1e4, 8.0, 2048.0, 128)] {
        let cfg = config(&format!(
            r#", "head_dim": {d}, "rope_theta": {theta}, "rope_scaling": {{"rope_type": "yarn", "factor": {factor},
                "original_max_position_embeddings": {l}}}"#
        ));
        let corr = |r: f64| d as f64 * (l / (2.0 * PI * r)).ln() / (2.0 * theta.ln());
        let (low, high) = (corr(32.0).floor().max(0.0), corr(1.0).ceil().min(d as f64 - 1.0));
        let inv: Vec<f64> = default_inv(theta, d)
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                f / factor * ramp + f * (1.0 - ramp)
            })
            .collect();
        let attn = 0.1 * factor.ln() + 1.0;
        check_table(&format!("yarn theta {theta} factor {factor}"), &cfg, &inv, attn);
        // an explicit attention_factor replaces the computed one
        let cfg = config(&format!(
            r#", "head_dim": {d}, "rope_theta": {theta}, "rope_scaling": {{"rope_type": "yarn", "factor": {factor},
                "original_max_position_embeddings": {l}, "attention_factor": 1.5}}"#
        ));
        check_table("yarn, attention_factor 1.5", &cfg, &inv, 1.5);
    }
    assert!((0.1 * 4f64.ln() + 1.0 - (0.2 * LN_2 + 1.0)).abs() < 1e-15);
}

/// llama.cpp's `rope_freqs` tensor (GGUF) divides each frequency by its factor.
#[test]
fn rope_freq_factors_divide_each_frequency() {
    let factors: Vec<f32> = (0..32).map(|i| 1.0 + i as f32 / 4.0).collect();
    let cfg = config(&format!(
        r#", "rope_theta": 500000.0, "rope_freq_factors": {factors:?}"#
    ));
    let inv: Vec<f64> = default_inv(5e5, 64)
        .iter()
        .zip(&factors)
        .map(|(f, k)| f / *k as f64)
        .collect();
    check_table("rope_freqs", &cfg, &inv, 1.0);
    let e = HfConfig::from_json(
        r#"{"hidden_size": 256, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "vocab_size": 16, "rope_freq_factors": [1.0, 2.0]}"#,
    )
    .unwrap()
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(e.contains("rope_freq_factors must be 32"), "{e}");
}

/// The tables HF computed for the tiny models: inv_freq, and cos/sin (cat(freqs, freqs), the
/// attention factor included) at all 300 positions of the long input; the README's values too.
#[test]
fn scaled_rope_tables_match_hf() {
    for (name, want_inv, attn) in [
        (
            "tiny-llama3-rope",
            [
                1.0, 0.0794030, 0.00470075, 9.11583e-4, 1.76777e-4, 3.42810e-5, 6.64787e-6, 1.28917e-6,
            ],
            1.0,
        ),
        (
            "tiny-qwen2-yarn",
            [1.0, 0.237171, 0.05, 0.00790569, 0.0025, 7.90569e-4, 2.5e-4, 7.90569e-5],
            1.1386294361,
        ),
    ] {
        let dir = fixtures().join(name);
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let cfg = HfConfig::from_json(&text).unwrap().resolve().unwrap();
        let inv = RopeTable::inv_freq(&cfg);
        let (_, hf_inv) = read_npy(&dir.join("rope.inv_freq.npy"));
        assert_close(
            &format!("{name} inv_freq vs HF"),
            &inv,
            &hf_inv,
            Tol { abs: 0.0, rel: 1e-6 },
        );
        let readme: Vec<f32> = want_inv.iter().map(|&x| x as f32).collect();
        assert_close(
            &format!("{name} inv_freq vs README"),
            &inv,
            &readme,
            Tol { abs: 0.0, rel: 2e-5 },
        );
        let t = RopeTable::new(&cfg);
        assert!(
            (t.cos[0] as f64 - attn).abs() < 1e-6,
            "{name}: cos(0) = {} (attention factor {attn})",
            t.cos[0]
        );
        for (file, table) in [("long.rope_cos.npy", &t.cos), ("long.rope_sin.npy", &t.sin)] {
            let (shape, hf) = read_npy(&dir.join(file));
            assert_eq!(shape, [300, 16]);
            // HF's rows are cat(freqs, freqs): both halves must equal our half-row. HF rounds
            // each step of the llama3 / yarn formula to f32, tinfer rounds the f64 result once,
            // so inv_freq may differ by an ulp (checked above), and the f32 angle pos·inv_freq
            // then by one ulp of itself: 2^-15 for angles up to 299 radians.
            let ours: Vec<f32> = (0..300)
                .flat_map(|p| [&table[p * 8..(p + 1) * 8]; 2].concat())
                .collect();
            assert_close(
                &format!("{name} {file}"),
                &ours,
                &hf,
                Tol {
                    abs: 2f64.powi(-15) * attn,
                    rel: 0.0,
                },
            );
        }
    }
}
