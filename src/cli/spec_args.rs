//! The flags of speculative decoding (`--spec`, `--draft-*`), apart from what they build
//! (cli/spec.rs), so that the argument types import nothing back.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Where drafts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpecKind {
    /// Prompt lookup: the tokens that followed the longest earlier occurrence (up to 64 tokens,
    /// at least 1) of the text's last tokens in the prompt or the output. No second model; pays
    /// on text that repeats its input (code edits, summaries, extraction).
    Lookup,
    /// A smaller model with the same tokenizer (--draft-model), on its own KV cache.
    Draft,
}

#[derive(Args, Clone, Debug, Default)]
pub struct SpecArgs {
    /// Speculative decoding: drafted tokens are verified by the model in one forward; greedy text
    /// is the same as without, sampled text has the same distribution (--draft-model alone means
    /// --spec draft).
    #[arg(long, value_enum)]
    pub spec: Option<SpecKind>,
    /// The draft model for --spec draft: a path or a name as for --model, with the model's
    /// tokenizer; it runs on the same device with the same options.
    #[arg(long, value_name = "PATH")]
    pub draft_model: Option<PathBuf>,
    /// Most tokens drafted per verify step, 1 to 64 (default 8 for lookup, 5 for a draft model);
    /// the draft length adapts below it to what is accepted.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub draft_max: Option<usize>,
    /// Drafts shorter than N are not verified (a plain step instead).
    #[arg(long, value_name = "N", default_value_t = 1, allow_hyphen_values = true)]
    pub draft_min: usize,
    /// A draft model stops drafting when its most likely token's probability falls below P (0 to
    /// 1; for greedy decoding, of its softmax at temperature 1).
    #[arg(long, value_name = "P", default_value_t = 0.8, allow_hyphen_values = true)]
    pub draft_p_min: f32,
}
