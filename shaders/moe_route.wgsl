// moe_route.wgsl: the router of a Mixture-of-Experts block, on the device: for each token row t,
// the top K of its router logits (ties: the lower expert first), their softmax probabilities
// over all N_EXPERTS (divided by the K's sum with NORM_TOPK), then per expert the list of
// assignments a = t * K + s routed to it, which the grouped expert products read
// (lib/epilogue.wgsl: moe_gemv, moe_gemm_rows). Nothing goes back to the host.
// CPU twin: moe::route (src/moe.rs) for each row; the lists: the rows moe::block gathers.
// Dispatch: (1, 1, 1): one workgroup of 256; invocation t routes token t (T ≤ 256), then,
// after a storage barrier, invocation e lists expert e's assignments in order of a.
// Bindings:
//   0 step     storage Step       n_tokens T
//   1 shape    uniform Shape      a = the logits' row stride (N_EXPERTS, or + 1 with a shared gate)
//   2 logits   storage read  f32  (T, a): x · W_routerᵀ (the router product's rows)
//   3 routing  storage rw    u32  ids (256 K) | weights as f32 bits (256 K) | per expert e at
//                                 2 · 256 K + e · 257: its count, then its assignments
// Overrides: N_EXPERTS (≤ 256), K (≤ 8, ≤ N_EXPERTS), NORM_TOPK.

override N_EXPERTS: u32 = 8u;
override K: u32 = 2u;
override NORM_TOPK: bool = false;
const MAX_T: u32 = 256u;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> routing: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) i: u32) {
    let n_tok = step.n_tokens;
    if (i < n_tok) {
        let row = i * shape.a;
        // insertion into the best K so far, highest first; a later expert must be strictly
        // higher to pass an earlier one
        var ids: array<u32, 8>;
        var top: array<f32, 8>;
        for (var j = 0u; j < 8u; j++) { top[j] = -3.4e38; }
        for (var e = 0u; e < N_EXPERTS; e++) {
            let v = logits[row + e];
            if (v > top[K - 1u]) {
                var p = K - 1u;
                while (p > 0u && v > top[p - 1u]) {
                    top[p] = top[p - 1u];
                    ids[p] = ids[p - 1u];
                    p--;
                }
                top[p] = v;
                ids[p] = e;
            }
        }
        var sum = 0.0;
        for (var e = 0u; e < N_EXPERTS; e++) { sum += exp(logits[row + e] - top[0]); }
        var scale = sum;
        if (NORM_TOPK) {
            var chosen = 0.0;
            for (var j = 0u; j < K; j++) { chosen += exp(top[j] - top[0]); }
            scale = chosen;
        }
        for (var j = 0u; j < K; j++) {
            routing[i * K + j] = ids[j];
            routing[MAX_T * K + i * K + j] = bitcast<u32>(exp(top[j] - top[0]) / scale);
        }
    }
    storageBarrier();
    if (i < N_EXPERTS) {
        let base = 2u * MAX_T * K + i * (MAX_T + 1u);
        var n = 0u;
        for (var a = 0u; a < n_tok * K; a++) {
            if (routing[a] == i) {
                routing[base + 1u + n] = a;
                n++;
            }
        }
        routing[base] = n;
    }
}
