//! `--spec lookup|draft` and its settings (generate, chat, bench spec): speculative decoding's
//! drafter built from the command line (tinfer::engine::spec).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::args::{usage, ModelArgs, ModelPath, RunArgs};
use super::load::{build, need_tokenizer, prepare};
use tinfer::engine::spec::{DraftModel, Lookup};
use tinfer::engine::{Spec, SpecConfig};
use tinfer::tokenizer::Tokenizer;

/// Where drafts come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpecKind {
    /// Prompt lookup: the tokens that followed the last 3 (2, 1) tokens where they occurred
    /// before in the prompt or the output. No second model; pays on text that repeats its input
    /// (code edits, summaries, extraction).
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
    #[arg(long, value_name = "N")]
    pub draft_max: Option<usize>,
    /// Drafts shorter than N are not verified (a plain step instead).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub draft_min: usize,
    /// A draft model stops drafting when its most likely token's probability falls below P (0 to
    /// 1; for greedy decoding, of its softmax at temperature 1).
    #[arg(long, value_name = "P", default_value_t = 0.8)]
    pub draft_p_min: f32,
}

impl SpecArgs {
    /// The drafter asked for, checked before anything loads: --spec draft needs --draft-model;
    /// the lengths and p-min in range.
    pub fn kind(&self) -> Result<Option<SpecKind>> {
        let kind = match (self.spec, &self.draft_model) {
            (None, Some(_)) => Some(SpecKind::Draft),
            (Some(SpecKind::Draft), None) => {
                usage!("--spec draft needs --draft-model PATH (a smaller model with the same tokenizer); or use --spec lookup, which needs none")
            }
            (Some(SpecKind::Lookup), Some(_)) => {
                usage!("--draft-model is for --spec draft; --spec lookup drafts from the text itself")
            }
            (k, _) => k,
        };
        if let Some(n) = self.draft_max {
            if !(1..=64).contains(&n) {
                usage!("--draft-max must be between 1 and 64, got {n}");
            }
        }
        let max = self.draft_max.unwrap_or(64);
        if self.draft_min > max {
            usage!("--draft-min {} is more than --draft-max {max}", self.draft_min);
        }
        if !(0.0..=1.0).contains(&self.draft_p_min) {
            usage!("--draft-p-min must be between 0 and 1, got {}", self.draft_p_min);
        }
        Ok(kind)
    }

    /// The speculation for a target whose tokenizer is `tok` and context `ctx`, or None without
    /// --spec. A draft model loads with `margs`'s device and options, its context cut to `ctx`,
    /// and is refused when its vocabulary differs from the target's.
    pub fn build(
        &self,
        margs: &ModelArgs,
        run: &RunArgs,
        tok: &Tokenizer,
        ctx: usize,
        seed: u64,
    ) -> Result<Option<Spec>> {
        let Some(kind) = self.kind()? else {
            return Ok(None);
        };
        let drafter: Box<dyn tinfer::engine::spec::Drafter> = match kind {
            SpecKind::Lookup => Box::new(Lookup { max_ngram: 64 }),
            SpecKind::Draft => {
                let dargs = ModelArgs {
                    path: ModelPath {
                        model: self.draft_model.clone(),
                    },
                    ..margs.clone()
                };
                let run = RunArgs {
                    ctx_size: None,
                    ..run.clone()
                };
                let mut loaded = prepare(&dargs, Some(&run))?;
                loaded.cfg.seq_len = loaded.cfg.seq_len.min(ctx);
                need_tokenizer(&loaded)?;
                let model = build(&dargs, &mut loaded, 1)?;
                let dtok = need_tokenizer(&loaded)?;
                Box::new(DraftModel::new(model, dtok, tok, self.draft_p_min, seed)?)
            }
        };
        let cfg = SpecConfig {
            draft_max: self.draft_max.unwrap_or(if kind == SpecKind::Lookup { 8 } else { 5 }),
            draft_min: self.draft_min,
        };
        Ok(Some(Spec::new(drafter, cfg)))
    }
}
