// matvec_plain.wgsl: matvec.wgsl without subgroups (adapters that have none, or fewer than 8
// lanes): every invocation loads x itself from the uniform binding.
//   out[c + o] (+)= W[o, :] . x'[0, :] + bias[c + o]      (x' = x, or RMS-normalised with NORM)
// CPU twin: cpu::ops::matmul with one token (with the weights rounded to f16 when F16), after
// cpu::ops::rmsnorm with NORM, followed by cpu::ops::swiglu with SWIGLU or cpu::ops::rope with
// ROPE.
// Dispatch: (ceil(n / 64), 1, 1). One invocation per output row; with SWIGLU one per output j
// (gate row j and up row c + j), with ROPE one per rotation pair (rows i and i + HEAD_DIM / 2 of
// a head), so the invocations past c or n / 2 of the same grid return at once.
// With NORM each invocation sums the squares of x itself.
// Bindings: as matvec.wgsl: 0 step, 1 shape, 2 x through the uniform window, 3 w the weight
// texture, 4 to 11 bias, out, out2, out3, cos, sin, aux (LoRA delta or MoE routing), lora_factors (declared by lib/epilogue.wgsl), 12 norm.
// Overrides: F16, NORM, NORM_EPS; HAS_BIAS, ACCUMULATE, SWIGLU, ROPE, HEAD_DIM from
// lib/epilogue.wgsl; as matvec.wgsl.

// Step, Shape: shaders/prelude.wgsl; outputs, store functions: shaders/lib/epilogue.wgsl

override F16: bool = true;
override NORM: bool = false;
override NORM_EPS: f32 = 1e-5;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<uniform> x: array<vec4<f32>, 4096>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(12) var<uniform> norm: array<vec4<f32>, 4096>;

// Row o of W against x'.
fn row_dot(o: u32) -> f32 {
    let per4 = select(1u, 2u, F16);
    let d4 = shape.a / 4u;
    let r = weight_row(textureDimensions(w), d4 / per4, o); // texel k at (k * r.w + r.x, r.y), layer r.z
    var acc = vec4<f32>(0.0);
    var ss = 0.0;
    for (var k = 0u; k < d4 / per4; k++) {
        let t = textureLoad(w, vec2<u32>(k * r.w + r.x, r.y), r.z);
        if (F16) {
            var xa = x[x_base + 2u * k];
            var xb = x[x_base + 2u * k + 1u];
            if (NORM) {
                ss += dot(xa, xa) + dot(xb, xb);
                xa *= norm[2u * k];
                xb *= norm[2u * k + 1u];
            }
            acc += vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)) * xa
                 + vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)) * xb;
        } else {
            var xa = x[x_base + k];
            if (NORM) {
                ss += dot(xa, xa);
                xa *= norm[k];
            }
            acc += bitcast<vec4<f32>>(t) * xa;
        }
    }
    var y = acc.x + acc.y + acc.z + acc.w;
    if (NORM) { y *= inverseSqrt(ss / f32(shape.a) + NORM_EPS); }
    return y;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let slot = moe_gemv(gid.z); // 0, or an MoE slot (lib/epilogue.wgsl)
    let o = gid.x;
    if (SWIGLU) {
        if (o >= shape.c) { return; }
        let g = row_dot(o);
        put_swiglu(slot, o, g, row_dot(shape.c + o));
        return;
    }
    if (ROPE) {
        let half = HEAD_DIM / 2u;
        let oa = (o / half) * HEAD_DIM + o % half;
        if (oa >= shape.b) { return; }
        put_rope(slot, oa, row_dot(oa), row_dot(oa + half));
        return;
    }
    if (o >= shape.b) { return; }
    put(slot, o, row_dot(o));
}
