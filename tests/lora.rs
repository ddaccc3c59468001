//! LoRA adapters (src/lora.rs, src/gpu/lora.rs): a PEFT adapter on the tiny llama against PEFT's
//! own outputs (unmerged at scale 1 and 0.5, merged, greedy) on the CPU and the GPU (lavapipe
//! in CI); rsLoRA's scale; several adapters adding up; different adapters per sequence in one
//! batch equal to separate runs; every refusal of the loader.

mod common;
use common::*;

use std::path::{Path, PathBuf};

use tinfer::loader;
use tinfer::lora::Lora;
use tinfer::model::{Device, Dtype, Entry, Model, Options, Want};

fn base() -> PathBuf {
    fixtures().join("tiny-llama-gqa")
}

fn lora_dir() -> PathBuf {
    fixtures().join("tiny-llama-gqa-lora")
}

/// The tiny llama with `adapters` (folder, factor) unmerged, on the CPU or (None when there is no
/// adapter) the GPU in f32.
fn model(base: &Path, adapters: &[(&Path, f32)], gpu: bool, max_seqs: usize) -> Option<Model> {
    let mut l = loader::load(base).unwrap();
    let loras: Vec<Lora> = adapters
        .iter()
        .map(|&(p, f)| Lora {
            default_factor: f,
            ..Lora::load(p, &l.cfg).unwrap()
        })
        .collect();
    let opts = Options {
        dtype: Dtype::F32,
        max_seqs,
        ..Options::default()
    };
    let (device, name) = if gpu {
        (Device::Gpu, gpu_request()?.adapter)
    } else {
        (Device::Cpu, None)
    };
    let w = l.weights.take().unwrap();
    Some(Model::with_loras(l.cfg.clone(), w, loras, device, name.as_deref(), &opts).unwrap())
}

fn all_logits(m: &mut Model, tokens: &[u32]) -> Vec<f32> {
    let s = m.new_seq().unwrap();
    let out = m.fwd(s, tokens, Want::All).unwrap();
    m.release(s);
    out
}

/// PEFT's logits at every position of both inputs, at `factor` (1: `X.logits.npy`, 0.5:
/// `X.logits_scale0.5.npy`).
fn check_peft(gpu: bool) {
    let golden = read_json(&lora_dir().join("golden.json"));
    let adapter = lora_dir().join("adapter");
    for (factor, file) in [(1.0, "logits"), (0.5, "logits_scale0.5")] {
        let Some(mut m) = model(&base(), &[(&adapter, factor)], gpu, 1) else { return };
        for input in ["random", "arange"] {
            let tokens = ids(&golden["inputs"][input]["ids"]);
            let (_, want) = read_npy(&lora_dir().join(format!("{input}.{file}.npy")));
            let got = all_logits(&mut m, &tokens);
            assert_close(&format!("gpu {gpu}: {input} at factor {factor}"), &got, &want, TINY_VS_HF);
        }
    }
}

#[test]
fn cpu_logits_match_peft() {
    check_peft(false);
}

#[test]
fn gpu_logits_match_peft() {
    check_peft(true);
}

/// Greedy decoding with the adapter gives PEFT's tokens (and its step logits), on both devices.
#[test]
fn greedy_matches_peft() {
    let golden = read_json(&lora_dir().join("golden.json"));
    let g = &golden["greedy_kv_cache"];
    let (prompt, want) = (ids(&g["prompt_ids"]), ids(&g["new_ids"]));
    let (_, want_logits) = read_npy(&lora_dir().join("greedy.step_logits.npy"));
    let adapter = lora_dir().join("adapter");
    for gpu in [false, true] {
        let Some(mut m) = model(&base(), &[(&adapter, 1.0)], gpu, 1) else { continue };
        let s = m.new_seq().unwrap();
        let mut logits = m.fwd(s, &prompt, Want::Last).unwrap();
        let mut got = vec![];
        let mut step_logits = vec![];
        for _ in 0..want.len() {
            step_logits.extend_from_slice(&logits);
            let next = tinfer::cpu::ops::argmax(&logits) as u32;
            got.push(next);
            logits = m.fwd(s, &[next], Want::Last).unwrap();
        }
        assert_eq!(got, want, "gpu {gpu}: greedy ids");
        assert_close(&format!("gpu {gpu}: greedy step logits"), &step_logits, &want_logits, TINY_VS_HF);
        // the device's own greedy loop (decode-ahead on the GPU) too
        m.truncate(s, 0);
        m.fwd(s, &prompt[..prompt.len() - 1], Want::Last).unwrap();
        let ahead = m.decode_greedy(s, *prompt.last().unwrap(), want.len()).unwrap();
        assert_eq!(ahead, want, "gpu {gpu}: decode_greedy ids");
    }
}

/// `--lora-merge`: the adapter merged into the weights at load gives the unmerged logits within
/// rounding, and PEFT's merged model's logits.
#[test]
fn merged_at_load_equals_unmerged() {
    let golden = read_json(&lora_dir().join("golden.json"));
    let mut l = loader::load(&base()).unwrap();
    let lora = Lora::load(&lora_dir().join("adapter"), &l.cfg).unwrap();
    let mut w = l.weights.take().unwrap();
    lora.merge_into(&mut w, 1.0);
    let mut m = Model::new(l.cfg.clone(), w, Device::Cpu, None).unwrap();
    for input in ["random", "arange"] {
        let tokens = ids(&golden["inputs"][input]["ids"]);
        let (_, want) = read_npy(&lora_dir().join(format!("{input}.merged_logits.npy")));
        assert_close(&format!("merged {input}"), &all_logits(&mut m, &tokens), &want, TINY_VS_HF);
    }
}

/// A sequence's factors: 0 gives the base model exactly; two copies of the adapter at 0.25 each
/// add up to one at 0.5; forks keep their parent's factors.
#[test]
fn factors_add_up_and_zero_is_the_base() {
    let golden = read_json(&lora_dir().join("golden.json"));
    let tokens = ids(&golden["inputs"]["random"]["ids"]);
    let adapter = lora_dir().join("adapter");
    for gpu in [false, true] {
        let Some(mut two) = model(&base(), &[(&adapter, 0.25), (&adapter, 0.25)], gpu, 4) else { continue };
        let (_, half) = read_npy(&lora_dir().join("random.logits_scale0.5.npy"));
        assert_close(&format!("gpu {gpu}: 0.25 + 0.25"), &all_logits(&mut two, &tokens), &half, TINY_VS_HF);
        let s = two.new_seq().unwrap();
        two.set_lora(s, &[0.0, 0.0]).unwrap();
        let off = two.fwd(s, &tokens, Want::All).unwrap();
        two.release(s);
        let (_, base_logits) = read_npy(&lora_dir().join("random.base_logits.npy"));
        assert_close(&format!("gpu {gpu}: factors 0"), &off, &base_logits, TINY_VS_HF);
        // set_lora after the first token is refused; a fork inherits the factors
        let s = two.new_seq().unwrap();
        two.set_lora(s, &[1.0, 0.0]).unwrap();
        two.fwd(s, &tokens[..3], Want::Last).unwrap();
        let err = two.set_lora(s, &[0.0, 0.0]).unwrap_err().to_string();
        assert!(err.contains("before its first token"), "{err}");
        let f = two.fork(s).unwrap();
        assert_eq!(two.lora_factors(f), &[1.0, 0.0]);
        assert!(two.set_lora(s, &[1.0]).unwrap_err().to_string().contains("1 LoRA factors given for 2"));
    }
}

/// Sequences with different adapters (none, the adapter, half of it) in ONE batch give what each
/// gives alone: prompts in one step, then decode steps of three rows.
#[test]
fn mixed_adapters_in_one_batch_equal_separate_runs() {
    let golden = read_json(&lora_dir().join("golden.json"));
    let tokens = ids(&golden["inputs"]["random"]["ids"]);
    let adapter = lora_dir().join("adapter");
    let factors = [0.0f32, 1.0, 0.5];
    for gpu in [false, true] {
        let Some(mut m) = model(&base(), &[(&adapter, 1.0)], gpu, 4) else { continue };
        // alone
        let mut alone = vec![];
        for &f in &factors {
            let s = m.new_seq().unwrap();
            m.set_lora(s, &[f]).unwrap();
            let mut rows = m.fwd(s, &tokens[..5], Want::Last).unwrap();
            for &t in &tokens[5..9] {
                rows.extend(m.fwd(s, &[t], Want::Last).unwrap());
            }
            m.release(s);
            alone.push(rows);
        }
        // together
        let seqs: Vec<_> = factors
            .iter()
            .map(|&f| {
                let s = m.new_seq().unwrap();
                m.set_lora(s, &[f]).unwrap();
                s
            })
            .collect();
        let mut together = vec![vec![]; 3];
        let step = |m: &mut Model, toks: &[u32], out: &mut Vec<Vec<f32>>| {
            let batch: Vec<Entry> = seqs
                .iter()
                .map(|&seq| Entry {
                    seq,
                    tokens: toks,
                    want: Want::Last,
                })
                .collect();
            for (o, l) in out.iter_mut().zip(m.forward(&batch).unwrap()) {
                o.extend(l);
            }
        };
        step(&mut m, &tokens[..5], &mut together);
        for t in 5..9 {
            step(&mut m, &tokens[t..t + 1], &mut together);
        }
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            assert_close(&format!("gpu {gpu}: factor {} batched", factors[i]), b, a, KERNEL_VS_CPU);
        }
        let (_, want) = read_npy(&lora_dir().join("random.logits.npy"));
        let v = m.cfg.vocab_size;
        assert_close(&format!("gpu {gpu}: batched vs PEFT"), &together[1][..v], &want[4 * v..5 * v], TINY_VS_HF);
    }
}

/// rsLoRA (use_rslora: scale α/√r instead of α/r), rank_pattern / alpha_pattern, and a regex
/// target_modules, on a hand-made adapter: the same A and B saved three ways give the updates
/// each scale implies.
#[test]
fn rslora_and_patterns_scale_as_peft() {
    let cfg = loader::load(&base()).unwrap().cfg;
    let dir = tempdir("rslora");
    let adapter = lora_dir().join("adapter");
    let st = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), &st).unwrap();
    let mut j = read_json(&adapter.join("adapter_config.json"));
    let load = |j: &serde_json::Value| {
        std::fs::write(dir.join("adapter_config.json"), j.to_string()).unwrap();
        Lora::load(&dir, &cfg)
    };
    let plain = load(&j).unwrap();
    let q = |l: &Lora| l.pair(0, tinfer::arch::Field::Wq).unwrap().scale;
    assert_eq!(q(&plain), 8.0 / 4.0);
    j["use_rslora"] = true.into();
    let rs = load(&j).unwrap();
    assert_eq!(q(&rs), 8.0 / 2.0, "rsLoRA: alpha / sqrt(r)");
    j["alpha_pattern"] = serde_json::json!({"q_proj": 2.0, "model.layers.1.mlp.down_proj": 32.0});
    let pat = load(&j).unwrap();
    assert_eq!(q(&pat), 2.0 / 2.0);
    assert_eq!(pat.pair(1, tinfer::arch::Field::WDown).unwrap().scale, 32.0 / 2.0);
    assert_eq!(pat.pair(0, tinfer::arch::Field::WDown).unwrap().scale, 8.0 / 2.0);
    j["target_modules"] = r".*\.(q|k|v|o|gate|up|down)_proj".into();
    assert!(load(&j).is_ok(), "a regex target_modules");
    // and the unmerged update follows the scale: rsLoRA at factor 0.5 is plain LoRA at factor 1
    let tokens = ids(&read_json(&lora_dir().join("golden.json"))["inputs"]["random"]["ids"]);
    j["alpha_pattern"] = serde_json::json!({});
    load(&j).unwrap();
    let mut m = model(&base(), &[(&dir, 0.5)], false, 1).unwrap();
    let (_, want) = read_npy(&lora_dir().join("random.logits.npy"));
    assert_close("rsLoRA at 0.5", &all_logits(&mut m, &tokens), &want, TINY_VS_HF);
}

/// A fresh folder under the target directory.
fn tempdir(name: &str) -> PathBuf {
    let d = root().join("target/test-tmp").join(format!("lora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every refusal names what is wrong: the fields tinfer does not implement, and in one error the
/// tensors that do not fit (another hidden size, a layer past the last, a module it lacks, a
/// rank other than the config's, a targeted module without its pair).
#[test]
fn refusals_name_the_problem() {
    let cfg = loader::load(&base()).unwrap().cfg;
    let adapter = lora_dir().join("adapter");
    let good = read_json(&adapter.join("adapter_config.json"));
    let st = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
    let dir = tempdir("refusals");
    let try_cfg = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut j = good.clone();
        edit(&mut j);
        std::fs::write(dir.join("adapter_config.json"), j.to_string()).unwrap();
        std::fs::write(dir.join("adapter_model.safetensors"), &st).unwrap();
        format!("{:#}", Lora::load(&dir, &cfg).unwrap_err())
    };
    for (field, value, needle) in [
        ("use_dora", serde_json::json!(true), "use_dora"),
        ("modules_to_save", serde_json::json!(["lm_head"]), "modules_to_save"),
        ("bias", serde_json::json!("all"), "bias"),
        ("bias", serde_json::json!("lora_only"), "bias"),
        ("lora_bias", serde_json::json!(true), "lora_bias"),
        ("peft_type", serde_json::json!("IA3"), "peft_type"),
        ("r", serde_json::json!(8), "rank 8"),
        ("target_modules", serde_json::json!(["q_proj"]), "target_modules / layers_to_transform do not select"),
        ("layers_to_transform", serde_json::json!([0]), "do not select"),
        ("target_modules", serde_json::json!("(unclosed"), "not a valid regex"),
    ] {
        let err = try_cfg(&|j| j[field] = value.clone());
        assert!(err.contains(needle), "{field} = {value}: {err}");
    }
    // tensors of another model: hidden 64 -> 96 (a wider A), a 3rd layer, an embedding LoRA
    let mut tensors = read_adapter(&adapter);
    let (name, (shape, data)) = tensors.pop_first().unwrap();
    let wide: Vec<f32> = data.iter().chain(&data).copied().take(shape[0] * (shape[1] + 32)).collect();
    tensors.insert(name.clone(), (vec![shape[0], shape[1] + 32], wide));
    let l2 = "base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight".to_string();
    tensors.insert(l2, (vec![4, 64], vec![0.0; 256]));
    let emb = "base_model.model.model.embed_tokens.lora_embedding_A".to_string();
    tensors.insert(emb, (vec![4, 256], vec![0.0; 1024]));
    write_adapter(&dir, &tensors);
    std::fs::write(dir.join("adapter_config.json"), good.to_string()).unwrap();
    let err = format!("{:#}", Lora::load(&dir, &cfg).unwrap_err());
    for needle in ["does not fit this model", "hidden 64, 2 layers", "layer 2, but the model has 2", "lora_embedding_A", &name.replace("base_model.model.", "").replace(".lora_A.weight", "")] {
        assert!(err.contains(needle), "missing {needle:?} in: {err}");
    }
    assert!(!err.contains('\n'), "one line: {err}");
    // no folder, no weights, a pickle
    let err = format!("{:#}", Lora::load(&dir.join("nope"), &cfg).unwrap_err());
    assert!(err.contains("is not a folder"), "{err}");
    std::fs::remove_file(dir.join("adapter_model.safetensors")).unwrap();
    std::fs::write(dir.join("adapter_model.bin"), b"pickle").unwrap();
    let err = format!("{:#}", Lora::load(&dir, &cfg).unwrap_err());
    assert!(err.contains("safe_serialization"), "{err}");
}

type Tensors = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn read_adapter(dir: &Path) -> Tensors {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            let vals = v.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
            (n, (v.shape().to_vec(), vals))
        })
        .collect()
}

fn write_adapter(dir: &Path, tensors: &Tensors) {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, v))| (n.clone(), s.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("adapter_model.safetensors")).unwrap();
}
