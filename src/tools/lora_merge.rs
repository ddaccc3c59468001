//! `tinfer lora merge BASE ADAPTER OUT_DIR`: a PEFT LoRA adapter merged into a model, written as
//! an HF model directory: W' = W + s·B·A (f32 arithmetic, lora::LoraPair::merge_into) for every
//! matrix the adapter trains, every other tensor copied as stored (or converted with --dtype);
//! the other files of the folder (config, tokenizer) copied. A .gguf base is first written out
//! as an HF directory by `convert` (dequantised), then merged there.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

use super::convert::{convert, encode, OutDtype};
use crate::arch::Arch;
use crate::loader::st_values;
use crate::lora::{Lora, TARGETS};

/// Merge `adapter` at `factor` into `base`, writing `out`; returns how many matrices changed.
/// Errors: OUT_DIR not empty, a base that is not an HF directory or a .gguf file, an adapter
/// that does not fit (Lora::load's errors), a tensor dtype other than F32/F16/BF16.
pub fn merge(base: &Path, adapter: &Path, out: &Path, factor: f32, dtype: Option<OutDtype>) -> Result<usize> {
    if !factor.is_finite() {
        bail!("--scale must be a finite number, got {factor}");
    }
    if out.exists() && !out.is_dir() {
        bail!(
            "{} exists and is not a folder: give a new folder to write the merged model to",
            out.display()
        );
    }
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        bail!(
            "{} is not empty: give a new folder to write the merged model to",
            out.display()
        );
    }
    let gguf = base.is_file();
    if gguf {
        // dequantise into OUT_DIR first, then merge in place
        convert(base, out, dtype.unwrap_or(OutDtype::F32), false)?;
    }
    let dir = if gguf { out } else { base };
    let loaded = crate::loader::load(dir)?;
    let lora = Lora::load(adapter, &loaded.cfg)?;
    let arch = Arch::for_hf(&loaded.cfg.model_type).context("an architecture tinfer knows")?;
    // HF tensor name -> the pair merged into it
    let mut pairs = HashMap::new();
    for l in 0..loaded.cfg.n_layers {
        for &f in &TARGETS {
            if let Some(p) = lora.pair(l, f) {
                pairs.insert(arch.hf_name(f, l), p);
            }
        }
    }
    drop(loaded);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut merged = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (path, name) = (e.path(), e.file_name());
        if !path.is_file() || name.to_string_lossy().starts_with('.') {
            continue; // folders, and hidden markers (fetch-model.sh's .converted-from-*)
        }
        let is_st = path.extension().is_some_and(|x| x == "safetensors");
        if !is_st {
            if !gguf {
                std::fs::copy(&path, out.join(&name)).with_context(|| format!("cannot copy {}", path.display()))?;
            }
            continue;
        }
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        let mut data: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
        for (tname, view) in st.tensors() {
            let to = dtype.map_or(view.dtype(), |d| d.names().0);
            let (shape, raw) = (view.shape().to_vec(), view.data());
            let out_bytes = match pairs.get(&tname) {
                None if to == view.dtype() => raw.to_vec(),
                p => {
                    let mut w = st_values(&view).with_context(|| format!("tensor {tname}"))?;
                    if let Some(p) = p {
                        p.merge_into(&mut w, factor);
                        merged += 1;
                    }
                    encode(to, &w)
                }
            };
            data.push((tname, to, shape, out_bytes));
        }
        let views = data
            .iter()
            .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        let target = out.join(&name);
        safetensors::serialize_to_file(views, Some(meta), &target)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    if let (Some(d), false) = (dtype, gguf) {
        // the config names the weights' dtype
        let path = out.join("config.json");
        let mut j: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let name = d.names().1;
        j["torch_dtype"] = name.into();
        if j.get("dtype").is_some() {
            j["dtype"] = name.into(); // transformers 5's name for it
        }
        std::fs::write(&path, serde_json::to_string_pretty(&j)? + "\n")?;
    }
    Ok(merged)
}
