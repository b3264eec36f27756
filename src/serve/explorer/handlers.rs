//! The explorer's JSON endpoints: what the page needs beyond the completions API.
//!
//! - `GET /explorer/models`: every served model with its class, tokenizer, context, and
//!   whether its exact source is known (exposure bias needs it).
//! - `POST /explorer/score`: a text (or token ids, for the What-if branch) scored exactly
//!   as `arlm score` scores it ([`score_text`] / [`score_ids`], same windows), with every
//!   token's byte count for bits per byte.
//! - `POST /explorer/generate`: a generation streamed as server-sent events: the text as
//!   `arlm generate` prints it (same prompt handling, sampler, seed and stream), and for
//!   every token the distribution after each sampler stage ([`super::trace`]); beam
//!   search sends its hypotheses at the end.
//! - `POST /explorer/exposure`: [`crate::eval::exposure::measure`] against the synthetic
//!   corpus's exact source, for models over its byte vocabulary.
//!
//! The model work runs on the blocking pool, at most [`SLOTS`] requests at once (the
//! completions API has its batching worker; these are one-off, heavier requests).

use super::super::error::ApiError;
use super::super::routes::parse;
use super::super::AppState;
use super::trace::{StepTrace, Tracing};
use crate::corpus::synth::SynthSource;
use crate::eval::exposure::{self, ExposureOptions};
use crate::eval::score::{piece, score_ids, score_text};
use crate::eval::{Totals, WindowSpec};
use crate::generate::{self, beam_search, BeamConfig, GenerateOptions, SamplerConfig, Session};
use crate::load::{AnyModel, LoadedModel};
use crate::model::LanguageModel;
use crate::tokenizer::Tokenizer;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::StreamExt;

/// Explorer requests that may run a model at once.
pub const SLOTS: usize = 2;
static RUNNING: Semaphore = Semaphore::const_new(SLOTS);

fn loaded(st: &AppState, name: Option<&str>) -> Result<Arc<LoadedModel>, ApiError> {
    Ok(st.model(name)?.loaded.clone())
}

/// The model's class in a word.
fn class(m: &AnyModel) -> &'static str {
    match m {
        AnyModel::Uniform(_) => "uniform",
        AnyModel::Backoff(_) => "n-gram (backoff)",
        AnyModel::AddK(_) => "n-gram (add-k)",
        AnyModel::Synth(_) => "exact synthetic source",
        AnyModel::Gpt(_) => "GPT",
        AnyModel::Rnn(_) => "RNN",
    }
}

/// True when the synthetic corpus's exact source speaks this model's vocabulary (the
/// bytes tokenizer), so exposure bias can be measured under the truth.
pub fn has_exact_source(lm: &LoadedModel) -> bool {
    let src = SynthSource::new();
    let (v, bos) = crate::with_model!(&lm.model, m => (m.vocab_size(), m.bos_token()));
    lm.tokenizer.kind() == "bytes" && v == src.vocab_size() && bos == src.bos_token()
}

pub async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|m| {
            let lm = &m.loaded;
            let (ctx, vocab, desc) =
                crate::with_model!(&lm.model, x => (x.max_context(), x.vocab_size(), x.describe()));
            json!({
                "name": m.name,
                "class": class(&lm.model),
                "description": desc,
                "tokenizer": lm.tokenizer.kind(),
                "vocab_size": vocab,
                "max_context": ctx,
                "exact_source": has_exact_source(lm),
            })
        })
        .collect();
    Json(json!({"models": data}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreRequest {
    model: Option<String>,
    /// The text to score (tokenized as `arlm score` does).
    text: Option<String>,
    /// Or the token ids (a What-if branch: the ids are scored as they are).
    ids: Option<Vec<u32>>,
    #[serde(default = "default_top_k")]
    top_k: usize,
}

fn default_top_k() -> usize {
    5
}

pub async fn score(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: ScoreRequest = parse(body)?;
    let lm = loaded(&st, req.model.as_deref())?;
    let limits = st.opts.limits;
    if req.top_k > limits.max_logprobs {
        return Err(ApiError::invalid(
            "top_k",
            format!("at most {} alternatives", limits.max_logprobs),
        ));
    }
    let _slot = RUNNING
        .acquire()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let name = st.model(req.model.as_deref())?.name.clone();
    tokio::task::spawn_blocking(move || score_blocking(&lm, &name, req, limits.max_prompt_tokens))
        .await
        .map_err(|e| ApiError::internal(format!("scoring failed: {e}")))?
        .map(Json)
}

fn score_blocking(
    lm: &LoadedModel,
    name: &str,
    req: ScoreRequest,
    max_tokens: usize,
) -> Result<Value, ApiError> {
    let tok = &*lm.tokenizer;
    let fail = |e: crate::eval::EvalError| ApiError::invalid("text", crate::error_chain(&e));
    let too_long = |n: usize| {
        ApiError::invalid(
            "text",
            format!("the text has {n} tokens; this server scores at most {max_tokens}"),
        )
    };
    let mut scored = match (&req.text, &req.ids) {
        (Some(text), None) => {
            let n = tok
                .encode(text)
                .map_err(|e| ApiError::invalid("text", crate::error_chain(&e)))?
                .len();
            if n > max_tokens {
                return Err(too_long(n));
            }
            crate::with_model!(&lm.model, m => {
                let spec = WindowSpec::new(None, None, m.max_context()).map_err(fail)?;
                score_text(m, tok, None, text, &spec, req.top_k).map_err(fail)?
            })
        }
        (None, Some(ids)) => {
            if ids.len() > max_tokens {
                return Err(too_long(ids.len()));
            }
            let vocab = tok.vocab_size();
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
                return Err(ApiError::invalid(
                    "ids",
                    format!("token id {bad} is outside the vocabulary of {vocab} tokens"),
                ));
            }
            let raw = crate::with_model!(&lm.model, m => {
                let spec = WindowSpec::new(None, None, m.max_context()).map_err(fail)?;
                score_ids(m, &[], ids, &spec, req.top_k).map_err(fail)?
            });
            from_ids(tok, ids, raw)
        }
        _ => {
            return Err(ApiError::invalid(
                "text",
                "give exactly one of `text` or `ids`",
            ))
        }
    };
    scored.context = None;
    let token_bytes: Vec<usize> = scored
        .tokens
        .iter()
        .map(|t| tok.token_bytes(t.id).map_or(0, |b| b.len()))
        .collect();
    let mut v = serde_json::to_value(&scored).map_err(|e| ApiError::internal(e.to_string()))?;
    v["model"] = json!(name);
    v["tokenizer"] = json!(tok.kind());
    v["token_bytes"] = json!(token_bytes);
    Ok(v)
}

/// A [`crate::eval::TextScore`] for ids scored as they are: the text is their decoding,
/// the bytes theirs.
fn from_ids(
    tok: &dyn Tokenizer,
    ids: &[u32],
    raw: Vec<crate::eval::score::IdScore>,
) -> crate::eval::TextScore {
    let tokens = crate::eval::score::token_scores(tok, raw);
    let bytes: u64 = ids
        .iter()
        .map(|&t| tok.token_bytes(t).map_or(0, |b| b.len() as u64))
        .sum();
    let text = tok.decode(ids).unwrap_or_default();
    let joint: f64 = tokens.iter().map(|t| t.logprob).sum();
    let totals = Totals {
        nll: -joint,
        tokens: tokens.len() as u64,
        bytes,
        words: crate::eval::metrics::count_words(&text),
    };
    crate::eval::TextScore {
        context: None,
        text,
        context_tokens: 0,
        tokens,
        joint_logprob: joint,
        totals,
        metrics: totals.metrics(),
    }
}

/// The Generate panel's settings: `arlm generate`'s flags and defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GenerateRequest {
    model: Option<String>,
    prompt: String,
    /// "sample", "greedy" or "beam".
    method: String,
    max_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    typical_p: f32,
    repeat_penalty: f32,
    repeat_last_n: usize,
    presence_penalty: f32,
    frequency_penalty: f32,
    seed: u64,
    beams: usize,
    length_penalty: f32,
    ignore_eot: bool,
    /// Tokens shown in the per-stage bars.
    show: usize,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        let d = SamplerConfig::default();
        GenerateRequest {
            model: None,
            prompt: String::new(),
            method: "sample".into(),
            max_tokens: 64,
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            min_p: d.min_p,
            typical_p: d.typical_p,
            repeat_penalty: d.repeat_penalty,
            repeat_last_n: d.penalty_last_n,
            presence_penalty: d.presence_penalty,
            frequency_penalty: d.frequency_penalty,
            seed: 0,
            beams: 4,
            length_penalty: 1.0,
            ignore_eot: false,
            show: 8,
        }
    }
}

impl GenerateRequest {
    fn sampler(&self) -> Result<SamplerConfig, ApiError> {
        let temperature = match self.method.as_str() {
            "greedy" => 0.0,
            "sample" | "beam" => self.temperature,
            other => {
                return Err(ApiError::invalid(
                    "method",
                    format!("unknown method {other:?}; use greedy, sample or beam"),
                ))
            }
        };
        Ok(SamplerConfig {
            temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_last_n: self.repeat_last_n,
            seed: self.seed,
            ..SamplerConfig::default()
        })
    }
}

/// One server-sent event of the generation stream.
type Out = mpsc::UnboundedSender<Value>;

pub async fn generate(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: GenerateRequest = parse(body)?;
    let lm = loaded(&st, req.model.as_deref())?;
    let limits = &st.opts.limits;
    if req.max_tokens == 0 || req.max_tokens > limits.max_tokens {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("must be 1 to {}", limits.max_tokens),
        ));
    }
    if req.show == 0 || req.show > 64 {
        return Err(ApiError::invalid("show", "must be 1 to 64"));
    }
    let cfg = req.sampler()?;
    let vocab = lm.tokenizer.vocab_size();
    cfg.validate(vocab)
        .map_err(|e| ApiError::invalid("sampler", crate::error_chain(&e)))?;
    let ids = prompt_ids(&*lm.tokenizer, &req.prompt)?;
    if ids.len() > limits.max_prompt_tokens {
        return Err(ApiError::invalid(
            "prompt",
            format!("at most {} prompt tokens", limits.max_prompt_tokens),
        ));
    }
    let slot = RUNNING
        .acquire()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel::<Value>();
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let res = crate::with_model!(&lm.model, m => run_generation(m, &*lm.tokenizer, &req, cfg, &ids, &tx));
        if let Err(e) = res {
            let _ = tx.send(json!({"type": "error", "message": e}));
        }
    });
    let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx)
        .map(|v| Ok::<_, Infallible>(SseEvent::default().data(v.to_string())));
    Ok(Sse::new(events).into_response())
}

/// The prompt's ids as `arlm generate` makes them: a sentence-level tokenizer's closing
/// end-of-text is dropped unless the prompt ends with a newline.
fn prompt_ids(tok: &dyn Tokenizer, prompt: &str) -> Result<Vec<u32>, ApiError> {
    let mut ids = tok
        .encode(prompt)
        .map_err(|e| ApiError::invalid("prompt", crate::error_chain(&e)))?;
    if ids.last() == Some(&tok.eot_token()) && !prompt.ends_with('\n') {
        ids.pop();
    }
    Ok(ids)
}

fn run_generation<M: LanguageModel>(
    model: &M,
    tok: &dyn Tokenizer,
    req: &GenerateRequest,
    cfg: SamplerConfig,
    prompt: &[u32],
    tx: &Out,
) -> Result<(), String> {
    let err = |e: generate::GenerateError| crate::error_chain(&e);
    if req.method == "beam" {
        let bc = BeamConfig {
            num_beams: req.beams,
            num_return: req.beams.min(4),
            length_penalty: req.length_penalty,
            max_tokens: req.max_tokens,
            eot: (!req.ignore_eot).then(|| tok.eot_token()),
        };
        let hyps = beam_search(model, prompt, &bc).map_err(err)?;
        let list: Vec<Value> = hyps
            .iter()
            .map(|h| {
                let body = if h.ended_with_eot {
                    &h.tokens[..h.tokens.len() - 1]
                } else {
                    &h.tokens[..]
                };
                json!({
                    "text": tok.decode(body).unwrap_or_default(),
                    "tokens": h.tokens.len(),
                    "logprob": h.logprob,
                    "score": h.score,
                    "finish": if h.ended_with_eot { "eot" } else { "length" },
                })
            })
            .collect();
        let best = list.first().cloned().unwrap_or(json!({}));
        let _ = tx.send(json!({"type": "text", "text": best["text"]}));
        let _ = tx.send(json!({"type": "done", "finish": best["finish"],
            "total_logprob": best["logprob"], "tokens": best["tokens"], "beams": list}));
        return Ok(());
    }
    let vocab = model.vocab_size();
    let (step_tx, step_rx) = std::sync::mpsc::channel::<StepTrace>();
    let mut sampler = Tracing::sampler(
        &cfg,
        vocab,
        req.show,
        Box::new(move |s| {
            let _ = step_tx.send(s);
        }),
    )
    .map_err(err)?;
    let opts = GenerateOptions {
        max_tokens: req.max_tokens,
        stop: Vec::new(),
        stop_at_eot: !req.ignore_eot,
        sampler: cfg,
    };
    let session = Session::new(model, prompt).map_err(err)?;
    let send_steps = |rx: &std::sync::mpsc::Receiver<StepTrace>| {
        for s in rx.try_iter() {
            let _ = tx.send(step_event(tok, &s));
        }
    };
    let gen = generate::generate(session, tok, &mut sampler, &opts, &mut |text| {
        send_steps(&step_rx);
        tx.send(json!({"type": "text", "text": text}))
            .map_err(|_| std::io::Error::other("the client went away"))
    })
    .map_err(err)?;
    send_steps(&step_rx);
    let _ = tx.send(json!({
        "type": "done",
        "finish": gen.finish_reason.as_str(),
        "total_logprob": gen.total_logprob,
        "tokens": gen.tokens.len(),
        "text": gen.text,
    }));
    Ok(())
}

fn step_event(tok: &dyn Tokenizer, s: &StepTrace) -> Value {
    let shown: Vec<String> = s.shown.iter().map(|&id| piece(tok, id)).collect();
    json!({
        "type": "step",
        "shown": s.shown,
        "pieces": shown,
        "stages": s.stages,
        "chosen": s.chosen,
        "chosen_piece": piece(tok, s.chosen),
        "chosen_logprob": s.chosen_logprob,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExposureRequest {
    model: Option<String>,
    prompts: usize,
    prefix: usize,
    /// 0: as long as the context allows (at most 48).
    length: usize,
    seed: u64,
}

impl Default for ExposureRequest {
    fn default() -> Self {
        ExposureRequest {
            model: None,
            prompts: 32,
            prefix: 8,
            length: 0,
            seed: 0,
        }
    }
}

pub async fn exposure(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: ExposureRequest = parse(body)?;
    let lm = loaded(&st, req.model.as_deref())?;
    if !has_exact_source(&lm) {
        return Err(ApiError::invalid(
            "model",
            format!(
                "this model's tokenizer is {} with {} ids; the exact source (the synthetic corpus) is over bytes (257 ids): exposure bias under the truth needs a model trained on it",
                lm.tokenizer.kind(),
                lm.tokenizer.vocab_size()
            ),
        ));
    }
    if req.prompts == 0 || req.prompts > 256 {
        return Err(ApiError::invalid("prompts", "must be 1 to 256"));
    }
    let ctx = crate::with_model!(&lm.model, m => m.max_context());
    let room = ctx.unwrap_or(usize::MAX).saturating_sub(req.prefix);
    let length = if req.length == 0 {
        room.min(48)
    } else {
        req.length
    };
    if length == 0 || length > 512 || length > room {
        return Err(ApiError::invalid(
            "length",
            format!(
                "prefix {} + length must fit the model's context ({}) and length be 1 to 512",
                req.prefix,
                ctx.map_or("unbounded".into(), |c| c.to_string())
            ),
        ));
    }
    let _slot = RUNNING
        .acquire()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let opts = ExposureOptions {
        prefix_len: req.prefix,
        length,
        seed: req.seed,
    };
    tokio::task::spawn_blocking(move || {
        let src = SynthSource::new();
        let fail = |e: crate::model::ModelError| ApiError::internal(crate::error_chain(&e));
        let prompts =
            exposure::sample_prompts(&src, req.prompts, opts.prefix_len + opts.length, opts.seed)
                .map_err(fail)?;
        let report =
            crate::with_model!(&lm.model, m => exposure::measure(Some(&src), m, &prompts, opts))
                .map_err(fail)?;
        serde_json::to_value(&report).map_err(|e| ApiError::internal(e.to_string()))
    })
    .await
    .map_err(|e| ApiError::internal(format!("exposure failed: {e}")))?
    .map(Json)
}
