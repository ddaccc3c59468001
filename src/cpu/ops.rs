//! The CPU reference's operations: plain loops, f64 accumulators, rows of the output split over
//! threads. They are the oracle every GPU kernel is checked against, so they favour being
//! obviously right over being fast. Shapes are row-major: (T, n) means T rows of n.

use rayon::prelude::*;

use crate::config::RopeTable;
use crate::weights::Tensor;

/// Σ a[i]·b[i] with f64 accumulation (8 lanes, summed at the end).
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| x as f64 * y as f64)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] as f64 * y[i] as f64;
        }
    }
    (acc.iter().sum::<f64>() + tail) as f32
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    // The same code compiled for wider vectors: the result is bit-identical (no FMA contraction).
    dot_lanes(a, b)
}

/// Dot product with f64 accumulation; uses AVX2 when the CPU has it (same result either way).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

/// `dot_lanes` of R rows of x against one weight row, inputs already widened to f64 (a batch
/// widens x and each weight row once): each dot has the same 8 lanes summed in the same order,
/// so the same result bit for bit. A product of two f32 values is exact in f64, so fusing it
/// into the add (FMA) rounds as the plain add does.
#[inline(always)]
fn dots64_lanes<const R: usize>(xs: [&[f64]; R], b: &[f64]) -> [f32; R] {
    let d8 = b.len() / 8 * 8;
    let mut acc = [[0f64; 8]; R];
    for (c, w) in b[..d8].chunks_exact(8).enumerate() {
        for r in 0..R {
            for i in 0..8 {
                acc[r][i] = xs[r][c * 8 + i].mul_add(w[i], acc[r][i]);
            }
        }
    }
    finish(xs, b, acc)
}

/// Each dot's lanes summed in order, plus its tail past the last whole 8.
#[inline(always)]
fn finish<const R: usize>(xs: [&[f64]; R], b: &[f64], acc: [[f64; 8]; R]) -> [f32; R] {
    let d8 = b.len() / 8 * 8;
    std::array::from_fn(|r| {
        let tail: f64 = xs[r][d8..].iter().zip(&b[d8..]).map(|(&x, &y)| x * y).sum();
        (acc[r].iter().sum::<f64>() + tail) as f32
    })
}

/// `dots64_lanes` with AVX2 FMA: the R dots advance together, 8 lanes each in two registers
/// (independent chains keep the FMA units busy; the compiler left alone vectorises across R).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots64_fma<const R: usize>(xs: [&[f64]; R], b: &[f64]) -> [f32; R] {
    use std::arch::x86_64::*;
    let d8 = b.len() / 8 * 8;
    let (mut lo, mut hi) = ([_mm256_setzero_pd(); R], [_mm256_setzero_pd(); R]);
    for c in (0..d8).step_by(8) {
        // SAFETY: c + 8 <= d8 <= every row's length (checked by the caller)
        let (w0, w1) = (
            _mm256_loadu_pd(b.as_ptr().add(c)),
            _mm256_loadu_pd(b.as_ptr().add(c + 4)),
        );
        for r in 0..R {
            let x = xs[r].as_ptr().add(c);
            lo[r] = _mm256_fmadd_pd(_mm256_loadu_pd(x), w0, lo[r]);
            hi[r] = _mm256_fmadd_pd(_mm256_loadu_pd(x.add(4)), w1, hi[r]);
        }
    }
    let mut acc = [[0f64; 8]; R];
    for r in 0..R {
        _mm256_storeu_pd(acc[r].as_mut_ptr(), lo[r]);
        _mm256_storeu_pd(acc[r].as_mut_ptr().add(4), hi[r]);
    }
    finish(xs, b, acc)
}

/// `dot` of R widened rows against one widened weight row (see `dots64_lanes`).
fn dots64<const R: usize>(xs: [&[f64]; R], b: &[f64]) -> [f32; R] {
    for x in xs {
        assert_eq!(x.len(), b.len(), "dot of rows of different lengths");
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above); lengths checked above.
        return unsafe { dots64_fma(xs, b) };
    }
    dots64_lanes(xs, b)
}

/// 4 weight rows × 4 rows of x, x widened (see `dots64_lanes`): [weight row][x row]. The
/// weights stay f32 (widening is exact): with AVX-512 they are widened in registers as they
/// stream in from memory, so the loads overlap the multiply-adds.
fn dots_block(xs: [&[f64]; 4], ws: [&[f32]; 4]) -> [[f32; 4]; 4] {
    for x in &xs {
        assert_eq!(x.len(), ws[0].len(), "dot of rows of different lengths");
    }
    for w in &ws {
        assert_eq!(w.len(), ws[0].len(), "dot of rows of different lengths");
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above); lengths checked above.
        return unsafe { dots_block_avx512(xs, ws) };
    }
    ws.map(|w| dots64(xs, &w.iter().map(|&v| v as f64).collect::<Vec<_>>()))
}

/// `dots_block` with AVX-512: a dot's 8 lanes are one register, so the 16 dots of the block
/// accumulate in 16 registers and each chunk of x and of the weights is loaded once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots_block_avx512(xs: [&[f64]; 4], ws: [&[f32]; 4]) -> [[f32; 4]; 4] {
    use std::arch::x86_64::*;
    let d8 = ws[0].len() / 8 * 8;
    let mut acc = [[_mm512_setzero_pd(); 4]; 4];
    for c in (0..d8).step_by(8) {
        // SAFETY: c + 8 <= d8 <= every row's length (checked by the caller)
        let w: [__m512d; 4] = std::array::from_fn(|j| _mm512_cvtps_pd(_mm256_loadu_ps(ws[j].as_ptr().add(c))));
        for r in 0..4 {
            let x = _mm512_loadu_pd(xs[r].as_ptr().add(c));
            for j in 0..4 {
                acc[j][r] = _mm512_fmadd_pd(x, w[j], acc[j][r]);
            }
        }
    }
    std::array::from_fn(|j| {
        let mut lanes = [[0f64; 8]; 4];
        for r in 0..4 {
            _mm512_storeu_pd(lanes[r].as_mut_ptr(), acc[j][r]);
        }
        let tail: Vec<f64> = ws[j][d8..].iter().map(|&v| v as f64).collect();
        let xs_tail = xs.map(|x| &x[d8..]);
        finish(xs_tail, &tail, lanes)
    })
}

/// Most rows the weight-row-parallel, blocked loop of `matmul` takes (the engine's prompt chunk:
/// 2× faster than the token-tiled loop at 64 rows, 1.6× at 256 on SmolLM2); more rows go by
/// token tiles.
const BLOCKED_ROWS: usize = 256;
/// Tokens per task when T > 1: one weight row is reused across this many tokens while in cache.
const TOKEN_TILE: usize = 16;
/// Output rows per task when T = 1 (decode).
const ROW_TILE: usize = 64;

/// out (T, n) = x (T, d) · wᵀ, w (n, d) in any format, plus bias (n,) if given. F32 weights
/// are read in place; other formats are decoded one row at a time into a per-task buffer, and
/// every dot product is the same [`dot`] either way.
pub fn matmul(out: &mut [f32], x: &[f32], w: &Tensor, bias: Option<&[f32]>, d: usize) {
    assert_eq!(
        w.cols(),
        d,
        "matmul: weight rows of {} values, input rows of {d}",
        w.cols()
    );
    match w.as_f32() {
        Some(w) => matmul_f32(out, x, w, bias, d),
        None => matmul_rows(out, x, bias, d, w.rows(), Rows::Decode(w)),
    }
}

/// [`matmul`] of an f32 matrix w (n, d) given as a slice.
pub fn matmul_f32(out: &mut [f32], x: &[f32], w: &[f32], bias: Option<&[f32]>, d: usize) {
    assert_eq!(w.len() % d, 0, "matmul shapes");
    matmul_rows(out, x, bias, d, w.len() / d, Rows::F32(w))
}

/// Where [`matmul`] reads weight rows from.
enum Rows<'w> {
    /// f32 values in place.
    F32(&'w [f32]),
    /// Decoded into a scratch buffer, one row at a time.
    Decode(&'w Tensor),
}

impl Rows<'_> {
    /// Row `o` of `d` values.
    #[inline(always)]
    fn get<'a>(&'a self, o: usize, d: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        match self {
            Rows::F32(w) => &w[o * d..(o + 1) * d],
            Rows::Decode(t) => {
                buf.resize(d, 0.0);
                t.row_f32(o, buf);
                buf
            }
        }
    }
}

/// The loops of [`matmul`] over `n` weight rows.
fn matmul_rows(out: &mut [f32], x: &[f32], bias: Option<&[f32]>, d: usize, n: usize, w: Rows) {
    let t_n = x.len() / d;
    assert!(x.len() == t_n * d && out.len() == t_n * n, "matmul shapes");
    let b = |o: usize| bias.map_or(0.0, |b| b[o]);
    if t_n <= BLOCKED_ROWS {
        // Up to a prompt chunk (decode, a batch of sequences' steps, a speculative verify, a
        // prefill chunk): weight rows in parallel, each decoded once for every token, into
        // (n, t_n) and then transposed; each output is the same dot as with one row, bit for
        // bit (as in the token-tiled loop below, which keeps memory flat for long inputs).
        let mut tmp = vec![0f32; if t_n == 1 { 0 } else { n * t_n }];
        let cols = if t_n == 1 { &mut *out } else { &mut tmp };
        // several rows: x and each weight row widened once, not once a dot; blocks of 4
        // weight rows × 4 tokens (each x chunk loaded once for 4 weight rows)
        let xd: Vec<f64> = if t_n == 1 {
            vec![]
        } else {
            x.iter().map(|&v| v as f64).collect()
        };
        let xt = |t: usize| &xd[t * d..(t + 1) * d];
        cols.par_chunks_mut(ROW_TILE * t_n).enumerate().for_each(|(c, tile)| {
            let mut buf = vec![];
            if t_n == 1 {
                for (j, y) in tile.iter_mut().enumerate() {
                    let o = c * ROW_TILE + j;
                    *y = dot(x, w.get(o, d, &mut buf)) + b(o);
                }
                return;
            }
            let mut bufs: [Vec<f32>; 4] = Default::default();
            let mut wd: [Vec<f64>; 4] = Default::default();
            for (g, group) in tile.chunks_mut(4 * t_n).enumerate() {
                let (rows, o0) = (group.len() / t_n, c * ROW_TILE + g * 4);
                let ws: Vec<&[f32]> = (bufs.iter_mut().enumerate().take(rows))
                    .map(|(j, buf)| w.get(o0 + j, d, buf))
                    .collect();
                let mut t0 = 0;
                while rows == 4 && t0 + 4 <= t_n {
                    let y = dots_block(
                        [xt(t0), xt(t0 + 1), xt(t0 + 2), xt(t0 + 3)],
                        [ws[0], ws[1], ws[2], ws[3]],
                    );
                    for (j, yj) in y.iter().enumerate() {
                        for (k, &v) in yj.iter().enumerate() {
                            group[j * t_n + t0 + k] = v + b(o0 + j);
                        }
                    }
                    t0 += 4;
                }
                // the tokens past the last block of 4, or a last group of fewer rows
                for (j, wj) in wd.iter_mut().enumerate().take(if t0 < t_n { rows } else { 0 }) {
                    wj.clear();
                    wj.extend(ws[j].iter().map(|&v| v as f64));
                    for t in t0..t_n {
                        group[j * t_n + t] = dots64([xt(t)], wj)[0] + b(o0 + j);
                    }
                }
            }
        });
        for (o, ys) in tmp.chunks_exact(t_n.max(1)).enumerate() {
            for (t, &y) in ys.iter().enumerate() {
                out[t * n + o] = y;
            }
        }
    } else {
        out.par_chunks_mut(TOKEN_TILE * n)
            .zip(x.par_chunks(TOKEN_TILE * d))
            .for_each(|(out, x)| {
                let mut buf = vec![];
                for o in 0..n {
                    let row = w.get(o, d, &mut buf);
                    for (t, xt) in x.chunks_exact(d).enumerate() {
                        out[t * n + o] = dot(xt, row) + b(o);
                    }
                }
            });
    }
}

/// out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight, for each row t of width `weight.len()`.
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f64) {
    let d = weight.len();
    for (o, x) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        for i in 0..d {
            // HF rounds the normalised value to the activation dtype, then scales by the weight.
            o[i] = weight[i] * ((x[i] as f64 * inv) as f32);
        }
    }
}

/// Rotate-half RoPE on each head of one row at position `pos`:
/// (x[i], x[i+h]) <- (x[i]·cos - x[i+h]·sin, x[i+h]·cos + x[i]·sin), h = head_dim/2.
pub fn rope(row: &mut [f32], pos: usize, head_dim: usize, table: &RopeTable) {
    let h = head_dim / 2;
    let (cos, sin) = (&table.cos[pos * h..(pos + 1) * h], &table.sin[pos * h..(pos + 1) * h]);
    for head in row.chunks_exact_mut(head_dim) {
        for i in 0..h {
            let (a, b) = (head[i] as f64, head[i + h] as f64);
            let (c, s) = (cos[i] as f64, sin[i] as f64);
            head[i] = (a * c - b * s) as f32;
            head[i + h] = (b * c + a * s) as f32;
        }
    }
}

/// Causal attention with grouped-query heads by index arithmetic (nothing copied).
/// q (T, n_heads·hd) for positions pos0..pos0+T; k_cache, v_cache (pos0+T, n_kv_heads·hd);
/// out (T, n_heads·hd). Query head h reads KV head h / kv_mul. Scores and softmax in f64.
#[allow(clippy::too_many_arguments)] // shapes spelled out, as the GPU kernel will take them
pub fn attention(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    pos0: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) {
    let kv_mul = n_heads / n_kv_heads;
    let kv_dim = n_kv_heads * head_dim;
    let scale = 1.0 / (head_dim as f64).sqrt();
    out.par_chunks_mut(head_dim).enumerate().for_each(|(i, out)| {
        let (t, h) = (i / n_heads, i % n_heads);
        let pos = pos0 + t;
        let kvh = h / kv_mul;
        let qh = &q[i * head_dim..(i + 1) * head_dim];
        // scores over positions 0..=pos (causal)
        let scores: Vec<f64> = (0..=pos)
            .map(|s| dot(qh, &k_cache[s * kv_dim + kvh * head_dim..][..head_dim]) as f64 * scale)
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = scores.iter().map(|&s| (s - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        let mut acc = vec![0f64; head_dim];
        weighted_rows(&mut acc, &exps, sum, &v_cache[kvh * head_dim..], kv_dim);
        for j in 0..head_dim {
            out[j] = acc[j] as f32;
        }
    });
}

/// acc += Σ_s (exps[s] / sum) · v[s·stride ..][..acc.len()], in f64: attention's P·V for one
/// query head. Uses AVX-512 or AVX2 where the CPU has them: the same operations (a product,
/// then a sum: no FMA contraction) in the same order, so the same result bit for bit.
fn weighted_rows(acc: &mut [f64], exps: &[f64], sum: f64, v: &[f32], stride: usize) {
    #[inline(always)]
    fn lanes(acc: &mut [f64], exps: &[f64], sum: f64, v: &[f32], stride: usize) {
        let n = acc.len();
        for (s, &e) in exps.iter().enumerate() {
            let p = e / sum;
            for (a, &x) in acc.iter_mut().zip(&v[s * stride..][..n]) {
                *a += p * x as f64;
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512(acc: &mut [f64], exps: &[f64], sum: f64, v: &[f32], stride: usize) {
            lanes(acc, exps, sum, v, stride)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(acc: &mut [f64], exps: &[f64], sum: f64, v: &[f32], stride: usize) {
            lanes(acc, exps, sum, v, stride)
        }
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { avx512(acc, exps, sum, v, stride) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2(acc, exps, sum, v, stride) };
        }
    }
    lanes(acc, exps, sum, v, stride)
}

/// SwiGLU in place: gate[i] = silu(gate[i]) · up[i], silu(x) = x / (1 + e^-x).
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let x = *g as f64;
        *g = ((x / (1.0 + (-x).exp())) * u as f64) as f32;
    }
}

/// x += y
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// log Σ exp(logits), in f64.
pub fn logsumexp(logits: &[f32]) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln()
}

/// Index of the largest value; the first one on ties (as torch.argmax).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_decode_and_prefill_paths_agree() {
        // awkward sizes: d not a multiple of 8, n not a multiple of the row tile, T: a batch of
        // a few rows (not a multiple of 4), just over a token tile, many, past BLOCKED_ROWS
        for t in [7, 19, 201, 300] {
            matmul_paths_agree(37, 131, t);
        }
    }

    fn matmul_paths_agree(d: usize, n: usize, t: usize) {
        let w: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let x: Vec<f32> = (0..t * d).map(|i| ((i * 104729) % 97) as f32 / 40.0 - 1.2).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let wt = Tensor::from_f32(vec![n, d], w.clone());
        let mut all = vec![0.0; t * n];
        matmul(&mut all, &x, &wt, Some(&bias), d);
        // the decoding path gives what the f32 path gives on the decoded values
        let w16: Vec<u8> = w.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let wt16 = Tensor::owned(crate::weights::Format::F16, vec![n, d], w16).unwrap();
        let w16 = Tensor::from_f32(vec![n, d], wt16.to_f32());
        let (mut ya, mut yb) = (vec![0.0; t * n], vec![0.0; t * n]);
        matmul(&mut ya, &x, &wt16, Some(&bias), d);
        matmul(&mut yb, &x, &w16, Some(&bias), d);
        assert_eq!(ya, yb, "decoded rows vs f32");
        matmul(&mut ya[..n], &x[..d], &wt16, Some(&bias), d);
        matmul(&mut yb[..n], &x[..d], &w16, Some(&bias), d);
        assert_eq!(ya[..n], yb[..n], "decoded rows vs f32, one token");
        for ti in 0..t {
            let mut one = vec![0.0; n];
            matmul(&mut one, &x[ti * d..(ti + 1) * d], &wt, Some(&bias), d);
            assert_eq!(&all[ti * n..(ti + 1) * n], &one[..], "token {ti}");
            for o in 0..n {
                let naive: f64 =
                    (0..d).map(|i| x[ti * d + i] as f64 * w[o * d + i] as f64).sum::<f64>() + bias[o] as f64;
                assert!(
                    (one[o] as f64 - naive).abs() < 1e-5,
                    "t {ti} o {o}: {} vs {naive}",
                    one[o]
                );
            }
        }
    }

    #[test]
    fn attention_single_position_returns_v() {
        // one position: softmax over one score is 1, so out = v of the matching KV head
        let (nh, nkv, hd) = (4, 2, 4);
        let q: Vec<f32> = (0..nh * hd).map(|i| i as f32).collect();
        let k = vec![0.5; nkv * hd];
        let v: Vec<f32> = (0..nkv * hd).map(|i| 10.0 + i as f32).collect();
        let mut out = vec![0.0; nh * hd];
        attention(&mut out, &q, &k, &v, 0, nh, nkv, hd);
        for h in 0..nh {
            assert_eq!(
                &out[h * hd..(h + 1) * hd],
                &v[(h / 2) * hd..(h / 2 + 1) * hd],
                "head {h}"
            );
        }
    }

    #[test]
    fn argmax_takes_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }
}
