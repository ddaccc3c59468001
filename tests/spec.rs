//! Speculative decoding (src/engine/spec.rs): greedy text with speculation equals plain greedy
//! text on the CPU and the GPU for prompt lookup and draft models at every draft length and at
//! the context's end; sampled text has the target's distribution (a statistical test with a
//! stated false-alarm rate, which a drafter that misreports its q fails); rejected drafts leave
//! the KV cache as if never run; the residual distribution on hand-made p and q.

mod common;

use common::*;
use tinfer::engine::spec::{accept, residual, Draft, DraftModel, Drafter, Lookup};
use tinfer::engine::{Engine, Sequence, Spec, SpecConfig, SpecStats, Stop, StopReason};
use tinfer::model::{Model, Want};
use tinfer::sampler::{Dist, Rng, Sampler, SamplerConfig};
use tinfer::tokenizer::Tokenizer;

fn dist(pairs: &[(u32, f64)]) -> Dist {
    Dist {
        ids: pairs.iter().map(|p| p.0).collect(),
        weights: pairs.iter().map(|p| p.1).collect(),
        total: pairs.iter().map(|p| p.1).sum(),
        greedy: false,
    }
}

#[test]
fn residual_is_the_normalised_positive_part_of_p_minus_q() {
    let p = dist(&[(1, 0.5), (2, 0.3), (3, 0.2)]);
    // q puts more than p on 1 and mass on 4, which p never draws: only 2 and 3 are left
    let r = residual(&p, &dist(&[(1, 0.7), (4, 0.3)])).unwrap();
    assert_eq!(r.ids, vec![2, 3]);
    assert!(
        (r.prob(2) - 0.6).abs() < 1e-12 && (r.prob(3) - 0.4).abs() < 1e-12,
        "{r:?}"
    );
    assert_eq!(r.prob(1), 0.0);
    assert_eq!(r.prob(4), 0.0);
    // disjoint supports: the residual is p itself
    let r = residual(&p, &Dist::point(9)).unwrap();
    for id in [1, 2, 3] {
        assert!((r.prob(id) - p.prob(id)).abs() < 1e-12);
    }
    // a point mass q on one of p's tokens: p without it, renormalised
    let r = residual(&p, &Dist::point(1)).unwrap();
    assert!((r.prob(2) - 0.6).abs() < 1e-12 && r.prob(1) == 0.0);
    // p = q (weights scaled differently): nothing left
    assert!(residual(&p, &dist(&[(3, 2.0), (2, 3.0), (1, 5.0)])).is_none());
}

#[test]
fn greedy_acceptance_keeps_the_targets_argmax_only() {
    let mut rng = Rng::new(1);
    let targets = [5u32, 6, 7, 8];
    let p = |i: usize| Dist::point(targets[i]);
    let q = vec![Dist::point(0); 3];
    assert_eq!(accept(&[5, 6, 7], &q, p, &mut rng), (3, 8), "all kept, then the bonus");
    assert_eq!(
        accept(&[5, 9, 7], &q, p, &mut rng),
        (1, 6),
        "the first mismatch is replaced"
    );
    assert_eq!(accept(&[4], &q, p, &mut rng), (0, 5));
    assert_eq!(
        accept(&[], &[], p, &mut rng),
        (0, 5),
        "no draft: the target's own token"
    );
}

#[test]
fn lookup_proposes_what_followed_the_longest_earlier_match() {
    let mut l = Lookup { max_ngram: 64 };
    let s = Sampler::new(SamplerConfig::default());
    // the tail [2, 3] occurs after 1 (then 4) and after 7 (then 5); the history ends in 1, 2, 3,
    // so the longer match (1, 2, 3) wins over the more recent one
    let h = [1, 2, 3, 4, 4, 7, 2, 3, 5, 6, 1, 2, 3];
    assert_eq!(l.propose(&h, 2, &s).unwrap().tokens, vec![4, 4]);
    // equally long matches: the most recent
    let h = [2, 3, 4, 9, 2, 3, 5, 8, 3];
    assert_eq!(l.propose(&h, 3, &s).unwrap().tokens, vec![5, 8, 3]);
    // a match near the end proposes what there is; no match proposes nothing
    assert_eq!(l.propose(&[1, 2, 1], 4, &s).unwrap().tokens, vec![2, 1]);
    assert!(l.propose(&[1, 2, 3], 4, &s).unwrap().tokens.is_empty());
    let d = l.propose(&[7, 8, 7], 1, &s).unwrap();
    assert_eq!((d.tokens, d.q), (vec![8], vec![Dist::point(8)]), "q is a point mass");
}

#[test]
fn draft_length_adapts_to_acceptance() {
    let cfg = SpecConfig {
        draft_max: 8,
        draft_min: 1,
    };
    let mut s = Spec::new(Box::new(Lookup { max_ngram: 3 }), cfg);
    assert_eq!(s.draft_len(1), 8);
    s.update(8, 3);
    assert_eq!(s.draft_len(1), 4, "halved after a rejection");
    s.update(4, 4);
    assert_eq!(s.draft_len(1), 8, "doubled after a full acceptance, up to draft_max");
    s.update(8, 6);
    assert_eq!(
        s.draft_len(1),
        7,
        "the tokens kept plus one when that is more than half"
    );
    s.update(7, 0);
    assert_eq!((s.draft_len(1), s.paused()), (0, 16), "paused for 2 x the 8 rows spent");
    s.decoded_plain(15);
    assert_eq!(s.draft_len(1), 0);
    s.decoded_plain(1);
    assert_eq!(s.draft_len(1), 3);
    s.update(3, 0);
    assert_eq!(s.paused(), 16, "the pause doubles: 4 x 4 rows");
    s.decoded_plain(16);
    assert_eq!(s.draft_len(1), 1);
    // verify rows fill whole tiles of 8 as far as draft_max allows: 7 (8 rows), not 8 (9 rows)
    assert_eq!(s.draft_len(8), 7);
    s.update(7, 7);
    assert_eq!(s.draft_len(8), 7);
    assert_eq!(s.draft_len(64), 8, "a tile beyond draft_max: draft_max");
    s.update(8, 0);
    s.reset();
    assert_eq!((s.draft_len(1), s.paused()), (8, 0), "a new sequence starts afresh");
    // draft_min above what is left never panics
    let mut s = Spec::new(
        Box::new(Lookup { max_ngram: 3 }),
        SpecConfig {
            draft_max: 5,
            draft_min: 6,
        },
    );
    s.update(5, 2);
    assert_eq!(s.draft_len(1), 5);
}

/// A drafter that proposes tokens drawn uniformly from the vocabulary (q uniform).
struct Uniform {
    vocab: u32,
    rng: Rng,
}

fn uniform(vocab: u32) -> Dist {
    dist(&(0..vocab).map(|i| (i, 1.0)).collect::<Vec<_>>())
}

impl Drafter for Uniform {
    fn propose(&mut self, _: &[u32], k: usize, _: &Sampler) -> anyhow::Result<Draft> {
        let tokens = (0..k)
            .map(|_| (self.rng.next_u64() % self.vocab as u64) as u32)
            .collect();
        Ok(Draft {
            q: vec![uniform(self.vocab); k],
            tokens,
        })
    }
}

/// A broken drafter: the target's greedy tokens, claimed to come from a uniform q, so the rule
/// accepts them far more often than the target would sample them.
struct Liar(DraftModel);

impl Drafter for Liar {
    fn propose(&mut self, history: &[u32], k: usize, _: &Sampler) -> anyhow::Result<Draft> {
        let mut d = self.0.propose(history, k, &Sampler::new(SamplerConfig::default()))?;
        let vocab = self.0.model.cfg.vocab_size as u32;
        d.q = vec![uniform(vocab); d.tokens.len()];
        Ok(d)
    }
}

fn tokenizer(dir: &str) -> Tokenizer {
    Tokenizer::from_dir(&fixtures().join(dir)).unwrap()
}

/// Run `prompt` to at most `max` tokens with `sampler` (ends banned) and `spec`; the output,
/// why it stopped, the speculation's counts, and the engine's model and spec back.
fn run(
    m: Model,
    spec: Option<Spec>,
    prompt: &[u32],
    max: usize,
    cfg: &SamplerConfig,
) -> (Vec<u32>, StopReason, SpecStats, Model, Option<Spec>) {
    let mut stop = Stop::new(&m.cfg, max);
    let banned = std::mem::take(&mut stop.eos);
    let mut e = Engine::new(m);
    if let Some(s) = spec {
        e = e.with_spec(s);
    }
    let seq = Sequence::new(prompt.to_vec(), Sampler::new(cfg.clone()), stop).with_banned(banned);
    let g = e.run(seq).unwrap().remove(0).generation();
    let spec = e.take_spec();
    (g.tokens, g.stop, g.spec, e.into_model(), spec)
}

/// A prompt with a repeated phrase (lookup finds it) and one of arbitrary tokens.
fn prompts() -> Vec<Vec<u32>> {
    let phrase: Vec<u32> = b"the cat sat on the mat; ".iter().map(|&b| b as u32).collect();
    vec![phrase.repeat(3), (0..40).map(|i| (i * 37 + 11) % 256).collect()]
}

/// Greedy text with speculation equals plain greedy text: lookup and two draft models (another
/// model with the same tokenizer, and the target itself) at draft lengths 1 to 8, and where the
/// context ends mid-draft.
fn greedy_text_is_the_plain_text(mut target: Model, draft: Model, same: Model, label: &str) {
    let greedy = SamplerConfig::default();
    let tok = tokenizer("tiny-qwen2");
    let mut drafters: Vec<(&str, Box<dyn Drafter>)> = vec![
        ("lookup", Box::new(Lookup { max_ngram: 64 })),
        ("draft", Box::new(DraftModel::new(draft, &tok, &tok, 0.0, 1).unwrap())),
        (
            "self-draft",
            Box::new(DraftModel::new(same, &tok, &tok, 0.0, 1).unwrap()),
        ),
    ];
    let ctx = target.cfg.seq_len;
    for (p, prompt) in prompts().iter().enumerate() {
        for (name, drafter) in drafters.iter_mut() {
            let mut verifies = 0;
            for (k, max, seq_len) in (1..=8).map(|k| (k, 40, ctx)).chain([(8, 40, prompt.len() + 13)]) {
                target.cfg.seq_len = seq_len;
                let (plain, why, _, m, _) = run(target, None, prompt, max, &greedy);
                let cfg = SpecConfig {
                    draft_max: k,
                    draft_min: 1,
                };
                let d = std::mem::replace(drafter, Box::new(Lookup { max_ngram: 1 }));
                let (got, got_why, stats, m, spec) = run(m, Some(Spec::new(d, cfg)), prompt, max, &greedy);
                *drafter = spec.unwrap().drafter;
                target = m;
                let what = format!("{label} prompt {p} {name} draft-max {k} context {seq_len}");
                assert_eq!(got, plain, "{what}: speculative greedy text differs from plain");
                assert_eq!(got_why, why, "{what}: stop reason");
                verifies += stats.verifies;
                assert!(stats.accepted <= stats.drafted, "{what}: {stats:?}");
                if *name == "self-draft" {
                    assert_eq!(
                        stats.accepted, stats.drafted,
                        "{what}: a model drafting for itself is always right"
                    );
                }
                if seq_len < ctx {
                    assert_eq!(why, StopReason::ContextFull, "{what}");
                }
            }
            assert!(verifies > 0, "{label} prompt {p} {name}: no verify step ran");
        }
    }
    target.cfg.seq_len = ctx;
}

#[test]
fn greedy_speculation_gives_the_plain_text_on_the_cpu() {
    let (t, _) = cpu_model(&fixtures().join("tiny-qwen2"));
    let (d, _) = cpu_model(&fixtures().join("tiny-llama-gqa"));
    let (s, _) = cpu_model(&fixtures().join("tiny-qwen2"));
    greedy_text_is_the_plain_text(t, d, s, "cpu");
}

#[test]
fn greedy_speculation_gives_the_plain_text_on_the_gpu() {
    let Some((t, _)) = gpu_model(&fixtures().join("tiny-qwen2")) else {
        return;
    };
    let (d, _) = gpu_model(&fixtures().join("tiny-llama-gqa")).unwrap();
    let (s, _) = gpu_model(&fixtures().join("tiny-qwen2")).unwrap();
    greedy_text_is_the_plain_text(t, d, s, "gpu");
}

/// A draft model whose tokenizer differs is refused with the reason.
#[test]
fn a_draft_with_another_vocabulary_is_refused() {
    let Some(dir) = smollm2_dir() else { return };
    let (m, _) = cpu_model(&fixtures().join("tiny-llama-gqa"));
    let e = DraftModel::new(m, &tokenizer("tiny-qwen2"), &Tokenizer::from_dir(&dir).unwrap(), 0.8, 0).err();
    let msg = format!("{:#}", e.expect("refused"));
    assert!(
        msg.contains("vocabulary has 256 tokens but the target's 49152"),
        "{msg}"
    );
}

/// The exact distribution of the first `len` tokens after `prompt` under `cfg` (ends banned):
/// every sequence of candidates, with its probability, by enumeration.
fn exact(m: &mut Model, prompt: &[u32], len: usize, cfg: &SamplerConfig) -> Vec<(Vec<u32>, f64)> {
    let eos = m.cfg.eos_token_ids.clone();
    let mut out = vec![];
    let mut todo = vec![(vec![], 1.0)];
    while let Some((seq, p)) = todo.pop() {
        if seq.len() == len {
            out.push((seq, p));
            continue;
        }
        let s = m.new_seq().unwrap();
        let history = [prompt, &seq[..]].concat();
        let mut logits = m.fwd(s, &history, Want::Last).unwrap();
        m.release(s);
        for &t in &eos {
            logits[t as usize] = f32::NEG_INFINITY;
        }
        let d = cfg.distribution(&logits, &history, 0);
        for &id in &d.ids {
            todo.push(([&seq[..], &[id]].concat(), p * d.prob(id)));
        }
    }
    out
}

/// The L1 distance between the empirical distribution of `runs` and `exact`.
fn l1(runs: &[Vec<u32>], exact: &[(Vec<u32>, f64)]) -> f64 {
    let n = runs.len() as f64;
    let mut d: f64 = exact
        .iter()
        .map(|(s, p)| (runs.iter().filter(|r| *r == s).count() as f64 / n - p).abs())
        .sum();
    d += runs.iter().filter(|r| !exact.iter().any(|(s, _)| s == *r)).count() as f64 / n;
    d
}

/// Sampled text with speculation has the target's distribution: the first 5 tokens of N seeded
/// runs (temperature 0.9, top-k 2: 32 outcomes, enumerated exactly, ends banned; the first comes
/// from the prompt, then drafts of up to 3 tokens) with a uniformly random
/// drafter, a perfect one (the target drafting for itself), prompt lookup, and plain sampling.
/// Weissman et al. (2003): P(|p̂ - p|₁ >= ε) <= (2^K - 2) e^(-N ε² / 2) for K outcomes; with
/// K = 32, N = 6000 and a false-alarm rate of 1e-6, ε = 0.110. A drafter that misreports its q
/// (`Liar`) must fail the same test.
#[test]
fn sampling_with_speculation_keeps_the_targets_distribution() {
    let dir = fixtures().join("tiny-qwen2");
    let mut l = tinfer::loader::load(&dir).unwrap();
    let opts = tinfer::model::Options {
        max_seqs: 2, // the prompt, and a fork of it per run
        ..Default::default()
    };
    let w = l.weights.take().unwrap();
    let mut m = Model::with_options(l.cfg, w, tinfer::model::Device::Cpu, None, &opts).unwrap();
    let cfg = SamplerConfig {
        temperature: 0.9,
        top_k: 2,
        ..SamplerConfig::default()
    };
    // every byte once (so lookup always finds the last token), then a short phrase
    let prompt: Vec<u32> = (0..256).chain(b"abcab".iter().map(|&b| b as u32)).collect();
    let (len, n) = (5, 6000);
    let exact = exact(&mut m, &prompt, len, &cfg);
    assert_eq!(exact.len(), 32);
    let bound = (2.0 / n as f64 * ((2f64.powi(32) - 2.0) / 1e-6).ln()).sqrt();
    let tok = tokenizer("tiny-qwen2");
    let vocab = m.cfg.vocab_size as u32;
    let drafters: Vec<(&str, Box<dyn Drafter>)> = vec![
        ("plain", Box::new(Lookup { max_ngram: 1 })),
        (
            "uniform",
            Box::new(Uniform {
                vocab,
                rng: Rng::new(7),
            }),
        ),
        (
            "self-draft",
            Box::new(DraftModel::new(cpu_model(&dir).0, &tok, &tok, 0.0, 3).unwrap()),
        ),
        ("lookup", Box::new(Lookup { max_ngram: 64 })),
        (
            "liar",
            Box::new(Liar(DraftModel::new(cpu_model(&dir).0, &tok, &tok, 0.0, 5).unwrap())),
        ),
    ];
    // The prompt but its last token runs once; each run continues a fork of it.
    let (head, last) = prompt.split_at(prompt.len() - 1);
    let base = m.new_seq().unwrap();
    m.fwd(base, head, Want::Last).unwrap();
    let mut e = Engine::new(m);
    for (name, mut drafter) in drafters {
        let mut runs = vec![];
        let mut stats = SpecStats::default();
        for seed in 0..n {
            let mut stop = Stop::new(&e.model.cfg, len);
            let banned = std::mem::take(&mut stop.eos);
            let fork = e.model.fork(base).unwrap();
            let sampler = Sampler::new(SamplerConfig { seed, ..cfg.clone() });
            let seq = Sequence::new(last.to_vec(), sampler, stop)
                .continuing(fork, head.to_vec())
                .with_banned(banned);
            if name != "plain" {
                // a fresh Spec each run: every step drafts (no pause from the last run's rejections)
                e = e.with_spec(Spec::new(
                    drafter,
                    SpecConfig {
                        draft_max: 3,
                        draft_min: 1,
                    },
                ));
            }
            let g = e.run(seq).unwrap().remove(0).generation();
            drafter = match e.take_spec() {
                Some(s) => s.drafter,
                None => Box::new(Lookup { max_ngram: 1 }),
            };
            e.model.release(fork);
            runs.push(g.tokens);
            stats.drafted += g.spec.drafted;
            stats.accepted += g.spec.accepted;
        }
        let d = l1(&runs, &exact);
        eprintln!("{name}: L1 {d:.4} (bound {bound:.4}), {stats:?}");
        if name == "liar" {
            assert!(
                d > bound,
                "{name}: a drafter that misreports q should be caught: L1 {d:.4}"
            );
        } else {
            assert!(
                d < bound,
                "{name}: L1 distance {d:.4} to the target's distribution over {bound:.4}"
            );
        }
        if name == "self-draft" {
            assert_eq!(stats.accepted, stats.drafted, "p = q accepts every draft");
        }
        if name != "plain" {
            assert!(stats.drafted > 0, "{name}: nothing drafted");
        }
    }
}

/// After rejected drafts, the cache holds what plain decoding leaves: the next step's logits and
/// the KV pages in use are the same (CPU, and the GPU's paged cache).
#[test]
fn rejected_drafts_leave_the_cache_as_plain_decoding_does() {
    let dir = fixtures().join("tiny-qwen2");
    let mut models = vec![("cpu", cpu_model(&dir).0)];
    if let Some((g, _)) = gpu_model(&dir) {
        models.push(("gpu", g));
    }
    let prompt = prompts().remove(1);
    let vocab = 256;
    for (label, mut m) in models {
        let mut next = vec![];
        for spec in [false, true] {
            let stop = Stop::new(&m.cfg, 30);
            let mut e = Engine::new(m);
            if spec {
                let d = Uniform {
                    vocab,
                    rng: Rng::new(3),
                };
                e = e.with_spec(Spec::new(
                    Box::new(d),
                    SpecConfig {
                        draft_max: 4,
                        draft_min: 1,
                    },
                ));
            }
            let mut seq = Sequence::new(prompt.clone(), Sampler::new(SamplerConfig::default()), stop);
            seq.keep = true;
            let s = e.run(seq).unwrap().remove(0);
            let g = s.generation();
            if spec {
                assert!(
                    g.spec.drafted > g.spec.accepted,
                    "{label}: no draft was rejected: {:?}",
                    g.spec
                );
            }
            let id = s.id.unwrap();
            m = e.into_model();
            let len = m.len(id);
            let logits = m.fwd(id, &[*s.output.last().unwrap()], Want::Last).unwrap();
            let pages_after = m.kv_usage().map(|u| u.pages_used);
            m.release(id);
            next.push((s.output, len, logits, pages_after));
        }
        let (a, b) = (&next[0], &next[1]);
        assert_eq!(a.0, b.0, "{label}: output");
        assert_eq!(a.1, b.1, "{label}: cache length");
        assert_eq!(a.3, b.3, "{label}: KV pages in use after the next step");
        assert_close(
            &format!("{label}: the next step's logits"),
            &b.2,
            &a.2,
            GPU_PREFILL_VS_DECODE,
        );
    }
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tinfer"))
        .args(args)
        .env_remove("TINFER_MODEL")
        .env(
            "XDG_RUNTIME_DIR",
            std::env::var("XDG_RUNTIME_DIR").unwrap_or("/tmp".into()),
        )
        .output()
        .unwrap()
}

/// The CLI: `--spec lookup` and `--spec draft` print the plain greedy text and add the drafted and
/// accepted counts to the stats line, consistent with the tokens produced; bad combinations are
/// refused before anything loads, a draft of another vocabulary once it has loaded.
#[test]
fn cli_speculation_gives_the_plain_text_and_says_what_it_accepted() {
    let target = fixtures().join("tiny-qwen2");
    let draft = fixtures().join("tiny-llama-gqa");
    let (t, d) = (target.to_str().unwrap(), draft.to_str().unwrap());
    let base = [
        "generate",
        "-m",
        t,
        "--device",
        "cpu",
        "-p",
        "the cat sat on the mat; the cat",
        "-n",
        "40",
    ];
    let plain = cli(&base);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    for extra in [
        &["--spec", "lookup"][..],
        &["--draft-model", d, "--draft-max", "3", "--draft-p-min", "0"][..],
    ] {
        let out = cli(&[&base[..], extra].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{extra:?}: {err}");
        assert_eq!(out.stdout, plain.stdout, "{extra:?}: greedy text differs from plain");
        // "generated: N tokens | decode: ... | drafted: D, accepted: A (R%), M accepted a verify over V verify steps"
        // the first number after `after`, looked for from `from` on
        let num = |from: &str, after: &str| -> f64 {
            let rest = &err[err
                .find(from)
                .unwrap_or_else(|| panic!("{extra:?}: no {from:?} in {err}"))..];
            let i = rest.find(after).unwrap() + after.len();
            rest[i..]
                .split(|c: char| !c.is_ascii_digit() && c != '.')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let generated = num("generated: ", "generated: ");
        let (drafted, accepted) = (num("drafted: ", "drafted: "), num("drafted: ", "accepted: "));
        let verifies = num("drafted: ", "over ");
        assert!(accepted <= drafted && verifies >= 1.0, "{err}");
        assert!(
            accepted + verifies <= generated,
            "more tokens from verify steps than generated: {err}"
        );
    }
    let refused = |args: &[&str], code: i32, needle: &str| {
        let out = cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle) && !err.contains("panicked"), "{args:?}: {err}");
    };
    refused(
        &[&base[..], &["--spec", "draft"]].concat(),
        1,
        "--spec draft needs --draft-model",
    );
    refused(
        &[&base[..], &["--spec", "lookup", "--draft-max", "0"]].concat(),
        1,
        "--draft-max must be between 1 and 64",
    );
    refused(
        &[&base[..], &["--spec", "lookup", "--n-seq", "2"]].concat(),
        1,
        "drop --n-seq",
    );
    refused(
        &[&base[..], &["--spec", "lookup", "--draft-p-min", "2"]].concat(),
        1,
        "--draft-p-min",
    );
    refused(
        &[&base[..], &["--draft-model", d, "--draft-min", "6"]].concat(),
        1,
        "maximum, 5",
    );
    refused(
        &[&base[..], &["--spec", "lookup", "--draft-max", "-1"]].concat(),
        1,
        "--draft-max",
    );
    if let Some(smol) = smollm2_dir() {
        let s = smol.to_str().unwrap();
        refused(&[&base[..], &["--draft-model", s]].concat(), 2, "vocabulary");
    }
}

/// A real model on a code edit, greedy, on the CPU and the GPU: lookup and a draft model (the
/// same model from its HF directory) give the plain text, and lookup accepts most drafts.
#[test]
fn smollm2_code_edit_with_speculation_gives_the_plain_text() {
    let (Some(gguf), Some(dir)) = (smollm2_gguf(), smollm2_dir()) else {
        return;
    };
    let (g, d) = (gguf.to_str().unwrap(), dir.to_str().unwrap());
    let prompt = root().join("benches/spec-prompts/edit-python.txt");
    let p = prompt.to_str().unwrap();
    let mut devices = vec!["cpu"];
    if gpu_request().is_some() {
        devices.push("gpu");
    }
    for dev in devices {
        let base = ["chat", "-m", g, "--device", dev, "-f", p, "-n", "96"];
        let plain = cli(&base);
        assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
        for extra in [&["--spec", "lookup"][..], &["--draft-model", d][..]] {
            let out = cli(&[&base[..], extra].concat());
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{dev} {extra:?}: {err}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&plain.stdout),
                "{dev} {extra:?}"
            );
            assert!(err.contains("drafted: "), "{dev} {extra:?}: {err}");
        }
    }
}

/// A KV pool with room for the next token but not a whole draft: the verify step gives way to
/// plain steps, so speculation produces what plain decoding does up to the pool's end, where
/// both end there (as at the end of the context, their text kept).
#[test]
fn a_pool_too_small_for_a_draft_falls_back_to_plain_steps() {
    let opts = tinfer::model::Options {
        kv_blocks: Some(4), // 64 positions
        ..Default::default()
    };
    let Some((mut m, _)) = gpu_model_with(&fixtures().join("tiny-qwen2"), &opts) else {
        return;
    };
    let prompt = prompts().remove(0); // 72 tokens: too many
    let prompt = &prompt[..40];
    let mut outs = vec![];
    for spec in [false, true] {
        let mut e = Engine::new(m);
        if spec {
            e = e.with_spec(Spec::new(
                Box::new(Lookup { max_ngram: 64 }),
                SpecConfig {
                    draft_max: 8,
                    draft_min: 1,
                },
            ));
        }
        let stop = Stop::new(&e.model.cfg, 100);
        let h = e
            .add(Sequence::new(
                prompt.to_vec(),
                Sampler::new(SamplerConfig::default()),
                stop,
            ))
            .unwrap();
        let mut out = vec![];
        while !e.is_idle() {
            out.extend(e.step().unwrap().iter().map(|&(_, t)| t));
        }
        let g = e.take(h).generation();
        assert_eq!(g.stop, StopReason::KvFull, "the pool's end ends it, text kept");
        if spec {
            assert!(g.spec.verifies > 0, "no verify step ran: {:?}", g.spec);
        }
        m = e.into_model();
        outs.push(out);
    }
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0].len(), 64 - 40 + 1, "tokens until the pool is full");
}
