//! Chain-rule scoring and evaluation: log p(x_1..x_n) = sum_t log p(x_t | x_<t).
//!
//! Two entry points, both generic over [`LanguageModel`](crate::model::LanguageModel) and
//! any [`Tokenizer`](crate::tokenizer::Tokenizer):
//!
//! - [`score`]: one text (optionally conditioned on a context) in full detail: every
//!   token's log-prob, rank, the entropy of its distribution and the top-k alternatives,
//!   plus the joint log-probability, which is by construction the sum of the per-token
//!   terms. Rendered as JSONL, a GLTR-coloured terminal table, or a standalone HTML page
//!   ([`report`]).
//! - [`evaluate()`]: a corpus, as fast as the model allows: documents are cut into
//!   sliding [`window`]s, windows are grouped into batches for
//!   [`LanguageModel::score_next_batch`](crate::model::LanguageModel::score_next_batch), and the per-token log-probs are summed in f64 in
//!   a fixed order, so the result does not depend on the thread count. It reports token,
//!   byte and word [`metrics`] with [`bootstrap`] confidence intervals, and always the
//!   [`evaluate::Protocol`] that produced them: a perplexity without its protocol is not a
//!   number one can compare.
//!
//! - [`docs`]: one perplexity per document for data pipelines (`arlm score --perplexity`),
//!   with a query-only fast path for n-gram models.
//!
//! # Conventions
//! Every document starts with the model's BOS (end-of-text) token, which is conditioning
//! only; the context of a conditional score is conditioning only too. Byte counts are the
//! UTF-8 bytes of the scored text itself (not of the tokens' vocabulary strings, not of
//! special tokens), so bits per byte from a byte-level and a BPE model of the same text
//! divide by the same number. Word counts are whitespace-separated words (lm-eval).
//!
//! # Performance notes
//! `evaluate` never scores token by token: each window is one `score_next` call (one
//! parallel forward pass for the GPT), and batches of windows go to `score_next_batch`
//! (the default implementation runs them on all cores with rayon). `score` asks for full
//! distributions (it needs ranks and alternatives), so it is the slower, detailed path.

pub mod bootstrap;
pub mod docs;
pub mod evaluate;
pub mod exposure;
pub mod exposure_plot;
pub mod metrics;
pub mod report;
pub mod score;
pub mod window;

pub use evaluate::{evaluate, Corpus, DocMode, EvalOptions, EvalReport, Protocol};
pub use metrics::{Metrics, Totals};
pub use score::{score_ids, score_text, TextScore, TokenScore};
pub use window::{Window, WindowSpec};

use crate::data::DataError;
use crate::model::ModelError;
use crate::tokenizer::TokenizerError;
use std::path::PathBuf;

/// Errors from scoring and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    /// A log-prob that is not a finite number: NaN or +inf from damaged or diverged
    /// weights, or -inf (probability 0, an infinite NLL) from a model that rules the
    /// token out. Either way no honest NLL or perplexity can be printed.
    #[error(
        "the model gives token {token} at position {position} a log-probability of {logprob}{why}"
    )]
    NonFinite {
        token: u32,
        position: usize,
        logprob: f32,
        why: &'static str,
    },
}

/// [`EvalError::NonFinite`] for the first non-finite entry of `logprobs` (the log-probs
/// of `targets`, the first of which is the text's token number `first_position`), if any.
pub fn check_finite(
    logprobs: &[f32],
    targets: &[u32],
    first_position: usize,
) -> Result<(), EvalError> {
    match logprobs.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(EvalError::NonFinite {
            token: targets.get(i).copied().unwrap_or(u32::MAX),
            position: first_position + i,
            logprob: logprobs[i],
            why: if logprobs[i] == f32::NEG_INFINITY {
                " (probability 0, so the NLL and perplexity are infinite)"
            } else {
                " (the weights are damaged or diverged)"
            },
        }),
    }
}

#[cfg(test)]
pub(crate) mod test_models {
    //! Small hand-built models with context-dependent distributions, for exactness tests.
    use crate::model::{check_token, log_softmax_in_place, LanguageModel, ModelError};

    /// A deterministic "trigram" model: the distribution depends on the last two tokens
    /// (so windowing mistakes change the numbers), with an optional context limit.
    #[derive(Debug, Clone)]
    pub struct Toy {
        pub vocab: usize,
        pub max_context: Option<usize>,
    }

    impl Toy {
        /// Logits for the context ending in (a, b); `a = u32::MAX` when absent.
        fn logits(&self, a: u32, b: u32, out: &mut [f32]) {
            for (i, x) in out.iter_mut().enumerate() {
                let h = (a.wrapping_mul(7919) ^ b.wrapping_mul(104729) ^ (i as u32 * 31337))
                    .wrapping_mul(2654435761);
                *x = ((h >> 8) % 1000) as f32 / 250.0 - 2.0;
            }
        }
    }

    impl LanguageModel for Toy {
        type State = Vec<u32>;
        fn vocab_size(&self) -> usize {
            self.vocab
        }
        fn max_context(&self) -> Option<usize> {
            self.max_context
        }
        fn bos_token(&self) -> u32 {
            self.vocab as u32 - 1
        }
        fn describe(&self) -> String {
            format!("toy trigram over {} tokens", self.vocab)
        }
        fn new_state(&self) -> Vec<u32> {
            Vec::new()
        }
        fn feed(&self, st: &mut Vec<u32>, token: u32, lp: &mut [f32]) -> Result<(), ModelError> {
            check_token(token, self.vocab)?;
            st.push(token);
            if let Some(m) = self.max_context {
                if st.len() > m {
                    return Err(ModelError::ContextTooLong {
                        len: st.len(),
                        max_context: m,
                    });
                }
            }
            let a = if st.len() >= 2 {
                st[st.len() - 2]
            } else {
                u32::MAX
            };
            self.logits(a, token, lp);
            log_softmax_in_place(lp);
            Ok(())
        }
    }
}
