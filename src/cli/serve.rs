//! `arlm serve`: the OpenAI-compatible HTTP server (see `arlm::serve`).

use anyhow::{bail, Context, Result};
use arlm::serve::{self, AppState, ServeOptions};
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
pub struct Args {
    /// A model to serve: a directory (named after it) or NAME=DIR; repeatable. The first
    /// is the default for requests that name no model.
    #[arg(long, required = true)]
    pub model: Vec<String>,
    /// Address to listen on (loopback by default: the server has no TLS).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0 picks a free one; the startup line says which).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Compute threads for the models (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Most sequences of one model decoded together in a step.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Requests per model admitted beyond the batch; more get 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Require `Authorization: Bearer KEY` on every request but /health.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Most prompt tokens fed between two decode steps (long prompts go in chunks).
    #[arg(long, default_value_t = 512)]
    pub prefill_chunk: usize,
    /// Longest prompt accepted, in tokens.
    #[arg(long, default_value_t = 8192)]
    pub max_prompt_tokens: usize,
    /// Largest max_tokens accepted.
    #[arg(long, default_value_t = 4096)]
    pub max_tokens: usize,
    /// Largest n accepted.
    #[arg(long, default_value_t = 16)]
    pub max_n: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub body_limit: usize,
    /// How a GPT stores its matmul weights for inference (f32, f16, bf16, q8, w8a8).
    #[arg(long, default_value = "f32")]
    pub weights: arlm::model::gpt::WeightFormat,
}

/// Splits `NAME=DIR` (or `DIR`, named after its last component).
fn model_spec(spec: &str) -> (String, PathBuf) {
    match spec.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !name.contains('/') => {
            (name.to_string(), PathBuf::from(dir))
        }
        _ => {
            let path = PathBuf::from(spec);
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| spec.to_string());
            (name, path)
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.max_batch == 0 {
        bail!("--max-batch must be at least 1");
    }
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("--threads: setting up the thread pool")?;
    }
    let mut models = Vec::new();
    for spec in &args.model {
        let (name, path) = model_spec(spec);
        if models.iter().any(|(n, _)| n == &name) {
            bail!("--model {spec}: the name {name:?} is given twice");
        }
        let mut loaded = arlm::load::load(&path)
            .with_context(|| format!("--model {spec}: loading {}", path.display()))?;
        loaded
            .set_weight_format(args.weights)
            .with_context(|| format!("--model {spec}"))?;
        eprintln!("arlm serve: model {name}: {}", loaded.describe());
        models.push((name, loaded));
    }
    let mut opts = ServeOptions {
        api_key: args.api_key.clone(),
        queue: args.queue,
        body_limit: args.body_limit,
        ..ServeOptions::default()
    };
    opts.engine.max_batch = args.max_batch;
    opts.engine.prefill_chunk = args.prefill_chunk;
    opts.limits.max_prompt_tokens = args.max_prompt_tokens;
    opts.limits.max_tokens = args.max_tokens;
    opts.limits.max_n = args.max_n;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let state = AppState::new(models, opts).context("starting the model workers")?;
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("--host/--port: cannot listen on {addr}"))?;
        let local = listener.local_addr().context("reading the bound address")?;
        eprintln!("arlm serve: listening on http://{local}/v1 (Ctrl-C to stop)");
        eprintln!("arlm serve: the chain-rule explorer is at http://{local}/");
        serve::serve(state, listener, serve::shutdown_signal())
            .await
            .context("serving")?;
        eprintln!("arlm serve: stopped");
        Ok(())
    })
}
