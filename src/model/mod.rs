//! The conditional model class: anything that maps a prefix to a next-token distribution.
//!
//! [`LanguageModel`] is the one interface that scoring ([`crate::eval`]), evaluation and
//! decoding ([`crate::generate`]) are written against. Implementations:
//! [`uniform::Uniform`], the add-k n-gram in [`ngram`], the GPT in [`gpt`], the LSTM/GRU in
//! [`rnn`], and the
//! synthetic corpus's exact source in [`crate::corpus`].
//!
//! # Conditioning convention
//! Every sequence starts with a conditioning token: callers put the model's
//! [`LanguageModel::bos_token`] (the end-of-text / document separator) first, so the first
//! real token x_1 is scored as log p(x_1 | BOS). Nothing is ever scored unconditionally.
//! For a continuation of a context, the context's tokens come first and only the
//! continuation's positions are counted.

pub mod gpt;
pub mod ngram;
pub mod rnn;
pub mod uniform;

use std::path::PathBuf;

/// Errors from building, loading or querying a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("token id {token} is outside the model's vocabulary of {vocab_size} tokens")]
    TokenOutOfRange { token: u32, vocab_size: usize },
    #[error("{len} tokens exceed the model's context of {max_context} tokens")]
    ContextTooLong { len: usize, max_context: usize },
    #[error("empty input: a sequence needs at least its conditioning token")]
    EmptyInput,
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("the model's output is not finite ({0}); the weights may have diverged")]
    NonFinite(String),
    #[error(transparent)]
    TooLarge(#[from] crate::memory::TooLarge),
    /// An n-gram model's own error (ARPA syntax, order, I/O), kept whole as the cause.
    #[error(transparent)]
    Ngram(#[from] ngram::NgramError),
}

/// An autoregressive model: a conditional distribution p(x_t | x_<t) over a vocabulary.
///
/// The generation path is [`LanguageModel::feed`] on a [`LanguageModel::State`]; the
/// scoring path is [`LanguageModel::score_next`] on a whole sequence (models with a
/// parallel forward pass override it). Both must give the same numbers.
pub trait LanguageModel: Send + Sync {
    /// What the model carries between steps: a KV cache, a recurrent state, the last n-1 tokens.
    type State: Clone + Send;

    /// Number of token ids; every distribution has this length.
    fn vocab_size(&self) -> usize;

    /// The longest context the model can condition on (`None`: unbounded, e.g. n-grams).
    fn max_context(&self) -> Option<usize>;

    /// The token that conditions the first real token of a document (end-of-text / BOS).
    fn bos_token(&self) -> u32;

    /// A short human-readable description for reports ("gpt2 4L/4H/128, 0.8M params").
    fn describe(&self) -> String;

    /// An empty context: nothing fed yet.
    fn new_state(&self) -> Self::State;

    /// Appends `token` to the context in `state` and writes log p(. | context) into
    /// `logprobs` (length [`LanguageModel::vocab_size`], natural log, log-softmaxed).
    fn feed(
        &self,
        state: &mut Self::State,
        token: u32,
        logprobs: &mut [f32],
    ) -> Result<(), ModelError>;

    /// Feeds `tokens` in order and writes log p(. | context) after the last one into
    /// `logprobs`: the prompt-processing step of generation. The default loops over
    /// [`LanguageModel::feed`]; models with a parallel forward pass (the GPT) override it
    /// to process the whole chunk at once. An empty `tokens` is an error.
    fn prefill(
        &self,
        state: &mut Self::State,
        tokens: &[u32],
        logprobs: &mut [f32],
    ) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        for &tok in tokens {
            self.feed(state, tok, logprobs)?;
        }
        Ok(())
    }

    /// Feeds `tokens[i]` to the independent context `states[i]` and writes its next-token
    /// log-probs into `logprobs[i]`: one decode step of several sequences (a server's
    /// batch). Each row must equal what [`LanguageModel::feed`] gives for that sequence
    /// alone, so results never depend on batching. The default loops over `feed`; the GPT
    /// overrides it to read its weights once for the whole batch.
    fn feed_batch(
        &self,
        states: &mut [&mut Self::State],
        tokens: &[u32],
        logprobs: &mut [&mut [f32]],
    ) -> Result<(), ModelError> {
        for ((state, &tok), row) in states.iter_mut().zip(tokens).zip(logprobs.iter_mut()) {
            self.feed(state, tok, row)?;
        }
        Ok(())
    }

    /// Teacher-forced scoring: `out[i] = log p(input[i+1] | input[..=i])`, so the result has
    /// `input.len() - 1` entries. `input[0]` is the conditioning token (usually BOS).
    fn score_next(&self, input: &[u32]) -> Result<Vec<f32>, ModelError> {
        let v = self.vocab_size();
        let mut state = self.new_state();
        let mut row = vec![0f32; v];
        let (first, rest) = input.split_first().ok_or(ModelError::EmptyInput)?;
        check_token(*first, v)?;
        self.feed(&mut state, *first, &mut row)?;
        let mut out = Vec::with_capacity(rest.len());
        for (i, &tok) in rest.iter().enumerate() {
            check_token(tok, v)?;
            out.push(row[tok as usize]);
            if i + 1 < rest.len() {
                self.feed(&mut state, tok, &mut row)?;
            }
        }
        Ok(out)
    }

    /// Full next-token distributions along a sequence: row `i` (of `input.len()` rows,
    /// each of length V) is log p(. | input[..=i]).
    fn distributions(&self, input: &[u32]) -> Result<Vec<f32>, ModelError> {
        let v = self.vocab_size();
        if input.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let mut state = self.new_state();
        let mut out = vec![0f32; input.len() * v];
        for (i, &tok) in input.iter().enumerate() {
            check_token(tok, v)?;
            self.feed(&mut state, tok, &mut out[i * v..(i + 1) * v])?;
        }
        Ok(out)
    }

    /// [`LanguageModel::score_next`] over many sequences; models that batch override it.
    fn score_next_batch(&self, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        use rayon::prelude::*;
        inputs.par_iter().map(|s| self.score_next(s)).collect()
    }
}

/// Reads a model directory's `config_file` (parsed JSON) and `weights_file` (bytes): the
/// first step of every weights-based model's `load`. Returns both with their paths.
pub fn read_model_files(
    dir: &std::path::Path,
    config_file: &str,
    weights_file: &str,
) -> Result<(serde_json::Value, PathBuf, Vec<u8>, PathBuf), ModelError> {
    let cpath = dir.join(config_file);
    let text = std::fs::read_to_string(&cpath).map_err(|source| ModelError::Io {
        path: cpath.clone(),
        source,
    })?;
    let value = serde_json::from_str(&text).map_err(|e| ModelError::Format {
        path: cpath.clone(),
        message: format!("not valid JSON: {e}"),
    })?;
    let wpath = dir.join(weights_file);
    let bytes = std::fs::read(&wpath).map_err(|source| ModelError::Io {
        path: wpath.clone(),
        source,
    })?;
    Ok((value, cpath, bytes, wpath))
}

/// Refuses a tensor read from `path` that holds a NaN or an infinity, by name and element:
/// such a weight would turn every score into NaN with exit 0.
pub fn check_finite_tensor(
    name: &str,
    values: &[f32],
    path: &std::path::Path,
) -> Result<(), ModelError> {
    match values.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(ModelError::Format {
            path: path.to_path_buf(),
            message: format!(
                "tensor {name} holds a non-finite value ({}) at element {i}: the weights are \
                 damaged or come from a diverged run",
                values[i]
            ),
        }),
    }
}

/// Returns an error unless `token < vocab_size`.
pub fn check_token(token: u32, vocab_size: usize) -> Result<(), ModelError> {
    if (token as usize) < vocab_size {
        Ok(())
    } else {
        Err(ModelError::TokenOutOfRange { token, vocab_size })
    }
}

/// Refuses a next-token log-prob row holding NaN or +inf: such a row comes from damaged
/// or diverged weights, and sampling from it or scoring with it would print a number
/// that means nothing. (-inf is a legal log-prob: probability 0.)
pub fn check_logprob_row(row: &[f32], position: usize) -> Result<(), ModelError> {
    match row.iter().position(|x| x.is_nan() || *x == f32::INFINITY) {
        None => Ok(()),
        Some(i) => Err(ModelError::NonFinite(format!(
            "log p(token {i}) = {} after {position} tokens",
            row[i]
        ))),
    }
}

/// log(sum(exp(xs))) computed stably in f64.
pub fn logsumexp(xs: &[f32]) -> f64 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if max == f64::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max + xs.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln()
}

/// In-place log-softmax of a row of logits (the only way logits become log-probs).
pub fn log_softmax_in_place(row: &mut [f32]) {
    let lse = logsumexp(row) as f32;
    for x in row.iter_mut() {
        *x -= lse;
    }
}

/// Shared checks every [`LanguageModel`] implementation runs in its tests: the
/// incremental path equals the scoring path (and `prefill`), and every distribution sums to 1.
#[cfg(test)]
pub(crate) mod conformance {
    use super::*;

    /// Asserts that `feed` and `score_next` agree on `seq`, that `distributions` matches
    /// `feed`, and that every row's logsumexp is 0 within `tol`.
    pub fn check_model<M: LanguageModel>(model: &M, seq: &[u32], tol: f32) {
        check_model_with_prefill_tol(model, seq, tol, tol);
    }

    /// [`check_model`], with `prefill`'s distribution held to `prefill_tol` (for a
    /// model whose prefill computes at another precision than its scoring).
    pub fn check_model_with_prefill_tol<M: LanguageModel>(
        model: &M,
        seq: &[u32],
        tol: f32,
        prefill_tol: f32,
    ) {
        let v = model.vocab_size();
        let scored = model.score_next(seq).unwrap();
        assert_eq!(scored.len(), seq.len() - 1);
        let rows = model.distributions(seq).unwrap();
        let mut pstate = model.new_state();
        let mut prow = vec![0f32; v];
        model.prefill(&mut pstate, seq, &mut prow).unwrap();
        let last = &rows[(seq.len() - 1) * v..];
        for (a, b) in prow.iter().zip(last) {
            assert!((a - b).abs() <= prefill_tol, "prefill: {a} vs {b}");
        }
        let mut state = model.new_state();
        let mut row = vec![0f32; v];
        for (i, &tok) in seq.iter().enumerate() {
            model.feed(&mut state, tok, &mut row).unwrap();
            let lse = logsumexp(&row);
            assert!(lse.abs() < tol as f64, "row {i} sums to exp({lse})");
            for (a, b) in row.iter().zip(&rows[i * v..(i + 1) * v]) {
                assert!((a - b).abs() <= tol, "distributions row {i}: {a} vs {b}");
            }
            if i + 1 < seq.len() {
                let want = row[seq[i + 1] as usize];
                assert!(
                    (scored[i] - want).abs() <= tol,
                    "position {i}: {} vs {want}",
                    scored[i]
                );
            }
        }
    }
}
