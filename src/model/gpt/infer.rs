//! Inference: the [`LanguageModel`] implementation of [`Gpt`].
//!
//! Two paths that must agree (tested):
//! - incremental: [`GptState`] is a KV cache (head-major: per layer and head, (pos, head
//!   size) keys and values); [`LanguageModel::feed`] runs one token through every block as
//!   matrix-vector products, attending over the cached keys/values with one fused kernel
//!   per head (`attend`: scores, softmax, weighted sum). The whole step is ONE parallel
//!   region (`team.rs`): the caller and `threads - 1` helpers run ~60 dependent
//!   phases per token (each matvec in chunks of output rows, attention one chunk per head)
//!   synchronized through shared atomics instead of one rayon fork-join per phase. Chunks
//!   are fixed by the shape, so the logits are bit-identical for any thread count.
//!   Its scratch buffers live in the state, so a step allocates nothing beyond the cache's
//!   amortized growth.
//! - parallel: `score_next`, `distributions`, `prefill` and `score_next_batch` run the
//!   training forward pass (gemm matmuls) over whole sequences; batches of sequences of
//!   different lengths are right-padded, which causal attention makes harmless.
//!   `prefill` skips the LM head in the parallel pass and computes logits for the last
//!   position only (the head is ~20% of the FLOPs of a 64-token GPT-2 124M prefill).
//! - weights: f32 from the parameter buffer, or a compact f16 / bf16 / q8 / w8a8 copy
//!   ([`super::quant`], [`Gpt::with_weight_format`]) that the step reads; the parallel
//!   paths use the f32 buffer rounded to the same values, so both paths still agree
//!   (tested for every format). Two exceptions, tested with a tolerance: w8a8's step
//!   rounds its matmul inputs to int8, and bf16 and w8a8 models run their parallel paths
//!   on their own GEMM where the CPU has it ([`crate::ops::gemm_bf16`] on AVX512_BF16,
//!   rounding activations to bf16; `quant`'s w8a8 GEMM on AVX-512 VNNI, rounding them as
//!   the step does).
//!
//! # Performance notes
//! GPT-2 124M shape, batch 1, 2 threads, on a shared 2-core Sapphire Rapids (AVX-512) VM;
//! decode tokens/s are from `arlm bench generate`, whose current table is in
//! docs/parts/gen.md (they move by +-50% between identical runs on this machine, so
//! formats are compared within one run).
//! - **Memory-bound step**: the step streams every weight once per token (494 MB in f32),
//!   so what decides its speed is how fast the weights arrive. Every kernel reads one row
//!   at a time with no software prefetch (one sequential stream per chunk, which the
//!   hardware prefetcher follows; see `quant`'s module doc), chunks are ~512K weights, and
//!   the weights sit on transparent huge pages (`crate::huge_pages`). The f32 gemv keeps its
//!   partials in the state (no allocation per call).
//! - **Compact formats** ([`super::quant`]): f16 247 MB and q8 139 MB of matmul + LM-head
//!   weights per token instead of 494 MB. w8a8 also quantizes the step's inputs to int8 and
//!   runs VNNI dot products (a 12288x768 matvec 249 vs q8's 566 us); once the kernel is
//!   that fast the rest of the step (sync, attention, sampling) is a larger share, so w8a8
//!   and q8 decode at similar tokens/s.
//! - **One team per step** ([`crate::ops::team`]): ~60 rayon fork-joins per token cost
//!   ~10% of a q8 token in futex wake/sleep; one team with spin-then-yield helpers, plus
//!   the fused per-head attention (`attend`), took a q8 decode's profile to 68% in the q8
//!   kernel (greedy 67.9 -> 97.3 tok/s, interleaved, load ~3). Under heavier load the gain
//!   is within noise: a descheduled helper stalls a phase as it stalled a fork-join.
//! - **Per-token work outside the step**: the log-softmax is vectorized
//!   (`simd::logsumexp`, ~0.4 ms less than f64 libm), and top-p's full sort is a radix
//!   sort (1.35 -> 0.65 ms).

use super::quant::{self, ActQ8, QMat};
use super::trainer::{forward, Acts};
use super::{layer, parts, Activation, Gpt, WeightFormat};
use crate::model::{check_token, LanguageModel, ModelError};
use crate::ops::par::SyncPtr;
use crate::ops::team::{self, Team};
use crate::ops::{self, cpu::Isa, simd};
use rayon::prelude::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::sync::atomic::{AtomicUsize, Ordering};

mod batch;
mod target_logprobs;

/// The KV cache of one sequence: keys and values of every block for every fed position.
#[derive(Debug, Clone)]
pub struct GptState {
    pos: usize,
    /// Per (layer, head) (index `l * n_head + h`), (pos, head size) keys and values: head
    /// major, so the step's attention streams one contiguous block per head.
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Scratch: residual x (C), normed (C), qkv (3C), atty (C), tmp (C), fch (4C),
    /// scores (n_head * context).
    x: Vec<f32>,
    ln: Vec<f32>,
    qkv: Vec<f32>,
    atty: Vec<f32>,
    tmp: Vec<f32>,
    fch: Vec<f32>,
    scores: Vec<f32>,
    /// Row-block partial sums of the f32 gemv (GEMV_ROW_BLOCKS * 4C).
    part: Vec<f32>,
    /// The current matvec input rounded to int8 blocks (w8a8 weights only).
    xq: ActQ8,
}

impl GptState {
    /// Number of tokens fed so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True before anything is fed.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

/// Models with fewer parameters step on the calling thread alone: their whole step (~1M
/// multiply-adds) costs about what waking a helper does. Results are the same either way
/// (the chunks are the same), so tests may lower it to exercise the team on tiny models.
static PARALLEL_STEP_PARAMS: AtomicUsize = AtomicUsize::new(1 << 21);

/// Row blocks of the f32 [`matvec_phase`]: fixed (not the thread count), so results do not
/// depend on how many threads run; 4 keeps 2 cores balanced.
const GEMV_ROW_BLOCKS: usize = 4;

/// `len` elements from `p + start` as a mutable slice.
///
/// # Safety
/// The range must be in bounds of one live allocation that no one else accesses while the
/// slice lives (the team's chunks write disjoint ranges).
#[inline(always)]
unsafe fn chunk_mut<'a>(p: SyncPtr<f32>, start: usize, len: usize) -> &'a mut [f32] {
    unsafe { std::slice::from_raw_parts_mut(p.get().add(start), len) }
}

/// Rows per chunk of a (rows, cols) matvec phase: ~512K weights, at least 4 chunks (so 2
/// threads stay balanced), a multiple of 4 rows (the batched LM head's row blocks). Each
/// chunk is one sequential read of its rows, so fewer, longer chunks let the hardware
/// prefetcher run further ahead: ~128K-weight chunks (at least 16) decoded f16 at a median
/// 111 tok/s against 118 now (five alternating runs; q8 151 -> 155). Depends on the shape
/// only, and each row's result does not depend on its chunk anyway.
fn chunk_rows(rows: usize, cols: usize) -> usize {
    let chunks = ((rows * cols) >> 19).clamp(4, team::MAX_CHUNKS);
    rows.div_ceil(chunks).next_multiple_of(4).max(4)
}

/// x <- act(x) (the decode step's MLP activation).
fn activate(act: Activation, x: &mut [f32]) {
    match act {
        Activation::GeluTanh => ops::gelu_inplace(x),
        Activation::GeluExact => ops::gelu_erf_inplace(x),
    }
}

/// y(OC) = x(IC) @ W + b, then the activation `gelu` if given, as one team phase. W is the compact (out,
/// in) matrix `q` if given, else the f32 Conv1D (in, out) matrix `w` of the parameter
/// buffer. Compact: chunks of output rows, one dot product per row. f32: the step is
/// memory-bound (every weight is read once per token), so W is split into
/// GEMV_ROW_BLOCKS row blocks that each stream a contiguous part of `w` into a private
/// partial sum (`part`), and the partials are added in block order. (Splitting by
/// 256-column blocks instead gave 3 strided tasks for the 768-column matrices.)
#[allow(clippy::too_many_arguments)]
fn matvec_phase(
    team: &Team,
    isa: Isa,
    q: Option<&QMat>,
    w: &[f32],
    b: &[f32],
    x: &[f32],
    y: &mut [f32],
    part: &mut [f32],
    xq: &mut ActQ8,
    gelu: Option<Activation>,
) {
    let (ic, oc) = (x.len(), y.len());
    match q {
        Some(q) => {
            if q.act8() {
                xq.quantize(x);
            }
            let xq = &*xq;
            let per = chunk_rows(oc, ic);
            let yp = SyncPtr(y.as_mut_ptr());
            team.run(oc.div_ceil(per), &|i| {
                let r0 = i * per;
                // SAFETY: chunk i owns rows r0..r0 + len of y.
                let yc = unsafe { chunk_mut(yp, r0, per.min(oc - r0)) };
                q.rows_range_q(yc, r0, x, xq, isa);
                for (yj, bj) in yc.iter_mut().zip(&b[r0..]) {
                    *yj += bj;
                }
                if let Some(act) = gelu {
                    activate(act, yc);
                }
            });
        }
        None => {
            let per = ic.div_ceil(GEMV_ROW_BLOCKS);
            let pp = SyncPtr(part.as_mut_ptr());
            team.run(GEMV_ROW_BLOCKS, &|blk| {
                // SAFETY: block blk owns part[blk * oc..(blk + 1) * oc].
                let acc = unsafe { chunk_mut(pp, blk * oc, oc) };
                acc.fill(0.0);
                let (r0, r1) = ((blk * per).min(ic), ((blk + 1) * per).min(ic));
                quant::axpy_rows_isa(acc, &x[r0..r1], &w[r0 * oc..r1 * oc], isa);
            });
            y.copy_from_slice(&b[..oc]);
            for acc in part[..GEMV_ROW_BLOCKS * oc].chunks(oc) {
                for (yj, pj) in y.iter_mut().zip(acc) {
                    *yj += pj;
                }
            }
            if let Some(act) = gelu {
                activate(act, y);
            }
        }
    }
}

/// y(hs) = softmax(scale * K q) V for one head over `scores.len()` cached positions, K and
/// V (positions, hs) row-major: scores, softmax, weighted sum in one call per head.
fn attend(
    y: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    scores: &mut [f32],
    isa: Isa,
) {
    let hs = q.len();
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the Isa came from feature detection (or a test that checked it); the
        // kernel reads scores.len() rows of hs from k and v (asserted).
        unsafe {
            match hs {
                16 => return attend_avx512::<1>(y, q, k, v, scale, scores),
                32 => return attend_avx512::<2>(y, q, k, v, scale, scores),
                64 => return attend_avx512::<4>(y, q, k, v, scale, scores),
                128 => return attend_avx512::<8>(y, q, k, v, scale, scores),
                _ => {}
            }
        }
    }
    let _ = isa;
    for (t, s) in scores.iter_mut().enumerate() {
        *s = simd::dot(q, &k[t * hs..][..hs]);
    }
    simd::softmax_scaled(scores, scale);
    y.fill(0.0);
    for (t, &s) in scores.iter().enumerate() {
        simd::axpy(y, s, &v[t * hs..][..hs]);
    }
}

/// [`attend`] for hs = 16 * NV: q and the output accumulators stay in NV registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_avx512<const NV: usize>(
    y: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    scale: f32,
    scores: &mut [f32],
) {
    let hs = 16 * NV;
    let n = scores.len();
    assert!(q.len() == hs && y.len() == hs && k.len() >= n * hs && v.len() >= n * hs);
    let (kp, vp) = (k.as_ptr(), v.as_ptr());
    let mut qv = [_mm512_setzero_ps(); NV];
    for (j, qj) in qv.iter_mut().enumerate() {
        *qj = unsafe { _mm512_loadu_ps(q.as_ptr().add(16 * j)) };
    }
    for (t, s) in scores.iter_mut().enumerate() {
        let row = unsafe { kp.add(t * hs) };
        let mut a = _mm512_mul_ps(qv[0], unsafe { _mm512_loadu_ps(row) });
        for (j, &qj) in qv.iter().enumerate().skip(1) {
            a = _mm512_fmadd_ps(qj, unsafe { _mm512_loadu_ps(row.add(16 * j)) }, a);
        }
        *s = _mm512_reduce_add_ps(a);
    }
    simd::softmax_scaled(scores, scale);
    let mut acc = [_mm512_setzero_ps(); NV];
    for (t, &s) in scores.iter().enumerate() {
        let p = _mm512_set1_ps(s);
        let row = unsafe { vp.add(t * hs) };
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(p, unsafe { _mm512_loadu_ps(row.add(16 * j)) }, *a);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        unsafe { _mm512_storeu_ps(y.as_mut_ptr().add(16 * j), *a) };
    }
}

/// One-row LayerNorm (no saved statistics).
fn layernorm_row(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32]) {
    let c = x.len();
    let m = x.iter().sum::<f32>() / c as f32;
    let var = x.iter().map(|&v| (v - m) * (v - m)).sum::<f32>() / c as f32;
    let s = 1.0 / (var + ops::LN_EPS as f32).sqrt();
    for j in 0..c {
        out[j] = (x[j] - m) * s * w[j] + b[j];
    }
}

impl Gpt<f32> {
    /// The parallel forward pass over `b` right-padded sequences of length `t`;
    /// returns the activations (logits in `acts.logits`, (B,T,V)).
    fn forward_parallel(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        state: Option<&mut GptState>,
    ) -> Acts<f32> {
        self.forward_parallel_opt(tokens, b, t, state, true)
    }

    /// [`Self::forward_parallel`]; without `logits` the LM head is skipped (`acts.logits`
    /// empty, the final LayerNorm output in `acts.lnf`).
    fn forward_parallel_opt(
        &self,
        tokens: &[u32],
        b: usize,
        t: usize,
        state: Option<&mut GptState>,
        logits: bool,
    ) -> Acts<f32> {
        let cfg = &self.config;
        // A pass that fills a KV cache is generation's prefill.
        let compact = self.gemm_weights(state.is_some());
        let mut acts = Acts::new(cfg, b, t, 1);
        if !logits {
            acts.logits = Vec::new();
        }
        match state {
            Some(st) => {
                let (c, nh) = (cfg.n_embd, cfg.n_head);
                let hs = c / nh;
                let mut hook = |l: usize, qkv: &[f32]| {
                    for row in qkv.chunks(3 * c) {
                        for h in 0..nh {
                            st.k[l * nh + h].extend_from_slice(&row[c + h * hs..][..hs]);
                            st.v[l * nh + h].extend_from_slice(&row[2 * c + h * hs..][..hs]);
                        }
                    }
                };
                forward(
                    cfg,
                    &self.params,
                    &mut acts,
                    tokens,
                    Some(&mut hook),
                    None,
                    compact,
                );
            }
            None => forward(cfg, &self.params, &mut acts, tokens, None, None, compact),
        }
        acts
    }

    /// The compact matrices the parallel paths multiply with, through their format's GEMM
    /// ([`QMat::gemm`]; each matrix falls back to the rounded f32 copy where the CPU lacks
    /// the instructions): bf16 and w8a8 always, and f16 in generation's `prefill`, where
    /// the bf16 GEMM (f16 weights rounded to bf16) is about twice the f32 GEMM's speed and
    /// the rounding costs no more than bf16 weights do (docs/parts/gen.md). Scoring a model
    /// stored in f16 keeps the f16 values exactly (the f32 GEMM on the rounded copy): its
    /// numbers are the f16 model's.
    fn gemm_weights(&self, prefill: bool) -> Option<&quant::InferWeights> {
        self.infer_weights.as_deref().filter(|q| match q.format {
            WeightFormat::Bf16 | WeightFormat::W8A8 => true,
            WeightFormat::F16 => prefill,
            WeightFormat::F32 | WeightFormat::Q8 => false,
        })
    }

    fn check_seq(&self, input: &[u32]) -> Result<(), ModelError> {
        if input.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if input.len() > self.config.block_size {
            return Err(ModelError::ContextTooLong {
                len: input.len(),
                max_context: self.config.block_size,
            });
        }
        for &tok in input {
            check_token(tok, self.config.vocab_size)?;
        }
        Ok(())
    }

    /// The incremental step: append `token` to the cache, logits into `out`. One team
    /// of threads ([`team::with_team`]) for the whole step; every parallel phase splits
    /// its outputs into chunks whose arithmetic does not depend on the thread that runs
    /// them, so the logits are bit-identical for any thread count (tested).
    fn step(&self, st: &mut GptState, token: u32, out: &mut [f32]) {
        let parallel = self.num_params() >= PARALLEL_STEP_PARAMS.load(Ordering::Relaxed);
        team::with_team(parallel, |team| self.step_on(team, st, token, out));
    }

    fn step_on(&self, team: &Team, st: &mut GptState, token: u32, out: &mut [f32]) {
        let cfg = &self.config;
        let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let hs = c / nh;
        let isa = Isa::detect();
        let p = parts(&self.params, cfg);
        let pos = st.pos;
        let we = &p.wte[token as usize * c..][..c];
        let pe = &p.wpe[pos * c..][..c];
        for j in 0..c {
            st.x[j] = we[j] + pe[j];
        }
        let scale = 1.0 / (hs as f32).sqrt();
        let n_ctx = pos + 1;
        let max_ctx = cfg.block_size;
        let qw = self.infer_weights.as_deref();
        for l in 0..cfg.n_layer {
            let w = layer(p.layers, cfg, l);
            let ql = qw.map(|q| &q.layers[l]);
            layernorm_row(&mut st.ln, &st.x, w.ln1_w, w.ln1_b);
            let qkv_q = ql.map(|q| &q.qkv);
            matvec_phase(
                team,
                isa,
                qkv_q,
                w.qkv_w,
                w.qkv_b,
                &st.ln,
                &mut st.qkv,
                &mut st.part,
                &mut st.xq,
                None,
            );
            // Attention, one chunk per head: append this position's key and value to the
            // head's cache, then attend over it.
            {
                let kp = SyncPtr(st.k[l * nh..(l + 1) * nh].as_mut_ptr());
                let vp = SyncPtr(st.v[l * nh..(l + 1) * nh].as_mut_ptr());
                let (yp, sp) = (
                    SyncPtr(st.atty.as_mut_ptr()),
                    SyncPtr(st.scores.as_mut_ptr()),
                );
                let qkv = &st.qkv;
                team.run(nh, &|h| {
                    // SAFETY: head h owns its key/value caches, y[h*hs..][..hs] and its
                    // max_ctx-long region of the scores scratch.
                    let (kh, vh, yh, sc) = unsafe {
                        (
                            &mut *kp.get().add(h),
                            &mut *vp.get().add(h),
                            chunk_mut(yp, h * hs, hs),
                            chunk_mut(sp, h * max_ctx, n_ctx),
                        )
                    };
                    kh.extend_from_slice(&qkv[c + h * hs..][..hs]);
                    vh.extend_from_slice(&qkv[2 * c + h * hs..][..hs]);
                    attend(yh, &qkv[h * hs..][..hs], kh, vh, scale, sc, isa);
                });
            }
            let ap = ql.map(|q| &q.attn_proj);
            matvec_phase(
                team,
                isa,
                ap,
                w.attn_proj_w,
                w.attn_proj_b,
                &st.atty,
                &mut st.tmp,
                &mut st.part,
                &mut st.xq,
                None,
            );
            for j in 0..c {
                st.x[j] += st.tmp[j];
            }
            layernorm_row(&mut st.ln, &st.x, w.ln2_w, w.ln2_b);
            let fc = ql.map(|q| &q.fc);
            matvec_phase(
                team,
                isa,
                fc,
                w.fc_w,
                w.fc_b,
                &st.ln,
                &mut st.fch,
                &mut st.part,
                &mut st.xq,
                Some(cfg.activation),
            );
            let pr = ql.map(|q| &q.proj);
            matvec_phase(
                team,
                isa,
                pr,
                w.proj_w,
                w.proj_b,
                &st.fch,
                &mut st.tmp,
                &mut st.part,
                &mut st.xq,
                None,
            );
            for j in 0..c {
                st.x[j] += st.tmp[j];
            }
        }
        layernorm_row(&mut st.ln, &st.x, p.lnf_w, p.lnf_b);
        // The tied LM head (V, C), chunks of rows.
        let per = chunk_rows(v, c);
        let op = SyncPtr(out.as_mut_ptr());
        if qw.is_some_and(|q| q.wte.act8()) {
            st.xq.quantize(&st.ln);
        }
        let (ln, wte, xq) = (&st.ln, &p.wte[..v * c], &st.xq);
        team.run(v.div_ceil(per), &|i| {
            let r0 = i * per;
            // SAFETY: chunk i owns rows r0..r0 + len of out.
            let yc = unsafe { chunk_mut(op, r0, per.min(v - r0)) };
            match qw {
                Some(q) => q.wte.rows_range_q(yc, r0, ln, xq, isa),
                None => quant::dot_rows_range(yc, r0, wte, ln, isa),
            }
        });
        st.pos += 1;
    }
}

impl LanguageModel for Gpt<f32> {
    type State = GptState;

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_context(&self) -> Option<usize> {
        Some(self.config.block_size)
    }

    fn bos_token(&self) -> u32 {
        self.bos_token
    }

    fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "gpt2 {}L/{}H/{}, context {}, vocab {}, {:.2}M params",
            c.n_layer,
            c.n_head,
            c.n_embd,
            c.block_size,
            c.vocab_size,
            self.num_params() as f64 / 1e6
        ) + &match self.weight_format() {
            WeightFormat::F32 => String::new(),
            f => format!(", {f} weights"),
        }
    }

    fn new_state(&self) -> GptState {
        let c = &self.config;
        let e = c.n_embd;
        GptState {
            pos: 0,
            k: vec![Vec::new(); c.n_layer * c.n_head],
            v: vec![Vec::new(); c.n_layer * c.n_head],
            x: vec![0.0; e],
            ln: vec![0.0; e],
            qkv: vec![0.0; 3 * e],
            atty: vec![0.0; e],
            tmp: vec![0.0; e],
            fch: vec![0.0; 4 * e],
            scores: vec![0.0; c.n_head * c.block_size],
            part: vec![0.0; GEMV_ROW_BLOCKS * 4 * e],
            xq: ActQ8::default(),
        }
    }

    fn feed(
        &self,
        state: &mut GptState,
        token: u32,
        logprobs: &mut [f32],
    ) -> Result<(), ModelError> {
        check_token(token, self.config.vocab_size)?;
        if state.pos >= self.config.block_size {
            return Err(ModelError::ContextTooLong {
                len: state.pos + 1,
                max_context: self.config.block_size,
            });
        }
        self.step(state, token, logprobs);
        // The vectorized logsumexp (libm's f64 exp over 50257 logits was ~0.4 ms a token).
        simd::log_softmax(&mut logprobs[..self.config.vocab_size]);
        Ok(())
    }

    fn feed_batch(
        &self,
        states: &mut [&mut GptState],
        tokens: &[u32],
        logprobs: &mut [&mut [f32]],
    ) -> Result<(), ModelError> {
        if states.len() != tokens.len() || states.len() != logprobs.len() {
            return Err(ModelError::InvalidConfig(format!(
                "feed_batch: {} states, {} tokens, {} rows",
                states.len(),
                tokens.len(),
                logprobs.len()
            )));
        }
        for (st, &tok) in states.iter().zip(tokens) {
            check_token(tok, self.config.vocab_size)?;
            if st.pos >= self.config.block_size {
                return Err(ModelError::ContextTooLong {
                    len: st.pos + 1,
                    max_context: self.config.block_size,
                });
            }
        }
        match states.len() {
            0 => return Ok(()),
            1 => return self.feed(states[0], tokens[0], logprobs[0]),
            _ => self.step_batch(states, tokens, logprobs),
        }
        for row in logprobs.iter_mut() {
            simd::log_softmax(&mut row[..self.config.vocab_size]);
        }
        Ok(())
    }

    fn prefill(
        &self,
        state: &mut GptState,
        tokens: &[u32],
        logprobs: &mut [f32],
    ) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        if state.pos > 0 || tokens.len() == 1 {
            // Continuing a cache: the parallel pass has no past-key input, so step.
            for &tok in tokens {
                self.feed(state, tok, logprobs)?;
            }
            return Ok(());
        }
        self.check_seq(tokens)?;
        let v = self.config.vocab_size;
        let t = tokens.len();
        // Only the last position's distribution is needed: the LM head (V x C per row,
        // ~20% of the FLOPs at T = 64 for GPT-2 124M) runs on that row alone.
        let acts = self.forward_parallel_opt(tokens, 1, t, Some(state), false);
        state.pos = t;
        let c = self.config.n_embd;
        let last = &acts.lnf[(t - 1) * c..t * c];
        match self.infer_weights.as_deref() {
            Some(q) => q.wte.matvec(&mut logprobs[..v], last, None),
            None => {
                let wte = &parts(&self.params, &self.config).wte[..v * c];
                quant::dot_rows(&mut logprobs[..v], wte, last)
            }
        }
        simd::log_softmax(&mut logprobs[..v]);
        Ok(())
    }

    fn score_next(&self, input: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.check_seq(input)?;
        let t = input.len();
        let acts = self.forward_parallel_opt(input, 1, t, None, false);
        Ok(self.target_logprobs(&acts.lnf, &input[1..]))
    }

    fn distributions(&self, input: &[u32]) -> Result<Vec<f32>, ModelError> {
        self.check_seq(input)?;
        let v = self.config.vocab_size;
        let mut acts = self.forward_parallel(input, 1, input.len(), None);
        acts.logits.par_chunks_mut(v).for_each(simd::log_softmax);
        Ok(acts.logits)
    }

    fn score_next_batch(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        for s in inputs {
            self.check_seq(s)?;
        }
        let c = self.config.n_embd;
        // Sort by length so padding is small; batch up to a memory budget.
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(inputs[i].len()));
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); inputs.len()];
        // Floats of activations and the LM head's logit block per batch.
        let budget = 1usize << 25;
        let mut i = 0;
        while i < order.len() {
            let t = inputs[order[i]].len();
            let per_seq = t * (target_logprobs::VOCAB_CHUNK + 16 * c);
            let bmax = (budget / per_seq.max(1)).max(1);
            let group: Vec<usize> = order[i..(i + bmax).min(order.len())].to_vec();
            i += group.len();
            let b = group.len();
            // Padding positions score token 0; their rows are dropped.
            let mut tokens = vec![0u32; b * t];
            let mut targets = vec![0u32; b * t];
            for (bi, &si) in group.iter().enumerate() {
                let s = inputs[si];
                tokens[bi * t..bi * t + s.len()].copy_from_slice(s);
                targets[bi * t..bi * t + s.len() - 1].copy_from_slice(&s[1..]);
            }
            let acts = self.forward_parallel_opt(&tokens, b, t, None, false);
            let scored = self.target_logprobs(&acts.lnf, &targets);
            for (bi, &si) in group.iter().enumerate() {
                out[si] = scored[bi * t..bi * t + inputs[si].len() - 1].to_vec();
            }
        }
        Ok(out)
    }
}

impl Gpt<f32> {
    /// log p(targets[i] | position i) from the final hidden states `lnf` (rows of C):
    /// scoring's LM head, through the same weights as the rest of the scoring pass.
    fn target_logprobs(&self, lnf: &[f32], targets: &[u32]) -> Vec<f32> {
        let (v, c) = (self.config.vocab_size, self.config.n_embd);
        let wte = &parts(&self.params, &self.config).wte[..v * c];
        let compact = self.gemm_weights(false).map(|q| &q.wte);
        target_logprobs::target_logprobs(lnf, targets, wte, compact, (v, c))
    }
}

#[cfg(test)]
mod tests;
