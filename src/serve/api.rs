//! OpenAI's API shapes: requests parsed and checked field by field (a 400 in OpenAI's error
//! shape names what is wrong), responses whole or as Server-Sent Events chunks ending in
//! `data: [DONE]`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as Json_};
use tinfer::engine::Engine;
use tinfer::sampler::SamplerConfig;
use tinfer::tokenizer::{Message, Tokenizer};

use crate::cli::args::{ModelArgs, RunArgs};

/// The model as the API describes it.
#[derive(Clone)]
pub struct ModelInfo {
    pub id: String,
    pub created: u64,
    pub tok: Arc<Tokenizer>,
    /// vocab_size and seq_len (the context) are what requests are checked against
    pub cfg: tinfer::config::Config,
    /// Most sequences at once (`--parallel`): the most choices a request may ask for.
    pub parallel: usize,
    /// The model file's own name, also taken in requests' `model`.
    pub file: String,
    /// `response_format: json_object`'s constraint (each token's text, decoded once).
    pub json: Arc<super::json_mode::JsonObject>,
}

/// Load the model (on the engine thread): the engine, its tokenizer, and what the API shows.
pub fn load(model: &ModelArgs, run: &RunArgs, parallel: usize) -> anyhow::Result<(Engine, Tokenizer, ModelInfo)> {
    let mut loaded = crate::cli::load::prepare(model, Some(run))?;
    let tok = crate::cli::load::need_tokenizer(&loaded)?.clone();
    let shared = Arc::new(tok.clone());
    let m = crate::cli::load::build(model, &mut loaded, parallel)?;
    // served as the name given to -m (a path: its last component), as vLLM serves --model; the
    // file's name is taken too
    let file = std::path::Path::new(&loaded.source)
        .file_name()
        .map_or(loaded.source.clone(), |n| n.to_string_lossy().into_owned());
    let given = model
        .path
        .model
        .as_ref()
        .map(|p| p.to_string_lossy().trim_end_matches('/').to_string());
    let id = given
        .as_ref()
        .and_then(|g| std::path::Path::new(g).file_name())
        .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
    let info = ModelInfo {
        id,
        created: now(),
        tok: shared,
        cfg: m.cfg.clone(),
        parallel,
        file,
        json: super::json_mode::JsonObject::new(&tok, m.cfg.vocab_size, &m.cfg.eos_token_ids),
    };
    Ok((Engine::new(m), tok, info))
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An error in OpenAI's shape with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: &str) -> Self {
        ApiError {
            status,
            kind,
            message: message.to_string(),
        }
    }
    /// 400: a client's mistake.
    pub fn bad(message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "param": null, "code": null}});
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Completion,
    Chat,
}

/// A checked request.
pub struct Request {
    pub kind: Kind,
    /// One prompt, or several (completions' list of texts or of token lists): each gets `n`
    /// choices, prompt i's numbered i·n ..
    pub prompts: Vec<Vec<u32>>,
    pub sampler: SamplerConfig,
    /// As asked; each prompt's is cut to the room its context leaves.
    pub max_tokens: usize,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Log-probabilities of each output token and this many alternatives.
    pub logprobs: Option<usize>,
    /// Completions: the prompt's text first (with `logprobs`, its tokens' log-probabilities).
    pub echo: bool,
    /// Choices: the prompt runs once, its KV pages shared by n sequences (forks).
    pub n: usize,
    /// vLLM's extension: never stop at (nor sample) the model's end tokens.
    pub ignore_eos: bool,
    /// `response_format: {"type": "json_object"}`: the output is constrained to one JSON object.
    pub json: bool,
}

/// Most prompts one completions request may list.
const MAX_PROMPTS: usize = 64;

/// Completions' `prompt`: a text, token ids, or a list of either (several prompts).
fn completion_prompts(v: Option<&Json_>, m: &ModelInfo) -> Result<Vec<Vec<u32>>, ApiError> {
    let text = |s: &str| m.tok.encode(s).map_err(|e| ApiError::bad(&format!("{e:#}")));
    let ids = |v: &Json_| {
        token_ids(v, m.cfg.vocab_size)
            .ok_or_else(|| ApiError::bad(&format!("prompt: token ids go from 0 to {}", m.cfg.vocab_size - 1)))
    };
    let bad =
        || ApiError::bad("prompt must be a string, a list of token ids, or a list of strings or of token-id lists");
    let prompts = match v {
        Some(Json_::String(s)) => vec![text(s)?],
        Some(v @ Json_::Array(a)) if !a.is_empty() && a.iter().all(Json_::is_number) => vec![ids(v)?],
        // several prompts (lm-eval's local-completions sends its prompts as [[ids]])
        Some(Json_::Array(a)) if !a.is_empty() && a.iter().all(Json_::is_string) => {
            a.iter().map(|s| text(s.as_str().unwrap())).collect::<Result<_, _>>()?
        }
        Some(Json_::Array(a)) if !a.is_empty() && a.iter().all(Json_::is_array) => {
            a.iter().map(ids).collect::<Result<_, _>>()?
        }
        _ => return Err(bad()),
    };
    if prompts.len() > MAX_PROMPTS {
        return Err(ApiError::bad(&format!(
            "prompt lists {} prompts; at most {MAX_PROMPTS} a request",
            prompts.len()
        )));
    }
    Ok(prompts)
}

/// The body as JSON, or a 400.
pub fn json_body(body: &[u8]) -> Result<Json_, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(&format!("the body is not valid JSON: {e}")))
}

/// Token ids from a JSON list, each below `vocab`.
pub fn token_ids(v: &Json_, vocab: usize) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|x| x.as_u64().filter(|&i| (i as usize) < vocab).map(|i| i as u32))
        .collect()
}

/// Parse and check a completions or chat request.
pub fn parse(body: &[u8], m: &ModelInfo, kind: Kind) -> Result<Request, ApiError> {
    let j = json_body(body)?;
    let o = j
        .as_object()
        .ok_or_else(|| ApiError::bad("the body must be a JSON object"))?;
    if let Some(name) = o.get("model").and_then(Json_::as_str) {
        if name != m.id && name != m.file {
            return Err(ApiError::bad(&format!(
                "model {name:?} is not served here; this server serves {:?}",
                m.id
            )));
        }
    }
    // fields tinfer does not implement yet are refused, not ignored: any value but the ones
    // that mean "off"
    let offs: [(&str, &[Json_]); 8] = [
        ("tools", &[json!([])]),
        ("tool_choice", &[json!("none")]),
        ("functions", &[json!([])]),
        ("function_call", &[json!("none")]),
        ("suffix", &[json!("")]),
        ("best_of", &[json!(1)]),
        ("logit_bias", &[json!({})]),
        ("prediction", &[]),
    ];
    for (field, off) in offs {
        let Some(v) = o.get(field).filter(|v| !v.is_null()) else {
            continue;
        };
        let is_off = off.iter().any(|x| match (v.as_f64(), x.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => v == x,
        });
        if !is_off {
            return Err(ApiError::bad(&format!(
                "{field} = {v} is not supported by tinfer serve yet"
            )));
        }
    }
    if o.get("stream").is_some_and(|v| !v.is_boolean() && !v.is_null()) {
        return Err(ApiError::bad("stream must be true or false"));
    }
    let num = |k: &str, default: f64| -> Result<f64, ApiError> {
        match o.get(k) {
            None | Some(Json_::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| ApiError::bad(&format!("{k} must be a number"))),
        }
    };
    let prompts = match kind {
        Kind::Completion => completion_prompts(o.get("prompt"), m)?,
        Kind::Chat => {
            let msgs = o
                .get("messages")
                .and_then(Json_::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| ApiError::bad("messages must be a non-empty list"))?;
            let mut messages = vec![];
            for (i, msg) in msgs.iter().enumerate() {
                let role = msg["role"].as_str().unwrap_or_default();
                if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
                    return Err(ApiError::bad(&format!(
                        "messages[{i}].role must be system, developer, user, assistant or tool"
                    )));
                }
                let content = match &msg["content"] {
                    Json_::String(s) => s.clone(),
                    Json_::Array(parts) => parts
                        .iter()
                        .map(|p| match (p["type"].as_str(), p["text"].as_str()) {
                            (Some("text"), Some(t)) => Ok(t),
                            _ => Err(ApiError::bad(&format!(
                                "messages[{i}].content: only text parts are supported"
                            ))),
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .join(""),
                    Json_::Null => return Err(ApiError::bad(&format!("messages[{i}].content is missing"))),
                    _ => {
                        return Err(ApiError::bad(&format!(
                            "messages[{i}].content must be a string or a list of text parts"
                        )))
                    }
                };
                messages.push(Message::new(role, &content));
            }
            let text = m
                .tok
                .apply_chat_template(&messages, true)
                .map_err(|e| ApiError::bad(&format!("{e:#}")))?;
            vec![m.tok.encode_raw(&text).map_err(|e| ApiError::bad(&format!("{e:#}")))?]
        }
    };
    let scoring_only = o.get("max_tokens").and_then(Json_::as_f64) == Some(0.0);
    for (i, prompt) in prompts.iter().enumerate() {
        let which = if prompts.len() > 1 {
            format!("prompt {i}")
        } else {
            "the prompt".into()
        };
        if prompt.is_empty() {
            return Err(ApiError::bad(&format!("{which} is empty")));
        }
        if prompt.len() > m.cfg.seq_len {
            return Err(ApiError::bad(&format!(
                "{which} is {} tokens but the context holds {}: shorten it (or start the server with a larger -c)",
                prompt.len(),
                m.cfg.seq_len
            )));
        }
        if prompt.len() == m.cfg.seq_len && !scoring_only {
            return Err(ApiError::bad(&format!(
                "{which} fills the context of {} tokens: no room for new ones (max_tokens 0 scores it)",
                m.cfg.seq_len
            )));
        }
    }
    let room = m.cfg.seq_len - prompts.iter().map(Vec::len).min().unwrap_or(0);
    let max_key = if o.get("max_completion_tokens").is_some_and(|v| !v.is_null()) {
        "max_completion_tokens"
    } else {
        "max_tokens"
    };
    // OpenAI's defaults: 16 tokens for completions, up to the context for chat
    let default_max = if kind == Kind::Completion { 16.0 } else { room as f64 };
    let max_tokens = num(max_key, default_max)?;
    if max_tokens < 0.0 || max_tokens.fract() != 0.0 {
        return Err(ApiError::bad(&format!(
            "{max_key} must be a whole number >= 0, got {max_tokens}"
        )));
    }
    let temperature = num("temperature", 1.0)?;
    let top_p = num("top_p", 1.0)?;
    let (top_k, min_p, rep) = (num("top_k", 0.0)?, num("min_p", 0.0)?, num("repetition_penalty", 1.0)?);
    if !(0.0..=2.0).contains(&temperature) || !(0.0..=1.0).contains(&top_p) || top_p == 0.0 {
        return Err(ApiError::bad("temperature must be in 0..=2 and top_p in (0, 1]"));
    }
    if top_k < 0.0 || !(0.0..=1.0).contains(&min_p) || rep <= 0.0 {
        return Err(ApiError::bad(
            "top_k must be >= 0, min_p in 0..=1, repetition_penalty > 0",
        ));
    }
    let (presence, frequency) = (num("presence_penalty", 0.0)?, num("frequency_penalty", 0.0)?);
    if !(-2.0..=2.0).contains(&presence) || !(-2.0..=2.0).contains(&frequency) {
        return Err(ApiError::bad(
            "presence_penalty and frequency_penalty must be in -2..=2",
        ));
    }
    let seed = match o.get("seed") {
        None | Some(Json_::Null) => now() ^ (std::process::id() as u64) << 32,
        Some(v) => v
            .as_u64()
            .or(v.as_i64().map(|x| x as u64))
            .ok_or_else(|| ApiError::bad("seed must be a whole number"))?,
    };
    let stops = match o.get("stop") {
        None | Some(Json_::Null) => vec![],
        Some(Json_::String(s)) => vec![s.clone()],
        Some(Json_::Array(a)) if a.len() <= 4 && a.iter().all(Json_::is_string) => {
            a.iter().map(|s| s.as_str().unwrap().to_string()).collect()
        }
        Some(_) => return Err(ApiError::bad("stop must be a string or a list of at most 4 strings")),
    };
    let stream = o.get("stream").and_then(Json_::as_bool).unwrap_or(false);
    let top = |k: &str| -> Result<Option<usize>, ApiError> {
        match o.get(k) {
            None | Some(Json_::Null) => Ok(None),
            Some(v) => match v.as_u64().filter(|&n| n <= 20) {
                Some(n) => Ok(Some(n as usize)),
                None => Err(ApiError::bad(&format!("{k} must be a whole number from 0 to 20"))),
            },
        }
    };
    let logprobs = match kind {
        // completions: logprobs = how many alternatives
        Kind::Completion => top("logprobs")?,
        // chat: logprobs = true, top_logprobs = how many alternatives
        Kind::Chat => match (
            o.get("logprobs").and_then(Json_::as_bool).unwrap_or(false),
            top("top_logprobs")?,
        ) {
            (true, n) => Some(n.unwrap_or(0)),
            (false, Some(_)) => return Err(ApiError::bad("top_logprobs needs logprobs: true")),
            (false, None) => None,
        },
    };
    let n = num("n", 1.0)?;
    if n < 1.0 || n.fract() != 0.0 || n as usize > m.parallel {
        return Err(ApiError::bad(&format!(
            "n must be a whole number from 1 to {} (the server's --parallel: each choice is a sequence)",
            m.parallel
        )));
    }
    let n = n as usize;
    let echo = kind == Kind::Completion && o.get("echo").and_then(Json_::as_bool).unwrap_or(false);
    if stream && echo {
        return Err(ApiError::bad("echo is not supported with stream; ask without stream"));
    }
    let json = match o.get("response_format").filter(|v| !v.is_null()) {
        None => false,
        Some(v) => match v["type"].as_str() {
            Some("text") => false,
            Some("json_object") => true,
            _ => {
                return Err(ApiError::bad(&format!(
                    "response_format {v} is not supported: use {{\"type\": \"json_object\"}} (any JSON object) or \"text\"; json_schema is not implemented"
                )))
            }
        },
    };
    let ignore_eos = match o.get("ignore_eos") {
        None | Some(Json_::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::bad("ignore_eos must be true or false"))?,
    };
    let include_usage = o
        .get("stream_options")
        .and_then(|v| v["include_usage"].as_bool())
        .unwrap_or(false);
    Ok(Request {
        kind,
        prompts,
        sampler: SamplerConfig {
            temperature: temperature as f32,
            top_k: top_k as usize,
            top_p: top_p as f32,
            min_p: min_p as f32,
            repeat_penalty: rep as f32,
            presence_penalty: presence as f32,
            frequency_penalty: frequency as f32,
            seed,
        },
        max_tokens: (max_tokens as usize).min(room),
        ignore_eos,
        json,
        stops,
        stream,
        include_usage,
        logprobs,
        echo,
        n,
    })
}
