// probe: x=uniform w=tex32 tokens=1 rows=64 -- W as a texture of f32 texels (one 16-byte gather per 8 invocations)
@group(0) @binding(0) var<uniform> x: array<vec4<f32>, 144>;
@group(0) @binding(1) var w: texture_2d<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < 144u; k++) { acc += bitcast<vec4<f32>>(textureLoad(w, vec2<u32>(k, o), 0)) * x[k]; }
    out[o] = acc.x + acc.y + acc.z + acc.w;
}
