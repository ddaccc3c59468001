//! Every kernel's WGSL source: the shader files (include_str!), the bindings each declares after
//! `step` and `shape`, and the shared files appended to them (lib/epilogue.wgsl, lib/quant.wgsl,
//! lib/kv.wgsl, prelude.wgsl). `kernels.rs` compiles them.

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Binding {
    Uniform,
    Read,
    Write,
    Texture,    // texture_storage_2d_array<rgba32uint, read>: weights (see WeightTex), activations for matmat
    StorageTex, // texture_storage_2d_array<rgba32uint, write>: activations for matmat
}
use Binding::*;

const PRELUDE: &str = include_str!("../../shaders/prelude.wgsl");
/// The outputs, LoRA updates and MoE routing (bindings 4 to 11) and store functions of the four matrix kernels, appended to
/// them only.
const EPILOGUE: &str = include_str!("../../shaders/lib/epilogue.wgsl");
const EPILOGUE_KERNELS: [&str; 6] = [
    "matvec.wgsl",
    "matvec_plain.wgsl",
    "matvec_split.wgsl",
    "matmat.wgsl",
    "matmat_plain.wgsl",
    "matmat_tiled.wgsl",
];
/// Where quantized weights live and how their blocks decode, appended to the kernels that read
/// them (they take the weight type as the override WTYPE; the _plain twins read floats only).
const QUANT: &str = include_str!("../../shaders/lib/quant.wgsl");
const QUANT_KERNELS: [&str; 5] = [
    "matvec.wgsl",
    "matvec_split.wgsl",
    "matmat.wgsl",
    "matmat_tiled.wgsl",
    "embed.wgsl",
];
/// How the KV cache holds its values (f32 or f16, the override KV_F16), appended to the kernels
/// that write it (the matrix kernels' RoPE epilogue, so every EPILOGUE_KERNELS one, and
/// qk_norm_rope) and read it (attention).
const KV: &str = include_str!("../../shaders/lib/kv.wgsl");
const KV_KERNELS: [&str; 7] = [
    "qk_norm_rope.wgsl",
    "attention_naive.wgsl",
    "attention_flash.wgsl",
    "attention_flash_lanes.wgsl",
    "attention_flash_sg.wgsl",
    "attention_decode.wgsl",
    "attention_decode_lanes.wgsl",
];

/// (file, WGSL source, bindings after `step` and `shape`)
pub(super) const SOURCES: [(&str, &str, &[Binding]); 21] = [
    (
        "embed.wgsl",
        include_str!("../../shaders/embed.wgsl"),
        &[Texture, Write],
    ),
    (
        "rmsnorm.wgsl",
        include_str!("../../shaders/rmsnorm.wgsl"),
        &[Read, Read, Write],
    ),
    (
        "matvec.wgsl",
        include_str!("../../shaders/matvec.wgsl"),
        &[
            Uniform, Texture, Read, Write, Write, Write, Read, Read, Read, Uniform, Uniform,
        ],
    ),
    (
        "matvec_plain.wgsl",
        include_str!("../../shaders/matvec_plain.wgsl"),
        &[
            Uniform, Texture, Read, Write, Write, Write, Read, Read, Read, Uniform, Uniform,
        ],
    ),
    (
        "matvec_split.wgsl",
        include_str!("../../shaders/matvec_split.wgsl"),
        &[
            Uniform, Texture, Read, Write, Write, Write, Read, Read, Read, Uniform, Uniform,
        ],
    ),
    (
        "matmat.wgsl",
        include_str!("../../shaders/matmat.wgsl"),
        &[Texture, Texture, Read, Write, Write, Write, Read, Read, Read, Uniform],
    ),
    (
        "matmat_plain.wgsl",
        include_str!("../../shaders/matmat_plain.wgsl"),
        &[Texture, Texture, Read, Write, Write, Write, Read, Read, Read, Uniform],
    ),
    (
        "matmat_tiled.wgsl",
        include_str!("../../shaders/matmat_tiled.wgsl"),
        &[Texture, Texture, Read, Write, Write, Write, Read, Read, Read, Uniform],
    ),
    (
        "qk_norm_rope.wgsl",
        include_str!("../../shaders/qk_norm_rope.wgsl"),
        &[Read, Read, Write, Write, Write, Read, Read],
    ),
    (
        "to_texture.wgsl",
        include_str!("../../shaders/to_texture.wgsl"),
        &[Read, Read, StorageTex],
    ),
    (
        "attention_naive.wgsl",
        include_str!("../../shaders/attention_naive.wgsl"),
        &[Read, Read, Read, Read, Write, Write],
    ),
    (
        "attention_flash.wgsl",
        include_str!("../../shaders/attention_flash.wgsl"),
        &[Read, Read, Read, Read, Write],
    ),
    (
        "attention_flash_sg.wgsl",
        include_str!("../../shaders/attention_flash_sg.wgsl"),
        &[Read, Read, Read, Read, Write],
    ),
    (
        "attention_decode.wgsl",
        include_str!("../../shaders/attention_decode.wgsl"),
        &[Read, Read, Read, Read, Write, Write],
    ),
    (
        "attention_flash_lanes.wgsl",
        include_str!("../../shaders/attention_flash_lanes.wgsl"),
        &[Read, Read, Read, Read, Write],
    ),
    (
        "attention_decode_lanes.wgsl",
        include_str!("../../shaders/attention_decode_lanes.wgsl"),
        &[Read, Read, Read, Read, Write, Write],
    ),
    (
        "attention_reduce.wgsl",
        include_str!("../../shaders/attention_reduce.wgsl"),
        &[Read, Write],
    ),
    ("argmax.wgsl", include_str!("../../shaders/argmax.wgsl"), &[Read, Write]),
    (
        "moe_route.wgsl",
        include_str!("../../shaders/moe_route.wgsl"),
        &[Read, Write],
    ),
    (
        "moe_combine.wgsl",
        include_str!("../../shaders/moe_combine.wgsl"),
        &[Read, Read, Read, Read, Write],
    ),
    ("prelude.wgsl", PRELUDE, &[]),
];

/// Every kernel's file name and full source, for validation without a device. The prelude and
/// lib/epilogue.wgsl are checked as part of the kernels they are appended to.
pub fn sources() -> impl Iterator<Item = (&'static str, String)> {
    SOURCES
        .iter()
        .filter(|(n, _, _)| *n != "prelude.wgsl")
        .map(|(n, s, _)| (*n, full_source(n, s)))
        .chain([("subgroup_probe.wgsl", SUBGROUP_PROBE.to_string())])
}

/// The subgroup-width probe Gpu::new runs where an adapter reports widths under 8; stand-alone
/// (no prelude: it binds no Step or Shape).
pub(super) const SUBGROUP_PROBE: &str = include_str!("../../shaders/subgroup_probe.wgsl");

/// Whether WGSL `src` calls a subgroup builtin (and so needs `enable subgroups;` in a browser).
pub fn uses_subgroups(src: &str) -> bool {
    src.contains("subgroup_invocation_id")
        || src.contains("subgroup_size")
        || src.match_indices("subgroup").any(|(i, _)| {
            src[i + "subgroup".len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
        })
}

/// `src` as a browser's WebGPU takes it: `enable subgroups;` first where it uses subgroups
/// (the WGSL spec's extension directive; wgpu's webgpu backend hands WGSL to the browser as
/// is). Native builds leave it out: naga 30 does not parse the directive (and needs none).
pub fn web_source(src: &str) -> String {
    if uses_subgroups(src) {
        format!("enable subgroups;\n{src}")
    } else {
        src.to_string()
    }
}

/// The source wgpu compiles on this target: `src`, or on wasm32 its `web_source`.
pub(super) fn for_target(src: String) -> String {
    if cfg!(target_arch = "wasm32") {
        web_source(&src)
    } else {
        src
    }
}

/// A kernel's source as compiled: the kernel, then lib/epilogue.wgsl for the matrix kernels,
/// lib/quant.wgsl for those reading quantized weights and lib/kv.wgsl for those touching the KV
/// cache, then the prelude (whole files, concatenated).
pub(super) fn full_source(file: &str, src: &str) -> String {
    let epilogue = if EPILOGUE_KERNELS.contains(&file) { EPILOGUE } else { "" };
    let quant = if QUANT_KERNELS.contains(&file) { QUANT } else { "" };
    let kv = if !epilogue.is_empty() || KV_KERNELS.contains(&file) {
        KV
    } else {
        ""
    };
    format!("{src}\n{epilogue}\n{quant}\n{kv}\n{PRELUDE}")
}
