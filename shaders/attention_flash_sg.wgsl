// attention_flash_sg.wgsl: attention_flash.wgsl with the key and value rows shared through
// subgroup broadcasts, and for a few rows across the query heads of a KV head (GQA). Every
// invocation of the workgroup reads the same key at the same time; here lane j of each subgroup
// loads the quads j, j + 8, ... of the key (then value) row (values 4j .. 4j + 3 and HEAD_DIM / 2
// + 4j .., lib/kv.wgsl) and `subgroupBroadcast` hands them to the other lanes, so a row costs one
// load per subgroup instead of one per invocation (on lavapipe a storage load costs a scalar
// load per lane and component). A workgroup's query rows are (row, head) pairs of G query heads
// of one KV head (G from the grid: n_heads / its y, 1 or a divisor of n_heads / n_kv_heads):
// pair u = t * G + g is row t of head wid.y * G + g. Each invocation takes QR = 4 consecutive
// pairs (4 lid ... 4 lid + 3), so every loaded key and value feeds the 32 pairs of a subgroup:
// the loads dominate on lavapipe (benches/RESULTS.md). With G = 1 these are 32 rows of one head;
// a step of fewer rows than that (a speculative verify: 8 rows) takes G = n_heads / n_kv_heads
// (Kernels::flash_grid), so that its pairs still fill a subgroup (8 rows of Qwen2.5-0.5B's 7
// heads a KV head are 56 pairs). The causal bound is the subgroup's (subgroupMax of its last
// rows), so a subgroup of early rows stops early, and one whose pairs all lie past T * G leaves
// at once: lavapipe runs each subgroup on its own.
// Otherwise the same FlashAttention-2 walk: BR = 256 pairs per workgroup, keys in tiles of 16
// with one block-table lookup each, running max m, sum l and accumulator acc in f32 per pair,
// rescaled once per tile; causal bound; 1/√d folded into q. Needs subgroups of at least 8 lanes.
// CPU twin: cpu::ops::attention (contiguous K/V, f64); plain twin: attention_flash.wgsl.
// Dispatch: (ceil(T * G / 256), n_heads / G, 1) (Kernels::flash_grid); 64 invocations, QR pairs each.
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
const QR: u32 = 4u;      // (row, head) pairs per invocation: 4 lid, 4 lid + 1, 4 lid + 2, 4 lid + 3
const BR: u32 = 64u * QR; // pairs per workgroup
const TILE: u32 = 16u;   // keys per tile
const MAX_V4: u32 = 64u; // HEAD_DIM / 4 at 256

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

// acc[r] += p[r] * row for the 8 vec4s (or the g < 8 left) of a row chunk whose vec4 j lane j
// holds. Unrolled, since subgroupBroadcast takes a constant lane.
fn fma_chunk(acc: ptr<function, array<array<vec4<f32>, MAX_V4>, QR>>, i0: u32, g: u32, mine: vec4<f32>, p: array<f32, QR>) {
    { let v = subgroupBroadcast(mine, 0u); for (var r = 0u; r < QR; r++) { (*acc)[r][i0 + 0u] += p[r] * v; } }
    if (g > 1u) { let v = subgroupBroadcast(mine, 1u); for (var r = 0u; r < QR; r++) { (*acc)[r][i0 + 1u] += p[r] * v; } }
    if (g > 2u) { let v = subgroupBroadcast(mine, 2u); for (var r = 0u; r < QR; r++) { (*acc)[r][i0 + 2u] += p[r] * v; } }
    if (g > 3u) { let v = subgroupBroadcast(mine, 3u); for (var r = 0u; r < QR; r++) { (*acc)[r][i0 + 3u] += p[r] * v; } }
    if (g > 4u) { let v = subgroupBroadcast(mine, 4u); for (var r = 0u; r < QR; r++) { (*acc)[r][i0 + 4u] += p[r] * v; } }
    if (g > 5u) { let v = subgroupBroadcast(mine, 5u); for (var r = 0u; r < QR; r++) { (*acc)[r][i0 + 5u] += p[r] * v; } }
    if (g > 6u) { let v = subgroupBroadcast(mine, 6u); for (var r = 0u; r < QR; r++) { (*acc)[r][i0 + 6u] += p[r] * v; } }
    if (g > 7u) { let v = subgroupBroadcast(mine, 7u); for (var r = 0u; r < QR; r++) { (*acc)[r][i0 + 7u] += p[r] * v; } }
}

// d[r] += q[r] * row (per vec4 component) for the same chunk.
fn dot_chunk(q: ptr<function, array<array<vec4<f32>, MAX_V4>, QR>>, i0: u32, g: u32, mine: vec4<f32>, d: ptr<function, array<vec4<f32>, QR>>) {
    { let v = subgroupBroadcast(mine, 0u); for (var r = 0u; r < QR; r++) { (*d)[r] += (*q)[r][i0 + 0u] * v; } }
    if (g > 1u) { let v = subgroupBroadcast(mine, 1u); for (var r = 0u; r < QR; r++) { (*d)[r] += (*q)[r][i0 + 1u] * v; } }
    if (g > 2u) { let v = subgroupBroadcast(mine, 2u); for (var r = 0u; r < QR; r++) { (*d)[r] += (*q)[r][i0 + 2u] * v; } }
    if (g > 3u) { let v = subgroupBroadcast(mine, 3u); for (var r = 0u; r < QR; r++) { (*d)[r] += (*q)[r][i0 + 3u] * v; } }
    if (g > 4u) { let v = subgroupBroadcast(mine, 4u); for (var r = 0u; r < QR; r++) { (*d)[r] += (*q)[r][i0 + 4u] * v; } }
    if (g > 5u) { let v = subgroupBroadcast(mine, 5u); for (var r = 0u; r < QR; r++) { (*d)[r] += (*q)[r][i0 + 5u] * v; } }
    if (g > 6u) { let v = subgroupBroadcast(mine, 6u); for (var r = 0u; r < QR; r++) { (*d)[r] += (*q)[r][i0 + 6u] * v; } }
    if (g > 7u) { let v = subgroupBroadcast(mine, 7u); for (var r = 0u; r < QR; r++) { (*d)[r] += (*q)[r][i0 + 7u] * v; } }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(num_workgroups) groups: vec3<u32>) {
    let n_heads = shape.a;
    let d4 = HEAD_DIM / 4u;
    let d8 = HEAD_DIM / 8u;
    let g_n = n_heads / groups.y; // G: this workgroup's query heads are wid.y * G .. wid.y * G + G - 1
    let kvh = wid.y * g_n / (n_heads / shape.b); // GQA: their K/V head
    let u_n = step.n_tokens * g_n; // pairs
    let u0 = wid.x * BR + QR * lid; // this invocation's first pair
    // A subgroup whose pairs all lie past T * G has nothing to write, and no barrier waits for
    // it: it leaves (a verify step of 8 rows of 3 heads fills one subgroup of the workgroup's 8).
    if (subgroupMin(u0) >= u_n) { return; }
    let pos0 = step_pos(0u);
    // the causal bound of the subgroup: the position of its last row (uniform in the subgroup)
    let last_pos = pos0 + subgroupMax(min(u0 + QR - 1u, u_n - 1u) / g_n);
    let table = step_seq(0u) * shape.c;

    var t: array<u32, QR>;     // the pairs' rows; pairs past T * G compute a copy of the last, unwritten
    var qo: array<u32, QR>;    // the pairs' first vec4 in q and out: (t * n_heads + h) * d4
    var qv: array<array<vec4<f32>, MAX_V4>, QR>;
    var m: array<f32, QR>;     // running max
    var l: array<f32, QR>;     // running sum of exp(score - m)
    var acc: array<array<vec4<f32>, MAX_V4>, QR>;
    var sc: array<array<f32, TILE>, QR>;
    for (var r = 0u; r < QR; r++) {
        let u = min(u0 + r, u_n - 1u);
        t[r] = u / g_n;
        qo[r] = (t[r] * n_heads + wid.y * g_n + u % g_n) * d4;
        for (var i = 0u; i < d4; i++) { qv[r][i] = q[qo[r] + i] * inverseSqrt(f32(HEAD_DIM)); }
        m[r] = -3.0e38;
    }
    for (var s0 = 0u; s0 <= last_pos; s0 += TILE) {
        let row0 = tables[table + s0 / PAGE] * PAGE + s0 % PAGE; // one lookup per tile
        let n = min(TILE, last_pos + 1u - s0); // keys of the tile that exist
        var m_new = m;
        for (var c = 0u; c < n; c++) {
            let kr = kv_head_v4(((row0 + c) * shape.b + kvh) * HEAD_DIM);
            var d: array<vec4<f32>, QR>;
            for (var i0 = 0u; i0 < d8; i0 += 8u) {
                let i = min(i0 + (lane & 7u), d8 - 1u);
                let k = kv_quads(k_cache[kr + i], k_cache[kr + i + kv_hi()]);
                let ok = i0 + (lane & 7u) < d8;
                dot_chunk(&qv, i0, d8 - i0, select(vec4<f32>(0.0), k.lo, ok), &d);
                dot_chunk(&qv, i0 + d8, d8 - i0, select(vec4<f32>(0.0), k.hi, ok), &d);
            }
            for (var r = 0u; r < QR; r++) {
                let s = select(-3.0e38, d[r].x + d[r].y + d[r].z + d[r].w, s0 + c <= pos0 + t[r]);
                sc[r][c] = s;
                m_new[r] = max(m_new[r], s);
            }
        }
        for (var r = 0u; r < QR; r++) {
            let correction = exp(m[r] - m_new[r]);
            l[r] *= correction;
            for (var i = 0u; i < d4; i++) { acc[r][i] *= correction; }
        }
        for (var c = 0u; c < n; c++) {
            var p: array<f32, QR>;
            for (var r = 0u; r < QR; r++) {
                p[r] = exp(sc[r][c] - m_new[r]); // 0 for masked keys
                l[r] += p[r];
            }
            let vr = kv_head_v4(((row0 + c) * shape.b + kvh) * HEAD_DIM);
            for (var i0 = 0u; i0 < d8; i0 += 8u) {
                let i = min(i0 + (lane & 7u), d8 - 1u);
                let v = kv_quads(v_cache[vr + i], v_cache[vr + i + kv_hi()]);
                let ok = i0 + (lane & 7u) < d8;
                fma_chunk(&acc, i0, d8 - i0, select(vec4<f32>(0.0), v.lo, ok), p);
                fma_chunk(&acc, i0 + d8, d8 - i0, select(vec4<f32>(0.0), v.hi, ok), p);
            }
        }
        m = m_new;
    }
    for (var r = 0u; r < QR; r++) {
        if (u0 + r < u_n) {
            for (var i = 0u; i < d4; i++) { out[qo[r] + i] = acc[r][i] / l[r]; }
        }
    }
}
