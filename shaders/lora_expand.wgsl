// lora_expand.wgsl: LoRA's second product for every row of a step (Punica's / vLLM's "expand"):
//   delta[t, o] = sum over adapters a of factor(seq(t), a) * sum over j in cols(a) of B[o, j] * u[t, j]
// where u comes from lora_shrink.wgsl and B (n, R) stacks every adapter's and module's lora_B,
// already scaled by the adapter's alpha / r (or alpha / sqrt(r)) and zero where a column's module
// is not the row's (q;k;v, gate;up). The matrix kernel of the adapted product adds delta[t, o]
// to its row o before its epilogue (lib/epilogue.wgsl, LORA).
// CPU twin: lora::LoraPair::apply's (x·Aᵀ)·Bᵀ times the factors.
// Dispatch: (ceil(n / 64), T, 1): invocation (o, t) computes delta[t, o].
// Bindings:
//   0 step    storage Step          rows[t].w: the row's sequence
//   1 shape   uniform Shape         a = R (columns), b = n (rows), c = n_adapters
//   2 cols    uniform vec4<u32>     (8,): adapter a's columns are cols[a]..cols[a + 1]
//   3 factors storage read  f32     (max_seqs, n_adapters)
//   4 u       storage read  f32     (T, R)
//   5 b       storage read  f32     (n, R)
//   6 delta   storage rw    f32     (T, n)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<uniform> cols: array<vec4<u32>, 8>;
@group(0) @binding(3) var<storage, read> factors: array<f32>;
@group(0) @binding(4) var<storage, read> u: array<f32>;
@group(0) @binding(5) var<storage, read> b: array<f32>;
@group(0) @binding(6) var<storage, read_write> delta: array<f32>;

fn col(i: u32) -> u32 { return cols[i / 4u][i % 4u]; }

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    let t = gid.y;
    if (o >= shape.b) { return; }
    let r = shape.a;
    var acc = 0.0;
    for (var ad = 0u; ad < shape.c; ad++) {
        let f = factors[step_seq(t) * shape.c + ad];
        if (f == 0.0) { continue; }
        var part = 0.0;
        for (var j = col(ad); j < col(ad + 1u); j++) { part += b[o * r + j] * u[t * r + j]; }
        acc += f * part;
    }
    delta[t * shape.b + o] = acc;
}
