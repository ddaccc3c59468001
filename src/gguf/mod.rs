//! GGUF reader: header, metadata, tensor table, dequantisation, and the pieces needed to turn a
//! llama.cpp checkpoint into an HF-layout model (config, HF tensor names, tokenizer.json, chat
//! template).
//!
//! A GGUF file is untrusted input. Every count, length, dimension and offset is checked against
//! the bytes that are actually there (and against sane limits) before anything is allocated or
//! read, so a truncated or hostile file is an error, never a panic or a giant allocation.
//!
//! Layout (v2/v3, little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
//! n_kv × (string key, u32 type, value), n_tensors × (string name, u32 n_dims, n_dims × u64 ne,
//! u32 ggml_type, u64 offset), padding to `general.alignment`, then the tensor data.
//! `ne[0]` is the innermost (contiguous) dimension: an HF weight of shape [out, in] has ne = [in, out].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value as Json};

pub use crate::arch::unpermute_rows;
use crate::arch::Heads;
pub use crate::weights::Format;
use crate::weights::Tensor;

/// Limits that no real checkpoint comes near; they stop hostile counts before any allocation.
const MAX_DIMS: usize = 4;
/// llama.cpp's per-frequency RoPE divisors (Llama 3.1 scaling), read into the config.
const ROPE_FREQS: &str = "rope_freqs.weight";
const MAX_STRING_LEN: u64 = 1 << 26; // 64 MiB: chat templates are kilobytes
const MAX_ARRAY_DEPTH: usize = 2;
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Any integer type as u64 (negative values are not unsigned: None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            // Shortest decimal of the f32, so 1e-5 stored as f32 reads back as 1e-5.
            Value::F32(v) => format!("{v}").parse().ok(),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) if s.len() > 60 => {
                write!(f, "{:?}... ({} bytes)", s.chars().take(40).collect::<String>(), s.len())
            }
            Value::String(s) => write!(f, "{s:?}"),
            Value::Array(a) => write!(f, "[{} values]", a.len()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
            v => write!(
                f,
                "{}",
                v.as_u64().map(|x| x.to_string()).unwrap_or_else(|| format!("{v:?}"))
            ),
        }
    }
}

/// The tensor element types tinfer can dequantise: the weights' [`Format`] under ggml's name.
pub type GgmlType = Format;

impl Format {
    /// The format of a GGUF `ggml_type` id (ggml.h's enum).
    fn from_u32(t: u32) -> Result<Self> {
        Ok(match t {
            0 => Format::F32,
            1 => Format::F16,
            2 => Format::Q4_0,
            3 => Format::Q4_1,
            6 => Format::Q5_0,
            7 => Format::Q5_1,
            8 => Format::Q8_0,
            10 => Format::Q2_K,
            11 => Format::Q3_K,
            12 => Format::Q4_K,
            13 => Format::Q5_K,
            14 => Format::Q6_K,
            30 => Format::BF16,
            _ => bail!(
                "unsupported tensor type {t} ({}); tinfer reads F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, \
                 Q5_1, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: re-quantise the model to one of these with llama.cpp's llama-quantize",
                ggml_type_name(t)
            ),
        })
    }
}

fn ggml_type_name(t: u32) -> &'static str {
    // ggml.h's enum ggml_type, in order (31-33 and 36-38: the removed repacked Q4_0 and IQ4_NL)
    const NAMES: &str = "F32 F16 Q4_0 Q4_1 Q4_2 Q4_3 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ2_XXS \
        IQ2_XS IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 F64 IQ1_M BF16 Q4_0_4_4 Q4_0_4_8 Q4_0_8_8 \
        TQ1_0 TQ2_0 IQ4_NL_4_4 IQ4_NL_4_8 IQ4_NL_8_8 MXFP4";
    NAMES.split_whitespace().nth(t as usize).unwrap_or("unknown")
}

/// One entry of the tensor table; `offset` is relative to the start of the data section.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
    /// The shape as HF writes it: outermost first.
    pub fn hf_shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file, memory-mapped.
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    data: Arc<Bytes>,
    data_start: usize,
}

/// The file's bytes: memory-mapped from disk, or owned (tests, fuzzing).
enum Bytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mmap(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// A bounds-checked little-endian reader over the header.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            bail!(
                "file is truncated: reading {what} at byte {} needs {n} bytes but only {} remain",
                self.pos,
                self.remaining()
            );
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("take returned N bytes"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > MAX_STRING_LEN {
            bail!("{what} claims a length of {len} bytes (limit {MAX_STRING_LEN}): the file is corrupt");
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).with_context(|| format!("{what} is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("{what}: invalid bool byte {b}"),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    bail!("{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}");
                }
                let elem_ty = self.u32(what)?;
                let count = self.u64(what)?;
                // Every element takes at least this many bytes, so the count is bounded by the
                // bytes left before anything is allocated.
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => bail!("{what}: unknown metadata value type {t} in array"),
                };
                if count.checked_mul(min_size).is_none_or(|n| n > self.remaining()) {
                    bail!(
                        "{what}: array claims {count} elements but only {} bytes remain: the file is truncated or corrupt",
                        self.remaining()
                    );
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => bail!("{what}: unknown metadata value type {t}"),
        })
    }
}

impl Gguf {
    /// Memory-map and parse a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: the map is read-only; tinfer does not modify model files while reading them.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
        Self::parse(Bytes::Mmap(mmap), path).with_context(|| format!("{}: not a usable GGUF file", path.display()))
    }

    /// Parse a GGUF image held in memory (tests and fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Bytes::Owned(bytes), Path::new("<memory>"))
    }

    fn parse(data: Bytes, path: &Path) -> Result<Self> {
        let mut c = Cursor { buf: &data, pos: 0 };
        let magic = c.array::<4>("magic")?;
        if &magic != b"GGUF" {
            bail!(
                "wrong magic {:?} (expected \"GGUF\"): this is not a GGUF file",
                String::from_utf8_lossy(&magic)
            );
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            bail!("GGUF version {version} is not supported (tinfer reads versions 2 and 3)");
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor info at
        // least 8 + 4 + 8 + 4 + 8: bound both counts by the file size before looping.
        if n_kv.checked_mul(13).is_none_or(|n| n > c.remaining()) {
            bail!("header claims {n_kv} metadata entries, more than the file can hold: it is truncated or corrupt");
        }
        if n_tensors.checked_mul(32).is_none_or(|n| n > c.remaining()) {
            bail!("header claims {n_tensors} tensors, more than the file can hold: it is truncated or corrupt");
        }

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&format!("type of metadata {key:?}"))?;
            let value = c.value(ty, &format!("metadata {key:?}"), 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                bail!("metadata key {key:?} appears twice");
            }
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
                _ => bail!("general.alignment {v} is not a power of two up to 1 MiB"),
            },
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor name #{i}"))?;
            let n_dims = c.u32(&format!("dimension count of {name:?}"))? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                bail!("tensor {name:?} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)");
            }
            let mut ne = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                ne.push(c.u64(&format!("shape of {name:?}"))?);
            }
            let ty =
                GgmlType::from_u32(c.u32(&format!("type of {name:?}"))?).with_context(|| format!("tensor {name:?}"))?;
            let offset = c.u64(&format!("offset of {name:?}"))?;
            if ne.contains(&0) {
                bail!("tensor {name:?} has a dimension of 0 (shape {ne:?})");
            }
            let n_elements = ne
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .with_context(|| format!("tensor {name:?}: shape {ne:?} overflows"))?;
            let (block_elems, block_bytes) = ty.block();
            let (block_elems, block_bytes) = (block_elems as u64, block_bytes as u64);
            if ne[0] % block_elems != 0 {
                bail!(
                    "tensor {name:?}: row length {} is not a multiple of the {ty} block size {block_elems}",
                    ne[0]
                );
            }
            let n_bytes = (n_elements / block_elems)
                .checked_mul(block_bytes)
                .with_context(|| format!("tensor {name:?}: byte size overflows"))?;
            if offset % alignment != 0 {
                bail!("tensor {name:?}: offset {offset} is not aligned to {alignment} bytes");
            }
            tensors.push(TensorInfo {
                name,
                ne,
                ty,
                offset,
                n_bytes,
            });
        }

        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let data_len = (data.len() as u64).saturating_sub(data_start);
        for t in &tensors {
            let end = t.offset.checked_add(t.n_bytes);
            if end.is_none_or(|e| e > data_len) {
                bail!(
                    "tensor {:?} ({} bytes at data offset {}) runs past the end of the file ({} data bytes): the file is truncated",
                    t.name, t.n_bytes, t.offset, data_len
                );
            }
        }
        let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for w in by_offset.windows(2) {
            if w[0].offset + w[0].n_bytes > w[1].offset {
                bail!("tensors {:?} and {:?} overlap in the file", w[0].name, w[1].name);
            }
        }
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("tensor {:?} appears twice", w[0]);
        }

        Ok(Gguf {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_start: data_start as usize,
            data: Arc::new(data),
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .with_context(|| format!("metadata key {key:?} is missing: fetch or convert the file again"))
    }

    fn req_u64(&self, key: &str) -> Result<u64> {
        let v = self.require(key)?;
        v.as_u64()
            .with_context(|| format!("metadata {key:?} = {v} is not a non-negative integer"))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of one tensor (bounds were checked when the file was opened).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_start + t.offset as usize;
        &self.data[start..start + t.n_bytes as usize]
    }

    /// Dequantise one tensor to f32, in GGUF row order.
    pub fn dequantize(&self, t: &TensorInfo) -> Vec<f32> {
        dequantize(t.ty, self.tensor_bytes(t))
    }

    pub fn architecture(&self) -> Result<&str> {
        let v = self.require("general.architecture")?;
        v.as_str()
            .with_context(|| format!("general.architecture = {v} is not a string"))
    }

    /// The HF `config.json` this checkpoint corresponds to (llama architecture only).
    /// HF's rope_scaling from `{arch}.rope.scaling.*` (llama.cpp's names: type none / linear /
    /// yarn, factor, original_context_length, yarn_beta_fast / _slow), or null. A scaling
    /// tinfer cannot reproduce exactly is refused by name.
    fn rope_scaling(&self, arch: &str) -> Result<Json> {
        let key = |s: &str| format!("{arch}.rope.scaling.{s}");
        let num = |s: &str| self.get(&key(s)).and_then(Value::as_f64);
        let factor = num("factor").or_else(|| self.get(&format!("{arch}.rope.scale_linear")).and_then(Value::as_f64));
        let ty = self
            .get(&key("type"))
            .and_then(Value::as_str)
            .unwrap_or(if factor.is_some() { "linear" } else { "none" });
        for k in [
            "attn_factor",
            "yarn_attn_factor",
            "yarn_ext_factor",
            "yarn_log_multiplier",
        ] {
            if let Some(v) = num(k).filter(|v| !(k == "yarn_ext_factor" && *v < 0.0) && *v != 1.0) {
                bail!(
                    "{} = {v} is not supported (tinfer computes YaRN's attention factor as transformers does)",
                    key(k)
                );
            }
        }
        Ok(match ty {
            "none" => Json::Null,
            "linear" if factor.is_some_and(|f| f == 1.0) => Json::Null,
            "linear" => json!({"rope_type": "linear", "factor": factor}),
            "yarn" => json!({
                "rope_type": "yarn", "factor": factor,
                "original_max_position_embeddings": num("original_context_length"),
                "beta_fast": num("yarn_beta_fast"), "beta_slow": num("yarn_beta_slow"),
            }),
            other => bail!(
                "{} {other:?} is not supported (tinfer implements none, linear and yarn)",
                key("type")
            ),
        })
    }

    /// llama.cpp's `rope_freqs.weight` (f32, head_dim / 2): the divisors its converter stores
    /// for Llama 3.1's RoPE scaling, or null.
    fn rope_freq_factors(&self) -> Result<Json> {
        let Some(t) = self.tensor(ROPE_FREQS) else {
            return Ok(Json::Null);
        };
        ensure!(
            t.ty == Format::F32 && t.ne.len() == 1,
            "tensor {ROPE_FREQS} is {} {:?}, not a f32 vector",
            t.ty,
            t.ne
        );
        let v: Vec<f32> = self
            .tensor_bytes(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Ok(json!(v))
    }

    /// Every tensor with its HF name. Fails on tensors the architecture does not name.
    pub fn hf_tensors(&self) -> Result<Vec<(String, &TensorInfo)>> {
        let arch = self.arch()?;
        let mut out = Vec::with_capacity(self.tensors.len());
        let mut unknown = Vec::new();
        for t in self.tensors.iter().filter(|t| t.name != ROPE_FREQS) {
            match arch.gguf_to_hf(&t.name) {
                Some(n) => out.push((n, t)),
                None => unknown.push(t.name.as_str()),
            }
        }
        // llama.cpp before 2024 wrote Mixtral's experts one tensor each: blk.N.ffn_gate.E.weight
        let split_expert = |n: &&str| n.split('.').nth(3).is_some_and(|e| e.parse::<usize>().is_ok());
        if let Some(t) = unknown.iter().find(|n| split_expert(n)) {
            bail!(
                "tensor {t}: this GGUF holds each expert as its own tensor (llama.cpp's layout before 2024); \
                 convert the model again with a current llama.cpp, which stacks them (ffn_gate_exps)"
            );
        }
        if !unknown.is_empty() {
            let more = if unknown.len() > 6 {
                format!(" and {} more", unknown.len() - 6)
            } else {
                String::new()
            };
            bail!(
                "tensors tinfer does not know how to use: {}{more} (an architecture or a layout tinfer does not implement?)",
                unknown[..unknown.len().min(6)].join(", ")
            );
        }
        Ok(out)
    }

    /// One tensor in HF shape and row order, as stored: the file's bytes, mapped, except for
    /// the Q/K tensors GGUF stores permuted, whose rows (whole rows of blocks) are put back in
    /// HF order in an owned copy (see [`unpermute_rows`]). `cfg` is [`Gguf::hf_config`].
    pub fn hf_tensor(&self, t: &TensorInfo, cfg: &Json) -> Result<Tensor> {
        let shape = t.hf_shape();
        let start = self.data_start + t.offset as usize;
        let arch = self.arch()?;
        let heads = arch.parse_gguf(&t.name).and_then(|(f, _)| arch.gguf_heads(f));
        let Some(heads) = heads else {
            return Tensor::mapped(t.ty, shape, self.data.clone(), start, t.n_bytes as usize)
                .map_err(|e| anyhow::anyhow!("tensor {:?}: {e}", t.name));
        };
        let n_head = cfg[match heads {
            Heads::Query => "num_attention_heads",
            Heads::KeyValue => "num_key_value_heads",
        }]
        .as_u64()
        .unwrap_or(0) as usize;
        // A matrix permutes rows of ne[0] values; a bias (one dimension) permutes single values.
        let (rows, row_len) = if t.ne.len() == 1 {
            (t.ne[0] as usize, 1)
        } else {
            (t.n_elements() as usize / t.ne[0] as usize, t.ne[0] as usize)
        };
        ensure!(
            n_head > 0 && rows % n_head == 0 && (rows / n_head).is_multiple_of(2),
            "tensor {:?}: {rows} rows do not split into {n_head} heads of even size",
            t.name
        );
        let row_bytes = t.ty.bytes_for(row_len).with_context(|| {
            format!(
                "tensor {:?}: {} rows of {row_len} values cannot be reordered",
                t.name, t.ty
            )
        })?;
        let mut bytes = self.tensor_bytes(t).to_vec();
        unpermute_rows(&mut bytes, rows, row_bytes, n_head);
        Tensor::owned(t.ty, shape, bytes).map_err(|e| anyhow::anyhow!("tensor {:?}: {e}", t.name))
    }

    /// Dequantise a tensor to f32 in HF row order.
    pub fn hf_tensor_data(&self, t: &TensorInfo, cfg: &Json) -> Result<Vec<f32>> {
        Ok(self.hf_tensor(t, cfg)?.to_f32())
    }
}

/// GGUF tensor name -> HF tensor name (llama architecture).
pub fn hf_name(gguf: &str) -> Option<String> {
    crate::arch::LLAMA.gguf_to_hf(gguf)
}

/// Dequantise raw tensor bytes of type `ty` to f32 (computed in f32, as ggml does).
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let (block_elems, block_bytes) = ty.block();
    assert_eq!(
        bytes.len() % block_bytes,
        0,
        "{ty} data is not a whole number of blocks"
    );
    let mut out = vec![0f32; bytes.len() / block_bytes * block_elems];
    ty.decode(bytes, &mut out);
    out
}

mod config;
mod tokenizer;
pub use tokenizer::{VocabFacts, EOG_TEXTS};
