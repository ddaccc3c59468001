//! `tinfer bench kernels` (and `cargo bench --bench kernels`): every matrix-kernel variant at a
//! model's shapes, each validated once against its CPU twin (a kernel that does not validate is
//! an error, never timed), then timed; GEMVs report GB/s of
//! weights read against the machine's measured memory bandwidth, GEMMs GFLOP/s. The engine's
//! defaults are the winners here (subgroup kernels where the adapter has them, f16 weights); benches/RESULTS.md records the runs.

use std::time::Instant;

use anyhow::{bail, Result};
use rayon::prelude::*;
use serde::Serialize;

use crate::config::Config;
use crate::cpu::ops;
use crate::gpu::kernels::{run_timed, Dims, Op};
use crate::gpu::kernels::{step_bytes, Kernels, MatmulKind, Row};
use crate::gpu::launch::{Epilogue, Input, Launch};
use crate::gpu::weights::{ActTex, WeightTex};
use crate::gpu::Gpu;
use crate::sampler::Rng;
use crate::weights::Format;

#[derive(Clone, Debug, Serialize)]
pub struct KernelRecord {
    pub kernel: String,  // matvec, matmat, rmsnorm
    pub variant: String, // f16/f32, subgroups/plain
    pub matrix: String,  // which weight of the model
    pub n: usize,        // output rows
    pub d: usize,        // input width
    pub tokens: usize,
    pub ms: f64,           // per call, median
    pub gbps: f64,         // weight (or activation) bytes read per second
    pub gflops: f64,       // 2 n d T per second
    pub of_bandwidth: f64, // gbps over the measured host bandwidth
    pub max_abs_err: f64,  // against the CPU twin
}

/// The table's header and one row (the CLI and `cargo bench --bench kernels` print the same).
pub fn header() -> String {
    format!(
        "{:<18} {:<14} {:<12} {:>6} {:>6} {:>4} {:>9} {:>8} {:>8} {:>6} {:>9}",
        "kernel", "variant", "matrix", "n", "d", "T", "ms", "GB/s", "GFLOP/s", "%bw", "max err"
    )
}

pub fn row(r: &KernelRecord) -> String {
    format!(
        "{:<18} {:<14} {:<12} {:>6} {:>6} {:>4} {:>9.3} {:>8.2} {:>8.2} {:>6.1} {:>9.2e}",
        r.kernel,
        r.variant,
        r.matrix,
        r.n,
        r.d,
        r.tokens,
        r.ms,
        r.gbps,
        r.gflops,
        r.of_bandwidth * 100.0,
        r.max_abs_err
    )
}

/// Host memory bandwidth in GB/s: all threads copying 256 MiB (bytes read + written), best of 5.
pub fn host_bandwidth() -> f64 {
    let n = 64 << 20; // f32s
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let chunk = n / rayon::current_num_threads().max(1);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    (2 * n * 4) as f64 / best / 1e9
}

/// Device memory bandwidth in GB/s: buffer-to-buffer copies of 256 MiB (bytes read + written),
/// 8 in a submit, best of 5 submits. What a GEMV's weight stream is measured against on a GPU
/// (on a CPU adapter the host's bandwidth is the ceiling: `host_bandwidth`).
pub fn device_bandwidth(gpu: &Gpu) -> Result<f64> {
    let bytes = (256u64 << 20).min(gpu.limits.max_buffer_size);
    let buf = |label| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    let (src, dst) = (buf("bandwidth.src"), buf("bandwidth.dst"));
    let mut best_ms = f64::MAX;
    for i in 0..6 {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for _ in 0..8 {
            enc.copy_buffer_to_buffer(&src, 0, &dst, 0, bytes);
        }
        let ms = gpu.submit_and_wait(enc, "the bandwidth copy")?;
        if i > 0 {
            best_ms = best_ms.min(ms); // the first is a warm-up
        }
    }
    Ok((2 * 8 * bytes) as f64 / best_ms / 1e6)
}

fn random(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect()
}

/// Median ms of one call of `ops`, each call recorded `inner` times in one pass (small kernels
/// are shorter than a submit), over `repeats` submits after a warm-up.
fn time_ops(gpu: &Gpu, ops: &[Op], dims: Dims, inner: usize, repeats: usize) -> Result<f64> {
    let mut times = vec![];
    for i in 0..=repeats {
        let all: Vec<&Op> = (0..inner).flat_map(|_| ops.iter()).collect();
        let ms = run_timed(gpu, &all, dims, "a kernel bench call")?;
        if i > 0 {
            times.push(ms / inner as f64);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// How far a kernel's output may be from its CPU twin's, |got - want| <= tol × (1 + |want|),
/// before `bench kernels` refuses to time it. The twin multiplies the weights the kernel sees
/// (rounded to f16 for the f16 variants), so what is left is f32 accumulation in another order
/// against the CPU's: around 1e-5 relative at these sizes. The kernel tests hold the same kernels to
/// the same bound (KERNEL_VS_CPU: 1e-4 absolute + 1e-4 relative); a wrong row, texel or unpacking
/// errs by order 1.
pub const VALIDATE_TOL: f64 = 1e-4;

/// The largest |got - want|, or an error naming the kernel, the worst element outside
/// `tol` × (1 + |want|) and the largest error (NaN counts as infinitely wrong).
pub fn validate(what: &str, got: &[f32], want: &[f32], tol: f64) -> Result<f64> {
    if got.len() != want.len() {
        bail!("{what}: {} outputs, the CPU twin has {}", got.len(), want.len());
    }
    let (mut max, mut worst) = (0.0f64, None::<(usize, f64)>);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w as f64).abs();
        let err = if err.is_nan() { f64::INFINITY } else { err };
        max = max.max(err);
        let excess = err / (1.0 + (w as f64).abs());
        if excess > tol && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        bail!(
            "{what} does not validate against the CPU, so it is not timed: [{i}] got {} want {}; max error {max:.3e} (tolerance {tol:.0e} × (1 + |want|))",
            got[i],
            want[i]
        );
    }
    Ok(max)
}

/// The matrix kernels at `cfg`'s shapes (GEMV, and GEMM over `tokens` rows), every variant the
/// adapter runs, plus RMSNorm; `bandwidth` (GB/s) scales `of_bandwidth`. Each kernel first runs
/// once against its CPU twin: one outside `tol` (`VALIDATE_TOL` unless a caller asks otherwise)
/// ends the bench with an error.
#[allow(clippy::too_many_arguments)]
pub fn bench_kernels(
    gpu: &Gpu,
    cfg: &Config,
    tokens: usize,
    repeats: usize,
    only: &[String], // keep the "variant matrix" names containing one of these (all when empty)
    bandwidth: f64,
    tol: f64,
    mut each: impl FnMut(&KernelRecord),
) -> Result<Vec<KernelRecord>> {
    let (dim, hidden, q_dim, kv_dim) = (cfg.dim, cfg.hidden_dim, cfg.q_dim(), cfg.kv_dim());
    let shapes = [
        ("wq/wo", q_dim, dim),
        ("wk/wv", kv_dim, dim),
        ("w_gate/w_up", hidden, dim),
        ("w_down", dim, hidden),
        ("lm_head", cfg.vocab_size, dim),
    ];
    let mut kinds = vec![];
    for f16 in [true, false] {
        for subgroups in [true, false] {
            if !subgroups || gpu.has_subgroups(8) {
                kinds.push(MatmulKind::float(f16, subgroups));
            }
        }
    }
    // GGUF blocks (the formats tinfer quantizes itself; a K-quant's rows that are not whole
    // super-blocks fall back as llama-quantize does, Q4_K -> Q5_0)
    if gpu.has_subgroups(8) {
        for format in [Format::Q8_0, Format::Q5_0, Format::Q4_K] {
            kinds.push(MatmulKind::float(false, true).with(format));
        }
    }
    // The GPU-shaped GEMV (each row split across a workgroup) and GEMM (tiles in workgroup
    // memory), in f16 and the block formats.
    let split: Vec<MatmulKind> = kinds
        .iter()
        .filter(|k| k.format != Format::F32 && (k.subgroups || !gpu.has_subgroups(8)))
        .map(|k| k.gemv_split(true).gemm_tiled(true))
        .collect();
    kinds.extend(split);
    let rows: Vec<Row> = (0..tokens)
        .map(|i| Row {
            token: 0,
            pos: i as u32,
            slot: i as u32,
            seq: 0,
        })
        .collect();
    let step_of = |t: usize| -> Result<wgpu::Buffer> {
        let bytes = step_bytes(&rows[..t], 1, 0);
        gpu.upload("step", &bytemuck::pod_collect_to_vec::<u8, f32>(&bytes))
    };
    let (step1, step_t) = (step_of(1)?, step_of(tokens)?);
    let mut out = vec![];
    let mut rng = Rng::new(7);
    let mut push = |r: KernelRecord, out: &mut Vec<KernelRecord>| {
        each(&r);
        out.push(r);
    };
    for kind in kinds {
        let k = Kernels::new(gpu, cfg.head_dim, 16, kind, false)?;
        let (l1, lt) = (
            Launch::new(gpu, &k, &step1, None)?,
            Launch::new(gpu, &k, &step_t, None)?,
        );
        let quantized = kind.format.is_quantized();
        let variant = format!(
            "{} {}",
            if quantized {
                kind.format.to_string()
            } else {
                kind.format.to_string().to_lowercase()
            },
            if kind.gemv_split {
                "split"
            } else if kind.subgroups {
                "subgroups"
            } else {
                "plain"
            }
        );
        for &(matrix, n, d) in &shapes {
            if !only.is_empty() && !only.iter().any(|w| format!("{variant} {matrix}").contains(w.as_str())) {
                continue;
            }
            let w = random(&mut rng, n * d);
            let x = random(&mut rng, tokens * d);
            let fallback = crate::quant::fallback_for(kind.format, d);
            if quantized && fallback.is_none_or(|f| crate::quant::quantize(f, &[0.0; 256]).is_none()) {
                continue; // rows of d values hold no blocks tinfer can write
            }
            let (seen, tex) = if quantized {
                let format = fallback.expect("checked above");
                let blocks = crate::quant::quantize(format, &w).expect("a quantizer for the format");
                let t = crate::weights::Tensor::owned(format, vec![n, d], blocks).map_err(anyhow::Error::msg)?;
                let max_dim = gpu.limits.max_texture_dimension_2d as usize;
                (
                    t.to_f32(),
                    WeightTex::upload_blocks(gpu, matrix, &[&t], max_dim, !gpu.is_cpu_adapter())?,
                )
            } else {
                let seen: Vec<f32> = if kind.f16() {
                    w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
                } else {
                    w.clone()
                };
                let t = crate::weights::Tensor::from_f32(vec![n, d], w.clone());
                (seen, WeightTex::upload(gpu, matrix, &[&t], kind.f16())?)
            };
            let mut xpad = x.clone();
            xpad.resize(xpad.len().max(16384), 0.0);
            let xb = gpu.upload("x", &xpad)?;
            let outb = gpu.zeros("out", tokens * n)?;
            let weight_bytes = tex.bytes as f64;
            // GEMV of row 0
            let op = l1.matmul(Input::Gemv { x: &xb, norm: None }, &tex, None, Epilogue::Write(&outb))?;
            let dims1 = Dims { t: 1, n_splits: 1 };
            run_timed(gpu, &[&op], dims1, "a kernel bench check")?;
            let got: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.read(&outb, (n * 4) as u64)?);
            let mut want = vec![0.0; n];
            ops::matmul_f32(&mut want, &x[..d], &seen, None, d);
            let err = validate(&format!("matvec {variant} {matrix} ({n}x{d})"), &got, &want, tol)?;
            let ms = time_ops(gpu, std::slice::from_ref(&op), dims1, 4, repeats)?;
            let gbps = weight_bytes / ms / 1e6;
            push(
                KernelRecord {
                    kernel: "matvec".into(),
                    variant: variant.clone(),
                    matrix: matrix.into(),
                    n,
                    d,
                    tokens: 1,
                    ms,
                    gbps,
                    gflops: (2 * n * d) as f64 / ms / 1e6,
                    of_bandwidth: gbps / bandwidth,
                    max_abs_err: err,
                },
                &mut out,
            );
            // GEMM over `tokens` rows, x through its texture
            let xt = ActTex::new(gpu, "xt", d, tokens)?;
            let (copy, xin) = lt.to_texture(&xb, None, &xt);
            let op = lt.matmul(xin, &tex, None, Epilogue::Write(&outb))?;
            let dims = Dims {
                t: tokens as u32,
                n_splits: 1,
            };
            run_timed(gpu, &[&copy, &op], dims, "a kernel bench check")?;
            let got: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.read(&outb, (tokens * n * 4) as u64)?);
            let mut want = vec![0.0; tokens * n];
            ops::matmul_f32(&mut want, &x, &seen, None, d);
            let variant = if kind.gemm_tiled {
                variant.replace("split", "tiled")
            } else {
                variant.clone()
            };
            let what = format!("to_texture+matmat {variant} {matrix} ({n}x{d}, {tokens} tokens)");
            let err = validate(&what, &got, &want, tol)?;
            let ms = time_ops(gpu, &[copy, op], dims, 1, repeats)?;
            let gbps = weight_bytes / ms / 1e6;
            push(
                KernelRecord {
                    kernel: "to_texture+matmat".into(),
                    variant: variant.clone(),
                    matrix: matrix.into(),
                    n,
                    d,
                    tokens,
                    ms,
                    gbps,
                    gflops: (2 * n * d * tokens) as f64 / ms / 1e6,
                    of_bandwidth: gbps / bandwidth,
                    max_abs_err: err,
                },
                &mut out,
            );
        }
    }
    // RMSNorm over one row and over `tokens` rows
    let k = Kernels::new(gpu, cfg.head_dim, 16, MatmulKind::float(false, false), false)?;
    for (t, step) in [(1, &step1), (tokens, &step_t)] {
        let x = random(&mut rng, t * dim);
        let g = random(&mut rng, dim);
        let (xb, gb, ob) = (gpu.upload("x", &x)?, gpu.upload("g", &g)?, gpu.zeros("out", t * dim)?);
        let op = Launch::new(gpu, &k, step, None)?.rmsnorm(&xb, &gb, &ob, dim, cfg.norm_eps as f32);
        let dims = Dims {
            t: t as u32,
            n_splits: 1,
        };
        run_timed(gpu, &[&op], dims, "a kernel bench check")?;
        let got: Vec<f32> = bytemuck::pod_collect_to_vec(&gpu.read(&ob, (t * dim * 4) as u64)?);
        let mut want = vec![0.0; t * dim];
        ops::rmsnorm(&mut want, &x, &g, cfg.norm_eps);
        let err = validate(&format!("rmsnorm f32 attn_norm ({dim}, {t} tokens)"), &got, &want, tol)?;
        let ms = time_ops(gpu, std::slice::from_ref(&op), dims, 4, repeats)?;
        let gbps = (2 * t * dim * 4) as f64 / ms / 1e6;
        push(
            KernelRecord {
                kernel: "rmsnorm".into(),
                variant: "f32".into(),
                matrix: "attn_norm".into(),
                n: dim,
                d: dim,
                tokens: t,
                ms,
                gbps,
                gflops: 0.0,
                of_bandwidth: gbps / bandwidth,
                max_abs_err: err,
            },
            &mut out,
        );
    }
    Ok(out)
}
