//! `GET /metrics` in Prometheus' text format (the `prometheus-client` crate): requests, tokens
//! in and out, time to first token and inter-token latency, running and waiting sequences, KV
//! pages in use. The engine thread and the HTTP handlers update the same handles.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Mutex<Registry>,
    pub requests: Counter,
    pub request_errors: Counter,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    /// seconds from a request's arrival to its first token
    pub time_to_first_token: Histogram,
    /// seconds between a sequence's tokens
    pub inter_token_latency: Histogram,
    pub running: Gauge,
    pub waiting: Gauge,
    pub kv_pages_used: Gauge,
    pub kv_pages: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tinfer");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            requests: Counter::default(),
            request_errors: Counter::default(),
            prompt_tokens: Counter::default(),
            completion_tokens: Counter::default(),
            // 1 ms to 32 s
            time_to_first_token: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            inter_token_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_pages_used: Gauge::default(),
            kv_pages: Gauge::default(),
        };
        r.register("requests", "Completion requests received", m.requests.clone());
        r.register(
            "request_errors",
            "Requests answered with an error",
            m.request_errors.clone(),
        );
        r.register(
            "prompt_tokens",
            "Prompt tokens of admitted requests",
            m.prompt_tokens.clone(),
        );
        r.register("completion_tokens", "Tokens generated", m.completion_tokens.clone());
        r.register(
            "time_to_first_token_seconds",
            "From a request's arrival to its first token",
            m.time_to_first_token.clone(),
        );
        r.register(
            "inter_token_latency_seconds",
            "Between a sequence's consecutive tokens",
            m.inter_token_latency.clone(),
        );
        r.register("running_sequences", "Sequences in the engine", m.running.clone());
        r.register("waiting_requests", "Requests waiting for a place", m.waiting.clone());
        r.register("kv_pages_used", "KV cache pages in use (GPU)", m.kv_pages_used.clone());
        r.register("kv_pages", "KV cache pages in the pool (GPU)", m.kv_pages.clone());
        *m.registry.lock().unwrap() = r;
        m
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry.lock().unwrap()).expect("writing to a String");
        out
    }
}
