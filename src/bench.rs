//! `tinfer bench attention`: the attention kernels side by side on one adapter. For each head
//! layout (MHA, GQA, MQA), head_dim and sequence length it times prefill (N query rows over N
//! keys, causal) and decode (one query over N cached keys) for every variant and KV layout:
//! time per call (median of repeats), achieved GB/s, the memory the variant needs beyond Q, K, V
//! and the output, and the max error against the CPU's naive attention in f64.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use crate::cpu::ops;
use crate::gpu::forward::{run_timed, Dims, Op};
use crate::gpu::kernels::{
    split_plan, step_bytes, Kernel, Kernels, MatmulKind, Res, Row, Shape, FLASH_TILE, MAX_SPLITS,
};
use crate::gpu::Gpu;
use crate::kv_cache::KvPages;
use crate::sampler::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// N query rows over N keys, causal
    Prefill,
    /// one query row over N cached keys
    Decode,
}

/// Head layouts of the sweep: 8 query heads over 8, 2 or 1 KV heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HeadLayout {
    /// 8 query heads, 8 KV heads
    Mha,
    /// 8 query heads over 2 KV heads
    Gqa,
    /// 8 query heads over 1 KV head
    Mqa,
}

impl HeadLayout {
    /// (n_heads, n_kv_heads)
    pub fn heads(self) -> (usize, usize) {
        match self {
            HeadLayout::Mha => (8, 8),
            HeadLayout::Gqa => (8, 2),
            HeadLayout::Mqa => (8, 1),
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// naive | flash | flash-split (decode only)
    pub variant: &'static str,
    /// paged | contiguous
    pub kv: &'static str,
    pub phase: Phase,
    pub seq_len: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// median time per call (one submit, waited for), milliseconds
    pub ms: f64,
    /// bytes the call must move (Q, K, V, output, and the naive score matrix written and read
    /// twice) per second, GB/s
    pub gbps: f64,
    /// memory the variant needs besides Q, K, V and the output: naive's (rows, heads, N) scores,
    /// split-K's partials, flash's nothing
    pub mem_bytes: u64,
    /// max |GPU - CPU f64| over up to 16 sampled query rows (all rows when fewer)
    pub max_abs_err: f64,
    /// split-K partitions (decode)
    pub splits: usize,
    /// dispatches per call (naive prefill runs in row chunks when its scores exceed a binding)
    pub dispatches: usize,
    /// timed calls behind the median (fewer for calls over a second)
    pub repeats: usize,
}

pub struct AttnBench {
    pub seq_lens: Vec<usize>,
    pub layouts: Vec<HeadLayout>,
    pub head_dims: Vec<usize>,
    pub phases: Vec<Phase>,
    pub kv: Vec<crate::model::KvLayout>,
    pub repeats: usize,
    /// naive prefill is skipped above this length (its O(N²) scores make it minutes long)
    pub naive_prefill_max: usize,
}

impl Default for AttnBench {
    fn default() -> Self {
        AttnBench {
            seq_lens: vec![128, 512, 1024, 2048, 4096, 8192],
            layouts: vec![HeadLayout::Mha, HeadLayout::Gqa, HeadLayout::Mqa],
            head_dims: vec![64, 128],
            phases: vec![Phase::Prefill, Phase::Decode],
            kv: vec![crate::model::KvLayout::Paged, crate::model::KvLayout::Contiguous],
            repeats: 5,
            naive_prefill_max: 4096,
        }
    }
}

/// Uniform(-1, 1) with an outlier every 97 values.
fn random(rng: &mut Rng, n: usize, outlier: f32) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 97 {
            0 => outlier,
            _ => rng.next_f64() as f32 * 2.0 - 1.0,
        })
        .collect()
}

/// One sequence of `len` positions in a pool: its pages taken in reverse order (as after other
/// sequences came and went) for the paged layout, one page for the contiguous one.
fn layout(paged: bool, len: usize) -> KvPages {
    if !paged {
        let mut kv = KvPages::contiguous(len, 1, FLASH_TILE);
        kv.add_seq().unwrap();
        kv.append(0, len).unwrap();
        return kv;
    }
    let pages = len.div_ceil(FLASH_TILE);
    let mut kv = KvPages::new(FLASH_TILE, pages, 2);
    let filler = kv.add_seq().unwrap();
    kv.append(filler, len).unwrap();
    kv.release(filler);
    let s = kv.add_seq().unwrap();
    kv.append(s, len).unwrap();
    kv
}

struct Call {
    ops: Vec<Op>,
    dims: Dims,
    outs: Vec<(wgpu::Buffer, usize)>, // output buffers (rows each), in row order
}

fn upload_u32(gpu: &Gpu, label: &str, v: &[u32]) -> Result<wgpu::Buffer> {
    gpu.upload(label, &bytemuck::pod_collect_to_vec::<u32, f32>(v))
}

/// Median time of `repeats` calls after a warm-up; calls slower than a second are repeated
/// less (at least once), so long sweeps stay bounded on a CPU adapter.
fn time_call(gpu: &Gpu, call: &Call, repeats: usize) -> Result<(f64, usize)> {
    let mut times = vec![];
    let mut repeats = repeats;
    for i in 0..repeats + 1 {
        if i > repeats {
            break;
        }
        let ops: Vec<&Op> = call.ops.iter().collect();
        let ms = run_timed(gpu, &ops, call.dims, "an attention bench call")?;
        if i == 0 {
            repeats = repeats.min((3000.0 / ms) as usize).max(1); // the first call warms up
        } else {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times.len()))
}

/// Run the sweep; `each` sees every record as it is measured.
pub fn bench_attention(gpu: &Gpu, b: &AttnBench, mut each: impl FnMut(&Record)) -> Result<Vec<Record>> {
    let mut out = vec![];
    let max_binding = gpu.max_binding;
    for (n_heads, n_kv_heads) in b.layouts.iter().map(|l| l.heads()) {
        for &hd in &b.head_dims {
            for &n in &b.seq_lens {
                let mut rng = Rng::new((n * 31 + hd * 7 + n_kv_heads) as u64);
                let kv_dim = n_kv_heads * hd;
                let q_dim = n_heads * hd;
                let k = random(&mut rng, n * kv_dim, 6.0);
                let v = random(&mut rng, n * kv_dim, 2.0);
                let q_all = random(&mut rng, n * q_dim, 6.0);
                for paged in b.kv.iter().map(|&k| k == crate::model::KvLayout::Paged) {
                    let kv = layout(paged, n);
                    let seq = kv.seq_ids().next().unwrap();
                    let kind = MatmulKind {
                        f16: false,
                        subgroups: gpu.has_subgroups(8),
                    };
                    let kern = Kernels::new(gpu, hd, kv.page, kind)?;
                    let rows_in_pool = kv.alloc.n_blocks() * kv.page;
                    let (mut kp, mut vp) = (vec![0f32; rows_in_pool * kv_dim], vec![0f32; rows_in_pool * kv_dim]);
                    for pos in 0..n {
                        let s = kv.slot(seq, pos) as usize;
                        kp[s * kv_dim..(s + 1) * kv_dim].copy_from_slice(&k[pos * kv_dim..(pos + 1) * kv_dim]);
                        vp[s * kv_dim..(s + 1) * kv_dim].copy_from_slice(&v[pos * kv_dim..(pos + 1) * kv_dim]);
                    }
                    let k_cache = gpu.upload("k_cache", &kp)?;
                    let v_cache = gpu.upload("v_cache", &vp)?;
                    let table = kv.block_table(seq).to_vec();
                    let max_blocks = table.len();
                    let mut all_tables = vec![0u32; (seq + 1) * max_blocks];
                    all_tables[seq * max_blocks..].copy_from_slice(&table);
                    let tables = upload_u32(gpu, "tables", &all_tables)?;
                    let kv_name = if paged { "paged" } else { "contiguous" };
                    let row = |pos: usize| Row {
                        token: 0,
                        pos: pos as u32,
                        slot: 0,
                        seq: seq as u32,
                    };
                    let op =
                        |kern: &Kernel, step: &wgpu::Buffer, shape: Shape, bufs: &[&wgpu::Buffer], grid: [u32; 3]| {
                            let res: Vec<Res> = bufs.iter().map(|b| Res::Buf(b)).collect();
                            let shape = gpu.uniform("shape", bytemuck::bytes_of(&shape));
                            Op::new(gpu, kern, step, &shape, &res, Box::new(move |_| grid))
                        };
                    let kv_bytes = (2 * n * kv_dim * 4) as f64;
                    for &phase in &b.phases {
                        // query rows: all N (prefill) or the last (decode)
                        let (t, pos0) = match phase {
                            Phase::Prefill => (n, 0),
                            Phase::Decode => (1, n - 1),
                        };
                        let q = &q_all[pos0 * q_dim..(pos0 + t) * q_dim];
                        let q_buf = gpu.upload("q", q)?;
                        let variants: &[&'static str] = match phase {
                            Phase::Prefill if n <= b.naive_prefill_max => &["naive", "flash"],
                            Phase::Prefill => &["flash"],
                            Phase::Decode => &["naive", "flash", "flash-split"],
                        };
                        for &variant in variants {
                            let (n_splits, split_len) = match variant {
                                "flash-split" => split_plan(n, 256),
                                _ => (1, split_plan(n, usize::MAX).1),
                            };
                            let mut mem = 0u64;
                            let call = match variant {
                                "naive" => {
                                    // scores (rows, n_heads, N): in row chunks that fit one binding
                                    let chunk = ((max_binding / (n_heads * n * 4) as u64) as usize).clamp(1, t);
                                    mem = (t * n_heads * n * 4) as u64;
                                    let scores = gpu.zeros("scores", chunk * n_heads * n)?;
                                    let mut ops = vec![];
                                    let mut outs = vec![];
                                    for r0 in (0..t).step_by(chunk) {
                                        let rows = chunk.min(t - r0);
                                        let rs: Vec<Row> = (0..rows).map(|i| row(pos0 + r0 + i)).collect();
                                        let step = gpu.upload(
                                            "step",
                                            &bytemuck::pod_collect_to_vec::<u8, f32>(&step_bytes(&rs, 1, 0)),
                                        )?;
                                        let qc = gpu.upload("q", &q[r0 * q_dim..(r0 + rows) * q_dim])?;
                                        let oc = gpu.zeros("out", rows * q_dim)?;
                                        ops.push(op(
                                            &kern.attention_naive,
                                            &step,
                                            Shape::new(n_heads, n_kv_heads, max_blocks, n),
                                            &[&qc, &k_cache, &v_cache, &tables, &scores, &oc],
                                            [n_heads as u32, rows as u32, 1],
                                        ));
                                        outs.push((oc, rows));
                                    }
                                    Call {
                                        ops,
                                        dims: Dims {
                                            t: t as u32,
                                            n_splits: 1,
                                        },
                                        outs,
                                    }
                                }
                                _ => {
                                    let rs: Vec<Row> = (0..t).map(|i| row(pos0 + i)).collect();
                                    let step = gpu.upload(
                                        "step",
                                        &bytemuck::pod_collect_to_vec::<u8, f32>(&step_bytes(&rs, n_splits, split_len)),
                                    )?;
                                    let o = gpu.zeros("out", t * q_dim)?;
                                    let ops = match phase {
                                        Phase::Prefill => vec![op(
                                            &kern.attention_flash,
                                            &step,
                                            Shape::new(n_heads, n_kv_heads, max_blocks, 0),
                                            &[&q_buf, &k_cache, &v_cache, &tables, &o],
                                            [t.div_ceil(kern.flash_rows) as u32, n_heads as u32, 1],
                                        )],
                                        Phase::Decode => {
                                            let part = gpu.zeros("part", t * n_heads * MAX_SPLITS * (hd + 2))?;
                                            if n_splits > 1 {
                                                mem = (t * n_heads * n_splits * (hd + 2) * 4) as u64;
                                            }
                                            let mut ops = vec![op(
                                                &kern.attention_decode,
                                                &step,
                                                Shape::new(n_heads, n_kv_heads, max_blocks, MAX_SPLITS),
                                                &[&q_buf, &k_cache, &v_cache, &tables, &part, &o],
                                                [n_heads as u32, t as u32, n_splits as u32],
                                            )];
                                            if n_splits > 1 {
                                                ops.push(op(
                                                    &kern.attention_reduce,
                                                    &step,
                                                    Shape::new(n_heads, 0, 0, MAX_SPLITS),
                                                    &[&part, &o],
                                                    [n_heads as u32, t as u32, 1],
                                                ));
                                            }
                                            ops
                                        }
                                    };
                                    Call {
                                        ops,
                                        dims: Dims {
                                            t: t as u32,
                                            n_splits: n_splits as u32,
                                        },
                                        outs: vec![(o, t)],
                                    }
                                }
                            };
                            let (ms, repeats) = time_call(gpu, &call, b.repeats)?;
                            // error on sampled rows against the CPU's f64 attention
                            let mut got = vec![];
                            for (buf, rows) in &call.outs {
                                got.extend(bytemuck::pod_collect_to_vec::<u8, f32>(
                                    &gpu.read(buf, (rows * q_dim * 4) as u64)?,
                                ));
                            }
                            let mut err = 0f64;
                            let samples: Vec<usize> = if t <= 16 {
                                (0..t).collect()
                            } else {
                                (0..16).map(|i| i * (t - 1) / 15).collect()
                            };
                            for r in samples {
                                let pos = pos0 + r;
                                let mut want = vec![0f32; q_dim];
                                ops::attention(
                                    &mut want,
                                    &q[r * q_dim..(r + 1) * q_dim],
                                    &k[..(pos + 1) * kv_dim],
                                    &v[..(pos + 1) * kv_dim],
                                    pos,
                                    n_heads,
                                    n_kv_heads,
                                    hd,
                                );
                                for (a, w) in got[r * q_dim..(r + 1) * q_dim].iter().zip(&want) {
                                    err = err.max((a - w).abs() as f64);
                                }
                            }
                            // the bytes the call must move at least once: K, V, Q and out; naive
                            // adds its causal scores, written once and read twice.
                            let qo = (2 * t * q_dim * 4) as f64;
                            let scores = if variant == "naive" {
                                3.0 * (t as f64) * n_heads as f64 * (pos0 as f64 + (t as f64 + 1.0) / 2.0) * 4.0
                            } else {
                                0.0
                            };
                            let bytes = kv_bytes + qo + scores;
                            let r = Record {
                                variant,
                                kv: kv_name,
                                phase,
                                seq_len: n,
                                n_heads,
                                n_kv_heads,
                                head_dim: hd,
                                ms,
                                gbps: bytes / (ms * 1e-3) / 1e9,
                                mem_bytes: mem,
                                max_abs_err: err,
                                splits: n_splits,
                                dispatches: call.ops.len(),
                                repeats,
                            };
                            each(&r);
                            out.push(r);
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Memory lost to partly filled last pages for a mix of sequence lengths (uniform in
/// 1..=max_len), page size `page`: the waste fraction of the rows in use.
pub fn page_waste(page: usize, n_seqs: usize, max_len: usize, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let mut kv = KvPages::new(page, n_seqs * max_len.div_ceil(page), n_seqs);
    for _ in 0..n_seqs {
        let s = kv.add_seq().unwrap();
        let len = 1 + (rng.next_u64() as usize) % max_len;
        kv.append(s, len).unwrap();
    }
    kv.waste()
}

/// Time against length, one line per (variant, kv), for each phase: a self-contained SVG.
pub fn svg(records: &[Record], title: &str) -> String {
    let phases = [Phase::Prefill, Phase::Decode];
    let (w, h, pad) = (460.0, 340.0, 60.0);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" font-size=\"13\">{}</text>\n",
        2.0 * w,
        h + 30.0,
        title
    );
    for (pi, phase) in phases.iter().enumerate() {
        let recs: Vec<&Record> = records.iter().filter(|r| r.phase == *phase).collect();
        if recs.is_empty() {
            continue;
        }
        let x0 = pi as f64 * w;
        let lx = |n: usize| (n as f64).log2();
        let (nmin, nmax) = recs.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
            (a.min(lx(r.seq_len)), b.max(lx(r.seq_len)))
        });
        let ly = |ms: f64| ms.max(1e-3).log10();
        let (tmin, tmax) = recs
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(ly(r.ms)), b.max(ly(r.ms))));
        let (tmin, tmax) = (tmin.floor(), tmax.ceil().max(tmin.floor() + 1.0));
        let px = |n: usize| x0 + pad + (lx(n) - nmin) / (nmax - nmin).max(1e-9) * (w - 1.5 * pad);
        let py = |ms: f64| 30.0 + h - pad - (ly(ms) - tmin) / (tmax - tmin) * (h - 1.5 * pad);
        s += &format!(
            "<text x=\"{}\" y=\"40\" font-size=\"12\">{phase:?}: ms per call (log) vs sequence length (log2)</text>\n",
            x0 + pad
        );
        s += &format!(
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/><line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{3}\" stroke=\"black\"/>\n",
            x0 + pad,
            30.0 + h - pad,
            x0 + w - pad / 2.0,
            30.0 + pad / 2.0
        );
        let mut lens: Vec<usize> = recs.iter().map(|r| r.seq_len).collect();
        lens.sort();
        lens.dedup();
        for &n in &lens {
            s += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{n}</text>\n",
                px(n),
                30.0 + h - pad + 15.0
            );
        }
        let mut d = tmin;
        while d <= tmax {
            s += &format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
                x0 + pad - 5.0,
                py(10f64.powf(d)) + 4.0,
                10f64.powf(d)
            );
            d += 1.0;
        }
        let mut series: Vec<(&str, &str)> = recs.iter().map(|r| (r.variant, r.kv)).collect();
        series.sort();
        series.dedup();
        for (si, (variant, kv)) in series.iter().enumerate() {
            let pts: Vec<String> = lens
                .iter()
                .filter_map(|&n| {
                    recs.iter()
                        .find(|r| r.variant == *variant && r.kv == *kv && r.seq_len == n)
                        .map(|r| format!("{:.1},{:.1}", px(n), py(r.ms)))
                })
                .collect();
            let c = colors[si % colors.len()];
            let dash = if *kv == "contiguous" {
                " stroke-dasharray=\"5,3\""
            } else {
                ""
            };
            s += &format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>\n",
                pts.join(" ")
            );
            s += &format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{variant} / {kv}</text>\n",
                x0 + pad + 10.0,
                60.0 + 14.0 * si as f64
            );
        }
    }
    s + "</svg>\n"
}

// ---------------------------------------------------------------------------------------------
// `tinfer bench model`: whole-model speed, like llama-bench.

/// config.json of the SmolLM2 sizes, for `--synthetic NAME` (shapes only; weights are random).
pub fn synthetic_config(name: &str) -> Option<&'static str> {
    Some(match name {
        "smollm2-135m" => {
            r#"{"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
            "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true}"#
        }
        "smollm2-360m" => {
            r#"{"model_type": "llama", "hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
            "num_attention_heads": 15, "num_key_value_heads": 5, "vocab_size": 49152, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "tie_word_embeddings": true}"#
        }
        "smollm2-1.7b" => {
            r#"{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 24,
            "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 49152, "max_position_embeddings": 8192,
            "rms_norm_eps": 1e-5, "rope_theta": 130000.0, "tie_word_embeddings": true}"#
        }
        _ => return None,
    })
}

/// Random weights with the shapes of `cfg`: matrices uniform in ±1/√in, norms 1, biases small.
pub fn random_weights(cfg: &crate::config::Config, seed: u64) -> crate::weights::Weights<Vec<f32>> {
    let mut rng = Rng::new(seed);
    let mut mat = |rows: usize, cols: usize| -> Vec<f32> {
        let a = 1.0 / (cols as f64).sqrt();
        (0..rows * cols)
            .map(|_| ((rng.next_f64() * 2.0 - 1.0) * a) as f32)
            .collect()
    };
    let (d, q, kv, h) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.hidden_dim);
    let layers = (0..cfg.n_layers)
        .map(|_| crate::weights::Layer {
            attn_norm: vec![1.0; d],
            wq: mat(q, d),
            wk: mat(kv, d),
            wv: mat(kv, d),
            wo: mat(d, q),
            bq: cfg.qkv_bias.then(|| vec![0.01; q]),
            bk: cfg.qkv_bias.then(|| vec![0.01; kv]),
            bv: cfg.qkv_bias.then(|| vec![0.01; kv]),
            bo: cfg.o_bias.then(|| vec![0.01; d]),
            ffn_norm: vec![1.0; d],
            w_gate: mat(h, d),
            w_up: mat(h, d),
            w_down: mat(d, h),
        })
        .collect();
    crate::weights::Weights {
        embed: mat(cfg.vocab_size, d),
        layers,
        norm: vec![1.0; d],
        lm_head: (!cfg.tied_embeddings).then(|| mat(cfg.vocab_size, d)),
    }
}

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
/// token generation of `n` tokens (one at a time from an empty cache, greedy, the id chosen on the
/// device), in tokens/s over `repeats` runs after a warm-up.
pub fn bench_model(
    model: &mut crate::model::Model,
    pp: &[usize],
    tg: &[usize],
    repeats: usize,
) -> Result<(Rates, Rates)> {
    use crate::cpu::Logits;
    let vocab = model.cfg.vocab_size as u64;
    let mut rng = Rng::new(7);
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| (rng.next_u64() % vocab) as u32).collect() };
    let mut pp_out = vec![];
    for &n in pp {
        let tokens = ids(n);
        let mut rates = vec![];
        for r in 0..repeats + 1 {
            model.truncate(0);
            let t = Instant::now();
            for chunk in tokens.chunks(crate::generate::PREFILL_CHUNK) {
                model.forward(chunk, Logits::Last)?;
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
            model.truncate(0);
            let mut tok = 1u32;
            let t = Instant::now();
            for _ in 0..n {
                tok = model.forward_argmax(&[tok])?;
            }
            if r > 0 {
                rates.push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        tg_out.push((format!("tg{n}"), rate(rates)));
    }
    model.truncate(0);
    Ok((pp_out, tg_out))
}

/// Weight bytes one decoded token reads at `bytes_per_weight` (4 for f32, 2 for f16): every matrix and vector once, one embedding row;
/// the KV cache is not counted (it depends on the position).
pub fn weight_bytes_per_token(cfg: &crate::config::Config, bytes_per_weight: usize) -> u64 {
    let embed = cfg.vocab_size * cfg.dim;
    let head = if cfg.tied_embeddings { embed } else { 0 };
    ((cfg.n_params() - embed + cfg.dim + head) * bytes_per_weight) as u64
}
