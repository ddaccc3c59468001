//! Loading a model: an HF directory (config.json + safetensors, single or sharded, + tokenizer
//! files) or a `.gguf` file. This is the one place that knows checkpoint tensor names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use crate::config::{token_ids, Config, HfConfig};
use crate::gguf::{Gguf, TensorInfo};
use crate::tokenizer::Tokenizer;
use crate::weights::{Layer, Weights};

/// Where tensors come from: HF names, HF shapes, f32 values in HF row order.
pub trait TensorSource {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>>;
    fn load(&self, name: &str) -> Result<Vec<f32>>;
    /// The stored dtypes, for `info` (e.g. "F32" or "Q4_1 x 210, F32 x 61").
    fn dtypes(&self) -> String;
}

/// A loaded model: resolved config, weights, and (if present) the tokenizer.
pub struct Loaded {
    pub cfg: Config,
    pub hf_config: Json,
    /// Taken by the model that runs them.
    pub weights: Option<Weights<Vec<f32>>>,
    pub tokenizer: Option<Tokenizer>,
    /// Why there is no tokenizer, to say when a command needs one.
    pub tokenizer_error: Option<String>,
    pub source: String,
    pub dtypes: String,
}

/// Load a model from an HF directory or a `.gguf` file.
pub fn load(path: &Path) -> Result<Loaded> {
    if !path.exists() {
        bail!(
            "model path {} does not exist: run scripts/fetch-model.sh to fetch SmolLM2-135M-Instruct, \
             or pass --model with an HF model directory or a .gguf file",
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
    Tokenizer::from_json(&gguf.hf_tokenizer_json()?, &gguf.hf_tokenizer_config(ctx_len))
        .with_context(|| format!("{}", path.display()))
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
    if let Some(ids) = gguf.hf_generation_config().get("eos_token_id") {
        for id in token_ids(Some(ids)) {
            if !cfg.eos_token_ids.contains(&id) {
                cfg.eos_token_ids.push(id);
            }
        }
    }
    let dtypes = src.dtypes();
    Ok(Loaded {
        cfg,
        hf_config,
        weights: Some(weights),
        tokenizer,
        tokenizer_error,
        source: path.display().to_string(),
        dtypes,
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
    for id in ids {
        if !cfg.eos_token_ids.contains(&id) {
            cfg.eos_token_ids.push(id);
        }
    }
    Ok(())
}

/// THE table from checkpoint names to fields. Every missing tensor, wrong shape and unexpected
/// tensor is collected and reported in one error.
pub fn load_weights(cfg: &Config, src: &dyn TensorSource) -> Result<Weights<Vec<f32>>> {
    let shapes = src.shapes();
    let mut problems: Vec<String> = vec![];
    let mut used = BTreeSet::new();
    let (d, q, kv, h, v) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.hidden_dim, cfg.vocab_size);
    let mut get = |name: String, shape: &[usize], required: bool| -> Option<Vec<f32>> {
        match shapes.get(&name) {
            None if required => {
                problems.push(format!("missing tensor {name} {shape:?}"));
                None
            }
            None => None,
            Some(s) if s != shape => {
                problems.push(format!("tensor {name} has shape {s:?}, config.json implies {shape:?}"));
                None
            }
            Some(_) => {
                used.insert(name.clone());
                match src.load(&name) {
                    Ok(x) => Some(x),
                    Err(e) => {
                        problems.push(format!("tensor {name}: {e:#}"));
                        None
                    }
                }
            }
        }
    };
    let embed = get("model.embed_tokens.weight".into(), &[v, d], true);
    let norm = get("model.norm.weight".into(), &[d], true);
    let lm_head = if cfg.tied_embeddings {
        None
    } else {
        get("lm_head.weight".into(), &[v, d], true)
    };
    let mut layers = vec![];
    for l in 0..cfg.n_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let bias = cfg.qkv_bias;
        layers.push((
            get(p("input_layernorm.weight"), &[d], true),
            get(p("self_attn.q_proj.weight"), &[q, d], true),
            get(p("self_attn.k_proj.weight"), &[kv, d], true),
            get(p("self_attn.v_proj.weight"), &[kv, d], true),
            get(p("self_attn.o_proj.weight"), &[d, q], true),
            get(p("self_attn.q_proj.bias"), &[q], bias),
            get(p("self_attn.k_proj.bias"), &[kv], bias),
            get(p("self_attn.v_proj.bias"), &[kv], bias),
            get(p("self_attn.o_proj.bias"), &[d], cfg.o_bias),
            get(p("post_attention_layernorm.weight"), &[d], true),
            get(p("mlp.gate_proj.weight"), &[h, d], true),
            get(p("mlp.up_proj.weight"), &[h, d], true),
            get(p("mlp.down_proj.weight"), &[d, h], true),
        ));
    }
    // Tensors the model would silently ignore mean the architecture is not what we think
    // (rotary inv_freq buffers and a tied model's redundant lm_head are harmless).
    let unexpected: Vec<&String> = shapes
        .keys()
        .filter(|n| {
            let harmless = n.ends_with("rotary_emb.inv_freq") || (*n == "lm_head.weight" && cfg.tied_embeddings);
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
        // One line: the first few problems, then how many more.
        let more = problems.len().saturating_sub(4);
        let mut msg = problems[..problems.len().min(4)].join("; ");
        if more > 0 {
            msg += &format!("; and {more} more");
        }
        bail!("{msg}");
    }
    let layers = layers
        .into_iter()
        .map(|(an, wq, wk, wv, wo, bq, bk, bv, bo, fnm, wg, wu, wd)| Layer {
            attn_norm: an.unwrap(),
            wq: wq.unwrap(),
            wk: wk.unwrap(),
            wv: wv.unwrap(),
            wo: wo.unwrap(),
            bq,
            bk,
            bv,
            bo,
            ffn_norm: fnm.unwrap(),
            w_gate: wg.unwrap(),
            w_up: wu.unwrap(),
            w_down: wd.unwrap(),
        })
        .collect();
    Ok(Weights {
        embed: embed.unwrap(),
        layers,
        norm: norm.unwrap(),
        lm_head,
    })
}

/// Memory-mapped safetensors: `model.safetensors`, or shards listed in
/// `model.safetensors.index.json`.
pub struct Safetensors {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
    /// tensor name -> (index into maps, shape, dtype)
    index: BTreeMap<String, (usize, Vec<usize>, Dtype)>,
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
                if index
                    .insert(name.clone(), (i, view.shape().to_vec(), view.dtype()))
                    .is_some()
                {
                    bail!("tensor {name} appears in more than one shard ({})", path.display());
                }
            }
            maps.push((path, mmap));
        }
        Ok(Safetensors { maps, index })
    }
}

impl TensorSource for Safetensors {
    fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.index.iter().map(|(n, (_, s, _))| (n.clone(), s.clone())).collect()
    }

    fn load(&self, name: &str) -> Result<Vec<f32>> {
        let (i, _, _) = self.index.get(name).with_context(|| format!("no tensor {name}"))?;
        let (path, mmap) = &self.maps[*i];
        let st = SafeTensors::deserialize(mmap).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let view = st
            .tensor(name)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let b = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            dt => {
                bail!("dtype {dt:?} is not supported (tinfer reads F32, F16 and BF16 safetensors)")
            }
        })
    }

    fn dtypes(&self) -> String {
        count_dtypes(self.index.values().map(|(_, _, d)| format!("{d:?}")))
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

/// A GGUF file seen through HF names, dequantised to f32, Q/K rows un-permuted.
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
    fn load(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.by_name.get(name).with_context(|| format!("no tensor {name}"))?;
        self.gguf.hf_tensor_data(t, self.hf_config)
    }
    fn dtypes(&self) -> String {
        count_dtypes(self.by_name.values().map(|t| t.ty.to_string()))
    }
}
