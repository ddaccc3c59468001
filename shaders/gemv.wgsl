// gemv.wgsl: matrix-vector product for the LAST token row: out[row0 + o] = W[o, :] . x[T-1, :] + bias[o].
// Used for every matmul of a decode step (T = 1) and for the LM head when only the last
// position's logits are wanted.
// CPU twin: cpu::ops::matmul with one token.
// Dispatch: (ceil(n / 64), 1, 1); one invocation per output row, vec4 loads along d.
// Bindings:
//   0 step   storage Step          n_tokens T (the row read is T - 1)
//   1 shape  uniform Shape         a = d (multiple of 4), b = n rows of this part, c = row0 (offset into out and bias)
//   2 x      storage read  vec4f   (T_max, d/4)
//   3 w      storage read  vec4f   (n, d/4)
//   4 bias   storage read  f32     (row0 + n,) when HAS_BIAS, else a dummy
//   5 out    storage rw    f32     (row0 + n,)
// Overrides: HAS_BIAS (bool) adds bias[row0 + o].

// Step, Shape: shaders/prelude.wgsl

override HAS_BIAS: bool = false;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let d4 = shape.a / 4u;
    let o = gid.x;
    if (o >= shape.b) { return; }
    let xrow = (step.n_tokens - 1u) * d4;
    let wrow = o * d4;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < d4; k++) {
        acc += w[wrow + k] * x[xrow + k];
    }
    var y = acc.x + acc.y + acc.z + acc.w;
    if (HAS_BIAS) { y += bias[shape.c + o]; }
    out[shape.c + o] = y;
}
