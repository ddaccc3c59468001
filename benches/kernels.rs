//! `cargo bench --bench kernels`: the matrix kernels and RMSNorm at SmolLM2-135M's shapes on the
//! first adapter (a CPU one such as lavapipe included), each variant checked against its CPU
//! twin once, then timed. The same as `tinfer bench kernels`; results go to benches/RESULTS.md.

fn main() -> anyhow::Result<()> {
    let text = tinfer::bench::synthetic_config("smollm2-135m").expect("known shapes");
    let cfg = tinfer::config::HfConfig::from_json(text)?.resolve()?;
    let gpu = match tinfer::gpu::Gpu::new(&tinfer::gpu::GpuRequest {
        adapter: std::env::var("TINFER_TEST_ADAPTER").ok(),
        allow_cpu_adapter: true,
    }) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIPPED: no GPU adapter ({e:#})");
            return Ok(());
        }
    };
    let bandwidth = tinfer::kernel_bench::host_bandwidth();
    println!(
        "adapter: {} | host memory bandwidth: {bandwidth:.1} GB/s",
        gpu.describe()
    );
    println!(
        "{:<18} {:<14} {:<12} {:>6} {:>6} {:>4} {:>9} {:>8} {:>8} {:>6} {:>9}",
        "kernel", "variant", "matrix", "n", "d", "T", "ms", "GB/s", "GFLOP/s", "%bw", "max err"
    );
    tinfer::kernel_bench::bench_kernels(&gpu, &cfg, 64, 5, bandwidth, |r| {
        println!(
            "{:<18} {:<14} {:<12} {:>6} {:>6} {:>4} {:>9.3} {:>8.2} {:>8.2} {:>6.1} {:>9.2e}",
            r.kernel,
            r.variant,
            r.matrix,
            r.n,
            r.d,
            r.tokens,
            r.ms,
            r.gbps,
            r.gflops,
            r.of_bandwidth * 100.0,
            r.max_abs_err
        );
        assert!(
            r.max_abs_err < 1e-3,
            "{} {} {}: max error {}",
            r.kernel,
            r.variant,
            r.matrix,
            r.max_abs_err
        );
    })?;
    Ok(())
}
