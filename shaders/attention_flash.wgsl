// attention_flash.wgsl: causal grouped-query attention for a prompt (prefill), FlashAttention-2
// style. The T query rows belong to one sequence at consecutive positions pos0 .. pos0 + T - 1.
// A workgroup takes BR = 64 query rows of one head, one row per invocation, and walks the keys in
// tiles of 16 (a page, or a sixteenth-aligned slice of one: ONE block-table lookup per tile). Per
// row it keeps the running max m, the running sum l and the accumulator acc (HEAD_DIM wide) in
// f32 registers; each tile's scores are computed, then m, l and acc are rescaled once by
// exp(m_old - m_new) and the tile's p·V added. The loop stops at the group's last position
// (causal bound; later rows mask keys past their own position). 1/√d is folded into q once.
// Query head h reads KV head h / kv_mul: K and V are never repeated. Memory: O(T) besides the
// cache; the scores never leave registers.
// Why a row per invocation and no shared-memory tiles: all invocations read the same key at the
// same time (one broadcast load), and the loop has no barrier. On llvmpipe a barrier is a
// coroutine switch per 8 lanes and dominated the shared-memory version.
// CPU twin: cpu::ops::attention (contiguous K/V, f64).
// Dispatch: (ceil(T / 64), n_heads, 1); 64 invocations, one query row each.
// Bindings:
//   0 step    storage Step         n_tokens T, rows[0].pos (pos0) and .seq
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads, c = block-table row length
//   2 q       storage read  vec4   (T, n_heads * HEAD_DIM / 4)
//   3 k_cache storage read  vec4<u32> (n_blocks * PAGE, n_kv_heads * HEAD_DIM values, lib/kv.wgsl)
//   4 v_cache storage read  vec4<u32> (the same)
//   5 tables  storage read  u32    (n_seqs, c) block tables
//   6 out     storage rw    vec4   (T, n_heads * HEAD_DIM / 4)
// Overrides: HEAD_DIM (a multiple of 16, at most 256), PAGE (rows per page, a multiple of 16),
// KV_F16 (lib/kv.wgsl: an f16 cache).

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
override KV_F16: bool = false; // lib/kv.wgsl
const BR: u32 = 64u;     // query rows per workgroup
const TILE: u32 = 16u;   // keys per tile
const MAX_V4: u32 = 64u; // HEAD_DIM / 4 at 256

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

@compute @workgroup_size(BR)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_heads = shape.a;
    let d4 = HEAD_DIM / 4u;
    let d8 = HEAD_DIM / 8u;
    let h = wid.y;
    let kvh = h / (n_heads / shape.b); // GQA: this head's K/V head
    let t_n = step.n_tokens;
    let t0 = wid.x * BR;
    let t = min(t0 + lid, t_n - 1u); // rows past T compute a copy of the last row, unwritten
    let pos0 = step_pos(0u);
    let my_pos = pos0 + t;
    let last_pos = pos0 + min(t0 + BR, t_n) - 1u; // uniform: the causal bound of the group
    let table = step_seq(0u) * shape.c;
    let scale = inverseSqrt(f32(HEAD_DIM));

    var qv: array<vec4<f32>, MAX_V4>;
    for (var i = 0u; i < d4; i++) { qv[i] = q[(t * n_heads + h) * d4 + i] * scale; }
    var m = -3.0e38; // running max
    var l = 0.0;     // running sum of exp(score - m)
    var acc: array<vec4<f32>, MAX_V4>;
    var sc: array<f32, TILE>;
    for (var s0 = 0u; s0 <= last_pos; s0 += TILE) {
        let row0 = tables[table + s0 / PAGE] * PAGE + s0 % PAGE; // one lookup per tile
        let n = min(TILE, last_pos + 1u - s0); // keys of the tile that exist
        var m_new = m;
        for (var c = 0u; c < n; c++) {
            let kr = kv_head_v4(((row0 + c) * shape.b + kvh) * HEAD_DIM);
            var dot = vec4<f32>(0.0);
            for (var i = 0u; i < d8; i++) {
                let k = kv_quads(k_cache[kr + i], k_cache[kr + i + kv_hi()]);
                dot += qv[i] * k.lo + qv[i + d8] * k.hi;
            }
            let s = select(-3.0e38, dot.x + dot.y + dot.z + dot.w, s0 + c <= my_pos);
            sc[c] = s;
            m_new = max(m_new, s);
        }
        let correction = exp(m - m_new);
        l *= correction;
        for (var i = 0u; i < d4; i++) { acc[i] *= correction; }
        for (var c = 0u; c < n; c++) {
            let p = exp(sc[c] - m_new); // 0 for masked keys
            l += p;
            let vr = kv_head_v4(((row0 + c) * shape.b + kvh) * HEAD_DIM);
            for (var i = 0u; i < d8; i++) {
                let v = kv_quads(v_cache[vr + i], v_cache[vr + i + kv_hi()]);
                acc[i] += p * v.lo;
                acc[i + d8] += p * v.hi;
            }
        }
        m = m_new;
    }
    if (t0 + lid < t_n) {
        for (var i = 0u; i < d4; i++) { out[(t * n_heads + h) * d4 + i] = acc[i] / l; }
    }
}
