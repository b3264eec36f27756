//! The w8a8 GEMM of a w8a8 model's parallel paths (prefill, scoring): out(M, N) =
//! a(M, K) @ w(N, K)^T + bias with `w` the q8 (out, in) matrix and each row of `a` rounded
//! to int8 blocks of 32 exactly as the decode step rounds its input ([`ActQ8`]), so both
//! paths compute the same integer products. AVX-512 VNNI `vpdpbusd`: 64 int8
//! multiply-adds per instruction against an f32 FMA's 16.
//!
//! Layout, as in [`crate::ops::gemm_bf16`]: tokens in the lanes, weights broadcast. The
//! activations are packed in 32-token panels of (K/4 groups, 32 tokens) words, each word
//! four consecutive int8 inputs of one token; a weight row's four int8 values are one
//! broadcast word, made unsigned by flipping the top bit (q + 128), so each block's dot
//! product starts at -128 * (the token's sum over the block) (`vpdpbusd` multiplies
//! unsigned by signed bytes). Per block of 32: eight `vpdpbusd` into an i32 accumulator,
//! then one FMA of its f32 value with (weight scale x the token's input scale) into the
//! f32 accumulator, blocks in order. Tile: 6 outputs x 32 tokens (12 i32 + 12 f32
//! accumulators).

use super::{ActQ8, Q8_BLOCK};
use crate::ops::par::SyncPtr;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const R: usize = 6;
const TOKENS: usize = 32;
/// int8 groups of 4 per block.
const GROUPS: usize = Q8_BLOCK / 4;

/// True where [`matmul`] can run (AVX-512 with VNNI).
pub(crate) fn available() -> bool {
    crate::ops::cpu::has_avx512() && crate::ops::cpu::has_avx512_vnni()
}

/// The activations, quantized and packed: `q` (panels, K/4, 32) words, `scale` and
/// `negsum` (panels, K/32, 32) per token and block (the input scale; -128 x the block's
/// sum of int8 inputs).
struct Packed {
    q: Vec<u32>,
    scale: Vec<f32>,
    negsum: Vec<i32>,
}

fn pack(a: &[f32], m: usize, k: usize) -> Packed {
    let mp = m.next_multiple_of(TOKENS);
    let (ng, nb) = (k / 4, k / Q8_BLOCK);
    let mut p = Packed {
        q: vec![0; mp / TOKENS * ng * TOKENS],
        scale: vec![0.0; mp / TOKENS * nb * TOKENS],
        negsum: vec![0; mp / TOKENS * nb * TOKENS],
    };
    p.q.par_chunks_mut(ng * TOKENS)
        .zip(p.scale.par_chunks_mut(nb * TOKENS))
        .zip(p.negsum.par_chunks_mut(nb * TOKENS))
        .enumerate()
        .for_each(|(panel, ((q, scale), negsum))| {
            let mut xq = ActQ8::default();
            for t in panel * TOKENS..((panel + 1) * TOKENS).min(m) {
                xq.quantize(&a[t * k..(t + 1) * k]);
                let lane = t % TOKENS;
                for (g, four) in xq.q.chunks_exact(4).enumerate() {
                    let b = [four[0] as u8, four[1] as u8, four[2] as u8, four[3] as u8];
                    q[g * TOKENS + lane] = u32::from_le_bytes(b);
                }
                for b in 0..nb {
                    scale[b * TOKENS + lane] = xq.scales[b];
                    let s: i32 = xq.q[b * Q8_BLOCK..(b + 1) * Q8_BLOCK]
                        .iter()
                        .map(|&v| v as i32)
                        .sum();
                    negsum[b * TOKENS + lane] = -128 * s;
                }
            }
        });
    p
}

/// out(M, N) = a(M, K) @ w(N, K)^T + bias, `w` int8 (out, in) with f32 `scales` per row
/// and block of 32, `a` rounded to int8 blocks like [`ActQ8::quantize`]. K must be a
/// multiple of 32.
///
/// # Panics
/// If the shapes do not match, K is not a multiple of 32, or [`available`] is false.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    out: &mut [f32],
    a: &[f32],
    w: &[i8],
    scales: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(available(), "w8a8 GEMM without AVX-512 VNNI");
    assert!(
        k.is_multiple_of(Q8_BLOCK),
        "w8a8 GEMM needs K a multiple of 32, got {k}"
    );
    assert!(out.len() >= m * n && a.len() >= m * k && w.len() >= n * k);
    assert!(scales.len() >= n * (k / Q8_BLOCK) && bias.is_none_or(|b| b.len() >= n));
    if m == 0 || n == 0 {
        return;
    }
    let p = pack(a, m, k);
    let op = SyncPtr(out.as_mut_ptr());
    crate::ops::par::for_each_tile(
        n,
        R,
        m,
        TOKENS,
        || (),
        |_, o0, rows, t0, toks| {
            // SAFETY: AVX-512 VNNI (asserted); the tile reads weight rows o0..o0 + rows and
            // their scales, the activation panel of tokens t0..t0 + 32, and writes out[t][o]
            // for its tokens and rows: disjoint across blocks.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                crate::ops::par::tile_by_shape!(
                    tile,
                    rows,
                    toks,
                    [1, 2, 3, 4, 5, 6],
                    (op, &p, w, scales, bias, o0, t0, toks, k, n)
                )
            };
        },
    );
}

/// One tile: outputs o0..o0 + RR, tokens t0..t0 + toks (toks <= 16 * NV).
///
/// # Safety
/// See [`matmul`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const RR: usize, const NV: usize>(
    op: SyncPtr<f32>,
    p: &Packed,
    w: &[i8],
    scales: &[f32],
    bias: Option<&[f32]>,
    o0: usize,
    t0: usize,
    toks: usize,
    k: usize,
    n: usize,
) {
    let (ng, nb) = (k / 4, k / Q8_BLOCK);
    // SAFETY: the caller's contract.
    unsafe {
        let qp = p.q.as_ptr().add(t0 * ng);
        let sp = p.scale.as_ptr().add(t0 * nb);
        let np = p.negsum.as_ptr().add(t0 * nb);
        let flip = _mm512_set1_epi32(0x8080_8080u32 as i32);
        let wrow = |r: usize| w.as_ptr().add((o0 + r) * k) as *const u32;
        let mut acc = [[_mm512_setzero_ps(); NV]; RR];
        for b in 0..nb {
            let mut start = [_mm512_setzero_si512(); NV];
            let mut xs = [_mm512_setzero_ps(); NV];
            for j in 0..NV {
                start[j] = _mm512_loadu_si512(np.add(b * TOKENS + 16 * j) as *const _);
                xs[j] = _mm512_loadu_ps(sp.add(b * TOKENS + 16 * j));
            }
            let mut d = [start; RR];
            for g in 0..GROUPS {
                let gi = b * GROUPS + g;
                let mut av = [_mm512_setzero_si512(); NV];
                for (j, v) in av.iter_mut().enumerate() {
                    *v = _mm512_loadu_si512(qp.add(gi * TOKENS + 16 * j) as *const _);
                }
                for (r, dr) in d.iter_mut().enumerate() {
                    let wv = _mm512_xor_si512(
                        _mm512_set1_epi32(wrow(r).add(gi).read_unaligned() as i32),
                        flip,
                    );
                    for (j, dj) in dr.iter_mut().enumerate() {
                        *dj = _mm512_dpbusd_epi32(*dj, wv, av[j]);
                    }
                }
            }
            for (r, (ar, dr)) in acc.iter_mut().zip(&d).enumerate() {
                let ws = _mm512_set1_ps(*scales.get_unchecked((o0 + r) * nb + b));
                for j in 0..NV {
                    let sc = _mm512_mul_ps(ws, xs[j]);
                    ar[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dr[j]), sc, ar[j]);
                }
            }
        }
        // Write back transposed: lane i of acc[r][j] is out[t0 + 16j + i][o0 + r].
        for (r, ar) in acc.iter().enumerate() {
            let bv = bias.map_or(0.0, |bb| bb[o0 + r]);
            let col = op.get().add(t0 * n + o0 + r);
            crate::ops::simd512::scatter_column(col, n, ar, bv, toks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2654435761).rotate_left(13);
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Against the step's own w8a8 arithmetic (the scalar row kernel) on every shape
    /// class: the integer products are exact, so only the f32 block sums differ in order.
    #[test]
    fn matches_the_step_kernel() {
        if !available() {
            eprintln!("SKIPPED: no AVX-512 VNNI on this CPU");
            return;
        }
        for &(m, k, n) in &[
            (1, 32, 1),
            (5, 64, 7),
            (17, 96, 6),
            (33, 32, 13),
            (70, 768, 20),
        ] {
            let a = data(m * k, 1);
            let wf = data(n * k, 2);
            let (qm, _) =
                super::super::QMat::encode(&wf, n, k, false, super::super::WeightFormat::W8A8);
            let super::super::Data::Q8 { q, scales, .. } = &qm.data else {
                unreachable!("w8a8 is stored as q8")
            };
            let bias = data(n, 3);
            let mut out = vec![f32::NAN; m * n];
            matmul(&mut out, &a, q, scales, Some(&bias), m, k, n);
            let mut xq = ActQ8::default();
            for t in 0..m {
                xq.quantize(&a[t * k..(t + 1) * k]);
                let mut want = vec![0f32; n];
                super::super::w8a8::w8a8_scalar(&mut want, q, scales, &xq);
                for o in 0..n {
                    let (got, want) = (out[t * n + o], want[o] + bias[o]);
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{m}x{k}x{n}: out[{t}][{o}] = {got}, want {want}"
                    );
                }
            }
        }
    }
}
