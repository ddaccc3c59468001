// lib/kv.wgsl: how the KV cache holds its values, f32 or f16 (KV_F16), appended to the kernels
// that write it (qk_norm_rope.wgsl, the matrix kernels' put_rope) and read it (attention_*.wgsl).
// Needs the kernel's HEAD_DIM and KV_F16 overrides (declared by each kernel, before any
// override that sizes an array: naga 30 panics on an override declared after such a one);
// touches no buffer (kernels load words and pass them in).
//
// A cache row is n_kv_heads heads of HEAD_DIM values, in u32 words:
//   f32: HEAD_DIM words a head, value i in word i (its bits).
//   f16: HEAD_DIM / 2 words a head; word w holds value w in its low half and value
//        w + HEAD_DIM / 2 in its high half: the two values RoPE rotates together, so whoever
//        writes a rotation pair writes one whole word (no two invocations share a word).
// Readers take a head eight values at a time: quad i (i < HEAD_DIM / 8) is values 4i .. 4i + 3
// (lo) and HEAD_DIM / 2 + 4i .. + 3 (hi), from the vec4<u32> at kv_head_v4(head0) + i and, for
// f32, the one kv_hi() further. Any order of the dot product's terms is a valid order, so the
// query and the accumulator are indexed to match: lo with vec4 i, hi with vec4 i + HEAD_DIM / 8.
// CPU twin of the f16 layout: tests/gpu_kernels.rs `pack_kv_f16`.

struct Quads { lo: vec4<f32>, hi: vec4<f32> }

// The vec4<u32> index of a head's first words; head0 = row * kv_dim + kv_head * HEAD_DIM (values).
fn kv_head_v4(head0: u32) -> u32 { return head0 / select(4u, 8u, KV_F16); }

// How far a quad's hi vec4 lies from its lo one (f16: the same vec4).
fn kv_hi() -> u32 { return select(HEAD_DIM / 8u, 0u, KV_F16); }

// Quad values from the vec4 at kv_head_v4(..) + i (`a`) and the one kv_hi() further (`b`).
fn kv_quads(a: vec4<u32>, b: vec4<u32>) -> Quads {
    if (KV_F16) {
        let x = unpack2x16float(a.x);
        let y = unpack2x16float(a.y);
        let z = unpack2x16float(a.z);
        let w = unpack2x16float(a.w);
        return Quads(vec4<f32>(x.x, y.x, z.x, w.x), vec4<f32>(x.y, y.y, z.y, w.y));
    }
    return Quads(bitcast<vec4<f32>>(a), bitcast<vec4<f32>>(b));
}

// The word holding value i (< HEAD_DIM) of the head starting at value head0, and the value.
fn kv_word(head0: u32, i: u32) -> u32 {
    if (KV_F16) { return head0 / 2u + i % (HEAD_DIM / 2u); }
    return head0 + i;
}
fn kv_value(word: u32, i: u32) -> f32 {
    if (KV_F16) { return unpack2x16float(word)[i / (HEAD_DIM / 2u)]; }
    return bitcast<f32>(word);
}

// Writing the rotation pair (values e and e + HEAD_DIM / 2 of cache row `slot`, e % HEAD_DIM <
// HEAD_DIM / 2) = (a, b): f16, one word at kv_pair_word(..) = kv_pack(a, b); f32, the bits of a
// at kv_pair_word(..) and of b HEAD_DIM / 2 words further.
fn kv_pair_word(slot: u32, kv_dim: u32, e: u32) -> u32 {
    if (KV_F16) { return slot * (kv_dim / 2u) + (e / HEAD_DIM) * (HEAD_DIM / 2u) + e % HEAD_DIM; }
    return slot * kv_dim + e;
}
fn kv_pack(a: f32, b: f32) -> u32 { return pack2x16float(vec2<f32>(a, b)); }
