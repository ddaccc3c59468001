// lib/epilogue.wgsl: appended whole to the four matrix kernels (matvec.wgsl, matvec_plain.wgsl,
// matmat.wgsl, matmat_plain.wgsl; src/gpu/kernels.rs), after the kernel and before prelude.wgsl:
// the outputs they write and how they store what a product gives, so the four kernels compute
// rows and leave the storing to these functions. The kernel declares step and shape (bindings 0
// and 1, types from prelude.wgsl), x and w (2 and 3), and its own bindings from 10 on.
//   put(t, o, v)             out[t, c + o] (+)= v + bias[c + o]: a plain row (stride d)
//   put_swiglu(t, j, g, u)   out[t, j] = silu(g) * u (stride c): gate row j and up row c + j
//   put_rope(t, oa, a, b)    rows oa and oa + HEAD_DIM / 2 of Wq;Wk;Wv of token t, RoPE applied,
//                            q to out, k and v into the token's cache rows
//   put2(t, oa, ob, a, b)    two rows of token t in whichever of the three ways the overrides
//                            say (the subgroup kernels' rows: SWIGLU j and c + j, ROPE a pair)
// CPU twin: the store of cpu::ops::matmul (with its bias; ACCUMULATE: the residual add after it),
// cpu::ops::swiglu with SWIGLU, cpu::ops::rope and the KV cache write with ROPE.
// Bindings (the same numbers in the four kernels; each kernel's header gives the shapes):
//   4 bias   storage read  f32     (c + n,) when HAS_BIAS, else a dummy
//   5 out    storage rw    f32     (T, d): rows at column offset c; with SWIGLU and ROPE (T, c)
//   6 out2   storage rw    u32     with ROPE k_cache (n_blocks * PAGE, d values as lib/kv.wgsl lays them), else a dummy
//   7 out3   storage rw    u32     with ROPE v_cache (the same), else a dummy
//   8 cos    storage read  f32     (seq_len, HEAD_DIM / 2) with ROPE (RopeTable, src/config.rs), else a dummy
//   9 sin    storage read  f32     (seq_len, HEAD_DIM / 2) with ROPE, else a dummy
//  10 aux          storage read u32   with LORA_ADAPTERS lora_delta (T, LORA_ADAPTERS, n) f32 bits:
//                                     B_a·A_a·x' of each adapter a (src/gpu/lora.rs records the two
//                                     products); with MOE_K the routing moe_route.wgsl wrote; else a
//                                     dummy (one binding for both keeps the kernels within WebGPU's 8
//                                     storage buffers a stage; no product is both)
//  11 lora_factors uniform vec4<f32>  (4096,) with LORA_ADAPTERS: (max_seqs, LORA_ADAPTERS) each
//                                     sequence's factor per adapter, else a dummy
// Shape: b = n rows, c = column offset into out and bias (SWIGLU, ROPE: the first part's rows,
// c = q_dim with ROPE), d = out row stride (ROPE: the key rows, kv_dim).
// Overrides: HAS_BIAS (add bias[c + o]; with ROPE bias[o]); ACCUMULATE (add into out: the
// residual stream, which saves an `add` dispatch); SWIGLU (W is W_gate;W_up, c rows each, no
// bias); ROPE with HEAD_DIM (W is Wq;Wk;Wv, c query rows and d key rows: the rotate-half RoPE of
// cpu::ops::rope at the token's position on q and k, k and v into cache row slot[t], f32 or f16
// as KV_F16 says: lib/kv.wgsl, appended too); LORA_ADAPTERS (add the unmerged LoRA update of row o,
// the sum over adapters a of lora_factors[seq(t), a] * lora_delta[t, a, o], to the product before
// bias, RoPE, SwiGLU or the residual add: each row with its own sequence's factors; CPU twin
// lora::LoraPair::apply); MOE_K with MOE_X_PER_TOKEN (an MoE block's expert product: W stacks
// every expert's rows, shape.b each; the grid's z is a GEMV's slot or a GEMM's expert, and
// moe_gemv / moe_gemm_rows / moe_x_row / moe_out_row below say which rows of W, x and out a
// workgroup takes; CPU twin moe::block's per-expert products).
// Dispatch: none; the kernels' functions.

override HAS_BIAS: bool = false;
override ACCUMULATE: bool = false;
override SWIGLU: bool = false;
override ROPE: bool = false;
override HEAD_DIM: u32 = 64u;
override KV_F16: bool = false; // lib/kv.wgsl: the cache ROPE writes holds f16
override LORA_ADAPTERS: u32 = 0u;
override MOE_K: u32 = 0u;              // MoE expert products: the experts a token picks (0: dense)
override MOE_X_PER_TOKEN: bool = true; // MoE: x has a row per token (W_gate;W_up), else per assignment (W_down)

@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> out2: array<u32>;
@group(0) @binding(7) var<storage, read_write> out3: array<u32>;
@group(0) @binding(8) var<storage, read> cos_t: array<f32>;
@group(0) @binding(9) var<storage, read> sin_t: array<f32>;
@group(0) @binding(10) var<storage, read> aux: array<u32>;
@group(0) @binding(11) var<uniform> lora_factors: array<vec4<f32>, 1024>;

// MoE (MOE_K > 0): W stacks every expert's rows (shape.b each) and `aux` holds what
// moe_route.wgsl wrote: ids[t * K + s] (assignment a = t * K + s: token t's s-th expert), its
// weights, then per expert e its count and assignments. A GEMV (one token) runs slot s = the
// grid's z over expert ids[s], x row s (or 0 per token), out row s; a GEMM runs expert e = the
// grid's z over its assignments: out row a, x row a (or a / K per token).
const MOE_MAX_T: u32 = 256u; // MAX_STEP_TOKENS
var<private> moe_e: u32;
var<private> x_base: u32 = 0u; // GEMV: the vec4 where x's row starts in the uniform window

fn moe_list(e: u32) -> u32 { return 2u * MOE_MAX_T * MOE_K + e * (MOE_MAX_T + 1u); }

// GEMV: slot `s` of the step's one token (0 when dense); picks its expert's rows and x row.
fn moe_gemv(s: u32) -> u32 {
    if (MOE_K == 0u) { return 0u; }
    w_row_base = aux[s] * shape.b;
    if (!MOE_X_PER_TOKEN) { x_base = s * shape.a / 4u; }
    return s;
}

// GEMM: the rows of the product for the grid's z = `e`: the step's tokens (dense) or expert
// e's assignments, whose rows it picks.
fn moe_gemm_rows(e: u32) -> u32 {
    if (MOE_K == 0u) { return step.n_tokens; }
    moe_e = e;
    w_row_base = e * shape.b;
    return aux[moe_list(e)];
}

// GEMM: the out row and the x row of the product's row j.
fn moe_out_row(j: u32) -> u32 {
    if (MOE_K == 0u) { return j; }
    return aux[moe_list(moe_e) + 1u + j];
}
fn moe_x_row(j: u32) -> u32 {
    let a = moe_out_row(j);
    if (MOE_K == 0u || !MOE_X_PER_TOKEN) { return a; }
    return a / max(MOE_K, 1u);
}

// The LoRA update of row o of token t, its sequence's factors applied (0 without adapters).
fn lora(t: u32, o: u32) -> f32 {
    var y = 0.0;
    for (var a = 0u; a < LORA_ADAPTERS; a++) {
        let f = step_seq(t) * LORA_ADAPTERS + a;
        y += lora_factors[f / 4u][f % 4u] * bitcast<f32>(aux[(t * LORA_ADAPTERS + a) * shape.b + o]);
    }
    return y;
}

// Store row o of token t: out[t, c + o] (+)= v + bias[c + o].
fn put(t: u32, o: u32, v: f32) {
    var y = v + lora(t, o);
    if (HAS_BIAS) { y += bias[shape.c + o]; }
    let i = t * shape.d + shape.c + o;
    if (ACCUMULATE) { y += out[i]; }
    out[i] = y;
}

// SWIGLU: store output j of token t from gate row j (g) and up row c + j (u).
fn put_swiglu(t: u32, j: u32, g: f32, u: f32) {
    let gl = g + lora(t, j);
    out[t * shape.c + j] = gl / (1.0 + exp(-gl)) * (u + lora(t, shape.c + j));
}

// ROPE: store rows oa and oa + HEAD_DIM / 2 of Wq;Wk;Wv (values a, b) of token t: q and k
// rotated at its position, q to out (T, c), k and v into its cache row of out2 and out3.
fn put_rope(t: u32, oa: u32, a: f32, b: f32) {
    let half = HEAD_DIM / 2u;
    let ob = oa + half;
    var ya = a + lora(t, oa);
    var yb = b + lora(t, ob);
    if (HAS_BIAS) { ya += bias[oa]; yb += bias[ob]; }
    let q_dim = shape.c;
    let kv_dim = shape.d;
    if (oa >= q_dim + kv_dim) { // v
        let r = kv_pair_word(step_slot(t), kv_dim, oa - q_dim - kv_dim);
        if (KV_F16) {
            out3[r] = kv_pack(ya, yb);
        } else {
            out3[r] = bitcast<u32>(ya);
            out3[r + half] = bitcast<u32>(yb);
        }
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
        let r = kv_pair_word(step_slot(t), kv_dim, oa - q_dim);
        if (KV_F16) {
            out2[r] = kv_pack(ra, rb);
        } else {
            out2[r] = bitcast<u32>(ra);
            out2[r + half] = bitcast<u32>(rb);
        }
    }
}

// The two rows invocation p of a GEMV's or GEMM's grid computes: rows oa = (p / 8) * 16 + p % 8
// and oa + 8 (the 8 lanes of a subgroup read 8 neighbouring rows, contiguous in the weight
// texture); with SWIGLU gate row p and up row c + p; with ROPE the rotation pair p of a head.
fn pair_rows(p: u32) -> vec2<u32> {
    if (SWIGLU) { return vec2<u32>(p, p + shape.c); }
    if (ROPE) {
        let oa = (p / (HEAD_DIM / 2u)) * HEAD_DIM + p % (HEAD_DIM / 2u);
        return vec2<u32>(oa, oa + HEAD_DIM / 2u);
    }
    let oa = (p / 8u) * 16u + (p & 7u);
    return vec2<u32>(oa, oa + 8u);
}

// Store rows oa and ob of token t (values a, b) as the overrides say: with SWIGLU output oa
// (oa = j, ob = c + j; nothing past c), with ROPE the rotation pair oa, ob = oa + HEAD_DIM / 2
// (heads are whole: nothing past n), else two plain rows, each only below n.
fn put2(t: u32, oa: u32, ob: u32, a: f32, b: f32) {
    if (SWIGLU) {
        if (oa < shape.c) { put_swiglu(t, oa, a, b); }
        return;
    }
    if (ROPE) {
        if (oa < shape.b) { put_rope(t, oa, a, b); }
        return;
    }
    if (oa < shape.b) { put(t, oa, a); }
    if (ob < shape.b) { put(t, ob, b); }
}

// put2 for the four rows of two pairs (ab, cd), values v: the quantized GEMV's and the GEMM's
// invocations.
fn put4(t: u32, ab: vec2<u32>, cd: vec2<u32>, v: vec4<f32>) {
    put2(t, ab.x, ab.y, v.x, v.y);
    put2(t, cd.x, cd.y, v.z, v.w);
}
