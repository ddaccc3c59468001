// attention_naive.wgsl: causal grouped-query attention the textbook way, kept as the slow twin
// of the flash kernels and for comparison: materialise the scores S = q·Kᵀ/√d of a query row in
// a global buffer, softmax them, then out = P·V. Memory: one score row per (query row, head),
// O(T·N) per step and O(N²) for a whole prompt, against the flash kernels' O(N).
// Query head h reads KV head h / kv_mul (GQA by index, K and V never repeated). Key s of the
// row's sequence lives in cache row table[seq][s / PAGE] * PAGE + s % PAGE.
// CPU twin: cpu::ops::attention (contiguous K/V, f64).
// Dispatch: (n_heads, T, 1); one workgroup of 64 invocations per (head, query row).
// Bindings:
//   0 step    storage Step         n_tokens T, rows[t].pos / .seq
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads, c = block-table row length, d = N (score row length)
//   2 q       storage read  f32    (T, n_heads * HEAD_DIM)
//   3 k_cache storage read  u32    (n_blocks * PAGE, n_kv_heads * HEAD_DIM values, lib/kv.wgsl)
//   4 v_cache storage read  u32    (the same)
//   5 tables  storage read  u32    (n_seqs, c) block tables
//   6 scores  storage rw    f32    (T, n_heads, N) scratch
//   7 out     storage rw    f32    (T, n_heads * HEAD_DIM)
// Overrides: HEAD_DIM, PAGE (rows per cache page; the whole context for a contiguous cache),
// KV_F16 (lib/kv.wgsl: an f16 cache).

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
override KV_F16: bool = false; // lib/kv.wgsl
const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<u32>;
@group(0) @binding(4) var<storage, read> v_cache: array<u32>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, WG>;

// Tree reduction over the workgroup (op 0 = max, 1 = sum).
fn reduce(v: f32, j: u32, op: u32) -> f32 {
    red[j] = v;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (j < off) {
            red[j] = select(red[j] + red[j + off], max(red[j], red[j + off]), op == 0u);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n_heads = shape.a;
    let kv_dim = shape.b * HEAD_DIM;
    let h = wid.x;
    let t = wid.y;
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let kvh = h / (n_heads / shape.b);
    let n = step_pos(t) + 1u; // keys 0..=pos
    let table = step_seq(t) * shape.c;
    let q_row = (t * n_heads + h) * HEAD_DIM;
    let s_row = (t * n_heads + h) * shape.d;
    let scale = inverseSqrt(f32(HEAD_DIM));

    // 1. S[s] = q · k_s / √d, and its max
    var mx = -3.0e38;
    for (var s = j; s < n; s += WG) {
        let k_row = (tables[table + s / PAGE] * PAGE + s % PAGE) * kv_dim + kvh * HEAD_DIM;
        var dot = 0.0;
        for (var i = 0u; i < HEAD_DIM; i++) {
            dot += q[q_row + i] * kv_value(k_cache[kv_word(k_row, i)], i);
        }
        scores[s_row + s] = dot * scale;
        mx = max(mx, dot * scale);
    }
    mx = reduce(mx, j, 0u);
    // 2. P = exp(S - max) in place, and its sum (each invocation rereads only its own entries)
    var sum = 0.0;
    for (var s = j; s < n; s += WG) {
        let p = exp(scores[s_row + s] - mx);
        scores[s_row + s] = p;
        sum += p;
    }
    sum = reduce(sum, j, 1u);
    storageBarrier();
    // 3. out = P · V / sum
    for (var d = j; d < HEAD_DIM; d += WG) {
        var acc = 0.0;
        for (var s = 0u; s < n; s++) {
            let v_row = (tables[table + s / PAGE] * PAGE + s % PAGE) * kv_dim + kvh * HEAD_DIM;
            acc += scores[s_row + s] * kv_value(v_cache[kv_word(v_row, d)], d);
        }
        out[q_row + d] = acc / sum;
    }
}
