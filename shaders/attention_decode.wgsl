// attention_decode.wgsl: causal grouped-query attention for rows that each have their own
// sequence and position (decode steps, batches of sequences), split-K (flash-decoding): the keys
// 0..=pos of a row are cut into n_splits partitions of split_len keys, processed by separate
// workgroups in parallel. Each partition keeps the online-softmax state (running max m, running
// sum l, accumulator acc, in f32) over tiles of 64 keys and writes it out; attention_reduce.wgsl
// then merges the partitions with a log-sum-exp. With n_splits = 1 the kernel is a single pass
// and writes the normalised output itself.
// Key s of the row's sequence lives in cache row table[seq][s / PAGE] * PAGE + s % PAGE; query
// head h reads KV head h / kv_mul (GQA by index, nothing repeated).
// CPU twin: cpu::ops::attention (contiguous K/V, f64).
// Dispatch: (n_heads, T, n_splits); 64 invocations per (head, row, partition). In each tile,
// invocation j scores key s0 + j and computes its probability once; then it owns output columns
// j, j + 64, ... (HEAD_DIM up to 256).
// Bindings:
//   0 step    storage Step         n_tokens T, n_splits, split_len, rows[t].pos / .seq
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads, c = block-table row length, d = max splits
//   2 q       storage read  f32    (T, n_heads * HEAD_DIM)
//   3 k_cache storage read  f32    (n_blocks * PAGE, n_kv_heads * HEAD_DIM)
//   4 v_cache storage read  f32    (n_blocks * PAGE, n_kv_heads * HEAD_DIM)
//   5 tables  storage read  u32    (n_seqs, c) block tables
//   6 part    storage rw    f32    (T, n_heads, d, HEAD_DIM + 2) per partition: acc[HEAD_DIM], m, l
//   7 out     storage rw    f32    (T, n_heads * HEAD_DIM), written when n_splits = 1
// Overrides: HEAD_DIM (at most 256), PAGE (rows per cache page).

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
const WG: u32 = 64u;
const MAX_COLS: u32 = 4u; // ceil(256 / WG)

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

var<workgroup> q_row: array<f32, HEAD_DIM>; // the scaled query
var<workgroup> p: array<f32, WG>;           // scores, then probabilities, of the tile
var<workgroup> v_rows: array<u32, WG>;      // cache row of each key of the tile

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n_heads = shape.a;
    let kv_dim = shape.b * HEAD_DIM;
    let h = wid.x;
    let t = wid.y;
    let split = wid.z;
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let kv_col = (h / (n_heads / shape.b)) * HEAD_DIM;
    let table = step_seq(t) * shape.c;
    let n = step_pos(t) + 1u;
    let s_begin = split * step.split_len;
    let s_end = min(n, s_begin + step.split_len);
    let scale = inverseSqrt(f32(HEAD_DIM));
    for (var i = j; i < HEAD_DIM; i += WG) {
        q_row[i] = q[(t * n_heads + h) * HEAD_DIM + i] * scale;
    }
    workgroupBarrier();

    var m = -3.0e38; // running max
    var l = 0.0;     // running sum of exp(score - m)
    var acc: array<f32, MAX_COLS>; // columns j + k*WG
    for (var s0 = s_begin; s0 < s_end; s0 += WG) {
        let s = s0 + j;
        let valid = s < s_end;
        var row = 0u;
        var score = -3.0e38;
        if (valid) {
            row = tables[table + s / PAGE] * PAGE + s % PAGE;
            var dot = 0.0;
            for (var i = 0u; i < HEAD_DIM; i++) {
                dot += q_row[i] * k_cache[row * kv_dim + kv_col + i];
            }
            score = dot;
        }
        p[j] = score;
        v_rows[j] = row;
        workgroupBarrier();
        let cnt = min(WG, s_end - s0);
        var m_new = m;
        for (var i = 0u; i < cnt; i++) { m_new = max(m_new, p[i]); }
        workgroupBarrier(); // everyone has read the scores
        p[j] = select(0.0, exp(score - m_new), valid);
        workgroupBarrier();
        let correction = exp(m - m_new);
        var p_sum = 0.0;
        for (var i = 0u; i < cnt; i++) { p_sum += p[i]; }
        l = l * correction + p_sum;
        for (var k = 0u; k < MAX_COLS; k++) {
            let col = j + k * WG;
            if (col < HEAD_DIM) {
                var pv = 0.0;
                for (var i = 0u; i < cnt; i++) {
                    pv += p[i] * v_cache[v_rows[i] * kv_dim + kv_col + col];
                }
                acc[k] = acc[k] * correction + pv;
            }
        }
        m = m_new;
        workgroupBarrier(); // p and v_rows are rewritten by the next tile
    }
    if (step.n_splits == 1u) {
        for (var k = 0u; k < MAX_COLS; k++) {
            let col = j + k * WG;
            if (col < HEAD_DIM) { out[(t * n_heads + h) * HEAD_DIM + col] = acc[k] / l; }
        }
        return;
    }
    // An empty partition (past this row's length) leaves m = -3e38, l = 0, acc = 0.
    let base = ((t * n_heads + h) * shape.d + split) * (HEAD_DIM + 2u);
    for (var k = 0u; k < MAX_COLS; k++) {
        let col = j + k * WG;
        if (col < HEAD_DIM) { part[base + col] = acc[k]; }
    }
    if (j == 0u) {
        part[base + HEAD_DIM] = m;
        part[base + HEAD_DIM + 1u] = l;
    }
}
