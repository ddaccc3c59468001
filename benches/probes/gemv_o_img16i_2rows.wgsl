// probe: x=uniform w=tex16i tokens=1 rows=128 -- gemv_m with 2 rows per lane (o and o + 8 of a group of 16): each broadcast x feeds two rows
@group(0) @binding(0) var<uniform> x: array<vec4<f32>, 144>;
@group(0) @binding(1) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn td(t: vec4<u32>, xa: vec4<f32>, xb: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)) * xa + vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)) * xb;
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let j = gid.x & 7u;
    let y = (gid.x >> 3u) * 2u;
    let o = y * 8u + j;
    var acc = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    for (var k = 0u; k < 72u; k += 8u) {
        let xa = x[(k + j) * 2u];
        let xb = x[(k + j) * 2u + 1u];
        { let sa = subgroupBroadcast(xa, 0u); let sb = subgroupBroadcast(xb, 0u);
          acc += td(textureLoad(w, vec2<u32>((k) * 8u + j, y), 0), sa, sb);
          acc2 += td(textureLoad(w, vec2<u32>((k) * 8u + j, y + 1u), 0), sa, sb); }
        { let sa = subgroupBroadcast(xa, 1u); let sb = subgroupBroadcast(xb, 1u);
          acc += td(textureLoad(w, vec2<u32>((k + 1u) * 8u + j, y), 0), sa, sb);
          acc2 += td(textureLoad(w, vec2<u32>((k + 1u) * 8u + j, y + 1u), 0), sa, sb); }
        { let sa = subgroupBroadcast(xa, 2u); let sb = subgroupBroadcast(xb, 2u);
          acc += td(textureLoad(w, vec2<u32>((k + 2u) * 8u + j, y), 0), sa, sb);
          acc2 += td(textureLoad(w, vec2<u32>((k + 2u) * 8u + j, y + 1u), 0), sa, sb); }
        { let sa = subgroupBroadcast(xa, 3u); let sb = subgroupBroadcast(xb, 3u);
          acc += td(textureLoad(w, vec2<u32>((k + 3u) * 8u + j, y), 0), sa, sb);
          acc2 += td(textureLoad(w, vec2<u32>((k + 3u) * 8u + j, y + 1u), 0), sa, sb); }
        { let sa = subgroupBroadcast(xa, 4u); let sb = subgroupBroadcast(xb, 4u);
          acc += td(textureLoad(w, vec2<u32>((k + 4u) * 8u + j, y), 0), sa, sb);
          acc2 += td(textureLoad(w, vec2<u32>((k + 4u) * 8u + j, y + 1u), 0), sa, sb); }
        { let sa = subgroupBroadcast(xa, 5u); let sb = subgroupBroadcast(xb, 5u);
          acc += td(textureLoad(w, vec2<u32>((k + 5u) * 8u + j, y), 0), sa, sb);
          acc2 += td(textureLoad(w, vec2<u32>((k + 5u) * 8u + j, y + 1u), 0), sa, sb); }
        { let sa = subgroupBroadcast(xa, 6u); let sb = subgroupBroadcast(xb, 6u);
          acc += td(textureLoad(w, vec2<u32>((k + 6u) * 8u + j, y), 0), sa, sb);
          acc2 += td(textureLoad(w, vec2<u32>((k + 6u) * 8u + j, y + 1u), 0), sa, sb); }
        { let sa = subgroupBroadcast(xa, 7u); let sb = subgroupBroadcast(xb, 7u);
          acc += td(textureLoad(w, vec2<u32>((k + 7u) * 8u + j, y), 0), sa, sb);
          acc2 += td(textureLoad(w, vec2<u32>((k + 7u) * 8u + j, y + 1u), 0), sa, sb); }
    }
    out[o] = acc.x + acc.y + acc.z + acc.w;
    out[o + 8u] = acc2.x + acc2.y + acc2.z + acc2.w;
}
