//! Loading what a command names: the model (weights onto the chosen device, and the tokenizer)
//! and the prompt text.

use std::io::{IsTerminal, Read};

use anyhow::{bail, Context, Result};

use super::args::{process_escapes, usage, ModelArgs, PromptArgs, RunArgs, Usage};
use tinfer::loader::{self, Loaded};
use tinfer::model::{Device, Model};
use tinfer::tokenizer::Tokenizer;

/// Load for up to `max_seqs` sequences alive at once, with `run`'s threads and context size.
/// Warnings about what the loader had to guess go to stderr.
pub fn load_seqs(args: &ModelArgs, run: Option<&RunArgs>, max_seqs: usize) -> Result<(Model, Loaded)> {
    let mut loaded = prepare(args, run)?;
    let model = build(args, &mut loaded, max_seqs)?;
    Ok((model, loaded))
}

/// `load_seqs` for a command that tokenizes text: a model without a tokenizer is refused once
/// its files are read, before its weights go to the device.
pub fn load_seqs_for_text(args: &ModelArgs, run: Option<&RunArgs>, max_seqs: usize) -> Result<(Model, Loaded)> {
    let mut loaded = prepare(args, run)?;
    need_tokenizer(&loaded)?;
    let model = build(args, &mut loaded, max_seqs)?;
    Ok((model, loaded))
}

use tinfer::config::DEFAULT_CONTEXT;

/// The first half of `load_seqs`: threads set, files read, the context set (--ctx-size, else
/// the model's own up to DEFAULT_CONTEXT); no model yet, so
/// a command that knows how many tokens it will run can cut `cfg.seq_len` to them first (the GPU
/// sizes its KV pool by it).
pub fn prepare(args: &ModelArgs, run: Option<&RunArgs>) -> Result<Loaded> {
    prepare_at_least(args, run, 0)
}

/// `prepare`, with a default context of at least `at_least` tokens where the model has them
/// (perplexity's --ctx window).
pub fn prepare_at_least(args: &ModelArgs, run: Option<&RunArgs>, at_least: usize) -> Result<Loaded> {
    if let Some(run) = run {
        run.apply_threads()?;
    }
    let mut loaded = loader::load(&args.path.resolve()?)?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    loaded.cfg.seq_len = context(loaded.cfg.seq_len, run.and_then(|r| r.ctx_size), at_least)?;
    Ok(loaded)
}

/// The context a run uses for a model of `own` tokens: --ctx-size `given` (1 to `own`), else the
/// model's own up to DEFAULT_CONTEXT, or up to `at_least` where that is more (perplexity's --ctx).
pub fn context(own: usize, given: Option<usize>, at_least: usize) -> Result<usize> {
    match given {
        Some(n) if n == 0 || n > own => {
            usage!("--ctx-size must be between 1 and the model's context of {own} tokens, got {n}")
        }
        Some(n) => Ok(n),
        None => Ok(own.min(DEFAULT_CONTEXT.max(at_least))),
    }
}

/// The second half: the weights onto the device.
pub fn build(args: &ModelArgs, loaded: &mut Loaded, max_seqs: usize) -> Result<Model> {
    let mut weights = loaded.weights.take().expect("load() returns weights");
    let loras = super::lora::adapters(&args.lora, &loaded.cfg, &mut weights)?;
    let model = Model::with_loras(
        loaded.cfg.clone(),
        weights,
        loras,
        args.device,
        args.adapter.as_deref(),
        &args.options(max_seqs),
    )?;
    if args.device == Device::Auto {
        eprintln!("device: {}", model.device_name());
    }
    if args.lora.lora_merge && model.is_gpu() && args.dtype == tinfer::model::Dtype::Auto {
        eprintln!("note: the merged matrices are f32, which the GPU stores as f16 by default (--dtype f32 keeps them; unmerged adapters stay f32 beside the base's own blocks)");
    }
    if model.device_weight_bytes().is_none() {
        let gpu_only = [
            ("--dtype", args.dtype != tinfer::model::Dtype::Auto),
            ("--kv-dtype", args.kv_dtype != tinfer::model::KvDtype::Auto),
            ("--gemv", args.gemv != tinfer::model::Gemv::Auto),
        ];
        for (flag, given) in gpu_only {
            if given {
                eprintln!("note: {flag} applies to the GPU; the CPU path computes and caches in f32");
            }
        }
    }
    Ok(model)
}

/// Cut the context to the `n` tokens a command will run, unless --ctx-size set it: a 32K-token
/// model scoring 2K tokens then keeps a 2K-token KV pool on the GPU, not a 32K one. Refuses a
/// run longer than the context.
pub fn fit_context(loaded: &mut Loaded, run: &RunArgs, n: usize) -> Result<()> {
    let ctx = loaded.cfg.seq_len;
    if n > ctx {
        if run.ctx_size.is_some() {
            usage!("{n} tokens do not fit in --ctx-size {ctx}");
        }
        usage!("{n} tokens do not fit in the context of {ctx} tokens (the default: the model's own, at most {DEFAULT_CONTEXT}); raise it with -c/--ctx-size, up to the model's context");
    }
    if run.ctx_size.is_none() {
        loaded.cfg.seq_len = n.max(1);
    }
    Ok(())
}

pub fn need_tokenizer(loaded: &Loaded) -> Result<&Tokenizer> {
    loaded.tokenizer.as_ref().with_context(|| {
        format!(
            "this command needs a tokenizer: {}",
            loaded.tokenizer_error.as_deref().unwrap_or("none found")
        )
    })
}

/// The prompt: --prompt, --file, or all of stdin. Checked before any model is loaded: an empty
/// prompt is refused here.
pub fn prompt_text(input: &PromptArgs) -> Result<String> {
    let text = if let Some(p) = &input.prompt {
        if input.no_escape {
            p.clone()
        } else {
            process_escapes(p).map_err(|e| anyhow::Error::new(Usage(format!("--prompt {e}"))))?
        }
    } else if let Some(path) = &input.file {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read the prompt file {}", path.display()))?;
        String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "the prompt file {} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?
    } else {
        stdin_text()?
    };
    // A file or a pipe ends with a newline that was never meant as part of the prompt (`echo`
    // adds one); llama-cli drops it from -f files too (only the "\n").
    let text = match (&input.prompt, text.strip_suffix('\n')) {
        (None, Some(t)) => t.to_string(),
        _ => text,
    };
    if text.is_empty() {
        bail!("the prompt is empty: give some text with --prompt, --file or on stdin");
    }
    Ok(text)
}

/// All of stdin as UTF-8; refused when stdin is a terminal (nothing was piped).
pub fn stdin_text() -> Result<String> {
    if std::io::stdin().is_terminal() {
        bail!("no prompt: pass --prompt TEXT or --file FILE, or pipe the text on stdin");
    }
    let mut bytes = vec![];
    std::io::stdin().read_to_end(&mut bytes).context("cannot read stdin")?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "stdin is not valid UTF-8 (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}
