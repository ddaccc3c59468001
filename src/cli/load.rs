//! Loading the model a command names: weights onto the chosen device, and the tokenizer.

use anyhow::{Context, Result};

use super::args::ModelArgs;
use tinfer::loader::{self, Loaded};
use tinfer::model::{Device, Model};
use tinfer::tokenizer::Tokenizer;

pub fn load(args: &ModelArgs) -> Result<(Model, Loaded)> {
    load_seqs(args, 1)
}

/// Load for up to `max_seqs` sequences alive at once.
pub fn load_seqs(args: &ModelArgs, max_seqs: usize) -> Result<(Model, Loaded)> {
    let mut loaded = loader::load(&args.model)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let weights = loaded.weights.take().expect("load() returns weights");
    let model = Model::with_options(
        loaded.cfg.clone(),
        weights,
        args.device,
        args.adapter.as_deref(),
        &args.options(max_seqs),
    )?;
    if args.device == Device::Auto {
        eprintln!("device: {}", model.device_name());
    }
    Ok((model, loaded))
}

pub fn need_tokenizer(loaded: &Loaded) -> Result<&Tokenizer> {
    loaded.tokenizer.as_ref().with_context(|| {
        format!(
            "this command needs a tokenizer: {}",
            loaded.tokenizer_error.as_deref().unwrap_or("none found")
        )
    })
}
