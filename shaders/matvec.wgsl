// matvec.wgsl: matrix-vector product of ONE row (decode steps, and the LM head of the last
// position, which the final norm writes to row 0), weights in a texture:
//   out[c + o] (+)= W[o, :] . x'[0, :] + bias[c + o]
// where x' = x, or with NORM the RMS-normalised x' = x / sqrt(mean(x^2) + eps) * norm (the
// RMSNorm before the product, fused: one dispatch fewer and no normalised copy of x).
// CPU twin: cpu::ops::matmul with one token (with the weights rounded to f16 for F16, decoded by
// Format::decode when quantized), after
// cpu::ops::rmsnorm with NORM, followed by cpu::ops::swiglu with SWIGLU or cpu::ops::rope with
// ROPE.
// Dispatch: (ceil(n / 64), 1, 1): 32 invocations a workgroup, two weight rows each: invocation i
// takes rows oa = (i / 8) * 16 + i % 8 and oa + 8, so the 8 lanes of a subgroup read the texels
// of 8 neighbouring rows (contiguous in the weight texture). With SWIGLU it takes gate row i and
// up row c + i instead (the same grid: ceil(2c / 64) = ceil(c / 32)); with ROPE the two rows of
// one rotation pair, i and i + HEAD_DIM / 2 of a head (head i / (HEAD_DIM / 2)). The row's weights are
// texels of 16 bytes (8 f16 or 4 f32 values) along d. x is a uniform binding (every invocation
// reads the same values) read in chunks of 8 texels: lane j of the subgroup loads the x values
// of texel j and `subgroupBroadcast` hands them to the other lanes, each broadcast feeding both
// rows. With NORM the lanes also sum the squares of the x values they load (a subgroupAdd at the
// end gives mean(x^2)) and scale them by `norm`; the products are scaled by 1 / rms at the end.
// On lavapipe a storage load costs a scalar load per lane and component; uniform loads are vector
// gathers and the broadcasts cut them 8-fold (benches/RESULTS.md: probes gemv_b, gemv_f, gemv_o).
// With MOE_K (lib/epilogue.wgsl) the grid's z is the slot s of the token's k chosen experts:
// rows of expert ids[s], x row s (W_down) or 0 (W_gate;W_up), out row s.
// Needs subgroups of at least 8 lanes; matvec_plain.wgsl is the same product without them.
// Bindings:
//   0 step   storage Step          (unused)
//   1 shape  uniform Shape         a = d (at most 16384), b = n rows, c = offset into out and bias
//                                  (SWIGLU, ROPE: the first part's rows), d = out row stride
//                                  (ROPE: the key rows)
//   2 x      uniform vec4f         (4096,): the first 64 KiB of the activations, row 0 = x
//   3 w      texture_storage_2d_array<rgba32uint, read>: the weights (n, d) as WeightTex lays them out
//            (weight_row in prelude.wgsl), 8 f16 (WTYPE 1) or 4 f32 values (0) a texel; quantized
//            (WTYPE 2 and up): GGUF blocks in the device layout of lib/quant.wgsl (q_row)
//   4 bias   storage read  f32     (c + n,) when HAS_BIAS, else a dummy
//   5 out    storage rw    f32     (c + n,); with SWIGLU and ROPE (c,)
//   6 out2   storage rw    f32     with ROPE k_cache (n_blocks * PAGE, d), else a dummy
//   7 out3   storage rw    f32     with ROPE v_cache (n_blocks * PAGE, d), else a dummy
//   8 cos    storage read  f32     (seq_len, HEAD_DIM / 2) with ROPE (RopeTable, src/config.rs), else a dummy
//   9 sin    storage read  f32     (seq_len, HEAD_DIM / 2) with ROPE, else a dummy
//            (4 to 11 are declared, and written, by lib/epilogue.wgsl: 10 LoRA's delta or MoE's routing, 11 LoRA's factors)
//  12 norm   uniform vec4f         (4096,): the RMSNorm weight (d,) in the first 64 KiB of its
//                                  buffer when NORM, else a dummy (a uniform: loads as cheap as x's;
//                                  from a storage buffer they doubled the kernel's time on lavapipe)
// Quantized weights (products_q below) go a unit of 32 values a round instead of a texel: lane j
// loads x's vec4 j of the unit, and each broadcast meets 4 quants of four rows: the invocation
// takes the rows of pair p (as above) and of pair p + (invocations in the grid), so the dispatch
// is (ceil(n / 128), 1, 1). Four rows share each x load and broadcast and halve the workgroups.
// Overrides: WTYPE (lib/quant.wgsl: 0 f32 and 1 f16 texels, else GGUF's id of a block type); NORM and NORM_EPS (normalise x
// first, as above); from lib/epilogue.wgsl: HAS_BIAS; ACCUMULATE (add into out: the residual
// stream, which saves an `add` dispatch); SWIGLU (W is W_gate;W_up, c rows each: out[j] =
// silu(W_gate[j] . x') * (W_up[j] . x'), no bias); ROPE with HEAD_DIM (W is Wq;Wk;Wv, c query
// rows and d key rows: the rotate-half RoPE of cpu::ops::rope at the step's position on q and k,
// q to out, k and v into their cache rows: the decode step's QKV product, RoPE and cache write
// in one dispatch). The stacked matrices (Wq;Wk;Wv, W_gate;W_up) make one product where there
// were three.

// Step, Shape: shaders/prelude.wgsl; outputs, store functions: shaders/lib/epilogue.wgsl

override NORM: bool = false;
override NORM_EPS: f32 = 1e-5;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<uniform> x: array<vec4<f32>, 4096>;
@group(0) @binding(3) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(12) var<uniform> norm: array<vec4<f32>, 4096>;

// One texel's contribution: 8 weights against (xa, xb), or 4 weights against xa.
fn texel_dot(t: vec4<u32>, xa: vec4<f32>, xb: vec4<f32>) -> vec4<f32> {
    if (WTYPE == 1u) {
        return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)) * xa
             + vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)) * xb;
    }
    return bitcast<vec4<f32>>(t) * xa;
}

@compute @workgroup_size(32)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let slot = moe_gemv(gid.z); // 0, or an MoE slot (lib/epilogue.wgsl)
    let n = shape.b;
    let F16 = WTYPE == 1u;
    let per4 = select(1u, 2u, F16);        // vec4s of x per texel
    let texels = shape.a / (4u * per4);    // texels of data; the row is padded to a multiple of 8
    let rows_ab = pair_rows(gid.x);
    let oa = rows_ab.x;
    let ob = rows_ab.y;
    if (WTYPE >= 2u) {
        // quantized: pairs p and p + (invocations in the grid), four rows
        let rows_cd = pair_rows(gid.x + groups.x * 32u);
        let m = vec4<u32>(n - 1u);
        let y = products_q(min(vec4<u32>(rows_ab, rows_cd), m), lane);
        put4(slot, rows_ab, rows_cd, y);
        return;
    }
    // Rows past the end still take part in the broadcasts; they load row n-1 and store nothing.
    let ra = weight_row(textureDimensions(w), texels, min(oa, n - 1u)); // texel k at (k * ra.w + ra.x, ra.y), layer ra.z
    let rb = weight_row(textureDimensions(w), texels, min(ob, n - 1u));
    let j = lane & 7u;
    var acc_a = vec4<f32>(0.0);
    var acc_b = vec4<f32>(0.0);
    var ss = 0.0; // NORM: this lane's part of sum(x^2)
    for (var k = 0u; k < texels; k += 8u) {
        // lane j holds the x values of texel k + j (zero in the padding)
        var xa = vec4<f32>(0.0);
        var xb = vec4<f32>(0.0);
        if (k + j < texels) {
            xa = x[x_base + (k + j) * per4];
            if (F16) { xb = x[x_base + (k + j) * per4 + 1u]; }
            if (NORM) {
                ss += dot(xa, xa) + dot(xb, xb);
                xa *= norm[(k + j) * per4];
                if (F16) { xb *= norm[(k + j) * per4 + 1u]; }
            }
        }
        // Eight texels, unrolled: subgroupBroadcast takes a constant lane.
        { let sa = subgroupBroadcast(xa, 0u); let sb = subgroupBroadcast(xb, 0u);
          acc_a += texel_dot(textureLoad(w, vec2<u32>(k * ra.w + ra.x, ra.y), ra.z), sa, sb);
          acc_b += texel_dot(textureLoad(w, vec2<u32>(k * rb.w + rb.x, rb.y), rb.z), sa, sb); }
        { let sa = subgroupBroadcast(xa, 1u); let sb = subgroupBroadcast(xb, 1u);
          acc_a += texel_dot(textureLoad(w, vec2<u32>((k + 1u) * ra.w + ra.x, ra.y), ra.z), sa, sb);
          acc_b += texel_dot(textureLoad(w, vec2<u32>((k + 1u) * rb.w + rb.x, rb.y), rb.z), sa, sb); }
        { let sa = subgroupBroadcast(xa, 2u); let sb = subgroupBroadcast(xb, 2u);
          acc_a += texel_dot(textureLoad(w, vec2<u32>((k + 2u) * ra.w + ra.x, ra.y), ra.z), sa, sb);
          acc_b += texel_dot(textureLoad(w, vec2<u32>((k + 2u) * rb.w + rb.x, rb.y), rb.z), sa, sb); }
        { let sa = subgroupBroadcast(xa, 3u); let sb = subgroupBroadcast(xb, 3u);
          acc_a += texel_dot(textureLoad(w, vec2<u32>((k + 3u) * ra.w + ra.x, ra.y), ra.z), sa, sb);
          acc_b += texel_dot(textureLoad(w, vec2<u32>((k + 3u) * rb.w + rb.x, rb.y), rb.z), sa, sb); }
        { let sa = subgroupBroadcast(xa, 4u); let sb = subgroupBroadcast(xb, 4u);
          acc_a += texel_dot(textureLoad(w, vec2<u32>((k + 4u) * ra.w + ra.x, ra.y), ra.z), sa, sb);
          acc_b += texel_dot(textureLoad(w, vec2<u32>((k + 4u) * rb.w + rb.x, rb.y), rb.z), sa, sb); }
        { let sa = subgroupBroadcast(xa, 5u); let sb = subgroupBroadcast(xb, 5u);
          acc_a += texel_dot(textureLoad(w, vec2<u32>((k + 5u) * ra.w + ra.x, ra.y), ra.z), sa, sb);
          acc_b += texel_dot(textureLoad(w, vec2<u32>((k + 5u) * rb.w + rb.x, rb.y), rb.z), sa, sb); }
        { let sa = subgroupBroadcast(xa, 6u); let sb = subgroupBroadcast(xb, 6u);
          acc_a += texel_dot(textureLoad(w, vec2<u32>((k + 6u) * ra.w + ra.x, ra.y), ra.z), sa, sb);
          acc_b += texel_dot(textureLoad(w, vec2<u32>((k + 6u) * rb.w + rb.x, rb.y), rb.z), sa, sb); }
        { let sa = subgroupBroadcast(xa, 7u); let sb = subgroupBroadcast(xb, 7u);
          acc_a += texel_dot(textureLoad(w, vec2<u32>((k + 7u) * ra.w + ra.x, ra.y), ra.z), sa, sb);
          acc_b += texel_dot(textureLoad(w, vec2<u32>((k + 7u) * rb.w + rb.x, rb.y), rb.z), sa, sb); }
    }
    var ya = acc_a.x + acc_a.y + acc_a.z + acc_a.w;
    var yb = acc_b.x + acc_b.y + acc_b.z + acc_b.w;
    if (NORM) {
        // lanes 0..7 of every subgroup loaded all of x once between them
        let inv = inverseSqrt(subgroupAdd(select(0.0, ss, lane < 8u)) / f32(shape.a) + NORM_EPS);
        ya *= inv;
        yb *= inv;
    }
    put2(slot, oa, ob, ya, yb);
}

// The quantized weights' loop (lib/quant.wgsl): four rows against x, a unit of 32 values a
// round: lane j of each 8 loads x's vec4 j of the unit and the broadcasts hand it to the others,
// each broadcast feeding all four rows; per half of 16 the products sum q·x in f32, scaled once
// by d, plus m·sum(x). Returns the four rows' results, divided by the RMS with NORM.
fn products_q(o: vec4<u32>, lane: u32) -> vec4<f32> {
    let d = shape.a;
    let ra = q_row(d, o.x);
    let rb = q_row(d, o.y);
    let rc = q_row(d, o.z);
    let rd = q_row(d, o.w);
    let j = lane & 7u;
    var acc = vec4<f32>(0.0);
    var ss = 0.0;
    for (var u = 0u; u < d / 32u; u++) {
        var xv = x[x_base + u * 8u + j];
        if (NORM) {
            ss += dot(xv, xv);
            xv *= norm[u * 8u + j];
        }
        let ua = load_unit(ra, d, u);
        let ub = load_unit(rb, d, u);
        let uc = load_unit(rc, d, u);
        let ud = load_unit(rd, d, u);
        // q·x of the four rows and sum(x), for the first and the second half of the unit
        var lo = vec4<f32>(0.0);
        var hi = vec4<f32>(0.0);
        var sx = vec4<f32>(0.0);
        var sy = vec4<f32>(0.0);
        { let s = subgroupBroadcast(xv, 0u); lo += q4(ua, ub, uc, ud, 0u, s); sx += s; }
        { let s = subgroupBroadcast(xv, 1u); lo += q4(ua, ub, uc, ud, 1u, s); sx += s; }
        { let s = subgroupBroadcast(xv, 2u); lo += q4(ua, ub, uc, ud, 2u, s); sx += s; }
        { let s = subgroupBroadcast(xv, 3u); lo += q4(ua, ub, uc, ud, 3u, s); sx += s; }
        { let s = subgroupBroadcast(xv, 4u); hi += q4(ua, ub, uc, ud, 4u, s); sy += s; }
        { let s = subgroupBroadcast(xv, 5u); hi += q4(ua, ub, uc, ud, 5u, s); sy += s; }
        { let s = subgroupBroadcast(xv, 6u); hi += q4(ua, ub, uc, ud, 6u, s); sy += s; }
        { let s = subgroupBroadcast(xv, 7u); hi += q4(ua, ub, uc, ud, 7u, s); sy += s; }
        let sum = vec2<f32>(dot(sx, vec4<f32>(1.0)), dot(sy, vec4<f32>(1.0)));
        acc += vec4<f32>(ua.d.x, ub.d.x, uc.d.x, ud.d.x) * lo + vec4<f32>(ua.d.y, ub.d.y, uc.d.y, ud.d.y) * hi
             + vec4<f32>(dot(ua.m, sum), dot(ub.m, sum), dot(uc.m, sum), dot(ud.m, sum));
    }
    if (NORM) {
        acc *= inverseSqrt(subgroupAdd(select(0.0, ss, lane < 8u)) / f32(d) + NORM_EPS);
    }
    return acc;
}

// q·s of vec4 i of four units.
fn q4(ua: Unit, ub: Unit, uc: Unit, ud: Unit, i: u32, s: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(unit_q(ua, i), s), dot(unit_q(ub, i), s), dot(unit_q(uc, i), s), dot(unit_q(ud, i), s));
}
