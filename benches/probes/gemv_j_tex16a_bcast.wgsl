// probe: x=uniform w=tex16a tokens=1 rows=64 -- gemv_f with W bound as a 2D array texture (as the model binds it)
@group(0) @binding(0) var<uniform> x: array<vec4<f32>, 144>;
@group(0) @binding(1) var w: texture_2d_array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn td(t: vec4<u32>, xa: vec4<f32>, xb: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)) * xa + vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)) * xb;
}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let o = gid.x;
    let j = lane & 7u;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < 72u; k += 8u) {
        let xa = x[(k + j) * 2u];
        let xb = x[(k + j) * 2u + 1u];
        acc += td(textureLoad(w, vec2<u32>(k, o), 0, 0), subgroupBroadcast(xa, 0u), subgroupBroadcast(xb, 0u));
        acc += td(textureLoad(w, vec2<u32>(k + 1u, o), 0, 0), subgroupBroadcast(xa, 1u), subgroupBroadcast(xb, 1u));
        acc += td(textureLoad(w, vec2<u32>(k + 2u, o), 0, 0), subgroupBroadcast(xa, 2u), subgroupBroadcast(xb, 2u));
        acc += td(textureLoad(w, vec2<u32>(k + 3u, o), 0, 0), subgroupBroadcast(xa, 3u), subgroupBroadcast(xb, 3u));
        acc += td(textureLoad(w, vec2<u32>(k + 4u, o), 0, 0), subgroupBroadcast(xa, 4u), subgroupBroadcast(xb, 4u));
        acc += td(textureLoad(w, vec2<u32>(k + 5u, o), 0, 0), subgroupBroadcast(xa, 5u), subgroupBroadcast(xb, 5u));
        acc += td(textureLoad(w, vec2<u32>(k + 6u, o), 0, 0), subgroupBroadcast(xa, 6u), subgroupBroadcast(xb, 6u));
        acc += td(textureLoad(w, vec2<u32>(k + 7u, o), 0, 0), subgroupBroadcast(xa, 7u), subgroupBroadcast(xb, 7u));
    }
    out[o] = acc.x + acc.y + acc.z + acc.w;
}
