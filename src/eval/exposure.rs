//! Exposure bias, measured: what teacher forcing hides.
//!
//! Training and evaluation feed the model true prefixes (teacher forcing); generation
//! feeds it its own output. From N prompts (a prefix plus its true continuation), this
//! module scores, per continuation position t:
//! - `teacher_forced_nll`: the model's NLL of the true token after the true prefix;
//! - the model's free-running continuation (ancestral sampling at temperature 1, and
//!   greedy): the model's own NLL of each token it chose;
//!
//! and when the true source is known (the embedded synthetic corpus, whose exact
//! conditionals [`crate::corpus::synth::SynthSource`] gives):
//! - `true_nll` of the true continuation (the floor) and of the model's continuation
//!   (how unlikely its text is under the truth), with the fraction of tokens the truth
//!   gives probability 0 (those are left out of the mean and counted instead);
//! - the exact KL(true || model) of the next-token distributions at the true prefix and at
//!   the model's own prefixes: the divergence teacher forcing measures versus the one
//!   generation lives with.
//!
//! All sums are f64 in nats. After a token the truth calls impossible, the synthetic
//! source restarts from its initial belief (its `feed` convention), so later KLs on that
//! sample compare with a fresh document.

use crate::model::{LanguageModel, ModelError};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Settings of [`measure`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ExposureOptions {
    /// Tokens of true prefix before the continuation.
    pub prefix_len: usize,
    /// Tokens of continuation scored.
    pub length: usize,
    /// Seed of the sampled continuations (and of the prompts drawn from a source).
    pub seed: u64,
}

/// Per-position means over prompts for one way of continuing.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunStats {
    /// The model's NLL of the tokens in this continuation.
    pub model_nll: Vec<f64>,
    /// The truth's NLL of the same tokens (None without a truth; NaN where every one was impossible).
    pub true_nll: Option<Vec<f64>>,
    /// KL(true || model) at this continuation's prefixes.
    pub kl: Option<Vec<f64>>,
    /// Fraction of prompts whose token here has probability 0 under the truth.
    pub impossible: Option<Vec<f64>>,
}

/// The measurement: per-position curves for the true continuation (teacher forcing), the
/// sampled continuation and the greedy one.
#[derive(Debug, Clone, Serialize)]
pub struct ExposureReport {
    pub options: ExposureOptions,
    pub prompts: usize,
    pub teacher_forced: RunStats,
    pub sampled: RunStats,
    pub greedy: RunStats,
}

/// Log-probs at or below this are probability 0 (the synthetic source writes -1e30).
const ZERO_LOGPROB: f32 = -1e29;

/// KL(p || q) in nats from two log-prob rows (terms with p = 0 contribute nothing).
pub fn kl_divergence(lp: &[f32], lq: &[f32]) -> f64 {
    lp.iter()
        .zip(lq)
        .filter(|(&a, _)| a > ZERO_LOGPROB)
        .map(|(&a, &b)| (a as f64).exp() * (a as f64 - b as f64))
        .sum()
}

/// Draws from a log-prob row (f64 cumulative sum; the last token takes any rounding slack).
fn sample_row(row: &[f32], rng: &mut impl Rng) -> u32 {
    let u: f64 = rng.random::<f64>();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, &lp) in row.iter().enumerate() {
        if lp <= ZERO_LOGPROB {
            continue;
        }
        acc += (lp as f64).exp();
        last = i;
        if u < acc {
            return i as u32;
        }
    }
    last as u32
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// `n` prompts of `prefix_len + length` tokens sampled from `source` after its BOS.
pub fn sample_prompts<S: LanguageModel>(
    source: &S,
    n: usize,
    total_len: usize,
    seed: u64,
) -> Result<Vec<Vec<u32>>, ModelError> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5052_4f4d_5054);
    let mut row = vec![0f32; source.vocab_size()];
    (0..n)
        .map(|_| {
            let mut st = source.new_state();
            source.feed(&mut st, source.bos_token(), &mut row)?;
            let mut seq = Vec::with_capacity(total_len);
            for _ in 0..total_len {
                let t = sample_row(&row, &mut rng);
                seq.push(t);
                source.feed(&mut st, t, &mut row)?;
            }
            Ok(seq)
        })
        .collect()
}

/// Per-token values of one continuation of one prompt.
#[derive(Default)]
struct Trace {
    model_nll: Vec<f64>,
    true_lp: Vec<f32>,
    kl: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Continue<'a> {
    Given(&'a [u32]),
    Sample,
    Greedy,
}

/// One continuation from the given states: the tokens come from `how`.
#[allow(clippy::too_many_arguments)]
fn continue_from<T: LanguageModel, M: LanguageModel>(
    truth: Option<&T>,
    model: &M,
    mut ts: Option<T::State>,
    mut ms: M::State,
    mut trow: Vec<f32>,
    mut mrow: Vec<f32>,
    length: usize,
    how: Continue,
    rng: &mut impl Rng,
) -> Result<Trace, ModelError> {
    let mut tr = Trace::default();
    for t in 0..length {
        let tok = match how {
            Continue::Given(seq) => seq[t],
            Continue::Sample => sample_row(&mrow, rng),
            Continue::Greedy => argmax(&mrow),
        };
        tr.model_nll.push(-(mrow[tok as usize] as f64));
        if truth.is_some() {
            tr.true_lp.push(trow[tok as usize]);
            tr.kl.push(kl_divergence(&trow, &mrow));
        }
        if t + 1 < length {
            model.feed(&mut ms, tok, &mut mrow)?;
            if let (Some(tm), Some(st)) = (truth, ts.as_mut()) {
                tm.feed(st, tok, &mut trow)?;
            }
        }
    }
    Ok(tr)
}

/// Runs the measurement on `prompts` (each `prefix_len + length` tokens, the true
/// continuation after the prefix). `truth`, when known, must share the model's vocabulary.
pub fn measure<T: LanguageModel, M: LanguageModel>(
    truth: Option<&T>,
    model: &M,
    prompts: &[Vec<u32>],
    opts: ExposureOptions,
) -> Result<ExposureReport, ModelError> {
    let v = model.vocab_size();
    if let Some(t) = truth {
        if t.vocab_size() != v || t.bos_token() != model.bos_token() {
            return Err(ModelError::InvalidConfig(format!(
                "the true source has {} tokens (BOS {}), the model {v} (BOS {}): they must share a tokenizer",
                t.vocab_size(),
                t.bos_token(),
                model.bos_token()
            )));
        }
    }
    let need = opts.prefix_len + opts.length;
    if opts.length == 0 || prompts.is_empty() {
        return Err(ModelError::InvalidConfig(
            "need at least one prompt and a length of at least 1".into(),
        ));
    }
    if let Some(ctx) = model.max_context() {
        if need > ctx {
            return Err(ModelError::InvalidConfig(format!(
                "prefix {} + length {} = {need} tokens exceed the model's context of {ctx}",
                opts.prefix_len, opts.length
            )));
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut traces: [Vec<Trace>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for seq in prompts {
        if seq.len() != need {
            return Err(ModelError::InvalidConfig(format!(
                "a prompt has {} tokens, expected {need}",
                seq.len()
            )));
        }
        let (mut mrow, mut trow) = (vec![0f32; v], vec![0f32; v]);
        let mut ms = model.new_state();
        model.feed(&mut ms, model.bos_token(), &mut mrow)?;
        let mut ts = None;
        if let Some(t) = truth {
            let mut st = t.new_state();
            t.feed(&mut st, t.bos_token(), &mut trow)?;
            ts = Some(st);
        }
        for &tok in &seq[..opts.prefix_len] {
            model.feed(&mut ms, tok, &mut mrow)?;
            if let (Some(t), Some(st)) = (truth, ts.as_mut()) {
                t.feed(st, tok, &mut trow)?;
            }
        }
        let given = Continue::Given(&seq[opts.prefix_len..]);
        for (k, how) in [given, Continue::Sample, Continue::Greedy]
            .into_iter()
            .enumerate()
        {
            let tr = continue_from(
                truth,
                model,
                ts.clone(),
                ms.clone(),
                trow.clone(),
                mrow.clone(),
                opts.length,
                how,
                &mut rng,
            )?;
            traces[k].push(tr);
        }
    }
    let [tf, sa, gr] = traces.map(|t| summarize(&t, opts.length, truth.is_some()));
    Ok(ExposureReport {
        options: opts,
        prompts: prompts.len(),
        teacher_forced: tf,
        sampled: sa,
        greedy: gr,
    })
}

/// Per-position means over prompts.
fn summarize(traces: &[Trace], length: usize, has_truth: bool) -> RunStats {
    let n = traces.len() as f64;
    let model_nll = (0..length)
        .map(|t| traces.iter().map(|tr| tr.model_nll[t]).sum::<f64>() / n)
        .collect();
    if !has_truth {
        return RunStats {
            model_nll,
            ..Default::default()
        };
    }
    let mut true_nll = Vec::with_capacity(length);
    let mut impossible = Vec::with_capacity(length);
    let mut kl = Vec::with_capacity(length);
    for t in 0..length {
        let (mut sum, mut ok) = (0.0, 0usize);
        for tr in traces {
            let lp = tr.true_lp[t];
            if lp > ZERO_LOGPROB {
                sum -= lp as f64;
                ok += 1;
            }
        }
        true_nll.push(if ok > 0 { sum / ok as f64 } else { f64::NAN });
        impossible.push(1.0 - ok as f64 / n);
        kl.push(traces.iter().map(|tr| tr.kl[t]).sum::<f64>() / n);
    }
    RunStats {
        model_nll,
        true_nll: Some(true_nll),
        kl: Some(kl),
        impossible: Some(impossible),
    }
}

/// Mean of a per-position curve (NaN entries skipped).
pub fn mean(xs: &[f64]) -> f64 {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::synth::SynthSource;
    use crate::model::uniform::Uniform;

    /// An i.i.d. source over 3 tokens, p = (1/2, 1/4, 1/4), BOS 2 (a tiny hand-made truth).
    struct Iid;
    impl LanguageModel for Iid {
        type State = ();
        fn vocab_size(&self) -> usize {
            3
        }
        fn max_context(&self) -> Option<usize> {
            None
        }
        fn bos_token(&self) -> u32 {
            2
        }
        fn describe(&self) -> String {
            "iid".into()
        }
        fn new_state(&self) {}
        fn feed(&self, _: &mut (), _: u32, lp: &mut [f32]) -> Result<(), ModelError> {
            lp.copy_from_slice(&[0.5f32.ln(), 0.25f32.ln(), 0.25f32.ln()]);
            Ok(())
        }
    }

    fn opts(prefix_len: usize, length: usize) -> ExposureOptions {
        ExposureOptions {
            prefix_len,
            length,
            seed: 3,
        }
    }

    #[test]
    fn the_exact_source_as_model_has_no_gaps() {
        let src = SynthSource::new();
        let o = opts(8, 24);
        let prompts = sample_prompts(&src, 20, 32, 1).unwrap();
        let r = measure(Some(&src), &src, &prompts, o).unwrap();
        for run in [&r.teacher_forced, &r.sampled, &r.greedy] {
            let (tn, kl, imp) = (
                run.true_nll.as_ref().unwrap(),
                run.kl.as_ref().unwrap(),
                run.impossible.as_ref().unwrap(),
            );
            for t in 0..o.length {
                assert!((run.model_nll[t] - tn[t]).abs() < 1e-5, "nll gap at {t}");
                assert!(kl[t].abs() < 1e-5, "kl {} at {t}", kl[t]);
                assert_eq!(imp[t], 0.0);
            }
        }
        // Sampling from the source gives text with the source's own NLL: positive and
        // finite; greedy text is more likely than sampled text under it.
        assert!(mean(r.sampled.true_nll.as_ref().unwrap()) > 0.0);
        assert!(
            mean(r.greedy.true_nll.as_ref().unwrap()) < mean(r.sampled.true_nll.as_ref().unwrap())
        );
    }

    #[test]
    fn a_uniform_model_against_an_iid_truth_matches_hand_values() {
        let truth = Iid;
        let model = Uniform::new(3, 2).unwrap();
        let n = 4000;
        let o = opts(2, 3);
        let prompts = sample_prompts(&truth, n, 5, 9).unwrap();
        let r = measure(Some(&truth), &model, &prompts, o).unwrap();
        let ln3 = 3f64.ln();
        // KL(p || uniform) = ln 3 - H(p), H(p) = 1.5 ln 2: the same at every prefix, so
        // free-running and teacher-forced KLs are equal and exact.
        let kl = ln3 - 1.5 * 2f64.ln();
        for run in [&r.teacher_forced, &r.sampled, &r.greedy] {
            for t in 0..3 {
                assert!((run.model_nll[t] - ln3).abs() < 1e-6);
                assert!((run.kl.as_ref().unwrap()[t] - kl).abs() < 1e-6);
            }
        }
        // Truth's NLL: of true text, H(p) = 1.5 ln 2; of uniform samples, the cross
        // entropy -Σ u log p = (5/3) ln 2; of greedy (argmax ties go to token 0), ln 2.
        let sd = 0.5 * 2f64.ln() / (n as f64).sqrt();
        for t in 0..3 {
            let tf = r.teacher_forced.true_nll.as_ref().unwrap()[t];
            assert!((tf - 1.5 * 2f64.ln()).abs() < 5.0 * sd, "{tf}");
            let s = r.sampled.true_nll.as_ref().unwrap()[t];
            assert!((s - 5.0 / 3.0 * 2f64.ln()).abs() < 5.0 * sd, "{s}");
            let g = r.greedy.true_nll.as_ref().unwrap()[t];
            assert!((g - 2f64.ln()).abs() < 1e-6);
        }
    }

    #[test]
    fn without_a_truth_only_model_nlls_and_bad_shapes_are_refused() {
        let model = Uniform::new(3, 2).unwrap();
        let prompts = sample_prompts(&Iid, 5, 4, 0).unwrap();
        let r = measure(None::<&Iid>, &model, &prompts, opts(1, 3)).unwrap();
        assert!(r.sampled.kl.is_none() && r.teacher_forced.true_nll.is_none());
        assert_eq!(r.sampled.model_nll.len(), 3);
        assert!(measure(None::<&Iid>, &model, &prompts, opts(2, 3)).is_err());
        let big = Uniform::new(4, 2).unwrap();
        assert!(measure(Some(&Iid), &big, &prompts, opts(1, 3)).is_err());
    }
}
