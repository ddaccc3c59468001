//! Choosing the next token from logits: greedy (temperature 0), or sampling with temperature,
//! top-k, top-p, min-p and a repetition penalty, from a seeded RNG (same seed, same text).
//! The order follows HF's logits processors (`RepetitionPenaltyLogitsProcessor`,
//! `TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`, `MinPLogitsWarper`).
//! Any settings and any logits give a valid id: see `Sampler::sample`.

use anyhow::{bail, Result};

#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// 0 = greedy (as is anything below `GREEDY_BELOW`).
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of tokens already in the context (1 = off).
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every token generated so far (0 = off; OpenAI's
    /// `presence_penalty`, -2..=2).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it was generated so far (0 = off; OpenAI's
    /// `frequency_penalty`, -2..=2). Both count the output only, not the prompt (OpenAI's
    /// formula as vLLM applies it), before the temperature.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

/// Temperatures below this sample like greedy decoding (the argmax, ties to the lowest id, as at
/// temperature 0). At such a temperature a logit gap of 1e-3 already makes the runner-up
/// e^-1000 times as likely, so the only randomness left would be among tokens whose logits are
/// equal or within a few millionths of each other; T -> 0 thus meets T = 0.
pub const GREEDY_BELOW: f32 = 1e-6;

impl SamplerConfig {
    /// The distribution `sample` draws from: the kept candidates (after the repetition penalty,
    /// temperature, top-k, top-p and min-p, in HF's order) with their probabilities; a point
    /// mass on the argmax for greedy settings. Speculative decoding's p and q are these.
    /// `context`: the tokens so far, of which the last `generated` are output (what the
    /// presence and frequency penalties count).
    pub fn distribution(&self, logits: &[f32], context: &[u32], generated: usize) -> Dist {
        let c = self;
        if logits.is_empty() {
            return Dist::point(0);
        }
        // NaN logits are never drawn while any logit is a number; among numbers they count as
        // -inf. (When every logit is NaN, every token is equally (un)likely.)
        let drawable: Vec<bool> = if logits.iter().all(|l| l.is_nan()) {
            vec![true; logits.len()]
        } else {
            logits.iter().map(|l| !l.is_nan()).collect()
        };
        let mut logits: Vec<f32> = logits
            .iter()
            .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l })
            .collect();
        if c.repeat_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in context {
                let t = t as usize;
                if t < logits.len() && !seen[t] {
                    seen[t] = true;
                    logits[t] = penalise(logits[t], c.repeat_penalty);
                }
            }
        }
        if c.presence_penalty != 0.0 || c.frequency_penalty != 0.0 {
            let mut count = vec![0u32; logits.len()];
            for &t in &context[context.len() - generated.min(context.len())..] {
                if let Some(n) = count.get_mut(t as usize) {
                    *n += 1;
                }
            }
            for (l, &n) in logits.iter_mut().zip(&count).filter(|(_, &n)| n > 0) {
                *l -= c.presence_penalty + c.frequency_penalty * n as f32;
            }
        }
        let t = c.temperature;
        if greedy_temperature(t) {
            // The first drawable token of the largest logit.
            let mut best = drawable.iter().position(|&d| d).unwrap_or(0);
            for (i, &l) in logits.iter().enumerate() {
                if drawable[i] && l > logits[best] {
                    best = i;
                }
            }
            return Dist::point(best as u32);
        }
        // Candidates with their scaled logit x = l / T in f64, most likely first (ties: lower id
        // first). In f64 no finite f32 logit over a temperature >= GREEDY_BELOW overflows or
        // underflows, so scaling keeps the logits' order: two different logits never become a
        // tie (in f32, 2e-37 / 1e30 is 0, which would tie with a logit of 0). Infinite logits
        // stay infinite whatever T is; -0 is 0 (every finite logit is 0 at T = inf).
        let scale = |l: f32| -> f64 {
            let x = if l.is_infinite() { l as f64 } else { l as f64 / t as f64 };
            x + 0.0
        };
        let mut cand: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .filter(|&(i, _)| drawable[i])
            .map(|(i, &l)| (i as u32, scale(l)))
            .collect();
        let by_logit = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if c.top_k > 0 && c.top_k < cand.len() {
            cand.select_nth_unstable_by(c.top_k - 1, by_logit);
            cand.truncate(c.top_k);
        }
        cand.sort_unstable_by(by_logit);
        // Softmax in f64: each weight exp(x - max) is in [0, 1], the top one is 1, so the sum is
        // in [1, n]. An infinite max (+inf logits, or all -inf) keeps the tokens equal to it.
        let max = cand[0].1;
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|&(_, x)| match (max.is_infinite(), x == max) {
                (true, true) => 1.0,
                (true, false) => 0.0,
                (false, _) => (x - max).exp(),
            })
            .collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        // Tokens of probability 0 (-inf logits, or underflow) can never be drawn.
        let mut keep = probs.iter().take_while(|&&p| p > 0.0).count();
        if c.top_p < 1.0 {
            // The smallest head whose probability reaches top_p, compared at top_p's own (f32)
            // precision, so that 3 of 10 equal tokens reach 0.3.
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum as f32 >= c.top_p {
                    keep = keep.min(i + 1);
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let floor = c.min_p as f64 * probs[0];
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        probs.truncate(keep);
        Dist {
            ids: cand[..keep].iter().map(|c| c.0).collect(),
            total: probs.iter().sum(),
            weights: probs,
            greedy: false,
        }
    }

    /// Check the settings a user gives. The sampler itself never fails: whatever these hold it
    /// draws a valid id; this says which settings mean nothing, and what to use instead.
    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if t.is_nan() || t < 0.0 || t.is_infinite() {
            bail!("temperature {t} is not allowed: use 0 for greedy decoding or a finite number > 0 (0.7 to 1 are common)");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            bail!(
                "top-p {} is not allowed: use a number from 0 to 1 (1 = off)",
                self.top_p
            );
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            bail!(
                "min-p {} is not allowed: use a number from 0 to 1 (0 = off)",
                self.min_p
            );
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0) {
            bail!("repeat penalty {r} is not allowed: use a finite number > 0 (1 = off; 1.1 to 1.3 are common)");
        }
        for (name, v) in [
            ("presence", self.presence_penalty),
            ("frequency", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                bail!("{name} penalty {v} is not allowed: use a number from -2 to 2 (0 = off)");
            }
        }
        Ok(())
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and the same stream on every platform
/// and crate version.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

pub struct Sampler {
    pub cfg: SamplerConfig,
    /// The seeded stream every draw comes from (speculative decoding's acceptance tests too).
    pub rng: Rng,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        let rng = Rng::new(cfg.seed);
        Sampler { cfg, rng }
    }

    /// Greedy with nothing that looks at the context: the most likely token, which the device
    /// can pick itself.
    pub fn is_greedy(&self) -> bool {
        let c = &self.cfg;
        greedy_temperature(c.temperature)
            && c.repeat_penalty == 1.0
            && c.presence_penalty == 0.0
            && c.frequency_penalty == 0.0
    }

    /// The next token, given the logits and the tokens so far, the last `generated` of them output
    /// (for the penalties).
    ///
    /// Always a valid id below `logits.len()`, whatever the settings and logits hold: NaN logits
    /// count as -inf and are never drawn while some logit is a number (an engine that produces
    /// them is broken, and the engine says so before it samples), +inf logits are infinitely more
    /// likely than finite ones (uniform among themselves), and when every logit is -inf they are
    /// all equal. The probabilities are computed in f64 from logits scaled so that nothing
    /// overflows, and the draw can only end on a kept candidate of nonzero probability. An empty
    /// `logits` gives 0. Greedy settings draw nothing from the RNG.
    pub fn sample(&mut self, logits: &[f32], context: &[u32], generated: usize) -> u32 {
        let d = self.cfg.distribution(logits, context, generated);
        if d.greedy {
            return d.ids[0];
        }
        d.draw(&mut self.rng)
    }
}

/// A distribution over token ids: the candidates, most likely first, with weights that sum to
/// `total` (probability = weight / total; ids not listed have probability 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Dist {
    pub ids: Vec<u32>,
    pub weights: Vec<f64>,
    pub total: f64,
    /// A greedy choice (a point mass drawn without the RNG).
    pub greedy: bool,
}

impl Dist {
    /// All the mass on `id`.
    pub fn point(id: u32) -> Self {
        Dist {
            ids: vec![id],
            weights: vec![1.0],
            total: 1.0,
            greedy: true,
        }
    }

    /// The probability of `id`.
    pub fn prob(&self, id: u32) -> f64 {
        self.ids
            .iter()
            .position(|&i| i == id)
            .map_or(0.0, |i| self.weights[i] / self.total)
    }

    /// A draw with `rng`: r < total, so subtracting the weights in order ends on one of them;
    /// if rounding leaves r >= 0 after the last but one, the last candidate is the draw.
    pub fn draw(&self, rng: &mut Rng) -> u32 {
        let mut r = rng.next_f64() * self.total;
        for (i, p) in self.weights[..self.weights.len() - 1].iter().enumerate() {
            r -= p;
            if r < 0.0 {
                return self.ids[i];
            }
        }
        *self.ids.last().unwrap()
    }
}

/// Temperatures that sample greedily: below `GREEDY_BELOW`, and NaN (which means nothing).
fn greedy_temperature(t: f32) -> bool {
    t.is_nan() || t < GREEDY_BELOW
}

/// HF's `RepetitionPenaltyLogitsProcessor`: a negative logit is multiplied by the penalty, any
/// other divided by it (0 stays 0). A NaN result (+inf / +inf, a NaN penalty) counts as -inf.
pub fn penalise(l: f32, penalty: f32) -> f32 {
    let v = if l < 0.0 { l * penalty } else { l / penalty };
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v
    }
}
