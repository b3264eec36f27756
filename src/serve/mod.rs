//! `arlm serve`: an OpenAI-compatible completions server that generates and scores.
//!
//! Endpoints: `POST /v1/completions` (OpenAI's shapes, plus llama.cpp's sampler fields;
//! `echo` with `logprobs` returns the prompt's per-token log-probs, so clients such as
//! lm-evaluation-harness score text through it), `GET /v1/models`, `POST /tokenize`,
//! `POST /detokenize` (llama.cpp), `GET /tokenizer_info` (vLLM), `GET /health`,
//! `GET /metrics` (Prometheus text), and the chain-rule explorer page at `/` with its
//! `/explorer/*` endpoints ([`explorer`]).
//!
//! Layout: [`api`] request/response types and validation, [`error`] OpenAI-shaped
//! errors, [`routes`] the handlers, [`engine`] the per-model batching worker,
//! [`metrics`] the counters.
//!
//! # Why tokio + axum
//! HTTP/1.1 parsing, keep-alive, body limits, server-sent events and graceful shutdown
//! are solved problems; axum (on hyper and tokio) is the maintained, widely used Rust
//! stack for them, and tokio's signal handling gives Ctrl-C / SIGTERM shutdown. The
//! async side only parses, validates and relays: the model runs on one plain OS thread
//! per model ([`engine`]), which batches the decode steps of all concurrent requests, so
//! the CPU-bound work never blocks the async runtime and uses rayon (the GPT's kernels)
//! as the CLI does.
//!
//! # Conditioning
//! As everywhere in arlm, a prompt is conditioned on the model's BOS token; a prompt
//! whose first token id already is BOS (lm-evaluation-harness sends its prefix token)
//! is not given a second one. With `echo`, the first echoed token's log-prob is null (as
//! OpenAI reports it) and every later one is exactly what `arlm score` gives.

pub mod api;
pub mod engine;
pub mod error;
pub mod explorer;
pub mod metrics;
pub mod routes;

use crate::load::LoadedModel;
use api::Limits;
use engine::{EngineOptions, Worker};
use metrics::Metrics;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Server settings (the `arlm serve` flags).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Bearer token every request but `/health` must carry.
    pub api_key: Option<String>,
    pub limits: Limits,
    pub engine: EngineOptions,
    /// Requests per model admitted beyond the batch before new ones get 429.
    pub queue: usize,
    /// Largest request body in bytes.
    pub body_limit: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            api_key: None,
            limits: Limits::default(),
            engine: EngineOptions {
                max_batch: 16,
                prefill_chunk: 512,
            },
            queue: 64,
            body_limit: 4 << 20,
        }
    }
}

/// One served model: the model, its worker, its admission counter.
pub struct ServedModel {
    pub name: String,
    pub loaded: Arc<LoadedModel>,
    worker: Mutex<Worker>,
    waiting: Arc<AtomicU64>,
    /// Requests admitted and not finished.
    in_flight: AtomicUsize,
}

/// Everything the handlers share.
pub struct AppState {
    pub models: Vec<ServedModel>,
    pub opts: ServeOptions,
    pub metrics: Arc<Metrics>,
    pub created: u64,
    next_id: AtomicU64,
    draining: AtomicBool,
}

impl AppState {
    /// Starts one worker per model. `models` are (name, model) pairs, the first is the
    /// default.
    pub fn new(
        models: Vec<(String, LoadedModel)>,
        opts: ServeOptions,
    ) -> std::io::Result<Arc<AppState>> {
        let metrics = Arc::new(Metrics::default());
        let mut served = Vec::new();
        for (name, loaded) in models {
            let loaded = Arc::new(loaded);
            let (lm, m2, eo) = (loaded.clone(), metrics.clone(), opts.engine);
            let worker = Worker::spawn(
                &name,
                move |rx, waiting| crate::with_model!(&lm.model, m => engine::run_worker(m, &*lm.tokenizer, rx, eo, &waiting, &m2)),
            )?;
            served.push(ServedModel {
                name,
                waiting: worker.waiting.clone(),
                loaded,
                worker: Mutex::new(worker),
                in_flight: AtomicUsize::new(0),
            });
        }
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Arc::new(AppState {
            models: served,
            opts,
            metrics,
            created,
            next_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
        }))
    }

    /// The model called `name` (None: the first one).
    pub fn model(&self, name: Option<&str>) -> Result<&ServedModel, error::ApiError> {
        match name {
            None | Some("") => Ok(&self.models[0]),
            Some(n) => self.models.iter().find(|m| m.name == n).ok_or_else(|| {
                let known: Vec<String> = self.models.iter().map(|m| m.name.clone()).collect();
                error::ApiError::unknown_model(n, &known)
            }),
        }
    }

    /// A fresh request number (ids, default seeds).
    pub fn next_request(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sequences waiting in every model's queue.
    pub fn queue_depth(&self) -> u64 {
        self.models
            .iter()
            .map(|m| m.waiting.load(Ordering::Relaxed))
            .sum()
    }

    /// Stops admitting requests (they get 503) ahead of shutdown.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Stops the workers after they finish the work in hand.
    pub fn stop_workers(&self) {
        for m in &self.models {
            m.worker.lock().unwrap_or_else(|p| p.into_inner()).finish();
        }
    }
}

/// Serves on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests finish, and stops the workers.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = routes::router(state.clone());
    let st = state.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            st.drain();
        })
        .await?;
    let st = state.clone();
    tokio::task::spawn_blocking(move || st.stop_workers())
        .await
        .map_err(std::io::Error::other)?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
