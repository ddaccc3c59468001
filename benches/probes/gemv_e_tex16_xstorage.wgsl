// probe: x=storage w=tex16 tokens=1 rows=64 -- as gemv_d with x in a storage buffer again
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var w: texture_2d<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < 72u; k++) {
        let t = textureLoad(w, vec2<u32>(k, o), 0);
        acc += vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)) * x[2u * k]
             + vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)) * x[2u * k + 1u];
    }
    out[o] = acc.x + acc.y + acc.z + acc.w;
}
