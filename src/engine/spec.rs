//! Speculative decoding (Leviathan et al. 2023, "Fast Inference from Transformers via
//! Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding with
//! Speculative Sampling"): a drafter proposes k tokens, the target runs its last token and the k
//! proposals in one forward (logits of all k + 1 rows), keeps the longest prefix the rejection
//! rule accepts and adds one token of its own. The text is distributed exactly as the target's:
//! token x drafted from q is kept with probability min(1, p(x) / q(x)); at the first rejection
//! the token comes from the residual max(0, p - q), normalised; after k acceptances a bonus token
//! comes from p. p and q are the sampler's distributions (Sampler::distribution: penalty,
//! temperature, top-k, top-p, min-p); greedy makes both point masses, so the text is the target's
//! greedy text. The engine (Engine::with_spec) runs this for a lone running sequence and hands the
//! tokens out one per step, as decode-ahead does.

use anyhow::{bail, Result};

use crate::model::{Entry, Model, SeqId, Want};
use crate::sampler::{Dist, Rng, Sampler};
use crate::tokenizer::Tokenizer;

/// What a drafter proposes: tokens, and for each the distribution it was drawn from (a point
/// mass for a deterministic drafter such as prompt lookup).
#[derive(Clone, Debug, Default)]
pub struct Draft {
    pub tokens: Vec<u32>,
    pub q: Vec<Dist>,
}

/// Proposes the tokens most likely to follow a text.
pub trait Drafter {
    /// Up to `k` tokens to follow `history` (everything the target's cache holds plus its last
    /// token: context, prompt and output), drawn with `sampler`'s settings where the drafter
    /// samples. Fewer (or none) when it has nothing good to propose.
    fn propose(&mut self, history: &[u32], k: usize, sampler: &Sampler) -> Result<Draft>;

    /// Whether proposing runs a model (a forward even for an empty draft): too short a draft
    /// then pauses drafting as a rejected one does.
    fn runs_a_model(&self) -> bool {
        false
    }
}

/// Prompt lookup (HF's `prompt_lookup_num_tokens`, llama.cpp's lookup decoding): the longest
/// n-gram that ends the history and occurred before (n from `max_ngram` down to 1), and the
/// tokens that followed it there; of equally long ones, the most recent. In a prompt with two
/// functions that share a line, the copy being written thus continues its own function. No
/// second model.
pub struct Lookup {
    pub max_ngram: usize,
}

impl Drafter for Lookup {
    fn propose(&mut self, history: &[u32], k: usize, _: &Sampler) -> Result<Draft> {
        let len = history.len();
        // how many tokens before `end` equal the history's last ones
        let back = |end: usize| {
            (1..=end.min(self.max_ngram))
                .take_while(|&j| history[end - j] == history[len - j])
                .count()
        };
        let best = (1..len).map(|end| (back(end), end)).filter(|&(n, _)| n > 0).max();
        let Some((_, end)) = best else {
            return Ok(Draft::default());
        };
        let tokens = history[end..len.min(end + k)].to_vec();
        let q = tokens.iter().map(|&t| Dist::point(t)).collect();
        Ok(Draft { tokens, q })
    }
}

/// A smaller model with the target's tokenizer, on its own KV cache (one sequence, kept in step
/// with the target's history by its longest common prefix). Drafting stops when the draft's top
/// probability falls under `p_min` (for greedy settings: of its softmax at temperature 1).
pub struct DraftModel {
    pub model: Model,
    pub p_min: f32,
    seq: Option<SeqId>,
    cached: Vec<u32>, // tokens in the draft's cache
    rng: Rng,         // the draft's own draws (sampling)
}

impl DraftModel {
    /// `model` drafting for a target whose tokenizer is `target`: refused, with the first
    /// difference, when the two vocabularies differ (every id must mean the same text).
    pub fn new(model: Model, draft: &Tokenizer, target: &Tokenizer, p_min: f32, seed: u64) -> Result<Self> {
        let (nd, nt) = (draft.vocab_size(), target.vocab_size());
        if nd != nt {
            bail!("the draft model's vocabulary has {nd} tokens but the target's {nt}: a draft model needs the target's tokenizer (e.g. a smaller model of the same family)");
        }
        if let Some(id) = (0..nd as u32).find(|&i| draft.id_to_token(i) != target.id_to_token(i)) {
            bail!(
                "the draft model's token {id} is {:?} but the target's is {:?}: a draft model needs the target's tokenizer",
                draft.id_to_token(id).unwrap_or_default(),
                target.id_to_token(id).unwrap_or_default()
            );
        }
        Ok(DraftModel {
            model,
            p_min,
            seq: None,
            cached: vec![],
            rng: Rng::new(seed ^ 0xd7af_7d7a),
        })
    }
}

impl Drafter for DraftModel {
    fn runs_a_model(&self) -> bool {
        true
    }

    fn propose(&mut self, history: &[u32], k: usize, sampler: &Sampler) -> Result<Draft> {
        let seq = match self.seq {
            Some(s) => s,
            None => *self.seq.insert(self.model.new_seq()?),
        };
        // Keep the common prefix of the cache and the history; run the rest (at least the last).
        let keep = self.cached.iter().zip(history).take_while(|(a, b)| a == b).count();
        let keep = keep.min(history.len() - 1);
        self.model.truncate(seq, keep);
        self.cached.truncate(keep);
        let mut feed = history[keep..].to_vec();
        let mut context = history.to_vec();
        let mut draft = Draft::default();
        let ctx = self.model.cfg.seq_len;
        while draft.tokens.len() < k && self.cached.len() + feed.len() <= ctx {
            let entry = Entry {
                seq,
                tokens: &feed,
                want: Want::Last,
            };
            let logits = match self.model.forward(&[entry]) {
                Ok(mut l) => l.remove(0),
                // the draft's own KV pool is full: no draft now (the target goes on plainly)
                Err(e) if matches!(e.downcast_ref(), Some(crate::kv_cache::KvError::Full { .. })) => break,
                Err(e) => return Err(e),
            };
            self.cached.append(&mut feed);
            // (the output's presence and frequency penalties are left out of q: the rejection
            // rule keeps the target's distribution for any q the draft was drawn from)
            let q = sampler.cfg.distribution(&logits, &context, 0);
            let top = if q.greedy {
                softmax_max(&logits)
            } else {
                q.weights[0] / q.total
            };
            if top < self.p_min as f64 {
                break;
            }
            let x = if q.greedy { q.ids[0] } else { q.draw(&mut self.rng) };
            draft.tokens.push(x);
            draft.q.push(q);
            context.push(x);
            feed.push(x);
        }
        Ok(draft)
    }
}

/// The largest probability of softmax(logits).
fn softmax_max(logits: &[f32]) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l)) as f64;
    1.0 / logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>()
}

/// The rejection rule over a draft of `tokens` drawn from `q`, with `p(i)` the target's
/// distribution after the history and tokens[..i] (row i of the verify step; asked for in order,
/// only as far as needed). Returns how many tokens are accepted and the token that follows them:
/// the residual's draw at the first rejection, else the bonus draw from p(k). Greedy p accepts
/// exactly the target's argmax and draws nothing from `rng`.
pub fn accept(tokens: &[u32], q: &[Dist], mut p: impl FnMut(usize) -> Dist, rng: &mut Rng) -> (usize, u32) {
    for (i, (&x, q)) in tokens.iter().zip(q).enumerate() {
        let p = p(i);
        if p.greedy {
            if x != p.ids[0] {
                return (i, p.ids[0]);
            }
            continue;
        }
        let (px, qx) = (p.prob(x), q.prob(x));
        if qx > 0.0 && rng.next_f64() * qx < px {
            continue;
        }
        let r = residual(&p, q).unwrap_or(p);
        return (i, r.draw(rng));
    }
    let p = p(tokens.len());
    let bonus = if p.greedy { p.ids[0] } else { p.draw(rng) };
    (tokens.len(), bonus)
}

/// The residual distribution norm(max(0, p - q)) a rejected draft is replaced from; None when it
/// has no mass (p <= q everywhere, so p = q and nothing would have been rejected).
pub fn residual(p: &Dist, q: &Dist) -> Option<Dist> {
    let q: std::collections::HashMap<u32, f64> =
        q.ids.iter().zip(&q.weights).map(|(&i, &w)| (i, w / q.total)).collect();
    let (ids, weights): (Vec<u32>, Vec<f64>) = p
        .ids
        .iter()
        .zip(&p.weights)
        .map(|(&y, &w)| (y, (w / p.total - q.get(&y).copied().unwrap_or(0.0)).max(0.0)))
        .filter(|&(_, w)| w > 0.0)
        .unzip();
    let total: f64 = weights.iter().sum();
    (total > 0.0).then_some(Dist {
        ids,
        weights,
        total,
        greedy: false,
    })
}

/// The draft length's bounds: `--draft-max`, `--draft-min`.
#[derive(Clone, Copy, Debug)]
pub struct SpecConfig {
    /// Most tokens drafted per verify step (the draft length starts here).
    pub draft_max: usize,
    /// Fewer drafted tokens than this: no verify step, a plain one instead.
    pub draft_min: usize,
}

/// A drafter and the draft length it adapts: after a draft kept in full the length doubles (up
/// to `draft_max`), after a rejection it halves (or falls to the tokens kept plus one, if more); a draft of which
/// nothing was kept (or a draft model's draft too short to verify) also pauses drafting for 2, 4,
/// 8 .. 64 times the rows it spent (plain decoding, decoded ahead on a GPU as far as the pause
/// lasts), so
/// text a drafter cannot predict costs little more than plain decoding.
pub struct Spec {
    pub drafter: Box<dyn Drafter>,
    pub cfg: SpecConfig,
    len: usize,
    pause: usize,
    backoff: usize,
}

/// Drafted and accepted tokens over a generation (the stats line's acceptance).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Verify steps run.
    pub verifies: usize,
    /// Tokens drafted into them.
    pub drafted: usize,
    /// Drafted tokens the target kept.
    pub accepted: usize,
}

impl Spec {
    pub fn new(drafter: Box<dyn Drafter>, cfg: SpecConfig) -> Self {
        Spec {
            drafter,
            len: cfg.draft_max.max(1),
            cfg,
            pause: 0,
            backoff: 0,
        }
    }

    /// How many tokens to draft now (0 while paused: a plain step), where a verify
    /// step computes `tile` rows for the price of one (Model::row_tile): the rows then fill
    /// whole tiles, as many as `draft_max` allows (lavapipe: a verify of 8 rows costs what one
    /// of 2 does, and 9 nearly twice as much; benches/RESULTS.md).
    pub fn draft_len(&mut self, tile: usize) -> usize {
        if self.pause > 0 {
            return 0;
        }
        let max = self.cfg.draft_max.max(1);
        let rows = (self.len + 1).next_multiple_of(tile);
        match rows - 1 {
            k if k <= max => k,
            _ if max + 1 >= tile => (max + 1) / tile * tile - 1,
            _ => max,
        }
    }

    /// Start afresh (a new sequence): the longest drafts, no pause.
    pub fn reset(&mut self) {
        (self.len, self.pause, self.backoff) = (self.cfg.draft_max.max(1), 0, 0);
    }

    /// Tokens of plain decoding left before drafting resumes.
    pub fn paused(&self) -> usize {
        self.pause
    }

    /// `n` tokens were decoded plainly (the engine decodes ahead no further than the pause).
    pub fn decoded_plain(&mut self, n: usize) {
        self.pause = self.pause.saturating_sub(n);
    }

    /// Adapt to a verify step that kept `accepted` of `drafted` tokens.
    pub fn update(&mut self, drafted: usize, accepted: usize) {
        let max = self.cfg.draft_max.max(1);
        self.len = if accepted == drafted && drafted > 0 {
            (self.len * 2).min(max)
        } else {
            (accepted + 1).max(self.len / 2).max(self.cfg.draft_min).min(max)
        };
        if accepted == 0 {
            // as many tokens as the rows spent in vain, times 2, 4 .. 64
            self.backoff = (self.backoff * 2).clamp(2, 64);
            self.pause = self.backoff * (drafted + 1);
        } else {
            self.backoff = 0;
        }
    }
}
