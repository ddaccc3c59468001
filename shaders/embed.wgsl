// embed.wgsl: embedding gather, x[t, :] = table[tokens[t], :].
// CPU twin: the embedding loop at the top of cpu::forward.
// Dispatch: (ceil(dim / 64), T, 1); one invocation per (element i, token t).
// A table larger than one storage binding is split by rows: one dispatch per part, each copying
// only the tokens whose id falls in [shape.c, shape.c + shape.b).
// Bindings:
//   0 step   uniform Step          n_tokens T, pos0, token ids
//   1 shape  uniform Shape         a = dim, b = rows in this part, c = first vocab row of the part
//   2 table  storage read  f32     (rows, dim)
//   3 x      storage rw    f32     (T_max, dim)
// Overrides: none.

struct Step { n_tokens: u32, pos0: u32, pad0: u32, pad1: u32, tokens: array<vec4<u32>, 64> }
struct Shape { a: u32, b: u32, c: u32, d: u32 }

@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let dim = shape.a;
    let i = gid.x;
    let t = gid.y;
    if (i >= dim || t >= step.n_tokens) { return; }
    let tok = step.tokens[t / 4u][t % 4u];
    if (tok < shape.c || tok >= shape.c + shape.b) { return; }
    x[t * dim + i] = table[(tok - shape.c) * dim + i];
}
