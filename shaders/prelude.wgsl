// prelude.wgsl: appended to every kernel's source (src/gpu/kernels.rs): the two small buffers
// every kernel binds first.
//
// Step (binding 0, storage read): what changes per step, written once before the step's pass.
//   n_tokens  T, the token rows of this step
//   n_splits  split-K partitions of the decode attention (attention_decode.wgsl)
//   split_len keys per partition (a multiple of the decode key tile)
//   rows[t] = (token id, position in its sequence, KV cache row it writes, sequence = block-table row)
struct Step {
    n_tokens: u32, n_splits: u32, split_len: u32, pad: u32,
    rows: array<vec4<u32>>,
}

// Shape (binding 1, uniform): four numbers fixed per call site; each kernel's header says what
// a, b, c, d mean.
struct Shape { a: u32, b: u32, c: u32, d: u32 }

fn step_token(t: u32) -> u32 { return step.rows[t].x; }
fn step_pos(t: u32) -> u32 { return step.rows[t].y; }
fn step_slot(t: u32) -> u32 { return step.rows[t].z; }
fn step_seq(t: u32) -> u32 { return step.rows[t].w; }

// Where weight row o lives in a weight texture (WeightTex in src/gpu/forward.rs) whose rows hold
// `texels` texels of data: texel k of the row is at (k * r.w + r.x, r.y) in layer r.z. Rows are
// padded to a multiple of 8 texels and stored in groups of g = width / padded rows, interleaved
// texel by texel, so the g rows that neighbouring invocations compute are contiguous in memory.
// Row o counts from `w_row_base` (MoE: the first row of the expert a product reads,
// lib/epilogue.wgsl; 0 elsewhere).
var<private> w_row_base: u32 = 0u;
fn weight_row(size: vec2<u32>, texels: u32, o_in: u32) -> vec4<u32> {
    let o = o_in + w_row_base;
    let g = size.x / ((texels + 7u) / 8u * 8u);
    let group = o / g;
    return vec4<u32>(o % g, group % size.y, group / size.y, g);
}
