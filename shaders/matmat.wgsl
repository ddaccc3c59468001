// matmat.wgsl: matrix product for all T token rows of a step (prefill, batches), weights in a
// texture, x shared through subgroup broadcasts:
//   out[t, c + o] (+)= W[o, :] . x[t, :] + bias[c + o]      for t < T, o < n
// CPU twin: cpu::ops::matmul (with the weights rounded to f16 when F16).
// Dispatch: (ceil(n / 64), ceil(T / 8), 1). Each invocation computes one output row for 8 tokens:
// every weight texel (8 f16 or 4 f32) is fetched once and used 8 times. x comes as a texture
// (to_texture.wgsl copies the rows): lane j of the subgroup fetches token t0 + j's x values of
// the current texel and `subgroupBroadcast` hands them to the other lanes. On lavapipe x from a
// storage buffer made this kernel 4x slower (benches/RESULTS.md). Needs subgroups of at least 8
// lanes; matmat_plain.wgsl is the same without them.
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = d, b = n rows, c = column offset into out and bias, d = out row stride
//   2 x      texture_storage_2d_array<rgba32uint, read> (d/4, T_max, 1): f32 bit patterns of the rows, from to_texture.wgsl
//   3 w      texture_storage_2d_array<rgba32uint, read>: the weights (n, d) as WeightTex lays them out
//            (weight_row in prelude.wgsl), 8 f16 (F16) or 4 f32 values a texel
//   4 bias   storage read  f32     (c + n,) when HAS_BIAS, else a dummy
//   5 out    storage rw    f32     (T_max, stride); with SPLIT (T_max, c)
//   6 out2   storage rw    f32     with SPLIT (T_max, d), else a dummy
//   7 out3   storage rw    f32     with SPLIT (T_max, n - c - d), else a dummy
// Overrides: F16, HAS_BIAS, ACCUMULATE, SPLIT (as matvec.wgsl).

// Step, Shape: shaders/prelude.wgsl

override F16: bool = true;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override SPLIT: bool = false;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var x: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> out2: array<f32>;
@group(0) @binding(7) var<storage, read_write> out3: array<f32>;

fn xload(i4: u32, t: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t), 0));
}

// Store row o of token t. SPLIT: the rows of a stacked matrix go to three outputs, [0, c) to out,
// [c, c + d) to out2, the rest to out3, each (T, its width), with bias[o] of the stacked bias.
fn store(t: u32, o: u32, v: f32) {
    if (t >= step.n_tokens) { return; }
    var y = v;
    if (SPLIT) {
        if (HAS_BIAS) { y += bias[o]; }
        let a = shape.c;
        let b = shape.d;
        if (o < a) {
            out[t * a + o] = y;
        } else if (o < a + b) {
            out2[t * b + o - a] = y;
        } else {
            let m = shape.b - a - b;
            out3[t * m + o - a - b] = y;
        }
        return;
    }
    if (HAS_BIAS) { y += bias[shape.c + o]; }
    let i = t * shape.d + shape.c + o;
    if (ACCUMULATE) { y += out[i]; }
    out[i] = y;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let n = shape.b;
    let per4 = select(1u, 2u, F16);        // vec4s of x per texel
    let d4 = shape.a / 4u;
    let texels = d4 / per4;
    // Rows past the end still take part in the broadcasts; they load row n-1 and store nothing.
    let o = min(gid.x, n - 1u);
    let r = weight_row(textureDimensions(w), texels, o); // texel k at (k * r.w + r.x, r.y), layer r.z
    let t0 = gid.y * 8u;
    let xr = min(t0 + (lane & 7u), step.n_tokens - 1u); // lane j's token (clamped)
    var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
    var a4 = 0.0; var a5 = 0.0; var a6 = 0.0; var a7 = 0.0;
    for (var k = 0u; k < texels; k++) {
        let t = textureLoad(w, vec2<u32>(k * r.w + r.x, r.y), r.z);
        var wa: vec4<f32>;
        var wb = vec4<f32>(0.0);
        var xa = xload(k * per4, xr);
        var xb = vec4<f32>(0.0);
        if (F16) {
            wa = vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y));
            wb = vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w));
            xb = xload(k * per4 + 1u, xr);
        } else {
            wa = bitcast<vec4<f32>>(t);
        }
        a0 += dot(wa, subgroupBroadcast(xa, 0u)) + dot(wb, subgroupBroadcast(xb, 0u));
        a1 += dot(wa, subgroupBroadcast(xa, 1u)) + dot(wb, subgroupBroadcast(xb, 1u));
        a2 += dot(wa, subgroupBroadcast(xa, 2u)) + dot(wb, subgroupBroadcast(xb, 2u));
        a3 += dot(wa, subgroupBroadcast(xa, 3u)) + dot(wb, subgroupBroadcast(xb, 3u));
        a4 += dot(wa, subgroupBroadcast(xa, 4u)) + dot(wb, subgroupBroadcast(xb, 4u));
        a5 += dot(wa, subgroupBroadcast(xa, 5u)) + dot(wb, subgroupBroadcast(xb, 5u));
        a6 += dot(wa, subgroupBroadcast(xa, 6u)) + dot(wb, subgroupBroadcast(xb, 6u));
        a7 += dot(wa, subgroupBroadcast(xa, 7u)) + dot(wb, subgroupBroadcast(xb, 7u));
    }
    if (gid.x >= n) { return; }
    store(t0, o, a0); store(t0 + 1u, o, a1); store(t0 + 2u, o, a2); store(t0 + 3u, o, a3);
    store(t0 + 4u, o, a4); store(t0 + 5u, o, a5); store(t0 + 6u, o, a6); store(t0 + 7u, o, a7);
}
