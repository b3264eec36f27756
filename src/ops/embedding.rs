//! Token + position embedding, and the tied LM head that reuses the token embedding.
//!
//! `encoded(B, T, C) = wte[token] + wpe[t]`; `logits(N, V) = lnf(N, C) @ wte(V, C)^T`.
//! The backward kernels ACCUMULATE into `dwte` and `dwpe`.
//!
//! # Performance notes
//! - **LM head in vocabulary blocks** ([`lm_head_forward`], [`lm_head_backward_dwte`]):
//!   one parallel GEMM over 50K columns made `gemm` allocate, page-fault and pack a whole
//!   (C x V) copy of wte per call; blocks of `VOCAB_BLOCK` columns as single-threaded
//!   GEMMs in parallel avoid it, with the same sums (tested against the single GEMM).

use crate::ops::float::Float;
use crate::ops::matmul::{gemm_raw, gemm_strided};
use crate::ops::par::{self, SyncPtr};
use rayon::prelude::*;

/// out(N,C) = wte\[tokens\] + wpe\[t\]: token plus position embedding.
pub fn encoder_forward<F: Float>(
    out: &mut [F],
    tokens: &[u32],
    wte: &[F],
    wpe: &[F],
    t_len: usize,
    c: usize,
) {
    out.par_chunks_mut(c)
        .zip(tokens.par_iter())
        .enumerate()
        .with_min_len(par::min_len())
        .for_each(|(i, (o, &tok))| {
            let t = i % t_len;
            let we = &wte[tok as usize * c..][..c];
            let pe = &wpe[t * c..][..c];
            for j in 0..c {
                o[j] = we[j] + pe[j];
            }
        });
}

/// dwte\[tokens\] += dout, dwpe\[t\] += dout (accumulates; sequential over rows because
/// rows scatter into shared embedding rows; parallel over channel blocks instead).
pub fn encoder_backward<F: Float>(
    dwte: &mut [F],
    dwpe: &mut [F],
    dout: &[F],
    tokens: &[u32],
    t_len: usize,
    c: usize,
) {
    for (i, &tok) in tokens.iter().enumerate() {
        let t = i % t_len;
        let d = &dout[i * c..][..c];
        let we = &mut dwte[tok as usize * c..][..c];
        for j in 0..c {
            we[j] += d[j];
        }
        let pe = &mut dwpe[t * c..][..c];
        for j in 0..c {
            pe[j] += d[j];
        }
    }
}

/// Vocabulary rows per task of the blocked LM-head products.
const VOCAB_BLOCK: usize = 2048;

/// Whether the LM-head products split the vocabulary into [`VOCAB_BLOCK`] blocks (large
/// vocabularies: one parallel GEMM over 50K columns makes `gemm` allocate, page-fault and
/// pack a whole (C x V) copy of wte per call). Depends on V only, never on threads, so
/// the bits of the result do not either.
#[inline]
fn vocab_blocked(v: usize) -> bool {
    v >= 4 * VOCAB_BLOCK
}

/// logits(N,V) = lnf(N,C) @ wte^T(C,V) (overwrites); wte is (V,C). For large V, blocks of
/// vocabulary columns run in parallel as single-threaded GEMMs; the plain single
/// `gemm_strided` call is the reference (same sums, tested to agree).
pub fn lm_head_forward<F: Float>(
    logits: &mut [F],
    lnf: &[F],
    wte: &[F],
    n: usize,
    v: usize,
    c: usize,
) {
    if !vocab_blocked(v) || n == 0 {
        gemm_strided(n, v, c, logits, v, false, lnf, c, 1, wte, 1, c);
        return;
    }
    assert!(logits.len() >= n * v && lnf.len() >= n * c && wte.len() >= v * c);
    let dst = SyncPtr(logits.as_mut_ptr());
    (0..v.div_ceil(VOCAB_BLOCK))
        .into_par_iter()
        .with_min_len(par::min_len())
        .for_each(|blk| {
            let j0 = blk * VOCAB_BLOCK;
            let nb = VOCAB_BLOCK.min(v - j0);
            // SAFETY: columns j0..j0+nb of every logits row belong to this task alone; the
            // views of lnf and wte stay inside the asserted lengths.
            unsafe {
                gemm_raw(
                    n,
                    nb,
                    c,
                    dst.get().add(j0),
                    v,
                    false,
                    lnf.as_ptr(),
                    c,
                    1,
                    wte.as_ptr().add(j0 * c),
                    1,
                    c,
                );
            }
        });
}

/// dwte(V,C) += dlogits^T(V,N) @ lnf(N,C): the LM head's weight gradient, in blocks of
/// vocabulary rows for large V (reference: the single `gemm_strided` call); `=` instead
/// of `+=` with `overwrite` (see [`crate::ops::matmul_backward_t`]).
pub fn lm_head_backward_dwte<F: Float>(
    dwte: &mut [F],
    dlogits: &[F],
    lnf: &[F],
    (n, v, c): (usize, usize, usize),
    overwrite: bool,
) {
    if !vocab_blocked(v) || n == 0 {
        gemm_strided(v, c, n, dwte, c, !overwrite, dlogits, 1, v, lnf, c, 1);
        return;
    }
    assert!(dlogits.len() >= n * v && lnf.len() >= n * c);
    dwte[..v * c]
        .par_chunks_mut(VOCAB_BLOCK * c)
        .enumerate()
        .with_min_len(par::min_len())
        .for_each(|(blk, dw)| {
            let j0 = blk * VOCAB_BLOCK;
            let nb = dw.len() / c;
            // SAFETY: dw is this task's own; dlogits columns j0..j0+nb of rows 0..n and
            // lnf are inside the asserted lengths.
            unsafe {
                gemm_raw(
                    nb,
                    c,
                    n,
                    dw.as_mut_ptr(),
                    c,
                    !overwrite,
                    dlogits.as_ptr().add(j0),
                    1,
                    v,
                    lnf.as_ptr(),
                    c,
                    1,
                );
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::ops::testutil::*;

    /// The vocabulary-blocked LM-head products equal the single-GEMM references.
    #[test]
    fn lm_head_blocks_match_single_gemm() {
        let (n, c) = (5, 8);
        let v = 4 * VOCAB_BLOCK + 37; // blocked, with a short last block
        let f = |x: Vec<f64>| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let lnf = f(rnd(n * c, 31));
        let wte = f(rnd(v * c, 32));
        let dl = f(rnd(n * v, 33));
        let mut got = vec![0f32; n * v];
        lm_head_forward(&mut got, &lnf, &wte, n, v, c);
        let mut want = vec![0f32; n * v];
        gemm_strided(n, v, c, &mut want, v, false, &lnf, c, 1, &wte, 1, c);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "logits[{i}]: {a} vs {b}"
            );
        }
        let init = f(rnd(v * c, 34));
        let mut got = init.clone();
        lm_head_backward_dwte(&mut got, &dl, &lnf, (n, v, c), false);
        let mut want = init;
        gemm_strided(v, c, n, &mut want, c, true, &dl, 1, v, &lnf, c, 1);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "dwte[{i}]: {a} vs {b}"
            );
        }
        // overwrite: garbage in, the product alone out
        let mut got = vec![9f32; v * c];
        lm_head_backward_dwte(&mut got, &dl, &lnf, (n, v, c), true);
        let mut want = vec![0f32; v * c];
        gemm_strided(v, c, n, &mut want, c, false, &dl, 1, v, &lnf, c, 1);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "overwritten dwte[{i}]: {a} vs {b}"
            );
        }
        // and the reference itself against plain loops on a few entries
        let mut l = vec![0f32; n * v];
        lm_head_forward(&mut l, &lnf, &wte, n, v, c);
        for &(r, j) in &[(0, 0), (4, v - 1), (2, 3 * VOCAB_BLOCK + 5)] {
            let dot: f64 = (0..c)
                .map(|k| lnf[r * c + k] as f64 * wte[j * c + k] as f64)
                .sum();
            assert!((l[r * v + j] as f64 - dot).abs() < 1e-5, "logit ({r},{j})");
        }
    }

    #[test]
    fn encoder_backward_matches_fd() {
        let (t, c, vocab) = (3, 4, 5);
        let tokens = [1u32, 4, 1, 0, 2, 2];
        let wte = rnd(vocab * c, 14);
        let wpe = rnd(t * c, 15);
        let g = rnd(tokens.len() * c, 16);
        let f = |wte: &[f64], wpe: &[f64]| {
            let mut o = vec![0.0; tokens.len() * c];
            encoder_forward(&mut o, &tokens, wte, wpe, t, c);
            dot(&o, &g)
        };
        let (mut dwte, mut dwpe) = (vec![0.0; vocab * c], vec![0.0; t * c]);
        encoder_backward(&mut dwte, &mut dwpe, &g, &tokens, t, c);
        close(&fd(&wte, &|x| f(x, &wpe)), &dwte, 1e-7, "dwte");
        close(&fd(&wpe, &|x| f(&wte, x)), &dwpe, 1e-7, "dwpe");
    }
}
