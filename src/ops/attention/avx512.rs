//! The f32 AVX-512 attention: direct register-tiled products and the causal softmax rows.
//!
//! Every function has a plain version in [`super`] that it is tested against; callers
//! check [`crate::ops::cpu::has_avx512`] and fall back to it, so the binary runs on any
//! x86-64. The results differ from the plain versions by float rounding only (other
//! summation orders, FMA), and are the same on every run on one machine, whatever the
//! thread count.
//!
//! # Performance notes
//! Shares of `perf record -e cpu-clock` profiles of `arlm bench train --model a --no-torch`
//! and single-kernel loops on a 2-core Sapphire Rapids VM:
//! - **Direct attention** ([`attention_forward`], [`attention_backward`]): the 32-wide
//!   heads of model A made `gemm` run its x2x6 edge kernel, and allocate and pack per call
//!   (~2300 calls per step). Register tiles of R rows x V 16-lane vectors fed by
//!   broadcasts, on causal blocks of 8 query rows (K^T and V^T per head in 8x8 tiles): one
//!   shard and layer of A (b=6, T=64, hs=32, one thread) forward 172-235 -> 120-144 us,
//!   backward 257-308 -> 181-225 us; model B's shape (b=2, T=256, hs=64) forward
//!   1789-2490 -> 1503-2158 us, backward unchanged. The tiles run at ~60 GFLOP/s (40% of
//!   the large-GEMM microkernel): the k loops are only 8-64 long.
//! - **Softmax rows**: masked 16-lane vectors instead of 8-lane loops with scalar tails:
//!   2.7% -> 1.0% of A's profile. A row is one ~150-cycle dependency chain (max, reduce,
//!   exp, sum, reduce, divide); 4 rows interleaved in registers ([`softmax_causal_rows`]'
//!   groups) took the softmax share of the attention loop from 13.7% to 10.8%. The same
//!   grouping for the backward spilled (twice the registers) and was slower, so the
//!   backward stays per row (1.15% -> 0.9%).
//! - **Inference keeps no probabilities** ([`attention_forward_no_probs`]): at T = 1024 the
//!   (NH, T, T) buffer is 50 MB per layer of GPT-2, written (half of it zeros above the
//!   diagonal) and never read again; a block's scores in a (ROWS, T) scratch instead took
//!   attention from ~10% to ~8% of a `perf` profile of f32 scoring (1024-token windows,
//!   2-core Zen 4 VM).

use crate::ops::par::{self, SyncPtr};
use crate::ops::simd512::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows `r0..r1` of a causal score matrix `s` (rows of `t_len`): row t <- softmax of
/// scale times row[..=t], row[t+1..] = 0 (the plain version: kernels' `softmax_causal_row`).
/// Requires AVX-512 ([`crate::ops::cpu::has_avx512`]); r1 <= t_len and s.len() >= r1 * t_len.
pub fn softmax_causal_rows(s: &mut [f32], t_len: usize, r0: usize, r1: usize, scale: f32) {
    assert!(r0 <= r1 && r1 <= t_len && s.len() >= r1 * t_len);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rows r0..r1 lie inside s (asserted); callers checked avx512().
    unsafe {
        softmax_block(s.as_mut_ptr().add(r0 * t_len), t_len, r0..r1, t_len, scale)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, t_len, r0, r1, scale);
}

/// The causal softmax of rows `ts` (query positions) stored from `rows`, `stride` apart:
/// row t (at `rows + (t - ts.start) * stride`) <- softmax of scale times its first t + 1
/// entries, entries t + 1..len <- 0.
///
/// # Safety
/// avx512f; `len` >= ts.end and every row's `len` entries valid.
#[cfg(target_arch = "x86_64")]
unsafe fn softmax_block(
    rows: *mut f32,
    stride: usize,
    ts: std::ops::Range<usize>,
    len: usize,
    scale: f32,
) {
    let mut t = ts.start;
    while t < ts.end {
        // SAFETY: the caller's contract.
        unsafe {
            let row = rows.add((t - ts.start) * stride);
            if t + GROUP <= ts.end.min(GROUP_MAX_LEN) {
                softmax_group(row, stride, t, len, scale);
                t += GROUP;
            } else {
                softmax_row(row, t + 1, len, scale);
                t += 1;
            }
        }
    }
}

/// Rows per group of [`softmax_group`] (the same grouping of the softmax backward, with
/// twice the registers, spilled and was slower).
const GROUP: usize = 4;

/// Longest row a group handles (in registers: GROUP rows x 4 vectors).
const GROUP_MAX_LEN: usize = 64;

/// [`softmax_row`] for the GROUP causal rows of query positions t.. (row g at
/// `rows + g * stride`, with t + g + 1 <= 64 valid entries, zeroed up to `len`),
/// interleaved: a single row is one long dependency chain (max, reduce, exp, sum, reduce,
/// divide) of ~150 cycles for at most 4 vectors; four rows side by side in registers
/// overlap their chains.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // g and v index several arrays and offsets
unsafe fn softmax_group(rows: *mut f32, stride: usize, t: usize, len: usize, scale: f32) {
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let zero = _mm512_setzero_ps();
    let nv = (t + GROUP).div_ceil(16);
    let mut x = [[ninf; 4]; GROUP];
    let mut mx = [ninf; GROUP];
    for g in 0..GROUP {
        let row = rows.add(g * stride);
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
        let row = rows.add(g * stride);
        for v in 0..4 {
            if v < nv {
                let k = lanes(len.saturating_sub(16 * v));
                _mm512_mask_storeu_ps(row.add(16 * v), k, _mm512_mul_ps(x[g][v], inv));
            }
        }
        let mut j = nv * 16;
        while j < len {
            _mm512_mask_storeu_ps(row.add(j), lanes(len - j), zero);
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
/// sum_j p ds); ds[t+1..] = 0. Requires AVX-512 ([`crate::ops::cpu::has_avx512`]).
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
    /// A head's K^T or V^T (hs x T), and for [`attention_forward_no_probs`] a block's
    /// scores (ROWS x T) after it, reused across calls (grows once).
    static HEAD_T: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch of `len` floats.
fn with_head_t<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    HEAD_T.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// Where [`head_forward`] puts the probabilities.
#[derive(Clone, Copy)]
enum Probs {
    /// All of them: the head's (T, T) matrix at this pointer, zeros above the diagonal
    /// (the backward reads it).
    Keep(*mut f32),
    /// One block's rows at a time in a (ROWS, T) scratch at this pointer, zeroed only up
    /// to the block's last visible key: inference, where nothing reads them later.
    Block(*mut f32),
}

/// One (b, h) of the forward: K^T into `kt`, then per block of `ROWS` queries S = Q K^T
/// over the visible keys, the softmax rows, and O = P V over the visible keys, all with
/// `mm`'s register tiles. `q`, `k`, `v` point at the head's first row of qkv (rows 3C
/// apart), `o` at its first output (rows C apart).
///
/// # Safety
/// avx512f; the rows of q, k, v, o valid for `t_len` positions and `hs` columns; `kt` holds
/// hs x t_len floats; `probs` as its variant says; o and probs not aliased.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn head_forward(
    (q, k, v): (*const f32, *const f32, *const f32),
    o: *mut f32,
    kt: *mut f32,
    probs: Probs,
    (t_len, c, hs): (usize, usize, usize),
    scale: f32,
) {
    // SAFETY: the caller's contract.
    unsafe {
        transpose_head(kt, k, 3 * c, t_len, hs);
        for t0 in (0..t_len).step_by(ROWS) {
            let rows = ROWS.min(t_len - t0);
            let kc = t0 + rows; // keys visible to the block
            let (sp, len) = match probs {
                Probs::Keep(s) => (s.add(t0 * t_len), t_len),
                Probs::Block(s) => (s, kc),
            };
            mm(
                rows,
                kc,
                (0, hs),
                q.add(t0 * 3 * c),
                (3 * c, 1),
                kt,
                t_len,
                sp,
                t_len,
            );
            softmax_block(sp, t_len, t0..kc, len, scale);
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
}

/// Causal self-attention forward, f32, AVX-512, with the same contract as kernels'
/// `attention_forward` (qkv (B,T,3C) in, out (B,T,C) and att (B,NH,T,T) = P with zeros
/// above the diagonal): `head_forward` per (b, h), parallel over (b, h) as the `gemm`
/// version. Requires AVX-512 ([`crate::ops::cpu::has_avx512`]).
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    (b, t_len, c, nh): (usize, usize, usize, usize),
) {
    assert!(att.len() >= b * nh * t_len * t_len);
    heads_forward(out, Some(att), qkv, (b, t_len, c, nh));
}

/// [`attention_forward`] without the probabilities, for inference: each block's scores
/// live in a per-thread (ROWS, T) scratch instead of a (B, NH, T, T) buffer, which at
/// T = 1024 is 50 MB per layer for GPT-2 written and read back, half of it zeros. The
/// same arithmetic, so `out` is bit-identical to [`attention_forward`]'s.
pub fn attention_forward_no_probs(
    out: &mut [f32],
    qkv: &[f32],
    (b, t_len, c, nh): (usize, usize, usize, usize),
) {
    heads_forward(out, None, qkv, (b, t_len, c, nh));
}

fn heads_forward(
    out: &mut [f32],
    att: Option<&mut [f32]>,
    qkv: &[f32],
    (b, t_len, c, nh): (usize, usize, usize, usize),
) {
    use rayon::prelude::*;
    let hs = c / nh;
    assert!(out.len() >= b * t_len * c);
    assert!(qkv.len() >= b * t_len * 3 * c && hs * nh == c);
    let scale = 1.0 / (hs as f32).sqrt();
    let out_p = SyncPtr(out.as_mut_ptr());
    let att_p = att.map(|a| SyncPtr(a.as_mut_ptr()));
    (0..b * nh)
        .into_par_iter()
        .with_min_len(par::min_len())
        .for_each(|bh| {
            let (bi, h) = (bh / nh, bh % nh);
            let scratch = hs * t_len + if att_p.is_some() { 0 } else { ROWS * t_len };
            #[cfg(target_arch = "x86_64")]
            with_head_t(scratch, |sc| {
                let (kt, block) = sc.split_at_mut(hs * t_len);
                // SAFETY: avx512 checked by the caller; the views of qkv stay inside it
                // (asserted); out rows (bi, .., h), the head's (T, T) of att (its length
                // asserted by attention_forward) and the scratch belong to this task.
                unsafe {
                    let probs = match att_p {
                        Some(a) => Probs::Keep(a.get().add(bh * t_len * t_len)),
                        None => Probs::Block(block.as_mut_ptr()),
                    };
                    let q = qkv.as_ptr().add(bi * t_len * 3 * c + h * hs);
                    let o = out_p.get().add(bi * t_len * c + h * hs);
                    let kt = kt.as_mut_ptr();
                    head_forward(
                        (q, q.add(c), q.add(2 * c)),
                        o,
                        kt,
                        probs,
                        (t_len, c, hs),
                        scale,
                    );
                }
            });
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (bi, h, scale, &out_p, &att_p);
        });
}

/// Backward of [`attention_forward`] (same contract as kernels' `attention_backward`:
/// dqkv OVERWRITTEN, datt (B,NH,T,T) scratch): per (b, h), V^T once; per block of
/// `ROWS` queries dP = dO V^T, dS = the softmax backward, dQ = dS K; per block of
/// `ROWS` keys dK = dS^T Q and dV = P^T dO over the queries that see them. Requires
/// AVX-512 ([`crate::ops::cpu::has_avx512`]).
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
    let dq_p = SyncPtr(dqkv.as_mut_ptr());
    datt[..b * nh * tt]
        .par_chunks_mut(tt)
        .enumerate()
        .with_min_len(par::min_len())
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
    use crate::ops::cpu;
    #[allow(unused_imports)]
    use crate::ops::testutil::*;

    /// Causal softmax rows and their backward vs the f64 formulas, for row lengths that hit
    /// every tail (1..=70) and rows with garbage beyond the causal limit.
    #[test]
    fn causal_softmax_and_backward_match_f64() {
        if !cpu::has_avx512() {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        let t_len = 70;
        let scale = 0.37f32;
        let s0 = rnd_f32(t_len * t_len, 1);
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
        let d0 = rnd_f32(t_len * t_len, 2);
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

    /// The direct attention (forward: out and P; backward: dqkv) against the f64 loops, at
    /// head sizes below, at and above 16 lanes and T not a multiple of the row block.
    #[test]
    fn direct_attention_matches_f64_loops() {
        if !cpu::has_avx512() {
            eprintln!("SKIPPED: no AVX-512");
            return;
        }
        use super::super::{attention_backward_loops, attention_forward_loops};
        for (b, t, c, nh) in [
            (2, 9, 16, 2),
            (1, 64, 128, 4),
            (2, 70, 96, 2),
            (1, 3, 40, 1),
            (1, 150, 64, 1),
        ] {
            let qkv = rnd_f32(b * t * 3 * c, 5);
            let g = rnd_f32(b * t * c, 6);
            let up = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
            let (q64, g64) = (up(&qkv), up(&g));
            let (mut o64, mut a64) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
            attention_forward_loops(&mut o64, &mut a64, &q64, b, t, c, nh);
            let (mut d64, mut ds64) = (vec![0.0; b * t * 3 * c], vec![0.0; b * nh * t * t]);
            attention_backward_loops(&mut d64, &mut ds64, &g64, &q64, &a64, b, t, c, nh);
            // garbage in the outputs and scratch: everything must be overwritten
            let (mut o, mut a) = (vec![7f32; b * t * c], vec![7f32; b * nh * t * t]);
            attention_forward(&mut o, &mut a, &qkv, (b, t, c, nh));
            // Inference's version: the same arithmetic without the probabilities.
            let mut o_np = vec![7f32; b * t * c];
            attention_forward_no_probs(&mut o_np, &qkv, (b, t, c, nh));
            assert_eq!(o_np, o, "no_probs (b {b} t {t} c {c} nh {nh})");
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
}
