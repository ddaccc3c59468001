//! Quantizers that write exactly the blocks of llama.cpp's reference quantizers (ggml-quants.c's
//! `quantize_row_*_ref`, what `llama-quantize` runs without an importance matrix), so that a
//! model quantized here at load equals the same model quantized by llama.cpp. Each follows its C
//! function's arithmetic step by step in f32 (same operations, same order, no fused
//! multiply-add) and stores scales as f16 rounded to nearest even (`GGML_FP32_TO_FP16`).
//! Checked byte for byte against llama.cpp in tests/quant.rs (Q8_0, Q4_K, Q5_0) (fixture: scripts/make-quant-cases.sh).

use half::f16;

use crate::weights::{k_scale_min, Format};

/// `x` quantized to `format` (row-major, whole blocks); None for the formats without a
/// quantizer here. Panics when `x.len()` is not a whole number of blocks (see [`fallback_for`]).
pub fn quantize(format: Format, x: &[f32]) -> Option<Vec<u8>> {
    match format {
        Format::Q8_0 => Some(quantize_q8_0(x)),
        Format::Q4_K => Some(quantize_q4_k(x)),
        Format::Q5_0 => Some(quantize_q5_0(x)),
        _ => None,
    }
}

/// The format `llama-quantize` writes for a matrix of `cols` columns (elements per row) when
/// asked for `format` (llama.cpp src/llama-quant.cpp, `tensor_type_fallback`): `format` when
/// its block divides `cols`; otherwise the K-quants fall back to a 32-block type (Q2_K, Q3_K ->
/// Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; e.g. Qwen2.5-0.5B's 896-wide rows in a
/// Q4_K file are Q5_0), and to F16 when 32 does not divide `cols` either. None where llama.cpp
/// gives up ("no tensor type fallback is defined"): a 32-block format on a row of other width.
pub fn fallback_for(format: Format, cols: usize) -> Option<Format> {
    let fits = |f: Format| cols.is_multiple_of(f.block().0);
    let to = match format {
        f if fits(f) => return Some(f),
        Format::Q2_K | Format::Q3_K => Format::Q4_0,
        Format::Q4_K => Format::Q5_0,
        Format::Q5_K => Format::Q5_1,
        Format::Q6_K => Format::Q8_0,
        _ => return None,
    };
    Some(if fits(to) { to } else { Format::F16 })
}

/// Q8_0 as ggml-quants.c's `quantize_row_q8_0_ref`: per block of 32, d = amax / 127 and
/// q = roundf(x / d) (halves away from zero), computed as x · (1 / d). Panics unless 32 divides
/// `x.len()`.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % 32, 0, "Q8_0: {} values are not whole blocks of 32", x.len());
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| if m > v.abs() { m } else { v.abs() }); // MAX()
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|&v| (v * id).round() as i8 as u8));
    }
    out
}

/// Q5_0 as ggml-quants.c's `quantize_row_q5_0_ref` (what llama-quantize writes for Q4_K rows that
/// are not whole super-blocks): per block of 32, max = the value of largest magnitude (the first
/// one on ties), d = max / -16, q = min(31, (i8)(x / d + 16.5)) truncated toward zero, the low
/// nibbles as Q4_0 and each 5th bit in qh. Panics unless 32 divides `x.len()`.
pub fn quantize_q5_0(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % 32, 0, "Q5_0: {} values are not whole blocks of 32", x.len());
    let mut out = Vec::with_capacity(x.len() / 32 * 22);
    for b in x.chunks_exact(32) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q = |v: f32| ((v * id + 16.5) as i8).min(31) as u8;
        let mut qh = 0u32;
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let (q0, q1) = (q(b[j]), q(b[j + 16]));
            qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
            qh |= u32::from((q0 & 0x10) >> 4) << j;
            qh |= u32::from((q1 & 0x10) >> 4) << (j + 16);
        }
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(qh.to_le_bytes());
        out.extend(qs);
    }
    out
}

/// Q4_K as ggml-quants.c's `quantize_row_q4_K_ref`: per sub-block of 32, a scale and a min by
/// `make_qkx2_quants` (weights av_x + |x|, av_x the sub-block's RMS; 21 trial scales); both
/// quantized to 6 bits against the super-block's largest (d = max_scale / 63, dmin likewise);
/// then every value re-quantized with the stored scales, except in sub-blocks whose stored
/// scale is 0, which keep the quants of `make_qkx2_quants`. Panics unless 256 divides
/// `x.len()`.
pub fn quantize_q4_k(x: &[f32]) -> Vec<u8> {
    assert_eq!(x.len() % 256, 0, "Q4_K: {} values are not whole blocks of 256", x.len());
    let mut out = vec![0u8; x.len() / 256 * 144];
    for (x, y) in x.chunks_exact(256).zip(out.chunks_exact_mut(144)) {
        let mut l = [0u8; 256];
        let (mut scales, mut mins) = ([0f32; 8], [0f32; 8]);
        for (j, (xs, l)) in x.chunks_exact(32).zip(l.chunks_exact_mut(32)).enumerate() {
            let sum_x2 = xs.iter().fold(0f32, |s, v| s + v * v);
            let av_x = (sum_x2 / 32.0).sqrt();
            let w: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
            (scales[j], mins[j]) = make_qkx2_quants(15, xs, &w, l, -1.0, 0.1, 20);
        }
        let largest = |v: &[f32; 8]| v.iter().fold(0f32, |m, &s| if s > m { s } else { m });
        let (max_scale, max_min) = (largest(&scales), largest(&mins));
        let inv = |m: f32| if m > 0.0 { 63.0 / m } else { 0.0 };
        let (inv_scale, inv_min) = (inv(max_scale), inv(max_min));
        let s = &mut y[4..16]; // the inverse of `k_scale_min`: 6-bit scale and min of sub-block j
        for j in 0..8 {
            let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63); // as u8: C's uint8_t
            let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
            if j < 4 {
                (s[j], s[j + 4]) = (ls, lm);
            } else {
                s[j + 4] = (ls & 0xF) | (lm & 0xF) << 4;
                s[j - 4] |= (ls >> 4) << 6;
                s[j] |= (lm >> 4) << 6;
            }
        }
        let (d, dmin) = (f16::from_f32(max_scale / 63.0), f16::from_f32(max_min / 63.0));
        y[..2].copy_from_slice(&d.to_le_bytes());
        y[2..4].copy_from_slice(&dmin.to_le_bytes());
        for j in 0..8 {
            let (sc, m) = k_scale_min(j, &y[4..16]);
            let d = d.to_f32() * sc as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin.to_f32() * m as f32;
            for i in 32 * j..32 * j + 32 {
                l[i] = nearest_int((x[i] + dm) / d).clamp(0, 15) as u8;
            }
        }
        // 32 bytes per pair of sub-blocks: the first in the low nibbles, the second in the high
        for (i, q) in y[16..].chunks_exact_mut(32).enumerate() {
            for (k, q) in q.iter_mut().enumerate() {
                *q = l[64 * i + k] | l[64 * i + 32 + k] << 4;
            }
        }
    }
    out
}

/// ggml-quants.c's `nearest_int`: adding 1.5·2^23 leaves round(x) in the low mantissa bits, so
/// ties go to even (roundf would go away from zero). Valid for |x| < 2^22; llama.cpp only
/// asserts that in debug builds, and beyond it both return the same garbage.
fn nearest_int(x: f32) -> i32 {
    ((x + 12582912.0).to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml-quants.c's `make_qkx2_quants` with `use_mad` false: quants `l` in 0..=nmax and
/// (scale, -min) with x ≈ scale·l + min, min <= 0, minimising the `w`-weighted squared error
/// over the first guess (max - min) / nmax and `nstep + 1` trials of iscale (nmax + rmin +
/// rdelta·is) / (max - min), each refitted by weighted least squares. Note that `min` changes
/// when a trial wins and the later trials use it, as in C.
fn make_qkx2_quants(nmax: i32, x: &[f32], w: &[f32], l: &mut [u8], rmin: f32, rdelta: f32, nstep: i32) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let (mut sum_w, mut sum_x) = (w[0], w[0] * x[0]);
    for i in 1..x.len() {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let quantize = |iscale: f32, min: f32, l: &mut [u8]| {
        for (q, &v) in l.iter_mut().zip(x) {
            *q = nearest_int(iscale * (v - min)).clamp(0, nmax) as u8;
        }
    };
    let error = |scale: f32, min: f32, l: &[u8]| {
        let diffs = x
            .iter()
            .zip(w)
            .zip(l)
            .map(|((&v, &w), &q)| (w, scale * q as f32 + min - v));
        diffs.fold(0f32, |e, (w, diff)| e + w * (diff * diff))
    };
    let mut scale = 1.0 / (nmax as f32 / (max - min));
    quantize(nmax as f32 / (max - min), min, l);
    let mut best_error = error(scale, min, l);
    let mut laux = vec![0u8; x.len()];
    for is in 0..=nstep {
        quantize((rmin + rdelta * is as f32 + nmax as f32) / (max - min), min, &mut laux);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for ((&q, &w), &v) in laux.iter().zip(w).zip(x) {
            let q = q as f32;
            sum_l += w * q;
            sum_l2 += w * q * q;
            sum_xl += w * q * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let cur_error = error(this_scale, this_min, &laux);
            if cur_error < best_error {
                l.copy_from_slice(&laux);
                (best_error, scale, min) = (cur_error, this_scale, this_min);
            }
        }
    }
    (scale, -min)
}
