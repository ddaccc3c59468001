// lib/quant.wgsl: appended to the kernels that read quantized weights (matvec.wgsl, matmat.wgsl,
// embed.wgsl; src/gpu/kernels.rs): where a weight row lives in the texture `w` and how its GGUF
// blocks decode, 32 values (a "unit") at a time.
// What: the GGUF block formats (ggml-quants.c's dequantize_row_*, the Format docs in
// src/weights.rs) in the device layout of src/gpu/weights.rs (`device_row`): a row's blocks
// re-laid once at load so that every texel holds only quants, the per-block scales moved to the
// row's tail. Nothing is lost: the bytes are GGUF's, only their order changes.
//   Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (blocks of 32 = one unit): the row is U units' quants, then
//     its tail. Quants: Q8_0 two texels a unit (32 i8), the others one texel (16 bytes of
//     nibbles: byte j holds value j low, value 16 + j high). Tail (words from the texel after
//     the quants): the scales, d as f16 two a word (Q8_0, Q4_0, Q5_0) or d | m << 16 a word
//     (Q4_1, Q5_1), then for Q5_0 / Q5_1 qh, a word a unit (bit v: the 5th bit of value v).
//   Q4_K (144 bytes = 9 texels), Q5_K (176 = 11): super-blocks of 256 = 8 units as stored.
//   Q6_K: each super-block's first 208 bytes (ql, qh, scales: 13 texels) as stored; the tail holds
//     its f16 d, two a word.
// A unit's weights: w[4 i + c] = d[i / 4] * q[i][c] + m[i / 4] for i < 8, c < 4 (`load_unit`
// gives d and m for the two halves of 16, `unit_q` the integer quants q of vec4 i as f32), so a
// product sums q·x in f32 per half and scales once: exact integers times x, then one multiply.
// CPU twin: Format::decode (src/weights.rs), tests/gpu_kernels.rs compares the products and the
// embedding gather for every type on rows that are not whole groups of units.
// Bindings: the kernel's `w`, texture_storage_2d_array<rgba32uint, read> (binding 3 or 2).
// Overrides: WTYPE, GGUF's type id of the weights: 0 F32, 1 F16 (the kernels' float path), 2
// Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0, 12 Q4_K, 13 Q5_K, 14 Q6_K.
// Dispatch: none; the kernels' functions.

override WTYPE: u32 = 1u;

const Q4_0 = 2u;
const Q4_1 = 3u;
const Q5_0 = 6u;
const Q5_1 = 7u;
const Q8_0 = 8u;
const Q4_K = 12u;
const Q5_K = 13u;
const Q6_K = 14u;

// Where row o lives: texel k at (k * r.w + r.x, r.y) in layer r.z. Rows are stored in groups of
// 8, interleaved texel by texel (as WeightTex lays out float rows, without their padding to 8
// texels), in layers of texture rows (WeightTex::upload_blocks): on CPU adapters a power of two,
// so shifts and masks find it (a u32 division costs a scalar divide per lane there); on GPUs
// layers of equal height, at most a texture row of padding each (the branch is uniform).
// (Row widths in texels: src/gpu/weights.rs `row_texels`.)
// Row o counts from w_row_base (prelude.wgsl: an MoE product's expert).
fn q_row(n: u32, o_in: u32) -> vec4<u32> {
    let o = o_in + w_row_base;
    let height = textureDimensions(w).y;
    let group = o >> 3u;
    if ((height & (height - 1u)) != 0u) {
        return vec4<u32>(o & 7u, group % height, group / height, 8u);
    }
    return vec4<u32>(o & 7u, group & (height - 1u), group >> firstTrailingBit(height), 8u);
}

fn tex(r: vec4<u32>, k: u32) -> vec4<u32> {
    return textureLoad(w, vec2<u32>(k * r.w + r.x, r.y), r.z);
}

// Word i of the tail that starts at texel `base`.
fn tail_word(r: vec4<u32>, base: u32, i: u32) -> u32 {
    return tex(r, base + i / 4u)[i % 4u];
}

// The four bytes of a word, low first.
fn bytes4(v: u32) -> vec4<u32> {
    return (vec4<u32>(v) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xFFu);
}

fn byte_at(t: vec4<u32>, i: u32) -> u32 {
    return (t[i / 4u] >> (8u * (i % 4u))) & 0xFFu;
}

// One unit of 32 values: its quant texels t (as the type needs them), the scales d and offsets
// m of its two halves, and s (K-quants: the unit's index in its super-block).
struct Unit {
    t: array<vec4<u32>, 4>,
    d: vec2<f32>,
    m: vec2<f32>,
    s: u32,
}

// K-quants' 6-bit scale and min of sub-block j from the 12 scale bytes at bytes 4..16 of
// header texel h (ggml-quants.c get_scale_min_k4).
fn scale_min_k4(h: vec4<u32>, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_at(h, 4u + j) & 63u), f32(byte_at(h, 8u + j) & 63u));
    }
    let sc = (byte_at(h, 8u + j) & 0xFu) | ((byte_at(h, j) >> 6u) << 4u);
    let mn = (byte_at(h, 8u + j) >> 4u) | ((byte_at(h, 4u + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

// Unit u of row r (n columns).
fn load_unit(r: vec4<u32>, n: u32, u: u32) -> Unit {
    var un: Unit;
    let nu = n / 32u;
    switch WTYPE {
        case 8u: { // Q8_0
            un.t[0] = tex(r, 2u * u);
            un.t[1] = tex(r, 2u * u + 1u);
            un.d = vec2<f32>(unpack2x16float(tail_word(r, 2u * nu, u / 2u))[u % 2u]);
        }
        case 2u, 6u: { // Q4_0, Q5_0
            un.t[0] = tex(r, u);
            un.d = vec2<f32>(unpack2x16float(tail_word(r, nu, u / 2u))[u % 2u]);
            if (WTYPE == Q5_0) { un.t[1].x = tail_word(r, nu, (nu + 1u) / 2u + u); }
        }
        case 3u, 7u: { // Q4_1, Q5_1
            un.t[0] = tex(r, u);
            let dm = unpack2x16float(tail_word(r, nu, u));
            un.d = vec2<f32>(dm.x);
            un.m = vec2<f32>(dm.y);
            if (WTYPE == Q5_1) { un.t[1].x = tail_word(r, nu, nu + u); }
        }
        case 12u, 13u: { // Q4_K, Q5_K: d = d·sc, m = -dmin·min of sub-block j
            let j = u % 8u;
            let base = (u / 8u) * select(9u, 11u, WTYPE == Q5_K);
            let h = tex(r, base);
            let dd = unpack2x16float(h.x);
            let sm = scale_min_k4(h, j);
            un.d = vec2<f32>(dd.x * sm.x);
            un.m = vec2<f32>(-(dd.y * sm.y));
            let qs = base + select(1u, 3u, WTYPE == Q5_K) + 2u * (j / 2u);
            un.t[0] = tex(r, qs);
            un.t[1] = tex(r, qs + 1u);
            if (WTYPE == Q5_K) {
                un.t[2] = tex(r, base + 1u);
                un.t[3] = tex(r, base + 2u);
            }
            un.s = j;
        }
        default: { // Q6_K: half h of the super-block, quarter c; scales a and a + 1
            let sb = u / 8u;
            let j = u % 8u;
            let h = j / 4u;
            let c = j % 4u;
            let base = 13u * sb;
            un.t[0] = tex(r, base + 4u * h + 2u * (c & 1u));
            un.t[1] = tex(r, base + 4u * h + 2u * (c & 1u) + 1u);
            un.t[2] = tex(r, base + 8u + 2u * h);
            un.t[3] = tex(r, base + 9u + 2u * h);
            let sc = tex(r, base + 12u);
            let a = 8u * h + 2u * c;
            let d = unpack2x16float(tail_word(r, 13u * (n / 256u), sb / 2u))[sb % 2u];
            // i8 scales: sign-extended
            let s0 = f32((i32(byte_at(sc, a)) << 24u) >> 24u);
            let s1 = f32((i32(byte_at(sc, a + 1u)) << 24u) >> 24u);
            un.d = vec2<f32>(d * s0, d * s1);
            un.s = j;
        }
    }
    return un;
}

// The integer quants of values 4i..4i+3 of a unit (offsets such as Q4_0's -8 applied), as f32.
fn unit_q(un: Unit, i: u32) -> vec4<f32> {
    switch WTYPE {
        case 8u: { // Q8_0: i8, sign-extended
            let v = un.t[i / 4u][i % 4u];
            return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(v) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
        }
        case 2u, 3u: { // Q4_0, Q4_1: nibbles of word i % 4, low for i < 4
            let q = bytes4((un.t[0][i % 4u] >> (4u * (i / 4u))) & 0x0F0F0F0Fu);
            return vec4<f32>(q) - select(0.0, 8.0, WTYPE == Q4_0);
        }
        case 6u, 7u: { // Q5_0, Q5_1: the nibble and bit 4i + c of qh
            let lo = bytes4((un.t[0][i % 4u] >> (4u * (i / 4u))) & 0x0F0F0F0Fu);
            let hi = ((vec4<u32>(un.t[1].x >> (4u * i)) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u)) << vec4<u32>(4u);
            return vec4<f32>(lo | hi) - select(0.0, 16.0, WTYPE == Q5_0);
        }
        case 12u, 13u: { // Q4_K, Q5_K: sub-block s takes the low (even s) or high nibbles of its pair's bytes
            var q = bytes4((un.t[i / 4u][i % 4u] >> (4u * (un.s % 2u))) & 0x0F0F0F0Fu);
            if (WTYPE == Q5_K) { q |= ((bytes4(un.t[2u + i / 4u][i % 4u]) >> vec4<u32>(un.s)) & vec4<u32>(1u)) << vec4<u32>(4u); }
            return vec4<f32>(q);
        }
        default: { // Q6_K: 4 low bits from ql, 2 high bits from qh, minus 32
            let c = un.s % 4u;
            let lo = bytes4((un.t[i / 4u][i % 4u] >> (4u * (c / 2u))) & 0x0F0F0F0Fu);
            let hi = (bytes4(un.t[2u + i / 4u][i % 4u]) >> vec4<u32>(2u * c)) & vec4<u32>(3u);
            return vec4<f32>(lo | (hi << vec4<u32>(4u))) - 32.0;
        }
    }
}

// Weights 4i..4i+3 of a unit: d·q + m of their half.
fn unit_w(un: Unit, i: u32) -> vec4<f32> {
    let half = i / 4u;
    return unit_q(un, i) * un.d[half] + un.m[half];
}
