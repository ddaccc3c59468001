//! `tinfer logits`: run a prompt (a text or token ids) and give the logits of its last position,
//! or of every position: a top-k table, JSON, or a float32 .npy file. Rows are written as each
//! prompt chunk's forward returns them, so `--all` over a long prompt holds one chunk of rows
//! (PREFILL_CHUNK × vocab floats), never T × vocab.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use super::args::{usage, LogitsArgs};
use super::load::prompt_text;
use super::load::{build, fit_context, need_tokenizer, prepare};
use tinfer::engine::PREFILL_CHUNK;
use tinfer::model::{Entry, Want};
use tinfer::tokenizer::Tokenizer;

/// Token ids separated by commas and/or whitespace; `what` names their source in errors.
fn parse_ids(s: &str, what: &str) -> Result<Vec<u32>> {
    let mut ids = vec![];
    // an empty item between commas ("1,,2") is a typo, not a separator
    let parts: Vec<&str> = s.trim().trim_end_matches(',').split(',').map(str::trim).collect();
    if parts.len() > 1 && parts.iter().any(|p| p.is_empty()) {
        usage!("{what}: an empty item between commas in {s:?}");
    }
    for (i, word) in s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .enumerate()
    {
        match word.parse::<u32>() {
            Ok(id) => ids.push(id),
            Err(_) => usage!(
                "{what}: {word:?} (item {}) is not a token id (a whole number >= 0)",
                i + 1
            ),
        }
    }
    if ids.is_empty() {
        usage!("{what}: no token ids (give them as 1,2,3)");
    }
    Ok(ids)
}

/// Where the rows go.
enum Sink {
    Npy(BufWriter<File>),
    Json {
        out: BufWriter<std::io::StdoutLock<'static>>,
        rows: usize,
        all: bool,
    },
    Table {
        top: usize,
    },
}

/// The header of a float32 little-endian C-order .npy file of `shape` (format version 1.0: magic,
/// version, header length, a Python dict literal padded with spaces to a multiple of 64 bytes).
pub fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend((dict.len() as u16).to_le_bytes());
    h.extend(dict.as_bytes());
    h
}

pub fn logits(a: LogitsArgs) -> Result<()> {
    if a.top == 0 {
        usage!("--top must be at least 1");
    }
    // Ids given as such are read before anything is loaded; a text waits for the tokenizer.
    let given = match (&a.ids, &a.ids_file) {
        (Some(s), _) => Some(parse_ids(s, "--ids")?),
        (None, Some(p)) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("cannot read the ids file {}", p.display()))?;
            Some(parse_ids(&text, &format!("--ids-file {}", p.display()))?)
        }
        (None, None) => None,
    };
    let text = if given.is_none() {
        Some(prompt_text(&a.input)?)
    } else {
        None
    };
    let mut loaded = prepare(&a.model, Some(&a.run))?;
    let ids = match (given, &text) {
        (Some(ids), _) => ids,
        (None, Some(t)) => need_tokenizer(&loaded)?.encode(t)?,
        (None, None) => unreachable!("ids or a text"),
    };
    let vocab = loaded.cfg.vocab_size;
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        usage!(
            "token id {bad} (item {}) is outside the vocabulary: ids go from 0 to {}",
            i + 1,
            vocab - 1
        );
    }
    fit_context(&mut loaded, &a.run, ids.len())?;
    if a.routing && loaded.cfg.moe.is_none() {
        usage!("--routing: {} has no Mixture-of-Experts layers", loaded.source);
    }
    let mut model = build(&a.model, &mut loaded, 1)?;
    model.record_routing(a.routing);
    let tok = loaded.tokenizer.as_ref();
    if a.input.verbose_prompt {
        if let (Some(tok), Some(t)) = (tok, &text) {
            super::stream::show_prompt(tok, t, &ids)?;
        }
    }

    let rows = if a.all { ids.len() } else { 1 };
    let mut sink = match &a.out {
        Some(path) => {
            let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = BufWriter::new(f);
            let shape = if a.all { vec![rows, vocab] } else { vec![vocab] };
            w.write_all(&npy_header(&shape))?;
            Sink::Npy(w)
        }
        None if a.json || a.routing => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            write!(out, "{{\"ids\": {}, \"logits\": ", serde_json::to_string(&ids)?)?;
            if a.all {
                out.write_all(b"[")?;
            }
            Sink::Json {
                out,
                rows: 0,
                all: a.all,
            }
        }
        None => Sink::Table { top: a.top },
    };
    let seq = model.new_seq()?;
    // the GPU's routing is read back after each step: chunks of one step each
    let chunk_len = if a.routing {
        PREFILL_CHUNK.min(model.step_rows())
    } else {
        PREFILL_CHUNK
    };
    let n_chunks = ids.len().div_ceil(chunk_len);
    for (c, chunk) in ids.chunks(chunk_len).enumerate() {
        let want = if a.all { Want::All } else { Want::Last };
        let logits = model
            .forward(&[Entry {
                seq,
                tokens: chunk,
                want,
            }])?
            .remove(0);
        if !a.all && c + 1 < n_chunks {
            continue; // only the last chunk's last row is wanted
        }
        let first = if a.all { c * chunk_len } else { ids.len() - 1 };
        for (i, row) in logits.chunks_exact(vocab).enumerate() {
            sink.row(first + i, ids[first + i], row, tok)?;
        }
    }
    model.release(seq);
    let routing = a.routing.then(|| routing_json(model.take_routing()));
    sink.finish(a.out.as_deref(), rows, vocab, a.all, routing)
}

/// The routing as JSON: per MoE layer and position the experts sorted, their weights in that
/// order and the gap (null when every expert is chosen).
fn routing_json(routes: Vec<(usize, usize, tinfer::moe::Route)>) -> serde_json::Value {
    let mut routes = routes;
    routes.sort_by_key(|r| (r.0, r.1));
    let rows: Vec<serde_json::Value> = routes
        .into_iter()
        .map(|(layer, position, r)| {
            let mut pairs: Vec<(u32, f32)> = r.experts.into_iter().zip(r.weights).collect();
            pairs.sort_by_key(|p| p.0);
            let (experts, weights): (Vec<u32>, Vec<f32>) = pairs.into_iter().unzip();
            let gap = r.gap.is_finite().then_some(r.gap);
            serde_json::json!({"layer": layer, "position": position, "experts": experts, "weights": weights, "gap": gap})
        })
        .collect();
    serde_json::Value::Array(rows)
}

impl Sink {
    /// The logits after position `pos`, whose token is `id`.
    fn row(&mut self, pos: usize, id: u32, row: &[f32], tok: Option<&Tokenizer>) -> Result<()> {
        match self {
            Sink::Npy(w) => {
                let bytes: Vec<u8> = row.iter().flat_map(|x| x.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
            Sink::Json { out, rows, all } => {
                if *all && *rows > 0 {
                    out.write_all(b", ")?;
                }
                serde_json::to_writer(&mut *out, row)?;
                *rows += 1;
            }
            Sink::Table { top } => {
                let piece = |id: u32| tok.map_or(Ok(String::new()), |t| t.piece(id).map(|p| format!("{p:?}")));
                let mut order: Vec<usize> = (0..row.len()).collect();
                let k = (*top).min(row.len());
                // NaN sorts last, so a broken row still prints
                let key = |&i: &usize| if row[i].is_nan() { f32::NEG_INFINITY } else { row[i] };
                order.select_nth_unstable_by(k - 1, |a, b| key(b).total_cmp(&key(a)));
                order.truncate(k);
                order.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
                let mut out = std::io::stdout().lock();
                writeln!(out, "position {pos}: token {id} {}", piece(id)?)?;
                for (rank, &i) in order.iter().enumerate() {
                    writeln!(
                        out,
                        "  {:>3} {:>8} {:<24} {:>11.5}",
                        rank + 1,
                        i,
                        piece(i as u32)?,
                        row[i]
                    )?;
                }
            }
        }
        Ok(())
    }

    fn finish(
        self,
        path: Option<&Path>,
        rows: usize,
        vocab: usize,
        all_rows: bool,
        routing: Option<serde_json::Value>,
    ) -> Result<()> {
        match self {
            Sink::Npy(mut w) => {
                w.flush()?;
                let path = path.expect("an .npy sink has a path");
                let shape = if all_rows {
                    format!("({rows}, {vocab})")
                } else {
                    format!("({vocab},)")
                };
                eprintln!("wrote {}: float32, shape {shape}", path.display());
            }
            Sink::Json { mut out, all, .. } => {
                if all {
                    out.write_all(b"]")?;
                }
                if let Some(r) = routing {
                    write!(out, ", \"routing\": {r}")?;
                }
                out.write_all(b"}\n")?;
                out.flush()?;
            }
            Sink::Table { .. } => {}
        }
        Ok(())
    }
}
