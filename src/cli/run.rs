//! generate, chat, tokenize, perplexity and convert: check the input, load, run, print (logits
//! in logits.rs).

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use serde_json::json;

use super::args::{usage, BenchWhat, Cli, Command, SampleArgs};
use super::load::{build, fit_context, load_seqs_for_text, need_tokenizer, prepare_at_least, prompt_text, stdin_text};
use super::signals::{self, Interrupted};
use super::stream::{drive, note_kv_full, show_prompt, Printer};
use tinfer::engine::{Engine, Sequence, Stop};
use tinfer::loader;
use tinfer::sampler::{Sampler, SamplerConfig};
use tinfer::tokenizer::Message;
use tinfer::tools::convert::convert;
use tinfer::tools::kl::{KlBase, KlCompare};
use tinfer::tools::score::score_rows;

/// The stop rule of `generate` and `chat`: the model's end tokens (banned instead of stopping
/// with --ignore-eos), the output budget, the context.
fn stop_rule(model: &tinfer::model::Model, sample: &SampleArgs) -> (Stop, Vec<u32>) {
    let mut stop = Stop::new(&model.cfg, sample.max_tokens());
    let mut banned = vec![];
    if sample.ignore_eos {
        banned = std::mem::take(&mut stop.eos);
    }
    (stop, banned)
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate {
            model: margs,
            run,
            input,
            echo,
            n_seq,
            lora_seq,
            spec,
            sample,
        } => {
            let sampler = sample.sampler()?;
            // --lora-seq: each continuation its own adapters (and so its own prompt run)
            let lora_factors = match &lora_seq {
                Some(list) => Some(super::lora::seq_factors(
                    list,
                    margs.lora.lora.len(),
                    margs.lora.lora_merge,
                )?),
                None => None,
            };
            let n_seq = match &lora_factors {
                Some(f) if n_seq == 1 || n_seq == f.len() => f.len(),
                Some(f) => usage!("--lora-seq lists {} continuations but --n-seq is {n_seq}", f.len()),
                None => n_seq,
            };
            if spec.kind()?.is_some() && lora_seq.is_some() {
                usage!("speculative decoding runs one sequence: drop --lora-seq or the speculation");
            }
            if spec.kind()?.is_some() && n_seq > 1 {
                usage!("speculative decoding (--spec, --draft-model) runs one sequence: drop --n-seq {n_seq} or the speculation");
            }
            let stops = sample.stops(input.no_escape)?;
            if n_seq == 0 || n_seq > 64 {
                usage!("--n-seq must be between 1 and 64, got {n_seq}");
            }
            let text = prompt_text(&input)?;
            if n_seq > 1 && sampler.is_greedy() && lora_factors.is_none() {
                eprintln!(
                    "warning: --n-seq {n_seq} with greedy decoding (temperature 0) gives {n_seq} identical continuations; \
                     set --temperature to sample different ones"
                );
            }
            signals::install();
            let started = std::time::Instant::now();
            let (model, loaded) = load_seqs_for_text(&margs, Some(&run), n_seq)?;
            // files read, weights converted and uploaded, GPU pipelines built
            let load_secs = started.elapsed().as_secs_f64();
            let tok = need_tokenizer(&loaded)?;
            let ids = tok.encode(&text)?;
            if input.verbose_prompt {
                show_prompt(tok, &text, &ids)?;
            }
            let (stop, banned) = stop_rule(&model, &sample);
            let seed = sampler.cfg.seed;
            let ahead = margs.decode_ahead(&model);
            let ctx = model.cfg.seq_len;
            let mut engine = Engine::new(model).with_decode_ahead(ahead);
            if let Some(s) = spec.build(&margs, &run, tok, ctx, seed)? {
                engine = engine.with_spec(s);
            }
            if n_seq > 1 {
                let mut samplers: Vec<Sampler> = (0..n_seq as u64)
                    .map(|i| {
                        Sampler::new(SamplerConfig {
                            seed: seed.wrapping_add(i),
                            ..sampler.cfg.clone()
                        })
                    })
                    .collect();
                let hs: Vec<usize> = if let Some(factors) = lora_factors {
                    // adapters change the prompt's keys and values: a sequence each, no sharing
                    let seqs = samplers.into_iter().zip(factors).map(|(s, f)| {
                        Sequence::new(ids.clone(), s, stop.clone())
                            .with_banned(banned.clone())
                            .with_lora(f)
                    });
                    seqs.map(|s| engine.add(s)).collect::<Result<_>>()?
                } else {
                    let first = samplers.remove(0);
                    let seq = Sequence::new(ids, first, stop).with_forks(samplers).with_banned(banned);
                    let h = engine.add(seq)?;
                    // The forks exist once the prompt has run: step until they do.
                    // (Ctrl-C meanwhile exits at once: the reply has not begun.)
                    while engine.get(h).status == tinfer::engine::Status::Waiting {
                        engine.step()?;
                    }
                    [h].into_iter().chain(engine.get(h).forked.clone()).collect()
                };
                let mut texts = vec![String::new(); hs.len()];
                let interrupted = drive(&mut engine, &hs, tok, &stops, |i, t| {
                    texts[i] += t;
                    Ok(())
                })?;
                let kv = engine.kv_usage();
                let mut out = std::io::stdout().lock();
                for (i, &h) in hs.iter().enumerate() {
                    let g = engine.take(h).generation();
                    let adapters = lora_seq.as_ref().map_or(String::new(), |l| {
                        format!(", lora {}", l.split(',').nth(i).unwrap_or("").trim())
                    });
                    writeln!(
                        out,
                        "--- continuation {} (seed {}{adapters}) ---",
                        i + 1,
                        seed.wrapping_add(i as u64)
                    )?;
                    writeln!(out, "{}{}", if echo { text.as_str() } else { "" }, texts[i])?;
                    eprintln!("[{}] {}", i + 1, g.stats());
                }
                if let Some(kv) = kv {
                    eprintln!(
                        "kv: {} of {} pages of {} tokens in use at the last step{}, {:.1}% of their rows unfilled",
                        kv.pages_used,
                        kv.pages,
                        kv.page,
                        if lora_seq.is_none() {
                            " (the prompt's shared)"
                        } else {
                            ""
                        },
                        kv.waste * 100.0
                    );
                }
                if interrupted {
                    return Err(Interrupted.into());
                }
                return Ok(());
            }
            let mut printer = Printer::new();
            if echo {
                printer.print(&text)?;
            }
            let mut seq = Sequence::new(ids, sampler, stop).with_banned(banned);
            if let Some(f) = lora_factors.and_then(|f| f.into_iter().next()) {
                seq = seq.with_lora(f); // --lora-seq of one entry
            }
            let h = engine.add(seq)?;
            let interrupted = drive(&mut engine, &[h], tok, &stops, |_, t| printer.print(t))?;
            printer.end_line()?;
            let s = engine.take(h);
            eprintln!(
                "{} | seed {} | load: {load_secs:.2} s",
                s.generation().stats(),
                s.sampler.cfg.seed
            );
            note_kv_full(s.generation().stop);
            if interrupted {
                return Err(Interrupted.into());
            }
        }
        Command::Chat {
            model: margs,
            run,
            input,
            system,
            no_context_shift,
            spec,
            sample,
        } => {
            let sampler = sample.sampler()?;
            spec.kind()?;
            let stops = sample.stops(input.no_escape)?;
            let one_turn = if input.prompt.is_some() || input.file.is_some() {
                Some(prompt_text(&input)?)
            } else {
                None
            };
            signals::install();
            let mut margs = margs;
            margs.prefix_cache = true; // each turn reuses the conversation's blocks
            let (model, loaded) = load_seqs_for_text(&margs, Some(&run), 1)?;
            let tok = need_tokenizer(&loaded)?;
            let (stop, banned) = stop_rule(&model, &sample);
            let ahead = margs.decode_ahead(&model);
            let ctx = model.cfg.seq_len;
            let mut engine = Engine::new(model).with_decode_ahead(ahead);
            if let Some(s) = spec.build(&margs, &run, tok, ctx, sampler.cfg.seed)? {
                engine = engine.with_spec(s);
            }
            let system: Vec<Message> = system.iter().map(|s| Message::new("system", s)).collect();
            let chat = super::chat::Chat {
                tok,
                system,
                stop,
                banned,
                stops,
                verbose_prompt: input.verbose_prompt,
                context_shift: !no_context_shift,
            };
            match one_turn {
                Some(text) => chat.one_turn(&mut engine, sampler, &text)?,
                None => chat.repl(&mut engine, sampler)?,
            }
        }
        Command::Tokenize {
            model,
            json,
            pieces,
            no_special,
            file,
            text,
        } => {
            let text = match (text, file) {
                (Some(t), _) => t,
                (None, Some(f)) => {
                    std::fs::read_to_string(&f).with_context(|| format!("cannot read {} as UTF-8 text", f.display()))?
                }
                (None, None) => stdin_text()?,
            };
            let mut tok = loader::load_tokenizer(&model.resolve()?)?;
            tok.set_parse_special(!no_special);
            let ids = tok.encode(&text)?;
            let mut out = std::io::stdout().lock();
            match (json, pieces) {
                (true, false) => writeln!(out, "{}", serde_json::to_string(&ids)?)?,
                (true, true) => {
                    let list: Vec<_> = ids
                        .iter()
                        .map(|&id| Ok(json!({"id": id, "piece": tok.piece(id)?})))
                        .collect::<Result<_>>()?;
                    writeln!(out, "{}", serde_json::to_string(&list)?)?;
                }
                (false, true) => {
                    for &id in &ids {
                        writeln!(out, "{id}\t{:?}", tok.piece(id)?)?;
                    }
                }
                (false, false) => writeln!(
                    out,
                    "{}",
                    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
                )?,
            }
        }
        Command::Perplexity {
            model: margs,
            run,
            file,
            ctx,
            chunks,
            json,
            save_logits,
            kl_base,
            kl_top,
        } => {
            if chunks == Some(0) {
                usage!("--chunks must be at least 1");
            }
            if kl_top == 0 {
                usage!("--kl-top must be at least 1");
            }
            let base = kl_base.as_deref().map(KlBase::load).transpose()?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
            // the context is at least --ctx N (up to the model's own), unless -c says otherwise
            let mut loaded = prepare_at_least(&margs, Some(&run), ctx.unwrap_or(0))?;
            let ids = need_tokenizer(&loaded)?.encode(&text)?;
            let own = loaded.cfg.seq_len;
            let window = ctx.unwrap_or(own);
            if window < 2 || window > own {
                usage!("--ctx must be between 2 and the context ({own} tokens), got {window}");
            }
            let n = ids.len().min(chunks.map_or(usize::MAX, |c| c.saturating_mul(window)));
            let ids = &ids[..n];
            // The longest window the text fills: all the KV cache needs.
            let window = window.min(n).max(2);
            fit_context(&mut loaded, &run, window)?;
            let mut model = build(&margs, &mut loaded, 1)?;
            let vocab = model.cfg.vocab_size;
            if let Some(path) = &save_logits {
                // a path that cannot be written fails now, not after the whole text is scored
                std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            }
            let mut save = save_logits.as_ref().map(|_| KlBase::new(kl_top, vocab, window, ids));
            let mut cmp = base
                .as_ref()
                .map(|b| KlCompare::new(b, vocab, window, ids))
                .transpose()?;
            let s = score_rows(&mut model, ids, window, |row, target| {
                if let Some(b) = save.as_mut() {
                    b.push(row, target);
                }
                if let Some(c) = cmp.as_mut() {
                    c.push(row, target);
                }
            })?;
            if let (Some(b), Some(path)) = (&save, &save_logits) {
                b.save(path)?;
                eprintln!("saved the distributions of {} positions to {}", b.n(), path.display());
            }
            let kl = cmp.map(|c| c.report()).transpose()?;
            if json {
                let mut j = json!({"mean_nll": s.mean_nll(), "ppl": s.ppl(), "n_scored": s.n_scored});
                if let Some(kl) = kl {
                    j["kl"] = kl;
                }
                println!("{j}");
            } else if let Some(kl) = kl {
                tinfer::tools::kl::print_report(&kl);
            } else {
                println!(
                    "tokens: {}  scored: {}  mean NLL: {:.6}  perplexity: {:.4}",
                    ids.len(),
                    s.n_scored,
                    s.mean_nll(),
                    s.ppl()
                );
            }
        }
        Command::Logits(args) => super::logits::logits(args)?,
        Command::Info {
            model: margs,
            run,
            json,
        } => super::info::info(&margs, &run, json)?,
        Command::Bench {
            what: BenchWhat::Attention(args),
        } => super::bench::bench_attention(args)?,
        Command::Bench {
            what: BenchWhat::Model(args),
        } => super::bench::bench_model(args)?,
        Command::Bench {
            what: BenchWhat::Kernels(args),
        } => super::bench::bench_kernels(args)?,
        Command::Bench {
            what: BenchWhat::Spec(args),
        } => super::spec::bench_spec(args)?,
        Command::Lora(cmd) => super::lora::run(cmd)?,
        Command::Serve { model, run, serve } => crate::serve::serve(model, run, serve)?,
        Command::Convert { input, output, dtype } => {
            convert(&input, &output, dtype, std::io::stderr().is_terminal())?;
            eprintln!("wrote {}", output.display());
        }
    }
    Ok(())
}
