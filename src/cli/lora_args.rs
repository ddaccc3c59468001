//! The flags of LoRA adapters (`--lora`, `--lora-merge`; generate's `--lora-seq` is in args.rs)
//! and `tinfer lora merge`'s arguments, apart from what uses them (cli/lora.rs), so that the argument types import nothing
//! back.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tinfer::tools::convert::OutDtype;

#[derive(Args, Clone, Debug, Default)]
pub struct LoraArgs {
    /// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors), or its
    /// .safetensors file, applied at run time without touching the weights; SCALE (default 1)
    /// multiplies its own alpha/r. Repeatable: the adapters add up.
    #[arg(long = "lora", value_name = "PATH[:SCALE]")]
    pub lora: Vec<String>,
    /// Merge the --lora adapters into the weights at load (W + s·B·A in f32; the adapted
    /// matrices are then f32, which a GPU stores as --dtype says: f16 by default) instead of
    /// applying them at each token.
    #[arg(long)]
    pub lora_merge: bool,
}

#[derive(Subcommand)]
pub enum LoraCommand {
    /// Merge a PEFT LoRA adapter into a model and write an HF model directory: W' = W + s·B·A
    /// (f32 arithmetic) for every matrix the adapter trains, every other tensor copied; the
    /// config and tokenizer files are copied. A .gguf base is dequantised first (as `convert`).
    Merge {
        /// The base model: an HF directory, or a .gguf file.
        base: PathBuf,
        /// The PEFT adapter folder.
        adapter: PathBuf,
        /// The directory to write (new, or empty).
        out_dir: PathBuf,
        /// Multiplies the adapter's alpha/r.
        #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
        scale: f32,
        /// Element type of the written weights (default: the base's; f32 for a .gguf base).
        #[arg(long, value_enum)]
        dtype: Option<OutDtype>,
    },
}
