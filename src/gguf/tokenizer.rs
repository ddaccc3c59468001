//! The tokenizer, its config and the generation config of a GGUF file, as the HF files
//! (`tokenizer.json`, `tokenizer_config.json`, `generation_config.json`) the tokenizer reads.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value as Json};

use super::{Gguf, Value};

impl Gguf {
    /// `tokenizer.json` (HF tokenizers format) synthesised from the `tokenizer.ggml.*` metadata.
    pub fn hf_tokenizer_json(&self) -> Result<Json> {
        let model = self.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("");
        if model != "gpt2" {
            bail!("tokenizer model {model:?} is not supported from GGUF (only byte-level BPE, \"gpt2\"); supply an HF tokenizer.json");
        }
        let tokens = self
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .context("tokenizer.ggml.tokens is missing or not an array")?;
        let types = self.get("tokenizer.ggml.token_type").and_then(Value::as_array);
        let merges = self
            .get("tokenizer.ggml.merges")
            .and_then(Value::as_array)
            .context("tokenizer.ggml.merges is missing or not an array")?;
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, tok) in tokens.iter().enumerate() {
            let s = tok.as_str().with_context(|| format!("token {id} is not a string"))?;
            // llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
            let ty = types.and_then(|t| t.get(id)).and_then(Value::as_u64).unwrap_or(1);
            if ty == 3 || ty == 4 {
                added.push(json!({
                    "id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": ty == 4, "special": ty == 3,
                }));
            }
            vocab.insert(s.to_string(), json!(id));
        }
        let merges: Vec<&str> = merges
            .iter()
            .enumerate()
            .map(|(i, m)| m.as_str().with_context(|| format!("merge {i} is not a string")))
            .collect::<Result<_>>()?;
        let byte_level =
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre = self
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let pre_tokenizer = match pre {
            "default" | "gpt-2" | "gpt2" => byte_level.clone(),
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level,
            ]}),
            _ => bail!(
                "pre-tokenizer {pre:?} is not supported from GGUF (tinfer knows \"smollm\" and \"gpt2\"); \
                 supply the model's HF tokenizer.json instead"
            ),
        };
        let bos = self.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64);
        let add_bos = self
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let post_processor = match (add_bos, bos) {
            (true, Some(bos)) => {
                let bos_tok = tokens
                    .get(bos as usize)
                    .and_then(Value::as_str)
                    .context("bos_token_id out of range")?;
                json!({"type": "TemplateProcessing",
                    "single": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                    "pair": [{"SpecialToken": {"id": bos_tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                             {"SpecialToken": {"id": bos_tok, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                    "special_tokens": {bos_tok: {"id": bos_tok, "ids": [bos], "tokens": [bos_tok]}}})
            }
            _ => {
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
            }
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges,
            },
        }))
    }

    /// `tokenizer_config.json`: special tokens and the chat template.
    pub fn hf_tokenizer_config(&self, context_len: u64) -> Json {
        let tokens = self.get("tokenizer.ggml.tokens").and_then(Value::as_array);
        let tok = |key: &str| {
            let id = self.get(key).and_then(Value::as_u64)?;
            tokens?.get(id as usize)?.as_str().map(str::to_string)
        };
        json!({
            "tokenizer_class": "GPT2Tokenizer",
            "bos_token": tok("tokenizer.ggml.bos_token_id"),
            "eos_token": tok("tokenizer.ggml.eos_token_id"),
            "pad_token": tok("tokenizer.ggml.padding_token_id"),
            "unk_token": tok("tokenizer.ggml.unknown_token_id"),
            "add_bos_token": self.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool).unwrap_or(false),
            "clean_up_tokenization_spaces": false,
            "model_max_length": context_len,
            "chat_template": self.get("tokenizer.chat_template").and_then(Value::as_str),
        })
    }

    /// `generation_config.json`: the ids generation starts and stops on.
    pub fn hf_generation_config(&self) -> Json {
        let id = |key: &str| self.get(key).and_then(Value::as_u64);
        json!({
            "bos_token_id": id("tokenizer.ggml.bos_token_id"),
            "eos_token_id": id("tokenizer.ggml.eos_token_id"),
            "pad_token_id": id("tokenizer.ggml.padding_token_id"),
        })
    }
}
