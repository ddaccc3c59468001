//! The engine: sequences in, tokens out. `step` = schedule (which sequences run now), run one
//! batch through `Model::forward`, post-process (sample, append, check stops, release).

pub mod sequence;
pub mod spec;
pub mod stop_strings;

use std::time::Instant;

use anyhow::{bail, Result};

pub use self::sequence::{Constraint, Generation, Sequence, Status, Stop, StopReason};
pub use self::spec::{Spec, SpecConfig, SpecStats};
pub use self::stop_strings::StopStrings;
use crate::model::{Entry, KvUsage, Model, SeqId, Want};

/// Prompt tokens run per step: bounds the activations a long prompt needs at once.
pub const PREFILL_CHUNK: usize = 256;

/// Greedy decode steps submitted together on a GPU by default (Engine::with_decode_ahead).
pub const DECODE_AHEAD: usize = 8;

pub struct Engine {
    pub model: Model,
    /// Greedy steps of a lone running sequence decoded in one submit (1: a submit and a
    /// readback per token).
    decode_ahead: usize,
    /// Speculative decoding of a lone running sequence (Engine::with_spec).
    spec: Option<Spec>,
    seqs: Vec<Option<Sequence>>, // by handle, in the order added; None once taken back
    usage: Option<KvUsage>,      // the KV pool after the last forward
    preemptions: u64,
}

impl Engine {
    /// An engine over `model`, decoding DECODE_AHEAD greedy steps a submit on a GPU, one on the
    /// CPU (where nothing is gained).
    pub fn new(model: Model) -> Self {
        let decode_ahead = if model.is_gpu() { DECODE_AHEAD } else { 1 };
        Engine {
            model,
            decode_ahead,
            spec: None,
            seqs: vec![],
            usage: None,
            preemptions: 0,
        }
    }

    /// Decode `n` greedy steps of a lone running sequence in one submit (1..=gpu::MAX_AHEAD;
    /// 1 turns it off): the next step's token is picked and fed on the device, and the ids come
    /// back together. Output is the same token for token; only its timing changes.
    pub fn with_decode_ahead(mut self, n: usize) -> Self {
        self.decode_ahead = n.clamp(1, crate::gpu::MAX_AHEAD);
        self
    }

    /// Decode a lone running sequence speculatively: `spec`'s drafter proposes tokens, one
    /// forward of the target verifies them (engine/spec.rs). Same text for greedy settings, the
    /// same distribution for sampling.
    pub fn with_spec(mut self, spec: Spec) -> Self {
        self.spec = Some(spec);
        self
    }

    /// Take the speculation back out (its drafter and draft model, for another engine).
    pub fn take_spec(&mut self) -> Option<Spec> {
        self.spec.take()
    }

    pub fn into_model(self) -> Model {
        self.model
    }

    /// Whether `seq` can be added: a prompt that fits what is left of its context.
    pub fn validate(&self, seq: &Sequence) -> Result<()> {
        let ctx = self.model.cfg.seq_len;
        let used = seq.id.map_or(0, |id| self.model.len(id));
        if used + seq.prompt.len() > ctx {
            let already = if used > 0 {
                format!(" ({used} already used)")
            } else {
                String::new()
            };
            bail!(
                "the prompt is {} tokens but the context holds {ctx}{already}: shorten the prompt, or raise the context with -c/--ctx-size (by default the model's own, at most 4096)",
                seq.prompt.len(),
            );
        }
        if seq.prompt.is_empty() {
            bail!("the prompt is empty: give some text with --prompt or on stdin");
        }
        if let Some(u) = self.model.kv_usage() {
            let need = (used + seq.prompt.len() + 1).div_ceil(u.page);
            if need > u.pages {
                bail!(
                    "KV cache full: the prompt and one new token need {need} blocks of {} tokens but the pool has {} in all; shorten the prompt or raise --kv-blocks / --kv-memory",
                    u.page,
                    u.pages
                );
            }
        }
        Ok(())
    }

    /// Queue `seq`; returns its handle.
    pub fn add(&mut self, mut seq: Sequence) -> Result<usize> {
        self.validate(&seq)?;
        if seq.id.is_none() {
            let id = self.model.new_seq()?;
            if let Err(e) = seq.lora.as_ref().map_or(Ok(()), |f| self.model.set_lora(id, f)) {
                self.model.release(id);
                return Err(e);
            }
            seq.id = Some(id);
        }
        seq.status = Status::Waiting;
        seq.added = Instant::now();
        if let Some(spec) = self.spec.as_mut() {
            spec.reset(); // each request (a chat turn too) adapts afresh
        }
        self.seqs.push(Some(seq));
        Ok(self.seqs.len() - 1)
    }

    pub fn get(&self, handle: usize) -> &Sequence {
        self.seqs[handle].as_ref().expect("a sequence not taken back")
    }

    /// Take `handle` out of the engine (finished or not); its cache is released unless it is
    /// kept.
    pub fn take(&mut self, handle: usize) -> Sequence {
        self.drop_ahead(handle);
        let seq = self.seqs[handle].take().expect("a sequence not taken back");
        if !seq.keep && !seq.is_finished() {
            self.model.release(seq.id.expect("added"));
        }
        seq
    }

    /// End `handle` now with `reason` (a stop string seen, Ctrl-C): it produces nothing more and
    /// its cache is released unless it is kept. Finished sequences are left as they are.
    pub fn finish(&mut self, handle: usize, reason: StopReason) {
        let s = self.seqs[handle].as_mut().expect("a sequence not taken back");
        if s.is_finished() {
            return;
        }
        s.finish(reason);
        self.drop_ahead(handle);
        let s = self.seqs[handle].as_ref().unwrap();
        if !s.keep {
            self.model.release(s.id.expect("added"));
        }
    }

    /// Nothing waiting or running.
    pub fn is_idle(&self) -> bool {
        self.seqs.iter().flatten().all(Sequence::is_finished)
    }

    /// Sequences preempted since the engine was made.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    /// The KV pool's use after the last forward; None on the CPU.
    pub fn kv_usage(&self) -> Option<KvUsage> {
        self.usage
    }

    /// Add `seq`, step until it (and its forks) finish, and take them back, `seq` first.
    pub fn run(&mut self, seq: Sequence) -> Result<Vec<Sequence>> {
        let h = self.add(seq)?;
        while !self.is_idle() {
            self.step()?;
        }
        let forked = self.get(h).forked.clone();
        Ok([h].iter().chain(&forked).map(|&f| self.take(f)).collect())
    }

    /// One step (nano-vllm's scheduler): prompt chunks of waiting sequences, oldest first, up
    /// to PREFILL_CHUNK tokens in all, when the KV pool has room for their whole prompts (prefill
    /// first); else one token of every running sequence in one batch, preempting the newest
    /// running sequences while the pool cannot hold the step. Returns the tokens produced,
    /// (handle, token), in handle order.
    pub fn step(&mut self) -> Result<Vec<(usize, u32)>> {
        let with = |st: Status| -> Vec<usize> {
            (0..self.seqs.len())
                .filter(|&h| self.seqs[h].as_ref().is_some_and(|s| s.status == st))
                .collect()
        };
        let (waiting, mut running) = (with(Status::Waiting), with(Status::Running));
        // running sequences decode in a prefill step too (vLLM's chunked prefill: a prompt
        // arriving does not stall everyone's next token); not those with ids decoded ahead
        let decodes: Vec<usize> = (running.iter().copied())
            .filter(|&h| self.get(h).ahead.is_empty())
            .collect();
        let chunks = self.schedule_prefill(&waiting, &decodes, running.is_empty());
        if !chunks.is_empty() {
            return self.prefill(&chunks, &decodes);
        }
        if running.is_empty() {
            return Ok(vec![]);
        }
        // While the pool cannot take a token of each, preempt the newest sequence holding
        // pages (running, or part way through its prompt), never the oldest running one.
        loop {
            let wants: Vec<(SeqId, usize)> = running.iter().map(|&h| (self.get(h).id.unwrap(), 1)).collect();
            if self.model.kv_room(&wants) {
                break;
            }
            let holds = |s: &Sequence| match s.status {
                Status::Running => true,
                Status::Waiting => self.model.len(s.id.unwrap()) > 0,
                Status::Finished(_) => false,
            };
            let victim = (0..self.seqs.len())
                .rev()
                .find(|&h| h != running[0] && self.seqs[h].as_ref().is_some_and(|s| !s.keep && holds(s)));
            let Some(v) = victim else {
                break;
            };
            self.preempt(v)?;
            running.retain(|&r| r != v);
        }
        // Nothing left to preempt and still no room for the oldest one's next token: it ends
        // here (its text kept), the pool being what it can hold.
        let oldest = [(self.get(running[0]).id.unwrap(), 1)];
        if running.len() == 1 && self.get(running[0]).ahead.is_empty() && !self.model.kv_room(&oldest) {
            self.finish(running[0], StopReason::KvFull);
            return Ok(vec![]);
        }
        // Ids decoded ahead come out one a step (and the rest wait until they are taken).
        let pending: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&h| !self.get(h).ahead.is_empty())
            .collect();
        if !pending.is_empty() {
            return Ok(self.take_ahead(&pending));
        }
        if let [h] = running[..] {
            if let Some(out) = self.spec_step(h)? {
                return Ok(out);
            }
            let s = self.get(h);
            let (id, last, greedy) = (s.id.unwrap(), *s.output.last().unwrap(), s.greedy_on_device());
            let left = s.stop.max_tokens.saturating_sub(s.output.len());
            let mut n = self.decode_ahead.min(left);
            if let Some(paused) = self.spec.as_ref().map(Spec::paused) {
                n = n.min(paused.max(1)); // a pause counts tokens: decode ahead no further
            }
            if n > 1 && greedy {
                let ids = self.model.decode_greedy(id, last, n)?;
                if let Some(spec) = self.spec.as_mut() {
                    spec.decoded_plain(ids.len());
                }
                self.usage = self.model.kv_usage().or(self.usage);
                let s = self.seqs[h].as_mut().unwrap();
                (s.ahead, s.ahead_spec) = (ids.into(), false);
                return Ok(self.take_ahead(&[h]));
            }
            if let Some(spec) = self.spec.as_mut() {
                spec.decoded_plain(1); // the single step below
            }
        }
        let last: Vec<[u32; 1]> = running.iter().map(|&h| [*self.get(h).output.last().unwrap()]).collect();
        let batch: Vec<Entry> = running
            .iter()
            .zip(&last)
            .map(|(&h, t)| Entry {
                seq: self.get(h).id.unwrap(),
                tokens: t,
                want: Want::Last,
            })
            .collect();
        let greedy = running.iter().all(|&h| self.get(h).greedy_on_device());
        let picks = self.forward(&batch, greedy)?;
        for &h in &running {
            self.seqs[h].as_mut().unwrap().decode_steps += 1;
        }
        Ok(self.post(&running, picks))
    }

    /// A speculative step of `h` (engine/spec.rs): draft, verify the last token and the draft
    /// in one forward (logits of every row), keep what the rejection rule accepts plus the
    /// target's next token, truncate the rest from the cache, and hand the tokens out one a step
    /// through `ahead`. None when no speculation is set up, it is paused, nothing fits, or the
    /// draft is shorter than `draft_min`: a plain step then.
    fn spec_step(&mut self, h: usize) -> Result<Option<Vec<(usize, u32)>>> {
        let Some(spec) = self.spec.as_mut() else {
            return Ok(None);
        };
        if self.seqs[h].as_ref().unwrap().constraint.is_some() {
            return Ok(None); // the verify step samples without the constraint: plain steps
        }
        let s = self.seqs[h].as_ref().unwrap();
        let (id, last) = (s.id.unwrap(), *s.output.last().unwrap());
        let len = self.model.len(id);
        let left = s.stop.max_tokens.saturating_sub(s.output.len() + 1);
        let room = self.model.cfg.seq_len.saturating_sub(len + 1).min(left);
        let k = spec.draft_len(self.model.row_tile()).min(room);
        if k == 0 {
            return Ok(None);
        }
        let history = s.history();
        let draft = spec.drafter.propose(&history, k, &s.sampler)?;
        // (a draft model's logits may cover padding ids past the target's vocabulary)
        let vocab = self.model.cfg.vocab_size;
        let n = draft
            .tokens
            .iter()
            .take(k)
            .take_while(|&&t| (t as usize) < vocab)
            .count();
        if n == 0 || n < spec.cfg.draft_min {
            if spec.drafter.runs_a_model() {
                spec.update(n, 0); // a forward spent in vain: pause as after a rejection
            }
            return Ok(None);
        }
        let rows: Vec<u32> = std::iter::once(last).chain(draft.tokens[..n].iter().copied()).collect();
        let entry = [Entry {
            seq: id,
            tokens: &rows,
            want: Want::LastN(n + 1),
        }];
        let logits = match self.forward(&entry, false) {
            Ok(Pick::Logits(l)) => l,
            Ok(Pick::Ids(_)) => unreachable!("logits asked for"),
            // a KV pool with room for the next token but not the draft: a plain step
            Err(e) if matches!(e.downcast_ref(), Some(crate::kv_cache::KvError::Full { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        let s = self.seqs[h].as_mut().unwrap();
        let p = |i: usize| {
            let row = &logits[0][i * vocab..(i + 1) * vocab];
            let context = [&history[..], &draft.tokens[..i]].concat();
            s.sampler
                .cfg
                .distribution(&masked(row, &s.banned), &context, s.output.len() + i)
        };
        let (a, next) = spec::accept(&draft.tokens[..n], &draft.q, p, &mut s.sampler.rng);
        self.spec.as_mut().unwrap().update(n, a);
        let st = &mut s.spec;
        (st.verifies, st.drafted, st.accepted) = (st.verifies + 1, st.drafted + n, st.accepted + a);
        s.ahead = draft.tokens[..a].iter().copied().chain([next]).collect();
        s.ahead_spec = true;
        self.model.truncate(id, len + 1 + a); // the rejected drafts leave the cache
        Ok(Some(self.take_ahead(&[h])))
    }

    /// The prompt chunks of the next prefill step, (handle, tokens): waiting sequences in
    /// order while PREFILL_CHUNK tokens last and the pool holds the rest of their prompts (a
    /// sequence's first chunk starts after the blocks the prefix cache already has). With
    /// nothing running, the first one runs whatever the pool says (a prompt the pool cannot
    /// hold then fails with the KV-full error instead of waiting forever).
    fn schedule_prefill(&mut self, waiting: &[usize], decodes: &[usize], idle: bool) -> Vec<(usize, Vec<u32>)> {
        let mut budget = PREFILL_CHUNK;
        let mut chunks: Vec<(usize, Vec<u32>)> = vec![];
        // the decoding sequences' next tokens come first
        let mut wants: Vec<(SeqId, usize)> = decodes.iter().map(|&h| (self.get(h).id.unwrap(), 1)).collect();
        for &h in waiting {
            let s = self.seqs[h].as_ref().unwrap();
            let id = s.id.unwrap();
            // room for all of it, as if nothing were cached (taking cached blocks that no one
            // holds takes them from the free list too)
            wants.push((id, s.prompt.len() + s.output.len() - s.prefilled + 1));
            if budget == 0 || !(self.model.kv_room(&wants) || idle && chunks.is_empty()) {
                break;
            }
            let tokens = s.to_run(); // copied only for a sequence that runs now
            if s.prefilled == 0 && s.context.is_empty() && self.model.len(id) == 0 {
                let cached = self.model.reuse_prefix(id, &tokens);
                let s = self.seqs[h].as_mut().unwrap();
                s.prefilled = cached;
                if s.preempted == 0 {
                    s.cached = cached;
                }
            }
            let start = self.get(h).prefilled;
            let end = tokens.len().min(start + budget);
            budget -= end - start;
            chunks.push((h, tokens[start..end].to_vec()));
        }
        chunks
    }

    /// Take `h`'s cache away (the pool is full): it waits again and, readmitted, recomputes
    /// its prompt and output so far (whose blocks the prefix cache may still hold).
    fn preempt(&mut self, h: usize) -> Result<()> {
        self.drop_ahead(h);
        let id = self.get(h).id.unwrap();
        let factors = self.model.lora_factors(id).to_vec();
        self.model.release(id);
        let id = self.model.new_seq()?;
        if !factors.is_empty() {
            self.model.set_lora(id, &factors)?;
        }
        let s = self.seqs[h].as_mut().unwrap();
        (s.id, s.status, s.prefilled) = (Some(id), Status::Waiting, 0);
        s.preempted += 1;
        self.preemptions += 1;
        Ok(())
    }

    /// Run the prompt chunks and a token of each of `decodes` in one forward; a sequence whose
    /// last chunk ran gets its first token (and its forks theirs), the decoding ones their next.
    fn prefill(&mut self, chunks: &[(usize, Vec<u32>)], decodes: &[usize]) -> Result<Vec<(usize, u32)>> {
        let last: Vec<[u32; 1]> = decodes.iter().map(|&h| [*self.get(h).output.last().unwrap()]).collect();
        let batch: Vec<Entry> = (chunks.iter().map(|(h, toks)| (*h, &toks[..])))
            .chain(decodes.iter().zip(&last).map(|(&h, t)| (h, &t[..])))
            .map(|(h, tokens)| Entry {
                seq: self.get(h).id.unwrap(),
                tokens,
                want: Want::Last,
            })
            .collect();
        let ends: Vec<bool> = chunks
            .iter()
            .map(|(h, t)| {
                let s = self.get(*h);
                s.prefilled + t.len() == s.prompt.len() + s.output.len()
            })
            .collect();
        let greedy = (chunks.iter().zip(&ends))
            .filter(|(_, &e)| e)
            .all(|((h, _), _)| self.get(*h).greedy_on_device() && self.get(*h).forks.iter().all(|f| f.is_greedy()))
            && decodes.iter().all(|&h| self.get(h).greedy_on_device());
        let picks = if ends.contains(&true) || !decodes.is_empty() {
            self.forward(&batch, greedy)?
        } else {
            self.model.forward(&batch)?;
            self.usage = self.model.kv_usage().or(self.usage);
            Pick::Ids(vec![])
        };
        let mut out = vec![];
        for (i, ((h, toks), &end)) in chunks.iter().zip(&ends).enumerate() {
            self.seqs[*h].as_mut().unwrap().prefilled += toks.len();
            if end {
                let pick = match &picks {
                    Pick::Ids(ids) => Pick::Ids(vec![ids[i]]),
                    Pick::Logits(l) => Pick::Logits(vec![l[i].clone()]),
                };
                out.extend(self.prompt_done(*h, pick)?);
            }
        }
        if !decodes.is_empty() {
            let n = chunks.len();
            let picks = match picks {
                Pick::Ids(ids) => Pick::Ids(ids[n..].to_vec()),
                Pick::Logits(mut l) => Pick::Logits(l.split_off(n)),
            };
            for &h in decodes {
                self.seqs[h].as_mut().unwrap().decode_steps += 1;
            }
            out.extend(self.post(decodes, picks));
        }
        Ok(out)
    }

    /// `h`'s prompt ran: fork it, then each sequence picks its next token from its logits.
    fn prompt_done(&mut self, h: usize, picks: Pick) -> Result<Vec<(usize, u32)>> {
        let id = self.get(h).id.unwrap();
        let forks = std::mem::take(&mut self.seqs[h].as_mut().unwrap().forks);
        let now = Instant::now();
        let mut group = vec![h];
        for sampler in forks {
            let fork = self.model.fork(id)?;
            let p = self.get(h);
            let mut f = Sequence::new(p.prompt.clone(), sampler, p.stop.clone()).with_banned(p.banned.clone());
            f.id = Some(fork);
            f.context = p.context.clone();
            f.added = p.added;
            f.cached = p.cached;
            f.constraint = p.constraint.clone();
            f.logprobs = p.logprobs;
            group.push(self.seqs.len());
            self.seqs.push(Some(f));
        }
        for &g in &group {
            let s = self.seqs[g].as_mut().unwrap();
            s.prefilled = s.prompt.len() + s.output.len();
            s.status = Status::Running;
            s.first.get_or_insert(now);
        }
        if group.len() > 1 {
            self.seqs[h].as_mut().unwrap().forked = group[1..].to_vec();
        }
        let picks = match picks {
            Pick::Ids(ids) => Pick::Ids(vec![ids[0]; group.len()]),
            Pick::Logits(l) => Pick::Logits(vec![l[0].clone(); group.len()]),
        };
        Ok(self.post(&group, picks))
    }

    /// Run `batch`: the next ids chosen on the device when `greedy` (only ids come back), else
    /// the logits, refused when one is NaN.
    fn forward(&mut self, batch: &[Entry], greedy: bool) -> Result<Pick> {
        let p = if greedy {
            Pick::Ids(self.model.forward_argmax(batch)?)
        } else {
            let logits = self.model.forward(batch)?;
            // A NaN logit means a broken model or device: say so rather than sample around it.
            for (row, l) in logits.iter().enumerate() {
                if let Some(id) = l.iter().position(|x| x.is_nan()) {
                    bail!(
                        "the model produced a NaN logit (batch row {row}, token id {id}): its weights or \
                         the device's arithmetic are broken; try --device cpu or --dtype f32"
                    );
                }
            }
            Pick::Logits(logits)
        };
        self.usage = self.model.kv_usage().or(self.usage);
        Ok(p)
    }

    /// The next id decoded ahead of each of `hs`, through `post` as any other pick.
    fn take_ahead(&mut self, hs: &[usize]) -> Vec<(usize, u32)> {
        let ids = hs
            .iter()
            .map(|&h| {
                let s = self.seqs[h].as_mut().unwrap();
                s.decode_steps += 1;
                s.ahead.pop_front().expect("an id decoded ahead")
            })
            .collect();
        self.post(hs, Pick::Ids(ids))
    }

    /// Forget the ids `h` decoded ahead and not taken, and take their positions out of its
    /// cache (a sequence that stopped early keeps exactly what single steps would have left).
    fn drop_ahead(&mut self, h: usize) {
        let s = self.seqs[h].as_mut().unwrap();
        let n = s.ahead.len();
        s.ahead.clear();
        if s.ahead_spec {
            // the verify's drafts never handed out were not kept after all (its last id is
            // the target's own)
            s.spec.accepted -= n.saturating_sub(1).min(s.spec.accepted);
        }
        if n > 0 {
            let id = s.id.unwrap();
            let len = self.model.len(id);
            self.model.truncate(id, len - n);
        }
    }

    /// Sample (where logits came back), append, check stops, release the finished (their ids
    /// decoded ahead dropped first).
    fn post(&mut self, hs: &[usize], picks: Pick) -> Vec<(usize, u32)> {
        let mut out = vec![];
        for (i, &h) in hs.iter().enumerate() {
            let s = self.seqs[h].as_mut().unwrap();
            let (token, logprobs) = match &picks {
                Pick::Ids(ids) => (ids[i], None),
                Pick::Logits(l) => {
                    let mut logits = masked(&l[i], &s.banned);
                    if let Some(c) = &s.constraint {
                        c.mask(&s.output, &mut logits);
                    }
                    let history = s.history();
                    let token = s.sampler.sample(&logits, &history, s.output.len());
                    (token, s.logprobs.map(|n| log_probs(&l[i], token, n)))
                }
            };
            let id = s.id.unwrap();
            // the cache as single steps would leave it: without the ids decoded ahead not taken
            if s.push(token, self.model.len(id) - s.ahead.len()) {
                s.token_logprobs.extend(logprobs);
                out.push((h, token));
            }
            if s.is_finished() {
                self.drop_ahead(h);
                if !self.get(h).keep {
                    self.model.release(id);
                }
            }
        }
        out
    }
}

/// The log-probability of `token` under softmax(`logits`) and the `top` most likely (id,
/// log-probability), highest first (ties: the lower id): log-softmax in f64.
pub fn log_probs(logits: &[f32], token: u32, top: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + logits.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let k = top.min(logits.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        order.truncate(k);
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    }
    (
        lp(token as usize),
        order[..k].iter().map(|&i| (i as u32, lp(i))).collect(),
    )
}

/// `logits` with the `banned` tokens' set to -inf.
fn masked(logits: &[f32], banned: &[u32]) -> Vec<f32> {
    let mut l = logits.to_vec();
    for &t in banned.iter().filter(|&&t| (t as usize) < logits.len()) {
        l[t as usize] = f32::NEG_INFINITY;
    }
    l
}

/// What a forward gave each sequence: its next token (greedy, on the device) or its logits.
enum Pick {
    Ids(Vec<u32>),
    Logits(Vec<Vec<f32>>),
}
