// to_texture.wgsl: copy activation rows into a texture, xt[t, i4] = x[t, 4 i4 .. 4 i4 + 4] (as
// u32 bit patterns), for matmat.wgsl to read. A storage load on lavapipe costs a scalar load per
// invocation and component; a texel fetch is one vector gather of 16 bytes for 8 invocations, and
// matmat reads every x value once per 64 output rows, so one copy per step pays for itself many
// times over (benches/RESULTS.md).
// CPU twin: none needed; the copy is exact (tests compare matmat through it with the CPU).
// Dispatch: (ceil(d / 4 / 64), T, 1); one invocation per (texel i4, token t).
// Bindings:
//   0 step   storage Step          n_tokens T
//   1 shape  uniform Shape         a = d (a multiple of 4)
//   2 x      storage read  vec4f   (T_max, d/4)
//   3 xt     texture_storage_2d_array<rgba32uint, write> (d/4, T_max, 1)
// Overrides: none.

// Step, Shape: shaders/prelude.wgsl

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var xt: texture_storage_2d_array<rgba32uint, write>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let d4 = shape.a / 4u;
    let i = gid.x;
    let t = gid.y;
    if (i >= d4 || t >= step.n_tokens) { return; }
    textureStore(xt, vec2<u32>(i, t), 0, bitcast<vec4<u32>>(x[t * d4 + i]));
}
