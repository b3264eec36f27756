//! The HTTP handlers.

use super::api::{
    Choice, Completion, CompletionRequest, DetokenizeRequest, Logprobs, PromptField, Settings,
    TokenizeRequest, Usage,
};
use super::engine::{Event, GenRequest, Job, TokenInfo};
use super::error::ApiError;
use super::{AppState, ServedModel};
use crate::eval::score::{piece, score_ids};
use crate::eval::WindowSpec;
use crate::model::LanguageModel;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Every route, with the API-key check (all but `/health`), the body limit and the
/// panic guard (a panicking handler answers 500; the server goes on).
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.opts.body_limit;
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/tokenizer_info", get(tokenizer_info))
        .route("/metrics", get(metrics_text))
        .merge(super::explorer::api_routes())
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .route("/health", get(health))
        .merge(super::explorer::page_routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .with_state(state)
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = super::engine::panic_message(&panic);
    eprintln!("arlm serve: a request handler panicked: {what}");
    ApiError::internal(format!("internal error: {what}")).into_response()
}

async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.opts.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            st.metrics.count_status(401);
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: Some("not_found"),
        param: None,
        ..ApiError::invalid("", "no such endpoint")
    }
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics_text(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(st.queue_depth()),
    )
        .into_response()
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|m| {
            let (ctx, vocab) =
                crate::with_model!(&m.loaded.model, x => (x.max_context(), x.vocab_size()));
            json!({
                "id": m.name,
                "object": "model",
                "created": st.created,
                "owned_by": "arlm",
                "max_model_len": ctx,
                "vocab_size": vocab,
                "description": m.loaded.describe(),
            })
        })
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// Parses a JSON body whatever its Content-Type says (curl's `-d` sends a form type;
/// llama.cpp's server accepts that too).
pub(super) fn parse<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_body(format!("invalid request body: {e}")))
}

/// Encodes `text`, reading the end-of-text token's own text as that token (what
/// lm-evaluation-harness's remote tokenizer expects when it asks for the EOS id).
fn encode_with_special(
    tok: &dyn crate::tokenizer::Tokenizer,
    text: &str,
) -> Result<Vec<u32>, ApiError> {
    let eot = tok.eot_token();
    let eot_text = tok.decode(&[eot]).unwrap_or_default();
    let enc = |s: &str| {
        tok.encode(s)
            .map_err(|e| ApiError::invalid("prompt", crate::error_chain(&e)))
    };
    if eot_text.is_empty() {
        return enc(text);
    }
    let mut out = Vec::new();
    for (i, part) in text.split(eot_text.as_str()).enumerate() {
        if i > 0 {
            out.push(eot);
        }
        if !part.is_empty() {
            out.extend(enc(part)?);
        }
    }
    Ok(out)
}

async fn tokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: TokenizeRequest = parse(body)?;
    let m = st.model(req.model.as_deref())?;
    let tok = &*m.loaded.tokenizer;
    let text = req
        .content
        .or(req.prompt)
        .ok_or_else(|| ApiError::invalid("content", "give the text as `content` (or `prompt`)"))?;
    let ids = encode_with_special(tok, &text)?;
    let ctx = crate::with_model!(&m.loaded.model, x => x.max_context());
    let tokens: Value = if req.with_pieces {
        ids.iter()
            .map(|&id| json!({"id": id, "piece": piece(tok, id)}))
            .collect()
    } else {
        json!(ids)
    };
    Ok(Json(
        json!({"tokens": tokens, "count": ids.len(), "max_model_len": ctx}),
    ))
}

async fn detokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let req: DetokenizeRequest = parse(body)?;
    let m = st.model(req.model.as_deref())?;
    let tok = &*m.loaded.tokenizer;
    let text = tok
        .decode(&req.tokens)
        .map_err(|e| ApiError::invalid("tokens", crate::error_chain(&e)))?;
    Ok(Json(json!({"content": text, "prompt": text})))
}

async fn tokenizer_info(State(st): State<Arc<AppState>>) -> Json<Value> {
    let m = &st.models[0];
    let tok = &*m.loaded.tokenizer;
    let eot = tok.decode(&[tok.eot_token()]).unwrap_or_default();
    let ctx = crate::with_model!(&m.loaded.model, x => x.max_context());
    Json(json!({
        "tokenizer_class": tok.kind(),
        "vocab_size": tok.vocab_size(),
        "model_max_length": ctx,
        "eos_token": eot,
        "bos_token": eot,
        "pad_token": Value::Null,
        "add_bos_token": false,
        "chat_template": Value::Null,
    }))
}

/// Decrements the admission counters when the request ends, however it ends.
struct Admission {
    st: Arc<AppState>,
    model: usize,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.st.models[self.model]
            .in_flight
            .fetch_sub(1, Ordering::SeqCst);
        self.st.metrics.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn admit(st: &Arc<AppState>, model: usize) -> Result<Admission, ApiError> {
    let m = &st.models[model];
    let cap = st.opts.engine.max_batch + st.opts.queue;
    let prev = m.in_flight.fetch_add(1, Ordering::SeqCst);
    if prev >= cap {
        m.in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::overloaded(st.opts.queue));
    }
    st.metrics.in_flight.fetch_add(1, Ordering::SeqCst);
    Ok(Admission {
        st: st.clone(),
        model,
    })
}

/// One prompt of a request: its ids as given and its text.
struct Prompt {
    ids: Vec<u32>,
    text: String,
}

fn resolve_prompts(
    field: Option<&PromptField>,
    m: &ServedModel,
    limits: &super::api::Limits,
) -> Result<Vec<Prompt>, ApiError> {
    let tok = &*m.loaded.tokenizer;
    let vocab = tok.vocab_size();
    let from_text = |t: &String| -> Result<Prompt, ApiError> {
        let ids = tok
            .encode(t)
            .map_err(|e| ApiError::invalid("prompt", crate::error_chain(&e)))?;
        Ok(Prompt {
            ids,
            text: t.clone(),
        })
    };
    let from_ids = |ids: &Vec<u32>| -> Result<Prompt, ApiError> {
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(ApiError::invalid(
                "prompt",
                format!("token id {bad} is outside the vocabulary of {vocab} tokens"),
            ));
        }
        let text = tok.decode(ids).unwrap_or_default();
        Ok(Prompt {
            ids: ids.clone(),
            text,
        })
    };
    let prompts = match field {
        None => vec![from_text(&String::new())?],
        Some(PromptField::Text(t)) => vec![from_text(t)?],
        Some(PromptField::Texts(v)) => v.iter().map(from_text).collect::<Result<_, _>>()?,
        Some(PromptField::Ids(v)) => vec![from_ids(v)?],
        Some(PromptField::IdLists(v)) => v.iter().map(from_ids).collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt list is empty"));
    }
    for p in &prompts {
        if p.ids.len() > limits.max_prompt_tokens {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "the prompt has {} tokens; this server accepts at most {}",
                    p.ids.len(),
                    limits.max_prompt_tokens
                ),
            ));
        }
    }
    Ok(prompts)
}

/// The ids after the conditioning BOS (a leading BOS in the prompt is that BOS).
fn after_bos(ids: &[u32], bos: u32) -> &[u32] {
    match ids.split_first() {
        Some((&first, rest)) if first == bos => rest,
        _ => ids,
    }
}

/// A choice being assembled: its text so far, its log-probs, the character offset of
/// the next token.
#[derive(Clone)]
struct ChoiceAcc {
    text: String,
    logprobs: Option<Logprobs>,
    offset: usize,
    finish: Option<&'static str>,
}

impl ChoiceAcc {
    fn push_token(&mut self, t: &TokenInfo) {
        let off = self.offset;
        if let Some(lp) = &mut self.logprobs {
            let top = top_map(t.top.iter().map(|(p, l)| (p.clone(), *l as f64)));
            lp.push(&t.piece, Some(t.logprob as f64), Some(top), off);
        }
        self.offset += t.piece.chars().count();
    }
}

/// OpenAI's `{piece: logprob}` map of the alternatives, most probable first; two tokens
/// with the same text (e.g. bytes of an incomplete character) keep the more probable.
fn top_map(items: impl Iterator<Item = (String, f64)>) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for (k, v) in items {
        m.entry(k).or_insert(v);
    }
    m
}

/// The echoed prompt of each choice: text and (with `logprobs`) per-token log-probs
/// scored exactly as `arlm score` scores them.
fn echo_part(m: &ServedModel, p: &Prompt, logprobs: Option<usize>) -> Result<ChoiceAcc, ApiError> {
    let tok = &*m.loaded.tokenizer;
    let mut acc = ChoiceAcc {
        text: p.text.clone(),
        logprobs: None,
        offset: p.text.chars().count(),
        finish: None,
    };
    let Some(k) = logprobs else {
        return Ok(acc);
    };
    let mut lp = Logprobs::default();
    if !p.ids.is_empty() {
        let scores = crate::with_model!(&m.loaded.model, x => {
            let bos = x.bos_token();
            let spec = WindowSpec::new(None, None, x.max_context())
                .map_err(|e| ApiError::internal(crate::error_chain(&e)))?;
            let ids = after_bos(&p.ids, bos);
            let skip = usize::from(ids.len() == p.ids.len());
            score_ids(x, &[], ids, &spec, k)
                .map(|s| s.into_iter().skip(skip).collect::<Vec<_>>())
                .map_err(|e| ApiError::internal(crate::error_chain(&e)))?
        });
        let mut off = 0;
        let first = piece(tok, p.ids[0]);
        lp.push(&first, None, None, off);
        off += first.chars().count();
        for (s, &id) in scores.iter().zip(&p.ids[1..]) {
            let pc = piece(tok, id);
            let top = top_map(s.top.iter().map(|&(t, l)| (piece(tok, t), l)));
            lp.push(&pc, Some(s.logprob), Some(top), off);
            off += pc.chars().count();
        }
    }
    acc.logprobs = Some(lp);
    Ok(acc)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    match completions_inner(&st, body, started).await {
        Ok(r) => r,
        Err(e) => {
            st.metrics.count_status(e.status.as_u16());
            e.into_response()
        }
    }
}

async fn completions_inner(
    st: &Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    started: Instant,
) -> Result<Response, ApiError> {
    let req: CompletionRequest = parse(body)?;
    if st.draining.load(Ordering::SeqCst) {
        return Err(ApiError::shutting_down());
    }
    let m = st.model(req.model.as_deref())?;
    let model_idx = st.models.iter().position(|x| x.name == m.name).unwrap_or(0);
    let (vocab, ctx, bos) =
        crate::with_model!(&m.loaded.model, x => (x.vocab_size(), x.max_context(), x.bos_token()));
    let id = st.next_request();
    // Without a seed each request gets its own: the request number and the clock.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let settings = req.settings(&st.opts.limits, vocab, nanos ^ id.rotate_left(32))?;
    let prompts = resolve_prompts(req.prompt.as_ref(), m, &st.opts.limits)?;
    if settings.max_tokens > 0 {
        if let Some(c) = ctx {
            for p in &prompts {
                let len = after_bos(&p.ids, bos).len();
                if len + 1 >= c {
                    return Err(ApiError::invalid(
                        "prompt",
                        format!(
                            "the prompt has {len} tokens; with the conditioning token it fills the model's context of {c} tokens and leaves no room to generate (send max_tokens 0 with echo to score it)"
                        ),
                    ));
                }
            }
        }
    }
    let admission = admit(st, model_idx)?;
    let prompt_tokens: usize = prompts.iter().map(|p| p.ids.len()).sum();
    st.metrics
        .prompt_tokens
        .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
    let n = settings.n;
    // The starting point of every choice: the echoed prompt, or nothing.
    let mut accs: Vec<ChoiceAcc> = Vec::with_capacity(prompts.len() * n);
    for p in &prompts {
        let base = if settings.echo {
            let st2 = st.clone();
            let prompt = Prompt {
                ids: p.ids.clone(),
                text: p.text.clone(),
            };
            let k = settings.logprobs;
            tokio::task::spawn_blocking(move || echo_part(&st2.models[model_idx], &prompt, k))
                .await
                .map_err(|e| ApiError::internal(format!("scoring failed: {e}")))??
        } else {
            ChoiceAcc {
                text: String::new(),
                logprobs: settings.logprobs.map(|_| Logprobs::default()),
                offset: p.text.chars().count(),
                finish: None,
            }
        };
        let base = ChoiceAcc {
            logprobs: settings
                .logprobs
                .map(|_| base.logprobs.clone().unwrap_or_default()),
            ..base
        };
        for _ in 0..n {
            accs.push(base.clone());
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    if settings.max_tokens > 0 {
        for (i, p) in prompts.iter().enumerate() {
            let job = Job {
                req: GenRequest {
                    prompt: after_bos(&p.ids, bos).to_vec(),
                    max_tokens: settings.max_tokens,
                    stop: settings.stop.clone(),
                    sampler: settings.sampler.clone(),
                    n,
                    logprobs: settings.logprobs,
                    first_choice: i * n,
                    stop_at_eot: settings.stop_at_eot,
                },
                tx: tx.clone(),
                admitted: Instant::now(),
            };
            let ok = m
                .worker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .submit(job);
            if !ok {
                return Err(ApiError::shutting_down());
            }
        }
    } else {
        for a in &mut accs {
            a.finish = Some("length");
        }
    }
    drop(tx);
    let head = Head {
        id: format!("cmpl-{id}"),
        created: unix_now(),
        model: m.name.clone(),
        prompt_tokens,
    };
    if settings.stream {
        Ok(stream_response(
            st.clone(),
            head,
            accs,
            rx,
            settings,
            admission,
            started,
        ))
    } else {
        let resp = collect(head, accs, rx).await?;
        drop(admission);
        st.metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        st.metrics.count_status(200);
        Ok(Json(resp).into_response())
    }
}

/// What every chunk of one response shares.
struct Head {
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
}

impl Head {
    fn completion(&self, choices: Vec<Choice>, usage: Option<Usage>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }

    fn usage(&self, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
        }
    }
}

/// Waits for every choice to finish and builds the response.
async fn collect(
    head: Head,
    mut accs: Vec<ChoiceAcc>,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<Completion, ApiError> {
    let mut completion_tokens = 0;
    let mut open = accs.iter().filter(|a| a.finish.is_none()).count();
    while open > 0 {
        match rx.recv().await {
            Some(Event::Token {
                choice,
                text,
                token,
            }) => {
                completion_tokens += 1;
                let a = &mut accs[choice];
                a.push_token(&token);
                a.text.push_str(&text);
            }
            Some(Event::Done {
                choice,
                text,
                finish,
            }) => {
                let a = &mut accs[choice];
                a.text.push_str(&text);
                a.finish = Some(finish_str(finish));
                open -= 1;
            }
            Some(Event::Failed(e)) => return Err(e),
            None => return Err(ApiError::internal("the model worker stopped")),
        }
    }
    let choices = accs
        .into_iter()
        .enumerate()
        .map(|(index, a)| Choice {
            text: a.text,
            index,
            logprobs: a.logprobs,
            finish_reason: a.finish,
        })
        .collect();
    let usage = head.usage(completion_tokens);
    Ok(head.completion(choices, Some(usage)))
}

/// OpenAI has no separate end-of-text reason: it is "stop".
fn finish_str(f: crate::generate::FinishReason) -> &'static str {
    match f {
        crate::generate::FinishReason::Length => "length",
        _ => "stop",
    }
}

fn sse_json(v: &impl serde::Serialize) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(v).unwrap_or_default())
}

/// Streams the completion as server-sent events: one chunk per token (its text delta and
/// log-probs), a last chunk per choice with its finish reason, a usage chunk if asked,
/// then `data: [DONE]`. A client that goes away ends the relay task, which drops the
/// worker's channel: the worker sees it at the next step and frees the slots.
fn stream_response(
    st: Arc<AppState>,
    head: Head,
    accs: Vec<ChoiceAcc>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    settings: Settings,
    admission: Admission,
    started: Instant,
) -> Response {
    let (out, out_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    tokio::spawn(async move {
        let _admission = admission;
        let mut accs = accs;
        let send = |e: SseEvent| {
            let out = out.clone();
            async move { out.send(Ok(e)).await.is_ok() }
        };
        // Echoed prompts (and choices already finished: max_tokens 0) come first.
        for (index, a) in accs.iter().enumerate() {
            if a.text.is_empty()
                && a.finish.is_none()
                && a.logprobs.as_ref().is_none_or(|l| l.tokens.is_empty())
            {
                continue;
            }
            let c = Choice {
                text: a.text.clone(),
                index,
                logprobs: a.logprobs.clone(),
                finish_reason: a.finish,
            };
            if !send(sse_json(&head.completion(vec![c], None))).await {
                return;
            }
        }
        let mut completion_tokens = 0;
        let mut open = accs.iter().filter(|a| a.finish.is_none()).count();
        let mut failed = false;
        while open > 0 {
            let chunk = match rx.recv().await {
                Some(Event::Token {
                    choice,
                    text,
                    token,
                }) => {
                    completion_tokens += 1;
                    let lp = settings.logprobs.map(|_| {
                        let mut one = ChoiceAcc {
                            text: String::new(),
                            logprobs: Some(Logprobs::default()),
                            offset: accs[choice].offset,
                            finish: None,
                        };
                        one.push_token(&token);
                        one.logprobs.unwrap_or_default()
                    });
                    accs[choice].push_token(&token);
                    Choice {
                        text,
                        index: choice,
                        logprobs: lp,
                        finish_reason: None,
                    }
                }
                Some(Event::Done {
                    choice,
                    text,
                    finish,
                }) => {
                    open -= 1;
                    Choice {
                        text,
                        index: choice,
                        logprobs: settings.logprobs.map(|_| Logprobs::default()),
                        finish_reason: Some(finish_str(finish)),
                    }
                }
                Some(Event::Failed(e)) => {
                    st.metrics.count_status(e.status.as_u16());
                    let _ = send(sse_json(&e.body())).await;
                    failed = true;
                    break;
                }
                None => {
                    let e = ApiError::internal("the model worker stopped");
                    st.metrics.count_status(500);
                    let _ = send(sse_json(&e.body())).await;
                    failed = true;
                    break;
                }
            };
            if !send(sse_json(&head.completion(vec![chunk], None))).await {
                return;
            }
        }
        if !failed {
            if settings.include_usage {
                let u = head.usage(completion_tokens);
                if !send(sse_json(&head.completion(Vec::new(), Some(u)))).await {
                    return;
                }
            }
            st.metrics
                .request_seconds
                .observe(started.elapsed().as_secs_f64());
            st.metrics.count_status(200);
        }
        let _ = send(SseEvent::default().data("[DONE]")).await;
    });
    Sse::new(tokio_stream::wrappers::ReceiverStream::new(out_rx)).into_response()
}
