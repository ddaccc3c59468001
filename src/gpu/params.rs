//! The model's weights on the device (`GpuWeights`): each layer's matrices, Q, K, V stacked
//! into one and gate and up into another, an MoE block's router and experts stacked, and vectors
//! in storage buffers, uploaded once at load (`GpuWeights::upload`); `device_plan` says the same
//! without a device (`info`). How one matrix lies in its texture: gpu/weights.rs.

use anyhow::Result;

use super::context::Gpu;
use super::kernels::{MAX_STEP_TOKENS, UNIFORM_X_BYTES};
use super::weights::{blocks_in, TexLayout, WeightPlan, WeightTex, EXACT_IN_Q8_0, ROW_GROUP};
use crate::arch::Arch;
use crate::config::{Config, MoeConfig};
use crate::weights::{Format, Moe, Tensor, Weights};

type Buf = wgpu::Buffer;

/// One transformer block on the device: `weights::Layer` with the Q, K, V projections stacked
/// into one matrix and gate and up into another (each one product, split three or two ways).
pub struct GpuLayer {
    pub attn_norm: wgpu::Buffer,       // (dim,)
    pub wqkv: WeightTex,               // (q_dim + 2 kv_dim, dim): Wq; Wk; Wv
    pub bqkv: Option<wgpu::Buffer>,    // (q_dim + 2 kv_dim,) bq; bk; bv (zeros for a missing part)
    pub wo: WeightTex,                 // (dim, q_dim)
    pub bo: Option<wgpu::Buffer>,      // (dim,)
    pub qk_norm: Option<wgpu::Buffer>, // (2, head_dim) q_norm; k_norm (Qwen3)
    pub ffn_norm: wgpu::Buffer,        // (dim,)
    /// The dense MLP, or an MoE block's shared expert (weights::Layer::mlp)
    pub mlp: Option<GpuMlp>,
    pub moe: Option<GpuMoe>,
}

/// A SwiGLU FFN on the device.
pub struct GpuMlp {
    pub gate_up: WeightTex, // (2 hidden, dim): W_gate; W_up
    pub down: WeightTex,    // (dim, hidden)
}

/// The model's weights on the device, each matrix once (tied LM head: `lm_head` is None).
pub struct GpuWeights {
    pub layers: Vec<GpuLayer>,
    /// The model's MoE facts, for recording its MoE blocks
    pub moe_config: Option<crate::config::MoeConfig>,
    pub embed: WeightTex,           // (vocab, dim)
    pub lm_head: Option<WeightTex>, // (vocab, dim)
    pub norm: wgpu::Buffer,         // (dim,)
}

/// One MoE block's matrices and its routing buffers (a layer's own, so that `--routing` can
/// read every layer's after a step).
pub struct GpuMoe {
    /// (n_experts, dim) f32 W_router, and the shared expert's gate as row n_experts (Qwen2-MoE)
    pub router: WeightTex,
    /// (n_experts × 2 hidden, dim): W_gate_e; W_up_e of expert 0, then expert 1, ...
    pub gate_up: WeightTex,
    /// (n_experts × dim, hidden): W_down_e of each expert in turn
    pub down: WeightTex,
    /// (MAX_STEP_TOKENS, router rows) router logits
    pub logits: Buf,
    /// moe_route.wgsl's output: ids, weights, per-expert assignment lists
    pub routing: Buf,
}

/// Words of a routing buffer for top `k` of `n_experts` (moe_route.wgsl's header).
pub fn routing_words(k: usize, n_experts: usize) -> usize {
    2 * MAX_STEP_TOKENS * k + n_experts * (MAX_STEP_TOKENS + 1)
}

/// The MoE matrices of a layer as the device holds them: (name, parts stacked row after row,
/// f32 only): the router (+ the shared gate), the experts' W_gate;W_up, their W_down.
pub fn parts(l: usize, m: &Moe<Tensor>) -> [(String, Vec<&Tensor>, bool); 3] {
    let router = std::iter::once(&m.router).chain(&m.shared_gate).collect();
    let gate_up = m.gate.iter().zip(&m.up).flat_map(|(g, u)| [g, u]).collect();
    [
        (format!("layers.{l}.router"), router, true),
        (format!("layers.{l}.experts.w_gate;w_up"), gate_up, false),
        (format!("layers.{l}.experts.w_down"), m.down.iter().collect(), false),
    ]
}

impl GpuMoe {
    /// Upload a layer's MoE block, `mat(name, parts, f32)` making each matrix.
    pub fn upload(
        gpu: &Gpu,
        mc: &MoeConfig,
        l: usize,
        m: &Moe<Tensor>,
        mut mat: impl FnMut(&str, &[&Tensor], bool) -> Result<WeightTex>,
    ) -> Result<Self> {
        let [r, gu, d] = parts(l, m).map(|(name, parts, f32)| mat(&name, &parts, f32));
        let router = r?;
        Ok(GpuMoe {
            logits: gpu.zeros(&format!("layers.{l}.router_logits"), MAX_STEP_TOKENS * router.rows)?,
            routing: gpu.zeros(&format!("layers.{l}.routing"), routing_words(mc.top_k, mc.n_experts))?,
            router,
            gate_up: gu?,
            down: d?,
        })
    }
}

impl PlannedMatrix {
    /// How its values reach the device: "as stored", "rewritten exactly" (blocks into Q8_0),
    /// "decoded" (to f16 or f32) or "quantized at load".
    pub fn how(&self) -> &'static str {
        if self.stored.iter().all(|&f| f == self.format) {
            "as stored"
        } else if self.format == Format::Q8_0 && self.stored.iter().all(|f| EXACT_IN_Q8_0.contains(f)) {
            "rewritten exactly"
        } else if !self.format.is_quantized() {
            "decoded"
        } else {
            "quantized at load"
        }
    }
}

/// One matrix as the GPU will hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedMatrix {
    /// e.g. "layers.3.wq;wk;wv"
    pub name: String,
    /// the stored formats of its parts
    pub stored: Vec<Format>,
    /// its format on the device
    pub format: Format,
    /// bytes on the device with textures `max_dim` texels wide (padding included)
    pub bytes: usize,
    /// bytes of its parts as stored
    pub stored_bytes: usize,
}

/// The device matrices of `w` in upload order (each layer's Wq;Wk;Wv, Wo, W_gate;W_up, W_down,
/// then the embedding and an untied LM head) and the format `plan` gives each: what `info` shows
/// and what GpuWeights::upload does (tests/gpu_model.rs checks the bytes agree).
pub fn device_plan(cfg: &Config, w: &Weights<Tensor>, plan: WeightPlan, max_dim: usize) -> Vec<PlannedMatrix> {
    let arch = Arch::for_hf(&cfg.model_type).unwrap_or(&crate::arch::LLAMA);
    let mut list: Vec<(String, Vec<&Tensor>)> = vec![];
    for (l, lw) in w.layers.iter().enumerate() {
        let stack = |fields: &[crate::arch::Field]| {
            fields
                .iter()
                .map(|&f| lw.field(f).expect("stacked matrices exist"))
                .collect()
        };
        list.push((format!("layers.{l}.wq;wk;wv"), stack(&arch.stack_qkv)));
        list.push((format!("layers.{l}.wo"), vec![&lw.wo]));
        if let Some(mlp) = &lw.mlp {
            let what = if lw.moe.is_some() { "shared_expert." } else { "" };
            list.push((format!("layers.{l}.{what}w_gate;w_up"), vec![&mlp.gate, &mlp.up]));
            list.push((format!("layers.{l}.{what}w_down"), vec![&mlp.down]));
        }
        for (name, parts, _) in lw.moe.iter().flat_map(|m| parts(l, m)) {
            list.push((name, parts));
        }
    }
    list.push(("embed".into(), vec![&w.embed]));
    if let Some(h) = &w.lm_head {
        list.push(("lm_head".into(), vec![h]));
    }
    list.into_iter()
        .map(|(name, parts)| {
            let stored: Vec<Format> = parts.iter().map(|p| p.format).collect();
            let (rows, cols) = (parts.iter().map(|p| p.rows()).sum::<usize>(), parts[0].cols());
            let format = if name.ends_with("router") {
                Format::F32
            } else {
                plan.format(&stored, cols)
            };
            let bytes = TexLayout::of(format, rows, cols, ROW_GROUP, max_dim, max_dim, plan.exact_layers).bytes();
            let stored_bytes = parts.iter().map(|p| p.n_bytes()).sum();
            PlannedMatrix {
                name,
                stored,
                format,
                bytes,
                stored_bytes,
            }
        })
        .collect()
}

impl GpuWeights {
    /// Every matrix: the layers' in order, then the embedding and the LM head.
    fn matrices(&self) -> impl Iterator<Item = &WeightTex> {
        let layers = self.layers.iter().flat_map(|l| {
            let mlp = l.mlp.iter().flat_map(|m| [&m.gate_up, &m.down]);
            let moe = l.moe.iter().flat_map(|m| [&m.router, &m.gate_up, &m.down]);
            [&l.wqkv, &l.wo].into_iter().chain(mlp).chain(moe)
        });
        layers.chain(std::iter::once(&self.embed)).chain(self.lm_head.as_ref())
    }

    /// Bytes of the weight matrices on the device (all of them, padding included).
    pub fn matrix_bytes(&self) -> usize {
        self.matrices().map(|m| m.bytes).sum()
    }

    /// Bytes of weight matrices a decode step reads: every layer's (of an MoE block the router,
    /// k of the n_experts experts and the shared expert) and the LM head (the embedding table
    /// only as a tied head; a token's embedding row is not counted). `k_of_n` = (k, n_experts).
    pub fn read_bytes(&self, k_of_n: (usize, usize)) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let mlp = l.mlp.as_ref().map_or(0, |m| m.gate_up.bytes + m.down.bytes);
                let moe = l.moe.as_ref().map_or(0, |m| {
                    m.router.bytes + (m.gate_up.bytes + m.down.bytes) * k_of_n.0 / k_of_n.1
                });
                l.wqkv.bytes + l.wo.bytes + mlp + moe
            })
            .sum();
        layers + self.lm_head.as_ref().unwrap_or(&self.embed).bytes
    }

    /// The matrices' formats, each once.
    pub fn formats(&self) -> Vec<Format> {
        let mut out = vec![];
        for m in self.matrices() {
            if !out.contains(&m.format) {
                out.push(m.format);
            }
        }
        out
    }

    /// Upload `w`, each matrix in the format `plan` gives it, stacking Wq;Wk;Wv and W_gate;W_up.
    pub fn upload(gpu: &Gpu, cfg: &Config, w: &Weights<Tensor>, plan: WeightPlan) -> Result<Self> {
        let (q_dim, kv_dim) = (cfg.q_dim(), cfg.kv_dim());
        // Weights, uploaded once: matrices in textures, vectors in storage buffers. The Q, K, V
        // projections are stacked into one matrix and so are gate and up (one product each).
        let arch = Arch::for_hf(&cfg.model_type).unwrap_or(&crate::arch::LLAMA);
        let vec = |name: &str, v: &Tensor| gpu.upload(name, &v.f32s());
        // RMSNorm weights, which matvec reads through its 64 KiB uniform window
        let norm_vec = |name: &str, v: &Tensor| {
            let mut padded = v.to_f32();
            padded.resize(v.len().max(UNIFORM_X_BYTES as usize / 4), 0.0);
            gpu.upload(name, &padded)
        };
        let mat_as = |name: &str, parts: &[&Tensor], f32_only: bool| {
            let formats: Vec<Format> = parts.iter().map(|p| p.format).collect();
            let format = if f32_only {
                Format::F32
            } else {
                plan.format(&formats, parts[0].cols())
            };
            match format {
                Format::F32 => WeightTex::upload(gpu, name, parts, false),
                Format::F16 => WeightTex::upload(gpu, name, parts, true),
                f if formats.iter().all(|&p| p == f) => {
                    let max_dim = gpu.limits.max_texture_dimension_2d as usize;
                    WeightTex::upload_blocks(gpu, name, parts, max_dim, plan.exact_layers)
                }
                f => {
                    let blocks = blocks_in(f, parts)?;
                    let refs: Vec<&Tensor> = blocks.iter().collect();
                    let max_dim = gpu.limits.max_texture_dimension_2d as usize;
                    WeightTex::upload_blocks(gpu, name, &refs, max_dim, plan.exact_layers)
                }
            }
        };
        let mat = |name: &str, parts: &[&Tensor]| mat_as(name, parts, false);
        let mut layers = vec![];
        for (l, lw) in w.layers.iter().enumerate() {
            let name = |n: &str| format!("layers.{l}.{n}");
            let stack = |fields: &[crate::arch::Field]| -> Vec<&Tensor> {
                fields
                    .iter()
                    .map(|&f| lw.field(f).expect("stacked matrices exist"))
                    .collect()
            };
            let bqkv = if lw.bq.is_some() || lw.bk.is_some() || lw.bv.is_some() {
                let part = |b: &Option<Tensor>, n: usize| b.as_ref().map_or_else(|| vec![0.0; n], Tensor::to_f32);
                let stacked = [part(&lw.bq, q_dim), part(&lw.bk, kv_dim), part(&lw.bv, kv_dim)].concat();
                Some(gpu.upload(&name("bq;bk;bv"), &stacked)?)
            } else {
                None
            };
            layers.push(GpuLayer {
                attn_norm: norm_vec(&name("attn_norm"), &lw.attn_norm)?,
                wqkv: mat(&name("wq;wk;wv"), &stack(&arch.stack_qkv))?,
                bqkv,
                wo: mat(&name("wo"), &[&lw.wo])?,
                bo: lw.bo.as_ref().map(|b| vec(&name("bo"), b)).transpose()?,
                qk_norm: match (&lw.q_norm, &lw.k_norm) {
                    (Some(q), Some(k)) => Some(gpu.upload(&name("q_norm;k_norm"), &[q.to_f32(), k.to_f32()].concat())?),
                    _ => None,
                },
                ffn_norm: norm_vec(&name("ffn_norm"), &lw.ffn_norm)?,
                mlp: match &lw.mlp {
                    Some(m) => Some(GpuMlp {
                        gate_up: mat(&name("w_gate;w_up"), &[&m.gate, &m.up])?,
                        down: mat(&name("w_down"), &[&m.down])?,
                    }),
                    None => None,
                },
                moe: match (&lw.moe, &cfg.moe) {
                    (Some(m), Some(mc)) => Some(GpuMoe::upload(gpu, mc, l, m, &mat_as)?),
                    _ => None,
                },
            });
        }
        let embed = mat("embed", &[&w.embed])?;
        let lm_head = w.lm_head.as_ref().map(|h| mat("lm_head", &[h])).transpose()?;
        let norm = vec("norm", &w.norm)?;
        Ok(GpuWeights {
            layers,
            moe_config: cfg.moe.clone(),
            embed,
            lm_head,
            norm,
        })
    }
}
