//! The tokenizer, its config and the generation config of a GGUF file, as the HF files
//! (`tokenizer.json`, `tokenizer_config.json`, `generation_config.json`) the tokenizer reads.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value as Json};

use super::{Gguf, Value};

/// Token texts llama.cpp counts as end of generation wherever they appear in a vocabulary
/// (llama.cpp `src/llama-vocab.cpp`, `llama_vocab::impl::load`, the list after "maintain a list
/// of tokens that cause end-of-generation").
pub const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// The special tokens of a GGUF vocabulary, with llama.cpp's fallbacks where the
/// `tokenizer.ggml.*` metadata leaves something out (`llama_vocab::impl::load`), and one warning
/// line for each guess.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VocabFacts {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Prepend BOS / append EOS when encoding.
    pub add_bos: bool,
    pub add_eos: bool,
    /// End-of-generation ids, lowest first: eos, eot, eom and the FIM pad / repo / separator
    /// tokens where the file names them, and the control tokens with an `EOG_TEXTS` text (llama.cpp
    /// counts these); without an eos or token types, every token with an `EOG_TEXTS` text.
    pub eog: Vec<u32>,
    /// Without an eos or without token types: the tokens with an `EOG_TEXTS` text not marked as
    /// control, made control as llama.cpp does ("control-looking token ... will be overridden").
    /// With both, the file's types stand (as in HF's tokenizer).
    pub made_control: Vec<u32>,
    /// Each: the key that is missing or wrong, what tinfer assumed, what the user can do.
    pub warnings: Vec<String>,
}

/// The split regex of Qwen2's tokenizer.json (HF), which llama.cpp's "qwen2" pre-tokenizer
/// also uses: contractions, letters with one leading non-letter, single digits, punctuation runs,
/// newlines, spaces.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex of Llama 3's tokenizer.json (HF), which llama.cpp's LLAMA3, DBRX and SMAUG
/// pre-tokenizers also use (`src/llama-vocab.cpp`, `llm_tokenizer_bpe`): Qwen2's, with numbers in
/// runs of up to three digits.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` names llama.cpp reads as LLAMA3 (`llama_vocab::impl::load`): the
/// Llama 3 split, whole words found in the vocabulary taken as they are (`ignore_merges`), and
/// BOS added when the file does not say.
pub const LLAMA3_PRE: &[&str] = &[
    "llama3",
    "llama-v3",
    "llama-bpe",
    "falcon3",
    "falcon-h1",
    "pixtral",
    "midm-2.0",
    "lfm2",
    "jina-v5-nano",
];

impl Gguf {
    /// The vocabulary's special tokens and what tinfer had to assume; see `VocabFacts`.
    pub fn vocab_facts(&self) -> VocabFacts {
        let mut f = VocabFacts::default();
        let Some(tokens) = self.get("tokenizer.ggml.tokens").and_then(Value::as_array) else {
            return f; // no vocabulary: the tokenizer's own error says so
        };
        let n = tokens.len();
        let text = |id: u32| tokens.get(id as usize).and_then(Value::as_str).unwrap_or("");
        let fix = "re-convert the model with a current llama.cpp (convert_hf_to_gguf.py), or pass its HF directory";
        let w = &mut f.warnings;
        // An id key: None when missing; out of range counts as missing, with a warning.
        let id = |key: &str, w: &mut Vec<String>| {
            let v = self.get(key).and_then(Value::as_u64)?;
            if v < n as u64 {
                return Some(v as u32);
            }
            w.push(format!(
                "{key} {v} is out of range (vocabulary of {n}): ignoring it; {fix}"
            ));
            None
        };
        let model = self.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("");
        if model == "gpt2" && self.get("tokenizer.ggml.pre").is_none() {
            w.push(format!(
                "tokenizer.ggml.pre is missing: splitting text with GPT-2's byte-level pre-tokenizer \
                 (llama.cpp warns too and uses its own \"default\" split), so prompts may tokenize unlike the \
                 original model; {fix}"
            ));
        }
        f.bos = id("tokenizer.ggml.bos_token_id", w);
        f.eos = id("tokenizer.ggml.eos_token_id", w);
        let eot = id("tokenizer.ggml.eot_token_id", w);
        let eom = id("tokenizer.ggml.eom_token_id", w);
        let flag = |key: &str| self.get(key).and_then(Value::as_bool);
        // llama.cpp adds BOS by default for SentencePiece and the LLAMA3 pre-tokenizers.
        let pre = self.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("");
        let bos_default = model == "llama" || LLAMA3_PRE.contains(&pre);
        f.add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(bos_default);
        f.add_eos = flag("tokenizer.ggml.add_eos_token").unwrap_or(false);
        match (f.bos, flag("tokenizer.ggml.add_bos_token")) {
            (None, add) if self.get("tokenizer.ggml.bos_token_id").is_none() => w.push(format!(
                "tokenizer.ggml.bos_token_id is missing: no BOS token{} (llama.cpp would assume id 11 for a \
                 BPE vocabulary); {fix}",
                if add == Some(true) {
                    " although add_bos_token is true"
                } else {
                    ""
                }
            )),
            (Some(b), None) => w.push(format!(
                "tokenizer.ggml.add_bos_token is missing: {} BOS {:?} ({b}) to prompts, llama.cpp's \
                 default for {} vocabularies; {fix}",
                if bos_default { "adding" } else { "not adding" },
                text(b),
                if bos_default { "these" } else { "BPE" }
            )),
            _ => {}
        }
        if f.add_eos && f.eos.is_none() {
            w.push(format!(
                "tokenizer.ggml.add_eos_token is true but there is no EOS token: adding none; {fix}"
            ));
        }
        let types = self.get("tokenizer.ggml.token_type").and_then(Value::as_array);
        let ty = |i: u32| {
            types
                .and_then(|t| t.get(i as usize))
                .and_then(Value::as_u64)
                .unwrap_or(1)
        };
        // llama.cpp stops at eos, eot, eom, the FIM pad / repo / file-separator tokens and every
        // token whose text is an end text. tinfer takes the end texts the file marks as control
        // tokens, and keeps the others as the text the file says they are, as HF's tokenizer does
        // (Qwen2's "</s>" is plain text: llama.cpp's override would make "</s>" typed in a prompt
        // one token the model never saw, and stop at it).
        let by_text: Vec<u32> = (0..n as u32).filter(|&i| EOG_TEXTS.contains(&text(i))).collect();
        let fim = ["fim_pad", "fim_rep", "fim_sep"].map(|k| id(&format!("tokenizer.ggml.{k}_token_id"), w));
        f.eog = [f.eos, eot, eom].into_iter().chain(fim).flatten().collect();
        f.eog.extend(by_text.iter().filter(|&&i| types.is_some() && ty(i) == 3));
        // Without token types, or without an eos, the end texts are all there is to stop at:
        // made control, as llama.cpp does.
        if types.is_none() || f.eos.is_none() {
            f.made_control = by_text
                .iter()
                .copied()
                .filter(|&i| ty(i) != 3 || types.is_none())
                .collect();
            f.eog.extend(&f.made_control);
        }
        if f.eos.is_none() {
            let found: Vec<String> = by_text.iter().map(|&i| format!("{:?} ({i})", text(i))).collect();
            w.push(if found.is_empty() {
                format!(
                    "tokenizer.ggml.eos_token_id is missing and no known end-of-generation text is in the \
                     vocabulary: generation stops only at --max-tokens or the end of the context; {fix}"
                )
            } else {
                format!(
                    "tokenizer.ggml.eos_token_id is missing: stopping at the end-of-generation tokens found by \
                     their text, {}, as llama.cpp does; {fix}",
                    found.join(", ")
                )
            });
        }
        f.eog.sort_unstable();
        f.eog.dedup();
        let listed: Vec<String> = f.made_control.iter().map(|&i| format!("{:?} ({i})", text(i))).collect();
        if types.is_none() {
            w.push(format!(
                "tokenizer.ggml.token_type is missing: every token is plain text{}, as in llama.cpp, so \
                 special tokens such as <|im_start|> written in a prompt are split like text; {fix}",
                if listed.is_empty() {
                    String::new()
                } else {
                    format!(" except the end-of-generation tokens {}", listed.join(", "))
                }
            ));
        }
        f
    }

    /// `tokenizer.json` (HF tokenizers format) synthesised from the `tokenizer.ggml.*` metadata:
    /// byte-level BPE ("gpt2") with the pre-tokenizer `tokenizer.ggml.pre` names, or SentencePiece
    /// BPE ("llama": Llama 2, Mistral, Gemma) as transformers' `integrations/ggml.py` rebuilds it
    /// (`GGUFLlamaConverter`, `GGUFGemmaConverter`): merges derived from the vocabulary (`spm_merges`),
    /// byte fallback, spaces as "▁", and a "▁" before the text where `tokenizer.ggml.add_space_prefix`
    /// (llama.cpp's default: true) asks for it, as llama.cpp does (`llm_tokenizer_spm`).
    pub fn hf_tokenizer_json(&self) -> Result<Json> {
        let model = self.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("");
        let spm = match model {
            "gpt2" => false,
            "llama" => true,
            _ => bail!(
                "tokenizer model {model:?} is not supported from GGUF (tinfer reads byte-level BPE, \"gpt2\", and \
                 SentencePiece BPE, \"llama\"); supply the model's HF tokenizer.json instead"
            ),
        };
        let tokens = self
            .get("tokenizer.ggml.tokens")
            .and_then(Value::as_array)
            .context("tokenizer.ggml.tokens is missing or not an array")?;
        let types = self.get("tokenizer.ggml.token_type").and_then(Value::as_array);
        let mut texts: Vec<String> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| {
                t.as_str()
                    .map(str::to_string)
                    .with_context(|| format!("token {id} is not a string"))
            })
            .collect::<Result<_>>()?;
        // Gemma writes its runs of spaces as spaces, where SentencePiece writes "▁"; transformers
        // respells them and ranks merges by position (its scores are -1000 there, not ranks).
        let gemma = spm && texts.iter().any(|t| t.contains(' ') && t.trim().is_empty());
        if gemma {
            for t in texts.iter_mut().filter(|t| t.contains(' ') && t.trim().is_empty()) {
                *t = "\u{2581}".repeat(t.chars().count());
            }
        }
        let facts = self.vocab_facts();
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, s) in texts.iter().enumerate() {
            // llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
            let mut ty = types.and_then(|t| t.get(id)).and_then(Value::as_u64).unwrap_or(1);
            if facts.made_control.contains(&(id as u32)) {
                ty = 3;
            }
            if ty == 3 || ty == 4 {
                added.push(json!({
                    "id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": ty == 4, "special": ty == 3,
                }));
            }
            vocab.insert(s.clone(), json!(id));
        }
        let merges: Vec<Json> = if spm {
            let scores: Vec<f32> = match self.get("tokenizer.ggml.scores").and_then(Value::as_array) {
                Some(s) => s.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                None => bail!("tokenizer.ggml.scores is missing: a SentencePiece vocabulary needs them for its merges"),
            };
            spm_merges(&texts, &scores, gemma)
                .into_iter()
                .map(|(a, b)| json!([a, b]))
                .collect()
        } else {
            let merges = self
                .get("tokenizer.ggml.merges")
                .and_then(Value::as_array)
                .context("tokenizer.ggml.merges is missing or not an array")?;
            (merges.iter().enumerate())
                .map(|(i, m)| {
                    m.as_str()
                        .map(|s| json!(s))
                        .with_context(|| format!("merge {i} is not a string"))
                })
                .collect::<Result<_>>()?
        };
        let byte_level =
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre = self
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        // Split with a regex, then bytes to characters without GPT-2's regex (Qwen2's and Llama 3's
        // tokenizer.json).
        let split = |re: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            ]})
        };
        let add_space = self
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let pre_tokenizer = match pre {
            _ if spm => Json::Null, // llama.cpp reads no pre-tokenizer for SentencePiece
            "default" | "gpt-2" | "gpt2" => byte_level.clone(),
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level,
            ]}),
            "qwen2" => split(QWEN2_SPLIT),
            p if LLAMA3_PRE.contains(&p) || p == "dbrx" || p == "smaug-bpe" => split(LLAMA3_SPLIT),
            _ => bail!(
                "pre-tokenizer {pre:?} is not supported from GGUF (tinfer knows \"gpt2\", \"smollm\", \"qwen2\", and \
                 \"llama-bpe\" with llama.cpp's other names for it); supply the model's HF tokenizer.json instead"
            ),
        };
        // SentencePiece: spaces as "▁", and one before each stretch of text (the start and after
        // each special token, as llama.cpp and Llama 2's tokenizer.json do) where asked. Qwen2's
        // tokenizer.json NFC-normalises the text (GGUF files do not record it; llama.cpp skips it).
        let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
        let normalizer = match (spm, add_space) {
            (true, true) => {
                json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace]})
            }
            (true, false) => replace,
            _ if pre == "qwen2" => json!({"type": "NFC"}),
            _ => Json::Null,
        };
        // BOS before and EOS after each sequence, where the file asks for them (TemplateProcessing);
        // otherwise the byte-level post-processor HF's GPT-2 tokenizer uses.
        let special = |id: Option<u32>, add: bool| id.filter(|_| add).map(|i| (i, texts[i as usize].as_str()));
        let (bos, eos) = (special(facts.bos, facts.add_bos), special(facts.eos, facts.add_eos));
        let post_processor = if bos.is_none() && eos.is_none() {
            match spm {
                true => Json::Null,
                false => {
                    json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
                }
            }
        } else {
            let tok = |t: Option<(u32, &str)>, type_id: u32| {
                t.map(|(_, s)| json!({"SpecialToken": {"id": s, "type_id": type_id}}))
            };
            let seq = |name: &str, type_id: u32| Some(json!({"Sequence": {"id": name, "type_id": type_id}}));
            let single: Vec<Json> = [tok(bos, 0), seq("A", 0), tok(eos, 0)].into_iter().flatten().collect();
            let pair: Vec<Json> = [
                tok(bos, 0),
                seq("A", 0),
                tok(eos, 0),
                tok(bos, 1),
                seq("B", 1),
                tok(eos, 1),
            ]
            .into_iter()
            .flatten()
            .collect();
            let specials: serde_json::Map<String, Json> = [bos, eos]
                .into_iter()
                .flatten()
                .map(|(i, s)| (s.to_string(), json!({"id": s, "ids": [i], "tokens": [s]})))
                .collect();
            json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
        };
        // SentencePiece: <0xNN> tokens to bytes, then "▁" to spaces, less the prefix space.
        let decoder = match spm {
            true => json!({"type": "Sequence", "decoders": [
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "Strip", "content": " ", "start": add_space as usize, "stop": 0},
            ]}),
            false => json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
        };
        let unk = self
            .get("tokenizer.ggml.unknown_token_id")
            .and_then(Value::as_u64)
            .filter(|_| spm);
        let unk = unk.and_then(|i| texts.get(i as usize));
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": decoder,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": spm, "byte_fallback": spm,
                "ignore_merges": LLAMA3_PRE.contains(&pre), "vocab": vocab, "merges": merges,
            },
        }))
    }

    /// `tokenizer_config.json`: special tokens and the chat template.
    pub fn hf_tokenizer_config(&self, context_len: u64) -> Json {
        let tokens = self.get("tokenizer.ggml.tokens").and_then(Value::as_array);
        let facts = self.vocab_facts();
        let text = |id: Option<u64>| tokens?.get(id? as usize)?.as_str().map(str::to_string);
        let tok = |key: &str| text(self.get(key).and_then(Value::as_u64));
        json!({
            "tokenizer_class": "GPT2Tokenizer",
            "bos_token": text(facts.bos.map(u64::from)),
            "eos_token": text(facts.eos.map(u64::from)),
            "pad_token": tok("tokenizer.ggml.padding_token_id"),
            "unk_token": tok("tokenizer.ggml.unknown_token_id"),
            "add_bos_token": facts.add_bos,
            "add_eos_token": facts.add_eos,
            "clean_up_tokenization_spaces": false,
            "model_max_length": context_len,
            "chat_template": self.get("tokenizer.chat_template").and_then(Value::as_str),
        })
    }

    /// `generation_config.json`: the ids generation starts and stops on (`eos_token_id`: the
    /// end-of-generation set of `vocab_facts`, one id or a list, as HF writes it).
    pub fn hf_generation_config(&self) -> Json {
        let id = |key: &str| self.get(key).and_then(Value::as_u64);
        let facts = self.vocab_facts();
        let eos = match facts.eog[..] {
            [] => Json::Null,
            [one] => json!(one),
            _ => json!(facts.eog),
        };
        json!({
            "bos_token_id": facts.bos,
            "eos_token_id": eos,
            "pad_token_id": id("tokenizer.ggml.padding_token_id"),
        })
    }
}

/// The merges of a SentencePiece BPE vocabulary, which GGUF files do not store, rebuilt as
/// transformers' `GGUFTokenizerSkeleton` (`integrations/ggml.py`) does: every split of a token
/// into two tokens, the merged token's rank first (its score, or for Gemma its position), then the
/// halves' scores, highest first.
fn spm_merges<'a>(tokens: &'a [String], scores: &[f32], by_position: bool) -> Vec<(&'a str, &'a str)> {
    use std::cmp::Ordering::Equal;
    let index: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let score = |i: usize| scores.get(i).copied().unwrap_or(0.0);
    let rank = |i: usize| if by_position { -(i as f32) } else { score(i) };
    let mut m: Vec<(usize, usize, usize)> = vec![]; // (merged, left, right), by merged then split
    for (i, t) in tokens.iter().enumerate().filter(|&(i, t)| index[t.as_str()] == i) {
        for (k, _) in t.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (index.get(&t[..k]), index.get(&t[k..])) {
                m.push((i, l, r));
            }
        }
    }
    let desc = |a: f32, b: f32| b.partial_cmp(&a).unwrap_or(Equal);
    m.sort_by(|a, b| {
        (desc(rank(a.0), rank(b.0)).then(a.0.cmp(&b.0)))
            .then(desc(score(a.1), score(b.1)))
            .then(desc(score(a.2), score(b.2)))
    });
    m.into_iter()
        .map(|(_, l, r)| (tokens[l].as_str(), tokens[r].as_str()))
        .collect()
}
