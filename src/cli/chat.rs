//! `tinfer chat`: one turn (--prompt / --file), or an interactive session like llama-cli's.
//!
//! One sequence keeps the conversation: each turn renders the whole conversation through the
//! chat template and runs only the tokens after the longest prefix its cache already holds. When
//! the conversation outgrows the context, the oldest messages after the system message are
//! dropped (said on stderr), unless --no-context-shift.

use std::io::BufRead;

use anyhow::Result;

use super::signals::{self, Interrupted};
use super::stream::{drive, note_kv_full, show_prompt, Printer};
use tinfer::engine::{Engine, Sequence, Stop, StopReason};
use tinfer::sampler::Sampler;
use tinfer::tokenizer::{Message, Tokenizer};

const HELP: &str = "commands:
  /help             this list
  /reset            forget the conversation (the system message is kept)
  /exit, /quit      end the session (also Ctrl-D, or Ctrl-C at the prompt)
input:
  a line ending in \\ continues on the next line
  a line \"\"\" starts a block of lines that a line \"\"\" ends
  //text            sends /text (a message that starts with /)
  Ctrl-C while the model replies stops the reply";

/// What stays the same across turns.
pub struct Chat<'a> {
    pub tok: &'a Tokenizer,
    pub system: Vec<Message>,
    pub stop: Stop,
    /// Tokens never sampled (`--ignore-eos`).
    pub banned: Vec<u32>,
    /// Stop strings (`--stop`).
    pub stops: Vec<String>,
    pub verbose_prompt: bool,
    /// Drop the oldest messages when the conversation outgrows the context.
    pub context_shift: bool,
}

/// One message typed at the prompt.
enum Input {
    Message(String),
    Command(String),
    /// A line that could not be read as text: said, not sent.
    Invalid(String),
    Eof,
}

impl Chat<'_> {
    /// One user message (with the system message, if any): print the reply, then the stats.
    pub fn one_turn(&self, engine: &mut Engine, sampler: Sampler, text: &str) -> Result<()> {
        let mut messages = self.system.clone();
        messages.push(Message::new("user", text));
        let ids = self.render(&messages)?;
        let mut printer = Printer::new();
        let h = engine.add(Sequence::new(ids, sampler, self.stop.clone()).with_banned(self.banned.clone()))?;
        let interrupted = drive(engine, &[h], self.tok, &self.stops, |_, t| printer.print(t))?;
        printer.end_line()?;
        let s = engine.take(h);
        eprintln!("{} | seed {}", s.generation().stats(), s.sampler.cfg.seed);
        note_kv_full(s.generation().stop);
        if interrupted {
            return Err(Interrupted.into());
        }
        Ok(())
    }

    /// The chat template rendered for `messages` and tokenized (shown with --verbose-prompt).
    fn render(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.tok.apply_chat_template(messages, true)?;
        let ids = self.tok.encode_raw(&text)?;
        if self.verbose_prompt {
            show_prompt(self.tok, &text, &ids)?;
        }
        Ok(ids)
    }

    /// The interactive session.
    pub fn repl(&self, engine: &mut Engine, mut sampler: Sampler) -> Result<()> {
        let ctx = engine.model.cfg.seq_len;
        let mut messages = self.system.clone();
        eprintln!(
            "chat: type a message (/help for commands; Ctrl-C stops a reply; Ctrl-D or Ctrl-C at the prompt exits)"
        );
        let stdin = std::io::stdin();
        loop {
            let text = match read_input(&mut stdin.lock())? {
                Input::Eof => {
                    eprintln!(); // the shell's prompt starts on a new line
                    return Ok(());
                }
                Input::Invalid(why) => {
                    eprintln!("{why}");
                    continue;
                }
                Input::Command(c) => match c.as_str() {
                    "/exit" | "/quit" => return Ok(()),
                    "/help" => {
                        eprintln!("{HELP}");
                        continue;
                    }
                    "/reset" => {
                        messages = self.system.clone();
                        eprintln!(
                            "conversation cleared{}",
                            if self.system.is_empty() {
                                ""
                            } else {
                                " (the system message is kept)"
                            }
                        );
                        continue;
                    }
                    other => {
                        let name = other.split_whitespace().next().unwrap_or(other);
                        eprintln!("unknown command {name}: /help lists the commands (start with // to send a message beginning with /)");
                        continue;
                    }
                },
                Input::Message(m) => m,
            };
            messages.push(Message::new("user", &text));
            let ids = match self.fit(&mut messages, ctx) {
                Ok(ids) => ids,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    messages.pop();
                    continue;
                }
            };
            // The whole conversation each turn: the prefix cache (model/prefix.rs, as for
            // `tinfer serve`) holds the blocks of what came before, so only what changed runs.
            let seq = Sequence::new(ids, sampler, self.stop.clone()).with_banned(self.banned.clone());
            let h = engine.add(seq)?;
            let mut printer = Printer::new();
            let mut reply = String::new();
            let result = drive(engine, &[h], self.tok, &self.stops, |_, t| {
                reply += t;
                printer.print(t)
            });
            printer.end_line()?;
            let s = engine.take(h);
            let g = s.generation();
            sampler = s.sampler;
            match result {
                Err(e) => {
                    eprintln!("error: {e:#}");
                    messages.pop();
                    continue;
                }
                Ok(interrupted) => {
                    if interrupted {
                        eprintln!("[interrupted: the reply so far is kept; Ctrl-C again at the prompt exits]");
                    }
                }
            }
            messages.push(Message::new("assistant", &reply));
            eprintln!("[{}]", g.stats());
            note_kv_full(g.stop);
            if g.stop == StopReason::ContextFull {
                eprintln!(
                    "note: the reply reached the end of the context ({ctx} tokens); {}",
                    if self.context_shift {
                        "the next message drops the oldest ones"
                    } else {
                        "/reset to start over (or run without --no-context-shift)"
                    }
                );
            }
        }
    }

    /// Render the conversation, dropping the oldest messages after the system message until
    /// the prompt leaves room for a reply (a quarter of the context, or -n if smaller). The
    /// newest message is never dropped: if it alone does not fit, that is the error.
    fn fit(&self, messages: &mut Vec<Message>, ctx: usize) -> Result<Vec<u32>> {
        let room = self.stop.max_tokens.min(ctx / 4).max(1);
        let keep = self.system.len();
        let mut dropped = 0;
        loop {
            let ids = self.render(messages)?;
            if ids.len() + room <= ctx || (ids.len() < ctx && messages.len() == keep + 1) {
                if dropped > 0 {
                    eprintln!(
                        "note: the conversation outgrew the context of {ctx} tokens: dropped the {dropped} oldest message(s){}",
                        if keep > 0 { " after the system message" } else { "" }
                    );
                }
                return Ok(ids);
            }
            if messages.len() == keep + 1 {
                anyhow::bail!(
                    "this message makes a prompt of {} tokens but the context holds {ctx}: shorten it{}",
                    ids.len(),
                    if keep > 0 { " or the system message" } else { "" }
                );
            }
            if !self.context_shift {
                anyhow::bail!(
                    "the conversation is full ({} of {ctx} tokens with this message, {room} kept for the reply): /reset to start over, or run without --no-context-shift to drop the oldest messages",
                    ids.len()
                );
            }
            // Drop the oldest turn: a user message and the replies up to the next user message.
            messages.remove(keep);
            dropped += 1;
            while messages.len() > keep + 1 && messages[keep].role != "user" {
                messages.remove(keep);
                dropped += 1;
            }
        }
    }
}

/// Read one message from the prompt: a line, lines joined by a trailing `\`, or a `"""` block.
/// The prompt ("> ", then "... " on continued lines) goes to stderr.
fn read_input(input: &mut impl BufRead) -> Result<Input> {
    signals::set_phase(signals::Phase::Exit);
    eprint!("> ");
    let mut text = String::new();
    let mut block = false;
    let mut invalid = None;
    loop {
        let mut bytes = vec![];
        if input.read_until(b'\n', &mut bytes)? == 0 {
            if text.is_empty() && !block {
                return Ok(Input::Eof);
            }
            break;
        }
        let line = match String::from_utf8(bytes) {
            Ok(l) => l,
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                invalid.get_or_insert(format!(
                    "that input is not valid UTF-8 (byte 0x{:02x} at offset {at} of its line); it was not sent",
                    e.as_bytes()[at]
                ));
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            }
        };
        let line = line.trim_end_matches(['\n', '\r']);
        if block {
            if line.trim() == "\"\"\"" {
                break;
            }
            text.push_str(line);
            text.push('\n');
        } else if text.is_empty() && line.trim() == "\"\"\"" {
            block = true;
        } else if let Some(head) = line.strip_suffix('\\') {
            text.push_str(head);
            text.push('\n');
        } else {
            text.push_str(line);
            break;
        }
        eprint!("... ");
    }
    if block && text.ends_with('\n') {
        text.pop();
    }
    if let Some(why) = invalid {
        return Ok(Input::Invalid(why));
    }
    if !block && text.trim().is_empty() {
        return read_input(input);
    }
    let trimmed = text.trim_start();
    if !block && trimmed.starts_with('/') {
        return Ok(match trimmed.strip_prefix("//") {
            Some(_) => Input::Message(trimmed[1..].to_string()),
            None => Input::Command(trimmed.trim_end().to_string()),
        });
    }
    Ok(Input::Message(text))
}
