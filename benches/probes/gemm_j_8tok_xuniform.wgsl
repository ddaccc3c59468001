// probe: x=uniform w=tex16i tokens=8 rows=128 -- x uniform (8 tokens), 2 rows an invocation, dot + add: no broadcasts
@group(0) @binding(0) var<uniform> x: array<vec4<f32>, 1152>;
@group(0) @binding(1) var w: texture_storage_2d_array<rgba32uint, read>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
fn lo(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)); }
fn hi(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)); }
fn fd(w: vec4<f32>, s: vec4<f32>, a: f32) -> f32 { return fma(w.w, s.w, fma(w.z, s.z, fma(w.y, s.y, fma(w.x, s.x, a)))); }
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x & 7u;
    let y = (gid.x >> 3u) * 2u;
    let o = y * 8u + j;
    let t0 = 0u;
    var a: array<f32, 8>;
    var b: array<f32, 8>;
    for (var k = 0u; k < 72u; k++) {
        let t0 = textureLoad(w, vec2<u32>(k * 8u + j, y + 0u), 0);
        let t1 = textureLoad(w, vec2<u32>(k * 8u + j, y + 1u), 0);
        let w0lo = lo(t0);
        let w1lo = lo(t1);
        { let s = x[0u + 2u * k];
          a[0] += dot(w0lo, s);
          b[0] += dot(w1lo, s);
        }
        { let s = x[144u + 2u * k];
          a[1] += dot(w0lo, s);
          b[1] += dot(w1lo, s);
        }
        { let s = x[288u + 2u * k];
          a[2] += dot(w0lo, s);
          b[2] += dot(w1lo, s);
        }
        { let s = x[432u + 2u * k];
          a[3] += dot(w0lo, s);
          b[3] += dot(w1lo, s);
        }
        { let s = x[576u + 2u * k];
          a[4] += dot(w0lo, s);
          b[4] += dot(w1lo, s);
        }
        { let s = x[720u + 2u * k];
          a[5] += dot(w0lo, s);
          b[5] += dot(w1lo, s);
        }
        { let s = x[864u + 2u * k];
          a[6] += dot(w0lo, s);
          b[6] += dot(w1lo, s);
        }
        { let s = x[1008u + 2u * k];
          a[7] += dot(w0lo, s);
          b[7] += dot(w1lo, s);
        }
        let w0hi = hi(t0);
        let w1hi = hi(t1);
        { let s = x[0u + 2u * k + 1u];
          a[0] += dot(w0hi, s);
          b[0] += dot(w1hi, s);
        }
        { let s = x[144u + 2u * k + 1u];
          a[1] += dot(w0hi, s);
          b[1] += dot(w1hi, s);
        }
        { let s = x[288u + 2u * k + 1u];
          a[2] += dot(w0hi, s);
          b[2] += dot(w1hi, s);
        }
        { let s = x[432u + 2u * k + 1u];
          a[3] += dot(w0hi, s);
          b[3] += dot(w1hi, s);
        }
        { let s = x[576u + 2u * k + 1u];
          a[4] += dot(w0hi, s);
          b[4] += dot(w1hi, s);
        }
        { let s = x[720u + 2u * k + 1u];
          a[5] += dot(w0hi, s);
          b[5] += dot(w1hi, s);
        }
        { let s = x[864u + 2u * k + 1u];
          a[6] += dot(w0hi, s);
          b[6] += dot(w1hi, s);
        }
        { let s = x[1008u + 2u * k + 1u];
          a[7] += dot(w0hi, s);
          b[7] += dot(w1hi, s);
        }
    }
    let n = arrayLength(&out) / 64u;
    for (var i = 0u; i < 8u; i++) {
        out[(t0 + i) * n + o + 0u] = a[i];
        out[(t0 + i) * n + o + 8u] = b[i];
    }
}
