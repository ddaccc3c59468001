// moe_combine.wgsl: an MoE block's output added to the residual stream:
//   x[t, o] += Σ_s weight[t, s] · y[t · K + s, o]  (+ sigmoid(logits[t, N_EXPERTS]) · y_shared[t, o])
// the routed experts' rows weighted as moe_route.wgsl chose, and with SHARED the shared expert's
// row scaled by its gate (Qwen2-MoE: the router product's last column is x · shared_expert_gate).
// CPU twin: the sums at the end of moe::block (src/moe.rs) and the residual add.
// Dispatch: (ceil(dim / 64), T, 1), an output value an invocation.
// Bindings:
//   0 step      storage Step       n_tokens T
//   1 shape     uniform Shape      a = dim, b = the logits' row stride
//   2 routing   storage read  u32  as moe_route.wgsl writes it (weights at 256 K)
//   3 y         storage read  f32  (T · K, dim): the experts' rows, by assignment
//   4 y_shared  storage read  f32  (T, dim) with SHARED, else a dummy
//   5 logits    storage read  f32  (T, b) with SHARED, else a dummy
//   6 x         storage rw    f32  (T, dim) the residual stream
// Overrides: N_EXPERTS, K, SHARED.

override N_EXPERTS: u32 = 8u;
override K: u32 = 2u;
override SHARED: bool = false;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> routing: array<u32>;
@group(0) @binding(3) var<storage, read> y: array<f32>;
@group(0) @binding(4) var<storage, read> y_shared: array<f32>;
@group(0) @binding(5) var<storage, read> logits: array<f32>;
@group(0) @binding(6) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let dim = shape.a;
    let o = gid.x;
    let t = gid.y;
    if (o >= dim || t >= step.n_tokens) { return; }
    var acc = 0.0;
    for (var s = 0u; s < K; s++) {
        let a = t * K + s;
        acc += bitcast<f32>(routing[256u * K + a]) * y[a * dim + o];
    }
    if (SHARED) {
        let g = logits[t * shape.b + N_EXPERTS];
        acc += y_shared[t * dim + o] / (1.0 + exp(-g));
    }
    x[t * dim + o] += acc;
}
