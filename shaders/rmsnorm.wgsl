// rmsnorm.wgsl: out[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight.
// CPU twin: cpu::ops::rmsnorm.
// Dispatch: (T, 1, 1), or (1, 1, 1) for the last row only; one workgroup of 64 per row: strided
// sum of squares, tree reduction in workgroup memory, then each invocation scales its strided
// elements.
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = dim, b = bitcast<u32>(eps as f32), c = 1: only row T-1, written to row 0
//   2 x      storage read  f32     (T_max, dim)
//   3 weight storage read  f32     (dim,)
//   4 out    storage rw    f32     (T_max, dim)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let dim = shape.a;
    // shape.c = 1: only the last row, written to row 0 of out (what the LM head of one row reads)
    let last = shape.c == 1u;
    let t = select(wid.x, step.n_tokens - 1u, last);
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let row = t * dim;
    let orow = select(row, 0u, last);
    var ss = 0.0;
    for (var i = lid; i < dim; i += WG) {
        let v = x[row + i];
        ss += v * v;
    }
    partial[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { partial[lid] += partial[lid + s]; }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(dim) + bitcast<f32>(shape.b));
    for (var i = lid; i < dim; i += WG) {
        out[orow + i] = weight[i] * (x[row + i] * inv);
    }
}
