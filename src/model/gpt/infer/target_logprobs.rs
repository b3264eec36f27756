//! Scoring's LM head: log p(target | row) for every row of final hidden states, with the
//! log-softmax fused into the vocabulary product a block of [`VOCAB_CHUNK`] columns at a
//! time, so the (N, V) logits never exist.
//!
//! Scoring needs one number per position, the target's log-probability: its logit minus
//! the row's logsumexp. Materializing the logits first costs 4 V bytes per position (206
//! MB for a 1024-token GPT-2 window), every byte a fresh page to fault in and zero, then
//! written by the GEMM and read back by the logsumexp. Here one (N, VOCAB_CHUNK) buffer
//! is reused: each block's product lands in it, and each row folds the block into a
//! running logsumexp (f64) and picks its target's logit if the block holds it.
//! Measured (docs/parts/decode-speed.md, "Scoring's LM head"): f32 scoring of 1024-token
//! windows of GPT-2 124M ~10% faster on a 2-core Zen 4 VM, and 206 MB less memory.

use super::quant::QMat;
use crate::ops::{self, simd};
use rayon::prelude::*;

/// Vocabulary columns per block: a few blocks for GPT-2's 50257 (each wide enough that
/// the GEMMs keep their full-size tiles and the bf16 / int8 GEMMs pack the activations
/// only a few times), with an (N, chunk) buffer of 32 MB at N = 1024.
pub(super) const VOCAB_CHUNK: usize = 8192;

/// `out[i]` = log softmax(lnf_i @ wte^T)[targets[i]] for the rows i of `lnf` (N, C), with
/// `wte` (V, C) the f32 LM head, or `compact`'s GEMM where it has one (the same fallback
/// as every parallel-path matmul).
pub(super) fn target_logprobs(
    lnf: &[f32],
    targets: &[u32],
    wte: &[f32],
    compact: Option<&QMat>,
    (v, c): (usize, usize),
) -> Vec<f32> {
    let n = targets.len();
    assert!(lnf.len() >= n * c && wte.len() >= v * c);
    let chunk = VOCAB_CHUNK.min(v);
    let mut buf = crate::huge_pages::zeroed_vec::<f32>(n * chunk);
    // Per row: the running logsumexp and the target's logit.
    let mut acc = vec![(f64::NEG_INFINITY, f32::NAN); n];
    for j0 in (0..v).step_by(chunk) {
        let nb = chunk.min(v - j0);
        let block = &mut buf[..n * nb];
        let rows = j0..j0 + nb;
        if !compact.is_some_and(|q| q.gemm_rows(block, lnf, None, n, rows.clone())) {
            ops::lm_head_forward(block, lnf, &wte[j0 * c..(j0 + nb) * c], n, nb, c);
        }
        acc.par_iter_mut()
            .zip(block.par_chunks(nb))
            .zip(targets)
            .for_each(|(((lse, picked), row), &tgt)| {
                *lse = log_add_exp(*lse, simd::logsumexp(row) as f64);
                if rows.contains(&(tgt as usize)) {
                    *picked = row[tgt as usize - j0];
                }
            });
    }
    acc.into_iter()
        .map(|(lse, picked)| (picked as f64 - lse) as f32)
        .collect()
}

/// log(e^a + e^b), exact where either is -inf.
fn log_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a >= b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the logits materialized and log-softmaxed row by row in f64, with a
    /// vocabulary of several blocks and a tail, targets in every block.
    #[test]
    fn matches_the_log_softmax_of_the_full_logits() {
        let (n, c) = (5, 24);
        let v = 2 * VOCAB_CHUNK + 37;
        let lnf = crate::ops::testutil::rnd_f32(n * c, 1);
        let wte: Vec<f32> = crate::ops::testutil::rnd_f32(v * c, 2)
            .iter()
            .map(|x| 3.0 * x)
            .collect();
        let targets = [
            0,
            7,
            VOCAB_CHUNK as u32,
            (v - 1) as u32,
            2 * VOCAB_CHUNK as u32 + 5,
        ];
        let got = target_logprobs(&lnf, &targets, &wte, None, (v, c));
        for (i, &tgt) in targets.iter().enumerate() {
            let logits: Vec<f64> = (0..v)
                .map(|j| {
                    (0..c)
                        .map(|k| lnf[i * c + k] as f64 * wte[j * c + k] as f64)
                        .sum()
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + logits.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            let want = logits[tgt as usize] - lse;
            assert!(
                (got[i] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                "row {i}: {} vs {want}",
                got[i]
            );
        }
    }

    #[test]
    fn log_add_exp_is_exact_at_the_edges() {
        assert_eq!(log_add_exp(f64::NEG_INFINITY, 2.5), 2.5);
        assert_eq!(log_add_exp(-1.0, f64::NEG_INFINITY), -1.0);
        assert!((log_add_exp(0.0, 0.0) - 2f64.ln()).abs() < 1e-15);
        assert!((log_add_exp(1000.0, 999.0) - (1000.0 + (-1f64).exp().ln_1p())).abs() < 1e-12);
    }
}
