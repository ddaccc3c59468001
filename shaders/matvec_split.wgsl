// matvec_split.wgsl: matvec.wgsl's product shaped for GPUs: each row's dot product is split across
// the invocations of a workgroup, so a product launches a workgroup per 8 output rows (n / 8 in
// all: 18992 for a 151936-word LM head, 112 for an 896-row projection) instead of one per 64:
//   out[c + o] (+)= W[o, :] . x'[0, :] + bias[c + o]      (x' = x, or RMS-normalised with NORM)
// Invocation i = 8 s + r of a workgroup takes row r of its 8 rows (a row group of the weight
// texture, whose texels lie interleaved: texel k of the 8 rows is 8 neighbouring texels) and the
// texels (float) or units of 32 values (quantized) s, s + 8, s + 16, ... of it, so at each step
// the 64 invocations read 64 (or, for wider rows stored fewer to a group, 8 runs of) neighbouring
// texels: coalesced loads. The 8 partial dots of a row (and, with NORM, the partial sums of x²)
// meet in workgroup memory after one barrier. No subgroup operation, so it runs on any adapter;
// barriers and the 64-way split cost a CPU adapter (lavapipe) more than they give, so the engine
// picks it on GPUs (`--gemv auto|split|rows`). With SWIGLU an output takes gate row j and up row c + j,
// with ROPE the rotation pair oa, oa + HEAD_DIM / 2, as matvec.wgsl.
// CPU twin: cpu::ops::matmul with one token (weights as Format::decode gives them), after
// cpu::ops::rmsnorm with NORM, then cpu::ops::swiglu (SWIGLU) or cpu::ops::rope (ROPE); fast
// twin on lavapipe: matvec.wgsl.
// Dispatch: (ceil(n / 8), 1, 1), 64 invocations a workgroup; a workgroup past the outputs
// (n / 2 of them with SWIGLU or ROPE) returns at once.
// Bindings: as matvec.wgsl: 0 step, 1 shape (a = d, b = n, c, d as there), 2 x through the
// uniform window, 3 w the weight texture (float: WeightTex rows, prelude.wgsl's weight_row;
// quantized: lib/quant.wgsl's q_row), 4 to 11 from lib/epilogue.wgsl, 12 norm.
// Overrides: WTYPE (lib/quant.wgsl), NORM, NORM_EPS; HAS_BIAS, ACCUMULATE, SWIGLU, ROPE,
// HEAD_DIM, KV_F16 from lib/epilogue.wgsl.

// Step, Shape: shaders/prelude.wgsl; outputs, store functions: shaders/lib/epilogue.wgsl;
// w, q_row, load_unit, unit_w: shaders/lib/quant.wgsl

override NORM: bool = false;
override NORM_EPS: f32 = 1e-5;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<uniform> x: array<vec4<f32>, 4096>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(12) var<uniform> norm: array<vec4<f32>, 4096>;

var<workgroup> part_a: array<f32, 64>;
var<workgroup> part_b: array<f32, 64>;
var<workgroup> part_ss: array<f32, 64>;

// Slice s of row o against x' (unnormalised): (Σ w·x', Σ x² of the slice's values).
fn slice_dot(o: u32, s: u32) -> vec2<f32> {
    let d = shape.a;
    var acc = vec4<f32>(0.0);
    var ss = 0.0;
    if (WTYPE >= 2u) {
        let r = q_row(d, o);
        for (var u = s; u < d / 32u; u += 8u) {
            let un = load_unit(r, d, u);
            for (var i = 0u; i < 8u; i++) {
                var xv = x[x_base + u * 8u + i];
                if (NORM) {
                    ss += dot(xv, xv);
                    xv *= norm[u * 8u + i];
                }
                acc += unit_w(un, i) * xv;
            }
        }
    } else {
        let per4 = select(1u, 2u, WTYPE == 1u); // vec4s of x a texel
        let texels = d / 4u / per4;
        let r = weight_row(textureDimensions(w), texels, o);
        for (var k = s; k < texels; k += 8u) {
            let t = textureLoad(w, vec2<u32>(k * r.w + r.x, r.y), r.z);
            var xa = x[x_base + per4 * k];
            var xb = x[x_base + per4 * k + per4 - 1u];
            if (NORM) {
                ss += dot(xa, xa);
                xa *= norm[per4 * k];
                if (WTYPE == 1u) {
                    ss += dot(xb, xb);
                    xb *= norm[per4 * k + 1u];
                }
            }
            if (WTYPE == 1u) {
                acc += vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)) * xa
                     + vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)) * xb;
            } else {
                acc += bitcast<vec4<f32>>(t) * xa;
            }
        }
    }
    return vec2<f32>(acc.x + acc.y + acc.z + acc.w, ss);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) i: u32) {
    let slot = moe_gemv(wid.z); // 0, or an MoE slot (lib/epilogue.wgsl)
    let r = i % 8u;
    let s = i / 8u;
    let p = wid.x * 8u + r; // this invocation's output
    // its rows: a, and b with SWIGLU / ROPE; outputs past the end compute row 0, unwritten
    var oa = p;
    var ob = p;
    var valid = p < shape.b;
    if (SWIGLU) {
        valid = p < shape.c;
        ob = shape.c + p;
    } else if (ROPE) {
        let half = HEAD_DIM / 2u;
        oa = (p / half) * HEAD_DIM + p % half;
        ob = oa + half;
        valid = oa < shape.b;
    }
    let n_out = select(select(shape.b, shape.b / 2u, ROPE), shape.c, SWIGLU);
    if (wid.x * 8u >= n_out) { return; } // uniform: a workgroup past every output
    let a = slice_dot(select(0u, oa, valid), s);
    part_a[i] = a.x;
    part_ss[i] = a.y;
    if (SWIGLU || ROPE) { part_b[i] = slice_dot(select(0u, ob, valid), s).x; }
    workgroupBarrier();
    if (s != 0u || !valid) { return; }
    var ya = 0.0;
    var yb = 0.0;
    var ss = 0.0;
    for (var j = 0u; j < 8u; j++) {
        ya += part_a[8u * j + r];
        ss += part_ss[8u * j + r];
        if (SWIGLU || ROPE) { yb += part_b[8u * j + r]; }
    }
    if (NORM) {
        let inv = inverseSqrt(ss / f32(shape.a) + NORM_EPS);
        ya *= inv;
        yb *= inv;
    }
    if (SWIGLU) {
        put_swiglu(slot, p, ya, yb);
    } else if (ROPE) {
        put_rope(slot, oa, ya, yb);
    } else {
        put(slot, p, ya);
    }
}
