//! The training-time forward and backward passes over a fixed (B, T).
//!
//! `Acts` holds every activation the backward pass needs, per layer, allocated once.
//! The same forward code also serves inference with a single layer slot (activations of
//! layer l overwrite layer l-1's, since nothing will be differentiated).

use super::quant::{InferWeights, QMat};
use super::{layer, parts, Activation, Float, Gpt, GptConfig};
use crate::model::ModelError;
use crate::ops::float::{as_f32, as_f32_mut};
use crate::ops::{self, LN_BLOCKS};
use rayon::prelude::*;

mod backward;
use backward::{backward, transpose_layer, transpose_weights};

/// Activations for one (B, T). `slots` is L for training, 1 for inference.
pub(crate) struct Acts<F> {
    pub b: usize,
    pub t: usize,
    pub slots: usize,
    /// First row (b * T + t) of this batch inside the whole batch, and the whole batch's
    /// rows: a shard of a batch-split step draws its dropout masks as that part of the
    /// whole batch's masks (0 and B*T otherwise).
    pub row0: usize,
    pub rows_total: usize,
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
        // Huge pages: the logits alone are 206 MB at (1, 1024) for GPT-2, written once per
        // call; 4 KiB pages cost a fault each.
        let z = |len: usize| crate::huge_pages::zeroed_vec::<F>(len);
        Acts {
            b,
            t,
            slots,
            row0: 0,
            rows_total: n,
            encoded: z(n * c),
            ln1: z(slots * n * c),
            ln1_mean: z(slots * n),
            ln1_rstd: z(slots * n),
            qkv: z(slots * n * 3 * c),
            atty: z(slots * n * c),
            // Only the backward reads the probabilities (inference keeps one slot).
            att: if slots == cfg.n_layer {
                z(slots * b * nh * t * t)
            } else {
                Vec::new()
            },
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
/// index) so any thread count gives the same masks. `mask` holds blocks of `local` elements
/// that are the elements `offset..offset + local` of blocks of `global` elements of the
/// whole batch's mask (local = global, offset = 0 for an unsplit batch), so a shard of a
/// batch draws exactly its part of the whole batch's masks.
fn fill_dropout_mask<F: Float>(
    mask: &mut [F],
    p: f32,
    seed: u64,
    stream: u64,
    (local, global, offset): (usize, usize, usize),
) {
    let keep = F::from_f64(1.0 / (1.0 - p as f64));
    let thresh = (p as f64 * (1u64 << 53) as f64) as u64;
    mask.par_chunks_mut(1 << 14)
        .enumerate()
        .with_min_len(crate::ops::par::min_len())
        .for_each(|(ci, ch)| {
            for (i, m) in ch.iter_mut().enumerate() {
                let li = (ci << 14) + i;
                let idx = ((li / local) * global + offset + li % local) as u64;
                let z = crate::hash::mix64(
                    seed.wrapping_add(stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
                        .wrapping_add(idx.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                );
                *m = if (z >> 11) < thresh { F::ZERO } else { keep };
            }
        });
}

/// x *= mask elementwise.
fn apply_mask<F: Float>(x: &mut [F], mask: &[F]) {
    x.par_chunks_mut(1 << 14)
        .zip(mask.par_chunks(1 << 14))
        .with_min_len(crate::ops::par::min_len())
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
        .with_min_len(crate::ops::par::min_len())
        .for_each(|(o, (x, m))| {
            for ((a, &b), &c) in o.iter_mut().zip(x).zip(m) {
                *a = b * c;
            }
        });
}

/// A hook the inference forward calls with each layer's qkv (B=1), to fill a KV cache.
pub(crate) type QkvHook<'a, F> = &'a mut dyn FnMut(usize, &[F]);

/// out(N, OC) = inp(N, IC) @ W (+ bias): with the compact (out, in) matrix `q`, through its
/// format's GEMM where it has one ([`QMat::gemm`]: bf16, w8a8; f32 activations only), else
/// through gemm on the Conv1D (in, out) weights `w` of the parameter buffer.
#[allow(clippy::too_many_arguments)]
fn block_matmul<F: Float>(
    out: &mut [F],
    inp: &[F],
    w: &[F],
    q: Option<&QMat>,
    bias: Option<&[F]>,
    n: usize,
    ic: usize,
    oc: usize,
) {
    if let Some(q) = q {
        if let (Some(o), Some(i)) = (as_f32_mut(out), as_f32(inp)) {
            let b = bias.map(|b| as_f32(b).expect("f32 activations have f32 biases"));
            if q.gemm(o, i, b, n) {
                return;
            }
        }
    }
    ops::matmul_forward(out, inp, w, bias, n, ic, oc);
}

/// Forward pass up to the logits (acts.logits, (B,T,V)). With `compact` (inference only:
/// the decode step's 16-bit or w8a8 matrices, where the CPU has the instructions for their
/// GEMM), the block matmuls and the LM head run as that format's GEMM over those instead
/// of the parameter buffer.
pub(crate) fn forward<F: Float>(
    cfg: &GptConfig,
    params: &[F],
    acts: &mut Acts<F>,
    tokens: &[u32],
    mut hook: Option<QkvHook<'_, F>>,
    dropout: Option<(f32, u64)>,
    compact: Option<&InferWeights>,
) {
    let (b, t) = (acts.b, acts.t);
    let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
    let n = b * t;
    let p = parts(params, cfg);
    ops::encoder_forward(&mut acts.encoded, tokens, p.wte, p.wpe, t, c);
    let training = acts.slots == cfg.n_layer;
    // Dropout needs the per-layer masks only the trainer allocates.
    let dropout = dropout.filter(|&(p, _)| p > 0.0 && training && !acts.drop_emb.is_empty());
    if let Some((pd, seed)) = dropout {
        let blocks = (n * c, acts.rows_total * c, acts.row0 * c);
        fill_dropout_mask(&mut acts.drop_emb, pd, seed, 0, blocks);
        fill_dropout_mask(&mut acts.drop_attn, pd, seed, 1, blocks);
        fill_dropout_mask(&mut acts.drop_mlp, pd, seed, 2, blocks);
        apply_mask(&mut acts.encoded, &acts.drop_emb);
    }
    for l in 0..cfg.n_layer {
        let s = if training { l } else { 0 };
        let w = layer(p.layers, cfg, l);
        let mats = compact.map(|q| &q.layers[l]);
        let a = &mut *acts;
        let input: &[F] = if l == 0 || !training {
            &a.encoded
        } else {
            &a.res3[(l - 1) * n * c..l * n * c]
        };
        let ln1 = &mut a.ln1[s * n * c..(s + 1) * n * c];
        ops::layernorm_forward(
            ln1,
            &mut a.ln1_mean[s * n..(s + 1) * n],
            &mut a.ln1_rstd[s * n..(s + 1) * n],
            input,
            w.ln1_w,
            w.ln1_b,
            c,
        );
        let qkv = &mut a.qkv[s * n * 3 * c..(s + 1) * n * 3 * c];
        block_matmul(
            qkv,
            ln1,
            w.qkv_w,
            mats.map(|m| &m.qkv),
            Some(w.qkv_b),
            n,
            c,
            3 * c,
        );
        if let Some(h) = hook.as_mut() {
            h(l, qkv);
        }
        let atty = &mut a.atty[s * n * c..(s + 1) * n * c];
        if training {
            let att = &mut a.att[s * b * nh * t * t..(s + 1) * b * nh * t * t];
            ops::attention_forward(atty, att, qkv, b, t, c, nh);
        } else {
            ops::attention_forward_no_probs(atty, qkv, b, t, c, nh);
        }
        let res2 = &mut a.res2[s * n * c..(s + 1) * n * c];
        // Without dropout the projection biases are added in the residual pass.
        if dropout.is_some() {
            block_matmul(
                res2,
                atty,
                w.attn_proj_w,
                mats.map(|m| &m.attn_proj),
                Some(w.attn_proj_b),
                n,
                c,
                c,
            );
            apply_mask(res2, &a.drop_attn[l * n * c..(l + 1) * n * c]);
            ops::residual_add(res2, input);
        } else {
            block_matmul(
                res2,
                atty,
                w.attn_proj_w,
                mats.map(|m| &m.attn_proj),
                None,
                n,
                c,
                c,
            );
            ops::residual_bias_add(res2, input, w.attn_proj_b, c);
        }
        let ln2 = &mut a.ln2[s * n * c..(s + 1) * n * c];
        ops::layernorm_forward(
            ln2,
            &mut a.ln2_mean[s * n..(s + 1) * n],
            &mut a.ln2_rstd[s * n..(s + 1) * n],
            res2,
            w.ln2_w,
            w.ln2_b,
            c,
        );
        let fch = &mut a.fch[s * n * 4 * c..(s + 1) * n * 4 * c];
        block_matmul(fch, ln2, w.fc_w, mats.map(|m| &m.fc), None, n, c, 4 * c);
        let fch_gelu = &mut a.fch_gelu[s * n * 4 * c..(s + 1) * n * 4 * c];
        match (cfg.activation, training) {
            // fch keeps GELU'(x) where the CPU allows (gelu_keeps_derivative), else x
            (Activation::GeluTanh, true) => {
                ops::bias_gelu_forward_train(fch_gelu, fch, w.fc_b, 4 * c)
            }
            (Activation::GeluTanh, false) => ops::bias_gelu_forward(fch_gelu, fch, w.fc_b, 4 * c),
            // fch always keeps GELU'(x)
            (Activation::GeluExact, true) => {
                ops::bias_gelu_erf_forward_train(fch_gelu, fch, w.fc_b, 4 * c)
            }
            (Activation::GeluExact, false) => {
                ops::bias_gelu_erf_forward(fch_gelu, fch, w.fc_b, 4 * c)
            }
        }
        let res3 = &mut a.res3[s * n * c..(s + 1) * n * c];
        if dropout.is_some() {
            block_matmul(
                res3,
                fch_gelu,
                w.proj_w,
                mats.map(|m| &m.proj),
                Some(w.proj_b),
                n,
                4 * c,
                c,
            );
            apply_mask(res3, &a.drop_mlp[l * n * c..(l + 1) * n * c]);
            ops::residual_add(res3, res2);
        } else {
            block_matmul(
                res3,
                fch_gelu,
                w.proj_w,
                mats.map(|m| &m.proj),
                None,
                n,
                4 * c,
                c,
            );
            ops::residual_bias_add(res3, res2, w.proj_b, c);
        }
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
    ops::layernorm_forward(
        &mut acts.lnf,
        &mut acts.lnf_mean,
        &mut acts.lnf_rstd,
        last,
        p.lnf_w,
        p.lnf_b,
        c,
    );
    if acts.logits.is_empty() {
        // The caller wants only the hidden states (inference prefill computes the last
        // row's logits itself).
        return;
    }
    // logits(N,V) = lnf(N,C) @ wte^T(C,V)
    match compact {
        Some(q) => block_matmul(
            &mut acts.logits,
            &acts.lnf,
            p.wte,
            Some(&q.wte),
            None,
            n,
            c,
            v,
        ),
        None => ops::lm_head_forward(&mut acts.logits, &acts.lnf, p.wte, n, v, c),
    }
}

/// Backward-pass scratch gradients for one (B, T), allocated once.
struct Scratch<F> {
    dres: Vec<F>,
    dln: Vec<F>,
    dqkv: Vec<F>,
    datty: Vec<F>,
    datt: Vec<F>,
    dfch: Vec<F>,
    ln_scratch: Vec<F>,
    /// (N,C) scratch: a residual gradient times a dropout mask (empty without dropout).
    dtmp: Vec<F>,
}

impl<F: Float> Scratch<F> {
    fn new(cfg: &GptConfig, b: usize, t: usize) -> Scratch<F> {
        let (c, nh) = (cfg.n_embd, cfg.n_head);
        let n = b * t;
        let z = |len: usize| vec![F::ZERO; len];
        Scratch {
            dres: z(n * c),
            dln: z(n * c),
            dqkv: z(n * 3 * c),
            datty: z(n * c),
            datt: z(b * nh * t * t),
            dfch: z(n * 4 * c),
            ln_scratch: z(LN_BLOCKS * 2 * c),
            dtmp: if cfg.dropout > 0.0 {
                z(n * c)
            } else {
                Vec::new()
            },
        }
    }
}

/// Training activations for `b` sequences, with the dropout masks when the model has dropout.
fn training_acts<F: Float>(cfg: &GptConfig, b: usize, t: usize) -> Acts<F> {
    let n = b * t;
    let c = cfg.n_embd;
    let mut acts = Acts::new(cfg, b, t, cfg.n_layer);
    if cfg.dropout > 0.0 {
        acts.drop_emb = vec![F::ZERO; n * c];
        acts.drop_attn = vec![F::ZERO; cfg.n_layer * n * c];
        acts.drop_mlp = vec![F::ZERO; cfg.n_layer * n * c];
    }
    acts
}

/// One shard of a batch-split training step: sequences `b0..b0 + acts.b` of the batch,
/// with its own activations and scratch.
struct Shard<F> {
    b0: usize,
    acts: Acts<F>,
    scratch: Scratch<F>,
}

/// Number of shards of a batch-split step: fixed, not the thread count, so the result of a
/// step does not depend on how many threads run it.
pub const SPLIT_SHARDS: usize = 2;

/// Floats of training activations for (B, T): what a batch split leaves unchanged, against
/// which the extra gradient buffer it costs is weighed.
fn acts_floats(cfg: &GptConfig, b: usize, t: usize) -> usize {
    let (c, nh, v, l) = (cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.n_layer);
    let n = b * t;
    l * (16 * n * c + b * nh * t * t) + n * v + 2 * n * c
}

/// Activations and gradients for training at a fixed (B, T), allocated once and reused.
pub struct GptTrainer<F: Float = f32> {
    config: GptConfig,
    b: usize,
    t: usize,
    /// Whole-batch activations: always for an unsplit trainer; for a batch-split one only
    /// once [`GptTrainer::logits`] needs them (empty until then).
    acts: Acts<F>,
    /// Per-position losses of the last forward pass.
    losses: Vec<F>,
    grads: Vec<F>,
    scratch: Scratch<F>,
    /// Whether the last forward pass applied dropout.
    dropped: bool,
    /// Shards of a batch-split trainer (empty: not split).
    shards: Vec<Shard<F>>,
    /// Gradient buffers of shards 1.. (shard 0 accumulates straight into `grads`).
    shard_grads: Vec<Vec<F>>,
    /// Transposed block weights for the backward pass ([`transpose_weights`]).
    wt: Vec<F>,
    /// Parameter ranges a shard's backward only adds into (biases, LayerNorm, wpe): a
    /// shard buffer zeroes just these; the matrices' first write overwrites (`fresh`).
    add_only: Vec<std::ops::Range<usize>>,
}

impl<F: Float> GptTrainer<F> {
    /// Buffers for batches of `b` sequences of `t` tokens (t <= block_size).
    ///
    /// With b >= 2, and when one more gradient buffer costs no more than the activations
    /// (true for models A and B of the benchmark), the trainer is batch-split: the batch
    /// is cut into [`SPLIT_SHARDS`] fixed shards, each shard's forward and backward runs as
    /// one task with its own activations (GEMMs single-threaded when there are no more
    /// threads than shards, since the shards are then the parallelism), and the shards'
    /// gradients are added in shard order. This avoids a fork-join per kernel and the
    /// poor 2-thread scaling of `gemm` on (B*T x C) products. Otherwise, one shard with
    /// intra-op parallelism.
    pub fn new(model: &Gpt<F>, b: usize, t: usize) -> GptTrainer<F> {
        let cfg = model.config;
        let shards = if b >= 2 && model.num_params() <= acts_floats(&cfg, b, t) {
            SPLIT_SHARDS
        } else {
            1
        };
        Self::with_shards(model, b, t, shards)
    }

    /// [`GptTrainer::new`] with an explicit number of batch shards (1 = not split; capped
    /// at `b`). For any shard count the result does not depend on the thread count
    /// (`gemm` gives the same bits serial or parallel); shard counts differ by float
    /// rounding only.
    pub fn with_shards(model: &Gpt<F>, b: usize, t: usize, shards: usize) -> GptTrainer<F> {
        let cfg = model.config;
        let shards = shards.clamp(1, b.max(1));
        let mut split = Vec::new();
        if shards > 1 {
            let mut b0 = 0;
            for i in 0..shards {
                let bs = b / shards + usize::from(i < b % shards);
                let mut acts = training_acts(&cfg, bs, t);
                acts.row0 = b0 * t;
                acts.rows_total = b * t;
                split.push(Shard {
                    b0,
                    acts,
                    scratch: Scratch::new(&cfg, bs, t),
                });
                b0 += bs;
            }
        }
        let shard_grads = (1..split.len())
            .map(|_| vec![F::ZERO; model.num_params()])
            .collect();
        let (acts, scratch) = if split.is_empty() {
            (training_acts(&cfg, b, t), Scratch::new(&cfg, b, t))
        } else {
            (Acts::new(&cfg, 0, 0, 0), Scratch::new(&cfg, 0, 0))
        };
        GptTrainer {
            config: cfg,
            b,
            t,
            acts,
            losses: vec![F::ZERO; b * t],
            grads: vec![F::ZERO; model.num_params()],
            scratch,
            dropped: false,
            shards: split,
            shard_grads,
            wt: vec![F::ZERO; cfg.n_layer * 12 * cfg.n_embd * cfg.n_embd],
            add_only: cfg
                .tensors()
                .into_iter()
                .filter(|t| t.shape.len() != 2 || t.name == "wpe.weight")
                .map(|t| t.offset..t.offset + t.len)
                .collect(),
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

    /// Number of batch shards (1: not split).
    pub fn shards(&self) -> usize {
        self.shards.len().max(1)
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
        &self.losses
    }

    /// Unsplit trainer: after a loss, the softmax probabilities (B,T,V); after
    /// [`GptTrainer::forward_backward`], dlogits. A batch-split trainer keeps these per
    /// shard and returns what its last [`GptTrainer::logits`] call left (or nothing).
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
        if self.acts.b != self.b {
            // A batch-split trainer allocates whole-batch activations only when asked.
            self.acts = Acts::new(&self.config, self.b, self.t, self.config.n_layer);
        }
        forward(
            &self.config,
            model.params(),
            &mut self.acts,
            inputs,
            None,
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
        self.loss_grad(model, inputs, targets, dropout, None)
    }

    /// [`GptTrainer::loss_inner`]; with `grad_scale`, the logits become dlogits of the
    /// loss times `grad_scale` (the fused training kernel) instead of probabilities.
    /// (A batch-split training step does not come here: `forward_backward_split` runs
    /// the shards' forwards inside its own parallel region.)
    fn loss_grad(
        &mut self,
        model: &Gpt<F>,
        inputs: &[u32],
        targets: &[u32],
        dropout: Option<(f32, u64)>,
        grad_scale: Option<F>,
    ) -> Result<f64, ModelError> {
        self.check(model, inputs, targets)?;
        let cfg = self.config;
        let v = cfg.vocab_size;
        let dropout = dropout.filter(|&(p, _)| p > 0.0);
        let params = model.params();
        let loss = if self.shards.is_empty() {
            let a = &mut self.acts;
            forward(&cfg, params, a, inputs, None, dropout, None);
            self.dropped = dropout.is_some() && !a.drop_emb.is_empty();
            let loss = match grad_scale {
                None => ops::softmax_ce_forward(&mut a.logits, &mut a.losses, targets, v),
                Some(scale) => ops::softmax_ce_forward_backward(
                    &mut a.logits,
                    &mut a.losses,
                    targets,
                    v,
                    scale,
                ),
            };
            self.losses.copy_from_slice(&a.losses);
            loss
        } else {
            let t = self.t;
            let serial = rayon::current_num_threads() <= self.shards.len();
            self.shards.par_iter_mut().for_each(|sh| {
                let r = sh.b0 * t..(sh.b0 + sh.acts.b) * t;
                let a = &mut sh.acts;
                in_shard(serial, || {
                    forward(&cfg, params, a, &inputs[r.clone()], None, dropout, None);
                    match grad_scale {
                        None => {
                            ops::softmax_ce_forward(&mut a.logits, &mut a.losses, &targets[r], v);
                        }
                        Some(scale) => {
                            ops::softmax_ce_forward_backward(
                                &mut a.logits,
                                &mut a.losses,
                                &targets[r],
                                v,
                                scale,
                            );
                        }
                    }
                })
            });
            self.dropped = dropout.is_some() && !self.shards[0].acts.drop_emb.is_empty();
            gather_shard_losses(&self.shards, &mut self.losses, t)
        };
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
        let dropout = Some((model.config.dropout, seed));
        let scale = F::ONE / F::from_usize(self.b * self.t);
        if !self.shards.is_empty() {
            return self.forward_backward_split(model, inputs, targets, dropout, scale);
        }
        let loss = self.loss_grad(model, inputs, targets, dropout, Some(scale))? as f32;
        transpose_weights(&mut self.wt, model.params(), &self.config);
        backward(
            &self.config,
            model.params(),
            &self.wt,
            &mut self.acts,
            &mut self.scratch,
            &mut self.grads,
            inputs,
            self.dropped,
            false,
        );
        Ok(loss)
    }
}

impl<F: Float> GptTrainer<F> {
    /// [`GptTrainer::forward_backward`] of a batch-split trainer as ONE parallel region
    /// ([`super::team`]): phase 1, shard i's share of the weight transposes (layers i,
    /// i + shards, ...), its forward and fused softmax + cross-entropy + gradient; the loss
    /// (caller); phase 2, shard i's backward into its gradient buffer (shard 0: `grads`,
    /// adding; the others: their own buffers, matrices overwritten, add-only ranges
    /// zeroed); phase 3, the merge in 16K-element chunks, shard buffers added in shard
    /// order. As separate rayon fork-joins (forward, backward, merge) each phase paid a
    /// wake-up of the sleeping worker, ~0.6 ms per region on this VM (phase timing of
    /// model A: region wall minus the slower shard's busy time). Every chunk's work
    /// depends only on its index, so the bits are those of the fork-join version, for
    /// any thread count.
    fn forward_backward_split(
        &mut self,
        model: &Gpt<F>,
        inputs: &[u32],
        targets: &[u32],
        dropout: Option<(f32, u64)>,
        scale: F,
    ) -> Result<f32, ModelError> {
        self.check(model, inputs, targets)?;
        let cfg = self.config;
        let (t, v, c) = (self.t, cfg.vocab_size, cfg.n_embd);
        let dropout = dropout.filter(|&(p, _)| p > 0.0);
        let params = model.params();
        let ns = self.shards.len();
        let serial = rayon::current_num_threads() <= ns;
        let per_layer = 12 * c * c;
        let n_layer = cfg.n_layer;
        let np = self.grads.len();
        let shards_p = ops::SyncPtr(self.shards.as_mut_ptr());
        let wt_p = ops::SyncPtr(self.wt.as_mut_ptr());
        let wt_len = self.wt.len();
        let mut gbufs = vec![ops::SyncPtr(self.grads.as_mut_ptr())];
        for g in self.shard_grads.iter_mut() {
            gbufs.push(ops::SyncPtr(g.as_mut_ptr()));
        }
        let add_only = &self.add_only;
        let losses = &mut self.losses;
        let mut dropped = false;
        let parallel = rayon::current_num_threads() > 1;
        let loss = crate::ops::team::with_team(parallel, |team| {
            // SAFETY (all three phases): chunk i of a phase touches only shard i, its
            // layers' part of wt and its gradient buffer (phases 1, 2), or elements
            // [ci * CH, ..) of every gradient buffer (phase 3); each chunk index runs
            // once, and a phase starts after the previous one has completed, so phase 2
            // may read all of wt and phase 3 all shard buffers.
            team.run(ns, &|i| {
                let sh = unsafe { &mut *shards_p.ptr().add(i) };
                let r = sh.b0 * t..(sh.b0 + sh.acts.b) * t;
                in_shard(serial, || {
                    for l in (i..n_layer).step_by(ns) {
                        let w = unsafe {
                            std::slice::from_raw_parts_mut(wt_p.get().add(l * per_layer), per_layer)
                        };
                        transpose_layer(w, params, &cfg, l);
                    }
                    let a = &mut sh.acts;
                    forward(&cfg, params, a, &inputs[r.clone()], None, dropout, None);
                    ops::softmax_ce_forward_backward(
                        &mut a.logits,
                        &mut a.losses,
                        &targets[r],
                        v,
                        scale,
                    );
                });
            });
            let shards = unsafe { std::slice::from_raw_parts(shards_p.ptr(), ns) };
            dropped = dropout.is_some() && !shards[0].acts.drop_emb.is_empty();
            let loss = gather_shard_losses(shards, losses, t);
            if !loss.is_finite() {
                return Err(ModelError::NonFinite(format!("loss {loss}")));
            }
            let wt = unsafe { std::slice::from_raw_parts(wt_p.get() as *const F, wt_len) };
            team.run(ns, &|i| {
                let sh = unsafe { &mut *shards_p.ptr().add(i) };
                let g = unsafe { std::slice::from_raw_parts_mut(gbufs[i].get(), np) };
                let fresh = i > 0;
                if fresh {
                    for rg in add_only {
                        g[rg.clone()].fill(F::ZERO);
                    }
                }
                let r = sh.b0 * t..(sh.b0 + sh.acts.b) * t;
                in_shard(serial, || {
                    backward(
                        &cfg,
                        params,
                        wt,
                        &mut sh.acts,
                        &mut sh.scratch,
                        g,
                        &inputs[r],
                        dropped,
                        fresh,
                    )
                });
            });
            // SAFETY: every buffer is `np` long; the backward phase is over.
            unsafe { crate::ops::team::add_into_first(team, &gbufs, np) };
            Ok(loss)
        })?;
        self.dropped = dropped;
        Ok(loss as f32)
    }
}

/// Copies each shard's per-position losses into `losses` (B*T, row order) and returns
/// their mean, summed in row order as the unsplit pass does.
fn gather_shard_losses<F: Float>(shards: &[Shard<F>], losses: &mut [F], t: usize) -> f64 {
    let mut sum = 0f64;
    let mut rows = 0;
    for sh in shards {
        losses[sh.b0 * t..(sh.b0 + sh.acts.b) * t].copy_from_slice(&sh.acts.losses);
        for &l in &sh.acts.losses {
            sum += l.to_f64();
        }
        rows += sh.acts.b * t;
    }
    sum / rows as f64
}

/// Runs one shard's work, with single-threaded GEMMs when `serial`.
fn in_shard<R>(serial: bool, f: impl FnOnce() -> R) -> R {
    if serial {
        ops::with_serial_gemm(f)
    } else {
        f()
    }
}

#[cfg(test)]
mod tests;
