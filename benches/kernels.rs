//! `cargo bench --bench kernels`: the matrix kernels and RMSNorm at SmolLM2-135M's shapes on the
//! first adapter (a CPU one such as lavapipe included), each variant checked against its CPU
//! twin once, then timed. The same as `tinfer bench kernels`; results go to benches/RESULTS.md.

fn main() -> anyhow::Result<()> {
    let text = tinfer::tools::synthetic::synthetic_config("smollm2-135m").expect("known shapes");
    let cfg = tinfer::config::HfConfig::from_json(text)?.resolve()?;
    let gpu = match tinfer::gpu::Gpu::new(&tinfer::gpu::GpuRequest {
        adapter: std::env::var("TINFER_TEST_ADAPTER").ok(),
        allow_cpu_adapter: true,
        ..Default::default()
    }) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("SKIPPED: no GPU adapter ({e:#})");
            return Ok(());
        }
    };
    let bandwidth = tinfer::tools::bench_kernels::host_bandwidth();
    println!(
        "adapter: {} | host memory bandwidth: {bandwidth:.1} GB/s",
        gpu.describe()
    );
    println!("{}", tinfer::tools::bench_kernels::header());
    // each kernel is validated against its CPU twin before it is timed (an error if it is off)
    let tol = tinfer::tools::bench_kernels::VALIDATE_TOL;
    tinfer::tools::bench_kernels::bench_kernels(&gpu, &cfg, 64, 5, &[], bandwidth, tol, |r| {
        println!("{}", tinfer::tools::bench_kernels::row(r))
    })?;
    Ok(())
}
