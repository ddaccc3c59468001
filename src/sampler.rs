//! Choosing the next token from logits: greedy (temperature 0), or sampling with temperature,
//! top-k, top-p, min-p and a repetition penalty, from a seeded RNG (same seed, same text).
//! The order follows HF's logits processors (`RepetitionPenaltyLogitsProcessor`,
//! `TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`, `MinPLogitsWarper`).
//! Any settings and any logits give a valid id: see `Sampler::sample`.

use anyhow::{bail, Result};

use crate::cpu::ops::argmax;

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

/// Temperatures below this sample like greedy decoding (the argmax, ties to the lowest id, as at
/// temperature 0). At such a temperature a logit gap of 1e-3 already makes the runner-up
/// e^-1000 times as likely, so the only randomness left would be among tokens whose logits are
/// equal or within a few millionths of each other; T -> 0 thus meets T = 0.
pub const GREEDY_BELOW: f32 = 1e-6;

impl SamplerConfig {
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
        greedy_temperature(self.cfg.temperature) && self.cfg.repeat_penalty == 1.0
    }

    /// The next token, given the logits and the tokens so far (for the repetition penalty).
    ///
    /// Always a valid id below `logits.len()`, whatever the settings and logits hold: NaN logits
    /// count as -inf (an engine that produces them is broken, and the engine says so before it
    /// samples), +inf logits are infinitely more likely than finite ones (uniform among
    /// themselves), and when every logit is -inf they are all equal. The probabilities are
    /// computed in f64 from logits scaled so that nothing overflows, and the draw can only end on
    /// a kept candidate of nonzero probability. An empty `logits` gives 0.
    pub fn sample(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let c = &self.cfg;
        if logits.is_empty() {
            return 0;
        }
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
        let t = c.temperature;
        if greedy_temperature(t) {
            return argmax(&logits) as u32;
        }
        // Candidates with their scaled logit x = l / T, most likely first (ties: lower id first).
        // x is the f32 quotient wherever that is finite (always, at ordinary settings), else the
        // f64 one, which no finite f32 logit and temperature >= GREEDY_BELOW can overflow;
        // infinite logits stay infinite whatever T is; -0 is 0 (every finite logit is 0 at T = inf).
        let scale = |l: f32| -> f64 {
            let q = l / t;
            let x = if q.is_finite() {
                q as f64
            } else if l.is_infinite() {
                l as f64
            } else {
                l as f64 / t as f64
            };
            x + 0.0
        };
        let mut cand: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, scale(l))).collect();
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
        // r < total: subtracting the kept probabilities in order ends on one of them; if
        // rounding leaves r >= 0 after the last but one, the last kept candidate is the draw.
        let total: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.next_f64() * total;
        for (i, p) in probs[..keep - 1].iter().enumerate() {
            r -= p;
            if r < 0.0 {
                return cand[i].0;
            }
        }
        cand[keep - 1].0
    }
}

/// Temperatures that sample greedily: below `GREEDY_BELOW`, and NaN (which means nothing).
fn greedy_temperature(t: f32) -> bool {
    t.is_nan() || t < GREEDY_BELOW
}

/// HF's `RepetitionPenaltyLogitsProcessor`: a negative logit is multiplied by the penalty, any
/// other divided by it (0 stays 0). A NaN result (+inf / +inf, a NaN penalty) counts as -inf.
fn penalise(l: f32, penalty: f32) -> f32 {
    let v = if l < 0.0 { l * penalty } else { l / penalty };
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v
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

    /// The stream of draws for ordinary settings, as the sampler gave it before it was made
    /// overflow-proof (120,000 draws over random logits and settings matched the old code): seeds
    /// in the CLI tests and in users' notes must keep giving the same text.
    #[test]
    fn ordinary_settings_keep_their_stream() {
        let logits: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 32.0) / 8.0).collect();
        let mut s = Sampler::new(SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.05,
            repeat_penalty: 1.1,
            seed: 42,
        });
        let got: Vec<u32> = (0..24).map(|_| s.sample(&logits, &[60, 61, 62])).collect();
        let want = [
            19, 57, 50, 62, 29, 24, 5, 17, 24, 31, 5, 38, 43, 57, 5, 17, 50, 17, 5, 5, 19, 38, 12, 31,
        ];
        assert_eq!(got, want);
    }

    fn sampler(temperature: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            seed: 3,
            ..Default::default()
        }
    }

    /// `n` draws, counted per id.
    fn counts(cfg: &SamplerConfig, logits: &[f32], context: &[u32], n: usize) -> Vec<usize> {
        let mut s = Sampler::new(cfg.clone());
        let mut c = vec![0; logits.len().max(1)];
        for _ in 0..n {
            c[s.sample(logits, context) as usize] += 1;
        }
        c
    }

    const INF: f32 = f32::INFINITY;

    #[test]
    fn tiny_temperatures_are_greedy_with_ties_to_the_lowest_id() {
        // The reported case: T = 1e-38 made l / T overflow, softmax NaN, and the draw fell
        // through to the last candidate.
        for t in [1e-38, 1e-30, f32::MIN_POSITIVE, 1e-45, 1e-7] {
            for (logits, want) in [
                (vec![1.0, 3.0, 2.5, -1.0, 0.0, 2.9], 1),
                (vec![2.0, 5.0, 5.0, 1.0], 1),
                (vec![-3e38, 3e38, 3e38, 1.0], 1),
                (vec![-INF, -INF, 0.5, -INF], 2),
            ] {
                let c = counts(&sampler(t), &logits, &[], 50);
                assert_eq!(
                    c[want], 50,
                    "T {t}, logits {logits:?}: counts {c:?}, want all on {want}"
                );
            }
            assert!(Sampler::new(sampler(t)).is_greedy(), "T {t} should let the device pick");
        }
        assert!(!Sampler::new(sampler(GREEDY_BELOW)).is_greedy());
    }

    #[test]
    fn logits_over_temperature_beyond_f32_still_sample_right() {
        // l / T overflows f32 (1e35 / 1e-5), so these go through f64: gaps of 1e40 leave only
        // the top token.
        let c = counts(&sampler(1e-5), &[1e35, 3e35, -3e38, 2e35], &[], 100);
        assert_eq!(c, [0, 100, 0, 0]);
        // Two huge equal logits stay a fair coin.
        let c = counts(&sampler(1e-5), &[3e38, 3e38, 0.0], &[], 2000);
        assert!(c[2] == 0 && (900..1100).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn huge_and_infinite_temperatures_are_uniform_over_possible_tokens() {
        for t in [1e30, f32::MAX, INF] {
            let c = counts(&sampler(t), &[1.0, 2.0, -INF, 3.0, f32::NAN], &[], 3000);
            assert_eq!((c[2], c[4]), (0, 0), "T {t}: -inf and NaN are impossible: {c:?}");
            for i in [0, 1, 3] {
                assert!(
                    (850..1150).contains(&c[i]),
                    "T {t}: id {i} drawn {} of 3000: {c:?}",
                    c[i]
                );
            }
        }
        // +inf logits beat any finite one at any temperature, and share the draw.
        let c = counts(&sampler(INF), &[1.0, INF, 5.0, INF], &[], 2000);
        assert!(c[0] + c[2] == 0 && (900..1100).contains(&c[1]), "{c:?}");
    }

    #[test]
    fn repetition_penalty_edge_values() {
        // HF: negative logits multiplied, the others divided; 0 stays 0; overflow goes to -inf;
        // +inf / +inf (NaN) counts as -inf.
        let cases = [
            (0.0, INF, 0.0),
            (2.0, INF, 0.0),
            (-1.0, INF, -INF),
            (INF, INF, -INF),
            (-INF, 2.0, -INF),
            (INF, 2.0, INF),
            (0.0, 1e38, 0.0),
            (-10.0, 1e38, -INF),
            (10.0, 1e38, 1e-37),
            (-0.0, 3.0, -0.0),
            (1.0, f32::NAN, -INF),
        ];
        for (i, (l, p, want)) in cases.into_iter().enumerate() {
            let got = penalise(l, p);
            assert!(
                got.to_bits() == want.to_bits(),
                "case {i}: penalise({l}, {p}) = {got}, want {want}"
            );
        }
        // Sampling with an infinite penalty: 0 and 2 (seen) become 0, -1 becomes -inf.
        let cfg = SamplerConfig {
            repeat_penalty: INF,
            ..sampler(1.0)
        };
        let c = counts(&cfg, &[0.0, 2.0, -1.0, 1.0], &[0, 1, 2], 3000);
        // p = (1, 1, 0, e) / (2 + e)
        assert_eq!(c[2], 0, "{c:?}");
        assert!((1600..1860).contains(&c[3]), "{c:?}");
        // Greedy with an infinite penalty: 3 (1.0) beats the penalised 1 (2.0 -> 0).
        let cfg = SamplerConfig {
            repeat_penalty: INF,
            ..sampler(0.0)
        };
        assert_eq!(Sampler::new(cfg).sample(&[0.0, 2.0, -1.0, 1.0], &[1]), 3);
    }

    #[test]
    fn top_p_on_equal_logits_keeps_the_right_count_and_draws_uniformly() {
        for (n, p, keep) in [(10, 0.3, 3), (4, 0.5, 2), (3, 1.0 / 3.0, 1), (5, 0.41, 3), (8, 0.99, 8)] {
            let cfg = SamplerConfig {
                top_p: p,
                ..sampler(1.0)
            };
            let draws = 600 * keep;
            let c = counts(&cfg, &vec![0.7; n], &[], draws);
            for (i, &k) in c.iter().enumerate() {
                let ok = if i < keep { (500..700).contains(&k) } else { k == 0 };
                assert!(
                    ok,
                    "{n} equal logits, top-p {p}: want ids 0..{keep} about 600 times each, id {i} got {k}: {c:?}"
                );
            }
        }
    }

    #[test]
    fn top_p_zero_keeps_the_top_one() {
        let cfg = SamplerConfig {
            top_p: 0.0,
            ..sampler(1.0)
        };
        assert_eq!(counts(&cfg, &[1.0, 3.0, 2.9, 3.0], &[], 50), [0, 50, 0, 0]);
    }

    #[test]
    fn min_p_ignores_minus_infinity() {
        let logits = [-INF, 1.0, -INF, 0.0, -INF];
        // p(3) / p(1) = e^-1 = 0.37
        for (min_p, want) in [(0.3, vec![1, 3]), (0.4, vec![1]), (1.0, vec![1])] {
            let cfg = SamplerConfig { min_p, ..sampler(1.0) };
            let c = counts(&cfg, &logits, &[], 500);
            let got: Vec<usize> = (0..5).filter(|&i| c[i] > 0).collect();
            assert_eq!(got, want, "min-p {min_p}: counts {c:?}");
        }
    }

    #[test]
    fn all_minus_infinity_but_one_always_gives_that_one() {
        let logits = [-INF, -INF, -INF, -2.0, -INF, -INF];
        for t in [0.0, 1e-38, 0.5, 1.0, 1e30, INF] {
            for (top_k, top_p, min_p) in [(0, 1.0, 0.0), (3, 0.5, 0.1), (1, 0.0, 1.0), (100, 0.9, 0.0)] {
                let cfg = SamplerConfig {
                    top_k,
                    top_p,
                    min_p,
                    ..sampler(t)
                };
                assert_eq!(
                    counts(&cfg, &logits, &[], 40)[3],
                    40,
                    "T {t} top-k {top_k} top-p {top_p} min-p {min_p}"
                );
            }
        }
        // All -inf: all equal, so greedy gives the lowest id and sampling any of them.
        assert_eq!(Sampler::new(sampler(0.0)).sample(&[-INF; 4], &[]), 0);
        let c = counts(&sampler(1.0), &[-INF; 3], &[], 300);
        assert!(c.iter().all(|&k| k > 50), "{c:?}");
    }

    #[test]
    fn nan_logits_are_never_drawn() {
        let nan = f32::NAN;
        assert_eq!(Sampler::new(sampler(0.0)).sample(&[nan, 1.0, nan, 0.0], &[]), 1);
        let c = counts(&sampler(1.0), &[nan, 1.0, nan, 0.0], &[], 1000);
        assert!(c[0] + c[2] == 0 && c[1] > c[3] && c[3] > 0, "{c:?}");
        // All NaN: nothing valid to prefer; still an id in range.
        let mut s = Sampler::new(sampler(1.0));
        assert!((0..50).all(|_| s.sample(&[nan; 5], &[]) < 5));
    }

    #[test]
    fn top_k_beyond_the_vocabulary_and_a_vocabulary_of_one() {
        let cfg = SamplerConfig {
            top_k: 10,
            ..sampler(1.0)
        };
        let c = counts(&cfg, &[1.0, 2.0, 3.0], &[], 1000);
        assert!(c.iter().all(|&k| k > 50), "top-k 10 of 3 keeps all three: {c:?}");
        for l in [0.0, INF, -INF, f32::NAN, 3e38, -3e38] {
            for t in [0.0, 1e-38, 1.0, INF] {
                let cfg = SamplerConfig {
                    top_k: 5,
                    top_p: 0.5,
                    min_p: 0.5,
                    repeat_penalty: 2.0,
                    ..sampler(t)
                };
                assert_eq!(Sampler::new(cfg).sample(&[l], &[0, 7]), 0, "logit {l}, T {t}");
            }
        }
        assert_eq!(Sampler::new(sampler(1.0)).sample(&[], &[]), 0, "no logits: 0, no panic");
    }

    #[test]
    fn validate_says_what_to_use() {
        assert!(SamplerConfig::default().validate().is_ok());
        let bad = [
            (
                SamplerConfig {
                    temperature: -1.0,
                    ..Default::default()
                },
                "temperature -1 is not allowed: use 0 for greedy decoding or a finite number > 0 (0.7 to 1 are common)",
            ),
            (
                SamplerConfig {
                    temperature: INF,
                    ..Default::default()
                },
                "temperature inf is not allowed",
            ),
            (
                SamplerConfig {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "temperature NaN is not allowed",
            ),
            (
                SamplerConfig {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top-p 1.5 is not allowed: use a number from 0 to 1 (1 = off)",
            ),
            (
                SamplerConfig {
                    min_p: -0.1,
                    ..Default::default()
                },
                "min-p -0.1 is not allowed: use a number from 0 to 1 (0 = off)",
            ),
            (
                SamplerConfig {
                    repeat_penalty: 0.0,
                    ..Default::default()
                },
                "repeat penalty 0 is not allowed: use a finite number > 0",
            ),
            (
                SamplerConfig {
                    repeat_penalty: INF,
                    ..Default::default()
                },
                "repeat penalty inf is not allowed",
            ),
        ];
        for (i, (cfg, want)) in bad.iter().enumerate() {
            let msg = cfg.validate().map_err(|e| e.to_string()).err();
            assert!(
                msg.as_deref().is_some_and(|m| m.starts_with(want)),
                "case {i}: {cfg:?} gave {msg:?}, want {want:?}"
            );
        }
    }
}
