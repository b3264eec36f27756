//! f32 kernels of the batched decode step: [`axpy_rows_isa`](super::axpy_rows_isa) and
//! [`dot_rows_range`](super::dot_rows_range) for several sequences at once.
//!
//! Each sequence gets exactly the single kernel's arithmetic, element by element (the
//! same fused multiply-adds in the same order from the same starting value, the same
//! horizontal sum and scalar tail), so a batched row is bit-identical to the sequence
//! computed alone. What changes is the loop order: the kernels are register-blocked over
//! sequences, so one vector of weights loaded from cache feeds the accumulators of up to
//! eight sequences (the matvec: 2 x 16 columns x 8 sequences = 16 accumulators; the LM
//! head's dot products: 4 rows x 4 sequences), instead of one load per multiply-add per
//! sequence. At n = 16 sequences the single kernels re-read each weight tile from L2 16
//! times, which made the step bound by cache bandwidth at ~40 GFLOP/s.

// The register blocks are indexed by (sequence, column vector) on purpose: constant
// trip counts that LLVM unrolls into named registers.
#![allow(clippy::needless_range_loop)]

use super::Isa;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Sequences per register block of [`axpy_rows_batch`].
const AXPY_SEQS: usize = 8;
/// Sequences per register block of [`dot_rows_range_batch`] (times 4 rows).
const DOT_SEQS: usize = 4;

/// accs[s] += sum_i xs[s][i] * w[i*m..(i+1)*m] for every sequence s (m = accs[s].len(),
/// the same for all): [`axpy_rows_isa`](super::axpy_rows_isa) per sequence, bit for bit.
pub(crate) fn axpy_rows_batch(accs: &mut [&mut [f32]], xs: &[&[f32]], w: &[f32], isa: Isa) {
    assert_eq!(accs.len(), xs.len(), "one input per accumulator");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa came from feature detection (or a test that checked it).
        Isa::Avx512 => unsafe { axpy_rows_batch_avx512(accs, xs, w) },
        _ => {
            for (acc, x) in accs.iter_mut().zip(xs) {
                super::axpy_rows_isa(acc, x, w, isa);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_rows_batch_avx512(accs: &mut [&mut [f32]], xs: &[&[f32]], w: &[f32]) {
    let Some(first) = accs.first() else {
        return;
    };
    let (m, rows) = (first.len(), xs[0].len());
    assert!(accs.iter().all(|a| a.len() == m) && xs.iter().all(|x| x.len() == rows));
    assert!(w.len() >= rows * m);
    // The single kernel's vector part: whole groups of 4 rows, whole 16-column vectors.
    let (full, rows4) = (m / 16 * 16, rows / 4 * 4);
    let mut j = 0;
    while j < full {
        let two = j + 32 <= full;
        // Balanced groups (10 sequences: 5 + 5, not 8 + 2, whose 2-sequence block would
        // be bound by its weight loads).
        let group = accs.len().div_ceil(accs.len().div_ceil(AXPY_SEQS));
        let mut s0 = 0;
        while s0 < accs.len() {
            let s1 = (s0 + group).min(accs.len());
            let (a, x) = (&mut accs[s0..s1], &xs[s0..s1]);
            // SAFETY: columns j..j + 16 (or 32) < full <= m of rows < rows4 <= rows, and
            // of every accumulator (all m long).
            macro_rules! go {
                ($($s:literal),*) => {
                    match (a.len(), two) {
                        $(($s, true) => axpy_block::<$s, 2>(a, x, w.as_ptr(), j, rows4, m, s0 == 0),
                          ($s, false) => axpy_block::<$s, 1>(a, x, w.as_ptr(), j, rows4, m, s0 == 0),)*
                        _ => unreachable!("groups hold 1..=AXPY_SEQS sequences"),
                    }
                };
            }
            go!(1, 2, 3, 4, 5, 6, 7, 8);
            s0 = s1;
        }
        j += if two { 32 } else { 16 };
    }
    for (acc, x) in accs.iter_mut().zip(xs) {
        super::axpy_rows_rest(acc, x, w, full, rows4);
    }
}

/// Columns j..j + 16 * CB of S accumulators over rows 0..rows: acc = fma(x[i], w[i], acc)
/// row after row, held in registers. With `prefetch`, also asks for the same columns of
/// the next `rows` rows (the caller's next tile) into L2: walking a tile column block by
/// column block touches each row's lines out of stream order, so the hardware prefetcher
/// does not see them coming and the loads wait on memory.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn axpy_block<const S: usize, const CB: usize>(
    accs: &mut [&mut [f32]],
    xs: &[&[f32]],
    w: *const f32,
    j: usize,
    rows: usize,
    m: usize,
    prefetch: bool,
) {
    let mut xp = [std::ptr::null::<f32>(); S];
    let mut a = [[_mm512_setzero_ps(); CB]; S];
    for s in 0..S {
        xp[s] = xs[s].as_ptr();
        for c in 0..CB {
            a[s][c] = _mm512_loadu_ps(accs[s].as_ptr().add(j + 16 * c));
        }
    }
    for i in 0..rows {
        let row = w.add(i * m + j);
        if prefetch {
            let next = row.wrapping_add(rows * m);
            for c in 0..CB {
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(16 * c) as *const i8);
            }
        }
        let mut wv = [_mm512_setzero_ps(); CB];
        for c in 0..CB {
            wv[c] = _mm512_loadu_ps(row.add(16 * c));
        }
        for s in 0..S {
            let xv = _mm512_set1_ps(*xp[s].add(i));
            for c in 0..CB {
                a[s][c] = _mm512_fmadd_ps(xv, wv[c], a[s][c]);
            }
        }
    }
    for s in 0..S {
        for c in 0..CB {
            _mm512_storeu_ps(accs[s].as_mut_ptr().add(j + 16 * c), a[s][c]);
        }
    }
}

/// ys[s][r] = w[r0 + r] . xs[s] for every sequence s: [`dot_rows_range`](super::dot_rows_range)
/// per sequence, bit for bit.
pub(crate) fn dot_rows_range_batch(
    ys: &mut [&mut [f32]],
    r0: usize,
    w: &[f32],
    xs: &[&[f32]],
    isa: Isa,
) {
    assert_eq!(ys.len(), xs.len(), "one input per output");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa came from feature detection (or a test that checked it).
        Isa::Avx512 => unsafe { dot_rows_batch_avx512(ys, r0, w, xs) },
        _ => {
            for (y, x) in ys.iter_mut().zip(xs) {
                super::dot_rows_range(y, r0, w, x, isa);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_rows_batch_avx512(ys: &mut [&mut [f32]], r0: usize, w: &[f32], xs: &[&[f32]]) {
    let Some(first) = ys.first() else {
        return;
    };
    let (rows, n) = (first.len(), xs[0].len());
    assert!(ys.iter().all(|y| y.len() == rows) && xs.iter().all(|x| x.len() == n));
    let wc = &w[r0 * n..(r0 + rows) * n];
    let rows4 = rows / 4 * 4;
    let mut r = 0;
    while r < rows4 {
        let mut s0 = 0;
        while s0 < ys.len() {
            let s1 = (s0 + DOT_SEQS).min(ys.len());
            let (y, x) = (&mut ys[s0..s1], &xs[s0..s1]);
            // SAFETY: rows r..r + 4 <= rows of wc, each n long.
            match y.len() {
                1 => dot_block::<1>(y, x, wc, r, s0 == 0),
                2 => dot_block::<2>(y, x, wc, r, s0 == 0),
                3 => dot_block::<3>(y, x, wc, r, s0 == 0),
                4 => dot_block::<4>(y, x, wc, r, s0 == 0),
                _ => unreachable!("groups hold 1..=DOT_SEQS sequences"),
            }
            s0 = s1;
        }
        r += 4;
    }
    if rows4 < rows {
        for (y, x) in ys.iter_mut().zip(xs) {
            super::f32_avx512(&mut y[rows4..], &wc[rows4 * n..], x);
        }
    }
}

/// Rows r..r + 4 of `wc` against S inputs: one accumulator chain per (row, sequence),
/// as `row_dots!` in the single kernel. With `prefetch`, also asks for the next 4 rows (the
/// caller's next block, contiguous after these), so the stream never starts cold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dot_block<const S: usize>(
    ys: &mut [&mut [f32]],
    xs: &[&[f32]],
    wc: &[f32],
    r: usize,
    prefetch: bool,
) {
    let n = xs[0].len();
    let full = n / 16 * 16;
    let wp = wc.as_ptr().add(r * n);
    let mut xp = [std::ptr::null::<f32>(); S];
    for s in 0..S {
        xp[s] = xs[s].as_ptr();
    }
    let mut a = [[_mm512_setzero_ps(); S]; 4];
    let mut k = 0;
    while k < full {
        let mut wv = [_mm512_setzero_ps(); 4];
        for q in 0..4 {
            let p = wp.add(q * n + k);
            if prefetch {
                _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(4 * n) as *const i8);
            }
            wv[q] = _mm512_loadu_ps(p);
        }
        for s in 0..S {
            let xv = _mm512_loadu_ps(xp[s].add(k));
            for q in 0..4 {
                a[q][s] = _mm512_fmadd_ps(wv[q], xv, a[q][s]);
            }
        }
        k += 16;
    }
    for s in 0..S {
        let x = xs[s];
        for q in 0..4 {
            let row = &wc[(r + q) * n..(r + q + 1) * n];
            let tail: f32 = (full..n).map(|k| row[k] * x[k]).sum();
            ys[s][r + q] = _mm512_reduce_add_ps(a[q][s]) + tail;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
        v.iter()
            .map(|r| r.iter().map(|x| x.to_bits()).collect())
            .collect()
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len as u32)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Every shape class (tail columns, odd row counts, one or two column vectors, 1..=11
    /// sequences): the batched kernels equal the single ones bit for bit, on every ISA
    /// this CPU has.
    #[test]
    fn batched_kernels_equal_single_kernels_bit_for_bit() {
        for isa in Isa::available() {
            for (rows, m) in [(16, 48), (13, 40), (4, 64), (7, 7), (20, 96)] {
                let w = data(rows * m, 7);
                for n in [1, 2, 5, 8, 9, 11] {
                    let xs: Vec<Vec<f32>> = (0..n).map(|s| data(rows, s as u32 + 1)).collect();
                    let init: Vec<Vec<f32>> = (0..n).map(|s| data(m, 100 + s as u32)).collect();
                    let mut one = init.clone();
                    for (acc, x) in one.iter_mut().zip(&xs) {
                        super::super::axpy_rows_isa(acc, x, &w, isa);
                    }
                    let mut batch = init.clone();
                    let mut refs: Vec<&mut [f32]> = batch.iter_mut().map(|v| &mut v[..]).collect();
                    let xr: Vec<&[f32]> = xs.iter().map(|v| &v[..]).collect();
                    axpy_rows_batch(&mut refs, &xr, &w, isa);
                    assert_eq!(
                        bits(&batch),
                        bits(&one),
                        "axpy {isa:?} rows {rows} m {m} n {n}"
                    );
                }
            }
            for (rows, n_in) in [(9, 48), (8, 40), (3, 64), (17, 7)] {
                let w = data((rows + 2) * n_in, 3);
                for n in [1, 3, 4, 6, 9] {
                    let xs: Vec<Vec<f32>> = (0..n).map(|s| data(n_in, s as u32 + 9)).collect();
                    let mut one = vec![vec![0f32; rows]; n];
                    for (y, x) in one.iter_mut().zip(&xs) {
                        super::super::dot_rows_range(y, 2, &w, x, isa);
                    }
                    let mut batch = vec![vec![f32::NAN; rows]; n];
                    let mut refs: Vec<&mut [f32]> = batch.iter_mut().map(|v| &mut v[..]).collect();
                    let xr: Vec<&[f32]> = xs.iter().map(|v| &v[..]).collect();
                    dot_rows_range_batch(&mut refs, 2, &w, &xr, isa);
                    assert_eq!(
                        bits(&batch),
                        bits(&one),
                        "dot {isa:?} rows {rows} in {n_in} n {n}"
                    );
                }
            }
        }
    }
}
