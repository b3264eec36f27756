//! Residual adds over `(N, C)` rows, with the projection bias optionally fused in.

use crate::ops::cpu;
use crate::ops::float::Float;
use crate::ops::par::{self, rows_per_task};
use rayon::prelude::*;

/// out += inp (the residual connection, in place).
pub fn residual_add<F: Float>(out: &mut [F], inp: &[F]) {
    out.par_chunks_mut(1 << 14)
        .zip(inp.par_chunks(1 << 14))
        .with_min_len(par::min_len())
        .for_each(|(o, x)| add_in_place(o, x));
}

/// out += inp on one chunk, serially (the per-chunk body of [`residual_add`]).
#[inline]
pub fn add_in_place<F: Float>(out: &mut [F], inp: &[F]) {
    cpu::avx2(
        #[inline(always)]
        || {
            for (a, b) in out.iter_mut().zip(inp) {
                *a += *b;
            }
        },
    )
}

/// out += inp + bias per row of C: the residual connection with the bias of the branch's
/// output projection fused in (the projection then runs without bias). Same bits as
/// [`crate::ops::matmul_forward`] with the bias followed by [`residual_add`].
pub fn residual_bias_add<F: Float>(out: &mut [F], inp: &[F], bias: &[F], c: usize) {
    let rpt = rows_per_task(out.len() / c, c);
    let bias = &bias[..c];
    out.par_chunks_mut(rpt * c)
        .zip(inp.par_chunks(rpt * c))
        .with_min_len(par::min_len())
        .for_each(|(o, x)| {
            cpu::avx2(
                #[inline(always)]
                || {
                    for (o, x) in o.chunks_mut(c).zip(x.chunks(c)) {
                        for ((a, &xi), &b) in o.iter_mut().zip(x).zip(bias) {
                            *a = (*a + b) + xi;
                        }
                    }
                },
            )
        });
}
