// attention_flash_sg.wgsl: attention_flash.wgsl with the key and value rows shared through
// subgroup broadcasts. Every invocation of the workgroup reads the same key at the same time; here
// lane j of each subgroup loads the vec4s j, j + 8, ... of the key (then value) row and
// `subgroupBroadcast` hands them to the other lanes, so a row costs one load per subgroup instead
// of one per invocation (on lavapipe a storage load costs a scalar load per lane and component).
// Otherwise the same FlashAttention-2 walk: BR = 64 query rows of one head per workgroup, one per
// invocation, keys in tiles of 16 with one block-table lookup each, running max m, sum l and
// accumulator acc in f32, rescaled once per tile; causal bound; 1/√d folded into q; query head h
// reads KV head h / kv_mul. Needs subgroups of at least 8 lanes.
// CPU twin: cpu::ops::attention (contiguous K/V, f64); plain twin: attention_flash.wgsl.
// Dispatch: (ceil(T / 64), n_heads, 1); 64 invocations, one query row each.
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
const BR: u32 = 64u;     // query rows per workgroup
const TILE: u32 = 16u;   // keys per tile
const MAX_V4: u32 = 64u; // HEAD_DIM / 4 at 256

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

// acc += p * row, or dot += q * row, for the 8 vec4s (or the g < 8 left) of a row chunk whose
// vec4 j lane j holds: unrolled, since subgroupBroadcast takes a constant lane.
fn fma_chunk(acc: ptr<function, array<vec4<f32>, MAX_V4>>, i0: u32, g: u32, mine: vec4<f32>, p: f32) {
    (*acc)[i0] += p * subgroupBroadcast(mine, 0u);
    if (g > 1u) { (*acc)[i0 + 1u] += p * subgroupBroadcast(mine, 1u); }
    if (g > 2u) { (*acc)[i0 + 2u] += p * subgroupBroadcast(mine, 2u); }
    if (g > 3u) { (*acc)[i0 + 3u] += p * subgroupBroadcast(mine, 3u); }
    if (g > 4u) { (*acc)[i0 + 4u] += p * subgroupBroadcast(mine, 4u); }
    if (g > 5u) { (*acc)[i0 + 5u] += p * subgroupBroadcast(mine, 5u); }
    if (g > 6u) { (*acc)[i0 + 6u] += p * subgroupBroadcast(mine, 6u); }
    if (g > 7u) { (*acc)[i0 + 7u] += p * subgroupBroadcast(mine, 7u); }
}

fn dot_chunk(qv: ptr<function, array<vec4<f32>, MAX_V4>>, i0: u32, g: u32, mine: vec4<f32>) -> vec4<f32> {
    var d = (*qv)[i0] * subgroupBroadcast(mine, 0u);
    if (g > 1u) { d += (*qv)[i0 + 1u] * subgroupBroadcast(mine, 1u); }
    if (g > 2u) { d += (*qv)[i0 + 2u] * subgroupBroadcast(mine, 2u); }
    if (g > 3u) { d += (*qv)[i0 + 3u] * subgroupBroadcast(mine, 3u); }
    if (g > 4u) { d += (*qv)[i0 + 4u] * subgroupBroadcast(mine, 4u); }
    if (g > 5u) { d += (*qv)[i0 + 5u] * subgroupBroadcast(mine, 5u); }
    if (g > 6u) { d += (*qv)[i0 + 6u] * subgroupBroadcast(mine, 6u); }
    if (g > 7u) { d += (*qv)[i0 + 7u] * subgroupBroadcast(mine, 7u); }
    return d;
}

@compute @workgroup_size(BR)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let n_heads = shape.a;
    let d4 = HEAD_DIM / 4u;
    let kv_dim4 = shape.b * d4;
    let h = wid.y;
    let kv_col4 = (h / (n_heads / shape.b)) * d4; // GQA: this head's K/V columns
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
            let kr = (row0 + c) * kv_dim4 + kv_col4;
            var dot = vec4<f32>(0.0);
            for (var i0 = 0u; i0 < d4; i0 += 8u) {
                let mine = select(vec4<f32>(0.0), k_cache[kr + min(i0 + (lane & 7u), d4 - 1u)], i0 + (lane & 7u) < d4);
                dot += dot_chunk(&qv, i0, d4 - i0, mine);
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
            let vr = (row0 + c) * kv_dim4 + kv_col4;
            for (var i0 = 0u; i0 < d4; i0 += 8u) {
                let mine = select(vec4<f32>(0.0), v_cache[vr + min(i0 + (lane & 7u), d4 - 1u)], i0 + (lane & 7u) < d4);
                fma_chunk(&acc, i0, d4 - i0, mine, p);
            }
        }
        m = m_new;
    }
    if (t0 + lid < t_n) {
        for (var i = 0u; i < d4; i++) { out[(t * n_heads + h) * d4 + i] = acc[i] / l; }
    }
}
