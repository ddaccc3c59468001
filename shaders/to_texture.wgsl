// to_texture.wgsl: copy activation rows into a texture, xt[t, i4] = x'[t, 4 i4 .. 4 i4 + 4] (as
// u32 bit patterns), for matmat.wgsl to read; with NORM the rows are RMS-normalised on the way,
//   x'[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * weight
// (the RMSNorm before a product, fused into the copy: one dispatch and one buffer fewer).
// A storage load on lavapipe costs a scalar load per invocation and component; a texel fetch is
// one vector gather of 16 bytes for 8 invocations, and matmat reads every x value once per 64
// output rows, so one copy per step pays for itself many times over (benches/RESULTS.md).
// CPU twin: none for the copy (exact); cpu::ops::rmsnorm with NORM (tests compare matmat through
// both with the CPU).
// Dispatch: (ceil(d / 4 / 64), T·c, 1), one invocation per (texel, row), c rows a token (an MoE
// block's rows, one per chosen expert; 1 elsewhere); with NORM
// (ceil(T / 64), 1, 1), one invocation per row: the sum of squares, then the scaled copy; with
// GATHER (the LM head of the rows whose logits a step returns) row t of xt is x's row
// step.rows[t].x, T being the head's own Step (src/gpu/model.rs, Head::Rows). (A
// workgroup per row with a tree reduction in workgroup memory took 2.2x as long on lavapipe,
// whose barriers are costly: `bench model --profile 256`.)
// Bindings:
//   0 step   storage Step          n_tokens T (with GATHER: rows[t].x = the row of x to copy)
//   1 shape  uniform Shape         a = d (a multiple of 4), b = bitcast<u32>(eps as f32) with NORM,
//                                  c = rows a token without NORM (0 or 1: one)
//   2 x      storage read  vec4f   (T_max·c, d/4)
//   3 weight storage read  vec4f   (d/4,) with NORM, else a dummy
//   4 xt     texture_storage_2d_array<rgba32uint, write> (d/4, T_max, 1)
// Overrides: NORM, GATHER (with NORM).

// Step, Shape: shaders/prelude.wgsl

override NORM: bool = false;
override GATHER: bool = false;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(4) var xt: texture_storage_2d_array<rgba32uint, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let d4 = shape.a / 4u;
    if (!NORM) {
        // one texel an invocation
        let t = gid.y;
        if (gid.x < d4 && t < step.n_tokens * max(shape.c, 1u)) {
            textureStore(xt, vec2<u32>(gid.x, t), 0, bitcast<vec4<u32>>(x[t * d4 + gid.x]));
        }
        return;
    }
    // one row an invocation: the sum of squares, then the scaled copy
    let t = gid.x;
    if (t >= step.n_tokens) { return; }
    let row = select(t, step_token(t), GATHER) * d4;
    var ss = 0.0;
    for (var i = 0u; i < d4; i++) {
        let v = x[row + i];
        ss += dot(v, v);
    }
    let inv = inverseSqrt(ss / f32(shape.a) + bitcast<f32>(shape.b));
    for (var i = 0u; i < d4; i++) {
        textureStore(xt, vec2<u32>(i, t), 0, bitcast<vec4<u32>>(weight[i] * (x[row + i] * inv)));
    }
}
