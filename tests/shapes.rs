//! Real model shapes on the GPU path: two layers of each (random weights, the real widths, heads
//! and vocabularies) load under WebGPU's default limits at the default options (--dtype auto,
//! the default context), match the CPU reference, and take the device memory their parts
//! should: weights, KV cache and scratch, with nothing hidden.

mod common;

use tinfer::config::{Config, HfConfig, DEFAULT_CONTEXT};
use tinfer::model::{Batch, Device, Dtype, Entry, Gemm, Gemv, HeadSplit, KvDtype, Limits, Model, Options, Want};
use tinfer::tools::synthetic::{random_weights, synthetic_config};

/// f16 weights and KV cache against the CPU's f32: logits of the random-weight shapes within
/// this much (measured up to 1.9e-3; the test prints it).
const SHAPE_GPU_VS_CPU: f64 = 5e-3;

/// The shapes (tinfer::tools::synthetic::synthetic_config), smallest first.
const SHAPES: [&str; 7] = [
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen3-0.6b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "mistral-7b",
    "llama-3-8b",
];

/// The layers of the real model.
fn synthetic_layers(name: &str) -> usize {
    HfConfig::from_json(synthetic_config(name).unwrap())
        .unwrap()
        .resolve()
        .unwrap()
        .n_layers
}

fn shape(name: &str, layers: usize) -> Config {
    let mut cfg = HfConfig::from_json(synthetic_config(name).unwrap())
        .unwrap()
        .resolve()
        .unwrap();
    cfg.n_layers = layers;
    cfg.seq_len = cfg.seq_len.min(DEFAULT_CONTEXT);
    cfg
}

/// The options every command starts from on a hardware GPU (the CLI's defaults: --dtype auto,
/// --kv-dtype auto, which is f16 there; lavapipe's auto would be f32), under WebGPU's limits.
fn defaults() -> Options {
    Options {
        dtype: Dtype::Auto,
        kv_dtype: KvDtype::F16,
        limits: Limits::Webgpu,
        ..Options::default()
    }
}

/// Bytes the parts need at least: f16 matrices (the LM head once more when untied), f32
/// vectors, and an f16 K and V row per layer and position of the context.
fn ideal(cfg: &Config) -> (u64, u64) {
    let params = cfg.n_params() as u64;
    let vectors = (cfg.n_layers * (2 * cfg.dim) + cfg.dim) as u64;
    let weights = (params - vectors) * 2 + vectors * 4;
    let kv = (cfg.n_layers * 2 * cfg.seq_len * cfg.kv_dim() * 2) as u64;
    (weights, kv)
}

fn last_logits(m: &mut Model, seq: tinfer::model::SeqId, tokens: &[u32]) -> Vec<f32> {
    let batch: &Batch = &[Entry {
        seq,
        tokens,
        want: Want::Last,
    }];
    m.forward(batch).unwrap().remove(0)
}

/// Every shape, two layers: loads under WebGPU's limits at default options, its device memory is
/// within 10% of weights + KV cache + scratch (and scratch is small), and a prompt and three
/// decode steps give the CPU's logits within SHAPE_GPU_VS_CPU and the CPU's argmax (or a token
/// whose CPU logit is within that of the max).
#[test]
fn real_shapes_load_under_webgpu_limits_and_match_the_cpu() {
    let Some(req) = common::gpu_request() else {
        return;
    };
    let only = std::env::var("TINFER_SHAPES").ok();
    for name in SHAPES {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|s| s == name)) {
            continue;
        }
        let cfg = shape(name, 2);
        let gpu = Model::with_options(
            cfg.clone(),
            random_weights(&cfg, 7),
            Device::Gpu,
            req.adapter.as_deref(),
            &defaults(),
        );
        let mut gpu = gpu.unwrap_or_else(|e| panic!("{name}: does not load under WebGPU's limits: {e:#}"));
        let mem = gpu.device_memory().unwrap();
        let (weights, kv) = ideal(&cfg);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        eprintln!(
            "{name}: device {:.1} MiB = weights {:.1} (ideal {:.1}) + KV {:.1} (ideal {:.1}, {} tokens) + scratch {:.1}",
            mib(mem.total()),
            mib(mem.weights),
            mib(weights),
            mib(mem.kv_cache),
            mib(kv),
            cfg.seq_len,
            mib(mem.scratch)
        );
        assert!(
            mem.weights as f64 <= weights as f64 * 1.02,
            "{name}: weights take {:.1} MiB, over 2% above the {:.1} MiB of their values",
            mib(mem.weights),
            mib(weights)
        );
        assert!(
            mem.kv_cache as f64 <= kv as f64 * 1.02,
            "{name}: the KV cache takes {:.1} MiB for {:.1} MiB of rows",
            mib(mem.kv_cache),
            mib(kv)
        );
        // The whole model at default options: the layers not built take what the built ones
        // took per layer (padding included); scratch does not grow with layers.
        let full = shape(name, synthetic_layers(name));
        let (full_weights, full_kv) = ideal(&full);
        let scale = |got: u64, ideal2: u64, ideal_full: u64| got as f64 / ideal2 as f64 * ideal_full as f64;
        let full_total =
            scale(mem.weights, weights, full_weights) + scale(mem.kv_cache, kv, full_kv) + mem.scratch as f64;
        eprintln!(
            "{name}: all {} layers at default options: {:.2} GiB on the device for {:.2} GiB of weights and KV cache",
            full.n_layers,
            full_total / (1u64 << 30) as f64,
            (full_weights + full_kv) as f64 / (1u64 << 30) as f64
        );
        assert!(
            full_total <= (full_weights + full_kv) as f64 * 1.10,
            "{name}: {:.1} MiB on the device, over 10% above weights + KV cache ({:.1} MiB): scratch {:.1} MiB",
            mib(full_total as u64),
            mib(full_weights + full_kv),
            mib(mem.scratch)
        );
        if name == "llama-3.2-1b" {
            let gib = full_total / (1u64 << 30) as f64;
            assert!(
                gib < 2.5,
                "{name}: the defaults ask for {gib:.2} GiB of device memory, over 2.5 GiB"
            );
        }

        let prompt: Vec<u32> = (0..9).map(|i| (i * 7919 + 13) as u32 % cfg.vocab_size as u32).collect();
        check_vs_cpu(name, &cfg, &mut gpu, &prompt);
    }
}

/// A prompt and three decode steps on `gpu` give the CPU's logits within SHAPE_GPU_VS_CPU and
/// the CPU's argmax (or a token whose CPU logit is within that of the max).
fn check_vs_cpu(name: &str, cfg: &Config, gpu: &mut Model, prompt: &[u32]) {
    let mut cpu = Model::new(cfg.clone(), random_weights(cfg, 7), Device::Cpu, None).unwrap();
    let (sg, sc) = (gpu.new_seq().unwrap(), cpu.new_seq().unwrap());
    let mut tokens = prompt.to_vec();
    let mut worst = 0f64;
    for step in 0..4 {
        let g = last_logits(gpu, sg, &tokens);
        let c = last_logits(&mut cpu, sc, &tokens);
        let at = format!("{name} step {step}");
        common::assert_close(
            &at,
            &g,
            &c,
            common::Tol {
                abs: SHAPE_GPU_VS_CPU,
                rel: 0.0,
            },
        );
        worst = worst.max(common::max_abs_diff(&g, &c));
        let (ga, ca) = (tinfer::cpu::ops::argmax(&g), tinfer::cpu::ops::argmax(&c));
        assert!(
            ga == ca || (c[ca] - c[ga]) as f64 <= SHAPE_GPU_VS_CPU,
            "{at}: GPU argmax {ga} (CPU logit {}) against the CPU's {ca} ({})",
            c[ga],
            c[ca]
        );
        tokens = vec![ca as u32];
    }
    eprintln!(
        "{name}: GPU vs CPU logits within {worst:.2e} over a prompt of {} and 3 decode steps",
        prompt.len()
    );
    gpu.release(sg);
}

/// The kernels a hardware GPU gets by default, forced on lavapipe (which defaults to its own):
/// the split GEMV, the tiled GEMM (a 70-token prompt: two token tiles) and the decode attention
/// with head_dim across lanes, on a head_dim-128 shape (Qwen3-0.6B) and a head_dim-64 one
/// (Qwen2.5-0.5B), two layers, f16 weights and KV cache under WebGPU's limits, against the CPU.
#[test]
fn gpu_kernels_on_real_shapes_match_the_cpu() {
    let Some(req) = common::gpu_request() else {
        return;
    };
    for name in ["qwen3-0.6b", "qwen2.5-0.5b"] {
        let cfg = shape(name, 2);
        let opts = Options {
            gemv: Gemv::Split,
            gemm: Gemm::Tiled,
            head_split: HeadSplit::Lanes,
            ..defaults()
        };
        let mut gpu = Model::with_options(
            cfg.clone(),
            random_weights(&cfg, 7),
            Device::Gpu,
            req.adapter.as_deref(),
            &opts,
        )
        .unwrap();
        let prompt: Vec<u32> = (0..70)
            .map(|i| (i * 7919 + 13) as u32 % cfg.vocab_size as u32)
            .collect();
        check_vs_cpu(&format!("{name} (GPU kernels)"), &cfg, &mut gpu, &prompt);
    }
}
