//! Loading a model: an HF directory (config.json + safetensors, single or sharded, + tokenizer
//! files) or a `.gguf` file. Tensor names come from `arch.rs`; tensors stay in the file's format,
//! memory-mapped (`weights::Tensor`): nothing is converted to f32 here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use crate::arch::{Arch, Field};
use crate::config::{token_ids, Config, HfConfig};
use crate::gguf::{Gguf, TensorInfo};
use crate::tokenizer::Tokenizer;
use crate::weights::{Format, Tensor, Weights};

/// Where tensors come from: HF names, HF shapes, tensors in HF row order (as stored).
pub trait TensorSource {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>>;
    fn load(&self, name: &str) -> Result<Tensor>;
    /// The stored dtypes, for `info` (e.g. "F32" or "Q4_1 x 210, F32 x 61").
    fn dtypes(&self) -> String;
}

/// A loaded model: resolved config, weights, and (if present) the tokenizer.
pub struct Loaded {
    pub cfg: Config,
    pub hf_config: Json,
    /// Taken by the model that runs them.
    pub weights: Option<Weights<Tensor>>,
    pub tokenizer: Option<Tokenizer>,
    /// Why there is no tokenizer, to say when a command needs one.
    pub tokenizer_error: Option<String>,
    pub source: String,
    pub dtypes: String,
    /// What tinfer had to assume because the file leaves it out (GGUF tokenizer metadata: see
    /// `gguf::VocabFacts`), one line each: the key, the assumption, what the user can do.
    /// Commands print them on stderr as `warning: ...`.
    pub warnings: Vec<String>,
}

/// Load a model from an HF directory or a `.gguf` file.
pub fn load(path: &Path) -> Result<Loaded> {
    if !path.exists() {
        bail!(
            "model path {} does not exist: give an HF model directory or a .gguf file (or fetch one with \
             scripts/fetch-model.sh)",
            path.display()
        );
    }
    if path.is_file() {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            return load_gguf(path);
        }
        bail!(
            "{}: --model takes an HF model directory (config.json + model.safetensors) or a .gguf file",
            path.display()
        );
    }
    load_dir(path)
}

/// Only the tokenizer (for `tokenize`): no weights are read.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        bail!(
            "model path {} does not exist: run scripts/fetch-model.sh, or pass --model",
            path.display()
        );
    }
    if path.is_dir() {
        return Tokenizer::from_dir(path);
    }
    let gguf = Gguf::open(path)?;
    let ctx_len = gguf
        .hf_config()
        .ok()
        .and_then(|c| c["max_position_embeddings"].as_u64())
        .unwrap_or(0);
    gguf.hf_tokenizer_json()
        .and_then(|j| Tokenizer::from_json(&j, &gguf.hf_tokenizer_config(ctx_len)))
        .with_context(|| format!("{}: no usable tokenizer", path.display()))
}

pub use crate::config::read_text;

fn load_dir(dir: &Path) -> Result<Loaded> {
    let config_path = dir.join("config.json");
    let text = read_text(&config_path, 1 << 20).with_context(|| {
        format!(
            "cannot read {}: an HF model directory needs a config.json",
            config_path.display()
        )
    })?;
    let hf_config: Json =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", config_path.display()))?;
    let mut cfg = HfConfig::from_json(&text)
        .and_then(|c| c.resolve())
        .with_context(|| format!("{}", config_path.display()))?;
    let src = Safetensors::open(dir)?;
    let weights =
        load_weights(&cfg, &src).with_context(|| format!("{}: weights do not match config.json", dir.display()))?;
    let (tokenizer, tokenizer_error) = match Tokenizer::from_dir(dir) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    add_generation_eos(&mut cfg, &dir.join("generation_config.json"), tokenizer.as_ref())?;
    Ok(Loaded {
        cfg,
        hf_config,
        weights: Some(weights),
        tokenizer,
        tokenizer_error,
        source: dir.display().to_string(),
        dtypes: src.dtypes(),
        warnings: vec![],
    })
}

fn load_gguf(path: &Path) -> Result<Loaded> {
    let gguf = Gguf::open(path)?;
    let ctx = || format!("{}", path.display());
    let hf_config = gguf.hf_config().with_context(ctx)?;
    let mut cfg = serde_json::from_value::<HfConfig>(hf_config.clone())?
        .resolve()
        .with_context(ctx)?;
    let src = GgufSource::new(&gguf, &hf_config).with_context(ctx)?;
    let weights =
        load_weights(&cfg, &src).with_context(|| format!("{}: tensors do not match its metadata", path.display()))?;
    let tok = gguf.hf_tokenizer_json().and_then(|j| {
        let tc = gguf.hf_tokenizer_config(cfg.seq_len as u64);
        Tokenizer::from_json(&j, &tc)
    });
    let (tokenizer, tokenizer_error) = match tok {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(format!("{}: {e:#}", path.display()))),
    };
    // Generation stops at the end-of-generation set: eos, eot, eom, or llama.cpp's fallback.
    let facts = gguf.vocab_facts();
    cfg.eos_token_ids = facts.eog;
    let dtypes = src.dtypes();
    Ok(Loaded {
        cfg,
        hf_config,
        weights: Some(weights),
        tokenizer,
        tokenizer_error,
        source: path.display().to_string(),
        dtypes,
        warnings: facts.warnings,
    })
}

/// generation_config.json's eos ids decide where HF's `generate` stops; add them.
fn add_generation_eos(cfg: &mut Config, path: &Path, tok: Option<&Tokenizer>) -> Result<()> {
    let mut ids = vec![];
    if let Ok(text) = read_text(path, 1 << 20) {
        let j: Json = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
        ids = token_ids(j.get("eos_token_id"));
    }
    if ids.is_empty() && cfg.eos_token_ids.is_empty() {
        // Neither config names an EOS: fall back to the tokenizer's eos_token.
        ids.extend(tok.and_then(|t| t.eos_token_id()));
    }
    cfg.eos_token_ids.extend(ids);
    cfg.eos_token_ids.sort_unstable();
    cfg.eos_token_ids.dedup();
    Ok(())
}

/// Every field of `cfg`'s weights by its checkpoint name (from `arch`). Every missing tensor,
/// wrong shape and unexpected tensor is collected and reported in one error.
pub fn load_weights(cfg: &Config, src: &dyn TensorSource) -> Result<Weights<Tensor>> {
    let arch = Arch::for_hf(&cfg.model_type)
        .with_context(|| format!("no tensor names for model_type {:?}", cfg.model_type))?;
    let shapes = src.shapes();
    let mut problems: Vec<String> = vec![];
    let mut used = BTreeSet::new();
    let mut loaded = BTreeMap::new();
    let mut experts = BTreeMap::new();
    let load = |name: &str, problems: &mut Vec<String>| match src.load(name) {
        Ok(x) => Some(x),
        Err(e) => {
            problems.push(format!("tensor {name}: {e:#}"));
            None
        }
    };
    let fields = Field::GLOBAL
        .iter()
        .map(|&f| (f, 0))
        .chain((0..cfg.n_layers).flat_map(|l| Field::LAYER.iter().map(move |&f| (f, l))));
    for (f, l) in fields {
        if !f.present(cfg, l) {
            continue;
        }
        let (name, shape) = (arch.hf_name(f, l), f.shape(cfg));
        if Field::EXPERTS.contains(&f) {
            // a stacked (n_experts, ..) tensor (GGUF, converted files), or one per expert (HF)
            let n = cfg.moe.as_ref().map_or(0, |m| m.n_experts);
            let stacked: Vec<usize> = [n].iter().chain(&shape).copied().collect();
            let list = match shapes.get(&name) {
                Some(s) if *s == stacked => {
                    used.insert(name.clone());
                    load(&name, &mut problems).map(|t| (0..n).map(|e| t.rows_at(e * shape[0], shape.clone())).collect())
                }
                Some(s) => {
                    used.insert(name.clone()); // reported here, not again as unexpected
                    problems.push(format!(
                        "tensor {name} has shape {s:?}, config.json implies {stacked:?}"
                    ));
                    None
                }
                None => (0..n)
                    .map(|e| {
                        let name = arch.hf_expert_name(f, l, e);
                        match shapes.get(&name) {
                            None => problems.push(format!("missing tensor {name} {shape:?}")),
                            Some(s) if *s != shape => {
                                used.insert(name.clone());
                                problems.push(format!("tensor {name} has shape {s:?}, config.json implies {shape:?}"))
                            }
                            Some(_) => {
                                used.insert(name.clone());
                                return load(&name, &mut problems);
                            }
                        }
                        None
                    })
                    // every expert looked at (each problem reported), then all or none
                    .collect::<Vec<_>>()
                    .into_iter()
                    .collect(),
            };
            if let Some(list) = list {
                experts.insert((f as usize, l), list);
            }
            continue;
        }
        match shapes.get(&name) {
            None => problems.push(format!("missing tensor {name} {shape:?}")),
            // GGUF keeps the shared expert's gate (1, dim) as a vector
            Some(s) if *s != shape && !(f == Field::ShGateInp && *s == shape[1..]) => {
                used.insert(name.clone());
                problems.push(format!("tensor {name} has shape {s:?}, config.json implies {shape:?}"))
            }
            Some(_) => {
                used.insert(name.clone());
                match load(&name, &mut problems) {
                    // a NaN router would pick experts differently on every device: refused
                    Some(x)
                        if matches!(f, Field::Router | Field::ShGateInp)
                            && !x.to_f32().iter().all(|v| v.is_finite()) =>
                    {
                        problems.push(format!("tensor {name} holds NaN or infinite values"))
                    }
                    Some(x) => {
                        loaded.insert((f as usize, l), x);
                    }
                    None => {}
                }
            }
        }
    }
    // Tensors the model would silently ignore mean the architecture is not what we think
    // (rotary inv_freq buffers and a tied model's redundant lm_head are harmless).
    let lm_head = arch.hf_name(Field::LmHead, 0);
    let unexpected: Vec<&String> = shapes
        .keys()
        .filter(|n| {
            let harmless = arch.hf_ignored(n) || (**n == lm_head && cfg.tied_embeddings);
            !used.contains(*n) && !harmless
        })
        .collect();
    if !unexpected.is_empty() {
        let list: Vec<&str> = unexpected.iter().take(8).map(|s| s.as_str()).collect();
        problems.push(format!(
            "{} unexpected tensor(s), e.g. {} (an architecture tinfer does not implement?)",
            unexpected.len(),
            list.join(", ")
        ));
    }
    if !problems.is_empty() {
        bail!("{}", one_line(&problems));
    }
    let w = Weights::from_fn(
        cfg,
        |f, l| loaded.remove(&(f as usize, l)),
        |f, l| experts.remove(&(f as usize, l)),
    );
    Ok(w.expect("every present field was loaded"))
}

/// The `Format` of a safetensors dtype: F32, F16 or BF16; others refused.
pub fn st_format(dtype: Dtype) -> Result<Format> {
    match dtype {
        Dtype::F32 => Ok(Format::F32),
        Dtype::F16 => Ok(Format::F16),
        Dtype::BF16 => Ok(Format::BF16),
        dt => bail!("dtype {dt:?} is not supported (tinfer reads F32, F16 and BF16 safetensors)"),
    }
}

/// A safetensors tensor's values as f32 (F32, F16 or BF16, decoded by `Format::decode`).
pub fn st_values(view: &safetensors::tensor::TensorView) -> Result<Vec<f32>> {
    let t = Tensor::owned(st_format(view.dtype())?, view.shape().to_vec(), view.data().to_vec())
        .map_err(anyhow::Error::msg)?;
    Ok(t.to_f32())
}

/// Problems in one line: the first four, then how many more.
pub fn one_line(problems: &[String]) -> String {
    let more = problems.len().saturating_sub(4);
    let msg = problems[..problems.len().min(4)].join("; ");
    if more > 0 {
        format!("{msg}; and {more} more")
    } else {
        msg
    }
}

/// Memory-mapped safetensors: `model.safetensors`, or shards listed in
/// `model.safetensors.index.json`.
pub struct Safetensors {
    maps: Vec<(PathBuf, Arc<memmap2::Mmap>)>,
    /// tensor name -> (index into maps, shape, dtype, byte range in the file)
    index: BTreeMap<String, (usize, Vec<usize>, Dtype, std::ops::Range<usize>)>,
}

impl Safetensors {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if single.exists() {
            vec![single]
        } else if index_path.exists() {
            let text =
                read_text(&index_path, 64 << 20).with_context(|| format!("cannot read {}", index_path.display()))?;
            let j: Json =
                serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", index_path.display()))?;
            let map = j
                .get("weight_map")
                .and_then(Json::as_object)
                .with_context(|| format!("{} has no weight_map", index_path.display()))?;
            let mut shards = BTreeSet::new();
            for (name, file) in map {
                let f = file
                    .as_str()
                    .with_context(|| format!("{}: shard of {name} is not a string", index_path.display()))?;
                if f.contains('/') || f.contains('\\') || f.contains("..") {
                    bail!(
                        "{}: shard name {f:?} must be a file name in the model directory",
                        index_path.display()
                    );
                }
                shards.insert(f.to_string());
            }
            let files: Vec<PathBuf> = shards.iter().map(|f| dir.join(f)).collect();
            let missing: Vec<String> = files
                .iter()
                .filter(|p| !p.exists())
                .map(|p| p.display().to_string())
                .collect();
            if !missing.is_empty() {
                bail!(
                    "{} names shard(s) that do not exist: {}",
                    index_path.display(),
                    missing.join(", ")
                );
            }
            files
        } else {
            bail!(
                "{} has no model.safetensors or model.safetensors.index.json (for a .gguf file, pass the file itself)",
                dir.display()
            );
        };
        let mut maps = vec![];
        let mut index = BTreeMap::new();
        for (i, path) in files.into_iter().enumerate() {
            let file = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: read-only map of a file we do not modify while it is mapped.
            let mmap =
                unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {}", path.display()))?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
            for (name, view) in st.tensors() {
                let start = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
                let range = start..start + view.data().len();
                if index
                    .insert(name.clone(), (i, view.shape().to_vec(), view.dtype(), range))
                    .is_some()
                {
                    bail!("tensor {name} appears in more than one shard ({})", path.display());
                }
            }
            maps.push((path, Arc::new(mmap)));
        }
        Ok(Safetensors { maps, index })
    }
}

impl TensorSource for Safetensors {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.index
            .iter()
            .map(|(n, (_, s, _, _))| (n.clone(), s.clone()))
            .collect()
    }

    fn load(&self, name: &str) -> Result<Tensor> {
        let (i, shape, dtype, range) = self.index.get(name).with_context(|| format!("no tensor {name}"))?;
        let (path, mmap) = &self.maps[*i];
        let format = st_format(*dtype)?;
        let file: crate::weights::SharedBytes = mmap.clone();
        Tensor::mapped(format, shape.clone(), file, range.start, range.len())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    fn dtypes(&self) -> String {
        count_dtypes(self.index.values().map(|(_, _, d, _)| format!("{d:?}")))
    }
}

fn count_dtypes(it: impl Iterator<Item = String>) -> String {
    let mut counts = BTreeMap::new();
    for d in it {
        *counts.entry(d).or_insert(0usize) += 1;
    }
    counts
        .iter()
        .map(|(d, n)| format!("{d} x {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A GGUF file seen through HF names, tensors as stored (mapped), Q/K rows put in HF order.
pub struct GgufSource<'a> {
    gguf: &'a Gguf,
    hf_config: &'a Json,
    by_name: BTreeMap<String, &'a TensorInfo>,
}

impl<'a> GgufSource<'a> {
    pub fn new(gguf: &'a Gguf, hf_config: &'a Json) -> Result<Self> {
        Ok(GgufSource {
            gguf,
            hf_config,
            by_name: gguf.hf_tensors()?.into_iter().collect(),
        })
    }
}

impl TensorSource for GgufSource<'_> {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.by_name.iter().map(|(n, t)| (n.clone(), t.hf_shape())).collect()
    }
    fn load(&self, name: &str) -> Result<Tensor> {
        let t = self.by_name.get(name).with_context(|| format!("no tensor {name}"))?;
        self.gguf.hf_tensor(t, self.hf_config)
    }
    fn dtypes(&self) -> String {
        count_dtypes(self.by_name.values().map(|t| t.ty.to_string()))
    }
}
