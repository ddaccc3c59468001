//! Tools around the engine, with their own line budget (scripts/sz.sh): benchmarks, synthetic
//! models, conversion. They use the core; the core never imports them.

pub mod bench_attention; // `tinfer bench attention`: the attention variants side by side
pub mod bench_kernels; // `tinfer bench kernels`: each matrix kernel variant validated, then timed
pub mod bench_model; // `tinfer bench model`: pp/tg tokens per second, like llama-bench
pub mod convert; // GGUF -> HF directory
pub mod gguf_write; // GGUF files for tests, fuzz seeds and tools
pub mod kl; // KL divergence of a run's distributions against a saved reference run
pub mod lora_merge; // `tinfer lora merge`: a PEFT adapter merged into an HF directory
pub mod score; // perplexity: the mean NLL of windows of a text
pub mod svg; // time against length as an SVG
pub mod synthetic; // configs of known sizes, random weights
