// attention_flash.wgsl: causal grouped-query attention for a prompt (prefill), FlashAttention-2
// style. The T query rows belong to one sequence at consecutive positions pos0 .. pos0 + T - 1.
// One workgroup takes a tile of BR query rows of one head and walks the keys in tiles of BC = 16
// (a divisor of the page, so each key tile costs ONE block-table lookup), loading K then V of
// the tile into workgroup memory once for all BR rows. Per row it keeps the running max m, the
// running sum l and the accumulator acc in f32; each tile rescales them by exp(m_old - m_new).
// The loop stops at the tile's last position (causal bound); 1/√d is folded into q once on load.
// Query head h reads KV head h / kv_mul: K and V are never repeated. Memory: O(T) besides the
// cache; the scores never leave the workgroup.
// CPU twin: cpu::ops::attention (contiguous K/V, f64).
// Dispatch: (ceil(T / BR), n_heads, 1); 256 invocations = BR rows × BC keys; invocation (r, c)
// scores key c of the tile for row r, then owns output columns c, c + BC, ... of row r.
// Bindings:
//   0 step    storage Step         n_tokens T, rows[0].pos (pos0) / .seq
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads, c = block-table row length
//   2 q       storage read  f32    (T, n_heads * HEAD_DIM)
//   3 k_cache storage read  f32    (n_blocks * PAGE, n_kv_heads * HEAD_DIM)
//   4 v_cache storage read  f32    (n_blocks * PAGE, n_kv_heads * HEAD_DIM)
//   5 tables  storage read  u32    (n_seqs, c) block tables
//   6 out     storage rw    f32    (T, n_heads * HEAD_DIM)
// Overrides: HEAD_DIM (a multiple of 16, at most 256), PAGE (a multiple of 16). Workgroup
// memory: (BR + BC) * HEAD_DIM * 4 + 1 KiB (17 KiB at HEAD_DIM 128).

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
const BR: u32 = 16u; // query rows per workgroup
const BC: u32 = 16u; // keys per tile
const MAX_COLS: u32 = 16u; // HEAD_DIM / BC at HEAD_DIM 256

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

var<workgroup> q_tile: array<f32, BR * HEAD_DIM>;  // (BR, HEAD_DIM) scaled queries
var<workgroup> kv_tile: array<f32, BC * HEAD_DIM>; // (BC, HEAD_DIM) K, then V, of the key tile
var<workgroup> p_tile: array<f32, BR * BC>;        // (BR, BC) scores, then probabilities

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_heads = shape.a;
    let kv_dim = shape.b * HEAD_DIM;
    let h = wid.y;
    let kv_col = (h / (n_heads / shape.b)) * HEAD_DIM; // GQA: this head's K/V columns
    let t_n = step.n_tokens;
    let t0 = wid.x * BR;
    let r = lid / BC;
    let c = lid % BC;
    let pos0 = step_pos(0u);
    let table = step_seq(0u) * shape.c;
    let scale = inverseSqrt(f32(HEAD_DIM));

    // Q tile, scaled once.
    for (var i = lid; i < BR * HEAD_DIM; i += 256u) {
        let t = t0 + i / HEAD_DIM;
        q_tile[i] = select(0.0, q[(t * n_heads + h) * HEAD_DIM + i % HEAD_DIM] * scale, t < t_n);
    }
    let my_pos = pos0 + min(t0 + r, t_n - 1u); // rows past T compute a copy of the last row, unwritten
    let last_pos = pos0 + min(t0 + BR, t_n) - 1u;

    var m = -3.0e38; // running max of row r
    var l = 0.0;     // running sum of exp(score - m)
    var acc: array<f32, MAX_COLS>; // columns c + k*BC of row r
    for (var s0 = 0u; s0 <= last_pos; s0 += BC) {
        // One lookup: keys s0 .. s0 + BC - 1 share a page.
        let row0 = tables[table + s0 / PAGE] * PAGE + s0 % PAGE;
        workgroupBarrier(); // the previous tile's V is no longer read
        // Keys past the tile's last position are rows nobody wrote: load zeros, never stale values
        // (0 × a stale Inf or NaN would poison the sums).
        for (var i = lid; i < BC * HEAD_DIM; i += 256u) {
            let key = i / HEAD_DIM;
            kv_tile[i] = select(0.0, k_cache[(row0 + key) * kv_dim + kv_col + i % HEAD_DIM], s0 + key <= last_pos);
        }
        workgroupBarrier();
        var score = 0.0;
        for (var i = 0u; i < HEAD_DIM; i++) {
            score += q_tile[r * HEAD_DIM + i] * kv_tile[c * HEAD_DIM + i];
        }
        let valid = s0 + c <= my_pos;
        p_tile[lid] = select(-3.0e38, score, valid);
        workgroupBarrier();
        var m_new = m;
        for (var i = 0u; i < BC; i++) { m_new = max(m_new, p_tile[r * BC + i]); }
        workgroupBarrier(); // everyone has read the scores
        p_tile[lid] = select(0.0, exp(score - m_new), valid);
        for (var i = lid; i < BC * HEAD_DIM; i += 256u) {
            let key = i / HEAD_DIM;
            kv_tile[i] = select(0.0, v_cache[(row0 + key) * kv_dim + kv_col + i % HEAD_DIM], s0 + key <= last_pos);
        }
        workgroupBarrier();
        let correction = exp(m - m_new);
        var p_sum = 0.0;
        for (var i = 0u; i < BC; i++) { p_sum += p_tile[r * BC + i]; }
        l = l * correction + p_sum;
        for (var k = 0u; k < HEAD_DIM / BC; k++) {
            var pv = 0.0;
            for (var i = 0u; i < BC; i++) {
                pv += p_tile[r * BC + i] * kv_tile[i * HEAD_DIM + c + k * BC];
            }
            acc[k] = acc[k] * correction + pv;
        }
        m = m_new;
    }
    let t = t0 + r;
    if (t < t_n) {
        for (var k = 0u; k < HEAD_DIM / BC; k++) {
            out[(t * n_heads + h) * HEAD_DIM + c + k * BC] = acc[k] / l;
        }
    }
}
