//! The scalar type the kernels are written over: `f32` for real work, `f64` for the
//! finite-difference gradient checks (which need the extra precision to be meaningful).

use std::fmt::Debug;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A floating-point scalar the kernels can run on (`f32` or `f64`; `gemm` handles both).
pub trait Float:
    Copy
    + Send
    + Sync
    + Default
    + Debug
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Number of bytes (4 or 8), for safetensors I/O.
    const BYTES: usize;
    /// Converts (rounding) from f64.
    fn from_f64(x: f64) -> Self;
    /// Widens to f64.
    fn to_f64(self) -> f64;
    /// e^x.
    fn exp(self) -> Self;
    /// tanh(x).
    fn tanh(self) -> Self;
    /// The logistic function 1 / (1 + e^-x), in a form f32 loops vectorize
    /// ([`crate::ops::simd::sigmoid`]; f64: std's exp).
    fn sigmoid(self) -> Self;
    /// tanh(x) in a form f32 loops vectorize ([`crate::ops::simd::tanh_rel`], relative
    /// error ~2e-7 everywhere; f64: std's).
    fn tanh_vec(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Natural log.
    fn ln(self) -> Self;
    /// The larger of two values.
    fn max(self, other: Self) -> Self;
    /// True unless NaN or infinite.
    fn is_finite(self) -> bool;
    /// Converts from usize.
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

macro_rules! impl_float {
    ($t:ty, $bytes:expr, $sigmoid:expr, $tanh_vec:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const BYTES: usize = $bytes;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn sigmoid(self) -> Self {
                $sigmoid(self)
            }
            #[inline(always)]
            fn tanh_vec(self) -> Self {
                $tanh_vec(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}
impl_float!(
    f32,
    4,
    crate::ops::simd::sigmoid,
    crate::ops::simd::tanh_rel
);
impl_float!(f64, 8, |x: f64| 1.0 / (1.0 + (-x).exp()), f64::tanh);
/// Views a generic slice as f32 when F is f32 (the SIMD fast paths are f32-only).
#[inline(always)]
pub(crate) fn as_f32_mut<F: Float>(x: &mut [F]) -> Option<&mut [f32]> {
    if std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() {
        // SAFETY: F is f32.
        Some(unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len()) })
    } else {
        None
    }
}

/// Views a generic slice as f32 when F is f32.
#[inline(always)]
pub(crate) fn as_f32<F: Float>(x: &[F]) -> Option<&[f32]> {
    if std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() {
        // SAFETY: F is f32.
        Some(unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()) })
    } else {
        None
    }
}

/// Sum of f(0..n) with 8 independent partial sums (a dependency chain 8x shorter than a
/// sequential sum, and vectorizable; differs from it by rounding only).
#[inline(always)]
pub(crate) fn sum_lanes<F: Float>(n: usize, f: impl Fn(usize) -> F) -> F {
    let mut acc = [F::ZERO; 8];
    let full = n / 8 * 8;
    let mut j = 0;
    while j < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(j + l);
        }
        j += 8;
    }
    let mut rest = F::ZERO;
    for j in full..n {
        rest += f(j);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + rest
}
