// argmax.wgsl: index of the largest logit of each row (the first one on ties, as torch.argmax),
// for greedy decoding without reading the logits back.
// CPU twin: cpu::ops::argmax.
// Dispatch: (R, 1, 1), a workgroup per logits row; one workgroup of 256 scans its row strided,
// then a tree reduction.
// Bindings:
//   0 step   storage Step          (not read; every kernel's layout starts with step, shape)
//   1 shape  uniform Shape         a = vocab_size
//   2 logits storage read  f32     (R, vocab_size)
//   3 result storage rw    u32     (R,)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> result: array<u32>;

const WG: u32 = 256u;
var<workgroup> best_v: array<f32, WG>;
var<workgroup> best_i: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x * shape.a;
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var i = lid; i < shape.a; i += WG) {
        let v = logits[row + i];
        if (v > bv) { bv = v; bi = i; } // strided: the first index wins within a thread
    }
    best_v[lid] = bv;
    best_i[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let ov = best_v[lid + s];
            let oi = best_i[lid + s];
            if (ov > best_v[lid] || (ov == best_v[lid] && oi < best_i[lid])) {
                best_v[lid] = ov;
                best_i[lid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        result[wid.x] = best_i[0];
    }
}
