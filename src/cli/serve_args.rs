//! `tinfer serve`'s options (the server itself: src/serve/).

use clap::Args;

/// `tinfer serve` options besides the model's (flattened into the command).
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (loopback by default; 0.0.0.0 serves the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free one; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Most sequences decoding at once; more requests wait in the queue.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Most requests waiting for a slot; past it requests get 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on every /v1 request.
    #[arg(long, env = "TINFER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Do not reuse the KV blocks of prompts' common prefixes across requests (on by default:
    /// a shared system prompt is computed once).
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Longest a completion request may run, in seconds; past it the request ends with an
    /// error (504, or an error event in a stream) and its sequences are cancelled.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Largest request body, in KiB; larger ones get 413.
    #[arg(long, default_value_t = 8192)]
    pub max_body_kib: usize,
}
