// attention.wgsl: causal grouped-query attention for T query rows at positions pos0 + t over the
// cached keys and values 0..=pos0 + t. Query head h reads KV head h / kv_mul: K and V are
// never repeated. Softmax is computed online (running max m, running sum l, accumulator acc,
// FlashAttention-2 names) over tiles of HEAD_DIM keys, so any length fits in fixed memory.
// CPU twin: cpu::ops::attention (which materialises the scores in f64).
// Dispatch: (n_heads, T, 1); one workgroup of HEAD_DIM invocations per (head, token). In each
// tile, invocation i scores key s0 + i (a full dot product), then every invocation folds the
// tile into the running softmax and its own output element j = local index.
// Bindings:
//   0 step    uniform Step         n_tokens T, pos0
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads
//   2 q       storage read  f32    (T_max, n_heads * HEAD_DIM)
//   3 k_cache storage read  f32    (seq_len, n_kv_heads * HEAD_DIM)
//   4 v_cache storage read  f32    (seq_len, n_kv_heads * HEAD_DIM)
//   5 out     storage rw    f32    (T_max, n_heads * HEAD_DIM)
// Overrides: HEAD_DIM (workgroup size and key tile; at most 256).

struct Step { n_tokens: u32, pos0: u32, pad0: u32, pad1: u32, tokens: array<vec4<u32>, 64> }
struct Shape { a: u32, b: u32, c: u32, d: u32 }

override HEAD_DIM: u32 = 64u;

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> scores: array<f32, 256>;

@compute @workgroup_size(HEAD_DIM)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n_heads = shape.a;
    let kv_dim = shape.b * HEAD_DIM;
    let h = wid.x;
    let t = wid.y;
    if (t >= step.n_tokens) { return; } // uniform across the workgroup
    let kvh = h / (n_heads / shape.b);
    let pos = step.pos0 + t;
    let q_row = (t * n_heads + h) * HEAD_DIM;
    let scale = inverseSqrt(f32(HEAD_DIM));
    var m = -3.0e38; // running max
    var l = 0.0;     // running sum of exp(score - m)
    var acc = 0.0;   // running sum of exp(score - m) * v[:, j]
    for (var s0 = 0u; s0 <= pos; s0 += HEAD_DIM) {
        // this invocation's key in the tile
        let s = s0 + j;
        var score = -3.0e38;
        if (s <= pos) {
            let k_row = s * kv_dim + kvh * HEAD_DIM;
            var dot = 0.0;
            for (var i = 0u; i < HEAD_DIM; i++) {
                dot += q[q_row + i] * k_cache[k_row + i];
            }
            score = dot * scale;
        }
        scores[j] = score;
        workgroupBarrier();
        let n = min(HEAD_DIM, pos + 1u - s0);
        var m_new = m;
        for (var i = 0u; i < n; i++) { m_new = max(m_new, scores[i]); }
        let correction = exp(m - m_new);
        l *= correction;
        acc *= correction;
        for (var i = 0u; i < n; i++) {
            let p = exp(scores[i] - m_new);
            l += p;
            acc += p * v_cache[(s0 + i) * kv_dim + kvh * HEAD_DIM + j];
        }
        m = m_new;
        workgroupBarrier();
    }
    out[q_row + j] = acc / l;
}
