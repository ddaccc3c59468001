//! The model's parameters, with short math names and shapes beside them. Checkpoint tensor names
//! appear only in `loader.rs`. Generic over the storage `T`: the GPU holds the same struct with
//! device buffers in place of vectors.

/// One transformer block. Matrices are row-major [out, in], as in HF checkpoints: y = W x.
#[derive(Clone, Debug)]
pub struct Layer<T> {
    pub attn_norm: T,  // (dim,)
    pub wq: T,         // (n_heads * head_dim, dim)
    pub wk: T,         // (n_kv_heads * head_dim, dim)
    pub wv: T,         // (n_kv_heads * head_dim, dim)
    pub wo: T,         // (dim, n_heads * head_dim)
    pub bq: Option<T>, // (n_heads * head_dim,)    qwen2 / attention_bias
    pub bk: Option<T>, // (n_kv_heads * head_dim,)
    pub bv: Option<T>, // (n_kv_heads * head_dim,)
    pub bo: Option<T>, // (dim,)                   llama attention_bias only
    pub ffn_norm: T,   // (dim,)
    pub w_gate: T,     // (hidden_dim, dim)
    pub w_up: T,       // (hidden_dim, dim)
    pub w_down: T,     // (dim, hidden_dim)
}

#[derive(Clone, Debug)]
pub struct Weights<T> {
    pub embed: T, // (vocab_size, dim)
    pub layers: Vec<Layer<T>>,
    pub norm: T,            // (dim,)
    pub lm_head: Option<T>, // (vocab_size, dim); None when tied to `embed`
}

impl<T> Weights<T> {
    /// The LM head: its own matrix, or the embedding when they are tied.
    pub fn lm_head(&self) -> &T {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}
