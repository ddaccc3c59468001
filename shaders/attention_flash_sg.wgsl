// attention_flash_sg.wgsl: attention_flash.wgsl with the key and value rows shared through
// subgroup broadcasts. Every invocation of the workgroup reads the same key at the same time; here
// lane j of each subgroup loads the vec4s j, j + 8, ... of the key (then value) row and
// `subgroupBroadcast` hands them to the other lanes, so a row costs one load per subgroup instead
// of one per invocation (on lavapipe a storage load costs a scalar load per lane and component).
// Each invocation also takes two query rows (lid and lid + 64), so every loaded key and value
// feeds 16 rows of a subgroup: the loads dominate on lavapipe, and this halves them per row.
// Otherwise the same FlashAttention-2 walk: BR = 128 query rows of one head per workgroup,
// keys in tiles of 16 with one block-table lookup each, running max m, sum l and accumulator acc
// in f32 per row, rescaled once per tile; causal bound; 1/√d folded into q; query head h reads
// KV head h / kv_mul. Needs subgroups of at least 8 lanes.
// CPU twin: cpu::ops::attention (contiguous K/V, f64); plain twin: attention_flash.wgsl.
// Dispatch: (ceil(T / 128), n_heads, 1); 64 invocations, two query rows each.
// Bindings:
//   0 step    storage Step         n_tokens T, rows[0].pos (pos0) and .seq
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads, c = block-table row length
//   2 q       storage read  vec4   (T, n_heads * HEAD_DIM / 4)
//   3 k_cache storage read  vec4   (n_blocks * PAGE, n_kv_heads * HEAD_DIM / 4)
//   4 v_cache storage read  vec4   (n_blocks * PAGE, n_kv_heads * HEAD_DIM / 4)
//   5 tables  storage read  u32    (n_seqs, c) block tables
//   6 out     storage rw    vec4   (T, n_heads * HEAD_DIM / 4)
// Overrides: HEAD_DIM (a multiple of 16, at most 256), PAGE (rows per page, a multiple of 16).

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
const BR: u32 = 128u;    // query rows per workgroup: rows lid and lid + 64 of invocation lid
const TILE: u32 = 16u;   // keys per tile
const MAX_V4: u32 = 64u; // HEAD_DIM / 4 at 256

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

// For the 8 vec4s (or the g < 8 left) of a row chunk whose vec4 j lane j holds: acc_a += pa * row
// and acc_b += pb * row. Unrolled, since subgroupBroadcast takes a constant lane.
fn fma_chunk(acc_a: ptr<function, array<vec4<f32>, MAX_V4>>, acc_b: ptr<function, array<vec4<f32>, MAX_V4>>,
             i0: u32, g: u32, mine: vec4<f32>, pa: f32, pb: f32) {
    { let r = subgroupBroadcast(mine, 0u); (*acc_a)[i0 + 0u] += pa * r; (*acc_b)[i0 + 0u] += pb * r; }
    if (g > 1u) { let r = subgroupBroadcast(mine, 1u); (*acc_a)[i0 + 1u] += pa * r; (*acc_b)[i0 + 1u] += pb * r; }
    if (g > 2u) { let r = subgroupBroadcast(mine, 2u); (*acc_a)[i0 + 2u] += pa * r; (*acc_b)[i0 + 2u] += pb * r; }
    if (g > 3u) { let r = subgroupBroadcast(mine, 3u); (*acc_a)[i0 + 3u] += pa * r; (*acc_b)[i0 + 3u] += pb * r; }
    if (g > 4u) { let r = subgroupBroadcast(mine, 4u); (*acc_a)[i0 + 4u] += pa * r; (*acc_b)[i0 + 4u] += pb * r; }
    if (g > 5u) { let r = subgroupBroadcast(mine, 5u); (*acc_a)[i0 + 5u] += pa * r; (*acc_b)[i0 + 5u] += pb * r; }
    if (g > 6u) { let r = subgroupBroadcast(mine, 6u); (*acc_a)[i0 + 6u] += pa * r; (*acc_b)[i0 + 6u] += pb * r; }
    if (g > 7u) { let r = subgroupBroadcast(mine, 7u); (*acc_a)[i0 + 7u] += pa * r; (*acc_b)[i0 + 7u] += pb * r; }
}

// The same chunk against two query rows: da += qa * row and db += qb * row (per vec4 component).
fn dot_chunk(qa: ptr<function, array<vec4<f32>, MAX_V4>>, qb: ptr<function, array<vec4<f32>, MAX_V4>>,
             i0: u32, g: u32, mine: vec4<f32>, da: ptr<function, vec4<f32>>, db: ptr<function, vec4<f32>>) {
    { let r = subgroupBroadcast(mine, 0u); *da += (*qa)[i0 + 0u] * r; *db += (*qb)[i0 + 0u] * r; }
    if (g > 1u) { let r = subgroupBroadcast(mine, 1u); *da += (*qa)[i0 + 1u] * r; *db += (*qb)[i0 + 1u] * r; }
    if (g > 2u) { let r = subgroupBroadcast(mine, 2u); *da += (*qa)[i0 + 2u] * r; *db += (*qb)[i0 + 2u] * r; }
    if (g > 3u) { let r = subgroupBroadcast(mine, 3u); *da += (*qa)[i0 + 3u] * r; *db += (*qb)[i0 + 3u] * r; }
    if (g > 4u) { let r = subgroupBroadcast(mine, 4u); *da += (*qa)[i0 + 4u] * r; *db += (*qb)[i0 + 4u] * r; }
    if (g > 5u) { let r = subgroupBroadcast(mine, 5u); *da += (*qa)[i0 + 5u] * r; *db += (*qb)[i0 + 5u] * r; }
    if (g > 6u) { let r = subgroupBroadcast(mine, 6u); *da += (*qa)[i0 + 6u] * r; *db += (*qb)[i0 + 6u] * r; }
    if (g > 7u) { let r = subgroupBroadcast(mine, 7u); *da += (*qa)[i0 + 7u] * r; *db += (*qb)[i0 + 7u] * r; }
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let n_heads = shape.a;
    let d4 = HEAD_DIM / 4u;
    let kv_dim4 = shape.b * d4;
    let h = wid.y;
    let kv_col4 = (h / (n_heads / shape.b)) * d4; // GQA: this head's K/V columns
    let t_n = step.n_tokens;
    let t0 = wid.x * BR;
    // rows past T compute a copy of the last row, unwritten
    let ta = min(t0 + lid, t_n - 1u);
    let tb = min(t0 + 64u + lid, t_n - 1u);
    let pos0 = step_pos(0u);
    let pos_a = pos0 + ta;
    let pos_b = pos0 + tb;
    let last_pos = pos0 + min(t0 + BR, t_n) - 1u; // uniform: the causal bound of the group
    let table = step_seq(0u) * shape.c;
    let scale = inverseSqrt(f32(HEAD_DIM));

    var qa: array<vec4<f32>, MAX_V4>;
    var qb: array<vec4<f32>, MAX_V4>;
    for (var i = 0u; i < d4; i++) {
        qa[i] = q[(ta * n_heads + h) * d4 + i] * scale;
        qb[i] = q[(tb * n_heads + h) * d4 + i] * scale;
    }
    var ma = -3.0e38; // running max
    var mb = -3.0e38;
    var la = 0.0;     // running sum of exp(score - m)
    var lb = 0.0;
    var acc_a: array<vec4<f32>, MAX_V4>;
    var acc_b: array<vec4<f32>, MAX_V4>;
    var sc_a: array<f32, TILE>;
    var sc_b: array<f32, TILE>;
    for (var s0 = 0u; s0 <= last_pos; s0 += TILE) {
        let row0 = tables[table + s0 / PAGE] * PAGE + s0 % PAGE; // one lookup per tile
        let n = min(TILE, last_pos + 1u - s0); // keys of the tile that exist
        var ma_new = ma;
        var mb_new = mb;
        for (var c = 0u; c < n; c++) {
            let kr = (row0 + c) * kv_dim4 + kv_col4;
            var da = vec4<f32>(0.0);
            var db = vec4<f32>(0.0);
            for (var i0 = 0u; i0 < d4; i0 += 8u) {
                let mine = select(vec4<f32>(0.0), k_cache[kr + min(i0 + (lane & 7u), d4 - 1u)], i0 + (lane & 7u) < d4);
                dot_chunk(&qa, &qb, i0, d4 - i0, mine, &da, &db);
            }
            let sa = select(-3.0e38, da.x + da.y + da.z + da.w, s0 + c <= pos_a);
            let sb = select(-3.0e38, db.x + db.y + db.z + db.w, s0 + c <= pos_b);
            sc_a[c] = sa;
            sc_b[c] = sb;
            ma_new = max(ma_new, sa);
            mb_new = max(mb_new, sb);
        }
        let ca = exp(ma - ma_new);
        let cb = exp(mb - mb_new);
        la *= ca;
        lb *= cb;
        for (var i = 0u; i < d4; i++) {
            acc_a[i] *= ca;
            acc_b[i] *= cb;
        }
        for (var c = 0u; c < n; c++) {
            let pa = exp(sc_a[c] - ma_new); // 0 for masked keys
            let pb = exp(sc_b[c] - mb_new);
            la += pa;
            lb += pb;
            let vr = (row0 + c) * kv_dim4 + kv_col4;
            for (var i0 = 0u; i0 < d4; i0 += 8u) {
                let mine = select(vec4<f32>(0.0), v_cache[vr + min(i0 + (lane & 7u), d4 - 1u)], i0 + (lane & 7u) < d4);
                fma_chunk(&acc_a, &acc_b, i0, d4 - i0, mine, pa, pb);
            }
        }
        ma = ma_new;
        mb = mb_new;
    }
    if (t0 + lid < t_n) {
        for (var i = 0u; i < d4; i++) { out[(ta * n_heads + h) * d4 + i] = acc_a[i] / la; }
    }
    if (t0 + 64u + lid < t_n) {
        for (var i = 0u; i < d4; i++) { out[(tb * n_heads + h) * d4 + i] = acc_b[i] / lb; }
    }
}
