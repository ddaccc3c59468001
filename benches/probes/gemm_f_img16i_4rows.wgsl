// probe: x=texture w=tex16i tokens=64,8 rows=256 -- gemm_e with 4 rows per lane (a group of 32 rows)
@group(0) @binding(0) var x: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(1) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn xload(i4: u32, t: u32) -> vec4<f32> { return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t))); }
fn lo(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)); }
fn hi(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)); }
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
        { let s = subgroupBroadcast(xa, 0u); a0[0] += dot(w0, s); a1[0] += dot(w1, s); a2[0] += dot(w2, s); a3[0] += dot(w3, s); }
        { let s = subgroupBroadcast(xa, 1u); a0[1] += dot(w0, s); a1[1] += dot(w1, s); a2[1] += dot(w2, s); a3[1] += dot(w3, s); }
        { let s = subgroupBroadcast(xa, 2u); a0[2] += dot(w0, s); a1[2] += dot(w1, s); a2[2] += dot(w2, s); a3[2] += dot(w3, s); }
        { let s = subgroupBroadcast(xa, 3u); a0[3] += dot(w0, s); a1[3] += dot(w1, s); a2[3] += dot(w2, s); a3[3] += dot(w3, s); }
        { let s = subgroupBroadcast(xa, 4u); a0[4] += dot(w0, s); a1[4] += dot(w1, s); a2[4] += dot(w2, s); a3[4] += dot(w3, s); }
        { let s = subgroupBroadcast(xa, 5u); a0[5] += dot(w0, s); a1[5] += dot(w1, s); a2[5] += dot(w2, s); a3[5] += dot(w3, s); }
        { let s = subgroupBroadcast(xa, 6u); a0[6] += dot(w0, s); a1[6] += dot(w1, s); a2[6] += dot(w2, s); a3[6] += dot(w3, s); }
        { let s = subgroupBroadcast(xa, 7u); a0[7] += dot(w0, s); a1[7] += dot(w1, s); a2[7] += dot(w2, s); a3[7] += dot(w3, s); }
        let xb = xload(2u * k + 1u, xr);
        let v0 = hi(q0);
        let v1 = hi(q1);
        let v2 = hi(q2);
        let v3 = hi(q3);
        { let s = subgroupBroadcast(xb, 0u); a0[0] += dot(v0, s); a1[0] += dot(v1, s); a2[0] += dot(v2, s); a3[0] += dot(v3, s); }
        { let s = subgroupBroadcast(xb, 1u); a0[1] += dot(v0, s); a1[1] += dot(v1, s); a2[1] += dot(v2, s); a3[1] += dot(v3, s); }
        { let s = subgroupBroadcast(xb, 2u); a0[2] += dot(v0, s); a1[2] += dot(v1, s); a2[2] += dot(v2, s); a3[2] += dot(v3, s); }
        { let s = subgroupBroadcast(xb, 3u); a0[3] += dot(v0, s); a1[3] += dot(v1, s); a2[3] += dot(v2, s); a3[3] += dot(v3, s); }
        { let s = subgroupBroadcast(xb, 4u); a0[4] += dot(v0, s); a1[4] += dot(v1, s); a2[4] += dot(v2, s); a3[4] += dot(v3, s); }
        { let s = subgroupBroadcast(xb, 5u); a0[5] += dot(v0, s); a1[5] += dot(v1, s); a2[5] += dot(v2, s); a3[5] += dot(v3, s); }
        { let s = subgroupBroadcast(xb, 6u); a0[6] += dot(v0, s); a1[6] += dot(v1, s); a2[6] += dot(v2, s); a3[6] += dot(v3, s); }
        { let s = subgroupBroadcast(xb, 7u); a0[7] += dot(v0, s); a1[7] += dot(v1, s); a2[7] += dot(v2, s); a3[7] += dot(v3, s); }
    }
    let n = arrayLength(&out) / 64u;
    for (var i = 0u; i < 8u; i++) {
        out[(t0 + i) * n + o + 0u] = a0[i];
        out[(t0 + i) * n + o + 8u] = a1[i];
        out[(t0 + i) * n + o + 16u] = a2[i];
        out[(t0 + i) * n + o + 24u] = a3[i];
    }
}
