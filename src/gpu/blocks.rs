//! GGUF blocks in the device layout the quantized kernels read (shaders/lib/quant.wgsl): which
//! formats are kept as stored, how wide a row is in texels, and one row's blocks re-laid so that
//! texels hold only quants and the scales sit in the row's tail.

use crate::weights::Format;

/// The block formats the matrix kernels read as stored (shaders/lib/quant.wgsl).
pub const QUANT_FORMATS: [Format; 8] = [
    Format::Q4_0,
    Format::Q4_1,
    Format::Q5_0,
    Format::Q5_1,
    Format::Q8_0,
    Format::Q4_K,
    Format::Q5_K,
    Format::Q6_K,
];

/// Texels a row of `cols` values takes in the device layout of a quantized `format` (its tail
/// begins after the quants, as `load_unit` in shaders/lib/quant.wgsl finds it).
pub fn row_texels(format: Format, cols: usize) -> usize {
    let (u, s) = (cols / 32, cols / 256);
    match format {
        Format::Q8_0 => 2 * u + u.div_ceil(8),
        Format::Q4_0 => u + u.div_ceil(8),
        Format::Q4_1 => u + u.div_ceil(4),
        Format::Q5_0 => u + (u.div_ceil(2) + u).div_ceil(4),
        Format::Q5_1 => u + u.div_ceil(2),
        Format::Q4_K => 9 * s,
        Format::Q5_K => 11 * s,
        Format::Q6_K => 13 * s + s.div_ceil(8),
        f => panic!("{f} has no device layout"),
    }
}

/// One row's GGUF blocks (`row`, whole blocks of `format`) in the device layout that
/// shaders/lib/quant.wgsl reads, as little-endian words (a whole number of texels): every texel
/// holds only quants, the per-block scales move to the row's tail. 32-value blocks: the quants
/// of each block (Q8_0: 32 bytes, the others 16 bytes of nibbles), then the tail: the scales, d
/// as f16 two a word (Q8_0, Q4_0, Q5_0) or d | m << 16 a word (Q4_1, Q5_1), then for Q5_0 and
/// Q5_1 qh a word a block. Q4_K and Q5_K super-blocks are already whole texels: as stored.
/// Q6_K: each super-block's first 208 bytes (ql, qh, scales), then the tail of its f16 d's.
/// The bytes are the file's; only their order changes (tests/gpu_kernels.rs decodes them on the
/// device against Format::decode).
pub fn device_row(format: Format, row: &[u8]) -> Vec<u32> {
    let (_, bb) = format.block();
    assert_eq!(row.len() % bb, 0, "{format}: a row of whole blocks");
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let words = |b: &[u8]| b.chunks_exact(4).map(word).collect::<Vec<u32>>();
    let half = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    let (mut body, mut halves, mut tail) = (vec![], vec![], vec![]);
    for b in row.chunks_exact(bb) {
        match format {
            Format::Q8_0 | Format::Q4_0 => {
                halves.push(half(b));
                body.extend(words(&b[2..]));
            }
            Format::Q5_0 => {
                halves.push(half(b));
                body.extend(words(&b[6..]));
            }
            Format::Q4_1 => {
                tail.push(word(b));
                body.extend(words(&b[4..]));
            }
            Format::Q5_1 => {
                tail.push(word(b));
                body.extend(words(&b[8..]));
            }
            Format::Q4_K | Format::Q5_K => body.extend(words(b)),
            Format::Q6_K => {
                halves.push(half(&b[208..]));
                body.extend(words(&b[..208]));
            }
            f => panic!("{f} has no device layout"),
        }
    }
    // f16 scales two a word, then (Q5_0, Q5_1) each block's qh
    body.extend(
        halves
            .chunks(2)
            .map(|p| u32::from(p[0]) | u32::from(*p.get(1).unwrap_or(&0)) << 16),
    );
    body.extend(tail);
    if matches!(format, Format::Q5_0 | Format::Q5_1) {
        let at = if format == Format::Q5_0 { 2 } else { 4 };
        body.extend(row.chunks_exact(bb).map(|b| word(&b[at..])));
    }
    body.resize(body.len().next_multiple_of(4), 0);
    body
}
