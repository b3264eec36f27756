//! The sequence forward and backward through time for a (B, T) batch.
//!
//! Activations are time-major, (T, B, ·), so one step's rows are contiguous. Per layer:
//!
//! 1. `xg` (T*B, G*H) = X W_ih^T + biases: one GEMM for all T steps;
//! 2. for t in 0..T: `hg` (B, G*H) = h_{t-1} W_hh^T (+ b_hh for the GRU), then the cell's
//!    element-wise step ([`super::cell`]);
//!
//! and the decoder is one GEMM over all T*B rows, then the shared fused softmax +
//! cross-entropy. The backward mirrors it: only dh_{t-1} += dhg_t W_hh is sequential;
//! dW_ih, dW_hh, the biases and the gradient of the layer input are one GEMM (or column
//! sum) each over all steps once the loop is done. h is kept with one extra slot in front,
//! ((T+1), B, H), slot 0 being the carried-in state, so h_{t-1} for all t is one matrix.
//!
//! The state carried between batches (truncated BPTT) is `state`: per layer h (B, H) then,
//! for the LSTM, c (B, H). The backward stops at it (detached), but leaves its gradient in
//! [`Workspace::dstate`] so tests can check the chain through a carried state.

use super::cell::{act_width, step_backward, step_forward};
use super::{
    gemm_strided, softmax_ce_forward, softmax_ce_forward_backward, CellKind, Float, RnnConfig,
};
use crate::model::ModelError;

/// Activations of one layer for (B, T).
struct LayerActs<F> {
    /// (T*B, in): this layer's input after dropout (layers >= 1, only with dropout).
    dropped: Vec<F>,
    /// (T*B, in): the dropout mask of the input, 0 or 1/(1-p) (only with dropout).
    mask: Vec<F>,
    /// (T*B, G*H) input pre-activations.
    xg: Vec<F>,
    /// (T*B, act_width) what the cell's backward needs.
    act: Vec<F>,
    /// ((T+1)*B, H): slot 0 is the carried-in h.
    h: Vec<F>,
    /// ((T+1)*B, H): LSTM cell states, slot 0 carried in.
    c: Vec<F>,
    /// (T*B, G*H) gradients of the input pre-activations (training).
    dxg: Vec<F>,
    /// (T*B, G*H) gradients of the hidden pre-activations (GRU training).
    dhg: Vec<F>,
}

/// Everything sized by (B, T), allocated once.
pub struct Workspace<F> {
    pub b: usize,
    pub t: usize,
    /// Where these B rows sit in a batch of `b_total` rows split into shards
    /// ([`super::split`]): the first row's index `b0`. The dropout masks and the loss scale
    /// are those of the whole batch, so a shard computes its part of the unsplit step.
    b0: usize,
    b_total: usize,
    train: bool,
    /// (T*B) time-major input and target ids.
    tokens: Vec<u32>,
    targets: Vec<u32>,
    /// (T*B, E) embedding rows (times the dropout mask, which layer 0's `mask` holds).
    emb: Vec<F>,
    layers: Vec<LayerActs<F>>,
    /// (T*B, H) decoder input after dropout, and its mask (only with dropout).
    dec_in: Vec<F>,
    dec_mask: Vec<F>,
    /// (T*B, V) logits; after [`loss_backward`] the gradient of the logits.
    pub logits: Vec<F>,
    losses: Vec<F>,
    /// (B, G*H) the step's hidden pre-activations.
    hg: Vec<F>,
    /// (H, G*H) the current layer's W_hh^T, row-major (only when T > 1: see
    /// [`forward`]).
    whh_t: Vec<F>,
    /// (G*H, Hp) the current layer's W_hh with its rows padded to Hp, H rounded up to a
    /// multiple of 16, and (B, Hp) the product dhg_t W_hh in that width (training, only
    /// when H is not already a multiple of 16: see [`loss_backward_with`]).
    whh_pad: Vec<F>,
    dh_pad: Vec<F>,
    /// Backward scratch: (T*B, H) gradient of the current layer's output, (T*B, E) of the
    /// embedding rows, (B, H) x 3 running dh, dc, and the cell's direct dh_prev.
    dtop: Vec<F>,
    demb: Vec<F>,
    dh: Vec<F>,
    dc: Vec<F>,
    dhp: Vec<F>,
    /// Gradient of the loss with respect to the carried-in state (same layout as `state`).
    pub dstate: Vec<F>,
    /// Whether the last forward applied dropout.
    dropped: bool,
}

impl<F: Float> Workspace<F> {
    /// Buffers for batches of `b` sequences of `t` steps; `train` adds the backward's.
    pub fn new(cfg: &RnnConfig, b: usize, t: usize, train: bool) -> Workspace<F> {
        let (h, n, gw) = (cfg.hidden, b * t, cfg.gate_width());
        let drop = train && cfg.dropout > 0.0;
        let z = |len: usize| vec![F::ZERO; len];
        let layers = (0..cfg.n_layer)
            .map(|l| {
                let input = cfg.layer_input(l);
                LayerActs {
                    dropped: z(if drop && l > 0 { n * input } else { 0 }),
                    mask: z(if drop { n * input } else { 0 }),
                    xg: z(n * gw),
                    act: z(n * act_width(cfg.kind, h)),
                    h: z((t + 1) * b * h),
                    c: z(if cfg.kind.has_cell() {
                        (t + 1) * b * h
                    } else {
                        0
                    }),
                    dxg: z(if train { n * gw } else { 0 }),
                    dhg: z(if train && cfg.kind == CellKind::Gru {
                        n * gw
                    } else {
                        0
                    }),
                }
            })
            .collect();
        Workspace {
            b,
            t,
            b0: 0,
            b_total: b,
            train,
            tokens: vec![0; n],
            targets: vec![0; n],
            emb: z(n * cfg.embd),
            layers,
            dec_in: z(if drop { n * h } else { 0 }),
            dec_mask: z(if drop { n * h } else { 0 }),
            logits: z(n * cfg.vocab_size),
            losses: z(n),
            hg: z(b * gw),
            whh_t: z(if t > 1 { h * gw } else { 0 }),
            whh_pad: z(if train && h != padded(h) {
                gw * padded(h)
            } else {
                0
            }),
            dh_pad: z(if train && h != padded(h) {
                b * padded(h)
            } else {
                0
            }),
            dtop: z(if train { n * h } else { 0 }),
            demb: z(if train { n * cfg.embd } else { 0 }),
            dh: z(b * h),
            dc: z(b * h),
            dhp: z(b * h),
            dstate: z(if train { b * cfg.state_size() } else { 0 }),
            dropped: false,
        }
    }

    /// A training workspace for rows `b0..b0 + b` of a (`b_total`, `t`) batch.
    pub fn shard(cfg: &RnnConfig, b0: usize, b: usize, b_total: usize, t: usize) -> Workspace<F> {
        assert!(
            b0 + b <= b_total,
            "shard rows {b0}..{} beyond B = {b_total}",
            b0 + b
        );
        Workspace {
            b0,
            b_total,
            ..Workspace::new(cfg, b, t, true)
        }
    }

    /// Copies the state after the last step into `state` (layout of [`forward`]'s).
    pub fn final_state(&self, cfg: &RnnConfig, state: &mut [F]) {
        let bh = self.b * cfg.hidden;
        let mut o = 0;
        for la in &self.layers {
            state[o..o + bh].copy_from_slice(&la.h[self.t * bh..][..bh]);
            o += bh;
            if cfg.kind.has_cell() {
                state[o..o + bh].copy_from_slice(&la.c[self.t * bh..][..bh]);
                o += bh;
            }
        }
    }

    /// The decoder input (T*B, H): the top layer's outputs, after dropout if applied.
    fn top(&self) -> &[F] {
        if self.dropped {
            &self.dec_in
        } else {
            let bh = self.layers[0].h.len() / (self.t + 1);
            &self.layers.last().expect("n_layer >= 1").h[bh..]
        }
    }
}

/// `h` rounded up to a multiple of 16, the f32 lanes of an AVX-512 register.
fn padded(h: usize) -> usize {
    h.div_ceil(16) * 16
}

/// Fills the (T*B, `width`) time-major `mask` with 0 (probability p) or 1/(1-p) from
/// (seed, site, index) by SplitMix64, where index is the element's place in the whole
/// batch's (T*B_total, width) mask: a shard draws the same mask values as the unsplit step.
fn fill_mask<F: Float>(
    mask: &mut [F],
    width: usize,
    p: f32,
    (seed, site): (u64, u64),
    ws_rows: (usize, usize, usize),
) {
    let (b, b0, b_total) = ws_rows;
    for (r, row) in mask.chunks_exact_mut(width).enumerate() {
        let global = (r / b) * b_total + b0 + r % b;
        fill_mask_row(row, global * width, p, seed, site);
    }
}

fn fill_mask_row<F: Float>(row: &mut [F], first: usize, p: f32, seed: u64, site: u64) {
    let keep = F::from_f64(1.0 / (1.0 - p as f64));
    let thresh = (p as f64 * (1u64 << 53) as f64) as u64;
    for (j, m) in row.iter_mut().enumerate() {
        let i = first + j;
        let z = crate::hash::mix64(
            seed.wrapping_add(site.wrapping_mul(0xD1B5_4A32_D192_ED03))
                .wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        *m = if (z >> 11) < thresh { F::ZERO } else { keep };
    }
}

fn mul_in_place<F: Float>(x: &mut [F], m: &[F]) {
    for (a, &b) in x.iter_mut().zip(m) {
        *a *= b;
    }
}

/// Fills every `width`-row of `dst` with `bias` (+ `bias2` when given).
fn fill_rows<F: Float>(dst: &mut [F], bias: &[F], bias2: Option<&[F]>) {
    let w = bias.len();
    for row in dst.chunks_exact_mut(w) {
        row.copy_from_slice(bias);
        if let Some(b2) = bias2 {
            for (a, &b) in row.iter_mut().zip(b2) {
                *a += b;
            }
        }
    }
}

/// db(w) += column sums of d(n, w).
fn col_sums<F: Float>(db: &mut [F], d: &[F]) {
    for row in d.chunks_exact(db.len()) {
        for (a, &b) in db.iter_mut().zip(row) {
            *a += b;
        }
    }
}

/// Forward pass: `inputs` (B, T) row-major ids, `state` (B * state_size, layout above)
/// the carried-in state; fills the workspace up to the logits. With `dropout = (p, seed)`
/// (and a training workspace) masks the non-recurrent connections.
pub fn forward<F: Float>(
    cfg: &RnnConfig,
    params: &[F],
    ws: &mut Workspace<F>,
    inputs: &[u32],
    state: &[F],
    dropout: Option<(f32, u64)>,
) -> Result<(), ModelError> {
    let (b, t, h, e, v) = (ws.b, ws.t, cfg.hidden, cfg.embd, cfg.vocab_size);
    let (n, gw, bh) = (b * t, cfg.gate_width(), b * cfg.hidden);
    assert_eq!(inputs.len(), n, "inputs are (B, T)");
    assert_eq!(
        state.len(),
        b * cfg.state_size(),
        "state is (B, state_size)"
    );
    let dropout = dropout.filter(|&(p, _)| p > 0.0 && ws.train && cfg.dropout > 0.0);
    ws.dropped = dropout.is_some();
    let rows = (b, ws.b0, ws.b_total);
    // Embedding, time-major.
    for bi in 0..b {
        for ti in 0..t {
            let tok = inputs[bi * t + ti];
            crate::model::check_token(tok, v)?;
            ws.tokens[ti * b + bi] = tok;
            let row = &params[tok as usize * e..][..e];
            ws.emb[(ti * b + bi) * e..][..e].copy_from_slice(row);
        }
    }
    if let Some((p, seed)) = dropout {
        fill_mask(&mut ws.layers[0].mask, e, p, (seed, 0), rows);
        mul_in_place(&mut ws.emb, &ws.layers[0].mask);
    }
    let mut so = 0;
    for l in 0..cfg.n_layer {
        let o = cfg.layer(l);
        let input = o.input;
        let (below, rest) = ws.layers.split_at_mut(l);
        let la = &mut rest[0];
        // This layer's input (T*B, in).
        let x: &[F] = if l == 0 {
            &ws.emb
        } else if let Some((p, seed)) = dropout {
            fill_mask(&mut la.mask, input, p, (seed, l as u64), rows);
            la.dropped.copy_from_slice(&below[l - 1].h[bh..]);
            mul_in_place(&mut la.dropped, &la.mask);
            &la.dropped
        } else {
            &below[l - 1].h[bh..]
        };
        let b_ih = &params[o.b_ih..][..gw];
        let b_hh = &params[o.b_hh..][..gw];
        let gru = cfg.kind == CellKind::Gru;
        fill_rows(&mut la.xg, b_ih, if gru { None } else { Some(b_hh) });
        // xg(N, G*H) += x(N, in) @ W_ih^T; W_ih^T(i, g) = W_ih[g * in + i].
        gemm_strided(
            n,
            gw,
            input,
            &mut la.xg,
            gw,
            true,
            x,
            input,
            1,
            &params[o.w_ih..],
            1,
            input,
        );
        la.h[..bh].copy_from_slice(&state[so..so + bh]);
        so += bh;
        if cfg.kind.has_cell() {
            la.c[..bh].copy_from_slice(&state[so..so + bh]);
            so += bh;
        }
        let aw = act_width(cfg.kind, h);
        let w_hh = &params[o.w_hh..][..gw * h];
        // h_prev @ W_hh^T reads W_hh (G*H, H) down its columns; `gemm` repacks such a view
        // at every step, so for T > 1 a row-major copy of W_hh^T pays for itself.
        let (w, w_rs, w_cs) = if ws.whh_t.is_empty() {
            (w_hh, 1, h)
        } else {
            crate::ops::transpose(&mut ws.whh_t, w_hh, gw, h);
            (&ws.whh_t[..], gw, 1)
        };
        for ti in 0..t {
            if gru {
                fill_rows(&mut ws.hg, b_hh, None);
            }
            let (hp, hn) = la.h.split_at_mut((ti + 1) * bh);
            let h_prev = &hp[ti * bh..];
            gemm_strided(b, gw, h, &mut ws.hg, gw, gru, h_prev, h, 1, w, w_rs, w_cs);
            let (c_prev, c_out): (&[F], &mut [F]) = if cfg.kind.has_cell() {
                let (cp, cn) = la.c.split_at_mut((ti + 1) * bh);
                (&cp[ti * bh..], &mut cn[..bh])
            } else {
                (&[], &mut [])
            };
            step_forward(
                cfg.kind,
                h,
                &la.xg[ti * b * gw..][..b * gw],
                &ws.hg,
                h_prev,
                c_prev,
                &mut la.act[ti * b * aw..][..b * aw],
                &mut hn[..bh],
                c_out,
            );
        }
    }
    if let Some((p, seed)) = dropout {
        fill_mask(&mut ws.dec_mask, h, p, (seed, cfg.n_layer as u64), rows);
        ws.dec_in
            .copy_from_slice(&ws.layers[cfg.n_layer - 1].h[bh..]);
        mul_in_place(&mut ws.dec_in, &ws.dec_mask);
    }
    // logits(N, V) = top(N, H) @ dec_w^T + dec_b; dec_w is (V, H).
    let (dw, db) = cfg.decoder();
    let mut logits = std::mem::take(&mut ws.logits);
    fill_rows(&mut logits, &params[db..][..v], None);
    gemm_strided(
        n,
        v,
        h,
        &mut logits,
        v,
        true,
        ws.top(),
        h,
        1,
        &params[dw..],
        1,
        h,
    );
    ws.logits = logits;
    Ok(())
}

/// Mean cross-entropy (nats) of the logits of the last [`forward`] against `targets`
/// (B, T), without gradients. The logits become probabilities.
pub fn loss<F: Float>(ws: &mut Workspace<F>, targets: &[u32], v: usize) -> f64 {
    set_targets(ws, targets);
    softmax_ce_forward(&mut ws.logits, &mut ws.losses, &ws.targets, v)
}

fn set_targets<F>(ws: &mut Workspace<F>, targets: &[u32]) {
    let (b, t) = (ws.b, ws.t);
    assert_eq!(targets.len(), b * t, "targets are (B, T)");
    for bi in 0..b {
        for ti in 0..t {
            ws.targets[ti * b + bi] = targets[bi * t + ti];
        }
    }
}

/// Mean cross-entropy of the last [`forward`] against `targets` (B, T), and its backward:
/// ADDS the gradient into `grads` (same layout as `params`) and leaves the gradient of
/// the carried-in state in `ws.dstate`. The mean is over this workspace's rows; the
/// gradient is scaled by the whole batch's row count ([`Workspace::shard`]).
pub fn loss_backward<F: Float>(
    cfg: &RnnConfig,
    params: &[F],
    grads: &mut [F],
    ws: &mut Workspace<F>,
    targets: &[u32],
) -> Result<f64, ModelError> {
    loss_backward_with(cfg, params, grads, ws, targets, false)
}

/// [`loss_backward`], or with `overwrite` the same gradient WRITTEN over whatever `grads`
/// holds (bit-identical to adding into zeros): every weight matrix's product overwrites
/// instead of adding, the biases and the untied embedding are zeroed first. This saves
/// zeroing the whole buffer before a step (a memset of the parameters' size, ~80 MB at
/// the medium PTB shape) for a shard's own buffer and for a freshly zeroed one.
///
/// Long (~190 lines) on purpose: it mirrors [`forward`] step by step in reverse (decoder,
/// then each layer's backward through time, its weight gradients and the gradient into
/// the layer below, then the embedding scatter), reading one set of workspace buffers;
/// kept as one function so the pair can be read side by side against PyTorch's order.
pub fn loss_backward_with<F: Float>(
    cfg: &RnnConfig,
    params: &[F],
    grads: &mut [F],
    ws: &mut Workspace<F>,
    targets: &[u32],
    overwrite: bool,
) -> Result<f64, ModelError> {
    assert!(ws.train, "loss_backward needs a training workspace");
    let acc = !overwrite;
    let (b, t, h, e, v) = (ws.b, ws.t, cfg.hidden, cfg.embd, cfg.vocab_size);
    let (n, gw, bh) = (b * t, cfg.gate_width(), b * h);
    for &y in targets {
        crate::model::check_token(y, v)?;
    }
    set_targets(ws, targets);
    // The whole batch's mean: a shard's gradients add up to the unsplit step's.
    let scale = F::from_f64(1.0 / (ws.b_total * t) as f64);
    let mean = softmax_ce_forward_backward(&mut ws.logits, &mut ws.losses, &ws.targets, v, scale);
    // Decoder: dtop(N, H) = dlogits @ dec_w; d dec_w(V, H) += dlogits^T @ top; d dec_b.
    let (dw, db) = cfg.decoder();
    let dl = &ws.logits;
    gemm_strided(
        n,
        h,
        v,
        &mut ws.dtop,
        h,
        false,
        dl,
        v,
        1,
        &params[dw..],
        h,
        1,
    );
    let top = if ws.dropped {
        &ws.dec_in
    } else {
        &ws.layers[cfg.n_layer - 1].h[bh..]
    };
    gemm_strided(v, h, n, &mut grads[dw..], h, acc, dl, 1, v, top, h, 1);
    if overwrite {
        grads[db..db + v].fill(F::ZERO);
        if !cfg.tied {
            // The embedding's rows are only scattered into (below).
            grads[..v * e].fill(F::ZERO);
        }
        for l in 0..cfg.n_layer {
            let o = cfg.layer(l);
            grads[o.b_ih..o.b_ih + gw].fill(F::ZERO);
            grads[o.b_hh..o.b_hh + gw].fill(F::ZERO);
        }
    }
    col_sums(&mut grads[db..db + v], dl);
    if ws.dropped {
        mul_in_place(&mut ws.dtop, &ws.dec_mask);
    }
    let aw = act_width(cfg.kind, h);
    let per = if cfg.kind.has_cell() { 2 } else { 1 };
    for l in (0..cfg.n_layer).rev() {
        let o = cfg.layer(l);
        let input = o.input;
        let (below, rest) = ws.layers.split_at_mut(l);
        let la = &mut rest[0];
        let w_hh = &params[o.w_hh..][..gw * h];
        // dh_{t-1} += dhg_t W_hh is (B, G*H) @ (G*H, H), H wide. `gemm` computes it as the
        // transpose, H rows, and repacks all of W_hh at every step unless H is a multiple of
        // its 16-float register: 67 GFLOP/s instead of 107 at the medium shape (B 10, H
        // 650). So W_hh is copied once per layer into rows padded with zeros to Hp and the
        // product computed Hp wide.
        let hp = padded(h);
        if !ws.whh_pad.is_empty() {
            for (dst, src) in ws.whh_pad.chunks_exact_mut(hp).zip(w_hh.chunks_exact(h)) {
                dst[..h].copy_from_slice(src);
            }
        }
        ws.dh.fill(F::ZERO);
        ws.dc.fill(F::ZERO);
        let gru = cfg.kind == CellKind::Gru;
        for ti in (0..t).rev() {
            for (d, &g) in ws.dh.iter_mut().zip(&ws.dtop[ti * bh..][..bh]) {
                *d += g;
            }
            let c_prev: &[F] = if cfg.kind.has_cell() {
                &la.c[ti * bh..][..bh]
            } else {
                &[]
            };
            let dhg: &mut [F] = if gru {
                &mut la.dhg[ti * b * gw..][..b * gw]
            } else {
                &mut []
            };
            step_backward(
                cfg.kind,
                h,
                &la.act[ti * b * aw..][..b * aw],
                &la.h[(ti + 1) * bh..][..bh],
                &la.h[ti * bh..][..bh],
                c_prev,
                &ws.dh,
                &mut ws.dc,
                &mut la.dxg[ti * b * gw..][..b * gw],
                dhg,
                &mut ws.dhp,
            );
            // dh_prev = direct part + dhg_t(B, G*H) @ W_hh(G*H, H).
            let dhg_t = &(if gru { &la.dhg } else { &la.dxg })[ti * b * gw..];
            if ws.whh_pad.is_empty() {
                ws.dh.copy_from_slice(&ws.dhp);
                gemm_strided(b, h, gw, &mut ws.dh, h, true, dhg_t, gw, 1, w_hh, h, 1);
            } else {
                let w = &ws.whh_pad;
                gemm_strided(b, hp, gw, &mut ws.dh_pad, hp, false, dhg_t, gw, 1, w, hp, 1);
                for ((d, direct), prod) in ws
                    .dh
                    .chunks_exact_mut(h)
                    .zip(ws.dhp.chunks_exact(h))
                    .zip(ws.dh_pad.chunks_exact(hp))
                {
                    for ((d, &a), &p) in d.iter_mut().zip(direct).zip(&prod[..h]) {
                        *d = a + p;
                    }
                }
            }
        }
        // The carried-in state's gradient (detached in training; kept for the checks).
        let so = l * per * bh;
        ws.dstate[so..so + bh].copy_from_slice(&ws.dh);
        if cfg.kind.has_cell() {
            ws.dstate[so + bh..so + 2 * bh].copy_from_slice(&ws.dc);
        }
        let dhg_all = if gru { &la.dhg } else { &la.dxg };
        // dW_hh(G*H, H) += dhg^T @ h_prev (slots 0..T); d b_hh.
        gemm_strided(
            gw,
            h,
            n,
            &mut grads[o.w_hh..],
            h,
            acc,
            dhg_all,
            1,
            gw,
            &la.h,
            h,
            1,
        );
        col_sums(&mut grads[o.b_hh..o.b_hh + gw], dhg_all);
        // dW_ih(G*H, in) += dxg^T @ x; d b_ih.
        let x: &[F] = if l == 0 {
            &ws.emb
        } else if ws.dropped {
            &la.dropped
        } else {
            &below[l - 1].h[bh..]
        };
        gemm_strided(
            gw,
            input,
            n,
            &mut grads[o.w_ih..],
            input,
            acc,
            &la.dxg,
            1,
            gw,
            x,
            input,
            1,
        );
        col_sums(&mut grads[o.b_ih..o.b_ih + gw], &la.dxg);
        // d x(N, in) = dxg @ W_ih(G*H, in): the next layer down's dtop, or the embedding's.
        let dx = if l == 0 { &mut ws.demb } else { &mut ws.dtop };
        gemm_strided(
            n,
            input,
            gw,
            dx,
            input,
            false,
            &la.dxg,
            gw,
            1,
            &params[o.w_ih..],
            input,
            1,
        );
        if ws.dropped {
            mul_in_place(dx, &la.mask);
        }
    }
    // Embedding rows scatter into encoder.weight (which the tied decoder shares).
    for (r, &tok) in ws.tokens.iter().enumerate() {
        let g = &mut grads[tok as usize * e..][..e];
        for (a, &d) in g.iter_mut().zip(&ws.demb[r * e..][..e]) {
            *a += d;
        }
    }
    Ok(mean)
}

#[cfg(test)]
mod tests;
