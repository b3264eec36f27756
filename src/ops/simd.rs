//! f32 fast paths for the non-GEMM hot loops: a polynomial `exp` (Cephes expf, ~2 ulp)
//! and `tanh` built on it, written so LLVM vectorizes them, and the loops that use them
//! (softmax, softmax + cross-entropy, GELU, dot products with 8 partial sums).
//!
//! Each public function runs its loop through [`crate::ops::cpu`]'s run-time dispatch: 16-wide
//! AVX-512 for the elementwise loops of training, 8-wide AVX2+FMA for the rest, baseline
//! x86-64 elsewhere, the same bits in every variant.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer

/// e^x for f32 (relative error ~2e-7; clamps to the finite range).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let z = r * r;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 5e-1)
        * z
        + r
        + 1.0;
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

/// tanh(x) = 1 - 2 / (e^{2x} + 1) (absolute error ~1e-7).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// tanh(x) with relative error ~2e-7 everywhere (an odd polynomial for |x| < 0.625,
/// Cephes tanhf's, where `1 - 2 / (e^2x + 1)` would cancel), branch-free so it vectorizes.
#[inline(always)]
pub fn tanh_rel(x: f32) -> f32 {
    let z = x * x;
    let small =
        ((((-5.704_988_7e-3 * z + 2.063_909e-2) * z - 5.373_971_6e-2) * z + 1.333_144_2e-1) * z
            - 3.333_328e-1)
            * z
            * x
            + x;
    let big = tanh(x);
    if x.abs() < 0.625 {
        small
    } else {
        big
    }
}

/// 1 / (1 + e^-x) (relative error ~3e-7).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rem = chunks.remainder();
    for ch in chunks {
        for j in 0..8 {
            m[j] = if ch[j] > m[j] { ch[j] } else { m[j] };
        }
    }
    let mut best = f32::NEG_INFINITY;
    for &v in m.iter().chain(rem) {
        best = if v > best { v } else { best };
    }
    best
}

/// x <- exp((x - shift) * scale) in place; returns the sum.
#[inline(always)]
fn exp_shift_sum(x: &mut [f32], shift: f32, scale: f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact_mut(8);
    for ch in &mut chunks {
        for j in 0..8 {
            let e = exp((ch[j] - shift) * scale);
            ch[j] = e;
            acc[j] += e;
        }
    }
    let mut s = 0.0;
    for v in chunks.into_remainder() {
        let e = exp((*v - shift) * scale);
        *v = e;
        s += e;
    }
    acc.iter().sum::<f32>() + s
}

/// row <- softmax(row * scale).
pub fn softmax_scaled(row: &mut [f32], scale: f32) {
    crate::ops::cpu::avx512(
        #[inline(always)]
        || {
            let m = max8(row);
            let s = exp_shift_sum(row, m, scale);
            let inv = 1.0 / s;
            for x in row.iter_mut() {
                *x *= inv;
            }
        },
    )
}

/// Fused softmax + cross-entropy of one row: row <- softmax(row); returns
/// -log p\[target\] computed from the logit (exact even when p underflows).
pub fn softmax_ce_row(row: &mut [f32], target: usize) -> f32 {
    crate::ops::cpu::avx512(
        #[inline(always)]
        || scaled_softmax_ce(row, target, 1.0),
    )
}

/// Fused softmax + cross-entropy + its gradient for one row of a mean loss: row <-
/// (softmax(row) - onehot(target)) * scale; returns -log p\[target\] (as
/// [`softmax_ce_row`]). Saves the separate scaling pass over the logits.
pub fn softmax_ce_grad_row(row: &mut [f32], target: usize, scale: f32) -> f32 {
    crate::ops::cpu::avx512(
        #[inline(always)]
        || {
            let loss = scaled_softmax_ce(row, target, scale);
            row[target] -= scale;
            loss
        },
    )
}

/// row <- softmax(row) * scale; returns -log p\[target\] from the logit. The shared body
/// of [`softmax_ce_row`] (scale 1: `1.0 / s` is the same division as `scale / s`) and
/// [`softmax_ce_grad_row`].
#[inline(always)]
fn scaled_softmax_ce(row: &mut [f32], target: usize, scale: f32) -> f32 {
    let logit = row[target];
    let m = max8(row);
    let s = exp_shift_sum(row, m, 1.0);
    let k = scale / s;
    for x in row.iter_mut() {
        *x *= k;
    }
    -(logit - m - s.ln())
}

/// log(sum exp(row)) for a long row (a decode step's vocabulary): the polynomial exp
/// in 8 f32 lanes per 256-element chunk, chunk sums added in f64, so the relative
/// error stays ~1e-7 (tested against the f64 libm version) at ~1/30 of its time.
pub fn logsumexp(row: &[f32]) -> f32 {
    crate::ops::cpu::avx512(
        #[inline(always)]
        || {
            let m = max8(row);
            if m == f32::NEG_INFINITY || m.is_nan() {
                return m;
            }
            let mut total = 0f64;
            for ch in row.chunks(256) {
                let mut acc = [0f32; 8];
                let c8 = ch.chunks_exact(8);
                let rem = c8.remainder();
                for v in c8 {
                    for j in 0..8 {
                        acc[j] += exp(v[j] - m);
                    }
                }
                let mut s = 0f32;
                for &v in rem {
                    s += exp(v - m);
                }
                total += (acc.iter().sum::<f32>() + s) as f64;
            }
            (m as f64 + total.ln()) as f32
        },
    )
}

/// row <- log_softmax(row), through [`logsumexp`]: the log-probabilities of a row of
/// logits over a vocabulary (every decode step, every scored position).
pub fn log_softmax(row: &mut [f32]) {
    let lse = logsumexp(row);
    for x in row.iter_mut() {
        *x -= lse;
    }
}

const GELU_S: f32 = 0.797_884_6;

/// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
pub fn gelu(out: &mut [f32], inp: &[f32]) {
    crate::ops::cpu::avx512(
        #[inline(always)]
        || {
            for (o, &x) in out.iter_mut().zip(inp) {
                *o = 0.5 * x * (1.0 + tanh(GELU_S * (x + 0.044715 * x * x * x)));
            }
        },
    )
}

/// d <- d * gelu'(inp).
pub fn gelu_backward(d: &mut [f32], inp: &[f32]) {
    crate::ops::cpu::avx512(
        #[inline(always)]
        || {
            for (dd, &x) in d.iter_mut().zip(inp) {
                // tanh and sech^2 from one exp; sech^2 = 4e/(e+1)^2 avoids 1 - th^2 cancelling.
                let e = exp(2.0 * GELU_S * (x + 0.044715 * x * x * x));
                let inv = 1.0 / (e + 1.0);
                let th = 1.0 - 2.0 * inv;
                let sech2 = (4.0 * inv) * (e * inv);
                let g =
                    0.5 * (1.0 + th) + 0.5 * x * sech2 * GELU_S * (1.0 + 3.0 * 0.044715 * x * x);
                *dd *= g;
            }
        },
    )
}

/// Dot product with 8 partial sums (vectorizes; the summation order differs from a
/// sequential loop by rounding only).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    crate::ops::cpu::avx2(
        #[inline(always)]
        || {
            let n = a.len().min(b.len());
            let (a, b) = (&a[..n], &b[..n]);
            let mut acc = [0f32; 8];
            let ca = a.chunks_exact(8);
            let cb = b.chunks_exact(8);
            let (ra, rb) = (ca.remainder(), cb.remainder());
            for (x, y) in ca.zip(cb) {
                for j in 0..8 {
                    acc[j] += x[j] * y[j];
                }
            }
            let mut s = 0.0;
            for (x, y) in ra.iter().zip(rb) {
                s += x * y;
            }
            acc.iter().sum::<f32>() + s
        },
    )
}

/// y += a * x.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    crate::ops::cpu::avx2(
        #[inline(always)]
        || {
            for (yy, &xx) in y.iter_mut().zip(x) {
                *yy += a * xx;
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_tanh_are_accurate() {
        let mut worst: f64 = 0.0;
        for i in -8700..8800 {
            let x = i as f32 * 0.01;
            let got = exp(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 5e-7, "exp rel err {worst}");
        for i in -2000..2000 {
            let x = i as f32 * 0.005;
            assert!(
                (tanh(x) as f64 - (x as f64).tanh()).abs() < 3e-7,
                "tanh({x})"
            );
        }
        let mut worst: f64 = 0.0;
        for i in -40000..40000 {
            let x = i as f32 * 2.5e-4 * (1.0 + (i as f32).abs() * 1e-3);
            let want = (x as f64).tanh();
            if want != 0.0 {
                worst = worst.max((tanh_rel(x) as f64 - want).abs() / want.abs());
            }
            // Relative where e^-x is in f32's range (87 is exp's clamp), absolute beyond.
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            let err = (sigmoid(x) as f64 - s).abs();
            worst = worst.max(if x > -80.0 { err / s } else { err });
        }
        assert!(worst < 5e-7, "tanh_rel / sigmoid rel err {worst}");
        assert_eq!(tanh_rel(0.0), 0.0);
        assert_eq!(tanh_rel(100.0), 1.0);
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn fast_logsumexp_matches_f64() {
        for n in [1usize, 7, 300, 50257] {
            let row: Vec<f32> = (0..n)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 12) as f32 / 1e5 - 20.0)
                .collect();
            let want = crate::model::logsumexp(&row);
            let got = logsumexp(&row) as f64;
            assert!(
                (got - want).abs() < 2e-6 * (1.0 + want.abs()),
                "{n}: {got} vs {want}"
            );
        }
        assert_eq!(logsumexp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
    }

    #[test]
    fn row_kernels_match_plain_versions() {
        let row: Vec<f32> = (0..37).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.7).collect();
        let mut a = row.clone();
        let loss = softmax_ce_row(&mut a, 5);
        let lse = crate::model::logsumexp(&row);
        assert!((loss as f64 - (lse - row[5] as f64)).abs() < 1e-5);
        for (p, &x) in a.iter().zip(&row) {
            assert!((*p as f64 - (x as f64 - lse).exp()).abs() < 1e-6);
        }
        let b: Vec<f32> = row.iter().map(|x| x * 0.5 + 0.1).collect();
        let want: f64 = row
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64) * (*y as f64))
            .sum();
        assert!((dot(&row, &b) as f64 - want).abs() < 1e-4);
    }
}
