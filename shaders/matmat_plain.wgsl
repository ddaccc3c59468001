// matmat_plain.wgsl: matmat.wgsl without subgroups: every invocation fetches the x values of its
// 8 tokens itself.
//   out[t, c + o] (+)= W[o, :] . x[t, :] + bias[c + o]      for t < T, o < n
// or with SWIGLU out[t, j] = silu(W_gate[j] . x[t]) * (W_up[j] . x[t]).
// CPU twin: cpu::ops::matmul (with the weights rounded to f16 when F16).
// Dispatch: (ceil(n / 64), ceil(T / 8), 1). One output row for 8 tokens per invocation; with
// SWIGLU one output j (gate row j and up row c + j), with ROPE one rotation pair (rows i and
// i + HEAD_DIM / 2 of a head), the invocations past c or n / 2 returning at once.
// Bindings: as matmat.wgsl: 0 step, 1 shape, 2 x the texture to_texture.wgsl writes, 3 w the
// weight texture, 4 to 11 bias, out, out2, out3, cos, sin, aux (LoRA delta or MoE routing), lora_factors (declared by lib/epilogue.wgsl).
// Overrides: F16; HAS_BIAS, ACCUMULATE, SWIGLU, ROPE, HEAD_DIM from lib/epilogue.wgsl; as
// matmat.wgsl.

// Step, Shape: shaders/prelude.wgsl; outputs, store functions: shaders/lib/epilogue.wgsl

override F16: bool = true;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var x: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;

fn xload(i4: u32, t: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t), 0));
}

// Row o of W against the x rows of tokens t0 .. t0 + 7 (clamped to the last token).
fn row_dots(o: u32, t0: u32, n_rows: u32) -> array<f32, 8> {
    let per4 = select(1u, 2u, F16);
    let d4 = shape.a / 4u;
    let r = weight_row(textureDimensions(w), d4 / per4, o); // texel k at (k * r.w + r.x, r.y), layer r.z
    var xr: array<u32, 8>;
    for (var j = 0u; j < 8u; j++) { xr[j] = moe_x_row(min(t0 + j, n_rows - 1u)); }
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
    let n_rows = moe_gemm_rows(gid.z); // the step's tokens, or an expert's assignments (MoE)
    if (t0 >= n_rows) { return; }
    if (SWIGLU) {
        let c = shape.c;
        if (o >= c) { return; }
        let g = row_dots(o, t0, n_rows);
        let u = row_dots(c + o, t0, n_rows);
        for (var j = 0u; j < 8u; j++) {
            if (t0 + j >= n_rows) { break; }
            put_swiglu(moe_out_row(t0 + j), o, g[j], u[j]);
        }
        return;
    }
    if (ROPE) {
        let half = HEAD_DIM / 2u;
        let oa = (o / half) * HEAD_DIM + o % half;
        if (oa >= n) { return; }
        let a = row_dots(oa, t0, n_rows);
        let b = row_dots(oa + half, t0, n_rows);
        for (var j = 0u; j < 8u; j++) {
            if (t0 + j >= n_rows) { break; }
            put_rope(moe_out_row(t0 + j), oa, a[j], b[j]);
        }
        return;
    }
    if (o >= n) { return; }
    let acc = row_dots(o, t0, n_rows);
    for (var j = 0u; j < 8u; j++) {
        if (t0 + j >= n_rows) { break; }
        put(moe_out_row(t0 + j), o, acc[j]);
    }
}
