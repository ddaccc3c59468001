// matvec_plain.wgsl: matvec.wgsl without subgroups (adapters that have none, or fewer than 8
// lanes): every invocation loads x itself from the uniform binding.
//   out[c + o] (+)= W[o, :] . x[0, :] + bias[c + o]
// CPU twin: cpu::ops::matmul with one token (with the weights rounded to f16 when F16).
// Dispatch: (ceil(n / 64), 1, 1). One invocation per output row.
// Bindings: as matvec.wgsl (x through the uniform window, w the weight texture).
// Overrides: F16, HAS_BIAS, ACCUMULATE, SPLIT, as matvec.wgsl.

// Step, Shape: shaders/prelude.wgsl

override F16: bool = true;
override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override SPLIT: bool = false;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<uniform> x: array<vec4<f32>, 4096>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> out2: array<f32>;
@group(0) @binding(7) var<storage, read_write> out3: array<f32>;

// Store row o of token t. SPLIT: the rows of a stacked matrix go to three outputs, [0, c) to out,
// [c, c + d) to out2, the rest to out3, each (T, its width), with bias[o] of the stacked bias.
fn put(t: u32, o: u32, v: f32) {
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
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = shape.b;
    let o = gid.x;
    if (o >= n) { return; }
    let per4 = select(1u, 2u, F16);
    let d4 = shape.a / 4u;
    let r = weight_row(textureDimensions(w), d4 / per4, o); // texel k at (k * r.w + r.x, r.y), layer r.z
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < d4 / per4; k++) {
        let t = textureLoad(w, vec2<u32>(k * r.w + r.x, r.y), r.z);
        if (F16) {
            acc += vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)) * x[2u * k]
                 + vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)) * x[2u * k + 1u];
        } else {
            acc += bitcast<vec4<f32>>(t) * x[k];
        }
    }
    put(0u, o, acc.x + acc.y + acc.z + acc.w);
}
