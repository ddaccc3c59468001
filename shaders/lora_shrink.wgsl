// lora_shrink.wgsl: LoRA's first product (Hu et al. 2021) for every row of a step, each row with
// its own sequence's adapters (Punica's / vLLM's "shrink", the low-rank half of S-LoRA's batched
// LoRA):
//   u[t, j] = A[j, :] . x'[t, :]    for the columns j of the adapters row t's sequence uses
//   u[t, j] = 0                     for the columns of adapters it does not (factor 0)
// where x' = x, or with NORM the RMS-normalised x' = x / sqrt(mean(x^2) + eps) * norm (the RMSNorm
// before the product it adapts, as matvec's NORM). A site's A stacks the A matrices of every
// adapter and every stacked module (q;k;v, gate;up): adapter a owns columns cols[a]..cols[a+1].
// CPU twin: lora::LoraPair::apply's x·Aᵀ (after cpu::ops::rmsnorm).
// Dispatch: (ceil(R / 64), T, 1): workgroup (g, t), 64 invocations; invocation i takes column
// 64 g + i of row t. With NORM the 64 first sum x[t]'s squares (strided, tree reduction).
// Bindings:
//   0 step    storage Step          rows[t].w: the row's sequence
//   1 shape   uniform Shape         a = d (x's row length), b = R (columns), c = n_adapters,
//                                   d = NORM's epsilon (f32 bits)
//   2 cols    uniform vec4<u32>     (8,): 32 u32, adapter a's columns are cols[a]..cols[a + 1]
//   3 factors storage read  f32     (max_seqs, n_adapters): each sequence's factor per adapter
//   4 x       storage read  f32     (T, d)
//   5 norm    storage read  f32     (d,) with NORM, else a dummy
//   6 a       storage read  f32     (R, d)
//   7 u       storage rw    f32     (T, R)
// Overrides: NORM.

// Step, Shape: shaders/prelude.wgsl

override NORM: bool = false;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<uniform> cols: array<vec4<u32>, 8>;
@group(0) @binding(3) var<storage, read> factors: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> norm: array<f32>;
@group(0) @binding(6) var<storage, read> a: array<f32>;
@group(0) @binding(7) var<storage, read_write> u: array<f32>;

var<workgroup> partial: array<f32, 64>;

fn col(i: u32) -> u32 { return cols[i / 4u][i % 4u]; }

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    let t = wg.y;
    let d = shape.a;
    let row = t * d;
    var inv_rms = 1.0;
    if (NORM) {
        var ss = 0.0;
        for (var k = i; k < d; k += 64u) { ss += x[row + k] * x[row + k]; }
        partial[i] = ss;
        workgroupBarrier();
        for (var s = 32u; s > 0u; s >>= 1u) {
            if (i < s) { partial[i] += partial[i + s]; }
            workgroupBarrier();
        }
        inv_rms = 1.0 / sqrt(partial[0] / f32(d) + bitcast<f32>(shape.d));
    }
    let j = wg.x * 64u + i;
    if (j >= shape.b) { return; }
    // the adapter owning column j, and the factor row t's sequence gives it
    var ad = 0u;
    while (ad + 1u < shape.c && col(ad + 1u) <= j) { ad += 1u; }
    var acc = 0.0;
    if (factors[step_seq(t) * shape.c + ad] != 0.0) {
        for (var k = 0u; k < d; k++) {
            var xv = x[row + k];
            if (NORM) { xv *= norm[k]; }
            acc += a[j * d + k] * xv;
        }
    }
    u[t * shape.b + j] = acc * inv_rms;
}
