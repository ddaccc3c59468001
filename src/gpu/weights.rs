//! How one matrix lives on the device: a read-only storage texture (`WeightTex`) in the layout
//! `TexLayout` decides, in the format `WeightPlan` gives it; activations as textures (`ActTex`).
//! The model's weights as a whole: gpu/params.rs.

use anyhow::{bail, Result};

pub use super::blocks::{device_row, row_texels, QUANT_FORMATS};
use super::context::Gpu;
use crate::options::Dtype;
use crate::quant::{self, fallback_for};
use crate::weights::{Format, Tensor};

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
/// Quantized matrices (`WeightTex::upload_blocks`) keep their GGUF blocks in the device layout of
/// `device_row`, rows interleaved the same way without the padding to TEXEL_CHUNK.
pub struct WeightTex {
    pub view: wgpu::TextureView,
    pub rows: usize,
    pub cols: usize,
    /// F32 or F16 texels, or one of `QUANT_FORMATS` as blocks
    pub format: Format,
    /// bytes on the device, padding included
    pub bytes: usize,
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
        let per = if f16 { 8 } else { 4 }; // values per texel
        if !cols.is_multiple_of(per) {
            bail!("{name}: {cols} columns are not a multiple of {per}, which the GPU matrix kernels read per texel; use --dtype f32 (multiples of 4) or --device cpu");
        }
        let format = if f16 { Format::F16 } else { Format::F32 };
        // 4 words per texel: f32 bit patterns, or two f16 per word (the first in the low half, as
        // unpack2x16float reads them); padding texels are zero.
        let mut buf = vec![0f32; cols];
        let fit = Fit {
            group,
            height,
            exact: false,
        };
        Self::place(gpu, name, parts, format, fit, |part, i, words| {
            let row = match part.as_f32() {
                Some(v) => &v[i * cols..(i + 1) * cols],
                None => {
                    part.row_f32(i, &mut buf);
                    &buf[..]
                }
            };
            if f16 {
                for (d, p) in words.iter_mut().zip(row.chunks_exact(2)) {
                    *d = u32::from(half::f16::from_f32(p[0]).to_bits())
                        | (u32::from(half::f16::from_f32(p[1]).to_bits()) << 16);
                }
            } else {
                for (d, v) in words.iter_mut().zip(row) {
                    *d = v.to_bits();
                }
            }
        })
    }

    /// Upload the rows of `parts` (all in the quantized `format`, one of QUANT_FORMATS) as
    /// blocks in the layout of `device_row`: always ROW_GROUP rows interleaved, and layers of a
    /// power-of-two number of texture rows, at most `height` (so that the kernels find a row
    /// with shifts and masks: `q_row` in shaders/lib/quant.wgsl; a u32 division costs a scalar
    /// divide per lane on a CPU adapter).
    /// `exact`: layers of (nearly) equal height, the fewest the height allows (GPUs: at most a
    /// texture row of padding a layer); else power-of-two heights (CPU adapters: lib/quant.wgsl
    /// finds a row with shifts, where a division costs a scalar divide per lane).
    pub fn upload_blocks(gpu: &Gpu, name: &str, parts: &[&Tensor], height: usize, exact: bool) -> Result<Self> {
        let format = parts[0].format;
        assert!(QUANT_FORMATS.contains(&format) && parts.iter().all(|p| p.format == format));
        let (cols, rb) = (parts[0].cols(), parts[0].row_bytes());
        let texels = row_texels(format, cols);
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        if texels * ROW_GROUP > max_dim {
            bail!("{name}: {ROW_GROUP} rows of {cols} {format} values are {} texels, over this device's texture width of {max_dim}; use --dtype f16", texels * ROW_GROUP);
        }
        let fit = Fit {
            group: ROW_GROUP,
            height,
            exact,
        };
        Self::place(gpu, name, parts, format, fit, |part, i, words| {
            let row = device_row(format, &part.bytes()[i * rb..(i + 1) * rb]);
            debug_assert_eq!(row.len(), texels * 4);
            words.copy_from_slice(&row);
        })
    }

    /// Create the texture for the rows of `parts` in `format` (TexLayout::of, as `fit` allows)
    /// and fill it: `fill(part, i, words)` writes row i of `part` as texels × 4 words.
    fn place(
        gpu: &Gpu,
        name: &str,
        parts: &[&Tensor],
        format: Format,
        fit: Fit,
        mut fill: impl FnMut(&Tensor, usize, &mut [u32]),
    ) -> Result<Self> {
        let Fit { group, height, exact } = fit;
        let cols = parts[0].cols();
        assert!(group >= 1 && height >= 1 && cols > 0 && parts.iter().all(|p| p.cols() == cols));
        let rows: usize = parts.iter().map(|p| p.rows()).sum();
        let max_dim = gpu.limits.max_texture_dimension_2d as usize;
        let layout = TexLayout::of(format, rows, cols, group, height, max_dim, exact);
        let TexLayout {
            texels,
            group,
            height,
            layers,
        } = layout;
        if texels > max_dim {
            bail!("{name}: a row of {cols} values is {texels} texels, over this device's texture width limit of {max_dim}; use --device cpu");
        }
        let groups = rows.div_ceil(group).max(1);
        let max_layers = gpu.limits.max_texture_array_layers as usize;
        if layers > max_layers {
            bail!("{name}: {rows} rows need {layers} texture layers of {height} × {group} rows, over this device's limit of {max_layers}; use --device cpu");
        }
        let width = texels * group;
        let texture = gpu.texture(&wgpu::TextureDescriptor {
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
        // One layer at a time (a big embedding table is not copied whole); rows past the end zero.
        let mut words = vec![0u32; height * width * 4];
        let mut row = vec![0u32; texels * 4];
        let mut all_rows = parts.iter().flat_map(|p| (0..p.rows()).map(move |i| (*p, i)));
        for layer in 0..layers {
            let n = height.min(groups - layer * height);
            words.fill(0);
            for o in 0..n * group {
                let Some((part, i)) = all_rows.next() else { break };
                row.fill(0);
                fill(part, i, &mut row);
                let first = (o / group * width + o % group) * 4; // word 0 of texel 0
                for (k, t) in row.chunks_exact(4).enumerate() {
                    words[first + k * group * 4..][..4].copy_from_slice(t);
                }
            }
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
                bytemuck::cast_slice(&words[..n * width * 4]),
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
        let bytes = layout.bytes();
        Ok(WeightTex {
            view,
            rows,
            cols,
            format,
            bytes,
        })
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
        let texture = gpu.texture(&wgpu::TextureDescriptor {
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

/// Which format each matrix takes on the device (`--dtype`), decided before anything is uploaded
/// (`info` shows the same plan without a device).
#[derive(Clone, Copy, Debug)]
pub struct WeightPlan {
    pub dtype: Dtype,
    /// the float format where a matrix is not kept quantized: f16 or f32
    pub f16: bool,
    /// the quantized kernels can run (they need subgroups of 8 lanes or more)
    pub quant: bool,
    /// quantized matrices in layers of equal height (GPUs), not power-of-two ones (CPU
    /// adapters): WeightTex::upload_blocks
    pub exact_layers: bool,
}

/// Block formats whose values Q8_0 holds exactly (same d, q - 8 or q - 16 as i8): the format
/// a stack mixing them takes on the device, rewritten by `blocks_in`.
pub(super) const EXACT_IN_Q8_0: [Format; 3] = [Format::Q4_0, Format::Q5_0, Format::Q8_0];

impl WeightPlan {
    /// The plan for `dtype` on an adapter with (or without) subgroups of 8 lanes or more: floats
    /// in f16 unless `dtype` is f32, blocks only where the quantized kernels run. f16 needs no
    /// adapter feature: the kernels hold f16 pairs in u32 words and widen them with WGSL's core
    /// `unpack2x16float` (no `enable f16;`), so DX12 without DXC and WebGPU get f16 weights too.
    pub fn new(dtype: Dtype, subgroups: bool) -> Self {
        WeightPlan {
            dtype,
            f16: dtype != Dtype::F32,
            quant: subgroups,
            exact_layers: false,
        }
    }

    /// The same plan with quantized layers of equal height (`exact`, GPUs) or power-of-two ones.
    pub fn exact_layers(self, exact: bool) -> Self {
        WeightPlan {
            exact_layers: exact,
            ..self
        }
    }

    /// The device format of a matrix stacked from `parts` (each a stored tensor, equal columns).
    /// `auto`: the stored block format where the kernels read it; Q4_0 and Q5_0 parts stacked
    /// with Q8_0 (Qwen2.5's V rows) become Q8_0, which holds their values exactly; anything else
    /// the float format. `q8_0` / `q4_k`: that format, with llama-quantize's fallback for rows
    /// that are not whole blocks (quant::fallback_for) and the float format where none applies.
    /// Without the quantized kernels every matrix is float.
    pub fn format(&self, parts: &[Format], cols: usize) -> Format {
        let float = if self.f16 { Format::F16 } else { Format::F32 };
        let quant = |f: Format| {
            if self.quant && QUANT_FORMATS.contains(&f) {
                f
            } else {
                float
            }
        };
        match self.dtype {
            Dtype::F32 => Format::F32,
            Dtype::F16 => Format::F16,
            Dtype::Q8_0 => fallback_for(Format::Q8_0, cols).map_or(float, quant),
            Dtype::Q4_K => fallback_for(Format::Q4_K, cols).map_or(float, quant),
            Dtype::Auto if parts.iter().all(|&f| f == parts[0]) => quant(parts[0]),
            Dtype::Auto if parts.iter().all(|f| EXACT_IN_Q8_0.contains(f)) => quant(Format::Q8_0),
            Dtype::Auto => float,
        }
    }
}

/// Texels a row of `cols` values takes on the device in `format` (float rows padded to
/// TEXEL_CHUNK texels).
fn texels_for(format: Format, cols: usize) -> usize {
    match format {
        Format::F32 => (cols / 4).div_ceil(TEXEL_CHUNK) * TEXEL_CHUNK,
        Format::F16 => (cols / 8).div_ceil(TEXEL_CHUNK) * TEXEL_CHUNK,
        f => row_texels(f, cols),
    }
}

/// How a matrix lies in its texture: texels a row, rows a group (interleaved texel by texel),
/// texture rows a layer, layers. The one place that decides it: the upload and `device_plan`
/// both ask here.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct TexLayout {
    texels: usize,
    group: usize,
    height: usize,
    layers: usize,
}

/// How a matrix's rows may go into a texture: at most `group` rows a group, at most `height`
/// texture rows a layer, quantized layers of equal height (`exact`) or of powers of two.
#[derive(Clone, Copy)]
struct Fit {
    group: usize,
    height: usize,
    exact: bool,
}

impl TexLayout {
    /// `rows` × `cols` in `format`, at most `group` rows a group and `max_height` texture rows a
    /// layer, textures `max_dim` texels wide and high.
    /// Quantized matrices take power-of-two heights unless `exact` (see WeightTex::upload_blocks).
    pub(super) fn of(
        format: Format,
        rows: usize,
        cols: usize,
        group: usize,
        max_height: usize,
        max_dim: usize,
        exact: bool,
    ) -> Self {
        let texels = texels_for(format, cols);
        let group = group.min(max_dim / texels.max(1)).max(1);
        let groups = rows.div_ceil(group).max(1);
        let cap = max_height.min(max_dim);
        let height = if format.is_quantized() && !exact {
            quant_layer_height(groups, cap)
        } else {
            float_layer_height(groups, cap)
        };
        TexLayout {
            texels,
            group,
            height,
            layers: groups.div_ceil(height),
        }
    }

    /// Bytes of the texture: every layer whole.
    pub(super) fn bytes(&self) -> usize {
        self.layers * self.height * self.group * self.texels * 16
    }
}

/// Texture rows a layer of a quantized matrix of `groups` row groups: the smallest power of two
/// that keeps it within QUANT_MAX_LAYERS layers (so the last layer's unused rows stay under 1% of
/// a large matrix), at most `max_height` (rounded down to a power of two).
fn quant_layer_height(groups: usize, max_height: usize) -> usize {
    let want = groups.div_ceil(QUANT_MAX_LAYERS).next_power_of_two();
    want.min(1 << max_height.max(1).ilog2())
}

/// Texture rows a layer of a float matrix of `groups` row groups: as few layers as `max_height`
/// allows, all of (nearly) equal height, so the last one is not mostly padding (a 151936-row
/// LM head in two layers of 16384 would be half empty).
fn float_layer_height(groups: usize, max_height: usize) -> usize {
    groups.div_ceil(groups.div_ceil(max_height.max(1)))
}

/// Most layers a quantized matrix takes (WebGPU's default limit of array layers).
const QUANT_MAX_LAYERS: usize = 256;

/// `parts` as one matrix in the quantized `format`: the stored blocks where a part already is
/// in it, Q4_0 / Q5_0 blocks rewritten as Q8_0 exactly (same d, q - 8 or q - 16), else the
/// decoded values quantized by quant::quantize.
pub(super) fn blocks_in(format: Format, parts: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mut out = vec![];
    for p in parts {
        let bytes = if p.format == format {
            p.bytes().to_vec()
        } else if format == Format::Q8_0 && EXACT_IN_Q8_0.contains(&p.format) {
            let mut v = vec![0f32; 32];
            let bb = p.format.block().1;
            let mut q = Vec::with_capacity(p.len() / 32 * 34);
            for b in p.bytes().chunks_exact(bb) {
                p.format.decode(b, &mut v);
                let d = half::f16::from_le_bytes([b[0], b[1]]);
                q.extend(d.to_le_bytes());
                let df = d.to_f32();
                q.extend(
                    v.iter()
                        .map(|&x| if df == 0.0 { 0 } else { (x / df).round() as i8 as u8 }),
                );
            }
            q
        } else {
            quant::quantize(format, &p.to_f32()).ok_or_else(|| anyhow::anyhow!("no quantizer for {format}"))?
        };
        out.push(Tensor::owned(format, p.shape.clone(), bytes).map_err(anyhow::Error::msg)?);
    }
    Ok(out)
}
