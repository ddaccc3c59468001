// attention_decode_lanes.wgsl: attention_decode.wgsl's split-K decode attention shaped for GPUs:
// the head dimension is split across lanes, so an invocation holds 8 values of q and of the
// accumulator of each of its heads instead of whole heads (attention_decode.wgsl keeps q and acc
// of up to 256 values an invocation, which spill out of a GPU's registers at head_dim 128).
// A workgroup of 64 takes GROUP query heads of one KV head (GQA) for one row and partition, so
// each K and V word it loads feeds GROUP heads. Lane c of a key group (c < HEAD_DIM / 8) owns
// quad c of the head (values 4c .. 4c + 3 and HEAD_DIM / 2 + 4c .. + 3, one vec4<u32> of an f16
// cache: lib/kv.wgsl), and the 64 / (HEAD_DIM / 8) key groups take the keys of a tile in turn.
// Per tile of 64 / GROUP keys: (1) each lane loads its quad of its group's keys once and writes
// its partial dot q·k for each head to workgroup memory; barrier; (2) invocation j sums the
// partials of (head, key) j into its score; barrier; (3) every invocation reads the tile's 64
// scores, rescales each head by its new running max m (the same in every invocation) and adds
// p·v of its group's keys (each V quad loaded once) to its quads of the accumulators. K and V
// rows are read straight from the cache, each row by HEAD_DIM / 8 neighbouring lanes (coalesced
// 16-byte loads): a workgroup loads each word of its partition once, so a copy into workgroup
// memory would save no load. Workgroup memory holds the partial dots and scores (8.25 KiB); at
// the end the key groups' accumulators merge through it, a head at a time. Two barriers a tile:
// cheap on a GPU, costly on a CPU adapter, where the engine keeps attention_decode.wgsl.
// As there: n_splits = 1 writes the normalised output, else (acc, m, l) of the partition for
// attention_reduce.wgsl.
// CPU twin: cpu::ops::attention (contiguous K/V, f64); lavapipe's twin: attention_decode.wgsl.
// Dispatch: (n_heads / GROUP, T, n_splits); 64 invocations per (GROUP heads, row, partition).
// Bindings: as attention_decode.wgsl:
//   0 step    storage Step         n_tokens T, n_splits, split_len (a multiple of 64), rows[t].pos / .seq
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads, c = block-table row length
//   2 q       storage read  vec4   (T, n_heads * HEAD_DIM / 4)
//   3 k_cache storage read  vec4<u32> (n_blocks * PAGE, n_kv_heads * HEAD_DIM values, lib/kv.wgsl)
//   4 v_cache storage read  vec4<u32> (the same)
//   5 tables  storage read  u32    (n_seqs, c) block tables
//   6 part    storage rw    f32    (T, n_heads, n_splits, HEAD_DIM + 2) per partition: acc[HEAD_DIM], m, l
//   7 out     storage rw    vec4   (T, n_heads * HEAD_DIM / 4), written when n_splits = 1
// Overrides: HEAD_DIM (a multiple of 16, at most 256), PAGE (rows per cache page), KV_F16
// (lib/kv.wgsl: an f16 cache), GROUP (1, 2 or 4, a divisor of n_heads / n_kv_heads:
// Kernels::lanes_group_for).

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
override KV_F16: bool = false; // lib/kv.wgsl
override GROUP: u32 = 1u; // query heads a workgroup takes, all of one KV head
const WG: u32 = 64u;
const TK: u32 = 64u; // keys a tile times GROUP (a tile has TK / GROUP keys)
const MAX_GROUP: u32 = 4u;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<vec4<f32>>;

var<workgroup> partial: array<f32, 2048>;     // (GROUP, TK / GROUP keys, HEAD_DIM / 8 lanes)
var<workgroup> scores: array<f32, TK>;        // (GROUP, TK / GROUP keys)
var<workgroup> merge: array<vec4<f32>, 128>;  // (WG, 2): each invocation's lo and hi accumulators
var<workgroup> merge_l: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n_heads = shape.a;
    let d8 = HEAD_DIM / 8u;     // lanes a key
    let groups = WG / d8;       // keys at once
    let c = j % d8;             // my quad
    let g = j / d8;             // my key group
    let tk = TK / GROUP;        // keys a tile
    let h0 = wid.x * GROUP;     // my first query head
    let t = wid.y;
    let split = wid.z;
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let kvh = h0 / (n_heads / shape.b); // GQA: the K/V head of all GROUP heads
    let table = step_seq(t) * shape.c;
    let n = step_pos(t) + 1u;
    let s_begin = split * step.split_len;
    let s_end = min(n, s_begin + step.split_len);
    let scale = inverseSqrt(f32(HEAD_DIM));

    var q_lo: array<vec4<f32>, MAX_GROUP>;
    var q_hi: array<vec4<f32>, MAX_GROUP>;
    var acc_lo: array<vec4<f32>, MAX_GROUP>;
    var acc_hi: array<vec4<f32>, MAX_GROUP>;
    var m: array<f32, MAX_GROUP>; // running max of each head: the same in every invocation
    var l: array<f32, MAX_GROUP>; // my group's running sum of each head
    for (var gi = 0u; gi < GROUP; gi++) {
        let qb = (t * n_heads + h0 + gi) * (HEAD_DIM / 4u);
        q_lo[gi] = q[qb + c] * scale;
        q_hi[gi] = q[qb + c + d8] * scale;
        acc_lo[gi] = vec4<f32>(0.0);
        acc_hi[gi] = vec4<f32>(0.0);
        m[gi] = -3.0e38;
        l[gi] = 0.0;
    }
    for (var s0 = s_begin; s0 < s_end; s0 += tk) {
        // (1) partial dots of my quad for my group's keys, each K quad loaded once for the
        // GROUP heads
        for (var k = g; k < tk; k += groups) {
            let s = s0 + k;
            if (s < s_end) {
                let row = tables[table + s / PAGE] * PAGE + s % PAGE;
                let kb = kv_head_v4((row * shape.b + kvh) * HEAD_DIM) + c;
                let kq = kv_quads(k_cache[kb], k_cache[kb + kv_hi()]);
                for (var gi = 0u; gi < GROUP; gi++) {
                    let d = q_lo[gi] * kq.lo + q_hi[gi] * kq.hi;
                    partial[(gi * tk + k) * d8 + c] = d.x + d.y + d.z + d.w;
                }
            }
        }
        workgroupBarrier();
        // (2) score j: head j / tk, key j % tk
        if (j < TK) {
            var score = -3.0e38;
            if (s0 + j % tk < s_end) {
                score = 0.0;
                for (var i = 0u; i < d8; i++) { score += partial[j * d8 + i]; }
            }
            scores[j] = score;
        }
        workgroupBarrier();
        // (3) rescale each head by the tile's max, add p·v of my group's keys (each V quad
        // loaded once for the GROUP heads)
        var m_new: array<f32, MAX_GROUP>;
        for (var gi = 0u; gi < GROUP; gi++) {
            m_new[gi] = m[gi];
            for (var k = 0u; k < tk; k++) { m_new[gi] = max(m_new[gi], scores[gi * tk + k]); }
            let correction = exp(m[gi] - m_new[gi]);
            l[gi] *= correction;
            acc_lo[gi] *= correction;
            acc_hi[gi] *= correction;
            m[gi] = m_new[gi];
        }
        for (var k = g; k < tk; k += groups) {
            let s = s0 + k;
            if (s < s_end) {
                let row = tables[table + s / PAGE] * PAGE + s % PAGE;
                let vb = kv_head_v4((row * shape.b + kvh) * HEAD_DIM) + c;
                let vq = kv_quads(v_cache[vb], v_cache[vb + kv_hi()]);
                for (var gi = 0u; gi < GROUP; gi++) {
                    let p = exp(scores[gi * tk + k] - m[gi]);
                    l[gi] += p;
                    acc_lo[gi] += p * vq.lo;
                    acc_hi[gi] += p * vq.hi;
                }
            }
        }
        // the next tile's (1) writes `partial` only after this tile's (2) read it (the barrier
        // after (2)), and its (2) writes `scores` after the barrier that follows its (1)
    }

    // Merge the key groups, a head at a time: every group's m is the same, so sums suffice.
    for (var gi = 0u; gi < GROUP; gi++) {
        workgroupBarrier(); // the last head's merge was read
        merge[j * 2u] = acc_lo[gi];
        merge[j * 2u + 1u] = acc_hi[gi];
        merge_l[j] = l[gi];
        workgroupBarrier();
        if (j < d8) {
            write_head(t, h0 + gi, split, c, groups, m[gi]);
        }
    }
}

// Invocation c < HEAD_DIM / 8 of the merge: sums quad c of the `groups` key groups' accumulators
// in `merge` and writes it, normalised, to `out` (n_splits = 1) or, with m and l, to `part`.
fn write_head(t: u32, h: u32, split: u32, c: u32, groups: u32, m: f32) {
    let d8 = HEAD_DIM / 8u;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    var l_sum = 0.0;
    for (var i = 0u; i < groups; i++) {
        let o = i * d8 + c;
        lo += merge[o * 2u];
        hi += merge[o * 2u + 1u];
        l_sum += merge_l[o];
    }
    let n_heads = shape.a;
    if (step.n_splits == 1u) {
        let ob = (t * n_heads + h) * (HEAD_DIM / 4u);
        out[ob + c] = lo / l_sum;
        out[ob + c + d8] = hi / l_sum;
        return;
    }
    // an empty partition (past this row's length) leaves m = -3e38, l = 0, acc = 0
    let base = ((t * n_heads + h) * step.n_splits + split) * (HEAD_DIM + 2u);
    for (var e = 0u; e < 4u; e++) {
        part[base + 4u * c + e] = lo[e];
        part[base + HEAD_DIM / 2u + 4u * c + e] = hi[e];
    }
    if (c == 0u) {
        part[base + HEAD_DIM] = m;
        part[base + HEAD_DIM + 1u] = l_sum;
    }
}
