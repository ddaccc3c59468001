// embed.wgsl: embedding gather, x[t, :] = table[tokens[t], :], from the weight texture (the same
// texture the LM head reads when the two are tied).
// CPU twin: the embedding loop at the top of cpu::forward (with the table rounded to f16 for F16,
// decoded by Format::decode when quantized).
// Dispatch: (ceil(dim / 64), T, 1); one invocation per (element i, token t).
// Bindings:
//   0 step   storage Step          n_tokens T, token id of row t
//   1 shape  uniform Shape         a = dim
//   2 w      texture_storage_2d_array<rgba32uint, read>: the table (rows, dim) as WeightTex lays it
//            out (weight_row in prelude.wgsl), per = 8 f16 (WTYPE 1) or 4 f32 values (0) a texel,
//            or GGUF blocks in the device layout of lib/quant.wgsl (WTYPE 2 and up)
//   3 x      storage rw    f32     (T_max, dim)
// Overrides: WTYPE (lib/quant.wgsl: 0 f32, 1 f16, else GGUF's id of the block type).

// Step, Shape: shaders/prelude.wgsl


@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let dim = shape.a;
    let i = gid.x;
    let t = gid.y;
    if (i >= dim || t >= step.n_tokens) { return; }
    let tok = step_token(t);
    if (WTYPE >= 2u) {
        // quantized (lib/quant.wgsl): value i % 4 of vec4 (i % 32) / 4 of unit i / 32
        let un = load_unit(q_row(dim, tok), dim, i / 32u);
        x[t * dim + i] = unit_w(un, (i % 32u) / 4u)[i % 4u];
        return;
    }
    let F16 = WTYPE == 1u;
    let per = select(4u, 8u, F16);
    let r = weight_row(textureDimensions(w), dim / per, tok); // texel k at (k * r.w + r.x, r.y), layer r.z
    let texel = textureLoad(w, vec2<u32>(i / per * r.w + r.x, r.y), r.z);
    let e = i % per;
    var v: f32;
    if (F16) {
        let pair = unpack2x16float(texel[e / 2u]);
        v = pair[e % 2u];
    } else {
        v = bitcast<f32>(texel[e]);
    }
    x[t * dim + i] = v;
}
