// qk_norm_rope.wgsl: Qwen3's attention input. From the rows q;k;v of the QKV product, each head
// of q and of k is RMS-normalised over its HEAD_DIM values and scaled by its norm weight, then
// rotated by RoPE at the token's position; q goes to q, k and v into the token's cache rows.
//   q[t, head]        = rope(rmsnorm(qkv[t, head]) * q_norm)
//   k_cache[slot[t]]  = rope(rmsnorm(qkv[t, q_dim + head]) * k_norm), per KV head
//   v_cache[slot[t]]  = qkv[t, q_dim + kv_dim:]
// CPU twin: cpu::forward's `rmsnorm` over heads (q_norm, k_norm) then cpu::ops::rope, and the
// KV cache write. (Models without q/k norms get RoPE and the cache write fused into the product:
// lib/epilogue.wgsl's put_rope.)
// Dispatch: (n_heads + 2 n_kv_heads, T, 1): one workgroup of 64 per head and token; strided sum
// of squares, tree reduction in workgroup memory, then each invocation rotates its pairs
// (i, i + HEAD_DIM / 2). V heads are copied, a pair (i, i + HEAD_DIM / 2) at a time.
// Bindings:
//   0 step    storage Step          n_tokens T, each row's position and cache slot
//   1 shape   uniform Shape         a = q_dim, b = kv_dim, c = bitcast<u32>(eps as f32)
//   2 qkv     storage read  f32     (T_max, q_dim + 2 kv_dim): the product's rows
//   3 qk_norm storage read  f32     (2, HEAD_DIM): q_norm then k_norm weights
//   4 q       storage rw    f32     (T_max, q_dim)
//   5 k_cache storage rw    u32     (n_blocks * PAGE, kv_dim values as lib/kv.wgsl lays them)
//   6 v_cache storage rw    u32     (the same)
//   7 cos     storage read  f32     (seq_len, HEAD_DIM / 2) (RopeTable, src/config.rs)
//   8 sin     storage read  f32     (seq_len, HEAD_DIM / 2)
// Overrides: HEAD_DIM, KV_F16 (lib/kv.wgsl: an f16 cache).

// Step, Shape: shaders/prelude.wgsl

override HEAD_DIM: u32 = 64u;
override KV_F16: bool = false; // lib/kv.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> qk_norm: array<f32>;
@group(0) @binding(4) var<storage, read_write> q: array<f32>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<u32>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<u32>;
@group(0) @binding(7) var<storage, read> cos_t: array<f32>;
@group(0) @binding(8) var<storage, read> sin_t: array<f32>;

const WG: u32 = 64u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = wid.y;
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let q_dim = shape.a;
    let kv_dim = shape.b;
    let col = wid.x * HEAD_DIM; // the head's first column in q;k;v
    let src = t * (q_dim + 2u * kv_dim) + col;
    let half = HEAD_DIM / 2u;
    if (col >= q_dim + kv_dim) { // a V head: into the cache row as it is
        for (var i = lid; i < half; i += WG) {
            let r = kv_pair_word(step_slot(t), kv_dim, col - q_dim - kv_dim + i);
            let a = qkv[src + i];
            let b = qkv[src + i + half];
            if (KV_F16) {
                v_cache[r] = kv_pack(a, b);
            } else {
                v_cache[r] = bitcast<u32>(a);
                v_cache[r + half] = bitcast<u32>(b);
            }
        }
        return;
    }
    var ss = 0.0;
    for (var i = lid; i < HEAD_DIM; i += WG) {
        let v = qkv[src + i];
        ss += v * v;
    }
    partial[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) { partial[lid] += partial[lid + s]; }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(HEAD_DIM) + bitcast<f32>(shape.c));
    let is_q = col < q_dim;
    let w = select(HEAD_DIM, 0u, is_q); // this head's norm weights
    let p = step_pos(t) * half;
    for (var i = lid; i < half; i += WG) {
        let a = qk_norm[w + i] * (qkv[src + i] * inv);
        let b = qk_norm[w + i + half] * (qkv[src + i + half] * inv);
        let c = cos_t[p + i];
        let s = sin_t[p + i];
        let ra = a * c - b * s;
        let rb = b * c + a * s;
        if (is_q) {
            q[t * q_dim + col + i] = ra;
            q[t * q_dim + col + i + half] = rb;
        } else {
            let r = kv_pair_word(step_slot(t), kv_dim, col - q_dim + i);
            if (KV_F16) {
                k_cache[r] = kv_pack(ra, rb);
            } else {
                k_cache[r] = bitcast<u32>(ra);
                k_cache[r + half] = bitcast<u32>(rb);
            }
        }
    }
}
