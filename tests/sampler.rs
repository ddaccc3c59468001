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
            },
        )
}

/// The first index of the largest value (the greedy pick).
fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
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
        let id = Sampler::new(cfg.clone()).sample(&logits, &context) as usize;
        prop_assert!(id < logits.len(), "id {} of {} logits", id, logits.len());
        let l = penalised(&logits, &context, cfg.repeat_penalty);
        let (t, n) = (cfg.temperature as f64, l.len());
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        prop_assert!(!logits[id].is_nan() || logits.iter().all(|x| x.is_nan()), "drew NaN logit {}: {:?}", id, logits);
        if greedy_temperature(cfg.temperature) {
            prop_assert_eq!(id, argmax(&l), "T {} is greedy: {:?}", cfg.temperature, l);
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
        let ahead: Vec<usize> = (0..n).filter(|&i| x(i) > x(id) || (x(i) == x(id) && i < id)).collect();
        if cfg.top_k > 0 {
            prop_assert!(ahead.len() < cfg.top_k, "rank {} with top-k {}: {:?}", ahead.len(), cfg.top_k, l);
        }
        if max.is_finite() {
            // Probabilities over the top-k set, in f64 (the scaled logits do not overflow).
            let mut order: Vec<usize> = (0..n).collect();
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
        let id = Sampler::new(cfg).sample(&logits, &[]) as usize;
        let l = penalised(&logits, &[], 1.0);
        prop_assert_eq!(id, argmax(&l), "T {}: {:?}", t, logits);
    }
}
