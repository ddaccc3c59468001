//! One named pipeline per kernel, compiled once at load, and the two uniforms every kernel reads:
//! the per-step `Step` (token count, first position, token ids) and a per-call-site `Shape`.
//! Each kernel's source, bindings and dispatch geometry are documented in its .wgsl header.

use anyhow::{bail, Result};

use super::context::Gpu;

mod attention;
use crate::weights::Format;

/// Most token rows one step of the model carries (the activation buffers hold this many rows).
pub const MAX_STEP_TOKENS: usize = 256;
/// Largest head_dim the attention kernels take.
pub const MAX_HEAD_DIM: usize = 256;
/// Query rows a workgroup of attention_flash_sg.wgsl takes (four an invocation).
pub const FLASH_SG_ROWS: usize = 256;
/// Query rows an 8-lane subgroup of attention_flash_sg.wgsl takes (its QR = 4 × 8 lanes).
const FLASH_SG_SUBGROUP_ROWS: u32 = 32;
/// Keys per tile of the flash prefill kernel; a page must be a multiple of it.
pub const FLASH_TILE: usize = 16;
/// Most split-K partitions of the decode attention.
pub const MAX_SPLITS: usize = 32;
/// Split-K partials one step holds: rows × partitions (the `part` buffer is (MAX_PART_ROWS,
/// n_heads, head_dim + 2) f32, 4.3 MB for 32 heads of 128, where one row per partition for
/// each of 256 rows would take 136 MB, over WebGPU's 128 MiB binding).
pub const MAX_PART_ROWS: usize = 256;
/// Keys per round of the decode kernel's 64 invocations (split lengths are multiples of it).
pub const DECODE_TILE: usize = 64;

/// One token row of a step, as the kernels read it (`Step.rows[t]`, shaders/prelude.wgsl).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Row {
    pub token: u32,
    pub pos: u32,  // position in its sequence
    pub slot: u32, // KV cache row it writes
    pub seq: u32,  // its sequence = its block-table row
}

/// The Step buffer (shaders/prelude.wgsl): T, the split-K plan, then the rows.
pub fn step_bytes(rows: &[Row], n_splits: usize, split_len: usize) -> Vec<u8> {
    let mut words = vec![rows.len() as u32, n_splits as u32, split_len as u32, 0];
    for r in rows {
        words.extend([r.token, r.pos, r.slot, r.seq]);
    }
    bytemuck::cast_slice(&words).to_vec()
}

/// Size of a Step buffer holding `max_rows` rows.
pub fn step_size(max_rows: usize) -> usize {
    16 + 16 * max_rows
}

/// The split-K plan for a step of `rows` decode rows whose longest has `max_len` keys:
/// (n_splits, split_len). Partitions of at least `min_keys` keys (fewer, longer partitions cost
/// less to merge), at most MAX_SPLITS and at most MAX_PART_ROWS / rows (the partials buffer holds
/// rows × n_splits of them), lengths a multiple of the decode tile. `min_keys` = usize::MAX gives
/// one pass.
pub fn split_plan(max_len: usize, min_keys: usize, rows: usize) -> (usize, usize) {
    let most = (MAX_PART_ROWS / rows.max(1)).clamp(1, MAX_SPLITS);
    let n = max_len.div_ceil(min_keys.max(1)).clamp(1, most);
    let len = max_len.div_ceil(n).div_ceil(DECODE_TILE) * DECODE_TILE;
    (max_len.div_ceil(len).max(1), len)
}

/// Per-call-site uniform: four numbers whose meaning each kernel's header gives.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Shape {
    pub a: u32,
    pub b: u32,
    pub c: u32,
    pub d: u32,
}

impl Shape {
    pub fn new(a: usize, b: usize, c: usize, d: usize) -> Self {
        Shape {
            a: a as u32,
            b: b as u32,
            c: c as u32,
            d: d as u32,
        }
    }
}

use super::sources::{for_target, full_source, Binding::*, SOURCES};
pub use super::sources::{sources, web_source};

/// A resource a kernel binds: a buffer or a weight texture's view.
#[derive(Clone, Copy)]
pub enum Res<'a> {
    Buf(&'a wgpu::Buffer),
    Tex(&'a wgpu::TextureView),
    /// The first UNIFORM_X_BYTES of a buffer, for a uniform binding (matvec's x).
    UniformX(&'a wgpu::Buffer),
}

/// The uniform window matvec reads x through: 4096 vec4 (WebGPU's default uniform binding limit).
pub const UNIFORM_X_BYTES: u64 = 65536;

/// How the matrix kernels read their weights: f16 or f32 texels or GGUF blocks (`format`, one of
/// F32, F16 and weights::QUANT_FORMATS), with subgroup broadcasts of x (matvec.wgsl,
/// matmat.wgsl) or without (the _plain twins, floats only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulKind {
    pub format: Format,
    pub subgroups: bool,
    /// GEMVs split each row across a workgroup (matvec_split.wgsl: GPUs), else a row a lane
    /// (matvec.wgsl / matvec_plain.wgsl: CPU adapters such as lavapipe).
    pub gemv_split: bool,
    /// GEMMs in 64 × 64 tiles staged through workgroup memory (matmat_tiled.wgsl: GPUs), else
    /// four rows × 8 tokens an invocation (matmat.wgsl; matmat_plain.wgsl one row: CPU adapters).
    pub gemm_tiled: bool,
}

impl MatmulKind {
    /// Float weights: f16 or f32 texels.
    pub const fn float(f16: bool, subgroups: bool) -> Self {
        let format = if f16 { Format::F16 } else { Format::F32 };
        MatmulKind {
            format,
            subgroups,
            gemv_split: false,
            gemm_tiled: false,
        }
    }

    /// The same kernels with GEMVs split across a workgroup (`split`) or a row a lane.
    pub fn gemv_split(self, split: bool) -> Self {
        MatmulKind {
            gemv_split: split,
            ..self
        }
    }

    /// The same kernels with GEMMs in workgroup-memory tiles (`tiled`) or not.
    pub fn gemm_tiled(self, tiled: bool) -> Self {
        MatmulKind {
            gemm_tiled: tiled,
            ..self
        }
    }

    /// The same kernels reading `format`.
    pub fn with(self, format: Format) -> Self {
        MatmulKind { format, ..self }
    }

    pub fn f16(self) -> bool {
        self.format == Format::F16
    }
}

/// The KV_F16 override of the kernels that read or write the KV cache (shaders/lib/kv.wgsl).
fn kv_override(f16: bool) -> (&'static str, f64) {
    ("KV_F16", f16 as u8 as f64)
}

/// The WTYPE override of the kernels that read any weight format (shaders/lib/quant.wgsl):
/// GGUF's type id.
fn wtype(format: Format) -> (&'static str, f64) {
    let id = match format {
        Format::F32 => 0,
        Format::F16 => 1,
        Format::Q4_0 => 2,
        Format::Q4_1 => 3,
        Format::Q5_0 => 6,
        Format::Q5_1 => 7,
        Format::Q8_0 => 8,
        Format::Q4_K => 12,
        Format::Q5_K => 13,
        Format::Q6_K => 14,
        f => panic!("no GPU kernel reads {f}"),
    };
    ("WTYPE", id as f64)
}

/// How a matrix kernel stores its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Store {
    /// out = W x (+ bias)
    Write,
    /// out += W x (+ bias): the residual add fused into the product
    Accumulate,
    /// W is W_gate;W_up, c rows each (Shape c): out[t, j] = silu(W_gate[j] x) * (W_up[j] x),
    /// the feed-forward block's SwiGLU fused into the product; no bias
    SwiGlu,
    /// With a `Fusion`: W is Wq;Wk;Wv (Shape c query rows, d key rows): q and k rotated (RoPE
    /// at each row's position), q to out, k and v into their cache rows (out2 = k_cache, out3 =
    /// v_cache): a step's QKV, RoPE and cache write in one dispatch
    RopeKv,
}

/// What the model's products do besides the product: the GEMVs of decode steps RMS-normalise x
/// first (the model's epsilon; GEMMs read x normalised by to_texture), and Store::RopeKv applies
/// RoPE with `head_dim`.
#[derive(Clone, Copy, Debug)]
pub struct Fusion {
    pub norm_eps: f32,
    pub head_dim: usize,
    /// the KV cache the RoPE epilogue writes holds f16 (lib/kv.wgsl's KV_F16)
    pub kv_f16: bool,
}

pub struct Kernel {
    pub name: String,
    pub pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

impl Kernel {
    fn new(gpu: &Gpu, file: &str, constants: &[(&str, f64)]) -> Result<Self> {
        let (_, src, bindings) = SOURCES.iter().find(|(n, _, _)| *n == file).expect("known kernel");
        let name = if constants.is_empty() {
            file.to_string()
        } else {
            format!("{file} {constants:?}")
        };
        let entries: Vec<wgpu::BindGroupLayoutEntry> = [Read, Uniform]
            .iter()
            .chain(bindings.iter())
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match b {
                    Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Read | Write => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: matches!(b, Read),
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Texture => wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::ReadOnly,
                        format: wgpu::TextureFormat::Rgba32Uint,
                        view_dimension: wgpu::TextureViewDimension::D2Array,
                    },
                    StorageTex => wgpu::BindingType::StorageTexture {
                        access: wgpu::StorageTextureAccess::WriteOnly,
                        format: wgpu::TextureFormat::Rgba32Uint,
                        view_dimension: wgpu::TextureViewDimension::D2Array,
                    },
                },
                count: None,
            })
            .collect();
        if let Some((pipeline, layout)) = gpu.pipelines.lock().unwrap().get(&name) {
            return Ok(Kernel {
                name,
                pipeline: pipeline.clone(),
                layout: layout.clone(),
            });
        }
        let (pipeline, layout) = gpu.scoped(&format!("compiling kernel {name}"), || {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(file),
                source: wgpu::ShaderSource::Wgsl(for_target(full_source(file, src)).into()),
            };
            let module = unsafe {
                gpu.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            };
            let layout = gpu.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(file),
                entries: &entries,
            });
            let pl = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(file),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
            let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(file),
                layout: Some(&pl),
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: true,
                },
                cache: None,
            });
            (pipeline, layout)
        })?;
        gpu.pipelines
            .lock()
            .unwrap()
            .insert(name.clone(), (pipeline.clone(), layout.clone()));
        Ok(Kernel { name, pipeline, layout })
    }

    /// A bind group: the step buffer, the shape uniform, then the storage buffers in the order of
    /// the kernel's header.
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        step: &wgpu::Buffer,
        shape: &wgpu::Buffer,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let res: Vec<Res> = buffers.iter().map(|b| Res::Buf(b)).collect();
        self.bind_res(gpu, label, step, shape, &res)
    }

    /// As `bind`, for kernels that also read a weight texture.
    pub fn bind_res(
        &self,
        gpu: &Gpu,
        label: &str,
        step: &wgpu::Buffer,
        shape: &wgpu::Buffer,
        resources: &[Res],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = [Res::Buf(step), Res::Buf(shape)]
            .iter()
            .chain(resources.iter())
            .enumerate()
            .map(|(i, r)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: match r {
                    Res::Buf(b) => b.as_entire_binding(),
                    Res::Tex(v) => wgpu::BindingResource::TextureView(v),
                    Res::UniformX(b) => wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: b,
                        offset: 0,
                        size: wgpu::BufferSize::new(UNIFORM_X_BYTES),
                    }),
                },
            })
            .collect();
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// All pipelines the forward pass uses, specialised for one model (head_dim) and one KV layout
/// (rows per page, f32 or f16 values).
pub struct Kernels {
    /// Weight dtype and matrix-kernel variant every product uses.
    pub kind: MatmulKind,
    /// The KV cache holds f16 (lib/kv.wgsl), else f32.
    pub kv_f16: bool,
    pub to_texture: Kernel,
    pub to_texture_norm: Kernel,   // to_texture.wgsl with NORM: the RMSNorm before a GEMM
    pub to_texture_gather: Kernel, // with NORM and GATHER: the final norm of the rows the LM head reads
    pub rmsnorm: Kernel,
    pub qk_norm_rope: Kernel,
    pub attention_naive: Kernel,
    pub attention_flash: Kernel,
    pub flash_rows: usize, // query rows per workgroup of attention_flash: 64, FLASH_SG_ROWS, or 2048 / head_dim (lanes)
    pub attention_decode: Kernel,
    /// attention_decode's query heads a workgroup (GROUP; `with_gqa`), and its invocations
    /// a workgroup when it is the whole-head kernel (None: the lanes kernel).
    pub decode_group: usize,
    decode_wg: Option<u32>,
    pub attention_reduce: Kernel,
    pub argmax: Kernel,
}

impl Kernels {
    /// The grid of a prefill attention kernel of `rows` query rows a workgroup over `t` rows:
    /// (ceil(t·G / rows), n_heads / G, 1). attention_flash_sg (FLASH_SG_ROWS) takes (row, head)
    /// pairs of G query heads of a KV head: G = n_heads / n_kv_heads when `t` rows alone would
    /// leave a subgroup's pairs part empty (t < FLASH_SG_SUBGROUP_ROWS), else 1; the others G = 1.
    pub fn flash_grid(rows: usize, t: u32, n_heads: u32, n_kv_heads: u32) -> [u32; 3] {
        let g = if rows == FLASH_SG_ROWS && t < FLASH_SG_SUBGROUP_ROWS {
            n_heads / n_kv_heads
        } else {
            1
        };
        [(t * g).div_ceil(rows as u32), n_heads / g, 1]
    }

    pub fn new(gpu: &Gpu, head_dim: usize, page: usize, kind: MatmulKind, kv_f16: bool) -> Result<Self> {
        // Every kernel fits the WebGPU defaults: 256 invocations and 16 KiB of workgroup memory.
        if head_dim > MAX_HEAD_DIM || !head_dim.is_multiple_of(FLASH_TILE) {
            bail!(
                "head_dim {head_dim} is not supported by the GPU attention kernels (a multiple of {FLASH_TILE}, at most {MAX_HEAD_DIM}); use --device cpu"
            );
        }
        assert!(
            page.is_multiple_of(FLASH_TILE),
            "page {page} is not a multiple of the flash tile"
        );
        let hd = ("HEAD_DIM", head_dim as f64);
        let pg = ("PAGE", page as f64);
        let kv = kv_override(kv_f16);
        if kind.subgroups && !gpu.features.contains(wgpu::Features::SUBGROUP) {
            bail!(
                "the subgroup matrix kernels need subgroups, which {} lacks",
                gpu.describe()
            );
        }
        let lanes = !gpu.is_cpu_adapter();
        let (attention_flash, flash_rows, attention_decode, decode_wg) =
            Self::attention_kernels(gpu, head_dim, page, kv_f16, kind.subgroups, lanes)?;
        // The matrix kernels and embed.wgsl are compiled per weight format when a product is
        // recorded (`matmul_kernel`, `embed_kernel`): a model needs only the formats it holds.
        Ok(Kernels {
            kind,
            kv_f16,
            to_texture: Kernel::new(gpu, "to_texture.wgsl", &[])?,
            to_texture_norm: Kernel::new(gpu, "to_texture.wgsl", &[("NORM", 1.0)])?,
            to_texture_gather: Kernel::new(gpu, "to_texture.wgsl", &[("NORM", 1.0), ("GATHER", 1.0)])?,
            rmsnorm: Kernel::new(gpu, "rmsnorm.wgsl", &[])?,
            qk_norm_rope: Kernel::new(gpu, "qk_norm_rope.wgsl", &[hd, kv])?,
            attention_naive: Kernel::new(gpu, "attention_naive.wgsl", &[hd, pg, kv])?,
            attention_flash,
            flash_rows,
            attention_decode,
            decode_group: 1,
            decode_wg,
            attention_reduce: Kernel::new(gpu, "attention_reduce.wgsl", &[hd])?,
            argmax: Kernel::new(gpu, "argmax.wgsl", &[])?,
        })
    }
}

impl Kernels {
    /// moe_route.wgsl (`f` = NORM_TOPK: renormalised or not) or moe_combine.wgsl (SHARED: with a
    /// shared expert or not) for `n` experts, top `k`.
    pub fn moe(gpu: &Gpu, file: &str, n: usize, k: usize, f: (&str, bool)) -> Result<Kernel> {
        let c = [("N_EXPERTS", n as f64), ("K", k as f64), (f.0, f.1 as u8 as f64)];
        Kernel::new(gpu, file, &c)
    }

    /// embed.wgsl reading a table in `format`.
    pub fn embed_kernel(gpu: &Gpu, format: Format) -> Result<Kernel> {
        Kernel::new(gpu, "embed.wgsl", &[wtype(format)])
    }
}

impl Kernels {
    /// The workgroups of a matrix kernel over `n` output rows and `t` tokens: matvec takes 64
    /// rows a workgroup (two an invocation; quantized 128, four an invocation), matvec_plain 64
    /// (one an invocation); matmat 256 rows a workgroup (four an invocation) and 8 tokens an
    /// invocation; matmat_plain 64 rows and 8 tokens.
    pub fn matmul_grid(kind: MatmulKind, gemm: bool, n: usize, t: usize) -> [u32; 3] {
        let quant = kind.format.is_quantized();
        match (gemm, kind.subgroups) {
            (false, _) if kind.gemv_split => [n.div_ceil(8) as u32, 1, 1],
            (true, _) if kind.gemm_tiled => [n.div_ceil(64) as u32, t.div_ceil(64) as u32, 1],
            (false, true) if quant => [n.div_ceil(128) as u32, 1, 1],
            (false, _) => [n.div_ceil(64) as u32, 1, 1],
            (true, true) => [n.div_ceil(256) as u32, t.div_ceil(8) as u32, 1],
            (true, false) => [n.div_ceil(64) as u32, t.div_ceil(8) as u32, 1],
        }
    }

    /// The matrix kernel of `self.kind` without a fusion: GEMM over all rows (`gemm`) or GEMV
    /// of row 0, with a bias, storing as `store` says (compiled once, then from the cache).
    pub fn matmul(&self, gpu: &Gpu, gemm: bool, bias: bool, store: Store) -> Result<Kernel> {
        assert!(!(bias && store == Store::SwiGlu), "the SwiGLU product takes no bias");
        assert!(store != Store::RopeKv, "RoPE products come from matmul_kernel");
        Self::matmul_kernel(gpu, self.kind, gemm, bias, store, None, 0, None)
    }

    /// A matrix kernel of `kind` (see `matmul`); a `fusion` compiles the GEMV that RMS-normalises
    /// x first (NORM), and for Store::RopeKv the GEMV or GEMM that applies RoPE (ROPE): the
    /// model uses them for the products after a norm (QKV, gate and up). With `lora` adapters
    /// it adds each row's LoRA update (lib/epilogue.wgsl's LORA_ADAPTERS). With `moe` = (k,
    /// x per token) it is an MoE expert product (lib/epilogue.wgsl's MOE_K, MOE_X_PER_TOKEN).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_kernel(
        gpu: &Gpu,
        kind: MatmulKind,
        gemm: bool,
        bias: bool,
        store: Store,
        fusion: Option<Fusion>,
        lora: usize,
        moe: Option<(usize, bool)>,
    ) -> Result<Kernel> {
        assert!(
            store != Store::RopeKv || fusion.is_some(),
            "RoPE needs the head_dim of a fusion"
        );
        let file = match (gemm, kind.subgroups) {
            (false, _) if kind.gemv_split => "matvec_split.wgsl",
            (true, _) if kind.gemm_tiled => "matmat_tiled.wgsl",
            (false, true) => "matvec.wgsl",
            (false, false) => "matvec_plain.wgsl",
            (true, true) => "matmat.wgsl",
            (true, false) => "matmat_plain.wgsl",
        };
        let flag = |on: bool| on as u8 as f64;
        // the split GEMV and the tiled GEMM read every format without subgroups
        let any_format = (!gemm && kind.gemv_split) || (gemm && kind.gemm_tiled);
        if !kind.subgroups && kind.format.is_quantized() && !any_format {
            bail!(
                "{} weights need the subgroup matrix kernels; use --dtype f16",
                kind.format
            );
        }
        let mut c = vec![
            if kind.subgroups || any_format {
                wtype(kind.format)
            } else {
                ("F16", flag(kind.f16()))
            },
            ("HAS_BIAS", flag(bias)),
            ("ACCUMULATE", flag(store == Store::Accumulate)),
            ("SWIGLU", flag(store == Store::SwiGlu)),
        ];
        if lora > 0 {
            c.push(("LORA_ADAPTERS", lora as f64));
        }
        if let Some((k, per_token)) = moe {
            c.extend([("MOE_K", k as f64), ("MOE_X_PER_TOKEN", flag(per_token))]);
        }
        if let Some(f) = fusion {
            if !gemm {
                c.extend([("NORM", 1.0), ("NORM_EPS", f.norm_eps as f64)]);
            }
            if store == Store::RopeKv {
                c.extend([("ROPE", 1.0), ("HEAD_DIM", f.head_dim as f64), kv_override(f.kv_f16)]);
            }
        }
        Kernel::new(gpu, file, &c)
    }
}

/// What a dispatch's grid depends on: the step's row count T and its split-K partitions.
#[derive(Clone, Copy)]
pub struct Dims {
    pub t: u32,
    pub n_splits: u32,
}

pub type Grid = Box<dyn Fn(Dims) -> [u32; 3]>;

/// One recorded dispatch.
pub struct Op {
    pub name: String, // the kernel (file and overrides), for profiles
    pub pipeline: wgpu::ComputePipeline,
    pub bind: wgpu::BindGroup,
    pub grid: Grid,
}

impl Op {
    /// `kern` bound to the step buffer, a shape uniform and `resources` (in its header's order).
    pub fn new(
        gpu: &Gpu,
        kern: &Kernel,
        step: &wgpu::Buffer,
        shape: &wgpu::Buffer,
        resources: &[Res],
        grid: Grid,
    ) -> Op {
        Op {
            name: kern.name.clone(),
            pipeline: kern.pipeline.clone(),
            bind: kern.bind_res(gpu, &kern.name, step, shape, resources),
            grid,
        }
    }
}

/// Record `ops` into one compute pass.
pub fn record(encoder: &mut wgpu::CommandEncoder, ops: &[&Op], dims: Dims) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some("forward"),
        timestamp_writes: None,
    });
    for op in ops {
        let [gx, gy, gz] = (op.grid)(dims);
        if gx * gy * gz == 0 {
            continue;
        }
        pass.set_pipeline(&op.pipeline);
        pass.set_bind_group(0, &op.bind, &[]);
        pass.dispatch_workgroups(gx, gy, gz);
    }
}

/// Record `ops` into a fresh encoder, submit, wait: milliseconds from submit to done (benches and
/// profiles; the forward pass reads its result through `Gpu::submit_and_read`).
pub fn run_timed(gpu: &Gpu, ops: &[&Op], dims: Dims, what: &str) -> Result<f64> {
    let mut encoder = gpu.device.create_command_encoder(&Default::default());
    record(&mut encoder, ops, dims);
    gpu.submit_and_wait(encoder, what)
}
