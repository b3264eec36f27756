//! w8a8: q8 weights times int8-quantized activations (llama.cpp's q8_0 x q8_0): each
//! matvec input is rounded once to int8 blocks of 32 with one f32 scale, and the kernel is
//! integer dot products (AVX-512 VNNI `vpdpbusd`, scalar fallback).

#[cfg(target_arch = "x86_64")]
use super::hsum256;
use super::{round_q8, Q8_BLOCK};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// An input vector rounded to int8 blocks of [`Q8_BLOCK`] with an f32 scale (max |x| / 127)
/// each, for [`WeightFormat::W8A8`](super::WeightFormat::W8A8) matrices; plus, per group of 4 inputs, -128 times the
/// sum of their int8 values (the VNNI kernel multiplies unsigned bytes `q + 128` by `xq`,
/// so it starts each group's sum at this correction).
#[derive(Debug, Clone, Default)]
pub(crate) struct ActQ8 {
    pub(super) q: Vec<i8>,
    pub(super) scales: Vec<f32>,
    corr: Vec<i32>,
}

impl ActQ8 {
    /// Quantizes `x` (reusing the buffers).
    pub(crate) fn quantize(&mut self, x: &[f32]) {
        self.q.clear();
        self.scales.clear();
        self.corr.clear();
        for xb in x.chunks(Q8_BLOCK) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = amax / 127.0;
            let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
            self.scales.push(s);
            for &v in xb {
                self.q.push(round_q8(v * inv));
            }
        }
        self.corr.extend(
            self.q
                .chunks(4)
                .map(|g| -128 * g.iter().map(|&v| v as i32).sum::<i32>()),
        );
    }

    /// The values the quantized vector represents (for tests).
    #[cfg(test)]
    pub(crate) fn dequantized(&self) -> Vec<f32> {
        self.q
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f32 * self.scales[i / Q8_BLOCK])
            .collect()
    }
}

/// One w8a8 row: sum over blocks of (w scale * x scale) * (integer q . xq), in block
/// order.
fn w8a8_row_scalar(q: &[i8], s: &[f32], xq: &ActQ8) -> f32 {
    let mut acc = 0f32;
    for (b, (qb, xb)) in q.chunks(Q8_BLOCK).zip(xq.q.chunks(Q8_BLOCK)).enumerate() {
        let d: i32 = qb.iter().zip(xb).map(|(&a, &c)| a as i32 * c as i32).sum();
        acc += s[b] * xq.scales[b] * d as f32;
    }
    acc
}

pub(super) fn w8a8_scalar(y: &mut [f32], q: &[i8], s: &[f32], xq: &ActQ8) {
    let n = xq.q.len();
    let nb = n.div_ceil(Q8_BLOCK);
    for (i, yi) in y.iter_mut().enumerate() {
        *yi = w8a8_row_scalar(&q[i * n..(i + 1) * n], &s[i * nb..(i + 1) * nb], xq);
    }
}

/// The w8a8 kernel: per full block of 32 and row, one `vpdpbusd` of the unsigned bytes
/// `q + 128` (an xor) with the signed `xq`, started at the -128 * sum(xq) correction, gives
/// the exact integer q . xq in 8 lanes; those are converted once and accumulated with the
/// block's scale product, one row at a time. A short last block is scalar.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vnni")]
pub(super) unsafe fn w8a8_vnni(y: &mut [f32], q: &[i8], s: &[f32], xq: &ActQ8) {
    let n = xq.q.len();
    let nb = n.div_ceil(Q8_BLOCK);
    let full = n / Q8_BLOCK;
    assert!(q.len() >= y.len() * n && s.len() >= y.len() * nb && xq.corr.len() * 4 >= n);
    let (qp, xp, cp) = (q.as_ptr(), xq.q.as_ptr(), xq.corr.as_ptr());
    let flip = _mm256_set1_epi8(-128);
    let tail = |r: usize| -> f32 {
        if full == nb {
            return 0.0;
        }
        let k0 = full * Q8_BLOCK;
        let d: i32 = (k0..n).map(|k| q[r * n + k] as i32 * xq.q[k] as i32).sum();
        s[r * nb + full] * xq.scales[full] * d as f32
    };
    for (r, yr) in y.iter_mut().enumerate() {
        let mut a = _mm256_setzero_ps();
        for b in 0..full {
            let k = b * Q8_BLOCK;
            let (xv, cv) = unsafe {
                (
                    _mm256_loadu_si256(xp.add(k) as *const __m256i),
                    _mm256_loadu_si256(cp.add(k / 4) as *const __m256i),
                )
            };
            let xs = *unsafe { xq.scales.get_unchecked(b) };
            let row = unsafe { qp.add(r * n + k) };
            let wv = _mm256_xor_si256(unsafe { _mm256_loadu_si256(row as *const __m256i) }, flip);
            let d = _mm256_dpbusd_epi32(cv, wv, xv);
            let sc = *unsafe { s.get_unchecked(r * nb + b) } * xs;
            a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_set1_ps(sc), a);
        }
        *yr = hsum256(a) + tail(r);
    }
}
