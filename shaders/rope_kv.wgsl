// rope_kv.wgsl: rotate-half RoPE on this step's queries (in place) and keys, and the keys and
// values stored in their cache rows, in one dispatch:
//   (q[i], q[i + h]) <- (q[i] cos - q[i + h] sin, q[i + h] cos + q[i] sin), h = head_dim / 2,
//   k_cache[slot[t]] = the same rotation of k[t], v_cache[slot[t]] = v[t],
// at each row's position pos[t], with cos/sin from the table computed once on the host (WGSL
// sin/cos are only accurate near 0). The slots come from the paged-KV bookkeeping
// (src/kv_cache.rs): row = block * PAGE + offset, whatever the layout.
// CPU twin: cpu::ops::rope on q and k, then the cache.k[l].extend / cache.v[l].extend lines of
// cpu::forward.
// Used after the GEMM of prefill and batch steps; decode steps do the same inside their QKV
// product (matvec.wgsl with ROPE).
// Dispatch: (ceil((n_heads + n_kv_heads) * head_dim / 2 / 64), T, 1): one invocation per rotated
// pair, query pairs first, then key pairs (each also copying the two values beside it).
// Bindings:
//   0 step    storage Step         n_tokens T, pos[t], slot[t]
//   1 shape   uniform Shape        a = n_heads, b = head_dim, c = n_kv_heads
//   2 cos     storage read  f32    (seq_len, head_dim/2)
//   3 sin     storage read  f32    (seq_len, head_dim/2)
//   4 k       storage read  f32    (T_max, n_kv_heads * head_dim)
//   5 v       storage read  f32    (T_max, n_kv_heads * head_dim)
//   6 q       storage rw    f32    (T_max, n_heads * head_dim)
//   7 k_cache storage rw    f32    (n_blocks * PAGE, n_kv_heads * head_dim)
//   8 v_cache storage rw    f32    (n_blocks * PAGE, n_kv_heads * head_dim)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read_write> q: array<f32>;
@group(0) @binding(7) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(8) var<storage, read_write> v_cache: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n_heads = shape.a;
    let hd = shape.b;
    let n_kv = shape.c;
    let half = hd / 2u;
    let t = gid.y;
    if (gid.x >= (n_heads + n_kv) * half || t >= step.n_tokens) { return; }
    let pos = step_pos(t);
    if (gid.x < n_heads * half) {
        let head = gid.x / half;
        let i = gid.x % half;
        let c = cos_t[pos * half + i];
        let s = sin_t[pos * half + i];
        let base = t * n_heads * hd + head * hd;
        let a = q[base + i];
        let b = q[base + i + half];
        q[base + i] = a * c - b * s;
        q[base + i + half] = b * c + a * s;
        return;
    }
    let j = gid.x - n_heads * half;
    let head = j / half;
    let i = j % half;
    let c = cos_t[pos * half + i];
    let s = sin_t[pos * half + i];
    let kv_dim = n_kv * hd;
    let src = t * kv_dim + head * hd;
    let dst = step_slot(t) * kv_dim + head * hd;
    let a = k[src + i];
    let b = k[src + i + half];
    k_cache[dst + i] = a * c - b * s;
    k_cache[dst + i + half] = b * c + a * s;
    v_cache[dst + i] = v[src + i];
    v_cache[dst + i + half] = v[src + i + half];
}
