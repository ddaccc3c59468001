// matmat_tiled.wgsl: matmat.wgsl's product shaped for GPUs: a classic tiled GEMM. A workgroup
// computes a tile of 64 weight rows × 64 tokens; at each step along d it stages 32 values of its
// 64 weight rows (decoded once, from any weight format) and of its 64 tokens' x rows in
// workgroup memory, one barrier, and every invocation multiplies from there: 4 weight rows × 4
// tokens = 16 outputs an invocation, so each staged value is read by 16 invocations from fast
// memory instead of from the texture (matmat.wgsl reuses a weight texel for 8 tokens through
// registers and subgroup broadcasts, which suits lavapipe, where barriers are costly and
// "workgroup memory" is plain memory; the engine picks this one on GPUs: `--gemm auto|tiled|rows`).
//   out[t, c + o] (+)= W[o, :] . x[t, :] + bias[c + o]      for t < T, o < n
// With SWIGLU gate row j and up row c + j of an output, with ROPE the rotation pair oa,
// oa + HEAD_DIM / 2, as matmat.wgsl: the tile's 64 rows are 32 such pairs (a plain product pairs
// rows o and o + 32 of the tile), and lib/epilogue.wgsl's put2 stores them.
// CPU twin: cpu::ops::matmul (weights as Format::decode gives them; then cpu::ops::swiglu with
// SWIGLU, cpu::ops::rope with ROPE); lavapipe's twin: matmat.wgsl.
// Dispatch: (ceil(n / 64), ceil(T / 64), 1), 256 invocations a workgroup (16 × 16: invocation
// (i, j) takes pairs 2i, 2i + 1 and tokens 4j .. 4j + 3 of the tile). n / 2 pairs in all (SWIGLU:
// c outputs, ROPE: n / 2 pairs); pairs past them and tokens past T load clamped rows and store
// nothing.
// Workgroup memory: 16 KiB (two tiles of 64 × 32 f32), WebGPU's default limit exactly.
// Bindings: as matmat.wgsl: 0 step, 1 shape (a = d, b = n, c, d as there), 2 x the texture
// to_texture.wgsl writes (d/4, T_max, 1), 3 w the weight texture (float: WeightTex rows,
// prelude.wgsl's weight_row; quantized: lib/quant.wgsl's q_row), 4 to 11 from lib/epilogue.wgsl.
// Overrides: WTYPE (lib/quant.wgsl); HAS_BIAS, ACCUMULATE, SWIGLU, ROPE, HEAD_DIM, KV_F16 from
// lib/epilogue.wgsl.

// Step, Shape: shaders/prelude.wgsl; outputs, store functions: shaders/lib/epilogue.wgsl;
// q_row, load_unit, unit_w: shaders/lib/quant.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var x: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;

const TILE: u32 = 64u; // weight rows and tokens of a tile
const KV4: u32 = 8u;   // vec4s of d a step stages (32 values: one unit of a quantized row)

var<workgroup> w_tile: array<vec4<f32>, 512>; // (TILE rows, KV4)
var<workgroup> x_tile: array<vec4<f32>, 512>; // (TILE tokens, KV4)

// The weight row behind row r of the tile (r < 32: pair r's first row, else pair r - 32's
// second), for the tile's first pair g0.
fn tile_row(g0: u32, r: u32) -> u32 {
    let g = g0 + r % 32u;
    let second = r >= 32u;
    if (SWIGLU) { return select(g, shape.c + g, second); }
    if (ROPE) {
        let half = HEAD_DIM / 2u;
        let oa = (g / half) * HEAD_DIM + g % half;
        return select(oa, oa + half, second);
    }
    return g0 * 2u + r; // plain: the tile's 64 rows in order (pair p = rows p, p + 32)
}

// vec4s v and v + 1 of step u (values 32u + 4v ..) of weight row o (clamped to n - 1).
fn stage_w(o: u32, u: u32, v: u32, slot: u32) {
    let d = shape.a;
    let n = shape.b;
    let row = min(o, n - 1u);
    if (WTYPE >= 2u) {
        let un = load_unit(q_row(d, row), d, u);
        w_tile[slot] = unit_w(un, v);
        w_tile[slot + 1u] = unit_w(un, v + 1u);
        return;
    }
    let F16 = WTYPE == 1u;
    let per4 = select(1u, 2u, F16); // vec4s a texel
    let d4 = d / 4u;
    let r = weight_row(textureDimensions(w), d4 / per4, row); // texel k at (k * r.w + r.x, r.y), layer r.z
    for (var e = 0u; e < 2u; e++) {
        let i4 = u * KV4 + v + e; // vec4 of the row
        var val = vec4<f32>(0.0);
        if (i4 < d4) {
            let t = textureLoad(w, vec2<u32>(i4 / per4 * r.w + r.x, r.y), r.z);
            if (F16) {
                let h = select(t.xy, t.zw, i4 % 2u == 1u);
                val = vec4<f32>(unpack2x16float(h.x), unpack2x16float(h.y));
            } else {
                val = bitcast<vec4<f32>>(t);
            }
        }
        w_tile[slot + e] = val;
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d = shape.a;
    let d4 = d / 4u;
    let n_tok = moe_gemm_rows(wg.z); // the step's tokens, or an expert's assignments (MoE)
    let g0 = wg.x * 32u;  // the tile's first pair
    let t0 = wg.y * TILE; // and first token
    if (t0 >= n_tok) { return; } // uniform: a workgroup past an expert's assignments
    let pi = (lid % 16u) * 2u; // my pairs pi, pi + 1: tile rows pi, pi + 1, pi + 32, pi + 33
    let tj = (lid / 16u) * 4u; // my tokens t0 + tj .. t0 + tj + 3
    // What I stage each step: 2 vec4s of tile row (lid / 4) of w and of token (lid / 4) of x.
    let sr = lid / 4u;
    let sv = (lid % 4u) * 2u;
    let so = tile_row(g0, sr);
    let st = moe_x_row(min(t0 + sr, n_tok - 1u));
    var acc_a: array<array<f32, 4>, 2>; // [pair][token]: first rows
    var acc_b: array<array<f32, 4>, 2>; // second rows
    let steps = (d + 31u) / 32u;
    for (var u = 0u; u < steps; u++) {
        stage_w(so, u, sv, sr * KV4 + sv);
        for (var e = 0u; e < 2u; e++) {
            let i4 = u * KV4 + sv + e;
            var xv = vec4<f32>(0.0);
            if (i4 < d4) { xv = bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, st), 0)); }
            x_tile[sr * KV4 + sv + e] = xv;
        }
        workgroupBarrier();
        for (var k = 0u; k < KV4; k++) {
            let wa0 = w_tile[pi * KV4 + k];
            let wa1 = w_tile[(pi + 1u) * KV4 + k];
            let wb0 = w_tile[(pi + 32u) * KV4 + k];
            let wb1 = w_tile[(pi + 33u) * KV4 + k];
            for (var j = 0u; j < 4u; j++) {
                let xv = x_tile[(tj + j) * KV4 + k];
                acc_a[0][j] += dot(wa0, xv);
                acc_a[1][j] += dot(wa1, xv);
                acc_b[0][j] += dot(wb0, xv);
                acc_b[1][j] += dot(wb1, xv);
            }
        }
        workgroupBarrier();
    }
    for (var p = 0u; p < 2u; p++) {
        let oa = tile_row(g0, pi + p);
        let ob = tile_row(g0, pi + p + 32u);
        for (var j = 0u; j < 4u; j++) {
            let t = t0 + tj + j;
            if (t < n_tok) { put2(moe_out_row(t), oa, ob, acc_a[p][j], acc_b[p][j]); }
        }
    }
}
