//! The GPU model's steps over sequences: `forward` of a batch (cut into steps, the LM head over
//! the rows wanted), greedy picks on the device, and `profile` (where a step's time goes).

use anyhow::{bail, Result};

use super::{GpuModel, Head, Profile};
use crate::gpu::kernels::{run_timed, step_bytes, Dims, Op, Row, MAX_STEP_TOKENS};
use crate::options::{Batch, Want};

impl GpuModel {
    /// Where a step's time goes: each kernel's dispatches of a step of `t` rows of `seqs[0]` at
    /// its current end (decode when t == 1, else prefill; LM head of the last row), or, with
    /// several `seqs`, of one row of each (a batch step, as a server's decode step runs; LM head
    /// of every row, up to `all_rows`). Recorded `reps` times in one pass and timed together.
    /// Returns (kernel, dispatches per step, ms per step), slowest first. The cache rows written
    /// are given back afterwards.
    pub fn profile(&mut self, seqs: &[usize], t: usize, reps: usize) -> Result<Profile> {
        assert!((1..=MAX_STEP_TOKENS).contains(&t) && reps > 0 && !seqs.is_empty());
        assert!(seqs.len() == 1 || t == 1, "a batch profile runs one row a sequence");
        let mut rows: Vec<Row> = vec![];
        let mut ends = vec![];
        let mut max_len = 0;
        for &seq in seqs {
            let pos0 = self.kv.len(seq);
            if pos0 + t > self.cfg.seq_len {
                bail!("a profile of {t} rows at position {pos0} exceeds the context");
            }
            let (slots, _) = self.kv.append(seq, t)?;
            rows.extend(slots.iter().enumerate().map(|(i, &slot)| Row {
                token: (i % self.cfg.vocab_size) as u32,
                pos: (pos0 + i) as u32,
                slot,
                seq: seq as u32,
            }));
            ends.push((seq, pos0));
            max_len = max_len.max(pos0 + t);
        }
        let t = rows.len();
        let (n_splits, split_len) = self.split(t, max_len);
        self.gpu
            .queue
            .write_buffer(&self.step, 0, &step_bytes(&rows, n_splits, split_len));
        self.write_tables();
        let (body, head) = match (t, seqs.len()) {
            (1, _) => (&self.decode, &self.head_last),
            (_, 1) => (&self.prefill, &self.head_last),
            _ => {
                // every row's logits, as a server's decode step wants them (as many as fit)
                self.write_head_rows(&(0..t.min(self.all_rows) as u32).collect::<Vec<_>>());
                (&self.batch, &self.head_rows)
            }
        };
        let all: Vec<&Op> = body.iter().chain(head).collect();
        let dims = Dims {
            t: t as u32,
            n_splits: n_splits as u32,
        };
        let mut names: Vec<&str> = all.iter().map(|o| o.name.as_str()).collect();
        names.sort();
        names.dedup();
        let mut out = vec![];
        for name in names {
            let ops: Vec<&Op> = all.iter().copied().filter(|o| o.name == name).collect();
            let run = |reps: usize| -> Result<f64> {
                let repeated: Vec<&Op> = (0..reps).flat_map(|_| ops.iter().copied()).collect();
                run_timed(&self.gpu, &repeated, dims, &format!("the profile of {name}"))
            };
            run(1)?; // warm-up
            out.push((name.to_string(), ops.len(), run(reps)? / reps as f64));
        }
        // The whole step in one submit, kernels interleaved as a real step runs them.
        let repeated: Vec<&Op> = (0..reps).flat_map(|_| all.iter().copied()).collect();
        run_timed(&self.gpu, &all, dims, "the profiled step")?; // warm-up
        let step_ms = run_timed(&self.gpu, &repeated, dims, "the profiled step")? / reps as f64;
        self.gpu.check("the profile")?;
        for (seq, pos0) in ends {
            self.kv.truncate(seq, pos0);
        }
        self.kv.tables_dirty = true;
        out.sort_by(|a, b| b.2.total_cmp(&a.2));
        Ok(Profile { kernels: out, step_ms })
    }

    /// Run `tokens` of sequence `seq` at its next positions, in steps of at most
    /// MAX_STEP_TOKENS, or of `all_rows` when more than the last row's logits are wanted (so each
    /// step's rows fit the logits buffer). Returns the rows `want`s.
    fn forward_one(&mut self, seq: usize, tokens: &[u32], want: Want) -> Result<Vec<f32>> {
        let first = tokens.len() - want.rows(tokens.len()); // the first row wanted
        let chunk = if want == Want::Last {
            MAX_STEP_TOKENS
        } else {
            self.all_rows
        };
        let mut out = vec![];
        let mut start = 0;
        for c in tokens.chunks(chunk) {
            let end = start + c.len();
            // Steps before the rows wanted only fill the cache (their last row is read back).
            let wanted: Vec<u32> = (first.max(start)..end).map(|r| (r - start) as u32).collect();
            let head = if want != Want::Last && end > first {
                Head::Rows {
                    rows: &wanted,
                    argmax: false,
                }
            } else {
                Head::Last
            };
            let values: Vec<f32> = bytemuck::pod_collect_to_vec(&self.step(&[(seq, c)], head)?);
            if want == Want::Last {
                out = values;
            } else if end > first {
                out.extend_from_slice(&values); // else a step before the rows wanted
            }
            start = end;
        }
        Ok(out)
    }

    /// Run `tokens` of sequence `seq` and return the most likely next token, chosen on the
    /// device (4 bytes read back).
    pub fn forward_argmax(&mut self, seq: usize, tokens: &[u32]) -> Result<u32> {
        // All but the last step's tokens only fill the cache; the last step picks the token.
        let (head, tail) = tokens.split_at(tokens.len() - tokens.len().min(MAX_STEP_TOKENS));
        if !head.is_empty() {
            self.forward_one(seq, head, Want::Last)?;
        }
        let bytes = self.step(&[(seq, tail)], Head::Argmax)?;
        Ok(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
    }

    /// A batch: entries in order, as many a step as fit (MAX_STEP_TOKENS rows, `all_rows` rows
    /// wanted), an entry too long for one step in steps of its own, and where the prefill's
    /// attention is attention_flash_sg (`flash_pairs`: lavapipe) an entry of several rows too (a
    /// prompt's tail after a cached prefix: its rows share each K/V load there, where a batch
    /// step's split-K attention loads the whole prefix for each row). Per entry the logits of
    /// the rows it wants (only those rows go through the LM head), in batch order.
    pub fn forward(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>> {
        let out = self.forward_steps(batch, false)?;
        Ok(out.iter().map(|b| bytemuck::pod_collect_to_vec(b)).collect())
    }

    /// `forward` of entries that each want `Last`, and the id of each one's largest logit,
    /// picked on the device (4 bytes an entry read back).
    pub fn forward_argmax_batch(&mut self, batch: &Batch) -> Result<Vec<u32>> {
        assert!(batch.iter().all(|e| e.want == Want::Last), "argmax of the last rows");
        let out = self.forward_steps(batch, true)?;
        Ok(out
            .iter()
            .map(|b| u32::from_le_bytes(b[..4].try_into().unwrap()))
            .collect())
    }

    /// The bytes `forward` (or with `argmax`, `forward_argmax_batch`) reads back, per entry.
    fn forward_steps(&mut self, batch: &Batch, argmax: bool) -> Result<Vec<Vec<u8>>> {
        let row_bytes = if argmax { 4 } else { self.cfg.vocab_size * 4 };
        let mut out = Vec::with_capacity(batch.len());
        let mut i = 0;
        while i < batch.len() {
            // the entries from i on that fit one step
            let (mut t, mut wanted, mut j) = (0, 0, i);
            while let Some(e) = batch.get(j) {
                let n = e.tokens.len();
                let alone = self.flash_pairs && j > i && (n > 1 || batch[i].tokens.len() > 1);
                if t + n > MAX_STEP_TOKENS || wanted + e.want.rows(n) > self.all_rows || alone {
                    break;
                }
                (t, wanted, j) = (t + n, wanted + e.want.rows(n), j + 1);
            }
            let group = &batch[i..j.max(i + 1)];
            let e = &group[0];
            if group.len() == 1 {
                // alone (its last row through the GEMV head) or too long for one step
                out.push(if argmax {
                    self.forward_argmax(e.seq.0, e.tokens)?.to_le_bytes().to_vec()
                } else {
                    bytemuck::cast_slice(&self.forward_one(e.seq.0, e.tokens, e.want)?).to_vec()
                });
                i += 1;
                continue;
            }
            let rows: Vec<(usize, &[u32])> = group.iter().map(|e| (e.seq.0, e.tokens)).collect();
            let mut wanted = vec![];
            let mut end = 0;
            for e in group {
                let n = e.tokens.len();
                wanted.extend((end + n - e.want.rows(n)..end + n).map(|r| r as u32));
                end += n;
            }
            let bytes = self.step(&rows, Head::Rows { rows: &wanted, argmax })?;
            let mut at = 0;
            for e in group {
                let n = e.want.rows(e.tokens.len()) * row_bytes;
                out.push(bytes[at..at + n].to_vec());
                at += n;
            }
            i += group.len();
        }
        Ok(out)
    }
}
