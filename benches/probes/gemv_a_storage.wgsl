// probe: x=storage w=storage32 tokens=1 rows=64 -- the first GEMV: x and W in storage buffers, vec4 loads, a row per invocation
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < 144u; k++) { acc += w[o * 144u + k] * x[k]; }
    out[o] = acc.x + acc.y + acc.z + acc.w;
}
