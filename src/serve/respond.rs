//! Answers: the request's jobs sent to the engine thread, and its events turned into one JSON
//! response or a stream of Server-Sent Events chunks in OpenAI's shapes, ending in
//! `data: [DONE]`.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as Json_};
use tinfer::engine::{Sequence, Stop, StopReason};
use tinfer::sampler::{Sampler, SamplerConfig};
use tinfer::tokenizer::Tokenizer;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::api::{now, ApiError, Kind, ModelInfo, Request};
use super::worker::{Event, Job};
use super::AppState;

fn finish_reason(r: StopReason) -> &'static str {
    match r {
        StopReason::MaxTokens | StopReason::ContextFull | StopReason::KvFull => "length",
        _ => "stop",
    }
}

/// Send the request's jobs (one per prompt) to the engine and answer: one JSON response, or
/// an SSE stream of chunks. A request not done within the server's `--timeout` ends there (its
/// sequences are cancelled: the engine sees their channels closed).
pub async fn respond(state: &AppState, m: &ModelInfo, req: Request) -> Result<Response, ApiError> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (p, prompt) in req.prompts.iter().enumerate() {
        let mut stop = Stop::new(&m.cfg, req.max_tokens.min(m.cfg.seq_len - prompt.len()));
        let banned = if req.ignore_eos {
            std::mem::take(&mut stop.eos)
        } else {
            vec![]
        };
        let mut seq = Sequence::new(prompt.clone(), Sampler::new(req.sampler.clone()), stop).with_banned(banned);
        if let Some(n) = req.logprobs {
            seq = seq.with_logprobs(n);
        }
        if req.json {
            seq.constraint = Some(m.json.clone());
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
            events: tx.clone(),
            echo_top: req.logprobs.filter(|_| req.echo),
            first_index: p * req.n,
        };
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
    drop(tx);
    let chat = req.kind == Kind::Chat;
    let (id, object) = if chat {
        (format!("chatcmpl-{:x}", now_nanos()), "chat.completion")
    } else {
        (format!("cmpl-{:x}", now_nanos()), "text_completion")
    };
    let created = now();
    let model = m.id.clone();
    let (n, choices_n) = (req.n, req.n * req.prompts.len());
    let deadline = tokio::time::Instant::now() + state.timeout;
    let timed_out = || {
        let secs = state.timeout.as_secs();
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            &format!("the request did not finish within the server's --timeout of {secs} s"),
        )
    };
    // usage: each prompt counted once (its choices share it)
    let usage = |prompt_n: usize, cached_n: usize, completion_n: usize| {
        json!({"prompt_tokens": prompt_n, "completion_tokens": completion_n, "total_tokens": prompt_n + completion_n,
               "prompt_tokens_details": {"cached_tokens": cached_n}})
    };
    if !req.stream {
        let mut texts = vec![String::new(); choices_n];
        let mut choices: Vec<Option<Json_>> = vec![None; choices_n];
        let (mut prompt_n, mut cached_n, mut completion_n) = (0, 0, 0);
        loop {
            let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Err(_) => return Err(timed_out()),
                Ok(None) => return Err(error(500, "the engine stopped before the request finished")),
                Ok(Some(ev)) => ev,
            };
            match ev {
                Event::Text(i, t, _) => texts[i].push_str(&t),
                Event::Error(code, msg) => return Err(error(code, &msg)),
                Event::Done {
                    index,
                    reason,
                    prompt_tokens,
                    cached_tokens,
                    completion_tokens,
                    logprobs,
                    prompt_logprobs,
                } => {
                    let mut text = std::mem::take(&mut texts[index]);
                    completion_n += completion_tokens;
                    if index % n == 0 {
                        (prompt_n, cached_n) = (prompt_n + prompt_tokens, cached_n + cached_tokens);
                    }
                    choices[index] = Some(if chat {
                        let lp = logprobs.map(|l| chat_logprobs(&m.tok, &l));
                        json!({"index": index, "message": {"role": "assistant", "content": text}, "logprobs": lp, "finish_reason": finish_reason(reason)})
                    } else {
                        let prompt = &req.prompts[index / n];
                        let mut all = prompt_logprobs.unwrap_or_default();
                        if req.echo {
                            text = m.tok.decode(prompt, false).unwrap_or_default() + &text;
                            if all.is_empty() && logprobs.is_some() {
                                all = prompt.iter().map(|&t| (t, None)).collect();
                            }
                        }
                        let lp = logprobs.map(|l| completion_logprobs(&m.tok, &[all, l].concat(), 0));
                        json!({"index": index, "text": text, "logprobs": lp, "finish_reason": finish_reason(reason)})
                    });
                    if choices.iter().all(Option::is_some) {
                        let choices: Vec<Json_> = choices.into_iter().flatten().collect();
                        let usage = usage(prompt_n, cached_n, completion_n);
                        return Ok(Json(json!({"id": id, "object": object, "created": created, "model": model, "choices": choices, "usage": usage})).into_response());
                    }
                }
            }
        }
    }
    // Streaming: the first event decides between an error status and a 200 stream.
    let first = match tokio::time::timeout_at(deadline, rx.recv()).await {
        Err(_) => return Err(timed_out()),
        Ok(first) => first,
    };
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
        if include_usage {
            c["usage"] = usage.unwrap_or(Json_::Null); // null on every chunk but the last, as OpenAI
        }
        Ok::<_, Infallible>(Sse::default().data(c.to_string()))
    };
    let tok = m.tok.clone();
    let timeout = state.timeout.as_secs();
    // the engine's events become SSE chunks on a task of their own; a client that goes away
    // drops the stream, the task ends, and the engine sees the job's channel closed
    let (out, sse) = tokio::sync::mpsc::unbounded_channel::<Result<Sse, Infallible>>();
    tokio::spawn(async move {
        if chat {
            for i in 0..choices_n {
                let role = json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]);
                let _ = out.send(chunk(role, None));
            }
        }
        let (mut done, mut prompt_n, mut cached_n, mut completion_n) = (0, 0, 0, 0);
        let mut offsets = vec![0usize; choices_n]; // completions' text_offset: characters sent
        let mut next = first;
        while let Some(ev) = next {
            let sent = match ev {
                Event::Text(i, t, lps) => {
                    let choice = if chat {
                        let lp = lps.map(|l| chat_logprobs(&tok, &l));
                        json!([{"index": i, "delta": {"content": t}, "logprobs": lp, "finish_reason": null}])
                    } else {
                        let lp = lps.map(|l| completion_logprobs(&tok, &l, offsets[i]));
                        offsets[i] += t.chars().count();
                        json!([{"index": i, "text": t, "logprobs": lp, "finish_reason": null}])
                    };
                    out.send(chunk(choice, None))
                }
                Event::Done {
                    index,
                    reason,
                    prompt_tokens,
                    cached_tokens,
                    completion_tokens,
                    ..
                } => {
                    let choice = if chat {
                        json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish_reason(reason)}])
                    } else {
                        json!([{"index": index, "text": "", "logprobs": null, "finish_reason": finish_reason(reason)}])
                    };
                    (done, completion_n) = (done + 1, completion_n + completion_tokens);
                    if index % n == 0 {
                        (prompt_n, cached_n) = (prompt_n + prompt_tokens, cached_n + cached_tokens);
                    }
                    let sent = out.send(chunk(choice, None));
                    if done == choices_n {
                        if include_usage {
                            let _ = out.send(chunk(json!([]), Some(usage(prompt_n, cached_n, completion_n))));
                        }
                        let _ = out.send(Ok(Sse::default().data("[DONE]")));
                        return;
                    }
                    sent
                }
                Event::Error(_, msg) => {
                    let _ = out.send(error_event(&msg, "server_error"));
                    let _ = out.send(Ok(Sse::default().data("[DONE]")));
                    return;
                }
            };
            if sent.is_err() {
                return; // the client went away
            }
            next = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    let msg = format!("the request did not finish within the server's --timeout of {timeout} s");
                    let _ = out.send(error_event(&msg, "timeout"));
                    let _ = out.send(Ok(Sse::default().data("[DONE]")));
                    return; // dropping rx cancels the sequences
                }
            };
        }
    });
    let body = UnboundedReceiverStream::new(sse);
    Ok(axum::response::Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// An error inside a stream, in OpenAI's error shape.
fn error_event(msg: &str, kind: &str) -> Result<Sse, Infallible> {
    let e = json!({"error": {"message": msg, "type": kind, "param": null, "code": null}});
    Ok(Sse::default().data(e.to_string()))
}

/// A token's text, as OpenAI shows it.
fn piece(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_default()
}

/// Completions' `logprobs`: tokens, their log-probabilities (null for a prompt's first),
/// the top alternatives as {text: log-probability}, and each token's offset in the text.
/// `start`: the offset of the first token's text (characters sent before, when streaming).
fn completion_logprobs(tok: &Tokenizer, l: &super::worker::TokenLogprobs, start: usize) -> Json_ {
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    let ids: Vec<u32> = l.iter().map(|t| t.0).collect();
    for (i, (id, lp)) in l.iter().enumerate() {
        // where the token starts in the text: the characters of all before it, decoded together
        offsets.push(
            start
                + tok
                    .decode(&ids[..i], false)
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
