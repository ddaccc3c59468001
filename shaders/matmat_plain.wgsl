// matmat_plain.wgsl: matmat.wgsl without subgroups: every invocation fetches the x values of its
// 8 tokens itself.
//   out[t, c + o] (+)= W[o, :] . x[t, :] + bias[c + o]      for t < T, o < n
// or with SWIGLU out[t, j] = silu(W_gate[j] . x[t]) * (W_up[j] . x[t]).
// CPU twin: cpu::ops::matmul (with the weights rounded to f16 when F16).
// Dispatch: (ceil(n / 64), ceil(T / 8), 1). One output row for 8 tokens per invocation; with
// SWIGLU one output j (gate row j and up row c + j), with ROPE one rotation pair (rows i and
// i + HEAD_DIM / 2 of a head), the invocations past c or n / 2 returning at once.
// Bindings: as matmat.wgsl (x the texture to_texture.wgsl writes, w the weight texture, cos, sin).
// Overrides: F16, HAS_BIAS, ACCUMULATE, SWIGLU, ROPE, HEAD_DIM, as matmat.wgsl.

// Step, Shape: shaders/prelude.wgsl

override F16: bool = true;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override SWIGLU: bool = false;
override ROPE: bool = false;
override HEAD_DIM: u32 = 64u;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var x: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> out2: array<f32>;
@group(0) @binding(7) var<storage, read_write> out3: array<f32>;
@group(0) @binding(8) var<storage, read> cos_t: array<f32>;
@group(0) @binding(9) var<storage, read> sin_t: array<f32>;

// ROPE: store rows oa and oa + HEAD_DIM / 2 of Wq;Wk;Wv (values a, b) of token t: q and k
// rotated at its position, q to out (T, c), k and v into its cache row of out2 and out3.
fn put_rope(t: u32, oa: u32, a: f32, b: f32) {
    let half = HEAD_DIM / 2u;
    let ob = oa + half;
    var ya = a;
    var yb = b;
    if (HAS_BIAS) { ya += bias[oa]; yb += bias[ob]; }
    let q_dim = shape.c;
    let kv_dim = shape.d;
    if (oa >= q_dim + kv_dim) { // v
        let r = oa - q_dim - kv_dim + step_slot(t) * kv_dim;
        out3[r] = ya;
        out3[r + half] = yb;
        return;
    }
    let i = step_pos(t) * half + oa % HEAD_DIM;
    let c = cos_t[i];
    let s = sin_t[i];
    let ra = ya * c - yb * s;
    let rb = yb * c + ya * s;
    if (oa < q_dim) {
        out[t * q_dim + oa] = ra;
        out[t * q_dim + ob] = rb;
    } else { // k
        let r = oa - q_dim + step_slot(t) * kv_dim;
        out2[r] = ra;
        out2[r + half] = rb;
    }
}

fn xload(i4: u32, t: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t), 0));
}

// Row o of W against the x rows of tokens t0 .. t0 + 7 (clamped to the last token).
fn row_dots(o: u32, t0: u32) -> array<f32, 8> {
    let per4 = select(1u, 2u, F16);
    let d4 = shape.a / 4u;
    let r = weight_row(textureDimensions(w), d4 / per4, o); // texel k at (k * r.w + r.x, r.y), layer r.z
    var xr: array<u32, 8>;
    for (var j = 0u; j < 8u; j++) { xr[j] = min(t0 + j, step.n_tokens - 1u); }
    var acc: array<f32, 8>;
    for (var k = 0u; k < d4 / per4; k++) {
        let t = textureLoad(w, vec2<u32>(k * r.w + r.x, r.y), r.z);
        for (var j = 0u; j < 8u; j++) {
            if (F16) {
                acc[j] += dot(vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)), xload(2u * k, xr[j]))
                        + dot(vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)), xload(2u * k + 1u, xr[j]));
            } else {
                acc[j] += dot(bitcast<vec4<f32>>(t), xload(k, xr[j]));
            }
        }
    }
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = shape.b;
    let o = gid.x;
    let t0 = gid.y * 8u;
    if (SWIGLU) {
        let c = shape.c;
        if (o >= c) { return; }
        let g = row_dots(o, t0);
        let u = row_dots(c + o, t0);
        for (var j = 0u; j < 8u; j++) {
            if (t0 + j >= step.n_tokens) { break; }
            out[(t0 + j) * c + o] = g[j] / (1.0 + exp(-g[j])) * u[j];
        }
        return;
    }
    if (ROPE) {
        let half = HEAD_DIM / 2u;
        let oa = (o / half) * HEAD_DIM + o % half;
        if (oa >= n) { return; }
        let a = row_dots(oa, t0);
        let b = row_dots(oa + half, t0);
        for (var j = 0u; j < 8u; j++) {
            if (t0 + j >= step.n_tokens) { break; }
            put_rope(t0 + j, oa, a[j], b[j]);
        }
        return;
    }
    if (o >= n) { return; }
    let acc = row_dots(o, t0);
    for (var j = 0u; j < 8u; j++) {
        let t = t0 + j;
        if (t >= step.n_tokens) { break; }
        var y = acc[j];
        if (HAS_BIAS) { y += bias[shape.c + o]; }
        let i = t * shape.d + shape.c + o;
        if (ACCUMULATE) { y += out[i]; }
        out[i] = y;
    }
}
