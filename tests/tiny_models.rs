//! Rung 1: the CPU reference forward on the tiny random models against HF transformers, at every
//! position; KV-cache decoding against the full forward; chunked prefill against one pass.

mod common;
use common::*;

use tinfer::loader;
use tinfer::model::{Device, Model, Want};
use tinfer::tools::score::score;

fn model(name: &str) -> Model {
    let mut l = loader::load(&fixtures().join(name)).unwrap();
    Model::new(l.cfg.clone(), l.weights.take().unwrap(), Device::Cpu, None).unwrap()
}

fn logits_at_every_position(name: &str) {
    let golden = read_json(&fixtures().join(name).join("golden.json"));
    let mut m = model(name);
    for input in ["random", "arange"] {
        let tokens = ids(&golden["inputs"][input]["ids"]);
        let (shape, want) = read_npy(&fixtures().join(name).join(format!("{input}.logits.npy")));
        assert_eq!(shape, [tokens.len(), m.cfg.vocab_size]);
        let s = m.new_seq().unwrap();
        let got = m.fwd(s, &tokens, Want::All).unwrap();
        m.release(s);
        assert_close(&format!("{name} {input} logits"), &got, &want, TINY_VS_HF);
        // mean NLL over the same positions, through the perplexity path
        let s = score(&mut m, &tokens, tokens.len()).unwrap();
        let want_nll = golden["inputs"][input]["mean_nll"].as_f64().unwrap();
        assert!(
            (s.mean_nll() - want_nll).abs() < NLL_VS_HF,
            "{name} {input}: nll {} vs {want_nll}",
            s.mean_nll()
        );
        assert_eq!(s.n_scored, tokens.len() - 1);
    }
}

#[test]
fn tiny_llama_gqa_logits_match_hf() {
    logits_at_every_position("tiny-llama-gqa");
}

#[test]
fn tiny_qwen2_logits_match_hf() {
    logits_at_every_position("tiny-qwen2");
}

fn kv_cache_decode(name: &str) {
    check_kv_decode(&mut model(name), name, "cpu");
}

#[test]
fn tiny_llama_kv_cache_decode_matches_hf() {
    kv_cache_decode("tiny-llama-gqa");
}

#[test]
fn tiny_qwen2_kv_cache_decode_matches_hf() {
    kv_cache_decode("tiny-qwen2");
}

/// Prefill in chunks of any size computes exactly what one pass computes: every position's
/// arithmetic is the same, only the grouping differs.
#[test]
fn chunked_prefill_equals_one_pass() {
    let golden = read_json(&fixtures().join("tiny-qwen2/golden.json"));
    let tokens = ids(&golden["inputs"]["random"]["ids"]);
    let mut m = model("tiny-qwen2");
    let s = m.new_seq().unwrap();
    let whole = m.fwd(s, &tokens, Want::All).unwrap();
    for chunk in [1, 3, 17] {
        m.truncate(s, 0);
        let mut parts = vec![];
        for c in tokens.chunks(chunk) {
            parts.extend(m.fwd(s, c, Want::All).unwrap());
        }
        assert_eq!(parts.len(), whole.len());
        let d = max_abs_diff(&parts, &whole);
        assert!(d == 0.0, "chunks of {chunk}: max difference {d:e} from one pass");
    }
    // Truncating to a prefix and re-running the rest gives the same logits again.
    m.truncate(s, 10);
    let tail = m.fwd(s, &tokens[10..], Want::All).unwrap();
    assert_eq!(tail, whole[10 * m.cfg.vocab_size..]);
}

#[test]
fn forward_rejects_bad_input() {
    let mut m = model("tiny-llama-gqa");
    let s = m.new_seq().unwrap();
    let e = m.fwd(s, &[300], Want::Last).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    let e = m.fwd(s, &[], Want::Last).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let long = vec![1u32; m.cfg.seq_len + 1];
    let e = m.fwd(s, &long, Want::Last).unwrap_err().to_string();
    assert!(e.contains("context full"), "{e}");
    let e = m.fwd(s, &[1, 2], Want::LastN(3)).unwrap_err().to_string();
    assert!(e.contains("LastN(3)"), "{e}");
    m.release(s);
    let e = m.fwd(s, &[1], Want::Last).unwrap_err().to_string();
    assert!(e.contains("not live"), "{e}");
}

/// The tiny fixtures carry a byte-level tokenizer (id = byte) so the CLI can run them; the
/// committed file is exactly what the test helper describes.
#[test]
fn tiny_fixture_tokenizers_are_byte_level() {
    let moe = [
        "tiny-mixtral",
        "tiny-qwen2-moe",
        "tiny-qwen3-moe",
        "tiny-qwen3-moe-nonorm",
    ];
    for name in ["tiny-llama-gqa", "tiny-qwen2"].into_iter().chain(moe) {
        let committed = read_json(&fixtures().join(name).join("tokenizer.json"));
        assert_eq!(committed, byte_tokenizer_json(), "{name}/tokenizer.json");
    }
}

/// The sequence lifecycle on the CPU: random new_seq / fork / truncate / release and batched
/// forwards give exactly the logits of fresh sequences that ran the same tokens.
#[test]
fn sequence_lifecycle_matches_fresh_runs() {
    for (name, seed) in [("tiny-llama-gqa", 1), ("tiny-qwen2", 2)] {
        let mut l = loader::load(&fixtures().join(name)).unwrap();
        let opts = tinfer::model::Options {
            max_seqs: 4,
            ..Default::default()
        };
        let mut m = Model::with_options(l.cfg.clone(), l.weights.take().unwrap(), Device::Cpu, None, &opts).unwrap();
        let mut fresh = model(name);
        check_seq_lifecycle(&mut m, &mut fresh, 4, 120, seed, EXACT);
    }
}

#[test]
fn tiny_qwen3_logits_match_hf() {
    logits_at_every_position("tiny-qwen3");
}

#[test]
fn tiny_llama3_rope_logits_match_hf() {
    logits_at_every_position("tiny-llama3-rope");
}

#[test]
fn tiny_qwen2_yarn_logits_match_hf() {
    logits_at_every_position("tiny-qwen2-yarn");
}

#[test]
fn tiny_qwen3_and_scaled_rope_kv_cache_decode_matches_hf() {
    for name in ["tiny-qwen3", "tiny-llama3-rope", "tiny-qwen2-yarn"] {
        kv_cache_decode(name);
    }
}

/// The scaled-RoPE models over 300 positions (past original_max_position_embeddings = 64, where
/// the scaling matters most): logits at every position, the mean NLL, and 16 greedy steps after
/// the whole input with the KV cache. Logits are compared, not argmaxes (near-ties at llama3
/// position 275 and yarn position 124, golden README).
#[test]
fn scaled_rope_long_input_matches_hf() {
    for name in ["tiny-llama3-rope", "tiny-qwen2-yarn"] {
        let dir = fixtures().join(name);
        let long = &read_json(&dir.join("golden.json"))["long"];
        let tokens = ids(&long["ids"]);
        let mut m = model(name);
        let (shape, want) = read_npy(&dir.join("long.logits.npy"));
        assert_eq!(shape, [300, m.cfg.vocab_size]);
        let s = m.new_seq().unwrap();
        let got = m.fwd(s, &tokens, Want::All).unwrap();
        assert_close(&format!("{name} long logits"), &got, &want, TINY_VS_HF);
        m.release(s);
        let nll = score(&mut m, &tokens, tokens.len()).unwrap().mean_nll();
        let want_nll = long["mean_nll"].as_f64().unwrap();
        assert!(
            (nll - want_nll).abs() < NLL_VS_HF,
            "{name} long: nll {nll} vs {want_nll}"
        );
        // greedy continuation: the step logits before each new token
        let g = &long["greedy_kv_cache"];
        assert_eq!(ids(&g["prompt_ids"]), tokens);
        let (_, steps) = read_npy(&dir.join("long_greedy.step_logits.npy"));
        let v = m.cfg.vocab_size;
        let s = m.new_seq().unwrap();
        let mut logits = m.fwd(s, &tokens, Want::Last).unwrap();
        for (step, &next) in ids(&g["new_ids"]).iter().enumerate() {
            assert_close(
                &format!("{name} long greedy step {step}"),
                &logits,
                &steps[step * v..(step + 1) * v],
                TINY_VS_HF,
            );
            assert_eq!(
                tinfer::cpu::ops::argmax(&logits) as u32,
                next,
                "{name} long greedy step {step}"
            );
            logits = m.fwd(s, &[next], Want::Last).unwrap();
        }
        m.release(s);
    }
}
