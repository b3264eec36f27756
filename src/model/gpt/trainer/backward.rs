//! The training backward pass of the GPT: the reverse of `forward`, layer by layer, over
//! one (B, T) of activations, and the per-step transposed copy of the block weights its
//! dinp products read.

use super::{apply_mask, masked_copy, Acts, Scratch};
use crate::model::gpt::{layer, layer_mut, parts, parts_mut, Activation, GptConfig};
use crate::ops::{self, Float};
use rayon::prelude::*;

/// Per layer, the transposes of the four block matrices, in this order: qkv (3C,C), attn
/// proj (C,C), fc (4C,C), proj (C,4C); parallel over layers. The backward's dinp = dout @
/// W^T then reads row-major matrices (see [`ops::matmul_backward_t`]).
pub(super) fn transpose_weights<F: Float>(wt: &mut [F], params: &[F], cfg: &GptConfig) {
    let c = cfg.n_embd;
    wt.par_chunks_mut(12 * c * c)
        .enumerate()
        .for_each(|(l, out)| transpose_layer(out, params, cfg, l));
}

/// Layer l's part of [`transpose_weights`] (`out`: its 12 C^2 floats).
pub(super) fn transpose_layer<F: Float>(out: &mut [F], params: &[F], cfg: &GptConfig, l: usize) {
    let c = cfg.n_embd;
    let w = layer(parts(params, cfg).layers, cfg, l);
    let (qkv, rest) = out.split_at_mut(3 * c * c);
    let (attn, rest) = rest.split_at_mut(c * c);
    let (fc, proj) = rest.split_at_mut(4 * c * c);
    ops::transpose(qkv, w.qkv_w, c, 3 * c);
    ops::transpose(attn, w.attn_proj_w, c, c);
    ops::transpose(fc, w.fc_w, c, 4 * c);
    ops::transpose(proj, w.proj_w, 4 * c, c);
}

/// The backward pass of one forward (`a`) into `grads` (ADDS; with `fresh`, the weight
/// matrices and wte are OVERWRITTEN by their first write instead, and only the other
/// ranges must be zero); `a.logits` must already hold dlogits
/// ([`ops::softmax_ce_forward_backward`]); `wt` holds [`transpose_weights`] of
/// `params`.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward<F: Float>(
    cfg: &GptConfig,
    params: &[F],
    wt: &[F],
    a: &mut Acts<F>,
    s: &mut Scratch<F>,
    grads: &mut [F],
    inputs: &[u32],
    dropped: bool,
    fresh: bool,
) {
    let (b, t) = (a.b, a.t);
    let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
    let n = b * t;
    let dlogits = &a.logits;
    let p = parts(params, cfg);
    let g = parts_mut(grads, cfg);
    // logits = lnf @ wte^T: dlnf(N,C) = dlogits(N,V) @ wte(V,C)
    crate::ops::matmul::gemm_strided(n, c, v, &mut s.dln, c, false, dlogits, v, 1, p.wte, c, 1);
    // dwte(V,C) += dlogits^T(V,N) @ lnf(N,C)
    ops::lm_head_backward_dwte(g.wte, dlogits, &a.lnf, (n, v, c), fresh);
    let last = &a.res3[(cfg.n_layer - 1) * n * c..];
    s.dres.fill(F::ZERO);
    ops::layernorm_backward(
        &mut s.dres,
        g.lnf_w,
        g.lnf_b,
        &mut s.ln_scratch,
        &s.dln,
        last,
        p.lnf_w,
        &a.lnf_mean,
        &a.lnf_rstd,
        c,
    );
    for l in (0..cfg.n_layer).rev() {
        let w = layer(p.layers, cfg, l);
        let gw = layer_mut(&mut *g.layers, cfg, l);
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
        let wl = &wt[l * 12 * c * c..(l + 1) * 12 * c * c];
        let (qkv_wt, rest) = wl.split_at(3 * c * c);
        let (attn_proj_wt, rest) = rest.split_at(c * c);
        let (fc_wt, proj_wt) = rest.split_at(4 * c * c);
        // res3 = res2 + drop(gelu @ proj_w + proj_b)
        let dbranch: &[F] = if dropped {
            masked_copy(&mut s.dtmp, &s.dres, &a.drop_mlp[sl(c)]);
            &s.dtmp
        } else {
            &s.dres
        };
        ops::matmul_backward_t(
            &mut s.dfch,
            gw.proj_w,
            Some(gw.proj_b),
            dbranch,
            fch_gelu,
            proj_wt,
            (n, 4 * c, c),
            fresh,
        );
        if cfg.activation == Activation::GeluExact || ops::gelu_keeps_derivative::<F>(4 * c) {
            ops::gelu_backward_stored(&mut s.dfch, fch);
        } else {
            ops::gelu_backward_inplace(&mut s.dfch, fch);
        }
        ops::matmul_backward_t(
            &mut s.dln,
            gw.fc_w,
            Some(gw.fc_b),
            &s.dfch,
            ln2,
            fc_wt,
            (n, c, 4 * c),
            fresh,
        );
        ops::layernorm_backward(
            &mut s.dres,
            gw.ln2_w,
            gw.ln2_b,
            &mut s.ln_scratch,
            &s.dln,
            res2,
            w.ln2_w,
            &a.ln2_mean[l * n..(l + 1) * n],
            &a.ln2_rstd[l * n..(l + 1) * n],
            c,
        );
        // res2 = input + drop(atty @ attn_proj_w + attn_proj_b)
        let dbranch: &[F] = if dropped {
            masked_copy(&mut s.dtmp, &s.dres, &a.drop_attn[sl(c)]);
            &s.dtmp
        } else {
            &s.dres
        };
        ops::matmul_backward_t(
            &mut s.datty,
            gw.attn_proj_w,
            Some(gw.attn_proj_b),
            dbranch,
            atty,
            attn_proj_wt,
            (n, c, c),
            fresh,
        );
        ops::attention_backward(&mut s.dqkv, &mut s.datt, &s.datty, qkv, att, b, t, c, nh);
        ops::matmul_backward_t(
            &mut s.dln,
            gw.qkv_w,
            Some(gw.qkv_b),
            &s.dqkv,
            ln1,
            qkv_wt,
            (n, c, 3 * c),
            fresh,
        );
        ops::layernorm_backward(
            &mut s.dres,
            gw.ln1_w,
            gw.ln1_b,
            &mut s.ln_scratch,
            &s.dln,
            input,
            w.ln1_w,
            &a.ln1_mean[l * n..(l + 1) * n],
            &a.ln1_rstd[l * n..(l + 1) * n],
            c,
        );
    }
    if dropped {
        apply_mask(&mut s.dres, &a.drop_emb);
    }
    ops::encoder_backward(g.wte, g.wpe, &s.dres, inputs, t, c);
}
