//! Forward/backward kernel pairs, llm.c style. Shapes: B batch, T time, C channels,
//! NH heads, hs = C/NH head size, OC output channels, V vocabulary, N = B*T rows.
//! All tensors are row-major slices; weights are stored as Hugging Face's GPT-2 `Conv1D`
//! does, (in, out), so `out = inp @ w + b`.
//!
//! Each kernel has a plain reference version in [`reference`](mod@reference) (obviously correct loops);
//! the optimized versions here are checked against them in the unit tests, and the
//! reference versions are checked against finite differences.
//!
//! Backward kernels ACCUMULATE into parameter gradients (`dw`, `db`) and into `dinp` where
//! the activation feeds a residual stream (layernorm), and OVERWRITE scratch gradients
//! otherwise (noted per function).

use super::float::Float;
use super::simd;
use super::simd512;
use crate::cpu;
use rayon::prelude::*;

/// A raw pointer that may be shared across rayon tasks writing disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    #[inline(always)]
    pub(crate) fn get(self) -> *mut T {
        self.0
    }

    /// The pointer, through a reference (for element types that are not `Copy`).
    #[inline(always)]
    pub(crate) fn ptr(&self) -> *mut T {
        self.0
    }
}

/// Rows per rayon task for row-wise kernels: keeps tasks around 16K elements.
#[inline]
fn rows_per_task(n: usize, c: usize) -> usize {
    ((1 << 14) / c.max(1)).clamp(1, n.max(1))
}

thread_local! {
    /// Set while this thread runs one shard of a batch-split training step: GEMMs and the
    /// rayon loops of the kernels stay on this thread (the shards themselves are the
    /// parallelism).
    static SERIAL_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Minimum items per rayon task of the kernels' parallel loops: 1 normally, unlimited
/// inside [`with_serial_gemm`], where the loop then runs inline on the calling thread
/// without splitting (no jobs pushed, no sleeping worker woken, no stealing of another
/// shard's chunks). The chunking, and so the bits of every result, stay the same.
#[inline]
pub(crate) fn min_len() -> usize {
    if SERIAL_GEMM.with(|s| s.get()) {
        usize::MAX
    } else {
        1
    }
}

/// Runs `f` with every [`gemm_strided`] call made on this thread single-threaded and the
/// kernels' rayon loops inline ([`min_len`]) (restores the previous setting afterwards,
/// also on unwind).
pub(crate) fn with_serial_gemm<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL_GEMM.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL_GEMM.with(|s| s.replace(true)));
    f()
}

/// The gemm crate's parallelism for a product of this size (small ones stay on one thread,
/// and so does everything inside [`with_serial_gemm`]).
#[inline]
fn par(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m * n * k >= 1 << 18 && !SERIAL_GEMM.with(|s| s.get()) {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// dst(m,n) {=, +=} lhs(m,k) @ rhs(k,n), all given by (row stride, column stride).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn gemm_strided<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [F],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[F],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[F],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n);
    if k > 0 {
        assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
        assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    }
    // SAFETY: the asserts above bound every index gemm touches.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            F::ONE,
            F::ONE,
            false,
            false,
            false,
            par(m, n, k),
        )
    }
}

/// Best-of-`reps` f32 GFLOP/s of an n x n x n product through the same `gemm` call the
/// model uses: the ceiling the training benchmark reports its fraction of.
pub fn gemm_ceiling_gflops(n: usize, reps: usize) -> f64 {
    let a: Vec<f32> = (0..n * n).map(|i| ((i % 17) as f32 - 8.0) * 0.01).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
    let mut c = vec![0f32; n * n];
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t0 = std::time::Instant::now();
        gemm_strided(n, n, n, &mut c, n, false, &a, n, 1, &b, n, 1);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

// ---------------------------------------------------------------- encoder

/// out(N,C) = wte\[tokens\] + wpe\[t\]: token plus position embedding.
pub fn encoder_forward<F: Float>(
    out: &mut [F],
    tokens: &[u32],
    wte: &[F],
    wpe: &[F],
    t_len: usize,
    c: usize,
) {
    out.par_chunks_mut(c)
        .zip(tokens.par_iter())
        .enumerate()
        .with_min_len(min_len())
        .for_each(|(i, (o, &tok))| {
            let t = i % t_len;
            let we = &wte[tok as usize * c..][..c];
            let pe = &wpe[t * c..][..c];
            for j in 0..c {
                o[j] = we[j] + pe[j];
            }
        });
}

/// dwte\[tokens\] += dout, dwpe\[t\] += dout (accumulates; sequential over rows because
/// rows scatter into shared embedding rows; parallel over channel blocks instead).
pub fn encoder_backward<F: Float>(
    dwte: &mut [F],
    dwpe: &mut [F],
    dout: &[F],
    tokens: &[u32],
    t_len: usize,
    c: usize,
) {
    for (i, &tok) in tokens.iter().enumerate() {
        let t = i % t_len;
        let d = &dout[i * c..][..c];
        let we = &mut dwte[tok as usize * c..][..c];
        for j in 0..c {
            we[j] += d[j];
        }
        let pe = &mut dwpe[t * c..][..c];
        for j in 0..c {
            pe[j] += d[j];
        }
    }
}

// ---------------------------------------------------------------- layernorm

/// LayerNorm epsilon (GPT-2's layer_norm_epsilon).
pub const LN_EPS: f64 = 1e-5;

/// out = (x - mean) * rstd * w + b per row of C; saves mean and rstd for backward.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<F: Float>(
    out: &mut [F],
    mean: &mut [F],
    rstd: &mut [F],
    inp: &[F],
    w: &[F],
    b: &[F],
    c: usize,
) {
    let rpt = rows_per_task(mean.len(), c);
    out.par_chunks_mut(c * rpt)
        .zip(mean.par_chunks_mut(rpt))
        .zip(rstd.par_chunks_mut(rpt))
        .zip(inp.par_chunks(c * rpt))
        .with_min_len(min_len())
        .for_each(|(((o, mu), rs), x)| ln_forward_rows(o, mu, rs, x, w, b, c));
}

/// Rows of [`layernorm_forward`]; dispatched to an AVX2+FMA build of the same loops
/// (baseline x86-64 would be scalar SSE2).
#[allow(clippy::too_many_arguments)]
fn ln_forward_rows<F: Float>(
    o: &mut [F],
    mu: &mut [F],
    rs: &mut [F],
    x: &[F],
    w: &[F],
    b: &[F],
    c: usize,
) {
    #[inline(always)]
    fn plain<F: Float>(
        o: &mut [F],
        mu: &mut [F],
        rs: &mut [F],
        x: &[F],
        w: &[F],
        b: &[F],
        c: usize,
    ) {
        for r in 0..mu.len() {
            let xr = &x[r * c..][..c];
            let or = &mut o[r * c..][..c];
            let m = sum_lanes(c, |j| xr[j]) / F::from_usize(c);
            let var = sum_lanes(c, |j| {
                let d = xr[j] - m;
                d * d
            }) / F::from_usize(c);
            let s = F::ONE / (var + F::from_f64(LN_EPS)).sqrt();
            let (w, b) = (&w[..c], &b[..c]);
            for j in 0..c {
                or[j] = (xr[j] - m) * s * w[j] + b[j];
            }
            mu[r] = m;
            rs[r] = s;
        }
    }
    if c.is_multiple_of(16) && simd512::avx512() {
        if let (Some(o), Some(mu), Some(rs), Some(x), Some(w), Some(b)) = (
            as_f32_mut(o),
            as_f32_mut(mu),
            as_f32_mut(rs),
            as_f32(x),
            as_f32(w),
            as_f32(b),
        ) {
            simd512::ln_forward_rows(o, mu, rs, x, w, b, c, LN_EPS as f32);
            return;
        }
    }
    cpu::avx2(
        #[inline(always)]
        || plain(o, mu, rs, x, w, b, c),
    )
}

/// Sum of f(0..n) with 8 independent partial sums (a dependency chain 8x shorter than a
/// sequential sum, and vectorizable; differs from it by rounding only).
#[inline(always)]
fn sum_lanes<F: Float>(n: usize, f: impl Fn(usize) -> F) -> F {
    let mut acc = [F::ZERO; 8];
    let full = n / 8 * 8;
    let mut j = 0;
    while j < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(j + l);
        }
        j += 8;
    }
    let mut rest = F::ZERO;
    for j in full..n {
        rest += f(j);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + rest
}

/// Number of row blocks layernorm backward splits into (each sums its own dw/db partials).
pub const LN_BLOCKS: usize = 16;

/// Backward of [`layernorm_forward`]: dinp += ..., dw += ..., db += ...
/// `scratch` holds LN_BLOCKS * 2C partial sums (allocated once by the caller).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<F: Float>(
    dinp: &mut [F],
    dw: &mut [F],
    db: &mut [F],
    scratch: &mut [F],
    dout: &[F],
    inp: &[F],
    w: &[F],
    mean: &[F],
    rstd: &[F],
    c: usize,
) {
    let n = mean.len();
    let rpb = n.div_ceil(LN_BLOCKS).max(1);
    let scratch = &mut scratch[..LN_BLOCKS * 2 * c];
    scratch.fill(F::ZERO);
    scratch
        .par_chunks_mut(2 * c)
        .zip(dinp.par_chunks_mut(rpb * c))
        .enumerate()
        .with_min_len(min_len())
        .for_each(|(blk, (part, di))| {
            let (pw, pb) = part.split_at_mut(c);
            let r0 = blk * rpb;
            let rows = LnRows {
                inp,
                dout,
                w,
                mean,
                rstd,
                c,
            };
            ln_backward_rows(&rows, r0, pw, pb, di)
        });
    for part in scratch.chunks(2 * c) {
        for j in 0..c {
            dw[j] += part[j];
            db[j] += part[c + j];
        }
    }
}

/// The read-only inputs of [`layernorm_backward`]'s row loop.
struct LnRows<'a, F> {
    inp: &'a [F],
    dout: &'a [F],
    w: &'a [F],
    mean: &'a [F],
    rstd: &'a [F],
    c: usize,
}

/// Rows r0.. of [`layernorm_backward`] into this block's partial dw/db and dx; dispatched
/// to an AVX2+FMA build of the same loops.
fn ln_backward_rows<F: Float>(
    k: &LnRows<'_, F>,
    r0: usize,
    pw: &mut [F],
    pb: &mut [F],
    di: &mut [F],
) {
    #[inline(always)]
    fn plain<F: Float>(k: &LnRows<'_, F>, r0: usize, pw: &mut [F], pb: &mut [F], di: &mut [F]) {
        let c = k.c;
        let (w, pw, pb) = (&k.w[..c], &mut pw[..c], &mut pb[..c]);
        for r in 0..di.len() / c {
            let row = r0 + r;
            let x = &k.inp[row * c..][..c];
            let d = &k.dout[row * c..][..c];
            let dx = &mut di[r * c..][..c];
            let (m, s) = (k.mean[row], k.rstd[row]);
            let dnorm_mean = sum_lanes(c, |j| w[j] * d[j]) / F::from_usize(c);
            let dnorm_norm_mean =
                sum_lanes(c, |j| w[j] * d[j] * ((x[j] - m) * s)) / F::from_usize(c);
            for j in 0..c {
                let norm = (x[j] - m) * s;
                let dnorm = w[j] * d[j];
                pb[j] += d[j];
                pw[j] += norm * d[j];
                dx[j] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
            }
        }
    }
    if k.c.is_multiple_of(16) && simd512::avx512() {
        if let (Some(x), Some(d), Some(w), Some(mean), Some(rstd)) = (
            as_f32(k.inp),
            as_f32(k.dout),
            as_f32(k.w),
            as_f32(k.mean),
            as_f32(k.rstd),
        ) {
            if let (Some(pw), Some(pb), Some(di)) = (as_f32_mut(pw), as_f32_mut(pb), as_f32_mut(di))
            {
                simd512::ln_backward_rows((x, d, w, mean, rstd), k.c, r0, pw, pb, di);
                return;
            }
        }
    }
    cpu::avx2(
        #[inline(always)]
        || plain(k, r0, pw, pb, di),
    )
}

// ---------------------------------------------------------------- matmul

/// out(N,OC) = inp(N,IC) @ w(IC,OC) + bias (overwrites out).
pub fn matmul_forward<F: Float>(
    out: &mut [F],
    inp: &[F],
    w: &[F],
    bias: Option<&[F]>,
    n: usize,
    ic: usize,
    oc: usize,
) {
    let out = &mut out[..n * oc];
    match bias {
        Some(b) => {
            out.par_chunks_mut(oc * rows_per_task(n, oc))
                .with_min_len(min_len())
                .for_each(|o| {
                    for row in o.chunks_mut(oc) {
                        row.copy_from_slice(b);
                    }
                });
            gemm_strided(n, oc, ic, out, oc, true, inp, ic, 1, w, oc, 1);
        }
        None => gemm_strided(n, oc, ic, out, oc, false, inp, ic, 1, w, oc, 1),
    }
}

/// Backward of [`matmul_forward`]: dinp = dout @ w^T (OVERWRITES), dw += inp^T @ dout,
/// db += column sums of dout.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward<F: Float>(
    dinp: &mut [F],
    dw: &mut [F],
    db: Option<&mut [F]>,
    dout: &[F],
    inp: &[F],
    w: &[F],
    n: usize,
    ic: usize,
    oc: usize,
) {
    // dinp(N,IC) = dout(N,OC) @ w^T(OC,IC); w^T(o,i) = w[i*OC + o].
    gemm_strided(n, ic, oc, dinp, ic, false, dout, oc, 1, w, 1, oc);
    // dw(IC,OC) += inp^T(IC,N) @ dout(N,OC); inp^T(i,r) = inp[r*IC + i].
    gemm_strided(ic, oc, n, dw, oc, true, inp, 1, ic, dout, oc, 1);
    if let Some(db) = db {
        bias_backward(db, dout, n, oc);
    }
}

/// [`matmul_backward`] with the weight also given transposed, wt(OC,IC) = w^T: dinp =
/// dout @ wt then reads a row-major matrix, which `gemm` packs without a strided gather
/// (8-13% faster per call at model A's shapes). Same sums in the same order. With
/// `overwrite_dw`, dw = inp^T @ dout instead of +=: for a gradient buffer whose old
/// contents are garbage (a batch shard's own buffer), so it need not be zeroed first.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_t<F: Float>(
    dinp: &mut [F],
    dw: &mut [F],
    db: Option<&mut [F]>,
    dout: &[F],
    inp: &[F],
    wt: &[F],
    (n, ic, oc): (usize, usize, usize),
    overwrite_dw: bool,
) {
    gemm_strided(n, ic, oc, dinp, ic, false, dout, oc, 1, wt, ic, 1);
    gemm_strided(ic, oc, n, dw, oc, !overwrite_dw, inp, 1, ic, dout, oc, 1);
    if let Some(db) = db {
        bias_backward(db, dout, n, oc);
    }
}

/// dst(cols, rows) = src(rows, cols)^T, in 16 x 16 tiles ([`simd512::transpose`]'s AVX
/// register tiles for f32 when the CPU has AVX).
pub fn transpose<F: Float>(dst: &mut [F], src: &[F], rows: usize, cols: usize) {
    if simd512::avx() {
        if let (Some(d), Some(s)) = (as_f32_mut(dst), as_f32(src)) {
            simd512::transpose(d, s, rows, cols);
            return;
        }
    }
    const TILE: usize = 16;
    let (dst, src) = (&mut dst[..rows * cols], &src[..rows * cols]);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// db(OC) += sum over rows of dout(N,OC), parallel over column blocks.
pub fn bias_backward<F: Float>(db: &mut [F], dout: &[F], n: usize, oc: usize) {
    let cb = 256.min(oc).max(1);
    db.par_chunks_mut(cb)
        .enumerate()
        .with_min_len(min_len())
        .for_each(|(bi, dbc)| {
            let o0 = bi * cb;
            cpu::avx2(
                #[inline(always)]
                || {
                    for r in 0..n {
                        let d = &dout[r * oc + o0..][..dbc.len()];
                        for (a, b) in dbc.iter_mut().zip(d) {
                            *a += *b;
                        }
                    }
                },
            )
        });
}

// ---------------------------------------------------------------- attention

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
        .with_min_len(min_len())
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
        .with_min_len(min_len())
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

/// dst(m,n) {=, +=} lhs(m,k) @ rhs(k,n) on raw pointers, single-threaded (for calls made
/// inside a rayon task on disjoint strided views of shared buffers).
///
/// # Safety
/// Every element addressed by the dimensions and strides must be valid, and `dst`'s
/// elements must not be accessed concurrently by anyone else.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn gemm_raw<F: Float>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut F,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const F,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const F,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        F::ONE,
        F::ONE,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Query rows per block of the causal attention GEMMs: block i (rows i*BS..) needs only
/// keys 0..(i+1)*BS, so the masked upper triangle is skipped block-wise (model A, T=64:
/// 75% of the full T x T products; T=256: 56%).
const ATT_BLOCK: usize = 32;

/// Causal self-attention, parallel over (b, h), same contract as
/// [`attention_forward_loops`]. f32 on AVX-512: [`simd512::attention_forward`]'s
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
    if simd512::avx512() {
        if let (Some(o), Some(a), Some(x)) = (as_f32_mut(out), as_f32_mut(att), as_f32(qkv)) {
            simd512::attention_forward(o, a, x, (b, t_len, c, nh));
            return;
        }
    }
    attention_forward_blocked(out, att, qkv, b, t_len, c, nh, ATT_BLOCK)
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
        .with_min_len(min_len())
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
/// scale), zeros after; the AVX-512 version ([`simd512::softmax_causal_rows`]) when the CPU
/// has it, else [`softmax_causal_row`] per row.
#[inline]
fn softmax_causal_rows<F: Float>(s: &mut [F], t_len: usize, r0: usize, r1: usize, scale: F) {
    if simd512::avx512() {
        if let Some(s) = as_f32_mut(s) {
            simd512::softmax_causal_rows(s, t_len, r0, r1, scale.to_f64() as f32);
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
/// after; the AVX-512 version ([`simd512::softmax_grad_causal_rows`]) when the CPU has it.
#[inline]
fn softmax_grad_causal_rows<F: Float>(
    ds: &mut [F],
    p: &[F],
    t_len: usize,
    r0: usize,
    r1: usize,
    scale: F,
) {
    if simd512::avx512() {
        if let (Some(p), Some(ds)) = (as_f32(p), as_f32_mut(ds)) {
            simd512::softmax_grad_causal_rows(ds, p, t_len, r0, r1, scale.to_f64() as f32);
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

/// Backward of [`attention_forward`] (f32 on AVX-512: [`simd512::attention_backward`];
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
    if simd512::avx512() {
        if let (Some(dx), Some(ds), Some(g), Some(x), Some(a)) = (
            as_f32_mut(dqkv),
            as_f32_mut(datt),
            as_f32(dout),
            as_f32(qkv),
            as_f32(att),
        ) {
            simd512::attention_backward(dx, ds, g, x, a, (b, t_len, c, nh));
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
        .with_min_len(min_len())
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

// ---------------------------------------------------------------- tied LM head

/// Vocabulary rows per task of the blocked LM-head products.
const VOCAB_BLOCK: usize = 2048;

/// Whether the LM-head products split the vocabulary into [`VOCAB_BLOCK`] blocks (large
/// vocabularies: one parallel GEMM over 50K columns makes `gemm` allocate, page-fault and
/// pack a whole (C x V) copy of wte per call). Depends on V only, never on threads, so
/// the bits of the result do not either.
#[inline]
fn vocab_blocked(v: usize) -> bool {
    v >= 4 * VOCAB_BLOCK
}

/// logits(N,V) = lnf(N,C) @ wte^T(C,V) (overwrites); wte is (V,C). For large V, blocks of
/// vocabulary columns run in parallel as single-threaded GEMMs; the plain single
/// `gemm_strided` call is the reference (same sums, tested to agree).
pub fn lm_head_forward<F: Float>(
    logits: &mut [F],
    lnf: &[F],
    wte: &[F],
    n: usize,
    v: usize,
    c: usize,
) {
    if !vocab_blocked(v) || n == 0 {
        gemm_strided(n, v, c, logits, v, false, lnf, c, 1, wte, 1, c);
        return;
    }
    assert!(logits.len() >= n * v && lnf.len() >= n * c && wte.len() >= v * c);
    let dst = SyncPtr(logits.as_mut_ptr());
    (0..v.div_ceil(VOCAB_BLOCK))
        .into_par_iter()
        .with_min_len(min_len())
        .for_each(|blk| {
            let j0 = blk * VOCAB_BLOCK;
            let nb = VOCAB_BLOCK.min(v - j0);
            // SAFETY: columns j0..j0+nb of every logits row belong to this task alone; the
            // views of lnf and wte stay inside the asserted lengths.
            unsafe {
                gemm_raw(
                    n,
                    nb,
                    c,
                    dst.get().add(j0),
                    v,
                    false,
                    lnf.as_ptr(),
                    c,
                    1,
                    wte.as_ptr().add(j0 * c),
                    1,
                    c,
                );
            }
        });
}

/// dwte(V,C) += dlogits^T(V,N) @ lnf(N,C): the LM head's weight gradient, in blocks of
/// vocabulary rows for large V (reference: the single `gemm_strided` call); `=` instead
/// of `+=` with `overwrite` (see [`matmul_backward_t`]).
pub fn lm_head_backward_dwte<F: Float>(
    dwte: &mut [F],
    dlogits: &[F],
    lnf: &[F],
    (n, v, c): (usize, usize, usize),
    overwrite: bool,
) {
    if !vocab_blocked(v) || n == 0 {
        gemm_strided(v, c, n, dwte, c, !overwrite, dlogits, 1, v, lnf, c, 1);
        return;
    }
    assert!(dlogits.len() >= n * v && lnf.len() >= n * c);
    dwte[..v * c]
        .par_chunks_mut(VOCAB_BLOCK * c)
        .enumerate()
        .with_min_len(min_len())
        .for_each(|(blk, dw)| {
            let j0 = blk * VOCAB_BLOCK;
            let nb = dw.len() / c;
            // SAFETY: dw is this task's own; dlogits columns j0..j0+nb of rows 0..n and
            // lnf are inside the asserted lengths.
            unsafe {
                gemm_raw(
                    nb,
                    c,
                    n,
                    dw.as_mut_ptr(),
                    c,
                    !overwrite,
                    dlogits.as_ptr().add(j0),
                    1,
                    v,
                    lnf.as_ptr(),
                    c,
                    1,
                );
            }
        });
}

/// Views a generic slice as f32 when F is f32 (the SIMD fast paths are f32-only).
#[inline(always)]
fn as_f32_mut<F: Float>(x: &mut [F]) -> Option<&mut [f32]> {
    if std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() {
        // SAFETY: F is f32.
        Some(unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut f32, x.len()) })
    } else {
        None
    }
}

/// Views a generic slice as f32 when F is f32.
#[inline(always)]
fn as_f32<F: Float>(x: &[F]) -> Option<&[f32]> {
    if std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>() {
        // SAFETY: F is f32.
        Some(unsafe { std::slice::from_raw_parts(x.as_ptr() as *const f32, x.len()) })
    } else {
        None
    }
}

// ---------------------------------------------------------------- gelu

const GELU_S: f64 = 0.797_884_560_802_865_4; // sqrt(2/pi)

/// GELU, tanh approximation (GPT-2's "gelu_new"): out = 0.5 x (1 + tanh(s (x + 0.044715 x^3))).
pub fn gelu_forward<F: Float>(out: &mut [F], inp: &[F]) {
    if let (Some(o), Some(x)) = (as_f32_mut(out), as_f32(inp)) {
        o.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .with_min_len(min_len())
            .for_each(|(o, x)| gelu_f32(o, x));
        return;
    }
    let s = F::from_f64(GELU_S);
    let a = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    out.par_chunks_mut(1 << 14)
        .zip(inp.par_chunks(1 << 14))
        .with_min_len(min_len())
        .for_each(|(o, x)| {
            for i in 0..o.len() {
                let xi = x[i];
                o[i] = half * xi * (F::ONE + (s * (xi + a * xi * xi * xi)).tanh());
            }
        });
}

/// f32 GELU: the AVX-512 build ([`gelu512`]) when the CPU has it, else [`simd::gelu`].
#[inline]
fn gelu_f32(out: &mut [f32], inp: &[f32]) {
    if gelu512::available() {
        gelu512::forward(out, inp)
    } else {
        simd::gelu(out, inp)
    }
}

/// GELU in place (inference: the input is not needed afterwards).
pub fn gelu_inplace<F: Float>(x: &mut [F]) {
    if let Some(x) = as_f32_mut(x) {
        for ch in x.chunks_mut(256) {
            let tmp: [f32; 256] = std::array::from_fn(|i| ch.get(i).copied().unwrap_or(0.0));
            gelu_f32(ch, &tmp[..ch.len()]);
        }
        return;
    }
    let s = F::from_f64(GELU_S);
    let a = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    for xi in x.iter_mut() {
        let v = *xi;
        *xi = half * v * (F::ONE + (s * (v + a * v * v * v)).tanh());
    }
}

/// inp(N,OC) += bias per row, then out = GELU(inp): the bias of the matmul before the
/// GELU fused into the GELU pass (that matmul then runs without bias, so no separate pass
/// writes bias rows into its output). Same bits as [`matmul_forward`] with the bias
/// followed by [`gelu_forward`] (float addition commutes).
pub fn bias_gelu_forward<F: Float>(out: &mut [F], inp: &mut [F], bias: &[F], oc: usize) {
    let n = inp.len() / oc;
    let rpt = rows_per_task(n, oc);
    let bias = &bias[..oc];
    out[..n * oc]
        .par_chunks_mut(rpt * oc)
        .zip(inp[..n * oc].par_chunks_mut(rpt * oc))
        .with_min_len(min_len())
        .for_each(|(o, x)| {
            cpu::avx2(
                #[inline(always)]
                || {
                    for row in x.chunks_mut(oc) {
                        for (a, &b) in row.iter_mut().zip(bias) {
                            *a += b;
                        }
                    }
                },
            );
            match (as_f32_mut(o), as_f32(x)) {
                (Some(o), Some(x)) => gelu_f32(o, x),
                _ => gelu_forward(o, x),
            }
        });
}

/// Whether [`bias_gelu_forward_train`] leaves GELU'(x) in its `inp` (f32 on AVX-512 with
/// rows of a multiple of 16; otherwise it leaves x = inp + bias, as [`bias_gelu_forward`]).
#[inline]
pub fn gelu_keeps_derivative<F: Float>(oc: usize) -> bool {
    std::any::TypeId::of::<F>() == std::any::TypeId::of::<f32>()
        && oc.is_multiple_of(16)
        && gelu512::available()
}

/// The training version of [`bias_gelu_forward`]: out = GELU(inp + bias), and where
/// [`gelu_keeps_derivative`], inp <- GELU'(inp + bias) in the same pass (one pass instead
/// of a bias pass and a GELU pass; the backward is then one multiply,
/// [`gelu_backward_stored`], instead of a second exp). Same bits as [`bias_gelu_forward`]
/// followed by [`gelu_backward_inplace`] (tested).
pub fn bias_gelu_forward_train<F: Float>(out: &mut [F], inp: &mut [F], bias: &[F], oc: usize) {
    if !gelu_keeps_derivative::<F>(oc) {
        return bias_gelu_forward(out, inp, bias, oc);
    }
    let (Some(out), Some(inp), Some(bias)) = (as_f32_mut(out), as_f32_mut(inp), as_f32(bias))
    else {
        unreachable!("gelu_keeps_derivative checked F = f32")
    };
    let n = inp.len() / oc;
    let rpt = rows_per_task(n, oc);
    out[..n * oc]
        .par_chunks_mut(rpt * oc)
        .zip(inp[..n * oc].par_chunks_mut(rpt * oc))
        .with_min_len(min_len())
        .for_each(|(o, x)| gelu512::forward_grad(o, x, &bias[..oc]));
}

/// Backward of [`bias_gelu_forward_train`] where [`gelu_keeps_derivative`]: d *= g, g the
/// stored GELU'(x).
pub fn gelu_backward_stored<F: Float>(d: &mut [F], g: &[F]) {
    d.par_chunks_mut(1 << 14)
        .zip(g.par_chunks(1 << 14))
        .with_min_len(min_len())
        .for_each(|(d, g)| {
            cpu::avx512(
                #[inline(always)]
                || {
                    for (a, &b) in d.iter_mut().zip(g) {
                        *a *= b;
                    }
                },
            )
        });
}

/// Backward of [`gelu_forward`], in place: d (holding dout) becomes dinp.
pub fn gelu_backward_inplace<F: Float>(d: &mut [F], inp: &[F]) {
    if let (Some(d), Some(x)) = (as_f32_mut(d), as_f32(inp)) {
        d.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .with_min_len(min_len())
            .for_each(|(d, x)| {
                if gelu512::available() {
                    gelu512::backward(d, x)
                } else {
                    simd::gelu_backward(d, x)
                }
            });
        return;
    }
    let s = F::from_f64(GELU_S);
    let a = F::from_f64(0.044715);
    let half = F::from_f64(0.5);
    let three_a = F::from_f64(3.0 * 0.044715);
    d.par_chunks_mut(1 << 14)
        .zip(inp.par_chunks(1 << 14))
        .with_min_len(min_len())
        .for_each(|(dd, x)| {
            for i in 0..dd.len() {
                let xi = x[i];
                let th = (s * (xi + a * xi * xi * xi)).tanh();
                let sech2 = F::ONE - th * th;
                let grad =
                    half * (F::ONE + th) + half * xi * sech2 * s * (F::ONE + three_a * xi * xi);
                dd[i] *= grad;
            }
        });
}

// ---------------------------------------------------------------- residual

/// out += inp (the residual connection, in place).
pub fn residual_add<F: Float>(out: &mut [F], inp: &[F]) {
    out.par_chunks_mut(1 << 14)
        .zip(inp.par_chunks(1 << 14))
        .with_min_len(min_len())
        .for_each(|(o, x)| add_in_place(o, x));
}

/// out += inp on one chunk, serially (the per-chunk body of [`residual_add`]).
#[inline]
pub fn add_in_place<F: Float>(out: &mut [F], inp: &[F]) {
    cpu::avx2(
        #[inline(always)]
        || {
            for (a, b) in out.iter_mut().zip(inp) {
                *a += *b;
            }
        },
    )
}

/// out += inp + bias per row of C: the residual connection with the bias of the branch's
/// output projection fused in (the projection then runs without bias). Same bits as
/// [`matmul_forward`] with the bias followed by [`residual_add`].
pub fn residual_bias_add<F: Float>(out: &mut [F], inp: &[F], bias: &[F], c: usize) {
    let rpt = rows_per_task(out.len() / c, c);
    let bias = &bias[..c];
    out.par_chunks_mut(rpt * c)
        .zip(inp.par_chunks(rpt * c))
        .with_min_len(min_len())
        .for_each(|(o, x)| {
            cpu::avx2(
                #[inline(always)]
                || {
                    for (o, x) in o.chunks_mut(c).zip(x.chunks(c)) {
                        for ((a, &xi), &b) in o.iter_mut().zip(x).zip(bias) {
                            *a = (*a + b) + xi;
                        }
                    }
                },
            )
        });
}

// ---------------------------------------------------------------- softmax + cross-entropy

/// Fused softmax + cross-entropy: logits(N,V) become probabilities in place; losses\[i\] =
/// -log p\[i\]\[targets\[i\]\]. Returns the mean loss (in f64).
pub fn softmax_ce_forward<F: Float>(
    logits: &mut [F],
    losses: &mut [F],
    targets: &[u32],
    v: usize,
) -> f64 {
    if let (Some(lg), Some(ls)) = (as_f32_mut(logits), as_f32_mut(losses)) {
        lg.par_chunks_mut(v)
            .zip(ls.par_iter_mut())
            .zip(targets.par_iter())
            .with_min_len(min_len())
            .for_each(|((row, loss), &tgt)| *loss = simd::softmax_ce_row(row, tgt as usize));
        return ls.iter().map(|&l| l as f64).sum::<f64>() / ls.len().max(1) as f64;
    }
    logits
        .par_chunks_mut(v)
        .zip(losses.par_iter_mut())
        .zip(targets.par_iter())
        .with_min_len(min_len())
        .for_each(|((row, loss), &tgt)| {
            let maxv = row
                .iter()
                .copied()
                .fold(F::from_f64(f64::NEG_INFINITY), |a, b| a.max(b));
            let mut sum = F::ZERO;
            for x in row.iter_mut() {
                let e = (*x - maxv).exp();
                *x = e;
                sum += e;
            }
            let inv = F::ONE / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
            // -log p computed from the logit directly would need the logit; p is exact enough
            // except for tiny p, so use log(sum) - (logit - max) via the stored probability.
            *loss = -row[tgt as usize].max(F::from_f64(1e-38)).ln();
        });
    losses.iter().map(|l| l.to_f64()).sum::<f64>() / losses.len().max(1) as f64
}

/// [`softmax_ce_forward`] then [`softmax_ce_backward_inplace`] in one pass over the
/// logits (training): logits(N,V) become dlogits = (p - onehot(target)) * scale, losses\[i\] =
/// -log p\[i\]\[targets\[i\]\]; returns the mean loss. The f32 path fuses the scaling into the
/// softmax normalization (one fewer read and write of the N x V logits, 206 MB at model
/// B); other types run the two reference kernels.
pub fn softmax_ce_forward_backward<F: Float>(
    logits: &mut [F],
    losses: &mut [F],
    targets: &[u32],
    v: usize,
    scale: F,
) -> f64 {
    if let (Some(lg), Some(ls)) = (as_f32_mut(logits), as_f32_mut(losses)) {
        let sc = scale.to_f64() as f32;
        lg.par_chunks_mut(v)
            .zip(ls.par_iter_mut())
            .zip(targets.par_iter())
            .with_min_len(min_len())
            .for_each(|((row, loss), &tgt)| {
                *loss = simd::softmax_ce_grad_row(row, tgt as usize, sc)
            });
        return ls.iter().map(|&l| l as f64).sum::<f64>() / ls.len().max(1) as f64;
    }
    let loss = softmax_ce_forward(logits, losses, targets, v);
    softmax_ce_backward_inplace(logits, targets, v, scale);
    loss
}

/// Backward of [`softmax_ce_forward`] for the mean loss, in place: probs(N,V) become
/// dlogits = (p - onehot(target)) * scale (scale = 1/N for the mean).
pub fn softmax_ce_backward_inplace<F: Float>(probs: &mut [F], targets: &[u32], v: usize, scale: F) {
    probs
        .par_chunks_mut(v)
        .zip(targets.par_iter())
        .with_min_len(min_len())
        .for_each(|(row, &tgt)| {
            for x in row.iter_mut() {
                *x *= scale;
            }
            row[tgt as usize] -= scale;
        });
}

/// GELU forward/backward for f32 with explicit AVX-512 intrinsics: the same polynomial
/// exp as [`simd::exp`], but 1/(e^{2y}+1) by `vrcp14ps` plus one Newton step instead of a
/// `vdivps` (the division was the bottleneck: 0.70 -> 0.46 ns/element forward on this
/// VM). Relative error of the reciprocal ~2^-23, so the result is within a few ulp of the
/// division-based [`simd::gelu`]; not the same bits, so a machine without AVX-512
/// (AVX2 or baseline path) trains to slightly different bits than one with it (still
/// deterministic per machine and thread count). Tails shorter than 16 go to [`simd`].
mod gelu512 {
    use super::simd;

    /// Whether the CPU runs the functions below (checked once per call site by callers).
    #[inline]
    pub fn available() -> bool {
        crate::cpu::has_avx512()
    }

    /// out = GELU(inp). Requires [`available`].
    pub fn forward(out: &mut [f32], inp: &[f32]) {
        let n = out.len().min(inp.len());
        let full = n / 16 * 16;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers check available(); indices stay below `full` <= both lengths.
        unsafe {
            imp::forward(out.as_mut_ptr(), inp.as_ptr(), full)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let full = 0;
        simd::gelu(&mut out[full..n], &inp[full..n]);
    }

    /// x (rows of bias.len(), a multiple of 16) <- GELU'(x + bias), out = GELU(x + bias):
    /// the bits of [`forward`] and of the factor [`backward`] multiplies by. Requires
    /// [`available`].
    pub fn forward_grad(out: &mut [f32], x: &mut [f32], bias: &[f32]) {
        let oc = bias.len();
        assert!(oc.is_multiple_of(16) && out.len() == x.len() && x.len().is_multiple_of(oc));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: callers check available(); every row lies inside out and x (asserted).
        unsafe {
            imp::forward_grad(
                out.as_mut_ptr(),
                x.as_mut_ptr(),
                bias.as_ptr(),
                x.len() / oc,
                oc,
            )
        };
    }

    /// d *= GELU'(inp). Requires [`available`].
    pub fn backward(d: &mut [f32], inp: &[f32]) {
        let n = d.len().min(inp.len());
        let full = n / 16 * 16;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in forward().
        unsafe {
            imp::backward(d.as_mut_ptr(), inp.as_ptr(), full)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let full = 0;
        simd::gelu_backward(&mut d[full..n], &inp[full..n]);
    }

    #[cfg(target_arch = "x86_64")]
    mod imp {
        use std::arch::x86_64::*;

        const S: f32 = 0.797_884_6; // sqrt(2/pi)
        const A: f32 = 0.044715;

        /// (x, e = exp(2 s (x + A x^3)), inv = 1 / (e + 1)) for 16 lanes; the exp is
        /// [`crate::model::gpt::simd512`]'s polynomial with its argument clamped to [-87, 80]
        /// (so 1/(e+1) stays a normal float).
        #[inline(always)]
        unsafe fn e_inv(x: __m512) -> (__m512, __m512) {
            let one = _mm512_set1_ps(1.0);
            let x2 = _mm512_mul_ps(x, x);
            let y = _mm512_mul_ps(
                _mm512_mul_ps(_mm512_set1_ps(2.0 * S), x),
                _mm512_fmadd_ps(_mm512_set1_ps(A), x2, one),
            );
            let z = _mm512_min_ps(
                _mm512_max_ps(y, _mm512_set1_ps(-87.0)),
                _mm512_set1_ps(80.0),
            );
            let e = crate::model::gpt::simd512::exp16_in_range(z);
            let d = _mm512_add_ps(e, one);
            let r0 = _mm512_rcp14_ps(d);
            let inv = _mm512_mul_ps(r0, _mm512_fnmadd_ps(d, r0, _mm512_set1_ps(2.0)));
            (e, inv)
        }

        /// out[..n] = x (1 - 1/(e+1)) = 0.5 x (1 + tanh(y)); n a multiple of 16.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn forward(out: *mut f32, inp: *const f32, n: usize) {
            let one = _mm512_set1_ps(1.0);
            let mut i = 0;
            while i < n {
                let x = _mm512_loadu_ps(inp.add(i));
                let (_, inv) = e_inv(x);
                _mm512_storeu_ps(out.add(i), _mm512_mul_ps(x, _mm512_sub_ps(one, inv)));
                i += 16;
            }
        }

        /// GELU'(x) from [`e_inv`]'s e and inv, as [`backward`] computes it.
        #[inline(always)]
        unsafe fn grad(x: __m512, e: __m512, inv: __m512) -> __m512 {
            let one = _mm512_set1_ps(1.0);
            let x2 = _mm512_mul_ps(x, x);
            let k = _mm512_mul_ps(
                _mm512_mul_ps(_mm512_set1_ps(2.0 * S), x),
                _mm512_fmadd_ps(_mm512_set1_ps(3.0 * A), x2, one),
            );
            let ei2 = _mm512_mul_ps(_mm512_mul_ps(e, inv), inv);
            _mm512_fmadd_ps(k, ei2, _mm512_sub_ps(one, inv))
        }

        /// Rows of oc (a multiple of 16): x <- GELU'(x + b), out = GELU(x + b).
        #[target_feature(enable = "avx512f")]
        pub unsafe fn forward_grad(
            out: *mut f32,
            x: *mut f32,
            b: *const f32,
            rows: usize,
            oc: usize,
        ) {
            let one = _mm512_set1_ps(1.0);
            for r in 0..rows {
                let (o, xr) = (out.add(r * oc), x.add(r * oc));
                let mut j = 0;
                while j < oc {
                    let xv = _mm512_add_ps(_mm512_loadu_ps(xr.add(j)), _mm512_loadu_ps(b.add(j)));
                    let (e, inv) = e_inv(xv);
                    _mm512_storeu_ps(o.add(j), _mm512_mul_ps(xv, _mm512_sub_ps(one, inv)));
                    _mm512_storeu_ps(xr.add(j), grad(xv, e, inv));
                    j += 16;
                }
            }
        }

        /// d[..n] *= (1 - inv) + 2 s x (1 + 3 A x^2) e inv^2, i.e. 0.5 (1 + tanh) +
        /// 0.5 x sech^2 s (1 + 3 A x^2) with sech^2 = 4 e inv^2; n a multiple of 16.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn backward(d: *mut f32, inp: *const f32, n: usize) {
            let mut i = 0;
            while i < n {
                let x = _mm512_loadu_ps(inp.add(i));
                let (e, inv) = e_inv(x);
                let g = grad(x, e, inv);
                let dd = _mm512_loadu_ps(d.add(i));
                _mm512_storeu_ps(d.add(i), _mm512_mul_ps(dd, g));
                i += 16;
            }
        }
    }
}

/// Plain, obviously-correct versions of the kernels above, for tests.
pub mod reference {
    use super::Float;

    /// out = inp @ w + bias with three loops.
    pub fn matmul_forward<F: Float>(
        out: &mut [F],
        inp: &[F],
        w: &[F],
        bias: Option<&[F]>,
        n: usize,
        ic: usize,
        oc: usize,
    ) {
        for r in 0..n {
            for o in 0..oc {
                let mut acc = bias.map_or(F::ZERO, |b| b[o]);
                for i in 0..ic {
                    acc += inp[r * ic + i] * w[i * oc + o];
                }
                out[r * oc + o] = acc;
            }
        }
    }

    /// dinp = dout @ w^T; dw += inp^T @ dout; db += colsum(dout), with loops.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_backward<F: Float>(
        dinp: &mut [F],
        dw: &mut [F],
        db: Option<&mut [F]>,
        dout: &[F],
        inp: &[F],
        w: &[F],
        n: usize,
        ic: usize,
        oc: usize,
    ) {
        for r in 0..n {
            for i in 0..ic {
                let mut acc = F::ZERO;
                for o in 0..oc {
                    acc += dout[r * oc + o] * w[i * oc + o];
                }
                dinp[r * ic + i] = acc;
            }
        }
        for i in 0..ic {
            for o in 0..oc {
                let mut acc = F::ZERO;
                for r in 0..n {
                    acc += inp[r * ic + i] * dout[r * oc + o];
                }
                dw[i * oc + o] += acc;
            }
        }
        if let Some(db) = db {
            for o in 0..oc {
                for r in 0..n {
                    db[o] += dout[r * oc + o];
                }
            }
        }
    }

    /// LayerNorm with sequential sums in f64: out = (x - mean) / sqrt(var + eps) * w + b.
    pub fn layernorm_forward<F: Float>(out: &mut [F], inp: &[F], w: &[F], b: &[F], c: usize) {
        for (o, x) in out.chunks_mut(c).zip(inp.chunks(c)) {
            let m = x.iter().map(|v| v.to_f64()).sum::<f64>() / c as f64;
            let var = x.iter().map(|v| (v.to_f64() - m).powi(2)).sum::<f64>() / c as f64;
            let s = 1.0 / (var + super::LN_EPS).sqrt();
            for j in 0..c {
                o[j] = F::from_f64((x[j].to_f64() - m) * s * w[j].to_f64() + b[j].to_f64());
            }
        }
    }

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

    fn rnd(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Central finite difference of scalar f at x along every coordinate.
    fn fd(x: &[f64], f: &dyn Fn(&[f64]) -> f64) -> Vec<f64> {
        let h = 1e-6;
        let mut xp = x.to_vec();
        (0..x.len())
            .map(|i| {
                let x0 = xp[i];
                xp[i] = x0 + h;
                let a = f(&xp);
                xp[i] = x0 - h;
                let b = f(&xp);
                xp[i] = x0;
                (a - b) / (2.0 * h)
            })
            .collect()
    }

    fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            let d = (x - y).abs() / (1.0 + x.abs().max(y.abs()));
            assert!(d < tol, "{what}[{i}]: {x} vs {y}");
        }
    }

    /// Loss = sum(out * g) for a fixed random g, so d loss / d out = g.
    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn matmul_matches_reference_and_fd() {
        let (n, ic, oc) = (5, 7, 6);
        let inp = rnd(n * ic, 1);
        let w = rnd(ic * oc, 2);
        let bias = rnd(oc, 3);
        let g = rnd(n * oc, 4);
        let mut out = vec![0.0; n * oc];
        let mut want = vec![0.0; n * oc];
        matmul_forward(&mut out, &inp, &w, Some(&bias), n, ic, oc);
        reference::matmul_forward(&mut want, &inp, &w, Some(&bias), n, ic, oc);
        close(&out, &want, 1e-12, "forward");
        let mut dinp = vec![0.0; n * ic];
        let mut dw = vec![0.0; ic * oc];
        let mut db = vec![0.0; oc];
        matmul_backward(&mut dinp, &mut dw, Some(&mut db), &g, &inp, &w, n, ic, oc);
        let (mut rdinp, mut rdw, mut rdb) = (vec![0.0; n * ic], vec![0.0; ic * oc], vec![0.0; oc]);
        reference::matmul_backward(
            &mut rdinp,
            &mut rdw,
            Some(&mut rdb),
            &g,
            &inp,
            &w,
            n,
            ic,
            oc,
        );
        close(&dinp, &rdinp, 1e-12, "dinp");
        close(&dw, &rdw, 1e-12, "dw");
        close(&db, &rdb, 1e-12, "db");
        let f_inp = |x: &[f64]| {
            let mut o = vec![0.0; n * oc];
            reference::matmul_forward(&mut o, x, &w, Some(&bias), n, ic, oc);
            dot(&o, &g)
        };
        close(&fd(&inp, &f_inp), &rdinp, 1e-7, "fd dinp");
        let f_w = |x: &[f64]| {
            let mut o = vec![0.0; n * oc];
            reference::matmul_forward(&mut o, &inp, x, Some(&bias), n, ic, oc);
            dot(&o, &g)
        };
        close(&fd(&w, &f_w), &rdw, 1e-7, "fd dw");
    }

    #[test]
    fn layernorm_forward_matches_reference() {
        for &(n, c) in &[(7, 13), (5, 128), (3, 8)] {
            let inp: Vec<f32> = rnd(n * c, 61)
                .iter()
                .map(|x| (x * 3.0 + 0.7) as f32)
                .collect();
            let w: Vec<f32> = rnd(c, 62).iter().map(|&x| x as f32).collect();
            let b: Vec<f32> = rnd(c, 63).iter().map(|&x| x as f32).collect();
            let (mut o, mut m, mut r) = (vec![0f32; n * c], vec![0f32; n], vec![0f32; n]);
            layernorm_forward(&mut o, &mut m, &mut r, &inp, &w, &b, c);
            let mut want = vec![0f32; n * c];
            reference::layernorm_forward(&mut want, &inp, &w, &b, c);
            for (x, y) in o.iter().zip(&want) {
                assert!((x - y).abs() < 2e-5, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn layernorm_backward_matches_fd() {
        let (n, c) = (6, 8);
        let inp: Vec<f64> = rnd(n * c, 5).iter().map(|x| x * 3.0 + 0.5).collect();
        let w = rnd(c, 6);
        let b = rnd(c, 7);
        let g = rnd(n * c, 8);
        let fwd = |x: &[f64], w: &[f64], b: &[f64]| {
            let (mut o, mut m, mut r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut o, &mut m, &mut r, x, w, b, c);
            (o, m, r)
        };
        let (_, m, r) = fwd(&inp, &w, &b);
        let mut dinp = vec![0.0; n * c];
        let (mut dw, mut db) = (vec![0.0; c], vec![0.0; c]);
        let mut scratch = vec![0.0; LN_BLOCKS * 2 * c];
        layernorm_backward(
            &mut dinp,
            &mut dw,
            &mut db,
            &mut scratch,
            &g,
            &inp,
            &w,
            &m,
            &r,
            c,
        );
        close(
            &fd(&inp, &|x| dot(&fwd(x, &w, &b).0, &g)),
            &dinp,
            1e-6,
            "dinp",
        );
        close(&fd(&w, &|x| dot(&fwd(&inp, x, &b).0, &g)), &dw, 1e-6, "dw");
        close(&fd(&b, &|x| dot(&fwd(&inp, &w, x).0, &g)), &db, 1e-6, "db");
    }

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

    #[test]
    fn f32_fast_paths_match_f64() {
        let (b, t, c, nh) = (2, 9, 16, 2);
        let qkv = rnd(b * t * 3 * c, 21);
        let g = rnd(b * t * c, 22);
        let f = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (mut o64, mut a64) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
        attention_forward(&mut o64, &mut a64, &qkv, b, t, c, nh);
        let (mut o32, mut a32) = (vec![0f32; b * t * c], vec![0f32; b * nh * t * t]);
        attention_forward(&mut o32, &mut a32, &f(&qkv), b, t, c, nh);
        let up = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        close(&up(&o32), &o64, 1e-5, "attention f32");
        let x: Vec<f64> = rnd(1000, 23).iter().map(|v| v * 6.0).collect();
        let mut y64 = vec![0.0; 1000];
        gelu_forward(&mut y64, &x);
        let mut y32 = vec![0f32; 1000];
        gelu_forward(&mut y32, &f(&x));
        close(&up(&y32), &y64, 1e-6, "gelu f32");
        let mut d64 = g[..1000.min(g.len())].to_vec();
        d64.resize(1000, 0.5);
        let mut d32 = f(&d64);
        gelu_backward_inplace(&mut d64, &x);
        gelu_backward_inplace(&mut d32, &f(&x));
        close(&up(&d32), &d64, 1e-6, "gelu backward f32");
        let mut y = f(&x);
        gelu_inplace(&mut y);
        close(&up(&y), &y64, 1e-6, "gelu in place f32");
    }

    /// The bias fused into the GELU pass and into the residual pass gives the bits of the
    /// matmul with its bias followed by the plain GELU / residual add (f32 and f64).
    #[test]
    fn fused_bias_passes_give_the_unfused_bits() {
        fn check<F: Float>(cast: impl Fn(f64) -> F) {
            // (a row width that is a multiple of 16, as 4C is in practice: the AVX-512 GELU
            // then splits the rows into the same vectors either way)
            let (n, ic, oc) = (37, 24, 48);
            let v = |len: usize, seed: u64| rnd(len, seed).into_iter().map(&cast).collect();
            let (x, w, b, res): (Vec<F>, Vec<F>, Vec<F>, Vec<F>) =
                (v(n * ic, 71), v(ic * oc, 72), v(oc, 73), v(n * oc, 74));
            let mut with_bias = vec![F::ZERO; n * oc];
            matmul_forward(&mut with_bias, &x, &w, Some(&b), n, ic, oc);
            let mut no_bias = vec![F::ZERO; n * oc];
            matmul_forward(&mut no_bias, &x, &w, None, n, ic, oc);
            // GELU
            let mut want = vec![F::ZERO; n * oc];
            gelu_forward(&mut want, &with_bias);
            let (mut got, mut pre) = (vec![F::ZERO; n * oc], no_bias.clone());
            bias_gelu_forward(&mut got, &mut pre, &b, oc);
            assert!(pre == with_bias && got == want, "bias + GELU");
            // the training version: same output; its backward (from the stored derivative
            // where it keeps one) gives gelu_backward_inplace's bits
            let (mut got, mut kept) = (vec![F::ZERO; n * oc], no_bias.clone());
            bias_gelu_forward_train(&mut got, &mut kept, &b, oc);
            assert!(got == want, "bias + GELU, training version");
            let dout: Vec<F> = v(n * oc, 75);
            let mut want_d = dout.clone();
            gelu_backward_inplace(&mut want_d, &with_bias);
            let mut got_d = dout.clone();
            if gelu_keeps_derivative::<F>(oc) {
                gelu_backward_stored(&mut got_d, &kept);
            } else {
                assert!(kept == with_bias);
                gelu_backward_inplace(&mut got_d, &kept);
            }
            assert!(got_d == want_d, "GELU backward from the stored derivative");
            // residual
            let mut want = with_bias.clone();
            residual_add(&mut want, &res);
            let mut got = no_bias.clone();
            residual_bias_add(&mut got, &res, &b, oc);
            assert!(got == want, "bias + residual");
        }
        check::<f32>(|x| x as f32);
        check::<f64>(|x| x);
    }

    /// The AVX-512 GELU (reciprocal by rcp14 + Newton) against the f64 formula on a dense
    /// grid with large |x| and a tail shorter than a vector, and against the plain
    /// division-based f32 versions beside it. Errors are measured relative to |x| (GELU is
    /// x times a factor in [0, 1]; near -4 and below that factor underflows in f32 for
    /// every implementation, PyTorch's included) for the forward, absolute for the
    /// derivative (which lies in [-0.17, 1.13]).
    #[test]
    fn avx512_gelu_matches_f64_on_a_dense_grid() {
        if !gelu512::available() {
            eprintln!("SKIPPED: no AVX-512 on this CPU");
            return;
        }
        let mut x: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        x.extend([
            -1e4f32, -300.0, -88.0, -40.0, 40.0, 88.0, 300.0, 1e4, 1e-30, -1e-30,
        ]);
        x.push(0.5); // length not a multiple of 16: the tail path too
        assert!(!x.len().is_multiple_of(16));
        let n = x.len();
        let (mut fwd, mut plain) = (vec![0f32; n], vec![0f32; n]);
        gelu512::forward(&mut fwd, &x);
        simd::gelu(&mut plain, &x);
        let (mut bwd, mut plain_b) = (vec![1f32; n], vec![1f32; n]);
        gelu512::backward(&mut bwd, &x);
        simd::gelu_backward(&mut plain_b, &x);
        let (mut worst_f, mut worst_b, mut vs_plain) = (0f64, 0f64, 0f64);
        for i in 0..n {
            let xd = x[i] as f64;
            let th = (GELU_S * (xd + 0.044715 * xd * xd * xd)).tanh();
            let want = 0.5 * xd * (1.0 + th);
            let dwant = 0.5 * (1.0 + th)
                + 0.5 * xd * (1.0 - th * th) * GELU_S * (1.0 + 3.0 * 0.044715 * xd * xd);
            let scale = xd.abs().max(1e-30);
            worst_f = worst_f.max((fwd[i] as f64 - want).abs() / scale);
            worst_b = worst_b.max((bwd[i] as f64 - dwant).abs());
            vs_plain = vs_plain.max((fwd[i] as f64 - plain[i] as f64).abs() / scale);
            vs_plain = vs_plain.max((bwd[i] as f64 - plain_b[i] as f64).abs());
        }
        eprintln!(
            "gelu avx512: fwd {worst_f:.2e} (of |x|), bwd {worst_b:.2e}, vs plain {vs_plain:.2e}"
        );
        assert!(worst_f < 2.5e-7, "forward error {worst_f:e}");
        assert!(worst_b < 5e-7, "backward error {worst_b:e}");
        assert!(
            vs_plain < 5e-7,
            "vs the division-based versions {vs_plain:e}"
        );
    }

    /// The transposed-weight backward matches the plain loops, and transpose is one.
    #[test]
    fn matmul_backward_with_transposed_weight_matches_reference() {
        let (n, ic, oc) = (19, 21, 35);
        let (x, w, d) = (rnd(n * ic, 81), rnd(ic * oc, 82), rnd(n * oc, 83));
        let mut wt = vec![0.0; ic * oc];
        transpose(&mut wt, &w, ic, oc);
        for i in 0..ic {
            for o in 0..oc {
                assert_eq!(wt[o * ic + i], w[i * oc + o]);
            }
        }
        let (mut dx, mut dw, mut db) = (vec![0.0; n * ic], vec![0.5; ic * oc], vec![0.25; oc]);
        matmul_backward_t(
            &mut dx,
            &mut dw,
            Some(&mut db),
            &d,
            &x,
            &wt,
            (n, ic, oc),
            false,
        );
        let (mut rx, mut rw, mut rb) = (vec![0.0; n * ic], vec![0.5; ic * oc], vec![0.25; oc]);
        reference::matmul_backward(&mut rx, &mut rw, Some(&mut rb), &d, &x, &w, n, ic, oc);
        close(&dx, &rx, 1e-12, "dinp");
        close(&dw, &rw, 1e-12, "dw");
        close(&db, &rb, 1e-12, "db");
        // overwriting dw: garbage in, the product out (what += gives on zeros)
        let mut dw_over = vec![7.0; ic * oc];
        matmul_backward_t(&mut dx, &mut dw_over, None, &d, &x, &wt, (n, ic, oc), true);
        let mut dw_zero = vec![0.0; ic * oc];
        matmul_backward_t(&mut dx, &mut dw_zero, None, &d, &x, &wt, (n, ic, oc), false);
        close(&dw_over, &dw_zero, 1e-12, "overwritten dw");
    }

    #[test]
    fn gelu_and_softmax_ce_match_fd() {
        let x: Vec<f64> = rnd(50, 11).iter().map(|v| v * 4.0).collect();
        let g = rnd(50, 12);
        let fwd = |x: &[f64]| {
            let mut o = vec![0.0; x.len()];
            gelu_forward(&mut o, x);
            dot(&o, &g)
        };
        let mut d = g.clone();
        gelu_backward_inplace(&mut d, &x);
        close(&fd(&x, &fwd), &d, 1e-7, "gelu");

        let (n, v) = (4, 9);
        let logits = rnd(n * v, 13);
        let targets = [0u32, 8, 3, 3];
        let loss = |l: &[f64]| {
            let mut p = l.to_vec();
            let mut losses = vec![0.0; n];
            softmax_ce_forward(&mut p, &mut losses, &targets, v)
        };
        let mut p = logits.clone();
        let mut losses = vec![0.0; n];
        softmax_ce_forward(&mut p, &mut losses, &targets, v);
        softmax_ce_backward_inplace(&mut p, &targets, v, 1.0 / n as f64);
        close(&fd(&logits, &loss), &p, 1e-7, "softmax-ce");
    }

    /// The vocabulary-blocked LM-head products equal the single-GEMM references.
    #[test]
    fn lm_head_blocks_match_single_gemm() {
        let (n, c) = (5, 8);
        let v = 4 * VOCAB_BLOCK + 37; // blocked, with a short last block
        let f = |x: Vec<f64>| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let lnf = f(rnd(n * c, 31));
        let wte = f(rnd(v * c, 32));
        let dl = f(rnd(n * v, 33));
        let mut got = vec![0f32; n * v];
        lm_head_forward(&mut got, &lnf, &wte, n, v, c);
        let mut want = vec![0f32; n * v];
        gemm_strided(n, v, c, &mut want, v, false, &lnf, c, 1, &wte, 1, c);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "logits[{i}]: {a} vs {b}"
            );
        }
        let init = f(rnd(v * c, 34));
        let mut got = init.clone();
        lm_head_backward_dwte(&mut got, &dl, &lnf, (n, v, c), false);
        let mut want = init;
        gemm_strided(v, c, n, &mut want, c, true, &dl, 1, v, &lnf, c, 1);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "dwte[{i}]: {a} vs {b}"
            );
        }
        // overwrite: garbage in, the product alone out
        let mut got = vec![9f32; v * c];
        lm_head_backward_dwte(&mut got, &dl, &lnf, (n, v, c), true);
        let mut want = vec![0f32; v * c];
        gemm_strided(v, c, n, &mut want, c, false, &dl, 1, v, &lnf, c, 1);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                "overwritten dwte[{i}]: {a} vs {b}"
            );
        }
        // and the reference itself against plain loops on a few entries
        let mut l = vec![0f32; n * v];
        lm_head_forward(&mut l, &lnf, &wte, n, v, c);
        for &(r, j) in &[(0, 0), (4, v - 1), (2, 3 * VOCAB_BLOCK + 5)] {
            let dot: f64 = (0..c)
                .map(|k| lnf[r * c + k] as f64 * wte[j * c + k] as f64)
                .sum();
            assert!((l[r * v + j] as f64 - dot).abs() < 1e-5, "logit ({r},{j})");
        }
    }

    /// The fused training softmax + cross-entropy + gradient equals the forward kernel
    /// followed by the backward kernel (f32 fast path and generic path).
    #[test]
    fn fused_softmax_ce_gradient_matches_two_passes() {
        let (n, v) = (6, 203);
        let logits: Vec<f64> = rnd(n * v, 41).iter().map(|x| x * 8.0).collect();
        let targets = [0u32, 202, 7, 7, 100, 1];
        let scale = 1.0 / n as f64;
        let two_pass = |lg: &[f64]| {
            let (mut p, mut ls) = (lg.to_vec(), vec![0.0; n]);
            let l = softmax_ce_forward(&mut p, &mut ls, &targets, v);
            softmax_ce_backward_inplace(&mut p, &targets, v, scale);
            (l, p, ls)
        };
        let (l0, d0, ls0) = two_pass(&logits);
        let (mut d, mut ls) = (logits.clone(), vec![0.0; n]);
        let l = softmax_ce_forward_backward(&mut d, &mut ls, &targets, v, scale);
        assert_eq!(
            (l, &d, &ls),
            (l0, &d0, &ls0),
            "generic path is the two passes"
        );
        let mut d32: Vec<f32> = logits.iter().map(|&x| x as f32).collect();
        let mut ls32 = vec![0f32; n];
        let l32 = softmax_ce_forward_backward(&mut d32, &mut ls32, &targets, v, scale as f32);
        assert!((l32 - l0).abs() < 1e-5);
        for (a, b) in d32.iter().zip(&d0) {
            assert!((*a as f64 - b).abs() < 1e-7, "{a} vs {b}");
        }
        for (a, b) in ls32.iter().zip(&ls0) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    /// `gemm` gives the same bits whatever the thread count (its k-blocking does not
    /// depend on the parallelism), so a batch shard may run its GEMMs serially or in
    /// parallel without changing the result.
    #[test]
    fn gemm_bits_do_not_depend_on_thread_count() {
        for &(m, n, k) in &[
            (96, 200, 70),
            (300, 130, 520),
            (700, 64, 33),
            (64, 900, 300),
        ] {
            let a: Vec<f32> = rnd(m * k, 51).iter().map(|&x| x as f32).collect();
            let b: Vec<f32> = rnd(k * n, 52).iter().map(|&x| x as f32).collect();
            let run = |threads: usize, serial: bool| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut c = vec![0.5f32; m * n];
                    let go = |c: &mut Vec<f32>| {
                        gemm_strided(m, n, k, c, n, true, &a, k, 1, &b, n, 1);
                        gemm_strided(m, n, k, c, n, true, &a, k, 1, &b, 1, k.min(n));
                    };
                    if serial {
                        with_serial_gemm(|| go(&mut c));
                    } else {
                        go(&mut c);
                    }
                    c
                })
            };
            let want = run(1, false);
            for (threads, serial) in [(2, false), (4, false), (2, true)] {
                assert!(
                    run(threads, serial) == want,
                    "{m}x{n}x{k}: {threads} threads (serial {serial}) changed the bits"
                );
            }
        }
    }

    /// Inside a serial shard the kernels' loops run inline (no splitting), with the same
    /// chunking, so the same bits as the parallel loops.
    #[test]
    fn serial_shard_loops_give_the_parallel_bits() {
        assert_eq!(min_len(), 1);
        assert_eq!(with_serial_gemm(min_len), usize::MAX);
        assert_eq!(min_len(), 1, "the flag is restored");
        let (n, c) = (300, 96);
        let x: Vec<f32> = rnd(n * c, 61).iter().map(|&v| v as f32).collect();
        let d: Vec<f32> = rnd(n * c, 62).iter().map(|&v| v as f32).collect();
        let w: Vec<f32> = rnd(c, 63).iter().map(|&v| 1.0 + v as f32).collect();
        let run = |serial: bool| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(4)
                .build()
                .unwrap();
            pool.install(|| {
                let go = || {
                    let (mut o, mut mu, mut rs) = (vec![0f32; n * c], vec![0f32; n], vec![0f32; n]);
                    layernorm_forward(&mut o, &mut mu, &mut rs, &x, &w, &w, c);
                    let (mut dx, mut dw, mut db) = (d.clone(), vec![0f32; c], vec![0f32; c]);
                    let mut scratch = vec![0f32; LN_BLOCKS * 2 * c];
                    layernorm_backward(
                        &mut dx,
                        &mut dw,
                        &mut db,
                        &mut scratch,
                        &d,
                        &x,
                        &w,
                        &mu,
                        &rs,
                        c,
                    );
                    let mut g = vec![0f32; n * c];
                    gelu_forward(&mut g, &o);
                    gelu_backward_inplace(&mut dx, &o);
                    bias_backward(&mut db, &g, n, c);
                    (o, dx, dw, db, g)
                };
                if serial {
                    with_serial_gemm(go)
                } else {
                    go()
                }
            })
        };
        assert!(run(true) == run(false));
    }

    #[test]
    fn encoder_backward_matches_fd() {
        let (t, c, vocab) = (3, 4, 5);
        let tokens = [1u32, 4, 1, 0, 2, 2];
        let wte = rnd(vocab * c, 14);
        let wpe = rnd(t * c, 15);
        let g = rnd(tokens.len() * c, 16);
        let f = |wte: &[f64], wpe: &[f64]| {
            let mut o = vec![0.0; tokens.len() * c];
            encoder_forward(&mut o, &tokens, wte, wpe, t, c);
            dot(&o, &g)
        };
        let (mut dwte, mut dwpe) = (vec![0.0; vocab * c], vec![0.0; t * c]);
        encoder_backward(&mut dwte, &mut dwpe, &g, &tokens, t, c);
        close(&fd(&wte, &|x| f(x, &wpe)), &dwte, 1e-7, "dwte");
        close(&fd(&wpe, &|x| f(&wte, x)), &dwpe, 1e-7, "dwpe");
    }
}

#[cfg(test)]
mod attn_timing {
    use super::*;

    /// Timing of the attention paths at model A's shard shape (run with --release --ignored).
    #[test]
    #[ignore]
    fn time_attention_paths() {
        let shape = std::env::var("ATT_SHAPE").unwrap_or_default();
        let (b, t, c, nh) = if shape == "b" {
            (2, 256, 384, 6)
        } else {
            (6, 64, 128, 4)
        };
        let x: Vec<f32> = (0..b * t * 3 * c)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
            .collect();
        let g: Vec<f32> = (0..b * t * c)
            .map(|i| ((i * 131 % 1000) as f32 - 500.0) / 500.0)
            .collect();
        let mut o = vec![0f32; b * t * c];
        let mut a = vec![0f32; b * nh * t * t];
        let mut d = vec![0f32; b * t * 3 * c];
        let mut ds = vec![0f32; b * nh * t * t];
        with_serial_gemm(|| {
            for round in 0..3 {
                let t0 = std::time::Instant::now();
                for _ in 0..200 {
                    attention_forward_blocked(&mut o, &mut a, &x, b, t, c, nh, ATT_BLOCK);
                }
                let t1 = std::time::Instant::now();
                for _ in 0..200 {
                    attention_backward_blocked(&mut d, &mut ds, &g, &x, &a, b, t, c, nh, ATT_BLOCK);
                }
                let t2 = std::time::Instant::now();
                for _ in 0..200 {
                    simd512::attention_forward(&mut o, &mut a, &x, (b, t, c, nh));
                }
                let t3 = std::time::Instant::now();
                for _ in 0..200 {
                    simd512::attention_backward(&mut d, &mut ds, &g, &x, &a, (b, t, c, nh));
                }
                let t4 = std::time::Instant::now();
                let us = |a: std::time::Instant, b: std::time::Instant| {
                    (b - a).as_secs_f64() * 1e6 / 200.0
                };
                eprintln!(
                    "round {round}: gemm fwd {:.0} bwd {:.0} us; direct fwd {:.0} bwd {:.0} us",
                    us(t0, t1),
                    us(t1, t2),
                    us(t2, t3),
                    us(t3, t4)
                );
            }
        });
    }
}
