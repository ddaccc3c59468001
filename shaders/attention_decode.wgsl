// attention_decode.wgsl: causal grouped-query attention for rows that each have their own
// sequence and position (decode steps, batches of sequences), split-K (flash-decoding): the keys
// 0..=pos of a row are cut into n_splits partitions of split_len keys, processed by separate
// workgroups in parallel; attention_reduce.wgsl merges them with a log-sum-exp. With n_splits = 1
// the kernel is a single pass and writes the normalised output itself.
// Inside a workgroup, invocation j takes keys j, j + WG, ... of the partition and keeps its own
// online-softmax state (running max m, running sum l, accumulator acc, f32): the key loop has no
// barrier (barriers are costly on llvmpipe). At the end the WG states are merged through
// workgroup memory (max of m, rescale, sum), a fixed number of barriers whatever the length.
// Key s of the row's sequence lives in cache row table[seq][s / PAGE] * PAGE + s % PAGE; query
// head h reads KV head h / kv_mul (GQA by index, nothing repeated). A workgroup takes GROUP
// consecutive query heads of one KV head, so each key and value row it loads feeds GROUP heads
// (on lavapipe a storage load costs a scalar load per lane and component, and the loads dominate:
// SmolLM2's 9 heads over 3 KV heads, GROUP 3, benches/RESULTS.md).
// CPU twin: cpu::ops::attention (contiguous K/V, f64).
// Dispatch: (n_heads / GROUP, T, n_splits); WG invocations per (GROUP heads, row, partition).
// Bindings:
//   0 step    storage Step         n_tokens T, n_splits, split_len, rows[t].pos / .seq
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads, c = block-table row length
//   2 q       storage read  vec4   (T, n_heads * HEAD_DIM / 4)
//   3 k_cache storage read  vec4<u32> (n_blocks * PAGE, n_kv_heads * HEAD_DIM values, lib/kv.wgsl)
//   4 v_cache storage read  vec4<u32> (the same)
//   5 tables  storage read  u32    (n_seqs, c) block tables
//   6 part    storage rw    f32    (T, n_heads, n_splits, HEAD_DIM + 2) per partition: acc[HEAD_DIM], m, l
//                                  (T × n_splits ≤ MAX_PART_ROWS, which the host's split plan keeps)
//   7 out     storage rw    vec4   (T, n_heads * HEAD_DIM / 4), written when n_splits = 1
// Overrides: HEAD_DIM (a multiple of 16, at most 256), PAGE (rows per cache page), KV_F16
// (lib/kv.wgsl: an f16 cache), WG
// (invocations per workgroup, a divisor of 64 and at least 4: 64 on GPUs; 8 on CPU adapters such
// as lavapipe, where a workgroup is one 8-lane SIMD group and the merge through workgroup memory
// then costs 8 loads per invocation instead of 64), GROUP (query heads a workgroup takes: a
// divisor of n_heads / n_kv_heads, at most MAX_GROUP, GROUP * HEAD_DIM at most 4 * MAX_V4).

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
override KV_F16: bool = false; // lib/kv.wgsl
override WG: u32 = 64u; // invocations per (head, row, partition): 64 on GPUs, 8 on CPU adapters
override GROUP: u32 = 1u; // query heads per workgroup, all of one KV head
const MAX_V4: u32 = 128u; // GROUP * HEAD_DIM / 4 at most
const MAX_GROUP: u32 = 8u;
const MERGE_V4: u32 = 256u; // vec4s of the accumulators merged per round (4 KiB)

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> part: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<vec4<f32>>;

var<workgroup> m_all: array<f32, 512>; // (WG, MAX_GROUP)
var<workgroup> l_all: array<f32, 512>; // (WG, MAX_GROUP)
var<workgroup> acc_all: array<vec4<f32>, MERGE_V4>; // (WG, MERGE_V4 / WG) one round's columns

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n_heads = shape.a;
    let d4 = HEAD_DIM / 4u;
    let d8 = HEAD_DIM / 8u;
    let h0 = wid.x * GROUP; // this workgroup's first query head
    let t = wid.y;
    let split = wid.z;
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let kvh = h0 / (n_heads / shape.b); // GQA: the K/V head of heads h0 .. h0 + GROUP - 1
    let table = step_seq(t) * shape.c;
    let n = step_pos(t) + 1u;
    let s_begin = split * step.split_len;
    let s_end = min(n, s_begin + step.split_len);
    let scale = inverseSqrt(f32(HEAD_DIM));
    // qv and acc hold GROUP heads of d4 vec4s each: head g's vec4 i at g * d4 + i
    var qv: array<vec4<f32>, MAX_V4>;
    for (var i = 0u; i < GROUP * d4; i++) { qv[i] = q[(t * n_heads + h0) * d4 + i] * scale; }

    // This invocation's keys: online softmax per head, one key at a time.
    var m: array<f32, MAX_GROUP>;
    var l: array<f32, MAX_GROUP>;
    for (var g = 0u; g < GROUP; g++) { m[g] = -3.0e38; l[g] = 0.0; }
    var acc: array<vec4<f32>, MAX_V4>;
    for (var s = s_begin + j; s < s_end; s += WG) {
        let row = tables[table + s / PAGE] * PAGE + s % PAGE;
        let kb = kv_head_v4((row * shape.b + kvh) * HEAD_DIM);
        var dot: array<vec4<f32>, MAX_GROUP>;
        for (var i = 0u; i < d8; i++) {
            let k = kv_quads(k_cache[kb + i], k_cache[kb + i + kv_hi()]);
            for (var g = 0u; g < GROUP; g++) {
                dot[g] += qv[g * d4 + i] * k.lo + qv[g * d4 + i + d8] * k.hi;
            }
        }
        var p: array<f32, MAX_GROUP>;
        var correction: array<f32, MAX_GROUP>;
        for (var g = 0u; g < GROUP; g++) {
            let score = dot[g].x + dot[g].y + dot[g].z + dot[g].w;
            let m_new = max(m[g], score);
            correction[g] = exp(m[g] - m_new);
            p[g] = exp(score - m_new);
            l[g] = l[g] * correction[g] + p[g];
            m[g] = m_new;
        }
        for (var i = 0u; i < d8; i++) {
            let v = kv_quads(v_cache[kb + i], v_cache[kb + i + kv_hi()]);
            for (var g = 0u; g < GROUP; g++) {
                let a = g * d4 + i;
                acc[a] = acc[a] * correction[g] + p[g] * v.lo;
                acc[a + d8] = acc[a + d8] * correction[g] + p[g] * v.hi;
            }
        }
    }

    // Merge the invocations' states per head: M = max m, then Σ exp(m - M) l and Σ exp(m - M) acc.
    for (var g = 0u; g < GROUP; g++) { m_all[j * MAX_GROUP + g] = m[g]; }
    workgroupBarrier();
    var m_max: array<f32, MAX_GROUP>;
    var w: array<f32, MAX_GROUP>; // 0 for an invocation that saw no key (m = -3e38) unless all did
    for (var g = 0u; g < GROUP; g++) {
        m_max[g] = -3.0e38;
        for (var i = 0u; i < WG; i++) { m_max[g] = max(m_max[g], m_all[i * MAX_GROUP + g]); }
        w[g] = exp(m[g] - m_max[g]);
        l_all[j * MAX_GROUP + g] = l[g] * w[g];
    }
    workgroupBarrier();
    var l_sum: array<f32, MAX_GROUP>;
    for (var g = 0u; g < GROUP; g++) {
        l_sum[g] = 0.0;
        for (var i = 0u; i < WG; i++) { l_sum[g] += l_all[i * MAX_GROUP + g]; }
    }
    let single = step.n_splits == 1u;
    // the GROUP * d4 accumulator vec4s in rounds of `cols` a invocation; column c of a round is
    // summed over the invocations by invocation c % WG
    let cols = MERGE_V4 / WG;
    for (var c0 = 0u; c0 < GROUP * d4; c0 += cols) {
        for (var k = 0u; k < cols; k++) {
            if (c0 + k < GROUP * d4) { acc_all[j * cols + k] = acc[c0 + k] * w[(c0 + k) / d4]; }
        }
        workgroupBarrier();
        for (var k = j; k < cols && c0 + k < GROUP * d4; k += WG) {
            var sum = vec4<f32>(0.0);
            for (var i = 0u; i < WG; i++) { sum += acc_all[i * cols + k]; }
            let g = (c0 + k) / d4;
            let col4 = (c0 + k) % d4;
            if (single) {
                out[(t * n_heads + h0 + g) * d4 + col4] = sum / l_sum[g];
            } else {
                let base = ((t * n_heads + h0 + g) * step.n_splits + split) * (HEAD_DIM + 2u);
                part[base + col4 * 4u] = sum.x;
                part[base + col4 * 4u + 1u] = sum.y;
                part[base + col4 * 4u + 2u] = sum.z;
                part[base + col4 * 4u + 3u] = sum.w;
            }
        }
        workgroupBarrier();
    }
    if (!single && j == 0u) {
        // an empty partition (past this row's length) leaves m = -3e38, l = 0, acc = 0
        for (var g = 0u; g < GROUP; g++) {
            let base = ((t * n_heads + h0 + g) * step.n_splits + split) * (HEAD_DIM + 2u);
            part[base + HEAD_DIM] = m_max[g];
            part[base + HEAD_DIM + 1u] = l_sum[g];
        }
    }
}
