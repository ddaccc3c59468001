//! Leaf types every layer shares: where the forward pass runs, which attention kernels and KV
//! layout the GPU uses, how it stores weights, and which logits a forward returns. No imports
//! from the rest of the crate, so the CLI, the model and both backends can name them.

use clap::ValueEnum;

/// Where the forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Device {
    /// A hardware GPU if there is one, else the CPU.
    Auto,
    /// The CPU reference path.
    Cpu,
    /// WGSL kernels through wgpu (a hardware GPU, or a CPU adapter such as lavapipe).
    Gpu,
}

/// Which attention kernels the GPU runs (the CPU always runs the naive reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Attention {
    /// Scores materialised in memory, softmax, then P·V (the slow twin).
    Naive,
    /// FlashAttention-2 tiles with online softmax for prefill, split-K (flash-decoding) for decode.
    Flash,
}

/// How the GPU KV cache is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvLayout {
    /// One region of the whole context per sequence.
    Contiguous,
    /// Pages from a shared pool through block tables; forks share their prompt's pages.
    Paged,
}

/// How the GPU stores weight matrices (the CPU path always computes in f32).
#[allow(non_camel_case_types)] // GGUF's type names
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// The file's own block format where the GPU has a kernel for it (Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0, Q4_K, Q5_K, Q6_K, with subgroups), else f16 (unpacked with WGSL's core
    /// `unpack2x16float`: no adapter feature needed).
    Auto,
    /// f32 weights: the GPU matches the CPU reference to rounding.
    F32,
    /// f16 weights (half the bytes per token), f32 accumulation.
    F16,
    /// Quantized at load to Q8_0 (llama.cpp's reference quantizer) from any source.
    #[value(name = "q8_0")]
    Q8_0,
    /// Quantized at load to Q4_K (llama.cpp's reference quantizer); rows that are not whole
    /// super-blocks of 256 fall back as llama-quantize does (Q4_K -> Q5_0).
    #[value(name = "q4_k")]
    Q4_K,
}

/// How the GPU KV cache holds its values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvDtype {
    /// f16 on a hardware GPU (half the memory and the bytes attention reads), unless the weights
    /// are f32 (--dtype f32 asks to match the CPU); f32 on a CPU adapter such as lavapipe, where
    /// memory is the host's and unpacking f16 costs more than the bytes it saves.
    Auto,
    /// f16 values (llama.cpp's default cache type), rounded once when written; attention
    /// accumulates in f32.
    F16,
    /// f32 values: the GPU matches the CPU reference to rounding.
    F32,
}

/// How the decode GEMVs spread a product over the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Gemv {
    /// split on hardware GPUs, rows on CPU adapters such as lavapipe.
    Auto,
    /// Each row's dot product split across a workgroup of 64, a workgroup per 8 rows
    /// (matvec_split.wgsl): enough workgroups to fill a large GPU, coalesced loads.
    Split,
    /// A row per invocation, 64 or 128 rows a workgroup (matvec.wgsl, matvec_plain.wgsl): no
    /// barrier, which is what a CPU adapter runs fastest.
    Rows,
}

/// How the prompt (and batch) GEMMs spread a product over the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Gemm {
    /// tiled on hardware GPUs, rows on CPU adapters such as lavapipe.
    Auto,
    /// 64 × 64 output tiles staged through workgroup memory, 16 outputs an invocation
    /// (matmat_tiled.wgsl): what GPUs with fast workgroup memory run best.
    Tiled,
    /// Four rows × 8 tokens an invocation, x shared by subgroup broadcasts (matmat.wgsl;
    /// matmat_plain.wgsl one row): no barrier, which is what a CPU adapter runs fastest.
    Rows,
}

/// How the attention kernels (prefill and decode) split a head over a workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HeadSplit {
    /// lanes on hardware GPUs, whole on CPU adapters such as lavapipe.
    Auto,
    /// head_dim split across lanes, 8 values of q and of the accumulator an invocation whatever
    /// the head_dim, partial dots summed through workgroup memory, the prefill's K/V tiles
    /// staged there where they fit (attention_flash_lanes.wgsl, attention_decode_lanes.wgsl).
    Lanes,
    /// The whole head in an invocation's registers, a query row (prefill) or a key (decode) an
    /// invocation (attention_flash*.wgsl, attention_decode.wgsl): no barrier in the key loop,
    /// which is what a CPU adapter runs fastest.
    Whole,
}

/// Which device limits the GPU path asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Limits {
    /// Everything the adapter offers.
    Adapter,
    /// Only WebGPU's defaults (128 MiB storage bindings, 256 MiB buffers, 8192-texel textures
    /// with 256 layers, 16 KiB of workgroup memory, 8 storage buffers a stage): what a browser
    /// grants without asking; the kernels and their buffers fit it.
    Webgpu,
}

/// Engine options beyond the model itself.
#[derive(Clone, Debug)]
pub struct Options {
    pub attention: Attention,
    pub kv: KvLayout,
    /// Rows per KV page (a multiple of 16).
    pub page: usize,
    /// KV pool size in pages; or in bytes (all layers, K and V); default: every sequence can
    /// reach the full context, or what one storage binding holds if less (shared, preempted).
    pub kv_blocks: Option<usize>,
    pub kv_memory: Option<u64>,
    /// Most sequences alive at once.
    pub max_seqs: usize,
    /// Split-K decode: at least this many keys per partition.
    pub min_split_keys: usize,
    /// Split-K decode: workgroups the device can run at once (default: the host's threads on a
    /// CPU adapter, 1024 on a GPU); partitions are added until rows × heads × partitions reach it.
    pub split_workers: Option<usize>,
    /// GPU weight storage.
    pub dtype: Dtype,
    /// GPU KV cache values.
    pub kv_dtype: KvDtype,
    /// GPU decode GEMV variant.
    pub gemv: Gemv,
    /// GPU prompt GEMM variant.
    pub gemm: Gemm,
    /// GPU attention kernels: how they split a head.
    pub head_split: HeadSplit,
    /// Use the subgroup matrix kernels (where the adapter has subgroups of 8 or more lanes);
    /// false forces the plain twins.
    pub subgroups: bool,
    /// The device limits to request.
    pub limits: Limits,
    /// Most multiply-adds one GPU submit of a prompt step records: a step of many rows is cut
    /// into submits of whole layers under it, so no submit runs near an OS GPU watchdog
    /// (Windows' TDR resets a GPU after 2 s). The default, 2^38 (0.55 TFLOP), takes a quarter
    /// second on a GPU that runs the GEMM at 2 TFLOP/s.
    pub submit_macs: u64,
    /// Prefix caching (model/prefix.rs): full KV blocks are kept under a hash of their tokens
    /// and reused by later sequences that start with the same tokens. Needs the paged layout on
    /// a GPU; on the CPU a store of `kv_blocks` (default CPU_PREFIX_TOKENS / page) block copies.
    pub prefix_cache: bool,
}

/// Options::submit_macs by default.
pub const SUBMIT_MACS: u64 = 1 << 38;

impl Default for Options {
    fn default() -> Self {
        Options {
            attention: Attention::Flash,
            kv: KvLayout::Paged,
            page: 16,
            kv_blocks: None,
            kv_memory: None,
            max_seqs: 1,
            min_split_keys: 256,
            split_workers: None,
            dtype: Dtype::F32,
            kv_dtype: KvDtype::Auto,
            gemv: Gemv::Auto,
            gemm: Gemm::Auto,
            head_split: HeadSplit::Auto,
            subgroups: true,
            limits: Limits::Adapter,
            submit_macs: SUBMIT_MACS,
            prefix_cache: false,
        }
    }
}

/// Which positions' logits a forward returns, per sequence of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// Only the last position's (vocab_size,): prefill before sampling, decode.
    Last,
    /// Every position's (T, vocab_size): scoring (perplexity, tests).
    All,
    /// The last n positions' (n, vocab_size), 1 <= n <= T: checking drafted tokens.
    LastN(usize),
}

impl Want {
    /// Rows returned for a run of `t` tokens.
    pub fn rows(self, t: usize) -> usize {
        match self {
            Want::Last => 1,
            Want::All => t,
            Want::LastN(n) => n,
        }
    }
}

/// A live sequence: its KV cache (on the GPU, its block-table row). Made by `Model::new_seq` or
/// `Model::fork`, ended by `Model::release`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub usize);

/// One entry of a batch: run `tokens` at the next positions of `seq`, return the rows `want`s.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
    pub want: Want,
}

/// What one `forward` runs: each sequence at most once.
pub type Batch<'a> = [Entry<'a>];
