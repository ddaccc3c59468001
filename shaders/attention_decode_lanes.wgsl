// attention_decode_lanes.wgsl: attention_decode.wgsl's split-K decode attention shaped for GPUs:
// the head dimension is split across lanes, so an invocation holds 8 values of q and of the
// accumulator (16 floats) instead of the whole head (attention_decode.wgsl keeps q and acc of
// up to 256 values an invocation, which spill out of a GPU's registers at head_dim 128).
// A workgroup of 64 takes one (head, row, partition). Lane c of a key group (c < HEAD_DIM / 8)
// owns quad c of the head (values 4c .. 4c + 3 and HEAD_DIM / 2 + 4c .. + 3, one vec4<u32> of an
// f16 cache: lib/kv.wgsl), and the G = 64 / (HEAD_DIM / 8) key groups take the keys of a tile
// in turn. Per tile of 64 keys: (1) each lane's partial dot q·k of its quad for its group's keys
// goes to workgroup memory; barrier; (2) invocation j sums the partials of key j into its score;
// barrier; (3) every invocation reads the tile's 64 scores, rescales by the new running max m
// (the same in every invocation) and adds p·v of its group's keys to its quad of the
// accumulator. K and V rows are read straight from the cache, each row by HEAD_DIM / 8
// neighbouring lanes (coalesced 16-byte loads); workgroup memory holds the partial dots and
// scores (10.5 KiB), and at the end the G groups' accumulators merge through it. Two barriers a
// tile: cheap on a GPU, costly on a CPU adapter, where the engine keeps attention_decode.wgsl.
// As there: n_splits = 1 writes the normalised output, else (acc, m, l) of the partition for
// attention_reduce.wgsl.
// CPU twin: cpu::ops::attention (contiguous K/V, f64); lavapipe's twin: attention_decode.wgsl.
// Dispatch: (n_heads, T, n_splits); 64 invocations per (head, row, partition).
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
// (lib/kv.wgsl: an f16 cache).

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
override KV_F16: bool = false; // lib/kv.wgsl
const WG: u32 = 64u;
const TK: u32 = 64u; // keys a tile

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<vec4<f32>>;

var<workgroup> partial: array<f32, 2048>;     // (TK keys, HEAD_DIM / 8 lanes): 32 lanes at 256
var<workgroup> scores: array<f32, TK>;
var<workgroup> merge: array<vec4<f32>, 128>;  // (WG, 2): each invocation's lo and hi accumulators
var<workgroup> merge_l: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n_heads = shape.a;
    let d8 = HEAD_DIM / 8u;     // lanes a key
    let groups = WG / d8;       // keys at once
    let c = j % d8;             // my quad
    let g = j / d8;             // my key group
    let h = wid.x;
    let t = wid.y;
    let split = wid.z;
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let kvh = h / (n_heads / shape.b); // GQA: this head's K/V head
    let table = step_seq(t) * shape.c;
    let n = step_pos(t) + 1u;
    let s_begin = split * step.split_len;
    let s_end = min(n, s_begin + step.split_len);
    let scale = inverseSqrt(f32(HEAD_DIM));
    let qb = (t * n_heads + h) * (HEAD_DIM / 4u);
    let q_lo = q[qb + c] * scale;
    let q_hi = q[qb + c + d8] * scale;

    var m = -3.0e38;  // running max: the same in every invocation
    var l = 0.0;      // my group's running sum
    var acc_lo = vec4<f32>(0.0);
    var acc_hi = vec4<f32>(0.0);
    for (var s0 = s_begin; s0 < s_end; s0 += TK) {
        // (1) partial dots of my quad for my group's keys
        for (var k = g; k < TK; k += groups) {
            let s = s0 + k;
            if (s < s_end) {
                let row = tables[table + s / PAGE] * PAGE + s % PAGE;
                let kb = kv_head_v4((row * shape.b + kvh) * HEAD_DIM) + c;
                let kq = kv_quads(k_cache[kb], k_cache[kb + kv_hi()]);
                let d = q_lo * kq.lo + q_hi * kq.hi;
                partial[k * d8 + c] = d.x + d.y + d.z + d.w;
            }
        }
        workgroupBarrier();
        // (2) key j's score
        if (j < TK) {
            var score = -3.0e38;
            if (s0 + j < s_end) {
                score = 0.0;
                for (var i = 0u; i < d8; i++) { score += partial[j * d8 + i]; }
            }
            scores[j] = score;
        }
        workgroupBarrier();
        // (3) rescale by the tile's max, add p·v of my group's keys
        var m_new = m;
        for (var k = 0u; k < TK; k++) { m_new = max(m_new, scores[k]); }
        let correction = exp(m - m_new);
        l *= correction;
        acc_lo *= correction;
        acc_hi *= correction;
        for (var k = g; k < TK; k += groups) {
            let s = s0 + k;
            if (s < s_end) {
                let p = exp(scores[k] - m_new);
                let row = tables[table + s / PAGE] * PAGE + s % PAGE;
                let vb = kv_head_v4((row * shape.b + kvh) * HEAD_DIM) + c;
                let vq = kv_quads(v_cache[vb], v_cache[vb + kv_hi()]);
                l += p;
                acc_lo += p * vq.lo;
                acc_hi += p * vq.hi;
            }
        }
        m = m_new;
        // the next tile's (1) writes `partial` only after this tile's (2) read it (the barrier
        // after (2)), and its (2) writes `scores` after the barrier that follows its (1)
    }

    // Merge the groups: every group's m is the same, so sums suffice.
    merge[j * 2u] = acc_lo;
    merge[j * 2u + 1u] = acc_hi;
    merge_l[j] = l;
    workgroupBarrier();
    if (j >= d8) { return; }
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    var l_sum = 0.0;
    for (var i = 0u; i < groups; i++) {
        let o = i * d8 + c;
        lo += merge[o * 2u];
        hi += merge[o * 2u + 1u];
        l_sum += merge_l[o];
    }
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
