//! Rungs 3 and 4 on the GPU: the tiny models against HF at every position, the GPU's prefill
//! against its own decode steps, tables split by rows against unsplit ones, and SmolLM2 against
//! HF's logits and greedy continuations. Skipped without an adapter (TINFER_REQUIRE_GPU=1 in CI).

mod common;
use common::*;

use tinfer::cpu::Logits;
use tinfer::generate::generate;
use tinfer::model::Model;
use tinfer::sampler::{Sampler, SamplerConfig};

fn tiny_logits_match_hf(name: &str) {
    let Some((mut m, _)) = gpu_model(&fixtures().join(name)) else {
        return;
    };
    let golden = read_json(&fixtures().join(name).join("golden.json"));
    for input in ["random", "arange"] {
        let tokens = ids(&golden["inputs"][input]["ids"]);
        let (_, want) = read_npy(&fixtures().join(name).join(format!("{input}.logits.npy")));
        m.truncate(0);
        let got = m.forward(&tokens, Logits::All).unwrap();
        assert_close(&format!("gpu {name} {input}"), &got, &want, TINY_VS_HF);
    }
    // KV-cache decoding on the device, step by step against HF.
    check_kv_decode(&mut m, name, "gpu");
}

#[test]
fn tiny_llama_gpu_matches_hf() {
    tiny_logits_match_hf("tiny-llama-gqa");
}

#[test]
fn tiny_qwen2_gpu_matches_hf() {
    tiny_logits_match_hf("tiny-qwen2");
}

/// Prefill of n tokens gives the logits that n single-token steps give, and both equal the CPU's.
#[test]
fn prefill_equals_single_steps_and_cpu() {
    let Some((mut g, _)) = gpu_model(&fixtures().join("tiny-qwen2")) else {
        return;
    };
    let (mut c, _) = cpu_model(&fixtures().join("tiny-qwen2"));
    let tokens: Vec<u32> = (0..37).map(|i| (i * 71 + 5) % 256).collect();
    let all = g.forward(&tokens, Logits::All).unwrap();
    g.truncate(0);
    let mut steps = vec![];
    for &t in &tokens {
        steps.extend(g.forward(&[t], Logits::Last).unwrap());
    }
    assert_close("gpu prefill vs single steps", &all, &steps, GPU_PREFILL_VS_DECODE);
    let cpu = c.forward(&tokens, Logits::All).unwrap();
    assert_close("gpu vs cpu", &all, &cpu, TINY_VS_HF);
    // the device's argmax after a prefill equals the CPU's choice
    g.truncate(0);
    c.truncate(0);
    assert_eq!(g.forward_argmax(&tokens).unwrap(), c.forward_argmax(&tokens).unwrap());
}

/// With a tiny binding limit every matrix is split by rows into many buffers, and a step can
/// return only a few rows of logits: the results are the same as unsplit.
#[test]
fn tables_split_by_rows_give_the_same_logits() {
    let Some(req) = gpu_request() else { return };
    let dir = fixtures().join("tiny-llama-gqa");
    let mut l = tinfer::loader::load(&dir).unwrap();
    let w = l.weights.take().unwrap();
    let mut split = Model::new_gpu_with_binding_limit(l.cfg.clone(), &w, &req, 4096).unwrap();
    let mut whole = Model::new_gpu_with_binding_limit(l.cfg.clone(), &w, &req, 1 << 30).unwrap();
    let tokens: Vec<u32> = (0..11).map(|i| (i * 29 + 3) % 256).collect();
    let a = split.forward(&tokens, Logits::All).unwrap();
    let b = whole.forward(&tokens, Logits::All).unwrap();
    assert_eq!(a.len(), tokens.len() * 256);
    assert_close("split vs whole", &a, &b, EXACT);
    // a binding limit smaller than one row is a clear error naming the tensor
    let e = Model::new_gpu_with_binding_limit(l.cfg.clone(), &w, &req, 128)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("exceeds the device's storage binding limit"), "{e}");
}

/// SmolLM2 on the GPU against HF on the 7 golden prompts: last logits, greedy ids up to the
/// near-ties, each step's top-1 logit, mean NLL (see `check_golden_prompt`).
#[test]
fn smollm2_gpu_matches_hf() {
    let Some(dir) = smollm2_dir() else { return };
    let Some((mut m, _)) = gpu_model(&dir) else { return };
    let idx = read_json(&fixtures().join("smollm2/index.json"));
    for p in idx["prompts"].as_array().unwrap() {
        check_golden_prompt(&mut m, p, "gpu");
    }
}

/// The generation loop on the GPU (argmax on the device, 4 bytes read back per token) prints
/// HF's chat answer, and the GPU's logits equal the CPU's on a prompt.
#[test]
fn smollm2_gpu_generate_and_cpu_agree() {
    let Some(dir) = smollm2_dir() else { return };
    let Some((mut g, loaded)) = gpu_model(&dir) else { return };
    let idx = read_json(&fixtures().join("smollm2/index.json"));
    let chat = idx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "chat")
        .unwrap();
    let mut sampler = Sampler::new(SamplerConfig::default());
    let out = generate(&mut g, &ids(&chat["ids"]), &[], &mut sampler, 32, |_| Ok(())).unwrap();
    let text = loaded.tokenizer.as_ref().unwrap().decode(&out.tokens, true).unwrap();
    assert_eq!(text, chat["expect"]["text"].as_str().unwrap());

    let (mut c, _) = cpu_model(&dir);
    let prompt = ids(&idx["prompts"][0]["ids"]);
    g.truncate(0);
    let a = g.forward(&prompt, Logits::Last).unwrap();
    let b = c.forward(&prompt, Logits::Last).unwrap();
    assert_close("smollm2 gpu vs cpu", &a, &b, SMOLLM2_VS_HF);
    eprintln!("smollm2 prose: gpu vs cpu max |diff| {:.2e}", max_abs_diff(&a, &b));
}
