//! LoRA adapters on the GPU, unmerged: per product site of a layer (the stacked Wq;Wk;Wv, Wo,
//! W_gate;W_up, W_down) one A (R, in) and one B (out, R) stacking every adapter's and every
//! module's pair, so that one lora_shrink and one lora_expand dispatch give the update of every
//! row, each row with its own sequence's factors (Punica / S-LoRA's batched LoRA; the matrix
//! kernel adds it before its epilogue). The weights stay untouched: factors change per
//! sequence without reloading. CPU twin: lora::LoraPair::apply in cpu::forward.

use anyhow::Result;

use super::context::Gpu;
use super::kernels::MAX_STEP_TOKENS;
use crate::arch::{Arch, Field};
use crate::config::Config;
use crate::lora::Lora;

type Buf = wgpu::Buffer;

/// One product's stacked LoRA pairs.
pub struct LoraSite {
    pub a: Buf,    // (rank, d_in) every adapter's A rows, adapter by adapter, module by module
    pub b: Buf,    // (n_out, rank) lora_B × α/r, zero where a column's module is not the row's
    pub cols: Buf, // uniform (32,) u32: adapter i owns columns cols[i]..cols[i + 1]
    pub rank: usize,
    pub d_in: usize,
    pub n_out: usize,
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
    pub factors: Buf, // (max_seqs, n_adapters) each sequence's factor per adapter
    pub u: Buf,       // (MAX_STEP_TOKENS, max rank) the shrink's output
    pub delta: Buf,   // (MAX_STEP_TOKENS, max n_out) the update a product adds
    pub layers: Vec<LoraLayer>,
}

impl GpuLora {
    /// Upload `loras` (None when there are none) for `max_seqs` sequences, all factors 0.
    pub fn upload(gpu: &Gpu, cfg: &Config, loras: &[Lora], max_seqs: usize) -> Result<Option<Self>> {
        if loras.is_empty() {
            return Ok(None);
        }
        let arch = Arch::for_hf(&cfg.model_type).expect("a loaded model's architecture");
        let (mut rank_max, mut out_max) = (1, 1);
        let mut site = |l: usize, fields: &[Field]| -> Result<Option<LoraSite>> {
            let s = stack(gpu, cfg, loras, l, fields)?;
            if let Some(s) = &s {
                rank_max = rank_max.max(s.rank);
                out_max = out_max.max(s.n_out);
            }
            Ok(s)
        };
        let mut layers = vec![];
        for l in 0..cfg.n_layers {
            layers.push(LoraLayer {
                qkv: site(l, &arch.stack_qkv)?,
                o: site(l, &[Field::Wo])?,
                gate_up: site(l, &arch.stack_gate_up)?,
                down: site(l, &[Field::WDown])?,
            });
        }
        Ok(Some(GpuLora {
            n_adapters: loras.len(),
            factors: gpu.zeros("lora.factors", max_seqs * loras.len())?,
            u: gpu.zeros("lora.u", MAX_STEP_TOKENS * rank_max)?,
            delta: gpu.zeros("lora.delta", MAX_STEP_TOKENS * out_max)?,
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

/// The site of `fields` (rows stacked in this order) in layer `l`: A and B of every adapter.
fn stack(gpu: &Gpu, cfg: &Config, loras: &[Lora], l: usize, fields: &[Field]) -> Result<Option<LoraSite>> {
    let d_in = fields[0].shape(cfg)[1];
    let rows: Vec<usize> = fields.iter().map(|f| f.shape(cfg)[0]).collect();
    let n_out: usize = rows.iter().sum();
    let rank: usize = (loras.iter())
        .flat_map(|lora| fields.iter().filter_map(move |&f| lora.pair(l, f)))
        .map(|p| p.rank)
        .sum();
    if rank == 0 {
        return Ok(None);
    }
    let (mut a, mut b) = (Vec::with_capacity(rank * d_in), vec![0f32; n_out * rank]);
    let mut cols = [0u32; 32];
    let mut col = 0;
    for (i, lora) in loras.iter().enumerate() {
        cols[i] = col as u32;
        let mut row0 = 0;
        for (&f, n) in fields.iter().zip(&rows) {
            let p = lora.pair(l, f);
            if let Some(p) = p {
                a.extend_from_slice(&p.a);
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
    cols[loras.len()] = col as u32;
    let name = format!("lora.{l}.{:?}", fields[0]);
    Ok(Some(LoraSite {
        a: gpu.upload(&format!("{name}.a"), &a)?,
        b: gpu.upload(&format!("{name}.b"), &b)?,
        cols: gpu.uniform(&format!("{name}.cols"), bytemuck::cast_slice(&cols)),
        rank,
        d_in,
        n_out,
    }))
}
