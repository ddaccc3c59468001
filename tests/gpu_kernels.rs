//! Rung 2: each WGSL kernel against its CPU twin on random inputs with outliers, at awkward
//! sizes (1, 3, 17, 1757, sizes that are not multiples of the workgroup). Skipped without a GPU
//! adapter; CI sets TINFER_REQUIRE_GPU=1 and runs them on lavapipe.

mod common;
use common::*;

use tinfer::config::{Config, RopeTable};
use tinfer::cpu::ops;
use tinfer::gpu::kernels::{
    split_plan, step_bytes, Fusion, Kernel, Kernels, MatmulKind, Res, Row, Shape, Store, DECODE_TILE, FLASH_SG_ROWS,
    MAX_PART_ROWS, MAX_SPLITS,
};
use tinfer::gpu::weights::{ActTex, WeightTex, QUANT_FORMATS, ROW_GROUP};
use tinfer::gpu::Gpu;
use tinfer::kv_cache::KvPages;
use tinfer::sampler::Rng;
use tinfer::weights::{Format, Tensor};

/// Random blocks of the quantized `format` for `n` values: random quants, with scales (and mins)
/// that keep the values within a few units, so that sums of products test the arithmetic.
fn random_blocks(rng: &mut Rng, format: Format, n: usize) -> Vec<u8> {
    let (be, bb) = format.block();
    let mut out = vec![];
    for _ in 0..n / be {
        let mut b: Vec<u8> = (0..bb).map(|_| rng.next_u64() as u8).collect();
        let mut put = |at: usize, v: f64| b[at..at + 2].copy_from_slice(&half::f16::from_f64(v).to_le_bytes());
        let scale = (rng.next_f64() + 0.05) * if be == 32 { 0.1 } else { 0.002 };
        match format {
            Format::Q6_K => put(208, scale),
            Format::Q4_K | Format::Q5_K => {
                put(0, scale);
                put(2, scale * 3.0);
            }
            Format::Q4_1 | Format::Q5_1 => {
                put(0, scale);
                put(2, -scale * 4.0);
            }
            _ => put(0, scale * if format == Format::Q8_0 { 0.1 } else { 1.0 }),
        }
        out.extend(b);
    }
    out
}

/// A matrix of rows of `d` values in `format` from `blocks`, and its values as the CPU decodes them.
fn quant_mat(format: Format, blocks: Vec<u8>, d: usize) -> (Tensor, Vec<f32>) {
    let rows = blocks.len() / format.bytes_for(d).unwrap();
    let t = Tensor::owned(format, vec![rows, d], blocks).unwrap();
    let seen = t.to_f32();
    (t, seen)
}

/// An F32 matrix of rows of `d` values.
fn mat(w: &[f32], d: usize) -> Tensor {
    Tensor::from_f32(vec![w.len() / d, d], w.to_vec())
}

/// The RMSNorm epsilon of the kernel tests.
const EPS: f32 = 1e-5;
/// A value written to an f16 KV cache vs the CPU's f32: the kernel's f32 error (KERNEL_VS_CPU)
/// plus one f16 rounding, at most 2^-11 = 4.9e-4 relative.
const KV_F16_VS_CPU: Tol = Tol { abs: 1e-4, rel: 6e-4 };

/// The matrix-kernel variant the tests that do not exercise it compile.
const F32_PLAIN: MatmulKind = MatmulKind::float(false, false);

struct H {
    gpu: Gpu,
    k: Kernels,
}

/// Whether the adapter runs the subgroup kernels (subgroups of at least 8 lanes). Without them a
/// test compares only the plain kernels with the CPU: it says so on stderr, naming the adapter,
/// and fails under TINFER_REQUIRE_GPU=1 (CI's lavapipe has subgroups).
fn subgroups(gpu: &Gpu, test: &str) -> bool {
    // a child of kernels_at_every_lavapipe_subgroup_width: the width it asked Mesa for
    if let Some(lanes) = std::env::var("TINFER_EXPECT_LANES")
        .ok()
        .and_then(|l| l.parse::<u32>().ok())
    {
        let got = (gpu.info.subgroup_min_size, gpu.info.subgroup_max_size);
        assert_eq!(
            got,
            (lanes, lanes),
            "LP_NATIVE_VECTOR_WIDTH did not give subgroups of {lanes} lanes"
        );
        // under 8 the reported minimum is not trusted: shaders/subgroup_probe.wgsl measured it
        assert_eq!(gpu.subgroup_lanes, lanes, "the subgroup probe or the reported width");
        if lanes < 8 {
            eprintln!("{test}: subgroups of {lanes} lanes: the plain kernels only");
            return false;
        }
    }
    if gpu.has_subgroups(8) {
        return true;
    }
    let msg = format!(
        "{test}: adapter {} has no subgroups of >= 8 lanes, so the subgroup kernels were not compared with the CPU",
        gpu.describe()
    );
    assert!(!require_gpu(), "TINFER_REQUIRE_GPU=1 but {msg}");
    eprintln!("SKIPPED (in part): {msg}");
    false
}

fn harness(head_dim: usize) -> Option<H> {
    let req = gpu_request()?;
    let gpu = Gpu::new(&req).unwrap();
    let k = Kernels::new(&gpu, head_dim, 16, F32_PLAIN, false).unwrap();
    Some(H { gpu, k })
}

impl H {
    fn up(&self, v: &[f32]) -> wgpu::Buffer {
        self.gpu.upload("test", v).unwrap()
    }
    fn zeros(&self, n: usize) -> wgpu::Buffer {
        self.gpu.zeros("test", n).unwrap()
    }
    fn read(&self, b: &wgpu::Buffer, n: usize) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.gpu.read(b, (n * 4) as u64).unwrap())
    }
    /// One dispatch of `kern` with a step of `t` tokens at `pos0` of one contiguous sequence.
    fn run(
        &self,
        kern: &Kernel,
        (t, pos0, tokens): (usize, usize, &[u32]),
        shape: Shape,
        bufs: &[&wgpu::Buffer],
        grid: [u32; 3],
    ) {
        let rows: Vec<Row> = (0..t)
            .map(|i| Row {
                token: tokens.get(i).copied().unwrap_or(0),
                pos: (pos0 + i) as u32,
                slot: (pos0 + i) as u32,
                seq: 0,
            })
            .collect();
        self.run_rows(kern, &rows, (1, 0), shape, bufs, grid)
    }
    /// A prefill attention kernel taking `per_wg` query rows a workgroup over `rows`, bound to
    /// `kv` = (q, k_cache, v_cache, tables), against `want` (T, n_heads * head_dim).
    #[allow(clippy::too_many_arguments)]
    fn check_prefill(
        &self,
        kern: &Kernel,
        per_wg: usize,
        rows: &[Row],
        shape: Shape,
        kv: [&wgpu::Buffer; 4],
        want: &[f32],
        what: &str,
    ) {
        let out = self.zeros(want.len());
        let [q, k, v, tables] = kv;
        let grid = Kernels::flash_grid(per_wg, rows.len() as u32, shape.a, shape.b);
        self.run_rows(kern, rows, (1, 0), shape, &[q, k, v, tables, &out], grid);
        assert_close(what, &self.read(&out, want.len()), want, ATTENTION_VS_CPU);
    }

    /// A decode attention kernel over `rows` (keys up to `len`) in the split-K plan of
    /// `min_keys`, then attention_reduce.wgsl (`reduce`) where there are several partitions,
    /// against `want` (T, n_heads * head_dim). The partials buffer is exactly what the plan
    /// needs: a stride past it would read or write outside.
    #[allow(clippy::too_many_arguments)]
    fn check_decode(
        &self,
        decode: &Kernel,
        group: usize,
        reduce: &Kernel,
        rows: &[Row],
        shape: Shape,
        kv: [&wgpu::Buffer; 4],
        len: usize,
        min_keys: usize,
        want: &[f32],
        what: &str,
    ) {
        let (t, n_heads) = (rows.len(), shape.a as usize);
        let hd = want.len() / t / n_heads;
        let (n_splits, split_len) = split_plan(len, min_keys, t);
        let part = self.zeros(t * n_heads * n_splits * (hd + 2));
        let out = self.zeros(want.len());
        let [q, k, v, tables] = kv;
        let grid = [(n_heads / group) as u32, t as u32, n_splits as u32];
        self.run_rows(
            decode,
            rows,
            (n_splits, split_len),
            shape,
            &[q, k, v, tables, &part, &out],
            grid,
        );
        if n_splits > 1 {
            let reduce_shape = Shape::new(n_heads, 0, 0, 0);
            self.run_rows(
                reduce,
                rows,
                (n_splits, split_len),
                reduce_shape,
                &[&part, &out],
                [n_heads as u32, t as u32, 1],
            );
        }
        let what = format!("decode ({n_splits} splits of {split_len}, {}) {what}", decode.name);
        assert_close(&what, &self.read(&out, want.len()), want, ATTENTION_VS_CPU);
    }

    /// One dispatch of `kern` over explicit step rows and a split-K plan (n_splits, split_len).
    fn run_rows(
        &self,
        kern: &Kernel,
        rows: &[Row],
        split: (usize, usize),
        shape: Shape,
        bufs: &[&wgpu::Buffer],
        grid: [u32; 3],
    ) {
        let res: Vec<Res> = bufs.iter().map(|b| Res::Buf(b)).collect();
        self.run_res(kern, rows, split, shape, &res, grid)
    }
    /// As `run_rows`, binding textures and uniform windows too.
    fn run_res(
        &self,
        kern: &Kernel,
        rows: &[Row],
        (n_splits, split_len): (usize, usize),
        shape: Shape,
        res: &[Res],
        grid: [u32; 3],
    ) {
        let bytes = step_bytes(rows, n_splits, split_len);
        let step = self.up(&bytemuck::pod_collect_to_vec::<u8, f32>(&bytes));
        let sh = self.gpu.uniform("shape", bytemuck::bytes_of(&shape));
        let bind = kern.bind_res(&self.gpu, &kern.name, &step, &sh, res);
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&kern.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        }
        self.gpu.queue.submit(Some(enc.finish()));
        self.gpu.check(&kern.name).unwrap();
    }
}

/// Uniform(-1, 1) values with a few outliers of magnitude `outlier`.
fn random(rng: &mut Rng, n: usize, outlier: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
    for i in (0..n).step_by(97) {
        v[i] = if i % 2 == 0 { outlier } else { -outlier };
    }
    v
}

fn up(n: usize, d: usize) -> u32 {
    n.div_ceil(d) as u32
}

fn rows(t: usize) -> Vec<Row> {
    (0..t)
        .map(|i| Row {
            token: 0,
            pos: i as u32,
            slot: i as u32,
            seq: 0,
        })
        .collect()
}

/// Weights as the f16 kernels see them: each value rounded to the nearest f16.
/// CPU twin of lib/kv.wgsl's f16 cache: rows of heads of `hd` values become words holding
/// value i (low half) and value i + hd / 2 (high half) of a head, as f32 bit patterns for upload.
fn pack_kv_f16(rows: &[f32], hd: usize) -> Vec<f32> {
    rows.chunks(hd)
        .flat_map(|head| {
            let (lo, hi) = head.split_at(hd / 2);
            lo.iter().zip(hi).map(|(&a, &b)| {
                let word =
                    u32::from(half::f16::from_f32(a).to_bits()) | (u32::from(half::f16::from_f32(b).to_bits()) << 16);
                f32::from_bits(word)
            })
        })
        .collect()
}

/// The inverse of `pack_kv_f16`: words read back from an f16 cache to rows of values.
fn unpack_kv_f16(words: &[f32], hd: usize) -> Vec<f32> {
    let value = |b: u32| half::f16::from_bits(b as u16).to_f32();
    words
        .chunks(hd / 2)
        .flat_map(|head| {
            let w: Vec<u32> = head.iter().map(|x| x.to_bits()).collect();
            let lo: Vec<f32> = w.iter().map(|&x| value(x & 0xffff)).collect();
            lo.into_iter()
                .chain(w.iter().map(|&x| value(x >> 16)))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn round_f16(w: &[f32]) -> Vec<f32> {
    w.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

/// matvec / matmat in every variant (f32 and f16 texels, with and without subgroups, bias,
/// accumulate, SwiGLU; matmat reading x through to_texture, plain and RMS-normalising;
/// matvec normalising x itself) against cpu::ops::matmul (after cpu::ops::rmsnorm, before
/// cpu::ops::swiglu), at sizes whose rows are not a whole number of texel chunks, with more
/// output rows than one texture layer holds, and tokens not a multiple of 8; weight textures
/// with row groups of 1 to 8 rows (fewer than 8 where a row is too wide for the texture) and
/// layers of a few texture rows.
#[test]
fn matmul_matvec_and_matmat_match_cpu() {
    let Some(h) = harness(64) else { return };
    let mut kinds = vec![];
    let sg = subgroups(&h.gpu, "matmul_matvec_and_matmat_match_cpu");
    for f16 in [false, true] {
        kinds.push(MatmulKind::float(f16, false));
        if sg {
            kinds.push(MatmulKind::float(f16, true));
        }
    }
    if sg {
        kinds.extend(QUANT_FORMATS.map(|f| MatmulKind::float(false, true).with(f)));
    }
    // the GPU-shaped GEMV (each row split across a workgroup: matvec_split.wgsl) and GEMM (tiles
    // in workgroup memory: matmat_tiled.wgsl) beside each float format's and block format's own
    let split: Vec<MatmulKind> = kinds
        .iter()
        .filter(|k| !k.subgroups || k.format.is_quantized())
        .map(|k| k.gemv_split(true).gemm_tiled(true))
        .collect();
    kinds.extend(split);
    let max_dim = h.gpu.limits.max_texture_dimension_2d as usize;
    let layer_rows = max_dim * ROW_GROUP + 3; // past one layer of the default layout
    let mut rng = Rng::new(1);
    for kind in kinds {
        let k = Kernels::new(&h.gpu, 64, 16, kind, false).unwrap();
        let fusion = Some(Fusion {
            norm_eps: EPS,
            head_dim: 64,
            kv_f16: false,
        });
        let norm_swiglu = Kernels::matmul_kernel(&h.gpu, kind, false, false, Store::SwiGlu, fusion, 0, None).unwrap();
        let no_norm = h.zeros(16384); // matvec's norm window when it does not normalise
        let no_rope = h.zeros(4); // matvec's cos and sin tables without RoPE
                                  // (d, n, T, rows a group, texture rows a layer)
        let quant = kind.format.is_quantized();
        let k_quant = kind.format.block().0 == 256;
        // quantized: rows of 3, 9 and 18 blocks of 32 (partial tail texels), or 1, 3, 6 super-blocks;
        // layers of 1 texture row (8 rows each), of 2 and 4 (a matrix past 256 layers of 1)
        let quant_sizes = [
            (if k_quant { 256 } else { 96 }, 13, 11, ROW_GROUP, max_dim),
            (if k_quant { 768 } else { 288 }, 37, 3, ROW_GROUP, 2),
            (if k_quant { 1536 } else { 576 }, 130, 67, ROW_GROUP, 7),
            (if k_quant { 256 } else { 64 }, 2100, 2, ROW_GROUP, max_dim),
            (if k_quant { 512 } else { 32 }, 4500, 9, ROW_GROUP, 4),
        ];
        let float_sizes = [
            (8, 1, 1, ROW_GROUP, max_dim),
            (16, 3, 3, 1, max_dim),
            (64, 17, 17, 3, 2),
            (1760, 1757, 3, ROW_GROUP, 50),
            (576, 130, 70, ROW_GROUP, max_dim),
            (1536, 576, 1, 5, 7),
            (8, layer_rows, 2, ROW_GROUP, max_dim),
            (16320, 5, 2, ROW_GROUP, max_dim), // f32: 4080 texels a row, so groups of 4
        ];
        let sizes = if quant { &quant_sizes[..] } else { &float_sizes[..] };
        for (i, &(d, n, t, group, height)) in sizes.iter().enumerate() {
            let what = format!("{kind:?} d={d} n={n} T={t} group={group} height={height}");
            let w = random(&mut rng, n * d, 3.0);
            let blocks = if quant {
                random_blocks(&mut rng, kind.format, n * d)
            } else {
                vec![]
            };
            // the first `rows` rows of the weights on the device
            let upload = |rows: usize| {
                if quant {
                    let (t, _) = quant_mat(
                        kind.format,
                        blocks[..kind.format.bytes_for(rows * d).unwrap()].to_vec(),
                        d,
                    );
                    // layers of equal height (GPUs) on every other size, else powers of two
                    WeightTex::upload_blocks(&h.gpu, "w", &[&t], height, i % 2 == 0).unwrap()
                } else {
                    WeightTex::upload_as(&h.gpu, "w", &[&mat(&w[..rows * d], d)], kind.f16(), group, height).unwrap()
                }
            };
            let mut x = random(&mut rng, t * d, 5.0);
            let bias = random(&mut rng, n + 5, 1.0);
            let tex = upload(n);
            let w_seen = match kind.format {
                Format::F32 => w.clone(),
                Format::F16 => round_f16(&w),
                f => quant_mat(f, blocks.clone(), d).1,
            };
            let (accumulate, with_bias) = (i % 2 == 0, i % 3 != 1);
            // GEMM: all rows, at column offset 5 of rows of stride n + 5, onto `init` when accumulating
            let init = random(&mut rng, t * (n + 5), 2.0);
            let mut want = vec![0.0; t * n];
            ops::matmul_f32(&mut want, &x, &w_seen, with_bias.then(|| &bias[5..]), d);
            let out = h.up(&init);
            let xb = h.up(&x);
            let bb = h.up(&bias);
            let xt = ActTex::new(&h.gpu, "xt", d, t).unwrap();
            let dummy = h.zeros(4);
            h.run_res(
                &k.to_texture,
                &rows(t),
                (1, 0),
                Shape::new(d, 0, 0, 0),
                &[Res::Buf(&xb), Res::Buf(&dummy), Res::Tex(&xt.view)],
                [up(d / 4, 64), t as u32, 1],
            );
            let store = if accumulate { Store::Accumulate } else { Store::Write };
            let (o2, o3) = (h.zeros(4), h.zeros(4));
            h.run_res(
                &k.matmul(&h.gpu, true, with_bias, store).unwrap(),
                &rows(t),
                (1, 0),
                Shape::new(d, n, 5, n + 5),
                &[
                    Res::Tex(&xt.view),
                    Res::Tex(&tex.view),
                    Res::Buf(&bb),
                    Res::Buf(&out),
                    Res::Buf(&o2),
                    Res::Buf(&o3),
                    Res::Buf(&no_rope),
                    Res::Buf(&no_rope),
                    Res::Buf(&no_rope), // aux (LoRA's delta, MoE's routing), lora_factors: neither
                    Res::Buf(&no_norm),
                ],
                Kernels::matmul_grid(kind, true, n, t),
            );
            let got = h.read(&out, t * (n + 5));
            let got: Vec<f32> = got.chunks(n + 5).flat_map(|r| r[5..].to_vec()).collect();
            if accumulate {
                for (r, w) in want.iter_mut().enumerate() {
                    *w += init[(r / n) * (n + 5) + 5 + r % n];
                }
            }
            assert_close(&format!("matmat {what}"), &got, &want, KERNEL_VS_CPU);
            // GEMV: row 0 through the uniform window (at least 64 KiB), at offset 5
            x.resize(x.len().max(16384), 0.0);
            let xb = h.up(&x);
            let mut want = vec![0.0; n];
            ops::matmul_f32(&mut want, &x[..d], &w_seen, with_bias.then(|| &bias[5..]), d);
            let out = h.up(&init[..n + 5]);
            h.run_res(
                &k.matmul(&h.gpu, false, with_bias, store).unwrap(),
                &rows(t),
                (1, 0),
                Shape::new(d, n, 5, n),
                &[
                    Res::UniformX(&xb),
                    Res::Tex(&tex.view),
                    Res::Buf(&bb),
                    Res::Buf(&out),
                    Res::Buf(&o2),
                    Res::Buf(&o3),
                    Res::Buf(&no_rope),
                    Res::Buf(&no_rope),
                    Res::Buf(&no_rope), // aux (LoRA's delta, MoE's routing), lora_factors: neither
                    Res::Buf(&no_norm),
                    Res::UniformX(&no_norm),
                ],
                Kernels::matmul_grid(kind, false, n, 1),
            );
            let got = h.read(&out, n + 5)[5..].to_vec();
            if accumulate {
                for (r, w) in want.iter_mut().enumerate() {
                    *w += init[5 + r];
                }
            }
            assert_close(&format!("matvec {what}"), &got, &want, KERNEL_VS_CPU);
            if n >= 2 {
                // x RMS-normalised (by to_texture's NORM and matvec's)
                let mut gamma = random(&mut rng, d, 1.0); // no outliers: 16320-term sums stay in KERNEL_VS_CPU
                gamma.resize(16384, 0.0);
                let gb = h.up(&gamma);
                let mut xn = vec![0.0; t * d];
                ops::rmsnorm(&mut xn, &x[..t * d], &gamma[..d], EPS as f64);

                // SwiGLU of a stacked gate;up, c rows each (the first 2c rows of w): GEMM of x,
                // GEMM of x RMS-normalised by to_texture, GEMV of x, GEMV normalising x itself
                let c = n / 2;
                let gate_up = upload(2 * c);
                let swiglu = |xs: &[f32]| {
                    let tt = xs.len() / d;
                    let (mut g, mut u) = (vec![0.0; tt * c], vec![0.0; tt * c]);
                    ops::matmul_f32(&mut g, xs, &w_seen[..c * d], None, d);
                    ops::matmul_f32(&mut u, xs, &w_seen[c * d..2 * c * d], None, d);
                    ops::swiglu(&mut g, &u);
                    g
                };
                let xtn = ActTex::new(&h.gpu, "xtn", d, t).unwrap();
                h.run_res(
                    &k.to_texture_norm,
                    &rows(t),
                    (1, 0),
                    Shape::new(d, EPS.to_bits() as usize, 0, 0),
                    &[Res::Buf(&xb), Res::Buf(&gb), Res::Tex(&xtn.view)],
                    [up(t, 64), 1, 1],
                );
                for (how, xs) in [("gemm", &xt), ("gemm norm", &xtn), ("gemv", &xt), ("gemv norm", &xt)] {
                    let (gemm, norm) = (how.starts_with("gemm"), how.ends_with("norm"));
                    let tt = if gemm { t } else { 1 };
                    let want = swiglu(if norm { &xn[..tt * d] } else { &x[..tt * d] });
                    let out = h.zeros(tt * c);
                    let (o2, o3) = (h.zeros(4), h.zeros(4));
                    let mut res = vec![
                        if gemm { Res::Tex(&xs.view) } else { Res::UniformX(&xb) },
                        Res::Tex(&gate_up.view),
                        Res::Buf(&bb),
                        Res::Buf(&out),
                        Res::Buf(&o2),
                        Res::Buf(&o3),
                    ];
                    res.extend([
                        Res::Buf(&no_rope),
                        Res::Buf(&no_rope),
                        Res::Buf(&no_rope),
                        Res::Buf(&no_norm),
                    ]); // cos, sin, LoRA's
                    if !gemm {
                        res.push(Res::UniformX(if norm { &gb } else { &no_norm }));
                    }
                    let plain = k.matmul(&h.gpu, gemm, false, Store::SwiGlu).unwrap();
                    let kern = if !gemm && norm { &norm_swiglu } else { &plain };
                    h.run_res(
                        kern,
                        &rows(tt),
                        (1, 0),
                        Shape::new(d, 2 * c, c, 0),
                        &res,
                        Kernels::matmul_grid(kind, gemm, 2 * c, tt),
                    );
                    let tol = if d > 4096 {
                        SWIGLU_LONG_ROWS_VS_CPU
                    } else {
                        SWIGLU_VS_CPU
                    };
                    assert_close(&format!("swiglu {how} {what}"), &h.read(&out, tt * c), &want, tol);
                }
            }
        }
    }
}

/// The fused QKV products (ROPE: the stacked Wq;Wk;Wv product with its bias, RoPE of q and k at
/// each token's position, k and v written to its cache row), after an RMSNorm (NORM in the GEMV
/// of a decode step, to_texture's NORM before the GEMM of a prefill step), against
/// cpu::ops::rmsnorm, matmul and rope: every matvec and matmat variant, heads of 16, 32 and 64,
/// 1 or T tokens (T not a multiple of 8) at scattered positions and cache slots, the cache rows
/// no token writes checked untouched.
#[test]
fn fused_qkv_rope_matches_cpu() {
    let Some(h) = harness(64) else { return };
    let no_factors = h.zeros(4096); // LoRA's factor table, unread
    let mut rng = Rng::new(5);
    let sg = subgroups(&h.gpu, "fused_qkv_rope_matches_cpu");
    for f16 in [false, true] {
        for (subgroups, split) in [(false, false), (true, false), (false, true)] {
            if subgroups && !sg {
                continue;
            }
            let kind = MatmulKind::float(f16, subgroups).gemv_split(split).gemm_tiled(split);
            let k = Kernels::new(&h.gpu, 64, 16, kind, false).unwrap();
            // (d, n_heads, n_kv_heads, head_dim, tokens, first position, bias)
            for &(d, nh, nkv, hd, t, pos0, with_bias) in &[
                (64, 3, 1, 16, 11, 7, true),
                (576, 9, 3, 64, 3, 100, false),
                (136, 2, 2, 32, 9, 0, true),
            ] {
                let (q_dim, kv_dim) = (nh * hd, nkv * hd);
                let n = q_dim + 2 * kv_dim;
                let w = random(&mut rng, n * d, 3.0);
                let w_seen = if f16 { round_f16(&w) } else { w.clone() };
                let mut x = random(&mut rng, t * d, 5.0);
                let mut gamma = random(&mut rng, d, 1.0);
                let bias = random(&mut rng, n, 1.0);
                let table = RopeTable::new(&config(nh, nkv, hd, 128));
                // token i at position pos0 + i, in cache slot 3i + 1 (slots 0, 2, 3, ... unwritten)
                let rows: Vec<Row> = (0..t)
                    .map(|i| Row {
                        token: 0,
                        pos: (pos0 + i) as u32,
                        slot: (3 * i + 1) as u32,
                        seq: 0,
                    })
                    .collect();
                let cache_rows = 3 * t + 2;
                // CPU: y = W · rmsnorm(x) (+ bias); q, k = rope(q), rope(k); k, v into the cache
                let mut xn = vec![0.0; t * d];
                ops::rmsnorm(&mut xn, &x, &gamma, EPS as f64);
                let mut y = vec![0.0; t * n];
                ops::matmul_f32(&mut y, &xn, &w_seen, with_bias.then_some(&bias[..]), d);
                let (mut want_q, mut want_k, mut want_v) =
                    (vec![], vec![0.0; cache_rows * kv_dim], vec![0.0; cache_rows * kv_dim]);
                for (i, r) in rows.iter().enumerate() {
                    let yi = &mut y[i * n..(i + 1) * n];
                    ops::rope(&mut yi[..q_dim], r.pos as usize, hd, &table);
                    ops::rope(&mut yi[q_dim..q_dim + kv_dim], r.pos as usize, hd, &table);
                    want_q.extend_from_slice(&yi[..q_dim]);
                    let at = r.slot as usize * kv_dim;
                    want_k[at..at + kv_dim].copy_from_slice(&yi[q_dim..q_dim + kv_dim]);
                    want_v[at..at + kv_dim].copy_from_slice(&yi[q_dim + kv_dim..]);
                }
                let xb = h.up(&x);
                x.resize(x.len().max(16384), 0.0);
                gamma.resize(16384, 0.0);
                let (xu, gb) = (h.up(&x), h.up(&gamma));
                let tex = WeightTex::upload(&h.gpu, "w", &[&mat(&w, d)], f16).unwrap();
                let (cos, sin, bb) = (h.up(&table.cos), h.up(&table.sin), h.up(&bias));
                // the cache written in f32, and in f16 pairs (lib/kv.wgsl)
                for kv_f16 in [false, true] {
                    let fusion = Some(Fusion {
                        norm_eps: EPS,
                        head_dim: hd,
                        kv_f16,
                    });
                    for gemm in [false, true] {
                        let tt = if gemm { t } else { 1 };
                        let what = format!(
                            "{} {kind:?} d={d} heads={nh}/{nkv}x{hd} T={tt} pos0={pos0} bias={with_bias} kv_f16={kv_f16}",
                            if gemm { "matmat" } else { "matvec" }
                        );
                        let kern =
                            Kernels::matmul_kernel(&h.gpu, kind, gemm, with_bias, Store::RopeKv, fusion, 0, None)
                                .unwrap();
                        let xt = ActTex::new(&h.gpu, "xt", d, t).unwrap();
                        h.run_res(
                            &k.to_texture_norm,
                            &rows,
                            (1, 0),
                            Shape::new(d, EPS.to_bits() as usize, 0, 0),
                            &[Res::Buf(&xb), Res::Buf(&gb), Res::Tex(&xt.view)],
                            [up(t, 64), 1, 1],
                        );
                        let (qb, kc, vc) = (
                            h.zeros(tt * q_dim),
                            h.zeros(cache_rows * kv_dim),
                            h.zeros(cache_rows * kv_dim),
                        );
                        let mut res = vec![
                            if gemm { Res::Tex(&xt.view) } else { Res::UniformX(&xu) },
                            Res::Tex(&tex.view),
                            Res::Buf(&bb),
                            Res::Buf(&qb),
                            Res::Buf(&kc),
                            Res::Buf(&vc),
                        ];
                        res.extend([Res::Buf(&cos), Res::Buf(&sin), Res::Buf(&cos), Res::Buf(&no_factors)]); // LoRA's: dummies
                        if !gemm {
                            res.push(Res::UniformX(&gb));
                        }
                        h.run_res(
                            &kern,
                            &rows[..tt],
                            (1, 0),
                            Shape::new(d, n, q_dim, kv_dim),
                            &res,
                            Kernels::matmul_grid(kind, gemm, n, tt),
                        );
                        assert_close(
                            &format!("fused q {what}"),
                            &h.read(&qb, tt * q_dim),
                            &want_q[..tt * q_dim],
                            KERNEL_VS_CPU,
                        );
                        let written = rows[tt - 1].slot as usize * kv_dim + kv_dim; // the GEMV writes token 0 only
                        for (name, cache, want) in [("k", &kc, &want_k), ("v", &vc, &want_v)] {
                            let mut want = want.clone();
                            want[written..].fill(0.0);
                            if kv_f16 {
                                let got = unpack_kv_f16(&h.read(cache, cache_rows * kv_dim / 2), hd);
                                assert_close(&format!("fused {name}_cache {what}"), &got, &want, KV_F16_VS_CPU);
                            } else {
                                let got = h.read(cache, cache_rows * kv_dim);
                                assert_close(&format!("fused {name}_cache {what}"), &got, &want, KERNEL_VS_CPU);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn rmsnorm_matches_cpu() {
    let Some(h) = harness(64) else { return };
    let mut rng = Rng::new(2);
    for &(dim, t) in &[(1, 1), (3, 3), (17, 2), (1757, 3)] {
        let x = random(&mut rng, t * dim, 30.0);
        let w = random(&mut rng, dim, 2.0);
        let mut want = vec![0.0; t * dim];
        ops::rmsnorm(&mut want, &x, &w, 1e-5);
        let out = h.zeros(t * dim);
        let eps = 1e-5f32.to_bits() as usize;
        h.run(
            &h.k.rmsnorm,
            (t, 0, &[]),
            Shape::new(dim, eps, 0, 0),
            &[&h.up(&x), &h.up(&w), &out],
            [t as u32, 1, 1],
        );
        assert_close(
            &format!("rmsnorm dim={dim} T={t}"),
            &h.read(&out, t * dim),
            &want,
            KERNEL_VS_CPU,
        );
    }
}

fn config(n_heads: usize, n_kv_heads: usize, head_dim: usize, seq_len: usize) -> Config {
    Config {
        model_type: "llama".into(),
        dim: n_heads * head_dim,
        hidden_dim: 4,
        n_layers: 1,
        n_heads,
        n_kv_heads,
        head_dim,
        kv_mul: n_heads / n_kv_heads,
        vocab_size: 8,
        seq_len,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: tinfer::config::RopeScaling::None,
        tied_embeddings: true,
        qkv_bias: false,
        o_bias: false,
        qk_norm: false,
        eos_token_ids: vec![],
        moe: None,
    }
}

/// The KV cache of one sequence of `len` positions laid out through `kv`'s block table, as the
/// kernels see it: (pool rows, kv_dim) K and V, the table row, and the slots.
fn paged_kv(
    kv: &mut KvPages,
    len: usize,
    kv_dim: usize,
    k: &[f32],
    v: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<u32>, usize) {
    let seq = kv.add_seq().unwrap();
    kv.append(seq, len).unwrap();
    let rows = kv.alloc.n_blocks() * kv.page;
    let (mut kp, mut vp) = (vec![f32::NAN; rows * kv_dim], vec![f32::NAN; rows * kv_dim]);
    for pos in 0..len {
        let s = kv.slot(seq, pos) as usize;
        kp[s * kv_dim..(s + 1) * kv_dim].copy_from_slice(&k[pos * kv_dim..(pos + 1) * kv_dim]);
        vp[s * kv_dim..(s + 1) * kv_dim].copy_from_slice(&v[pos * kv_dim..(pos + 1) * kv_dim]);
    }
    // unused rows hold NaN: a kernel that reads past the causal bound or a wrong page fails
    (kp, vp, kv.block_table(seq).to_vec(), seq)
}

/// One sequence's K/V of `len` positions laid out through `kv` on the device, as the attention
/// kernels bind it: K and V (an f16 cache holds each head's rotation pairs in u32 words,
/// lib/kv.wgsl), the block tables (row `seq` the sequence's; the rows below it unused), their
/// row length, and the step rows of its last `t` positions.
struct DeviceKv {
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    tables: wgpu::Buffer,
    max_blocks: usize,
    rows: Vec<Row>,
}

#[allow(clippy::too_many_arguments)]
fn device_kv(h: &H, kv: &mut KvPages, len: usize, t: usize, hd: usize, k: &[f32], v: &[f32], kv_f16: bool) -> DeviceKv {
    let kv_dim = k.len() / len;
    let (kp, vp, table, seq) = paged_kv(kv, len, kv_dim, k, v);
    let cache = |c: &[f32]| if kv_f16 { pack_kv_f16(c, hd) } else { c.to_vec() };
    let mut all = vec![0u32; (seq + 1) * table.len()];
    all[seq * table.len()..].copy_from_slice(&table);
    let rows = (0..t)
        .map(|i| Row {
            token: 0,
            pos: (len - t + i) as u32,
            slot: 0,
            seq: seq as u32,
        })
        .collect();
    DeviceKv {
        k: h.up(&cache(&kp)),
        v: h.up(&cache(&vp)),
        tables: h.up(&bytemuck::pod_collect_to_vec::<u32, f32>(&all)),
        max_blocks: table.len(),
        rows,
    }
}

/// Random attention inputs with outliers for the last `t` of `len` positions: q (t, n_heads,
/// hd), and K and V (len, n_kv_heads, hd) as an f32 cache holds them.
fn attention_inputs(rng: &mut Rng, len: usize, t: usize, heads: (usize, usize), hd: usize) -> [Vec<f32>; 3] {
    let q = random(rng, t * heads.0 * hd, 8.0);
    let k = random(rng, len * heads.1 * hd, 8.0);
    let v = random(rng, len * heads.1 * hd, 2.0);
    [q, k, v]
}

/// K and V as the cache holds them (rounded to f16 with `kv_f16`) and the CPU's attention of q
/// over them (cpu::ops::attention, f64): what each kernel must give.
fn attention_reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    heads: (usize, usize),
    hd: usize,
    kv_f16: bool,
) -> [Vec<f32>; 3] {
    let (k, v) = if kv_f16 {
        (round_f16(k), round_f16(v))
    } else {
        (k.to_vec(), v.to_vec())
    };
    let len = k.len() / (heads.1 * hd);
    let mut want = vec![0.0; t * heads.0 * hd];
    ops::attention(&mut want, q, &k, &v, len - t, heads.0, heads.1, hd);
    [k, v, want]
}

/// A paged pool whose pages come out of order: a filler sequence takes pages, is released, and
/// the sequence under test reuses them in reverse, interleaved with a second filler.
fn fragmented(len: usize) -> KvPages {
    let pages = len.div_ceil(16);
    let mut kv = KvPages::new(16, 2 * pages + 3, 3);
    let f = kv.add_seq().unwrap();
    kv.append(f, 16 * (pages / 2 + 1)).unwrap();
    let g = kv.add_seq().unwrap();
    kv.append(g, 20).unwrap();
    kv.release(f);
    kv
}

/// Every attention variant (naive, flash prefill, single-pass decode, split-K decode) through a
/// fragmented paged cache and a contiguous one, against the CPU's naive contiguous attention in
/// f64, on random q/k/v with outliers (scores that dominate: a softmax that loses the max or a
/// rescale fails). head_dim 64 and 128; kv_mul 1, 3, 4, 8 and MQA; lengths around page edges
/// and long ones. Unused cache rows hold NaN, so reading a wrong row fails too.
#[test]
fn attention_variants_match_cpu() {
    let layouts = [(4, 4), (6, 2), (8, 2), (8, 1), (12, 1)];
    let mut case = 0;
    let Some(h64) = harness(64) else { return };
    let h128 = harness(128).unwrap();
    let sg = subgroups(&h64.gpu, "attention_variants_match_cpu");
    for len in [1, 15, 16, 17, 257, 1000, 4096] {
        for hd in [64, 128] {
            let (n_heads, n_kv_heads) = layouts[case % layouts.len()];
            case += 1;
            let h = if hd == 64 { &h64 } else { &h128 };
            let mut rng = Rng::new(case as u64);
            // prefill rows: the last t positions (once all 257: every query row of an invocation of
            // the subgroup flash kernel, and a second workgroup)
            let t = len.min(if len == 257 && hd == 64 { 257 } else { 37 });
            let heads = (n_heads, n_kv_heads);
            let [q, k0, v0] = attention_inputs(&mut rng, len, t, heads, hd);
            // f32 and f16 caches; the CPU reference sees the values the f16 cache holds
            for kv_f16 in [false, true] {
                let [k, v, want] = attention_reference(&q, &k0, &v0, t, heads, hd, kv_f16);
                let q_buf = h.up(&q);
                for (layout, mut kv) in [
                    ("paged", fragmented(len)),
                    ("contiguous", KvPages::contiguous(len, 1, 16)),
                ] {
                    let DeviceKv {
                        k: kb,
                        v: vb,
                        tables: tb,
                        max_blocks,
                        rows,
                    } = device_kv(h, &mut kv, len, t, hd, &k, &v, kv_f16);
                    // the kernels are specialised for the layout's page size
                    let kern = Kernels::new(&h.gpu, hd, kv.page, F32_PLAIN, kv_f16).unwrap();
                    let kv_type = if kv_f16 { "f16" } else { "f32" };
                    let what = |v: &str| {
                        format!("{v} {layout} {kv_type} KV hd={hd} heads={n_heads}/{n_kv_heads} len={len} T={t}")
                    };
                    let shape = Shape::new(n_heads, n_kv_heads, max_blocks, len);
                    let out = h.zeros(want.len());
                    // naive: scores materialised in (T, n_heads, len)
                    let scores = h.zeros(t * n_heads * len);
                    h.run_rows(
                        &kern.attention_naive,
                        &rows,
                        (1, 0),
                        shape,
                        &[&q_buf, &kb, &vb, &tb, &scores, &out],
                        [n_heads as u32, t as u32, 1],
                    );
                    assert_close(&what("naive"), &h.read(&out, want.len()), &want, ATTENTION_VS_CPU);
                    let kv4 = [&q_buf, &kb, &vb, &tb];
                    // flash prefill, and with head_dim across lanes (GPUs)
                    h.check_prefill(
                        &kern.attention_flash,
                        kern.flash_rows,
                        &rows,
                        shape,
                        kv4,
                        &want,
                        &what("flash prefill"),
                    );
                    for kv_tiles in [true, false] {
                        let lanes_flash = Kernels::flash_lanes(&h.gpu, hd, kv.page, kv_f16, kv_tiles).unwrap();
                        let what = what(&format!("flash prefill (lanes, K/V tiles staged: {kv_tiles})"));
                        h.check_prefill(&lanes_flash, 2048 / hd, &rows, shape, kv4, &want, &what);
                    }
                    // flash prefill with K/V rows shared through subgroup broadcasts
                    if sg {
                        let flash_sg = Kernels::flash_sg(&h.gpu, hd, kv.page, kv_f16).unwrap();
                        let what = what("flash prefill (subgroups)");
                        // (row, head) pairs of a KV head's query heads below 32 rows
                        h.check_prefill(&flash_sg, FLASH_SG_ROWS, &rows, shape, kv4, &want, &what);
                    }
                    // decode kernel over the same rows: one pass, then split-K + reduce; workgroups
                    // of 64 (GPUs) and of 8 (CPU adapters), and the GPUs' one, head_dim across lanes
                    // (the 257-row case is there for the flash kernels; decode steps have few rows)
                    if t <= 64 {
                        // (and the whole-head kernel taking every query head of a KV head a
                        // workgroup, as many as fit: GQA's shared loads)
                        let group = Kernels::decode_group_for(n_heads / n_kv_heads, hd);
                        let lanes_group = Kernels::lanes_group_for(n_heads / n_kv_heads);
                        let decodes = [
                            (
                                Kernels::decode_attention_group(&h.gpu, hd, kv.page, 8, kv_f16, 1).unwrap(),
                                1,
                            ),
                            (
                                Kernels::decode_attention_group(&h.gpu, hd, kv.page, 64, kv_f16, 1).unwrap(),
                                1,
                            ),
                            (
                                Kernels::decode_attention_lanes(&h.gpu, hd, kv.page, kv_f16, 1).unwrap(),
                                1,
                            ),
                            (
                                Kernels::decode_attention_lanes(&h.gpu, hd, kv.page, kv_f16, lanes_group).unwrap(),
                                lanes_group,
                            ),
                            (
                                Kernels::decode_attention_group(&h.gpu, hd, kv.page, 8, kv_f16, group).unwrap(),
                                group,
                            ),
                            (
                                Kernels::decode_attention_group(&h.gpu, hd, kv.page, 64, kv_f16, group).unwrap(),
                                group,
                            ),
                        ];
                        let dshape = Shape::new(n_heads, n_kv_heads, max_blocks, 0);
                        for (decode, group) in &decodes {
                            for min_keys in [usize::MAX, 64] {
                                let what = what(&format!("{group} heads a workgroup"));
                                h.check_decode(
                                    decode,
                                    *group,
                                    &kern.attention_reduce,
                                    &rows,
                                    dshape,
                                    kv4,
                                    len,
                                    min_keys,
                                    &want,
                                    &what,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The attention kernels with head_dim across lanes at the head sizes the main test leaves out:
/// 16 (2 lanes a row, 128 rows a prefill workgroup), 32 and 256 (32 lanes, 8 rows), f32 and f16
/// caches through a fragmented paged cache, prefill rows and decode rows (one pass and split-K),
/// against the CPU; and both decode kernels taking two query heads a workgroup at those sizes.
#[test]
fn lanes_attention_at_every_head_size() {
    let Some(h) = harness(64) else { return };
    let mut rng = Rng::new(77);
    for (hd, len) in [(16, 300), (32, 23), (256, 150), (16, 1)] {
        let (n_heads, n_kv_heads) = (4, 2);
        let t = len.min(137);
        let heads = (n_heads, n_kv_heads);
        let [q, k0, v0] = attention_inputs(&mut rng, len, t, heads, hd);
        for kv_f16 in [false, true] {
            let [k, v, want] = attention_reference(&q, &k0, &v0, t, heads, hd, kv_f16);
            let mut kv = fragmented(len);
            let d = device_kv(&h, &mut kv, len, t, hd, &k, &v, kv_f16);
            let (rows, q_buf) = (d.rows, h.up(&q));
            let shape = Shape::new(n_heads, n_kv_heads, d.max_blocks, 0);
            let what = |v: &str| format!("{v} hd={hd} len={len} T={t} f16 cache {kv_f16}");
            let kv4 = [&q_buf, &d.k, &d.v, &d.tables];
            for kv_tiles in [true, false] {
                let flash = Kernels::flash_lanes(&h.gpu, hd, kv.page, kv_f16, kv_tiles).unwrap();
                let what = what(&format!("flash prefill (lanes, K/V tiles staged: {kv_tiles})"));
                h.check_prefill(&flash, 2048 / hd, &rows, shape, kv4, &want, &what);
            }
            let decode = Kernels::decode_attention_lanes(&h.gpu, hd, kv.page, kv_f16, 1).unwrap();
            let decode2 = Kernels::decode_attention_lanes(&h.gpu, hd, kv.page, kv_f16, 2).unwrap();
            let reduce = Kernels::new(&h.gpu, hd, kv.page, F32_PLAIN, kv_f16)
                .unwrap()
                .attention_reduce;
            let dt = t.min(5); // decode rows: the first few
                               // and the whole-head kernel with both query heads of a KV head a workgroup
            let grouped = Kernels::decode_attention_group(&h.gpu, hd, kv.page, 8, kv_f16, 2).unwrap();
            for min_keys in [usize::MAX, 64] {
                let want = &want[..dt * n_heads * hd];
                for (decode, group) in [(&decode, 1), (&decode2, 2), (&grouped, 2)] {
                    h.check_decode(
                        decode,
                        group,
                        &reduce,
                        &rows[..dt],
                        shape,
                        kv4,
                        len,
                        min_keys,
                        want,
                        &what(""),
                    );
                }
            }
        }
    }
}

#[test]
fn embed_and_argmax_match_cpu() {
    let Some(h) = harness(64) else { return };
    let mut rng = Rng::new(4);
    // embedding gather from the weight texture, f32 and f16 (more rows than one texture layer)
    let (rows_n, dim) = (h.gpu.limits.max_texture_dimension_2d as usize * ROW_GROUP + 5, 24);
    let table = random(&mut rng, rows_n * dim, 1.0);
    let tokens = [3u32, 19, 7, rows_n as u32 - 1, 0];
    let max_dim = h.gpu.limits.max_texture_dimension_2d as usize;
    for (f16, group, height) in [(false, ROW_GROUP, max_dim), (true, ROW_GROUP, max_dim), (true, 3, 5000)] {
        let k = Kernels::new(&h.gpu, 64, 16, MatmulKind::float(f16, false), false).unwrap();
        let tex = WeightTex::upload_as(&h.gpu, "embed", &[&mat(&table, dim)], f16, group, height).unwrap();
        let seen = if f16 { round_f16(&table) } else { table.clone() };
        let x = h.zeros(tokens.len() * dim);
        let step_rows: Vec<Row> = tokens
            .iter()
            .enumerate()
            .map(|(i, &token)| Row {
                token,
                pos: i as u32,
                slot: i as u32,
                seq: 0,
            })
            .collect();
        h.run_res(
            &Kernels::embed_kernel(&h.gpu, k.kind.format).unwrap(),
            &step_rows,
            (1, 0),
            Shape::new(dim, 0, 0, 0),
            &[Res::Tex(&tex.view), Res::Buf(&x)],
            [1, 5, 1],
        );
        let got = h.read(&x, tokens.len() * dim);
        for (t, &tok) in tokens.iter().enumerate() {
            let want = &seen[tok as usize * dim..][..dim];
            assert_eq!(
                &got[t * dim..(t + 1) * dim],
                want,
                "token {tok} (f16: {f16}, group {group})"
            );
        }
    }
    // quantized tables: every block format, rows not a whole texture row group, small layers
    if subgroups(&h.gpu, "embed_and_argmax_match_cpu") {
        for format in QUANT_FORMATS {
            let dim = if format.block().0 == 256 { 512 } else { 96 };
            let (rows_n, tokens) = (37, [3u32, 36, 0, 19]);
            let (t, seen) = quant_mat(format, random_blocks(&mut rng, format, rows_n * dim), dim);
            // 5 row groups in layers of 4 (powers of two: CPU adapters) and of 3 (equal: GPUs)
            for (height, exact) in [(4, false), (3, true)] {
                let tex = WeightTex::upload_blocks(&h.gpu, "embed", &[&t], height, exact).unwrap();
                let kern = Kernels::embed_kernel(&h.gpu, format).unwrap();
                let x = h.zeros(tokens.len() * dim);
                let step_rows: Vec<Row> = tokens
                    .iter()
                    .map(|&token| Row {
                        token,
                        ..Row::default()
                    })
                    .collect();
                h.run_res(
                    &kern,
                    &step_rows,
                    (1, 0),
                    Shape::new(dim, 0, 0, 0),
                    &[Res::Tex(&tex.view), Res::Buf(&x)],
                    [up(dim, 64), tokens.len() as u32, 1],
                );
                let got = h.read(&x, tokens.len() * dim);
                for (i, &tok) in tokens.iter().enumerate() {
                    let want = &seen[tok as usize * dim..][..dim];
                    // d·q + m: one rounding or two (a fused multiply-add)
                    assert_close(
                        &format!("embed {format} token {tok} (layers of {height})"),
                        &got[i * dim..][..dim],
                        want,
                        Tol { abs: 1e-6, rel: 1e-6 },
                    );
                }
            }
        }
    }
    // argmax with a tie: the first index wins, as on the CPU
    for n in [1, 3, 17, 1757, 49152] {
        let mut l = random(&mut rng, n, 1.0);
        let m = n / 3;
        l[m] = 50.0;
        if n > 2 {
            l[n - 1] = 50.0;
        }
        let out = h.zeros(1);
        h.run(
            &h.k.argmax,
            (1, 0, &[]),
            Shape::new(n, 0, 0, 0),
            &[&h.up(&l), &out],
            [1, 1, 1],
        );
        let got = u32::from_le_bytes(h.gpu.read(&out, 4).unwrap()[..4].try_into().unwrap());
        assert_eq!(got as usize, ops::argmax(&l), "argmax over {n}");
    }
}

/// A head_dim the attention kernel cannot hold is refused at load with the limit named.
#[test]
fn unsupported_head_dim_is_an_error() {
    let Some(req) = gpu_request() else { return };
    let gpu = Gpu::new(&req).unwrap();
    let e = Kernels::new(&gpu, 320, 16, F32_PLAIN, false)
        .err()
        .expect("head_dim 320 must be refused")
        .to_string();
    assert!(e.contains("head_dim 320") && e.contains("at most 256"), "{e}");
    let e = Kernels::new(&gpu, 72, 16, F32_PLAIN, false)
        .err()
        .expect("head_dim 72 must be refused")
        .to_string();
    assert!(e.contains("multiple of 16"), "{e}");
    // a weight row wider than a texture can hold is refused with the tensor and the limit named
    let wide = 8 * (gpu.limits.max_texture_dimension_2d as usize + 8);
    let e = WeightTex::upload(&gpu, "layers.0.w_down", &[&mat(&vec![0.0; wide], wide)], true)
        .err()
        .expect("a row over the texture width must be refused")
        .to_string();
    assert!(
        e.contains("layers.0.w_down") && e.contains("texture width limit"),
        "{e}"
    );
}

/// `--limits webgpu` asks for WebGPU's defaults only, whatever the adapter offers.
#[test]
fn webgpu_limits_are_the_defaults() {
    let Some(mut req) = gpu_request() else { return };
    req.webgpu_limits = true;
    let gpu = Gpu::new(&req).unwrap();
    assert_eq!(gpu.limits.max_storage_buffer_binding_size, 128 << 20);
    assert_eq!(gpu.limits.max_texture_dimension_2d, 8192);
    assert_eq!(gpu.limits.max_texture_array_layers, 256);
    assert_eq!(gpu.device.limits().max_storage_buffer_binding_size, 128 << 20);
}

/// Every plan covers the keys with whole decode tiles, leaves no partition empty, and fits
/// the partials buffer (rows × partitions ≤ MAX_PART_ROWS), for any rows, length and minimum.
#[test]
fn split_plans_fit_the_partials_buffer() {
    for rows in [1, 2, 3, 7, 8, 9, 31, 32, 33, 100, 255, 256] {
        for max_len in [1, 2, 63, 64, 65, 500, 4096, 32768, 131072] {
            for min_keys in [1, 64, 256, 1000, usize::MAX] {
                let (n, len) = split_plan(max_len, min_keys, rows);
                let at = format!("rows {rows}, max_len {max_len}, min_keys {min_keys}: ({n}, {len})");
                assert!(
                    (1..=MAX_SPLITS).contains(&n) && rows * n <= MAX_PART_ROWS.max(rows),
                    "{at}"
                );
                assert!(
                    len % DECODE_TILE == 0 && n * len >= max_len && (n - 1) * len < max_len,
                    "{at}"
                );
            }
        }
    }
}

/// Every kernel test of this file again under lavapipe's other subgroup widths, 4, 16, 32 and 64
/// lanes (Mesa's LP_NATIVE_VECTOR_WIDTH = 128, 512, 1024, 2048 bits; the default 256 gives 8),
/// each in a child process of this test binary, under WebGPU's default limits. At 4 lanes only the plain kernels run (the
/// subgroup kernels need 8, and the engine does not pick them there).
#[test]
fn kernels_at_every_lavapipe_subgroup_width() {
    if std::env::var_os("TINFER_EXPECT_LANES").is_some() {
        return; // a child
    }
    let Some(req) = gpu_request() else { return };
    let gpu = Gpu::new(&req).unwrap();
    if !gpu.info.name.contains("llvmpipe") {
        eprintln!(
            "SKIPPED: {} is not lavapipe, whose subgroup width an environment variable sets",
            gpu.describe()
        );
        return;
    }
    drop(gpu);
    for (bits, lanes) in [(128, 4), (512, 16), (1024, 32), (2048, 64)] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--skip",
                "kernels_at_every_lavapipe_subgroup_width",
                "--test-threads",
                "2",
            ])
            .env("LP_NATIVE_VECTOR_WIDTH", bits.to_string())
            .env("TINFER_EXPECT_LANES", lanes.to_string())
            .env("TINFER_WEBGPU_LIMITS", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: String = text
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            out.status.success(),
            "the kernel tests at {lanes} lanes (LP_NATIVE_VECTOR_WIDTH={bits}) failed:\n{tail}"
        );
        let summary = text
            .lines()
            .filter(|l| l.starts_with("test result"))
            .collect::<Vec<_>>()
            .join("; ");
        eprintln!("{lanes} lanes: {summary}");
    }
}
