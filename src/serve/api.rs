//! OpenAI's API shapes: requests parsed and checked field by field (a 400 in OpenAI's error
//! shape names what is wrong), responses whole or as Server-Sent Events chunks ending in
//! `data: [DONE]`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as Json_};
use tinfer::engine::{Engine, Sequence, Stop, StopReason};
use tinfer::sampler::{Sampler, SamplerConfig};
use tinfer::tokenizer::{Message, Tokenizer};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::worker::{Event, Job};
use super::AppState;
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
}

/// Load the model (on the engine thread): the engine, its tokenizer, and what the API shows.
pub fn load(model: &ModelArgs, run: &RunArgs, parallel: usize) -> anyhow::Result<(Engine, Tokenizer, ModelInfo)> {
    let mut loaded = crate::cli::load::prepare(model, Some(run))?;
    let tok = crate::cli::load::need_tokenizer(&loaded)?.clone();
    let shared = Arc::new(tok.clone());
    let m = crate::cli::load::build(model, &mut loaded, parallel)?;
    let id = std::path::Path::new(&loaded.source)
        .file_name()
        .map_or(loaded.source.clone(), |n| n.to_string_lossy().into_owned());
    let info = ModelInfo {
        id,
        created: now(),
        tok: shared,
        cfg: m.cfg.clone(),
        parallel,
    };
    Ok((Engine::new(m), tok, info))
}

fn now() -> u64 {
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
        (self.status, Json(body)).into_response()
    }
}

#[derive(Clone, Copy, PartialEq)]
pub enum Kind {
    Completion,
    Chat,
}

/// A checked request.
pub struct Request {
    kind: Kind,
    prompt: Vec<u32>,
    sampler: SamplerConfig,
    max_tokens: usize,
    stops: Vec<String>,
    stream: bool,
    include_usage: bool,
    /// Log-probabilities of each output token and this many alternatives.
    logprobs: Option<usize>,
    /// Completions: the prompt's text first (with `logprobs`, its tokens' log-probabilities).
    echo: bool,
    /// Choices: the prompt runs once, its KV pages shared by n sequences (forks).
    n: usize,
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
        if name != m.id {
            return Err(ApiError::bad(&format!(
                "model {name:?} is not served here; this server serves {:?}",
                m.id
            )));
        }
    }
    // fields tinfer does not implement yet are refused, not ignored: any value but the ones
    // that mean "off"
    let offs: [(&str, &[Json_]); 11] = [
        ("presence_penalty", &[json!(0)]),
        ("frequency_penalty", &[json!(0)]),
        ("response_format", &[json!({"type": "text"})]),
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
    let prompt = match kind {
        Kind::Completion => match o.get("prompt") {
            Some(Json_::String(s)) => m.tok.encode(s).map_err(|e| ApiError::bad(&format!("{e:#}")))?,
            Some(Json_::Array(a)) if a.len() == 1 && a[0].is_string() => m
                .tok
                .encode(a[0].as_str().unwrap())
                .map_err(|e| ApiError::bad(&format!("{e:#}")))?,
            // token ids, or a batch of one token list (lm-eval's local-completions sends its prompts so)
            Some(v @ Json_::Array(a)) if a.iter().all(Json_::is_number) || (a.len() == 1 && a[0].is_array()) => {
                let ids = if a.len() == 1 && a[0].is_array() { &a[0] } else { v };
                token_ids(ids, m.cfg.vocab_size)
                    .ok_or_else(|| ApiError::bad(&format!("prompt: token ids go from 0 to {}", m.cfg.vocab_size - 1)))?
            }
            Some(Json_::Array(_)) => {
                return Err(ApiError::bad(
                    "prompt: a list of several prompts is not supported yet; send one",
                ))
            }
            _ => return Err(ApiError::bad("prompt must be a string or a list of token ids")),
        },
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
            m.tok.encode_raw(&text).map_err(|e| ApiError::bad(&format!("{e:#}")))?
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::bad("the prompt is empty"));
    }
    if prompt.len() > m.cfg.seq_len {
        return Err(ApiError::bad(&format!(
            "the prompt is {} tokens but the context holds {}: shorten it (or start the server with a larger -c)",
            prompt.len(),
            m.cfg.seq_len
        )));
    }
    let room = m.cfg.seq_len - prompt.len();
    let scoring_only = o.get("max_tokens").and_then(Json_::as_f64) == Some(0.0);
    if room == 0 && !scoring_only {
        return Err(ApiError::bad(&format!(
            "the prompt fills the context of {} tokens: no room for new ones (max_tokens 0 scores it)",
            m.cfg.seq_len
        )));
    }
    let max_key = if o.contains_key("max_completion_tokens") {
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
    if stream && (logprobs.is_some() || echo) {
        return Err(ApiError::bad(
            "logprobs and echo are not supported with stream yet; ask without stream",
        ));
    }
    let include_usage = o
        .get("stream_options")
        .and_then(|v| v["include_usage"].as_bool())
        .unwrap_or(false);
    Ok(Request {
        kind,
        prompt,
        sampler: SamplerConfig {
            temperature: temperature as f32,
            top_k: top_k as usize,
            top_p: top_p as f32,
            min_p: min_p as f32,
            repeat_penalty: rep as f32,
            seed,
        },
        max_tokens: (max_tokens as usize).min(room),
        stops,
        stream,
        include_usage,
        logprobs,
        echo,
        n,
    })
}

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        _ => "stop",
    }
}

/// Send the request to the engine and answer: one JSON response, or an SSE stream of chunks.
pub async fn respond(state: &AppState, m: &ModelInfo, req: Request) -> Result<Response, ApiError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut seq = Sequence::new(
        req.prompt.clone(),
        Sampler::new(req.sampler.clone()),
        Stop::new(&m.cfg, req.max_tokens),
    );
    if let Some(n) = req.logprobs {
        seq = seq.with_logprobs(n);
    }
    if req.n > 1 {
        // choice i samples with seed + i
        let forks = (1..req.n as u64)
            .map(|i| {
                Sampler::new(SamplerConfig {
                    seed: req.sampler.seed.wrapping_add(i),
                    ..req.sampler.clone()
                })
            })
            .collect();
        seq = seq.with_forks(forks);
    }
    let job = Job {
        received: std::time::Instant::now(),
        seq,
        stops: req.stops.clone(),
        events: tx,
        echo_top: req.logprobs.filter(|_| req.echo),
    };
    {
        let jobs = state.jobs.lock().unwrap();
        let sender = jobs.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down",
            )
        })?;
        sender
            .send(job)
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the engine has stopped"))?;
    }
    let chat = req.kind == Kind::Chat;
    let (id, object) = if chat {
        (format!("chatcmpl-{:x}", now_nanos()), "chat.completion")
    } else {
        (format!("cmpl-{:x}", now_nanos()), "text_completion")
    };
    let created = now();
    let model = m.id.clone();
    let n = req.n;
    if !req.stream {
        let mut texts = vec![String::new(); n];
        let mut choices: Vec<Option<Json_>> = vec![None; n];
        let (prompt_n, mut completion_n) = (req.prompt.len(), 0);
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text(i, t) => texts[i].push_str(&t),
                Event::Error(code, msg) => return Err(error(code, &msg)),
                Event::Done {
                    index,
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    logprobs,
                    prompt_logprobs,
                } => {
                    let mut text = std::mem::take(&mut texts[index]);
                    completion_n += completion_tokens;
                    debug_assert_eq!(prompt_tokens, prompt_n);
                    choices[index] = Some(if chat {
                        let lp = logprobs.map(|l| chat_logprobs(&m.tok, &l));
                        json!({"index": index, "message": {"role": "assistant", "content": text}, "logprobs": lp, "finish_reason": finish_reason(reason)})
                    } else {
                        let mut all = prompt_logprobs.unwrap_or_default();
                        if req.echo {
                            text = m.tok.decode(&req.prompt, false).unwrap_or_default() + &text;
                            if all.is_empty() && logprobs.is_some() {
                                all = req.prompt.iter().map(|&t| (t, None)).collect();
                            }
                        }
                        let lp = logprobs.map(|l| completion_logprobs(&m.tok, &[all, l].concat()));
                        json!({"index": index, "text": text, "logprobs": lp, "finish_reason": finish_reason(reason)})
                    });
                    if choices.iter().all(Option::is_some) {
                        let choices: Vec<Json_> = choices.into_iter().flatten().collect();
                        let usage = json!({"prompt_tokens": prompt_n, "completion_tokens": completion_n, "total_tokens": prompt_n + completion_n});
                        return Ok(Json(json!({"id": id, "object": object, "created": created, "model": model, "choices": choices, "usage": usage})).into_response());
                    }
                }
            }
        }
        return Err(error(500, "the engine stopped before the request finished"));
    }
    // Streaming: the first event decides between an error status and a 200 stream.
    let first = rx.recv().await;
    if let Some(Event::Error(code, msg)) = &first {
        return Err(error(*code, msg));
    }
    let chunk_object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let include_usage = req.include_usage;
    let chunk = move |choice: Json_, usage: Option<Json_>| {
        let mut c = json!({"id": id, "object": chunk_object, "created": created, "model": model, "choices": choice});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Ok::<_, Infallible>(Sse::default().data(c.to_string()))
    };
    // the engine's events become SSE chunks on a task of their own; a client that goes away
    // drops the stream, the task ends, and the engine sees the job's channel closed
    let (out, sse) = tokio::sync::mpsc::unbounded_channel::<Result<Sse, Infallible>>();
    tokio::spawn(async move {
        if chat {
            for i in 0..n {
                let role = json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
                let _ = out.send(chunk(role, None));
            }
        }
        let (mut done, mut completion_n) = (0, 0);
        let mut next = first;
        while let Some(ev) = next {
            let sent = match ev {
                Event::Text(i, t) => {
                    let choice = if chat {
                        json!([{"index": i, "delta": {"content": t}, "logprobs": null, "finish_reason": null}])
                    } else {
                        json!([{"index": i, "text": t, "logprobs": null, "finish_reason": null}])
                    };
                    out.send(chunk(choice, None))
                }
                Event::Done {
                    index,
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    ..
                } => {
                    let choice = if chat {
                        json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish_reason(reason)}])
                    } else {
                        json!([{"index": index, "text": "", "logprobs": null, "finish_reason": finish_reason(reason)}])
                    };
                    (done, completion_n) = (done + 1, completion_n + completion_tokens);
                    let prompt_n = prompt_tokens;
                    let sent = out.send(chunk(choice, None));
                    if done == n {
                        if include_usage {
                            let usage = json!({"prompt_tokens": prompt_n, "completion_tokens": completion_n, "total_tokens": prompt_n + completion_n});
                            let _ = out.send(chunk(json!([]), Some(usage)));
                        }
                        let _ = out.send(Ok(Sse::default().data("[DONE]")));
                        return;
                    }
                    sent
                }
                Event::Error(_, msg) => {
                    let _ = out.send(Ok(
                        Sse::default().data(json!({"error": {"message": msg, "type": "server_error"}}).to_string())
                    ));
                    return;
                }
            };
            if sent.is_err() {
                return; // the client went away
            }
            next = rx.recv().await;
        }
    });
    let body = UnboundedReceiverStream::new(sse);
    Ok(axum::response::Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A token's text, as OpenAI shows it.
fn piece(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// Completions' `logprobs`: tokens, their log-probabilities (null for a prompt's first),
/// the top alternatives as {text: log-probability}, and each token's offset in the text.
fn completion_logprobs(tok: &Tokenizer, l: &super::worker::TokenLogprobs) -> Json_ {
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    let ids: Vec<u32> = l.iter().map(|t| t.0).collect();
    for (i, (id, lp)) in l.iter().enumerate() {
        // where the token starts in the text: the characters of all before it, decoded together
        offsets.push(
            tok.decode(&ids[..i], false)
                .map_or(0, |t| t.trim_end_matches('\u{FFFD}').chars().count()),
        );
        let p = piece(tok, *id);
        tokens.push(p);
        lps.push(lp.as_ref().map(|x| x.0));
        tops.push(lp.as_ref().map(|(_, top)| {
            let map: serde_json::Map<String, Json_> = top.iter().map(|&(t, v)| (piece(tok, t), json!(v))).collect();
            Json_::Object(map)
        }));
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// Chat's `logprobs`: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}.
fn chat_logprobs(tok: &Tokenizer, l: &super::worker::TokenLogprobs) -> Json_ {
    let entry = |id: u32, lp: f32| {
        let p = piece(tok, id);
        json!({"token": p, "logprob": lp, "bytes": p.as_bytes()})
    };
    let content: Vec<Json_> = l
        .iter()
        .filter_map(|(id, lp)| lp.as_ref().map(|(v, top)| (id, v, top)))
        .map(|(&id, &v, top)| {
            let mut e = entry(id, v);
            e["top_logprobs"] = top.iter().map(|&(t, x)| entry(t, x)).collect();
            e
        })
        .collect();
    json!({"content": content})
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn error(code: u16, msg: &str) -> ApiError {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match code {
        400 => "invalid_request_error",
        503 => "unavailable",
        _ => "server_error",
    };
    ApiError::new(status, kind, msg)
}
