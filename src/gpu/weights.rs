//! Weights on the device: matrices as read-only storage textures (`WeightTex`), vectors in
//! storage buffers, uploaded once at load (`GpuWeights::upload`).

use anyhow::{bail, Result};

use super::context::Gpu;
use super::kernels::UNIFORM_X_BYTES;
use crate::arch::Arch;
use crate::config::Config;
use crate::weights::{Tensor, Weights};

/// A weight matrix (rows, cols) on the device: a 2D-array texture of Rgba32Uint texels, each 16
/// bytes along a row holding 8 f16 or 4 f32 values, bound as a read-only storage texture.
/// Rows are padded with zeros to a multiple of TEXEL_CHUNK texels (matvec reads whole chunks)
/// and stored in groups of `group` rows interleaved texel by texel: texel k of row o is at
/// x = k * group + o % group of texture row o / group, texture rows past the layer height going
/// to further array layers (`weight_row` in shaders/prelude.wgsl). The `group` rows that
/// neighbouring invocations compute are then read from contiguous memory.
/// Why textures, not storage buffers: on lavapipe a texel load fetches 16 bytes for 8 invocations
/// at once, where a storage load costs a scalar load per invocation and component, and a storage
/// texture skips the mip-level arithmetic of a sampled one (benches/RESULTS.md); on GPUs it goes
/// through the texture cache. No storage binding limit applies, so a large LM head needs no
/// splitting.
pub struct WeightTex {
    pub view: wgpu::TextureView,
    pub rows: usize,
    pub cols: usize,
    pub f16: bool,
}

/// Rows interleaved per texture row (the subgroup width the matrix kernels are tuned for);
/// fewer where a row is too wide for that many in one texture row.
pub const ROW_GROUP: usize = 8;

impl WeightTex {
    /// Upload the rows of `parts` one after another (a stacked matrix when there are several;
    /// all have the same columns), each row decoded from its stored format to f32 and then
    /// written as f32 or f16 (rounded from that f32) texel words.
    pub fn upload(gpu: &Gpu, name: &str, parts: &[&Tensor], f16: bool) -> Result<Self> {
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        Self::upload_as(gpu, name, parts, f16, ROW_GROUP, max_dim)
    }

    /// `upload` with at most `group` rows interleaved and at most `height` texture rows a layer
    /// (the tests use small values to reach several groups and layers cheaply).
    pub fn upload_as(gpu: &Gpu, name: &str, parts: &[&Tensor], f16: bool, group: usize, height: usize) -> Result<Self> {
        let cols = parts[0].cols();
        assert!(group >= 1 && height >= 1 && cols > 0 && parts.iter().all(|p| p.cols() == cols));
        let rows: usize = parts.iter().map(|p| p.rows()).sum();
        let per = if f16 { 8 } else { 4 }; // values per texel
        if cols % per != 0 {
            bail!("{name}: {cols} columns are not a multiple of {per}, which the GPU matrix kernels read per texel; use --dtype f32 (multiples of 4) or --device cpu");
        }
        let texels = (cols / per).div_ceil(TEXEL_CHUNK) * TEXEL_CHUNK; // a row, padded
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        if texels > max_dim {
            bail!("{name}: a row of {cols} values is {texels} texels, over this device's texture width limit of {max_dim}; use --device cpu");
        }
        let group = group.min(max_dim / texels);
        let groups = rows.div_ceil(group).max(1);
        let height = groups.min(height).min(max_dim);
        let layers = groups.div_ceil(height);
        let max_layers = gpu.limits.max_texture_array_layers as usize;
        if layers > max_layers {
            bail!("{name}: {rows} rows need {layers} texture layers of {height} × {group} rows, over this device's limit of {max_layers}; use --device cpu");
        }
        let width = texels * group;
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(name),
            size: wgpu::Extent3d {
                width: width as u32,
                height: height as u32,
                depth_or_array_layers: layers as u32,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        // 4 words per texel: f32 bit patterns, or two f16 per word (the first in the low half, as
        // unpack2x16float reads them); padding texels and rows are zero.
        let mut words = vec![0u32; groups * width * 4];
        let mut buf = vec![0f32; cols];
        let all_rows = parts.iter().flat_map(|p| (0..p.rows()).map(move |i| (*p, i)));
        for (o, (part, i)) in all_rows.enumerate() {
            let row = match part.as_f32() {
                Some(v) => &v[i * cols..(i + 1) * cols],
                None => {
                    part.row_f32(i, &mut buf);
                    &buf[..]
                }
            };
            let first = (o / group * width + o % group) * 4; // word 0 of texel 0
            for k in 0..cols / per {
                let dst = &mut words[first + k * group * 4..][..4];
                let src = &row[k * per..(k + 1) * per];
                if f16 {
                    for (d, p) in dst.iter_mut().zip(src.chunks_exact(2)) {
                        *d = u32::from(half::f16::from_f32(p[0]).to_bits())
                            | (u32::from(half::f16::from_f32(p[1]).to_bits()) << 16);
                    }
                } else {
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d = v.to_bits();
                    }
                }
            }
        }
        for layer in 0..layers {
            let g0 = layer * height;
            let n = height.min(groups - g0);
            gpu.queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d {
                        x: 0,
                        y: 0,
                        z: layer as u32,
                    },
                    aspect: wgpu::TextureAspect::All,
                },
                bytemuck::cast_slice(&words[g0 * width * 4..(g0 + n) * width * 4]),
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some((width * 16) as u32),
                    rows_per_image: Some(n as u32),
                },
                wgpu::Extent3d {
                    width: width as u32,
                    height: n as u32,
                    depth_or_array_layers: 1,
                },
            );
        }
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        Ok(WeightTex { view, rows, cols, f16 })
    }

    /// Bytes one pass over the matrix reads.
    pub fn bytes(&self) -> usize {
        self.rows * self.cols * if self.f16 { 2 } else { 4 }
    }
}

/// Activation rows as a texture for matmat.wgsl (to_texture.wgsl writes it): (d/4, T_max, 1)
/// texels of 4 f32 bit patterns.
pub struct ActTex {
    pub view: wgpu::TextureView,
    pub d: usize,
}

impl ActTex {
    pub fn new(gpu: &Gpu, name: &str, d: usize, rows: usize) -> Result<Self> {
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        if d / 4 > max_dim {
            bail!("{name}: rows of {d} values are wider than this device's texture limit of {max_dim} texels; use --device cpu");
        }
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some(name),
            size: wgpu::Extent3d {
                width: (d / 4) as u32,
                height: rows as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::STORAGE_BINDING,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor {
            dimension: Some(wgpu::TextureViewDimension::D2Array),
            ..Default::default()
        });
        Ok(ActTex { view, d })
    }
}

/// Texels matvec.wgsl reads per round (one per lane of 8); weight rows are padded to it.
pub const TEXEL_CHUNK: usize = 8;

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
    pub w_gate_up: WeightTex,          // (2 hidden, dim): W_gate; W_up
    pub w_down: WeightTex,             // (dim, hidden)
}

/// The model's weights on the device, each matrix once (tied LM head: `lm_head` is None).
pub struct GpuWeights {
    pub layers: Vec<GpuLayer>,
    pub embed: WeightTex,           // (vocab, dim)
    pub lm_head: Option<WeightTex>, // (vocab, dim)
    pub norm: wgpu::Buffer,         // (dim,)
}

impl GpuWeights {
    /// Upload `w` (f16 texels when `f16`), stacking Wq;Wk;Wv and W_gate;W_up.
    pub fn upload(gpu: &Gpu, cfg: &Config, w: &Weights<Tensor>, f16: bool) -> Result<Self> {
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
        let mat = |name: &str, parts: &[&Tensor]| WeightTex::upload(gpu, name, parts, f16);
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
                w_gate_up: mat(&name("w_gate;w_up"), &stack(&arch.stack_gate_up))?,
                w_down: mat(&name("w_down"), &[&lw.w_down])?,
            });
        }
        let embed = mat("embed", &[&w.embed])?;
        let lm_head = w.lm_head.as_ref().map(|h| mat("lm_head", &[h])).transpose()?;
        let norm = vec("norm", &w.norm)?;
        Ok(GpuWeights {
            layers,
            embed,
            lm_head,
            norm,
        })
    }
}
