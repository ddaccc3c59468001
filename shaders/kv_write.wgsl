// kv_write.wgsl: append this step's keys and values to the layer's cache:
//   k_cache[pos0 + t, :] = k[t, :], v_cache[pos0 + t, :] = v[t, :].
// CPU twin: the cache.k[l].extend / cache.v[l].extend lines of cpu::forward.
// Dispatch: (ceil(kv_dim / 64), T, 1).
// Bindings:
//   0 step    uniform Step         n_tokens T, pos0
//   1 shape   uniform Shape        a = kv_dim
//   2 k       storage read  f32    (T_max, kv_dim)
//   3 v       storage read  f32    (T_max, kv_dim)
//   4 k_cache storage rw    f32    (seq_len, kv_dim)
//   5 v_cache storage rw    f32    (seq_len, kv_dim)
// Overrides: none. (The paged variant will map pos0 + t through a block table here.)

struct Step { n_tokens: u32, pos0: u32, pad0: u32, pad1: u32, tokens: array<vec4<u32>, 64> }
struct Shape { a: u32, b: u32, c: u32, d: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_cache: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let kv_dim = shape.a;
    let i = gid.x;
    let t = gid.y;
    if (i >= kv_dim || t >= step.n_tokens) { return; }
    let dst = (step.pos0 + t) * kv_dim + i;
    k_cache[dst] = k[t * kv_dim + i];
    v_cache[dst] = v[t * kv_dim + i];
}
