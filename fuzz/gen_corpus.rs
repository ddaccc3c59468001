//! Writes the seed corpora for the fuzz targets into fuzz/corpus/{gguf,safetensors,config,tokenizer}:
//! small valid files made here (no real weights) and broken variants of them.
use std::collections::HashMap;
use std::path::Path;

use tinfer::gguf::Value;
use tinfer::tools::gguf_write as write;

fn save(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// A tiny llama GGUF: 2 layers, dim 8, 4 heads over 2 KV heads, vocab 16, byte-ish tokenizer.
fn tiny_gguf(ty: u32) -> Vec<u8> {
    let (dim, hidden, vocab, kv) = (8u64, 32u64, 16u64, 4u64);
    let bytes = |n: u64| -> Vec<u8> {
        match ty {
            0 => (0..n)
                .flat_map(|i| ((i % 7) as f32 * 0.1 - 0.3).to_le_bytes())
                .collect(),
            1 => (0..n).flat_map(|i| half_bits(i)).collect(),
            // Q8_0 / Q4_1 blocks of 32: only for tensors whose rows are multiples of 32
            _ => unreachable!(),
        }
    };
    let mut tensors = vec![
        write::Tensor {
            name: "token_embd.weight".into(),
            ne: vec![dim, vocab],
            ggml_type: ty,
            data: bytes(dim * vocab),
        },
        write::Tensor {
            name: "output_norm.weight".into(),
            ne: vec![dim],
            ggml_type: 0,
            data: f32s(dim),
        },
    ];
    for l in 0..2 {
        let t = |n: &str, ne: Vec<u64>| write::Tensor {
            name: format!("blk.{l}.{n}.weight"),
            data: bytes(ne.iter().product()),
            ne,
            ggml_type: ty,
        };
        tensors.push(write::Tensor {
            name: format!("blk.{l}.attn_norm.weight"),
            ne: vec![dim],
            ggml_type: 0,
            data: f32s(dim),
        });
        tensors.push(write::Tensor {
            name: format!("blk.{l}.ffn_norm.weight"),
            ne: vec![dim],
            ggml_type: 0,
            data: f32s(dim),
        });
        tensors.push(t("attn_q", vec![dim, dim]));
        tensors.push(t("attn_k", vec![dim, kv]));
        tensors.push(t("attn_v", vec![dim, kv]));
        tensors.push(t("attn_output", vec![dim, dim]));
        tensors.push(t("ffn_gate", vec![dim, hidden]));
        tensors.push(t("ffn_up", vec![dim, hidden]));
        tensors.push(t("ffn_down", vec![hidden, dim]));
    }
    let tokens: Vec<Value> = (0..vocab)
        .map(|i| Value::String(((b'a' + i as u8) as char).to_string()))
        .collect();
    let md = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.alignment", Value::U32(32)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(dim as u32)),
        ("llama.block_count", Value::U32(2)),
        ("llama.feed_forward_length", Value::U32(hidden as u32)),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type",
            Value::Array((0..vocab).map(|i| Value::I32(if i == 0 { 3 } else { 1 })).collect()),
        ),
        ("tokenizer.ggml.merges", Value::Array(vec![Value::String("a b".into())])),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
        (
            "tokenizer.chat_template",
            Value::String("{% for m in messages %}{{ m['content'] }}{% endfor %}".into()),
        ),
    ];
    write::gguf_bytes(&md, &tensors)
}

fn f32s(n: u64) -> Vec<u8> {
    (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect()
}

fn half_bits(i: u64) -> [u8; 2] {
    // small f16 values: sign, exponent 14, a few mantissa bits
    (((i % 3) as u16) << 15 | 14 << 10 | (i as u16 & 0x3ff)).to_le_bytes()
}

fn quant_gguf() -> Vec<u8> {
    // one tensor of each block type, 2 rows of 32
    let md = [("general.architecture", Value::String("llama".into()))];
    let t = |name: &str, ty: u32, block: usize| write::Tensor {
        name: name.into(),
        ne: vec![32, 2],
        ggml_type: ty,
        data: (0..2 * block).map(|i| (i * 37 % 251) as u8).collect(),
    };
    write::gguf_bytes(
        &md,
        &[t("q8", 8, 34), t("q4_0", 2, 18), t("q4_1", 3, 20), t("bf16", 30, 64)],
    )
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    // GGUF: valid files, and broken ones (cut, flipped bytes, wrong version)
    let g = root.join("gguf");
    let f32_file = tiny_gguf(0);
    let f16_file = tiny_gguf(1);
    save(&g, "tiny-f32.gguf", &f32_file);
    save(&g, "tiny-f16.gguf", &f16_file);
    save(&g, "quant.gguf", &quant_gguf());
    for cut in [4, 24, 100, 400, f32_file.len() / 2, f32_file.len() - 1] {
        save(&g, &format!("cut-{cut}.gguf"), &f32_file[..cut]);
    }
    let mut v1 = f32_file.clone();
    v1[4] = 1;
    save(&g, "version1.gguf", &v1);
    let mut big = f32_file.clone();
    big[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    save(&g, "many-tensors.gguf", &big);

    // safetensors: valid f32/f16/bf16 files and broken ones
    let s = root.join("safetensors");
    let data32: Vec<u8> = (0..24).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let data16: Vec<u8> = (0..24).flat_map(|i| half_bits(i)).collect();
    for (name, dt, data) in [
        ("f32", safetensors::Dtype::F32, &data32),
        ("f16", safetensors::Dtype::F16, &data16),
        ("bf16", safetensors::Dtype::BF16, &data16),
        ("i8", safetensors::Dtype::I8, &data16),
    ] {
        let mut m = HashMap::new();
        let shape = if dt == safetensors::Dtype::I8 {
            vec![6, 8]
        } else {
            vec![4, 6]
        };
        m.insert(
            "model.norm.weight".to_string(),
            safetensors::tensor::TensorView::new(dt, shape, data).unwrap(),
        );
        let bytes = safetensors::serialize(m, None).unwrap();
        save(&s, &format!("{name}.safetensors"), &bytes);
        save(&s, &format!("{name}-cut.safetensors"), &bytes[..bytes.len() - 5]);
    }
    let mut huge = (1u64 << 40).to_le_bytes().to_vec();
    huge.extend(b"{}");
    save(&s, "header-past-end.safetensors", &huge);

    // config.json: the fixtures' configs and broken variants
    let c = root.join("config");
    let base = r#"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-05, "rope_parameters": {"rope_theta": 10000.0},
        "tie_word_embeddings": false}"#;
    save(&c, "llama.json", base.as_bytes());
    save(&c, "qwen2.json", base.replace("llama", "qwen2").as_bytes());
    save(
        &c,
        "heads.json",
        base.replace(r#""num_attention_heads": 4"#, r#""num_attention_heads": 9"#)
            .as_bytes(),
    );
    save(&c, "ctx.json", base.replace("512", "1099511627776").as_bytes());
    save(&c, "truncated.json", &base.as_bytes()[..base.len() / 2]);
    // tokenizer: byte 0 even = a tokenizer.json, odd = a chat template
    let t = root.join("tokenizer");
    let gguf = tinfer::gguf::Gguf::from_bytes(f32_file.clone()).unwrap();
    let tok_json = serde_json::to_string(&gguf.hf_tokenizer_json().unwrap()).unwrap();
    let with_mode = |mode: u8, text: &str| [&[mode][..], text.as_bytes()].concat();
    save(&t, "gguf-tokenizer.json", &with_mode(0, &tok_json));
    save(&t, "gguf-tokenizer-cut.json", &with_mode(0, &tok_json[..tok_json.len() / 2]));
    save(
        &t,
        "bpe-tiny.json",
        &with_mode(0, r#"{"version":"1.0","model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}"#),
    );
    let chatml = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}                  {{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}                  {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}                  {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    save(&t, "chatml.jinja", &with_mode(1, chatml));
    save(&t, "raise.jinja", &with_mode(1, "{{ raise_exception('no system role') }}"));
    save(&t, "loop.jinja", &with_mode(1, "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"));
    save(&t, "strip.jinja", &with_mode(1, "{{ messages[0]['content'].strip().upper() | tojson }}"));
    println!("corpus written to {}", root.display());
}
