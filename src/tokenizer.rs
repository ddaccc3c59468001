//! The HF `tokenizers` library behind a small wrapper: encode, decode, streaming decode that never
//! emits half a UTF-8 character, and chat templates rendered with minijinja from the model's own
//! template (as HF's `apply_chat_template` renders them with jinja2).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use serde_json::Value as Json;

/// Most template instructions one chat render may run before it is stopped as runaway. SmolLM2's
/// ChatML template renders 1000 messages well within it (see the test below); a nested loop of
/// 10^5 × 10^5 is stopped in well under a second.
const TEMPLATE_FUEL: u64 = 2_000_000;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Jinja chat template from tokenizer_config.json (or chat_template.jinja).
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

/// One chat message: role ("system", "user", "assistant") and content.
#[derive(Clone, Debug, Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
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
        Ok(Tokenizer {
            inner,
            chat_template,
            bos_token: token_str(tokenizer_config.get("bos_token")),
            eos_token: token_str(tokenizer_config.get("eos_token")),
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

    /// Render the chat template for `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt`. Uses jinja2's settings as HF does (trim_blocks, lstrip_blocks).
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        no_panic("rendering the chat template", || {
            self.render_chat_template(messages, add_generation_prompt)
        })
    }

    fn render_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .chat_template
            .as_deref()
            .context("this model has no chat template (tokenizer_config.json has no chat_template); use `generate`")?;
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // A template from a model directory is untrusted: bound the work it may do (a real chat
        // template uses a few thousand instructions per message).
        env.set_fuel(Some(TEMPLATE_FUEL));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template)
            .map_err(|e| anyhow!("the model's chat template does not parse: {e}"))?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat")?
            .render(ctx)
            .map_err(|e| anyhow!("rendering the chat template failed: {e}"))
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
}
