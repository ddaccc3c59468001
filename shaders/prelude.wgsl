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
