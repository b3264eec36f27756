//! Decode-step weight storage and matrix-vector kernels: f32, f16, bf16 and q8 (int8 with
//! one f32 scale per 32 weights, like llama.cpp's Q8_0), f32 activations and accumulation.
//!
//! The decode step reads every weight once per token, so its speed is bytes of weights
//! over memory bandwidth. [`WeightFormat::F16`] and [`WeightFormat::Bf16`] halve the
//! bytes and [`WeightFormat::Q8`] roughly quarters them (1.125 bytes per weight). A reduced-precision model
//! ([`Gpt::with_weight_format`](super::Gpt::with_weight_format)) keeps two copies:
//! the compact matrices here for the step, and its f32 parameter buffer rounded to exactly
//! the values the compact copy represents, so the parallel (gemm) paths (`prefill`,
//! `score_next`, ...) compute with the same weights and the KV-cache and parallel paths
//! still agree up to summation order.
//!
//! Layout: compact matrices are stored (out, in) row-major (the transpose of the Conv1D
//! (in, out) layout of the parameter buffer), so one output is one dot product over a
//! contiguous row and a q8 block of 32 runs along the reduction dimension. The tied LM
//! head `wte` is already (vocab, C).
//!
//! Kernels are chosen at run time: AVX-512F, else AVX2+FMA+F16C, else plain Rust. Every
//! output row is computed by one task start to end, so results do not depend on the thread
//! count.
//!
//! # Streaming
//! The kernels read one row at a time, start to end, with no software prefetch: a thread's
//! weights then arrive as one sequential stream, which the hardware prefetcher runs ahead
//! of at full memory bandwidth. Four rows at a time (four accumulator chains sharing the
//! loads of x, with a software prefetch of the next 4-row block) is what the compute side
//! would prefer, but it interleaves four streams, and on the 2-core Zen 4 VM the 124M
//! weights of GPT-2 in f16 moved at 20-26 GB/s that way against 34-50 GB/s row by row
//! (an f16 matvec probe over GPT-2's matrices, 2 threads; the figures move with the
//! neighbours' load, the ratio does not). One row has one accumulator chain; at 4 cycles
//! per FMA that is still 8-16 bytes of weights per cycle, above the ~4.5 a core gets
//! from memory. The arithmetic per row is what it was with four rows, so the logits did
//! not change.

use crate::ops::cpu::Isa;
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::fmt;
use std::str::FromStr;

mod f32_batch;
mod w8a8;
mod w8a8_gemm;
pub(crate) use f32_batch::{axpy_rows_batch, dot_rows_range_batch};
use w8a8::w8a8_scalar;
use w8a8::w8a8_vnni;
pub(crate) use w8a8::ActQ8;

/// How the decode step stores the matmul weights (and the tied LM head).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// The f32 parameters as trained (exact).
    #[default]
    F32,
    /// IEEE half precision (round to nearest even): 2 bytes per weight.
    F16,
    /// bfloat16 (round to nearest even): 2 bytes per weight, f32's 8 exponent bits and 7
    /// of its mantissa bits, so it widens to f32 with a 16-bit shift (no conversion unit)
    /// and never overflows where f32 does not. The format most checkpoints on the Hub
    /// ship in.
    Bf16,
    /// int8 with an f32 scale (max |w| / 127) per block of 32 consecutive inputs:
    /// 1.125 bytes per weight.
    Q8,
    /// [`WeightFormat::Q8`] weights, and the decode step also rounds each matmul's input
    /// vector to int8 blocks of 32 with an f32 scale (llama.cpp's q8_0 x q8_0 dot), so the
    /// products are integer dot products (AVX-512 VNNI `vpdpbusd`): the kernel becomes
    /// compute-light and memory-bound. On AVX-512 VNNI the parallel paths (prefill,
    /// scoring) round their matmul inputs the same way and run an int8 GEMM
    /// (`w8a8_gemm`); elsewhere they keep f32 activations. See docs/parts/gen.md for the
    /// measured cost.
    W8A8,
}

/// Q8 block length along the input dimension.
pub const Q8_BLOCK: usize = 32;

impl WeightFormat {
    /// All formats, in CLI order.
    pub const ALL: [WeightFormat; 5] = [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Bf16,
        WeightFormat::Q8,
        WeightFormat::W8A8,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Bf16 => "bf16",
            WeightFormat::Q8 => "q8",
            WeightFormat::W8A8 => "w8a8",
        }
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown weight format name.
#[derive(Debug, thiserror::Error)]
#[error("unknown weight format {0:?} (expected f32, f16, bf16, q8 or w8a8)")]
pub struct UnknownWeightFormat(pub String);

impl FromStr for WeightFormat {
    type Err = UnknownWeightFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightFormat::F32),
            "f16" => Ok(WeightFormat::F16),
            "bf16" | "bfloat16" => Ok(WeightFormat::Bf16),
            "q8" | "q8_0" | "int8" => Ok(WeightFormat::Q8),
            "w8a8" | "q8a8" => Ok(WeightFormat::W8A8),
            _ => Err(UnknownWeightFormat(s.to_string())),
        }
    }
}

#[derive(Clone)]
enum Data {
    F32(Vec<f32>),
    F16(Vec<u16>),
    Bf16(Vec<u16>),
    /// `act8`: the matvec rounds its input to int8 blocks too ([`WeightFormat::W8A8`]).
    Q8 {
        q: Vec<i8>,
        scales: Vec<f32>,
        act8: bool,
    },
}

/// A weight matrix stored (rows = outputs, cols = inputs) in a compact format.
#[derive(Clone)]
pub struct QMat {
    rows: usize,
    cols: usize,
    data: Data,
}

impl fmt::Debug for QMat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QMat({}x{} {})", self.rows, self.cols, self.format())
    }
}

impl QMat {
    /// Encodes `w`, given (rows, cols) row-major if `!transposed`, or (cols, rows)
    /// row-major (the Conv1D (in, out) layout) if `transposed`. Also returns the f32 values
    /// the encoding represents, in the input's layout.
    pub fn encode(
        w: &[f32],
        rows: usize,
        cols: usize,
        transposed: bool,
        format: WeightFormat,
    ) -> (QMat, Vec<f32>) {
        assert_eq!(w.len(), rows * cols);
        let at = |r: usize, c: usize| {
            if transposed {
                w[c * rows + r]
            } else {
                w[r * cols + c]
            }
        };
        let mut rounded = vec![0f32; rows * cols];
        let mut put = |r: usize, c: usize, v: f32| {
            if transposed {
                rounded[c * rows + r] = v;
            } else {
                rounded[r * cols + c] = v;
            }
        };
        let data = match format {
            WeightFormat::F32 => {
                let mut d = crate::huge_pages::vec_with_capacity(rows * cols);
                for r in 0..rows {
                    for c in 0..cols {
                        d.push(at(r, c));
                        put(r, c, at(r, c));
                    }
                }
                Data::F32(d)
            }
            WeightFormat::F16 => {
                let mut d = crate::huge_pages::vec_with_capacity(rows * cols);
                for r in 0..rows {
                    for c in 0..cols {
                        let h = half::f16::from_f32(at(r, c));
                        d.push(h.to_bits());
                        put(r, c, h.to_f32());
                    }
                }
                Data::F16(d)
            }
            WeightFormat::Bf16 => {
                let mut d = crate::huge_pages::vec_with_capacity(rows * cols);
                for r in 0..rows {
                    for c in 0..cols {
                        let h = half::bf16::from_f32(at(r, c));
                        d.push(h.to_bits());
                        put(r, c, h.to_f32());
                    }
                }
                Data::Bf16(d)
            }
            WeightFormat::Q8 | WeightFormat::W8A8 => {
                let nb = cols.div_ceil(Q8_BLOCK);
                let mut q = crate::huge_pages::vec_with_capacity(rows * cols);
                let mut scales = Vec::with_capacity(rows * nb);
                for r in 0..rows {
                    for b in 0..nb {
                        let cs = b * Q8_BLOCK..((b + 1) * Q8_BLOCK).min(cols);
                        let amax = cs.clone().map(|c| at(r, c).abs()).fold(0f32, f32::max);
                        let s = amax / 127.0;
                        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                        scales.push(s);
                        for c in cs {
                            let qi = round_q8(at(r, c) * inv);
                            q.push(qi);
                            put(r, c, qi as f32 * s);
                        }
                    }
                }
                Data::Q8 {
                    q,
                    scales,
                    act8: format == WeightFormat::W8A8,
                }
            }
        };
        (QMat { rows, cols, data }, rounded)
    }

    /// out(M, rows) = a(M, cols) @ self^T + bias through this format's own GEMM, for the
    /// parallel paths: bf16 and f16 on AVX512_BF16 ([`crate::ops::gemm_bf16`], activations
    /// rounded to bf16, f16 weights too), w8a8 on AVX-512 VNNI (`w8a8_gemm`, activations
    /// rounded to int8 blocks as the step rounds them). False (nothing written) for the
    /// other formats and CPUs: the caller then multiplies with the rounded f32 copy. Which
    /// passes may round f16 weights to bf16 is the caller's choice (the generation prefill
    /// does, scoring does not).
    pub(crate) fn gemm(&self, out: &mut [f32], a: &[f32], bias: Option<&[f32]>, m: usize) -> bool {
        self.gemm_rows(out, a, bias, m, 0..self.rows)
    }

    /// [`QMat::gemm`] with the output rows `rows` of this matrix only: out(M, rows.len())
    /// (the LM head a block of vocabulary at a time; `bias` is this matrix's whole bias).
    pub(crate) fn gemm_rows(
        &self,
        out: &mut [f32],
        a: &[f32],
        bias: Option<&[f32]>,
        m: usize,
        rows: std::ops::Range<usize>,
    ) -> bool {
        use crate::ops::gemm_bf16::{self, Weights};
        assert!(
            rows.end <= self.rows,
            "rows {rows:?} of a {}-row matrix",
            self.rows
        );
        let k = self.cols;
        let n = rows.len();
        let bias = bias.map(|b| &b[rows.clone()]);
        let bf16_gemm = k.is_multiple_of(2) && gemm_bf16::available();
        let (w0, w1) = (rows.start * k, rows.end * k);
        match &self.data {
            Data::Bf16(d) if bf16_gemm => {
                gemm_bf16::matmul(out, a, Weights::Bf16(&d[w0..w1]), bias, m, k, n);
                true
            }
            Data::F16(d) if bf16_gemm => {
                gemm_bf16::matmul(out, a, Weights::F16(&d[w0..w1]), bias, m, k, n);
                true
            }
            Data::Q8 {
                q,
                scales,
                act8: true,
            } if k.is_multiple_of(Q8_BLOCK) && w8a8_gemm::available() => {
                let q = &q[w0..w1];
                let kb = k / Q8_BLOCK;
                let scales = &scales[rows.start * kb..rows.end * kb];
                w8a8_gemm::matmul(out, a, q, scales, bias, m, k, n);
                true
            }
            _ => false,
        }
    }

    /// The storage format.
    pub fn format(&self) -> WeightFormat {
        match self.data {
            Data::F32(_) => WeightFormat::F32,
            Data::F16(_) => WeightFormat::F16,
            Data::Bf16(_) => WeightFormat::Bf16,
            Data::Q8 { act8: false, .. } => WeightFormat::Q8,
            Data::Q8 { act8: true, .. } => WeightFormat::W8A8,
        }
    }

    /// Bytes of weight storage.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(d) => d.len() * 4,
            Data::F16(d) | Data::Bf16(d) => d.len() * 2,
            Data::Q8 { q, scales, .. } => q.len() + scales.len() * 4,
        }
    }

    /// Output count.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input count.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// y = W x (+ bias), rows in parallel when the matrix is large.
    pub fn matvec(&self, y: &mut [f32], x: &[f32], bias: Option<&[f32]>) {
        self.matvec_isa(y, x, bias, Isa::detect());
    }

    pub(crate) fn matvec_isa(&self, y: &mut [f32], x: &[f32], bias: Option<&[f32]>, isa: Isa) {
        let y = &mut y[..self.rows];
        let x = &x[..self.cols];
        let mut xq = ActQ8::default();
        if self.act8() {
            xq.quantize(x);
        }
        if self.rows * self.cols < 1 << 16 {
            self.rows_range_q(y, 0, x, &xq, isa);
        } else {
            // Several chunks per thread so a busy core does not hold everyone up.
            let chunks = 4 * rayon::current_num_threads();
            let per = self.rows.div_ceil(chunks).max(16);
            y.par_chunks_mut(per)
                .enumerate()
                .for_each(|(i, yc)| self.rows_range_q(yc, i * per, x, &xq, isa));
        }
        if let Some(b) = bias {
            for (yi, bi) in y.iter_mut().zip(b) {
                *yi += bi;
            }
        }
    }

    /// True for [`WeightFormat::W8A8`]: callers quantize the input with
    /// [`ActQ8::quantize`] once per matvec and pass it to [`Self::rows_range_q`].
    pub(crate) fn act8(&self) -> bool {
        matches!(self.data, Data::Q8 { act8: true, .. })
    }

    /// y[i] = row (r0 + i) . x on the calling thread (one chunk of a decode-step phase);
    /// a row's result does not depend on how the rows are chunked. `xq` is `x` quantized
    /// when [`Self::act8`] (ignored otherwise).
    pub(crate) fn rows_range_q(&self, y: &mut [f32], r0: usize, x: &[f32], xq: &ActQ8, isa: Isa) {
        let n = self.cols;
        if let Data::Q8 {
            q,
            scales,
            act8: true,
        } = &self.data
        {
            let nb = n.div_ceil(Q8_BLOCK);
            let w = &q[r0 * n..(r0 + y.len()) * n];
            let s = &scales[r0 * nb..(r0 + y.len()) * nb];
            assert_eq!(xq.q.len(), n, "input not quantized for a w8a8 matrix");
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 && crate::ops::cpu::has_avx512_vnni() {
                // SAFETY: AVX-512F (the Isa) plus VNNI/VL/BW, detected.
                unsafe { w8a8_vnni(y, w, s, xq) };
                return;
            }
            w8a8_scalar(y, w, s, xq);
            return;
        }
        match &self.data {
            Data::F32(d) => {
                debug_assert_eq!(x.len(), n);
                dot_rows_range(y, r0, d, x, isa)
            }
            Data::F16(d) => {
                let w = &d[r0 * n..(r0 + y.len()) * n];
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { f16_avx512(y, w, x) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { f16_avx2(y, w, x) },
                    _ => f16_scalar(y, w, x),
                }
            }
            Data::Bf16(d) => {
                let w = &d[r0 * n..(r0 + y.len()) * n];
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { bf16_avx512(y, w, x) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { bf16_avx2(y, w, x) },
                    _ => bf16_scalar(y, w, x),
                }
            }
            Data::Q8 { q, scales, .. } => {
                let nb = n.div_ceil(Q8_BLOCK);
                let w = &q[r0 * n..(r0 + y.len()) * n];
                let s = &scales[r0 * nb..(r0 + y.len()) * nb];
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe { q8_avx512(y, w, s, x) },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe { q8_avx2(y, w, s, x) },
                    _ => q8_scalar(y, w, s, x),
                }
            }
        }
    }
}

fn f32_scalar(y: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    for (i, yi) in y.iter_mut().enumerate() {
        *yi = crate::ops::simd::dot(&w[i * n..(i + 1) * n], x);
    }
}

fn f16_scalar(y: &mut [f32], w: &[u16], x: &[f32]) {
    let n = x.len();
    for (i, yi) in y.iter_mut().enumerate() {
        *yi = w[i * n..(i + 1) * n]
            .iter()
            .zip(x)
            .map(|(&h, &xv)| half::f16::from_bits(h).to_f32() * xv)
            .sum();
    }
}

fn bf16_scalar(y: &mut [f32], w: &[u16], x: &[f32]) {
    let n = x.len();
    for (i, yi) in y.iter_mut().enumerate() {
        *yi = w[i * n..(i + 1) * n]
            .iter()
            .zip(x)
            .map(|(&h, &xv)| half::bf16::from_bits(h).to_f32() * xv)
            .sum();
    }
}

/// One q8 row: sum over blocks of scale * (q . x).
#[inline(always)]
fn q8_row_scalar(q: &[i8], s: &[f32], x: &[f32]) -> f32 {
    let mut acc = 0f32;
    for ((qb, xb), &sb) in q.chunks(Q8_BLOCK).zip(x.chunks(Q8_BLOCK)).zip(s) {
        let d: f32 = qb.iter().zip(xb).map(|(&qi, &xv)| qi as f32 * xv).sum();
        acc += sb * d;
    }
    acc
}

fn q8_scalar(y: &mut [f32], q: &[i8], s: &[f32], x: &[f32]) {
    let n = x.len();
    let nb = n.div_ceil(Q8_BLOCK);
    for (i, yi) in y.iter_mut().enumerate() {
        *yi = q8_row_scalar(&q[i * n..(i + 1) * n], &s[i * nb..(i + 1) * nb], x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum256(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    _mm_cvtss_f32(s)
}

/// Generates the row-at-a-time driver: `$load(row, k)` returns the vector of weights
/// row[k..k+LANES] as f32; the tail (cols % LANES) is done in scalar. One accumulator per
/// row, rows in order: the weights stream through memory as one sequential read, which the
/// hardware prefetcher follows at full bandwidth (see the module doc).
macro_rules! row_dots {
    ($y:ident, $n:ident, $zero:expr, $lanes:expr, $loadx:expr, $fma:expr, $hsum:expr,
     $load:expr, $tail:expr) => {{
        let full = $n / $lanes * $lanes;
        for r in 0..$y.len() {
            let mut a = $zero;
            let mut k = 0;
            while k < full {
                a = $fma($load(r, k), $loadx(k), a);
                k += $lanes;
            }
            $y[r] = $hsum(a) + $tail(r, full);
        }
    }};
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f32_avx512(y: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    row_dots!(
        y,
        n,
        _mm512_setzero_ps(),
        16,
        |k| unsafe { _mm512_loadu_ps(xp.add(k)) },
        |a, b, c| _mm512_fmadd_ps(a, b, c),
        |a| _mm512_reduce_add_ps(a),
        |r: usize, k| unsafe { _mm512_loadu_ps(wp.add(r * n + k)) },
        |r: usize, from: usize| -> f32 { (from..n).map(|k| w[r * n + k] * x[k]).sum() }
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_avx2(y: &mut [f32], w: &[f32], x: &[f32]) {
    let n = x.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    row_dots!(
        y,
        n,
        _mm256_setzero_ps(),
        8,
        |k| unsafe { _mm256_loadu_ps(xp.add(k)) },
        |a, b, c| _mm256_fmadd_ps(a, b, c),
        |a| hsum256(a),
        |r: usize, k| unsafe { _mm256_loadu_ps(wp.add(r * n + k)) },
        |r: usize, from: usize| -> f32 { (from..n).map(|k| w[r * n + k] * x[k]).sum() }
    );
}

/// Generates the row-at-a-time kernel over 16-bit weights (f16 or bf16) for one ISA:
/// `$widen(p)` loads `$lanes` weights at `p` as f32 lanes, `$scalar(bits)` widens one (the
/// tail).
macro_rules! half_kernel {
    ($name:ident, $feat:literal, $zero:expr, $lanes:expr, $loadx:expr, $fma:expr, $hsum:expr,
     $widen:expr, $scalar:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feat)]
        unsafe fn $name(y: &mut [f32], w: &[u16], x: &[f32]) {
            let n = x.len();
            let (wp, xp) = (w.as_ptr(), x.as_ptr());
            let h = $scalar;
            row_dots!(
                y,
                n,
                $zero,
                $lanes,
                |k| unsafe { $loadx(xp.add(k)) },
                $fma,
                $hsum,
                |r: usize, k| unsafe { $widen(wp.add(r * n + k)) },
                |r: usize, from: usize| -> f32 { (from..n).map(|k| h(w[r * n + k]) * x[k]).sum() }
            );
        }
    };
}

/// [`half_kernel!`] for AVX-512 (16 lanes) with `$widen`, `$scalar`.
macro_rules! half_kernel_avx512 {
    ($name:ident, $widen:expr, $scalar:expr) => {
        half_kernel!(
            $name,
            "avx512f",
            _mm512_setzero_ps(),
            16,
            _mm512_loadu_ps,
            |a, b, c| _mm512_fmadd_ps(a, b, c),
            |a| _mm512_reduce_add_ps(a),
            $widen,
            $scalar
        );
    };
}

/// [`half_kernel!`] for AVX2+FMA (8 lanes; F16C for the f16 conversion).
macro_rules! half_kernel_avx2 {
    ($name:ident, $widen:expr, $scalar:expr) => {
        half_kernel!(
            $name,
            "avx2,fma,f16c",
            _mm256_setzero_ps(),
            8,
            _mm256_loadu_ps,
            |a, b, c| _mm256_fmadd_ps(a, b, c),
            |a| hsum256(a),
            $widen,
            $scalar
        );
    };
}

half_kernel_avx512!(
    f16_avx512,
    |p: *const u16| _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
    |v: u16| half::f16::from_bits(v).to_f32()
);
half_kernel_avx2!(
    f16_avx2,
    |p: *const u16| _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
    |v: u16| half::f16::from_bits(v).to_f32()
);

// bf16 widens to f32 exactly by moving its 16 bits to the top of a 32-bit lane
// (zero-extend, shift left 16): two integer ops instead of the f16 kernels' conversion.
// The products are then f32 FMAs against the f32 input, as for f16: the step keeps its
// inputs f32 (AVX512_BF16's `vdpbf16ps` would round them to bf16 too; the parallel paths'
// GEMM, `ops::gemm_bf16`, is where it runs).
half_kernel_avx512!(
    bf16_avx512,
    |p: *const u16| {
        let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide))
    },
    |v: u16| half::bf16::from_bits(v).to_f32()
);
half_kernel_avx2!(
    bf16_avx2,
    |p: *const u16| {
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide))
    },
    |v: u16| half::bf16::from_bits(v).to_f32()
);

/// The q8 kernels work block by block: per block of 32, t = q . x in f32 lanes, then
/// acc += scale * t (one FMA with the broadcast scale). The last block may be short
/// (cols % 32); it is done in scalar.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn q8_avx512(y: &mut [f32], q: &[i8], s: &[f32], x: &[f32]) {
    let n = x.len();
    let nb = n.div_ceil(Q8_BLOCK);
    let full = n / Q8_BLOCK;
    let (qp, xp) = (q.as_ptr(), x.as_ptr());
    let ld = |p: *const i8| unsafe {
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i)))
    };
    let tail = |r: usize| -> f32 {
        if full == nb {
            return 0.0;
        }
        let k0 = full * Q8_BLOCK;
        s[r * nb + full] * (k0..n).map(|k| q[r * n + k] as f32 * x[k]).sum::<f32>()
    };
    for (r, yr) in y.iter_mut().enumerate() {
        let mut a = _mm512_setzero_ps();
        for b in 0..full {
            let k = b * Q8_BLOCK;
            let row = qp.add(r * n + k);
            let t = _mm512_mul_ps(ld(row), _mm512_loadu_ps(xp.add(k)));
            let t = _mm512_fmadd_ps(ld(row.add(16)), _mm512_loadu_ps(xp.add(k + 16)), t);
            a = _mm512_fmadd_ps(t, _mm512_set1_ps(*s.get_unchecked(r * nb + b)), a);
        }
        *yr = _mm512_reduce_add_ps(a) + tail(r);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn q8_avx2(y: &mut [f32], q: &[i8], s: &[f32], x: &[f32]) {
    let n = x.len();
    let nb = n.div_ceil(Q8_BLOCK);
    let full = n / Q8_BLOCK;
    let (qp, xp) = (q.as_ptr(), x.as_ptr());
    let ld = |p: *const i8| unsafe {
        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
    };
    let tail = |r: usize| -> f32 {
        if full == nb {
            return 0.0;
        }
        let k0 = full * Q8_BLOCK;
        s[r * nb + full] * (k0..n).map(|k| q[r * n + k] as f32 * x[k]).sum::<f32>()
    };
    for (r, yr) in y.iter_mut().enumerate() {
        let mut a = _mm256_setzero_ps();
        for b in 0..full {
            let k = b * Q8_BLOCK;
            let row = qp.add(r * n + k);
            let mut t = _mm256_mul_ps(ld(row), _mm256_loadu_ps(xp.add(k)));
            t = _mm256_fmadd_ps(ld(row.add(8)), _mm256_loadu_ps(xp.add(k + 8)), t);
            t = _mm256_fmadd_ps(ld(row.add(16)), _mm256_loadu_ps(xp.add(k + 16)), t);
            t = _mm256_fmadd_ps(ld(row.add(24)), _mm256_loadu_ps(xp.add(k + 24)), t);
            a = _mm256_fmadd_ps(t, _mm256_set1_ps(*s.get_unchecked(r * nb + b)), a);
        }
        *yr = hsum256(a) + tail(r);
    }
}

/// `v` (|v| <= 127 up to rounding) to the nearest integer, ties to even, as an int8:
/// adding 1.5 * 2^23 rounds exactly as `round_ties_even`, which is a libm call without
/// SSE4.1 (~60K calls per GPT-2 token for w8a8 inputs, 124M at load for q8 weights).
#[inline(always)]
pub(super) fn round_q8(v: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    ((v + MAGIC) - MAGIC).clamp(-127.0, 127.0) as i8
}

/// y[i] = w[i*n..(i+1)*n] . x for every row of the f32 (rows, n) matrix `w`, rows in
/// parallel (the f32 LM head: `wte` is already (vocab, C)).
pub(crate) fn dot_rows(y: &mut [f32], w: &[f32], x: &[f32]) {
    dot_rows_isa(y, w, x, Isa::detect());
}

/// y[i] = w[(r0 + i)*n..] . x on the calling thread (one chunk of [`dot_rows`]).
pub(crate) fn dot_rows_range(y: &mut [f32], r0: usize, w: &[f32], x: &[f32], isa: Isa) {
    let n = x.len();
    let wc = &w[r0 * n..(r0 + y.len()) * n];
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa came from feature detection (or a test that checked it).
        Isa::Avx512 => unsafe { f32_avx512(y, wc, x) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { f32_avx2(y, wc, x) },
        _ => f32_scalar(y, wc, x),
    }
}

pub(crate) fn dot_rows_isa(y: &mut [f32], w: &[f32], x: &[f32], isa: Isa) {
    let n = x.len();
    let run = |yc: &mut [f32], r0: usize| dot_rows_range(yc, r0, w, x, isa);
    if y.len() * n < 1 << 16 {
        run(y, 0);
        return;
    }
    let chunks = 4 * rayon::current_num_threads();
    let per = y.len().div_ceil(chunks).next_multiple_of(4).max(16);
    y.par_chunks_mut(per)
        .enumerate()
        .for_each(|(i, yc)| run(yc, i * per));
}

/// acc += sum_i x[i] * w[i*m..(i+1)*m] (m = acc.len()): rows of an f32 (in, out) matrix
/// streamed in order, one row per pass over acc (acc stays in L1; the weights are one
/// sequential stream, as in the dot kernels).
pub(crate) fn axpy_rows_isa(acc: &mut [f32], x: &[f32], w: &[f32], isa: Isa) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the Isa came from feature detection (or a test that checked it).
        Isa::Avx512 => unsafe { axpy_rows_avx512(acc, x, w) },
        _ => {
            let m = acc.len();
            for (i, &xi) in x.iter().enumerate() {
                crate::ops::simd::axpy(acc, xi, &w[i * m..(i + 1) * m]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn axpy_rows_avx512(acc: &mut [f32], x: &[f32], w: &[f32]) {
    let m = acc.len();
    assert!(w.len() >= x.len() * m);
    let (full, rows4) = (m / 16 * 16, x.len() / 4 * 4);
    let (ap, wp) = (acc.as_mut_ptr(), w.as_ptr());
    for (i, &xi) in x[..rows4].iter().enumerate() {
        let (xv, row) = (_mm512_set1_ps(xi), wp.add(i * m));
        let mut j = 0;
        while j < full {
            let a = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row.add(j)), _mm512_loadu_ps(ap.add(j)));
            _mm512_storeu_ps(ap.add(j), a);
            j += 16;
        }
    }
    axpy_rows_rest(acc, x, w, full, rows4);
}

/// What [`axpy_rows_avx512`]'s vectors leave: columns `full..` of rows `..rows4` in
/// scalar, then rows `rows4..` whole. Shared with the batched kernel, which must match
/// it bit for bit.
#[cfg(target_arch = "x86_64")]
fn axpy_rows_rest(acc: &mut [f32], x: &[f32], w: &[f32], full: usize, rows4: usize) {
    let m = acc.len();
    for i in (0..rows4).step_by(4) {
        for j in full..m {
            for (k, &xk) in x[i..i + 4].iter().enumerate() {
                acc[j] += xk * w[(i + k) * m + j];
            }
        }
    }
    for (k, &xk) in x.iter().enumerate().skip(rows4) {
        crate::ops::simd::axpy(acc, xk, &w[k * m..(k + 1) * m]);
    }
}

/// One block's compact matrices, (out, in) layout.
#[derive(Debug, Clone)]
pub struct LayerMats {
    pub qkv: QMat,
    pub attn_proj: QMat,
    pub fc: QMat,
    pub proj: QMat,
}

/// The compact weights of a whole model for the decode step.
#[derive(Debug, Clone)]
pub struct InferWeights {
    pub format: WeightFormat,
    pub layers: Vec<LayerMats>,
    /// The tied LM head (vocab, C).
    pub wte: QMat,
}

impl InferWeights {
    /// Encodes the matmul weights of `params` (GPT-2 layout for `cfg`) in `format` and
    /// overwrites them in `params` with the values the encoding represents.
    pub fn encode(params: &mut [f32], cfg: &super::GptConfig, format: WeightFormat) -> Self {
        let c = cfg.n_embd;
        // (offset in params, in, out, transposed) of every matrix: wte (V, C) first, then
        // each block's four Conv1D (in, out) weights. Encoded in parallel (load time).
        let mut jobs = Vec::new();
        {
            let p = super::parts(params, cfg);
            let base = p.wte.as_ptr() as usize;
            let off = |s: &[f32]| (s.as_ptr() as usize - base) / 4;
            jobs.push((off(p.wte), c, cfg.vocab_size, false));
            for l in 0..cfg.n_layer {
                let w = super::layer(p.layers, cfg, l);
                jobs.push((off(w.qkv_w), c, 3 * c, true));
                jobs.push((off(w.attn_proj_w), c, c, true));
                jobs.push((off(w.fc_w), c, 4 * c, true));
                jobs.push((off(w.proj_w), 4 * c, c, true));
            }
        }
        let src: &[f32] = params;
        let encoded: Vec<(QMat, Vec<f32>)> = jobs
            .par_iter()
            .map(|&(o, ic, oc, tr)| QMat::encode(&src[o..o + ic * oc], oc, ic, tr, format))
            .collect();
        let mut mats = Vec::with_capacity(encoded.len());
        for (&(o, ic, oc, _), (q, rounded)) in jobs.iter().zip(encoded) {
            params[o..o + ic * oc].copy_from_slice(&rounded);
            mats.push(q);
        }
        let mut it = mats.into_iter();
        let wte = it.next().expect("wte is always encoded");
        let mut layers = Vec::with_capacity(cfg.n_layer);
        while let (Some(qkv), Some(attn_proj), Some(fc), Some(proj)) =
            (it.next(), it.next(), it.next(), it.next())
        {
            layers.push(LayerMats {
                qkv,
                attn_proj,
                fc,
                proj,
            });
        }
        InferWeights {
            format,
            layers,
            wte,
        }
    }

    /// Bytes of compact weight storage.
    pub fn bytes(&self) -> usize {
        self.wte.bytes()
            + self
                .layers
                .iter()
                .map(|l| l.qkv.bytes() + l.attn_proj.bytes() + l.fc.bytes() + l.proj.bytes())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests;
