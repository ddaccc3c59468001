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
    /// KV pages kept under a prefix hash (held or free)
    pub kv_pages_cached: Gauge,
    pub prefix_cache_queries: Counter,
    pub prefix_cache_hits: Counter,
    pub preemptions: Counter,
    seen: Mutex<(u64, u64, u64)>, // the engine's counts at the last update
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
            kv_pages_cached: Gauge::default(),
            prefix_cache_queries: Counter::default(),
            prefix_cache_hits: Counter::default(),
            preemptions: Counter::default(),
            seen: Mutex::new((0, 0, 0)),
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
        r.register(
            "kv_pages_cached",
            "KV pages kept for the prefix cache, held or free (GPU)",
            m.kv_pages_cached.clone(),
        );
        r.register(
            "prefix_cache_query_tokens",
            "Prompt tokens looked up in the prefix cache",
            m.prefix_cache_queries.clone(),
        );
        r.register(
            "prefix_cache_hit_tokens",
            "Prompt tokens whose KV blocks came from the prefix cache",
            m.prefix_cache_hits.clone(),
        );
        r.register(
            "preemptions",
            "Sequences whose KV pages were taken back to make room (recomputed later)",
            m.preemptions.clone(),
        );
        *m.registry.lock().unwrap() = r;
        m
    }

    /// Update the engine's gauges and counters (from the engine thread, after each step).
    pub fn engine(&self, engine: &tinfer::engine::Engine) {
        if let Some(u) = engine.model.kv_usage() {
            self.kv_pages_used.set(u.pages_used as i64);
            self.kv_pages.set(u.pages as i64);
        }
        let p = engine.model.prefix_stats().unwrap_or_default();
        self.kv_pages_cached.set(p.cached_blocks as i64);
        let mut seen = self.seen.lock().unwrap();
        let now = (p.query_tokens, p.hit_tokens, engine.preemptions());
        self.prefix_cache_queries.inc_by(now.0 - seen.0);
        self.prefix_cache_hits.inc_by(now.1 - seen.1);
        self.preemptions.inc_by(now.2 - seen.2);
        *seen = now;
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry.lock().unwrap()).expect("writing to a String");
        out
    }
}
