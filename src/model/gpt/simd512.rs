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
//! Measured in stop 11 on the 2-core Sapphire Rapids VM while another session kept one core
//! busy (load 1.5-2), so shares of `perf record -e cpu-clock` profiles of `arlm bench
//! train --model a --no-torch --steps 300` and single-kernel loops, not wall times:
//! - **Direct attention** ([`attention_forward`], [`attention_backward`]): the 32-wide
//!   heads of model A made `gemm` run its x2x6 edge kernel (4% of A's profile), allocate
//!   and pack per call (12 calls per (b, h) and layer, ~2300 per step; `_int_free` +
//!   `calloc` were 1% alone). Register tiles of R rows x V 16-lane vectors fed by
//!   broadcasts, on the causal blocks of 8 query rows (keys or queries as lanes; K^T and
//!   V^T per head in 8x8 tiles): one shard and layer of A (b=6, T=64, hs=32, one thread,
//!   kernels' ignored `time_attention_paths` test) forward 172-235 -> 120-144 us,
//!   backward 257-308 -> 181-225 us. Model B's shape (b=2, T=256, hs=64): forward
//!   1789-2490 -> 1503-2158 us, backward 3056-3739 -> 3057-3201 us (no loss). The tiles
//!   run at ~60 GFLOP/s (40% of the large-GEMM microkernel): the k loops are 8-64 long.
//! - **Softmax rows**: the 8-lane loops ran each row's 0-7 element tail as scalar `exp`s;
//!   masked 16-lane vectors: 2.7% -> 1.0% of A's profile. A row is then one ~150-cycle
//!   dependency chain (max, reduce, exp, sum, reduce, divide); 4 rows interleaved in
//!   registers ([`softmax_causal_rows`]' groups): softmax share of the attention loop
//!   13.7% -> 10.8%. The same grouping for the backward spilled (twice the registers) and
//!   was slower, so the backward stays per row (1.15% -> 0.9% of A's profile).
//! - **LayerNorm rows**: the auto-vectorized rows were one 8-lane accumulator chain per
//!   sum; 4 (forward) / 2 (backward) independent 16-lane accumulators: backward 2.8-3.1%
//!   -> 1.6%, forward 1.7-1.9% -> 1.3% of A's profile.
//! - **Transpose** in 8x8 AVX tiles instead of scalar 16x16 tiles: 2.3% -> 1.7% (it moves
//!   3 MB each way per step; memory, not shuffles, is what is left).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the CPU runs the AVX-512 functions below ([`crate::cpu::has_avx512`]).
#[inline]
pub fn avx512() -> bool {
    crate::cpu::has_avx512()
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

/// Rows `r0..r1` of a causal score matrix `s` (rows of `t_len`): row t <- softmax of
/// scale times row[..=t], row[t+1..] = 0 (the plain version: kernels' `softmax_causal_row`).
/// Requires [`avx512`]; r1 <= t_len and s.len() >= r1 * t_len.
pub fn softmax_causal_rows(s: &mut [f32], t_len: usize, r0: usize, r1: usize, scale: f32) {
    assert!(r1 <= t_len && s.len() >= r1 * t_len);
    #[cfg(target_arch = "x86_64")]
    {
        let mut t = r0;
        while t < r1 {
            // SAFETY: rows t.. lie inside s (asserted); callers checked avx512().
            unsafe {
                if t + GROUP <= r1.min(GROUP_MAX_LEN) {
                    softmax_group(s.as_mut_ptr(), t_len, t, scale);
                    t += GROUP;
                } else {
                    softmax_row(s.as_mut_ptr().add(t * t_len), t + 1, t_len, scale);
                    t += 1;
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, t_len, r0, r1, scale);
}

/// Rows per group of [`softmax_group`] (the same grouping of the softmax backward, with
/// twice the registers, spilled and was slower).
const GROUP: usize = 4;
/// Longest row a group handles (in registers: GROUP rows x 4 vectors).
const GROUP_MAX_LEN: usize = 64;

/// [`softmax_row`] for the GROUP causal rows t.. of s (rows of t_len; row t + g has
/// t + g + 1 <= 64 valid entries), interleaved: a single row is one long dependency chain
/// (max, reduce, exp, sum, reduce, divide) of ~150 cycles for at most 4 vectors; four
/// rows side by side in registers overlap their chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // g and v index several arrays and offsets
unsafe fn softmax_group(s: *mut f32, t_len: usize, t: usize, scale: f32) {
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let zero = _mm512_setzero_ps();
    let nv = (t + GROUP).div_ceil(16);
    let mut x = [[ninf; 4]; GROUP];
    let mut mx = [ninf; GROUP];
    for g in 0..GROUP {
        let row = s.add((t + g) * t_len);
        let n = t + g + 1;
        for v in 0..4 {
            if v < nv {
                let k = lanes(n.saturating_sub(16 * v));
                x[g][v] = _mm512_mask_loadu_ps(ninf, k, row.add(16 * v));
                mx[g] = _mm512_max_ps(mx[g], x[g][v]);
            }
        }
    }
    let sc = _mm512_set1_ps(scale);
    let mut sum = [zero; GROUP];
    for g in 0..GROUP {
        let m = _mm512_set1_ps(_mm512_reduce_max_ps(mx[g]));
        let n = t + g + 1;
        for v in 0..4 {
            if v < nv {
                let k = lanes(n.saturating_sub(16 * v));
                x[g][v] =
                    _mm512_maskz_mov_ps(k, exp16(_mm512_mul_ps(_mm512_sub_ps(x[g][v], m), sc)));
                sum[g] = _mm512_add_ps(sum[g], x[g][v]);
            }
        }
    }
    for g in 0..GROUP {
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum[g]));
        let row = s.add((t + g) * t_len);
        for v in 0..4 {
            if v < nv {
                let k = lanes(t_len.saturating_sub(16 * v));
                _mm512_mask_storeu_ps(row.add(16 * v), k, _mm512_mul_ps(x[g][v], inv));
            }
        }
        let mut j = nv * 16;
        while j < t_len {
            _mm512_mask_storeu_ps(row.add(j), lanes(t_len - j), zero);
            j += 16;
        }
    }
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tiles8(
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

// ---------------------------------------------------------------- layernorm

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
    assert!(c.is_multiple_of(16) && rs.len() == rows && o.len() >= rows * c && x.len() >= rows * c);
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

// ---------------------------------------------------------------- direct attention

/// C(rows, n) = A(rows, k0..k1) B(k0..k1, n) (OVERWRITES C), with A read element by
/// element at `a[i * a_rs + kk * a_cs]` (broadcast to 16 lanes), B and C row-major with
/// row strides `b_rs` and `c_rs` (columns contiguous). Register tiles of R rows x V
/// vectors of 16 columns, the last vector masked: no packing, no allocation, no call
/// overhead, which is what the 32-wide products of attention need (`gemm` spent more on
/// its per-call work than on these products).
///
/// # Safety
/// avx512f; every addressed element valid; C not aliased.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn mm(
    rows: usize,
    n: usize,
    (k0, k1): (usize, usize),
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
) {
    let mut c0 = 0;
    while c0 < n {
        let w = (n - c0).min(64);
        let last = lanes(w - (w - 1) / 16 * 16);
        let (bb, cc) = (b.add(c0), c.add(c0));
        let mut r = 0;
        macro_rules! run {
            ($r:literal, $v:literal) => {{
                while r + $r <= rows {
                    tile::<$r, $v>(
                        (k0, k1),
                        a.add(r * a_rs),
                        (a_rs, a_cs),
                        bb,
                        b_rs,
                        cc.add(r * c_rs),
                        c_rs,
                        last,
                    );
                    r += $r;
                }
                while r < rows {
                    tile::<1, $v>(
                        (k0, k1),
                        a.add(r * a_rs),
                        (a_rs, a_cs),
                        bb,
                        b_rs,
                        cc.add(r * c_rs),
                        c_rs,
                        last,
                    );
                    r += 1;
                }
            }};
        }
        match w.div_ceil(16) {
            1 => run!(8, 1),
            2 => run!(8, 2),
            3 => run!(4, 3),
            _ => run!(4, 4),
        }
        c0 += 64;
    }
}

/// One R x (16 V) tile of [`mm`]; the last vector's lanes are `last`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile<const R: usize, const V: usize>(
    (k0, k1): (usize, usize),
    a: *const f32,
    (a_rs, a_cs): (usize, usize),
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
    last: __mmask16,
) {
    let mut acc = [[_mm512_setzero_ps(); V]; R];
    for kk in k0..k1 {
        let bp = b.add(kk * b_rs);
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, x) in bv.iter_mut().enumerate() {
            *x = if v + 1 == V {
                _mm512_maskz_loadu_ps(last, bp.add(16 * v))
            } else {
                _mm512_loadu_ps(bp.add(16 * v))
            };
        }
        let ap = a.add(kk * a_cs);
        for (r, row) in acc.iter_mut().enumerate() {
            let av = _mm512_set1_ps(*ap.add(r * a_rs));
            for (x, &y) in row.iter_mut().zip(&bv) {
                *x = _mm512_fmadd_ps(av, y, *x);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let cp = c.add(r * c_rs);
        for (v, &x) in row.iter().enumerate() {
            if v + 1 == V {
                _mm512_mask_storeu_ps(cp.add(16 * v), last, x);
            } else {
                _mm512_storeu_ps(cp.add(16 * v), x);
            }
        }
    }
}

/// dst[d * t_len + j] = src[j * src_rs + d] for j < t_len, d < hs (a head's K or V,
/// rows of qkv, transposed so that keys run along vector lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_head(dst: *mut f32, src: *const f32, src_rs: usize, t_len: usize, hs: usize) {
    let (t8, h8) = (t_len / 8 * 8, hs / 8 * 8);
    tiles8(dst, t_len, src, src_rs, t8, h8);
    for j in 0..t_len {
        let s = src.add(j * src_rs);
        let d_start = if j < t8 { h8 } else { 0 };
        for d in d_start..hs {
            *dst.add(d * t_len + j) = *s.add(d);
        }
    }
}

/// Query rows per block of the direct attention: each block's scores cover only the
/// keys its last row sees (rounded up to 16 lanes).
const ROWS: usize = 8;

thread_local! {
    /// A head's K^T or V^T (hs x T), reused across calls (grows once).
    static HEAD_T: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's (hs x T) scratch.
fn with_head_t<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    HEAD_T.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// Causal self-attention forward, f32, AVX-512, with the same contract as kernels'
/// `attention_forward` (qkv (B,T,3C) in, out (B,T,C) and att (B,NH,T,T) = P with zeros
/// above the diagonal): per (b, h), K^T once, then per block of `ROWS` queries S = Q K^T
/// over the visible keys, the softmax rows, and O = P V over the visible keys, all with
/// `mm`'s register tiles. Parallel over (b, h) as the `gemm` version. Requires
/// [`avx512`].
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    (b, t_len, c, nh): (usize, usize, usize, usize),
) {
    use rayon::prelude::*;
    let hs = c / nh;
    assert!(out.len() >= b * t_len * c && att.len() >= b * nh * t_len * t_len);
    assert!(qkv.len() >= b * t_len * 3 * c && hs * nh == c);
    let scale = 1.0 / (hs as f32).sqrt();
    let out_p = super::kernels::SyncPtr(out.as_mut_ptr());
    att[..b * nh * t_len * t_len]
        .par_chunks_mut(t_len * t_len)
        .enumerate()
        .with_min_len(super::kernels::min_len())
        .for_each(|(bh, s)| {
            let (bi, h) = (bh / nh, bh % nh);
            #[cfg(target_arch = "x86_64")]
            with_head_t(hs * t_len, |kt| {
                // SAFETY: avx512 checked by the caller; the views of qkv stay inside it
                // (asserted); out rows (bi, .., h) and s belong to this task alone.
                unsafe {
                    let q = qkv.as_ptr().add(bi * t_len * 3 * c + h * hs);
                    let (k, v) = (q.add(c), q.add(2 * c));
                    let o = out_p.get().add(bi * t_len * c + h * hs);
                    transpose_head(kt.as_mut_ptr(), k, 3 * c, t_len, hs);
                    for t0 in (0..t_len).step_by(ROWS) {
                        let rows = ROWS.min(t_len - t0);
                        let kc = t0 + rows; // keys visible to the block
                        let sp = s.as_mut_ptr().add(t0 * t_len);
                        mm(
                            rows,
                            kc,
                            (0, hs),
                            q.add(t0 * 3 * c),
                            (3 * c, 1),
                            kt.as_ptr(),
                            t_len,
                            sp,
                            t_len,
                        );
                        softmax_causal_rows(s, t_len, t0, kc, scale);
                        let sp = s.as_ptr().add(t0 * t_len);
                        mm(
                            rows,
                            hs,
                            (0, kc),
                            sp,
                            (t_len, 1),
                            v,
                            3 * c,
                            o.add(t0 * c),
                            c,
                        );
                    }
                }
            });
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (bi, h, s, scale, &out_p);
        });
}

/// Backward of [`attention_forward`] (same contract as kernels' `attention_backward`:
/// dqkv OVERWRITTEN, datt (B,NH,T,T) scratch): per (b, h), V^T once; per block of
/// `ROWS` queries dP = dO V^T, dS = the softmax backward, dQ = dS K; per block of
/// `ROWS` keys dK = dS^T Q and dV = P^T dO over the queries that see them. Requires
/// [`avx512`].
pub fn attention_backward(
    dqkv: &mut [f32],
    datt: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    (b, t_len, c, nh): (usize, usize, usize, usize),
) {
    use rayon::prelude::*;
    let hs = c / nh;
    let tt = t_len * t_len;
    assert!(dqkv.len() >= b * t_len * 3 * c && qkv.len() >= b * t_len * 3 * c);
    assert!(datt.len() >= b * nh * tt && att.len() >= b * nh * tt);
    assert!(dout.len() >= b * t_len * c && hs * nh == c);
    let scale = 1.0 / (hs as f32).sqrt();
    let dq_p = super::kernels::SyncPtr(dqkv.as_mut_ptr());
    datt[..b * nh * tt]
        .par_chunks_mut(tt)
        .enumerate()
        .with_min_len(super::kernels::min_len())
        .for_each(|(bh, ds)| {
            let (bi, h) = (bh / nh, bh % nh);
            let p = &att[bh * tt..(bh + 1) * tt];
            #[cfg(target_arch = "x86_64")]
            with_head_t(hs * t_len, |vt| {
                // SAFETY: avx512 checked by the caller; all views inside the asserted
                // buffers; this task alone writes head h of batch bi in dqkv, and ds.
                unsafe {
                    let base = bi * t_len * 3 * c + h * hs;
                    let q = qkv.as_ptr().add(base);
                    let (k, v) = (q.add(c), q.add(2 * c));
                    let d_o = dout.as_ptr().add(bi * t_len * c + h * hs);
                    let dq = dq_p.get().add(base);
                    let (dk, dv) = (dq.add(c), dq.add(2 * c));
                    transpose_head(vt.as_mut_ptr(), v, 3 * c, t_len, hs);
                    for t0 in (0..t_len).step_by(ROWS) {
                        let rows = ROWS.min(t_len - t0);
                        let kc = t0 + rows;
                        let dsp = ds.as_mut_ptr().add(t0 * t_len);
                        mm(
                            rows,
                            kc,
                            (0, hs),
                            d_o.add(t0 * c),
                            (c, 1),
                            vt.as_ptr(),
                            t_len,
                            dsp,
                            t_len,
                        );
                        softmax_grad_causal_rows(ds, p, t_len, t0, kc, scale);
                        let dsp = ds.as_ptr().add(t0 * t_len);
                        mm(
                            rows,
                            hs,
                            (0, kc),
                            dsp,
                            (t_len, 1),
                            k,
                            3 * c,
                            dq.add(t0 * 3 * c),
                            3 * c,
                        );
                    }
                    for j0 in (0..t_len).step_by(ROWS) {
                        let rows = ROWS.min(t_len - j0);
                        // queries j0.. see keys j0..j0+rows (dS and P are 0 above the diagonal)
                        let dsp = ds.as_ptr().add(j0);
                        mm(
                            rows,
                            hs,
                            (j0, t_len),
                            dsp,
                            (1, t_len),
                            q,
                            3 * c,
                            dk.add(j0 * 3 * c),
                            3 * c,
                        );
                        let pp = p.as_ptr().add(j0);
                        mm(
                            rows,
                            hs,
                            (j0, t_len),
                            pp,
                            (1, t_len),
                            d_o,
                            c,
                            dv.add(j0 * 3 * c),
                            3 * c,
                        );
                    }
                }
            });
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (bi, h, ds, p, scale, &dq_p);
        });
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

    /// The direct attention (forward: out and P; backward: dqkv) against the f64 loops, at
    /// head sizes below, at and above 16 lanes and T not a multiple of the row block.
    #[test]
    fn direct_attention_matches_f64_loops() {
        if !avx512() {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        use crate::model::gpt::kernels::{attention_backward_loops, attention_forward_loops};
        for (b, t, c, nh) in [
            (2, 9, 16, 2),
            (1, 64, 128, 4),
            (2, 70, 96, 2),
            (1, 3, 40, 1),
        ] {
            let qkv = rnd(b * t * 3 * c, 5);
            let g = rnd(b * t * c, 6);
            let up = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
            let (q64, g64) = (up(&qkv), up(&g));
            let (mut o64, mut a64) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
            attention_forward_loops(&mut o64, &mut a64, &q64, b, t, c, nh);
            let (mut d64, mut ds64) = (vec![0.0; b * t * 3 * c], vec![0.0; b * nh * t * t]);
            attention_backward_loops(&mut d64, &mut ds64, &g64, &q64, &a64, b, t, c, nh);
            // garbage in the outputs and scratch: everything must be overwritten
            let (mut o, mut a) = (vec![7f32; b * t * c], vec![7f32; b * nh * t * t]);
            attention_forward(&mut o, &mut a, &qkv, (b, t, c, nh));
            let (mut d, mut ds) = (vec![7f32; b * t * 3 * c], vec![7f32; b * nh * t * t]);
            attention_backward(&mut d, &mut ds, &g, &qkv, &a, (b, t, c, nh));
            for (what, got, want, tol) in [
                ("out", up(&o), o64, 2e-5),
                ("att", up(&a), a64, 2e-6),
                ("dqkv", up(&d), d64, 1e-4),
            ] {
                for (i, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (x - y).abs() <= tol * (1.0 + y.abs()),
                        "{what} (b {b} t {t} c {c} nh {nh}) [{i}]: {x} vs {y}"
                    );
                }
            }
        }
    }

    /// AVX-512 LayerNorm rows (forward: out, mean, rstd; backward: dx, dw, db partials, all
    /// accumulating) against the f64 formulas.
    #[test]
    fn layernorm_rows_match_f64() {
        if !avx512() {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        for c in [16usize, 48, 128] {
            let rows = 5;
            let x: Vec<f32> = rnd(rows * c, 7).iter().map(|v| v * 2.0 + 0.5).collect();
            let (w, b, d) = (rnd(c, 8), rnd(c, 9), rnd(rows * c, 10));
            let (mut o, mut mu, mut rs) =
                (vec![0f32; rows * c], vec![0f32; rows], vec![0f32; rows]);
            ln_forward_rows(&mut o, &mut mu, &mut rs, &x, &w, &b, c, 1e-5);
            let (mut pw, mut pb) = (vec![0.25f32; c], vec![-0.5f32; c]);
            let mut dx = vec![1f32; (rows - 1) * c];
            ln_backward_rows((&x, &d, &w, &mu, &rs), c, 1, &mut pw, &mut pb, &mut dx);
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
