//! LoRA adapters on the GPU, unmerged: per product site of a layer (the stacked Wq;Wk;Wv, Wo,
//! W_gate;W_up, W_down) one A (R, in) stacking every adapter's and every module's lora_A, and
//! one B (adapters × out, R) holding each adapter's lora_B (× α/r) in its own block of rows and
//! columns. The forward records two products with the ordinary matrix kernels before the
//! adapted product, u = A·x' (the same input the product reads, normalised alike) and
//! delta = B·u, and the product adds the sum over adapters of delta times each row's sequence's
//! factor before its epilogue (lib/epilogue.wgsl's LORA_ADAPTERS): every row of a batch with its
//! own adapters (Punica / S-LoRA's batched LoRA), the weights untouched.
//! CPU twin: lora::LoraPair::apply in cpu::forward.

use anyhow::{bail, Result};

use super::context::Gpu;
use super::kernels::MAX_STEP_TOKENS;
use super::weights::{ActTex, WeightTex};
use crate::arch::{Arch, Field};
use crate::config::Config;
use crate::lora::Lora;
use crate::weights::Tensor;

type Buf = wgpu::Buffer;

/// Most factors the uniform table holds: sequences × adapters (lib/epilogue.wgsl's lora_factors).
pub const MAX_FACTORS: usize = 4096;

/// One product's stacked LoRA pairs.
pub struct LoraSite {
    pub a: WeightTex, // (R, in) every adapter's A rows, adapter by adapter, module by module
    pub b: WeightTex, // (adapters × out, R) adapter i's lora_B × α/r in rows i·out.., its columns
    pub ut: ActTex,   // (T, R) u as the GEMM of a prompt step reads it
}

/// The sites of one layer (None where no adapter trains the product's modules).
pub struct LoraLayer {
    pub qkv: Option<LoraSite>,
    pub o: Option<LoraSite>,
    pub gate_up: Option<LoraSite>,
    pub down: Option<LoraSite>,
}

pub struct GpuLora {
    pub n_adapters: usize,
    pub factors: Buf, // uniform (max_seqs, n_adapters) each sequence's factor per adapter
    pub u: Buf,       // (T, max R) A·x', at least the GEMV's 64 KiB uniform window
    pub delta: Buf,   // (T, n_adapters × max out) B·u per adapter
    pub layers: Vec<LoraLayer>,
}

impl GpuLora {
    /// Upload `loras` (None when there are none) for `max_seqs` sequences, all factors 0.
    pub fn upload(gpu: &Gpu, cfg: &Config, loras: &[Lora], max_seqs: usize) -> Result<Option<Self>> {
        if loras.is_empty() {
            return Ok(None);
        }
        if max_seqs * loras.len() > MAX_FACTORS {
            bail!(
                "{} sequences × {} LoRA adapters is over the GPU's table of {MAX_FACTORS} factors; use fewer",
                max_seqs,
                loras.len()
            );
        }
        let arch = Arch::for_hf(&cfg.model_type).expect("a loaded model's architecture");
        let (mut rank_max, mut out_max) = (4, 4);
        let mut layers = vec![];
        for l in 0..cfg.n_layers {
            let mut site = |fields: &[Field]| -> Result<Option<LoraSite>> {
                let (site, rank, out) = stack(gpu, cfg, loras, l, fields)?;
                (rank_max, out_max) = (rank_max.max(rank), out_max.max(out));
                Ok(site)
            };
            layers.push(LoraLayer {
                qkv: site(&arch.stack_qkv)?,
                o: site(&[Field::Wo])?,
                gate_up: site(&arch.stack_gate_up)?,
                down: site(&[Field::WDown])?,
            });
        }
        let t = MAX_STEP_TOKENS;
        Ok(Some(GpuLora {
            n_adapters: loras.len(),
            factors: gpu.zeros("lora.factors", MAX_FACTORS)?,
            u: gpu.zeros("lora.u", (t * rank_max).max(16384))?,
            delta: gpu.zeros("lora.delta", t * out_max).map_err(|e| {
                e.context(format!("{} LoRA adapters need more GPU scratch than a binding holds: use fewer at once, or merge some (--lora-merge)", loras.len()))
            })?,
            layers,
        }))
    }

    /// Sequence `seq`'s factors, one per adapter.
    pub fn set_factors(&self, gpu: &Gpu, seq: usize, factors: &[f32]) {
        assert_eq!(factors.len(), self.n_adapters);
        let at = (seq * self.n_adapters * 4) as u64;
        gpu.queue.write_buffer(&self.factors, at, bytemuck::cast_slice(factors));
    }
}

/// The site of `fields` (rows stacked in this order) in layer `l`, and its rank R (a multiple of
/// 4, zero columns added) and rows (adapters × out).
fn stack(
    gpu: &Gpu,
    cfg: &Config,
    loras: &[Lora],
    l: usize,
    fields: &[Field],
) -> Result<(Option<LoraSite>, usize, usize)> {
    let d_in = fields[0].shape(cfg)[1];
    let rows: Vec<usize> = fields.iter().map(|f| f.shape(cfg)[0]).collect();
    let n_out: usize = rows.iter().sum();
    let pairs = loras
        .iter()
        .flat_map(|lora| fields.iter().filter_map(move |&f| lora.pair(l, f)));
    let rank = pairs.map(|p| p.rank).sum::<usize>().next_multiple_of(4);
    if rank == 0 {
        return Ok((None, 0, 0));
    }
    let n_b = loras.len() * n_out;
    let (mut a, mut b) = (vec![0f32; rank * d_in], vec![0f32; n_b * rank]);
    let mut col = 0;
    for (i, lora) in loras.iter().enumerate() {
        let mut row0 = i * n_out;
        for (&f, n) in fields.iter().zip(&rows) {
            if let Some(p) = lora.pair(l, f) {
                a[col * d_in..(col + p.rank) * d_in].copy_from_slice(&p.a);
                for o in 0..*n {
                    for j in 0..p.rank {
                        b[(row0 + o) * rank + col + j] = p.scale * p.b[o * p.rank + j];
                    }
                }
                col += p.rank;
            }
            row0 += n;
        }
    }
    let name = format!("lora.{l}.{:?}", fields[0]);
    let site = LoraSite {
        a: WeightTex::upload(
            gpu,
            &format!("{name}.a"),
            &[&Tensor::from_f32(vec![rank, d_in], a)],
            false,
        )?,
        b: WeightTex::upload(
            gpu,
            &format!("{name}.b"),
            &[&Tensor::from_f32(vec![n_b, rank], b)],
            false,
        )?,
        ut: ActTex::new(gpu, &format!("{name}.ut"), rank, MAX_STEP_TOKENS)?,
    };
    Ok((Some(site), rank, n_b))
}
