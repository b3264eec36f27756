//! Explicit AVX-512 (and AVX) f32 kernels for the short rows of training that the
//! auto-vectorized loops of [`super::simd`] and [`super::kernels`] handle badly: the causal
//! attention softmax and its backward (rows of 1..T elements: the 8-wide loops ran their
//! 0-7 element tails as scalar `exp`s) and the tiled transpose of the weights.
//!
//! Every function here has a plain version in [`super::kernels`] that it is tested
//! against; callers check [`avx512`] / [`avx`] and fall back to it, so the binary runs on
//! any x86-64. The results differ from the plain versions by float rounding only (other
//! summation orders, FMA), and are the same on every run on one machine, whatever the
//! thread count.
//!
//! # Performance notes
//! Measured on the 2-core Sapphire Rapids VM (stop 11), model A's shapes (T = 64, query
//! blocks of 32):
//! - causal softmax of a block's rows with masked 16-lane vectors instead of 8-lane loops
//!   with a scalar tail; the softmax backward likewise;
//! - the transpose in 8 x 8 register tiles instead of scalar 16 x 16 tiles.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the CPU runs the AVX-512 functions below.
#[inline]
pub fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU runs [`transpose`].
#[inline]
pub fn avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Lanes `0..rem` of a 16-lane mask (all when rem >= 16).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes(rem: usize) -> __mmask16 {
    if rem >= 16 {
        0xFFFF
    } else {
        ((1u32 << rem) - 1) as __mmask16
    }
}

/// e^x for 16 lanes: [`super::simd::exp`]'s polynomial (Cephes expf), argument clamped to
/// [-87, 88].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn exp16(x: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
    let z = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    let magic = _mm512_set1_ps(12_582_912.0);
    let t = _mm512_fmadd_ps(z, _mm512_set1_ps(std::f32::consts::LOG2_E), magic);
    let nn = _mm512_sub_ps(t, magic);
    let r = _mm512_fnmadd_ps(
        nn,
        _mm512_set1_ps(-2.121_944_4e-4),
        _mm512_fnmadd_ps(nn, _mm512_set1_ps(0.693_359_4), z),
    );
    let mut p = _mm512_fmadd_ps(
        _mm512_set1_ps(1.987_569_1e-4),
        r,
        _mm512_set1_ps(1.398_199_9e-3),
    );
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.333_452e-3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.166_579_6e-2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.666_666_5e-1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, one));
    // 2^n: the integer n sits in t's low mantissa bits (t = n + 1.5 * 2^23).
    let pow2 = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(127 - 0x4B40_0000)),
        23,
    ));
    _mm512_mul_ps(p, pow2)
}

/// Rows `r0..r1` of a causal score matrix `s` (rows of `t_len`): row t <- softmax of
/// scale times row[..=t], row[t+1..] = 0 (the plain version: kernels' `softmax_causal_row`).
/// Requires [`avx512`]; r1 <= t_len and s.len() >= r1 * t_len.
pub fn softmax_causal_rows(s: &mut [f32], t_len: usize, r0: usize, r1: usize, scale: f32) {
    assert!(r1 <= t_len && s.len() >= r1 * t_len);
    #[cfg(target_arch = "x86_64")]
    for t in r0..r1 {
        // SAFETY: row t lies inside s (asserted); callers checked avx512().
        unsafe { softmax_row(s.as_mut_ptr().add(t * t_len), t + 1, t_len, scale) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, t_len, r0, r1, scale);
}

/// row[..n] <- softmax(row[..n] * scale), row[n..len] <- 0; n >= 1.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_row(row: *mut f32, n: usize, len: usize, scale: f32) {
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut mx = ninf;
    let mut j = 0;
    while j < n {
        let x = _mm512_mask_loadu_ps(ninf, lanes(n - j), row.add(j));
        mx = _mm512_max_ps(mx, x);
        j += 16;
    }
    let m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    let sc = _mm512_set1_ps(scale);
    let mut sum = _mm512_setzero_ps();
    j = 0;
    while j < n {
        let k = lanes(n - j);
        let x = _mm512_maskz_loadu_ps(k, row.add(j));
        let e = _mm512_maskz_mov_ps(k, exp16(_mm512_mul_ps(_mm512_sub_ps(x, m), sc)));
        sum = _mm512_add_ps(sum, e);
        _mm512_mask_storeu_ps(row.add(j), k, e);
        j += 16;
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    j = 0;
    while j < len {
        let k = lanes(len - j);
        // lanes >= n become 0 (maskz load of the valid ones only)
        let kv = k & if j < n { lanes(n - j) } else { 0 };
        let x = _mm512_maskz_loadu_ps(kv, row.add(j));
        _mm512_mask_storeu_ps(row.add(j), k, _mm512_mul_ps(x, inv));
        j += 16;
    }
}

/// The attention softmax backward on rows `r0..r1` of `ds` (dP in, dS out) with the
/// probabilities `p` (same layout, rows of `t_len`): over j <= t, ds = scale p (ds -
/// sum_j p ds); ds[t+1..] = 0. Requires [`avx512`].
pub fn softmax_grad_causal_rows(
    ds: &mut [f32],
    p: &[f32],
    t_len: usize,
    r0: usize,
    r1: usize,
    scale: f32,
) {
    assert!(r1 <= t_len && ds.len() >= r1 * t_len && p.len() >= r1 * t_len);
    #[cfg(target_arch = "x86_64")]
    for t in r0..r1 {
        // SAFETY: row t lies inside ds and p (asserted); callers checked avx512().
        unsafe {
            softmax_grad_row(
                ds.as_mut_ptr().add(t * t_len),
                p.as_ptr().add(t * t_len),
                t + 1,
                t_len,
                scale,
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ds, p, t_len, r0, r1, scale);
}

/// One row of [`softmax_grad_causal_rows`]: n valid entries of len.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_grad_row(d: *mut f32, p: *const f32, n: usize, len: usize, scale: f32) {
    let mut acc = _mm512_setzero_ps();
    let mut j = 0;
    while j < n {
        let k = lanes(n - j);
        let pv = _mm512_maskz_loadu_ps(k, p.add(j));
        let dv = _mm512_maskz_loadu_ps(k, d.add(j));
        acc = _mm512_fmadd_ps(pv, dv, acc);
        j += 16;
    }
    let dot = _mm512_set1_ps(_mm512_reduce_add_ps(acc));
    let sc = _mm512_set1_ps(scale);
    j = 0;
    while j < len {
        let k = lanes(len - j);
        let kv = k & if j < n { lanes(n - j) } else { 0 };
        let pv = _mm512_maskz_loadu_ps(kv, p.add(j));
        let dv = _mm512_maskz_loadu_ps(kv, d.add(j));
        let r = _mm512_mul_ps(_mm512_mul_ps(pv, _mm512_sub_ps(dv, dot)), sc);
        _mm512_mask_storeu_ps(d.add(j), k, r);
        j += 16;
    }
}

/// dst(cols, rows) = src(rows, cols)^T in 8 x 8 AVX register tiles (edges element by
/// element). Requires [`avx`].
pub fn transpose(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    let (dst, src) = (&mut dst[..rows * cols], &src[..rows * cols]);
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every tile (r0..r0+8, c0..c0+8) has r0 + 8 <= rows and c0 + 8 <= cols, so
    // its source and destination elements are inside the slices; callers checked avx().
    unsafe {
        tiles8(dst.as_mut_ptr(), src.as_ptr(), rows, cols, r8, c8)
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tiles8(dst: *mut f32, src: *const f32, rows: usize, cols: usize, r8: usize, c8: usize) {
    for r0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            let s = src.add(r0 * cols + c0);
            let l = |i: usize| _mm256_loadu_ps(s.add(i * cols));
            let (a0, a1, a2, a3) = (l(0), l(1), l(2), l(3));
            let (a4, a5, a6, a7) = (l(4), l(5), l(6), l(7));
            let t0 = _mm256_unpacklo_ps(a0, a1);
            let t1 = _mm256_unpackhi_ps(a0, a1);
            let t2 = _mm256_unpacklo_ps(a2, a3);
            let t3 = _mm256_unpackhi_ps(a2, a3);
            let t4 = _mm256_unpacklo_ps(a4, a5);
            let t5 = _mm256_unpackhi_ps(a4, a5);
            let t6 = _mm256_unpacklo_ps(a6, a7);
            let t7 = _mm256_unpackhi_ps(a6, a7);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let d = dst.add(c0 * rows + r0);
            let st = |i: usize, v: __m256| _mm256_storeu_ps(d.add(i * rows), v);
            st(0, _mm256_permute2f128_ps::<0x20>(u0, u4));
            st(1, _mm256_permute2f128_ps::<0x20>(u1, u5));
            st(2, _mm256_permute2f128_ps::<0x20>(u2, u6));
            st(3, _mm256_permute2f128_ps::<0x20>(u3, u7));
            st(4, _mm256_permute2f128_ps::<0x31>(u0, u4));
            st(5, _mm256_permute2f128_ps::<0x31>(u1, u5));
            st(6, _mm256_permute2f128_ps::<0x31>(u2, u6));
            st(7, _mm256_permute2f128_ps::<0x31>(u3, u7));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rnd(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 6.0 - 3.0
            })
            .collect()
    }

    /// Causal softmax rows and their backward vs the f64 formulas, for row lengths that hit
    /// every tail (1..=70) and rows with garbage beyond the causal limit.
    #[test]
    fn causal_softmax_and_backward_match_f64() {
        if !avx512() {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        let t_len = 70;
        let scale = 0.37f32;
        let s0 = rnd(t_len * t_len, 1);
        let mut s = s0.clone();
        softmax_causal_rows(&mut s, t_len, 0, t_len, scale);
        for t in 0..t_len {
            let row = &s0[t * t_len..][..t_len];
            let m = row[..=t]
                .iter()
                .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let z: f64 = row[..=t]
                .iter()
                .map(|&x| ((x as f64 - m) * scale as f64).exp())
                .sum();
            for j in 0..t_len {
                let want = if j <= t {
                    ((row[j] as f64 - m) * scale as f64).exp() / z
                } else {
                    0.0
                };
                let got = s[t * t_len + j] as f64;
                assert!(
                    (got - want).abs() < 1e-6 * (1.0 + want),
                    "({t},{j}): {got} vs {want}"
                );
            }
        }
        let p = s;
        let d0 = rnd(t_len * t_len, 2);
        let mut d = d0.clone();
        softmax_grad_causal_rows(&mut d, &p, t_len, 3, t_len, scale);
        for t in 0..t_len {
            let (pr, dr) = (&p[t * t_len..][..t_len], &d0[t * t_len..][..t_len]);
            let dot: f64 = (0..=t).map(|j| pr[j] as f64 * dr[j] as f64).sum();
            for j in 0..t_len {
                let want = if t < 3 {
                    dr[j] as f64 // rows before r0 untouched
                } else if j <= t {
                    pr[j] as f64 * (dr[j] as f64 - dot) * scale as f64
                } else {
                    0.0
                };
                let got = d[t * t_len + j] as f64;
                assert!((got - want).abs() < 1e-5, "grad ({t},{j}): {got} vs {want}");
            }
        }
    }

    #[test]
    fn transpose_matches_plain() {
        if !avx() {
            eprintln!("SKIPPED: no AVX");
            return;
        }
        for (rows, cols) in [(8, 8), (16, 24), (128, 384), (13, 21), (7, 9), (1, 17)] {
            let src = rnd(rows * cols, 3);
            let mut got = vec![0f32; rows * cols];
            transpose(&mut got, &src, rows, cols);
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
}
