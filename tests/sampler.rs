//! Property tests of the sampler: random logits (with huge, infinite and NaN values) and random
//! settings always give a valid id that survives top-k, top-p and min-p, and temperatures near 0
//! give the argmax. The oracle here recomputes the filters independently, in f64.

use proptest::prelude::*;
use tinfer::sampler::{Sampler, SamplerConfig, GREEDY_BELOW};

fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -30.0f32..30.0,
        1 => prop::sample::select(vec![f32::INFINITY, f32::NEG_INFINITY, f32::MAX, -f32::MAX, 1e30, -1e30, 0.0, f32::NAN]),
        1 => prop::sample::select(vec![1.0f32, 2.0]), // exact ties
    ]
}

fn temperature() -> impl Strategy<Value = f32> {
    prop_oneof![
        prop::sample::select(vec![
            0.0f32,
            1e-38,
            1e-30,
            f32::MIN_POSITIVE,
            1e-7,
            GREEDY_BELOW,
            1e-5,
            1e30,
            f32::MAX,
            f32::INFINITY
        ]),
        0.01f32..5.0,
    ]
}

fn config() -> impl Strategy<Value = SamplerConfig> {
    (
        temperature(),
        0usize..12,
        prop_oneof![Just(1.0f32), 0.0f32..=1.0],
        prop_oneof![Just(0.0f32), 0.0f32..=1.0],
        prop::sample::select(vec![1.0f32, 1.3, 0.5, 1e38, f32::INFINITY]),
        any::<u64>(),
    )
        .prop_map(
            |(temperature, top_k, top_p, min_p, repeat_penalty, seed)| SamplerConfig {
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                seed,
                ..SamplerConfig::default()
            },
        )
}

/// Which tokens may be drawn: those with a number for a logit, or all when every one is NaN.
fn drawable(logits: &[f32]) -> Vec<bool> {
    let all_nan = logits.iter().all(|x| x.is_nan());
    logits.iter().map(|x| all_nan || !x.is_nan()).collect()
}

/// The greedy pick: the first drawable index of the largest value of `x` (the penalised logits).
fn argmax(logits: &[f32], x: &[f32]) -> usize {
    let d = drawable(logits);
    let first = d.iter().position(|&d| d).unwrap();
    (0..x.len()).fold(first, |best, i| if d[i] && x[i] > x[best] { i } else { best })
}

/// Temperatures the sampler treats as greedy.
fn greedy_temperature(t: f32) -> bool {
    t.is_nan() || t < GREEDY_BELOW
}

/// HF's repetition penalty; a NaN result (inf / inf) counts as -inf.
fn penalise(l: f32, p: f32) -> f32 {
    let v = if l < 0.0 { l * p } else { l / p };
    if v.is_nan() {
        f32::NEG_INFINITY
    } else {
        v
    }
}

/// The logits the filters see: NaN as -inf, then the repetition penalty.
fn penalised(logits: &[f32], context: &[u32], p: f32) -> Vec<f32> {
    let mut l: Vec<f32> = logits
        .iter()
        .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x })
        .collect();
    let mut seen = vec![false; l.len()];
    for &t in context {
        let t = t as usize;
        if t < l.len() && !seen[t] && p != 1.0 {
            seen[t] = true;
            l[t] = penalise(l[t], p);
        }
    }
    l
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Every draw is in range, possible, and survives top-k, top-p and min-p.
    #[test]
    fn draws_are_valid_and_survive_the_filters(
        logits in prop::collection::vec(logit(), 1..24),
        context in prop::collection::vec(0u32..30, 0..6),
        cfg in config(),
    ) {
        let id = Sampler::new(cfg.clone()).sample(&logits, &context, 0) as usize;
        prop_assert!(id < logits.len(), "id {} of {} logits", id, logits.len());
        let l = penalised(&logits, &context, cfg.repeat_penalty);
        let (t, n) = (cfg.temperature as f64, l.len());
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        prop_assert!(!logits[id].is_nan() || logits.iter().all(|x| x.is_nan()), "drew NaN logit {}: {:?}", id, logits);
        if greedy_temperature(cfg.temperature) {
            prop_assert_eq!(id, argmax(&logits, &l), "T {} is greedy: {:?}", cfg.temperature, l);
            return Ok(());
        }
        // Possible: the max when the max is infinite, else a finite logit.
        if max.is_infinite() {
            prop_assert_eq!(l[id], max, "id {} of {:?}", id, l);
        } else {
            prop_assert!(l[id].is_finite(), "id {} of {:?}", id, l);
        }
        // Rank: the tokens strictly ahead (higher scaled logit, or equal with a lower id).
        let x = |i: usize| if l[i].is_infinite() { l[i] as f64 } else { l[i] as f64 / t };
        let d = drawable(&logits);
        let ahead: Vec<usize> = (0..n).filter(|&i| d[i] && (x(i) > x(id) || (x(i) == x(id) && i < id))).collect();
        if cfg.top_k > 0 {
            prop_assert!(ahead.len() < cfg.top_k, "rank {} with top-k {}: {:?}", ahead.len(), cfg.top_k, l);
        }
        if max.is_finite() {
            // Probabilities over the top-k set, in f64 (the scaled logits do not overflow).
            let mut order: Vec<usize> = (0..n).filter(|&i| d[i]).collect();
            order.sort_by(|&a, &b| x(b).total_cmp(&x(a)).then(a.cmp(&b)));
            if cfg.top_k > 0 { order.truncate(cfg.top_k); }
            let xm = x(order[0]);
            let w = |i: usize| (x(i) - xm).exp();
            let z: f64 = order.iter().map(|&i| w(i)).sum();
            let mass_ahead: f64 = ahead.iter().filter(|i| order.contains(i)).map(|&i| w(i) / z).sum();
            if cfg.top_p < 1.0 {
                prop_assert!(mass_ahead < cfg.top_p as f64 + 1e-6 || ahead.is_empty(),
                    "mass ahead {} >= top-p {}: id {} of {:?}", mass_ahead, cfg.top_p, id, l);
            }
            if cfg.min_p > 0.0 {
                prop_assert!(w(id) >= cfg.min_p as f64 * (1.0 - 1e-9),
                    "p ratio {} < min-p {}: id {} of {:?}", w(id), cfg.min_p, id, l);
            }
        }
    }

    /// As T -> 0 the draw is the argmax (ties to the lowest id), whatever the filters.
    #[test]
    fn tiny_temperature_is_the_argmax(
        logits in prop::collection::vec(logit(), 1..24),
        t in prop::sample::select(vec![1e-38f32, 1e-30, f32::MIN_POSITIVE]),
        cfg in config(),
    ) {
        let cfg = SamplerConfig { temperature: t, repeat_penalty: 1.0, ..cfg };
        let id = Sampler::new(cfg).sample(&logits, &[], 0) as usize;
        let l = penalised(&logits, &[], 1.0);
        prop_assert_eq!(id, argmax(&logits, &l), "T {}: {:?}", t, logits);
    }
}

/// The sampler's edge cases, each with its exact expected draw.
mod edge_cases {
    use tinfer::sampler::*;

    fn logits() -> Vec<f32> {
        vec![1.0, 3.0, 2.5, -1.0, 0.0, 2.9]
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerConfig::default());
        assert_eq!(s.sample(&logits(), &[], 0), 1);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let cfg = SamplerConfig {
            repeat_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(cfg);
        // token 1 (3.0 -> 1.5) is penalised, so 5 (2.9) wins
        assert_eq!(s.sample(&logits(), &[1, 1, 3], 0), 5);
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
            (0..200).map(|_| s.sample(&logits(), &[], 0)).collect::<Vec<_>>()
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
            ..SamplerConfig::default()
        });
        let got: Vec<u32> = (0..24).map(|_| s.sample(&logits, &[60, 61, 62], 0)).collect();
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
            c[s.sample(logits, context, 0) as usize] += 1;
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
        assert_eq!(Sampler::new(cfg).sample(&[0.0, 2.0, -1.0, 1.0], &[1], 0), 3);
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
        assert_eq!(Sampler::new(sampler(0.0)).sample(&[-INF; 4], &[], 0), 0);
        let c = counts(&sampler(1.0), &[-INF; 3], &[], 300);
        assert!(c.iter().all(|&k| k > 50), "{c:?}");
    }

    #[test]
    fn nan_logits_are_never_drawn() {
        let nan = f32::NAN;
        assert_eq!(Sampler::new(sampler(0.0)).sample(&[nan, 1.0, nan, 0.0], &[], 0), 1);
        let c = counts(&sampler(1.0), &[nan, 1.0, nan, 0.0], &[], 1000);
        assert!(c[0] + c[2] == 0 && c[1] > c[3] && c[3] > 0, "{c:?}");
        // All NaN: nothing valid to prefer; still an id in range.
        let mut s = Sampler::new(sampler(1.0));
        assert!((0..50).all(|_| s.sample(&[nan; 5], &[], 0) < 5));
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
                assert_eq!(Sampler::new(cfg).sample(&[l], &[0, 7], 0), 0, "logit {l}, T {t}");
            }
        }
        assert_eq!(
            Sampler::new(sampler(1.0)).sample(&[], &[], 0),
            0,
            "no logits: 0, no panic"
        );
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

/// OpenAI's presence and frequency penalties: a token generated c times loses presence +
/// c × frequency from its logit; the prompt's tokens (before the last `generated`) do not count.
#[test]
fn presence_and_frequency_penalties_count_the_output_only() {
    let logits = [3.0, 2.9, 2.0, 1.0];
    let cfg = SamplerConfig {
        presence_penalty: 0.5,
        frequency_penalty: 0.3,
        ..SamplerConfig::default()
    };
    let ctx = [0, 0, 0, 2, 2]; // prompt [0, 0], output [0, 2, 2]
                               // token 0: 3 - 0.5 - 0.3 = 2.2 < 2.9: the greedy pick moves to 1
    assert_eq!(Sampler::new(cfg.clone()).sample(&logits, &ctx, 3), 1);
    assert_eq!(
        Sampler::new(cfg.clone()).sample(&logits, &ctx, 0),
        0,
        "nothing generated"
    );
    assert!(
        !Sampler::new(cfg.clone()).is_greedy(),
        "the device cannot pick around penalties"
    );
    let hot = SamplerConfig {
        temperature: 1.0,
        ..cfg.clone()
    };
    let d = hot.distribution(&logits, &ctx, 3);
    let want = [2.2f64, 2.9, 2.0 - 0.5 - 0.6, 1.0];
    let z: f64 = want.iter().map(|x| x.exp()).sum();
    for (id, w) in d.ids.iter().zip(&d.weights) {
        let (got, exp) = (w / d.total, want[*id as usize].exp() / z);
        assert!((got - exp).abs() < 1e-6, "token {id}: p {got} vs {exp}");
    }
    assert_eq!(d.ids.len(), 4);
    let bad = SamplerConfig {
        frequency_penalty: 2.5,
        ..SamplerConfig::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("frequency penalty 2.5"));
}
