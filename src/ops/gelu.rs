//! GELU, tanh approximation (GPT-2's "gelu_new"): `0.5 x (1 + tanh(s (x + 0.044715 x^3)))`,
//! elementwise on `(N, 4C)` rows, with the MLP's bias fused in.
//!
//! Entry points: [`gelu_forward`] (out = GELU(inp)), [`gelu_inplace`] (decode),
//! [`bias_gelu_forward`] / [`bias_gelu_forward_train`] (training: add the bias, then GELU;
//! the train variant also keeps the derivative when [`gelu_keeps_derivative`]), and the
//! two backwards that match them ([`gelu_backward_stored`], [`gelu_backward_inplace`]).
//!
//! # Performance notes
//! - **AVX-512 body** (the inner `avx512` module): exp as [`simd::exp`], but 1/(e^{2y}+1) by
//!   `vrcp14ps` plus one Newton step instead of `vdivps` (the division was the
//!   bottleneck: 0.70 -> 0.46 ns/element forward). Within a few ulp of the division-based
//!   [`simd::gelu`] but not the same bits, so a machine without AVX-512 trains to slightly
//!   different bits (still deterministic per machine and thread count).
//! - **Derivative kept in the forward**: the train forward stores GELU'(x) in place of x,
//!   so the backward is one multiply ([`gelu_backward_stored`]); bit-identical to
//!   recomputing it (tested).

use crate::ops::float::{as_f32, as_f32_mut, Float};
use crate::ops::par::{self, rows_per_task};
use crate::ops::{cpu, simd};
use rayon::prelude::*;

const GELU_S: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)

/// GELU, tanh approximation (GPT-2's "gelu_new"): out = 0.5 x (1 + tanh(s (x + 0.044715 x^3))).
pub fn gelu_forward<F: Float>(out: &mut [F], inp: &[F]) {
    if let (Some(o), Some(x)) = (as_f32_mut(out), as_f32(inp)) {
        o.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .with_min_len(par::min_len())
            .for_each(|(o, x)| gelu_f32(o, x));
        return;
    }
    let s = F::from_f64(GELU_S);
    let a = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    out.par_chunks_mut(1 << 14)
        .zip(inp.par_chunks(1 << 14))
        .with_min_len(par::min_len())
        .for_each(|(o, x)| {
            for i in 0..o.len() {
                let xi = x[i];
                o[i] = half * xi * (F::ONE + (s * (xi + a * xi * xi * xi)).tanh());
            }
        });
}

/// f32 GELU: the AVX-512 build ([`avx512`]) when the CPU has it, else [`simd::gelu`].
#[inline]
fn gelu_f32(out: &mut [f32], inp: &[f32]) {
    if cpu::has_avx512() {
        avx512::forward(out, inp)
    } else {
        simd::gelu(out, inp)
    }
}

/// GELU in place (inference: the input is not needed afterwards).
pub fn gelu_inplace<F: Float>(x: &mut [F]) {
    if let Some(x) = as_f32_mut(x) {
        for ch in x.chunks_mut(256) {
            let tmp: [f32; 256] = std::array::from_fn(|i| ch.get(i).copied().unwrap_or(0.0));
            gelu_f32(ch, &tmp[..ch.len()]);
        }
        return;
    }
    let s = F::from_f64(GELU_S);
    let a = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    for xi in x.iter_mut() {
        let v = *xi;
        *xi = half * v * (F::ONE + (s * (v + a * v * v * v)).tanh());
    }
}

/// inp(N,OC) += bias per row, then out = GELU(inp): the bias of the matmul before the
/// GELU fused into the GELU pass (that matmul then runs without bias, so no separate pass
/// writes bias rows into its output). Same bits as [`crate::ops::matmul_forward`] with the bias
/// followed by [`gelu_forward`] (float addition commutes).
pub fn bias_gelu_forward<F: Float>(out: &mut [F], inp: &mut [F], bias: &[F], oc: usize) {
    let n = inp.len() / oc;
    let rpt = rows_per_task(n, oc);
    let bias = &bias[..oc];
    out[..n * oc]
        .par_chunks_mut(rpt * oc)
        .zip(inp[..n * oc].par_chunks_mut(rpt * oc))
        .with_min_len(par::min_len())
        .for_each(|(o, x)| {
            cpu::avx2(
                #[inline(always)]
                || {
                    for row in x.chunks_mut(oc) {
                        for (a, &b) in row.iter_mut().zip(bias) {
                            *a += b;
                        }
                    }
                },
            );
            match (as_f32_mut(o), as_f32(x)) {
                (Some(o), Some(x)) => gelu_f32(o, x),
                _ => gelu_forward(o, x),
            }
        });
}

/// Whether [`bias_gelu_forward_train`] leaves GELU'(x) in its `inp` (f32 on AVX-512 with
/// rows of a multiple of 16; otherwise it leaves x = inp + bias, as [`bias_gelu_forward`]).
#[inline]
pub fn gelu_keeps_derivative<F: Float>(oc: usize) -> bool {
    std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()
        && oc.is_multiple_of(16)
        && cpu::has_avx512()
}

/// The training version of [`bias_gelu_forward`]: out = GELU(inp + bias), and where
/// [`gelu_keeps_derivative`], inp <- GELU'(inp + bias) in the same pass (one pass instead
/// of a bias pass and a GELU pass; the backward is then one multiply,
/// [`gelu_backward_stored`], instead of a second exp). Same bits as [`bias_gelu_forward`]
/// followed by [`gelu_backward_inplace`] (tested).
pub fn bias_gelu_forward_train<F: Float>(out: &mut [F], inp: &mut [F], bias: &[F], oc: usize) {
    if !gelu_keeps_derivative::<F>(oc) {
        return bias_gelu_forward(out, inp, bias, oc);
    }
    let (Some(out), Some(inp), Some(bias)) = (as_f32_mut(out), as_f32_mut(inp), as_f32(bias))
    else {
        unreachable!("gelu_keeps_derivative checked F = f32")
    };
    let n = inp.len() / oc;
    let rpt = rows_per_task(n, oc);
    out[..n * oc]
        .par_chunks_mut(rpt * oc)
        .zip(inp[..n * oc].par_chunks_mut(rpt * oc))
        .with_min_len(par::min_len())
        .for_each(|(o, x)| avx512::forward_grad(o, x, &bias[..oc]));
}

/// Backward of [`bias_gelu_forward_train`] where [`gelu_keeps_derivative`]: d *= g, g the
/// stored GELU'(x).
pub fn gelu_backward_stored<F: Float>(d: &mut [F], g: &[F]) {
    d.par_chunks_mut(1 << 14)
        .zip(g.par_chunks(1 << 14))
        .with_min_len(par::min_len())
        .for_each(|(d, g)| {
            cpu::avx512(
                #[inline(always)]
                || {
                    for (a, &b) in d.iter_mut().zip(g) {
                        *a *= b;
                    }
                },
            )
        });
}

/// Backward of [`gelu_forward`], in place: d (holding dout) becomes dinp.
pub fn gelu_backward_inplace<F: Float>(d: &mut [F], inp: &[F]) {
    if let (Some(d), Some(x)) = (as_f32_mut(d), as_f32(inp)) {
        d.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .with_min_len(par::min_len())
            .for_each(|(d, x)| {
                if cpu::has_avx512() {
                    avx512::backward(d, x)
                } else {
                    simd::gelu_backward(d, x)
                }
            });
        return;
    }
    let s = F::from_f64(GELU_S);
    let a = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    let three_a = F::from_f64(3.0 * 0.044715);
    d.par_chunks_mut(1 << 14)
        .zip(inp.par_chunks(1 << 14))
        .with_min_len(par::min_len())
        .for_each(|(dd, x)| {
            for i in 0..dd.len() {
                let xi = x[i];
                let th = (s * (xi + a * xi * xi * xi)).tanh();
                let sech2 = F::ONE - th * th;
                let grad =
                    half * (F::ONE + th) + half * xi * sech2 * s * (F::ONE + three_a * xi * xi);
                dd[i] *= grad;
            }
        });
}

/// The explicit AVX-512 bodies; callers check [`cpu::has_avx512`] first.
mod avx512 {

    use crate::ops::simd;

    /// out = GELU(inp). Requires [`available`].
    pub fn forward(out: &mut [f32], inp: &[f32]) {
        let n = out.len().min(inp.len());
        let full = n / 16 * 16;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers check available(); indices stay below `full` <= both lengths.
        unsafe {
            imp::forward(out.as_mut_ptr(), inp.as_ptr(), full)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let full = 0;
        simd::gelu(&mut out[full..n], &inp[full..n]);
    }

    /// x (rows of bias.len(), a multiple of 16) <- GELU'(x + bias), out = GELU(x + bias):
    /// the bits of [`forward`] and of the factor [`backward`] multiplies by. Requires
    /// [`available`].
    pub fn forward_grad(out: &mut [f32], x: &mut [f32], bias: &[f32]) {
        let oc = bias.len();
        assert!(oc.is_multiple_of(16) && out.len() == x.len() && x.len().is_multiple_of(oc));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers check available(); every row lies inside out and x (asserted).
        unsafe {
            imp::forward_grad(
                out.as_mut_ptr(),
                x.as_mut_ptr(),
                bias.as_ptr(),
                x.len() / oc,
                oc,
            )
        };
    }

    /// d *= GELU'(inp). Requires [`available`].
    pub fn backward(d: &mut [f32], inp: &[f32]) {
        let n = d.len().min(inp.len());
        let full = n / 16 * 16;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in forward().
        unsafe {
            imp::backward(d.as_mut_ptr(), inp.as_ptr(), full)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let full = 0;
        simd::gelu_backward(&mut d[full..n], &inp[full..n]);
    }

    #[cfg(target_arch = "x86_64")]
    mod imp {
        use std::arch::x86_64::*;

        const S: f32 = 0.797_884_6; // sqrt(2/pi)
        const A: f32 = 0.044715;

        /// (x, e = exp(2 s (x + A x^3)), inv = 1 / (e + 1)) for 16 lanes; the exp is
        /// [`crate::ops::simd512`]'s polynomial with its argument clamped to [-87, 80]
        /// (so 1/(e+1) stays a normal float).
        #[inline(always)]
        unsafe fn e_inv(x: __m512) -> (__m512, __m512) {
            let one = _mm512_set1_ps(1.0);
            let x2 = _mm512_mul_ps(x, x);
            let y = _mm512_mul_ps(
                _mm512_mul_ps(_mm512_set1_ps(2.0 * S), x),
                _mm512_fmadd_ps(_mm512_set1_ps(A), x2, one),
            );
            let z = _mm512_min_ps(
                _mm512_max_ps(y, _mm512_set1_ps(-87.0)),
                _mm512_set1_ps(80.0),
            );
            let e = crate::ops::simd512::exp16_in_range(z);
            let d = _mm512_add_ps(e, one);
            let r0 = _mm512_rcp14_ps(d);
            let inv = _mm512_mul_ps(r0, _mm512_fnmadd_ps(d, r0, _mm512_set1_ps(2.0)));
            (e, inv)
        }

        /// out[..n] = x (1 - 1/(e+1)) = 0.5 x (1 + tanh(y)); n a multiple of 16.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn forward(out: *mut f32, inp: *const f32, n: usize) {
            let one = _mm512_set1_ps(1.0);
            let mut i = 0;
            while i < n {
                let x = _mm512_loadu_ps(inp.add(i));
                let (_, inv) = e_inv(x);
                _mm512_storeu_ps(out.add(i), _mm512_mul_ps(x, _mm512_sub_ps(one, inv)));
                i += 16;
            }
        }

        /// GELU'(x) from [`e_inv`]'s e and inv, as [`backward`] computes it.
        #[inline(always)]
        unsafe fn grad(x: __m512, e: __m512, inv: __m512) -> __m512 {
            let one = _mm512_set1_ps(1.0);
            let x2 = _mm512_mul_ps(x, x);
            let k = _mm512_mul_ps(
                _mm512_mul_ps(_mm512_set1_ps(2.0 * S), x),
                _mm512_fmadd_ps(_mm512_set1_ps(3.0 * A), x2, one),
            );
            let ei2 = _mm512_mul_ps(_mm512_mul_ps(e, inv), inv);
            _mm512_fmadd_ps(k, ei2, _mm512_sub_ps(one, inv))
        }

        /// Rows of oc (a multiple of 16): x <- GELU'(x + b), out = GELU(x + b).
        #[target_feature(enable = "avx512f")]
        pub unsafe fn forward_grad(
            out: *mut f32,
            x: *mut f32,
            b: *const f32,
            rows: usize,
            oc: usize,
        ) {
            let one = _mm512_set1_ps(1.0);
            for r in 0..rows {
                let (o, xr) = (out.add(r * oc), x.add(r * oc));
                let mut j = 0;
                while j < oc {
                    let xv = _mm512_add_ps(_mm512_loadu_ps(xr.add(j)), _mm512_loadu_ps(b.add(j)));
                    let (e, inv) = e_inv(xv);
                    _mm512_storeu_ps(o.add(j), _mm512_mul_ps(xv, _mm512_sub_ps(one, inv)));
                    _mm512_storeu_ps(xr.add(j), grad(xv, e, inv));
                    j += 16;
                }
            }
        }

        /// d[..n] *= (1 - inv) + 2 s x (1 + 3 A x^2) e inv^2, i.e. 0.5 (1 + tanh) +
        /// 0.5 x sech^2 s (1 + 3 A x^2) with sech^2 = 4 e inv^2; n a multiple of 16.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn backward(d: *mut f32, inp: *const f32, n: usize) {
            let mut i = 0;
            while i < n {
                let x = _mm512_loadu_ps(inp.add(i));
                let (e, inv) = e_inv(x);
                let g = grad(x, e, inv);
                let dd = _mm512_loadu_ps(d.add(i));
                _mm512_storeu_ps(d.add(i), _mm512_mul_ps(dd, g));
                i += 16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::ops::testutil::*;

    /// The AVX-512 GELU (reciprocal by rcp14 + Newton) against the f64 formula on a dense
    /// grid with large |x| and a tail shorter than a vector, and against the plain
    /// division-based f32 versions beside it. Errors are measured relative to |x| (GELU is
    /// x times a factor in [0, 1]; near -4 and below that factor underflows in f32 for
    /// every implementation, PyTorch's included) for the forward, absolute for the
    /// derivative (which lies in [-0.17, 1.13]).
    #[test]
    fn avx512_gelu_matches_f64_on_a_dense_grid() {
        if !cpu::has_avx512() {
            eprintln!("SKIPPED: no AVX-512 on this CPU");
            return;
        }
        let mut x: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        x.extend([
            -1e4f32, -300.0, -88.0, -40.0, 40.0, 88.0, 300.0, 1e4, 1e-30, -1e-30,
        ]);
        x.push(0.5); // length not a multiple of 16: the tail path too
        assert!(!x.len().is_multiple_of(16));
        let n = x.len();
        let (mut fwd, mut plain) = (vec![0f32; n], vec![0f32; n]);
        avx512::forward(&mut fwd, &x);
        simd::gelu(&mut plain, &x);
        let (mut bwd, mut plain_b) = (vec![1f32; n], vec![1f32; n]);
        avx512::backward(&mut bwd, &x);
        simd::gelu_backward(&mut plain_b, &x);
        let (mut worst_f, mut worst_b, mut vs_plain) = (0f64, 0f64, 0f64);
        for i in 0..n {
            let xd = x[i] as f64;
            let th = (GELU_S * (xd + 0.044715 * xd * xd * xd)).tanh();
            let want = 0.5 * xd * (1.0 + th);
            let dwant = 0.5 * (1.0 + th)
                + 0.5 * xd * (1.0 - th * th) * GELU_S * (1.0 + 3.0 * 0.044715 * xd * xd);
            let scale = xd.abs().max(1e-30);
            worst_f = worst_f.max((fwd[i] as f64 - want).abs() / scale);
            worst_b = worst_b.max((bwd[i] as f64 - dwant).abs());
            vs_plain = vs_plain.max((fwd[i] as f64 - plain[i] as f64).abs() / scale);
            vs_plain = vs_plain.max((bwd[i] as f64 - plain_b[i] as f64).abs());
        }
        eprintln!(
            "gelu avx512: fwd {worst_f:.2e} (of |x|), bwd {worst_b:.2e}, vs plain {vs_plain:.2e}"
        );
        assert!(worst_f < 2.5e-7, "forward error {worst_f:e}");
        assert!(worst_b < 5e-7, "backward error {worst_b:e}");
        assert!(
            vs_plain < 5e-7,
            "vs the division-based versions {vs_plain:e}"
        );
    }
}
