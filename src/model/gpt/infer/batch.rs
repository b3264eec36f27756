//! The batched decode step: one token for each of several independent sequences, reading
//! the weights once for all of them ([`LanguageModel::feed_batch`] for the GPT, which a
//! server's concurrent requests share).
//!
//! Per token the single-sequence step is memory-bound: it streams every weight once
//! (~500 MB at GPT-2 124M f32) to do 2 flops with each. Here each weight is brought into
//! cache once and used by every sequence: the f32 matmuls walk each of the step's
//! GEMV_ROW_BLOCKS row blocks in tiles of `SUB_ROWS` input rows, and the kernels
//! ([`quant::axpy_rows_batch`], [`quant::dot_rows_range_batch`] for the LM head's chunks
//! of vocabulary rows) are register-blocked over sequences, so one vector of weights
//! loaded feeds up to 8 sequences' accumulators; compact weights (f16/q8/w8a8) go per
//! sequence over each chunk of output rows.
//!
//! Every sequence's arithmetic is exactly that of [`Gpt::step_on`]: the same kernels on
//! the same row blocks in the same order (the 4-row axpy kernel is split only at
//! multiples of 4 rows), so each row of logits is bit-identical to feeding that sequence
//! alone, whatever else is in the batch (tested). Attention, LayerNorm and the residual
//! adds are per sequence (one team chunk per sequence and head).
//!
//! # Performance notes
//! - **A GEMM instead of tile streaming: tried, not kept.** Packing the sequences' inputs
//!   into one (n, IC) matrix and running each product, the LM head included, as a `gemm`
//!   crate GEMM split by output columns (either orientation: sequences on the
//!   microkernel's rows or on its columns) gave up bit-identity with the single step and
//!   did not pay: one thread's CPU time per step of GPT-2 124M-shaped f32 weights (2-core
//!   AMD EPYC VM; CPU time because the machine was loaded), streaming vs GEMM: 1 sequence
//!   40.8 vs 52.5 ms, 4: 60.8 vs 92.5, 8: 90.8 vs 110.8, 16: 140.8 vs 127.5. At 16
//!   sequences streaming already costs 8.8 ms a token against 40.8 alone (4.6x); the
//!   crate's packing of W for every call eats what its microkernel saves at these small n.
//! - **Register blocking over sequences** (kept): the tile-streaming kernels above applied
//!   each cached tile to one sequence at a time, one weight load per multiply-add per
//!   sequence, so at 16 sequences the step was bound by L2 bandwidth. Holding 8
//!   sequences' accumulators in registers per weight vector (16 x 32 columns for the
//!   matmuls, 4 rows x 4 sequences for the LM head), plus a prefetch of the next tile
//!   (the column-block walk is invisible to the hardware prefetcher), and sampling the
//!   sequences in parallel: see docs/parts/serve.md for the step times.

use super::*;

/// Input rows per cached weight tile of the f32 matmuls (a multiple of 4: the axpy
/// kernel's row group, so the split does not change the summation order).
const SUB_ROWS: usize = 16;

/// Every sequence's y = x @ W + b (GELU if `gelu`) as one team phase; see the module doc.
#[allow(clippy::too_many_arguments)]
fn matvec_batch_phase(
    team: &Team,
    isa: Isa,
    q: Option<&QMat>,
    w: &[f32],
    b: &[f32],
    xs: &[&[f32]],
    ys: &mut [&mut [f32]],
    parts: &mut [&mut [f32]],
    xqs: &mut [&mut ActQ8],
    gelu: Option<Activation>,
) {
    let n = xs.len();
    let (ic, oc) = (xs[0].len(), ys[0].len());
    let yp: Vec<SyncPtr<f32>> = ys.iter_mut().map(|y| SyncPtr(y.as_mut_ptr())).collect();
    match q {
        Some(q) => {
            if q.act8() {
                for (xq, x) in xqs.iter_mut().zip(xs) {
                    xq.quantize(x);
                }
            }
            let xqr: Vec<&ActQ8> = xqs.iter().map(|x| &**x).collect();
            let per = chunk_rows(oc, ic);
            team.run(oc.div_ceil(per), &|i| {
                let r0 = i * per;
                let len = per.min(oc - r0);
                for s in 0..n {
                    // SAFETY: chunk i owns rows r0..r0 + len of every y.
                    let yc = unsafe { chunk_mut(yp[s], r0, len) };
                    q.rows_range_q(yc, r0, xs[s], xqr[s], isa);
                    for (yj, bj) in yc.iter_mut().zip(&b[r0..]) {
                        *yj += bj;
                    }
                    if let Some(act) = gelu {
                        activate(act, yc);
                    }
                }
            });
        }
        None => {
            let per = ic.div_ceil(GEMV_ROW_BLOCKS);
            let pp: Vec<SyncPtr<f32>> = parts.iter_mut().map(|p| SyncPtr(p.as_mut_ptr())).collect();
            team.run(GEMV_ROW_BLOCKS, &|blk| {
                let (r0, r1) = ((blk * per).min(ic), ((blk + 1) * per).min(ic));
                for &p in &pp {
                    // SAFETY: block blk owns part[blk * oc..(blk + 1) * oc] of every sequence.
                    unsafe { chunk_mut(p, blk * oc, oc) }.fill(0.0);
                }
                // SAFETY: as above.
                let mut accs: Vec<&mut [f32]> = pp
                    .iter()
                    .map(|&p| unsafe { chunk_mut(p, blk * oc, oc) })
                    .collect();
                let mut xt: Vec<&[f32]> = Vec::with_capacity(n);
                let mut a = r0;
                while a < r1 {
                    let e = (a + SUB_ROWS).min(r1);
                    xt.clear();
                    xt.extend(xs.iter().map(|x| &x[a..e]));
                    quant::axpy_rows_batch(&mut accs, &xt, &w[a * oc..e * oc], isa);
                    a = e;
                }
            });
            for (y, part) in ys.iter_mut().zip(parts.iter()) {
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
}

/// One sequence's attention operands for a layer: its (head) key and value caches, its
/// output and scores scratch, its qkv row, and the context length after this token.
type AttnPtrs<'a> = (
    SyncPtr<Vec<f32>>,
    SyncPtr<Vec<f32>>,
    SyncPtr<f32>,
    SyncPtr<f32>,
    &'a [f32],
    usize,
);

/// Splits each state into (input, output, partials, int8 input) borrows for one matvec.
macro_rules! split_states {
    ($sts:expr, $x:ident -> $y:ident) => {{
        let mut xs = Vec::with_capacity($sts.len());
        let mut ys = Vec::with_capacity($sts.len());
        let mut parts = Vec::with_capacity($sts.len());
        let mut xqs = Vec::with_capacity($sts.len());
        for st in $sts.iter_mut() {
            let GptState {
                $x, $y, part, xq, ..
            } = &mut **st;
            xs.push(&$x[..]);
            ys.push(&mut $y[..]);
            parts.push(&mut part[..]);
            xqs.push(xq);
        }
        (xs, ys, parts, xqs)
    }};
}

impl Gpt<f32> {
    /// The batched incremental step: append `tokens[s]` to `sts[s]`'s cache and write its
    /// logits into `outs[s]`, for every s.
    pub(super) fn step_batch(
        &self,
        sts: &mut [&mut GptState],
        tokens: &[u32],
        outs: &mut [&mut [f32]],
    ) {
        let parallel = self.num_params() >= PARALLEL_STEP_PARAMS.load(Ordering::Relaxed);
        team::with_team(parallel, |team| self.step_batch_on(team, sts, tokens, outs));
    }

    fn step_batch_on(
        &self,
        team: &Team,
        sts: &mut [&mut GptState],
        tokens: &[u32],
        outs: &mut [&mut [f32]],
    ) {
        let cfg = &self.config;
        let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let hs = c / nh;
        let isa = Isa::detect();
        let p = parts(&self.params, cfg);
        let n = sts.len();
        for (st, &token) in sts.iter_mut().zip(tokens) {
            let we = &p.wte[token as usize * c..][..c];
            let pe = &p.wpe[st.pos * c..][..c];
            for j in 0..c {
                st.x[j] = we[j] + pe[j];
            }
        }
        let scale = 1.0 / (hs as f32).sqrt();
        let max_ctx = cfg.block_size;
        let qw = self.infer_weights.as_deref();
        for l in 0..cfg.n_layer {
            let w = layer(p.layers, cfg, l);
            let ql = qw.map(|q| &q.layers[l]);
            for st in sts.iter_mut() {
                let GptState { ln, x, .. } = &mut **st;
                layernorm_row(ln, x, w.ln1_w, w.ln1_b);
            }
            {
                let (xs, mut ys, mut ps, mut xqs) = split_states!(sts, ln -> qkv);
                let q = ql.map(|q| &q.qkv);
                matvec_batch_phase(
                    team, isa, q, w.qkv_w, w.qkv_b, &xs, &mut ys, &mut ps, &mut xqs, None,
                );
            }
            // Attention: one chunk per (sequence, head).
            {
                let ptrs: Vec<AttnPtrs<'_>> = sts
                    .iter_mut()
                    .map(|st| {
                        let n_ctx = st.pos + 1;
                        let GptState {
                            k,
                            v,
                            atty,
                            scores,
                            qkv,
                            ..
                        } = &mut **st;
                        (
                            SyncPtr(k[l * nh..(l + 1) * nh].as_mut_ptr()),
                            SyncPtr(v[l * nh..(l + 1) * nh].as_mut_ptr()),
                            SyncPtr(atty.as_mut_ptr()),
                            SyncPtr(scores.as_mut_ptr()),
                            &qkv[..],
                            n_ctx,
                        )
                    })
                    .collect();
                team.run(n * nh, &|job| {
                    let (s, h) = (job / nh, job % nh);
                    let (kp, vp, yp, sp, qkv, n_ctx) = ptrs[s];
                    // SAFETY: chunk (s, h) owns head h's caches of sequence s, its slice
                    // of that sequence's output and its region of the scores scratch.
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
            {
                let (xs, mut ys, mut ps, mut xqs) = split_states!(sts, atty -> tmp);
                let q = ql.map(|q| &q.attn_proj);
                matvec_batch_phase(
                    team,
                    isa,
                    q,
                    w.attn_proj_w,
                    w.attn_proj_b,
                    &xs,
                    &mut ys,
                    &mut ps,
                    &mut xqs,
                    None,
                );
            }
            for st in sts.iter_mut() {
                let GptState { x, tmp, ln, .. } = &mut **st;
                for j in 0..c {
                    x[j] += tmp[j];
                }
                layernorm_row(ln, x, w.ln2_w, w.ln2_b);
            }
            {
                let (xs, mut ys, mut ps, mut xqs) = split_states!(sts, ln -> fch);
                let q = ql.map(|q| &q.fc);
                matvec_batch_phase(
                    team,
                    isa,
                    q,
                    w.fc_w,
                    w.fc_b,
                    &xs,
                    &mut ys,
                    &mut ps,
                    &mut xqs,
                    Some(cfg.activation),
                );
            }
            {
                let (xs, mut ys, mut ps, mut xqs) = split_states!(sts, fch -> tmp);
                let q = ql.map(|q| &q.proj);
                matvec_batch_phase(
                    team, isa, q, w.proj_w, w.proj_b, &xs, &mut ys, &mut ps, &mut xqs, None,
                );
            }
            for st in sts.iter_mut() {
                let GptState { x, tmp, .. } = &mut **st;
                for j in 0..c {
                    x[j] += tmp[j];
                }
            }
        }
        for st in sts.iter_mut() {
            let GptState { ln, x, xq, .. } = &mut **st;
            layernorm_row(ln, x, p.lnf_w, p.lnf_b);
            if qw.is_some_and(|q| q.wte.act8()) {
                xq.quantize(ln);
            }
        }
        // The tied LM head (V, C): each chunk of vocabulary rows for every sequence.
        let per = chunk_rows(v, c);
        let ops: Vec<SyncPtr<f32>> = outs.iter_mut().map(|o| SyncPtr(o.as_mut_ptr())).collect();
        let lns: Vec<(&[f32], &ActQ8)> = sts.iter().map(|st| (&st.ln[..], &st.xq)).collect();
        let wte = &p.wte[..v * c];
        team.run(v.div_ceil(per), &|i| {
            let r0 = i * per;
            // SAFETY: chunk i owns rows r0..r0 + len of every out.
            let mut ycs: Vec<&mut [f32]> = ops
                .iter()
                .map(|&o| unsafe { chunk_mut(o, r0, per.min(v - r0)) })
                .collect();
            match qw {
                Some(q) => {
                    for (yc, &(ln, xq)) in ycs.iter_mut().zip(&lns) {
                        q.wte.rows_range_q(yc, r0, ln, xq, isa);
                    }
                }
                None => {
                    let xs: Vec<&[f32]> = lns.iter().map(|&(ln, _)| ln).collect();
                    quant::dot_rows_range_batch(&mut ycs, r0, wte, &xs, isa);
                }
            }
        });
        for st in sts.iter_mut() {
            st.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::scaled_model;
    use super::*;

    /// Feeds sequences of different lengths together step by step and checks every row
    /// against the same sequence fed alone: bit-identical.
    fn check_batch_equals_single(m: &Gpt) {
        let v = m.config.vocab_size as u32;
        let seqs: Vec<Vec<u32>> = (0..5u32)
            .map(|s| (0..(3 + 2 * s)).map(|i| (i * 7 + s * 3 + 1) % v).collect())
            .collect();
        let alone: Vec<Vec<Vec<f32>>> = seqs
            .iter()
            .map(|seq| {
                let mut st = m.new_state();
                seq.iter()
                    .map(|&t| {
                        let mut row = vec![0.0; v as usize];
                        m.feed(&mut st, t, &mut row).unwrap();
                        row
                    })
                    .collect()
            })
            .collect();
        let mut states: Vec<GptState> = seqs.iter().map(|_| m.new_state()).collect();
        let longest = seqs.iter().map(Vec::len).max().unwrap();
        for pos in 0..longest {
            // Sequences join as the batch goes on (the later ones start later).
            let live: Vec<usize> = (0..seqs.len())
                .filter(|&s| pos + seqs[s].len() >= longest)
                .collect();
            let at = |s: usize| pos + seqs[s].len() - longest;
            let mut rows: Vec<Vec<f32>> = live.iter().map(|_| vec![0.0; v as usize]).collect();
            let tokens: Vec<u32> = live.iter().map(|&s| seqs[s][at(s)]).collect();
            let mut sts: Vec<&mut GptState> = states
                .iter_mut()
                .enumerate()
                .filter(|(s, _)| live.contains(s))
                .map(|(_, st)| st)
                .collect();
            let mut outs: Vec<&mut [f32]> = rows.iter_mut().map(|r| &mut r[..]).collect();
            m.feed_batch(&mut sts, &tokens, &mut outs).unwrap();
            for (i, &s) in live.iter().enumerate() {
                assert_eq!(rows[i], alone[s][at(s)], "sequence {s} position {}", at(s));
            }
        }
    }

    #[test]
    fn batched_step_is_bit_identical_to_single_steps() {
        // C = 64 with a 4C hidden layer: several SUB_ROWS tiles per row block.
        let m = scaled_model(64, 37, 3, 2.0);
        check_batch_equals_single(&m);
        for format in [
            WeightFormat::F16,
            WeightFormat::Bf16,
            WeightFormat::Q8,
            WeightFormat::W8A8,
        ] {
            check_batch_equals_single(&scaled_model(64, 37, 3, 2.0).with_weight_format(format));
        }
        // Through the thread team too.
        let old = PARALLEL_STEP_PARAMS.swap(0, Ordering::Relaxed);
        check_batch_equals_single(&m);
        PARALLEL_STEP_PARAMS.store(old, Ordering::Relaxed);
    }
}
