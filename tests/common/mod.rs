//! Shared test helpers: fixture paths, a .npy reader, the named tolerances, the closeness check
//! that says where a comparison failed, and synthetic models built from the tiny fixtures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};
use tinfer::engine::{Engine, Sequence, Stop};
use tinfer::gguf::Value;
use tinfer::model::{Entry, Model, SeqId, Want};
use tinfer::sampler::{Sampler, SamplerConfig};
use tinfer::tools::gguf_write as write;

/// The repository root: where the tests were built, or TINFER_ROOT (prebuilt test binaries
/// run on another machine, as scripts/gpu-check.sh does).
pub fn root() -> PathBuf {
    std::env::var_os("TINFER_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// A closeness rule |got - want| <= abs + rel * |want|, with the reason it is what it is.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

/// The tolerances, named and justified in one place.
/// Tiny random models (hidden 64, 2 layers) vs HF float32 logits: the golden README asks for
/// 1e-4; f64-accumulated CPU ops land around 1e-6, so 1e-4 still catches any real mistake.
pub const TINY_VS_HF: Tol = Tol { abs: 1e-4, rel: 0.0 };
/// SmolLM2-135M last-position logits vs HF (30 layers, logits up to ~40): the golden README
/// reports 5e-5 between HF's own attention implementations and expects ~1e-3 from a correct
/// float32 engine on the same dequantised weights.
pub const SMOLLM2_VS_HF: Tol = Tol { abs: 1e-3, rel: 0.0 };
/// Mean NLL (natural log) vs HF: an average of log-softmaxes, much tighter than single logits.
pub const NLL_VS_HF: f64 = 1e-4;
/// A WGSL kernel vs its CPU twin: the GPU accumulates in f32 (in its own order), the CPU in f64;
/// for sums of up to ~1800 terms of magnitude <= ~30 the f32 rounding stays below 1e-4 relative,
/// and absolute 1e-4 covers results near zero.
pub const KERNEL_VS_CPU: Tol = Tol { abs: 1e-4, rel: 1e-4 };
/// A fused product + SwiGLU vs the CPU: silu(g) * u multiplies the f32 rounding of each of the two
/// products (about 1e-4 relative, as above) by the other one, whose magnitude reaches ~1e3 with
/// the tests' outliers; a small result can be the product of a large u and a tiny silu(g), so both
/// bounds are 1e-3. A wrong row, token or norm errs by far more (order 1).
pub const SWIGLU_VS_CPU: Tol = Tol { abs: 1e-3, rel: 1e-3 };
/// The same over rows of 16320 values: gate and up are f32 sums of 16320 terms of magnitude up
/// to ~15 that cancel down to results of ~1 now and then, and their rounding (~1e-2 absolute,
/// measured 1.6e-2 on the random data under WebGPU's limits) then passes through silu(g) * u;
/// a wrong row or norm errs by far more (those results reach ~1e3 and ~1e5).
pub const SWIGLU_LONG_ROWS_VS_CPU: Tol = Tol { abs: 5e-2, rel: 1e-3 };
/// Attention outputs vs the CPU's f64 softmax: each output is a convex combination of V values
/// (|v| <= 2); f32 sums over up to 4096 keys and f32 exp of scores up to ~50 give errors around
/// 1e-5, so 2e-4 absolute catches any wrong row, page, mask or rescale (those err by ~0.1 or more).
pub const ATTENTION_VS_CPU: Tol = Tol { abs: 2e-4, rel: 1e-4 };
/// The GPU's GEMM (prefill) and GEMV (decode) sum in different orders in f32; on the tiny
/// models' logits (magnitude ~1) that differs by ~1e-6.
pub const GPU_PREFILL_VS_DECODE: Tol = Tol { abs: 1e-5, rel: 1e-5 };
/// f16 weights (f32 accumulation) vs HF's f32 logits. Rounding a weight to f16 changes it by up
/// to 2^-11 relative; over SmolLM2's 30 layers that moves logits (magnitude up to ~40) by up to
/// 0.030 on the 7 golden prompts (measured, the f16 test prints it), so logits are held to 0.1 and
/// greedy ids to HF's up to steps whose top-1/top-2 margin is within 2 × 0.1. A wrong texel,
/// row or unpacking errs by far more than 0.1.
pub const F16_VS_HF: Tol = Tol { abs: 0.1, rel: 0.0 };
/// An f16 KV cache (f32 weights) vs HF's logits on the tiny models: each K and V value rounded
/// once to f16 (2^-11 relative) moves their logits (magnitude up to ~4) by up to 2.0e-3
/// (measured; the test prints it); swapping the halves of the f16 pair layout errs by 4 or more.
pub const KV_F16_VS_HF: Tol = Tol { abs: 5e-3, rel: 0.0 };
/// The same for the mean NLL: f16 moves it by at most 1.9e-3 on the golden prompts.
pub const F16_NLL_VS_HF: f64 = 5e-3;
/// GGUF blocks decoded inside the GPU's products vs the CPU's f32 products of the same blocks
/// decoded first: the same weights, so only the f32 summation order differs (q·x summed per half
/// block, then scaled once). Measured on SmolLM2 Q4_1 and Qwen2.5-Coder Q4_K_M logits (magnitude
/// up to ~40): 3.9e-5 and 1.8e-5 over the fixtures' 3 prompts and 12 steps each, 2.5e-4 on
/// another text, where the GPU with f32 texels differs from the CPU by exactly as much (decode
/// steps; prefill is bit-identical to f32 texels). Held to 1e-3, the f32 GPU path's own bound. A
/// wrong quant, scale or offset errs by far more.
pub const QUANT_GPU_VS_CPU: Tol = Tol { abs: 1e-3, rel: 0.0 };
/// Copies, gathers and argmax: exact.
pub const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };

/// Compare two slices; on failure report the count over tolerance, the worst index with both
/// values, and the first few failing pairs.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: Tol) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs expected {}",
        got.len(),
        want.len()
    );
    let mut bad = vec![];
    let (mut worst, mut worst_i) = (0f64, 0usize);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        if err > worst || err.is_nan() {
            worst = if err.is_nan() { f64::INFINITY } else { err };
            worst_i = i;
        }
        let within = err <= tol.abs + tol.rel * (w as f64).abs(); // false for NaN
        if !within {
            bad.push(i);
        }
    }
    if !bad.is_empty() {
        let pairs: Vec<String> = bad
            .iter()
            .take(5)
            .map(|&i| format!("[{i}] {} vs {}", got[i], want[i]))
            .collect();
        panic!(
            "{what}: {} of {} values outside {:?}; max error {worst:.3e} at [{worst_i}] ({} vs {}); first: {}",
            bad.len(),
            got.len(),
            tol,
            got[worst_i],
            want[worst_i],
            pairs.join(", ")
        );
    }
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs())
        .fold(0.0, f64::max)
}

/// Read a little-endian float32 .npy file: (shape, values).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY", "{}: not an .npy file", path.display());
    let (header_len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12)
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape_str = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = shape_str
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data: Vec<f32> = bytes[start + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{}", path.display());
    (shape, data)
}

pub fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The converted SmolLM2 directory, or None (test skipped) when it has not been fetched.
/// With TINFER_REQUIRE_MODEL=1 (CI) a missing model fails the test instead.
pub fn smollm2_dir() -> Option<PathBuf> {
    let dir = fetched(
        "models/smollm2-135m-instruct/model.safetensors",
        "",
        "TINFER_REQUIRE_MODEL",
    )?;
    Some(dir.parent().unwrap().to_path_buf())
}

/// `rel` under the checkout when `scripts/fetch-model.sh NAME` has fetched it, else None (the test
/// is skipped, with a message); with `require`=1 in the environment a missing file fails instead.
pub fn fetched(rel: &str, name: &str, require: &str) -> Option<PathBuf> {
    let path = root().join(rel);
    if path.exists() {
        return Some(path);
    }
    let fetch = format!("scripts/fetch-model.sh {name}");
    if std::env::var(require).is_ok_and(|v| v == "1") {
        panic!("{require}=1 but {} is missing: run {}", path.display(), fetch.trim());
    }
    eprintln!("SKIPPED: {} not found (run {})", path.display(), fetch.trim());
    None
}

pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    smollm2_dir().map(|_| path)
}

/// GPT-2's byte-to-character table: the 256 symbols of a byte-level BPE alphabet, by byte.
pub fn byte_level_chars() -> Vec<char> {
    let mut n = 0;
    (0u32..256)
        .map(|b| {
            if (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b) {
                char::from_u32(b).unwrap()
            } else {
                n += 1;
                char::from_u32(255 + n).unwrap()
            }
        })
        .collect()
}

/// A byte-level tokenizer.json whose 256 tokens are the single bytes (id = byte), no merges.
pub fn byte_tokenizer_json() -> Json {
    let vocab: serde_json::Map<String, Json> = byte_level_chars()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), json!(i)))
        .collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
}

/// A model directory: the tiny Llama fixture's weights, its config with `overrides` applied,
/// and the byte-level tokenizer with a ChatML chat template.
pub fn tiny_model_dir(dir: &Path, overrides: Json) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let src = fixtures().join("tiny-llama-gqa");
    let mut cfg = read_json(&src.join("config.json"));
    for (k, v) in overrides.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}\
                    {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"chat_template": template}).to_string(),
    )
    .unwrap();
    dir.to_path_buf()
}

/// The tiny Llama fixture written as a GGUF file the way llama.cpp's converter writes one:
/// F32 tensors with GGUF names, Q/K rows permuted for interleaved RoPE, llama metadata, and the
/// byte-level tokenizer.
pub fn tiny_gguf_bytes() -> Vec<u8> {
    tiny_gguf("tiny-llama-gqa", "llama", vec![], vec![])
}

/// A tiny fixture `name` as a GGUF of architecture `arch` (Q/K rows permuted for "llama" only,
/// as llama.cpp's converter does), with extra metadata (keys after "{arch}.") and tensors.
pub fn tiny_gguf(name: &str, arch: &str, extra_md: Vec<(&str, Value)>, extra: Vec<write::Tensor>) -> Vec<u8> {
    let src = fixtures().join(name);
    let cfg = read_json(&src.join("config.json"));
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let n = |k: &str| cfg[k].as_u64().unwrap();
    let mut tensors = extra;
    for (hf, view) in st.tensors() {
        let gguf = gguf_name(&hf);
        let shape = view.shape().to_vec();
        let mut data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let heads = if hf.contains("q_proj") {
            n("num_attention_heads")
        } else if hf.contains("k_proj") {
            n("num_key_value_heads")
        } else {
            0
        };
        if heads > 0 && arch == "llama" {
            data = permute_rows(&data, shape[0], shape.get(1).copied().unwrap_or(1), heads as usize);
        }
        tensors.push(write::Tensor {
            name: gguf,
            ne: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type: 0,
            data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }
    let tokens: Vec<Value> = byte_level_chars()
        .iter()
        .map(|c| Value::String(c.to_string()))
        .collect();
    let u = |k: &str| Value::U32(n(k) as u32);
    let mut arch_md = vec![
        ("context_length", u("max_position_embeddings")),
        ("embedding_length", u("hidden_size")),
        ("block_count", u("num_hidden_layers")),
        ("feed_forward_length", u("intermediate_size")),
        ("attention.head_count", u("num_attention_heads")),
        ("attention.head_count_kv", u("num_key_value_heads")),
        ("attention.key_length", u("head_dim")),
        (
            "attention.layer_norm_rms_epsilon",
            Value::F32(cfg["rms_norm_eps"].as_f64().unwrap() as f32),
        ),
        ("rope.freq_base", Value::F32(cfg["rope_theta"].as_f64().unwrap() as f32)),
    ];
    if cfg["head_dim"].is_null() {
        arch_md.retain(|(k, _)| *k != "attention.key_length");
    }
    arch_md.extend(extra_md);
    let arch_md: Vec<(String, Value)> = arch_md.into_iter().map(|(k, v)| (format!("{arch}.{k}"), v)).collect();
    let mut md = vec![
        ("general.architecture", Value::String(arch.into())),
        ("general.alignment", Value::U32(32)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
    ];
    md.extend(arch_md.iter().map(|(k, v)| (k.as_str(), v.clone())));
    write::gguf_bytes(&md, &tensors)
}

pub fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let parts = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("self_attn.q_norm", "attn_q_norm"),
        ("self_attn.k_norm", "attn_k_norm"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    let (part, kind) = rest.rsplit_once('.').unwrap();
    let g = parts.iter().find(|(h, _)| *h == part).unwrap().1;
    format!("blk.{layer}.{g}.{kind}")
}

/// llama.cpp's converter permutation (the inverse of tinfer's un-permutation), written from its
/// definition: reshape(n_head, 2, d/2, cols).swapaxes(1, 2).
pub fn permute_rows(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let d = rows / n_head;
    let mut out = vec![0.0; data.len()];
    for h in 0..n_head {
        for j in 0..2 {
            for i in 0..d / 2 {
                let src = h * d + j * (d / 2) + i; // HF row (head h, half j, index i)
                let dst = h * d + i * 2 + j; // after swapaxes: (head h, index i, half j)
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// TINFER_REQUIRE_GPU=1 (CI): what a test would skip for want of a GPU or a GPU feature fails.
pub fn require_gpu() -> bool {
    std::env::var("TINFER_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// A GPU adapter to test on (a hardware GPU or lavapipe), or None (test skipped) when the machine
/// has none. With TINFER_REQUIRE_GPU=1 (CI) a missing adapter fails the test instead.
pub fn gpu_request() -> Option<tinfer::gpu::GpuRequest> {
    let adapter = std::env::var("TINFER_TEST_ADAPTER").ok();
    let req = tinfer::gpu::GpuRequest {
        adapter,
        allow_cpu_adapter: true,
        // TINFER_WEBGPU_LIMITS=1: ask for WebGPU's default limits only (--limits webgpu)
        webgpu_limits: std::env::var("TINFER_WEBGPU_LIMITS").is_ok_and(|v| v == "1"),
    };
    match tinfer::gpu::Gpu::new(&req) {
        Ok(_) => Some(req),
        Err(e) if require_gpu() => {
            panic!("TINFER_REQUIRE_GPU=1 but no GPU adapter could be opened: {e:#}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no GPU adapter ({e:#})");
            None
        }
    }
}

/// Load a model onto the GPU (None when there is no adapter; see `gpu_request`).
pub fn gpu_model(path: &Path) -> Option<(tinfer::model::Model, tinfer::loader::Loaded)> {
    gpu_model_with(path, &tinfer::model::Options::default())
}

/// A GPU model with engine options (attention variant, KV layout, sequences).
pub fn gpu_model_with(
    path: &Path,
    opts: &tinfer::model::Options,
) -> Option<(tinfer::model::Model, tinfer::loader::Loaded)> {
    let req = gpu_request()?;
    let mut l = tinfer::loader::load(path).unwrap();
    let w = l.weights.take().unwrap();
    let m = tinfer::model::Model::with_options(
        l.cfg.clone(),
        w,
        tinfer::model::Device::Gpu,
        req.adapter.as_deref(),
        opts,
    )
    .unwrap();
    Some((m, l))
}

pub fn cpu_model(path: &Path) -> (tinfer::model::Model, tinfer::loader::Loaded) {
    let mut l = tinfer::loader::load(path).unwrap();
    let w = l.weights.take().unwrap();
    (
        tinfer::model::Model::new(l.cfg.clone(), w, tinfer::model::Device::Cpu, None).unwrap(),
        l,
    )
}

pub fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Json) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// HF's greedy continuation of a golden prompt (EOS removed) and the first step whose top-1/top-2
/// margin is within the engine's error (a near-tie, where a correct engine may pick the other token).
pub fn greedy_and_tie(p: &Json) -> (Vec<u32>, usize) {
    greedy_and_tie_within(p, SMOLLM2_VS_HF.abs)
}

/// As `greedy_and_tie`, for an engine whose logits are within `tol` of HF's.
pub fn greedy_and_tie_within(p: &Json, tol: f64) -> (Vec<u32>, usize) {
    let g = &p["greedy"];
    let mut cont = ids(&g["ids"]);
    if g["stopped_at_eos"] == true {
        // SmolLM2's <|im_end|> is 2, Qwen2.5's 151645
        let eos = cont.pop();
        assert!(matches!(eos, Some(2) | Some(151645)), "HF stopped on EOS, not {eos:?}");
    }
    let margins = floats(&p["greedy_no_eos_stop"]["step_top1_minus_top2"]);
    let tie = margins.iter().position(|&mg| mg < 2.0 * tol).unwrap_or(usize::MAX);
    (cont, tie)
}

/// One SmolLM2 golden prompt on `m`, in one forward over the prompt and HF's greedy continuation:
/// the last prompt position's logits against HF's full vector, the argmax along the continuation
/// equal to HF's ids up to the first near-tie (so greedy decoding reproduces HF's text), each
/// step's top-1 logit, and the prompt's mean NLL. `label` names the device in failures.
pub fn check_golden_prompt(m: &mut tinfer::model::Model, p: &Json, label: &str) {
    check_golden_prompt_within(m, p, label, SMOLLM2_VS_HF, NLL_VS_HF);
}

/// As `check_golden_prompt`, with logits held to `tol` and the mean NLL to `nll_tol`; returns the
/// worst logit error seen (last position and top-1 logits).
pub fn check_golden_prompt_within(m: &mut tinfer::model::Model, p: &Json, label: &str, tol: Tol, nll_tol: f64) -> f64 {
    check_golden_prompt_from(m, p, label, tol, nll_tol, "smollm2")
}

/// `check_golden_prompt_within` with the logits read from tests/fixtures/`dir`.
pub fn check_golden_prompt_from(
    m: &mut tinfer::model::Model,
    p: &Json,
    label: &str,
    tol: Tol,
    nll_tol: f64,
    dir: &str,
) -> f64 {
    let name = format!("{label} {}", p["name"].as_str().unwrap());
    let vocab = m.cfg.vocab_size;
    let prompt = ids(&p["ids"]);
    let (cont, tie) = greedy_and_tie_within(p, tol.abs);
    let mut seq = prompt.clone();
    seq.extend(&cont);
    let s = m.new_seq().unwrap();
    let all = m.fwd(s, &seq, Want::All).unwrap();
    m.release(s);
    let row = |i: usize| &all[i * vocab..(i + 1) * vocab];
    let last = row(prompt.len() - 1);
    let mut worst = match p.get("last_logits_reduced") {
        Some(r) => check_reduced_row(&format!("{name}: last logits"), last, r, tol),
        None => {
            let (_, want) =
                read_npy(&fixtures().join(format!("{dir}/{}.last_logits.npy", p["name"].as_str().unwrap())));
            assert_close(&format!("{name}: last logits"), last, &want, tol);
            max_abs_diff(last, &want)
        }
    };
    eprintln!(
        "{name}: {} tokens, last-logit max |error| vs HF {worst:.2e}",
        prompt.len()
    );
    let top1 = floats(&p["greedy"]["step_top1_logit"]);
    for (step, &want_top) in top1.iter().enumerate().take(cont.len() + 1) {
        let r = row(prompt.len() - 1 + step);
        if step < cont.len() && step < tie {
            assert_eq!(
                tinfer::cpu::ops::argmax(r) as u32,
                cont[step],
                "{name}: greedy id at step {step}"
            );
        }
        let top = r.iter().cloned().fold(f32::MIN, f32::max) as f64;
        // the fixture rounds to 5 decimals
        assert!(
            (top - want_top).abs() < tol.abs + 1e-5,
            "{name}: step {step} top-1 {top} vs HF {want_top}"
        );
        worst = worst.max((top - want_top).abs());
    }
    if prompt.len() > 1 {
        let nll: f64 = (0..prompt.len() - 1)
            .map(|t| tinfer::cpu::ops::logsumexp(row(t)) - row(t)[prompt[t + 1] as usize] as f64)
            .sum::<f64>()
            / (prompt.len() - 1) as f64;
        let want_nll = p["mean_nll"].as_f64().unwrap();
        assert!(
            (nll - want_nll).abs() < nll_tol,
            "{name}: mean NLL {nll} vs HF {want_nll}"
        );
        eprintln!("{name}: mean NLL error vs HF {:.2e}", (nll - want_nll).abs());
    }
    worst
}

/// A logit row against its reduction by scripts/make-qwen-fixtures.py (HF's row is 151,936
/// floats; the fixture keeps, exactly, its 20 largest values, its values at 500 fixed random
/// columns, and its float64 logsumexp and mean): the sampled and top-20 values within `tol`, our
/// largest logit (over every column) within `tol` of HF's, and the logsumexp and mean within
/// `tol` (each takes in every logit, so one far-off logit anywhere moves them). Returns the worst
/// error seen.
pub fn check_reduced_row(what: &str, got: &[f32], r: &Json, tol: Tol) -> f64 {
    let f32s = |v: &Json| -> Vec<f32> { floats(v).iter().map(|&x| x as f32).collect() };
    let pick = |cols: &[u32]| -> Vec<f32> { cols.iter().map(|&c| got[c as usize]).collect() };
    let (cols, top) = (ids(&r["cols"]), ids(&r["top_ids"]));
    let (sample, top_values) = (f32s(&r["sample"]), f32s(&r["top_values"]));
    // name the vocabulary column of the worst value ([i] in a failure is its place in the list)
    let worst_col = |cs: &[u32], want: &[f32]| {
        let d: Vec<f64> = cs
            .iter()
            .zip(want)
            .map(|(&c, &w)| (got[c as usize] as f64 - w as f64).abs())
            .collect();
        cs[(0..d.len()).max_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap()]
    };
    let n = cols.len();
    let c = worst_col(&cols, &sample);
    assert_close(
        &format!("{what}: {n} sampled columns (worst: id {c})"),
        &pick(&cols),
        &sample,
        tol,
    );
    let c = worst_col(&top, &top_values);
    assert_close(
        &format!("{what}: HF's top {} ids (worst: id {c})", top.len()),
        &pick(&top),
        &top_values,
        tol,
    );
    let mut worst = max_abs_diff(&pick(&cols), &sample).max(max_abs_diff(&pick(&top), &top_values));
    let max = got.iter().cloned().fold(f32::MIN, f32::max);
    let lse = tinfer::cpu::ops::logsumexp(got);
    let mean = got.iter().map(|&x| x as f64).sum::<f64>() / got.len() as f64;
    let at = tinfer::cpu::ops::argmax(got);
    for (stat, g, w) in [
        ("max (any column)", max as f64, top_values[0] as f64),
        ("logsumexp", lse, r["logsumexp"].as_f64().unwrap()),
        ("mean", mean, r["mean"].as_f64().unwrap()),
    ] {
        assert!(
            (g - w).abs() <= tol.abs + tol.rel * w.abs(),
            "{what}: {stat} {g} vs HF {w} (error {:.3e}; our argmax is id {at})",
            (g - w).abs()
        );
        worst = worst.max((g - w).abs());
    }
    worst
}

/// A tiny model's greedy decoding one token at a time through the KV cache: each step's logits
/// equal HF's (checked in turn against HF's full forward) and so do the chosen ids.
pub fn check_kv_decode(m: &mut tinfer::model::Model, name: &str, label: &str) {
    let g = &read_json(&fixtures().join(name).join("golden.json"))["greedy_kv_cache"];
    let s = m.new_seq().unwrap();
    let mut logits = m.fwd(s, &ids(&g["prompt_ids"]), Want::Last).unwrap();
    for (step, &want) in ids(&g["new_ids"]).iter().enumerate() {
        let want_logits: Vec<f32> = floats(&g["step_logits"][step]).iter().map(|&x| x as f32).collect();
        assert_close(
            &format!("{label} {name} decode step {step}"),
            &logits,
            &want_logits,
            TINY_VS_HF,
        );
        assert_eq!(
            tinfer::cpu::ops::argmax(&logits) as u32,
            want,
            "{label} {name}: greedy id at step {step}"
        );
        logits = m.fwd(s, &[want], Want::Last).unwrap();
    }
    m.release(s);
}

/// Tests' shorthand for a batch of one sequence.
pub trait Run {
    /// The rows `want`s of running `tokens` on `seq`.
    fn fwd(&mut self, seq: SeqId, tokens: &[u32], want: Want) -> anyhow::Result<Vec<f32>>;
    /// The most likely next token after `tokens` on `seq` (on the GPU, picked on the device).
    fn argmax_of(&mut self, seq: SeqId, tokens: &[u32]) -> anyhow::Result<u32>;
}

impl Run for Model {
    fn fwd(&mut self, seq: SeqId, tokens: &[u32], want: Want) -> anyhow::Result<Vec<f32>> {
        Ok(self.forward(&[Entry { seq, tokens, want }])?.remove(0))
    }
    fn argmax_of(&mut self, seq: SeqId, tokens: &[u32]) -> anyhow::Result<u32> {
        let want = Want::Last;
        Ok(self.forward_argmax(&[Entry { seq, tokens, want }])?[0])
    }
}

/// Greedy generation of at most `max` tokens after `prompt` through the engine, in a new
/// sequence; gives the model back.
pub fn greedy(m: Model, prompt: &[u32], max: usize) -> (Model, Vec<u32>) {
    let stop = Stop::new(&m.cfg, max);
    let mut e = Engine::new(m);
    let seq = Sequence::new(prompt.to_vec(), Sampler::new(SamplerConfig::default()), stop);
    let out = e.run(seq).unwrap().remove(0).output;
    (e.into_model(), out)
}

/// Property check of the sequence lifecycle: `steps` random operations on `m` (new_seq, fork,
/// truncate, release, and batched forwards over some live sequences, each wanting Last, All or
/// LastN), at most `max_seqs` live. Every row returned equals the same row of a fresh sequence
/// of `fresh` that ran the sequence's whole history in one forward, within `tol`; a fork holds
/// its parent's positions; in the end every sequence is released and no KV page is in use.
pub fn check_seq_lifecycle(m: &mut Model, fresh: &mut Model, max_seqs: usize, steps: usize, seed: u64, tol: Tol) {
    let mut rng = tinfer::sampler::Rng::new(seed);
    let (vocab, ctx) = (m.cfg.vocab_size, m.cfg.seq_len);
    let mut live: Vec<(SeqId, Vec<u32>)> = vec![]; // each live sequence and the tokens it holds
    let mut forwards = 0;
    for step in 0..steps {
        let r = rng.next_u64() as usize;
        let pick = (r / 8) % live.len().max(1);
        match r % 8 {
            0 if live.len() < max_seqs => {
                let s = m.new_seq().unwrap();
                assert!(live.iter().all(|l| l.0 != s), "step {step}: {s:?} is already live");
                assert_eq!(m.len(s), 0);
                live.push((s, vec![]));
            }
            1 if live.len() < max_seqs && !live.is_empty() => {
                let (parent, held) = live[pick].clone();
                let f = m.fork(parent).unwrap();
                assert_eq!(m.len(f), held.len(), "step {step}: a fork holds its parent's positions");
                live.push((f, held));
            }
            2 if !live.is_empty() => {
                let len = (r / 256) % (live[pick].1.len() + 1);
                m.truncate(live[pick].0, len);
                live[pick].1.truncate(len);
                assert_eq!(m.len(live[pick].0), len);
            }
            3 if !live.is_empty() => {
                m.release(live.remove(pick).0);
            }
            _ if !live.is_empty() => {
                // a batch over some live sequences, each with a few new tokens
                let mut runs: Vec<(usize, Vec<u32>, Want)> = vec![];
                for (i, (_, held)) in live.iter().enumerate() {
                    let r = rng.next_u64() as usize;
                    let n = (1 + r % 9).min(ctx - held.len());
                    if n == 0 || (r / 16).is_multiple_of(3) {
                        continue;
                    }
                    let toks: Vec<u32> = (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect();
                    let want = [Want::Last, Want::All, Want::LastN(1 + (r / 64) % n)][(r / 512) % 3];
                    runs.push((i, toks, want));
                }
                if runs.is_empty() {
                    continue;
                }
                let batch: Vec<Entry> = runs
                    .iter()
                    .map(|(i, toks, want)| Entry {
                        seq: live[*i].0,
                        tokens: toks,
                        want: *want,
                    })
                    .collect();
                let got = m.forward(&batch).unwrap();
                forwards += 1;
                for ((i, toks, want), got) in runs.iter().zip(&got) {
                    live[*i].1.extend(toks);
                    let held = &live[*i].1;
                    assert_eq!(m.len(live[*i].0), held.len());
                    let s = fresh.new_seq().unwrap();
                    let all = fresh.fwd(s, held, Want::All).unwrap();
                    fresh.release(s);
                    let rows = want.rows(toks.len());
                    assert_eq!(
                        got.len(),
                        rows * vocab,
                        "step {step}: {want:?} of {} tokens",
                        toks.len()
                    );
                    let label = format!("step {step}: {:?} {want:?} vs a fresh sequence", live[*i].0);
                    assert_close(&label, got, &all[(held.len() - rows) * vocab..], tol);
                }
            }
            _ => {}
        }
    }
    assert!(forwards >= steps / 8, "only {forwards} forwards in {steps} steps");
    for (s, _) in live {
        m.release(s);
    }
    if let Some(u) = m.kv_usage() {
        assert_eq!(u.pages_used, 0, "every page is free once every sequence is released");
    }
}

/// Check a finished `tinfer args` run: exit code `code`, no panic, every needle on stderr.
pub fn assert_failed(args: &[&str], out: &std::process::Output, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "tinfer {args:?}: exit code; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "tinfer {args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "tinfer {args:?}: stderr should mention {n:?}: {err}");
    }
}

/// Gemma 3 270M's Q4_K_M GGUF (`scripts/fetch-model.sh gemma3-270m`; Gemma licence, never in the
/// repository), or None (test skipped). TINFER_REQUIRE_GEMMA=1 makes it required (CI sets it).
pub fn gemma3_gguf() -> Option<PathBuf> {
    fetched("models/gemma-3-270m-q4_k_m.gguf", "gemma3-270m", "TINFER_REQUIRE_GEMMA")
}

/// Qwen2.5-Coder-0.5B-Instruct's Q4_K_M GGUF (`scripts/fetch-model.sh qwen2.5-coder-0.5b-instruct`),
/// or None (test skipped); with TINFER_REQUIRE_MODEL=1 (CI) a missing file fails the test instead.
pub fn qwen_coder_gguf() -> Option<PathBuf> {
    fetched(
        "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct",
        "TINFER_REQUIRE_MODEL",
    )
}

/// Whether the long Qwen2.5-Coder checks (the 2048-token perplexity, the greedy continuation
/// after 2000 tokens) run: TINFER_LONG_TESTS=1. Without it those tests check the first 512
/// targets only (see `check_argparse_nll`).
pub fn long_tests() -> bool {
    std::env::var("TINFER_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// Perplexity of the argparse.py window (tests/fixtures/qwen2.5-coder/argparse_2048.txt, which
/// must tokenize to HF's 2048 ids) through the engine's scoring: with `full`, all 2047 targets
/// against HF's mean NLL; else the first 513 tokens, whose 512 targets see the same prefixes in
/// a causal model, against HF's mean over the first 512 targets of the 2048 window. Within
/// NLL_VS_HF (or `nll_tol`). Returns (tokens scored, error).
pub fn check_argparse_nll(
    m: &mut Model,
    tok: &tinfer::tokenizer::Tokenizer,
    label: &str,
    full: bool,
    nll_tol: f64,
) -> (usize, f64) {
    let dir = fixtures().join("qwen2.5-coder");
    let text = std::fs::read_to_string(dir.join("argparse_2048.txt")).unwrap();
    let lc = read_json(&dir.join("long_context.json"));
    let ids = tok.encode(&text).unwrap();
    assert_eq!(ids.len(), 2048, "{label}: argparse_2048.txt tokenizes to 2048 ids");
    let (n, want) = if full {
        (2048, lc["nll_2048"]["mean_nll"].as_f64().unwrap())
    } else {
        (513, lc["nll_2048"]["nll_first_512_mean"].as_f64().unwrap())
    };
    let s = tinfer::tools::score::score(m, &ids[..n], n).unwrap();
    assert_eq!(s.n_scored, n - 1);
    let err = (s.mean_nll() - want).abs();
    assert!(
        err < nll_tol,
        "{label}: argparse {n} tokens: mean NLL {} vs HF {want}",
        s.mean_nll()
    );
    eprintln!(
        "{label}: argparse {n} tokens: mean NLL {:.10} (HF {want:.10}), error {err:.2e}",
        s.mean_nll()
    );
    (n, err)
}

/// HF's 32 greedy tokens after the first 2000 tokens of argparse.py (argparse_2000.txt): equal
/// ids, through the engine's generation loop (prefill in chunks, then decode steps).
pub fn check_greedy_from_2000(m: Model, tok: &tinfer::tokenizer::Tokenizer, label: &str) -> Model {
    let dir = fixtures().join("qwen2.5-coder");
    let text = std::fs::read_to_string(dir.join("argparse_2000.txt")).unwrap();
    let g = &read_json(&dir.join("long_context.json"))["greedy_from_2000"];
    let prompt = tok.encode(&text).unwrap();
    assert_eq!(prompt.len(), 2000, "{label}: argparse_2000.txt tokenizes to 2000 ids");
    let want = ids(&g["new_ids"]);
    let (m, got) = greedy(m, &prompt, want.len());
    let first = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(
        got, want,
        "{label}: greedy after 2000 tokens differs first at step {first:?}"
    );
    m
}

/// Bytes from a hex string ("00ff…").
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A golden prompt's chat messages ([{"role", "content"}, …]).
pub fn chat_messages(prompt: &Json) -> Vec<tinfer::tokenizer::Message> {
    prompt["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| tinfer::tokenizer::Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

/// A fresh folder `name` (made unique by the process id) under target/test-tmp.
pub fn tempdir(name: &str) -> PathBuf {
    let d = root()
        .join("target/test-tmp")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Write `tensors` (name, shape, little-endian bytes) of `dtype` as a safetensors file.
pub fn write_safetensors(path: &Path, dtype: safetensors::Dtype, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(dtype, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}
