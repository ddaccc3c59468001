//! The KL-divergence harness's arithmetic (src/tools/kl.rs) against a direct f64 computation:
//! with every token kept, KL(p || q) = sum p (log p - log q) exactly; with the top K and the rest
//! as one bucket, a lower bound of it (the data-processing inequality); the saved file reads
//! back equal.

use proptest::prelude::*;
use tinfer::tools::kl::{KlBase, KlCompare};

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    row.iter().map(|&l| l as f64 - lse).collect()
}

fn direct_kl(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum()
}

fn rows(n: usize, vocab: usize, seed: u64, scale: f32) -> Vec<Vec<f32>> {
    let mut r = tinfer::sampler::Rng::new(seed);
    (0..n)
        .map(|_| (0..vocab).map(|_| (r.next_f64() as f32 - 0.5) * scale).collect())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn kl_is_exact_with_every_token_and_a_lower_bound_with_fewer(
        seed in 0u64..1000, vocab in 2usize..80, k in 1usize..80, scale in 0.1f32..30.0,
    ) {
        let k = k.min(vocab);
        let (p, q) = (rows(5, vocab, seed, scale), rows(5, vocab, seed + 7, scale));
        let tokens: Vec<u32> = (0..6).map(|i| (i * 3 % vocab) as u32).collect();
        let (mut full, mut top) = (KlBase::new(vocab, vocab, 6, &tokens), KlBase::new(k, vocab, 6, &tokens));
        for (i, row) in p.iter().enumerate() {
            full.push(row, tokens[i + 1]);
            top.push(row, tokens[i + 1]);
        }
        let (mut cf, mut ct) = (KlCompare::new(&full, vocab, 6, &tokens).unwrap(), KlCompare::new(&top, vocab, 6, &tokens).unwrap());
        for (i, row) in q.iter().enumerate() {
            cf.push(row, tokens[i + 1]);
            ct.push(row, tokens[i + 1]);
        }
        let want: f64 = p.iter().zip(&q).map(|(a, b)| direct_kl(a, b)).sum::<f64>() / 5.0;
        let (rf, rt) = (cf.report().unwrap(), ct.report().unwrap());
        let (got_full, got_top) = (rf["kl_mean"].as_f64().unwrap(), rt["kl_mean"].as_f64().unwrap());
        prop_assert!((got_full - want).abs() <= 1e-9 * want.max(1.0), "all tokens: {got_full} vs {want}");
        prop_assert!(got_top <= got_full + 1e-12, "top {k}: {got_top} > {got_full}");
        // the file reads back equal
        let path = std::env::temp_dir().join(format!("tinfer-kl-{}-{seed}-{vocab}-{k}.kl", std::process::id()));
        top.save(&path).unwrap();
        prop_assert_eq!(KlBase::load(&path).unwrap(), top);
        std::fs::remove_file(&path).ok();
    }
}

/// A base from another text of the same length names the first token that differs.
#[test]
fn a_base_from_another_text_names_the_token() {
    let base = KlBase::new(4, 10, 3, &[1, 2, 3]);
    let err = KlCompare::new(&base, 10, 3, &[1, 5, 3]).err().unwrap().to_string();
    assert!(err.contains("another text: token 1 is 2 there and 5 here"), "{err}");
    let err = KlCompare::new(&base, 10, 4, &[1, 2, 3]).err().unwrap().to_string();
    assert!(err.contains("window 3") && err.contains("window 4"), "{err}");
}
