//! Generation: the chain rule run forwards. Start from a prompt, compute the next-token
//! distribution, choose a token, append it, repeat.
//!
//! Every decoding method is a way to turn the distribution into a choice, and all of them
//! are written once against [`LanguageModel`]:
//! - [`sampler`]: the llama.cpp-style sampler chain (greedy, temperature, top-k, top-p,
//!   min-p, typical-p, repetition/presence/frequency penalties, no-repeat-ngram, logit
//!   bias), seeded; its stages are [`stage::SamplerStage`] values in a [`stage::Chain`]
//!   (a chain is itself a stage), so a new stage is one file; [`candidates`] is the list
//!   the stages rewrite.
//! - [`beam`]: beam search with the Hugging Face length penalty, returning the n best.
//! - [`session`]: the model state and the past-context policy (slide the window and
//!   re-prefill; never a crash when a generation outgrows the context).
//! - [`stream`]: UTF-8 across token boundaries and stop strings, for streaming text.
//!
//! [`generate`] ties them together for the CLI: prompt ids in, streamed text and a
//! per-token record (id, piece, log-prob under the model and under the sampling
//! distribution) and the finish reason out.
//!
//! # Performance notes
//! Per token the sampler does O(V) work (one pass to build candidates, a partial
//! selection for top-k, a sort of the survivors for top-p/min-p), ~0.1-1 ms at V = 50257;
//! the model's step dominates. The prompt goes through [`LanguageModel::prefill`] (one
//! parallel pass for the GPT), and `--num-samples K` prefills once and clones the state.

pub mod beam;
pub mod candidates;
pub mod sampler;
pub mod session;
pub mod stage;
pub mod stream;

pub use beam::{beam_search, BeamConfig, Hypothesis};
pub use sampler::{Choice, Sampler, SamplerConfig, Stage};
pub use session::Session;
pub use stream::TextStream;

use crate::model::{LanguageModel, ModelError};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Errors from generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid --{name} {value}: {reason}")]
    InvalidParam {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// A distribution handed to the sampler has another length than the vocabulary it was
    /// built for (a caller's bug or a model/tokenizer mismatch, not a flag).
    #[error(
        "the model's distribution has {got} entries but the sampler was built for a \
         vocabulary of {vocab_size}"
    )]
    RowLength { got: usize, vocab_size: usize },
    #[error("no token is left to choose from after {stage}; relax the bans/filters")]
    EmptyVocabulary { stage: &'static str },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("writing the output")]
    Output(#[from] std::io::Error),
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// `max_tokens` tokens were generated.
    Length,
    /// A stop string appeared (it is not part of the text).
    Stop,
    /// The model chose the end-of-text token.
    Eot,
}

impl FinishReason {
    /// "length", "stop" or "eot".
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Length => "length",
            FinishReason::Stop => "stop",
            FinishReason::Eot => "eot",
        }
    }
}

/// One generated token.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GeneratedToken {
    /// Token id.
    pub id: u32,
    /// The token's own text (lossy if it holds part of a character; "" for end-of-text).
    pub piece: String,
    /// log p(token | context) under the model.
    pub logprob: f32,
    /// Its log-prob under the final sampling distribution (0 for greedy).
    pub sampler_logprob: f32,
}

/// A finished generation: the one result type of sampling ([`generate`]) and beam search
/// ([`Hypothesis::to_generation`]), serialized as is by `arlm generate --json` and
/// converted to the OpenAI shapes by the server.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Generation {
    /// The generated text (without a stop string or end-of-text).
    pub text: String,
    /// Every generated token, including the one that completed a stop string or eot.
    pub tokens: Vec<GeneratedToken>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Sum of the model log-probs of the generated tokens (nats).
    pub total_logprob: f64,
    /// How often the context window slid (see [`session`]).
    pub window_slides: usize,
    /// Beam search's length-penalized score (`None` for sampling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// Options for [`generate`].
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Stop after this many tokens.
    pub max_tokens: usize,
    /// Stop (and cut the text) at the first of these strings.
    pub stop: Vec<String>,
    /// Stop when the model chooses end-of-text (the tokenizer's eot token).
    pub stop_at_eot: bool,
    /// The sampler chain.
    pub sampler: SamplerConfig,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            stop: Vec::new(),
            stop_at_eot: true,
            sampler: SamplerConfig::default(),
        }
    }
}

/// Samples `max_tokens` tokens after `prompt` (no text, no stop strings; stops at `eot`
/// if given). The tokens-only core that tests compare against enumeration.
pub fn sample_tokens<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    sampler: &mut Sampler,
    max_tokens: usize,
    eot: Option<u32>,
) -> Result<Vec<Choice>, GenerateError> {
    let mut session = Session::new(model, prompt)?;
    let mut out = Vec::with_capacity(max_tokens);
    for step in 0..max_tokens {
        let choice = sampler.sample(session.logprobs(), session.tokens())?;
        out.push(choice);
        if Some(choice.token) == eot {
            break;
        }
        if step + 1 < max_tokens {
            session.push(choice.token)?;
        }
    }
    Ok(out)
}

/// Continues `session` (already holding the prompt) with `sampler`, streaming text to
/// `on_text` as soon as it is safe to show (see [`stream`]).
pub fn generate<M: LanguageModel>(
    mut session: Session<'_, M>,
    tokenizer: &dyn Tokenizer,
    sampler: &mut Sampler,
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str) -> std::io::Result<()>,
) -> Result<Generation, GenerateError> {
    let eot = tokenizer.eot_token();
    let mut stream = TextStream::new(&opts.stop);
    let mut tokens = Vec::new();
    let mut total = 0f64;
    let mut finish = FinishReason::Length;
    for step in 0..opts.max_tokens {
        let choice = sampler.sample(session.logprobs(), session.tokens())?;
        total += choice.logprob_model as f64;
        let is_eot = opts.stop_at_eot && choice.token == eot;
        let bytes = if is_eot {
            Vec::new()
        } else {
            tokenizer.token_bytes(choice.token)?
        };
        tokens.push(GeneratedToken {
            id: choice.token,
            piece: String::from_utf8_lossy(&bytes).into_owned(),
            logprob: choice.logprob_model,
            sampler_logprob: choice.logprob_sampler,
        });
        if is_eot {
            finish = FinishReason::Eot;
            break;
        }
        let text = stream.push(&bytes);
        if !text.is_empty() {
            on_text(&text)?;
        }
        if stream.stopped() {
            finish = FinishReason::Stop;
            break;
        }
        // The last token needs no forward pass.
        if step + 1 < opts.max_tokens {
            session.push(choice.token)?;
        }
    }
    let rest = stream.finish();
    if !rest.is_empty() {
        on_text(&rest)?;
    }
    Ok(Generation {
        text: stream.text(),
        tokens,
        finish_reason: finish,
        total_logprob: total,
        window_slides: session.slides(),
        score: None,
    })
}
