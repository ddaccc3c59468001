//! The forward pass on the GPU, line for line like `cpu::forward`. Everything is built at load:
//! weights uploaded, buffers allocated, pipelines compiled, and every dispatch of the pass
//! recorded as (pipeline, bind group, grid). A step is then one uniform write, one compute pass
//! holding the whole forward, one submit and one readback (the logits, or the next token id).

use std::cell::RefCell;
use std::collections::HashMap;

use anyhow::{bail, Result};

use super::context::{Gpu, GpuRequest};
use super::kernels::{step_bytes, Kernel, Kernels, Shape, MAX_STEP_TOKENS};
use crate::config::{Config, RopeTable};
use crate::cpu::Logits;
use crate::weights::Weights;

/// A weight matrix on the device, split by rows where it exceeds one storage binding.
pub struct Matrix {
    pub parts: Vec<Part>,
}

impl Matrix {
    /// The buffer of a matrix that is not split (vectors always fit one binding).
    fn one(&self) -> &wgpu::Buffer {
        assert_eq!(self.parts.len(), 1, "a vector is never split");
        &self.parts[0].buf
    }
}

pub struct Part {
    pub buf: wgpu::Buffer,
    pub row0: usize,
    pub rows: usize,
}

/// One recorded dispatch: its grid is a function of the step's token count T.
struct Op {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    grid: Box<dyn Fn(u32) -> [u32; 3]>,
}

pub struct GpuModel {
    pub gpu: Gpu,
    cfg: Config,
    pos: usize,
    step: wgpu::Buffer,    // Step uniform: n_tokens, pos0, token ids
    logits: wgpu::Buffer,  // (all_rows, vocab)
    next_id: wgpu::Buffer, // (1,) u32
    staging: wgpu::Buffer, // readback
    all_rows: usize,       // most rows of logits one step can return
    prefill: Vec<Op>,      // embedding + layers with GEMMs (T > 1)
    decode: Vec<Op>,       // embedding + layers with GEMVs (T = 1)
    head_last: Vec<Op>,    // final norm + LM head of the last row
    head_all: Vec<Op>,     // final norm + LM head of every row
    argmax: Op,            // greedy choice on the device
}

fn div_up(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

/// Upload a (rows, cols) matrix, in parts of at most `max_binding` bytes.
fn upload_matrix(gpu: &Gpu, name: &str, data: &[f32], cols: usize, max_binding: u64) -> Result<Matrix> {
    let rows = data.len() / cols;
    let row_bytes = (cols * 4) as u64;
    if row_bytes > max_binding {
        bail!("{name}: one row of {cols} values exceeds the device's storage binding limit of {max_binding} bytes");
    }
    let per_part = ((max_binding / row_bytes) as usize).max(1);
    let mut parts = vec![];
    for row0 in (0..rows).step_by(per_part) {
        let n = per_part.min(rows - row0);
        let label = if rows > per_part {
            format!("{name}[{row0}..{}]", row0 + n)
        } else {
            name.to_string()
        };
        parts.push(Part {
            buf: gpu.upload(&label, &data[row0 * cols..(row0 + n) * cols])?,
            row0,
            rows: n,
        });
    }
    Ok(Matrix { parts })
}

impl GpuModel {
    pub fn new(cfg: &Config, w: &Weights<Vec<f32>>, req: &GpuRequest, max_binding: Option<u64>) -> Result<Self> {
        let gpu = Gpu::new(req)?;
        let limit = max_binding.unwrap_or(gpu.max_binding).min(gpu.max_binding);
        for (name, v) in [
            ("hidden_size", cfg.dim),
            ("intermediate_size", cfg.hidden_dim),
            ("n_heads * head_dim", cfg.q_dim()),
        ] {
            if v % 4 != 0 {
                bail!("{name} = {v} is not a multiple of 4, which the GPU matmul kernels (vec4 loads) need; use --device cpu");
            }
        }
        let k = Kernels::new(&gpu, cfg.head_dim)?;
        let (dim, q_dim, kv_dim, hidden, vocab) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.hidden_dim, cfg.vocab_size);
        let t_max = MAX_STEP_TOKENS;

        // Weights, uploaded once (the same struct as on the CPU, with device buffers inside).
        let vec = |name: &str, v: &Vec<f32>| upload_matrix(&gpu, name, v, v.len(), limit);
        let mut layers = vec![];
        for (l, lw) in w.layers.iter().enumerate() {
            let m = |n: &str, v: &Vec<f32>, cols| upload_matrix(&gpu, &format!("layers.{l}.{n}"), v, cols, limit);
            let b = |n: &str, v: &Option<Vec<f32>>| v.as_ref().map(|v| vec(&format!("layers.{l}.{n}"), v)).transpose();
            layers.push(crate::weights::Layer {
                attn_norm: vec(&format!("layers.{l}.attn_norm"), &lw.attn_norm)?,
                wq: m("wq", &lw.wq, dim)?,
                wk: m("wk", &lw.wk, dim)?,
                wv: m("wv", &lw.wv, dim)?,
                wo: m("wo", &lw.wo, q_dim)?,
                bq: b("bq", &lw.bq)?,
                bk: b("bk", &lw.bk)?,
                bv: b("bv", &lw.bv)?,
                bo: b("bo", &lw.bo)?,
                ffn_norm: vec(&format!("layers.{l}.ffn_norm"), &lw.ffn_norm)?,
                w_gate: m("w_gate", &lw.w_gate, dim)?,
                w_up: m("w_up", &lw.w_up, dim)?,
                w_down: m("w_down", &lw.w_down, hidden)?,
            });
        }
        let embed = upload_matrix(&gpu, "embed", &w.embed, dim, limit)?;
        let lm_head = w
            .lm_head
            .as_ref()
            .map(|h| upload_matrix(&gpu, "lm_head", h, dim, limit))
            .transpose()?;
        let norm = vec("norm", &w.norm)?;
        let rope = RopeTable::new(cfg);
        let cos = gpu.upload("rope.cos", &rope.cos)?;
        let sin = gpu.upload("rope.sin", &rope.sin)?;
        let dummy = gpu.zeros("dummy_bias", 4)?;

        // Activations, one row per token of a step.
        let x = gpu.zeros("x", t_max * dim)?; // (T, dim) residual stream
        let xb = gpu.zeros("xb", t_max * dim)?; // (T, dim) normalised input / block output
        let q = gpu.zeros("q", t_max * q_dim)?; // (T, n_heads·hd)
        let kb = gpu.zeros("k", t_max * kv_dim)?; // (T, n_kv_heads·hd)
        let vb = gpu.zeros("v", t_max * kv_dim)?; // (T, n_kv_heads·hd)
        let att = gpu.zeros("att", t_max * q_dim)?; // (T, n_heads·hd) attention output
        let hb = gpu.zeros("hb", t_max * hidden)?; // (T, hidden) gate, then SwiGLU
        let hb2 = gpu.zeros("hb2", t_max * hidden)?; // (T, hidden) up
        let all_rows = ((limit / (vocab as u64 * 4)) as usize).clamp(1, t_max);
        let logits = gpu.zeros("logits", all_rows * vocab)?; // (all_rows, vocab)
        let next_id = gpu.zeros("next_id", 1)?; // (1,) u32
        let staging = gpu.staging("staging", (all_rows * vocab * 4) as u64);
        // KV cache: (seq_len, kv_dim) per layer.
        let mut k_cache = vec![];
        let mut v_cache = vec![];
        for l in 0..cfg.n_layers {
            k_cache.push(gpu.zeros(&format!("k_cache.{l}"), cfg.seq_len * kv_dim)?);
            v_cache.push(gpu.zeros(&format!("v_cache.{l}"), cfg.seq_len * kv_dim)?);
        }
        let step = gpu.uniform("step", &step_bytes(0, 0, &[]));

        // Recording helpers. Shape uniforms are shared between call sites with equal shapes.
        let shapes: RefCell<HashMap<Shape, wgpu::Buffer>> = RefCell::default();
        let shape = |s: Shape| {
            shapes
                .borrow_mut()
                .entry(s)
                .or_insert_with(|| gpu.uniform("shape", bytemuck::bytes_of(&s)))
                .clone()
        };
        let op = |kern: &Kernel, shape: wgpu::Buffer, bufs: &[&wgpu::Buffer], grid: Box<dyn Fn(u32) -> [u32; 3]>| Op {
            pipeline: kern.pipeline.clone(),
            bind: kern.bind(&gpu, &kern.name, &step, &shape, bufs),
            grid,
        };
        let eps = (cfg.norm_eps as f32).to_bits() as usize;
        // out (T, dim) = rmsnorm(x (T, dim)) * weight (dim,)
        let rmsnorm = |x: &wgpu::Buffer, weight: &Matrix, out: &wgpu::Buffer| {
            op(
                &k.rmsnorm,
                shape(Shape::new(dim, eps, 0, 0)),
                &[x, weight.one(), out],
                Box::new(|t| [t, 1, 1]),
            )
        };
        // x (T, dim) += y (T, dim)
        let add = |y: &wgpu::Buffer, x: &wgpu::Buffer| {
            op(
                &k.add,
                shape(Shape::new(dim, 0, 0, 0)),
                &[y, x],
                Box::new(move |t| [div_up(t as usize * dim, 256), 1, 1]),
            )
        };
        // out (T, n) = x (T, d) · Wᵀ (+ bias): one dispatch per row part of W.
        let matmul = |ops: &mut Vec<Op>,
                      gemm: bool,
                      x: &wgpu::Buffer,
                      w: &Matrix,
                      bias: Option<&wgpu::Buffer>,
                      out: &wgpu::Buffer,
                      d: usize,
                      n: usize| {
            for p in &w.parts {
                let kern = match (gemm, bias.is_some()) {
                    (false, false) => &k.gemv,
                    (false, true) => &k.gemv_bias,
                    (true, false) => &k.gemm,
                    (true, true) => &k.gemm_bias,
                };
                let s = shape(Shape::new(d, p.rows, p.row0, n));
                let rows = p.rows;
                let grid: Box<dyn Fn(u32) -> [u32; 3]> = if gemm {
                    Box::new(move |t| [div_up(rows, 32), div_up(t as usize, 32), 1])
                } else {
                    Box::new(move |_| [div_up(rows, 64), 1, 1])
                };
                ops.push(op(kern, s, &[x, &p.buf, bias.unwrap_or(&dummy), out], grid));
            }
        };

        let body = |gemm: bool| -> Vec<Op> {
            let mut ops = vec![];
            // Token embeddings.
            for p in &embed.parts {
                let s = shape(Shape::new(dim, p.rows, p.row0, 0));
                ops.push(op(
                    &k.embed,
                    s,
                    &[&p.buf, &x],
                    Box::new(move |t| [div_up(dim, 64), t, 1]),
                ));
            }
            for (l, layer) in layers.iter().enumerate() {
                // Attention block: x += Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
                ops.push(rmsnorm(&x, &layer.attn_norm, &xb));
                matmul(
                    &mut ops,
                    gemm,
                    &xb,
                    &layer.wq,
                    layer.bq.as_ref().map(Matrix::one),
                    &q,
                    dim,
                    q_dim,
                );
                matmul(
                    &mut ops,
                    gemm,
                    &xb,
                    &layer.wk,
                    layer.bk.as_ref().map(Matrix::one),
                    &kb,
                    dim,
                    kv_dim,
                );
                matmul(
                    &mut ops,
                    gemm,
                    &xb,
                    &layer.wv,
                    layer.bv.as_ref().map(Matrix::one),
                    &vb,
                    dim,
                    kv_dim,
                );
                let (nh, nkv, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
                ops.push(op(
                    &k.rope,
                    shape(Shape::new(nh, hd, 0, 0)),
                    &[&cos, &sin, &q],
                    Box::new(move |t| [div_up(nh * hd / 2, 64), t, 1]),
                ));
                ops.push(op(
                    &k.rope,
                    shape(Shape::new(nkv, hd, 0, 0)),
                    &[&cos, &sin, &kb],
                    Box::new(move |t| [div_up(nkv * hd / 2, 64), t, 1]),
                ));
                ops.push(op(
                    &k.kv_write,
                    shape(Shape::new(kv_dim, 0, 0, 0)),
                    &[&kb, &vb, &k_cache[l], &v_cache[l]],
                    Box::new(move |t| [div_up(kv_dim, 64), t, 1]),
                ));
                ops.push(op(
                    &k.attention,
                    shape(Shape::new(nh, nkv, 0, 0)),
                    &[&q, &k_cache[l], &v_cache[l], &att],
                    Box::new(move |t| [nh as u32, t, 1]),
                ));
                matmul(
                    &mut ops,
                    gemm,
                    &att,
                    &layer.wo,
                    layer.bo.as_ref().map(Matrix::one),
                    &xb,
                    q_dim,
                    dim,
                );
                ops.push(add(&xb, &x));

                // Feed-forward block: x += W_down · (silu(W_gate·norm(x)) * W_up·norm(x))
                ops.push(rmsnorm(&x, &layer.ffn_norm, &xb));
                matmul(&mut ops, gemm, &xb, &layer.w_gate, None, &hb, dim, hidden);
                matmul(&mut ops, gemm, &xb, &layer.w_up, None, &hb2, dim, hidden);
                ops.push(op(
                    &k.swiglu,
                    shape(Shape::new(hidden, 0, 0, 0)),
                    &[&hb2, &hb],
                    Box::new(move |t| [div_up(t as usize * hidden, 256), 1, 1]),
                ));
                matmul(&mut ops, gemm, &hb, &layer.w_down, None, &xb, hidden, dim);
                ops.push(add(&xb, &x));
            }
            // Final norm (every row; the LM head picks the rows it needs).
            ops.push(rmsnorm(&x, &norm, &xb));
            ops
        };
        let prefill = body(true);
        let decode = body(false);
        let head = lm_head.as_ref().unwrap_or(&embed);
        let mut head_last = vec![];
        matmul(&mut head_last, false, &xb, head, None, &logits, dim, vocab);
        let mut head_all = vec![];
        matmul(&mut head_all, true, &xb, head, None, &logits, dim, vocab);
        let argmax = op(
            &k.argmax,
            shape(Shape::new(vocab, 0, 0, 0)),
            &[&logits, &next_id],
            Box::new(|_| [1, 1, 1]),
        );
        gpu.check("building the GPU forward pass")?;
        Ok(GpuModel {
            gpu,
            cfg: cfg.clone(),
            pos: 0,
            step,
            logits,
            next_id,
            staging,
            all_rows,
            prefill,
            decode,
            head_last,
            head_all,
            argmax,
        })
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Forget positions from `len` on: later steps overwrite them.
    pub fn truncate(&mut self, len: usize) {
        self.pos = self.pos.min(len);
    }

    /// Record and run one step of at most MAX_STEP_TOKENS tokens; returns the bytes read back.
    fn step(&mut self, tokens: &[u32], head: Head) -> Result<Vec<u8>> {
        let t = tokens.len();
        assert!((1..=MAX_STEP_TOKENS).contains(&t) && self.pos + t <= self.cfg.seq_len);
        let gpu = &self.gpu;
        gpu.queue.write_buffer(&self.step, 0, &step_bytes(t, self.pos, tokens));
        let mut encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("forward"),
                timestamp_writes: None,
            });
            let body = if t == 1 { &self.decode } else { &self.prefill };
            let (head_ops, argmax): (&[Op], Option<&Op>) = match head {
                Head::Last => (&self.head_last, None),
                Head::All => (&self.head_all, None),
                Head::Argmax => (&self.head_last, Some(&self.argmax)),
            };
            for op in body.iter().chain(head_ops).chain(argmax) {
                let [gx, gy, gz] = (op.grid)(t as u32);
                pass.set_pipeline(&op.pipeline);
                pass.set_bind_group(0, &op.bind, &[]);
                pass.dispatch_workgroups(gx, gy, gz);
            }
        }
        let (src, bytes) = match head {
            Head::Last => (&self.logits, (self.cfg.vocab_size * 4) as u64),
            Head::All => (&self.logits, (t * self.cfg.vocab_size * 4) as u64),
            Head::Argmax => (&self.next_id, 4),
        };
        encoder.copy_buffer_to_buffer(src, 0, &self.staging, 0, bytes);
        let out = gpu.submit_and_read(encoder, &self.staging, bytes, "the forward step")?;
        self.pos += t;
        Ok(out)
    }

    /// Run `tokens` at the next positions (in steps of at most MAX_STEP_TOKENS, or fewer when
    /// every row's logits are wanted and they would not fit one buffer).
    pub fn forward(&mut self, tokens: &[u32], want: Logits) -> Result<Vec<f32>> {
        let chunk = match want {
            Logits::Last => MAX_STEP_TOKENS,
            Logits::All => self.all_rows,
        };
        let mut out = vec![];
        for c in tokens.chunks(chunk) {
            let head = if want == Logits::All { Head::All } else { Head::Last };
            let bytes = self.step(c, head)?;
            let values: &[f32] = bytemuck::cast_slice(&bytes);
            if want == Logits::All {
                out.extend_from_slice(values);
            } else {
                out = values.to_vec();
            }
        }
        Ok(out)
    }

    /// Run `tokens` and return the most likely next token, chosen on the device (4 bytes read back).
    pub fn forward_argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        // All but the last step's tokens only fill the cache; the last step picks the token.
        let (head, tail) = tokens.split_at(tokens.len() - tokens.len().min(MAX_STEP_TOKENS));
        if !head.is_empty() {
            self.forward(head, Logits::Last)?;
        }
        let bytes = self.step(tail, Head::Argmax)?;
        Ok(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
    }
}

#[derive(Clone, Copy)]
enum Head {
    Last,
    All,
    Argmax,
}
