// probe: x=texture w=tex16i tokens=64,8 rows=128 -- gemm_c with 2 rows per lane (o and o + 8 of a group of 16): each broadcast x feeds two rows
@group(0) @binding(0) var x: texture_storage_2d<rgba32uint, read>;
@group(0) @binding(1) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn xload(i4: u32, t: u32) -> vec4<f32> { return bitcast<vec4<f32>>(textureLoad(x, vec2<u32>(i4, t))); }
fn lo(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)); }
fn hi(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)); }
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let j = gid.x & 7u;
    let y = (gid.x >> 3u) * 2u;       // texture row of the first group; the second is y + 1
    let o = y * 8u + j;               // rows o and o + 8
    let t0 = gid.y * 8u;
    let xr = t0 + (lane & 7u);
    var a: array<f32, 8>;
    var b: array<f32, 8>;
    for (var k = 0u; k < 72u; k++) {
        let t = textureLoad(w, vec2<u32>(k * 8u + j, y), 0);
        let u = textureLoad(w, vec2<u32>(k * 8u + j, y + 1u), 0);
        let xa = xload(2u * k, xr);
        let ta = lo(t); let ua = lo(u);
        var s = subgroupBroadcast(xa, 0u); a[0] += dot(ta, s); b[0] += dot(ua, s);
        s = subgroupBroadcast(xa, 1u); a[1] += dot(ta, s); b[1] += dot(ua, s);
        s = subgroupBroadcast(xa, 2u); a[2] += dot(ta, s); b[2] += dot(ua, s);
        s = subgroupBroadcast(xa, 3u); a[3] += dot(ta, s); b[3] += dot(ua, s);
        s = subgroupBroadcast(xa, 4u); a[4] += dot(ta, s); b[4] += dot(ua, s);
        s = subgroupBroadcast(xa, 5u); a[5] += dot(ta, s); b[5] += dot(ua, s);
        s = subgroupBroadcast(xa, 6u); a[6] += dot(ta, s); b[6] += dot(ua, s);
        s = subgroupBroadcast(xa, 7u); a[7] += dot(ta, s); b[7] += dot(ua, s);
        let xb = xload(2u * k + 1u, xr);
        let tb = hi(t); let ub = hi(u);
        s = subgroupBroadcast(xb, 0u); a[0] += dot(tb, s); b[0] += dot(ub, s);
        s = subgroupBroadcast(xb, 1u); a[1] += dot(tb, s); b[1] += dot(ub, s);
        s = subgroupBroadcast(xb, 2u); a[2] += dot(tb, s); b[2] += dot(ub, s);
        s = subgroupBroadcast(xb, 3u); a[3] += dot(tb, s); b[3] += dot(ub, s);
        s = subgroupBroadcast(xb, 4u); a[4] += dot(tb, s); b[4] += dot(ub, s);
        s = subgroupBroadcast(xb, 5u); a[5] += dot(tb, s); b[5] += dot(ub, s);
        s = subgroupBroadcast(xb, 6u); a[6] += dot(tb, s); b[6] += dot(ub, s);
        s = subgroupBroadcast(xb, 7u); a[7] += dot(tb, s); b[7] += dot(ub, s);
    }
    let n = arrayLength(&out) / 64u;
    for (var i = 0u; i < 8u; i++) {
        out[(t0 + i) * n + o] = a[i];
        out[(t0 + i) * n + o + 8u] = b[i];
    }
}
