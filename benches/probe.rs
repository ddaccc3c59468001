//! `cargo bench --bench probe`: the experiments behind the matrix kernels' design, on the first
//! adapter. Each `benches/probes/*.wgsl` computes out = W x for a 16384 × 576 W (one token, or 64
//! tokens for the gemm_ probes) with x and W bound the way its first line says:
//!   // probe: x=storage|uniform|texture w=storage32|tex32|tex16|tex16a|tex16i tokens=T[,T2..] rows=R [nocheck] -- what
//! storage32: W as array<vec4f>; tex32: an Rgba32Uint texture of f32 bit patterns (d/4 texels a
//! row); tex16: the same with 8 f16 per texel (d/8 texels a row); tex16a: tex16 viewed as a
//! one-layer 2D array; tex16i: rows interleaved texel by texel in groups of 8 (as WeightTex);
//! texture x: (d/4, T) texels. The textures can be bound sampled (texture_2d) or as read-only
//! storage textures, as the probe declares. Every probe but `nocheck` ones is compared with the
//! CPU product, then timed (best of 25). `PROBES=gemv_f,gemv_m` runs only the probes whose file
//! names contain one of the words.
//! benches/RESULTS.md explains what the numbers say about lavapipe.

use std::time::Instant;

use wgpu::util::DeviceExt;

const N: usize = 16384;
const D: usize = 576;

fn texture(gpu: &tinfer::gpu::Gpu, words: &[u32], width: usize, height: usize) -> wgpu::TextureView {
    let t = gpu.device.create_texture_with_data(
        &gpu.queue,
        &wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d {
                width: width as u32,
                height: height as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::STORAGE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        bytemuck::cast_slice(words),
    );
    t.create_view(&Default::default())
}

/// The same texels as a one-layer 2D array (what the model's kernels bind).
fn array_view(v: &wgpu::TextureView) -> wgpu::TextureView {
    v.texture().create_view(&wgpu::TextureViewDescriptor {
        dimension: Some(wgpu::TextureViewDimension::D2Array),
        ..Default::default()
    })
}

fn main() -> anyhow::Result<()> {
    let gpu = match tinfer::gpu::Gpu::new(&tinfer::gpu::GpuRequest {
        adapter: std::env::var("TINFER_TEST_ADAPTER").ok(),
        allow_cpu_adapter: true,
        ..Default::default()
    }) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIPPED: no GPU adapter ({e:#})");
            return Ok(());
        }
    };
    println!("adapter: {} | W: {N} x {D}", gpu.describe());
    let dev = &gpu.device;
    let mut rng = tinfer::sampler::Rng::new(3);
    let w: Vec<f32> = (0..N * D).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let w16: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
    let x: Vec<f32> = (0..64 * D).map(|_| rng.next_f64() as f32 - 0.5).collect();
    let buf = |bytes: &[u8], usage| {
        dev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytes,
            usage,
        })
    };
    let w_storage = buf(bytemuck::cast_slice(&w), wgpu::BufferUsages::STORAGE);
    let w_tex32 = texture(&gpu, bytemuck::cast_slice(&w), D / 4, N);
    let w_tex16 = texture(&gpu, bytemuck::cast_slice(&w16), D / 8, N);
    let w_tex16a = array_view(&w_tex16);
    // tex16i: rows interleaved in groups of 8: texel k of row o at (k * 8 + o % 8, o / 8), so the
    // 8 lanes of a subgroup read 128 contiguous bytes per step.
    let texels = D / 8;
    let mut w16i = vec![half::f16::ZERO; N * D];
    for o in 0..N {
        for k in 0..texels {
            let dst = (o / 8) * texels * 64 + (k * 8 + o % 8) * 8;
            w16i[dst..dst + 8].copy_from_slice(&w16[o * D + k * 8..o * D + k * 8 + 8]);
        }
    }
    let w_tex16i = array_view(&texture(&gpu, bytemuck::cast_slice(&w16i), texels * 8, N / 8));
    let x_storage = buf(bytemuck::cast_slice(&x), wgpu::BufferUsages::STORAGE);
    // the first 8 tokens' rows (the few-row probes read 8; the GEMV probes row 0)
    let x_uniform = buf(bytemuck::cast_slice(&x[..8 * D]), wgpu::BufferUsages::UNIFORM);
    let x_tex = texture(&gpu, bytemuck::cast_slice(&x), D / 4, 64);
    let out = dev.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (64 * N * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/probes");
    let mut files: Vec<_> = std::fs::read_dir(dir)?.map(|e| e.unwrap().path()).collect();
    files.sort();
    // PROBES=a,b runs only the probes whose names contain one of the words.
    if let Ok(only) = std::env::var("PROBES") {
        files.retain(|p| only.split(',').any(|w| p.to_string_lossy().contains(w)));
    }
    println!(
        "{:<34} {:>9} {:>12} {:>10}  what",
        "probe", "ms", "GB/s of W", "max err"
    );
    for path in files {
        let src = std::fs::read_to_string(&path)?;
        let head = src.lines().next().unwrap_or_default();
        let field = |k: &str| {
            head.split_whitespace()
                .find_map(|t| t.strip_prefix(&format!("{k}=")))
                .unwrap_or_default()
                .to_string()
        };
        // tokens=T, or a list (tokens=64,8): a row for each
        let token_counts = field("tokens");
        for tokens in token_counts.split(',') {
            let tokens: usize = tokens.parse()?;
            let rows: usize = field("rows").parse()?;
            let (xk, wk) = (field("x"), field("w"));
            let pipe = gpu.scoped(&format!("compiling {}", path.display()), || {
                let module = dev.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: None,
                    source: wgpu::ShaderSource::Wgsl(src.as_str().into()),
                });
                dev.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: None,
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                })
            })?;
            let x_res = match xk.as_str() {
                "storage" => x_storage.as_entire_binding(),
                "uniform" => x_uniform.as_entire_binding(),
                _ => wgpu::BindingResource::TextureView(&x_tex),
            };
            let w_res = match wk.as_str() {
                "storage32" => w_storage.as_entire_binding(),
                "tex32" => wgpu::BindingResource::TextureView(&w_tex32),
                "tex16a" => wgpu::BindingResource::TextureView(&w_tex16a),
                "tex16i" => wgpu::BindingResource::TextureView(&w_tex16i),
                _ => wgpu::BindingResource::TextureView(&w_tex16),
            };
            let bind = dev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipe.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: x_res,
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: w_res,
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: out.as_entire_binding(),
                    },
                ],
            });
            let run = || -> anyhow::Result<f64> {
                let mut enc = dev.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipe);
                    pass.set_bind_group(0, &bind, &[]);
                    pass.dispatch_workgroups((N / rows) as u32, tokens.div_ceil(8) as u32, 1);
                }
                let t = Instant::now();
                let idx = gpu.queue.submit(Some(enc.finish()));
                dev.poll(wgpu::PollType::Wait {
                    submission_index: Some(idx),
                    timeout: None,
                })
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                gpu.check("probe")?;
                Ok(t.elapsed().as_secs_f64() * 1e3)
            };
            run()?;
            let err = if head.contains("nocheck") {
                f64::NAN
            } else {
                let got: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.read(&out, (tokens * N * 4) as u64)?);
                let seen: Vec<f32> = if wk.starts_with("tex16") {
                    w16.iter().map(|v| v.to_f32()).collect()
                } else {
                    w.clone()
                };
                let mut want = vec![0.0; tokens * N];
                for t in 0..tokens {
                    tinfer::cpu::ops::matmul_f32(&mut want[t * N..(t + 1) * N], &x[t * D..(t + 1) * D], &seen, None, D);
                }
                let e = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs() as f64)
                    .fold(0.0, f64::max);
                assert!(e < 1e-3, "{}: max error {e}", path.display());
                e
            };
            let ms = (0..25)
                .map(|_| run())
                .collect::<anyhow::Result<Vec<f64>>>()?
                .into_iter()
                .fold(f64::MAX, f64::min);
            let bytes = (N * D * if wk.starts_with("tex16") { 2 } else { 4 }) as f64;
            let what = head.split("-- ").nth(1).unwrap_or_default();
            let mut name = path.file_stem().unwrap().to_string_lossy().to_string();
            if token_counts.contains(',') {
                name = format!("{name}@{tokens}");
            }
            println!("{name:<34} {ms:>9.2} {:>12.2} {err:>10.1e}  {what}", bytes / ms / 1e6);
        }
    }
    Ok(())
}
