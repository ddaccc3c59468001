//! Rungs 3 and 4 on the GPU: the tiny models against HF at every position, the GPU's prefill
//! against its own decode steps, tables split by rows against unsplit ones, and SmolLM2 against
//! HF's logits and greedy continuations. Skipped without an adapter (TINFER_REQUIRE_GPU=1 in CI).

mod common;
use common::*;

use tinfer::gpu::params::device_plan;
use tinfer::gpu::weights::WeightPlan;
use tinfer::model::{
    Attention, Device, Dtype, Entry, Gemm, Gemv, HeadSplit, KvDtype, KvLayout, Limits, Model, Options, Want,
};

fn tiny_logits_match_hf(name: &str) {
    let Some((mut m, _)) = gpu_model(&fixtures().join(name)) else {
        return;
    };
    let golden = read_json(&fixtures().join(name).join("golden.json"));
    for input in ["random", "arange"] {
        let tokens = ids(&golden["inputs"][input]["ids"]);
        let (_, want) = read_npy(&fixtures().join(name).join(format!("{input}.logits.npy")));
        let s = m.new_seq().unwrap();
        let got = m.fwd(s, &tokens, Want::All).unwrap();
        m.release(s);
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

#[test]
fn tiny_qwen3_and_scaled_rope_gpu_match_hf() {
    for name in ["tiny-qwen3", "tiny-llama3-rope", "tiny-qwen2-yarn"] {
        tiny_logits_match_hf(name);
    }
}

/// The scaled-RoPE models over 300 positions (past their original 64-position context): every
/// position's logits against HF, and the decode path at the end against the CPU.
#[test]
fn scaled_rope_long_input_on_the_gpu_matches_hf() {
    for name in ["tiny-llama3-rope", "tiny-qwen2-yarn"] {
        let dir = fixtures().join(name);
        let Some((mut m, _)) = gpu_model(&dir) else {
            return;
        };
        let tokens = ids(&read_json(&dir.join("golden.json"))["long"]["ids"]);
        let (_, want) = read_npy(&dir.join("long.logits.npy"));
        let s = m.new_seq().unwrap();
        let got = m.fwd(s, &tokens, Want::All).unwrap();
        assert_close(&format!("gpu {name} long logits"), &got, &want, TINY_VS_HF);
        m.release(s);
    }
}

/// Qwen3 with head_dim 32 over 4 query heads at hidden 64 (q_dim 128 != hidden, like Qwen3-0.6B's
/// 16 x 128 over 1024), distinct q/k norm weights and q/k/v biases: the GPU's prefill and decode
/// against the CPU, f32 weights.
#[test]
fn qwen3_shapes_with_wide_heads_match_the_cpu() {
    let Some(req) = gpu_request() else {
        return;
    };
    let cfg = tinfer::config::HfConfig::from_json(
        r#"{"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 256,
            "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "attention_bias": true, "rope_theta": 1e6}"#,
    )
    .unwrap()
    .resolve()
    .unwrap();
    assert_eq!(cfg.q_dim(), 128);
    let mut w = tinfer::tools::synthetic::random_weights(&cfg, 7);
    for (l, layer) in w.layers.iter_mut().enumerate() {
        let norm = |k: usize| {
            (0..32)
                .map(|i| 0.5 + ((i * 7 + k * 13 + l) % 11) as f32 / 10.0)
                .collect()
        };
        layer.q_norm = Some(tinfer::weights::Tensor::from_f32(vec![32], norm(1)));
        layer.k_norm = Some(tinfer::weights::Tensor::from_f32(vec![32], norm(2)));
    }
    let mut g = Model::new(cfg.clone(), w.clone(), Device::Gpu, req.adapter.as_deref()).unwrap();
    let mut c = Model::new(cfg, w, Device::Cpu, None).unwrap();
    let tokens: Vec<u32> = (0..45u32).map(|i| (i * 37 + 11) % 256).collect();
    let (gs, cs) = (g.new_seq().unwrap(), c.new_seq().unwrap());
    let got = g.fwd(gs, &tokens[..40], Want::All).unwrap();
    let want = c.fwd(cs, &tokens[..40], Want::All).unwrap();
    assert_close("qwen3 wide heads: gpu prefill vs cpu", &got, &want, TINY_VS_HF);
    for &t in &tokens[40..] {
        let got = g.fwd(gs, &[t], Want::Last).unwrap();
        let want = c.fwd(cs, &[t], Want::Last).unwrap();
        assert_close("qwen3 wide heads: gpu decode vs cpu", &got, &want, TINY_VS_HF);
    }
}

/// Prefill of n tokens gives the logits that n single-token steps give, and both equal the CPU's.
#[test]
fn prefill_equals_single_steps_and_cpu() {
    let Some((mut g, _)) = gpu_model(&fixtures().join("tiny-qwen2")) else {
        return;
    };
    let (mut c, _) = cpu_model(&fixtures().join("tiny-qwen2"));
    let tokens: Vec<u32> = (0..37).map(|i| (i * 71 + 5) % 256).collect();
    let (gs, cs) = (g.new_seq().unwrap(), c.new_seq().unwrap());
    let all = g.fwd(gs, &tokens, Want::All).unwrap();
    g.truncate(gs, 0);
    let mut steps = vec![];
    for &t in &tokens {
        steps.extend(g.fwd(gs, &[t], Want::Last).unwrap());
    }
    assert_close("gpu prefill vs single steps", &all, &steps, GPU_PREFILL_VS_DECODE);
    let cpu = c.fwd(cs, &tokens, Want::All).unwrap();
    assert_close("gpu vs cpu", &all, &cpu, TINY_VS_HF);
    // the device's argmax after a prefill equals the CPU's choice
    g.truncate(gs, 0);
    c.truncate(cs, 0);
    assert_eq!(g.argmax_of(gs, &tokens).unwrap(), c.argmax_of(cs, &tokens).unwrap());
}

/// With a tiny binding limit a step can return only a few rows of logits, so `Want::All` (and
/// `LastN`) runs in several steps: the results are the same as in one.
#[test]
fn logits_split_over_steps_give_the_same_logits() {
    let Some(req) = gpu_request() else { return };
    let dir = fixtures().join("tiny-llama-gqa");
    let mut l = tinfer::loader::load(&dir).unwrap();
    let w = l.weights.take().unwrap();
    let mut split = Model::new_gpu_with_binding_limit(l.cfg.clone(), &w, &req, 4096).unwrap();
    let mut whole = Model::new_gpu_with_binding_limit(l.cfg.clone(), &w, &req, 1 << 30).unwrap();
    let tokens: Vec<u32> = (0..11).map(|i| (i * 29 + 3) % 256).collect();
    let (ss, sw) = (split.new_seq().unwrap(), whole.new_seq().unwrap());
    let a = split.fwd(ss, &tokens, Want::All).unwrap();
    let b = whole.fwd(sw, &tokens, Want::All).unwrap();
    assert_eq!(a.len(), tokens.len() * 256);
    assert_close("split vs whole", &a, &b, EXACT);
    for n in [1, 4, 11] {
        split.truncate(ss, 0);
        let last = split.fwd(ss, &tokens, Want::LastN(n)).unwrap();
        assert_close(&format!("split LastN({n}) vs All"), &last, &a[(11 - n) * 256..], EXACT);
    }
}

/// The f16 weights (f32 accumulation) against HF on the tiny models at every position, within
/// F16_VS_HF; the plain (subgroup-free) kernels give the subgroup kernels' logits.
#[test]
fn f16_weights_match_hf_and_plain_kernels() {
    let f16 = Options {
        dtype: Dtype::F16,
        ..Options::default()
    };
    let plain = Options {
        subgroups: false,
        ..f16.clone()
    };
    for name in ["tiny-llama-gqa", "tiny-qwen2", "tiny-qwen3", "tiny-qwen2-yarn"] {
        let dir = fixtures().join(name);
        let Some((mut m, _)) = gpu_model_with(&dir, &f16) else {
            return;
        };
        let (mut p, _) = gpu_model_with(&dir, &plain).unwrap();
        assert_eq!(m.dtype_name(), "f16");
        let golden = read_json(&dir.join("golden.json"));
        for input in ["random", "arange"] {
            let tokens = ids(&golden["inputs"][input]["ids"]);
            let (_, want) = read_npy(&dir.join(format!("{input}.logits.npy")));
            let (s, ps) = (m.new_seq().unwrap(), p.new_seq().unwrap());
            let got = m.fwd(s, &tokens, Want::All).unwrap();
            m.release(s);
            assert_close(&format!("f16 {name} {input}"), &got, &want, F16_VS_HF);
            eprintln!(
                "f16 {name} {input}: max |error| vs HF {:.2e}",
                max_abs_diff(&got, &want)
            );
            let got_plain = p.fwd(ps, &tokens, Want::All).unwrap();
            p.release(ps);
            assert_close(
                &format!("plain vs subgroup kernels, {name} {input}"),
                &got_plain,
                &got,
                KERNEL_VS_CPU,
            );
        }
    }
}

/// The GPU-shaped kernels (--gemv split: each row across a workgroup; --gemm tiled: 64 × 64
/// tiles in workgroup memory; --decode-attention lanes: head_dim across lanes) on the tiny
/// models: every position's logits through the prefill path (every product a GEMM: QKV with
/// RoPE, Wo, gate/up with SwiGLU, down, LM head), then the golden greedy steps through the
/// decode path (every product a GEMV), against HF within TINY_VS_HF, f32 weights.
#[test]
fn gpu_shaped_products_match_hf() {
    for name in ["tiny-llama-gqa", "tiny-qwen2", "tiny-qwen3", "tiny-qwen2-yarn"] {
        let opts = Options {
            gemv: Gemv::Split,
            gemm: Gemm::Tiled,
            head_split: HeadSplit::Lanes,
            ..Options::default()
        };
        let Some((mut m, _)) = gpu_model_with(&fixtures().join(name), &opts) else {
            return;
        };
        let golden = read_json(&fixtures().join(name).join("golden.json"));
        for input in ["random", "arange"] {
            let tokens = ids(&golden["inputs"][input]["ids"]);
            let (_, want) = read_npy(&fixtures().join(name).join(format!("{input}.logits.npy")));
            let s = m.new_seq().unwrap();
            let got = m.fwd(s, &tokens, Want::All).unwrap();
            m.release(s);
            assert_close(&format!("gpu tiled GEMM {name} {input}"), &got, &want, TINY_VS_HF);
        }
        check_kv_decode(&mut m, name, "gpu split GEMV");
    }
}

/// The f16 KV cache (f32 weights) against HF on the tiny models: every position through the
/// prefill kernels (flash and naive), then the golden greedy steps through the decode kernel,
/// within KV_F16_VS_HF. Qwen3 writes its cache through qk_norm_rope, the others through the
/// QKV product's RoPE epilogue.
#[test]
fn f16_kv_cache_matches_hf() {
    for name in ["tiny-llama-gqa", "tiny-qwen2", "tiny-qwen3", "tiny-qwen2-yarn"] {
        let dir = fixtures().join(name);
        let golden = read_json(&dir.join("golden.json"));
        for attention in [Attention::Flash, Attention::Naive] {
            let opts = Options {
                kv_dtype: KvDtype::F16,
                attention,
                ..Options::default()
            };
            let Some((mut m, _)) = gpu_model_with(&dir, &opts) else {
                return;
            };
            assert_eq!(m.kv_dtype_name(), Some("f16"));
            let mut worst = 0f64;
            for input in ["random", "arange"] {
                let tokens = ids(&golden["inputs"][input]["ids"]);
                let (_, want) = read_npy(&dir.join(format!("{input}.logits.npy")));
                let s = m.new_seq().unwrap();
                let got = m.fwd(s, &tokens, Want::All).unwrap();
                m.release(s);
                assert_close(
                    &format!("f16 KV {attention:?} {name} {input}"),
                    &got,
                    &want,
                    KV_F16_VS_HF,
                );
                worst = worst.max(max_abs_diff(&got, &want));
            }
            let g = &golden["greedy_kv_cache"];
            let s = m.new_seq().unwrap();
            let mut logits = m.fwd(s, &ids(&g["prompt_ids"]), Want::Last).unwrap();
            for (step, &next) in ids(&g["new_ids"]).iter().enumerate() {
                let want: Vec<f32> = g["step_logits"][step]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                assert_close(
                    &format!("f16 KV {attention:?} {name} decode step {step}"),
                    &logits,
                    &want,
                    KV_F16_VS_HF,
                );
                worst = worst.max(max_abs_diff(&logits, &want));
                logits = m.fwd(s, &[next], Want::Last).unwrap();
            }
            m.release(s);
            eprintln!("f16 KV {attention:?} {name}: max |error| vs HF {worst:.2e}");
        }
    }
}

/// SmolLM2 with f16 weights against HF on the 7 golden prompts (logits within F16_VS_HF, greedy
/// ids equal up to near-ties at that tolerance, mean NLL within F16_NLL_VS_HF), decoded through
/// the decode path too.
#[test]
fn smollm2_f16_gpu_matches_hf() {
    let Some(dir) = smollm2_dir() else { return };
    let f16 = Options {
        dtype: Dtype::F16,
        ..Options::default()
    };
    let Some((mut m, loaded)) = gpu_model_with(&dir, &f16) else {
        return;
    };
    let idx = read_json(&fixtures().join("smollm2/index.json"));
    let mut worst: f64 = 0.0;
    for p in idx["prompts"].as_array().unwrap() {
        worst = worst.max(check_golden_prompt_within(
            &mut m,
            p,
            "gpu f16",
            F16_VS_HF,
            F16_NLL_VS_HF,
        ));
    }
    eprintln!(
        "smollm2 f16: worst logit error vs HF {worst:.3e} (tolerance {})",
        F16_VS_HF.abs
    );
    // greedy generation (decode steps, argmax on the device) prints HF's chat answer
    let chat = idx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "chat")
        .unwrap();
    let (_, out) = greedy(m, &ids(&chat["ids"]), 32);
    let text = loaded.tokenizer.as_ref().unwrap().decode(&out, true).unwrap();
    assert_eq!(text, chat["expect"]["text"].as_str().unwrap());
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
    let Some((g, loaded)) = gpu_model(&dir) else { return };
    let idx = read_json(&fixtures().join("smollm2/index.json"));
    let chat = idx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "chat")
        .unwrap();
    let (mut g, out) = greedy(g, &ids(&chat["ids"]), 32);
    let text = loaded.tokenizer.as_ref().unwrap().decode(&out, true).unwrap();
    assert_eq!(text, chat["expect"]["text"].as_str().unwrap());

    let (mut c, _) = cpu_model(&dir);
    let prompt = ids(&idx["prompts"][0]["ids"]);
    let (gs, cs) = (g.new_seq().unwrap(), c.new_seq().unwrap());
    let a = g.fwd(gs, &prompt, Want::Last).unwrap();
    let b = c.fwd(cs, &prompt, Want::Last).unwrap();
    assert_close("smollm2 gpu vs cpu", &a, &b, SMOLLM2_VS_HF);
    eprintln!("smollm2 prose: gpu vs cpu max |diff| {:.2e}", max_abs_diff(&a, &b));
}

fn opts(attention: Attention, kv: KvLayout, max_seqs: usize) -> Options {
    Options {
        attention,
        kv,
        max_seqs,
        min_split_keys: 64,        // split-K already at these short lengths
        split_workers: Some(1024), // as on a GPU, even on lavapipe
        ..Options::default()
    }
}

/// Model level: paged + flash (the default) gives the logits of contiguous + naive, over a
/// prompt that spans many pages and prefill chunks, then over single decode steps (split-K).
#[test]
fn attention_variants_and_kv_layouts_give_the_same_logits() {
    let dir = fixtures().join("tiny-llama-gqa");
    let tokens: Vec<u32> = (0..300).map(|i| (i * 37 + 11) % 256).collect();
    let run = |attention, kv| {
        let (mut m, _) = gpu_model_with(&dir, &opts(attention, kv, 1))?;
        let s = m.new_seq().unwrap();
        let mut out = m.fwd(s, &tokens[..290], Want::All).unwrap();
        for &t in &tokens[290..] {
            out.extend(m.fwd(s, &[t], Want::Last).unwrap());
        }
        Some(out)
    };
    let Some(reference) = run(Attention::Naive, KvLayout::Contiguous) else {
        return;
    };
    for (a, kv) in [
        (Attention::Naive, KvLayout::Paged),
        (Attention::Flash, KvLayout::Contiguous),
        (Attention::Flash, KvLayout::Paged),
    ] {
        let got = run(a, kv).unwrap();
        assert_close(
            &format!("{a:?} {kv:?} vs naive contiguous"),
            &got,
            &reference,
            GPU_PREFILL_VS_DECODE,
        );
    }
}

/// Sequences forked from a prefilled prompt share its pages, take copies only of the partly
/// filled last page, and decode in one batched step to the same logits as unshared sequences
/// that each ran the whole prompt (and as the CPU's batched forward).
#[test]
fn forked_sequences_share_pages_and_match_unshared_ones() {
    let dir = fixtures().join("tiny-qwen2");
    let prompt: Vec<u32> = (0..70).map(|i| (i * 53 + 7) % 256).collect(); // 4 full pages + 6
    let Some((mut shared, _)) = gpu_model_with(&dir, &opts(Attention::Flash, KvLayout::Paged, 3)) else {
        return;
    };
    let (mut cpu, _) = cpu_model(&dir);
    let mut cpu = {
        // the CPU keeps one contiguous cache per sequence
        let mut l = tinfer::loader::load(&dir).unwrap();
        let w = l.weights.take().unwrap();
        let _ = &mut cpu;
        Model::with_options(
            l.cfg.clone(),
            w,
            Device::Cpu,
            None,
            &opts(Attention::Naive, KvLayout::Contiguous, 3),
        )
        .unwrap()
    };
    let s0 = shared.new_seq().unwrap();
    assert_eq!(cpu.new_seq().unwrap(), s0);
    shared.fwd(s0, &prompt, Want::Last).unwrap();
    cpu.fwd(s0, &prompt, Want::Last).unwrap();
    let (a, b) = (shared.fork(s0).unwrap(), shared.fork(s0).unwrap());
    assert_eq!((cpu.fork(s0).unwrap(), cpu.fork(s0).unwrap()), (a, b));
    let pages_after_fork = shared.kv_usage().unwrap().pages_used;
    assert_eq!(pages_after_fork, 5, "forks share the prompt's 5 pages");
    let mut steps = vec![];
    for step in 0..20u32 {
        let toks = [[step % 256], [(step * 7 + 1) % 256], [(step * 13 + 2) % 256]];
        let batch: Vec<Entry> = [s0, a, b]
            .iter()
            .zip(&toks)
            .map(|(&seq, t)| Entry {
                seq,
                tokens: t,
                want: Want::Last,
            })
            .collect();
        let got = shared.forward(&batch).unwrap();
        let want = cpu.forward(&batch).unwrap();
        for i in 0..3 {
            assert_close(
                &format!("step {step} sequence {i}: gpu batch vs cpu"),
                &got[i],
                &want[i],
                TINY_VS_HF,
            );
        }
        steps.push((toks, got));
    }
    // 3 sequences of 90 positions: 4 shared full pages + 2 own pages each = 10; unshared: 18
    let (used, waste) = (shared.kv_usage().unwrap().pages_used, shared.kv_usage().unwrap().waste);
    assert_eq!(used, 10);
    assert!(waste < 0.2, "waste {waste}");
    // Each sequence alone, unshared, gives the same logits as in the shared batch.
    for (i, seq_tokens) in [0usize, 1, 2]
        .iter()
        .map(|&i| (i, steps.iter().map(move |(t, _)| t[i][0])))
    {
        let (mut alone, _) = gpu_model_with(&dir, &opts(Attention::Flash, KvLayout::Paged, 1)).unwrap();
        let s = alone.new_seq().unwrap();
        alone.fwd(s, &prompt, Want::Last).unwrap();
        for (step, tok) in seq_tokens.enumerate() {
            let got = alone.fwd(s, &[tok], Want::Last).unwrap();
            assert_close(
                &format!("sequence {i} step {step}: alone vs shared"),
                &got,
                &steps[step].1[i],
                GPU_PREFILL_VS_DECODE,
            );
        }
    }
    // releasing the forks returns their own pages; sequence 0 keeps the prompt's
    shared.release(a);
    shared.release(b);
    assert_eq!(shared.kv_usage().unwrap().pages_used, 6);
}

/// A pool too small for the prompt is a clear "KV cache full" error, and nothing is half-done.
#[test]
fn kv_cache_full_is_an_error() {
    let dir = fixtures().join("tiny-llama-gqa");
    let o = Options {
        kv_blocks: Some(2),
        ..Options::default()
    };
    let Some((mut m, _)) = gpu_model_with(&dir, &o) else {
        return;
    };
    let s = m.new_seq().unwrap();
    m.fwd(s, &[1; 20], Want::Last).unwrap();
    let e = m.fwd(s, &[1; 20], Want::Last).unwrap_err().to_string();
    assert!(e.contains("KV cache full") && e.contains("--kv-blocks"), "{e}");
    assert_eq!(m.len(s), 20);
    m.fwd(s, &[1; 12], Want::Last).unwrap(); // what still fits the two pages
}

/// A prompt filling the whole context (8192 positions, 512 pages, split-K over 32 partitions on
/// the last steps) gives the CPU's logits; one token more is a clear error.
#[test]
fn a_prompt_as_long_as_the_context_works() {
    if gpu_request().is_none() {
        return;
    }
    let dir = tiny_model_dir(
        &std::env::temp_dir().join(format!("tinfer-long-{}", std::process::id())),
        serde_json::json!({"max_position_embeddings": 8192}),
    );
    let (mut g, _) = gpu_model(&dir).unwrap();
    let (mut c, _) = cpu_model(&dir);
    let tokens: Vec<u32> = (0..8192u32).map(|i| (i * 7919 + i / 3) % 256).collect();
    let (gs, cs) = (g.new_seq().unwrap(), c.new_seq().unwrap());
    let got = g.fwd(gs, &tokens[..8190], Want::Last).unwrap();
    let want = c.fwd(cs, &tokens[..8190], Want::Last).unwrap();
    assert_close("8190-token prompt: gpu vs cpu", &got, &want, TINY_VS_HF);
    for &t in &tokens[8190..] {
        let got = g.fwd(gs, &[t], Want::Last).unwrap();
        let want = c.fwd(cs, &[t], Want::Last).unwrap();
        assert_close("decode at the end of the context", &got, &want, TINY_VS_HF);
    }
    let e = g.fwd(gs, &[1], Want::Last).unwrap_err().to_string();
    assert!(e.contains("context full"), "{e}");
}

/// The sequence lifecycle on the GPU, paged (forks share pages, copy on write) and contiguous:
/// random new_seq / fork / truncate / release and batched forwards give the logits of fresh
/// sequences that ran the same tokens in one prefill, and releasing every sequence frees every
/// page. Also with the GPUs' attention kernels (head_dim across lanes), whose batch steps hold
/// several rows of several sequences (on lavapipe an entry of several rows runs alone).
#[test]
fn sequence_lifecycle_matches_fresh_runs() {
    let dir = fixtures().join("tiny-qwen2");
    for (kv, seed, head_split) in [
        (KvLayout::Paged, 3, HeadSplit::Auto),
        (KvLayout::Contiguous, 4, HeadSplit::Auto),
        (KvLayout::Paged, 5, HeadSplit::Lanes),
    ] {
        let o = Options {
            head_split,
            ..opts(Attention::Flash, kv, 4)
        };
        let Some((mut m, _)) = gpu_model_with(&dir, &o) else {
            return;
        };
        let (mut fresh, _) = gpu_model_with(&dir, &opts(Attention::Flash, kv, 1)).unwrap();
        // at most 3 live in a pool of 4 contexts: sequences sharing a page each count a copy
        check_seq_lifecycle(&mut m, &mut fresh, 3, 80, seed, GPU_PREFILL_VS_DECODE);
    }
}

/// Qwen2.5-Coder-0.5B from its Q4_K_M GGUF on the GPU, on a code and a chat prompt: with f32
/// weights the same checks against HF as the CPU's (last logits within 1e-3, greedy text, mean
/// NLL within 1e-4); with f16 weights within F16_VS_HF (greedy equal up to the near-ties that
/// tolerance allows). The KV pool is capped at 64 MiB (the model's 32K context would take 805 MB).
#[test]
fn qwen2_coder_gguf_on_the_gpu_matches_hf() {
    let Some(path) = qwen_coder_gguf() else { return };
    let index = read_json(&fixtures().join("qwen2.5-coder/index.json"));
    for (dtype, tol, nll_tol) in [
        (Dtype::F32, SMOLLM2_VS_HF, NLL_VS_HF),
        (Dtype::F16, F16_VS_HF, F16_NLL_VS_HF),
    ] {
        let opts = Options {
            dtype,
            kv_memory: Some(64 << 20),
            ..Options::default()
        };
        let Some((mut m, _)) = gpu_model_with(&path, &opts) else {
            return;
        };
        let name = m.dtype_name();
        assert!(dtype != Dtype::F32 || name == "f32", "--dtype f32 gave {name}");
        assert!(dtype != Dtype::F16 || name == "f16", "--dtype f16 gave {name}");
        for p in index["prompts"].as_array().unwrap() {
            let label = format!("qwen2.5-coder gpu {name}");
            let worst = check_golden_prompt_from(&mut m, p, &label, tol, nll_tol, "qwen2.5-coder");
            eprintln!("{label}: worst |error| {worst:.3}");
        }
    }
}

/// Perplexity of argparse.py on the GPU with f32 weights against HF (`check_argparse_nll`: the
/// first 512 targets always, all 2047 with TINFER_LONG_TESTS=1), then HF's 32 greedy tokens after
/// the first 2000 tokens (with TINFER_LONG_TESTS=1).
#[test]
fn qwen2_coder_gpu_perplexity_and_long_greedy_match_hf() {
    let Some(path) = qwen_coder_gguf() else { return };
    let opts = Options {
        dtype: Dtype::F32,
        kv_memory: Some(64 << 20),
        ..Options::default()
    };
    let Some((mut m, loaded)) = gpu_model_with(&path, &opts) else {
        return;
    };
    let tok = loaded.tokenizer.as_ref().unwrap();
    check_argparse_nll(&mut m, tok, "qwen2.5-coder gpu f32", long_tests(), NLL_VS_HF);
    if long_tests() {
        check_greedy_from_2000(m, tok, "qwen2.5-coder gpu f32");
    }
}

/// GGUF blocks kept on the GPU (--dtype auto) against the CPU on the same file, which decodes the
/// blocks to f32 first: the same weights, only the f32 summation order differs. SmolLM2-135M Q4_1
/// (its tied head Q8_0) and Qwen2.5-Coder-0.5B Q4_K_M (Q5_0, Q8_0, Q4_K, Q6_K; its Q5_0 Q/K stacked
/// with Q8_0 V rows as Q8_0; under WebGPU's default limits, `--limits webgpu`): the last logits
/// of each fixture prompt within QUANT_GPU_VS_CPU, then
/// 12 greedy steps in lockstep (both fed the CPU's choice) with equal argmax except where the
/// CPU's top two are within 2 × the tolerance.
#[test]
fn quantized_weights_on_the_gpu_match_the_cpu() {
    let cases = [
        (smollm2_gguf(), "smollm2", "Q4_1+Q8_0"),
        (qwen_coder_gguf(), "qwen2.5-coder", "Q8_0+Q5_0+Q6_K+Q4_K"),
    ];
    for (path, fixture, formats) in cases {
        let Some(path) = path else { continue };
        let opts = Options {
            dtype: Dtype::Auto,
            kv_memory: Some(64 << 20),
            limits: if fixture == "smollm2" {
                Limits::Adapter
            } else {
                Limits::Webgpu
            },
            ..Options::default()
        };
        let Some((mut g, _)) = gpu_model_with(&path, &opts) else {
            return;
        };
        assert_eq!(g.dtype_name(), formats, "{fixture}: the device formats");
        let (mut c, _) = cpu_model(&path);
        // what `info` plans is what the device holds, within 5% of the file's matrix bytes
        let loaded = tinfer::loader::load(&path).unwrap();
        let plan = WeightPlan::new(Dtype::Auto, true);
        // (every row here is under 1024 texels, so any texture width of 8192 or more groups 8 rows)
        let planned = device_plan(&loaded.cfg, loaded.weights.as_ref().unwrap(), plan, 8192);
        let device: usize = planned.iter().map(|m| m.bytes).sum();
        let stored: usize = planned.iter().map(|m| m.stored_bytes).sum();
        assert_eq!(
            Some(device),
            g.device_weight_bytes(),
            "{fixture}: planned vs uploaded bytes"
        );
        assert!(
            device as f64 <= stored as f64 * 1.05,
            "{fixture}: {device} device bytes for {stored} stored"
        );
        // a GPU's layout (layers of equal height, not powers of two) never takes more
        let exact = device_plan(
            &loaded.cfg,
            loaded.weights.as_ref().unwrap(),
            plan.exact_layers(true),
            8192,
        );
        for (m, e) in planned.iter().zip(&exact) {
            assert!(
                e.bytes <= m.bytes,
                "{fixture} {}: equal layers take more than power-of-two ones",
                m.name
            );
        }
        let exact_bytes: usize = exact.iter().map(|m| m.bytes).sum();
        eprintln!(
            "{fixture}: device bytes {device} (power-of-two layers), {exact_bytes} (equal layers), stored {stored}"
        );
        let index = read_json(&fixtures().join(format!("{fixture}/index.json")));
        let mut worst = 0f64;
        for p in index["prompts"].as_array().unwrap().iter().take(3) {
            let prompt = ids(&p["ids"]);
            let (gs, cs) = (g.new_seq().unwrap(), c.new_seq().unwrap());
            let (mut a, mut b) = (
                g.fwd(gs, &prompt, Want::Last).unwrap(),
                c.fwd(cs, &prompt, Want::Last).unwrap(),
            );
            for step in 0..12 {
                let what = format!("{fixture} {formats} prompt {:?} step {step}", p["name"]);
                assert_close(&what, &a, &b, QUANT_GPU_VS_CPU);
                worst = worst.max(max_abs_diff(&a, &b));
                let mut order: Vec<usize> = (0..b.len()).collect();
                order.sort_by(|&i, &j| b[j].total_cmp(&b[i]));
                let gpu_top = (0..a.len())
                    .max_by(|&i, &j| a[i].total_cmp(&a[j]).then(j.cmp(&i)))
                    .unwrap();
                let tie = ((b[order[0]] - b[order[1]]) as f64) < 2.0 * QUANT_GPU_VS_CPU.abs;
                assert!(
                    tie || gpu_top == order[0],
                    "{what}: gpu argmax {gpu_top}, cpu {}",
                    order[0]
                );
                let next = [order[0] as u32];
                a = g.fwd(gs, &next, Want::Last).unwrap();
                b = c.fwd(cs, &next, Want::Last).unwrap();
            }
            g.release(gs);
            c.release(cs);
        }
        eprintln!("{fixture} {formats}: gpu vs cpu max |diff| {worst:.2e}");
    }
}

/// Greedy ids of `prompt` and then `n` single steps (forward_argmax, a readback per token), and
/// the logits after the last; the sequence is released.
fn single_steps(m: &mut Model, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let s = m.new_seq().unwrap();
    let mut ids = vec![m.argmax_of(s, prompt).unwrap()];
    for _ in 0..n {
        let t = *ids.last().unwrap();
        ids.push(m.argmax_of(s, &[t]).unwrap());
    }
    let logits = m.fwd(s, &[*ids.last().unwrap()], Want::Last).unwrap();
    m.release(s);
    (ids, logits)
}

/// Decoding ahead (several greedy steps in one submit, each step's argmax fed to the next
/// embedding on the device) gives the ids of single steps and leaves the cache as they do:
/// in runs of 1 to 14 steps across page boundaries, from a fork whose shared last page is copied
/// first (its parent untouched), and as the CPU's twin gives them.
#[test]
fn decode_ahead_gives_the_ids_of_single_steps() {
    let dir = fixtures().join("tiny-qwen2");
    let Some((mut g, _)) = gpu_model_with(&dir, &opts(Attention::Flash, KvLayout::Paged, 2)) else {
        return;
    };
    let prompt: Vec<u32> = (0..21).map(|i| (i * 31 + 3) % 256).collect();
    let runs = [5, 7, 13, 1, 14];
    let total: usize = runs.iter().sum();
    let (want, want_logits) = single_steps(&mut g, &prompt, total);
    let p = g.new_seq().unwrap();
    let first = g.argmax_of(p, &prompt).unwrap();
    let f = g.fork(p).unwrap();
    let mut got = vec![first];
    for n in runs {
        let ids = g.decode_greedy(f, *got.last().unwrap(), n).unwrap();
        assert_eq!(ids.len(), n, "a run of {n} steps ahead");
        got.extend(ids);
        assert_eq!(
            g.len(f),
            prompt.len() + got.len() - 1,
            "cache length after {n} steps ahead"
        );
    }
    assert_eq!(got, want, "ids decoded ahead vs single steps");
    let logits = g.fwd(f, &[*got.last().unwrap()], Want::Last).unwrap();
    assert_close(
        "logits after decoding ahead vs after single steps",
        &logits,
        &want_logits,
        GPU_PREFILL_VS_DECODE,
    );
    // the parent's shared page was copied before the fork wrote it
    assert_eq!(
        g.argmax_of(p, &[first]).unwrap(),
        want[1],
        "the parent after its fork decoded ahead"
    );
    // the CPU's twin: one forward_argmax after another
    let (mut c, _) = cpu_model(&dir);
    let cs = c.new_seq().unwrap();
    let cfirst = c.argmax_of(cs, &prompt).unwrap();
    let mut cpu = vec![cfirst];
    cpu.extend(c.decode_greedy(cs, cfirst, 12).unwrap());
    assert_eq!(cpu, want[..13], "the CPU's decode_greedy vs the GPU's single steps");
}

/// Decoding ahead stops where the context or the KV pool does, returning the ids that fit;
/// one step more is the usual clear error.
#[test]
fn decode_ahead_stops_at_the_context_and_the_pool() {
    if gpu_request().is_none() {
        return;
    }
    let dir = tiny_model_dir(
        &std::env::temp_dir().join(format!("tinfer-ahead-{}", std::process::id())),
        serde_json::json!({"max_position_embeddings": 48}),
    );
    let (mut g, _) = gpu_model(&dir).unwrap();
    let prompt: Vec<u32> = (0..40).map(|i| (i * 13 + 1) % 256).collect();
    let s = g.new_seq().unwrap();
    let t = g.argmax_of(s, &prompt).unwrap();
    let ids = g.decode_greedy(s, t, 30).unwrap();
    assert_eq!(ids.len(), 8, "steps ahead up to the end of a 48-token context from 40");
    assert_eq!(g.len(s), 48);
    let e = g.decode_greedy(s, ids[7], 4).unwrap_err().to_string();
    assert!(e.contains("context"), "{e}");
    // a pool of 3 pages of 16 rows: 28 steps fit after a 20-token prompt
    let o = Options {
        kv_blocks: Some(3),
        ..Options::default()
    };
    let (mut g, _) = gpu_model_with(&fixtures().join("tiny-llama-gqa"), &o).unwrap();
    let s = g.new_seq().unwrap();
    let t = g.argmax_of(s, &prompt[..20]).unwrap();
    let ids = g.decode_greedy(s, t, 40).unwrap();
    assert_eq!(
        (ids.len(), g.len(s)),
        (28, 48),
        "steps ahead up to the end of the KV pool"
    );
    let e = g.decode_greedy(s, ids[27], 2).unwrap_err().to_string();
    assert!(e.contains("KV cache full"), "{e}");
}

/// The engine decoding 8 steps a submit gives the tokens of single steps, and a sequence that
/// stops in the middle of ids decoded ahead (an end token, max_tokens, the caller's finish, as
/// for a stop string) keeps exactly the cache single steps leave.
#[test]
fn engine_decode_ahead_matches_single_steps() {
    use tinfer::engine::{Engine, Sequence, Stop, StopReason};
    use tinfer::sampler::{Sampler, SamplerConfig};
    let dir = fixtures().join("tiny-qwen2");
    let prompt: Vec<u32> = (0..19).map(|i| (i * 47 + 9) % 256).collect();
    // (output, cache length) of a kept sequence stopped by `eos` / `max` / finish after `cut`
    let run = |ahead: usize, eos: Vec<u32>, max: usize, cut: Option<usize>| -> Option<(Vec<u32>, usize, usize)> {
        let (m, _) = gpu_model(&dir)?;
        let mut e = Engine::new(m).with_decode_ahead(ahead);
        let id = e.model.new_seq().unwrap();
        let mut stop = Stop::new(&e.model.cfg, max);
        stop.eos = eos;
        let seq = Sequence::new(prompt.clone(), Sampler::new(SamplerConfig::default()), stop).continuing(id, vec![]);
        let h = e.add(seq).unwrap();
        let mut steps = 0;
        while !e.get(h).is_finished() {
            if cut == Some(e.get(h).output.len()) {
                e.finish(h, StopReason::StopString);
                break;
            }
            e.step().unwrap();
            steps += 1;
        }
        let s = e.take(h);
        Some((s.output, e.model.len(id), steps))
    };
    let Some((all, len, steps_one)) = run(1, vec![], 30, None) else {
        return;
    };
    assert_eq!(len, prompt.len() + 29, "30 tokens: the last never runs");
    let (ahead, len8, steps8) = run(8, vec![], 30, None).unwrap();
    assert_eq!(
        (&ahead, len8, steps8),
        (&all, len, steps_one),
        "8 steps a submit vs single steps"
    );
    // an end token at output position 11 (its first occurrence there or later)
    let k = (11..all.len())
        .find(|&k| !all[..k].contains(&all[k]))
        .expect("a new token");
    for (eos, max, cut) in [(vec![all[k]], 30, None), (vec![], 13, None), (vec![], 30, Some(5))] {
        let one = run(1, eos.clone(), max, cut).unwrap();
        let eight = run(8, eos.clone(), max, cut).unwrap();
        assert_eq!(
            eight, one,
            "eos {eos:?}, max_tokens {max}, finished after {cut:?}: 8 ahead vs single steps"
        );
    }
}

/// A prompt step cut into one submit per layer (Options::submit_macs = 1) gives the same
/// logits, bit for bit, as one submit.
#[test]
fn prefill_cut_into_submits_gives_the_same_logits() {
    let dir = fixtures().join("tiny-llama-gqa");
    let Some((mut one, l)) = gpu_model(&dir) else {
        return;
    };
    let o = Options {
        submit_macs: 1,
        ..Options::default()
    };
    let (mut cut, _) = gpu_model_with(&dir, &o).unwrap();
    let tokens: Vec<u32> = (0..100).map(|i| (i * 29 + 3) % 256).collect();
    assert_eq!(one.prefill_submits(100), Some(1));
    assert_eq!(cut.prefill_submits(100), Some(l.cfg.n_layers));
    let (a, b) = (one.new_seq().unwrap(), cut.new_seq().unwrap());
    let want = one.fwd(a, &tokens, Want::All).unwrap();
    let got = cut.fwd(b, &tokens, Want::All).unwrap();
    assert_eq!(max_abs_diff(&got, &want), 0.0, "a layer a submit vs one submit");
}
