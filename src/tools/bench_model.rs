//! `tinfer bench model`: whole-model speed, like llama-bench.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::sampler::Rng;

/// Tokens per second of one measurement: median, min and max over the repeats.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rate {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

/// Named rates, e.g. ("pp128", ...).
pub type Rates = Vec<(String, Rate)>;

fn rate(mut v: Vec<f64>) -> Rate {
    v.sort_by(f64::total_cmp);
    Rate {
        median: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
    }
}

/// Prompt processing of `n` tokens (one forward from an empty cache, in the engine's chunks) and
/// token generation of `n` tokens (from an empty cache, greedy, the id chosen on the device,
/// `ahead` steps a submit as the engine runs them: Model::decode_greedy), in tokens/s over
/// `repeats` runs after a warm-up.
pub fn bench_model(
    model: &mut crate::model::Model,
    pp: &[usize],
    tg: &[usize],
    repeats: usize,
    ahead: usize,
) -> Result<(Rates, Rates)> {
    use crate::model::{Entry, Want};
    let seq = model.new_seq()?;
    let vocab = model.cfg.vocab_size as u64;
    let mut rng = Rng::new(7);
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect() };
    let mut pp_out = vec![];
    for &n in pp {
        let tokens = ids(n);
        let mut rates = vec![];
        for r in 0..repeats + 1 {
            model.truncate(seq, 0);
            let t = Instant::now();
            for chunk in tokens.chunks(crate::engine::PREFILL_CHUNK) {
                model.forward(&[Entry {
                    seq,
                    tokens: chunk,
                    want: Want::Last,
                }])?;
            }
            if r > 0 {
                rates.push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        pp_out.push((format!("pp{n}"), rate(rates)));
    }
    let mut tg_out = vec![];
    for &n in tg {
        let mut rates = vec![];
        for r in 0..repeats + 1 {
            model.truncate(seq, 0);
            let mut tok = 1u32;
            let mut done = 0;
            let t = Instant::now();
            while done < n {
                let ids = if ahead > 1 {
                    model.decode_greedy(seq, tok, ahead.min(n - done))?
                } else {
                    let entry = Entry {
                        seq,
                        tokens: &[tok],
                        want: Want::Last,
                    };
                    model.forward_argmax(&[entry])?
                };
                done += ids.len();
                tok = *ids.last().unwrap();
            }
            if r > 0 {
                rates.push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        tg_out.push((format!("tg{n}"), rate(rates)));
    }
    model.release(seq);
    Ok((pp_out, tg_out))
}
