//! bf16 GEMM for the parallel inference paths (prefill, scoring) of a model whose weights
//! are 16-bit: out(M, N) = a(M, K) @ w(N, K)^T (+ bias), with `w` the decode step's bf16
//! (out, in) matrices as they are (no second copy), `a` rounded to bf16 once, and f32
//! accumulation in AVX512_BF16's `vdpbf16ps` (two bf16 products per f32 lane per
//! instruction: twice the multiply-adds of an f32 FMA). f16 matrices ([`Weights::F16`])
//! are rounded to bf16 a block of rows at a time as the GEMM reaches them.
//!
//! Hand-written because no maintained Rust crate has a bf16 x bf16 -> f32 GEMM (the
//! `gemm` crate's f16 path widens to f32 first, which is what this replaces).
//!
//! # Layout
//! `vdpbf16ps` multiplies pairs along K. The activations are packed once per call into
//! `ap`: panels of 32 tokens, each (K/2 pairs, 32 tokens) u32 words, tokens contiguous:
//! one 64-byte load then holds one K pair of 16 tokens, and a tile reads its panel as one
//! sequential stream. A weight row's pair `(w[o][2p], w[o][2p + 1])` is one u32 of the
//! (out, in) row, broadcast to all lanes. A tile is `R` outputs x 32 tokens: 2R
//! accumulators of 16 tokens each, which hold output columns, so the tile is written back
//! transposed (a scatter with stride N, once per tile after K/2 steps).
//!
//! Threads split the outputs in blocks (`par::for_each_tile`); each block runs
//! over every 32-token panel of `ap`, so its weight rows (R x K x 2 bytes, at most 72 KB)
//! stay in L2 while the panels stream from L2/L3. An f16 block is widened to bf16 into the
//! task's scratch buffer at its first panel: 12 x K conversions against 12 x K x 32
//! multiply-adds per panel, a few percent of the block's time at M = 64.

use super::par::SyncPtr;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Output rows (weight rows) per tile: 2 x 12 accumulators + 2 activation vectors + 1
/// broadcast fit the 32 vector registers.
const R: usize = 12;
/// Tokens per tile (two 16-lane vectors).
const TOKENS: usize = 32;

/// True where [`matmul`] can run: AVX-512F with AVX512_BF16, detected at run time.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The weight matrix of [`matmul`]: (N, K) row-major 16-bit floats, as bits.
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// bf16: multiplied as they are.
    Bf16(&'a [u16]),
    /// IEEE half: each value rounded to bf16 (to nearest, ties to even) before the
    /// multiply, so the products are those of [`Weights::Bf16`] with the rounded values.
    F16(&'a [u16]),
}

impl Weights<'_> {
    fn len(&self) -> usize {
        match self {
            Weights::Bf16(w) | Weights::F16(w) => w.len(),
        }
    }
}

/// Rounds `x` to bf16 (to nearest, ties to even; what `vcvtneps2bf16` does), as bits.
fn bf16_bits(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// The activations (M, K) as bf16 pairs in panels of [`TOKENS`] tokens, (M/32, K/2, 32)
/// u32 words: word (t / 32, p, t % 32) holds `a[t][2p]` in its low half and `a[t][2p + 1]`
/// in its high half; tokens m..mp (mp = m rounded up to 32) are zero. A tile walks one
/// panel from start to end: one sequential stream (tokens-major rows of `mp` words put
/// consecutive pairs 4 KB apart at M = 1024, all in the same L1 sets).
fn pack_activations(a: &[f32], m: usize, k: usize, mp: usize) -> Vec<u32> {
    let kp = k / 2;
    let mut ap = vec![0u32; kp * mp];
    ap.par_chunks_mut(kp * TOKENS)
        .enumerate()
        .for_each(|(panel, dst)| {
            let mut words = vec![0u32; kp];
            for t in panel * TOKENS..((panel + 1) * TOKENS).min(m) {
                let row = &a[t * k..(t + 1) * k];
                // SAFETY: `available` was asserted by the caller (matmul).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    pairs_avx512(&mut words, row)
                };
                #[cfg(not(target_arch = "x86_64"))]
                pairs_scalar(&mut words, row);
                for (p, &wd) in words.iter().enumerate() {
                    dst[p * TOKENS + t % TOKENS] = wd;
                }
            }
        });
    ap
}

/// `words[p]` = the bf16 pair `(row[2p], row[2p + 1])`, low half first.
fn pairs_scalar(words: &mut [u32], row: &[f32]) {
    for (wd, pair) in words.iter_mut().zip(row.chunks_exact(2)) {
        *wd = bf16_bits(pair[0]) as u32 | (bf16_bits(pair[1]) as u32) << 16;
    }
}

/// [`pairs_scalar`] 16 words at a time (`vcvtne2ps2bf16`: the same rounding, except that
/// it treats subnormal inputs as zero, a difference below bf16's own resolution).
///
/// # Safety
/// AVX-512F and AVX512_BF16 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pairs_avx512(words: &mut [u32], row: &[f32]) {
    let full = words.len() / 16 * 16;
    assert!(row.len() >= 2 * words.len());
    let (rp, wp) = (row.as_ptr(), words.as_mut_ptr());
    let mut p = 0;
    while p < full {
        // SAFETY: floats 2p..2p + 32 of row and words p..p + 16 are in bounds.
        unsafe {
            let lo = _mm512_loadu_ps(rp.add(2 * p));
            let hi = _mm512_loadu_ps(rp.add(2 * p + 16));
            let bh = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                wp.add(p) as *mut _,
                std::mem::transmute::<__m512bh, __m512i>(bh),
            );
        }
        p += 16;
    }
    pairs_scalar(&mut words[full..], &row[2 * full..]);
}

/// `dst` = the f16 values `src` rounded to bf16 (f16's 11-bit significands to 8 bits; its
/// range lies inside bf16's, so nothing overflows or flushes).
fn f16_to_bf16(dst: &mut Vec<u16>, src: &[u16]) {
    dst.clear();
    dst.resize(src.len(), 0);
    // SAFETY: `available` was asserted by the caller (matmul).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        f16_to_bf16_avx512(dst, src)
    };
    #[cfg(not(target_arch = "x86_64"))]
    f16_to_bf16_scalar(dst, src);
}

fn f16_to_bf16_scalar(dst: &mut [u16], src: &[u16]) {
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = bf16_bits(half::f16::from_bits(h).to_f32());
    }
}

/// [`f16_to_bf16_scalar`] 32 values at a time (`vcvtph2ps`, then `vcvtne2ps2bf16`, whose
/// flushing of f32 subnormals never applies: the smallest f16 is 2^-24).
///
/// # Safety
/// AVX-512F and AVX512_BF16 must be available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn f16_to_bf16_avx512(dst: &mut [u16], src: &[u16]) {
    assert_eq!(dst.len(), src.len());
    let full = src.len() / 32 * 32;
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    let mut i = 0;
    while i < full {
        // SAFETY: values i..i + 32 of src and dst are in bounds.
        unsafe {
            let lo = _mm512_cvtph_ps(_mm256_loadu_si256(sp.add(i) as *const _));
            let hi = _mm512_cvtph_ps(_mm256_loadu_si256(sp.add(i + 16) as *const _));
            let bh = _mm512_cvtne2ps_pbh(hi, lo);
            _mm512_storeu_si512(
                dp.add(i) as *mut _,
                std::mem::transmute::<__m512bh, __m512i>(bh),
            );
        }
        i += 32;
    }
    f16_to_bf16_scalar(&mut dst[full..], &src[full..]);
}

/// out(M, N) = a(M, K) @ w(N, K)^T + bias, with the products in bf16 (the activations
/// round to bf16, f16 weights too) summed in f32. K must be even (the pairs).
///
/// # Panics
/// If the shapes do not match the slices, K is odd, or [`available`] is false.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    out: &mut [f32],
    a: &[f32],
    w: Weights<'_>,
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(available(), "bf16 GEMM without AVX512_BF16");
    assert!(k.is_multiple_of(2), "bf16 GEMM needs an even K, got {k}");
    assert!(out.len() >= m * n && a.len() >= m * k && w.len() >= n * k);
    assert!(bias.is_none_or(|b| b.len() >= n));
    if m == 0 || n == 0 {
        return;
    }
    let mp = m.next_multiple_of(TOKENS);
    let ap = pack_activations(a, m, k, mp);
    let op = SyncPtr(out.as_mut_ptr());
    super::par::for_each_tile(n, R, m, TOKENS, Vec::new, |scratch, o0, rows, t0, toks| {
        // The block's rows as bf16: (rows, k).
        let block: &[u16] = match w {
            Weights::Bf16(w) => &w[o0 * k..(o0 + rows) * k],
            Weights::F16(w) => {
                if t0 == 0 {
                    f16_to_bf16(scratch, &w[o0 * k..(o0 + rows) * k]);
                }
                scratch
            }
        };
        // SAFETY: AVX-512F + AVX512_BF16 (asserted via `available`); the tile reads the
        // block's rows (rows x k) and the panel of tokens t0..t0 + 32 of ap (t0 a
        // multiple of 32, < mp), and writes out[t][o] for t in t0..t0 + toks, o in
        // o0..o0 + rows: disjoint across blocks.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            super::par::tile_by_shape!(
                tile,
                rows,
                toks,
                [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                (op, &ap, block, bias, o0, t0, toks, k, n)
            )
        };
    });
}

/// One tile: outputs o0..o0 + RR (rows 0..RR of `w`, the block's bf16 rows), tokens
/// t0..t0 + toks (toks <= 16 * NV).
///
/// # Safety
/// See [`matmul`]: AVX-512F + AVX512_BF16, and the ranges in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const RR: usize, const NV: usize>(
    op: SyncPtr<f32>,
    ap: &[u32],
    w: &[u16],
    bias: Option<&[f32]>,
    o0: usize,
    t0: usize,
    toks: usize,
    k: usize,
    n: usize,
) {
    // SAFETY: the caller's contract (see above).
    unsafe {
        let kp = k / 2;
        let mut acc = [[_mm512_setzero_ps(); NV]; RR];
        // The panel of tokens t0..t0 + 32 (t0 is a multiple of 32).
        let app = ap.as_ptr().add(t0 * kp);
        // Row o's pairs as u32 words (the rows are 2k bytes, k even: 4-byte aligned pairs
        // relative to the row start; unaligned loads anyway).
        let wrow = |r: usize| w.as_ptr().add(r * k) as *const u32;
        for p in 0..kp {
            let mut av = [_mm512_setzero_ps(); NV];
            for (j, v) in av.iter_mut().enumerate() {
                *v = _mm512_castsi512_ps(_mm512_loadu_si512(
                    app.add(p * TOKENS + 16 * j) as *const _
                ));
            }
            for (r, accr) in acc.iter_mut().enumerate() {
                let wv = _mm512_set1_epi32(wrow(r).add(p).read_unaligned() as i32);
                let wb: __m512bh = std::mem::transmute(wv);
                for (j, a) in accr.iter_mut().enumerate() {
                    *a = _mm512_dpbf16_ps(*a, std::mem::transmute::<__m512, __m512bh>(av[j]), wb);
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

    use crate::ops::testutil::rnd_f32 as data;

    /// Every shape class (tails of outputs and tokens, one token, 16 exactly) against the
    /// same products in f64, for bf16 weights and for f16 weights (rounded to bf16 by the
    /// GEMM): bf16-rounded activations and weights are exact in f64, so the only
    /// difference is f32 accumulation order.
    #[test]
    fn matches_f64_products_of_the_bf16_values() {
        if !available() {
            eprintln!("SKIPPED: no AVX512_BF16 on this CPU");
            return;
        }
        let bf16 = |x: f32| half::bf16::from_bits(bf16_bits(x)).to_f64();
        for &(m, k, n) in &[
            (1, 2, 1),
            (5, 8, 13),
            (16, 64, 12),
            (18, 32, 3),
            (27, 40, 14),
            (33, 96, 25),
            (70, 768, 40),
        ] {
            let a = data(m * k, 1);
            let wf = data(n * k, 2);
            let wb: Vec<u16> = wf.iter().map(|&v| bf16_bits(v)).collect();
            let wh: Vec<u16> = wf
                .iter()
                .map(|&v| half::f16::from_f32(v).to_bits())
                .collect();
            // The weights each variant multiplies with, in f64.
            let wb64: Vec<f64> = wb
                .iter()
                .map(|&b| half::bf16::from_bits(b).to_f64())
                .collect();
            let wh64: Vec<f64> = wh
                .iter()
                .map(|&h| bf16(half::f16::from_bits(h).to_f32()))
                .collect();
            let bias = data(n, 3);
            for (w, w64) in [(Weights::Bf16(&wb), &wb64), (Weights::F16(&wh), &wh64)] {
                for with_bias in [false, true] {
                    let bias = with_bias.then_some(&bias[..]);
                    let mut out = vec![f32::NAN; m * n];
                    matmul(&mut out, &a, w, bias, m, k, n);
                    for t in 0..m {
                        for o in 0..n {
                            let mut want = bias.map_or(0.0, |b| b[o] as f64);
                            for i in 0..k {
                                want += bf16(a[t * k + i]) * w64[o * k + i];
                            }
                            let got = out[t * n + o] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(),
                                "{w:?} {m}x{k}x{n} bias {with_bias}: out[{t}][{o}] = {got}, want {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The vector f16 -> bf16 rounding is the scalar one (round to nearest even) on every
    /// finite f16 and the infinities, with a tail shorter than a vector.
    #[test]
    fn f16_to_bf16_rounds_every_half_like_the_scalar_path() {
        if !available() {
            eprintln!("SKIPPED: no AVX512_BF16 on this CPU");
            return;
        }
        let src: Vec<u16> = (0..=u16::MAX)
            .filter(|&h| !half::f16::from_bits(h).is_nan())
            .collect();
        assert_ne!(src.len() % 32, 0, "the test wants a scalar tail");
        let mut vector = Vec::new();
        f16_to_bf16(&mut vector, &src);
        let mut scalar = vec![0u16; src.len()];
        f16_to_bf16_scalar(&mut scalar, &src);
        assert_eq!(vector, scalar);
    }

    /// Not a test: GFLOP/s of the bf16 GEMM beside the f32 gemm path (`matmul_forward`,
    /// Conv1D weights) on GPT-2 124M's shapes, for the performance notes.
    /// `cargo test --release --lib gemm_bf16_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn gemm_bf16_throughput() {
        if !available() {
            eprintln!("SKIPPED: no AVX512_BF16 on this CPU");
            return;
        }
        // The f32 ceiling: the same gemm path on a square 2048^3 product.
        let sq = 2048;
        let (a, w) = (data(sq * sq, 1), data(sq * sq, 2));
        let mut out = vec![0f32; sq * sq];
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = std::time::Instant::now();
            crate::ops::matmul_forward(&mut out, &a, &w, None, sq, sq, sq);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let ceiling = 2.0 * (sq * sq * sq) as f64 / 1e9 / best;
        println!("f32 gemm ceiling (2048^3): {ceiling:.1} GFLOP/s");
        for m in [64, 512, 1024] {
            for &(k, n) in &[
                (768, 2304),
                (768, 768),
                (768, 3072),
                (3072, 768),
                (768, 50257),
            ] {
                let a = data(m * k, 1);
                let wf = data(k * n, 2);
                let wb: Vec<u16> = wf.iter().map(|&v| bf16_bits(v)).collect();
                let mut out = vec![0f32; m * n];
                let time = |f: &mut dyn FnMut()| {
                    let mut best = f64::MAX;
                    for _ in 0..5 {
                        let t = std::time::Instant::now();
                        f();
                        best = best.min(t.elapsed().as_secs_f64());
                    }
                    best
                };
                let tb = time(&mut || matmul(&mut out, &a, Weights::Bf16(&wb), None, m, k, n));
                let tf = time(&mut || crate::ops::matmul_forward(&mut out, &a, &wf, None, m, k, n));
                let gf = 2.0 * (m * k * n) as f64 / 1e9;
                println!(
                    "m {m:>5} k {k:>5} n {n:>6}: bf16 {:>6.1} GFLOP/s, f32 {:>6.1} GFLOP/s ({:.0}% of the ceiling), {:.2}x",
                    gf / tb,
                    gf / tf,
                    100.0 * gf / tf / ceiling,
                    tf / tb
                );
            }
        }
    }
}
