// probe: x=uniform w=storage32 tokens=1 rows=64 -- x through a uniform binding (vector gathers), W still in storage
@group(0) @binding(0) var<uniform> x: array<vec4<f32>, 144>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < 144u; k++) { acc += w[o * 144u + k] * x[k]; }
    out[o] = acc.x + acc.y + acc.z + acc.w;
}
