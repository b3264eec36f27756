//! Causal multi-head self-attention, forward and backward.
//!
//! `qkv(B, T, 3C)` holds q, k, v side by side; `out(B, T, C)`; `att(B, NH, T, T)` keeps the
//! softmax probabilities (row t uses entries 0..=t) for the backward. Three versions: the
//! plain loops ([`attention_forward_loops`], the reference the others are tested
//! against), the blocked GEMM version for any [`Float`], and for f32 on AVX-512 the direct
//! register-tiled kernels of [`avx512`](mod@avx512).
//!
//! # Performance notes
//! - **Blocked causal GEMMs**: scores and products run on `ATT_BLOCK`-row blocks that
//!   skip the masked upper triangle.
//! - **Softmax rows** (`softmax_causal_rows`): see [`avx512`](mod@avx512); the 8-lane
//!   loops ran each row's 0-7 element tail as scalar `exp`s.

use crate::ops::float::{as_f32, as_f32_mut, sum_lanes, Float};
use crate::ops::matmul::gemm_raw;
use crate::ops::par::{self, SyncPtr};
use crate::ops::{cpu, simd};
use rayon::prelude::*;
pub mod avx512;

/// Causal self-attention with plain loops (the reference for [`attention_forward`]).
/// qkv(B,T,3C) holds q,k,v side by side; out(B,T,C); att(B,NH,T,T) saves the softmax
/// probabilities (row t uses entries 0..=t) for backward. Parallel over (b, h).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_loops<F: Float>(
    out: &mut [F],
    att: &mut [F],
    qkv: &[F],
    _b: usize,
    t_len: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    let scale = F::ONE / F::from_usize(hs).sqrt();
    let out_p = SyncPtr(out.as_mut_ptr());
    att.par_chunks_mut(t_len * t_len)
        .enumerate()
        .with_min_len(par::min_len())
        .for_each(|(bh, att_bh)| {
            let (bi, h) = (bh / nh, bh % nh);
            let base = bi * t_len * 3 * c;
            for t in 0..t_len {
                let q = &qkv[base + t * 3 * c + h * hs..][..hs];
                let row = &mut att_bh[t * t_len..][..t_len];
                let mut maxv = F::from_f64(f64::NEG_INFINITY);
                for t2 in 0..=t {
                    let k = &qkv[base + t2 * 3 * c + c + h * hs..][..hs];
                    let mut dot = F::ZERO;
                    for i in 0..hs {
                        dot += q[i] * k[i];
                    }
                    let v = dot * scale;
                    row[t2] = v;
                    maxv = maxv.max(v);
                }
                let mut sum = F::ZERO;
                for x in row[..=t].iter_mut() {
                    let e = (*x - maxv).exp();
                    *x = e;
                    sum += e;
                }
                let inv = F::ONE / sum;
                for x in row[..=t].iter_mut() {
                    *x *= inv;
                }
                for x in row[t + 1..].iter_mut() {
                    *x = F::ZERO;
                }
                // SAFETY: (bi, t, h) slices are disjoint across tasks.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(
                        out_p.get().add(bi * t_len * c + t * c + h * hs),
                        hs,
                    )
                };
                o.fill(F::ZERO);
                for t2 in 0..=t {
                    let v = &qkv[base + t2 * 3 * c + 2 * c + h * hs..][..hs];
                    let a = row[t2];
                    for i in 0..hs {
                        o[i] += a * v[i];
                    }
                }
            }
        });
}

/// Backward of [`attention_forward_loops`]: dqkv (OVERWRITES) from dout; datt is (B,NH,T,T) scratch.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_loops<F: Float>(
    dqkv: &mut [F],
    datt: &mut [F],
    dout: &[F],
    qkv: &[F],
    att: &[F],
    b: usize,
    t_len: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    let scale = F::ONE / F::from_usize(hs).sqrt();
    let _ = b;
    let dq_p = SyncPtr(dqkv.as_mut_ptr());
    datt.par_chunks_mut(t_len * t_len)
        .enumerate()
        .with_min_len(par::min_len())
        .for_each(|(bh, datt_bh)| {
            let (bi, h) = (bh / nh, bh % nh);
            let base = bi * t_len * 3 * c;
            let att_bh = &att[bh * t_len * t_len..][..t_len * t_len];
            // SAFETY: this task touches only head h of batch bi inside dqkv.
            let dslice = |off: usize| unsafe {
                std::slice::from_raw_parts_mut(dq_p.get().add(base + off), hs)
            };
            for t in 0..t_len {
                for part in 0..3 {
                    dslice(t * 3 * c + part * c + h * hs).fill(F::ZERO);
                }
            }
            for t in 0..t_len {
                let arow = &att_bh[t * t_len..][..t_len];
                let drow = &mut datt_bh[t * t_len..][..t_len];
                let dout_t = &dout[bi * t_len * c + t * c + h * hs..][..hs];
                // out_t = sum att[t2] v_t2
                for t2 in 0..=t {
                    let v = &qkv[base + t2 * 3 * c + 2 * c + h * hs..][..hs];
                    let dv = dslice(t2 * 3 * c + 2 * c + h * hs);
                    let mut dot = F::ZERO;
                    for i in 0..hs {
                        dot += v[i] * dout_t[i];
                        dv[i] += arow[t2] * dout_t[i];
                    }
                    drow[t2] = dot;
                }
                // softmax backward: dpre = att * (datt - sum(att * datt))
                let mut s = F::ZERO;
                for t2 in 0..=t {
                    s += arow[t2] * drow[t2];
                }
                let q = &qkv[base + t * 3 * c + h * hs..][..hs];
                let dq = dslice(t * 3 * c + h * hs);
                for t2 in 0..=t {
                    let dpre = arow[t2] * (drow[t2] - s) * scale;
                    let k = &qkv[base + t2 * 3 * c + c + h * hs..][..hs];
                    let dk = dslice(t2 * 3 * c + c + h * hs);
                    for i in 0..hs {
                        dq[i] += dpre * k[i];
                        dk[i] += dpre * q[i];
                    }
                }
            }
        });
}

/// Query rows per block of the causal attention GEMMs: block i (rows i*BS..) needs only
/// keys 0..(i+1)*BS, so the masked upper triangle is skipped block-wise (model A, T=64:
/// 75% of the full T x T products; T=256: 56%).
const ATT_BLOCK: usize = 32;

/// Causal self-attention, parallel over (b, h), same contract as
/// [`attention_forward_loops`]. f32 on AVX-512: [`avx512::attention_forward`]'s
/// register-tiled kernels (no per-call GEMM packing). Otherwise small GEMMs (S = Q K^T,
/// softmax, O = P V) on strided views of qkv, in blocks of `ATT_BLOCK` query rows that
/// each multiply only the keys they can see (inside a block, the masked entries of S are
/// computed and discarded: cheaper than loops that cannot use the GEMM microkernels).
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<F: Float>(
    out: &mut [F],
    att: &mut [F],
    qkv: &[F],
    b: usize,
    t_len: usize,
    c: usize,
    nh: usize,
) {
    if cpu::has_avx512() {
        if let (Some(o), Some(a), Some(x)) = (as_f32_mut(out), as_f32_mut(att), as_f32(qkv)) {
            avx512::attention_forward(o, a, x, (b, t_len, c, nh));
            return;
        }
    }
    attention_forward_blocked(out, att, qkv, b, t_len, c, nh, ATT_BLOCK)
}

/// [`attention_forward`] for inference: the same `out`, without keeping the
/// probabilities (on AVX-512 f32 each block's scores live in a per-thread scratch:
/// [`avx512::attention_forward_no_probs`]; elsewhere a temporary (B, NH, T, T) buffer).
pub fn attention_forward_no_probs<F: Float>(
    out: &mut [F],
    qkv: &[F],
    b: usize,
    t_len: usize,
    c: usize,
    nh: usize,
) {
    if cpu::has_avx512() {
        if let (Some(o), Some(x)) = (as_f32_mut(out), as_f32(qkv)) {
            avx512::attention_forward_no_probs(o, x, (b, t_len, c, nh));
            return;
        }
    }
    let mut att = vec![F::ZERO; b * nh * t_len * t_len];
    attention_forward(out, &mut att, qkv, b, t_len, c, nh)
}

/// [`attention_forward`] with query blocks of `bs` rows (bs >= T: one full block).
#[allow(clippy::too_many_arguments)]
fn attention_forward_blocked<F: Float>(
    out: &mut [F],
    att: &mut [F],
    qkv: &[F],
    b: usize,
    t_len: usize,
    c: usize,
    nh: usize,
    bs: usize,
) {
    let hs = c / nh;
    let bs = bs.max(1);
    assert!(out.len() >= b * t_len * c && att.len() >= b * nh * t_len * t_len);
    assert!(qkv.len() >= b * t_len * 3 * c);
    let scale = F::ONE / F::from_usize(hs).sqrt();
    let out_p = SyncPtr(out.as_mut_ptr());
    att[..b * nh * t_len * t_len]
        .par_chunks_mut(t_len * t_len)
        .enumerate()
        .with_min_len(par::min_len())
        .for_each(|(bh, s)| {
            let (bi, h) = (bh / nh, bh % nh);
            let q = qkv[bi * t_len * 3 * c + h * hs..].as_ptr();
            for r0 in (0..t_len).step_by(bs) {
                let rn = bs.min(t_len - r0);
                let kc = r0 + rn; // keys 0..kc are visible to rows r0..kc
                                  // SAFETY: q/k/v views stay inside qkv (asserted above); s is this task's own.
                unsafe {
                    let k = q.add(c);
                    // S[r0.., ..kc] = Q[r0..] K[..kc]^T
                    gemm_raw(
                        rn,
                        kc,
                        hs,
                        s.as_mut_ptr().add(r0 * t_len),
                        t_len,
                        false,
                        q.add(r0 * 3 * c),
                        3 * c,
                        1,
                        k,
                        1,
                        3 * c,
                    );
                }
                softmax_causal_rows(s, t_len, r0, kc, scale);
                // SAFETY: out rows (bi, r0..kc, h) are written only by this task.
                unsafe {
                    let v = qkv[bi * t_len * 3 * c + 2 * c + h * hs..].as_ptr();
                    let o = out_p.get().add(bi * t_len * c + r0 * c + h * hs);
                    // O[r0..] = P[r0.., ..kc] V[..kc]
                    gemm_raw(
                        rn,
                        hs,
                        kc,
                        o,
                        c,
                        false,
                        s.as_ptr().add(r0 * t_len),
                        t_len,
                        1,
                        v,
                        3 * c,
                        1,
                    );
                }
            }
        });
}

/// Rows r0..r1 of the causal scores s (rows of t_len): row t <- softmax(row[..=t] *
/// scale), zeros after; the AVX-512 version ([`avx512::softmax_causal_rows`]) when the CPU
/// has it, else [`softmax_causal_row`] per row.
#[inline]
fn softmax_causal_rows<F: Float>(s: &mut [F], t_len: usize, r0: usize, r1: usize, scale: F) {
    if cpu::has_avx512() {
        if let Some(s) = as_f32_mut(s) {
            avx512::softmax_causal_rows(s, t_len, r0, r1, scale.to_f64() as f32);
            return;
        }
    }
    for t in r0..r1 {
        softmax_causal_row(&mut s[t * t_len..(t + 1) * t_len], t + 1, scale);
    }
}

/// row[..n] = softmax(row[..n] * scale), row[n..] = 0.
#[inline]
fn softmax_causal_row<F: Float>(row: &mut [F], n: usize, scale: F) {
    if let Some(r) = as_f32_mut(row) {
        let scale = scale.to_f64() as f32;
        let (head, tail) = r.split_at_mut(n);
        simd::softmax_scaled(head, scale);
        tail.fill(0.0);
        return;
    }
    let (head, tail) = row.split_at_mut(n);
    let maxv = head
        .iter()
        .fold(F::from_f64(f64::NEG_INFINITY), |m, &x| m.max(x));
    let mut sum = F::ZERO;
    for x in head.iter_mut() {
        *x = ((*x - maxv) * scale).exp();
        sum += *x;
    }
    let inv = F::ONE / sum;
    for x in head.iter_mut() {
        *x *= inv;
    }
    tail.fill(F::ZERO);
}

/// The attention softmax backward on rows r0..r1 of ds (dP in, dS out; p the
/// probabilities, rows of t_len): ds = p (ds - sum_j p ds) * scale over j <= t, zeros
/// after; the AVX-512 version ([`avx512::softmax_grad_causal_rows`]) when the CPU has it.
#[inline]
fn softmax_grad_causal_rows<F: Float>(
    ds: &mut [F],
    p: &[F],
    t_len: usize,
    r0: usize,
    r1: usize,
    scale: F,
) {
    if cpu::has_avx512() {
        if let (Some(p), Some(ds)) = (as_f32(p), as_f32_mut(ds)) {
            avx512::softmax_grad_causal_rows(ds, p, t_len, r0, r1, scale.to_f64() as f32);
            return;
        }
    }
    cpu::avx2(
        #[inline(always)]
        || {
            for t in r0..r1 {
                let pr = &p[t * t_len..(t + 1) * t_len];
                let dr = &mut ds[t * t_len..(t + 1) * t_len];
                let dot = sum_lanes(t + 1, |t2| pr[t2] * dr[t2]);
                for (d, &q) in dr[..=t].iter_mut().zip(&pr[..=t]) {
                    *d = q * (*d - dot) * scale;
                }
                for x in dr[t + 1..].iter_mut() {
                    *x = F::ZERO;
                }
            }
        },
    );
}

/// Backward of [`attention_forward`] (f32 on AVX-512: [`avx512::attention_backward`];
/// otherwise as below) as GEMMs per (b, h): dP = dO V^T, dV = P^T dO,
/// dS = P (dP - rowsum(P dP)) / sqrt(hs), dQ = dS K, dK = dS^T Q, each over the causal
/// blocks only (query block i: keys ..(i+1)*BS; key block j: queries j*BS..). dqkv is
/// OVERWRITTEN; datt (B,NH,T,T) is scratch.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<F: Float>(
    dqkv: &mut [F],
    datt: &mut [F],
    dout: &[F],
    qkv: &[F],
    att: &[F],
    b: usize,
    t_len: usize,
    c: usize,
    nh: usize,
) {
    if cpu::has_avx512() {
        if let (Some(dx), Some(ds), Some(g), Some(x), Some(a)) = (
            as_f32_mut(dqkv),
            as_f32_mut(datt),
            as_f32(dout),
            as_f32(qkv),
            as_f32(att),
        ) {
            avx512::attention_backward(dx, ds, g, x, a, (b, t_len, c, nh));
            return;
        }
    }
    attention_backward_blocked(dqkv, datt, dout, qkv, att, b, t_len, c, nh, ATT_BLOCK)
}

/// [`attention_backward`] with blocks of `bs` rows (bs >= T: one full block).
#[allow(clippy::too_many_arguments)]
fn attention_backward_blocked<F: Float>(
    dqkv: &mut [F],
    datt: &mut [F],
    dout: &[F],
    qkv: &[F],
    att: &[F],
    b: usize,
    t_len: usize,
    c: usize,
    nh: usize,
    bs: usize,
) {
    let hs = c / nh;
    let bs = bs.max(1);
    let tt = t_len * t_len;
    assert!(dqkv.len() >= b * t_len * 3 * c && qkv.len() >= b * t_len * 3 * c);
    assert!(datt.len() >= b * nh * tt && att.len() >= b * nh * tt);
    assert!(dout.len() >= b * t_len * c);
    let scale = F::ONE / F::from_usize(hs).sqrt();
    let dq_p = SyncPtr(dqkv.as_mut_ptr());
    datt[..b * nh * tt]
        .par_chunks_mut(tt)
        .enumerate()
        .with_min_len(par::min_len())
        .for_each(|(bh, ds)| {
            let (bi, h) = (bh / nh, bh % nh);
            let p = &att[bh * tt..(bh + 1) * tt];
            let base = bi * t_len * 3 * c + h * hs;
            // SAFETY: all views are inside the asserted buffers; this task alone writes
            // head h of batch bi in dqkv, and its own ds.
            unsafe {
                let q = qkv.as_ptr().add(base);
                let k = q.add(c);
                let v = q.add(2 * c);
                let dout_bh = dout.as_ptr().add(bi * t_len * c + h * hs);
                let dq = dq_p.get().add(base);
                let dk = dq.add(c);
                let dv = dq.add(2 * c);
                for r0 in (0..t_len).step_by(bs) {
                    let rn = bs.min(t_len - r0);
                    let kc = r0 + rn;
                    // dP[r0.., ..kc] = dO[r0..] V[..kc]^T
                    gemm_raw(
                        rn,
                        kc,
                        hs,
                        ds.as_mut_ptr().add(r0 * t_len),
                        t_len,
                        false,
                        dout_bh.add(r0 * c),
                        c,
                        1,
                        v,
                        1,
                        3 * c,
                    );
                    softmax_grad_causal_rows(ds, p, t_len, r0, kc, scale);
                    // dQ[r0..] = dS[r0.., ..kc] K[..kc]
                    gemm_raw(
                        rn,
                        hs,
                        kc,
                        dq.add(r0 * 3 * c),
                        3 * c,
                        false,
                        ds.as_ptr().add(r0 * t_len),
                        t_len,
                        1,
                        k,
                        3 * c,
                        1,
                    );
                }
                for j0 in (0..t_len).step_by(bs) {
                    let jn = bs.min(t_len - j0);
                    let qn = t_len - j0; // queries j0.. see keys j0..j0+jn
                                         // dV[j0..] = P[j0.., j0..j0+jn]^T dO[j0..]
                    gemm_raw(
                        jn,
                        hs,
                        qn,
                        dv.add(j0 * 3 * c),
                        3 * c,
                        false,
                        p.as_ptr().add(j0 * t_len + j0),
                        1,
                        t_len,
                        dout_bh.add(j0 * c),
                        c,
                        1,
                    );
                    // dK[j0..] = dS[j0.., j0..j0+jn]^T Q[j0..]
                    gemm_raw(
                        jn,
                        hs,
                        qn,
                        dk.add(j0 * 3 * c),
                        3 * c,
                        false,
                        ds.as_ptr().add(j0 * t_len + j0),
                        1,
                        t_len,
                        q.add(j0 * 3 * c),
                        3 * c,
                        1,
                    );
                }
            }
        });
}

/// Plain, obviously-correct versions (loops, f64 sums) that the tests check the
/// optimized kernels against.
pub mod reference {
    use super::*;

    /// Causal attention for one sequence of the batch at a time, naive.
    pub fn attention_forward<F: Float>(
        out: &mut [F],
        qkv: &[F],
        b: usize,
        t_len: usize,
        c: usize,
        nh: usize,
    ) {
        let hs = c / nh;
        let scale = 1.0 / (hs as f64).sqrt();
        for bi in 0..b {
            for h in 0..nh {
                for t in 0..t_len {
                    let q = |i: usize| qkv[(bi * t_len + t) * 3 * c + h * hs + i].to_f64();
                    let scores: Vec<f64> = (0..=t)
                        .map(|t2| {
                            (0..hs)
                                .map(|i| {
                                    q(i) * qkv[(bi * t_len + t2) * 3 * c + c + h * hs + i].to_f64()
                                })
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                    for i in 0..hs {
                        let mut acc = 0.0;
                        for (t2, s) in scores.iter().enumerate() {
                            acc += (s - m).exp() / z
                                * qkv[(bi * t_len + t2) * 3 * c + 2 * c + h * hs + i].to_f64();
                        }
                        out[(bi * t_len + t) * c + h * hs + i] = F::from_f64(acc);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::ops::testutil::*;

    #[test]
    fn attention_matches_reference_and_fd() {
        let (b, t, c, nh) = (2, 5, 8, 2);
        assert!(
            t <= ATT_BLOCK,
            "attention_blocks_match_loops covers the blocked path"
        );
        let qkv = rnd(b * t * 3 * c, 9);
        let g = rnd(b * t * c, 10);
        let fwd = |x: &[f64]| {
            let (mut o, mut a) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
            attention_forward(&mut o, &mut a, x, b, t, c, nh);
            (o, a)
        };
        let (out, att) = fwd(&qkv);
        let mut want = vec![0.0; b * t * c];
        reference::attention_forward(&mut want, &qkv, b, t, c, nh);
        close(&out, &want, 1e-12, "forward");
        let mut dqkv = vec![7.0; b * t * 3 * c];
        let mut datt = vec![0.0; b * nh * t * t];
        attention_backward(&mut dqkv, &mut datt, &g, &qkv, &att, b, t, c, nh);
        close(&fd(&qkv, &|x| dot(&fwd(x).0, &g)), &dqkv, 1e-6, "dqkv");
        // the plain-loop versions agree with the GEMM versions
        let (mut o2, mut a2) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
        attention_forward_loops(&mut o2, &mut a2, &qkv, b, t, c, nh);
        close(&o2, &out, 1e-12, "loops forward");
        close(&a2, &att, 1e-12, "loops att");
        let mut d2 = vec![-3.0; b * t * 3 * c];
        attention_backward_loops(&mut d2, &mut datt, &g, &qkv, &att, b, t, c, nh);
        close(&d2, &dqkv, 1e-12, "loops backward");
    }

    /// Causal blocks of every size (one row, uneven, one full block) give the plain
    /// loops' attention forward and backward, also at the model's block size with T > 32.
    #[test]
    fn attention_blocks_match_loops() {
        for (t, blocks) in [(7usize, vec![1, 2, 3, 7, 9]), (70, vec![ATT_BLOCK])] {
            let (b, c, nh) = (2, 8, 2);
            let qkv = rnd(b * t * 3 * c, 31);
            let g = rnd(b * t * c, 32);
            let (mut want_o, mut want_a) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
            attention_forward_loops(&mut want_o, &mut want_a, &qkv, b, t, c, nh);
            let mut want_d = vec![0.0; b * t * 3 * c];
            let mut datt = vec![0.0; b * nh * t * t];
            attention_backward_loops(&mut want_d, &mut datt, &g, &qkv, &want_a, b, t, c, nh);
            for bs in blocks {
                let (mut o, mut a) = (vec![9.0; b * t * c], vec![9.0; b * nh * t * t]);
                attention_forward_blocked(&mut o, &mut a, &qkv, b, t, c, nh, bs);
                close(&o, &want_o, 1e-12, &format!("T {t} block {bs} out"));
                close(&a, &want_a, 1e-12, &format!("T {t} block {bs} att"));
                let mut d = vec![9.0; b * t * 3 * c];
                let mut ds = vec![9.0; b * nh * t * t];
                attention_backward_blocked(&mut d, &mut ds, &g, &qkv, &a, b, t, c, nh, bs);
                close(&d, &want_d, 1e-12, &format!("T {t} block {bs} dqkv"));
            }
        }
    }
}
