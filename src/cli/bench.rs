//! `tinfer bench attention|kernels|model`: the front ends of the benchmarks in `tinfer::tools`.

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::args::{usage, AttentionArgs, KernelBenchArgs, ModelBenchArgs};
use super::load::load_seqs;
use tinfer::loader;
use tinfer::model::Model;

pub fn bench_attention(a: AttentionArgs) -> Result<()> {
    use tinfer::tools::bench_attention::{self as bench, AttnBench, Phase};

    if a.seq_lens.iter().any(|&n| n == 0 || n > 1 << 16) || a.repeats == 0 {
        bail!("sequence lengths must be between 1 and 65536 and --repeats at least 1");
    }
    let gpu = tinfer::gpu::Gpu::new(&tinfer::gpu::GpuRequest {
        adapter: a.adapter,
        allow_cpu_adapter: true,
        ..Default::default()
    })?;
    let (json, svg) = (a.json, a.svg);
    let cfg = AttnBench {
        seq_lens: a.seq_lens,
        layouts: a.layouts,
        head_dims: a.head_dims,
        phases: a.phases,
        kv: a.kv,
        repeats: a.repeats,
        naive_prefill_max: a.naive_prefill_max,
    };
    eprintln!("adapter: {}", gpu.describe());
    let header = format!(
        "{:<12} {:<10} {:<7} {:>6} {:>5} {:>4} {:>10} {:>8} {:>10} {:>9} {:>6}",
        "variant", "kv", "phase", "N", "heads", "hd", "ms", "GB/s", "mem MiB", "max err", "splits"
    );
    if json {
        eprintln!("{header}");
    } else {
        println!("{header}");
    }
    let records = bench::bench_attention(&gpu, &cfg, |r| {
        let line = format!(
            "{:<12} {:<10} {:<7} {:>6} {:>2}/{:<2} {:>4} {:>10.3} {:>8.2} {:>10.2} {:>9.1e} {:>6}",
            r.variant,
            r.kv,
            format!("{:?}", r.phase).to_lowercase(),
            r.seq_len,
            r.n_heads,
            r.n_kv_heads,
            r.head_dim,
            r.ms,
            r.gbps,
            r.mem_bytes as f64 / (1 << 20) as f64,
            r.max_abs_err,
            r.splits
        );
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    })?;
    // The targets, read off this run.
    let find = |variant: &str, kv: &str, phase: Phase, n: usize| {
        let v: Vec<f64> = records
            .iter()
            .filter(|r| r.variant == variant && r.kv == kv && r.phase == phase && r.seq_len == n)
            .map(|r| r.ms)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut summary = vec![];
    if let (Some(naive), Some(flash)) = (
        find("naive", "paged", Phase::Prefill, 4096),
        find("flash", "paged", Phase::Prefill, 4096),
    ) {
        summary.push(format!(
            "prefill at 4096: flash {:.1}x faster than naive (mean over layouts and head dims)",
            naive / flash
        ));
    }
    if let (Some(one), Some(split)) = (
        find("flash", "paged", Phase::Decode, 8192),
        find("flash-split", "paged", Phase::Decode, 8192),
    ) {
        summary.push(format!(
            "decode at 8192: split-K {:.2}x faster than single-pass",
            one / split
        ));
    }
    let decode_lens: Vec<usize> = cfg.seq_lens.clone();
    let (mut p, mut c) = (0.0, 0.0);
    for &n in &decode_lens {
        if let (Some(a), Some(b)) = (
            find("flash-split", "paged", Phase::Decode, n),
            find("flash-split", "contiguous", Phase::Decode, n),
        ) {
            p += a;
            c += b;
        }
    }
    if c > 0.0 {
        summary.push(format!(
            "decode, split-K, all lengths: paged takes {:.2}x contiguous's time ({:+.1}%)",
            p / c,
            (p / c - 1.0) * 100.0
        ));
    }
    summary.push(format!(
        "KV pages of 16 for 64 sequences of 1..8192 tokens: {:.2}% of the rows in use unfilled",
        bench::page_waste(16, 64, 8192, 1) * 100.0
    ));
    for line in &summary {
        eprintln!("{line}");
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    }
    if let Some(path) = svg {
        std::fs::write(
            &path,
            tinfer::tools::svg::svg(&records, &format!("tinfer bench attention on {}", gpu.describe())),
        )
        .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

pub fn bench_kernels(a: KernelBenchArgs) -> Result<()> {
    if a.repeats == 0 || !(1..=256).contains(&a.tokens) || a.max_err.is_nan() || a.max_err < 0.0 {
        bail!("--repeats must be at least 1, --tokens 1..=256 and --max-err at least 0");
    }
    let cfg = shapes("--shapes", &a.shapes)?;
    let gpu = tinfer::gpu::Gpu::new(&tinfer::gpu::GpuRequest {
        adapter: a.adapter,
        allow_cpu_adapter: true,
        ..Default::default()
    })?;
    // the ceiling a GEMV's weight stream is held to: the device's memory, or the host's for a
    // CPU adapter (lavapipe's "device memory" is the host's)
    let (bandwidth, whose) = if gpu.is_cpu_adapter() {
        (
            tinfer::tools::bench_kernels::host_bandwidth(),
            "host memory (copy, all threads)",
        )
    } else {
        (
            tinfer::tools::bench_kernels::device_bandwidth(&gpu)?,
            "device memory (buffer copy)",
        )
    };
    eprintln!(
        "adapter: {} | shapes: {} | {whose} bandwidth: {bandwidth:.1} GB/s",
        gpu.describe(),
        a.shapes
    );
    let print = |line: String| {
        if a.json {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    print(tinfer::tools::bench_kernels::header());
    let records = tinfer::tools::bench_kernels::bench_kernels(
        &gpu,
        &cfg,
        a.tokens,
        a.repeats,
        &a.only,
        bandwidth,
        a.max_err,
        |r| print(tinfer::tools::bench_kernels::row(r)),
    )?;
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"adapter": gpu.describe(), "host_bandwidth_gbps": bandwidth, "records": records})
            )?
        );
    }
    Ok(())
}

pub fn bench_model(a: ModelBenchArgs) -> Result<()> {
    let seqs = a.profile.unwrap_or(1).max(1); // the sequences the batch profile holds
    if a.repeats == 0 || a.pp.iter().chain(&a.tg).any(|&n| n == 0) {
        usage!("--repeats and every --pp / --tg length must be at least 1");
    }
    let (mut model, source) = match &a.synthetic {
        Some(name) => {
            let mut cfg = shapes("--synthetic", name)?;
            if let Some(n) = a.layers {
                if n == 0 || n > cfg.n_layers {
                    usage!(
                        "--layers must be between 1 and the {} layers of {name}, got {n}",
                        cfg.n_layers
                    );
                }
                cfg.n_layers = n;
            }
            cfg.seq_len = super::load::context(cfg.seq_len, a.ctx_size, 0)?;
            let weights = tinfer::tools::synthetic::random_weights(&cfg, 1);
            let opts = a.model.options(seqs);
            let m = Model::with_options(cfg, weights, a.model.device, a.model.adapter.as_deref(), &opts)?;
            let layers = a.layers.map_or(String::new(), |n| format!(", {n} of its layers"));
            (m, format!("synthetic {name}{layers}"))
        }
        None => {
            let (m, _) = load_seqs(&a.model, None, seqs)?;
            (m, a.model.path.resolve()?.display().to_string())
        }
    };
    let longest = a.pp.iter().chain(&a.tg).max().copied().unwrap_or(0);
    if longest > model.cfg.seq_len {
        bail!(
            "a length of {longest} exceeds the model's context of {}",
            model.cfg.seq_len
        );
    }
    let device = model.device_name();
    let kv = model
        .kv_dtype_name()
        .map_or(String::new(), |k| format!(" | {k} KV cache"));
    // (the CPU path has no submits: one step at a time)
    let ahead = if model.is_gpu() {
        a.model.decode_ahead(&model)
    } else {
        1
    };
    let kernels = model.kernel_names();
    let shapes = kernels
        .as_ref()
        .map_or(String::new(), |k| format!(" | {k} | decode {ahead} step(s) a submit"));
    eprintln!(
        "model: {source} | device: {device} | context {}{kv}{shapes}",
        model.cfg.seq_len
    );
    let (pp, tg) = tinfer::tools::bench_model::bench_model(&mut model, &a.pp, &a.tg, a.repeats, ahead)?;
    if a.profile.is_some() && !model.is_gpu() {
        eprintln!("note: --profile times GPU kernels; the CPU path has none, so there is no profile");
    }
    if let Some(rows) = a.profile.filter(|_| model.is_gpu()) {
        if !(1..=256).contains(&rows) {
            bail!("--profile ROWS must be 1..=256 (one step)");
        }
        if a.profile_at < 1 || a.profile_at + rows > model.cfg.seq_len {
            bail!(
                "--profile-at {} with {rows} rows does not fit the context of {}",
                a.profile_at,
                model.cfg.seq_len
            );
        }
        // `rows` sequences holding the context of the profiled steps: one run, the others its
        // forks (sharing its full pages: run once, not `rows` times)
        let context = vec![1; a.profile_at];
        let first = model.new_seq()?;
        model.forward(&[tinfer::model::Entry {
            seq: first,
            tokens: &context,
            want: tinfer::model::Want::Last,
        }])?;
        let mut seqs = vec![first];
        for _ in 1..rows {
            seqs.push(model.fork(first)?);
        }
        let plans = [
            (&seqs[..1], 1, "1 row"),
            (&seqs[..1], rows, "rows of one sequence"),
            (&seqs[..], 1, "sequences, a row each"),
        ];
        for (i, (on, t, what)) in plans.into_iter().enumerate() {
            if i > 0 && rows == 1 {
                break;
            }
            if let Some(p) = model.profile(on, t, a.repeats.max(3))? {
                let total: f64 = p.kernels.iter().map(|r| r.2).sum();
                let n = on.len() * t;
                let what = if i == 0 {
                    what.to_string()
                } else {
                    format!("{n} {what}")
                };
                eprintln!(
                    "\nprofile of one step of {what} after {} cached tokens: {total:.2} ms in kernels, {:.2} ms as one submit",
                    a.profile_at, p.step_ms
                );
                eprintln!("{:>9} {:>6} {:>10}  kernel", "ms", "%", "dispatches");
                for (name, n, ms) in &p.kernels {
                    eprintln!("{ms:>9.3} {:>6.1} {n:>10}  {name}", ms / total * 100.0);
                }
            }
        }
        for seq in seqs {
            model.release(seq);
        }
    }
    let dtype = model.dtype_name();
    let bytes = model.weight_bytes();
    let dispatches = model.dispatches_per_token();
    if a.json {
        let mut j = json!({
            "device": if device.starts_with("gpu") { "gpu" } else { "cpu" },
            "adapter": device.strip_prefix("gpu: ").unwrap_or(&device),
            "dtype": dtype,
            "kv_dtype": model.kv_dtype_name(),
            "layers": model.cfg.n_layers,
            "context": model.cfg.seq_len,
            "dispatches_per_token": dispatches,
            "decode_ahead": model.is_gpu().then_some(ahead),
            "kernels": kernels,
            "bytes_per_token": bytes,
        });
        for (name, r) in pp.iter().chain(&tg) {
            j[name] = json!(r.median);
            j[format!("{name}_min")] = json!(r.min);
            j[format!("{name}_max")] = json!(r.max);
        }
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("{:<8} {:>12} {:>12} {:>12}", "test", "tok/s", "min", "max");
        for (name, r) in pp.iter().chain(&tg) {
            println!("{name:<8} {:>12.2} {:>12.2} {:>12.2}", r.median, r.min, r.max);
        }
        println!(
            "weights read per decoded token: {:.1} MB ({dtype}); dispatches per token: {}",
            bytes as f64 / 1e6,
            dispatches.map_or("- (cpu)".to_string(), |d| d.to_string())
        );
    }
    Ok(())
}

/// The config of a known size (tinfer::tools::synthetic::SYNTHETIC_NAMES) or of a config.json
/// file, for `flag` (--shapes, --synthetic).
fn shapes(flag: &str, name: &str) -> Result<tinfer::config::Config> {
    let text = match tinfer::tools::synthetic::synthetic_config(name) {
        Some(t) => t.to_string(),
        None => loader::read_text(std::path::Path::new(name), 1 << 20).with_context(|| {
            format!(
                "{flag} {name}: not one of {} nor a readable config.json",
                tinfer::tools::synthetic::SYNTHETIC_NAMES.join(", ")
            )
        })?,
    };
    tinfer::config::HfConfig::from_json(&text)?.resolve()
}
