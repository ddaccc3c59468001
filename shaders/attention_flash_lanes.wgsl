// attention_flash_lanes.wgsl: attention_flash.wgsl's causal prefill attention (FlashAttention-2's
// online softmax over key tiles) shaped for GPUs: the head dimension is split across lanes, so an
// invocation holds 8 values of its row's q and accumulator (plus m and l: 18 floats) instead of
// the whole head (attention_flash.wgsl keeps up to 512 floats an invocation, which spill out of
// a GPU's registers at head_dim 128).
// A workgroup of 256 takes R = 256 / (HEAD_DIM / 8) query rows of one head (16 at head_dim 128,
// 32 at 64): lane c of a row owns quad c of the head (values 4c .. 4c + 3 and HEAD_DIM / 2 + 4c
// .. + 3: one vec4<u32> of an f16 cache, lib/kv.wgsl). Per tile of 8 keys (inside one page: one
// block-table lookup): (0) the tile's 8 K rows of this KV head are copied into workgroup memory,
// each word loaded once for the R rows; barrier; (1) each lane's partial dots q·k of its quad
// with the 8 keys go to workgroup memory, while the tile's V rows are copied in beside them;
// barrier; (2) the R × 8 scores are summed from the partials (masked past each row's position);
// barrier; (3) every lane rescales its quad of the accumulator by its row's new running max and
// adds p·v of the 8 keys. The K and V tiles take 2 KiB each (8 keys × 128 f16 values, or 64 f32
// values), which with the partials and scores is WebGPU's 16 KiB; heads wider than that (f16
// above 128, f32 above 64) read their K and V words straight from the cache, where the R rows of
// a workgroup read the same words at the same time. The loop stops at the workgroup's last
// position. Three barriers a tile: cheap on a GPU, costly on a CPU adapter, where the engine
// keeps attention_flash_sg.wgsl.
// CPU twin: cpu::ops::attention (contiguous K/V, f64); lavapipe's twins: attention_flash.wgsl,
// attention_flash_sg.wgsl.
// Dispatch: (ceil(T / R), n_heads, 1), R = 2048 / HEAD_DIM; 256 invocations.
// Bindings: as attention_flash.wgsl:
//   0 step    storage Step         n_tokens T, rows[0].pos (pos0) and .seq
//   1 shape   uniform Shape        a = n_heads, b = n_kv_heads, c = block-table row length
//   2 q       storage read  vec4   (T, n_heads * HEAD_DIM / 4)
//   3 k_cache storage read  vec4<u32> (n_blocks * PAGE, n_kv_heads * HEAD_DIM values, lib/kv.wgsl)
//   4 v_cache storage read  vec4<u32> (the same)
//   5 tables  storage read  u32    (n_seqs, c) block tables
//   6 out     storage rw    vec4   (T, n_heads * HEAD_DIM / 4)
// Overrides: HEAD_DIM (a multiple of 16, at most 256), PAGE (rows per page, a multiple of 16),
// KV_F16 (lib/kv.wgsl: an f16 cache), KV_TILES (false: never stage K and V; tests compare both).
// Workgroup memory: 8 KiB of partials, 4 KiB of scores at most, 2 KiB each of K and V tiles.

override HEAD_DIM: u32 = 64u;
override PAGE: u32 = 16u;
override KV_F16: bool = false; // lib/kv.wgsl
override KV_TILES: bool = true;
const WG: u32 = 256u;
const TK: u32 = 8u; // keys a tile
const TILE_V4: u32 = 128u; // vec4<u32> words of a K or V tile: TK keys × (HEAD_DIM / 8 or / 4)

@group(0) @binding(0) var<storage, read> step: Step;
@group(0) @binding(1) var<uniform> shape: Shape;
@group(0) @binding(2) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> k_cache: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> v_cache: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> tables: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>;

var<workgroup> partial: array<f32, 2048>; // (WG, TK): invocation j's partial dot with key k at j * TK + k
var<workgroup> scores: array<f32, 1024>;  // (R, TK), R at most 128 (head_dim 16)
var<workgroup> k_tile: array<vec4<u32>, TILE_V4>; // (TK, HV): key k's head words at k * HV
var<workgroup> v_tile: array<vec4<u32>, TILE_V4>;

// vec4<u32> words of a head in the cache: HEAD_DIM / 8 (f16) or / 4 (f32).
fn head_v4() -> u32 { return HEAD_DIM / select(4u, 8u, KV_F16); }

// Copy the head words of keys 0 .. n - 1 (cache rows row0 + k, KV head kvh, n_kv KV heads) of
// `cache` into `tile`, invocation j taking words j, j + WG, ...
fn stage_k(j: u32, row0: u32, n: u32, kvh: u32, n_kv: u32) {
    let hv = head_v4();
    for (var i = j; i < n * hv; i += WG) {
        k_tile[i] = k_cache[kv_head_v4(((row0 + i / hv) * n_kv + kvh) * HEAD_DIM) + i % hv];
    }
}
fn stage_v(j: u32, row0: u32, n: u32, kvh: u32, n_kv: u32) {
    let hv = head_v4();
    for (var i = j; i < n * hv; i += WG) {
        v_tile[i] = v_cache[kv_head_v4(((row0 + i / hv) * n_kv + kvh) * HEAD_DIM) + i % hv];
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) j: u32) {
    let n_heads = shape.a;
    let d8 = HEAD_DIM / 8u; // lanes a row
    let rows = WG / d8;     // R
    let c = j % d8;         // my quad
    let r = j / d8;         // my row in the workgroup
    let h = wid.y;
    let kvh = h / (n_heads / shape.b); // GQA: this head's K/V head
    let t_n = step.n_tokens;
    let t0 = wid.x * rows;
    let t = min(t0 + r, t_n - 1u); // rows past T compute a copy of the last row, unwritten
    let pos0 = step_pos(0u);
    let my_pos = pos0 + t;
    let last_pos = pos0 + min(t0 + rows, t_n) - 1u; // uniform: the causal bound of the workgroup
    let table = step_seq(0u) * shape.c;
    let scale = inverseSqrt(f32(HEAD_DIM));
    let qb = (t * n_heads + h) * (HEAD_DIM / 4u);
    let q_lo = q[qb + c] * scale;
    let q_hi = q[qb + c + d8] * scale;

    let staged = KV_TILES && TK * head_v4() <= TILE_V4; // uniform: fixed by the overrides
    var m = -3.0e38; // my row's running max (the same in its d8 lanes)
    var l = 0.0;     // its running sum of exp(score - m)
    var acc_lo = vec4<f32>(0.0);
    var acc_hi = vec4<f32>(0.0);
    for (var s0 = 0u; s0 <= last_pos; s0 += TK) {
        let row0 = tables[table + s0 / PAGE] * PAGE + s0 % PAGE; // one lookup per tile
        let n = min(TK, last_pos + 1u - s0); // keys of the tile that exist
        // (0) the K tile; the last tile's (1) read it before the barrier after that (1)
        if (staged) {
            stage_k(j, row0, n, kvh, shape.b);
            workgroupBarrier();
        }
        // (1) my quad's partial dots with the tile's keys
        for (var k = 0u; k < n; k++) {
            var kq: Quads;
            if (staged) {
                kq = kv_quads(k_tile[k * head_v4() + c], k_tile[k * head_v4() + c + kv_hi()]);
            } else {
                let kb = kv_head_v4(((row0 + k) * shape.b + kvh) * HEAD_DIM) + c;
                kq = kv_quads(k_cache[kb], k_cache[kb + kv_hi()]);
            }
            let d = q_lo * kq.lo + q_hi * kq.hi;
            partial[j * TK + k] = d.x + d.y + d.z + d.w;
        }
        // the V tile: the last tile's (3) read it before this tile's barrier (0)
        if (staged) { stage_v(j, row0, n, kvh, shape.b); }
        workgroupBarrier();
        // (2) the R × TK scores: score i = (row i / TK, key i % TK), summed over the row's lanes
        for (var i = j; i < rows * TK; i += WG) {
            let ri = i / TK;
            let k = i % TK;
            var score = -3.0e38;
            if (k < n && s0 + k <= pos0 + min(t0 + ri, t_n - 1u)) {
                score = 0.0;
                for (var l8 = 0u; l8 < d8; l8++) { score += partial[(ri * d8 + l8) * TK + k]; }
            }
            scores[i] = score;
        }
        workgroupBarrier();
        // (3) my row's online softmax over the tile, p·v into my quad
        var m_new = m;
        for (var k = 0u; k < n; k++) { m_new = max(m_new, scores[r * TK + k]); }
        let correction = exp(m - m_new);
        l *= correction;
        acc_lo *= correction;
        acc_hi *= correction;
        for (var k = 0u; k < n; k++) {
            let p = exp(scores[r * TK + k] - m_new); // 0 for masked keys
            l += p;
            var vq: Quads;
            if (staged) {
                vq = kv_quads(v_tile[k * head_v4() + c], v_tile[k * head_v4() + c + kv_hi()]);
            } else {
                let vb = kv_head_v4(((row0 + k) * shape.b + kvh) * HEAD_DIM) + c;
                vq = kv_quads(v_cache[vb], v_cache[vb + kv_hi()]);
            }
            acc_lo += p * vq.lo;
            acc_hi += p * vq.hi;
        }
        m = m_new;
        // the next tile's (1) writes `partial` after this tile's (2) read it (the barrier
        // between), and its (2) writes `scores` after the barrier that follows its (1)
    }
    if (t0 + r < t_n) {
        let ob = (t * n_heads + h) * (HEAD_DIM / 4u);
        out[ob + c] = acc_lo / l;
        out[ob + c + d8] = acc_hi / l;
    }
}
