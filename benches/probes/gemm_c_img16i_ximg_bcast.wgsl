// probe: x=texture w=tex16i tokens=64 rows=64 -- gemm_b with x and W read-only storage textures, W rows interleaved (matmat.wgsl now)
@group(0) @binding(0) var x: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(1) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn xload(i4: u32, t: u32) -> vec4<f32> { return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t))); }
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let o = gid.x;
    let t0 = gid.y * 8u;
    let xr = t0 + (lane & 7u);
    var a0 = 0.0; var a1 = 0.0; var a2 = 0.0; var a3 = 0.0;
    var a4 = 0.0; var a5 = 0.0; var a6 = 0.0; var a7 = 0.0;
    for (var k = 0u; k < 72u; k++) {
        let t = textureLoad(w, vec2<u32>(k * 8u + (o & 7u), o >> 3u), 0);
        let wa = vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y));
        let wb = vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w));
        let xa = xload(2u * k, xr);
        let xb = xload(2u * k + 1u, xr);
        a0 += dot(wa, subgroupBroadcast(xa, 0u)) + dot(wb, subgroupBroadcast(xb, 0u));
        a1 += dot(wa, subgroupBroadcast(xa, 1u)) + dot(wb, subgroupBroadcast(xb, 1u));
        a2 += dot(wa, subgroupBroadcast(xa, 2u)) + dot(wb, subgroupBroadcast(xb, 2u));
        a3 += dot(wa, subgroupBroadcast(xa, 3u)) + dot(wb, subgroupBroadcast(xb, 3u));
        a4 += dot(wa, subgroupBroadcast(xa, 4u)) + dot(wb, subgroupBroadcast(xb, 4u));
        a5 += dot(wa, subgroupBroadcast(xa, 5u)) + dot(wb, subgroupBroadcast(xb, 5u));
        a6 += dot(wa, subgroupBroadcast(xa, 6u)) + dot(wb, subgroupBroadcast(xb, 6u));
        a7 += dot(wa, subgroupBroadcast(xa, 7u)) + dot(wb, subgroupBroadcast(xb, 7u));
    }
    let n = arrayLength(&out) / 64u;
    out[(t0 + 0u) * n + o] = a0; out[(t0 + 1u) * n + o] = a1; out[(t0 + 2u) * n + o] = a2; out[(t0 + 3u) * n + o] = a3;
    out[(t0 + 4u) * n + o] = a4; out[(t0 + 5u) * n + o] = a5; out[(t0 + 6u) * n + o] = a6; out[(t0 + 7u) * n + o] = a7;
}
