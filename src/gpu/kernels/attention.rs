//! The attention kernels' pipelines: prefill (flash: whole head, subgroup-shared K/V, or head_dim
//! across lanes) and decode (split-K: the whole head or head_dim across lanes, GROUP query heads
//! of a KV head a workgroup), specialised for a model's head_dim, page and KV type.

use anyhow::Result;

use super::{kv_override, Kernel, Kernels, FLASH_SG_ROWS};
use crate::gpu::context::Gpu;

impl Kernels {
    /// An attention kernel reading the KV cache: `file` specialised for `head_dim`, `page` rows
    /// a page, an f16 or f32 cache, and any `more` overrides.
    fn attention_kernel(
        gpu: &Gpu,
        file: &str,
        head_dim: usize,
        page: usize,
        kv_f16: bool,
        more: &[(&'static str, f64)],
    ) -> Result<Kernel> {
        let mut c = vec![
            ("HEAD_DIM", head_dim as f64),
            ("PAGE", page as f64),
            kv_override(kv_f16),
        ];
        c.extend_from_slice(more);
        Kernel::new(gpu, file, &c)
    }

    /// attention_flash_sg.wgsl, FLASH_SG_ROWS query rows a workgroup (tests run it on any
    /// adapter with subgroups).
    pub fn flash_sg(gpu: &Gpu, head_dim: usize, page: usize, kv_f16: bool) -> Result<Kernel> {
        Self::attention_kernel(gpu, "attention_flash_sg.wgsl", head_dim, page, kv_f16, &[])
    }

    /// attention_decode.wgsl with `wg` invocations per workgroup (a divisor of 64, at least 4;
    /// tests run both sizes on any adapter), taking `group` query heads of one KV head a
    /// workgroup (GROUP: a divisor of the model's n_heads / n_kv_heads; `decode_group_for` picks it).
    pub fn decode_attention_group(
        gpu: &Gpu,
        head_dim: usize,
        page: usize,
        wg: u32,
        kv_f16: bool,
        group: usize,
    ) -> Result<Kernel> {
        assert!(wg >= 4 && 64 % wg == 0, "decode workgroup {wg}");
        assert!(
            (1..=8).contains(&group) && group * head_dim <= 512,
            "decode group {group}"
        );
        let o = [("WG", wg as f64), ("GROUP", group as f64)];
        Self::attention_kernel(
            gpu,
            "attention_decode.wgsl",
            head_dim,
            page,
            kv_f16,
            &o[..if group > 1 { 2 } else { 1 }],
        )
    }

    /// The most query heads attention_decode.wgsl can take a workgroup for a model with
    /// `kv_mul` query heads a KV head: the largest divisor of kv_mul of at most 8 whose heads
    /// fit its registers (group × head_dim ≤ 512).
    pub fn decode_group_for(kv_mul: usize, head_dim: usize) -> usize {
        (1..=8.min(kv_mul))
            .rev()
            .find(|g| kv_mul.is_multiple_of(*g) && g * head_dim <= 512)
            .unwrap_or(1)
    }

    /// The most query heads attention_decode_lanes.wgsl takes a workgroup for a model with
    /// `kv_mul` query heads a KV head: 4, 2 or 1, the largest that divides kv_mul.
    pub fn lanes_group_for(kv_mul: usize) -> usize {
        [4, 2, 1].into_iter().find(|g| kv_mul.is_multiple_of(*g)).unwrap_or(1)
    }

    /// These kernels with the decode attention taking the most query heads a workgroup that
    /// `kv_mul` allows (each key and value row loaded once for all of them): the whole-head
    /// kernel's `decode_group_for`, the lanes kernel's `lanes_group_for`.
    pub fn with_gqa(mut self, gpu: &Gpu, head_dim: usize, page: usize, kv_mul: usize) -> Result<Self> {
        let (kv, wg) = (self.kv_f16, self.decode_wg);
        let group = wg.map_or(Self::lanes_group_for(kv_mul), |_| {
            Self::decode_group_for(kv_mul, head_dim)
        });
        if group > 1 {
            self.attention_decode = match wg {
                Some(wg) => Self::decode_attention_group(gpu, head_dim, page, wg, kv, group)?,
                None => Self::decode_attention_lanes(gpu, head_dim, page, kv, group)?,
            };
            self.decode_group = group;
        }
        Ok(self)
    }

    /// attention_decode_lanes.wgsl: the decode attention with head_dim split across lanes
    /// (GPUs), `group` query heads of one KV head a workgroup (1, 2 or 4; `lanes_group_for`);
    /// tests run it on any adapter.
    pub fn decode_attention_lanes(gpu: &Gpu, head_dim: usize, page: usize, kv: bool, group: usize) -> Result<Kernel> {
        assert!([1, 2, 4].contains(&group), "lanes decode group {group}");
        let o = [("GROUP", group as f64)];
        Self::attention_kernel(gpu, "attention_decode_lanes.wgsl", head_dim, page, kv, &o)
    }

    /// attention_flash_lanes.wgsl: the prefill attention with head_dim split across lanes
    /// (GPUs), 2048 / head_dim query rows a workgroup, with each tile's K and V rows staged in
    /// workgroup memory where they fit (`kv_tiles`; false reads them from the cache, for the
    /// tests' comparison); tests run it on any adapter.
    pub fn flash_lanes(gpu: &Gpu, head_dim: usize, page: usize, kv_f16: bool, kv_tiles: bool) -> Result<Kernel> {
        let o = [("KV_TILES", kv_tiles as u8 as f64)];
        Self::attention_kernel(gpu, "attention_flash_lanes.wgsl", head_dim, page, kv_f16, &o)
    }

    /// The prefill and decode attention kernels (and the prefill's query rows a workgroup):
    /// with `lanes`, head_dim split across lanes (attention_flash_lanes.wgsl,
    /// attention_decode_lanes.wgsl: GPUs); else the whole head in an invocation: on a CPU adapter
    /// the subgroup flash kernel where there are subgroups (K/V loads dominate there) and the
    /// decode kernel with 8 invocations a workgroup (one SIMD group of lavapipe: 5x faster there,
    /// `bench model --profile`), elsewhere the plain flash kernel and decode workgroups of 64.
    pub(super) fn attention_kernels(
        gpu: &Gpu,
        head_dim: usize,
        page: usize,
        kv_f16: bool,
        subgroups: bool,
        lanes: bool,
    ) -> Result<(Kernel, usize, Kernel, Option<u32>)> {
        if lanes {
            return Ok((
                Self::flash_lanes(gpu, head_dim, page, kv_f16, true)?,
                2048 / head_dim,
                Self::decode_attention_lanes(gpu, head_dim, page, kv_f16, 1)?,
                None,
            ));
        }
        let cpu = gpu.is_cpu_adapter();
        let (flash, rows) = if subgroups && cpu {
            (Self::flash_sg(gpu, head_dim, page, kv_f16)?, FLASH_SG_ROWS)
        } else {
            let flash = Self::attention_kernel(gpu, "attention_flash.wgsl", head_dim, page, kv_f16, &[])?;
            (flash, 64)
        };
        let wg = if cpu { 8 } else { 64 };
        let decode = Self::decode_attention_group(gpu, head_dim, page, wg, kv_f16, 1)?;
        Ok((flash, rows, decode, Some(wg)))
    }

    /// The same kernels with the attention of `lanes` (head_dim split across lanes) or of the
    /// whole head an invocation, whatever the adapter (see `attention_kernels`).
    pub fn with_head_split(mut self, gpu: &Gpu, head_dim: usize, page: usize, lanes: bool) -> Result<Self> {
        let (flash, rows, decode, wg) =
            Self::attention_kernels(gpu, head_dim, page, self.kv_f16, self.kind.subgroups, lanes)?;
        (self.attention_flash, self.flash_rows, self.attention_decode) = (flash, rows, decode);
        (self.decode_wg, self.decode_group) = (wg, 1);
        Ok(self)
    }
}
