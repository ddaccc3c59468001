//! The model's parameters, with short math names and shapes beside them. Checkpoint tensor names
//! live in `arch.rs`. Generic over the storage `T`: the loader fills it with [`Tensor`]s (matrices
//! as stored in the file, memory-mapped), the GPU holds the same struct shape with device buffers.

use std::borrow::Cow;
use std::sync::Arc;

use half::{bf16, f16};

/// One transformer block. Matrices are row-major [out, in], as in HF checkpoints: y = W x.
#[derive(Clone, Debug)]
pub struct Layer<T> {
    pub attn_norm: T,      // (dim,)
    pub wq: T,             // (n_heads * head_dim, dim)
    pub wk: T,             // (n_kv_heads * head_dim, dim)
    pub wv: T,             // (n_kv_heads * head_dim, dim)
    pub wo: T,             // (dim, n_heads * head_dim)
    pub bq: Option<T>,     // (n_heads * head_dim,)    qwen2 / attention_bias
    pub bk: Option<T>,     // (n_kv_heads * head_dim,)
    pub bv: Option<T>,     // (n_kv_heads * head_dim,)
    pub bo: Option<T>,     // (dim,)                   llama attention_bias only
    pub q_norm: Option<T>, // (head_dim,)          qwen3: RMSNorm of each query head before RoPE
    pub k_norm: Option<T>, // (head_dim,)          qwen3: the same for each key head
    pub ffn_norm: T,       // (dim,)
    /// The SwiGLU FFN every token runs: a dense layer's MLP (hidden_dim), or an MoE block's
    /// shared expert (Qwen2-MoE, shared_hidden); None in an MoE block without one.
    pub mlp: Option<Mlp<T>>,
    /// A Mixture-of-Experts block (config::MoeConfig); None in a dense layer.
    pub moe: Option<Moe<T>>,
}

/// A SwiGLU FFN: down · (silu(gate · x) * (up · x)).
#[derive(Clone, Debug)]
pub struct Mlp<T> {
    pub gate: T, // (h, dim)
    pub up: T,   // (h, dim)
    pub down: T, // (dim, h)
}

/// A Mixture-of-Experts block (HF `MixtralSparseMoeBlock`, `Qwen2MoeSparseMoeBlock`): the
/// router and one SwiGLU FFN of MoeConfig::hidden per expert.
#[derive(Clone, Debug)]
pub struct Moe<T> {
    pub router: T,              // (n_experts, dim)
    pub shared_gate: Option<T>, // (1, dim) Qwen2-MoE: the shared expert's output times sigmoid(x · it)
    pub gate: Vec<T>,           // n_experts × (hidden, dim)
    pub up: Vec<T>,             // n_experts × (hidden, dim)
    pub down: Vec<T>,           // n_experts × (dim, hidden)
}

#[derive(Clone, Debug)]
pub struct Weights<T> {
    pub embed: T, // (vocab_size, dim)
    pub layers: Vec<Layer<T>>,
    pub norm: T,            // (dim,)
    pub lm_head: Option<T>, // (vocab_size, dim); None when tied to `embed`
}

impl<T> Weights<T> {
    /// The LM head: its own matrix, or the embedding when they are tied.
    pub fn lm_head(&self) -> &T {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }
}

/// How a tensor's elements are stored, by GGUF's type names (`ggml_type` in ggml.h). The block
/// layouts are those of ggml-quants.c (`dequantize_row_q8_0`, `_q4_0`, `_q4_1`) and the GGUF spec;
/// all little-endian.
#[allow(non_camel_case_types)] // GGUF's type names (Q4_K), as llama.cpp spells them
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// 4-byte IEEE float.
    F32,
    /// 2-byte IEEE half.
    F16,
    /// 2-byte bfloat16 (the high half of an f32).
    BF16,
    /// Blocks of 32: f16 scale d, 32 × i8 q; x = q·d. 34 bytes.
    Q8_0,
    /// Blocks of 32: f16 scale d, 16 bytes of nibbles; element j < 16 is the low nibble of byte
    /// j, element 16 + j its high nibble; x = (q - 8)·d. 18 bytes.
    Q4_0,
    /// Blocks of 32: f16 scale d, f16 minimum m, 16 bytes of nibbles (as Q4_0); x = q·d + m.
    /// 20 bytes.
    Q4_1,
    /// Blocks of 32: f16 d, 4 bytes qh (bit j: the 5th bit of element j), 16 bytes of nibbles
    /// (as Q4_0); x = (q - 16)·d. 22 bytes.
    Q5_0,
    /// Blocks of 32: f16 d, f16 m, qh, nibbles (as Q5_0); x = q·d + m. 24 bytes.
    Q5_1,
    /// Super-blocks of 256 = 8 sub-blocks of 32: f16 d, f16 dmin, 12 bytes of 6-bit sub-block
    /// scales and mins, 128 bytes of nibbles (each 32 bytes: a sub-block pair, low then high
    /// nibbles); x = d·sc·q - dmin·m. 144 bytes.
    Q4_K,
    /// Super-blocks of 256: f16 d, f16 dmin, 12 bytes of scales and mins (as Q4_K), 32 bytes qh
    /// (the 5th bits), 128 bytes of nibbles (as Q4_K); x = d·sc·q - dmin·m. 176 bytes.
    Q5_K,
    /// Super-blocks of 256 = 16 sub-blocks of 16: 128 bytes of low nibbles, 64 bytes of high
    /// 2-bit pairs, 16 × i8 scales, f16 d; x = d·sc·(q - 32). 210 bytes.
    Q6_K,
    /// Super-blocks of 256 = 16 sub-blocks of 16: 16 bytes of 4-bit scale and min pairs, 64
    /// bytes of 2-bit quants, f16 d, f16 dmin; x = d·sc·q - dmin·m. 84 bytes.
    Q2_K,
    /// Super-blocks of 256 = 16 sub-blocks of 16: 32 bytes hmask (the 3rd bits), 64 bytes of
    /// 2-bit quants, 12 bytes of 6-bit scales, f16 d; x = d·(sc - 32)·(q - 4·!h). 110 bytes.
    Q3_K,
}

impl Format {
    /// (elements per block, bytes per block); a plain float is a block of one.
    pub fn block(self) -> (usize, usize) {
        match self {
            Format::F32 => (1, 4),
            Format::F16 | Format::BF16 => (1, 2),
            Format::Q4_0 => (32, 18),
            Format::Q4_1 => (32, 20),
            Format::Q8_0 => (32, 34),
            Format::Q5_0 => (32, 22),
            Format::Q5_1 => (32, 24),
            Format::Q4_K => (256, 144),
            Format::Q5_K => (256, 176),
            Format::Q6_K => (256, 210),
            Format::Q2_K => (256, 84),
            Format::Q3_K => (256, 110),
        }
    }

    /// Whether elements come in blocks with shared scales (Q8_0 … Q6_K), not one by one.
    pub fn is_quantized(self) -> bool {
        self.block().0 > 1
    }

    /// Bytes that `n` elements take; None when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (be, bb) = self.block();
        n.is_multiple_of(be).then_some(n / be * bb)
    }

    /// Decode whole blocks of `bytes` into `out` (`out.len()` elements; computed in f32, as ggml
    /// does, so the values are exactly those of llama.cpp's dequantisation: ggml-quants.c's
    /// `dequantize_row_*`).
    pub fn decode(self, bytes: &[u8], out: &mut [f32]) {
        assert_eq!(
            Some(bytes.len()),
            self.bytes_for(out.len()),
            "{self:?}: {} bytes do not hold {} values",
            bytes.len(),
            out.len()
        );
        let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
        match self {
            Format::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes(b.try_into().unwrap());
                }
            }
            Format::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16_at(b, 0);
                }
            }
            Format::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            Format::Q8_0 => {
                for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
                    let d = f16_at(b, 0);
                    for (o, &q) in o.iter_mut().zip(&b[2..]) {
                        *o = q as i8 as f32 * d;
                    }
                }
            }
            Format::Q4_0 => {
                for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(18)) {
                    let (d, qs) = (f16_at(b, 0), &b[2..]);
                    for (j, &q) in qs.iter().enumerate() {
                        o[j] = ((q & 0xF) as i32 - 8) as f32 * d;
                        o[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                    }
                }
            }
            Format::Q4_1 => {
                for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(20)) {
                    let (d, m, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..]);
                    for (j, &q) in qs.iter().enumerate() {
                        o[j] = (q & 0xF) as f32 * d + m;
                        o[j + 16] = (q >> 4) as f32 * d + m;
                    }
                }
            }
            Format::Q5_0 | Format::Q5_1 => {
                let bb = self.block().1;
                for (o, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(bb)) {
                    let (d, m, at) = match self {
                        Format::Q5_1 => (f16_at(b, 0), f16_at(b, 2), 4),
                        _ => (f16_at(b, 0), 0.0, 2),
                    };
                    let qh = u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
                    for (j, &q) in b[at + 4..].iter().enumerate() {
                        let lo = (q & 0xF) as u32 | ((qh >> j) << 4) & 0x10;
                        let hi = (q >> 4) as u32 | (qh >> (j + 12)) & 0x10;
                        if self == Format::Q5_0 {
                            o[j] = (lo as i32 - 16) as f32 * d;
                            o[j + 16] = (hi as i32 - 16) as f32 * d;
                        } else {
                            o[j] = lo as f32 * d + m;
                            o[j + 16] = hi as f32 * d + m;
                        }
                    }
                }
            }
            Format::Q4_K | Format::Q5_K => {
                let bb = self.block().1;
                for (o, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(bb)) {
                    let (d, dmin, scales) = (f16_at(b, 0), f16_at(b, 2), &b[4..16]);
                    let (qh, qs) = match self {
                        Format::Q5_K => (Some(&b[16..48]), &b[48..]),
                        _ => (None, &b[16..]),
                    };
                    // 64 values per step: sub-blocks 2i (low nibbles) and 2i + 1 (high nibbles)
                    for i in 0..4 {
                        let q = &qs[32 * i..32 * i + 32];
                        for half in 0..2 {
                            let (sc, m) = k_scale_min(2 * i + half, scales);
                            let (d1, m1) = (d * sc as f32, dmin * m as f32);
                            for l in 0..32 {
                                let mut v = if half == 0 { q[l] & 0xF } else { q[l] >> 4 };
                                if let Some(qh) = qh {
                                    v += ((qh[l] >> (2 * i + half)) & 1) << 4;
                                }
                                o[64 * i + 32 * half + l] = d1 * v as f32 - m1;
                            }
                        }
                    }
                }
            }
            Format::Q2_K => {
                for (o, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(84)) {
                    let (scales, qs, d, dmin) = (&b[..16], &b[16..80], f16_at(b, 80), f16_at(b, 82));
                    decode_2bit(qs, o, |i, q, _| {
                        let sc = scales[i / 16];
                        let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
                        dl * q as f32 - ml
                    });
                }
            }
            Format::Q3_K => {
                for (o, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(110)) {
                    let (hmask, qs, packed, d) = (&b[..32], &b[32..96], &b[96..108], f16_at(b, 108));
                    // 16 six-bit scales: low 4 bits from bytes 0..8, high 2 bits from bytes 8..12
                    let scale = |j: usize| {
                        let low = (packed[j % 8] >> (4 * (j / 8))) & 0xF;
                        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
                        (low | high << 4) as i32 - 32
                    };
                    decode_2bit(qs, o, |i, q, l| {
                        let dl = d * scale(i / 16) as f32;
                        let h = hmask[l] >> (i / 32) & 1; // bit m = 1 << (i / 32)
                        dl * (q as i32 - if h == 1 { 0 } else { 4 }) as f32
                    });
                }
            }
            Format::Q6_K => {
                for (o, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(210)) {
                    let d = f16_at(b, 208);
                    for n in 0..2 {
                        let (ql, qh, sc) = (
                            &b[64 * n..64 * n + 64],
                            &b[128 + 32 * n..160 + 32 * n],
                            &b[192 + 8 * n..200 + 8 * n],
                        );
                        let y = &mut o[128 * n..128 * n + 128];
                        for l in 0..32 {
                            let is = l / 16;
                            let q = |low: u8, shift: u32| (low | ((qh[l] >> shift) & 3) << 4) as i32 - 32;
                            let q1 = q(ql[l] & 0xF, 0);
                            let q2 = q(ql[l + 32] & 0xF, 2);
                            let q3 = q(ql[l] >> 4, 4);
                            let q4 = q(ql[l + 32] >> 4, 6);
                            y[l] = d * sc[is] as i8 as f32 * q1 as f32;
                            y[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                            y[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                            y[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
                        }
                    }
                }
            }
        }
    }
}

/// Q2_K and Q3_K: 256 values from 64 bytes of 2-bit quants `qs` in ggml's order (two halves of
/// 128; in each, four shifts over 32 bytes; 16 values per scale), `value(i, q, l)` giving
/// element `i`'s value from its 2-bit quant `q` and its byte index `l` within the 32.
fn decode_2bit(qs: &[u8], out: &mut [f32], mut value: impl FnMut(usize, u8, usize) -> f32) {
    for n in 0..2 {
        let q = &qs[32 * n..32 * n + 32];
        for shift in 0..4 {
            for (l, &byte) in q.iter().enumerate() {
                let i = 128 * n + 32 * shift + l;
                out[i] = value(i, (byte >> (2 * shift)) & 3, l);
            }
        }
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K super-block from its 12
/// packed bytes (ggml-quants.c's `get_scale_min_k4`).
pub(crate) fn k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

/// A file's bytes shared by every tensor that lives in it (a memory map, or owned bytes in tests).
pub type SharedBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

#[derive(Clone)]
enum Storage {
    /// `len` bytes at `start` of a mapped file: nothing copied.
    Mapped {
        file: SharedBytes,
        start: usize,
        len: usize,
    },
    /// Bytes transformed at load (GGUF Q/K rows put in HF order).
    Owned(Vec<u8>),
    /// f32 values (synthetic and test tensors, transformed F32 tensors): always aligned.
    F32(Vec<f32>),
}

/// A tensor as stored: `shape` outermost first (HF order, e.g. (rows, cols) = (out, in) for a
/// matrix, (n,) for a vector), elements in `format`, rows contiguous, each row a whole number of
/// blocks. Matrices stay in their file format; rows are decoded to f32 where they are used.
#[derive(Clone)]
pub struct Tensor {
    pub format: Format,
    pub shape: Vec<usize>,
    bytes: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}, {} bytes)",
            self.format,
            self.shape,
            self.n_bytes()
        )
    }
}

impl Tensor {
    /// A tensor of `shape` whose bytes are `file[start..start + len]` (checked: the range must
    /// be inside the file, hold exactly the shape's elements, and each row whole blocks).
    pub fn mapped(
        format: Format,
        shape: Vec<usize>,
        file: SharedBytes,
        start: usize,
        len: usize,
    ) -> Result<Self, String> {
        let t = Tensor {
            format,
            shape,
            bytes: Storage::Mapped { file, start, len },
        };
        t.check()?;
        let file_len = match &t.bytes {
            Storage::Mapped { file, .. } => (**file).as_ref().len(),
            _ => unreachable!(),
        };
        if start.checked_add(len).is_none_or(|end| end > file_len) {
            return Err(format!(
                "bytes {start}..+{len} are past the end of the file ({file_len})"
            ));
        }
        Ok(t)
    }

    /// A tensor of `shape` owning `bytes` in `format` (checked as [`Tensor::mapped`]).
    pub fn owned(format: Format, shape: Vec<usize>, bytes: Vec<u8>) -> Result<Self, String> {
        let bytes = if format == Format::F32 {
            Storage::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            )
        } else {
            Storage::Owned(bytes)
        };
        let t = Tensor { format, shape, bytes };
        t.check()?;
        Ok(t)
    }

    /// An F32 tensor holding `values` (synthetic weights, tests).
    pub fn from_f32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            values.len(),
            "from_f32: shape {shape:?}"
        );
        Tensor {
            format: Format::F32,
            shape,
            bytes: Storage::F32(values),
        }
    }

    fn check(&self) -> Result<(), String> {
        let n: usize = self.shape.iter().product();
        let row = self.format.bytes_for(self.cols());
        if row.is_none() {
            let be = self.format.block().0;
            return Err(format!(
                "{} rows of {} values are not whole {:?} blocks of {be}",
                self.rows(),
                self.cols(),
                self.format
            ));
        }
        let want = self.format.bytes_for(n).unwrap_or(usize::MAX);
        if self.n_bytes() != want {
            return Err(format!(
                "{:?} {:?} needs {want} bytes, has {}",
                self.format,
                self.shape,
                self.n_bytes()
            ));
        }
        Ok(())
    }

    /// The stored bytes, rows one after another.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Storage::Mapped { file, start, len } => &(**file).as_ref()[*start..*start + *len],
            Storage::Owned(v) => v,
            Storage::F32(v) => bytemuck::cast_slice(v),
        }
    }

    /// Size of the stored bytes.
    pub fn n_bytes(&self) -> usize {
        match &self.bytes {
            Storage::Mapped { len, .. } => *len,
            Storage::Owned(v) => v.len(),
            Storage::F32(v) => v.len() * 4,
        }
    }

    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Elements per row: the innermost dimension (a vector is one row).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Rows: the product of the outer dimensions (1 for a vector).
    pub fn rows(&self) -> usize {
        self.shape[..self.shape.len().saturating_sub(1)].iter().product()
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.format.bytes_for(self.cols()).expect("checked at construction")
    }

    /// Rows `first..` as a tensor of `shape` (same columns; mapped bytes stay mapped, others are
    /// copied): one expert of a stacked (n_experts, rows, cols) tensor.
    pub fn rows_at(&self, first: usize, shape: Vec<usize>) -> Tensor {
        let (rb, cols) = (self.row_bytes(), self.cols());
        let n: usize = shape[..shape.len() - 1].iter().product();
        assert!(
            shape.last() == Some(&cols) && first + n <= self.rows(),
            "rows_at {first}+{n}"
        );
        let bytes = match &self.bytes {
            Storage::Mapped { file, start, .. } => Storage::Mapped {
                file: file.clone(),
                start: start + first * rb,
                len: n * rb,
            },
            Storage::Owned(v) => Storage::Owned(v[first * rb..(first + n) * rb].to_vec()),
            Storage::F32(v) => Storage::F32(v[first * cols..(first + n) * cols].to_vec()),
        };
        Tensor {
            format: self.format,
            shape,
            bytes,
        }
    }

    /// Decode row `i` into `out` (`cols()` values).
    pub fn row_f32(&self, i: usize, out: &mut [f32]) {
        assert!(i < self.rows(), "row {i} of {}", self.rows());
        let rb = self.row_bytes();
        self.format.decode(&self.bytes()[i * rb..(i + 1) * rb], out);
    }

    /// The values, row-major, as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        if let Some(v) = self.as_f32() {
            return v.to_vec();
        }
        let mut out = vec![0f32; self.len()];
        self.format.decode(self.bytes(), &mut out);
        out
    }

    /// The values without a copy when they are stored as aligned f32 on a little-endian host.
    pub fn as_f32(&self) -> Option<&[f32]> {
        if let Storage::F32(v) = &self.bytes {
            return Some(v);
        }
        if self.format != Format::F32 || cfg!(target_endian = "big") {
            return None;
        }
        bytemuck::try_cast_slice(self.bytes()).ok()
    }

    /// The values as f32: borrowed when [`Tensor::as_f32`] can, decoded otherwise (for vectors).
    pub fn f32s(&self) -> Cow<'_, [f32]> {
        match self.as_f32() {
            Some(v) => Cow::Borrowed(v),
            None => Cow::Owned(self.to_f32()),
        }
    }
}
