//! LoRA adapters (Hu et al. 2021, arXiv:2106.09685) read from PEFT's folder format
//! (`adapter_config.json` + `adapter_model.safetensors`), checked against the model before
//! anything runs, and applied unmerged: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ with A (r, in), B (out, r) and
//! s = user factor × α/r (α/√r with rsLoRA, Kalajdzievski 2023), or merged: W' = W + s·B·A.
//! Several adapters add up (llama.cpp's semantics); each sequence picks its own factors
//! (`Model::set_lora`), the basis of serving several fine-tunes on one base (S-LoRA, Punica).
//! Config semantics follow PEFT's `LoraConfig` (peft/tuners/lora/config.py) and its module
//! matching (`check_target_module_exists`, `get_pattern_key` in peft/tuners/tuners_utils.py).

use std::path::Path;

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use regex::Regex;
use safetensors::SafeTensors;
use serde_json::Value as Json;

use crate::arch::{Arch, Field};
use crate::config::Config;
use crate::loader::{one_line, st_values};
use crate::weights::{Tensor, Weights};

/// The matrices LoRA can target, in the order of a layer: q, k, v, o, gate, up, down.
pub const TARGETS: [Field; 7] = [
    Field::Wq,
    Field::Wk,
    Field::Wv,
    Field::Wo,
    Field::WGate,
    Field::WUp,
    Field::WDown,
];

/// One module's low-rank pair.
#[derive(Clone, Debug)]
pub struct LoraPair {
    pub rank: usize,
    pub a: Vec<f32>, // (rank, in)
    pub b: Vec<f32>, // (out, rank)
    /// α/r, or α/√r with rsLoRA (per module with rank_pattern / alpha_pattern).
    pub scale: f32,
}

impl LoraPair {
    /// y (T, out) += factor · scale · (x Aᵀ) Bᵀ for x (T, in): the unmerged update (f64 sums,
    /// rows over threads).
    pub fn apply(&self, x: &[f32], y: &mut [f32], factor: f32) {
        let (r, d_in) = (self.rank, self.a.len() / self.rank);
        let d_out = self.b.len() / r;
        assert_eq!(x.len() / d_in, y.len() / d_out, "LoRA: rows of x and y differ");
        let s = (factor * self.scale) as f64;
        let rows = x.par_chunks_exact(d_in).zip(y.par_chunks_exact_mut(d_out));
        rows.for_each(|(xr, yr)| {
            let u: Vec<f64> = self
                .a
                .chunks_exact(d_in)
                .map(|ar| ar.iter().zip(xr).map(|(&a, &x)| a as f64 * x as f64).sum::<f64>())
                .collect();
            for (yo, br) in yr.iter_mut().zip(self.b.chunks_exact(r)) {
                *yo += (s * br.iter().zip(&u).map(|(&b, u)| b as f64 * u).sum::<f64>()) as f32;
            }
        });
    }
}

impl LoraPair {
    /// w (out, in) += factor · scale · B·A: the merge (f32 arithmetic, as PEFT's merge of an
    /// f32 model).
    pub fn merge_into(&self, w: &mut [f32], factor: f32) {
        let (r, d_in) = (self.rank, self.a.len() / self.rank);
        let s = factor * self.scale;
        for (row, b) in w.chunks_exact_mut(d_in).zip(self.b.chunks_exact(r)) {
            for (k, v) in row.iter_mut().enumerate() {
                *v += s * (0..r).map(|j| b[j] * self.a[j * d_in + k]).sum::<f32>();
            }
        }
    }
}

/// A PEFT LoRA adapter fitted to one model: a pair per (layer, target) it trains.
#[derive(Clone, Debug)]
pub struct Lora {
    /// The folder it came from.
    pub name: String,
    /// The factor a new sequence uses (`--lora PATH:SCALE`; 1 by default).
    pub default_factor: f32,
    /// (n_layers) × TARGETS order.
    pub layers: Vec<[Option<LoraPair>; 7]>,
}

impl Lora {
    /// The pair of `field` in `layer`, if the adapter trains it.
    pub fn pair(&self, layer: usize, field: Field) -> Option<&LoraPair> {
        let i = TARGETS.iter().position(|&f| f == field)?;
        self.layers[layer][i].as_ref()
    }

    /// Read the PEFT adapter in folder `dir` for a model of `cfg`. Errors name the field or
    /// tensor: a missing or unreadable file; a config field tinfer does not implement (bias
    /// other than "none", lora_bias, use_dora, modules_to_save, layer_replication,
    /// trainable_token_indices, target_parameters, alora_invocation_tokens, use_qalora, a
    /// peft_type other than LORA); and, in one error, every tensor that does not fit this model
    /// (a module it does not have, a layer past its last, a shape of another hidden size, a rank
    /// other than the config's) and every targeted module without its pair.
    pub fn load(dir: &Path, cfg: &Config) -> Result<Lora> {
        // the folder, or its .safetensors file (the config beside it)
        let ext = dir.extension().and_then(|e| e.to_str()).filter(|_| dir.is_file());
        if ext == Some("gguf") {
            bail!("LoRA adapter {}: a GGUF file; tinfer reads PEFT adapters (a folder with adapter_config.json and adapter_model.safetensors), not llama.cpp's GGUF LoRAs", dir.display());
        }
        let file = matches!(ext, Some("safetensors" | "bin")).then(|| dir.to_path_buf());
        let dir = match &file {
            Some(f) => f
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
            None => dir,
        };
        let show = dir.display();
        if !dir.is_dir() {
            bail!("LoRA adapter {show} is not a folder: give a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) or its .safetensors file");
        }
        let text = std::fs::read_to_string(dir.join("adapter_config.json"))
            .with_context(|| format!("LoRA adapter {show}: cannot read adapter_config.json"))?;
        let j: Json =
            serde_json::from_str(&text).with_context(|| format!("{show}/adapter_config.json is not valid JSON"))?;
        let pc = PeftConfig::parse(&j).with_context(|| format!("LoRA adapter {show}"))?;
        let st_path = file.clone().unwrap_or_else(|| dir.join("adapter_model.safetensors"));
        let pickle = st_path.extension().is_some_and(|e| e == "bin");
        if pickle || (!st_path.exists() && dir.join("adapter_model.bin").exists()) {
            bail!("LoRA adapter {show} holds adapter_model.bin (a pickle), which tinfer does not read: save it with safe_serialization=True (adapter_model.safetensors)");
        }
        let bytes = std::fs::read(&st_path)
            .with_context(|| format!("LoRA adapter {show}: cannot read {}", st_path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", st_path.display()))?;
        let arch = Arch::for_hf(&cfg.model_type)
            .with_context(|| format!("no tensor names for model_type {:?}", cfg.model_type))?;

        // (module, "A" or "B") -> (shape, values)
        let mut problems = vec![];
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let key = name
                .strip_prefix("base_model.model.")
                .unwrap_or(&name)
                .strip_suffix(".weight");
            // (a state_dict saved by hand keeps PEFT's adapter name: lora_A.default.weight)
            let split = key.and_then(|k| k.rsplit_once(".lora_"));
            match split
                .map(|(m, ab)| (m, ab.trim_end_matches(".default")))
                .filter(|(_, ab)| ["A", "B"].contains(ab))
            {
                None if name.contains("lora_embedding") => problems.push(format!(
                    "tensor {name} is an embedding LoRA: tinfer adapts only the q/k/v/o/gate/up/down projections"
                )),
                None => problems.push(format!("tensor {name} is not a lora_A / lora_B weight")),
                Some((m, ab)) => match st_values(&view) {
                    Ok(v) if v.iter().any(|x| !x.is_finite()) => {
                        problems.push(format!("tensor {name} holds NaN or infinite values"))
                    }
                    Ok(v) => drop(tensors.insert((m.to_string(), ab.to_string()), (view.shape().to_vec(), v))),
                    Err(e) => problems.push(format!("tensor {name}: {e}")),
                },
            }
        }
        // Every module of this model the config targets, with its pair.
        let mut layers: Vec<[Option<LoraPair>; 7]> = (0..cfg.n_layers).map(|_| Default::default()).collect();
        let (mut unselected, mut lacking): (Vec<String>, Vec<String>) = (vec![], vec![]);
        for (l, layer) in layers.iter_mut().enumerate() {
            for (i, &f) in TARGETS.iter().enumerate() {
                if cfg.is_moe(l) && [Field::WGate, Field::WUp, Field::WDown].contains(&f) {
                    continue; // an MoE block has no dense MLP; expert LoRAs are left as unknown modules
                }
                let m = arch.hf_name(f, l).trim_end_matches(".weight").to_string();
                let mut take = |ab: &str| tensors.remove(&(m.clone(), ab.to_string()));
                let (a, b, targeted) = (take("A"), take("B"), pc.targets(&m, l));
                let ((sa, a), (sb, b)) = match (a, b) {
                    (None, None) if !targeted => continue,
                    (Some(_), Some(_)) if !targeted => {
                        unselected.push(m);
                        continue;
                    }
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        lacking.push(m);
                        continue;
                    }
                };
                let (shape, (r, alpha)) = (f.shape(cfg), pc.rank_alpha(&m));
                let (out, inp) = (shape[0], shape[1]);
                if sa.len() != 2 || sb.len() != 2 || sa[1] != inp || sb[0] != out {
                    problems.push(format!("module {m}: lora_A {sa:?} and lora_B {sb:?} are for another model (this one's {m} is [{out}, {inp}])"));
                    continue;
                }
                if sa[0] != r || sb[1] != r {
                    problems.push(format!(
                        "module {m} has rank {} but the config says {r} (r, or rank_pattern; PEFT's default r is 8)",
                        sa[0]
                    ));
                    continue;
                }
                let scale = if pc.rslora {
                    alpha / (r as f32).sqrt()
                } else {
                    alpha / r as f32
                };
                layer[i] = Some(LoraPair { rank: r, a, b, scale });
            }
        }
        if let Some(first) = unselected.first() {
            problems.push(format!("{} modules have LoRA weights that target_modules / layers_to_transform / exclude_modules do not select (e.g. {first})", unselected.len()));
        }
        if let Some(first) = lacking.first() {
            problems.push(format!("{} targeted modules lack lora_A or lora_B (e.g. {first}): the config selects modules the file has no weights for", lacking.len()));
        }
        // What is left names modules this model does not have.
        for ((m, ab), (shape, _)) in &tensors {
            if ab == "B" && tensors.contains_key(&(m.clone(), "A".to_string())) {
                continue; // one line per module
            }
            let layer = m
                .split('.')
                .skip_while(|s| *s != "layers")
                .nth(1)
                .and_then(|s| s.parse::<usize>().ok());
            problems.push(match layer {
                Some(l) if l >= cfg.n_layers => {
                    format!("module {m} is in layer {l}, but the model has {} layers", cfg.n_layers)
                }
                Some(l) if cfg.is_moe(l) && m.contains(".mlp.") => format!(
                    "module {m}: tinfer does not adapt an MoE block (its experts, shared expert or router); \
                     LoRA applies to attention and to dense MLP layers"
                ),
                _ => format!(
                    "module {m} {shape:?} is not one tinfer can adapt (it adapts q/k/v/o/gate/up/down projections)"
                ),
            });
        }
        if !problems.is_empty() {
            problems.sort();
            problems.dedup();
            let (t, d, n) = (&cfg.model_type, cfg.dim, cfg.n_layers);
            bail!(
                "LoRA adapter {show} does not fit this model ({t}: hidden {d}, {n} layers): {}",
                one_line(&problems)
            );
        }
        if layers.iter().flatten().all(Option::is_none) {
            bail!("LoRA adapter {show} holds no lora_A / lora_B tensors");
        }
        Ok(Lora {
            name: show.to_string(),
            default_factor: 1.0,
            layers,
        })
    }

    /// W' = W + factor · s · B·A for every matrix the adapter trains, in f32 (the merged
    /// matrices become F32 tensors, whatever the base stored: a quantized base is decoded).
    pub fn merge_into(&self, w: &mut Weights<Tensor>, factor: f32) {
        for (l, layer) in w.layers.iter_mut().enumerate() {
            for (i, &f) in TARGETS.iter().enumerate() {
                let Some(p) = &self.layers[l][i] else { continue };
                let t = layer.projection_mut(f).expect("a projection");
                let mut m = t.f32s().into_owned();
                p.merge_into(&mut m, factor);
                *t = Tensor::from_f32(t.shape.clone(), m);
            }
        }
    }
}

/// The fields of adapter_config.json tinfer uses, checked.
struct PeftConfig {
    r: usize,
    alpha: f32,
    rslora: bool,
    targets: Match,
    exclude: Option<Match>,
    layers: Option<Vec<usize>>,
    rank_pattern: Vec<(Regex, usize)>,
    alpha_pattern: Vec<(Regex, f32)>,
}

/// PEFT's module selection: names matched as suffixes at a dot, or one regex over the whole name.
enum Match {
    All, // "all-linear", or no target_modules: every projection (the tensors decide)
    Names(Vec<String>),
    Regex(Regex),
}

impl Match {
    fn parse(v: &Json, field: &str) -> Result<Match> {
        match v {
            Json::Null => Ok(Match::All),
            Json::String(s) if s == "all-linear" => Ok(Match::All),
            Json::String(s) => Regex::new(&format!("^(?:{s})$"))
                .map(Match::Regex)
                .with_context(|| format!("{field} {s:?} is not a valid regex")),
            Json::Array(a) => a
                .iter()
                .map(|n| n.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Match::Names)
                .with_context(|| format!("{field} must be a list of module names or a regex string")),
            _ => bail!("{field} must be a list of module names or a regex string"),
        }
    }

    fn hits(&self, module: &str) -> bool {
        match self {
            Match::All => true,
            Match::Names(ns) => ns.iter().any(|n| module == n || module.ends_with(&format!(".{n}"))),
            Match::Regex(r) => r.is_match(module),
        }
    }
}

impl PeftConfig {
    fn parse(j: &Json) -> Result<PeftConfig> {
        let get = |k: &str| j.get(k).unwrap_or(&Json::Null);
        let set = |k: &str| match get(k) {
            Json::Null | Json::Bool(false) => false,
            Json::Array(a) => !a.is_empty(),
            Json::Object(o) => !o.is_empty(),
            _ => true,
        };
        if let Some(t) = get("peft_type").as_str().filter(|t| *t != "LORA") {
            bail!("peft_type is {t:?}: tinfer reads LoRA adapters only");
        }
        match get("bias") {
            Json::Null => {}
            Json::String(s) if s == "none" => {}
            b => bail!("bias is {b}: tinfer implements LoRA without trained biases (\"none\") only"),
        }
        for (k, what) in [
            ("use_dora", "DoRA (weight-decomposed LoRA)"),
            ("modules_to_save", "fully trained extra modules"),
            ("lora_bias", "a bias on lora_B"),
            ("layer_replication", "replicated layers"),
            ("trainable_token_indices", "trained token embeddings"),
            ("target_parameters", "LoRA on parameters (MoE experts)"),
            ("alora_invocation_tokens", "activated LoRA"),
            ("use_qalora", "QA-LoRA"),
        ] {
            if set(k) {
                bail!("{k} is set: tinfer does not implement {what}; merge the adapter with PEFT and load the merged model instead");
            }
        }
        let num = |k: &str, default: f64| -> Result<f64> {
            match get(k) {
                Json::Null => Ok(default),
                v => v.as_f64().with_context(|| format!("{k} must be a number, got {v}")),
            }
        };
        let r = num("r", 8.0)?;
        if r < 1.0 || r.fract() != 0.0 {
            bail!("r must be a positive integer, got {r}");
        }
        let pattern = |k: &str| -> Result<Vec<(Regex, f64)>> {
            let Some(o) = get(k).as_object() else { return Ok(vec![]) };
            o.iter()
                .map(|(key, v)| {
                    let re = Regex::new(&format!(r"^(?:.*\.)?(?:{key})$"))
                        .with_context(|| format!("{k} key {key:?} is not a valid pattern"))?;
                    let v = v.as_f64().with_context(|| format!("{k}[{key:?}] must be a number"))?;
                    Ok((re, v))
                })
                .collect()
        };
        let layers = match get("layers_to_transform") {
            Json::Null => None,
            Json::Number(n) => Some(vec![
                n.as_u64().context("layers_to_transform must be layer indices")? as usize
            ]),
            Json::Array(a) => Some(
                a.iter()
                    .map(|v| v.as_u64().map(|n| n as usize))
                    .collect::<Option<Vec<_>>>()
                    .context("layers_to_transform must be layer indices")?,
            ),
            v => bail!("layers_to_transform must be an index or a list of them, got {v}"),
        };
        if get("fan_in_fan_out").as_bool() == Some(true) {
            // PEFT itself turns it off for nn.Linear (every module tinfer adapts), with a warning.
            eprintln!(
                "warning: LoRA fan_in_fan_out is true, but the adapted modules are Linear: ignored, as PEFT does"
            );
        }
        Ok(PeftConfig {
            r: r as usize,
            alpha: num("lora_alpha", 8.0)? as f32,
            rslora: get("use_rslora").as_bool().unwrap_or(false),
            targets: Match::parse(get("target_modules"), "target_modules")?,
            exclude: match get("exclude_modules") {
                Json::Null => None,
                v => Some(Match::parse(v, "exclude_modules")?),
            },
            layers,
            rank_pattern: pattern("rank_pattern")?
                .into_iter()
                .map(|(re, v)| (re, v as usize))
                .collect(),
            alpha_pattern: pattern("alpha_pattern")?
                .into_iter()
                .map(|(re, v)| (re, v as f32))
                .collect(),
        })
    }

    /// Whether the config selects `module` (of layer `layer`).
    fn targets(&self, module: &str, layer: usize) -> bool {
        self.targets.hits(module)
            && !self.exclude.as_ref().is_some_and(|e| e.hits(module))
            && self.layers.as_ref().is_none_or(|ls| ls.contains(&layer))
    }

    /// (r, α) of `module`: the first rank_pattern / alpha_pattern key that ends its name, else
    /// r and lora_alpha.
    fn rank_alpha(&self, module: &str) -> (usize, f32) {
        let r = self
            .rank_pattern
            .iter()
            .find(|p| p.0.is_match(module))
            .map_or(self.r, |p| p.1);
        let a = self
            .alpha_pattern
            .iter()
            .find(|p| p.0.is_match(module))
            .map_or(self.alpha, |p| p.1);
        (r, a)
    }
}
