//! The training-time forward and backward passes over a fixed (B, T).
//!
//! [`Acts`] holds every activation the backward pass needs, per layer, allocated once.
//! The same forward code also serves inference with a single layer slot (activations of
//! layer l overwrite layer l-1's, since nothing will be differentiated).

use super::kernels::{self, LN_BLOCKS};
use super::{layer, layer_mut, parts, parts_mut, Float, Gpt, GptConfig};
use crate::model::ModelError;
use rayon::prelude::*;

/// Activations for one (B, T). `slots` is L for training, 1 for inference.
pub(crate) struct Acts<F> {
    pub b: usize,
    pub t: usize,
    pub slots: usize,
    pub encoded: Vec<F>,
    pub ln1: Vec<F>,
    pub ln1_mean: Vec<F>,
    pub ln1_rstd: Vec<F>,
    pub qkv: Vec<F>,
    pub atty: Vec<F>,
    pub att: Vec<F>,
    pub res2: Vec<F>,
    pub ln2: Vec<F>,
    pub ln2_mean: Vec<F>,
    pub ln2_rstd: Vec<F>,
    pub fch: Vec<F>,
    pub fch_gelu: Vec<F>,
    pub res3: Vec<F>,
    pub lnf: Vec<F>,
    pub lnf_mean: Vec<F>,
    pub lnf_rstd: Vec<F>,
    pub logits: Vec<F>,
    pub losses: Vec<F>,
    /// Dropout masks (0 or 1/(1-p)) of the embeddings and of each block's two residual
    /// branches; empty unless the trainer was built for a model with dropout > 0.
    pub drop_emb: Vec<F>,
    pub drop_attn: Vec<F>,
    pub drop_mlp: Vec<F>,
}

impl<F: Float> Acts<F> {
    pub fn new(cfg: &GptConfig, b: usize, t: usize, slots: usize) -> Acts<F> {
        let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let n = b * t;
        let z = |len: usize| vec![F::ZERO; len];
        Acts {
            b,
            t,
            slots,
            encoded: z(n * c),
            ln1: z(slots * n * c),
            ln1_mean: z(slots * n),
            ln1_rstd: z(slots * n),
            qkv: z(slots * n * 3 * c),
            atty: z(slots * n * c),
            att: z(slots * b * nh * t * t),
            res2: z(slots * n * c),
            ln2: z(slots * n * c),
            ln2_mean: z(slots * n),
            ln2_rstd: z(slots * n),
            fch: z(slots * n * 4 * c),
            fch_gelu: z(slots * n * 4 * c),
            res3: z(slots * n * c),
            lnf: z(n * c),
            lnf_mean: z(n),
            lnf_rstd: z(n),
            logits: z(n * v),
            losses: z(n),
            drop_emb: Vec::new(),
            drop_attn: Vec::new(),
            drop_mlp: Vec::new(),
        }
    }
}

/// Fills `mask` with 0 (probability p) or 1/(1-p), deterministically from (seed, stream,
/// index) so any thread count gives the same masks.
fn fill_dropout_mask<F: Float>(mask: &mut [F], p: f32, seed: u64, stream: u64) {
    let keep = F::from_f64(1.0 / (1.0 - p as f64));
    let thresh = (p as f64 * (1u64 << 53) as f64) as u64;
    mask.par_chunks_mut(1 << 14)
        .enumerate()
        .for_each(|(ci, ch)| {
            for (i, m) in ch.iter_mut().enumerate() {
                let idx = (ci << 14) as u64 + i as u64;
                let mut z = seed
                    .wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
                    .wrapping_add(idx.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                *m = if (z >> 11) < thresh { F::ZERO } else { keep };
            }
        });
}

/// x *= mask elementwise.
fn apply_mask<F: Float>(x: &mut [F], mask: &[F]) {
    x.par_chunks_mut(1 << 14)
        .zip(mask.par_chunks(1 << 14))
        .for_each(|(x, m)| {
            for (a, &b) in x.iter_mut().zip(m) {
                *a *= b;
            }
        });
}

/// out = x * mask elementwise.
fn masked_copy<F: Float>(out: &mut [F], x: &[F], mask: &[F]) {
    out.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14).zip(mask.par_chunks(1 << 14)))
        .for_each(|(o, (x, m))| {
            for ((a, &b), &c) in o.iter_mut().zip(x).zip(m) {
                *a = b * c;
            }
        });
}

/// A hook the inference forward calls with each layer's qkv (B=1), to fill a KV cache.
pub(crate) type QkvHook<'a, F> = &'a mut dyn FnMut(usize, &[F]);

/// Forward pass up to the logits (acts.logits, (B,T,V)).
pub(crate) fn forward<F: Float>(
    cfg: &GptConfig,
    params: &[F],
    acts: &mut Acts<F>,
    tokens: &[u32],
    mut hook: Option<QkvHook<'_, F>>,
    dropout: Option<(f32, u64)>,
) {
    let (b, t) = (acts.b, acts.t);
    let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
    let n = b * t;
    let p = parts(params, cfg);
    kernels::encoder_forward(&mut acts.encoded, tokens, p.wte, p.wpe, t, c);
    let training = acts.slots == cfg.n_layer;
    // Dropout needs the per-layer masks only the trainer allocates.
    let dropout = dropout.filter(|&(p, _)| p > 0.0 && training && !acts.drop_emb.is_empty());
    if let Some((pd, seed)) = dropout {
        fill_dropout_mask(&mut acts.drop_emb, pd, seed, 0);
        fill_dropout_mask(&mut acts.drop_attn, pd, seed, 1);
        fill_dropout_mask(&mut acts.drop_mlp, pd, seed, 2);
        apply_mask(&mut acts.encoded, &acts.drop_emb);
    }
    for l in 0..cfg.n_layer {
        let s = if training { l } else { 0 };
        let w = layer(p.layers, cfg, l);
        let a = &mut *acts;
        let input: &[F] = if l == 0 || !training {
            &a.encoded
        } else {
            &a.res3[(l - 1) * n * c..l * n * c]
        };
        let ln1 = &mut a.ln1[s * n * c..(s + 1) * n * c];
        kernels::layernorm_forward(
            ln1,
            &mut a.ln1_mean[s * n..(s + 1) * n],
            &mut a.ln1_rstd[s * n..(s + 1) * n],
            input,
            w.ln1_w,
            w.ln1_b,
            c,
        );
        let qkv = &mut a.qkv[s * n * 3 * c..(s + 1) * n * 3 * c];
        kernels::matmul_forward(qkv, ln1, w.qkv_w, Some(w.qkv_b), n, c, 3 * c);
        if let Some(h) = hook.as_mut() {
            h(l, qkv);
        }
        let atty = &mut a.atty[s * n * c..(s + 1) * n * c];
        let att = &mut a.att[s * b * nh * t * t..(s + 1) * b * nh * t * t];
        kernels::attention_forward(atty, att, qkv, b, t, c, nh);
        let res2 = &mut a.res2[s * n * c..(s + 1) * n * c];
        kernels::matmul_forward(res2, atty, w.attn_proj_w, Some(w.attn_proj_b), n, c, c);
        if dropout.is_some() {
            apply_mask(res2, &a.drop_attn[l * n * c..(l + 1) * n * c]);
        }
        kernels::residual_add(res2, input);
        let ln2 = &mut a.ln2[s * n * c..(s + 1) * n * c];
        kernels::layernorm_forward(
            ln2,
            &mut a.ln2_mean[s * n..(s + 1) * n],
            &mut a.ln2_rstd[s * n..(s + 1) * n],
            res2,
            w.ln2_w,
            w.ln2_b,
            c,
        );
        let fch = &mut a.fch[s * n * 4 * c..(s + 1) * n * 4 * c];
        kernels::matmul_forward(fch, ln2, w.fc_w, Some(w.fc_b), n, c, 4 * c);
        let fch_gelu = &mut a.fch_gelu[s * n * 4 * c..(s + 1) * n * 4 * c];
        kernels::gelu_forward(fch_gelu, fch);
        let res3 = &mut a.res3[s * n * c..(s + 1) * n * c];
        kernels::matmul_forward(res3, fch_gelu, w.proj_w, Some(w.proj_b), n, 4 * c, c);
        if dropout.is_some() {
            apply_mask(res3, &a.drop_mlp[l * n * c..(l + 1) * n * c]);
        }
        kernels::residual_add(res3, res2);
        if !training {
            // The next layer reads its input from `encoded`.
            std::mem::swap(&mut a.encoded, &mut a.res3);
        }
    }
    let last: &[F] = if training {
        &acts.res3[(cfg.n_layer - 1) * n * c..]
    } else {
        &acts.encoded
    };
    kernels::layernorm_forward(
        &mut acts.lnf,
        &mut acts.lnf_mean,
        &mut acts.lnf_rstd,
        last,
        p.lnf_w,
        p.lnf_b,
        c,
    );
    // logits(N,V) = lnf(N,C) @ wte^T(C,V); wte^T(c, v) = wte[v*C + c].
    kernels::gemm_strided(
        n,
        v,
        c,
        &mut acts.logits,
        v,
        false,
        &acts.lnf,
        c,
        1,
        p.wte,
        1,
        c,
    );
}

/// Activations and gradients for training at a fixed (B, T), allocated once and reused.
pub struct GptTrainer<F: Float = f32> {
    config: GptConfig,
    b: usize,
    t: usize,
    acts: Acts<F>,
    grads: Vec<F>,
    dres: Vec<F>,
    dln: Vec<F>,
    dqkv: Vec<F>,
    datty: Vec<F>,
    datt: Vec<F>,
    dfch: Vec<F>,
    ln_scratch: Vec<F>,
    /// (N,C) scratch: a residual gradient times a dropout mask (empty without dropout).
    dtmp: Vec<F>,
    /// Whether the last forward pass applied dropout.
    dropped: bool,
}

impl<F: Float> GptTrainer<F> {
    /// Buffers for batches of `b` sequences of `t` tokens (t <= block_size).
    pub fn new(model: &Gpt<F>, b: usize, t: usize) -> GptTrainer<F> {
        let cfg = model.config;
        let (c, nh) = (cfg.n_embd, cfg.n_head);
        let n = b * t;
        let z = |len: usize| vec![F::ZERO; len];
        let mut acts = Acts::new(&cfg, b, t, cfg.n_layer);
        let with_dropout = cfg.dropout > 0.0;
        if with_dropout {
            acts.drop_emb = z(n * c);
            acts.drop_attn = z(cfg.n_layer * n * c);
            acts.drop_mlp = z(cfg.n_layer * n * c);
        }
        GptTrainer {
            config: cfg,
            b,
            t,
            acts,
            grads: z(model.num_params()),
            dres: z(n * c),
            dln: z(n * c),
            dqkv: z(n * 3 * c),
            datty: z(n * c),
            datt: z(b * nh * t * t),
            dfch: z(n * 4 * c),
            ln_scratch: z(LN_BLOCKS * 2 * c),
            dtmp: if with_dropout { z(n * c) } else { Vec::new() },
            dropped: false,
        }
    }

    /// Batch size B.
    pub fn batch_size(&self) -> usize {
        self.b
    }

    /// Sequence length T.
    pub fn seq_len(&self) -> usize {
        self.t
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grads.fill(F::ZERO);
    }

    /// Accumulated gradients (same layout as [`Gpt::params`]).
    pub fn grads(&self) -> &[F] {
        &self.grads
    }

    /// Mutable gradients (for clipping/scaling in place).
    pub fn grads_mut(&mut self) -> &mut [F] {
        &mut self.grads
    }

    /// Per-position losses of the last forward pass (nats), (B,T).
    pub fn losses(&self) -> &[F] {
        &self.acts.losses
    }

    /// After a forward pass: the softmax probabilities (B,T,V); after backward: dlogits.
    pub fn probs(&self) -> &[F] {
        &self.acts.logits
    }

    fn check(&self, model: &Gpt<F>, inputs: &[u32], targets: &[u32]) -> Result<(), ModelError> {
        let n = self.b * self.t;
        if model.config != self.config {
            return Err(ModelError::InvalidConfig(
                "the trainer was built for a different model configuration".into(),
            ));
        }
        if self.t > self.config.block_size {
            return Err(ModelError::ContextTooLong {
                len: self.t,
                max_context: self.config.block_size,
            });
        }
        if inputs.len() != n || targets.len() != n {
            return Err(ModelError::InvalidConfig(format!(
                "batch has {} inputs and {} targets, the trainer expects B*T = {}",
                inputs.len(),
                targets.len(),
                n
            )));
        }
        for &tok in inputs.iter().chain(targets) {
            crate::model::check_token(tok, self.config.vocab_size)?;
        }
        Ok(())
    }

    /// Runs the forward pass and returns the logits (B,T,V) (no softmax, no loss).
    pub fn logits(&mut self, model: &Gpt<F>, inputs: &[u32]) -> Result<&[F], ModelError> {
        self.check(model, inputs, inputs)?;
        forward(
            &self.config,
            model.params(),
            &mut self.acts,
            inputs,
            None,
            None,
        );
        self.dropped = false;
        Ok(&self.acts.logits)
    }

    /// Mean next-token cross-entropy (nats) of the batch, without gradients.
    pub fn forward_loss(
        &mut self,
        model: &Gpt<F>,
        inputs: &[u32],
        targets: &[u32],
    ) -> Result<f32, ModelError> {
        self.forward_loss_f64(model, inputs, targets)
            .map(|l| l as f32)
    }

    /// [`GptTrainer::forward_loss`] without rounding the mean to f32 (finite differences).
    pub fn forward_loss_f64(
        &mut self,
        model: &Gpt<F>,
        inputs: &[u32],
        targets: &[u32],
    ) -> Result<f64, ModelError> {
        self.loss_inner(model, inputs, targets, None)
    }

    /// Forward + loss, with dropout masks from `dropout = (p, seed)` when given.
    pub(crate) fn loss_inner(
        &mut self,
        model: &Gpt<F>,
        inputs: &[u32],
        targets: &[u32],
        dropout: Option<(f32, u64)>,
    ) -> Result<f64, ModelError> {
        self.check(model, inputs, targets)?;
        forward(
            &self.config,
            model.params(),
            &mut self.acts,
            inputs,
            None,
            dropout,
        );
        self.dropped = dropout.is_some_and(|(p, _)| p > 0.0) && !self.acts.drop_emb.is_empty();
        let loss = kernels::softmax_ce_forward(
            &mut self.acts.logits,
            &mut self.acts.losses,
            targets,
            self.config.vocab_size,
        );
        if !loss.is_finite() {
            return Err(ModelError::NonFinite(format!("loss {loss}")));
        }
        Ok(loss)
    }

    /// Mean next-token cross-entropy (nats) over the B*T positions; ADDS its gradient into
    /// [`GptTrainer::grads`] (call [`GptTrainer::zero_grad`] between optimizer steps).
    /// `seed` drives dropout (embeddings and both residual branches of every block, as
    /// nanoGPT's embd/resid dropout; attention probabilities are not dropped); unused when
    /// the model's dropout is 0.
    pub fn forward_backward(
        &mut self,
        model: &Gpt<F>,
        inputs: &[u32],
        targets: &[u32],
        seed: u64,
    ) -> Result<f32, ModelError> {
        let loss =
            self.loss_inner(model, inputs, targets, Some((model.config.dropout, seed)))? as f32;
        self.backward(model.params(), inputs, targets);
        Ok(loss)
    }

    fn backward(&mut self, params: &[F], inputs: &[u32], targets: &[u32]) {
        let cfg = self.config;
        let (b, t) = (self.b, self.t);
        let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let n = b * t;
        let a = &mut self.acts;
        let scale = F::ONE / F::from_usize(n);
        kernels::softmax_ce_backward_inplace(&mut a.logits, targets, v, scale);
        let dlogits = &a.logits;
        let p = parts(params, &cfg);
        let g = parts_mut(&mut self.grads, &cfg);
        // logits = lnf @ wte^T: dlnf(N,C) = dlogits(N,V) @ wte(V,C)
        kernels::gemm_strided(n, c, v, &mut self.dln, c, false, dlogits, v, 1, p.wte, c, 1);
        // dwte(V,C) += dlogits^T(V,N) @ lnf(N,C)
        kernels::gemm_strided(v, c, n, g.wte, c, true, dlogits, 1, v, &a.lnf, c, 1);
        let last = &a.res3[(cfg.n_layer - 1) * n * c..];
        self.dres.fill(F::ZERO);
        kernels::layernorm_backward(
            &mut self.dres,
            g.lnf_w,
            g.lnf_b,
            &mut self.ln_scratch,
            &self.dln,
            last,
            p.lnf_w,
            &a.lnf_mean,
            &a.lnf_rstd,
            c,
        );
        for l in (0..cfg.n_layer).rev() {
            let w = layer(p.layers, &cfg, l);
            let gw = layer_mut(&mut *g.layers, &cfg, l);
            let input: &[F] = if l == 0 {
                &a.encoded
            } else {
                &a.res3[(l - 1) * n * c..l * n * c]
            };
            let sl = |width: usize| l * n * width..(l + 1) * n * width;
            let res2 = &a.res2[sl(c)];
            let ln1 = &a.ln1[sl(c)];
            let ln2 = &a.ln2[sl(c)];
            let qkv = &a.qkv[sl(3 * c)];
            let atty = &a.atty[sl(c)];
            let fch = &a.fch[sl(4 * c)];
            let fch_gelu = &a.fch_gelu[sl(4 * c)];
            let att = &a.att[l * b * nh * t * t..(l + 1) * b * nh * t * t];
            // res3 = res2 + drop(gelu @ proj_w + proj_b)
            let dbranch: &[F] = if self.dropped {
                masked_copy(&mut self.dtmp, &self.dres, &a.drop_mlp[sl(c)]);
                &self.dtmp
            } else {
                &self.dres
            };
            kernels::matmul_backward(
                &mut self.dfch,
                gw.proj_w,
                Some(gw.proj_b),
                dbranch,
                fch_gelu,
                w.proj_w,
                n,
                4 * c,
                c,
            );
            kernels::gelu_backward_inplace(&mut self.dfch, fch);
            kernels::matmul_backward(
                &mut self.dln,
                gw.fc_w,
                Some(gw.fc_b),
                &self.dfch,
                ln2,
                w.fc_w,
                n,
                c,
                4 * c,
            );
            kernels::layernorm_backward(
                &mut self.dres,
                gw.ln2_w,
                gw.ln2_b,
                &mut self.ln_scratch,
                &self.dln,
                res2,
                w.ln2_w,
                &a.ln2_mean[l * n..(l + 1) * n],
                &a.ln2_rstd[l * n..(l + 1) * n],
                c,
            );
            // res2 = input + drop(atty @ attn_proj_w + attn_proj_b)
            let dbranch: &[F] = if self.dropped {
                masked_copy(&mut self.dtmp, &self.dres, &a.drop_attn[sl(c)]);
                &self.dtmp
            } else {
                &self.dres
            };
            kernels::matmul_backward(
                &mut self.datty,
                gw.attn_proj_w,
                Some(gw.attn_proj_b),
                dbranch,
                atty,
                w.attn_proj_w,
                n,
                c,
                c,
            );
            kernels::attention_backward(
                &mut self.dqkv,
                &mut self.datt,
                &self.datty,
                qkv,
                att,
                b,
                t,
                c,
                nh,
            );
            kernels::matmul_backward(
                &mut self.dln,
                gw.qkv_w,
                Some(gw.qkv_b),
                &self.dqkv,
                ln1,
                w.qkv_w,
                n,
                c,
                3 * c,
            );
            kernels::layernorm_backward(
                &mut self.dres,
                gw.ln1_w,
                gw.ln1_b,
                &mut self.ln_scratch,
                &self.dln,
                input,
                w.ln1_w,
                &a.ln1_mean[l * n..(l + 1) * n],
                &a.ln1_rstd[l * n..(l + 1) * n],
                c,
            );
        }
        if self.dropped {
            apply_mask(&mut self.dres, &a.drop_emb);
        }
        kernels::encoder_backward(g.wte, g.wpe, &self.dres, inputs, t, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GptConfig {
        GptConfig {
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            block_size: 6,
            vocab_size: 7,
            dropout: 0.0,
        }
    }

    /// Whole-model finite-difference check in f64 on every parameter of a tiny model.
    #[test]
    #[allow(clippy::needless_range_loop)]
    fn whole_model_gradient_matches_finite_differences() {
        let cfg = cfg();
        let mut model: Gpt<f64> = Gpt::init(cfg, 3).unwrap();
        // Non-trivial LayerNorm params and biases so their gradients are exercised.
        for (i, x) in model.params_mut().iter_mut().enumerate() {
            *x += 0.05 * (((i * 7919) % 13) as f64 - 6.0) / 6.0;
        }
        let (b, t) = (2, 5);
        let inputs = [1u32, 2, 3, 4, 5, 6, 0, 0, 1, 3];
        let targets = [2u32, 3, 4, 5, 6, 0, 0, 1, 3, 2];
        let mut tr = GptTrainer::new(&model, b, t);
        tr.zero_grad();
        let loss = tr.forward_backward(&model, &inputs, &targets, 0).unwrap();
        assert!(loss > 0.0);
        let grads = tr.grads().to_vec();
        let h = 1e-5;
        let mut worst: f64 = 0.0;
        for i in 0..model.num_params() {
            let x0 = model.params()[i];
            model.params_mut()[i] = x0 + h;
            let lp = tr.forward_loss_f64(&model, &inputs, &targets).unwrap();
            model.params_mut()[i] = x0 - h;
            let lm = tr.forward_loss_f64(&model, &inputs, &targets).unwrap();
            model.params_mut()[i] = x0;
            let num = (lp - lm) / (2.0 * h);
            let err = (num - grads[i]).abs() / (1e-4 + num.abs().max(grads[i].abs()));
            worst = worst.max(err);
            assert!(
                err < 1e-3,
                "param {i}: numeric {num} vs analytic {}",
                grads[i]
            );
        }
        assert!(worst < 1e-3);
    }

    /// With dropout on, the gradient is that of the loss under the same (seeded) masks.
    #[test]
    fn dropout_gradient_matches_finite_differences() {
        let cfg = GptConfig {
            dropout: 0.3,
            ..cfg()
        };
        let mut model: Gpt<f64> = Gpt::init(cfg, 4).unwrap();
        let inputs = [1u32, 2, 3, 4, 5, 6];
        let targets = [2u32, 3, 4, 5, 6, 0];
        let mut tr = GptTrainer::new(&model, 1, 6);
        tr.zero_grad();
        let loss = tr.forward_backward(&model, &inputs, &targets, 9).unwrap() as f64;
        let clean = tr.forward_loss_f64(&model, &inputs, &targets).unwrap();
        assert!((loss - clean).abs() > 1e-6, "dropout changed nothing");
        let again = tr
            .loss_inner(&model, &inputs, &targets, Some((0.3, 9)))
            .unwrap();
        assert!((again - loss).abs() < 1e-6, "same seed, same masks");
        let zeros = tr.acts.drop_attn.iter().filter(|&&m| m == 0.0).count();
        let frac = zeros as f64 / tr.acts.drop_attn.len() as f64;
        assert!((frac - 0.3).abs() < 0.1, "dropped fraction {frac}");
        let grads = tr.grads().to_vec();
        let h = 1e-5;
        for i in (0..model.num_params()).step_by(7) {
            let x0 = model.params()[i];
            model.params_mut()[i] = x0 + h;
            let lp = tr
                .loss_inner(&model, &inputs, &targets, Some((0.3, 9)))
                .unwrap();
            model.params_mut()[i] = x0 - h;
            let lm = tr
                .loss_inner(&model, &inputs, &targets, Some((0.3, 9)))
                .unwrap();
            model.params_mut()[i] = x0;
            let num = (lp - lm) / (2.0 * h);
            let err = (num - grads[i]).abs() / (1e-4 + num.abs().max(grads[i].abs()));
            assert!(
                err < 1e-3,
                "param {i}: numeric {num} vs analytic {}",
                grads[i]
            );
        }
    }

    #[test]
    fn gradients_accumulate_and_bad_batches_are_refused() {
        let model = Gpt::new(cfg(), 1).unwrap();
        let mut tr = GptTrainer::new(&model, 1, 4);
        let x = [1u32, 2, 3, 4];
        let y = [2u32, 3, 4, 5];
        tr.zero_grad();
        tr.forward_backward(&model, &x, &y, 0).unwrap();
        let g1 = tr.grads().to_vec();
        tr.forward_backward(&model, &x, &y, 0).unwrap();
        for (a, b) in g1.iter().zip(tr.grads()) {
            assert!((2.0 * a - b).abs() <= 1e-6 * (1.0 + a.abs()));
        }
        assert!(tr.forward_loss(&model, &x[..3], &y[..3]).is_err());
        assert!(tr.forward_loss(&model, &[1, 2, 3, 7], &y).is_err());
        let l = tr.forward_loss(&model, &x, &y).unwrap();
        assert!(
            (l - (7f32).ln()).abs() < 0.1,
            "fresh model loss {l} should be near ln V"
        );
    }
}
