// argmax.wgsl: index of the largest logit (the first one on ties, as torch.argmax), for greedy
// decoding without reading the logits back.
// CPU twin: cpu::ops::argmax.
// Dispatch: (1, 1, 1); one workgroup of 256 scans strided, then a tree reduction.
// Bindings:
//   0 step   storage Step          (not read; every kernel's layout starts with step, shape)
//   1 shape  uniform Shape         a = vocab_size
//   2 logits storage read  f32     (vocab_size,)
//   3 result storage rw    u32     (1,)
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
fn main(@builtin(local_invocation_index) lid: u32) {
    var bv = -3.4e38;
    var bi = 0xffffffffu;
    for (var i = lid; i < shape.a; i += WG) {
        let v = logits[i];
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
        result[0] = best_i[0];
    }
}
