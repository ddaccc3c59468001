// probe: x=uniform w=tex16i tokens=1 rows=64 nocheck -- gemv_h with rows interleaved in groups of 8: the fetches alone
@group(0) @binding(0) var<uniform> x: array<vec4<f32>, 144>;
@group(0) @binding(1) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    var acc = vec4<u32>(0u);
    for (var k = 0u; k < 72u; k++) { acc ^= textureLoad(w, vec2<u32>(k * 8u + (o & 7u), o >> 3u), 0); }
    out[o] = f32(acc.x ^ acc.y ^ acc.z ^ acc.w) + x[0].x;
}
