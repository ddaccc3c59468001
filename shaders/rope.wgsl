// rope.wgsl: rotate-half RoPE in place on each head of each token row t, at its position pos[t]:
//   (x[i], x[i + h]) <- (x[i] cos - x[i + h] sin, x[i + h] cos + x[i] sin), h = head_dim / 2,
// with cos/sin from the table computed once on the host (WGSL sin/cos are only accurate near 0).
// CPU twin: cpu::ops::rope.
// Dispatch: (ceil(n_heads * head_dim / 2 / 64), T, 1); one invocation per rotated pair.
// Bindings:
//   0 step   storage Step          n_tokens T, pos[t]
//   1 shape  uniform Shape         a = n_heads, b = head_dim
//   2 cos    storage read  f32     (seq_len, head_dim/2)
//   3 sin    storage read  f32     (seq_len, head_dim/2)
//   4 x      storage rw    f32     (T_max, n_heads * head_dim)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hd = shape.b;
    let half = hd / 2u;
    let t = gid.y;
    if (gid.x >= shape.a * half || t >= step.n_tokens) { return; }
    let head = gid.x / half;
    let i = gid.x % half;
    let pos = step_pos(t);
    let c = cos_t[pos * half + i];
    let s = sin_t[pos * half + i];
    let base = t * shape.a * hd + head * hd;
    let a = x[base + i];
    let b = x[base + i + half];
    x[base + i] = a * c - b * s;
    x[base + i + half] = b * c + a * s;
}
