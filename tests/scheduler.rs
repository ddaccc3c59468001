//! The engine's scheduler and prefix caching (issue 21): a prompt that starts with cached blocks
//! gives the logits a full forward gives, on the CPU (block copies) and the GPU (shared pages);
//! the engine reuses them across sequences; sequences preempted when the KV pool runs out are
//! recomputed and give the text they give alone.

mod common;
use common::*;

use tinfer::engine::{Engine, Sequence, Stop};
use tinfer::model::{Device, Entry, Model, Options, Want};
use tinfer::sampler::{Sampler, SamplerConfig};

/// Logits of the rows a fresh sequence gives (every row).
fn all_logits(m: &mut Model, tokens: &[u32]) -> Vec<f32> {
    let seq = m.new_seq().unwrap();
    let entry = Entry {
        seq,
        tokens,
        want: Want::All,
    };
    let out = m.forward(&[entry]).unwrap().remove(0);
    m.release(seq);
    out
}

fn with_prefix(gpu: bool) -> Option<(Model, Model)> {
    let dir = fixtures().join("tiny-llama-gqa");
    let opts = Options {
        prefix_cache: true,
        max_seqs: 4,
        ..Default::default()
    };
    if gpu {
        let (m, _) = gpu_model_with(&dir, &opts)?;
        let (plain, _) = gpu_model(&dir)?;
        return Some((m, plain));
    }
    let mut l = tinfer::loader::load(&dir).unwrap();
    let w = l.weights.take().unwrap();
    let m = Model::with_options(l.cfg.clone(), w, Device::Cpu, None, &opts).unwrap();
    Some((m, cpu_model(&dir).0))
}

/// Prompts that share 53, 70 and 32 tokens with a first one of 70: the blocks of 16 they
/// share (all but the last token's) come from the cache, and the rows they still run give the
/// logits a fresh sequence gives for the whole prompt.
fn prefix_reuse_gives_the_logits_of_a_full_forward(gpu: bool, tol: Tol) {
    let Some((mut m, mut plain)) = with_prefix(gpu) else {
        return;
    };
    let label = if gpu { "gpu" } else { "cpu" };
    let base: Vec<u32> = (0..70).map(|i| (i * 37 + 11) % 256).collect();
    let a = m.new_seq().unwrap();
    assert_eq!(m.reuse_prefix(a, &base), 0, "{label}: nothing is cached yet");
    m.forward(&[Entry {
        seq: a,
        tokens: &base,
        want: Want::Last,
    }])
    .unwrap();
    m.release(a);
    let diverging: Vec<u32> = base[..53].iter().copied().chain([1, 2, 3, 4, 5, 6, 7, 8]).collect();
    let cases = [(diverging, 48), (base.clone(), 64), (base[..32].to_vec(), 16)];
    let mut hits = 0;
    for (p, (prompt, want_cached)) in cases.iter().enumerate() {
        let s = m.new_seq().unwrap();
        let cached = m.reuse_prefix(s, prompt);
        assert_eq!(cached, *want_cached, "{label} prompt {p}: positions from the cache");
        assert_eq!(m.len(s), cached);
        let got = m
            .forward(&[Entry {
                seq: s,
                tokens: &prompt[cached..],
                want: Want::All,
            }])
            .unwrap()
            .remove(0);
        let want = all_logits(&mut plain, prompt);
        let vocab = m.cfg.vocab_size;
        assert_close(
            &format!("{label} prompt {p} rows {cached}.."),
            &got,
            &want[cached * vocab..],
            tol,
        );
        m.release(s);
        hits += cached;
    }
    let stats = m.prefix_stats().unwrap();
    assert_eq!(stats.hit_tokens, hits as u64, "{label}: {stats:?}");
    assert!(stats.cached_blocks >= 4, "{label}: {stats:?}");
}

#[test]
fn prefix_reuse_gives_the_logits_of_a_full_forward_on_the_cpu() {
    prefix_reuse_gives_the_logits_of_a_full_forward(false, TINY_VS_HF);
}

#[test]
fn prefix_reuse_gives_the_logits_of_a_full_forward_on_the_gpu() {
    prefix_reuse_gives_the_logits_of_a_full_forward(true, TINY_VS_HF);
}

/// Greedy text of `prompts` run together through one engine (each to `max` tokens, ends
/// banned), with the sequences back.
fn run_together(e: &mut Engine, prompts: &[Vec<u32>], max: usize) -> Vec<Sequence> {
    let hs: Vec<usize> = prompts
        .iter()
        .map(|p| {
            let mut stop = Stop::new(&e.model.cfg, max);
            let banned = std::mem::take(&mut stop.eos);
            let seq = Sequence::new(p.clone(), Sampler::new(SamplerConfig::default()), stop).with_banned(banned);
            e.add(seq).unwrap()
        })
        .collect();
    let mut steps = 0;
    while !e.is_idle() {
        e.step().unwrap();
        steps += 1;
        assert!(steps < 10_000, "the engine does not finish");
    }
    hs.into_iter().map(|h| e.take(h)).collect()
}

fn alone(m: Model, prompt: &[u32], max: usize) -> (Model, Vec<u32>) {
    let mut e = Engine::new(m).with_decode_ahead(1);
    let out = run_together(&mut e, &[prompt.to_vec()], max).remove(0).output;
    (e.into_model(), out)
}

/// A second request with the first's long prefix takes its blocks from the cache and gives the
/// text it gives on a model that never saw the first.
fn engine_reuses_a_shared_prefix(gpu: bool) {
    let Some((m, mut plain)) = with_prefix(gpu) else {
        return;
    };
    let label = if gpu { "gpu" } else { "cpu" };
    let system: Vec<u32> = (0..50).map(|i| (i * 53 + 7) % 256).collect();
    let ask = |q: &[u32]| [&system[..], q].concat();
    let mut e = Engine::new(m);
    let first = run_together(&mut e, &[ask(&[10, 20, 30])], 12).remove(0);
    assert_eq!(first.cached, 0, "{label}");
    let second_prompt = ask(&[40, 50, 60, 70, 80]);
    let second = run_together(&mut e, std::slice::from_ref(&second_prompt), 12).remove(0);
    assert_eq!(
        second.cached, 48,
        "{label}: the three full blocks of the shared 50 tokens"
    );
    let want;
    (plain, want) = alone(plain, &second_prompt, 12);
    assert_eq!(second.output, want, "{label}: the text with a cached prefix");
    drop(plain);
}

#[test]
fn engine_reuses_a_shared_prefix_on_the_cpu() {
    engine_reuses_a_shared_prefix(false);
}

#[test]
fn engine_reuses_a_shared_prefix_on_the_gpu() {
    engine_reuses_a_shared_prefix(true);
}

/// Five sequences whose prompts and outputs need 20 blocks of 16 in a pool of 9: the newest
/// running ones are preempted (their pages freed) and recomputed later, nobody fails, and
/// each greedy text equals the text the prompt gives alone. With and without prefix caching
/// (which lets a preempted sequence take back its own blocks when they were not evicted).
#[test]
fn preempted_sequences_give_the_text_they_give_alone() {
    let dir = fixtures().join("tiny-llama-gqa");
    let prompts: Vec<Vec<u32>> = (0..5)
        .map(|s| (0..21 + 3 * s).map(|i| (i * 31 + 17 * s + 5) % 256).collect())
        .collect();
    let max = 40;
    for prefix_cache in [false, true] {
        let opts = Options {
            kv_blocks: Some(9),
            max_seqs: 5,
            prefix_cache,
            ..Default::default()
        };
        let Some((m, _)) = gpu_model_with(&dir, &opts) else {
            return;
        };
        let mut e = Engine::new(m);
        let together = run_together(&mut e, &prompts, max);
        let preempted: usize = together.iter().map(|s| s.preempted).sum();
        assert!(preempted > 0, "prefix cache {prefix_cache}: the pool never ran out");
        let mut m = e.into_model();
        for (p, s) in prompts.iter().zip(&together) {
            assert_eq!(s.output.len(), max);
            let want;
            (m, want) = alone(m, p, max);
            assert_eq!(
                s.output, want,
                "prefix cache {prefix_cache}: preempted {} times",
                s.preempted
            );
        }
        assert_eq!(m.kv_usage().unwrap().pages_used, 0, "pages leaked");
    }
}
