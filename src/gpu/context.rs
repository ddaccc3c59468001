//! The GPU context: adapter choice, device with the adapter's limits, buffer helpers, and error
//! capture. wgpu's default is to panic on an uncaptured validation error; tinfer collects them
//! instead and turns them into `Result` errors at the next step, and a lost device is an error
//! too, never a hang.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use wgpu::util::DeviceExt;

/// A failure of the GPU itself: no adapter, a device that cannot be opened or was lost, a
/// kernel that does not compile, a step that fails or hangs. The CLI exits with code 3 on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeviceError(pub String);

macro_rules! device_bail {
    ($($t:tt)*) => { return Err(DeviceError(format!($($t)*)).into()) };
}

/// How long one step may take on the device before it counts as hung.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Gpu {
    pub adapter: wgpu::Adapter,
    pub info: wgpu::AdapterInfo,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Largest buffer one storage binding may hold (the smaller of the two limits).
    pub max_binding: u64,
    errors: Arc<Mutex<Vec<String>>>,
    /// The fewest lanes a subgroup has here (0 without subgroups): the adapter's reported
    /// minimum, or where that is under 8, the fewest shaders/subgroup_probe.wgsl saw.
    pub subgroup_lanes: u32,
    /// Bytes of device memory this Gpu's buffers and textures hold (staging buffers, which live
    /// in host memory on discrete GPUs, not counted).
    allocated: std::sync::atomic::AtomicU64,
    /// Compiled pipelines by kernel name (file and overrides): each compiled once per device.
    pub pipelines: Mutex<std::collections::HashMap<String, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>>,
}

/// What to ask for: an adapter whose name contains `adapter`, and whether a CPU adapter
/// (lavapipe, llvmpipe) will do.
#[derive(Clone, Debug, Default)]
pub struct GpuRequest {
    pub adapter: Option<String>,
    pub allow_cpu_adapter: bool,
    /// Ask for WebGPU's default limits only (`--limits webgpu`), not the adapter's.
    pub webgpu_limits: bool,
}

fn instance() -> wgpu::Instance {
    // Vulkan, Metal and DX12 only: wgpu's GL backend also finds llvmpipe, without f16.
    let desc = wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
    };
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see: (name, device type, backend).
pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

const NO_ADAPTER_HELP: &str =
    "no GPU adapter found: install a Vulkan driver (for a CPU-only machine, Mesa's lavapipe: \
     `apt-get install mesa-vulkan-drivers libvulkan1`), or use --device cpu";

impl Gpu {
    pub fn new(req: &GpuRequest) -> Result<Self> {
        let instance = instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
        if adapters.is_empty() {
            device_bail!("{NO_ADAPTER_HELP}");
        }
        let names: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
        let fits = |a: &wgpu::Adapter| {
            let info = a.get_info();
            let name_ok = req
                .adapter
                .as_ref()
                .is_none_or(|n| info.name.to_lowercase().contains(&n.to_lowercase()));
            let type_ok = req.allow_cpu_adapter || req.adapter.is_some() || info.device_type != wgpu::DeviceType::Cpu;
            name_ok && type_ok
        };
        // Prefer discrete, then integrated, then anything else that fits.
        let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        let Some(adapter) = adapters.into_iter().filter(|a| fits(a)).min_by_key(rank) else {
            match &req.adapter {
                Some(n) => device_bail!("no adapter's name contains {n:?}; adapters found: {}", names.join("; ")),
                None => device_bail!(
                    "no hardware GPU adapter found (only: {}); pass --adapter NAME to use one of these, or --device cpu",
                    names.join("; ")
                ),
            }
        };
        let info = adapter.get_info();
        let limits = if req.webgpu_limits {
            wgpu::Limits::default()
        } else {
            adapter.limits()
        };
        let features = adapter.features() & wgpu::Features::SUBGROUP; // f16 needs no feature: see WeightPlan::new
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tinfer"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| DeviceError(format!("cannot open a device on {}: {e}", describe(&info))))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| sink.lock().unwrap().push(e.to_string())));
        let lost = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            lost.lock()
                .unwrap()
                .push(format!("the GPU device was lost ({reason:?}): {msg}"));
        });
        let max_binding = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        let mut gpu = Gpu {
            subgroup_lanes: 0,
            adapter,
            info,
            device,
            queue,
            limits,
            features,
            max_binding,
            errors,
            allocated: Default::default(),
            pipelines: Default::default(),
        };
        // The subgroup width: the reported minimum where it is 8 or more (every subgroup kernel's
        // need); else, for a range reaching under 8 (Metal's 4..64), the widths one dispatch
        // really runs at.
        if gpu.features.contains(wgpu::Features::SUBGROUP) {
            gpu.subgroup_lanes = match gpu.info.subgroup_min_size {
                n if n >= 8 => n,
                _ => gpu.probe_subgroup_lanes().unwrap_or(0),
            };
        }
        Ok(gpu)
    }

    /// The fewest lanes any subgroup of 16 workgroups of 64 ran with (shaders/subgroup_probe.wgsl),
    /// or None if the probe could not run.
    fn probe_subgroup_lanes(&self) -> Option<u32> {
        let seen = self
            .scoped("the subgroup probe", || {
                let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some("subgroup_probe.wgsl"),
                    source: wgpu::ShaderSource::Wgsl(
                        super::sources::for_target(super::sources::SUBGROUP_PROBE.into()).into(),
                    ),
                });
                let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some("subgroup_probe"),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                });
                let seen = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("subgroup_probe.seen"),
                    contents: bytemuck::cast_slice(&[u32::MAX, 0]),
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                });
                let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("subgroup_probe"),
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &[wgpu::BindGroupEntry {
                        binding: 0,
                        resource: seen.as_entire_binding(),
                    }],
                });
                let mut encoder = self.device.create_command_encoder(&Default::default());
                {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups(16, 1, 1);
                }
                self.queue.submit([encoder.finish()]);
                seen
            })
            .ok()?;
        let words: Vec<u32> = bytemuck::pod_collect_to_vec(&self.read(&seen, 8).ok()?);
        (words[0] <= words[1]).then_some(words[0])
    }

    /// Whether the device has subgroup operations with at least `lanes` lanes per subgroup
    /// (the reported minimum, or what shaders/subgroup_probe.wgsl saw where that is under 8).
    pub fn has_subgroups(&self, lanes: u32) -> bool {
        self.subgroup_lanes >= lanes.max(1) // 0 without the SUBGROUP feature
    }

    pub fn is_cpu_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    pub fn describe(&self) -> String {
        describe(&self.info)
    }

    /// Errors wgpu reported since the last check, as one error.
    pub fn check(&self, what: &str) -> Result<()> {
        let errs: Vec<String> = std::mem::take(&mut *self.errors.lock().unwrap());
        if errs.is_empty() {
            return Ok(());
        }
        device_bail!("GPU error during {what}: {}", errs.join("; "))
    }

    /// Run `f` inside a validation error scope; an error names `what`.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        if let Some(e) = pollster::block_on(scope.pop()) {
            device_bail!("{what}: {e}");
        }
        Ok(out)
    }

    /// Bytes of device memory allocated so far through `upload`, `zeros`, `uniform` and
    /// `texture` (GpuModel splits it into weights, KV cache and scratch).
    pub fn allocated(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self, bytes: u64) {
        self.allocated.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// An RGBA32Uint texture (16 bytes a texel), counted in `allocated`.
    pub fn texture(&self, desc: &wgpu::TextureDescriptor) -> wgpu::Texture {
        let s = desc.size;
        self.count(u64::from(s.width) * u64::from(s.height) * u64::from(s.depth_or_array_layers) * 16);
        self.device.create_texture(desc)
    }

    /// A storage buffer holding `data`, checked against the binding limit.
    pub fn upload(&self, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
        let bytes = std::mem::size_of_val(data) as u64;
        if bytes > self.max_binding {
            bail!(
                "{label} is {} MiB, over this device's storage binding limit of {} MiB",
                bytes >> 20,
                self.max_binding >> 20
            );
        }
        let contents: &[u8] = if data.is_empty() {
            &[0u8; 16]
        } else {
            bytemuck::cast_slice(data)
        };
        self.count(contents.len() as u64);
        Ok(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        }))
    }

    /// A zeroed storage buffer of `n` f32 (or u32) elements.
    pub fn zeros(&self, label: &str, n: usize) -> Result<wgpu::Buffer> {
        let bytes = (n.max(4) * 4) as u64;
        if bytes > self.max_binding {
            bail!(
                "{label} needs {} MiB, over this device's storage binding limit of {} MiB",
                bytes >> 20,
                self.max_binding >> 20
            );
        }
        self.count(bytes);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    pub fn uniform(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.count(bytes.len() as u64);
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        })
    }

    pub fn staging(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(16),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Copy `bytes` of `buf` back to the host (tests and tools; the forward pass reads its
    /// result through its own staging buffer).
    pub fn read(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        let staging = self.staging("read", bytes);
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("read") });
        encoder.copy_buffer_to_buffer(buf, 0, &staging, 0, bytes);
        self.submit_and_read(encoder, &staging, bytes, "a readback")
    }

    /// Submit `encoder` and wait for it (no timeout: benches time long passes); milliseconds
    /// from submit to done.
    pub fn submit_and_wait(&self, encoder: wgpu::CommandEncoder, what: &str) -> Result<f64> {
        let start = std::time::Instant::now();
        let index = self.queue.submit(Some(encoder.finish()));
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| anyhow!("{what} did not finish: {e}"))?;
        self.check(what)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }

    /// Submit `encoder`, wait for it (with a timeout), and read `bytes` from `staging`.
    pub fn submit_and_read(
        &self,
        encoder: wgpu::CommandEncoder,
        staging: &wgpu::Buffer,
        bytes: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let index = self.queue.submit(Some(encoder.finish()));
        let slice = staging.slice(..bytes);
        let result = Arc::new(Mutex::new(None));
        let r = result.clone();
        slice.map_async(wgpu::MapMode::Read, move |res| *r.lock().unwrap() = Some(res));
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(STEP_TIMEOUT),
            })
            .map_err(|e| DeviceError(format!("GPU {what} did not finish: {e}")))?;
        self.check(what)?;
        match result.lock().unwrap().take() {
            Some(Ok(())) => {}
            Some(Err(e)) => device_bail!("reading back the result of {what} failed: {e}"),
            None => device_bail!("reading back the result of {what} did not complete"),
        }
        let out = slice
            .get_mapped_range()
            .map_err(|e| anyhow!("mapping {what}: {e:?}"))?
            .to_vec();
        staging.unmap();
        Ok(out)
    }
}

pub fn describe(info: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend)
}
