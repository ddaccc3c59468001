//! The `tinfer` binary end to end: good runs on a tiny synthetic model (byte-level tokenizer),
//! and the bad inputs a user can give, each of which must fail fast with a short message naming
//! the problem, a non-zero exit, and no panic.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tinfer-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tinfer(args: &[&str], stdin: Option<&[u8]>) -> Output {
    tinfer_env(args, stdin, &[])
}

fn tinfer_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tinfer"));
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .env_remove("TINFER_MODEL")
        .env_remove("TINFER_DEVICE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut si = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            si.write_all(bytes).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = tinfer(args, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tinfer {args:?} failed: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `tinfer args`, expects exit code `code`, an error on stderr containing every needle,
/// no panic, at most a few lines, well under a second.
fn fails(args: &[&str], stdin: Option<&[u8]>, code: i32, needles: &[&str]) {
    fails_env(args, stdin, &[], code, needles)
}

fn fails_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)], code: i32, needles: &[&str]) {
    let start = Instant::now();
    let out = tinfer_env(args, stdin, env);
    let took = start.elapsed();
    assert_failed(args, &out, code, needles);
    let err = String::from_utf8_lossy(&out.stderr);
    if code == 2 {
        assert!(
            err.lines().count() <= 4,
            "tinfer {args:?}: error should be short: {err}"
        );
    }
    assert!(took < Duration::from_secs(2), "tinfer {args:?} took {took:?}");
}

fn tiny(name: &str, overrides: serde_json::Value) -> (PathBuf, String) {
    let dir = tiny_model_dir(&tmp(name), overrides);
    let s = dir.to_str().unwrap().to_string();
    (dir, s)
}

#[test]
fn generate_is_reproducible_and_streams_only_new_text() {
    let (_d, m) = tiny("gen", json!({}));
    let args = [
        "generate",
        "--model",
        &m,
        "--prompt",
        "hello",
        "-n",
        "12",
        "--temperature",
        "0.8",
        "--top-k",
        "40",
    ];
    let a = ok(&[&args[..], &["--seed", "5"]].concat());
    let b = ok(&[&args[..], &["--seed", "5"]].concat());
    let c = ok(&[&args[..], &["--seed", "6"]].concat());
    assert_eq!(a, b, "same seed, same text");
    assert_ne!(a, c, "another seed, other text");
    assert!(!a.starts_with("hello"));
    let echoed = ok(&[&args[..], &["--seed", "5", "--echo"]].concat());
    assert_eq!(echoed, format!("hello{a}"));
    // the byte tokenizer gives one token per byte: 12 tokens are 12 bytes of text
    // (the random model can emit bytes that do not form UTF-8; those come out as U+FFFD)
    let greedy = ok(&["generate", "--model", &m, "--prompt", "hello", "-n", "12"]);
    assert_eq!(
        greedy,
        ok(&["generate", "--model", &m, "--prompt", "hello", "-n", "12", "--seed", "9"])
    );
    // stdin works as the prompt
    let out = tinfer(&["generate", "--model", &m, "-n", "4"], Some(b"hello"));
    assert!(out.status.success());
}

#[test]
fn chat_tokenize_perplexity_info_convert() {
    let (_d, m) = tiny("misc", json!({}));
    let reply = ok(&["chat", "--model", &m, "--prompt", "hi", "-n", "5"]);
    assert!(!reply.contains("<|im_start|>"));
    assert_eq!(
        ok(&["tokenize", "--model", &m, "--json", "AB c"]).trim(),
        "[65,66,32,99]"
    );
    assert_eq!(ok(&["tokenize", "--model", &m, "AB"]).trim(), "65 66");
    let dir = tmp("ppl");
    let file = dir.join("text.txt");
    std::fs::write(&file, "the quick brown fox").unwrap();
    // tokenize -f FILE: the whole file as it is (llama-tokenize's -f)
    std::fs::write(dir.join("ab.txt"), "AB\n").unwrap();
    let ab = dir.join("ab.txt");
    assert_eq!(
        ok(&["tokenize", "--model", &m, "-f", ab.to_str().unwrap()]).trim(),
        "65 66 10"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "perplexity",
        "--model",
        &m,
        "--file",
        file.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(j["n_scored"], 18);
    let nll = j["mean_nll"].as_f64().unwrap();
    assert!((j["ppl"].as_f64().unwrap() - nll.exp()).abs() < 1e-9 * nll.exp());
    // windows of 5 tokens: 19 tokens -> windows 5,5,5,4 -> 4+4+4+3 scored
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "perplexity",
        "--model",
        &m,
        "--file",
        file.to_str().unwrap(),
        "--ctx",
        "5",
        "--json",
    ]))
    .unwrap();
    assert_eq!(j["n_scored"], 15);
    let info: serde_json::Value = serde_json::from_str(&ok(&["info", "--model", &m, "--json"])).unwrap();
    assert_eq!(
        (info["n_kv_heads"].as_u64(), info["head_dim"].as_u64()),
        (Some(2), Some(16))
    );
    assert!(ok(&["info", "--model", &m]).contains("GQA x2"));
    // convert a GGUF and load the result
    let g = tmp("convert");
    std::fs::write(g.join("tiny.gguf"), tiny_gguf_bytes()).unwrap();
    let out_dir = g.join("out");
    ok(&[
        "convert",
        g.join("tiny.gguf").to_str().unwrap(),
        out_dir.to_str().unwrap(),
        "--dtype",
        "f16",
    ]);
    assert!(ok(&["info", "--model", out_dir.to_str().unwrap()]).contains("F16 x"));
}

/// `tinfer chat --prompt` on SmolLM2 prints exactly HF's greedy reply to the golden chat prompt
/// (temperature 0 is the default): the reply only comes out right if the ChatML template, with its
/// default system message, was rendered and tokenized as HF does (`chat_template_renders_as_hf` in
/// tests/smollm2.rs checks the ids), generation stops at <|im_end|>, and special tokens are not
/// printed. The golden rendered text tokenized by `tinfer tokenize` gives the golden ids.
#[test]
fn chat_matches_hf_greedy_reply() {
    let Some(dir) = smollm2_dir() else { return };
    let index = read_json(&fixtures().join("smollm2/index.json"));
    let p = index["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "chat_capital")
        .unwrap();
    let messages = p["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        1,
        "one user turn, the template's default system message"
    );
    assert_eq!(messages[0]["role"], "user");
    let greedy = &p["greedy"];
    assert_eq!(greedy["stopped_at_eos"], true, "HF's reply ends at <|im_end|>");
    let n = greedy["n_new"].as_u64().unwrap().to_string();
    let model = dir.to_str().unwrap();
    let reply = ok(&[
        "chat",
        "--model",
        model,
        "--device",
        "cpu",
        "--prompt",
        messages[0]["content"].as_str().unwrap(),
        "-n",
        &n,
    ]);
    // stdout is the reply and a final newline
    assert_eq!(
        reply,
        format!("{}\n", greedy["text_skip_special"].as_str().unwrap()),
        "greedy chat reply"
    );
    let rendered: Vec<u32> = serde_json::from_str(&ok(&[
        "tokenize",
        "--model",
        model,
        "--json",
        p["text"].as_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(rendered, ids(&p["ids"]), "the rendered template's ids");
}

#[test]
fn bad_model_paths_and_files() {
    let dir = tmp("bad");
    let d = |p: &str| dir.join(p).to_str().unwrap().to_string();
    fails(
        &["generate", "--model", &d("nope"), "--prompt", "x"],
        None,
        2,
        &["does not exist", "fetch-model.sh"],
    );
    // truncated GGUF, at several points
    let gguf = tiny_gguf_bytes();
    for cut in [3, 20, 100, 5000, gguf.len() - 10] {
        std::fs::write(dir.join("cut.gguf"), &gguf[..cut]).unwrap();
        fails(
            &["info", "--model", &d("cut.gguf")],
            None,
            2,
            &["cut.gguf", "truncated"],
        );
    }
    std::fs::write(dir.join("magic.gguf"), b"GGML this is not it").unwrap();
    fails(
        &["generate", "--model", &d("magic.gguf"), "--prompt", "x"],
        None,
        2,
        &["magic.gguf", "wrong magic"],
    );
    // an HF directory whose safetensors is cut short
    let (tdir, t) = tiny("badst", json!({}));
    let st = std::fs::read(tdir.join("model.safetensors")).unwrap();
    std::fs::write(tdir.join("model.safetensors"), &st[..st.len() / 2]).unwrap();
    fails(
        &["info", "--model", &t],
        None,
        2,
        &["model.safetensors", "not a valid safetensors"],
    );
    // header length past the end
    let mut bogus = (1u64 << 40).to_le_bytes().to_vec();
    bogus.extend(b"{}");
    std::fs::write(tdir.join("model.safetensors"), bogus).unwrap();
    fails(&["info", "--model", &t], None, 2, &["model.safetensors"]);
    // not a model at all
    fails(&["info", "--model", &d("")], None, 2, &["config.json"]);
}

#[test]
fn bad_configs_are_explained() {
    // 9 query heads over 2 KV heads
    let (_d, m) = tiny(
        "heads",
        json!({"num_attention_heads": 9, "num_key_value_heads": 2, "head_dim": 16}),
    );
    fails(
        &["info", "--model", &m],
        None,
        2,
        &["config.json", "not a multiple of num_key_value_heads"],
    );
    // a context that would need terabytes of RoPE table and KV cache
    let (_d, m) = tiny("ctx", json!({"max_position_embeddings": 1u64 << 40}));
    fails(
        &["info", "--model", &m],
        None,
        2,
        &["config.json", "max_position_embeddings"],
    );
    // shapes that disagree with the config: all listed in one error
    let (_d, m) = tiny("shape", json!({"intermediate_size": 128}));
    fails(
        &["info", "--model", &m],
        None,
        2,
        &["gate_proj", "[128, 64]", "down_proj"],
    );
    // invalid JSON
    let (d, m) = tiny("json", json!({}));
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    fails(&["info", "--model", &m], None, 2, &["config.json", "not valid JSON"]);
    // a dtype the loader cannot use: an int8 tensor
    let (d, m) = tiny("dtype", json!({}));
    let mut tensors = std::collections::HashMap::new();
    let data = vec![0u8; 64 * 256];
    tensors.insert(
        "model.embed_tokens.weight".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::I8, vec![256, 64], &data).unwrap(),
    );
    safetensors::serialize_to_file(tensors, None, &d.join("model.safetensors")).unwrap();
    fails(&["info", "--model", &m], None, 2, &["missing tensor", "I8"]);
    // a sharded index naming a missing shard
    let (d, m) = tiny("shard", json!({}));
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::write(
        d.join("model.safetensors.index.json"),
        json!({"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}).to_string(),
    )
    .unwrap();
    fails(
        &["info", "--model", &m],
        None,
        2,
        &["model-00001-of-00002.safetensors", "do not exist"],
    );
}

#[test]
fn bad_prompts_and_arguments() {
    let (d, m) = tiny("prompt", json!({"max_position_embeddings": 32}));
    let long = "x".repeat(40);
    fails(
        &["generate", "--model", &m, "--prompt", &long],
        None,
        2,
        &["40 tokens", "context holds 32"],
    );
    fails(
        &["generate", "--model", &m, "--prompt", ""],
        None,
        2,
        &["prompt is empty"],
    );
    fails(
        &["generate", "--model", &m],
        Some(b"\xff\xfe bad"),
        2,
        &["not valid UTF-8"],
    );
    fails(
        &["generate", "--model", &m, "--prompt", "x", "--temperature=-1"],
        None,
        1,
        &["--temperature"],
    );
    fails(&["convert", "a.gguf", "out", "--dtype", "q3"], None, 1, &["q3"]);
    fails(&["generate", "--model", &m, "--device", "tpu"], None, 1, &["tpu"]);
    // no tokenizer
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    fails(
        &["generate", "--model", &m, "--prompt", "x"],
        None,
        2,
        &["needs a tokenizer", "tokenizer.json"],
    );
    // no chat template
    let (d, m) = tiny("notemplate", json!({}));
    std::fs::remove_file(d.join("tokenizer_config.json")).unwrap();
    fails(
        &["chat", "--model", &m, "--prompt", "x"],
        None,
        2,
        &["no chat template"],
    );
}

#[test]
fn gguf_with_unknown_quantisation_is_named() {
    use tinfer::gguf::Value;
    use tinfer::tools::gguf_write as write;
    let dir = tmp("iq2");
    let md = [("general.architecture", Value::String("llama".into()))];
    let t = write::Tensor {
        name: "token_embd.weight".into(),
        ne: vec![256, 1],
        ggml_type: 16,
        data: vec![0; 66],
    };
    std::fs::write(dir.join("iq2.gguf"), write::gguf_bytes(&md, &[t])).unwrap();
    fails(
        &["info", "--model", dir.join("iq2.gguf").to_str().unwrap()],
        None,
        2,
        &["IQ2_XXS", "unsupported tensor type"],
    );
    // a GGUF without a tokenizer: tokenize names the file
    let t = write::Tensor {
        name: "token_embd.weight".into(),
        ne: vec![256, 1],
        ggml_type: 0,
        data: vec![0; 1024],
    };
    let p = dir.join("notok.gguf");
    std::fs::write(&p, write::gguf_bytes(&md, &[t])).unwrap();
    fails(
        &["tokenize", "--model", p.to_str().unwrap(), "x"],
        None,
        2,
        &["notok.gguf: no usable tokenizer"],
    );
    let _ = Path::new("");
}

/// A GGUF of an architecture tinfer does not run (here "gemma3", with a small SentencePiece
/// vocabulary): `tokenize` and `info` read its tokenizer, `generate` refuses it by name in one line.
#[test]
fn unrunnable_architectures_still_tokenize() {
    use tinfer::gguf::Value;
    use tinfer::tools::gguf_write as write;
    let dir = tmp("gemma3");
    let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>"].map(String::from).to_vec();
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(["\u{2581}", "h", "i", "hi", "\u{2581}hi"].map(String::from));
    let n = tokens.len();
    let md = [
        ("general.architecture", Value::String("gemma3".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array((0..n).map(|i| Value::F32(-(i as f32))).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array((0..n).map(|i| Value::I32(if i < 3 { 3 } else { 1 })).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(2)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
    ];
    let path = dir.join("g.gguf");
    std::fs::write(&path, write::gguf_bytes(&md, &[])).unwrap();
    let p = path.to_str().unwrap();
    assert_eq!(
        ok(&["tokenize", "--model", p, "hi hi"]).trim(),
        format!("2 {} {}", n - 1, n - 1)
    );
    let info = ok(&["info", "--model", p]);
    assert!(
        info.contains("architecture gemma3: tinfer cannot run it")
            && info.contains(&format!("tokenizer    {n} tokens")),
        "{info}"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&["info", "--json", "--model", p])).unwrap();
    assert_eq!(
        (j["runnable"].clone(), j["tokenizer"]["vocab_size"].clone()),
        (json!(false), json!(n))
    );
    fails(
        &["generate", "--model", p, "-p", "hi"],
        None,
        2,
        &["architecture \"gemma3\" is not supported"],
    );
}

/// `--device gpu` without any Vulkan driver: exit code 3 and a message that says how to get one.
#[test]
fn gpu_without_adapter_is_explained() {
    let m = fixtures().join("tiny-llama-gqa");
    let m = m.to_str().unwrap();
    let no_driver = [
        ("VK_DRIVER_FILES", "/nonexistent.json"),
        ("VK_ICD_FILENAMES", "/nonexistent.json"),
    ];
    fails_env(
        &["generate", "--model", m, "--device", "gpu", "--prompt", "x"],
        None,
        &no_driver,
        3,
        &["no GPU adapter", "lavapipe", "--device cpu"],
    );
    fails(
        &[
            "generate",
            "--model",
            m,
            "--device",
            "gpu",
            "--adapter",
            "no-such-gpu",
            "--prompt",
            "x",
        ],
        None,
        3,
        &["no-such-gpu"],
    );
    // auto falls back to the CPU and says so
    let out = tinfer_env(
        &["generate", "--model", m, "--prompt", "x", "-n", "2"],
        None,
        &no_driver,
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("device: cpu"));
}

/// The same command on the GPU and on the CPU prints the same text (sampling with a seed, and
/// greedy decoding with the argmax on the device).
#[test]
fn gpu_and_cpu_generate_the_same_text() {
    if gpu_request().is_none() {
        return;
    }
    let m = fixtures().join("tiny-qwen2");
    let m = m.to_str().unwrap();
    for extra in [&["--temperature", "0.7", "--top-p", "0.9", "--seed", "3"][..], &[][..]] {
        let args = [
            &["generate", "--model", m, "--prompt", "The cat", "-n", "24"][..],
            extra,
        ]
        .concat();
        let cpu = ok(&[&args[..], &["--device", "cpu"]].concat());
        let gpu = ok(&[&args[..], &["--device", "gpu", "--dtype", "f32"]].concat());
        assert_eq!(gpu, cpu, "{extra:?}");
    }
    let info = ok(&["info", "--model", m, "--device", "gpu"]);
    assert!(info.contains("max storage binding"), "{info}");
}

/// Hostile GGUF files through the CLI: each fails fast with the file and the problem named.
#[test]
fn hostile_gguf_files_fail_cleanly() {
    use tinfer::gguf::Value;
    use tinfer::tools::gguf_write as write;
    let dir = tmp("hostile");
    let md = [("general.architecture", Value::String("llama".into()))];
    let f32s = |n: usize| vec![0u8; 4 * n];
    let t = |name: &str, ne: Vec<u64>, data: Vec<u8>| write::Tensor {
        name: name.into(),
        ne,
        ggml_type: 0,
        data,
    };
    let mut v4 = tiny_gguf_bytes();
    v4[4] = 4;
    let zero = write::gguf_bytes(&md, &[t("token_embd.weight", vec![8, 0], vec![])]);
    // two tensors whose data overlap: the second's offset moved onto the first's
    let mut overlap = write::gguf_bytes(&md, &[t("a", vec![16], f32s(16)), t("b", vec![16], f32s(16))]);
    let pos = overlap.windows(9).rposition(|w| w == b"\x01\0\0\0\0\0\0\0b").unwrap() + 9 + 4 + 8 + 4;
    overlap[pos..pos + 8].copy_from_slice(&32u64.to_le_bytes());
    let mut huge_count = tiny_gguf_bytes();
    huge_count[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    for (name, bytes, needle) in [
        ("v4.gguf", v4, "version 4"),
        ("zero.gguf", zero, "dimension of 0"),
        ("overlap.gguf", overlap, "overlap"),
        ("count.gguf", huge_count, "more than the file can hold"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        fails(&["info", "--model", p], None, 2, &[name, needle]);
        fails(&["generate", "--model", p, "--prompt", "x"], None, 2, &[name, needle]);
    }
}

#[test]
fn hostile_tokenizer_and_chat_templates_fail_cleanly() {
    // a tokenizer.json that is JSON but not a tokenizer, and one cut in half
    let (dir, m) = tiny("hostile-tok", json!({}));
    std::fs::write(dir.join("tokenizer.json"), r#"{"model": {"type": "BPE", "vocab": 7}}"#).unwrap();
    fails(
        &["generate", "--model", &m, "--prompt", "x"],
        None,
        2,
        &["tokenizer.json", "invalid tokenizer.json"],
    );
    let (dir, m) = tiny("hostile-tok-cut", json!({}));
    let text = std::fs::read(dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), &text[..text.len() / 2]).unwrap();
    fails(
        &["generate", "--model", &m, "--prompt", "x"],
        None,
        2,
        &["tokenizer.json", "not valid JSON"],
    );
    // chat templates: a syntax error, a raise_exception, and a runaway loop (stopped by fuel)
    for (name, template, needle) in [
        ("syntax", "{% for m in messages %}", "does not parse"),
        (
            "raise",
            "{{ raise_exception('roles must alternate') }}",
            "roles must alternate",
        ),
        (
            "runaway",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "rendering the chat template failed",
        ),
        // found by the tokenizer fuzz target (a timeout under the first fuel bound)
        (
            "fuzz-timeout",
            "{% for i in range(100000) %}{%for j in range(050000) %}x{% endfor %}{% endfor %}",
            "ran out of fuel",
        ),
    ] {
        let (dir, m) = tiny(&format!("hostile-template-{name}"), json!({}));
        std::fs::write(dir.join("chat_template.jinja"), template).unwrap();
        fails(&["chat", "--model", &m, "--prompt", "hi"], None, 2, &[needle]);
    }
}

/// `generate --n-seq K`: continuation i is the text `--seed SEED+i` gives alone, on the CPU and
/// on the GPU (shared prompt pages, batched steps); every attention variant and KV layout prints
/// the same greedy text; a pool too small is "KV cache full".
#[test]
fn n_seq_attention_variants_and_kv_options() {
    let m = fixtures().join("tiny-qwen2");
    let m = m.to_str().unwrap();
    let base = [
        "generate",
        "--model",
        m,
        "--prompt",
        "Once upon a time, in a land",
        "-n",
        "20",
    ];
    let sample = ["--temperature", "0.9", "--seed", "11"];
    let devices: &[&str] = if gpu_request().is_some() {
        &["cpu", "gpu"]
    } else {
        &["cpu"]
    };
    for device in devices {
        // f32 on the GPU: sampled text is compared with the CPU's token for token
        let many = ok(&[
            &base[..],
            &sample,
            &["--n-seq", "3", "--device", device, "--dtype", "f32"],
        ]
        .concat());
        for i in 0..3 {
            let seed = (11 + i).to_string();
            let alone = ok(&[&base[..], &["--temperature", "0.9", "--seed", &seed, "--device", "cpu"]].concat());
            let header = format!("--- continuation {} (seed {seed}) ---\n", i + 1);
            let body = many.split(&header).nth(1).unwrap_or_else(|| panic!("{many}"));
            let body = body.split("\n--- continuation").next().unwrap().trim_end_matches('\n');
            // alone, stdout ends with a newline the text does not have
            assert_eq!(format!("{body}\n"), alone, "{device}: continuation {i}");
        }
    }
    if gpu_request().is_none() {
        return;
    }
    let greedy = ok(&[&base[..], &["--device", "cpu"]].concat());
    for (attention, kv) in [
        ("naive", "contiguous"),
        ("naive", "paged"),
        ("flash", "contiguous"),
        ("flash", "paged"),
    ] {
        let got = ok(&[
            &base[..],
            &[
                "--device",
                "gpu",
                "--dtype",
                "f32",
                "--attention",
                attention,
                "--kv",
                kv,
            ],
        ]
        .concat());
        assert_eq!(got, greedy, "{attention} {kv}");
    }
    fails(
        &[&base[..], &["--device", "gpu", "--kv-blocks", "1"]].concat(),
        None,
        2,
        &["KV cache full", "--kv-blocks"],
    );
    // a prompt that fits one page and a generation that outgrows it: KvFull, its text kept
    let args = [
        "generate",
        "--model",
        m,
        "--prompt",
        "Once",
        "-n",
        "40",
        "--device",
        "gpu",
        "--kv-blocks",
        "1",
    ];
    let out = tinfer(&args, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("generated: 13 tokens") && err.contains("stop: KvFull") && err.contains("raise --kv-blocks"),
        "4 prompt tokens and 12 decoded fill the page of 16 rows: {err}"
    );
    fails(
        &[&base[..], &["--kv-memory", "12parsecs"]].concat(),
        None,
        1,
        &["unknown unit"],
    );
    fails(
        &[&base[..], &["--device", "gpu", "--page", "24"]].concat(),
        None,
        2,
        &["multiple of 16"],
    );
}

/// `bench attention` on a small sweep: the JSON records carry every field, errors are small,
/// and the SVG plot is written.
#[test]
fn bench_attention_json_and_svg() {
    if gpu_request().is_none() {
        return;
    }
    let svg = tmp("bench").join("attention.svg");
    let out = ok(&[
        "bench",
        "attention",
        "--seq-lens",
        "17,64",
        "--layouts",
        "gqa,mqa",
        "--head-dims",
        "64",
        "--repeats",
        "1",
        "--json",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    let records = records.as_array().unwrap();
    // 2 lengths × 2 layouts × 2 KV layouts × (2 prefill + 3 decode variants)
    assert_eq!(records.len(), 40);
    for r in records {
        for key in [
            "variant",
            "phase",
            "seq_len",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "ms",
            "gbps",
            "mem_bytes",
            "max_abs_err",
            "kv",
        ] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        assert!(["naive", "flash", "flash-split"].contains(&r["variant"].as_str().unwrap()));
        assert!(r["max_abs_err"].as_f64().unwrap() < 1e-4, "{r}");
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("polyline"));
}

/// `bench kernels` checks each kernel against its CPU twin before timing it: at the tiny model's
/// shapes every variant validates within the default tolerance and is timed; with `--max-err 0`
/// (an f32 GPU sum of 576 terms never equals the CPU's in every one of 192 outputs) the first
/// kernel is refused, named, with exit code 2, and nothing is timed.
#[test]
fn bench_kernels_refuses_kernels_that_do_not_validate() {
    if gpu_request().is_none() {
        return;
    }
    let cfg = fixtures().join("tiny-qwen2/config.json");
    let base = ["bench", "kernels", "--tokens", "3", "--repeats", "1"];
    let j: serde_json::Value = serde_json::from_str(&ok(
        &[&base[..], &["--shapes", cfg.to_str().unwrap(), "--json"]].concat()
    ))
    .unwrap();
    let records = j["records"].as_array().unwrap();
    assert!(records.len() >= 2 * 2 * 5 + 2, "{j}");
    for r in records {
        assert!(r["ms"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["max_abs_err"].as_f64().unwrap() < 1e-3, "{r}");
    }
    let args = [
        &base[..],
        &[
            "--shapes",
            "smollm2-135m",
            "--only",
            "f32 plain wk/wv",
            "--max-err",
            "0",
        ],
    ]
    .concat();
    let out = tinfer(&args, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "matvec f32 plain wk/wv (192x576) does not validate",
        "got",
        "want",
        "max error",
    ] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("wk/wv"),
        "a refused kernel was timed"
    );
}

/// `bench model`: the llama-bench-like numbers as JSON, on a checkpoint and on random weights
/// with a config's shapes, f32 and f16 (the CPU always computes in f32); `--profile` times each
/// kernel of a step.
#[test]
fn bench_model_json() {
    let m = fixtures().join("tiny-llama-gqa");
    let m = m.to_str().unwrap();
    let cfg = fixtures().join("tiny-qwen2/config.json");
    let devices: &[&str] = if gpu_request().is_some() {
        &["cpu", "gpu"]
    } else {
        &["cpu"]
    };
    for device in devices {
        for dtype in ["f32", "f16"] {
            for source in [&["--model", m][..], &["--synthetic", cfg.to_str().unwrap()][..]] {
                let args = [
                    &[
                        "bench",
                        "model",
                        "--device",
                        device,
                        "--dtype",
                        dtype,
                        "--pp",
                        "8,16",
                        "--tg",
                        "4",
                        "--repeats",
                        "1",
                        "--json",
                    ][..],
                    source,
                ]
                .concat();
                let j: serde_json::Value = serde_json::from_str(&ok(&args)).unwrap();
                for key in ["pp8", "pp16", "tg4", "bytes_per_token"] {
                    assert!(j[key].as_f64().unwrap() > 0.0, "{key} in {j}");
                }
                assert_eq!(j["device"], *device);
                let want = if *device == "gpu" { dtype } else { "f32" };
                assert_eq!(j["dtype"], want, "{j}");
                assert_eq!(j["dispatches_per_token"].is_u64(), *device == "gpu", "{j}");
            }
        }
    }
    if gpu_request().is_some() {
        let out = tinfer(
            &[
                "bench",
                "model",
                "--device",
                "gpu",
                "--model",
                m,
                "--pp",
                "8",
                "--tg",
                "2",
                "--repeats",
                "1",
                "--profile",
                "8",
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        for want in [
            "profile of one step of 1 row after 1 cached tokens",
            "profile of one step of 8 rows of one sequence",
            "profile of one step of 8 sequences, a row each",
            "(\"GATHER\", 1.0)", // the batch step's LM head over its rows
            "matvec.wgsl",
            "matmat.wgsl",
        ] {
            assert!(err.contains(want), "{want} missing from:\n{err}");
        }
    }
    fails(
        &["bench", "model", "--synthetic", "gpt-5"],
        None,
        2,
        &["--synthetic gpt-5"],
    );
}

/// A GGUF with incomplete tokenizer metadata (the tiny fixture has no token types, bos or eos):
/// model commands print one `warning:` line per guess on stderr, `info` lists them.
#[test]
fn gguf_metadata_warnings_are_printed_and_listed() {
    let g = tmp("gguf-warnings");
    let m = g.join("tiny.gguf");
    std::fs::write(&m, tiny_gguf_bytes()).unwrap();
    let m = m.to_str().unwrap();
    let out = tinfer(
        &["generate", "--model", m, "--prompt", "hi", "-n", "2", "--device", "cpu"],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 3, "{err}");
    assert!(
        warnings[1].starts_with("warning: tokenizer.ggml.eos_token_id is missing"),
        "{err}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["info", "--model", m, "--json", "--device", "cpu"])).unwrap();
    assert_eq!(info["warnings"].as_array().map(Vec::len), Some(3), "{info}");
    assert!(
        ok(&["info", "--model", m, "--device", "cpu"]).contains("warning      tokenizer.ggml.token_type is missing")
    );
}

/// Parse JSON logits (a list of numbers) back to f32: serde_json writes each f32 in its shortest
/// round-trip form, so this is exact.
fn json_row(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// `tinfer logits`: the .npy file (header, shape (vocab,) or (T, vocab), rows) equals what the
/// library's forward gives on the same ids, across more than one prompt chunk; --json has the
/// same values; the table lists the top tokens; --ids, --ids-file and a text give the same
/// logits; bad ids are usage errors (exit 1) that name the bad item.
#[test]
fn logits_npy_json_table_and_ids() {
    let (d, m) = tiny("logits", json!({}));
    let dir = tmp("logits-out");
    let npy = dir.join("all.npy");
    let npy_s = npy.to_str().unwrap();
    ok(&["logits", "--model", &m, "--prompt", "AB c", "--all", "--out", npy_s]);
    let bytes = std::fs::read(&npy).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    assert_eq!((10 + header_len) % 64, 0, "numpy pads the header to 64 bytes");
    assert_eq!(bytes[10 + header_len - 1], b'\n');
    let (shape, all) = read_npy(&npy);
    let (mut lib, _) = cpu_model(&d);
    let vocab = lib.cfg.vocab_size;
    assert_eq!(shape, vec![4, vocab]);
    let s = lib.new_seq().unwrap();
    let want = lib.fwd(s, &[65, 66, 32, 99], tinfer::model::Want::All).unwrap();
    lib.release(s);
    assert_close("logits --all .npy vs the library", &all, &want, EXACT);

    // the last position only, from ids on the command line and from a file
    let last = dir.join("last.npy");
    ok(&[
        "logits",
        "--model",
        &m,
        "--ids",
        "65, 66,32 99",
        "--out",
        last.to_str().unwrap(),
    ]);
    let (shape, got) = read_npy(&last);
    assert_eq!(shape, vec![vocab]);
    assert_close("logits --ids .npy vs the library", &got, &want[3 * vocab..], EXACT);
    std::fs::write(dir.join("ids.txt"), "65\n66 32,99\n").unwrap();
    let j: serde_json::Value = serde_json::from_str(&ok(&[
        "logits",
        "--model",
        &m,
        "--ids-file",
        dir.join("ids.txt").to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(j["ids"], json!([65, 66, 32, 99]));
    assert_close(
        "logits --json vs the library",
        &json_row(&j["logits"]),
        &want[3 * vocab..],
        EXACT,
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(&["logits", "--model", &m, "--prompt", "AB c", "--json", "--all"])).unwrap();
    let rows = j["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for (t, r) in rows.iter().enumerate() {
        assert_close(
            &format!("logits --json --all row {t}"),
            &json_row(r),
            &want[t * vocab..(t + 1) * vocab],
            EXACT,
        );
    }

    // the table: a header per position, then the top K with the best first
    let table = ok(&["logits", "--model", &m, "--prompt", "AB c", "--all", "--top", "3"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4 * 4, "{table}");
    assert!(lines[12].starts_with("position 3: token 99 \"c\""), "{table}");
    let best = tinfer::cpu::ops::argmax(&want[3 * vocab..]);
    let first: Vec<&str> = lines[13].split_whitespace().collect();
    assert_eq!((first[0], first[1]), ("1", best.to_string().as_str()), "{table}");

    // a prompt longer than one prefill chunk: rows stream chunk by chunk
    let long: Vec<u32> = (0..300).map(|i| (i * 7 % 256) as u32).collect();
    let list: Vec<String> = long.iter().map(|i| i.to_string()).collect();
    let long_npy = dir.join("long.npy");
    ok(&[
        "logits",
        "--model",
        &m,
        "--ids",
        &list.join(","),
        "--all",
        "--out",
        long_npy.to_str().unwrap(),
    ]);
    let (shape, got) = read_npy(&long_npy);
    assert_eq!(shape, vec![300, vocab]);
    let s = lib.new_seq().unwrap();
    let want = lib.fwd(s, &long, tinfer::model::Want::All).unwrap();
    lib.release(s);
    assert_close("logits --all over two chunks vs one forward", &got, &want, TINY_VS_HF);

    fails(
        &["logits", "--model", &m, "--ids", "1,x,3"],
        None,
        1,
        &["\"x\"", "item 2", "not a token id"],
    );
    fails(
        &["logits", "--model", &m, "--ids", "1,-2"],
        None,
        1,
        &["\"-2\"", "not a token id"],
    );
    fails(
        &["logits", "--model", &m, "--ids", "5,256"],
        None,
        1,
        &["256", "item 2", "outside the vocabulary", "255"],
    );
    fails(&["logits", "--model", &m, "--ids", " , "], None, 1, &["no token ids"]);
    fails(&["logits", "--model", &m, "--ids", "1,,2"], None, 1, &["empty item"]);
    std::fs::write(dir.join("empty.txt"), "\n").unwrap();
    let empty = dir.join("empty.txt");
    fails(
        &["logits", "--model", &m, "--ids-file", empty.to_str().unwrap()],
        None,
        1,
        &["no token ids"],
    );
    fails(
        &["logits", "--model", &m, "--ids-file", "/nonexistent/ids"],
        None,
        2,
        &["cannot read the ids file"],
    );
    fails(
        &["logits", "--model", &m, "--ids", "1", "--prompt", "x"],
        None,
        1,
        &["--prompt"],
    );
    fails(
        &["logits", "--model", &m, "--ids", "1", "--top", "0"],
        None,
        1,
        &["--top"],
    );
    let (_d, short) = tiny("logits-short", json!({"max_position_embeddings": 8}));
    fails(
        &["logits", "--model", &short, "--prompt", "0123456789"],
        None,
        1,
        &["10 tokens", "context of 8"],
    );
}

/// `tinfer logits --device gpu` gives the CPU's logits (tiny Qwen2 model, every position).
#[test]
fn logits_on_the_gpu_match_the_cpu() {
    if gpu_request().is_none() {
        return;
    }
    let m = fixtures().join("tiny-qwen2");
    let dir = tmp("logits-gpu");
    let mut rows = vec![];
    for device in ["cpu", "gpu"] {
        let npy = dir.join(format!("{device}.npy"));
        let args = [
            "logits",
            "--model",
            m.to_str().unwrap(),
            "--device",
            device,
            "--dtype",
            "f32",
        ];
        let out = npy.to_str().unwrap();
        ok(&[&args[..], &["--ids", "1,5,9,200,3,17", "--all", "--out", out]].concat());
        rows.push(read_npy(&npy));
    }
    assert_eq!(rows[0].0, rows[1].0);
    assert_close("logits gpu vs cpu", &rows[1].1, &rows[0].1, TINY_VS_HF);
}

/// `perplexity --chunks N` scores only the first N windows.
#[test]
fn perplexity_chunks_scores_the_first_windows() {
    let (_d, m) = tiny("ppl-chunks", json!({}));
    let dir = tmp("ppl-chunks-out");
    let file = dir.join("text.txt");
    std::fs::write(&file, "the quick brown fox").unwrap();
    let run = |extra: &[&str]| -> serde_json::Value {
        let f = file.to_str().unwrap();
        serde_json::from_str(&ok(
            &[&["perplexity", "--model", &m, "--file", f, "--json"], extra].concat()
        ))
        .unwrap()
    };
    // windows of 5 tokens: 19 tokens; the first two windows score 4 + 4
    let two = run(&["--ctx", "5", "--chunks", "2"]);
    assert_eq!(two["n_scored"], 8);
    // ... and equal a file holding just those 10 tokens
    std::fs::write(&file, "the quick ").unwrap();
    let ten = run(&["--ctx", "5"]);
    assert_eq!(ten["n_scored"], 8);
    assert_eq!(two["mean_nll"], ten["mean_nll"]);
    fails(
        &[
            "perplexity",
            "--model",
            &m,
            "--file",
            file.to_str().unwrap(),
            "--chunks",
            "0",
        ],
        None,
        1,
        &["--chunks"],
    );
    fails(
        &[
            "perplexity",
            "--model",
            &m,
            "--file",
            file.to_str().unwrap(),
            "--ctx",
            "1",
        ],
        None,
        1,
        &["--ctx"],
    );
}

/// The KL-divergence harness end to end: a CPU run saved as the base, the same run against it
/// (KL exactly 0, every top-1 equal, no perplexity difference), the GPU's f16 weights against it
/// (a small positive KL), and a base from another text refused.
#[test]
fn perplexity_kl_base_compares_runs() {
    let (_d, m) = tiny("ppl-kl", json!({}));
    let dir = tmp("ppl-kl-out");
    let (file, base) = (dir.join("text.txt"), dir.join("base.kl"));
    std::fs::write(&file, "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n").unwrap();
    let (f, b) = (file.to_str().unwrap(), base.to_str().unwrap());
    let run = |extra: &[&str]| -> serde_json::Value {
        serde_json::from_str(&ok(
            &[&["perplexity", "--model", &m, "--file", f, "--json"], extra].concat()
        ))
        .unwrap()
    };
    let saved = run(&["--device", "cpu", "--save-logits", b, "--kl-top", "16"]);
    let same = run(&["--device", "cpu", "--kl-base", b]);
    assert_eq!(same["mean_nll"], saved["mean_nll"]);
    let kl = &same["kl"];
    assert_eq!(kl["n_scored"], saved["n_scored"]);
    assert_eq!(
        (kl["kl_mean"].as_f64(), kl["kl_max"].as_f64()),
        (Some(0.0), Some(0.0)),
        "{kl}"
    );
    assert_eq!(kl["top1_agreement"].as_f64(), Some(1.0));
    assert_eq!(kl["ppl_diff"].as_f64(), Some(0.0));
    if gpu_request().is_some() {
        let f16 = run(&["--device", "gpu", "--dtype", "f16", "--kl-base", b]);
        let kl = &f16["kl"];
        let mean = kl["kl_mean"].as_f64().unwrap();
        assert!(
            mean > 0.0 && mean < 1e-2 && kl["kl_p99"].as_f64().unwrap() >= mean / 10.0,
            "{kl}"
        );
        let d = f16["mean_nll"].as_f64().unwrap() - saved["mean_nll"].as_f64().unwrap();
        assert!((kl["mean_nll_diff"].as_f64().unwrap() - d).abs() < 1e-9, "{kl} vs {d}");
    }
    std::fs::write(&file, "another text").unwrap();
    fails(
        &["perplexity", "--model", &m, "--file", f, "--kl-base", b],
        None,
        2,
        &["the KL base was made with another window, length or vocabulary"],
    );
    std::fs::write(&base, b"not a base").unwrap();
    fails(
        &["perplexity", "--model", &m, "--file", f, "--kl-base", b],
        None,
        2,
        &["not a KL base"],
    );
}

/// The chat REPL sends the whole conversation each turn and the prefix cache supplies what
/// came before: the second turn's stats line counts cached prompt tokens, on the CPU (block
/// copies) and the GPU (shared pages), and both devices give the same greedy replies.
#[test]
fn chat_turns_reuse_the_conversation_through_the_prefix_cache() {
    let Some(dir) = smollm2_dir() else { return };
    let mut replies = vec![];
    for device in ["cpu", "gpu"] {
        if device == "gpu" && gpu_request().is_none() {
            continue;
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_tinfer"))
            .args(["chat", "--model", dir.to_str().unwrap(), "--device", device, "-n", "12"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"What is the capital of France?\nAnd of Italy?\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{device}: {err}");
        let stats: Vec<&str> = err.lines().filter(|l| l.contains("[prompt:")).collect();
        assert_eq!(stats.len(), 2, "{device}: {err}");
        assert!(
            !stats[0].contains("cached"),
            "{device}: the first turn has nothing cached: {}",
            stats[0]
        );
        let cached: usize = stats[1]
            .split(" cached)")
            .next()
            .and_then(|s| s.rsplit('(').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{device}: no cached count in {}", stats[1]));
        assert!(cached >= 32, "{device}: {}", stats[1]);
        replies.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    if replies.len() == 2 {
        assert_eq!(replies[0], replies[1], "greedy replies on the CPU and the GPU");
    }
}
