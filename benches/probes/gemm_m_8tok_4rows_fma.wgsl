// probe: x=texture w=tex16i tokens=8 rows=256 -- gemm_f at 8 tokens with fma chains
@group(0) @binding(0) var x: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(1) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn xload(i4: u32, t: u32) -> vec4<f32> { return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t))); }
fn lo(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)); }
fn hi(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)); }
fn fd(w: vec4<f32>, s: vec4<f32>, a: f32) -> f32 { return fma(w.w, s.w, fma(w.z, s.z, fma(w.y, s.y, fma(w.x, s.x, a)))); }
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let j = gid.x & 7u;
    let y = (gid.x >> 3u) * 4u;
    let o = y * 8u + j;
    let t0 = gid.y * 8u;
    let xr = t0 + (lane & 7u);
    var a0: array<f32, 8>;
    var a1: array<f32, 8>;
    var a2: array<f32, 8>;
    var a3: array<f32, 8>;
    for (var k = 0u; k < 72u; k++) {
        let q0 = textureLoad(w, vec2<u32>(k * 8u + j, y + 0u), 0);
        let q1 = textureLoad(w, vec2<u32>(k * 8u + j, y + 1u), 0);
        let q2 = textureLoad(w, vec2<u32>(k * 8u + j, y + 2u), 0);
        let q3 = textureLoad(w, vec2<u32>(k * 8u + j, y + 3u), 0);
        let xa = xload(2u * k + 0u, xr);
        let w0 = lo(q0);
        let w1 = lo(q1);
        let w2 = lo(q2);
        let w3 = lo(q3);
        { let s = subgroupBroadcast(xa, 0u); a0[0] = fd(w0, s, a0[0]); a1[0] = fd(w1, s, a1[0]); a2[0] = fd(w2, s, a2[0]); a3[0] = fd(w3, s, a3[0]); }
        { let s = subgroupBroadcast(xa, 1u); a0[1] = fd(w0, s, a0[1]); a1[1] = fd(w1, s, a1[1]); a2[1] = fd(w2, s, a2[1]); a3[1] = fd(w3, s, a3[1]); }
        { let s = subgroupBroadcast(xa, 2u); a0[2] = fd(w0, s, a0[2]); a1[2] = fd(w1, s, a1[2]); a2[2] = fd(w2, s, a2[2]); a3[2] = fd(w3, s, a3[2]); }
        { let s = subgroupBroadcast(xa, 3u); a0[3] = fd(w0, s, a0[3]); a1[3] = fd(w1, s, a1[3]); a2[3] = fd(w2, s, a2[3]); a3[3] = fd(w3, s, a3[3]); }
        { let s = subgroupBroadcast(xa, 4u); a0[4] = fd(w0, s, a0[4]); a1[4] = fd(w1, s, a1[4]); a2[4] = fd(w2, s, a2[4]); a3[4] = fd(w3, s, a3[4]); }
        { let s = subgroupBroadcast(xa, 5u); a0[5] = fd(w0, s, a0[5]); a1[5] = fd(w1, s, a1[5]); a2[5] = fd(w2, s, a2[5]); a3[5] = fd(w3, s, a3[5]); }
        { let s = subgroupBroadcast(xa, 6u); a0[6] = fd(w0, s, a0[6]); a1[6] = fd(w1, s, a1[6]); a2[6] = fd(w2, s, a2[6]); a3[6] = fd(w3, s, a3[6]); }
        { let s = subgroupBroadcast(xa, 7u); a0[7] = fd(w0, s, a0[7]); a1[7] = fd(w1, s, a1[7]); a2[7] = fd(w2, s, a2[7]); a3[7] = fd(w3, s, a3[7]); }
        let xb = xload(2u * k + 1u, xr);
        let v0 = hi(q0);
        let v1 = hi(q1);
        let v2 = hi(q2);
        let v3 = hi(q3);
        { let s = subgroupBroadcast(xb, 0u); a0[0] = fd(v0, s, a0[0]); a1[0] = fd(v1, s, a1[0]); a2[0] = fd(v2, s, a2[0]); a3[0] = fd(v3, s, a3[0]); }
        { let s = subgroupBroadcast(xb, 1u); a0[1] = fd(v0, s, a0[1]); a1[1] = fd(v1, s, a1[1]); a2[1] = fd(v2, s, a2[1]); a3[1] = fd(v3, s, a3[1]); }
        { let s = subgroupBroadcast(xb, 2u); a0[2] = fd(v0, s, a0[2]); a1[2] = fd(v1, s, a1[2]); a2[2] = fd(v2, s, a2[2]); a3[2] = fd(v3, s, a3[2]); }
        { let s = subgroupBroadcast(xb, 3u); a0[3] = fd(v0, s, a0[3]); a1[3] = fd(v1, s, a1[3]); a2[3] = fd(v2, s, a2[3]); a3[3] = fd(v3, s, a3[3]); }
        { let s = subgroupBroadcast(xb, 4u); a0[4] = fd(v0, s, a0[4]); a1[4] = fd(v1, s, a1[4]); a2[4] = fd(v2, s, a2[4]); a3[4] = fd(v3, s, a3[4]); }
        { let s = subgroupBroadcast(xb, 5u); a0[5] = fd(v0, s, a0[5]); a1[5] = fd(v1, s, a1[5]); a2[5] = fd(v2, s, a2[5]); a3[5] = fd(v3, s, a3[5]); }
        { let s = subgroupBroadcast(xb, 6u); a0[6] = fd(v0, s, a0[6]); a1[6] = fd(v1, s, a1[6]); a2[6] = fd(v2, s, a2[6]); a3[6] = fd(v3, s, a3[6]); }
        { let s = subgroupBroadcast(xb, 7u); a0[7] = fd(v0, s, a0[7]); a1[7] = fd(v1, s, a1[7]); a2[7] = fd(v2, s, a2[7]); a3[7] = fd(v3, s, a3[7]); }
    }
    let n = arrayLength(&out) / 64u;
    for (var i = 0u; i < 8u; i++) {
        out[(t0 + i) * n + o + 0u] = a0[i];
        out[(t0 + i) * n + o + 8u] = a1[i];
        out[(t0 + i) * n + o + 16u] = a2[i];
        out[(t0 + i) * n + o + 24u] = a3[i];
    }
}
