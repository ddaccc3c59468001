//! The GGUF reader: dequantisation against the reference's decoded blocks, the Q/K row order,
//! the GGUF route against the safetensors route, and hostile or broken files.

mod common;
use common::*;

use tinfer::gguf::{dequantize, unpermute_rows, GgmlType, Gguf, Value};
use tinfer::loader;
use tinfer::model::{Device, Model, Want};
use tinfer::tools::gguf_write as write;

#[test]
fn dequantisation_matches_reference_bit_for_bit() {
    let d = read_json(&fixtures().join("dequant.json"));
    let mut checked = 0;
    for (name, t) in d["tensors"].as_object().unwrap() {
        let ty = match t["ggml_type"].as_str().unwrap() {
            "Q8_0" => GgmlType::Q8_0,
            "Q4_1" => GgmlType::Q4_1,
            other => panic!("{name}: fixture type {other}"),
        };
        let bytes: Vec<u8> = t["first_blocks_hex"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|h| hex(h.as_str().unwrap()))
            .collect();
        let want: Vec<f32> = t["first_blocks_dequant_gguf_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = dequantize(ty, &bytes);
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: {g} vs {w}");
        }
        checked += 1;
    }
    assert!(checked >= 3);
}

#[test]
fn simple_types_dequantise() {
    // F16, BF16, Q4_0: one value each way, computed by hand.
    assert_eq!(
        dequantize(GgmlType::F16, &half::f16::from_f32(-2.5).to_le_bytes()),
        [-2.5]
    );
    assert_eq!(
        dequantize(GgmlType::BF16, &half::bf16::from_f32(3.0).to_le_bytes()),
        [3.0]
    );
    let mut q4_0 = half::f16::from_f32(0.5).to_le_bytes().to_vec();
    q4_0.extend([0x0Fu8; 16]); // low nibble 15 -> (15-8)*0.5 = 3.5, high nibble 0 -> -4
    let v = dequantize(GgmlType::Q4_0, &q4_0);
    assert_eq!((v[0], v[16]), (3.5, -4.0));
}

#[test]
fn qk_row_mapping_matches_reference() {
    let d = read_json(&fixtures().join("dequant.json"));
    let t = &d["tensors"]["blk.0.attn_k.weight"];
    // The fixture lists the first rows, then "..."; its note states the rule: within each head of
    // 64 rows, HF rows 0..31 are GGUF rows 0, 2, .., 62 and HF rows 32..63 are GGUF rows 1, 3, .., 63.
    let listed: Vec<usize> = t["hf_row_i_is_gguf_row"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_u64())
        .map(|v| v as usize)
        .collect();
    let rows = t["hf_shape"][0].as_u64().unwrap() as usize;
    let rule: Vec<usize> = (0..rows)
        .map(|r| {
            (r / 64) * 64
                + if r % 64 < 32 {
                    2 * (r % 64)
                } else {
                    2 * (r % 64 - 32) + 1
                }
        })
        .collect();
    assert_eq!(listed[..], rule[..listed.len()], "the rule agrees with the listed rows");
    // Tag each GGUF row with its index and un-permute (3 KV heads for SmolLM2's k_proj).
    let mut data: Vec<f32> = (0..rows).map(|r| r as f32).collect();
    unpermute_rows(&mut data, rows, 1, 3);
    let got: Vec<usize> = data.iter().map(|&r| r as usize).collect();
    assert_eq!(got, rule);
    // and our copy of llama.cpp's permutation is its inverse
    assert_eq!(
        permute_rows(&data, rows, 1, 3),
        (0..rows).map(|r| r as f32).collect::<Vec<_>>()
    );
}

/// The real GGUF file (Q8_0 embeddings, Q4_1 matrices, permuted Q/K, metadata config) read
/// directly on the CPU against HF's float32 logits of the same weights: the last-position logits
/// of two golden prompts within SMOLLM2_VS_HF. Unlike the tiny round trip below, this checks the
/// GGUF route against a reference nobody on this team wrote (dequantisation, un-permutation, RoPE
/// base, norm epsilon and tied head as llama.cpp's file states them).
#[test]
fn gguf_route_matches_hf_logits() {
    let Some(path) = smollm2_gguf() else { return };
    let mut l = loader::load(&path).unwrap();
    let mut m = Model::new(l.cfg.clone(), l.weights.take().unwrap(), Device::Cpu, None).unwrap();
    let index = read_json(&fixtures().join("smollm2/index.json"));
    let prompts = index["prompts"].as_array().unwrap();
    for name in ["single_token", "prose"] {
        let p = prompts.iter().find(|p| p["name"] == name).unwrap();
        let seq = m.new_seq().unwrap();
        let got = m.fwd(seq, &ids(&p["ids"]), Want::Last).unwrap();
        m.release(seq);
        let (_, want) = read_npy(&fixtures().join(format!("smollm2/{name}.last_logits.npy")));
        assert_close(
            &format!("GGUF route, {name}: last logits vs HF"),
            &got,
            &want,
            SMOLLM2_VS_HF,
        );
        eprintln!(
            "GGUF route, {name}: max |error| vs HF {:.2e}",
            max_abs_diff(&got, &want)
        );
    }
}

/// The tiny Llama written as llama.cpp writes GGUF (Q/K permuted) and read back through the GGUF
/// route gives exactly the safetensors route's logits: names, shapes, permutation and config agree
/// (both routes share the loader, so this is a round trip; `gguf_route_matches_hf_logits` is the
/// check against the reference).
#[test]
fn gguf_route_equals_safetensors_route() {
    let dir = std::env::temp_dir().join(format!("tinfer-gguf-route-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_gguf_bytes()).unwrap();
    let mut a = loader::load(&path).unwrap();
    let mut b = loader::load(&fixtures().join("tiny-llama-gqa")).unwrap();
    assert_eq!(a.cfg.n_kv_heads, 2);
    assert_eq!((a.cfg.rope_theta, a.cfg.norm_eps), (b.cfg.rope_theta, b.cfg.norm_eps));
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 % 256) as u32).collect();
    let mut ma = Model::new(a.cfg.clone(), a.weights.take().unwrap(), Device::Cpu, None).unwrap();
    let mut mb = Model::new(b.cfg.clone(), b.weights.take().unwrap(), Device::Cpu, None).unwrap();
    let (sa, sb) = (ma.new_seq().unwrap(), mb.new_seq().unwrap());
    let la = ma.fwd(sa, &tokens, Want::All).unwrap();
    let lb = mb.fwd(sb, &tokens, Want::All).unwrap();
    assert_eq!(la, lb);
    // and the synthesised tokenizer is byte-level over the 256 tokens
    let tok = a.tokenizer.as_ref().expect("tokenizer from GGUF metadata");
    let ids = tok.encode("héllo 42").unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), "héllo 42");
    std::fs::remove_dir_all(&dir).ok();
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

fn err(bytes: Vec<u8>) -> String {
    match Gguf::from_bytes(bytes) {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn hostile_headers_fail_without_allocating() {
    assert!(err(b"GGML\x03\0\0\0".to_vec()).contains("wrong magic"));
    let mut v1 = header(0, 0);
    v1[4] = 1;
    assert!(err(v1).contains("version 1"));
    assert!(err(header(1 << 60, 0)).contains("more than the file can hold"));
    assert!(err(header(0, u64::MAX)).contains("more than the file can hold"));
    // a 2^40-byte string
    let mut s = header(0, 1);
    s.extend((1u64 << 40).to_le_bytes());
    s.extend([0u8; 16]);
    assert!(err(s).contains("length"));
    // an array claiming 2^60 u32 elements
    let mut a = header(0, 1);
    a.extend(1u64.to_le_bytes());
    a.push(b'k');
    a.extend(9u32.to_le_bytes());
    a.extend(4u32.to_le_bytes());
    a.extend((1u64 << 60).to_le_bytes());
    a.extend([0u8; 16]);
    assert!(err(a).contains("array claims"));
}

fn tensor(name: &str, ne: Vec<u64>, ty: u32, data: Vec<u8>) -> write::Tensor {
    write::Tensor {
        name: name.into(),
        ne,
        ggml_type: ty,
        data,
    }
}

#[test]
fn broken_tensor_tables_are_named() {
    let md = [("general.architecture", Value::String("llama".into()))];
    let f32s = |n: usize| vec![0u8; 4 * n];
    // unknown type: IQ2_XXS is named
    let e = err(write::gguf_bytes(&md, &[tensor("a", vec![256], 16, vec![0; 66])]));
    assert!(e.contains("IQ2_XXS"), "{e}");
    // ternary and FP4 types too (ggml's TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39)
    for (ty, name, bytes) in [(34, "TQ1_0", 54), (35, "TQ2_0", 66), (39, "MXFP4", 136)] {
        let e = err(write::gguf_bytes(&md, &[tensor("a", vec![256], ty, vec![0; bytes])]));
        assert!(
            e.contains(&format!("type {ty} ({name})")) && e.contains("llama-quantize"),
            "{e}"
        );
    }
    // a dimension of 0
    let e = err(write::gguf_bytes(&md, &[tensor("a", vec![4, 0], 0, vec![])]));
    assert!(e.contains("dimension of 0"), "{e}");
    // shape product overflows
    let e = err(write::gguf_bytes(
        &md,
        &[tensor("a", vec![1 << 32, 1 << 32, 1 << 32], 0, f32s(1))],
    ));
    assert!(e.contains("overflows"), "{e}");
    // data past the end: claim 1000 elements, write 4
    let e = err(write::gguf_bytes(&md, &[tensor("a", vec![1000], 0, f32s(4))]));
    assert!(e.contains("past the end"), "{e}");
    // overlapping: two tensors, the second's offset moved onto the first
    let mut bytes = write::gguf_bytes(
        &md,
        &[tensor("a", vec![16], 0, f32s(16)), tensor("b", vec![16], 0, f32s(16))],
    );
    let pos = bytes.windows(9).rposition(|w| w == b"\x01\0\0\0\0\0\0\0b").unwrap() + 9; // after name "b"
    let off = pos + 4 + 8 + 4; // n_dims, ne[0], type
    bytes[off..off + 8].copy_from_slice(&32u64.to_le_bytes());
    let e = err(bytes);
    assert!(e.contains("overlap"), "{e}");
    // misaligned offset
    let mut bytes = write::gguf_bytes(
        &md,
        &[tensor("a", vec![16], 0, f32s(16)), tensor("b", vec![16], 0, f32s(16))],
    );
    bytes[off..off + 8].copy_from_slice(&66u64.to_le_bytes());
    let e = err(bytes);
    assert!(e.contains("not aligned"), "{e}");
    // a Q4_1 row that is not a whole number of blocks
    let e = err(write::gguf_bytes(&md, &[tensor("a", vec![33], 3, vec![0; 40])]));
    assert!(e.contains("block size"), "{e}");
}

/// Every prefix of a valid file is an error (never a panic), and the full file parses.
#[test]
fn every_truncation_is_an_error() {
    let bytes = tiny_gguf_bytes();
    let header_end = 1 << 14; // the metadata and tensor table lie in the first ~16 KiB
    let mut cuts: Vec<usize> = (0..header_end.min(bytes.len())).collect();
    cuts.extend((header_end..bytes.len()).step_by(4099));
    for cut in cuts {
        assert!(
            Gguf::from_bytes(bytes[..cut].to_vec()).is_err(),
            "a file cut at {cut} bytes parsed"
        );
    }
    assert!(Gguf::from_bytes(bytes).is_ok());
}

/// Q/K rows of a quantised GGUF are put in HF order by moving whole rows of blocks: the result
/// decodes to exactly the old route's values (dequantise everything, then un-permute f32 rows);
/// other tensors stay mapped (no copy).
#[test]
fn quantised_qk_rows_unpermute_like_f32_rows() {
    let mut rng = tinfer::sampler::Rng::new(3);
    let (n_head, n_kv, hd, dim) = (4usize, 2usize, 8usize, 64usize);
    let mut block = |ty: u32, n_blocks: usize| -> Vec<u8> {
        let mut out = vec![];
        for _ in 0..n_blocks {
            let scale = half::f16::from_f32(rng.next_f64() as f32 + 0.1).to_le_bytes();
            out.extend(scale);
            if ty == 3 {
                out.extend(half::f16::from_f32(rng.next_f64() as f32 - 0.5).to_le_bytes());
                // Q4_1 min
            }
            let quants = if ty == 8 { 32 } else { 16 }; // Q8_0: 32 bytes; Q4_1: 16 bytes of nibbles
            out.extend((0..quants).map(|_| (rng.next_f64() * 256.0) as u8));
        }
        out
    };
    let q = block(8, n_head * hd * dim / 32);
    let k = block(3, n_kv * hd * dim / 32);
    let v = block(8, n_kv * hd * dim / 32);
    let tensors = [
        ("blk.0.attn_q.weight", 8, n_head, &q),
        ("blk.0.attn_k.weight", 3, n_kv, &k),
        ("blk.0.attn_v.weight", 8, 0, &v),
    ];
    let bytes = write::gguf_bytes(
        &[("general.architecture", Value::String("llama".into()))],
        &tensors
            .iter()
            .map(|(name, ty, heads, data)| write::Tensor {
                name: name.to_string(),
                ne: vec![dim as u64, (heads.max(&n_kv) * hd) as u64],
                ggml_type: *ty,
                data: data.to_vec(),
            })
            .collect::<Vec<_>>(),
    );
    let g = Gguf::from_bytes(bytes).unwrap();
    let cfg = serde_json::json!({"num_attention_heads": n_head, "num_key_value_heads": n_kv});
    for (name, ty, heads, data) in tensors {
        let info = g.tensor(name).unwrap();
        let t = g.hf_tensor(info, &cfg).unwrap();
        let ty = if ty == 8 { GgmlType::Q8_0 } else { GgmlType::Q4_1 };
        assert_eq!((t.format, t.rows(), t.cols()), (ty, heads.max(n_kv) * hd, dim));
        let mut want = dequantize(ty, data);
        if heads > 0 {
            unpermute_rows(&mut want, heads * hd, dim, heads);
        }
        assert_eq!(t.to_f32(), want, "{name}");
        assert_eq!(g.hf_tensor_data(info, &cfg).unwrap(), want, "{name}");
        assert_eq!(
            t.bytes().as_ptr() == g.tensor_bytes(info).as_ptr(),
            heads == 0,
            "{name}: mapped"
        );
    }
}

// --- Incomplete tokenizer metadata: llama.cpp's fallbacks, each with its warning ---

const FIX: &str = "re-convert the model with a current llama.cpp (convert_hf_to_gguf.py), or pass its HF directory";

/// The metadata of a byte-level vocabulary (ids 0-255 the bytes, then <|endoftext|> 256,
/// <|im_start|> 257, <|im_end|> 258) with every tokenizer key llama.cpp's converter writes.
fn vocab_metadata() -> Vec<(&'static str, Value)> {
    let mut tokens: Vec<Value> = byte_level_chars()
        .iter()
        .map(|c| Value::String(c.to_string()))
        .collect();
    let specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    tokens.extend(specials.iter().map(|s| Value::String(s.to_string())));
    let types = (0..259).map(|i| Value::I32(if i < 256 { 1 } else { 3 })).collect();
    vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.bos_token_id", Value::U32(256)),
        ("tokenizer.ggml.eos_token_id", Value::U32(258)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ]
}

/// `vocab_metadata` less the keys `drop`, with `set` added or replacing, as a GGUF.
fn vocab_gguf(drop: &[&str], set: Vec<(&'static str, Value)>) -> Gguf {
    let mut md = vocab_metadata();
    md.retain(|(k, _)| !drop.contains(k) && !set.iter().any(|(s, _)| s == k));
    md.extend(set);
    Gguf::from_bytes(write::gguf_bytes(&md, &[])).unwrap()
}

fn tokenizer(g: &Gguf) -> tinfer::tokenizer::Tokenizer {
    tinfer::tokenizer::Tokenizer::from_json(&g.hf_tokenizer_json().unwrap(), &g.hf_tokenizer_config(64)).unwrap()
}

#[test]
fn complete_tokenizer_metadata_gives_no_warnings() {
    let g = vocab_gguf(&[], vec![]);
    let f = g.vocab_facts();
    assert_eq!(f.warnings, Vec::<String>::new());
    assert_eq!(
        (f.bos, f.eos, f.add_bos, f.add_eos),
        (Some(256), Some(258), false, false)
    );
    // eos, and the control tokens with an end text (llama.cpp; Qwen2.5's generation_config
    // lists <|im_end|> and <|endoftext|> too)
    assert_eq!(f.eog, [256, 258]);
    assert_eq!(g.hf_generation_config()["eos_token_id"], serde_json::json!([256, 258]));
    // Specials are recognised, no BOS is added.
    assert_eq!(
        tokenizer(&g).encode("<|im_start|>hi<|im_end|>").unwrap(),
        [257, 104, 105, 258]
    );
    // eot and eom ids join the end-of-generation set (llama.cpp always counts them), silently.
    let g = vocab_gguf(
        &[],
        vec![
            ("tokenizer.ggml.eot_token_id", Value::U32(256)),
            ("tokenizer.ggml.eom_token_id", Value::U32(257)),
        ],
    );
    assert_eq!(
        (g.vocab_facts().eog, g.vocab_facts().warnings.len()),
        (vec![256, 257, 258], 0)
    );
    assert_eq!(
        g.hf_generation_config()["eos_token_id"],
        serde_json::json!([256, 257, 258])
    );
}

/// Each missing key: the exact warning, the value assumed, and what tokenizing gives.
#[test]
fn each_missing_tokenizer_key_is_a_warning_with_llama_cpp_fallback() {
    // tokenizer.ggml.pre: llama.cpp warns and uses "default"; tinfer keeps GPT-2's split.
    let f = vocab_gguf(&["tokenizer.ggml.pre"], vec![]).vocab_facts();
    assert_eq!(
        f.warnings,
        [format!(
            "tokenizer.ggml.pre is missing: splitting text with GPT-2's byte-level pre-tokenizer (llama.cpp warns \
             too and uses its own \"default\" split), so prompts may tokenize unlike the original model; {FIX}"
        )]
    );
    // eos: the end-of-generation set is the vocabulary's tokens with llama.cpp's end texts.
    let g = vocab_gguf(&["tokenizer.ggml.eos_token_id"], vec![]);
    let f = g.vocab_facts();
    assert_eq!(
        f.warnings,
        [format!(
            "tokenizer.ggml.eos_token_id is missing: stopping at the end-of-generation tokens found by their text, \
             \"<|endoftext|>\" (256), \"<|im_end|>\" (258), as llama.cpp does; {FIX}"
        )]
    );
    assert_eq!((f.eos, f.eog.clone()), (None, vec![256, 258]));
    assert_eq!(g.hf_generation_config()["eos_token_id"], serde_json::json!([256, 258]));
    // eos out of range counts as missing.
    let f = vocab_gguf(&[], vec![("tokenizer.ggml.eos_token_id", Value::U32(259))]).vocab_facts();
    assert_eq!(
        f.warnings[0],
        format!("tokenizer.ggml.eos_token_id 259 is out of range (vocabulary of 259): ignoring it; {FIX}")
    );
    assert_eq!((f.warnings.len(), f.eog.clone()), (2, vec![256, 258]));
    // No eos and no known end text: nothing stops generation but the length.
    let mut md = vocab_metadata();
    md.retain(|(k, _)| *k != "tokenizer.ggml.eos_token_id");
    md[2].1 = Value::Array(
        byte_level_chars()
            .iter()
            .map(|c| Value::String(c.to_string()))
            .collect(),
    );
    md[3].1 = Value::Array(vec![Value::I32(1); 256]);
    md.retain(|(k, _)| *k != "tokenizer.ggml.bos_token_id");
    let f = Gguf::from_bytes(write::gguf_bytes(&md, &[])).unwrap().vocab_facts();
    assert_eq!(f.eog, Vec::<u32>::new());
    assert_eq!(
        f.warnings,
        [
            format!(
                "tokenizer.ggml.bos_token_id is missing: no BOS token (llama.cpp would assume id 11 for a BPE \
                 vocabulary); {FIX}"
            ),
            format!(
                "tokenizer.ggml.eos_token_id is missing and no known end-of-generation text is in the vocabulary: \
                 generation stops only at --max-tokens or the end of the context; {FIX}"
            ),
        ]
    );
    // bos missing while add_bos_token asks for it: none is added.
    let g = vocab_gguf(
        &["tokenizer.ggml.bos_token_id"],
        vec![("tokenizer.ggml.add_bos_token", Value::Bool(true))],
    );
    assert_eq!(
        g.vocab_facts().warnings,
        [format!(
            "tokenizer.ggml.bos_token_id is missing: no BOS token although add_bos_token is true (llama.cpp would \
             assume id 11 for a BPE vocabulary); {FIX}"
        )]
    );
    assert_eq!(tokenizer(&g).encode("hi").unwrap(), [104, 105]);
    // add_bos_token missing: llama.cpp's BPE default, false.
    let g = vocab_gguf(&["tokenizer.ggml.add_bos_token"], vec![]);
    assert_eq!(
        g.vocab_facts().warnings,
        [format!(
            "tokenizer.ggml.add_bos_token is missing: not adding BOS \"<|endoftext|>\" (256) to prompts, llama.cpp's \
             default for BPE vocabularies; {FIX}"
        )]
    );
    assert_eq!(tokenizer(&g).encode("hi").unwrap(), [104, 105]);
    // token_type missing: all normal, except the end texts llama.cpp makes control.
    let g = vocab_gguf(&["tokenizer.ggml.token_type"], vec![]);
    let f = g.vocab_facts();
    assert_eq!(
        f.warnings,
        [format!(
            "tokenizer.ggml.token_type is missing: every token is plain text except the end-of-generation tokens \
             \"<|endoftext|>\" (256), \"<|im_end|>\" (258), as in llama.cpp, so special tokens such as <|im_start|> \
             written in a prompt are split like text; {FIX}"
        )]
    );
    assert_eq!(f.made_control, [256, 258]);
    let ids = tokenizer(&g).encode("<|im_start|>hi<|im_end|>").unwrap();
    assert_eq!(
        ids.len(),
        12 + 2 + 1,
        "<|im_start|> as 12 bytes, h, i, then <|im_end|>: {ids:?}"
    );
    assert_eq!(ids[12..], [104, 105, 258]);
    // An end text typed as normal while the file has an eos: the file's type stands (HF's
    // tokenizer reads it as text), no warning, and it is not an end of generation; a control
    // token with an end text is one.
    let mut types: Vec<Value> = (0..259).map(|i| Value::I32(if i < 256 { 1 } else { 3 })).collect();
    types[256] = Value::I32(1); // <|endoftext|>; the eos is <|im_end|> (258)
    let g = vocab_gguf(&[], vec![("tokenizer.ggml.token_type", Value::Array(types))]);
    let f = g.vocab_facts();
    assert_eq!((f.warnings.len(), f.made_control.len()), (0, 0), "{:?}", f.warnings);
    assert_eq!(f.eog, [258]);
    assert_eq!(
        tokenizer(&g).encode("<|endoftext|>").unwrap().len(),
        13,
        "<|endoftext|> as text"
    );
}

#[test]
fn add_bos_and_add_eos_tokens_are_added() {
    let g = vocab_gguf(
        &[],
        vec![
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
            ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
        ],
    );
    assert_eq!(g.vocab_facts().warnings.len(), 0);
    assert_eq!(tokenizer(&g).encode("hi").unwrap(), [256, 104, 105, 258]);
    assert_eq!(
        tokenizer(&g).encode_raw("hi").unwrap(),
        [104, 105],
        "a rendered template gets none"
    );
    // An unknown pre-tokenizer is still a clear error.
    let e = vocab_gguf(&[], vec![("tokenizer.ggml.pre", Value::String("deepseek-llm".into()))])
        .hf_tokenizer_json()
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("pre-tokenizer \"deepseek-llm\" is not supported from GGUF"),
        "{e}"
    );
}

/// The loader passes the warnings on and stops at the end-of-generation set: the tiny fixture
/// GGUF has no token types, bos or eos.
#[test]
fn loader_reports_warnings_and_the_end_of_generation_set() {
    let dir = std::env::temp_dir().join(format!("tinfer-gguf-warn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    std::fs::write(&path, tiny_gguf_bytes()).unwrap();
    let l = loader::load(&path).unwrap();
    let keys: Vec<&str> = l.warnings.iter().map(|w| w.split(' ').next().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.token_type"
        ],
        "{:#?}",
        l.warnings
    );
    assert_eq!(l.cfg.eos_token_ids, Vec::<u32>::new());
    std::fs::remove_dir_all(&dir).ok();
}

/// The real SmolLM2 GGUF has every key: no warnings, and it stops at <|im_end|> (2) as HF's
/// generation_config.json says. Without its eos key it would stop at <|endoftext|> and <|im_end|>.
#[test]
fn smollm2_gguf_has_no_warnings_and_stops_at_its_end_tokens() {
    let Some(path) = smollm2_gguf() else { return };
    let l = loader::load(&path).unwrap();
    assert_eq!(l.warnings, Vec::<String>::new());
    // <|im_end|>, and <|endoftext|> as llama.cpp stops at it too (a control token with an end text)
    assert_eq!(l.cfg.eos_token_ids, [0, 2]);
    let g = Gguf::open(&path).unwrap();
    let md: Vec<(&str, Value)> = g
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer.") && *k != "tokenizer.ggml.eos_token_id")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let f = Gguf::from_bytes(write::gguf_bytes(&md, &[])).unwrap().vocab_facts();
    assert_eq!(f.eog, [0, 2]);
    assert_eq!(f.warnings.len(), 1, "{:?}", f.warnings);
}

/// Every block decoder against values nobody on this team computed: real Qwen2.5-Coder Q4_K_M
/// blocks as llama.cpp decodes them, and random blocks of every type as gguf-py decodes them
/// (tests/fixtures/kquants.json, scripts/make-kquant-cases.py). Bit for bit.
#[test]
fn block_decoders_match_llama_cpp_and_gguf_py_bit_for_bit() {
    use tinfer::weights::Format;
    let fixture = read_json(&fixtures().join("kquants.json"));
    let mut types = std::collections::BTreeSet::new();
    for case in fixture["cases"].as_array().unwrap() {
        let ty = case["type"].as_str().unwrap();
        let format = match ty {
            "Q5_0" => Format::Q5_0,
            "Q5_1" => Format::Q5_1,
            "Q8_0" => Format::Q8_0,
            "Q4_K" => Format::Q4_K,
            "Q5_K" => Format::Q5_K,
            "Q6_K" => Format::Q6_K,
            "Q2_K" => Format::Q2_K,
            "Q3_K" => Format::Q3_K,
            other => panic!("unexpected type {other}"),
        };
        let hex = case["hex"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let want: Vec<u32> = case["bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect();
        let mut got = vec![0f32; want.len()];
        format.decode(&bytes, &mut got);
        for (i, (g, &w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w,
                "{ty} ({}): element {i} (block {}, offset {}): got {g}, want {}",
                case["source"],
                i / format.block().0,
                i % format.block().0,
                f32::from_bits(w)
            );
        }
        types.insert(ty);
    }
    assert_eq!(types.len(), 8, "every new type is covered: {types:?}");
}

/// Qwen2.5-Coder's tokenizer built from its GGUF metadata (the `qwen2` pre-tokenizer, NFC as HF's
/// tokenizer.json does) against HF's ids on the 69 golden cases (code, chat markup, CJK, emoji,
/// whitespace runs, digits), and decoding back to the text HF decodes.
#[test]
fn qwen2_tokenizer_from_gguf_matches_hf() {
    let Some(path) = qwen_coder_gguf() else { return };
    let tok = loader::load_tokenizer(&path).unwrap();
    let cases = read_json(&fixtures().join("qwen2.5-coder/tokenizer_cases.json"));
    let mut n = 0;
    for case in cases["cases"].as_array().unwrap() {
        let (name, text) = (case["name"].as_str().unwrap(), case["text"].as_str().unwrap());
        let want = ids(&case["ids"]);
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "{name}: ids of {text:?}");
        assert_eq!(
            tok.decode(&got, false).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{name}: decoded"
        );
        n += 1;
    }
    assert_eq!(n, 69);
}

/// Qwen2.5-Coder-0.5B-Instruct from its Q4_K_M GGUF (qwen2 architecture: q/k/v biases, Q/K rows
/// not permuted, RoPE base 1e6, untied LM head; Q4_K, Q6_K, Q5_0, Q8_0 weights) on the CPU
/// against HF's float32 run of the same dequantised weights: last-position logits within 1e-3,
/// greedy continuation, mean NLL within 1e-4, on a code prompt and a chat prompt.
#[test]
fn qwen2_coder_gguf_matches_hf_on_the_cpu() {
    let Some(path) = qwen_coder_gguf() else { return };
    let (mut m, _) = cpu_model(&path);
    let index = read_json(&fixtures().join("qwen2.5-coder/index.json"));
    for p in index["prompts"].as_array().unwrap() {
        check_golden_prompt_from(
            &mut m,
            p,
            "qwen2.5-coder cpu",
            SMOLLM2_VS_HF,
            NLL_VS_HF,
            "qwen2.5-coder",
        );
    }
}

/// An architecture tinfer does not run is refused by name, with what it runs.
#[test]
fn unknown_architectures_are_refused_by_name() {
    let md = [("general.architecture", Value::String("gemma3".into()))];
    let g = Gguf::from_bytes(write::gguf_bytes(&md, &[])).unwrap();
    let e = g.hf_config().unwrap_err().to_string();
    assert!(e.contains("\"gemma3\" is not supported") && e.contains("qwen2"), "{e}");
}

/// A tiny fixture written as GGUF of `arch` (with extra metadata / tensors), loaded, run at every
/// position of the golden "random" input: the logits against HF's.
fn gguf_tiny_matches_hf(name: &str, arch: &str, md: Vec<(&str, Value)>, extra: Vec<write::Tensor>) {
    let dir = std::env::temp_dir().join(format!("tinfer-gguf-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, tiny_gguf(name, arch, md, extra)).unwrap();
    let mut l = loader::load(&path).unwrap_or_else(|e| panic!("{name} as GGUF: {e:#}"));
    let mut m = Model::new(l.cfg.clone(), l.weights.take().unwrap(), Device::Cpu, None).unwrap();
    let golden = read_json(&fixtures().join(name).join("golden.json"));
    let tokens = ids(&golden["inputs"]["random"]["ids"]);
    let (_, want) = read_npy(&fixtures().join(name).join("random.logits.npy"));
    let s = m.new_seq().unwrap();
    let got = m.fwd(s, &tokens, Want::All).unwrap();
    assert_close(&format!("{name} from a {arch} GGUF"), &got, &want, TINY_VS_HF);
    std::fs::remove_dir_all(&dir).ok();
}

/// Qwen3 in GGUF: architecture "qwen3", attn_q_norm / attn_k_norm, Q/K rows in HF order.
#[test]
fn qwen3_gguf_matches_hf() {
    gguf_tiny_matches_hf("tiny-qwen3", "qwen3", vec![], vec![]);
}

/// Llama 3.1 RoPE scaling the way llama.cpp's converter stores it: a `rope_freqs` tensor of
/// per-frequency divisors (convert_hf_to_gguf.py, LlamaModel: 1 for short wavelengths, factor
/// for long ones, 1 / ((1 - s) / factor + s) between), written here from that definition.
#[test]
fn llama3_rope_freqs_gguf_matches_hf() {
    let (theta, d, factor, lo, hi, l) = (500000f64, 16, 8.0, 1.0, 4.0, 64.0);
    let factors: Vec<f32> = (0..d / 2)
        .map(|i| {
            let wavelen = 2.0 * std::f64::consts::PI * theta.powf(2.0 * i as f64 / d as f64);
            if wavelen < l / hi {
                1.0
            } else if wavelen > l / lo {
                factor as f32
            } else {
                let s = (l / wavelen - lo) / (hi - lo);
                (1.0 / ((1.0 - s) / factor + s)) as f32
            }
        })
        .collect();
    let t = write::Tensor {
        name: "rope_freqs.weight".into(),
        ne: vec![(d / 2) as u64],
        ggml_type: 0,
        data: factors.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    gguf_tiny_matches_hf("tiny-llama3-rope", "llama", vec![], vec![t]);
}

/// YaRN from GGUF metadata: `qwen2.rope.scaling.type` yarn, factor, original_context_length.
#[test]
fn yarn_gguf_matches_hf() {
    let md = vec![
        ("rope.scaling.type", Value::String("yarn".into())),
        ("rope.scaling.factor", Value::F32(4.0)),
        ("rope.scaling.original_context_length", Value::U32(64)),
    ];
    gguf_tiny_matches_hf("tiny-qwen2-yarn", "qwen2", md, vec![]);
}

/// RoPE scalings tinfer does not reproduce are refused by name, never run unscaled.
#[test]
fn unsupported_gguf_rope_scaling_is_refused() {
    for (md, needle) in [
        (
            vec![("rope.scaling.type", Value::String("longrope".into()))],
            "longrope",
        ),
        (
            vec![
                ("rope.scaling.type", Value::String("yarn".into())),
                ("rope.scaling.factor", Value::F32(4.0)),
                ("rope.scaling.attn_factor", Value::F32(0.7)),
            ],
            "attn_factor",
        ),
    ] {
        let g = Gguf::from_bytes(tiny_gguf("tiny-qwen2", "qwen2", md, vec![])).unwrap();
        let e = format!("{:#}", g.hf_config().unwrap_err());
        assert!(e.contains(needle), "{e}");
    }
}

/// The shared Qwen2.5-Coder prompts as HF tokenizes them: a text prompt's ids from its text; a
/// chat prompt's messages rendered through the GGUF's chat template (ChatML with Qwen's default
/// system message when there is none, several turns, CJK) to exactly HF's text, then its ids.
#[test]
fn qwen2_prompts_render_and_tokenize_as_hf() {
    let Some(path) = qwen_coder_gguf() else { return };
    let tok = loader::load_tokenizer(&path).unwrap();
    let index = read_json(&fixtures().join("qwen2.5-coder/index.json"));
    let mut kinds = vec![];
    for p in index["prompts"].as_array().unwrap() {
        let (name, text) = (p["name"].as_str().unwrap(), p["text"].as_str().unwrap());
        if p["kind"] == "chat" {
            let messages = chat_messages(p);
            assert_eq!(
                tok.apply_chat_template(&messages, true).unwrap(),
                text,
                "{name}: rendered chat"
            );
        }
        assert_eq!(tok.encode(text).unwrap(), ids(&p["ids"]), "{name}: ids of {text:?}");
        kinds.push(p["kind"].as_str().unwrap().to_string());
    }
    assert_eq!(kinds.iter().filter(|k| *k == "chat").count(), 4, "{kinds:?}");
    assert_eq!(kinds.len(), 8);
}

/// Every position's logits of the 16-token internals prompt on the CPU against HF's
/// [16, 151936] (reduced: see `check_reduced_row`) within 1e-3, each position's argmax where HF's
/// top-1/top-2 margin exceeds twice that, and the mean NLL within 1e-4.
#[test]
fn qwen2_coder_all_position_logits_match_hf_on_the_cpu() {
    let Some(path) = qwen_coder_gguf() else { return };
    let g = read_json(&fixtures().join("qwen2.5-coder/internals_logits.json"));
    let prompt = ids(&g["ids"]);
    assert_eq!(prompt.len(), 16);
    let (mut m, loaded) = cpu_model(&path);
    assert_eq!(
        loaded
            .tokenizer
            .as_ref()
            .unwrap()
            .encode(g["text"].as_str().unwrap())
            .unwrap(),
        prompt
    );
    let vocab = m.cfg.vocab_size;
    let s = m.new_seq().unwrap();
    let all = m.fwd(s, &prompt, Want::All).unwrap();
    m.release(s);
    let argmax = ids(&g["all_position_logits"]["argmax"]);
    let mut worst = 0f64;
    for (t, r) in g["rows"].as_array().unwrap().iter().enumerate() {
        let row = &all[t * vocab..(t + 1) * vocab];
        worst = worst.max(check_reduced_row(
            &format!("internals position {t}"),
            row,
            r,
            SMOLLM2_VS_HF,
        ));
        let top = r["top_values"].as_array().unwrap();
        if top[0].as_f64().unwrap() - top[1].as_f64().unwrap() > 2.0 * SMOLLM2_VS_HF.abs {
            assert_eq!(
                tinfer::cpu::ops::argmax(row) as u32,
                argmax[t],
                "internals position {t}: argmax"
            );
        }
    }
    let nll: f64 = (0..15)
        .map(|t| {
            tinfer::cpu::ops::logsumexp(&all[t * vocab..(t + 1) * vocab])
                - all[t * vocab + prompt[t + 1] as usize] as f64
        })
        .sum::<f64>()
        / 15.0;
    let want = g["all_position_logits"]["mean_nll"].as_f64().unwrap();
    assert!((nll - want).abs() < NLL_VS_HF, "internals mean NLL {nll} vs HF {want}");
    eprintln!(
        "internals: 16 positions, worst |error| vs HF {worst:.2e}, mean NLL error {:.2e}",
        (nll - want).abs()
    );
}

/// Perplexity of argparse.py through `score` on the CPU against HF (`check_argparse_nll`): the
/// first 512 targets always (20 s on 2 quiet cores), all 2047 with TINFER_LONG_TESTS=1 (1.5 min),
/// each within 1e-4.
#[test]
fn qwen2_coder_perplexity_matches_hf_on_the_cpu() {
    let Some(path) = qwen_coder_gguf() else { return };
    let (mut m, loaded) = cpu_model(&path);
    let tok = loaded.tokenizer.as_ref().unwrap();
    check_argparse_nll(&mut m, tok, "qwen2.5-coder cpu", long_tests(), NLL_VS_HF);
}
