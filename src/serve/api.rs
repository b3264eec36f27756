//! Request and response shapes: OpenAI's completions API, llama.cpp's `/tokenize` and
//! `/detokenize`, vLLM's `/tokenizer_info`. Requests are parsed leniently (unknown
//! fields are ignored, as OpenAI clients send extras) and validated strictly: every bad
//! value is a 400 that names its field.

use super::error::ApiError;
use crate::generate::{SamplerConfig, Stage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `prompt`: a string, strings, token ids, or arrays of token ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

/// `samplers` (llama.cpp): a list of stage names or one `;`-separated string.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SamplersField {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: Option<PromptField>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<i64>,
    pub stop: Option<StopField>,
    pub seed: Option<u64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logit_bias: Option<BTreeMap<String, f32>>,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub best_of: Option<i64>,
    // llama.cpp's extra sampler fields.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub typical_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub repeat_last_n: Option<i64>,
    pub samplers: Option<SamplersField>,
    /// Keep going when the model chooses end-of-text (llama.cpp).
    pub ignore_eos: Option<bool>,
}

/// Server-wide caps on one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_prompt_tokens: usize,
    pub max_tokens: usize,
    pub max_n: usize,
    pub max_stop: usize,
    pub max_logprobs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prompt_tokens: 8192,
            max_tokens: 4096,
            max_n: 16,
            max_stop: 4,
            max_logprobs: 20,
        }
    }
}

/// The validated generation settings of a request (the prompts are handled apart).
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_tokens: usize,
    pub n: usize,
    pub stop: Vec<String>,
    pub logprobs: Option<usize>,
    pub echo: bool,
    pub stream: bool,
    pub include_usage: bool,
    pub stop_at_eot: bool,
    pub sampler: SamplerConfig,
}

fn in_range_i64(param: &str, v: i64, lo: i64, hi: i64) -> Result<usize, ApiError> {
    if v < lo || v > hi {
        return Err(ApiError::invalid(
            param,
            format!("{param} is {v}; it must be between {lo} and {hi}"),
        ));
    }
    Ok(v as usize)
}

fn finite(param: &str, v: f32) -> Result<f32, ApiError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ApiError::invalid(
            param,
            format!("{param} must be a finite number"),
        ))
    }
}

impl CompletionRequest {
    /// Checks every field except `model` and `prompt` against `limits` and the vocabulary.
    /// OpenAI's defaults: max_tokens 16, temperature 1, top_p 1, n 1; llama.cpp's extras
    /// default to off. Without `seed`, `fallback_seed` seeds the draw.
    ///
    /// Long (~165 lines): one check per request field, in the order of OpenAI's reference,
    /// each a few lines that name the field in their error; a table of closures would hide
    /// the types.
    pub fn settings(
        &self,
        limits: &Limits,
        vocab_size: usize,
        fallback_seed: u64,
    ) -> Result<Settings, ApiError> {
        let max_tokens = in_range_i64(
            "max_tokens",
            self.max_tokens.unwrap_or(16),
            0,
            limits.max_tokens as i64,
        )?;
        let n = in_range_i64("n", self.n.unwrap_or(1), 1, limits.max_n as i64)?;
        if let Some(b) = self.best_of {
            if b != n as i64 {
                return Err(ApiError::invalid(
                    "best_of",
                    "best_of other than n is not supported",
                ));
            }
        }
        let logprobs = match self.logprobs {
            None => None,
            Some(k) => Some(in_range_i64("logprobs", k, 0, limits.max_logprobs as i64)?),
        };
        let stop = match &self.stop {
            None => Vec::new(),
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        if stop.len() > limits.max_stop {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "{} stop sequences given; at most {} are allowed",
                    stop.len(),
                    limits.max_stop
                ),
            ));
        }
        let mut cfg = SamplerConfig::pure(self.seed.unwrap_or(fallback_seed));
        if let Some(t) = self.temperature {
            if !(t >= 0.0 && t.is_finite()) {
                return Err(ApiError::invalid(
                    "temperature",
                    format!("temperature is {t}; it must be a finite number >= 0 (0 = greedy)"),
                ));
            }
            cfg.temperature = t;
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    "top_p",
                    format!("top_p is {p}; it must be in (0, 1]"),
                ));
            }
            cfg.top_p = p;
        }
        if let Some(k) = self.top_k {
            cfg.top_k = in_range_i64("top_k", k, 0, vocab_size as i64)?;
        }
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(ApiError::invalid(
                    "min_p",
                    format!("min_p is {p}; it must be in [0, 1]"),
                ));
            }
            cfg.min_p = p;
        }
        if let Some(p) = self.typical_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    "typical_p",
                    format!("typical_p is {p}; it must be in (0, 1]"),
                ));
            }
            cfg.typical_p = p;
        }
        if let Some(r) = self.repeat_penalty {
            if !(r > 0.0 && r.is_finite()) {
                return Err(ApiError::invalid(
                    "repeat_penalty",
                    format!("repeat_penalty is {r}; it must be a finite number > 0 (1 = off)"),
                ));
            }
            cfg.repeat_penalty = r;
        }
        if let Some(p) = self.presence_penalty {
            cfg.presence_penalty = finite("presence_penalty", p)?;
            if !(-2.0..=2.0).contains(&p) {
                return Err(ApiError::invalid(
                    "presence_penalty",
                    "presence_penalty must be in [-2, 2]",
                ));
            }
        }
        if let Some(p) = self.frequency_penalty {
            cfg.frequency_penalty = finite("frequency_penalty", p)?;
            if !(-2.0..=2.0).contains(&p) {
                return Err(ApiError::invalid(
                    "frequency_penalty",
                    "frequency_penalty must be in [-2, 2]",
                ));
            }
        }
        if let Some(n) = self.repeat_last_n {
            // llama.cpp: -1 means the whole context.
            cfg.penalty_last_n = if n == -1 {
                usize::MAX
            } else {
                in_range_i64("repeat_last_n", n, 0, i64::MAX)?
            };
        }
        if let Some(bias) = &self.logit_bias {
            for (k, &b) in bias {
                let id: u32 = k.parse().map_err(|_| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("logit_bias key {k:?} is not a token id"),
                    )
                })?;
                if id as usize >= vocab_size {
                    return Err(ApiError::invalid(
                        "logit_bias",
                        format!("logit_bias token {id} is outside the vocabulary of {vocab_size} tokens"),
                    ));
                }
                if !(-100.0..=100.0).contains(&b) {
                    return Err(ApiError::invalid(
                        "logit_bias",
                        format!("logit_bias value {b} for token {id} must be in [-100, 100]"),
                    ));
                }
                // OpenAI: -100 bans the token.
                let b = if b <= -100.0 { f32::NEG_INFINITY } else { b };
                cfg.logit_bias.push((id, b));
            }
        }
        if let Some(s) = &self.samplers {
            let names = match s {
                SamplersField::List(v) => v.join(";"),
                SamplersField::Text(t) => t.clone(),
            };
            cfg.order = Stage::parse_list(&names)
                .map_err(|e| ApiError::invalid("samplers", crate::error_chain(&e)))?;
        }
        cfg.validate(vocab_size)
            .map_err(super::engine::generate_error)?;
        Ok(Settings {
            max_tokens,
            n,
            stop,
            logprobs,
            echo: self.echo.unwrap_or(false),
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            stop_at_eot: !self.ignore_eos.unwrap_or(false),
            sampler: cfg,
        })
    }
}

/// OpenAI's per-choice log-prob record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Logprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f64>>,
    pub top_logprobs: Vec<Option<BTreeMap<String, f64>>>,
    pub text_offset: Vec<usize>,
}

impl Logprobs {
    /// Appends one token; `offset` is the character offset of its text.
    pub fn push(
        &mut self,
        piece: &str,
        lp: Option<f64>,
        top: Option<BTreeMap<String, f64>>,
        offset: usize,
    ) {
        self.tokens.push(piece.to_string());
        self.token_logprobs.push(lp);
        self.top_logprobs.push(top);
        self.text_offset.push(offset);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub text: String,
    pub index: usize,
    pub logprobs: Option<Logprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// The completion (or, streamed, one chunk of it).
#[derive(Debug, Clone, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `POST /tokenize`: llama.cpp sends `content`, vLLM (and lm-evaluation-harness) `prompt`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenizeRequest {
    pub model: Option<String>,
    pub content: Option<String>,
    pub prompt: Option<String>,
    /// Return `{id, piece}` pairs instead of bare ids (llama.cpp).
    #[serde(default)]
    pub with_pieces: bool,
}

/// `POST /detokenize`.
#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}
