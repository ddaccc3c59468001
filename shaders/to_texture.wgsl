// to_texture.wgsl: copy activation rows into a texture, xt[t, i4] = x'[t, 4 i4 .. 4 i4 + 4] (as
// u32 bit patterns), for matmat.wgsl to read; with NORM the rows are RMS-normalised on the way,
//   x'[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight
// (the RMSNorm before a product, fused into the copy: one dispatch and one buffer fewer).
// A storage load on lavapipe costs a scalar load per invocation and component; a texel fetch is
// one vector gather of 16 bytes for 8 invocations, and matmat reads every x value once per 64
// output rows, so one copy per step pays for itself many times over (benches/RESULTS.md).
// CPU twin: none for the copy (exact); cpu::ops::rmsnorm with NORM (tests compare matmat through
// both with the CPU).
// Dispatch: (1, T, 1); one workgroup of 64 per token row, each invocation taking every 64th
// texel: with NORM a strided sum of squares and a tree reduction in workgroup memory first.
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = d (a multiple of 4), b = bitcast<u32>(eps as f32) with NORM
//   2 x      storage read  vec4f   (T_max, d/4)
//   3 weight storage read  vec4f   (d/4,) with NORM, else a dummy
//   4 xt     texture_storage_2d_array<rgba32uint, write> (d/4, T_max, 1)
// Overrides: NORM.

// Step, Shape: shaders/prelude.wgsl

override NORM: bool = false;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(4) var xt: texture_storage_2d_array<rgba32uint, write>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d4 = shape.a / 4u;
    let t = wid.y;
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let row = t * d4;
    var inv = 1.0;
    if (NORM) {
        var ss = 0.0;
        for (var i = lid; i < d4; i += WG) {
            let v = x[row + i];
            ss += dot(v, v);
        }
        partial[lid] = ss;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (lid < s) { partial[lid] += partial[lid + s]; }
            workgroupBarrier();
        }
        inv = inverseSqrt(partial[0] / f32(shape.a) + bitcast<f32>(shape.b));
    }
    for (var i = lid; i < d4; i += WG) {
        var v = x[row + i];
        if (NORM) { v = weight[i] * (v * inv); }
        textureStore(xt, vec2<u32>(i, t), 0, bitcast<vec4<u32>>(v));
    }
}
