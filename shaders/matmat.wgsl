// matmat.wgsl: matrix product for all T token rows of a step (prefill, batches, a speculative
// verify), weights in a texture, x shared through subgroup broadcasts:
//   out[t, c + o] (+)= W[o, :] . x[t, :] + bias[c + o]      for t < T, o < n
// CPU twin: cpu::ops::matmul (with the weights rounded to f16 for F16, decoded by Format::decode
// when quantized).
// With SWIGLU (W = W_gate;W_up, c rows each): out[t, j] = silu(W_gate[j] . x[t]) * (W_up[j] . x[t]),
// the SwiGLU of the feed-forward block fused into the product (CPU twin: then cpu::ops::swiglu).
// Dispatch: (ceil(n / 256), ceil(T / 8), 1): 64 invocations a workgroup, each computing four
// weight rows for 8 tokens. Invocation p of the grid takes the rows of pair p and of pair
// p + (invocations in the grid) (pair_rows, lib/epilogue.wgsl: rows (p / 8) * 16 + p % 8 and
// that + 8, so the 8 lanes of a subgroup read the texels of 8 neighbouring rows, contiguous in
// the weight texture; with SWIGLU gate row p and up row c + p; with ROPE the rotation pair p).
// x comes as a texture (to_texture.wgsl copies the rows): lane j of the subgroup fetches token
// t0 + j's x values of the current texel and `subgroupBroadcast` hands them to the other lanes,
// each broadcast value feeding all four rows; a quantized unit of 32 values is decoded once for
// the 8 tokens. On lavapipe, where arithmetic bounds this kernel, four rows an invocation instead
// of two cut a step of 4 or 8 rows by about 30% (Qwen2.5-0.5B Q4_K_M) and were no slower in wide
// steps than two rows with 16 tokens an invocation (benches/RESULTS.md, benches/probes/gemm_f);
// x from a storage buffer made the kernel 4x slower, and from a uniform buffer 3x
// (probes gemm_a, gemm_j). Needs subgroups of at least 8 lanes; matmat_plain.wgsl is the same
// product without them. With MOE_K (lib/epilogue.wgsl) the grid is (.., ceil(T / 8),
// n_experts): expert z over the rows routed to it.
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = d, b = n rows, c = column offset into out and bias (SWIGLU,
//                                  ROPE: the first part's rows), d = out row stride (ROPE: the key rows)
//   2 x      texture_storage_2d_array<rgba32uint, read> (d/4, T_max, 1): f32 bit patterns of the rows, from to_texture.wgsl
//   3 w      texture_storage_2d_array<rgba32uint, read>: the weights (n, d) as WeightTex lays them out
//            (weight_row in prelude.wgsl), 8 f16 (WTYPE 1) or 4 f32 values (0) a texel; quantized
//            (WTYPE 2 and up): GGUF blocks in the device layout of lib/quant.wgsl (q_row), read a
//            unit of 32 values a round
//   4 bias   storage read  f32     (c + n,) when HAS_BIAS, else a dummy
//   5 out    storage rw    f32     (T_max, stride); with SWIGLU and ROPE (T_max, c)
//   6 out2   storage rw    f32     with ROPE k_cache (n_blocks * PAGE, d), else a dummy
//   7 out3   storage rw    f32     with ROPE v_cache (n_blocks * PAGE, d), else a dummy
//   8 cos    storage read  f32     (seq_len, HEAD_DIM / 2) with ROPE (as matvec.wgsl), else a dummy
//   9 sin    storage read  f32     (seq_len, HEAD_DIM / 2) with ROPE, else a dummy
//            (4 to 11 are declared, and written, by lib/epilogue.wgsl: 10 LoRA's delta or MoE's routing, 11 LoRA's factors)
// Overrides: WTYPE (lib/quant.wgsl); HAS_BIAS, ACCUMULATE, SWIGLU, ROPE, HEAD_DIM from lib/epilogue.wgsl (as
// matvec.wgsl: with ROPE W is Wq;Wk;Wv, q (T, c) goes to out, k and v of token t into cache
// row slot[t] of out2 and out3, so the QKV product, RoPE and the cache write of a prefill step
// are one dispatch).

// Step, Shape: shaders/prelude.wgsl; outputs, store functions: shaders/lib/epilogue.wgsl


@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var x: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;

fn xload(i4: u32, t: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t), 0));
}

fn lo(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)); }
fn hi(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)); }

// acc[i] += (s_i . wa, s_i . wb, s_i . wc, s_i . wd) for 8 tokens, s_i = lane i's xv, w's
// columns the four rows' values: each broadcast feeds four rows.
fn mac8x4(acc: ptr<function, array<vec4<f32>, 8>>, w: mat4x4<f32>, xv: vec4<f32>) {
    (*acc)[0] += subgroupBroadcast(xv, 0u) * w;
    (*acc)[1] += subgroupBroadcast(xv, 1u) * w;
    (*acc)[2] += subgroupBroadcast(xv, 2u) * w;
    (*acc)[3] += subgroupBroadcast(xv, 3u) * w;
    (*acc)[4] += subgroupBroadcast(xv, 4u) * w;
    (*acc)[5] += subgroupBroadcast(xv, 5u) * w;
    (*acc)[6] += subgroupBroadcast(xv, 6u) * w;
    (*acc)[7] += subgroupBroadcast(xv, 7u) * w;
}

// vec4 i of unit u of the four rows, as the columns of a matrix.
fn units4(ua: Unit, ub: Unit, uc: Unit, ud: Unit, i: u32) -> mat4x4<f32> {
    return mat4x4<f32>(unit_w(ua, i), unit_w(ub, i), unit_w(uc, i), unit_w(ud, i));
}

// Four weight rows `o` (clamped to n - 1) against 8 tokens, lane j's x row xr.
fn four_rows(o: vec4<u32>, xr: u32) -> array<vec4<f32>, 8> {
    var acc: array<vec4<f32>, 8>;
    let d = shape.a;
    if (WTYPE >= 2u) {
        let qa = q_row(d, o.x);
        let qb = q_row(d, o.y);
        let qc = q_row(d, o.z);
        let qd = q_row(d, o.w);
        for (var u = 0u; u < d / 32u; u++) {
            let ua = load_unit(qa, d, u);
            let ub = load_unit(qb, d, u);
            let uc = load_unit(qc, d, u);
            let ud = load_unit(qd, d, u);
            // unrolled: constant indices into the units' texels
            mac8x4(&acc, units4(ua, ub, uc, ud, 0u), xload(u * 8u, xr));
            mac8x4(&acc, units4(ua, ub, uc, ud, 1u), xload(u * 8u + 1u, xr));
            mac8x4(&acc, units4(ua, ub, uc, ud, 2u), xload(u * 8u + 2u, xr));
            mac8x4(&acc, units4(ua, ub, uc, ud, 3u), xload(u * 8u + 3u, xr));
            mac8x4(&acc, units4(ua, ub, uc, ud, 4u), xload(u * 8u + 4u, xr));
            mac8x4(&acc, units4(ua, ub, uc, ud, 5u), xload(u * 8u + 5u, xr));
            mac8x4(&acc, units4(ua, ub, uc, ud, 6u), xload(u * 8u + 6u, xr));
            mac8x4(&acc, units4(ua, ub, uc, ud, 7u), xload(u * 8u + 7u, xr));
        }
        return acc;
    }
    let F16 = WTYPE == 1u;
    let texels = d / select(4u, 8u, F16);
    let size = textureDimensions(w);
    let ra = weight_row(size, texels, o.x); // texel k at (k * ra.w + ra.x, ra.y), layer ra.z
    let rb = weight_row(size, texels, o.y);
    let rc = weight_row(size, texels, o.z);
    let rd = weight_row(size, texels, o.w);
    for (var k = 0u; k < texels; k++) {
        let ta = textureLoad(w, vec2<u32>(k * ra.w + ra.x, ra.y), ra.z);
        let tb = textureLoad(w, vec2<u32>(k * rb.w + rb.x, rb.y), rb.z);
        let tc = textureLoad(w, vec2<u32>(k * rc.w + rc.x, rc.y), rc.z);
        let td = textureLoad(w, vec2<u32>(k * rd.w + rd.x, rd.y), rd.z);
        if (F16) {
            mac8x4(&acc, mat4x4<f32>(lo(ta), lo(tb), lo(tc), lo(td)), xload(2u * k, xr));
            mac8x4(&acc, mat4x4<f32>(hi(ta), hi(tb), hi(tc), hi(td)), xload(2u * k + 1u, xr));
        } else {
            mac8x4(&acc, mat4x4<f32>(bitcast<vec4<f32>>(ta), bitcast<vec4<f32>>(tb), bitcast<vec4<f32>>(tc), bitcast<vec4<f32>>(td)), xload(k, xr));
        }
    }
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let n_rows = moe_gemm_rows(gid.z); // the step's tokens, or an expert's assignments (MoE)
    let t0 = gid.y * 8u;
    if (t0 >= n_rows) { return; } // uniform: a workgroup past an expert's assignments
    let rows_ab = pair_rows(gid.x);
    let rows_cd = pair_rows(gid.x + groups.x * 64u);
    // Rows past the end still take part in the broadcasts; they load row n-1 and store nothing.
    let o = min(vec4<u32>(rows_ab, rows_cd), vec4<u32>(shape.b - 1u));
    let xr = moe_x_row(min(t0 + (lane & 7u), n_rows - 1u)); // lane j's x row (clamped)
    let acc = four_rows(o, xr);
    for (var i = 0u; i < 8u; i++) {
        if (t0 + i < n_rows) { put4(moe_out_row(t0 + i), rows_ab, rows_cd, acc[i]); }
    }
}
