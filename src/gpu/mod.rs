//! The GPU path: the same forward pass as `cpu/`, on WGSL compute shaders through wgpu.
pub mod blocks;
pub mod buffers;
pub mod context;
pub mod forward;
pub mod kernels;
pub mod launch;
pub mod lora;
pub mod model;
pub mod moe;
pub mod params;
pub mod sources;
pub mod weights;

pub use context::{list_adapters, Gpu, GpuRequest};
pub use model::{GpuModel, MAX_AHEAD};
