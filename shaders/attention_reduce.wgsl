// attention_reduce.wgsl: merge the split-K partitions of attention_decode.wgsl (log-sum-exp):
//   M = max_i m_i,  out = Σ_i exp(m_i - M) acc_i / Σ_i exp(m_i - M) l_i.
// Empty partitions (l_i = 0, m_i = -3e38) weigh nothing. Not dispatched when n_splits = 1.
// CPU twin: cpu::ops::attention (the merged result equals one softmax over all keys).
// Dispatch: (n_heads, T, 1); 64 invocations per (head, row), invocation j owns columns j, j + 64, ...
// Bindings:
//   0 step    storage Step         n_tokens T, n_splits
//   1 shape   uniform Shape        a = n_heads
//   2 part    storage read  f32    (T, n_heads, n_splits, HEAD_DIM + 2) per partition: acc[HEAD_DIM], m, l
//   3 out     storage rw    f32    (T, n_heads * HEAD_DIM)
// Overrides: HEAD_DIM.

override HEAD_DIM: u32 = 64u;
const WG: u32 = 64u;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> part: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n_heads = shape.a;
    let h = wid.x;
    let t = wid.y;
    if (t >= step.n_tokens) { return; }
    let base = (t * n_heads + h) * step.n_splits * (HEAD_DIM + 2u);
    var m_max = -3.0e38;
    for (var i = 0u; i < step.n_splits; i++) {
        m_max = max(m_max, part[base + i * (HEAD_DIM + 2u) + HEAD_DIM]);
    }
    var l = 0.0;
    for (var i = 0u; i < step.n_splits; i++) {
        let b = base + i * (HEAD_DIM + 2u);
        l += exp(part[b + HEAD_DIM] - m_max) * part[b + HEAD_DIM + 1u];
    }
    for (var col = j; col < HEAD_DIM; col += WG) {
        var acc = 0.0;
        for (var i = 0u; i < step.n_splits; i++) {
            let b = base + i * (HEAD_DIM + 2u);
            acc += exp(part[b + HEAD_DIM] - m_max) * part[b + col];
        }
        out[(t * n_heads + h) * HEAD_DIM + col] = acc / l;
    }
}
