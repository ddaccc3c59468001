//! The HF `tokenizers` library behind a small wrapper: encode, decode, streaming decode that never
//! emits half a UTF-8 character, and the chat template's inputs as HF's `apply_chat_template`
//! passes them (template.rs renders it as transformers' jinja2 environment does).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use serde_json::Value as Json;

#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Jinja chat template from tokenizer_config.json (or chat_template.jinja).
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// The special tokens transformers passes to every template (its `special_tokens_map`:
    /// bos/eos/unk/sep/pad/cls/mask tokens and `additional_special_tokens`), as set in
    /// tokenizer_config.json, in that order.
    pub special_tokens: serde_json::Map<String, Json>,
}

/// What one chat render gets, as transformers' `apply_chat_template(conversation, tools=...,
/// documents=..., add_generation_prompt=..., **kwargs)` passes it. Messages are JSON objects kept
/// as given (key order too): `role`, `content` (a string, or a list of parts), `tool_calls`,
/// `tool_call_id`, `name`, `reasoning_content`...
#[derive(Clone, Debug, Default)]
pub struct Chat {
    /// A JSON array of message objects.
    pub messages: Json,
    /// Tool definitions (JSON schemas, `{"type": "function", "function": {...}}`); `None` is
    /// passed to the template as `none`, as transformers does.
    pub tools: Option<Json>,
    /// Documents for retrieval-augmented templates; `None` is `none`.
    pub documents: Option<Json>,
    /// End with the assistant's turn opener.
    pub add_generation_prompt: bool,
    /// Extra template variables (transformers' `**kwargs`: `enable_thinking`, `date_string`...);
    /// they override the special tokens of the same name.
    pub extra: serde_json::Map<String, Json>,
    /// What `strftime_now` formats; `None` is the local time now (a fixed time for tests).
    pub now: Option<chrono::NaiveDateTime>,
}

/// One plain chat message: role ("system", "user", "assistant") and content. Tool calls and
/// other fields go through [`Chat`] as JSON.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    /// A message with this role and content.
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Run a call into the tokenizers or template library, turning a panic inside it into an error.
/// Their inputs (tokenizer.json, chat templates) come from untrusted model directories; a bug in
/// a library must end in a clear message, not an abort. The panic message is kept, the default
/// hook's "thread panicked" print is silenced while the call runs.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::panic::{catch_unwind, set_hook, take_hook, AssertUnwindSafe};
    let hook = take_hook();
    set_hook(Box::new(|_| {}));
    let out = catch_unwind(AssertUnwindSafe(f));
    set_hook(hook);
    out.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(anyhow!("{what} failed inside the library: {msg}"))
    })
}

/// A special-token field of tokenizer_config.json: a string, or an AddedToken object.
fn token_str(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// `tokenizer.json` plus, when present, `tokenizer_config.json` / `chat_template.jinja`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let text =
            crate::config::read_text(&path, 512 << 20).with_context(|| format!("cannot read {}", path.display()))?;
        let json: Json =
            serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        let tc_path = dir.join("tokenizer_config.json");
        let mut tc = match crate::config::read_text(&tc_path, 64 << 20) {
            Ok(t) => serde_json::from_str(&t).with_context(|| format!("{} is not valid JSON", tc_path.display()))?,
            Err(_) => Json::Null,
        };
        if let Ok(t) = crate::config::read_text(&dir.join("chat_template.jinja"), 16 << 20) {
            if !tc.is_object() {
                tc = Json::Object(Default::default());
            }
            tc["chat_template"] = Json::String(t);
        }
        Self::from_json(&json, &tc).with_context(|| format!("{}", path.display()))
    }

    /// From parsed tokenizer.json and tokenizer_config.json (Null when absent).
    pub fn from_json(tokenizer_json: &Json, tokenizer_config: &Json) -> Result<Self> {
        let bytes = serde_json::to_vec(tokenizer_json)?;
        let inner = no_panic("loading tokenizer.json", || {
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| anyhow!("invalid tokenizer.json: {e}"))
        })?;
        // chat_template is a string, or a list of {name, template} of which "default" is used.
        let chat_template = match tokenizer_config.get("chat_template") {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Json::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Json::as_str)
                .map(str::to_string),
            _ => None,
        };
        let mut special_tokens = serde_json::Map::new();
        for name in [
            "bos_token",
            "eos_token",
            "unk_token",
            "sep_token",
            "pad_token",
            "cls_token",
            "mask_token",
        ] {
            if let Some(t) = token_str(tokenizer_config.get(name)) {
                special_tokens.insert(name.into(), Json::String(t));
            }
        }
        if let Some(Json::Array(list)) = tokenizer_config.get("additional_special_tokens") {
            let list = list
                .iter()
                .filter_map(|t| token_str(Some(t)).map(Json::String))
                .collect();
            special_tokens.insert("additional_special_tokens".into(), Json::Array(list));
        }
        Ok(Tokenizer {
            inner,
            chat_template,
            bos_token: token_str(tokenizer_config.get("bos_token")),
            eos_token: token_str(tokenizer_config.get("eos_token")),
            special_tokens,
        })
    }

    /// Encode text as HF's `tokenizer(text)` does (special tokens added per the tokenizer's
    /// post-processor; SmolLM2 adds none).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = no_panic("tokenizing", || {
            self.inner
                .encode(text, true)
                .map_err(|e| anyhow!("tokenizing failed: {e}"))
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encode text that already holds its special tokens (a rendered chat template), as HF's
    /// `apply_chat_template(tokenize=True)` does: no post-processor tokens are added.
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = no_panic("tokenizing", || {
            self.inner
                .encode(text, false)
                .map_err(|e| anyhow!("tokenizing failed: {e}"))
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Whether text like `<|im_start|>` is read as its special token (the default, as HF's
    /// tokenizers do) or as plain text (HF's `split_special_tokens=True`, `tokenize --no-special`).
    pub fn set_parse_special(&mut self, parse: bool) {
        self.inner.set_encode_special_tokens(!parse);
    }

    /// The text of one token as decoding shows it (special tokens included), e.g. " Paris".
    /// A byte-level token that is part of a UTF-8 character reads as U+FFFD.
    pub fn piece(&self, id: u32) -> Result<String> {
        self.decode(&[id], false)
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        no_panic("decoding", || {
            self.inner
                .decode(ids, skip_special)
                .map_err(|e| anyhow!("decoding failed: {e}"))
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_to_id(t))
    }

    /// Render the chat template for plain `messages`, ending with the assistant's turn opener
    /// when `add_generation_prompt`: [`Tokenizer::render_chat`] with no tools.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_chat(&Chat {
            messages: serde_json::to_value(messages)?,
            add_generation_prompt,
            ..Chat::default()
        })
    }

    /// Render the model's chat template as transformers' `apply_chat_template(tokenize=False)`
    /// does: the template gets the special tokens, then `chat.extra`, then `messages`, `tools`,
    /// `documents` and `add_generation_prompt`.
    pub fn render_chat(&self, chat: &Chat) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .context("this model has no chat template (no chat_template in tokenizer_config.json or chat_template.jinja, no tokenizer.chat_template in a GGUF file); use `generate`")?;
        if !chat.messages.is_array() {
            return Err(anyhow!(
                "chat messages must be a JSON array of objects, not {}",
                chat.messages
            ));
        }
        let mut ctx = self.special_tokens.clone();
        ctx.extend(chat.extra.clone());
        ctx.insert("messages".into(), chat.messages.clone());
        ctx.insert("tools".into(), chat.tools.clone().unwrap_or(Json::Null));
        ctx.insert("documents".into(), chat.documents.clone().unwrap_or(Json::Null));
        ctx.insert("add_generation_prompt".into(), Json::Bool(chat.add_generation_prompt));
        let ctx = Json::Object(ctx);
        no_panic("rendering the chat template", || {
            crate::template::render(template, &ctx, chat.now)
        })
    }
}

/// Streaming detokenisation: feed ids one at a time, get text as soon as it is whole. Decodes a
/// short window of recent ids and emits only the new suffix, holding back while the text ends in
/// an incomplete UTF-8 sequence (decoded as U+FFFD).
pub struct TokenStream<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    prev: usize, // start of the window that is decoded
    cur: usize,  // ids before this have been emitted
}

impl<'a> TokenStream<'a> {
    pub fn new(tok: &'a Tokenizer) -> Self {
        TokenStream {
            tok,
            ids: vec![],
            prev: 0,
            cur: 0,
        }
    }

    /// Add one id; returns the text that became complete, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        let before = self.tok.decode(&self.ids[self.prev..self.cur], true)?;
        self.ids.push(id);
        let text = self.tok.decode(&self.ids[self.prev..], true)?;
        if text.len() > before.len() && !text.ends_with('\u{FFFD}') && text.starts_with(&before) {
            let new = text[before.len()..].to_string();
            self.prev = self.cur;
            self.cur = self.ids.len();
            return Ok(Some(new));
        }
        Ok(None)
    }

    /// Whatever is held back at the end (an incomplete character is emitted as U+FFFD).
    pub fn finish(&mut self) -> Result<Option<String>> {
        let before = self.tok.decode(&self.ids[self.prev..self.cur], true)?;
        let text = self.tok.decode(&self.ids[self.prev..], true)?;
        self.prev = self.ids.len();
        self.cur = self.ids.len();
        Ok(text
            .strip_prefix(before.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fuel bound leaves room for long real conversations.
    #[test]
    fn chatml_template_renders_a_long_conversation_within_the_fuel() {
        let template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
            {{ '<|im_start|>system\\nYou are a helpful AI assistant<|im_end|>\\n' }}{% endif %}\
            {{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}\
            {% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
        let tok_json = serde_json::json!({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}});
        let tok = Tokenizer::from_json(&tok_json, &serde_json::json!({ "chat_template": template })).unwrap();
        let msgs: Vec<Message> = (0..1000)
            .map(|i| Message::new(if i % 2 == 0 { "user" } else { "assistant" }, "some words"))
            .collect();
        let out = tok.apply_chat_template(&msgs, true).unwrap();
        assert_eq!(out.matches("<|im_start|>").count(), 1002);
    }

    /// transformers' context: special tokens from the config, kwargs, tools passed as none when
    /// absent, messages as arbitrary JSON objects in their own key order.
    #[test]
    fn render_chat_passes_what_transformers_passes() {
        let template =
            "{{ bos_token }}|{{ unk_token }}|{{ tools is none }}|{{ documents is none }}|{{ enable_thinking }}|\
            {% for m in messages %}{{ m|tojson }}{% endfor %}|{{ add_generation_prompt }}";
        let tok_json = serde_json::json!({"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}});
        let config =
            serde_json::json!({"chat_template": template, "bos_token": {"content": "<s>"}, "unk_token": "<unk>"});
        let tok = Tokenizer::from_json(&tok_json, &config).unwrap();
        let mut chat = Chat {
            messages: serde_json::from_str(r#"[{"role": "assistant", "content": null, "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": {"z": 1, "a": 2}}}]}]"#).unwrap(),
            ..Chat::default()
        };
        chat.extra.insert("enable_thinking".into(), Json::Bool(false));
        let want = r#"<s>|<unk>|True|True|False|{"role": "assistant", "content": null, "tool_calls": [{"id": "1", "function": {"name": "f", "arguments": {"z": 1, "a": 2}}}]}|False"#;
        assert_eq!(tok.render_chat(&chat).unwrap(), want);
        chat.tools = Some(serde_json::json!([]));
        assert!(tok.render_chat(&chat).unwrap().contains("|False|True|"));
        chat.messages = serde_json::json!({"role": "user"});
        assert!(tok.render_chat(&chat).unwrap_err().to_string().contains("JSON array"));
    }
}
