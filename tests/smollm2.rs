//! The real model on the CPU against HF transformers: tokenizer, last-position logits, greedy
//! continuations, mean NLL, chat template, and the GGUF route against the converted directory.
//! Skipped (with a message) when the model has not been fetched; CI sets TINFER_REQUIRE_MODEL=1.

mod common;
use common::*;

use serde_json::Value as Json;
use tinfer::loader::{self, Loaded};
use tinfer::model::{Device, Model, Want};
use tinfer::tokenizer::TokenStream;
use tinfer::tools::score::score;

fn load(path: &std::path::Path) -> (Model, Loaded) {
    let mut l = loader::load(path).unwrap();
    let m = Model::new(l.cfg.clone(), l.weights.take().unwrap(), Device::Cpu, None).unwrap();
    (m, l)
}

fn index() -> Json {
    read_json(&fixtures().join("smollm2/index.json"))
}

#[test]
fn tokenizer_matches_hf_on_all_cases() {
    let Some(dir) = smollm2_dir() else { return };
    let tok = loader::load_tokenizer(&dir).unwrap();
    let cases = read_json(&fixtures().join("tokenizer_cases.json"));
    let cases = cases["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 68);
    for c in cases {
        let (name, text) = (c["name"].as_str().unwrap(), c["text"].as_str().unwrap());
        let got = tok.encode(text).unwrap();
        assert_eq!(got, ids(&c["ids"]), "case {name}: ids of {text:?}");
        assert_eq!(
            tok.decode(&got, false).unwrap(),
            c["decoded"].as_str().unwrap(),
            "case {name}: decoded"
        );
        assert_eq!(
            tok.decode(&got, true).unwrap(),
            c["decoded_skip_special"].as_str().unwrap(),
            "case {name}: skip special"
        );
        // streaming decode, one id at a time, gives the same text
        let mut ts = TokenStream::new(&tok);
        let mut streamed = String::new();
        for &id in &got {
            streamed += &ts.push(id).unwrap().unwrap_or_default();
        }
        streamed += &ts.finish().unwrap().unwrap_or_default();
        assert_eq!(
            streamed,
            c["decoded_skip_special"].as_str().unwrap(),
            "case {name}: streamed"
        );
    }
}

#[test]
fn chat_template_renders_as_hf() {
    let Some(dir) = smollm2_dir() else { return };
    let tok = loader::load_tokenizer(&dir).unwrap();
    let idx = index();
    let p = idx["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "chat")
        .unwrap();
    let messages = chat_messages(p);
    let text = tok.apply_chat_template(&messages, true).unwrap();
    assert!(
        text.contains("You are a helpful AI assistant named SmolLM"),
        "default system message: {text}"
    );
    assert_eq!(tok.encode_raw(&text).unwrap(), ids(&p["ids"]));
    assert_eq!(text, p["text"].as_str().unwrap());
}

/// The 7 golden prompts on the CPU: tokenizer ids, last logits, greedy ids up to the near-ties,
/// each step's top-1 logit and mean NLL (`check_golden_prompt`), then greedy decoding through the
/// generation loop and the perplexity path.
#[test]
fn logits_nll_and_greedy_match_hf() {
    let Some(dir) = smollm2_dir() else { return };
    let (mut m, loaded) = load(&dir);
    let tok = loaded.tokenizer.as_ref().unwrap();
    let idx = index();
    for p in idx["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let prompt = ids(&p["ids"]);
        if p["kind"] == "text" {
            assert_eq!(
                tok.encode(p["text"].as_str().unwrap()).unwrap(),
                prompt,
                "{name}: tokenizer"
            );
        }
        check_golden_prompt(&mut m, p, "cpu");
        let (cont, tie) = greedy_and_tie(p);
        let got;
        (m, got) = greedy(m, &prompt, 32);
        let n = tie.min(cont.len());
        assert_eq!(
            got[..n.min(got.len())],
            cont[..n],
            "{name}: greedy ids before the near-tie at step {tie}"
        );
        if tie >= cont.len() {
            assert_eq!(got, cont, "{name}: greedy ids");
        }
        if prompt.len() > 1 {
            let s = score(&mut m, &prompt, prompt.len()).unwrap();
            assert!(
                (s.mean_nll() - p["mean_nll"].as_f64().unwrap()).abs() < NLL_VS_HF,
                "{name}: perplexity path"
            );
        }
    }
}

/// The GGUF file read directly gives the same logits as the directory `tinfer convert` wrote.
#[test]
fn gguf_route_equals_converted_directory() {
    let Some(gguf) = smollm2_gguf() else { return };
    let dir = smollm2_dir().unwrap();
    let prompt: Vec<u32> = ids(&index()["prompts"][0]["ids"]);
    let (mut a, la) = load(&gguf);
    let (mut b, _) = load(&dir);
    assert_eq!(
        a.cfg,
        b.cfg,
        "{} differs from its GGUF: converted by an older tinfer? scripts/fetch-model.sh converts it again",
        dir.display()
    );
    let (sa, sb) = (a.new_seq().unwrap(), b.new_seq().unwrap());
    assert_eq!(
        a.fwd(sa, &prompt, Want::Last).unwrap(),
        b.fwd(sb, &prompt, Want::Last).unwrap()
    );
    let ta = la.tokenizer.as_ref().unwrap();
    let tb = loader::load_tokenizer(&dir).unwrap();
    let text = "Numbers 1234 and émojis 😀 in one line";
    assert_eq!(ta.encode(text).unwrap(), tb.encode(text).unwrap());
}

#[test]
fn rope_frequencies_match_hf() {
    let Some(dir) = smollm2_dir() else { return };
    let cfg = tinfer::config::HfConfig::from_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
        .unwrap()
        .resolve()
        .unwrap();
    let want: Vec<f32> = index()["rope_inv_freq"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_close(
        "rope inv_freq",
        &tinfer::config::RopeTable::inv_freq(&cfg),
        &want,
        Tol { abs: 0.0, rel: 1e-6 },
    );
}
