//! generate, chat, tokenize, perplexity and convert: load, run, print.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::args::{BenchWhat, Cli, Command};
use super::load::{load, load_seqs, need_tokenizer};
use tinfer::engine::score::score;
use tinfer::engine::{Engine, Sequence, Stop};
use tinfer::loader;
use tinfer::sampler::{Sampler, SamplerConfig};
use tinfer::tokenizer::{Message, TokenStream, Tokenizer};
use tinfer::tools::convert::convert;

/// --prompt, or all of stdin.
pub fn prompt_text(prompt: Option<String>) -> Result<String> {
    if let Some(p) = prompt {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        bail!("no prompt: pass --prompt TEXT or pipe the text on stdin");
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

/// Step the engine until sequence `h` finishes, streaming its decoded text to stdout.
/// A newline ends the text when `newline` (interactive chat) or when stdout is a terminal.
pub fn stream(engine: &mut Engine, h: usize, tok: &Tokenizer, newline: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let mut ts = TokenStream::new(tok);
    while !engine.get(h).is_finished() {
        for (_, id) in engine.step()?.into_iter().filter(|&(s, _)| s == h) {
            if let Some(text) = ts.push(id)? {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
        }
    }
    if let Some(text) = ts.finish()? {
        out.write_all(text.as_bytes())?;
    }
    if newline || out.is_terminal() {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate {
            model: margs,
            prompt,
            echo,
            n_seq,
            sample,
        } => {
            let text = prompt_text(prompt)?;
            let sampler = sample.sampler()?;
            if n_seq == 0 || n_seq > 64 {
                bail!("--n-seq must be between 1 and 64, got {n_seq}");
            }
            let (model, loaded) = load_seqs(&margs, n_seq)?;
            let tok = need_tokenizer(&loaded)?;
            let ids = tok.encode(&text)?;
            if n_seq > 1 {
                let seed = sampler.cfg.seed;
                let mut samplers: Vec<Sampler> = (0..n_seq as u64)
                    .map(|i| {
                        Sampler::new(SamplerConfig {
                            seed: seed.wrapping_add(i),
                            ..sampler.cfg.clone()
                        })
                    })
                    .collect();
                let first = samplers.remove(0);
                let stop = Stop::new(&model.cfg, sample.max_tokens);
                let mut engine = Engine::new(model);
                let seqs = engine.run(Sequence::new(ids, first, stop).with_forks(samplers))?;
                let gens: Vec<_> = seqs.iter().map(Sequence::generation).collect();
                let kv = engine.kv_usage();
                let mut out = std::io::stdout().lock();
                for (i, g) in gens.iter().enumerate() {
                    let body = tok.decode(&g.tokens, true)?;
                    writeln!(
                        out,
                        "--- continuation {} (seed {}) ---",
                        i + 1,
                        seed.wrapping_add(i as u64)
                    )?;
                    writeln!(out, "{}{body}", if echo { text.as_str() } else { "" })?;
                    eprintln!("[{}] {}", i + 1, g.stats());
                }
                if let Some(kv) = kv {
                    eprintln!(
                        "kv: {} of {} pages of {} tokens in use at the last step (the prompt's shared), {:.1}% of their rows unfilled",
                        kv.pages_used,
                        kv.pages,
                        kv.page,
                        kv.waste * 100.0
                    );
                }
                return Ok(());
            }
            if echo {
                print!("{text}");
            }
            let stop = Stop::new(&model.cfg, sample.max_tokens);
            let mut engine = Engine::new(model);
            let h = engine.add(Sequence::new(ids, sampler, stop))?;
            stream(&mut engine, h, tok, false)?;
            let s = engine.take(h);
            eprintln!("{} | seed {}", s.generation().stats(), s.sampler.cfg.seed);
        }
        Command::Chat {
            model: margs,
            system,
            prompt,
            sample,
        } => {
            let sampler = sample.sampler()?;
            let (model, loaded) = load(&margs)?;
            let tok = need_tokenizer(&loaded)?;
            let stop = Stop::new(&model.cfg, sample.max_tokens);
            let mut engine = Engine::new(model);
            let mut messages: Vec<Message> = system.iter().map(|s| Message::new("system", s)).collect();
            if let Some(p) = prompt {
                messages.push(Message::new("user", &p));
                let ids = tok.encode_raw(&tok.apply_chat_template(&messages, true)?)?;
                let h = engine.add(Sequence::new(ids, sampler, stop))?;
                stream(&mut engine, h, tok, false)?;
                let s = engine.take(h);
                eprintln!("{} | seed {}", s.generation().stats(), s.sampler.cfg.seed);
                return Ok(());
            }
            chat_loop(&mut engine, tok, messages, sampler, stop)?;
        }
        Command::Tokenize {
            model: margs,
            json,
            text,
        } => {
            let tok = loader::load_tokenizer(&margs.model)?;
            let ids = tok.encode(&prompt_text(text)?)?;
            if json {
                println!("{}", serde_json::to_string(&ids)?);
            } else {
                println!("{}", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "));
            }
        }
        Command::Perplexity {
            model: margs,
            file,
            ctx,
            json,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
            let (mut model, loaded) = load(&margs)?;
            let ids = need_tokenizer(&loaded)?.encode(&text)?;
            let window = ctx.unwrap_or(model.cfg.seq_len);
            let s = score(&mut model, &ids, window)?;
            if json {
                println!(
                    "{}",
                    json!({"mean_nll": s.mean_nll(), "ppl": s.ppl(), "n_scored": s.n_scored})
                );
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
        Command::Info { model: margs, json } => super::info::info(&margs, json)?,
        Command::Bench {
            what: BenchWhat::Attention(args),
        } => super::bench::bench_attention(args)?,
        Command::Bench {
            what: BenchWhat::Model(args),
        } => super::bench::bench_model(args)?,
        Command::Bench {
            what: BenchWhat::Kernels(args),
        } => super::bench::bench_kernels(args)?,
        Command::Convert { input, output, dtype } => {
            convert(&input, &output, dtype, std::io::stderr().is_terminal())?;
            eprintln!("wrote {}", output.display());
        }
    }
    Ok(())
}

/// Interactive multi-turn chat. One sequence keeps the conversation: each turn only the tokens
/// after the longest prefix shared with what its cache holds are run.
pub fn chat_loop(
    engine: &mut Engine,
    tok: &Tokenizer,
    system: Vec<Message>,
    mut sampler: Sampler,
    stop: Stop,
) -> Result<()> {
    let mut messages = system.clone();
    let id = engine.model.new_seq()?;
    let mut cached: Vec<u32> = vec![]; // the tokens whose K/V the cache holds
    let stdin = std::io::stdin();
    eprintln!("chat: type a message, /reset to start over, /exit or Ctrl-D to quit");
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).context("cannot read stdin")? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                messages = system.clone();
                continue;
            }
            _ => {}
        }
        messages.push(Message::new("user", line));
        let ids = tok.encode_raw(&tok.apply_chat_template(&messages, true)?)?;
        let mut shared = cached.iter().zip(&ids).take_while(|(a, b)| a == b).count();
        shared = shared.min(ids.len() - 1); // run at least one token to get logits
        engine.model.truncate(id, shared);
        cached.truncate(shared);
        let seq = Sequence::new(ids[shared..].to_vec(), sampler, stop.clone()).continuing(id, cached.clone());
        let (s, result) = match engine.validate(&seq) {
            Err(e) => (seq, Err(e)),
            Ok(()) => {
                let h = engine.add(seq)?;
                let r = stream(engine, h, tok, true);
                (engine.take(h), r)
            }
        };
        let g = s.generation();
        sampler = s.sampler;
        if let Err(e) = result {
            eprintln!("error: {e:#}");
            engine.model.truncate(id, 0);
            cached.clear();
            messages.pop();
            continue;
        }
        cached.extend_from_slice(&ids[shared..]);
        cached.extend_from_slice(&g.tokens[..g.tokens.len().saturating_sub(1)]);
        // The last sampled token was never run through the model: it is not in the cache.
        engine.model.truncate(id, cached.len());
        messages.push(Message::new("assistant", &tok.decode(&g.tokens, true)?));
        eprintln!("[{}]", g.stats());
    }
}
