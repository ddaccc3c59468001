// kv_write.wgsl: store this step's keys and values in their cache rows:
//   k_cache[slot[t], :] = k[t, :], v_cache[slot[t], :] = v[t, :].
// The slots come from the paged-KV bookkeeping (src/kv_cache.rs): row = block * PAGE + offset,
// whatever the layout (paged, or contiguous = one page per sequence).
// CPU twin: the cache.k[l].extend / cache.v[l].extend lines of cpu::forward.
// Dispatch: (ceil(kv_dim / 64), T, 1).
// Bindings:
//   0 step    storage Step         n_tokens T, slot[t]
//   1 shape   uniform Shape        a = kv_dim
//   2 k       storage read  f32    (T_max, kv_dim)
//   3 v       storage read  f32    (T_max, kv_dim)
//   4 k_cache storage rw    f32    (n_blocks * PAGE, kv_dim)
//   5 v_cache storage rw    f32    (n_blocks * PAGE, kv_dim)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
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
    let dst = step_slot(t) * kv_dim + i;
    k_cache[dst] = k[t * kv_dim + i];
    v_cache[dst] = v[t * kv_dim + i];
}
