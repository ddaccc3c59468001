//! `tinfer bench attention`: the attention kernels side by side on one adapter. For each head
//! layout (MHA, GQA, MQA), head_dim and sequence length it times prefill (N query rows over N
//! keys, causal) and decode (one query over N cached keys) for every variant and KV layout:
//! time per call (median of repeats), achieved GB/s, the memory the variant needs beyond Q, K, V
//! and the output, and the max error against the CPU's naive attention in f64.

use anyhow::Result;
use serde::Serialize;

use crate::cpu::ops;
use crate::gpu::kernels::{run_timed, Dims, Op};
use crate::gpu::kernels::{split_plan, step_bytes, Kernels, MatmulKind, Row, FLASH_TILE};
use crate::gpu::launch::{AttnBufs, AttnRows, AttnShape, Launch};
use crate::gpu::Gpu;
use crate::kv_cache::KvPages;
use crate::options::Attention;
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
                    let kind = MatmulKind::float(false, gpu.has_subgroups(8));
                    let kern = Kernels::new(gpu, hd, kv.page, kind, false)?;
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
                    let shape = AttnShape {
                        n_heads,
                        n_kv_heads,
                        max_blocks,
                        score_len: n,
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
                                "flash-split" => split_plan(n, 256, t),
                                _ => (1, split_plan(n, usize::MAX, t).1),
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
                                        let l = Launch::new(gpu, &kern, &step, None)?;
                                        let bufs = AttnBufs {
                                            q: &qc,
                                            k_cache: &k_cache,
                                            v_cache: &v_cache,
                                            tables: &tables,
                                            out: &oc,
                                            scores: &scores,
                                            part: &scores, // unused by the naive kernel
                                        };
                                        let mut chunk_ops = l.attention(Attention::Naive, AttnRows::Rows, shape, &bufs);
                                        // each chunk is a call of its own `rows` rows
                                        chunk_ops[0].grid = Box::new(move |_| [n_heads as u32, rows as u32, 1]);
                                        ops.extend(chunk_ops);
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
                                    let part = match phase {
                                        Phase::Decode => gpu.zeros("part", t * n_heads * n_splits * (hd + 2))?,
                                        Phase::Prefill => gpu.zeros("part", 1)?,
                                    };
                                    if phase == Phase::Decode && n_splits > 1 {
                                        mem = (t * n_heads * n_splits * (hd + 2) * 4) as u64;
                                    }
                                    let bufs = AttnBufs {
                                        q: &q_buf,
                                        k_cache: &k_cache,
                                        v_cache: &v_cache,
                                        tables: &tables,
                                        out: &o,
                                        scores: &part, // unused by the flash kernels
                                        part: &part,
                                    };
                                    let rows = match phase {
                                        Phase::Prefill => AttnRows::Prefill,
                                        Phase::Decode => AttnRows::Rows,
                                    };
                                    let l = Launch::new(gpu, &kern, &step, None)?;
                                    let ops = l.attention(Attention::Flash, rows, shape, &bufs);
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
