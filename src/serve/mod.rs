//! `tinfer serve`: an OpenAI-compatible HTTP server (axum on tokio). One engine thread owns the
//! model (worker.rs); each HTTP request becomes a `Job` it admits between steps, so requests
//! arriving while others decode join the running batch (continuous batching). This first part
//! serves /v1/completions and /v1/chat/completions (whole or streamed as Server-Sent Events in
//! OpenAI's chunk shape), /v1/models, /health, /tokenize and /detokenize; fields it does not
//! implement yet are refused with a 400 naming them (issue 21 says what is still to come).

mod api;
mod json_mode;
mod metrics;
mod respond;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{body::Bytes, Json, Router};
use serde_json::json;

use crate::cli::args::{ModelArgs, RunArgs};
use crate::cli::serve_args::ServeArgs;
use api::{ApiError, Kind};

/// What every handler shares.
pub struct AppState {
    ready: AtomicBool,
    jobs: Mutex<Option<std::sync::mpsc::Sender<worker::Job>>>,
    model: Mutex<Option<api::ModelInfo>>,
    api_key: Option<String>,
    metrics: Arc<metrics::Metrics>,
    /// Where the model runs, in words (for the ready line).
    device: Mutex<String>,
    /// Longest a completion request may take (`--timeout`).
    timeout: std::time::Duration,
}

pub fn serve(model: ModelArgs, run: RunArgs, a: ServeArgs) -> Result<()> {
    if a.parallel == 0 {
        crate::cli::args::usage!("--parallel must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", a.host, a.port)
            .parse()
            .with_context(|| format!("--host {} --port {} is not an address to listen on", a.host, a.port))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let state = Arc::new(AppState {
            ready: AtomicBool::new(false),
            jobs: Mutex::new(None),
            model: Mutex::new(None),
            api_key: a.api_key.clone(),
            metrics: Arc::new(metrics::Metrics::new()),
            timeout: std::time::Duration::from_secs(a.timeout),
            device: Mutex::new(String::new()),
        });
        eprintln!(
            "listening on http://{} (loading the model: /health answers 503 until it is ready)",
            listener.local_addr()?
        );
        // The model loads on the engine thread, which then serves jobs until the server stops.
        let (tx, rx) = std::sync::mpsc::channel();
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<Result<()>>();
        let st = state.clone();
        let mut model = model;
        model.prefix_cache = !a.no_prefix_cache;
        let engine_thread = std::thread::spawn(move || {
            let (engine, tok, info) = match api::load(&model, &run, a.parallel) {
                Ok(x) => x,
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                    return;
                }
            };
            *st.model.lock().unwrap() = Some(info);
            *st.device.lock().unwrap() = engine.model.device_name();
            st.ready.store(true, Ordering::SeqCst);
            let _ = loaded_tx.send(Ok(()));
            worker::run(engine, tok, rx, a.parallel, a.queue, &st.metrics);
        });
        *state.jobs.lock().unwrap() = Some(tx);
        let app = Router::new()
            .route("/health", get(health))
            .route("/v1/models", get(models))
            .route("/v1/completions", post(completions))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/metrics", get(metrics_text))
            .route("/tokenize", post(tokenize))
            .route("/detokenize", post(detokenize))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(axum::extract::DefaultBodyLimit::max(a.max_body_kib << 10))
            .with_state(state.clone());
        // a model that fails to load ends the server with its error
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let load_error = Arc::new(Mutex::new(None));
        let (err, st) = (load_error.clone(), state.clone());
        tokio::spawn(async move {
            match loaded_rx.await {
                Ok(Ok(())) => {
                    let m = st
                        .model
                        .lock()
                        .unwrap()
                        .as_ref()
                        .map(|m| m.id.clone())
                        .unwrap_or_default();
                    eprintln!("ready: {m} ({})", st.device.lock().unwrap());
                }
                Ok(Err(e)) => {
                    *err.lock().unwrap() = Some(e);
                    let _ = stop_tx.send(());
                }
                Err(_) => {
                    let _ = stop_tx.send(());
                }
            }
        });
        let stop = async {
            let load_failed = async {
                // the sender is dropped once the model is ready: only a sent () stops the server
                if stop_rx.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! { _ = shutdown_signal() => {}, _ = load_failed => {} }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .context("the HTTP server stopped")?;
        if let Some(e) = load_error.lock().unwrap().take() {
            return Err(e);
        }
        // stop taking jobs; the engine finishes what it has, then its thread ends
        state.jobs.lock().unwrap().take();
        let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        eprintln!("stopping: no new requests; running ones finish first");
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// 401 unless the request carries the key (when one is set).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &state.api_key else { return Ok(()) };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        })
        .map(|(_, k)| k.trim());
    if given != Some(key.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "a valid API key is needed: Authorization: Bearer KEY",
        ));
    }
    Ok(())
}

/// The loaded model, or 503 while it loads.
fn ready(state: &AppState) -> Result<api::ModelInfo, ApiError> {
    if !state.ready.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the model is still loading",
        ));
    }
    Ok(state.model.lock().unwrap().clone().expect("ready"))
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    match ready(&state) {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let m = ready(&state)?;
    Ok(Json(json!({"object": "list", "data": [{"id": m.id, "object": "model", "created": m.created, "owned_by": "tinfer"}]})).into_response())
}

/// A request's body, or the error in OpenAI's shape (413 past `--max-body-kib`).
type Body = Result<Bytes, BytesRejection>;

fn body(b: Body) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        let status = e.status();
        let msg = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "the request body is larger than the server takes (--max-body-kib)".to_string()
        } else {
            format!("the request body could not be read: {}", e.body_text())
        };
        ApiError::new(status, "invalid_request_error", &msg)
    })
}

async fn completions(State(state): State<Arc<AppState>>, headers: HeaderMap, b: Body) -> Result<Response, ApiError> {
    counted(&state, complete(&state, &headers, b, Kind::Completion).await)
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    b: Body,
) -> Result<Response, ApiError> {
    counted(&state, complete(&state, &headers, b, Kind::Chat).await)
}

async fn complete(state: &AppState, headers: &HeaderMap, b: Body, kind: Kind) -> Result<Response, ApiError> {
    state.metrics.requests.inc(); // counted on arrival: a client that leaves is counted too
    authorize(state, headers)?;
    let body = body(b)?;
    let m = ready(state)?;
    let req = api::parse(&body, &m, kind)?;
    respond::respond(state, &m, req).await
}

/// Count a completion request and its errors.
fn counted(state: &AppState, r: Result<Response, ApiError>) -> Result<Response, ApiError> {
    if r.is_err() {
        state.metrics.request_errors.inc();
    }
    r
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let headers = [(
        "content-type",
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )];
    (headers, state.metrics.render()).into_response()
}

async fn tokenize(State(state): State<Arc<AppState>>, headers: HeaderMap, b: Body) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = body(b)?;
    let m = ready(&state)?;
    let j = api::json_body(&body)?;
    let text = j["content"]
        .as_str()
        .ok_or_else(|| ApiError::bad("content must be a string"))?;
    let tokens = m.tok.encode(text).map_err(|e| ApiError::bad(&format!("{e:#}")))?;
    Ok(Json(json!({"tokens": tokens})).into_response())
}

async fn detokenize(State(state): State<Arc<AppState>>, headers: HeaderMap, b: Body) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let body = body(b)?;
    let m = ready(&state)?;
    let j = api::json_body(&body)?;
    let ids = api::token_ids(&j["tokens"], m.cfg.vocab_size)
        .ok_or_else(|| ApiError::bad("tokens must be a list of token ids in the vocabulary"))?;
    let text = m
        .tok
        .decode(&ids, false)
        .map_err(|e| ApiError::bad(&format!("{e:#}")))?;
    Ok(Json(json!({"content": text})).into_response())
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found_error",
        "no such route: see /v1/models, /v1/completions, /v1/chat/completions",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "this route does not take that method (the /v1 completions take POST)",
    )
}
