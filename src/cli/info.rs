//! `tinfer info`: what a model is and, with a GPU, what the adapter offers.

use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::args::{ModelArgs, RunArgs};
use tinfer::gguf::Gguf;
use tinfer::loader;
use tinfer::model::Device;
use tinfer::tokenizer::Tokenizer;

/// What the model is; with `--device gpu` also what it takes on the device at these options
/// (the model is built there: weights, KV cache for -c tokens, scratch).
pub fn info(args: &ModelArgs, run: &RunArgs, as_json: bool) -> Result<()> {
    run.apply_threads()?;
    let path = args.path.resolve()?;
    let mut loaded = match loader::load(&path) {
        Ok(l) => l,
        Err(e) => return unrunnable_info(&path, e, as_json),
    };
    let webgpu = args.limits == tinfer::model::Limits::Webgpu;
    let gpu = match args.device {
        Device::Cpu => None,
        Device::Gpu => Some(gpu_info(args.adapter.as_deref(), true, webgpu)?),
        Device::Auto => gpu_info(args.adapter.as_deref(), args.adapter.is_some(), webgpu).ok(),
    };
    let weights = gpu_weights(args.dtype, &loaded, gpu.as_ref());
    // the context a run would use (-c checked here whatever the device)
    let own = loaded.cfg.seq_len;
    let ctx = super::load::context(own, run.ctx_size, 0)?;
    let device_memory = match args.device {
        Device::Gpu => {
            // the same file's weights onto the device at the run's context
            loaded.cfg.seq_len = ctx;
            let model = super::load::build(args, &mut loaded, 1)?;
            loaded.cfg.seq_len = own;
            let m = model.device_memory().expect("--device gpu builds a GPU model");
            let pool = model.kv_usage().expect("a GPU model has a KV pool");
            Some(json!({
                "context": ctx,
                "kv_cache_tokens": pool.pages * pool.page,
                "kv_dtype": model.kv_dtype_name(),
                "kernels": model.kernel_names(),
                "decode_ahead": args.decode_ahead(&model),
                "weights_bytes": m.weights,
                "kv_cache_bytes": m.kv_cache,
                "scratch_bytes": m.scratch,
                "total_bytes": m.total(),
            }))
        }
        _ => None,
    };
    let cfg = &loaded.cfg;
    let n_params = cfg.n_params();
    let tok = loaded.tokenizer.as_ref();
    let rope_scaling = match &cfg.rope_scaling {
        tinfer::config::RopeScaling::None => "none".to_string(),
        tinfer::config::RopeScaling::FreqFactors(f) => {
            format!("rope_freqs ({} divisors, {:.3}..{:.3})", f.len(), f[0], f[f.len() - 1])
        }
        s => format!("{s:?}"),
    };
    let j = json!({
        "source": loaded.source,
        "model_type": cfg.model_type,
        "architectures": loaded.hf_config.get("architectures"),
        "n_params": n_params,
        "dim": cfg.dim,
        "hidden_dim": cfg.hidden_dim,
        "n_layers": cfg.n_layers,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "context": cfg.seq_len,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": rope_scaling,
        "qk_norm": cfg.qk_norm,
        "rms_norm_eps": cfg.norm_eps,
        "tied_embeddings": cfg.tied_embeddings,
        "qkv_bias": cfg.qkv_bias,
        "moe": cfg.moe.as_ref().map(|m| json!({
            "n_experts": m.n_experts,
            "top_k": m.top_k,
            "expert_hidden_dim": m.hidden,
            "shared_expert_hidden_dim": m.shared_hidden,
            "norm_topk_prob": m.norm_topk_prob,
            "moe_layers": m.layers.iter().enumerate().filter(|l| *l.1).map(|l| l.0).collect::<Vec<_>>(),
        })),
        "active_params_per_token": cfg.weight_bytes_per_token(1),
        "stored_dtypes": loaded.dtypes,
        "weights_bytes_f32": n_params * 4,
        "kv_cache_bytes_per_token": 2 * cfg.n_layers * cfg.kv_dim() * 4,
        "eos_token_ids": cfg.eos_token_ids,
        "tokenizer": tok.map(tokenizer_json),
        "tokenizer_error": loaded.tokenizer_error,
        "warnings": loaded.warnings,
        "gpu": gpu,
        "gpu_weights": weights,
        "device_memory": device_memory,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    println!("model        {}", loaded.source);
    println!(
        "architecture {} ({} layers, dim {}, ffn {})",
        cfg.model_type, cfg.n_layers, cfg.dim, cfg.hidden_dim
    );
    println!(
        "attention    {} query heads, {} KV heads (GQA x{}), head_dim {}{}, rope_theta {}, RoPE scaling {rope_scaling}",
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.kv_mul,
        cfg.head_dim,
        if cfg.qk_norm { " (q/k norm)" } else { "" },
        cfg.rope_theta
    );
    println!(
        "parameters   {:.1} M{}",
        n_params as f64 / 1e6,
        if cfg.tied_embeddings {
            " (LM head tied to the embedding)"
        } else {
            ""
        }
    );
    if let Some(m) = &cfg.moe {
        let n_moe = m.layers.iter().filter(|&&x| x).count();
        let shared = if m.shared_hidden > 0 {
            format!(", a shared expert of {} (gated)", m.shared_hidden)
        } else {
            String::new()
        };
        println!(
            "experts      {} of {} a token, ffn {} each{shared}; {}renormalised; MoE in {n_moe} of {} layers; {:.1} M parameters read a token",
            m.top_k,
            m.n_experts,
            m.hidden,
            if m.norm_topk_prob { "" } else { "not " },
            cfg.n_layers,
            cfg.weight_bytes_per_token(1) as f64 / 1e6
        );
    }
    println!("stored as    {}", loaded.dtypes);
    println!(
        "memory       {:.1} MiB of f32 weights; KV cache {:.1} KiB per token",
        mib(n_params * 4),
        (2 * cfg.n_layers * cfg.kv_dim() * 4) as f64 / 1024.0
    );
    println!(
        "context      {} tokens{}, vocab {}, eos ids {:?}",
        cfg.seq_len,
        match run.ctx_size {
            Some(n) => format!(" (runs use {n}: -c)"),
            None if cfg.seq_len > ctx => {
                format!(" (runs use {ctx} unless -c says otherwise)")
            }
            None => String::new(),
        },
        cfg.vocab_size,
        cfg.eos_token_ids
    );
    print_tokenizer(tok, loaded.tokenizer_error.as_deref(), &loaded.warnings);
    if let Some(w) = &weights {
        println!(
            "gpu weights  --dtype {}: matrices {:.1} MiB on the device for {:.1} MiB stored ({:+.1}%){}",
            w["dtype"].as_str().unwrap_or(""),
            w["device_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
            w["stored_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0),
            w["overhead_percent"].as_f64().unwrap_or(0.0),
            if gpu.is_none() {
                " (for an adapter with subgroups)"
            } else {
                ""
            }
        );
        for c in w["matrices"].as_array().into_iter().flatten() {
            println!(
                "             {:>3} × {} -> {} ({}), {:.1} MiB",
                c["count"],
                c["stored"].as_str().unwrap_or(""),
                c["device"].as_str().unwrap_or(""),
                c["how"].as_str().unwrap_or(""),
                c["bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
            );
        }
    }
    if let Some(m) = &device_memory {
        let mib = |k: &str| m[k].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
        println!(
            "device mem   {:.1} MiB: weights {:.1} (with vectors, texture padding), KV cache {:.1} ({} tokens, {}; context {}), scratch {:.1}",
            mib("total_bytes"),
            mib("weights_bytes"),
            mib("kv_cache_bytes"),
            m["kv_cache_tokens"],
            m["kv_dtype"].as_str().unwrap_or(""),
            m["context"],
            mib("scratch_bytes")
        );
        println!(
            "gpu kernels  {}; greedy decode {} step(s) a submit",
            m["kernels"].as_str().unwrap_or(""),
            m["decode_ahead"]
        );
    }
    if let Some(g) = gpu {
        let name = |k: &str| g[k].as_str().unwrap_or("").to_string();
        println!(
            "gpu          {} ({}, {})",
            name("name"),
            name("device_type"),
            name("backend")
        );
        println!("             features: {}", name("features"));
        let l = &g["limits"];
        let n = |k: &str| l[k].as_u64().unwrap_or(0);
        println!(
            "             max storage binding {} MiB, max buffer {} MiB, workgroup memory {} KiB, {} invocations per workgroup",
            n("max_storage_buffer_binding_size") >> 20,
            n("max_buffer_size") >> 20,
            n("max_compute_workgroup_storage_size") >> 10,
            n("max_compute_invocations_per_workgroup")
        );
        println!("             adapters: {}", g["all_adapters"]);
    }
    Ok(())
}

fn tokenizer_json(t: &Tokenizer) -> serde_json::Value {
    json!({
        "vocab_size": t.vocab_size(),
        "bos_token": t.bos_token,
        "eos_token": t.eos_token,
        "chat_template": t.chat_template.is_some(),
    })
}

fn print_tokenizer(tok: Option<&Tokenizer>, error: Option<&str>, warnings: &[String]) {
    match tok {
        Some(t) => println!(
            "tokenizer    {} tokens, bos {:?}, eos {:?}, chat template: {}",
            t.vocab_size(),
            t.bos_token.as_deref().unwrap_or("-"),
            t.eos_token.as_deref().unwrap_or("-"),
            if t.chat_template.is_some() { "yes" } else { "no" }
        ),
        None => println!("tokenizer    none ({})", error.unwrap_or("")),
    }
    for w in warnings {
        println!("warning      {w}");
    }
}

/// A GGUF file of an architecture tinfer does not run (`load`'s error): what its metadata says,
/// and its tokenizer, which `tokenize` can still use. Any other load error is returned as it is.
fn unrunnable_info(path: &Path, load_error: anyhow::Error, as_json: bool) -> Result<()> {
    let Some(gguf) = path.is_file().then(|| Gguf::open(path).ok()).flatten() else {
        return Err(load_error);
    };
    let arch = match gguf.architecture() {
        Ok(a) if gguf.arch().is_err() => a.to_string(),
        _ => return Err(load_error),
    };
    let (tok, tok_error) = match loader::load_tokenizer(path) {
        Ok(t) => (Some(t), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let warnings = gguf.vocab_facts().warnings;
    let meta = |k: &str| gguf.get(k).and_then(|v| v.as_str()).map(str::to_string);
    if as_json {
        let j = json!({
            "source": path.display().to_string(),
            "architecture": arch,
            "name": meta("general.name"),
            "license": meta("general.license"),
            "runnable": false,
            "error": format!("{load_error:#}"),
            "tokenizer": tok.as_ref().map(tokenizer_json),
            "tokenizer_error": tok_error,
            "warnings": warnings,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("model        {}", path.display());
    println!("architecture {arch}: tinfer cannot run it (`tokenize` works)");
    println!("error        {load_error:#}");
    for (label, key) in [("name         ", "general.name"), ("license      ", "general.license")] {
        if let Some(v) = meta(key) {
            println!("{label}{v}");
        }
    }
    print_tokenizer(tok.as_ref(), tok_error.as_deref(), &warnings);
    Ok(())
}

/// The adapter `--device gpu` would use: name, backend, limits and features.
pub fn gpu_info(adapter: Option<&str>, allow_cpu_adapter: bool, webgpu_limits: bool) -> Result<serde_json::Value> {
    let req = tinfer::gpu::GpuRequest {
        adapter: adapter.map(str::to_string),
        allow_cpu_adapter,
        webgpu_limits,
    };
    let gpu = tinfer::gpu::Gpu::new(&req)?;
    let l = &gpu.limits;
    let all: Vec<String> = tinfer::gpu::list_adapters()
        .iter()
        .map(tinfer::gpu::context::describe)
        .collect();
    Ok(json!({
        "name": gpu.info.name,
        "device_type": format!("{:?}", gpu.info.device_type),
        "backend": format!("{:?}", gpu.info.backend),
        "driver": format!("{} {}", gpu.info.driver, gpu.info.driver_info),
        "features": format!("{:?}", gpu.adapter.features()),
        "shader_f16": gpu.adapter.features().contains(wgpu::Features::SHADER_F16),
        "subgroups": gpu.has_subgroups(8),
        "subgroup_lanes": gpu.subgroup_lanes,
        "limits": {
            "max_texture_dimension_2d": l.max_texture_dimension_2d,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_buffer_size": l.max_buffer_size,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
        },
        "all_adapters": all,
    }))
}

/// How the GPU would hold the matrices under `dtype` (gpu::weights::device_plan): per kind of
/// conversion the matrices, their device bytes and how the values get there. Without an adapter
/// it assumes one with subgroups.
fn gpu_weights(
    dtype: tinfer::model::Dtype,
    loaded: &loader::Loaded,
    gpu: Option<&serde_json::Value>,
) -> Option<serde_json::Value> {
    use tinfer::gpu::params::device_plan;
    use tinfer::gpu::weights::WeightPlan;
    use tinfer::weights::Format;
    let w = loaded.weights.as_ref()?;
    let flag = |k: &str| gpu.is_none_or(|g| g[k].as_bool().unwrap_or(false));
    // a hardware GPU (or none named): quantized layers of equal height
    let cpu_adapter = gpu.is_some_and(|g| g["device_type"].as_str() == Some("Cpu"));
    let plan = WeightPlan::new(dtype, flag("subgroups")).exact_layers(!cpu_adapter);
    let max_dim = gpu
        .and_then(|g| g["limits"]["max_texture_dimension_2d"].as_u64())
        .unwrap_or(8192) as usize;
    let matrices = device_plan(&loaded.cfg, w, plan, max_dim);
    let mut kinds: Vec<(String, Format, &str, usize, usize)> = vec![];
    for m in &matrices {
        let mut stored: Vec<String> = m.stored.iter().map(Format::to_string).collect();
        if m.name.contains("experts.") {
            // an MoE block's stacked experts: their formats once each
            stored.dedup();
            stored.insert(
                0,
                format!(
                    "{} experts:",
                    m.stored.len() / if m.name.ends_with("w_down") { 1 } else { 2 }
                ),
            );
        }
        let stored = stored.join("+").replacen(":+", " ", 1);
        let how = m.how();
        match kinds.iter_mut().find(|k| k.0 == stored && k.1 == m.format) {
            Some(k) => {
                k.3 += 1;
                k.4 += m.bytes;
            }
            None => kinds.push((stored, m.format, how, 1, m.bytes)),
        }
    }
    let device: usize = matrices.iter().map(|m| m.bytes).sum();
    let stored: usize = matrices.iter().map(|m| m.stored_bytes).sum();
    Some(json!({
        "dtype": format!("{dtype:?}").to_lowercase(),
        "device_bytes": device,
        "stored_bytes": stored,
        "overhead_percent": (device as f64 / stored as f64 - 1.0) * 100.0,
        "matrices": kinds.iter().map(|(s, f, how, n, b)| json!({
            "stored": s, "device": f.to_string(), "how": how, "count": n, "bytes": b,
        })).collect::<Vec<_>>(),
    }))
}
