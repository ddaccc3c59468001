//! `--spec lookup|draft` and its settings (generate, chat, bench spec): speculative decoding's
//! drafter built from the command line (tinfer::engine::spec).

use std::path::PathBuf;

use anyhow::Result;

use super::args::{usage, ModelArgs, ModelPath, RunArgs, SpecBenchArgs};
use super::load::{build, need_tokenizer, prepare};
pub use super::spec_args::{SpecArgs, SpecKind};
use tinfer::engine::spec::{DraftModel, Lookup};
use tinfer::engine::{Spec, SpecConfig};
use tinfer::tokenizer::Tokenizer;

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
        let max = self.max_for(kind);
        if self.draft_min > max {
            usage!("--draft-min {} is more than the draft length's maximum, {max} (--draft-max; default 8 for lookup, 5 for a draft model)", self.draft_min);
        }
        if !(0.0..=1.0).contains(&self.draft_p_min) {
            usage!("--draft-p-min must be between 0 and 1, got {}", self.draft_p_min);
        }
        Ok(kind)
    }

    /// --draft-max, else the default of `kind`: 8 for lookup, 5 for a draft model.
    fn max_for(&self, kind: Option<SpecKind>) -> usize {
        let default = if kind == Some(SpecKind::Draft) { 5 } else { 8 };
        self.draft_max.unwrap_or(default)
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
                    lora: Default::default(), // the target's adapters are not the draft's
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
            draft_max: self.max_for(Some(kind)),
            draft_min: self.draft_min,
        };
        Ok(Some(Spec::new(drafter, cfg)))
    }
}

/// The built-in prompt set: (name, user message).
const PROMPTS: [(&str, &str); 4] = [
    (
        "edit-python",
        include_str!("../../benches/spec-prompts/edit-python.txt"),
    ),
    ("edit-rust", include_str!("../../benches/spec-prompts/edit-rust.txt")),
    ("summarise", include_str!("../../benches/spec-prompts/summarise.txt")),
    ("prose", include_str!("../../benches/spec-prompts/prose.txt")),
];

pub fn bench_spec(mut a: SpecBenchArgs) -> Result<()> {
    use tinfer::engine::{Engine, Sequence, Stop};
    use tinfer::sampler::{Sampler, SamplerConfig};

    if a.spec.kind()?.is_none() {
        a.spec.spec = Some(SpecKind::Lookup);
    }
    if a.repeats == 0 || a.max_tokens == 0 {
        usage!("--repeats and --max-tokens must be at least 1");
    }
    let prompts: Vec<(String, String)> = if a.prompt_files.is_empty() {
        PROMPTS.iter().map(|(n, p)| (n.to_string(), p.to_string())).collect()
    } else {
        let read = |f: &PathBuf| -> Result<(String, String)> {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read --prompt-file {}: {e}", f.display()))?;
            Ok((f.file_stem().unwrap_or_default().to_string_lossy().into(), text))
        };
        a.prompt_files.iter().map(read).collect::<Result<_>>()?
    };
    let (model, loaded) = super::load::load_seqs_for_text(&a.model, Some(&a.run), 1)?;
    let tok = need_tokenizer(&loaded)?;
    let ctx = model.cfg.seq_len;
    let mut spec = a.spec.build(&a.model, &a.run, tok, ctx, 0)?;
    let ahead = a.model.decode_ahead(&model);
    eprintln!(
        "model: {} | device: {} | drafter: {:?} | greedy, at most {} tokens a prompt",
        a.model.path.resolve()?.display(),
        model.device_name(),
        a.spec.kind()?.unwrap(),
        a.max_tokens
    );
    let mut model = Some(model);
    let mut rows = vec![];
    // the table on stdout, or on stderr when stdout gets the JSON
    let say = |line: String| {
        if a.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    say(format!(
        "{:<14} {:>6} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6} {:>8} {:>5}",
        "prompt", "tokens", "plain t/s", "spec t/s", "speedup", "drafted", "accepted", "rate", "a/verify", "same"
    ));
    for (name, text) in &prompts {
        let chat = [tinfer::tokenizer::Message::new("user", text.trim_end())];
        let ids = match tok.apply_chat_template(&chat, true) {
            Ok(t) => tok.encode_raw(&t)?,
            Err(_) => tok.encode(text)?,
        };
        let (mut plain, mut fast) = (vec![], vec![]);
        let (mut texts, mut stats) = (vec![], Default::default());
        for _ in 0..a.repeats {
            for with_spec in [false, true] {
                let m = model.take().unwrap();
                let mut engine = Engine::new(m).with_decode_ahead(ahead);
                if with_spec {
                    // a fresh draft length and pause each run (the drafter, and its cache, kept)
                    let s = spec.take().unwrap();
                    engine = engine.with_spec(Spec::new(s.drafter, s.cfg));
                }
                let stop = Stop::new(&engine.model.cfg, a.max_tokens);
                let seq = Sequence::new(ids.clone(), Sampler::new(SamplerConfig::default()), stop);
                let g = engine.run(seq)?.remove(0).generation();
                let rate = g.decode_steps as f64 / g.gen_time.as_secs_f64().max(1e-9);
                if with_spec {
                    (spec, stats) = (engine.take_spec(), g.spec);
                    fast.push(rate);
                } else {
                    plain.push(rate);
                }
                texts.push(g.tokens);
                model = Some(engine.into_model());
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (p, s) = (median(&mut plain), median(&mut fast));
        let same = texts.windows(2).all(|w| w[0] == w[1]);
        let rate = stats.accepted as f64 / stats.drafted.max(1) as f64;
        let per_verify = stats.accepted as f64 / stats.verifies.max(1) as f64;
        say(format!(
            "{name:<14} {:>6} {p:>9.2} {s:>9.2} {:>7.2}x {:>8} {:>8} {:>5.1}% {per_verify:>8.2} {:>5}",
            texts[0].len(),
            s / p,
            stats.drafted,
            stats.accepted,
            100.0 * rate,
            if same { "yes" } else { "NO" }
        ));
        rows.push(serde_json::json!({
            "prompt": name, "tokens": texts[0].len(), "plain_tok_s": p, "spec_tok_s": s,
            "speedup": s / p, "drafted": stats.drafted, "accepted": stats.accepted,
            "acceptance": rate, "accepted_per_verify": per_verify, "same_text": same,
        }));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
