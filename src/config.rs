//! Model configuration in two stages, as candle does it: [`HfConfig`] mirrors `config.json`
//! field for field (everything optional that HF lets be optional), and [`Config`] holds the
//! resolved numbers the forward pass uses, after [`HfConfig::resolve`] has checked them.

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value as Json;
use std::path::Path;

/// Upper bounds far above any real Llama-family model, so that a crafted config cannot make
/// tinfer allocate (RoPE tables, KV caches) without limit.
const MAX_WIDTH: usize = 1 << 18; // hidden_size, intermediate_size, n_heads * head_dim
const MAX_VOCAB: usize = 1 << 21;
const MAX_LAYERS: usize = 1 << 10;
const MAX_CONTEXT: usize = 1 << 18;
/// The context a run uses when not told otherwise: the model's own, at most this many tokens
/// (llama.cpp's default `n_ctx`), so that a 128K-token model does not ask for a 128K-token KV
/// cache.
pub const DEFAULT_CONTEXT: usize = 4096;
const MAX_ROPE_TABLE: usize = 1 << 25; // seq_len * head_dim: 256K positions at head_dim 128

/// A serde mirror of HF `config.json` for the Llama family (llama, mistral, qwen2, smollm).
#[derive(Clone, Debug, Deserialize)]
pub struct HfConfig {
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub vocab_size: usize,
    pub max_position_embeddings: Option<usize>,
    pub rms_norm_eps: Option<f64>,
    pub rope_theta: Option<f64>,
    /// transformers >= 5 puts `rope_theta` (and the scaling type) here.
    pub rope_parameters: Option<Json>,
    pub rope_scaling: Option<Json>,
    pub tie_word_embeddings: Option<bool>,
    pub attention_bias: Option<bool>,
    pub mlp_bias: Option<bool>,
    pub hidden_act: Option<String>,
    pub sliding_window: Option<Json>,
    pub use_sliding_window: Option<bool>,
    /// transformers 5: "full_attention" / "sliding_attention" per layer.
    pub layer_types: Option<Vec<String>>,
    pub bos_token_id: Option<Json>,
    pub eos_token_id: Option<Json>,
    pub partial_rotary_factor: Option<f64>,
    /// Mixture of Experts (mixtral: num_local_experts; qwen2_moe / qwen3_moe: num_experts).
    pub num_local_experts: Option<usize>,
    pub num_experts: Option<usize>,
    pub num_experts_per_tok: Option<usize>,
    pub moe_intermediate_size: Option<usize>,
    pub shared_expert_intermediate_size: Option<usize>,
    pub norm_topk_prob: Option<bool>,
    pub decoder_sparse_step: Option<usize>,
    #[serde(default)]
    pub mlp_only_layers: Vec<usize>,
    pub qkv_bias: Option<bool>,
    /// Not an HF key: llama.cpp's `rope_freqs` tensor of a GGUF (Llama 3.1's scaling in the form
    /// its converter stores), carried here so that a converted directory keeps it.
    pub rope_freq_factors: Option<Vec<f32>>,
}

/// Resolved configuration: the numbers the forward pass reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub model_type: String,
    pub dim: usize,        // residual stream width (hidden_size)
    pub hidden_dim: usize, // FFN width (intermediate_size)
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub kv_mul: usize, // query heads per KV head (GQA): kv_head = head / kv_mul
    pub vocab_size: usize,
    pub seq_len: usize, // context length
    pub norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub tied_embeddings: bool,
    pub qkv_bias: bool, // q/k/v projections have biases (qwen2, llama with attention_bias)
    pub o_bias: bool,   // o_proj has a bias (llama with attention_bias)
    pub qk_norm: bool,  // RMSNorm over each head of q and k before RoPE (qwen3)
    /// Token ids that end generation (from config.json; generation_config.json may add more).
    pub eos_token_ids: Vec<u32>,
    /// Mixture-of-Experts layers (mixtral, qwen2_moe, qwen3_moe); None for a dense model.
    pub moe: Option<MoeConfig>,
}

/// The Mixture-of-Experts facts (Shazeer et al. 2017; Mixtral, Jiang et al. 2024; HF's
/// `MixtralSparseMoeBlock`, `Qwen2MoeSparseMoeBlock`, `Qwen3MoeSparseMoeBlock`): a router picks
/// `top_k` of `n_experts` SwiGLU FFNs of width `hidden` per token from softmax(x · W_routerᵀ).
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    pub n_experts: usize,
    pub top_k: usize,
    /// Each expert's FFN width (moe_intermediate_size; Mixtral: intermediate_size).
    pub hidden: usize,
    /// The shared expert's FFN width (Qwen2-MoE), 0 without one.
    pub shared_hidden: usize,
    /// The chosen k probabilities are divided by their sum (Mixtral always; Qwen: norm_topk_prob).
    pub norm_topk_prob: bool,
    /// Per layer: an MoE block (else the dense MLP of width hidden_dim: `mlp_only_layers`,
    /// `decoder_sparse_step`).
    pub layers: Vec<bool>,
}

/// The most experts a token picks (the GPU router keeps k per token in registers).
pub const MAX_TOP_K: usize = 8;
/// The most experts a layer has (a router row per invocation of one workgroup).
pub const MAX_EXPERTS: usize = 256;

impl Config {
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
    /// Whether layer `l` is a Mixture-of-Experts block.
    pub fn is_moe(&self, l: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| m.layers[l])
    }

    /// Parameters of layer `l`'s feed-forward block: (all, read per token). An MoE block has
    /// the router, every expert and the shared expert with its gate; a token reads top_k experts.
    fn ffn_params(&self, l: usize) -> (usize, usize) {
        let d = self.dim;
        match &self.moe {
            Some(m) if m.layers[l] => {
                let shared = if m.shared_hidden > 0 {
                    3 * d * m.shared_hidden + d
                } else {
                    0
                };
                let fixed = m.n_experts * d + shared;
                (
                    fixed + m.n_experts * 3 * d * m.hidden,
                    fixed + m.top_k * 3 * d * m.hidden,
                )
            }
            _ => (3 * d * self.hidden_dim, 3 * d * self.hidden_dim),
        }
    }

    /// Number of parameters, counting a tied embedding once.
    pub fn n_params(&self) -> usize {
        self.params().0
    }

    /// (parameters, parameters one decoded token reads: every expert counted for `n_params`,
    /// top_k of them for the second), a tied embedding counted once.
    fn params(&self) -> (usize, usize) {
        let (d, q, kv) = (self.dim, self.q_dim(), self.kv_dim());
        let bias = if self.qkv_bias { q + 2 * kv } else { 0 } + if self.o_bias { d } else { 0 };
        let attn = 2 * d + d * q + 2 * d * kv + q * d + bias;
        let head = if self.tied_embeddings { 0 } else { self.vocab_size * d };
        let (mut all, mut active) = (self.vocab_size * d + d + head, self.vocab_size * d + d + head);
        for l in 0..self.n_layers {
            let (a, r) = self.ffn_params(l);
            all += attn + a;
            active += attn + r;
        }
        (all, active)
    }

    /// Multiply-adds of one layer's matrix products for one token row (attention scores not
    /// counted; an MoE block's top_k experts): what a prefill step's submits are sized by.
    pub fn layer_macs_per_token(&self) -> u64 {
        let (d, q, kv) = (self.dim, self.q_dim(), self.kv_dim());
        let ffn = (0..self.n_layers).map(|l| self.ffn_params(l).1).max().unwrap_or(0);
        (d * (q + 2 * kv) + q * d + ffn) as u64
    }

    /// Weight bytes one decoded token reads at `bytes_per_weight` (4 for f32, 2 for f16): every
    /// matrix and vector once (of an MoE block the router, the top_k experts and the shared
    /// expert), one embedding row; the KV cache is not counted (it depends on the position).
    pub fn weight_bytes_per_token(&self, bytes_per_weight: usize) -> u64 {
        let embed = self.vocab_size * self.dim;
        let head = if self.tied_embeddings { embed } else { 0 };
        ((self.params().1 - embed + self.dim + head) * bytes_per_weight) as u64
    }
}

/// Read a small JSON-ish text file, refusing anything over `max` bytes before reading it.
pub fn read_text(path: &Path, max: u64) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > max {
        return Err(std::io::Error::other(format!(
            "{len} bytes is more than the {max} this file may have"
        )));
    }
    std::fs::read_to_string(path)
}

/// Token ids in config files are a number, a list of numbers, or null.
pub fn token_ids(v: Option<&Json>) -> Vec<u32> {
    match v {
        Some(Json::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Json::Array(a)) => a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect(),
        _ => vec![],
    }
}

impl HfConfig {
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).context("config.json is not a valid Llama-family config")
    }

    /// Check everything the forward pass relies on and resolve defaults. Each error says what is
    /// wrong and what to do.
    pub fn resolve(&self) -> Result<Config> {
        let model_type = self.model_type.clone().unwrap_or_else(|| "llama".into());
        let known = [
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "smollm",
            "smollm2",
            "mixtral",
            "qwen2_moe",
            "qwen3_moe",
        ];
        if !known.contains(&model_type.as_str()) {
            bail!(
                "model_type {model_type:?} is not supported: tinfer runs {} (Llama-family decoders)",
                known.join(", ")
            );
        }
        let n_heads = self.num_attention_heads;
        let n_kv_heads = self.num_key_value_heads.unwrap_or(n_heads);
        let dim = self.hidden_size;
        for (name, v) in [
            ("hidden_size", dim),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", n_heads),
            ("num_key_value_heads", n_kv_heads),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                bail!("config.json: {name} is 0");
            }
        }
        for (name, v, max) in [
            ("hidden_size", dim, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_attention_heads", n_heads, MAX_WIDTH),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("vocab_size", self.vocab_size, MAX_VOCAB),
        ] {
            if v > max {
                bail!("config.json: {name} = {v} is larger than tinfer supports ({max}); the file is corrupt or not a supported model");
            }
        }
        if !n_heads.is_multiple_of(n_kv_heads) {
            bail!(
                "config.json: num_attention_heads ({n_heads}) is not a multiple of num_key_value_heads ({n_kv_heads}); \
                 grouped-query attention needs whole groups of query heads per KV head"
            );
        }
        let head_dim = match self.head_dim {
            Some(h) => h,
            None => {
                if !dim.is_multiple_of(n_heads) {
                    bail!("config.json: hidden_size {dim} is not divisible by num_attention_heads {n_heads}; set head_dim");
                }
                dim / n_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            bail!("config.json: head_dim {head_dim} must be even and non-zero (RoPE rotates pairs)");
        }
        if n_heads.saturating_mul(head_dim) > MAX_WIDTH {
            bail!("config.json: num_attention_heads x head_dim = {n_heads} x {head_dim} is larger than tinfer supports ({MAX_WIDTH})");
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" && act != "swish" {
                bail!("config.json: hidden_act {act:?} is not supported (only silu / SwiGLU)");
            }
        }
        if self.mlp_bias == Some(true) {
            bail!("config.json: mlp_bias = true is not supported");
        }
        let rope_params = self.rope_parameters.as_ref();
        let rope_theta = rope_params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Json::as_f64)
            .or(self.rope_theta)
            .unwrap_or(10000.0);
        if let Some(f) = self.partial_rotary_factor.filter(|f| *f != 1.0) {
            bail!("config.json: partial_rotary_factor {f} is not supported (RoPE over the whole head only)");
        }
        if let Some(t) = self
            .layer_types
            .iter()
            .flatten()
            .find(|t| !["full_attention", "sliding_attention"].contains(&t.as_str()))
        {
            bail!(
                "config.json: layer type {t:?} is not supported (tinfer runs full and sliding-window attention layers)"
            );
        }
        let mut seq_len = self.max_position_embeddings.unwrap_or(2048);
        // A sliding window shorter than the context changes attention beyond it; tinfer
        // implements full attention, so it limits the context to the window (exact within it).
        if let Some(w) = self.sliding_window.as_ref().and_then(Json::as_u64) {
            let sliding_layers = self.layer_types.iter().flatten().any(|t| t == "sliding_attention");
            let mistral = model_type == "mistral" || model_type == "mixtral";
            let used = self.use_sliding_window.unwrap_or(mistral) || sliding_layers;
            // (Qwen2-MoE writes `sliding_window: 0` for no window, with use_sliding_window false)
            ensure!(
                !used || w > 0,
                "config.json: sliding_window is 0 with the window in use: no position would see another; set it to null for no window"
            );
            if used && (w as usize) < seq_len {
                seq_len = w as usize;
            }
        }
        if seq_len == 0 || seq_len > MAX_CONTEXT {
            bail!(
                "config.json: max_position_embeddings = {seq_len} is outside 1..={MAX_CONTEXT}; the file is corrupt or the context is longer than tinfer supports"
            );
        }
        if seq_len * head_dim > MAX_ROPE_TABLE {
            bail!("config.json: max_position_embeddings x head_dim = {seq_len} x {head_dim} is larger than tinfer supports ({MAX_ROPE_TABLE})");
        }
        let eps = self.rms_norm_eps.unwrap_or(1e-6);
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(eps) || !positive(rope_theta) {
            bail!("config.json: rms_norm_eps ({eps}) and rope_theta ({rope_theta}) must be positive numbers");
        }
        // transformers 5 keeps the scaling in rope_parameters, older files in rope_scaling.
        let scaling = rope_params
            .filter(|p| p.get("rope_type").is_some())
            .or(self.rope_scaling.as_ref());
        let mut rope_scaling = RopeScaling::from_hf(scaling, seq_len)?;
        if let Some(f) = &self.rope_freq_factors {
            ensure!(
                rope_scaling == RopeScaling::None,
                "config.json: rope_freq_factors and a RoPE scaling type together"
            );
            ensure!(
                f.len() == head_dim / 2 && f.iter().all(|x| x.is_finite() && *x > 0.0),
                "config.json: rope_freq_factors must be {} positive numbers (head_dim / 2)",
                head_dim / 2
            );
            rope_scaling = RopeScaling::FreqFactors(f.clone());
        }
        let attention_bias = self.attention_bias.unwrap_or(false);
        let qk_norm = model_type == "qwen3" || model_type == "qwen3_moe";
        let qkv_bias = match model_type.as_str() {
            "qwen2" => true,
            "qwen2_moe" => self.qkv_bias.unwrap_or(true),
            _ => attention_bias,
        };
        let moe = self.moe(&model_type)?;
        Ok(Config {
            model_type,
            dim,
            hidden_dim: self.intermediate_size,
            n_layers: self.num_hidden_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            kv_mul: n_heads / n_kv_heads,
            vocab_size: self.vocab_size,
            seq_len,
            norm_eps: eps,
            rope_theta,
            rope_scaling,
            tied_embeddings: self.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            o_bias: attention_bias,
            qk_norm,
            eos_token_ids: token_ids(self.eos_token_id.as_ref()),
            moe,
        })
    }

    /// The MoE facts of an MoE model_type, checked; None for a dense one.
    fn moe(&self, model_type: &str) -> Result<Option<MoeConfig>> {
        let mixtral = model_type == "mixtral";
        if !mixtral && !model_type.ends_with("_moe") {
            return Ok(None);
        }
        // transformers' defaults where a key is absent (MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig)
        let (d_experts, d_k, d_hidden, d_shared) = match model_type {
            "mixtral" => (8, 2, self.intermediate_size, 0),
            "qwen2_moe" => (60, 4, 1408, 5632),
            _ => (128, 8, 768, 0),
        };
        let n_experts = self.num_experts.or(self.num_local_experts).unwrap_or(d_experts);
        let top_k = self.num_experts_per_tok.unwrap_or(d_k);
        let hidden = if mixtral {
            self.intermediate_size
        } else {
            self.moe_intermediate_size.unwrap_or(d_hidden)
        };
        let shared_hidden = match model_type {
            "qwen2_moe" => self.shared_expert_intermediate_size.unwrap_or(d_shared),
            _ => 0,
        };
        ensure!(
            (1..=MAX_EXPERTS).contains(&n_experts),
            "config.json: {n_experts} experts (num_experts / num_local_experts); tinfer runs 1..={MAX_EXPERTS}"
        );
        ensure!(
            (1..=MAX_TOP_K.min(n_experts)).contains(&top_k),
            "config.json: num_experts_per_tok = {top_k}; tinfer runs 1..={} (at most {MAX_TOP_K}, at most the experts)",
            MAX_TOP_K.min(n_experts)
        );
        ensure!(
            (1..=MAX_WIDTH).contains(&hidden) && shared_hidden <= MAX_WIDTH,
            "config.json: expert width {hidden} / shared expert width {shared_hidden} is outside 1..={MAX_WIDTH}"
        );
        let step = self.decoder_sparse_step.unwrap_or(1);
        ensure!(
            step >= 1,
            "config.json: decoder_sparse_step is 0; it must be at least 1 (every step-th layer is MoE)"
        );
        if let Some(l) = self.mlp_only_layers.iter().find(|&&l| l >= self.num_hidden_layers) {
            bail!("config.json: mlp_only_layers names layer {l}, past the last");
        }
        let layers = (0..self.num_hidden_layers)
            .map(|l| mixtral || (!self.mlp_only_layers.contains(&l) && (l + 1) % step == 0))
            .collect();
        Ok(Some(MoeConfig {
            n_experts,
            top_k,
            hidden,
            shared_hidden,
            norm_topk_prob: mixtral || self.norm_topk_prob.unwrap_or(false),
            layers,
        }))
    }
}

/// RoPE scaling: how a checkpoint stretches RoPE's frequencies past its training context. Read
/// from HF `rope_parameters` / `rope_scaling` (transformers' `modeling_rope_utils.py`:
/// `_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`,
/// `_compute_yarn_parameters`) and from GGUF (`*.rope.scaling.*`, the `rope_freqs` tensor), and
/// applied once, to the host cos/sin tables (`RopeTable`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: inv_freq / factor.
    Linear {
        factor: f64,
    },
    /// Llama 3.1: wavelengths over original_max / low_freq_factor divided by factor, under
    /// original_max / high_freq_factor kept, a linear blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: f64,
    },
    /// YaRN (Peng et al. 2023): a ramp from extrapolated to interpolated frequencies between
    /// beta_fast and beta_slow rotations over original_max, and cos/sin times attention_factor.
    Yarn {
        factor: f64,
        original_max: f64,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: f64,
        truncate: bool,
    },
    /// llama.cpp's `rope_freqs` tensor (head_dim / 2 values): inv_freq[i] / factors[i].
    FreqFactors(Vec<f32>),
}

impl RopeScaling {
    /// From an HF rope_scaling / rope_parameters object (None or type "default": no scaling).
    /// `max_pos` (max_position_embeddings) stands in for a missing original_max_position_embeddings.
    pub fn from_hf(s: Option<&Json>, max_pos: usize) -> Result<Self> {
        let Some(s) = s else { return Ok(RopeScaling::None) };
        let ty = s
            .get("rope_type")
            .or_else(|| s.get("type"))
            .and_then(Json::as_str)
            .unwrap_or("default");
        let num = |k: &str| s.get(k).and_then(Json::as_f64);
        let pos = |k: &str, default: Option<f64>| -> Result<f64> {
            let v = num(k)
                .or(default)
                .with_context(|| format!("config.json: RoPE scaling {ty:?} needs {k}"))?;
            ensure!(
                v.is_finite() && v > 0.0,
                "config.json: RoPE scaling {ty:?}: {k} = {v} must be positive"
            );
            Ok(v)
        };
        let original_max = || pos("original_max_position_embeddings", Some(max_pos as f64));
        Ok(match ty {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear { factor: pos("factor", None)? },
            "llama3" => {
                let (low, high) = (pos("low_freq_factor", None)?, pos("high_freq_factor", None)?);
                ensure!(high > low, "config.json: llama3 RoPE needs high_freq_factor > low_freq_factor");
                RopeScaling::Llama3 {
                    factor: pos("factor", None)?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max: original_max()?,
                }
            }
            "yarn" => {
                let factor = pos("factor", None)?;
                let mscale = |m: f64| if factor <= 1.0 { 1.0 } else { 0.1 * m * factor.ln() + 1.0 };
                let attention_factor = match (num("attention_factor"), num("mscale"), num("mscale_all_dim")) {
                    (Some(a), _, _) => a,
                    (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => mscale(m) / mscale(all),
                    _ => mscale(1.0),
                };
                RopeScaling::Yarn {
                    factor,
                    original_max: original_max()?,
                    beta_fast: pos("beta_fast", Some(32.0))?,
                    beta_slow: pos("beta_slow", Some(1.0))?,
                    attention_factor,
                    truncate: s.get("truncate").and_then(Json::as_bool).unwrap_or(true),
                }
            }
            other => bail!(
                "config.json: RoPE scaling {other:?} is not supported (tinfer implements default, linear, llama3 and yarn)"
            ),
        })
    }
}

/// RoPE cos/sin tables, computed once on the host. Rotate-half pairing (i, i + head_dim/2), as
/// HF checkpoints expect. The angle `pos * inv_freq` is rounded to f32 exactly as HF computes
/// it (inv_freq and the product are f32 there, which matters at long positions), then cos/sin
/// are evaluated in f64, scaled by the attention factor (YaRN's, else 1) and rounded once.
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub half: usize,   // head_dim / 2
    pub cos: Vec<f32>, // (seq_len, head_dim/2)
    pub sin: Vec<f32>, // (seq_len, head_dim/2)
}

impl RopeTable {
    pub fn new(cfg: &Config) -> Self {
        let half = cfg.head_dim / 2;
        let inv_freq = Self::inv_freq(cfg);
        let scale = match cfg.rope_scaling {
            RopeScaling::Yarn { attention_factor, .. } => attention_factor as f32 as f64,
            _ => 1.0,
        };
        let mut cos = Vec::with_capacity(cfg.seq_len * half);
        let mut sin = Vec::with_capacity(cfg.seq_len * half);
        for pos in 0..cfg.seq_len {
            for &f in &inv_freq {
                let angle = (pos as f32 * f) as f64;
                cos.push((angle.cos() as f32 as f64 * scale) as f32);
                sin.push((angle.sin() as f32 as f64 * scale) as f32);
            }
        }
        RopeTable { half, cos, sin }
    }

    /// inv_freq[i] = 1 / theta^(2i / head_dim), scaled as `cfg.rope_scaling` says, rounded to f32.
    pub fn inv_freq(cfg: &Config) -> Vec<f32> {
        let d = cfg.head_dim as f64;
        let base = |i: usize| 1.0 / cfg.rope_theta.powf((2 * i) as f64 / d);
        let tau = std::f64::consts::TAU;
        (0..cfg.head_dim / 2)
            .map(|i| {
                let f = base(i);
                let scaled = match &cfg.rope_scaling {
                    RopeScaling::None => f,
                    RopeScaling::Linear { factor } => f / factor,
                    RopeScaling::FreqFactors(k) => f / k[i] as f64,
                    RopeScaling::Llama3 {
                        factor,
                        low_freq_factor: lo,
                        high_freq_factor: hi,
                        original_max: l,
                    } => {
                        let wavelen = tau / f;
                        if wavelen < l / hi {
                            f
                        } else if wavelen > l / lo {
                            f / factor
                        } else {
                            let s = (l / wavelen - lo) / (hi - lo);
                            (1.0 - s) * f / factor + s * f
                        }
                    }
                    RopeScaling::Yarn {
                        factor,
                        original_max,
                        beta_fast,
                        beta_slow,
                        truncate,
                        ..
                    } => {
                        // the dimension at which a frequency turns `rot` times over original_max
                        let corr = |rot: f64| d * (original_max / (rot * tau)).ln() / (2.0 * cfg.rope_theta.ln());
                        let (mut low, mut high) = (corr(*beta_fast), corr(*beta_slow));
                        if *truncate {
                            (low, high) = (low.floor(), high.ceil());
                        }
                        let (low, mut high) = (low.max(0.0), high.min(d - 1.0));
                        if low == high {
                            high += 0.001;
                        }
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolate = 1.0 - ramp;
                        f / factor * (1.0 - extrapolate) + f * extrapolate
                    }
                };
                scaled as f32
            })
            .collect()
    }
}
