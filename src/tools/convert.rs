//! `tinfer convert IN.gguf OUT_DIR`: write an HF-layout model directory (config.json,
//! model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json) from a GGUF
//! file, dequantised to f32 (or f16 / bf16) with Q/K rows in HF order.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use half::{bf16, f16};
use indicatif::{ProgressBar, ProgressStyle};
use safetensors::{tensor::TensorView, Dtype};
use serde_json::Value as Json;

use crate::arch::Field;
use crate::config::HfConfig;
use crate::gguf::Gguf;

/// Element type of the written safetensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutDtype {
    /// Exact: every dequantised GGUF value is representable.
    F32,
    /// Half the size; rounds the dequantised values.
    F16,
    /// Half the size, f32's range; rounds more coarsely.
    Bf16,
}

impl OutDtype {
    /// The safetensors dtype and transformers' name for it.
    pub fn names(self) -> (Dtype, &'static str) {
        match self {
            OutDtype::F32 => (Dtype::F32, "float32"),
            OutDtype::F16 => (Dtype::F16, "float16"),
            OutDtype::Bf16 => (Dtype::BF16, "bfloat16"),
        }
    }
}

/// `values` as the little-endian bytes of safetensors dtype `dtype` (F16, BF16; else F32).
pub fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
        Dtype::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn write_json(path: &Path, value: &Json) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

pub fn convert(input: &Path, out_dir: &Path, dtype: OutDtype, progress: bool) -> Result<()> {
    let gguf = Gguf::open(input)?;
    let ctx = || input.display().to_string();
    let mut config = gguf.hf_config().with_context(ctx)?;
    // Check the config and the tokenizer before writing anything.
    let cfg = serde_json::from_value::<HfConfig>(config.clone())?
        .resolve()
        .with_context(ctx)?;
    let tokenizer = gguf.hf_tokenizer_json().with_context(ctx)?;
    crate::tokenizer::Tokenizer::from_json(&tokenizer, &Json::Null).with_context(ctx)?;
    let tensors = gguf.hf_tensors().with_context(ctx)?;

    std::fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let (st_dtype, name) = dtype.names();
    config["torch_dtype"] = Json::String(name.into());

    let bar = if progress {
        ProgressBar::new(tensors.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} tensors")
            .unwrap()
            .progress_chars("=> "),
    );
    bar.set_message("dequantising");
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    let arch = gguf.arch()?;
    for (hf_name, t) in &tensors {
        let values = gguf.hf_tensor_data(t, &config)?;
        let mut shape = t.hf_shape();
        match arch.parse_gguf(&t.name) {
            // HF files hold a tensor per expert (GGUF stacks them: ffn_*_exps)
            Some((f, l)) if Field::EXPERTS.contains(&f) => {
                let per = values.len() / shape[0];
                for (e, v) in values.chunks_exact(per).enumerate() {
                    data.push((arch.hf_expert_name(f, l, e), shape[1..].to_vec(), encode(st_dtype, v)));
                }
            }
            // and the shared expert's gate as a (1, dim) matrix
            Some((Field::ShGateInp, _)) if shape.len() == 1 => {
                shape.insert(0, 1);
                data.push((hf_name.clone(), shape, encode(st_dtype, &values)));
            }
            _ => data.push((hf_name.clone(), shape, encode(st_dtype, &values))),
        }
        bar.inc(1);
    }
    bar.set_message("writing");
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, shape, bytes)| Ok((n.clone(), TensorView::new(st_dtype, shape.clone(), bytes)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "source".to_string(),
            format!(
                "tinfer convert {}",
                input.file_name().unwrap_or_default().to_string_lossy()
            ),
        ),
    ]);
    let tmp = out_dir.join("model.safetensors.partial");
    safetensors::serialize_to_file(views, Some(meta), &tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;

    write_json(&out_dir.join("config.json"), &config)?;
    write_json(&out_dir.join("tokenizer.json"), &tokenizer)?;
    write_json(
        &out_dir.join("tokenizer_config.json"),
        &gguf.hf_tokenizer_config(cfg.seq_len as u64),
    )?;
    write_json(&out_dir.join("generation_config.json"), &gguf.hf_generation_config())?;
    // The weights land last and atomically: a directory with model.safetensors is complete.
    std::fs::rename(&tmp, out_dir.join("model.safetensors"))?;
    bar.finish_with_message("done");
    Ok(())
}
