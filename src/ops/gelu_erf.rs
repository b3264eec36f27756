//! GELU, exact: `x Phi(x)` with `Phi(x) = (1 + erf(x / sqrt 2)) / 2`, PyTorch's
//! `nn.GELU()` and transformers' `activation_function: "gelu"` (nanoGPT's MLP), elementwise
//! on `(N, 4C)` rows with the MLP's bias fused in, as [`super::gelu`] does for the tanh
//! approximation.
//!
//! Entry points: [`bias_gelu_erf_forward_train`] (training: out = GELU(inp + bias) and
//! inp <- GELU'(inp + bias), so the backward is [`super::gelu_backward_stored`]'s one
//! multiply), [`bias_gelu_erf_forward`] (evaluation: inp <- inp + bias) and
//! [`gelu_erf_inplace`] (decode). All three compute the same bits for the same input.
//!
//! # Why written here, and how accurate
//! Rust's std has no `erf`. The f32 path uses Abramowitz and Stegun 7.1.26,
//! `erfc(z) = t (a1 + t (a2 + ... + t a5)) e^{-z^2}` with `t = 1 / (1 + p z)`, whose error
//! is at most 1.5e-7 absolute for z >= 0: Phi is then within 7.5e-8 of the truth, under one
//! f32 ulp of 1 (with the f32 roundings, GELU is within 2.9e-7 |x| of the f64 formula on a
//! dense grid, tested), and `e^{-x^2/2}` serves both Phi and the derivative
//! `Phi(x) + x e^{-x^2/2} / sqrt(2 pi)`. One branch-free loop that LLVM vectorizes with
//! [`simd::exp`] (no lookup, no per-range branches as in a libm erf). The f64 path (the
//! finite-difference checks) uses [`erf_f64`], accurate to ~1e-15, so the derivative
//! checks there see no approximation error.

use crate::ops::float::{as_f32, as_f32_mut, Float};
use crate::ops::par::{self, rows_per_task};
use crate::ops::{cpu, simd};
use rayon::prelude::*;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2 pi).
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// erf(z) in f64 to ~1e-15: the Taylor series for |z| < 2.5, the continued fraction of
/// erfc beyond (Abramowitz and Stegun 7.1.5 and 7.1.14).
pub fn erf_f64(z: f64) -> f64 {
    if z.is_nan() {
        return z;
    }
    let a = z.abs();
    let e = if a < 2.5 {
        // erf(a) = 2/sqrt(pi) sum_n (-1)^n a^(2n+1) / (n! (2n+1))
        let (mut term, mut sum, a2) = (a, a, a * a);
        for n in 1..200 {
            term *= -a2 / n as f64;
            let next = term / (2 * n + 1) as f64;
            sum += next;
            if next.abs() < 1e-18 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else {
        // erfc(a) = e^{-a^2} / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...))))
        let mut f = a;
        for n in (1..=120).rev() {
            f = a + (n as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    if z < 0.0 {
        -e
    } else {
        e
    }
}

/// (GELU(x), GELU'(x)) in f32 (see the module doc for the accuracy).
#[inline(always)]
fn gelu_and_grad(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let z = x.abs() * FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let e = simd::exp(-0.5 * x * x); // e^{-z^2}
    let tail = 0.5 * poly * e; // Phi(-|x|) = erfc(z) / 2
    let cdf = if x >= 0.0 { 1.0 - tail } else { tail };
    (x * cdf, cdf + x * (INV_SQRT_2PI as f32) * e)
}

/// (GELU(x), GELU'(x)) in f64 through [`erf_f64`].
fn gelu_and_grad_f64(x: f64) -> (f64, f64) {
    let cdf = 0.5 * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2));
    (x * cdf, cdf + x * INV_SQRT_2PI * (-0.5 * x * x).exp())
}

/// One task's rows: x += bias, out = GELU(x), and x <- GELU'(x) when `keep_grad`.
fn rows<F: Float>(out: &mut [F], x: &mut [F], bias: &[F], keep_grad: bool) {
    let oc = bias.len();
    if let (Some(o), Some(x), Some(b)) = (as_f32_mut(out), as_f32_mut(x), as_f32(bias)) {
        cpu::avx512(
            #[inline(always)]
            || {
                for (orow, xrow) in o.chunks_mut(oc).zip(x.chunks_mut(oc)) {
                    for ((o, x), &b) in orow.iter_mut().zip(xrow.iter_mut()).zip(b) {
                        let (y, g) = gelu_and_grad(*x + b);
                        *o = y;
                        *x = if keep_grad { g } else { *x + b };
                    }
                }
            },
        );
        return;
    }
    for (orow, xrow) in out.chunks_mut(oc).zip(x.chunks_mut(oc)) {
        for ((o, x), &b) in orow.iter_mut().zip(xrow.iter_mut()).zip(bias) {
            let v = *x + b;
            let (y, g) = gelu_and_grad_f64(v.to_f64());
            *o = F::from_f64(y);
            *x = if keep_grad { F::from_f64(g) } else { v };
        }
    }
}

fn bias_rows<F: Float>(out: &mut [F], inp: &mut [F], bias: &[F], oc: usize, keep_grad: bool) {
    let n = inp.len() / oc;
    let rpt = rows_per_task(n, oc);
    out[..n * oc]
        .par_chunks_mut(rpt * oc)
        .zip(inp[..n * oc].par_chunks_mut(rpt * oc))
        .with_min_len(par::min_len())
        .for_each(|(o, x)| rows(o, x, &bias[..oc], keep_grad));
}

/// inp(N, OC) += bias(OC) per row, then out(N, OC) = GELU(inp), exact (evaluation).
pub fn bias_gelu_erf_forward<F: Float>(out: &mut [F], inp: &mut [F], bias: &[F], oc: usize) {
    bias_rows(out, inp, bias, oc, false)
}

/// out(N, OC) = GELU(inp + bias) and inp <- GELU'(inp + bias), exact (training; the
/// backward is [`super::gelu_backward_stored`]).
pub fn bias_gelu_erf_forward_train<F: Float>(out: &mut [F], inp: &mut [F], bias: &[F], oc: usize) {
    bias_rows(out, inp, bias, oc, true)
}

/// x <- GELU(x), exact (decode).
pub fn gelu_erf_inplace<F: Float>(x: &mut [F]) {
    if let Some(x) = as_f32_mut(x) {
        cpu::avx512(
            #[inline(always)]
            || {
                for v in x.iter_mut() {
                    *v = gelu_and_grad(*v).0;
                }
            },
        );
        return;
    }
    for v in x.iter_mut() {
        *v = F::from_f64(gelu_and_grad_f64(v.to_f64()).0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f64 reference against published values (A&S table 7.1 and erfc tails) and
    /// continuous across its two methods.
    #[test]
    fn erf_f64_matches_known_values() {
        let known = [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (-1.0, -0.842_700_792_949_714_9),
        ];
        for (z, want) in known {
            assert!(
                (erf_f64(z) - want).abs() < 1e-15,
                "erf({z}) = {}",
                erf_f64(z)
            );
        }
        let erfc3 = 1.0 - erf_f64(3.0);
        assert!(
            (erfc3 / 2.209_049_699_858_544e-5 - 1.0).abs() < 1e-10,
            "{erfc3}"
        );
        let (below, above) = (erf_f64(2.5 - 1e-12), erf_f64(2.5));
        assert!((below - above).abs() < 1e-14, "{below} vs {above}");
        assert_eq!(erf_f64(0.0), 0.0);
        assert!(erf_f64(f64::NAN).is_nan());
    }

    /// The f32 kernel against the f64 formula on a dense grid (errors relative to |x| for
    /// the forward, as for the tanh GELU; absolute for the derivative in [-0.17, 1.13]).
    #[test]
    fn f32_gelu_erf_matches_f64_on_a_dense_grid() {
        let mut x: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        x.extend([-1e4f32, -300.0, -40.0, 40.0, 300.0, 1e4, 1e-30, -1e-30, 0.0]);
        let n = x.len();
        let mut out = vec![0f32; n];
        let mut g = x.clone();
        bias_gelu_erf_forward_train(&mut out, &mut g, &vec![0f32; n], n);
        let (mut worst_f, mut worst_b) = (0f64, 0f64);
        for i in 0..n {
            let (want, dwant) = gelu_and_grad_f64(x[i] as f64);
            worst_f = worst_f.max((out[i] as f64 - want).abs() / (x[i] as f64).abs().max(1e-30));
            worst_b = worst_b.max((g[i] as f64 - dwant).abs());
        }
        eprintln!("gelu erf f32: fwd {worst_f:.2e} (of |x|), bwd {worst_b:.2e}");
        // 2.9e-7 measured: A&S's 7.5e-8 on Phi plus the f32 roundings of exp and the
        // polynomial (the tanh kernel's bound is 2.5e-7).
        assert!(worst_f < 3.5e-7, "forward error {worst_f:e}");
        assert!(worst_b < 5e-7, "derivative error {worst_b:e}");
    }

    /// The stored derivative is the finite-difference slope of the forward (f64), and the
    /// bias is added before the activation.
    #[test]
    fn derivative_matches_finite_differences() {
        let oc = 7;
        let x: Vec<f64> = (0..21).map(|i| (i as f64 - 10.0) * 0.37).collect();
        let bias: Vec<f64> = (0..oc).map(|j| 0.1 * j as f64 - 0.3).collect();
        let mut out = vec![0.0; x.len()];
        let mut g = x.clone();
        bias_gelu_erf_forward_train(&mut out, &mut g, &bias, oc);
        let h = 1e-6;
        for i in 0..x.len() {
            let v = x[i] + bias[i % oc];
            let fd = (gelu_and_grad_f64(v + h).0 - gelu_and_grad_f64(v - h).0) / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-8, "x {v}: fd {fd} vs {}", g[i]);
            assert_eq!(out[i], gelu_and_grad_f64(v).0);
        }
    }

    /// Training, evaluation and decode compute the same bits (f32), with the bias fused.
    #[test]
    fn train_eval_and_decode_agree_bitwise() {
        let oc = 48;
        let x: Vec<f32> = (0..oc * 5)
            .map(|i| ((i * 37) % 101) as f32 * 0.09 - 4.5)
            .collect();
        let bias: Vec<f32> = (0..oc).map(|j| j as f32 * 0.01).collect();
        let (mut o1, mut o2) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        let (mut g, mut xb) = (x.clone(), x.clone());
        bias_gelu_erf_forward_train(&mut o1, &mut g, &bias, oc);
        bias_gelu_erf_forward(&mut o2, &mut xb, &bias, oc);
        assert_eq!(o1, o2);
        let mut d = xb.clone();
        gelu_erf_inplace(&mut d);
        assert_eq!(d, o1);
        for i in 0..x.len() {
            assert_eq!(xb[i], x[i] + bias[i % oc]);
        }
    }
}
