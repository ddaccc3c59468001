// embed.wgsl: embedding gather, x[t, :] = table[tokens[t], :].
// CPU twin: the embedding loop at the top of cpu::forward.
// Dispatch: (ceil(dim / 64), T, 1); one invocation per (element i, token t).
// A table larger than one storage binding is split by rows: one dispatch per part, each copying
// only the tokens whose id falls in [shape.c, shape.c + shape.b).
// Bindings:
//   0 step   storage Step          n_tokens T, token id of row t
//   1 shape  uniform Shape         a = dim, b = rows in this part, c = first vocab row of the part
//   2 table  storage read  f32     (rows, dim)
//   3 x      storage rw    f32     (T_max, dim)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let dim = shape.a;
    let i = gid.x;
    let t = gid.y;
    if (i >= dim || t >= step.n_tokens) { return; }
    let tok = step_token(t);
    if (tok < shape.c || tok >= shape.c + shape.b) { return; }
    x[t * dim + i] = table[(tok - shape.c) * dim + i];
}
