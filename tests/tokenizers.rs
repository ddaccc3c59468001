//! Tokenizers built from GGUF metadata for the vocabularies beyond GPT-2's byte-level BPE: the
//! Llama 3 pre-tokenizer ("llama-bpe") and SentencePiece BPE ("llama": Llama 2, Mistral, Gemma).

mod common;
use common::*;

use tinfer::gguf::{Gguf, Value};
use tinfer::loader;
use tinfer::tokenizer::Tokenizer;
use tinfer::tools::gguf_write as write;

fn gguf(md: &[(&str, Value)]) -> Gguf {
    Gguf::from_bytes(write::gguf_bytes(md, &[])).unwrap()
}

fn tokenizer(g: &Gguf) -> Tokenizer {
    Tokenizer::from_json(&g.hf_tokenizer_json().unwrap(), &g.hf_tokenizer_config(64)).unwrap()
}

fn strings(v: &[&str]) -> Value {
    Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect())
}

/// A byte-level vocabulary (id = byte), then "<|begin_of_text|>" (256, control) and " world"
/// (257) with no merge that reaches it, under the pre-tokenizer `pre`.
fn byte_level_gguf(pre: &str, add_bos: Option<bool>) -> Gguf {
    let mut tokens: Vec<String> = byte_level_chars().iter().map(|c| c.to_string()).collect();
    tokens.extend(["<|begin_of_text|>".to_string(), "\u{120}world".to_string()]);
    let types = (0..258).map(|i| Value::I32(if i == 256 { 3 } else { 1 })).collect();
    let mut md = vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.bos_token_id", Value::U32(256)),
        ("tokenizer.ggml.eos_token_id", Value::U32(256)),
    ];
    md.extend(add_bos.map(|b| ("tokenizer.ggml.add_bos_token", Value::Bool(b))));
    gguf(&md)
}

/// Llama 3's split, checked piece by piece on strings where it differs from GPT-2's and Qwen2's
/// (numbers in threes, contractions in any case, newline runs, trailing spaces, punctuation runs,
/// a leading non-letter). The expected pieces are derived by hand from the regex (the first
/// alternative that matches at each position, greedy, with backtracking for `\s+(?!\S)`), not
/// taken from Llama 3's own tokenizer, which this repository does not have.
#[test]
fn llama_bpe_splits_as_the_llama3_regex() {
    let json = byte_level_gguf("llama-bpe", Some(true)).hf_tokenizer_json().unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
    let pre = tok.get_pre_tokenizer().unwrap();
    let split = |text: &str| -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let mut s = PreTokenizedString::from(text);
        pre.pre_tokenize(&mut s).unwrap();
        let splits = s.get_splits(OffsetReferential::Original, OffsetType::Byte);
        splits.iter().map(|(_, (a, b), _)| text[*a..*b].to_string()).collect()
    };
    let cases: [(&str, &[&str]); 7] = [
        ("12345 1234567", &["123", "45", " ", "123", "456", "7"]),
        (
            "I'M HE'S we'LL she'd",
            &["I", "'M", " HE", "'S", " we", "'LL", " she", "'d"],
        ),
        ("a\n\n b  \n", &["a", "\n\n", " b", "  \n"]),
        ("hi   there  ", &["hi", "  ", " there", "  "]),
        ("x=(y+1);\n", &["x", "=(", "y", "+", "1", ");\n"]),
        ("def f(x):", &["def", " f", "(x", "):"]),
        ("\u{bf}Qu\u{e9}? 3.14", &["\u{bf}Qu\u{e9}", "?", " ", "3", ".", "14"]),
    ];
    for (text, want) in cases {
        assert_eq!(split(text), want, "{text:?}");
    }
    // The other names llama.cpp gives the same split.
    for name in ["llama3", "llama-v3", "falcon3", "pixtral", "dbrx", "smaug-bpe"] {
        let j = byte_level_gguf(name, Some(true)).hf_tokenizer_json().unwrap();
        assert_eq!(j["pre_tokenizer"], json["pre_tokenizer"], "{name}");
    }
}

/// llama.cpp's LLAMA3 pre-tokenizers take a word that is a token as it is (`ignore_merges`, as
/// Llama 3's tokenizer.json does) and add BOS when the file does not say; other BPE ones do not.
#[test]
fn llama_bpe_ignores_merges_and_adds_bos_by_default() {
    let g = byte_level_gguf("llama-bpe", None);
    assert_eq!(
        tokenizer(&g).encode("hello world").unwrap()[..],
        [256, 104, 101, 108, 108, 111, 257]
    );
    let w = g.vocab_facts().warnings;
    assert!(
        w.len() == 1 && w[0].contains("is missing: adding BOS \"<|begin_of_text|>\" (256)"),
        "{w:?}"
    );
    assert_eq!(
        tokenizer(&byte_level_gguf("llama-bpe", Some(false)))
            .encode(" world")
            .unwrap(),
        [257]
    );
    // GPT-2's pre-tokenizer applies the merges: no merge reaches " world".
    let ids = tokenizer(&byte_level_gguf("gpt2", Some(false)))
        .encode(" world")
        .unwrap();
    assert_eq!(ids, [32, 119, 111, 114, 108, 100]);
}

/// A small SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then pieces with
/// scores that rank them (`extra` goes first, for the Gemma form).
fn spm_gguf(extra: &[&str], set: Vec<(&'static str, Value)>) -> Gguf {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    tokens.extend((0..256).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(extra.iter().map(|s| s.to_string()));
    tokens.extend(["\u{2581}a", "ab", "\u{2581}ab", "\u{2581}", "a", "b"].map(String::from));
    let n = tokens.len();
    let ty = |i: usize| match i {
        0 => 2,
        1 | 2 => 3,
        3..=258 => 6,
        _ if i < 259 + extra.len() => 4,
        _ => 1,
    };
    let score = |i: usize| match ty(i) {
        1 => -((i - 259 - extra.len()) as f32),
        4 => -1000.0,
        _ => 0.0,
    };
    let mut md = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array((0..n).map(|i| Value::F32(score(i))).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array((0..n).map(|i| Value::I32(ty(i))).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ];
    md.retain(|(k, _)| !set.iter().any(|(s, _)| s == k));
    md.extend(set);
    gguf(&md)
}

/// SentencePiece BPE from scores alone: merges rebuilt from the vocabulary, a "▁" before the
/// text (llama.cpp's default), BOS added by default, byte fallback for what has no piece, and
/// decoding back through all of it.
#[test]
fn sentencepiece_vocabularies_tokenize_from_scores() {
    let g = spm_gguf(&[], vec![]);
    assert!(g.vocab_facts().add_bos, "llama.cpp's default for SentencePiece");
    let tok = tokenizer(&g);
    let (sp_a, ab, sp_ab, sp, b) = (259, 260, 261, 262, 264);
    assert_eq!(tok.encode("ab ab").unwrap(), [1, sp_ab, sp_ab]);
    assert_eq!(tok.encode("b a").unwrap(), [1, sp, b, sp_a]);
    assert_eq!(
        tok.encode("<s>ab").unwrap(),
        [1, 1, sp_ab],
        "a \"▁\" after a special token too"
    );
    assert_eq!(tok.encode(" ab").unwrap(), [1, sp, sp_ab], "and before a leading space");
    let e = tok.encode("\u{e9}").unwrap();
    assert_eq!(e, [1, sp, 3 + 0xC3, 3 + 0xA9], "bytes of a character with no piece");
    assert_eq!(tok.decode(&e, true).unwrap(), "\u{e9}");
    assert_eq!(tok.decode(&[1, sp_ab, sp, b, sp_a], true).unwrap(), "ab b a");
    assert_eq!(tok.decode(&[1, sp_ab], false).unwrap(), "<s> ab");
    // Without the space prefix.
    let g = spm_gguf(&[], vec![("tokenizer.ggml.add_space_prefix", Value::Bool(false))]);
    assert_eq!(tokenizer(&g).encode("ab ab").unwrap(), [1, ab, sp_ab]);
    assert_eq!(tokenizer(&g).decode(&[ab, sp_ab], true).unwrap(), "ab ab");
    // Without scores there are no merges to rebuild.
    let md: Vec<(&str, Value)> = g
        .metadata
        .iter()
        .filter(|(k, _)| k != &"tokenizer.ggml.scores")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let e = gguf(&md).hf_tokenizer_json().unwrap_err().to_string();
    assert!(e.contains("tokenizer.ggml.scores is missing"), "{e}");
}

/// Gemma's form: runs of spaces stored as spaces (respelled "▁▁"), scored -1000 but merged by
/// their place in the vocabulary, as transformers does; no space prefix.
#[test]
fn gemma_vocabularies_merge_by_position() {
    let g = spm_gguf(&["  "], vec![("tokenizer.ggml.add_space_prefix", Value::Bool(false))]);
    let tok = tokenizer(&g);
    let (spsp, sp_a, ab) = (259, 260, 261);
    assert_eq!(tok.encode("  ab").unwrap(), [1, spsp, ab], "\"▁▁\" first, by position");
    assert_eq!(tok.encode(" a").unwrap(), [1, sp_a]);
    assert_eq!(tok.decode(&[spsp, ab], true).unwrap(), "  ab");
}

/// Unknown tokenizer models and pre-tokenizers are refused by name, with what to do.
#[test]
fn unknown_tokenizers_are_refused_by_name() {
    let md = [
        ("tokenizer.ggml.model", Value::String("t5".into())),
        ("tokenizer.ggml.tokens", strings(&["a"])),
    ];
    let e = gguf(&md).hf_tokenizer_json().unwrap_err().to_string();
    assert!(
        e.contains("tokenizer model \"t5\" is not supported") && e.contains("tokenizer.json"),
        "{e}"
    );
    let e = byte_level_gguf("tekken", None)
        .hf_tokenizer_json()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pre-tokenizer \"tekken\" is not supported") && e.contains("tokenizer.json"),
        "{e}"
    );
}

/// Gemma 3 270M's tokenizer from its GGUF against HF's (transformers' GGUF converter) on the 40
/// golden cases: ids with and without BOS, and decoding with and without special tokens.
#[test]
fn gemma3_tokenizer_from_gguf_matches_hf() {
    let Some(path) = gemma3_gguf() else { return };
    let tok = loader::load_tokenizer(&path).unwrap();
    let cases = read_json(&fixtures().join("gemma3-270m/tokenizer_cases.json"));
    let mut bad = vec![];
    for case in cases["cases"].as_array().unwrap() {
        let (name, text) = (case["name"].as_str().unwrap(), case["text"].as_str().unwrap());
        let want = ids(&case["ids"]);
        let got = tok.encode(text).unwrap();
        let checks = [
            (got == want, format!("ids {got:?}, want {want:?}")),
            (
                tok.encode_raw(text).unwrap() == ids(&case["ids_add_special_tokens_false"]),
                "ids without BOS".into(),
            ),
            (tok.decode(&want, false).unwrap() == case["decoded"], "decoded".into()),
            (
                tok.decode(&want, true).unwrap() == case["decoded_skip_special"],
                "decoded, skipping specials".into(),
            ),
        ];
        bad.extend(
            checks
                .into_iter()
                .filter(|c| !c.0)
                .map(|c| format!("{name} {text:?}: {}", c.1)),
        );
    }
    assert!(bad.is_empty(), "{} failures:\n{}", bad.len(), bad.join("\n"));
    assert_eq!(cases["cases"].as_array().unwrap().len(), 40);
}

/// Llama 2's SentencePiece vocabulary as llama.cpp ships it for its tokenizer tests
/// (`models/ggml-vocab-llama-spm.gguf`, Llama 2 licence, not in this repository: copy it to
/// models/ to run this) against the ids llama.cpp's `.out` file lists for its 47 test strings
/// (HF's Llama 2 tokenizer, without BOS; tests/fixtures/llama-spm/, from llama.cpp c392e50).
#[test]
fn llama2_sentencepiece_matches_llama_cpp_test_ids() {
    let path = root().join("models/ggml-vocab-llama-spm.gguf");
    if !path.exists() {
        eprintln!(
            "SKIPPED: {} not found (llama.cpp's models/ggml-vocab-llama-spm.gguf)",
            path.display()
        );
        return;
    }
    let tok = loader::load_tokenizer(&path).unwrap();
    let dir = fixtures().join("llama-spm");
    let inp = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.out")).unwrap();
    let texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    let want: Vec<Vec<u32>> = (out
        .lines()
        .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect()))
    .collect();
    assert_eq!(texts.len(), want.len() + 1, "the .inp ends with a separator");
    for (text, want) in texts.iter().zip(&want) {
        assert_eq!(&tok.encode_raw(text).unwrap(), want, "{text:?}");
    }
}
