//! Dense products: `out(N, OC) = inp(N, IC) @ w(IC, OC) + b(OC)` and its backward, the
//! strided GEMM every layer uses, and the weight transpose.
//!
//! Weights are stored as Hugging Face's GPT-2 `Conv1D` does, (in, out). The products go to
//! the `gemm` crate (packing, microkernels, rayon) rather than hand-written loops: it is
//! the solved problem, and it picks its kernels per CPU. Backward kernels ACCUMULATE into
//! `dw` and `db` and OVERWRITE `dinp`.
//!
//! # Performance notes
//! - **Transposed weights for dinp** ([`matmul_backward_t`]): dinp = dout @ W^T read W
//!   through a strided view, which `gemm` packs slowly; reading a row-major copy of W^T
//!   (made once per step by [`transpose`]) is faster, and the sums are the same.
//! - **Transpose in 8x8 AVX tiles** instead of scalar 16x16 tiles: 2.3% -> 1.7% of model
//!   A's training profile (`perf record` of `arlm bench train --model a --no-torch`, 2-core
//!   Sapphire Rapids VM); it moves 3 MB each way per step, so memory is what is left.

use crate::ops::cpu;
use crate::ops::float::{as_f32, as_f32_mut, Float};
use crate::ops::par::{self, rows_per_task, SyncPtr};
use rayon::prelude::*;

/// The gemm crate's parallelism for a product of this size (small ones stay on one thread,
/// and so does everything inside [`with_serial_gemm`]).
#[inline]
fn gemm_parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m * n * k >= 1 << 18 && !par::serial() {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// dst(m,n) {=, +=} lhs(m,k) @ rhs(k,n), all given by (row stride, column stride).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn gemm_strided<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [F],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[F],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[F],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n);
    if k > 0 {
        assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
        assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    }
    // SAFETY: the asserts above bound every index gemm touches.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            F::ONE,
            F::ONE,
            false,
            false,
            false,
            gemm_parallelism(m, n, k),
        )
    }
}

/// Best-of-`reps` f32 GFLOP/s of an n x n x n product through the same `gemm` call the
/// model uses: the ceiling the training benchmark reports its fraction of.
pub fn gemm_ceiling_gflops(n: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let mut c = vec![0f32; n * n];
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t0 = std::time::Instant::now();
        gemm_strided(n, n, n, &mut c, n, false, &a, n, 1, &b, n, 1);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// out(N,OC) = inp(N,IC) @ w(IC,OC) + bias (overwrites out).
pub fn matmul_forward<F: Float>(
    out: &mut [F],
    inp: &[F],
    w: &[F],
    bias: Option<&[F]>,
    n: usize,
    ic: usize,
    oc: usize,
) {
    let out = &mut out[..n * oc];
    match bias {
        Some(b) => {
            out.par_chunks_mut(oc * rows_per_task(n, oc))
                .with_min_len(par::min_len())
                .for_each(|o| {
                    for row in o.chunks_mut(oc) {
                        row.copy_from_slice(b);
                    }
                });
            gemm_by_columns(n, oc, ic, out, true, inp, w);
        }
        None => gemm_by_columns(n, oc, ic, out, false, inp, w),
    }
}

/// Output columns per block of [`gemm_by_columns`].
const COL_BLOCK: usize = 384;

/// out(N, OC) (+)= inp(N, IC) @ w(IC, OC), for few rows (N <= 256: a prefill, a batch of
/// short sequences) as blocks of [`COL_BLOCK`] output columns in parallel, each its own
/// `gemm` call over its slice of the weights. With so few rows the weights come from
/// memory once and `gemm` packs them as it goes; one parallel call over all columns ran
/// GPT-2's shapes at M = 64 at 110-145 GFLOP/s against 135-160 in column blocks (2-core
/// Zen 4, 24 matrices cycled so they stay cold), and equal or better up to M = 512. The
/// blocks depend on the shape only (OC a multiple of the block, else one call), and each
/// block's bits equal the single call's (`matmul_column_blocks_are_bit_identical`).
fn gemm_by_columns<F: Float>(
    n: usize,
    oc: usize,
    ic: usize,
    out: &mut [F],
    accumulate: bool,
    inp: &[F],
    w: &[F],
) {
    // Whole blocks only: a narrow last block can make `gemm` pick another kernel, whose
    // sums round differently.
    if n > 256 || oc < 2 * COL_BLOCK || !oc.is_multiple_of(COL_BLOCK) || par::serial() {
        gemm_strided(n, oc, ic, out, oc, accumulate, inp, ic, 1, w, oc, 1);
        return;
    }
    assert!(out.len() >= n * oc && inp.len() >= n * ic && w.len() >= ic * oc);
    let dst = SyncPtr(out.as_mut_ptr());
    (0..oc.div_ceil(COL_BLOCK)).into_par_iter().for_each(|blk| {
        let j0 = blk * COL_BLOCK;
        let nb = COL_BLOCK.min(oc - j0);
        // SAFETY: columns j0..j0 + nb of every out row belong to this block alone; the
        // view covers rows 0..n of them (row stride oc) inside the asserted length.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(j0), (n - 1) * oc + nb) };
        gemm_strided(n, nb, ic, o, oc, accumulate, inp, ic, 1, &w[j0..], oc, 1);
    });
}

/// Backward of [`matmul_forward`]: dinp = dout @ w^T (OVERWRITES), dw += inp^T @ dout,
/// db += column sums of dout.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward<F: Float>(
    dinp: &mut [F],
    dw: &mut [F],
    db: Option<&mut [F]>,
    dout: &[F],
    inp: &[F],
    w: &[F],
    n: usize,
    ic: usize,
    oc: usize,
) {
    // dinp(N,IC) = dout(N,OC) @ w^T(OC,IC); w^T(o,i) = w[i*OC + o].
    gemm_strided(n, ic, oc, dinp, ic, false, dout, oc, 1, w, 1, oc);
    // dw(IC,OC) += inp^T(IC,N) @ dout(N,OC); inp^T(i,r) = inp[r*IC + i].
    gemm_strided(ic, oc, n, dw, oc, true, inp, 1, ic, dout, oc, 1);
    if let Some(db) = db {
        bias_backward(db, dout, n, oc);
    }
}

/// [`matmul_backward`] with the weight also given transposed, wt(OC,IC) = w^T: dinp =
/// dout @ wt then reads a row-major matrix, which `gemm` packs without a strided gather
/// (8-13% faster per call at model A's shapes). Same sums in the same order. With
/// `overwrite_dw`, dw = inp^T @ dout instead of +=: for a gradient buffer whose old
/// contents are garbage (a batch shard's own buffer), so it need not be zeroed first.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_t<F: Float>(
    dinp: &mut [F],
    dw: &mut [F],
    db: Option<&mut [F]>,
    dout: &[F],
    inp: &[F],
    wt: &[F],
    (n, ic, oc): (usize, usize, usize),
    overwrite_dw: bool,
) {
    gemm_strided(n, ic, oc, dinp, ic, false, dout, oc, 1, wt, ic, 1);
    gemm_strided(ic, oc, n, dw, oc, !overwrite_dw, inp, 1, ic, dout, oc, 1);
    if let Some(db) = db {
        bias_backward(db, dout, n, oc);
    }
}

/// dst(cols, rows) = src(rows, cols)^T, in 16 x 16 tiles (`avx512::transpose`'s AVX
/// register tiles for f32 when the CPU has AVX).
pub fn transpose<F: Float>(dst: &mut [F], src: &[F], rows: usize, cols: usize) {
    if cpu::has_avx() {
        if let (Some(d), Some(s)) = (as_f32_mut(dst), as_f32(src)) {
            avx512::transpose(d, s, rows, cols);
            return;
        }
    }
    const TILE: usize = 16;
    let (dst, src) = (&mut dst[..rows * cols], &src[..rows * cols]);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// db(OC) += sum over rows of dout(N,OC), parallel over column blocks.
pub fn bias_backward<F: Float>(db: &mut [F], dout: &[F], n: usize, oc: usize) {
    let cb = 256.min(oc).max(1);
    db.par_chunks_mut(cb)
        .enumerate()
        .with_min_len(par::min_len())
        .for_each(|(bi, dbc)| {
            let o0 = bi * cb;
            cpu::avx2(
                #[inline(always)]
                || {
                    for r in 0..n {
                        let d = &dout[r * oc + o0..][..dbc.len()];
                        for (a, b) in dbc.iter_mut().zip(d) {
                            *a += *b;
                        }
                    }
                },
            )
        });
}

/// Plain, obviously-correct versions (loops, f64 sums) that the tests check the
/// optimized kernels against.
pub mod reference {
    use super::*;

    /// out = inp @ w + bias with three loops.
    pub fn matmul_forward<F: Float>(
        out: &mut [F],
        inp: &[F],
        w: &[F],
        bias: Option<&[F]>,
        n: usize,
        ic: usize,
        oc: usize,
    ) {
        for r in 0..n {
            for o in 0..oc {
                let mut acc = bias.map_or(F::ZERO, |b| b[o]);
                for i in 0..ic {
                    acc += inp[r * ic + i] * w[i * oc + o];
                }
                out[r * oc + o] = acc;
            }
        }
    }

    /// dinp = dout @ w^T; dw += inp^T @ dout; db += colsum(dout), with loops.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_backward<F: Float>(
        dinp: &mut [F],
        dw: &mut [F],
        db: Option<&mut [F]>,
        dout: &[F],
        inp: &[F],
        w: &[F],
        n: usize,
        ic: usize,
        oc: usize,
    ) {
        for r in 0..n {
            for i in 0..ic {
                let mut acc = F::ZERO;
                for o in 0..oc {
                    acc += dout[r * oc + o] * w[i * oc + o];
                }
                dinp[r * ic + i] = acc;
            }
        }
        for i in 0..ic {
            for o in 0..oc {
                let mut acc = F::ZERO;
                for r in 0..n {
                    acc += inp[r * ic + i] * dout[r * oc + o];
                }
                dw[i * oc + o] += acc;
            }
        }
        if let Some(db) = db {
            for o in 0..oc {
                for r in 0..n {
                    db[o] += dout[r * oc + o];
                }
            }
        }
    }
}

/// The explicit AVX-512 bodies; callers check [`cpu::has_avx512`] first.
mod avx512 {

    #[cfg(target_arch = "x86_64")]
    use crate::ops::simd512::tiles8;

    /// dst(cols, rows) = src(rows, cols)^T in 8 x 8 AVX register tiles (edges element by
    /// element). Requires [`avx`].
    pub fn transpose(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
        let (dst, src) = (&mut dst[..rows * cols], &src[..rows * cols]);
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: every tile (r0..r0+8, c0..c0+8) has r0 + 8 <= rows and c0 + 8 <= cols, so
        // its source and destination elements are inside the slices; callers checked avx().
        unsafe {
            tiles8(dst.as_mut_ptr(), rows, src.as_ptr(), cols, r8, c8)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (r8, c8) = (0, 0);
        for r in 0..rows {
            let c_start = if r < r8 { c8 } else { 0 };
            for c in c_start..cols {
                dst[c * rows + r] = src[r * cols + c];
            }
        }
    }
}

/// dst(m,n) {=, +=} lhs(m,k) @ rhs(k,n) on raw pointers, single-threaded (for calls made
/// inside a rayon task on disjoint strided views of shared buffers).
///
/// # Safety
/// Every element addressed by the dimensions and strides must be valid, and `dst`'s
/// elements must not be accessed concurrently by anyone else.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) unsafe fn gemm_raw<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut F,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const F,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const F,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        F::ONE,
        F::ONE,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::ops::testutil::*;

    #[test]
    fn matmul_matches_reference_and_fd() {
        let (n, ic, oc) = (5, 7, 6);
        let inp = rnd(n * ic, 1);
        let w = rnd(ic * oc, 2);
        let bias = rnd(oc, 3);
        let g = rnd(n * oc, 4);
        let mut out = vec![0.0; n * oc];
        let mut want = vec![0.0; n * oc];
        matmul_forward(&mut out, &inp, &w, Some(&bias), n, ic, oc);
        reference::matmul_forward(&mut want, &inp, &w, Some(&bias), n, ic, oc);
        close(&out, &want, 1e-12, "forward");
        let mut dinp = vec![0.0; n * ic];
        let mut dw = vec![0.0; ic * oc];
        let mut db = vec![0.0; oc];
        matmul_backward(&mut dinp, &mut dw, Some(&mut db), &g, &inp, &w, n, ic, oc);
        let (mut rdinp, mut rdw, mut rdb) = (vec![0.0; n * ic], vec![0.0; ic * oc], vec![0.0; oc]);
        reference::matmul_backward(
            &mut rdinp,
            &mut rdw,
            Some(&mut rdb),
            &g,
            &inp,
            &w,
            n,
            ic,
            oc,
        );
        close(&dinp, &rdinp, 1e-12, "dinp");
        close(&dw, &rdw, 1e-12, "dw");
        close(&db, &rdb, 1e-12, "db");
        let f_inp = |x: &[f64]| {
            let mut o = vec![0.0; n * oc];
            reference::matmul_forward(&mut o, x, &w, Some(&bias), n, ic, oc);
            dot(&o, &g)
        };
        close(&fd(&inp, &f_inp), &rdinp, 1e-7, "fd dinp");
        let f_w = |x: &[f64]| {
            let mut o = vec![0.0; n * oc];
            reference::matmul_forward(&mut o, &inp, x, Some(&bias), n, ic, oc);
            dot(&o, &g)
        };
        close(&fd(&w, &f_w), &rdw, 1e-7, "fd dw");
    }

    /// The transposed-weight backward matches the plain loops, and transpose is one.
    #[test]
    fn matmul_backward_with_transposed_weight_matches_reference() {
        let (n, ic, oc) = (19, 21, 35);
        let (x, w, d) = (rnd(n * ic, 81), rnd(ic * oc, 82), rnd(n * oc, 83));
        let mut wt = vec![0.0; ic * oc];
        transpose(&mut wt, &w, ic, oc);
        for i in 0..ic {
            for o in 0..oc {
                assert_eq!(wt[o * ic + i], w[i * oc + o]);
            }
        }
        let (mut dx, mut dw, mut db) = (vec![0.0; n * ic], vec![0.5; ic * oc], vec![0.25; oc]);
        matmul_backward_t(
            &mut dx,
            &mut dw,
            Some(&mut db),
            &d,
            &x,
            &wt,
            (n, ic, oc),
            false,
        );
        let (mut rx, mut rw, mut rb) = (vec![0.0; n * ic], vec![0.5; ic * oc], vec![0.25; oc]);
        reference::matmul_backward(&mut rx, &mut rw, Some(&mut rb), &d, &x, &w, n, ic, oc);
        close(&dx, &rx, 1e-12, "dinp");
        close(&dw, &rw, 1e-12, "dw");
        close(&db, &rb, 1e-12, "db");
        // overwriting dw: garbage in, the product out (what += gives on zeros)
        let mut dw_over = vec![7.0; ic * oc];
        matmul_backward_t(&mut dx, &mut dw_over, None, &d, &x, &wt, (n, ic, oc), true);
        let mut dw_zero = vec![0.0; ic * oc];
        matmul_backward_t(&mut dx, &mut dw_zero, None, &d, &x, &wt, (n, ic, oc), false);
        close(&dw_over, &dw_zero, 1e-12, "overwritten dw");
    }

    /// `gemm` gives the same bits whatever the thread count (its k-blocking does not
    /// depend on the parallelism), so a batch shard may run its GEMMs serially or in
    /// parallel without changing the result.
    #[test]
    fn gemm_bits_do_not_depend_on_thread_count() {
        for &(m, n, k) in &[
            (96, 200, 70),
            (300, 130, 520),
            (700, 64, 33),
            (64, 900, 300),
        ] {
            let a: Vec<f32> = rnd(m * k, 51).iter().map(|&x| x as f32).collect();
            let b: Vec<f32> = rnd(k * n, 52).iter().map(|&x| x as f32).collect();
            let run = |threads: usize, serial: bool| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut c = vec![0.5f32; m * n];
                    let go = |c: &mut Vec<f32>| {
                        gemm_strided(m, n, k, c, n, true, &a, k, 1, &b, n, 1);
                        gemm_strided(m, n, k, c, n, true, &a, k, 1, &b, 1, k.min(n));
                    };
                    if serial {
                        par::with_serial_gemm(|| go(&mut c));
                    } else {
                        go(&mut c);
                    }
                    c
                })
            };
            let want = run(1, false);
            for (threads, serial) in [(2, false), (4, false), (2, true)] {
                assert!(
                    run(threads, serial) == want,
                    "{m}x{n}x{k}: {threads} threads (serial {serial}) changed the bits"
                );
            }
        }
    }

    #[test]
    fn transpose_matches_plain() {
        if !cpu::has_avx() {
            eprintln!("SKIPPED: no AVX");
            return;
        }
        for (rows, cols) in [(8, 8), (16, 24), (128, 384), (13, 21), (7, 9), (1, 17)] {
            let src = rnd_f32(rows * cols, 3);
            let mut got = vec![0f32; rows * cols];
            avx512::transpose(&mut got, &src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        got[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} ({r},{c})"
                    );
                }
            }
        }
    }

    /// [`gemm_by_columns`]' blocks give the bits of one `gemm` call over all columns
    /// (the sums do not depend on the blocking), with and without accumulation.
    #[test]
    fn matmul_column_blocks_are_bit_identical() {
        for &(n, ic, oc) in &[
            (64, 96, 2 * COL_BLOCK),
            (37, 200, 3 * COL_BLOCK),
            (64, 768, 6 * COL_BLOCK),
            (64, 3072, 2 * COL_BLOCK),
            (64, 768, 2 * COL_BLOCK + 48), // a tail: one call
        ] {
            let inp = crate::ops::testutil::rnd_f32(n * ic, 1);
            let w = crate::ops::testutil::rnd_f32(ic * oc, 2);
            let init = crate::ops::testutil::rnd_f32(n * oc, 3);
            for accumulate in [false, true] {
                let (mut blocked, mut whole) = (init.clone(), init.clone());
                gemm_by_columns(n, oc, ic, &mut blocked, accumulate, &inp, &w);
                gemm_strided(
                    n, oc, ic, &mut whole, oc, accumulate, &inp, ic, 1, &w, oc, 1,
                );
                assert!(blocked == whole, "{n}x{ic}x{oc} accumulate {accumulate}");
            }
        }
    }
}
