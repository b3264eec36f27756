//! LayerNorm over the channels of each row: `out(N, C) = (x - mean) / sqrt(var + eps) * w
//! + b`, saving `mean(N)` and `rstd(N)` for the backward.
//!
//! The backward ACCUMULATES into `dinp` (the residual stream's gradient) and into the
//! parameter gradients, through [`LN_BLOCKS`] fixed row blocks whose partial sums are
//! added in order, so the bits do not depend on the thread count.
//!
//! # Performance notes
//! - **AVX-512 rows**: the auto-vectorized rows were one 8-lane accumulator chain per sum;
//!   4 (forward) / 2 (backward) independent 16-lane accumulators took the backward from
//!   2.8-3.1% to 1.6% and the forward from 1.7-1.9% to 1.3% of model A's training profile
//!   (`perf record` of `arlm bench train --model a --no-torch`, 2-core Sapphire Rapids VM).

use crate::ops::cpu;
use crate::ops::float::{as_f32, as_f32_mut, sum_lanes, Float};
use crate::ops::par::{self, rows_per_task};
use rayon::prelude::*;

/// LayerNorm epsilon (GPT-2's layer_norm_epsilon).
pub const LN_EPS: f64 = 1e-5;

/// out = (x - mean) * rstd * w + b per row of C; saves mean and rstd for backward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<F: Float>(
    out: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
    inp: &[F],
    w: &[F],
    b: &[F],
    c: usize,
) {
    let rpt = rows_per_task(mean.len(), c);
    out.par_chunks_mut(c * rpt)
        .zip(mean.par_chunks_mut(rpt))
        .zip(rstd.par_chunks_mut(rpt))
        .zip(inp.par_chunks(c * rpt))
        .with_min_len(par::min_len())
        .for_each(|(((o, mu), rs), x)| ln_forward_rows(o, mu, rs, x, w, b, c));
}

/// Rows of [`layernorm_forward`]; dispatched to an AVX2+FMA build of the same loops
/// (baseline x86-64 would be scalar SSE2).
#[allow(clippy::too_many_arguments)]
fn ln_forward_rows<F: Float>(
    o: &mut [F],
    mu: &mut [F],
    rs: &mut [F],
    x: &[F],
    w: &[F],
    b: &[F],
    c: usize,
) {
    #[inline(always)]
    fn plain<F: Float>(
        o: &mut [F],
        mu: &mut [F],
        rs: &mut [F],
        x: &[F],
        w: &[F],
        b: &[F],
        c: usize,
    ) {
        for r in 0..mu.len() {
            let xr = &x[r * c..][..c];
            let or = &mut o[r * c..][..c];
            let m = sum_lanes(c, |j| xr[j]) / F::from_usize(c);
            let var = sum_lanes(c, |j| {
                let d = xr[j] - m;
                d * d
            }) / F::from_usize(c);
            let s = F::ONE / (var + F::from_f64(LN_EPS)).sqrt();
            let (w, b) = (&w[..c], &b[..c]);
            for j in 0..c {
                or[j] = (xr[j] - m) * s * w[j] + b[j];
            }
            mu[r] = m;
            rs[r] = s;
        }
    }
    if c.is_multiple_of(16) && cpu::has_avx512() {
        if let (Some(o), Some(mu), Some(rs), Some(x), Some(w), Some(b)) = (
            as_f32_mut(o),
            as_f32_mut(mu),
            as_f32_mut(rs),
            as_f32(x),
            as_f32(w),
            as_f32(b),
        ) {
            avx512::ln_forward_rows(o, mu, rs, x, w, b, c, LN_EPS as f32);
            return;
        }
    }
    cpu::avx2(
        #[inline(always)]
        || plain(o, mu, rs, x, w, b, c),
    )
}

/// Number of row blocks layernorm backward splits into (each sums its own dw/db partials).
pub const LN_BLOCKS: usize = 16;

/// Backward of [`layernorm_forward`]: dinp += ..., dw += ..., db += ...
/// `scratch` holds LN_BLOCKS * 2C partial sums (allocated once by the caller).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<F: Float>(
    dinp: &mut [F],
    dw: &mut [F],
    db: &mut [F],
    scratch: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    mean: &[F],
    rstd: &[F],
    c: usize,
) {
    let n = mean.len();
    let rpb = n.div_ceil(LN_BLOCKS).max(1);
    let scratch = &mut scratch[..LN_BLOCKS * 2 * c];
    scratch.fill(F::ZERO);
    scratch
        .par_chunks_mut(2 * c)
        .zip(dinp.par_chunks_mut(rpb * c))
        .enumerate()
        .with_min_len(par::min_len())
        .for_each(|(blk, (part, di))| {
            let (pw, pb) = part.split_at_mut(c);
            let r0 = blk * rpb;
            let rows = LnRows {
                inp,
                dout,
                w,
                mean,
                rstd,
                c,
            };
            ln_backward_rows(&rows, r0, pw, pb, di)
        });
    for part in scratch.chunks(2 * c) {
        for j in 0..c {
            dw[j] += part[j];
            db[j] += part[c + j];
        }
    }
}

/// The read-only inputs of [`layernorm_backward`]'s row loop.
struct LnRows<'a, F> {
    inp: &'a [F],
    dout: &'a [F],
    w: &'a [F],
    mean: &'a [F],
    rstd: &'a [F],
    c: usize,
}

/// Rows r0.. of [`layernorm_backward`] into this block's partial dw/db and dx; dispatched
/// to an AVX2+FMA build of the same loops.
fn ln_backward_rows<F: Float>(
    k: &LnRows<'_, F>,
    r0: usize,
    pw: &mut [F],
    pb: &mut [F],
    di: &mut [F],
) {
    #[inline(always)]
    fn plain<F: Float>(k: &LnRows<'_, F>, r0: usize, pw: &mut [F], pb: &mut [F], di: &mut [F]) {
        let c = k.c;
        let (w, pw, pb) = (&k.w[..c], &mut pw[..c], &mut pb[..c]);
        for r in 0..di.len() / c {
            let row = r0 + r;
            let x = &k.inp[row * c..][..c];
            let d = &k.dout[row * c..][..c];
            let dx = &mut di[r * c..][..c];
            let (m, s) = (k.mean[row], k.rstd[row]);
            let dnorm_mean = sum_lanes(c, |j| w[j] * d[j]) / F::from_usize(c);
            let dnorm_norm_mean =
                sum_lanes(c, |j| w[j] * d[j] * ((x[j] - m) * s)) / F::from_usize(c);
            for j in 0..c {
                let norm = (x[j] - m) * s;
                let dnorm = w[j] * d[j];
                pb[j] += d[j];
                pw[j] += norm * d[j];
                dx[j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
            }
        }
    }
    if k.c.is_multiple_of(16) && cpu::has_avx512() {
        if let (Some(x), Some(d), Some(w), Some(mean), Some(rstd)) = (
            as_f32(k.inp),
            as_f32(k.dout),
            as_f32(k.w),
            as_f32(k.mean),
            as_f32(k.rstd),
        ) {
            if let (Some(pw), Some(pb), Some(di)) = (as_f32_mut(pw), as_f32_mut(pb), as_f32_mut(di))
            {
                avx512::ln_backward_rows((x, d, w, mean, rstd), k.c, r0, pw, pb, di);
                return;
            }
        }
    }
    cpu::avx2(
        #[inline(always)]
        || plain(k, r0, pw, pb, di),
    )
}

/// Plain, obviously-correct versions (loops, f64 sums) that the tests check the
/// optimized kernels against.
pub mod reference {
    use super::*;

    /// LayerNorm with sequential sums in f64: out = (x - mean) / sqrt(var + eps) * w + b.
    pub fn layernorm_forward<F: Float>(out: &mut [F], inp: &[F], w: &[F], b: &[F], c: usize) {
        for (o, x) in out.chunks_mut(c).zip(inp.chunks(c)) {
            let m = x.iter().map(|v| v.to_f64()).sum::<f64>() / c as f64;
            let var = x.iter().map(|v| (v.to_f64() - m).powi(2)).sum::<f64>() / c as f64;
            let s = 1.0 / (var + LN_EPS).sqrt();
            for j in 0..c {
                o[j] = F::from_f64((x[j].to_f64() - m) * s * w[j].to_f64() + b[j].to_f64());
            }
        }
    }
}

/// The explicit AVX-512 bodies; callers check [`cpu::has_avx512`] first.
mod avx512 {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// Sum of 16-lane vectors f(0), f(16), ... over c (a multiple of 16) with 4 independent
    /// accumulators (the 8-lane `sum_lanes` loops were one dependency chain per row).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn sum16(c: usize, f: impl Fn(usize) -> __m512) -> f32 {
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut j = 0;
        while j < c {
            acc[(j / 16) % 4] = _mm512_add_ps(acc[(j / 16) % 4], f(j));
            j += 16;
        }
        _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ))
    }

    /// LayerNorm forward rows (kernels' `ln_forward_rows`, f32): per row of c, mean, variance
    /// (two passes), rstd = 1 / sqrt(var + eps), out = (x - mean) rstd w + b. Requires
    /// [`avx512`] and c % 16 == 0.
    #[allow(clippy::too_many_arguments)]
    pub fn ln_forward_rows(
        o: &mut [f32],
        mu: &mut [f32],
        rs: &mut [f32],
        x: &[f32],
        w: &[f32],
        b: &[f32],
        c: usize,
        eps: f32,
    ) {
        let rows = mu.len();
        assert!(
            c.is_multiple_of(16) && rs.len() == rows && o.len() >= rows * c && x.len() >= rows * c
        );
        assert!(w.len() >= c && b.len() >= c);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: all indices below are < rows * c or < c (asserted); avx512 checked by callers.
        unsafe {
            ln_forward_imp(
                o.as_mut_ptr(),
                mu,
                rs,
                x.as_ptr(),
                w.as_ptr(),
                b.as_ptr(),
                c,
                eps,
            )
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (o, mu, rs, x, w, b, c, eps);
    }

    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn ln_forward_imp(
        o: *mut f32,
        mu: &mut [f32],
        rs: &mut [f32],
        x: *const f32,
        w: *const f32,
        b: *const f32,
        c: usize,
        eps: f32,
    ) {
        let inv_c = 1.0 / c as f32;
        for r in 0..mu.len() {
            let xr = x.add(r * c);
            let or = o.add(r * c);
            let m = sum16(c, |j| _mm512_loadu_ps(xr.add(j))) * inv_c;
            let mv = _mm512_set1_ps(m);
            let var = sum16(c, |j| {
                let d = _mm512_sub_ps(_mm512_loadu_ps(xr.add(j)), mv);
                _mm512_mul_ps(d, d)
            }) * inv_c;
            let s = 1.0 / (var + eps).sqrt();
            let sv = _mm512_set1_ps(s);
            let mut j = 0;
            while j < c {
                let n = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(xr.add(j)), mv), sv);
                let y = _mm512_fmadd_ps(n, _mm512_loadu_ps(w.add(j)), _mm512_loadu_ps(b.add(j)));
                _mm512_storeu_ps(or.add(j), y);
                j += 16;
            }
            mu[r] = m;
            rs[r] = s;
        }
    }

    /// The read-only inputs of [`ln_backward_rows`]: x, dout, w, mean, rstd.
    pub type LnInputs<'a> = (&'a [f32], &'a [f32], &'a [f32], &'a [f32], &'a [f32]);

    /// LayerNorm backward rows (kernels' `ln_backward_rows`, f32): for rows r0.. (as many as
    /// `dx` holds), with norm = (x - mean) rstd and dnorm = w d: pb += d, pw += norm d,
    /// dx += (dnorm - mean(dnorm) - norm mean(dnorm norm)) rstd. Requires [`avx512`] and
    /// c % 16 == 0.
    #[allow(clippy::too_many_arguments)]
    pub fn ln_backward_rows(
        (x, d, w, mean, rstd): LnInputs<'_>,
        c: usize,
        r0: usize,
        pw: &mut [f32],
        pb: &mut [f32],
        dx: &mut [f32],
    ) {
        let rows = dx.len() / c;
        assert!(c.is_multiple_of(16) && pw.len() >= c && pb.len() >= c && w.len() >= c);
        assert!(x.len() >= (r0 + rows) * c && d.len() >= (r0 + rows) * c);
        assert!(mean.len() >= r0 + rows && rstd.len() >= r0 + rows);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: rows r0..r0+rows of x and d, and dx's rows, are inside (asserted); avx512
        // checked by callers.
        unsafe {
            let inv_c = _mm512_set1_ps(1.0 / c as f32);
            let (w, pw, pb) = (w.as_ptr(), pw.as_mut_ptr(), pb.as_mut_ptr());
            for r in 0..rows {
                let row = r0 + r;
                ln_backward_row(
                    x.as_ptr().add(row * c),
                    d.as_ptr().add(row * c),
                    w,
                    (mean[row], rstd[row]),
                    (pw, pb),
                    dx.as_mut_ptr().add(r * c),
                    c,
                    inv_c,
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn ln_backward_row(
        x: *const f32,
        d: *const f32,
        w: *const f32,
        (m, s): (f32, f32),
        (pw, pb): (*mut f32, *mut f32),
        dx: *mut f32,
        c: usize,
        inv_c: __m512,
    ) {
        let (mv, sv) = (_mm512_set1_ps(m), _mm512_set1_ps(s));
        let norm = |j: usize| _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x.add(j)), mv), sv);
        let dnorm = |j: usize| _mm512_mul_ps(_mm512_loadu_ps(w.add(j)), _mm512_loadu_ps(d.add(j)));
        let mut a1 = [_mm512_setzero_ps(); 2];
        let mut a2 = [_mm512_setzero_ps(); 2];
        let mut j = 0;
        while j < c {
            let k = (j / 16) % 2;
            let dn = dnorm(j);
            a1[k] = _mm512_add_ps(a1[k], dn);
            a2[k] = _mm512_fmadd_ps(dn, norm(j), a2[k]);
            j += 16;
        }
        let dnorm_mean = _mm512_mul_ps(
            _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(a1[0], a1[1]))),
            inv_c,
        );
        let dnorm_norm_mean = _mm512_mul_ps(
            _mm512_set1_ps(_mm512_reduce_add_ps(_mm512_add_ps(a2[0], a2[1]))),
            inv_c,
        );
        j = 0;
        while j < c {
            let n = norm(j);
            let dv = _mm512_loadu_ps(d.add(j));
            _mm512_storeu_ps(pb.add(j), _mm512_add_ps(_mm512_loadu_ps(pb.add(j)), dv));
            _mm512_storeu_ps(
                pw.add(j),
                _mm512_fmadd_ps(n, dv, _mm512_loadu_ps(pw.add(j))),
            );
            let g = _mm512_fnmadd_ps(n, dnorm_norm_mean, _mm512_sub_ps(dnorm(j), dnorm_mean));
            let xo = _mm512_loadu_ps(dx.add(j));
            _mm512_storeu_ps(dx.add(j), _mm512_fmadd_ps(g, sv, xo));
            j += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::ops::testutil::*;

    #[test]
    fn layernorm_forward_matches_reference() {
        for &(n, c) in &[(7, 13), (5, 128), (3, 8)] {
            let inp: Vec<f32> = rnd(n * c, 61)
                .iter()
                .map(|x| (x * 3.0 + 0.7) as f32)
                .collect();
            let w: Vec<f32> = rnd(c, 62).iter().map(|&x| x as f32).collect();
            let b: Vec<f32> = rnd(c, 63).iter().map(|&x| x as f32).collect();
            let (mut o, mut m, mut r) = (vec![0f32; n * c], vec![0f32; n], vec![0f32; n]);
            layernorm_forward(&mut o, &mut m, &mut r, &inp, &w, &b, c);
            let mut want = vec![0f32; n * c];
            reference::layernorm_forward(&mut want, &inp, &w, &b, c);
            for (x, y) in o.iter().zip(&want) {
                assert!((x - y).abs() < 2e-5, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn layernorm_backward_matches_fd() {
        let (n, c) = (6, 8);
        let inp: Vec<f64> = rnd(n * c, 5).iter().map(|x| x * 3.0 + 0.5).collect();
        let w = rnd(c, 6);
        let b = rnd(c, 7);
        let g = rnd(n * c, 8);
        let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
            let (mut o, mut m, mut r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut o, &mut m, &mut r, x, w, b, c);
            (o, m, r)
        };
        let (_, m, r) = fwd(&inp, &w, &b);
        let mut dinp = vec![0.0; n * c];
        let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
        let mut scratch = vec![0.0; LN_BLOCKS * 2 * c];
        layernorm_backward(
            &mut dinp,
            &mut dw,
            &mut db,
            &mut scratch,
            &g,
            &inp,
            &w,
            &m,
            &r,
            c,
        );
        close(
            &fd(&inp, &|x| dot(&fwd(x, &w, &b).0, &g)),
            &dinp,
            1e-6,
            "dinp",
        );
        close(&fd(&w, &|x| dot(&fwd(&inp, x, &b).0, &g)), &dw, 1e-6, "dw");
        close(&fd(&b, &|x| dot(&fwd(&inp, &w, x).0, &g)), &db, 1e-6, "db");
    }

    /// AVX-512 LayerNorm rows (forward: out, mean, rstd; backward: dx, dw, db partials, all
    /// accumulating) against the f64 formulas.
    #[test]
    fn layernorm_rows_match_f64() {
        if !cpu::has_avx512() {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        for c in [16usize, 48, 128] {
            let rows = 5;
            let x: Vec<f32> = rnd_f32(rows * c, 7).iter().map(|v| v * 2.0 + 0.5).collect();
            let (w, b, d) = (rnd_f32(c, 8), rnd_f32(c, 9), rnd_f32(rows * c, 10));
            let (mut o, mut mu, mut rs) =
                (vec![0f32; rows * c], vec![0f32; rows], vec![0f32; rows]);
            avx512::ln_forward_rows(&mut o, &mut mu, &mut rs, &x, &w, &b, c, 1e-5);
            let (mut pw, mut pb) = (vec![0.25f32; c], vec![-0.5f32; c]);
            let mut dx = vec![1f32; (rows - 1) * c];
            avx512::ln_backward_rows((&x, &d, &w, &mu, &rs), c, 1, &mut pw, &mut pb, &mut dx);
            let (mut wpw, mut wpb) = (vec![0.25f64; c], vec![-0.5f64; c]);
            for r in 0..rows {
                let xr: Vec<f64> = x[r * c..][..c].iter().map(|&v| v as f64).collect();
                let m = xr.iter().sum::<f64>() / c as f64;
                let var = xr.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / c as f64;
                let s = 1.0 / (var + 1e-5).sqrt();
                assert!((mu[r] as f64 - m).abs() < 1e-6 && (rs[r] as f64 - s).abs() < 1e-5 * s);
                let norm: Vec<f64> = xr.iter().map(|v| (v - m) * s).collect();
                for j in 0..c {
                    let want = norm[j] * w[j] as f64 + b[j] as f64;
                    let got = o[r * c + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "c {c} out ({r},{j}): {got} vs {want}"
                    );
                }
                if r == 0 {
                    continue;
                }
                let dr: Vec<f64> = d[r * c..][..c].iter().map(|&v| v as f64).collect();
                let dn: Vec<f64> = (0..c).map(|j| w[j] as f64 * dr[j]).collect();
                let a = dn.iter().sum::<f64>() / c as f64;
                let bb = (0..c).map(|j| dn[j] * norm[j]).sum::<f64>() / c as f64;
                for j in 0..c {
                    wpb[j] += dr[j];
                    wpw[j] += norm[j] * dr[j];
                    let want = 1.0 + (dn[j] - a - norm[j] * bb) * s;
                    let got = dx[(r - 1) * c + j] as f64;
                    assert!(
                        (got - want).abs() < 1e-4,
                        "c {c} dx ({r},{j}): {got} vs {want}"
                    );
                }
            }
            for j in 0..c {
                assert!((pw[j] as f64 - wpw[j]).abs() < 1e-4, "c {c} dw[{j}]");
                assert!((pb[j] as f64 - wpb[j]).abs() < 1e-4, "c {c} db[{j}]");
            }
        }
    }
}
