//! The quantizers (src/quant.rs) against llama.cpp's reference quantizers, byte for byte
//! (tests/fixtures/quant_cases.json, made by scripts/make-quant-cases.sh), then their round
//! trips through `Format::decode`.

mod common;
use common::*;

use proptest::prelude::*;
use tinfer::quant::{fallback_for, quantize, quantize_q4_k, quantize_q5_0, quantize_q8_0};
use tinfer::weights::Format;

fn decode(format: Format, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    format.decode(bytes, &mut out);
    out
}

#[test]
fn blocks_equal_llama_cpp_reference_quantizers() {
    let fixture = read_json(&fixtures().join("quant_cases.json"));
    let mut checked = [0, 0, 0];
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let format = match case["type"].as_str().unwrap() {
            "Q8_0" => Format::Q8_0,
            "Q4_K" => Format::Q4_K,
            "Q5_0" => Format::Q5_0,
            other => panic!("{name}: fixture type {other}"),
        };
        let x: Vec<f32> = case["x"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| f32::from_bits(u32::from_str_radix(h.as_str().unwrap(), 16).unwrap()))
            .collect();
        let got = match format {
            Format::Q8_0 => quantize_q8_0(&x),
            Format::Q5_0 => quantize_q5_0(&x),
            _ => quantize_q4_k(&x),
        };
        let want = hex(case["hex"].as_str().unwrap());
        assert_eq!(got.len(), want.len(), "{name} {format}: length");
        let bb = format.block().1;
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            let (block, at) = (i / bb, i % bb);
            panic!(
                "{name} {format}: block {block} byte {at}: got {:#04x}, want {:#04x}\n got block  {:02x?}\n want block {:02x?}",
                got[i],
                want[i],
                &got[block * bb..][..bb],
                &want[block * bb..][..bb]
            );
        }
        assert_eq!(quantize(format, &x).as_deref(), Some(&got[..]));
        checked[[Format::Q8_0, Format::Q4_K, Format::Q5_0]
            .iter()
            .position(|&f| f == format)
            .unwrap()] += 1;
    }
    assert!(
        checked.iter().all(|&n| n >= 10),
        "cases checked (Q8_0, Q4_K, Q5_0): {checked:?}"
    );
}

#[test]
fn fallback_follows_llama_quantize() {
    assert_eq!(fallback_for(Format::Q4_K, 4096), Some(Format::Q4_K));
    assert_eq!(fallback_for(Format::Q4_K, 896), Some(Format::Q5_0)); // Qwen2.5-0.5B
    assert_eq!(fallback_for(Format::Q6_K, 896), Some(Format::Q8_0));
    assert_eq!(fallback_for(Format::Q5_K, 1376), Some(Format::Q5_1));
    assert_eq!(fallback_for(Format::Q3_K, 96), Some(Format::Q4_0));
    assert_eq!(fallback_for(Format::Q4_K, 100), Some(Format::F16));
    assert_eq!(fallback_for(Format::Q8_0, 896), Some(Format::Q8_0));
    assert_eq!(fallback_for(Format::Q8_0, 100), None);
    assert_eq!(fallback_for(Format::F16, 7), Some(Format::F16));
}

#[test]
#[should_panic(expected = "not whole blocks of 256")]
fn q4_k_refuses_partial_blocks() {
    quantize_q4_k(&[0.0; 896]);
}

/// Rows of 256·k values: uniform in ±1 times a scale 10^e (e in -4..=4), with outliers (×20) and
/// zeros. From e = -3 down, Q8_0's d is an f16 subnormal.
fn rows(max_blocks: usize) -> impl Strategy<Value = Vec<f32>> {
    (1..=max_blocks, -4i32..=4).prop_flat_map(|(blocks, e)| {
        let scale = 10f32.powi(e);
        let value = prop_oneof![
            8 => (-1f32..1f32).prop_map(move |v| v * scale),
            1 => (-20f32..20f32).prop_map(move |v| v * scale),
            1 => Just(0f32),
        ];
        prop::collection::vec(value, 256 * blocks)
    })
}

/// Q8_0 error bound per block, derived: half a step d = amax / 127, plus |q| <= 127 times the f16
/// rounding of d (relative 2^-11, or 2^-25 absolute among f16 subnormals); slack for f32 products.
fn q8_0_bound(block: &[f32]) -> f32 {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    (amax / 254.0 + 127.0 * (amax / 127.0 / 2048.0).max(2f32.powi(-25))) * 1.0001
}

/// Q4_K error bound per super-block, measured rather than derived (6-bit scales and mins, then
/// the clamp to 0..=15, can cost more than half a step): one 15-level step of the super-block's
/// range max - min(min, 0). The worst seen over 20000 random super-blocks was 0.66 of it.
fn q4_k_bound(block: &[f32]) -> f32 {
    let max = block.iter().fold(0f32, |m, &v| m.max(v));
    let min = block.iter().fold(0f32, |m, &v| m.min(v));
    (max - min) / 15.0 * 1.0001
}

fn check_bound(format: Format, x: &[f32], y: &[f32], bound: fn(&[f32]) -> f32) -> Result<(), TestCaseError> {
    let n = format.block().0;
    for (b, (xb, yb)) in x.chunks(n).zip(y.chunks(n)).enumerate() {
        let limit = bound(xb);
        for (i, (a, q)) in xb.iter().zip(yb).enumerate() {
            prop_assert!(
                (a - q).abs() <= limit,
                "{format} block {b}[{i}]: {a} -> {q}, error {} > {limit}",
                (a - q).abs()
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn q8_0_round_trip_is_bounded_and_idempotent(x in rows(3)) {
        let q = quantize_q8_0(&x);
        let y = decode(Format::Q8_0, &q, x.len());
        check_bound(Format::Q8_0, &x, &y, q8_0_bound)?;
        // decoded values re-quantize to the same bytes: 127·f16(d) / 127 is exact. (Not where
        // f16(d) underflows to 0, amax < 127·2^-25, when the stored quants are lost on decoding.)
        prop_assert_eq!(quantize_q8_0(&y), q);
    }

    /// No idempotence here: llama.cpp's Q4_K re-quantizes its own decoded blocks to other bytes
    /// about a third of the time (2000 random super-blocks through quantize_row_q4_K_ref,
    /// dequantize_row_q4_K, quantize_row_q4_K_ref: 653 differ), as make_qkx2_quants refits.
    #[test]
    fn q4_k_round_trip_is_bounded(x in rows(3)) {
        let q = quantize_q4_k(&x);
        let y = decode(Format::Q4_K, &q, x.len());
        check_bound(Format::Q4_K, &x, &y, q4_k_bound)?;
    }
}
