//! The model a command reads: `--model` as a path or the name of a model
//! scripts/fetch-model.sh fetches, and where such names are looked for.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

/// The model a command reads.
#[derive(Args, Clone)]
pub struct ModelPath {
    /// Model: an HF directory (config.json, model.safetensors, tokenizer.json), a .gguf file, or
    /// the name of a model scripts/fetch-model.sh fetches (smollm2-135m-instruct,
    /// qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct, gemma3-270m: tokenizer only), looked for in the per-user data directory, then models/ in
    /// the current directory and in the checkout tinfer was built from. Default: $TINFER_MODEL,
    /// else smollm2-135m-instruct.
    #[arg(long, short, env = "TINFER_MODEL", value_name = "PATH")]
    pub model: Option<PathBuf>,
}

impl ModelPath {
    /// The path given; a fetched model's name (when no such path exists); or the default. A name
    /// is looked for where `model_paths` says; the error lists the paths tried.
    pub fn resolve(&self) -> Result<PathBuf> {
        let name = match &self.model {
            Some(p) if p.exists() => return Ok(p.clone()),
            Some(p) => match MODELS.iter().find(|(n, _)| p.to_str() == Some(*n)) {
                Some((n, _)) => *n,
                // a path (the loader says it does not exist)
                None if p.components().count() > 1 || p.extension().is_some() => return Ok(p.clone()),
                None => {
                    let names: Vec<&str> = MODELS.iter().map(|m| m.0).collect();
                    bail!(
                        "--model {}: no such file or directory, and not a model name tinfer knows ({}); \
                         pass an HF model directory, a .gguf file or one of those names (scripts/fetch-model.sh NAME fetches it)",
                        p.display(),
                        names.join(", ")
                    )
                }
            },
            None => MODELS[0].0,
        };
        let tried = model_paths(name);
        if let Some(p) = tried.iter().find(|p| p.exists()) {
            return Ok(p.clone());
        }
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        let which = if self.model.is_none() {
            "no --model given and the default model"
        } else {
            "the model"
        };
        bail!(
            "{which} {name} is not in any of: {}. Run scripts/fetch-model.sh {name} (it fetches it \
             into the first), set TINFER_MODEL, or pass --model PATH",
            list.join(", ")
        )
    }
}

/// The models `scripts/fetch-model.sh` fetches: (name, what it keeps in the models folder). The
/// first is the default.
pub const MODELS: [(&str, &str); 4] = [
    ("smollm2-135m-instruct", "smollm2-135m-instruct"),
    ("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    ("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
    // Gemma Terms of Use; tinfer reads its tokenizer but does not run gemma3.
    ("gemma3-270m", "gemma-3-270m-q4_k_m.gguf"),
];

/// Where a fetched model is looked for, in order: $TINFER_DATA_DIR/models (else the per-user
/// data directory: $XDG_DATA_HOME/tinfer/models or ~/.local/share/tinfer/models on Linux),
/// ./models, and models/ of the checkout this binary was built from.
pub fn model_paths(name: &str) -> Vec<PathBuf> {
    let file = MODELS.iter().find(|(n, _)| *n == name).map_or(name, |(_, f)| *f);
    let data = std::env::var_os("TINFER_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| dirs::data_dir().map(|d| d.join("tinfer")));
    let mut paths: Vec<PathBuf> = data.into_iter().map(|d| d.join("models").join(file)).collect();
    paths.push(PathBuf::from("models").join(file));
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join(file);
    if !paths.contains(&checkout) {
        paths.push(checkout);
    }
    paths
}
