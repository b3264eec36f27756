//! `arlm bench eval`: GPT scoring throughput, side by side with Hugging Face
//! transformers on the same checkpoint, the same token ids and the same sliding windows;
//! both NLLs are printed and must agree. When llama.cpp is built, llama-perplexity's
//! scoring speed on the same weights follows (a speed row: it scores the ids' text).

use anyhow::{bail, Context, Result};
use arlm::eval::evaluate::{score_documents, Document};
use arlm::eval::{Corpus, DocMode, EvalOptions, WindowSpec};
use arlm::model::gpt::{Gpt, GptConfig};
use arlm::model::LanguageModel;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// Flags of `arlm bench eval`.
#[derive(clap::Args)]
pub struct Args {
    /// A saved GPT-2 model directory (default: a random GPT-2-shaped model written to a
    /// temporary directory).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Layers of the random model.
    #[arg(long, default_value_t = 12)]
    layers: usize,
    /// Heads of the random model.
    #[arg(long, default_value_t = 12)]
    heads: usize,
    /// Embedding width of the random model.
    #[arg(long, default_value_t = 768)]
    embd: usize,
    /// Context (block size) of the random model.
    #[arg(long, default_value_t = 1024)]
    block: usize,
    /// Vocabulary of the random model.
    #[arg(long, default_value_t = 50257)]
    vocab: usize,
    /// Multiply the random weights by this, so predictions are far from uniform and the
    /// NLL comparison means something.
    #[arg(long, default_value_t = 2.0)]
    weight_scale: f32,
    /// Token ids to score (random, fixed seed).
    #[arg(long, default_value_t = 8192)]
    tokens: usize,
    /// Ids per model call (default: the model's block size).
    #[arg(long)]
    context: Option<usize>,
    /// New tokens per window (default: context - 1).
    #[arg(long)]
    stride: Option<usize>,
    /// Seed for the weights and the ids.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Python with torch + transformers (default: $ARLM_PEERS_PYTHON, else the peers venv).
    #[arg(long)]
    python: Option<PathBuf>,
    /// The reference script (default: tools/bench_eval_hf.py of this source tree).
    #[arg(long)]
    script: Option<PathBuf>,
    /// Windows per transformers forward call.
    #[arg(long, default_value_t = 1)]
    hf_batch: usize,
    /// Skip the references (transformers and llama.cpp).
    #[arg(long)]
    no_reference: bool,
    /// llama.cpp build (tools/build_llama_cpp.sh's output; default ~/.cache/arlm-llama):
    /// llama-perplexity's scoring speed on the same weights, when built there.
    #[arg(long)]
    llama: Option<PathBuf>,
}

/// Runs `arlm bench eval`.
pub fn run(args: Args) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("arlm-bench-eval-{}", std::process::id()));
    let result = run_in(&args, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(args: &Args, tmp: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let (model, dir) = match &args.model {
        Some(d) => (
            Gpt::load(d).with_context(|| format!("cannot load {}", d.display()))?,
            d.clone(),
        ),
        None => {
            let config = GptConfig {
                n_layer: args.layers,
                n_head: args.heads,
                n_embd: args.embd,
                block_size: args.block,
                vocab_size: args.vocab,
                dropout: 0.0,
                activation: Default::default(),
            };
            let mut m = Gpt::new(config, args.seed)?;
            for p in m.params_mut() {
                *p *= args.weight_scale;
            }
            let dir = tmp.join("model");
            m.save(&dir)?;
            (m, dir)
        }
    };
    let v = model.vocab_size();
    let bos = model.bos_token();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed ^ 0x5eed);
    let ids: Vec<u32> = (0..args.tokens)
        .map(|_| rng.random_range(0..v as u32))
        .collect();
    let spec = WindowSpec::new(args.context, args.stride, model.max_context())?;
    let window = spec.window.unwrap_or(args.tokens + 1);
    let corpus = Corpus {
        source: "random ids".into(),
        mode: DocMode::Stream,
        end_token: false,
        docs: vec![Document {
            ids: ids.clone(),
            bytes: 0,
            words: 0,
        }],
    };
    let mut opts = EvalOptions::new(spec);
    opts.resamples = 0;
    let threads = rayon::current_num_threads();
    println!(
        "model: {} | {} random ids, window {window}, stride {} | {threads} threads",
        model.describe(),
        args.tokens,
        spec.stride
    );
    let t0 = std::time::Instant::now();
    let lp = score_documents(&model, &corpus, &opts)?;
    let secs = t0.elapsed().as_secs_f64();
    let n = lp[0].len();
    let nll: f64 = -lp[0].iter().map(|&x| x as f64).sum::<f64>();
    println!(
        "arlm         {:>8} tokens  NLL/token {:.6}  {:>9.1} tokens/s  ({:.2} s)",
        n,
        nll / n as f64,
        n as f64 / secs,
        secs
    );
    if args.no_reference {
        return Ok(());
    }
    let ids_path = tmp.join("ids.u32");
    let bytes: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
    arlm::atomic::write_atomic(&ids_path, &bytes)?;
    let python = super::peers_python(args.python.as_deref());
    let script = args
        .script
        .clone()
        .unwrap_or_else(|| super::tool_script("bench_eval_hf.py"));
    let r: serde_json::Value = super::run_reference(
        &python,
        &script,
        &[
            "--model".into(),
            dir.display().to_string(),
            "--ids".into(),
            ids_path.display().to_string(),
            "--bos".into(),
            bos.to_string(),
            "--window".into(),
            window.to_string(),
            "--stride".into(),
            spec.stride.to_string(),
            "--batch".into(),
            args.hf_batch.to_string(),
            "--threads".into(),
            threads.to_string(),
        ],
    )
    .context("the transformers reference failed")?;
    let hf_nll = r["nll"].as_f64().unwrap_or(f64::NAN);
    let hf_n = r["tokens"].as_u64().unwrap_or(0) as usize;
    let hf_secs = r["seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "transformers {:>8} tokens  NLL/token {:.6}  {:>9.1} tokens/s  ({:.2} s, torch {}, {} threads)",
        hf_n,
        hf_nll / hf_n as f64,
        hf_n as f64 / hf_secs,
        hf_secs,
        r["torch"].as_str().unwrap_or("?"),
        r["threads"]
    );
    let diff = (nll / n as f64 - hf_nll / hf_n as f64).abs();
    // f32 on both sides through 12 layers with different summation orders: agree to
    // 1e-4 relative per token (measured: 6e-5 at NLL 37.8 with weight scale 4; a wrong
    // mask, position or window shows up as 1e-2 or more).
    let tol = 1e-4 * (nll / n as f64).abs() + 1e-5;
    println!(
        "same NLL: |diff| = {diff:.2e} nats/token (tolerance {tol:.1e}) | speed ratio arlm/transformers = {:.2}x",
        hf_secs / secs
    );
    if hf_n != n || diff.is_nan() || diff > tol {
        bail!(
            "arlm and transformers disagree: {n} vs {hf_n} tokens, NLL/token differs by {diff:e}"
        );
    }
    llama_row(args, &python, &dir, &ids_path, window, n as f64 / secs);
    Ok(())
}

/// llama.cpp's llama-perplexity on the same weights (GGUF f32) and the same ids as text
/// (tools/bench_llama_cpp.py --score-ids), when llama.cpp is built: its scoring speed
/// beside arlm's (`arlm_tps`). A speed row only: it re-tokenizes the text and scores the
/// second half of each window, so its NLL is not comparable.
fn llama_row(
    args: &Args,
    python: &std::path::Path,
    dir: &std::path::Path,
    ids: &std::path::Path,
    window: usize,
    arlm_tps: f64,
) {
    let Some(llama) = super::generate::llama_dir(args.llama.as_deref()) else {
        println!("llama.cpp: not built (tools/build_llama_cpp.sh, or --llama DIR)");
        return;
    };
    let r: Result<serde_json::Value> = super::generate::run_llama_script(
        python,
        (dir, &llama, "f32"),
        &[
            "--score-ids".into(),
            ids.display().to_string(),
            "--ctx".into(),
            window.to_string(),
        ],
    );
    match r {
        Ok(r) => {
            let tps = r["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
            println!(
                "llama.cpp    {:>8} tokens  (llama-perplexity, f32, window {window}) {tps:>9.1} tokens/s  ({:.2} s) | speed ratio arlm/llama.cpp = {:.2}x",
                r["tokens"],
                r["seconds"].as_f64().unwrap_or(f64::NAN),
                arlm_tps / tps
            );
        }
        Err(e) => println!("llama.cpp reference skipped: {e:#}"),
    }
}
