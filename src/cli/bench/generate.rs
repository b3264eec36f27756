//! `arlm bench generate`: KV-cache generation speed, side by side with Hugging Face
//! transformers `generate` on the same checkpoint (tools/bench_generate_hf.py).
//!
//! The default model is a randomly initialized GPT-2 124M (12 layers, 12 heads, 768 wide,
//! context 1024, vocabulary 50257) saved by arlm in HF format, so transformers loads the
//! very same weights. Both sides get the same 64 prompt tokens (BOS + 63 seeded random
//! ids), generate 256 new tokens at batch 1 with end-of-text ignored, greedy and top-p
//! (0.95 at temperature 1, no top-k), and report decode tokens/s (new tokens / time after
//! the prompt) and prefill tokens/s (prompt tokens / time of the prompt pass).
//!
//! One row per (engine, weight format, setting): arlm with each `--weights` format (f32,
//! f16, q8, w8a8 by default; see [`arlm::model::gpt::quant`]) and transformers in float32
//! and bfloat16 (`--hf-dtypes`).
//!
//! Runs alternate: arlm (every format and setting once), then transformers (one process,
//! one timed run after a warm-up), then arlm again, ... `--runs` times, so a machine whose
//! speed drifts (a shared VM) slows both sides alike. Every tok/s is the MEDIAN over the
//! runs, and every ratio is the median of the per-run ratios against transformers float32
//! with the same setting (run i of arlm against run i of transformers).

use anyhow::{bail, Context, Result};
use arlm::generate::{Sampler, SamplerConfig, Session};
use arlm::model::gpt::{Gpt, GptConfig, WeightFormat};
use arlm::model::LanguageModel;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flags of `arlm bench generate`.
#[derive(clap::Args)]
pub struct Args {
    /// GPT checkpoint directory (model.safetensors + config.json). Default: a random
    /// GPT-2 124M written to --checkpoint (created if absent).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where the random GPT-2 124M checkpoint lives when --model is not given.
    #[arg(long, default_value = "target/bench/gpt2-124m-random")]
    pub checkpoint: PathBuf,
    /// Prompt length in tokens (BOS included).
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    /// New tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub new_tokens: usize,
    /// Timed repetitions per setting, alternating arlm and transformers (medians reported).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// arlm decode weight formats to measure, comma-separated (f32, f16, q8, w8a8).
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,q8,w8a8")]
    pub weights: Vec<WeightFormat>,
    /// transformers dtypes to measure, comma-separated (float32, bfloat16); ratios are
    /// against float32.
    #[arg(long, value_delimiter = ',', default_value = "float32,bfloat16")]
    pub hf_dtypes: Vec<String>,
    /// Python with torch + transformers for the reference (default: $ARLM_PEERS_PYTHON, else the peers venv;
    /// the reference is skipped if it fails).
    #[arg(long)]
    pub python: Option<String>,
    /// Skip the transformers reference.
    #[arg(long)]
    pub no_reference: bool,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead: an LSTM of Zaremba's medium shape beside a GPT of similar parameter count
    /// (random weights, no reference; `bench/mod.rs` sends it to generate_rnn.rs).
    #[arg(long)]
    pub recurrent: bool,
    /// Instead: aggregate decode speed of this many sequences sharing each batched step,
    /// comma-separated (e.g. 1,4,16; the server's batching without HTTP; first
    /// `--weights` format, no reference; `bench/mod.rs` sends it to generate_batch.rs).
    #[arg(long, value_delimiter = ',')]
    pub batch: Vec<usize>,
}

/// One measured setting.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
pub(super) struct Measure {
    /// Weight format: arlm's f32/f16/q8, transformers' float32/bfloat16.
    #[serde(default)]
    weights: String,
    setting: String,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
}

pub(super) fn ensure_checkpoint(dir: &Path) -> Result<()> {
    if dir.join("model.safetensors").exists() && dir.join("config.json").exists() {
        return Ok(());
    }
    eprintln!(
        "writing a random GPT-2 124M checkpoint to {}",
        dir.display()
    );
    let model = Gpt::new(GptConfig::gpt2_124m(), 1234)?;
    model.save(dir)?;
    Ok(())
}

fn setting_config(setting: &str, seed: u64) -> SamplerConfig {
    match setting {
        "greedy" => SamplerConfig::greedy(),
        _ => SamplerConfig {
            top_p: 0.95,
            ..SamplerConfig::pure(seed)
        },
    }
}

/// One timed generation (prefill + `new_tokens`), top-p seeded with `seed`.
pub(super) fn measure<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    new_tokens: usize,
    setting: &str,
    seed: u64,
) -> Result<Measure> {
    let mut prefills = Vec::new();
    let mut decodes = Vec::new();
    {
        let mut sampler = Sampler::new(setting_config(setting, seed), model.vocab_size())?;
        let t0 = Instant::now();
        // The prompt given to Session excludes BOS, which it prepends.
        let mut session = Session::new(model, &prompt[1..])?;
        let prefill = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for i in 0..new_tokens {
            let choice = sampler.sample(session.logprobs(), session.tokens())?;
            if i + 1 < new_tokens {
                session.push(choice.token)?;
            }
        }
        let decode = t1.elapsed().as_secs_f64();
        prefills.push(prefill);
        decodes.push(decode);
    }
    Ok(Measure {
        weights: String::new(),
        setting: setting.to_string(),
        prefill_tokens_per_s: prompt.len() as f64 / super::util::median(&prefills),
        decode_tokens_per_s: new_tokens as f64 / super::util::median(&decodes),
    })
}

fn reference(args: &Args, dir: &Path, prompt: &[u32]) -> Result<Vec<Measure>> {
    let script = super::tool_script("bench_generate_hf.py");
    let prompt_json = serde_json::to_string(prompt)?;
    let python = super::peers_python(args.python.as_deref().map(Path::new));
    super::run_reference(
        &python,
        &script,
        &[
            "--model".into(),
            dir.display().to_string(),
            "--prompt".into(),
            prompt_json,
            "--new-tokens".into(),
            args.new_tokens.to_string(),
            "--runs".into(),
            "1".into(),
            "--threads".into(),
            rayon::current_num_threads().to_string(),
            "--dtypes".into(),
            args.hf_dtypes.join(","),
        ],
    )
}

/// Runs `arlm bench generate`.
///
/// Long (~170 lines): the alternating arlm / transformers runs, the table and the JSON are
/// written from the same per-run vectors in one place; the reporting half is the part to
/// split out next.
pub fn run(args: Args) -> Result<()> {
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => {
            ensure_checkpoint(&args.checkpoint)?;
            args.checkpoint.clone()
        }
    };
    let model =
        Gpt::load(&dir).with_context(|| format!("cannot load the GPT at {}", dir.display()))?;
    if args.prompt_len == 0 || args.prompt_len + args.new_tokens > model.config.block_size {
        bail!(
            "prompt {} + new tokens {} must fit the context of {}",
            args.prompt_len,
            args.new_tokens,
            model.config.block_size
        );
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let bos = model.bos_token();
    let mut prompt = vec![bos];
    while prompt.len() < args.prompt_len {
        let t = rng.random_range(0..model.config.vocab_size as u32);
        if t != bos {
            prompt.push(t);
        }
    }
    eprintln!(
        "model: {} | prompt {} tokens, {} new tokens, batch 1, {} threads",
        model.describe(),
        prompt.len(),
        args.new_tokens,
        rayon::current_num_threads()
    );
    let models: Vec<(WeightFormat, Gpt)> = args
        .weights
        .iter()
        .map(|&f| (f, model.clone().with_weight_format(f)))
        .collect();
    let runs = args.runs.max(1);
    let mut use_reference = !(args.no_reference || args.hf_dtypes.is_empty());
    // Per run: every arlm (format, setting), then every transformers (dtype, setting).
    let mut ours_runs: Vec<Vec<Measure>> = Vec::new();
    let mut theirs_runs: Vec<Vec<Measure>> = Vec::new();
    for run in 0..runs {
        let mut ours = Vec::new();
        for (format, m) in &models {
            for setting in ["greedy", "top-p"] {
                let mut r = measure(m, &prompt, args.new_tokens, setting, run as u64)?;
                r.weights = format.to_string();
                eprintln!(
                    "run {}/{runs}: arlm {format} {setting}: prefill {:.1} tok/s, decode {:.2} tok/s",
                    run + 1,
                    r.prefill_tokens_per_s,
                    r.decode_tokens_per_s
                );
                ours.push(r);
            }
        }
        ours_runs.push(ours);
        if use_reference {
            match reference(&args, &dir, &prompt) {
                Ok(r) => {
                    for m in &r {
                        eprintln!(
                            "run {}/{runs}: transformers {} {}: prefill {:.1} tok/s, decode {:.2} tok/s",
                            run + 1,
                            m.weights,
                            m.setting,
                            m.prefill_tokens_per_s,
                            m.decode_tokens_per_s
                        );
                    }
                    theirs_runs.push(r)
                }
                Err(e) => {
                    eprintln!("reference skipped: {e:#}");
                    use_reference = false;
                    theirs_runs.clear();
                }
            }
        }
    }
    println!(
        "medians over {runs} runs; arlm and transformers runs alternate; ratios are medians of per-run ratios against transformers float32"
    );
    println!(
        "| engine | weights | setting | prefill tok/s | decode tok/s | prefill vs HF float32 | decode vs HF float32 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    let keys = |runs: &[Vec<Measure>]| -> Vec<(String, String)> {
        runs.first()
            .map(|r| {
                r.iter()
                    .map(|m| (m.weights.clone(), m.setting.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let find = |r: &[Measure], w: &str, s: &str| -> Option<Measure> {
        r.iter().find(|m| m.weights == w && m.setting == s).cloned()
    };
    for (engine, all) in [("arlm", &ours_runs), ("transformers", &theirs_runs)] {
        for (w, setting) in keys(all) {
            let per_run: Vec<Measure> = all.iter().filter_map(|r| find(r, &w, &setting)).collect();
            let pre: Vec<f64> = per_run.iter().map(|m| m.prefill_tokens_per_s).collect();
            let dec: Vec<f64> = per_run.iter().map(|m| m.decode_tokens_per_s).collect();
            // Run i against transformers float32's run i, same setting.
            let (mut rp, mut rd) = (Vec::new(), Vec::new());
            for (i, m) in all.iter().enumerate() {
                let (Some(ours), Some(base)) = (
                    find(m, &w, &setting),
                    theirs_runs
                        .get(i)
                        .and_then(|t| find(t, "float32", &setting)),
                ) else {
                    continue;
                };
                rp.push(ours.prefill_tokens_per_s / base.prefill_tokens_per_s);
                rd.push(ours.decode_tokens_per_s / base.decode_tokens_per_s);
            }
            let ratio = |x: &mut Vec<f64>| {
                if x.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.2}x", super::util::median(x))
                }
            };
            let m = Measure {
                weights: w.clone(),
                setting: setting.clone(),
                prefill_tokens_per_s: super::util::median(&pre),
                decode_tokens_per_s: super::util::median(&dec),
            };
            println!(
                "| {engine} | {} | {} | {:.1} | {:.2} | {} | {} |",
                m.weights,
                m.setting,
                m.prefill_tokens_per_s,
                m.decode_tokens_per_s,
                ratio(&mut rp),
                ratio(&mut rd),
            );
            rows.push(serde_json::json!({
                "engine": engine,
                "median": m,
                "prefill_vs_hf_float32_median": (!rp.is_empty()).then(|| super::util::median(&rp)),
                "decode_vs_hf_float32_median": (!rd.is_empty()).then(|| super::util::median(&rd)),
            }));
        }
    }
    if let Some(path) = &args.json {
        let obj = serde_json::json!({
            "model": model.describe(),
            "prompt_len": prompt.len(),
            "new_tokens": args.new_tokens,
            "threads": rayon::current_num_threads(),
            "runs": runs,
            "statistic": "median over alternating runs; ratios: median of per-run ratios",
            "rows": rows,
            "arlm_runs": ours_runs,
            "transformers_runs": theirs_runs,
        });
        arlm::atomic::write_atomic(path, serde_json::to_string_pretty(&obj)?.as_bytes())?;
    }
    Ok(())
}
