//! Choosing the next token from logits: greedy (temperature 0), or sampling with temperature,
//! top-k, top-p, min-p and a repetition penalty, from a seeded RNG (same seed, same text).
//! The order follows HF's logits processors: repetition penalty, temperature, top-k, top-p, min-p.

use crate::cpu::ops::argmax;

#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = off).
    pub top_p: f32,
    /// Drop tokens less likely than min_p × the most likely one (0 = off).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of tokens already in the context (1 = off).
    pub repeat_penalty: f32,
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
            seed: 0,
        }
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
    rng: Rng,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Self {
        let rng = Rng::new(cfg.seed);
        Sampler { cfg, rng }
    }

    /// Greedy with nothing that looks at the context: the most likely token, which the device
    /// can pick itself.
    pub fn is_greedy(&self) -> bool {
        self.cfg.temperature <= 0.0 && self.cfg.repeat_penalty == 1.0
    }

    /// The next token, given the logits and the tokens so far (for the repetition penalty).
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let c = &self.cfg;
        let mut logits = logits.to_vec();
        if c.repeat_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in context {
                let t = t as usize;
                if t < logits.len() && !seen[t] {
                    seen[t] = true;
                    let l = &mut logits[t];
                    *l = if *l > 0.0 {
                        *l / c.repeat_penalty
                    } else {
                        *l * c.repeat_penalty
                    };
                }
            }
        }
        if c.temperature <= 0.0 {
            return argmax(&logits) as u32;
        }
        // Candidates sorted by logit, most likely first (ties: lower id first).
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, l / c.temperature))
            .collect();
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if c.top_k > 0 && c.top_k < cand.len() {
            cand.select_nth_unstable_by(c.top_k - 1, by_logit);
            cand.truncate(c.top_k);
        }
        cand.sort_unstable_by(by_logit);
        // Softmax in f64.
        let max = cand[0].1 as f64;
        let mut probs: Vec<f64> = cand.iter().map(|&(_, l)| (l as f64 - max).exp()).collect();
        let sum: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        let mut keep = probs.len();
        if c.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= c.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if c.min_p > 0.0 {
            let floor = c.min_p as f64 * probs[0];
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let total: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.next_f64() * total;
        for i in 0..keep {
            r -= probs[i];
            if r < 0.0 {
                return cand[i].0;
            }
        }
        cand[keep - 1].0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 0.0, 2.9]
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerConfig::default());
        assert_eq!(s.sample(&logits(), &[]), 1);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let cfg = SamplerConfig {
            repeat_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(cfg);
        // token 1 (3.0 -> 1.5) is penalised, so 5 (2.9) wins
        assert_eq!(s.sample(&logits(), &[1, 1, 3]), 5);
    }

    #[test]
    fn same_seed_same_tokens_and_filters_hold() {
        let cfg = SamplerConfig {
            temperature: 1.5,
            top_k: 3,
            seed: 7,
            ..Default::default()
        };
        let draw = |cfg: &SamplerConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..200).map(|_| s.sample(&logits(), &[])).collect::<Vec<_>>()
        };
        let a = draw(&cfg);
        assert_eq!(a, draw(&cfg));
        assert!(
            a.iter().all(|t| [1, 2, 5].contains(t)),
            "top-k 3 allows only 1, 2, 5: {a:?}"
        );
        assert!(
            [1, 2, 5].iter().all(|t| a.contains(t)),
            "all three should appear in 200 draws"
        );
        // top-p: p(1) ~ 0.38 at T=1, with 5 ~ 0.35: p = 0.5 keeps exactly {1, 5}
        let p = draw(&SamplerConfig {
            temperature: 1.0,
            top_p: 0.5,
            seed: 1,
            ..Default::default()
        });
        assert!(p.iter().all(|t| [1, 5].contains(t)), "{p:?}");
        // min-p 0.9: only tokens within 90% of the best survive: 1 and 5 (e^-0.1 = 0.905)
        let m = draw(&SamplerConfig {
            temperature: 1.0,
            min_p: 0.9,
            seed: 2,
            ..Default::default()
        });
        assert!(m.iter().all(|t| [1, 5].contains(t)) && m.contains(&5), "{m:?}");
        let other = draw(&SamplerConfig { seed: 8, ..cfg });
        assert_ne!(a, other, "a different seed should give a different stream");
    }
}
