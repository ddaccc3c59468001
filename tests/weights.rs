//! Weight formats (src/weights.rs): GGUF block decoding against hand-made blocks, sizes,
//! shapes and the errors for bad tensors.

use std::borrow::Cow;
use std::sync::Arc;

use tinfer::weights::*;
/// xorshift64: random test bytes without importing the sampler (which imports cpu::ops,
/// which imports this module).
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Valid random bytes of `n` values in `format` (finite f16 scales, any quants).
fn random_bytes(format: Format, n: usize, rng: &mut Rng) -> Vec<u8> {
    let mut byte = || (rng.next_f64() * 256.0) as u8;
    let f16 = |rng_byte: &mut dyn FnMut() -> u8| half::f16::from_f32((rng_byte() as f32 - 128.0) / 64.0).to_le_bytes();
    let (be, bb) = format.block();
    let mut out = vec![];
    for _ in 0..n / be {
        match format {
            Format::F32 => out.extend(((byte() as f32 - 128.0) / 7.0).to_le_bytes()),
            Format::F16 => out.extend(f16(&mut byte)),
            Format::BF16 => out.extend(half::bf16::from_f32((byte() as f32 - 128.0) / 3.0).to_le_bytes()),
            Format::Q8_0 | Format::Q4_0 => {
                out.extend(f16(&mut byte));
                (2..bb).for_each(|_| out.push(byte()));
            }
            Format::Q4_1 | Format::Q5_1 | Format::Q4_K | Format::Q5_K => {
                out.extend(f16(&mut byte));
                out.extend(f16(&mut byte));
                (4..bb).for_each(|_| out.push(byte()));
            }
            Format::Q5_0 => {
                out.extend(f16(&mut byte));
                (2..bb).for_each(|_| out.push(byte()));
            }
            Format::Q6_K | Format::Q3_K => {
                (0..bb - 2).for_each(|_| out.push(byte()));
                out.extend(f16(&mut byte));
            }
            Format::Q2_K => {
                (0..bb - 4).for_each(|_| out.push(byte()));
                out.extend(f16(&mut byte));
                out.extend(f16(&mut byte));
            }
        }
    }
    out
}

/// The decoders as written before `Format::decode` (whole blocks, appended in order): an
/// independent reference for the element order within a block.
fn reference(format: Format, bytes: &[u8]) -> Vec<f32> {
    let f16_at = |b: &[u8], i: usize| half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    let mut out = vec![];
    match format {
        Format::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()))),
        Format::F16 => out.extend(bytes.chunks_exact(2).map(|b| f16_at(b, 0))),
        Format::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        Format::Q8_0 => {
            for b in bytes.chunks_exact(34) {
                out.extend(b[2..].iter().map(|&q| q as i8 as f32 * f16_at(b, 0)));
            }
        }
        Format::Q4_0 => {
            for b in bytes.chunks_exact(18) {
                let (d, qs) = (f16_at(b, 0), &b[2..]);
                out.extend(qs.iter().map(|&q| ((q & 0xF) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        Format::Q4_1 => {
            for b in bytes.chunks_exact(20) {
                let (d, m, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..]);
                out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        // Checked bit for bit against llama.cpp's and gguf-py's values in tests/gguf.rs;
        // here they only serve the row-slicing tests.
        Format::Q5_0 | Format::Q5_1 | Format::Q2_K | Format::Q3_K | Format::Q4_K | Format::Q5_K | Format::Q6_K => {
            let (be, bb) = format.block();
            out = vec![0.0; bytes.len() / bb * be];
            format.decode(bytes, &mut out);
        }
    }
    out
}

const FORMATS: [Format; 13] = [
    Format::F32,
    Format::F16,
    Format::BF16,
    Format::Q8_0,
    Format::Q4_0,
    Format::Q4_1,
    Format::Q5_0,
    Format::Q5_1,
    Format::Q2_K,
    Format::Q3_K,
    Format::Q4_K,
    Format::Q5_K,
    Format::Q6_K,
];

#[test]
fn rows_decode_as_the_whole_tensor() {
    let mut rng = Rng::new(7);
    for format in FORMATS {
        let be = format.block().0;
        // awkward shapes: odd row counts, rows of 1 or 3 blocks (37 values for plain floats)
        for (rows, cols) in [(1, be), (7, 3 * be), (13, if be == 1 { 37 } else { 3 * be })] {
            let bytes = random_bytes(format, rows * cols, &mut rng);
            let want = reference(format, &bytes);
            let t = Tensor::owned(format, vec![rows, cols], bytes.clone()).unwrap();
            assert_eq!((t.rows(), t.cols(), t.n_bytes()), (rows, cols, bytes.len()));
            let whole = t.to_f32();
            assert_eq!(whole.len(), want.len());
            assert!(
                whole.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{format}"
            );
            let mut row = vec![0f32; cols];
            for i in 0..rows {
                t.row_f32(i, &mut row);
                let w = &want[i * cols..(i + 1) * cols];
                assert!(
                    row.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{format} {rows}x{cols} row {i}"
                );
            }
            // the same bytes mapped at an odd offset of a shared file decode the same
            let mut file = vec![0xAAu8; 3];
            file.extend(&bytes);
            file.extend([0x55u8; 5]);
            let shared: SharedBytes = Arc::new(file);
            let m = Tensor::mapped(format, vec![rows, cols], shared, 3, bytes.len()).unwrap();
            assert!(m.to_f32().iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
            assert_eq!(m.as_f32(), None, "an unaligned view is refused");
        }
    }
}

#[test]
fn f32_views_are_zero_copy() {
    let values: Vec<f32> = (0..24).map(|i| i as f32 * 0.25 - 1.0).collect();
    let t = Tensor::from_f32(vec![4, 6], values.clone());
    assert_eq!(t.as_f32(), Some(&values[..]));
    // mapped at an aligned offset: the view points into the file
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let words: Vec<u32> = [vec![0u32; 2], bytemuck::cast_slice::<u8, u32>(&bytes).to_vec()].concat();
    let file: Vec<u8> = bytemuck::cast_slice(&words).to_vec();
    let shared: SharedBytes = Arc::new(file);
    let m = Tensor::mapped(Format::F32, vec![4, 6], shared.clone(), 8, 96).unwrap();
    if let Some(v) = m.as_f32() {
        assert_eq!(v, &values[..]);
        assert_eq!(v.as_ptr() as usize, (*shared).as_ref().as_ptr() as usize + 8);
    }
    assert_eq!(m.to_f32(), values);
    assert!(matches!(m.f32s(), Cow::Borrowed(_)) || m.as_f32().is_none());
    assert_eq!(Tensor::from_f32(vec![5], vec![1.0; 5]).rows(), 1);
}

#[test]
fn bad_shapes_are_refused() {
    let shared: SharedBytes = Arc::new(vec![0u8; 100]);
    // rows that are not whole blocks, byte counts that do not match, ranges past the end
    assert!(Tensor::mapped(Format::Q8_0, vec![2, 16], shared.clone(), 0, 34).is_err());
    assert!(Tensor::mapped(Format::F32, vec![2, 4], shared.clone(), 0, 36).is_err());
    assert!(Tensor::mapped(Format::F16, vec![2, 20], shared.clone(), 40, 80).is_err());
    assert!(Tensor::mapped(Format::F16, vec![2, 20], shared, 20, 80).is_ok());
}
