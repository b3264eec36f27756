//! The one place that asks the CPU what it has, and run-time dispatch for loops written
//! in plain Rust.
//!
//! Every kernel that picks a body by CPU feature asks this module: [`has_avx2`],
//! [`has_avx512`], [`has_avx`], [`has_avx512_vnni`], and [`Isa`] for the decode kernels
//! that come in scalar / AVX2 / AVX-512 families.
//!
//! arlm ships one binary for every x86-64, whose baseline is SSE2. A plain loop (an
//! elementwise pass, a sum over fixed-width partial sums) vectorizes only as wide as the
//! target features the compiler may assume. [`avx2`] and [`avx512`] run a closure inside
//! a function compiled for AVX2+FMA or AVX-512, chosen at run time with
//! `is_x86_feature_detected!` (std caches the answer), so the closure's loops get 8- or
//! 16-wide vectors where the CPU has them and the binary still runs everywhere.
//!
//! Same bits in every variant: Rust never contracts `a * b + c` into an FMA and LLVM keeps
//! float reductions in source order, so the widths change speed, not results. (Kernels
//! written with intrinsics, whose arithmetic differs per ISA, ask the `has_*` checks
//! here and call their bodies directly. Matmuls go to `gemm`, which picks its own
//! kernels.)
//!
//! This is the one dispatch mechanism for such loops: the wrapped function stays a
//! normal safe function, generic or not. **Mark the closure `#[inline(always)]`**
//! (`cpu::avx2(#[inline(always)] || ...)`): without it LLVM may compile the closure as a
//! function of its own, without the features, and the feature-enabled wrapper becomes a
//! bare jump to it (seen in objdump for the softmax and an attention-backward loop).

/// Runs `f` compiled for AVX2+FMA when the CPU has them, else as baseline x86-64.
#[inline(always)]
pub fn avx2<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn go<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if has_avx2() {
            // SAFETY: the CPU has the features go() was compiled for.
            return unsafe { go(f) };
        }
    }
    f()
}

/// Runs `f` compiled for AVX-512 (16-wide vectors) when the CPU has it, else as [`avx2`].
#[inline(always)]
pub fn avx512<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn go<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if has_avx512() {
            // SAFETY: the CPU has the features go() was compiled for.
            return unsafe { go(f) };
        }
    }
    avx2(f)
}

/// Whether [`avx2`] runs its AVX2+FMA variant.
#[inline(always)]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`avx512`] runs its AVX-512 variant.
#[inline(always)]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && has_avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX (the 8x8 tiled transpose).
#[inline]
pub fn has_avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has the AVX-512 VNNI integer dot products (with VL and BW) that the
/// w8a8 decode kernels use (checked once).
pub fn has_avx512_vnni() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bw")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Which family of intrinsics kernels runs (the decode matvecs come in all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    /// The best the CPU supports (AVX2 needs FMA and F16C too).
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if has_avx2() && is_x86_feature_detected!("f16c") {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every kernel family this CPU can run (for tests).
    pub fn available() -> Vec<Isa> {
        let best = Isa::detect();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i as u8 <= best as u8)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    /// Every variant computes the same bits (a sequential f32 sum and an elementwise
    /// product: what the module doc promises for plain loops).
    #[test]
    fn variants_agree_bit_for_bit() {
        let x: Vec<f32> = (0..1003)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let work = |x: &[f32]| -> (f32, Vec<f32>) {
            let mut acc = [0f32; 8];
            for ch in x.chunks_exact(8) {
                for j in 0..8 {
                    acc[j] += ch[j] * ch[j];
                }
            }
            let s = acc.iter().sum::<f32>() + x[1000..].iter().sum::<f32>();
            (s, x.iter().map(|v| v * 1.5 + 0.25).collect())
        };
        let plain = work(&x);
        assert_eq!(
            super::avx2(
                #[inline(always)]
                || work(&x)
            ),
            plain
        );
        assert_eq!(
            super::avx512(
                #[inline(always)]
                || work(&x)
            ),
            plain
        );
    }
}
