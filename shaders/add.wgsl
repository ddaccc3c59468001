// add.wgsl: residual add, x[i] += y[i] over T * dim.
// CPU twin: cpu::ops::add.
// Dispatch: (ceil(T * dim / 256), 1, 1).
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = dim
//   2 y      storage read  f32     (T_max, dim)
//   3 x      storage rw    f32     (T_max, dim)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= step.n_tokens * shape.a) { return; }
    x[i] += y[i];
}
