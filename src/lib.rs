//! tinfer: a tiny LLM inference engine. Modules in reading order: a token goes from the CLI
//! (`main.rs`, `cli/`, part of the binary only) through the tokenizer into the `engine`
//! (`Engine::step`: schedule, forward, sample), which calls `Model::forward(&Batch)` (the device
//! seam), which runs `cpu::forward` or replays `gpu::forward`'s recording over the
//! `Weights<Tensor>` the loader mapped from the file. `tools` (benchmarks, synthetic models,
//! convert) sits beside the core, which never imports it.

pub mod arch; // per architecture: checkpoint and GGUF names, Q/K row order, stacking
pub mod config; // config.json -> Config (resolved, validated); RoPE tables
pub mod cpu; // the reference forward pass
pub mod engine; // sequences, Engine::step (prefill chunks, batched decode, stops); perplexity
pub mod gguf; // GGUF reader: metadata, tensors, dequantisation, tokenizer, chat template
pub mod gpu; // the same forward pass on WGSL kernels through wgpu
pub mod kv_cache; // paged KV bookkeeping: block allocator, block tables, slots, sharing
pub mod loader; // safetensors / GGUF -> Weights<Tensor> (names from arch.rs)
pub mod lora; // PEFT LoRA adapters: loading, checking, unmerged update, merge
pub mod model; // the device seam: sequences (new_seq/fork/truncate/release), forward(&Batch)
pub mod moe; // Mixture of Experts: routing and the CPU reference block
pub mod options; // leaf types: Device, Attention, KvLayout, Dtype, Options, Want
pub mod quant; // f32 -> Q8_0 / Q4_K blocks, byte for byte as llama.cpp's reference quantizers
pub mod sampler; // greedy / temperature / top-k / top-p / min-p / repetition penalty
pub mod template; // chat templates rendered as transformers' jinja2 environment renders them
pub mod tokenizer; // HF tokenizers, streaming decode, chat inputs
pub mod weights; // Weights / Layer with shapes; Tensor (format, shape, mapped bytes)

// -- tools: benchmarks, synthetic models, conversion; the core above never imports them --
pub mod tools;
