//! tokenizer.json and chat templates from arbitrary text. The first byte picks the target:
//! even: the rest is a tokenizer.json; load it, encode a few texts, decode the ids back.
//! odd: the rest is a chat template; render it for a short conversation.
//! Library errors are fine; a panic escaping tinfer's guard, a hang or a huge allocation is not.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tinfer::tokenizer::{Message, Tokenizer};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if mode % 2 == 0 {
        let Ok(json) = serde_json::from_str::<Value>(text) else { return };
        let Ok(tok) = Tokenizer::from_json(&json, &Value::Null) else { return };
        for s in ["Hello world", "  12 345\n\nx", "é 🙂 <|im_start|>", ""] {
            if let Ok(ids) = tok.encode(s) {
                let _ = tok.decode(&ids, false);
                let _ = tok.decode(&ids, true);
            }
        }
        let _ = tok.decode(&[0, 1, 2, u32::MAX], false);
    } else {
        let bytes_tok = json!({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}});
        let Ok(tok) = Tokenizer::from_json(&bytes_tok, &json!({"chat_template": text, "eos_token": "a"})) else {
            return;
        };
        let msgs = [Message::new("system", "Be brief."), Message::new("user", "Hi {{ 1 }}")];
        if let Ok(out) = tok.apply_chat_template(&msgs, true) {
            assert!(out.len() < 1 << 28, "a template rendered {} bytes", out.len());
        }
    }
});
