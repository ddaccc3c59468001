// gemm.wgsl: out[t, row0 + o] = W[o, :] . x[t, :] + bias[row0 + o] for all T token rows (prefill).
// CPU twin: cpu::ops::matmul.
// Dispatch: (ceil(n / 32), ceil(T / 32), 1). Workgroup 8 x 8; each invocation computes a 4 x 4
// register tile (4 tokens x 4 output rows), loading vec4s along d straight from memory: every
// weight vec4 is reused by 4 tokens and every activation vec4 by 4 rows.
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = d (multiple of 4), b = n rows of this part, c = row0, d = out row stride
//   2 x      storage read  vec4f   (T_max, d/4)
//   3 w      storage read  vec4f   (n, d/4)
//   4 bias   storage read  f32     (row0 + n,) when HAS_BIAS, else a dummy
//   5 out    storage rw    f32     (T_max, stride)
// Overrides: HAS_BIAS (bool).

// Step, Shape: shaders/prelude.wgsl

override HAS_BIAS: bool = false;

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let d4 = shape.a / 4u;
    let n = shape.b;
    let t_n = step.n_tokens;
    let o0 = gid.x * 4u;
    let t0 = gid.y * 4u;
    if (o0 >= n || t0 >= t_n) { return; }
    var acc: array<array<f32, 4>, 4>; // [token][row]
    // Rows and tokens past the end are clamped for loading and skipped when storing.
    var wr: array<u32, 4>;
    var xr: array<u32, 4>;
    for (var j = 0u; j < 4u; j++) {
        wr[j] = min(o0 + j, n - 1u) * d4;
        xr[j] = min(t0 + j, t_n - 1u) * d4;
    }
    for (var k = 0u; k < d4; k++) {
        let w0 = w[wr[0] + k]; let w1 = w[wr[1] + k]; let w2 = w[wr[2] + k]; let w3 = w[wr[3] + k];
        for (var i = 0u; i < 4u; i++) {
            let xv = x[xr[i] + k];
            acc[i][0] += dot(xv, w0);
            acc[i][1] += dot(xv, w1);
            acc[i][2] += dot(xv, w2);
            acc[i][3] += dot(xv, w3);
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let t = t0 + i;
        if (t >= t_n) { break; }
        for (var j = 0u; j < 4u; j++) {
            let o = o0 + j;
            if (o >= n) { break; }
            var y = acc[i][j];
            if (HAS_BIAS) { y += bias[shape.c + o]; }
            out[t * shape.d + shape.c + o] = y;
        }
    }
}
