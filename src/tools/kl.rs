//! The KL-divergence harness (llama-perplexity's `--kl-divergence-base` / `--kl-divergence` are
//! the example): a reference run (`perplexity --save-logits BASE`, typically the f32 CPU path)
//! keeps each scored position's distribution, and a run on another device or dtype
//! (`perplexity --kl-base BASE`) reports how far its distributions are from them.
//!
//! What is kept per scored position: the reference's top K log-probabilities (ids and values) and
//! the log of the probability mass outside them, plus the position's NLL. llama.cpp keeps every
//! logit as a u16 (304 KB a position at Qwen's 151,936 words); the top 256 (u32 id, f64
//! log-probability) and the tail are 3 KB. KL is then computed over K + 1 buckets (the K ids, and everything else as one): by the
//! data-processing inequality this is a lower bound of the full KL, equal to it when the tail
//! carries no mass, and within the tail's own contribution otherwise (p_tail is reported).

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value as Json};

use crate::cpu::ops::{argmax, logsumexp};

const MAGIC: &[u8; 8] = b"TINFKL01";

/// The reference distributions of one perplexity run.
#[derive(Clone, Debug, PartialEq)]
pub struct KlBase {
    pub k: usize,
    pub vocab: usize,
    pub window: usize,
    pub tokens: Vec<u32>,   // the scored text's ids (checked against the other run's)
    pub ids: Vec<u32>,      // (n, k): top-k ids of each scored position, most likely first
    pub logp: Vec<f64>,     // (n, k): their log-probabilities
    pub log_tail: Vec<f64>, // (n,): log of the mass outside the top k (-inf when none)
    pub nll: Vec<f64>,      // (n,): -log p(target)
}

/// log-probabilities of one row of logits (f64).
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let lse = logsumexp(row);
    row.iter().map(|&l| l as f64 - lse).collect()
}

/// ln of the probability outside `ids`: a log-sum-exp over the other entries of `lp` (summed
/// directly, not 1 - sum(ids), which cancels when the rest is tiny); -inf when nothing is left.
fn log_rest(lp: &[f64], ids: &[u32]) -> f64 {
    let mut inside = vec![false; lp.len()];
    ids.iter().for_each(|&i| inside[i as usize] = true);
    let rest = lp.iter().zip(&inside).filter(|(_, &x)| !x).map(|(&l, _)| l);
    let max = rest.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + rest.map(|l| (l - max).exp()).sum::<f64>().ln()
}

impl KlBase {
    pub fn new(k: usize, vocab: usize, window: usize, tokens: &[u32]) -> Self {
        KlBase {
            k: k.min(vocab),
            vocab,
            window,
            tokens: tokens.to_vec(),
            ids: vec![],
            logp: vec![],
            log_tail: vec![],
            nll: vec![],
        }
    }

    /// Add one scored row (the logits of a position and the token that follows it).
    pub fn push(&mut self, row: &[f32], target: u32) {
        let lp = log_softmax(row);
        let mut order: Vec<u32> = (0..row.len() as u32).collect();
        let k = self.k;
        order.select_nth_unstable_by(k - 1, |&a, &b| lp[b as usize].total_cmp(&lp[a as usize]));
        order.truncate(k);
        order.sort_by(|&a, &b| lp[b as usize].total_cmp(&lp[a as usize]).then(a.cmp(&b)));
        self.log_tail.push(log_rest(&lp, &order));
        self.logp.extend(order.iter().map(|&i| lp[i as usize]));
        self.ids.extend(order);
        self.nll.push(-lp[target as usize]);
    }

    pub fn n(&self) -> usize {
        self.nll.len()
    }

    /// Write the file: magic, then k, vocab, window, n_tokens, n as u64, then the arrays (tokens
    /// and ids u32, the rest f64), all little-endian.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut b = MAGIC.to_vec();
        for v in [self.k, self.vocab, self.window, self.tokens.len(), self.n()] {
            b.extend((v as u64).to_le_bytes());
        }
        b.extend(self.tokens.iter().flat_map(|v| v.to_le_bytes()));
        b.extend(self.ids.iter().flat_map(|v| v.to_le_bytes()));
        b.extend(self.logp.iter().flat_map(|v| v.to_le_bytes()));
        b.extend(self.log_tail.iter().flat_map(|v| v.to_le_bytes()));
        b.extend(self.nll.iter().flat_map(|v| v.to_le_bytes()));
        let mut f = std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(&b)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let mut b = vec![];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut b))
            .with_context(|| format!("cannot read the KL base {}", path.display()))?;
        let bad = || {
            format!(
                "{} is not a KL base written by `tinfer perplexity --save-logits`",
                path.display()
            )
        };
        ensure!(b.len() >= 48 && &b[..8] == MAGIC, "{}", bad());
        let u = |i: usize| u64::from_le_bytes(b[8 + 8 * i..16 + 8 * i].try_into().unwrap()) as usize;
        let (k, vocab, window, n_tokens, n) = (u(0), u(1), u(2), u(3), u(4));
        let want = (n_tokens as u128) * 4 + (n as u128) * (k as u128 * 12 + 16);
        ensure!(k >= 1 && k <= vocab && (b.len() - 48) as u128 == want, "{}", bad());
        let mut at = 48;
        let mut take = |len: usize| {
            let s = &b[at..at + len];
            at += len;
            s
        };
        let u32s = |s: &[u8]| {
            s.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        };
        let f64s = |s: &[u8]| {
            s.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        };
        let tokens = u32s(take(n_tokens * 4));
        let ids = u32s(take(n * k * 4));
        let logp = f64s(take(n * k * 8));
        let log_tail = f64s(take(n * 8));
        let nll = f64s(take(n * 8));
        ensure!(ids.iter().all(|&i| (i as usize) < vocab), "{}", bad());
        Ok(KlBase {
            k,
            vocab,
            window,
            tokens,
            ids,
            logp,
            log_tail,
            nll,
        })
    }
}

/// Accumulates the comparison of a run's rows with a base, position by position.
pub struct KlCompare<'a> {
    base: &'a KlBase,
    at: usize,
    kl: Vec<f64>,
    dnll: Vec<f64>, // nll(this run) - nll(base)
    top1_same: usize,
    tail_mass: f64,
}

impl<'a> KlCompare<'a> {
    /// Refuses a base made from other tokens, another window or another vocabulary.
    pub fn new(base: &'a KlBase, vocab: usize, window: usize, tokens: &[u32]) -> Result<Self> {
        if base.vocab != vocab || base.window != window || base.tokens.len() != tokens.len() {
            bail!(
                "the KL base was made with another window, length or vocabulary ({} tokens, window {}, vocab {}; \
                 this run: {} tokens, window {window}, vocab {vocab}); run both with the same file, --ctx and --chunks",
                base.tokens.len(),
                base.window,
                base.vocab,
                tokens.len()
            );
        }
        if let Some(i) = (0..tokens.len()).find(|&i| base.tokens[i] != tokens[i]) {
            bail!(
                "the KL base was made from another text: token {i} is {} there and {} here; run both on the same file",
                base.tokens[i],
                tokens[i]
            );
        }
        Ok(KlCompare {
            base,
            at: 0,
            kl: vec![],
            dnll: vec![],
            top1_same: 0,
            tail_mass: 0.0,
        })
    }

    pub fn push(&mut self, row: &[f32], target: u32) {
        let (b, i, k) = (self.base, self.at, self.base.k);
        assert!(i < b.n(), "more scored rows than the base has");
        let lq = log_softmax(row);
        let (ids, lp) = (&b.ids[i * k..(i + 1) * k], &b.logp[i * k..(i + 1) * k]);
        let q_rest = log_rest(&lq, ids);
        let p_tail = b.log_tail[i];
        let mut kl: f64 = ids
            .iter()
            .zip(lp)
            .map(|(&id, &p)| p.exp() * (p - lq[id as usize]))
            .sum();
        if p_tail.is_finite() {
            kl += p_tail.exp() * (p_tail - q_rest);
        }
        self.kl.push(kl.max(0.0));
        self.tail_mass += p_tail.exp();
        self.dnll.push(-lq[target as usize] - b.nll[i]);
        self.top1_same += (argmax(row) as u32 == ids[0]) as usize;
        self.at += 1;
    }

    /// Mean and 99th-percentile KL, top-1 agreement, and the perplexity difference with its
    /// standard error (from the per-token NLL differences, as llama-perplexity reports it).
    pub fn report(&self) -> Result<Json> {
        ensure!(
            self.at == self.base.n() && self.at > 0,
            "scored {} rows, the base has {}",
            self.at,
            self.base.n()
        );
        let n = self.at as f64;
        let mut sorted = self.kl.clone();
        sorted.sort_by(f64::total_cmp);
        let pct = |p: f64| sorted[((p * (n - 1.0)).round() as usize).min(sorted.len() - 1)];
        let mean_d = self.dnll.iter().sum::<f64>() / n;
        let var = self.dnll.iter().map(|d| (d - mean_d).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        let se = (var / n).sqrt();
        let base_ppl = (self.base.nll.iter().sum::<f64>() / n).exp();
        let ppl = base_ppl * mean_d.exp();
        Ok(json!({
            "n_scored": self.at,
            "top_k": self.base.k,
            "kl_mean": self.kl.iter().sum::<f64>() / n,
            "kl_p99": pct(0.99),
            "kl_median": pct(0.5),
            "kl_max": sorted[sorted.len() - 1],
            "top1_agreement": self.top1_same as f64 / n,
            "base_tail_mass_mean": self.tail_mass / n,
            "ppl_base": base_ppl,
            "ppl": ppl,
            "ppl_diff": ppl - base_ppl,
            "ppl_diff_stderr": ppl * se,
            "mean_nll_diff": mean_d,
            "mean_nll_diff_stderr": se,
        }))
    }
}

/// The report as lines for a terminal.
pub fn print_report(r: &Json) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "scored positions: {}  (base keeps the top {} of each)",
        r["n_scored"], r["top_k"]
    );
    println!(
        "KL divergence:    mean {:.3e}  median {:.3e}  p99 {:.3e}  max {:.3e}",
        f("kl_mean"),
        f("kl_median"),
        f("kl_p99"),
        f("kl_max")
    );
    println!("top-1 agreement:  {:.3}%", 100.0 * f("top1_agreement"));
    println!(
        "perplexity:       {:.5} vs base {:.5}: {:+.5} ± {:.5}  (mean NLL difference {:+.3e} ± {:.3e})",
        f("ppl"),
        f("ppl_base"),
        f("ppl_diff"),
        f("ppl_diff_stderr"),
        f("mean_nll_diff"),
        f("mean_nll_diff_stderr")
    );
    println!(
        "base tail mass:   {:.2e} (KL is over the top {} and the rest as one bucket: a lower bound)",
        f("base_tail_mass_mean"),
        r["top_k"]
    );
}
