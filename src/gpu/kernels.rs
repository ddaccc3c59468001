//! One named pipeline per kernel, compiled once at load, and the two uniforms every kernel reads:
//! the per-step `Step` (token count, first position, token ids) and a per-call-site `Shape`.
//! Each kernel's source, bindings and dispatch geometry are documented in its .wgsl header.

use anyhow::{bail, Result};

use super::context::Gpu;

/// Most tokens one step can carry (the Step uniform holds their ids).
pub const MAX_STEP_TOKENS: usize = 256;
/// Largest head_dim the attention kernel's tile buffer holds.
pub const MAX_HEAD_DIM: usize = 256;

/// Per-step uniform, as the kernels declare it:
/// struct Step { n_tokens: u32, pos0: u32, pad0: u32, pad1: u32, tokens: array<vec4<u32>, 64> }
pub fn step_bytes(n_tokens: usize, pos0: usize, tokens: &[u32]) -> Vec<u8> {
    assert!(tokens.len() <= MAX_STEP_TOKENS);
    let mut words = vec![0u32; 4 + MAX_STEP_TOKENS];
    words[0] = n_tokens as u32;
    words[1] = pos0 as u32;
    words[4..4 + tokens.len()].copy_from_slice(tokens);
    bytemuck::cast_slice(&words).to_vec()
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

#[derive(Clone, Copy)]
enum Binding {
    Uniform,
    Read,
    Write,
}
use Binding::*;

/// (file, WGSL source, bindings after the two uniforms)
const SOURCES: [(&str, &str, &[Binding]); 10] = [
    ("embed.wgsl", include_str!("../../shaders/embed.wgsl"), &[Read, Write]),
    (
        "rmsnorm.wgsl",
        include_str!("../../shaders/rmsnorm.wgsl"),
        &[Read, Read, Write],
    ),
    (
        "gemv.wgsl",
        include_str!("../../shaders/gemv.wgsl"),
        &[Read, Read, Read, Write],
    ),
    (
        "gemm.wgsl",
        include_str!("../../shaders/gemm.wgsl"),
        &[Read, Read, Read, Write],
    ),
    (
        "rope.wgsl",
        include_str!("../../shaders/rope.wgsl"),
        &[Read, Read, Write],
    ),
    (
        "kv_write.wgsl",
        include_str!("../../shaders/kv_write.wgsl"),
        &[Read, Read, Write, Write],
    ),
    (
        "attention.wgsl",
        include_str!("../../shaders/attention.wgsl"),
        &[Read, Read, Read, Write],
    ),
    ("swiglu.wgsl", include_str!("../../shaders/swiglu.wgsl"), &[Read, Write]),
    ("add.wgsl", include_str!("../../shaders/add.wgsl"), &[Read, Write]),
    ("argmax.wgsl", include_str!("../../shaders/argmax.wgsl"), &[Read, Write]),
];

/// Every kernel's file name and source, for validation without a device.
pub fn sources() -> impl Iterator<Item = (&'static str, &'static str)> {
    SOURCES.iter().map(|(n, s, _)| (*n, *s))
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
        let entries: Vec<wgpu::BindGroupLayoutEntry> = [Uniform, Uniform]
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
                },
                count: None,
            })
            .collect();
        let (pipeline, layout) = gpu.scoped(&format!("compiling kernel {name}"), || {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(file),
                source: wgpu::ShaderSource::Wgsl((*src).into()),
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
        Ok(Kernel { name, pipeline, layout })
    }

    /// A bind group: the step uniform, the shape uniform, then the storage buffers in the order
    /// of the kernel's header.
    pub fn bind(
        &self,
        gpu: &Gpu,
        label: &str,
        step: &wgpu::Buffer,
        shape: &wgpu::Buffer,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = [step, shape]
            .into_iter()
            .chain(buffers.iter().copied())
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &self.layout,
            entries: &entries,
        })
    }
}

/// All pipelines the forward pass uses, specialised for one model.
pub struct Kernels {
    pub embed: Kernel,
    pub rmsnorm: Kernel,
    pub gemv: Kernel,
    pub gemv_bias: Kernel,
    pub gemm: Kernel,
    pub gemm_bias: Kernel,
    pub rope: Kernel,
    pub kv_write: Kernel,
    pub attention: Kernel,
    pub swiglu: Kernel,
    pub add: Kernel,
    pub argmax: Kernel,
}

impl Kernels {
    pub fn new(gpu: &Gpu, head_dim: usize) -> Result<Self> {
        if head_dim > MAX_HEAD_DIM || head_dim as u32 > gpu.limits.max_compute_invocations_per_workgroup {
            bail!(
                "head_dim {head_dim} is not supported by the attention kernel (at most {MAX_HEAD_DIM}, and at most {} invocations per workgroup on {})",
                gpu.limits.max_compute_invocations_per_workgroup,
                gpu.describe()
            );
        }
        let bias = [("HAS_BIAS", 1.0)];
        Ok(Kernels {
            embed: Kernel::new(gpu, "embed.wgsl", &[])?,
            rmsnorm: Kernel::new(gpu, "rmsnorm.wgsl", &[])?,
            gemv: Kernel::new(gpu, "gemv.wgsl", &[])?,
            gemv_bias: Kernel::new(gpu, "gemv.wgsl", &bias)?,
            gemm: Kernel::new(gpu, "gemm.wgsl", &[])?,
            gemm_bias: Kernel::new(gpu, "gemm.wgsl", &bias)?,
            rope: Kernel::new(gpu, "rope.wgsl", &[])?,
            kv_write: Kernel::new(gpu, "kv_write.wgsl", &[])?,
            attention: Kernel::new(gpu, "attention.wgsl", &[("HEAD_DIM", head_dim as f64)])?,
            swiglu: Kernel::new(gpu, "swiglu.wgsl", &[])?,
            add: Kernel::new(gpu, "add.wgsl", &[])?,
            argmax: Kernel::new(gpu, "argmax.wgsl", &[])?,
        })
    }
}
