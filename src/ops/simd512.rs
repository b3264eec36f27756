//! AVX-512 primitives shared by the layers' explicit AVX-512 bodies: lane masks for row
//! tails, a 16-lane `exp` (the polynomial of [`crate::ops::simd::exp`]), and the
//! write-back of a GEMM tile that holds tokens in its lanes.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Lanes `0..rem` of a 16-lane mask (all when rem >= 16).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn lanes(rem: usize) -> __mmask16 {
    if rem >= 16 {
        0xFFFF
    } else {
        ((1u32 << rem) - 1) as __mmask16
    }
}

/// Writes one output column of a tokens-in-lanes GEMM tile into a row-major (tokens, n)
/// matrix: lane i of `acc[j]`, plus `bias`, goes to `out[(16 j + i) * n]`, for the first
/// `valid` lanes in all (a masked scatter with stride n). The bf16 and w8a8 GEMMs end
/// their tiles with it.
///
/// # Safety
/// AVX-512F must be available, and `out[(t) * n]` writable for every t < valid.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn scatter_column<const NV: usize>(
    out: *mut f32,
    n: usize,
    acc: &[__m512; NV],
    bias: f32,
    valid: usize,
) {
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let stride = _mm512_mullo_epi32(lane, _mm512_set1_epi32(n as i32));
    for (j, a) in acc.iter().enumerate() {
        let rem = valid.saturating_sub(16 * j);
        if rem == 0 {
            break;
        }
        // SAFETY: the caller vouches for rows 16j..16j + min(rem, 16) of the column.
        unsafe {
            _mm512_mask_i32scatter_ps::<4>(
                out.add(16 * j * n),
                lanes(rem),
                stride,
                _mm512_add_ps(*a, _mm512_set1_ps(bias)),
            )
        };
    }
}

/// e^x for 16 lanes: [`super::simd::exp`]'s polynomial (Cephes expf), argument clamped to
/// [-87, 88].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn exp16(x: __m512) -> __m512 {
    exp16_in_range(_mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    ))
}

/// [`exp16`] without the clamp, for callers that clamp `z` to a narrower range themselves
/// (the AVX-512 GELU keeps e^z + 1 invertible); z must lie in [-87, 88].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn exp16_in_range(z: __m512) -> __m512 {
    let one = _mm512_set1_ps(1.0);
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(crate) unsafe fn tiles8(
    dst: *mut f32,
    dst_rs: usize,
    src: *const f32,
    src_rs: usize,
    r8: usize,
    c8: usize,
) {
    for r0 in (0..r8).step_by(8) {
        for c0 in (0..c8).step_by(8) {
            let s = src.add(r0 * src_rs + c0);
            let l = |i: usize| _mm256_loadu_ps(s.add(i * src_rs));
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
            let d = dst.add(c0 * dst_rs + r0);
            let st = |i: usize, v: __m256| _mm256_storeu_ps(d.add(i * dst_rs), v);
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
