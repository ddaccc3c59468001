// swiglu.wgsl: gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x)), over T * hidden_dim.
// CPU twin: cpu::ops::swiglu.
// Dispatch: (ceil(T * hidden_dim / 256), 1, 1).
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = hidden_dim
//   2 up     storage read  f32     (T_max, hidden_dim)
//   3 gate   storage rw    f32     (T_max, hidden_dim)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> gate: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= step.n_tokens * shape.a) { return; }
    let g = gate[i];
    gate[i] = g / (1.0 + exp(-g)) * up[i];
}
