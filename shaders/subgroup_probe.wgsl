// subgroup_probe.wgsl: the subgroup widths the device really runs a compute shader at, for
// adapters that report a range that includes widths under 8 (Metal reports 4..64; Apple GPUs
// run 32). The subgroup kernels need 8 lanes or more; src/gpu/context.rs runs this once at
// startup and lets them run only if no invocation saw fewer.
// CPU twin: none (what it measures is the device).
// Dispatch: (16, 1, 1), 64 invocations a workgroup (the matrix kernels' size).
// Bindings:
//   0 seen  storage rw  atomic<u32>  (2,): the smallest and the largest subgroup_size seen
//           (the host starts them at 0xFFFFFFFF and 0)
// Overrides: none. Stand-alone: no prelude (it binds no Step or Shape).

@group(0) @binding(0) var<storage, read_write> seen: array<atomic<u32>, 2>;

@compute @workgroup_size(64)
fn main(@builtin(subgroup_size) size: u32) {
    atomicMin(&seen[0], size);
    atomicMax(&seen[1], size);
}
