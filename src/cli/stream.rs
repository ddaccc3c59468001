//! Streaming generated text: `drive` steps the engine and hands out each sequence's text as it
//! becomes whole (stop strings cut, Ctrl-C honoured); `Printer` writes it and ends its line;
//! `show_prompt` is `--verbose-prompt`.

use std::io::Write;

use anyhow::Result;

use super::signals::{self, Phase};
use tinfer::engine::{Engine, StopReason, StopStrings};
use tinfer::tokenizer::{TokenStream, Tokenizer};

/// `--verbose-prompt`: the text the model receives and its tokens, on stderr.
pub fn show_prompt(tok: &Tokenizer, text: &str, ids: &[u32]) -> Result<()> {
    let n = ids.len();
    eprintln!(
        "prompt ({n} token{}):\n{text}\n--- tokens:",
        if n == 1 { "" } else { "s" }
    );
    for &id in ids {
        eprintln!("{id:>8} -> {:?}", tok.piece(id)?);
    }
    eprintln!("---");
    Ok(())
}

/// Step the engine until every sequence of `hs` is finished, passing each one's text (by its
/// index in `hs`) to `out` as it becomes whole, stop strings cut (see `StopStrings`); tokens a
/// sequence already has (forks made by the prompt's forward) come first. Ctrl-C ends them all
/// (`StopReason::Cancelled`). Returns whether Ctrl-C was pressed.
pub fn drive(
    engine: &mut Engine,
    hs: &[usize],
    tok: &Tokenizer,
    stops: &[String],
    mut out: impl FnMut(usize, &str) -> Result<()>,
) -> Result<bool> {
    let mut streams: Vec<(TokenStream, StopStrings)> = hs
        .iter()
        .map(|_| (TokenStream::new(tok), StopStrings::new(stops)))
        .collect();
    let mut feed = |engine: &mut Engine, i: usize, id: u32| -> Result<()> {
        let (ts, stop) = &mut streams[i];
        if let Some(text) = ts.push(id)? {
            out(i, &stop.push(&text))?;
            if stop.hit() {
                engine.finish(hs[i], StopReason::StopString);
            }
        }
        Ok(())
    };
    for (i, &h) in hs.iter().enumerate() {
        for id in engine.get(h).output.clone() {
            feed(engine, i, id)?;
        }
    }
    signals::set_phase(Phase::Generating);
    let mut interrupted = false;
    while !hs.iter().all(|&h| engine.get(h).is_finished()) {
        if signals::interrupted() {
            interrupted = true;
            hs.iter().for_each(|&h| engine.finish(h, StopReason::Cancelled));
            break;
        }
        for (h, id) in engine.step()? {
            if let Some(i) = hs.iter().position(|&x| x == h) {
                feed(engine, i, id)?;
            }
        }
    }
    signals::set_phase(Phase::Exit);
    for (i, (ts, stop)) in streams.iter_mut().enumerate() {
        if !stop.hit() {
            let tail = ts.finish()?.unwrap_or_default();
            out(i, &(stop.push(&tail) + &stop.finish()))?;
        }
    }
    Ok(interrupted || signals::interrupted())
}

/// Writes generated text to stdout as it comes and remembers whether it ends a line.
pub struct Printer {
    at_line_start: bool,
}

impl Printer {
    pub fn new() -> Self {
        Printer { at_line_start: true }
    }

    pub fn print(&mut self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
        self.at_line_start = text.ends_with('\n');
        Ok(())
    }

    /// End the text with a newline, so what follows (the stats, a prompt) starts a line.
    pub fn end_line(&mut self) -> Result<()> {
        if !self.at_line_start {
            self.print("\n")?;
        }
        Ok(())
    }
}

/// The note after a generation that ran out of KV pool before its context (`StopReason::KvFull`).
pub fn note_kv_full(stop: StopReason) {
    if stop == StopReason::KvFull {
        eprintln!("note: the KV cache pool is full before the context is: raise --kv-blocks or --kv-memory");
    }
}
