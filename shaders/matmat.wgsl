// matmat.wgsl: matrix product for all T token rows of a step (prefill, batches), weights in a
// texture, x shared through subgroup broadcasts:
//   out[t, c + o] (+)= W[o, :] . x[t, :] + bias[c + o]      for t < T, o < n
// CPU twin: cpu::ops::matmul (with the weights rounded to f16 for F16, decoded by Format::decode
// when quantized).
// With SWIGLU (W = W_gate;W_up, c rows each): out[t, j] = silu(W_gate[j] . x[t]) * (W_up[j] . x[t]),
// the SwiGLU of the feed-forward block fused into the product (CPU twin: then cpu::ops::swiglu).
// Dispatch: (ceil(n / 128), ceil(T / TOK), 1), TOK = 16 with TOK16 (quantized weights) when
// T > 8, else 8.
// Each invocation computes two weight rows for TOK tokens: invocation i takes rows oa = (i / 8) * 16 + i % 8 and oa + 8, so the 8 lanes of a
// subgroup read the texels of 8 neighbouring rows (contiguous in the weight texture); with
// SWIGLU gate row i and up row c + i (the same grid: ceil(2c / 128) = ceil(c / 64)); with ROPE
// the two rows of a rotation pair, i and i + HEAD_DIM / 2 of a head. Every
// weight texel (8 f16 or 4 f32) is fetched once and used 8 times. x comes as a texture
// (to_texture.wgsl copies the rows): lane j of the subgroup fetches token t0 + j's x values of
// the current texel (and with TOK16 token t0 + 8 + j's) and `subgroupBroadcast` hands them to
// the other lanes, each broadcast value feeding both rows. A quantized unit is decoded once for
// all TOK tokens: 16 tokens made Qwen2.5-0.5B's Q4_K/Q5_0/Q6_K/Q8_0 products of a 16-row batch
// about 20% faster on lavapipe than 8, f16 ones no faster, and a 6-row step (a speculative
// verify) slower, hence 8 up to 8 rows (benches/RESULTS.md). On lavapipe x from a storage buffer made this kernel 4x slower, and two rows
// an invocation instead of one 1.5x faster (benches/RESULTS.md). Needs subgroups of at least 8
// lanes; matmat_plain.wgsl is the same product without them. With MOE_K (lib/epilogue.wgsl)
// the grid is (.., ceil(T / 8), n_experts): expert z over the rows routed to it.
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = d, b = n rows, c = column offset into out and bias (SWIGLU,
//                                  ROPE: the first part's rows), d = out row stride (ROPE: the key rows)
//   2 x      texture_storage_2d_array<rgba32uint, read> (d/4, T_max, 1): f32 bit patterns of the rows, from to_texture.wgsl
//   3 w      texture_storage_2d_array<rgba32uint, read>: the weights (n, d) as WeightTex lays them out
//            (weight_row in prelude.wgsl), 8 f16 (WTYPE 1) or 4 f32 values (0) a texel; quantized
//            (WTYPE 2 and up): GGUF blocks in the device layout of lib/quant.wgsl (q_row), read a
//            unit of 32 values a round, each unit decoded once for the TOK tokens
//   4 bias   storage read  f32     (c + n,) when HAS_BIAS, else a dummy
//   5 out    storage rw    f32     (T_max, stride); with SWIGLU and ROPE (T_max, c)
//   6 out2   storage rw    f32     with ROPE k_cache (n_blocks * PAGE, d), else a dummy
//   7 out3   storage rw    f32     with ROPE v_cache (n_blocks * PAGE, d), else a dummy
//   8 cos    storage read  f32     (seq_len, HEAD_DIM / 2) with ROPE (as matvec.wgsl), else a dummy
//   9 sin    storage read  f32     (seq_len, HEAD_DIM / 2) with ROPE, else a dummy
//            (4 to 11 are declared, and written, by lib/epilogue.wgsl: 10 LoRA's delta or MoE's routing, 11 LoRA's factors)
// Overrides: WTYPE (lib/quant.wgsl); TOK16; HAS_BIAS, ACCUMULATE, SWIGLU, ROPE, HEAD_DIM from lib/epilogue.wgsl (as
// matvec.wgsl: with ROPE W is Wq;Wk;Wv, q (T, c) goes to out, k and v of token t into cache
// row slot[t] of out2 and out3, so the QKV product, RoPE and the cache write of a prefill step
// are one dispatch).

// Step, Shape: shaders/prelude.wgsl; outputs, store functions: shaders/lib/epilogue.wgsl


@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var x: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;

override TOK16: bool = false; // 16 tokens an invocation (quantized weights), else 8

fn xload(i4: u32, t: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t), 0));
}

// acc_a[b + i] += wa . x_i and acc_b[b + i] += wb . x_i for 8 tokens, x_i = lane i's xv.
fn mac8(acc_a: ptr<function, array<f32, 16>>, acc_b: ptr<function, array<f32, 16>>, b: u32, wa: vec4<f32>, wb: vec4<f32>, xv: vec4<f32>) {
    var s = subgroupBroadcast(xv, 0u); (*acc_a)[b] += dot(wa, s); (*acc_b)[b] += dot(wb, s);
    s = subgroupBroadcast(xv, 1u); (*acc_a)[b + 1u] += dot(wa, s); (*acc_b)[b + 1u] += dot(wb, s);
    s = subgroupBroadcast(xv, 2u); (*acc_a)[b + 2u] += dot(wa, s); (*acc_b)[b + 2u] += dot(wb, s);
    s = subgroupBroadcast(xv, 3u); (*acc_a)[b + 3u] += dot(wa, s); (*acc_b)[b + 3u] += dot(wb, s);
    s = subgroupBroadcast(xv, 4u); (*acc_a)[b + 4u] += dot(wa, s); (*acc_b)[b + 4u] += dot(wb, s);
    s = subgroupBroadcast(xv, 5u); (*acc_a)[b + 5u] += dot(wa, s); (*acc_b)[b + 5u] += dot(wb, s);
    s = subgroupBroadcast(xv, 6u); (*acc_a)[b + 6u] += dot(wa, s); (*acc_b)[b + 6u] += dot(wb, s);
    s = subgroupBroadcast(xv, 7u); (*acc_a)[b + 7u] += dot(wa, s); (*acc_b)[b + 7u] += dot(wb, s);
}

// mac8 for the first 8 tokens (lane x rows xr) and, when `two`, the next 8 (xr2).
fn mac(acc_a: ptr<function, array<f32, 16>>, acc_b: ptr<function, array<f32, 16>>, wa: vec4<f32>, wb: vec4<f32>, i4: u32, xr: u32, xr2: u32, two: bool) {
    mac8(acc_a, acc_b, 0u, wa, wb, xload(i4, xr));
    if (two) { mac8(acc_a, acc_b, 8u, wa, wb, xload(i4, xr2)); }
}

// The quantized rows qa, qb (lib/quant.wgsl) against 8 or (`two`) 16 tokens: a unit of 32
// values a round, decoded once for all of them. Called with a constant `two`, so each call
// compiles to its own loop.
fn quant_rows(acc_a: ptr<function, array<f32, 16>>, acc_b: ptr<function, array<f32, 16>>, qa: vec4<u32>, qb: vec4<u32>, d: u32, xr: u32, xr2: u32, two: bool) {
    for (var u = 0u; u < d / 32u; u++) {
        let ua = load_unit(qa, d, u);
        let ub = load_unit(qb, d, u);
        // unrolled: constant indices into the units' texels
        mac(acc_a, acc_b, unit_w(ua, 0u), unit_w(ub, 0u), u * 8u, xr, xr2, two);
        mac(acc_a, acc_b, unit_w(ua, 1u), unit_w(ub, 1u), u * 8u + 1u, xr, xr2, two);
        mac(acc_a, acc_b, unit_w(ua, 2u), unit_w(ub, 2u), u * 8u + 2u, xr, xr2, two);
        mac(acc_a, acc_b, unit_w(ua, 3u), unit_w(ub, 3u), u * 8u + 3u, xr, xr2, two);
        mac(acc_a, acc_b, unit_w(ua, 4u), unit_w(ub, 4u), u * 8u + 4u, xr, xr2, two);
        mac(acc_a, acc_b, unit_w(ua, 5u), unit_w(ub, 5u), u * 8u + 5u, xr, xr2, two);
        mac(acc_a, acc_b, unit_w(ua, 6u), unit_w(ub, 6u), u * 8u + 6u, xr, xr2, two);
        mac(acc_a, acc_b, unit_w(ua, 7u), unit_w(ub, 7u), u * 8u + 7u, xr, xr2, two);
    }
}

fn lo(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)); }
fn hi(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)); }

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let n = shape.b;
    let F16 = WTYPE == 1u;
    let per4 = select(1u, 2u, F16);        // vec4s of x per texel
    let texels = shape.a / 4u / per4;
    var oa = (gid.x / 8u) * 16u + (gid.x & 7u);
    var ob = oa + 8u;
    if (SWIGLU) { oa = gid.x; ob = gid.x + shape.c; }
    if (ROPE) { oa = (gid.x / (HEAD_DIM / 2u)) * HEAD_DIM + gid.x % (HEAD_DIM / 2u); ob = oa + HEAD_DIM / 2u; }
    // Rows past the end still take part in the broadcasts; they load row n-1 and store nothing.
    let n_rows = moe_gemm_rows(gid.z); // the step's tokens, or an expert's assignments (MoE)
    // 16 tokens an invocation with TOK16 in a step of more than 8 (the host's grid agrees:
    // Kernels::matmul_grid); 8 otherwise, where the second 8 would be clamped copies
    let two = TOK16 && step.n_tokens > 8u;
    let tok = select(8u, 16u, two);
    let t0 = gid.y * tok;
    if (t0 >= n_rows) { return; } // uniform: a workgroup past an expert's assignments
    let xr = moe_x_row(min(t0 + (lane & 7u), n_rows - 1u)); // lane j's x row (clamped)
    let xr2 = moe_x_row(min(t0 + 8u + (lane & 7u), n_rows - 1u));
    var acc_a: array<f32, 16>;
    var acc_b: array<f32, 16>;
    if (WTYPE >= 2u) {
        // quantized (lib/quant.wgsl)
        let qa = q_row(shape.a, min(oa, n - 1u));
        let qb = q_row(shape.a, min(ob, n - 1u));
        if (two) {
            quant_rows(&acc_a, &acc_b, qa, qb, shape.a, xr, xr2, true);
        } else {
            quant_rows(&acc_a, &acc_b, qa, qb, shape.a, xr, xr2, false);
        }
    } else {
        let ra = weight_row(textureDimensions(w), texels, min(oa, n - 1u)); // texel k at (k * ra.w + ra.x, ra.y), layer ra.z
        let rb = weight_row(textureDimensions(w), texels, min(ob, n - 1u));
        for (var k = 0u; k < texels; k++) {
            let ta = textureLoad(w, vec2<u32>(k * ra.w + ra.x, ra.y), ra.z);
            let tb = textureLoad(w, vec2<u32>(k * rb.w + rb.x, rb.y), rb.z);
            if (F16) {
                mac(&acc_a, &acc_b, lo(ta), lo(tb), 2u * k, xr, xr2, false);
                mac(&acc_a, &acc_b, hi(ta), hi(tb), 2u * k + 1u, xr, xr2, false);
            } else {
                mac(&acc_a, &acc_b, bitcast<vec4<f32>>(ta), bitcast<vec4<f32>>(tb), k, xr, xr2, false);
            }
        }
    }
    for (var i = 0u; i < tok; i++) {
        if (t0 + i < n_rows) { put2(moe_out_row(t0 + i), oa, ob, acc_a[i], acc_b[i]); }
    }
}
