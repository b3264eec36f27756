//! `arlm bench generate`: KV-cache generation speed, side by side with Hugging Face
//! transformers `generate` on the same checkpoint (tools/bench_generate_hf.py).
//!
//! The default model is a randomly initialized GPT-2 124M (12 layers, 12 heads, 768 wide,
//! context 1024, vocabulary 50257) saved by arlm in HF format, so transformers loads the
//! very same weights. Both sides get the same 64 prompt tokens (BOS + 63 seeded random
//! ids), generate 256 new tokens at batch 1 with end-of-text ignored, greedy and top-p
//! (0.95 at temperature 1, no top-k), and report decode tokens/s (new tokens / time after
//! the prompt) and prefill tokens/s (prompt tokens / time of the prompt pass, the median
//! of 5 passes).
//!
//! One row per (engine, weight format, setting): arlm with each `--weights` format (f32,
//! f16, q8, w8a8 by default; see [`arlm::model::gpt::quant`]) and transformers in float32
//! and bfloat16 (`--hf-dtypes`).
//!
//! When llama.cpp is built (tools/build_llama_cpp.sh; `--llama DIR`), llama-bench runs on
//! the same checkpoint converted to GGUF by llama.cpp's converter (tools/bench_llama_cpp.py):
//! f32, f16 and q8_0 for arlm's f32, f16 and q8/w8a8, prefill of the prompt and decode at
//! the prompt's depth. llama-bench does not sample, so arlm's greedy rows are the ones
//! compared with it.
//!
//! Runs alternate: arlm (every format and setting once), then transformers (one process,
//! one timed run after a warm-up), then llama.cpp, then arlm again, ... `--runs` times, so
//! a machine whose speed drifts (a shared VM) slows every side alike. Every tok/s is the
//! MEDIAN over the runs, and every ratio is the median of the per-run ratios (run i of
//! arlm against run i of the other engine): against transformers float32 with the same
//! setting, and against llama.cpp's same weight type.

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
    /// arlm decode weight formats to measure, comma-separated (f32, f16, bf16, q8, w8a8).
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
    /// Skip the references (transformers and llama.cpp).
    #[arg(long)]
    pub no_reference: bool,
    /// llama.cpp build (tools/build_llama_cpp.sh's output; default ~/.cache/arlm-llama):
    /// llama-bench's rows on the same checkpoint as GGUF, when built there.
    #[arg(long)]
    pub llama: Option<PathBuf>,
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

/// Prompt passes timed per measurement: a 64-token prefill takes ~0.1 s, short enough
/// for one neighbour's burst to halve it, so the median of a few is reported (llama-bench's
/// side repeats its pp test as often).
const PREFILL_REPS: usize = 5;

/// One timed generation: an untimed prompt pass (the first passes of a process run 20-25%
/// slower while the allocator maps its arenas; llama-bench and the transformers script
/// warm up too), the prompt pass [`PREFILL_REPS`] times (median), then `new_tokens`
/// decoded after the last, top-p seeded with `seed`.
pub(super) fn measure<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    new_tokens: usize,
    setting: &str,
    seed: u64,
) -> Result<Measure> {
    // The prompt given to Session excludes BOS, which it prepends.
    let mut session = Session::new(model, &prompt[1..])?;
    let mut prefills = Vec::new();
    for _ in 0..PREFILL_REPS {
        let t0 = Instant::now();
        session = Session::new(model, &prompt[1..])?;
        prefills.push(t0.elapsed().as_secs_f64());
    }
    let mut sampler = Sampler::new(setting_config(setting, seed), model.vocab_size())?;
    let t1 = Instant::now();
    for i in 0..new_tokens {
        let choice = sampler.sample(session.logprobs(), session.tokens())?;
        if i + 1 < new_tokens {
            session.push(choice.token)?;
        }
    }
    let decode = t1.elapsed().as_secs_f64();
    Ok(Measure {
        weights: String::new(),
        setting: setting.to_string(),
        prefill_tokens_per_s: prompt.len() as f64 / super::util::median(&prefills),
        decode_tokens_per_s: new_tokens as f64 / decode,
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

/// llama.cpp's GGUF type for an arlm weight format (w8a8 runs on q8 weights).
pub(super) fn llama_type(f: WeightFormat) -> &'static str {
    match f {
        WeightFormat::F32 => "f32",
        WeightFormat::F16 => "f16",
        WeightFormat::Bf16 => "bf16",
        WeightFormat::Q8 | WeightFormat::W8A8 => "q8_0",
    }
}

/// llama.cpp's build directory ([`Args::llama`], else tools/build_llama_cpp.sh's default),
/// if llama-bench is built there.
pub(super) fn llama_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    let dir = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/arlm-llama")))?;
    dir.join("bin/llama-bench").exists().then_some(dir)
}

/// One llama-bench round (tools/bench_llama_cpp.py) on the formats of `args.weights`.
fn llama_reference(
    args: &Args,
    llama: &Path,
    dir: &Path,
    prompt_len: usize,
) -> Result<Vec<Measure>> {
    let mut types: Vec<&str> = args.weights.iter().map(|&f| llama_type(f)).collect();
    types.dedup();
    let python = super::peers_python(args.python.as_deref().map(Path::new));
    run_llama_script(
        &python,
        (dir, llama, &types.join(",")),
        &[
            "--prompt-len".into(),
            prompt_len.to_string(),
            "--new-tokens".into(),
            args.new_tokens.to_string(),
        ],
    )
}

/// tools/bench_llama_cpp.py on the checkpoint `dir` with llama.cpp built in `llama`, the
/// GGUF `types` (comma-separated), this process's thread count and `extra` flags; its
/// last stdout line parsed as JSON.
pub(super) fn run_llama_script<T: serde::de::DeserializeOwned>(
    python: &Path,
    (dir, llama, types): (&Path, &Path, &str),
    extra: &[String],
) -> Result<T> {
    let mut a: Vec<String> = vec![
        "--model".into(),
        dir.display().to_string(),
        "--llama".into(),
        llama.display().to_string(),
        "--types".into(),
        types.into(),
        "--threads".into(),
        rayon::current_num_threads().to_string(),
    ];
    a.extend_from_slice(extra);
    super::run_reference(python, &super::tool_script("bench_llama_cpp.py"), &a)
}

/// Runs `arlm bench generate`: alternating rounds of arlm (every format and setting),
/// transformers and llama.cpp, then [`report`].
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
    let mut llama = if args.no_reference {
        None
    } else {
        llama_dir(args.llama.as_deref())
    };
    if llama.is_none() && !args.no_reference {
        eprintln!(
            "llama.cpp: not built, its rows are skipped (tools/build_llama_cpp.sh builds it into ~/.cache/arlm-llama, or pass --llama DIR)"
        );
    }
    let mut runs_of = Runs::default();
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
        runs_of.arlm.push(ours);
        if use_reference {
            let r = reference(&args, &dir, &prompt);
            use_reference = keep_round(r, run, runs, "transformers", &mut runs_of.transformers);
        }
        if let Some(l) = &llama {
            let r = llama_reference(&args, l, &dir, prompt.len());
            if !keep_round(r, run, runs, "llama.cpp", &mut runs_of.llama) {
                llama = None;
            }
        }
    }
    report(&args, &model, prompt.len(), runs, &runs_of)
}

/// A peer's round: logged and kept in `rounds`, or on failure the peer is dropped from
/// the report (its earlier rounds too) and false is returned.
fn keep_round(
    r: Result<Vec<Measure>>,
    run: usize,
    runs: usize,
    peer: &str,
    rounds: &mut Vec<Vec<Measure>>,
) -> bool {
    match r {
        Ok(r) => {
            log_round(run, runs, peer, &r);
            rounds.push(r);
            true
        }
        Err(e) => {
            eprintln!("{peer} reference skipped: {e:#}");
            rounds.clear();
            false
        }
    }
}

fn log_round(run: usize, runs: usize, engine: &str, r: &[Measure]) {
    for m in r {
        eprintln!(
            "run {}/{runs}: {engine} {} {}: prefill {:.1} tok/s, decode {:.2} tok/s",
            run + 1,
            m.weights,
            m.setting,
            m.prefill_tokens_per_s,
            m.decode_tokens_per_s
        );
    }
}

/// Every engine's measures, one vector per run.
#[derive(Default, serde::Serialize)]
struct Runs {
    arlm: Vec<Vec<Measure>>,
    transformers: Vec<Vec<Measure>>,
    llama: Vec<Vec<Measure>>,
}

fn find(r: &[Measure], w: &str, s: &str) -> Option<Measure> {
    r.iter().find(|m| m.weights == w && m.setting == s).cloned()
}

/// Median of the per-run ratios of `ours` (prefill, decode) against `base`, run by run.
fn ratios(
    ours: &[Vec<Measure>],
    (w, s): (&str, &str),
    base: &[Vec<Measure>],
    (bw, bs): (&str, &str),
) -> (Option<f64>, Option<f64>) {
    let (mut rp, mut rd) = (Vec::new(), Vec::new());
    for (o, b) in ours.iter().zip(base) {
        if let (Some(o), Some(b)) = (find(o, w, s), find(b, bw, bs)) {
            rp.push(o.prefill_tokens_per_s / b.prefill_tokens_per_s);
            rd.push(o.decode_tokens_per_s / b.decode_tokens_per_s);
        }
    }
    let med = |x: &Vec<f64>| (!x.is_empty()).then(|| super::util::median(x));
    (med(&rp), med(&rd))
}

/// Prints the table (medians; ratios are medians of per-run ratios against transformers
/// float32, same setting, and against llama.cpp's same weight type) and writes the JSON.
fn report(args: &Args, model: &Gpt, prompt_len: usize, runs: usize, all: &Runs) -> Result<()> {
    println!(
        "medians over {runs} runs; engines alternate per run; ratios are medians of per-run ratios"
    );
    println!(
        "| engine | weights | setting | prefill tok/s | decode tok/s | prefill vs HF float32 | decode vs HF float32 | prefill vs llama.cpp | decode vs llama.cpp |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let fmt = |x: Option<f64>| x.map_or("-".to_string(), |r| format!("{r:.2}x"));
    let mut rows = Vec::new();
    for (engine, runs_e) in [
        ("arlm", &all.arlm),
        ("transformers", &all.transformers),
        ("llama.cpp", &all.llama),
    ] {
        let keys: Vec<(String, String)> = runs_e
            .first()
            .map(|r| {
                r.iter()
                    .map(|m| (m.weights.clone(), m.setting.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (w, setting) in keys {
            let per_run: Vec<Measure> = runs_e
                .iter()
                .filter_map(|r| find(r, &w, &setting))
                .collect();
            let pre: Vec<f64> = per_run.iter().map(|m| m.prefill_tokens_per_s).collect();
            let dec: Vec<f64> = per_run.iter().map(|m| m.decode_tokens_per_s).collect();
            let (hp, hd) = ratios(
                runs_e,
                (&w, &setting),
                &all.transformers,
                ("float32", &setting),
            );
            // arlm against llama.cpp's same weight type; llama-bench does not sample, so
            // the comparison is arlm greedy (an argmax) against its bare decode.
            let (lp, ld) = match (engine, w.parse::<WeightFormat>()) {
                ("arlm", Ok(f)) if setting == "greedy" => ratios(
                    runs_e,
                    (&w, &setting),
                    &all.llama,
                    (llama_type(f), "no-sampler"),
                ),
                _ => (None, None),
            };
            let m = Measure {
                weights: w.clone(),
                setting: setting.clone(),
                prefill_tokens_per_s: super::util::median(&pre),
                decode_tokens_per_s: super::util::median(&dec),
            };
            println!(
                "| {engine} | {} | {} | {:.1} | {:.2} | {} | {} | {} | {} |",
                m.weights,
                m.setting,
                m.prefill_tokens_per_s,
                m.decode_tokens_per_s,
                fmt(hp),
                fmt(hd),
                fmt(lp),
                fmt(ld),
            );
            rows.push(serde_json::json!({
                "engine": engine,
                "median": m,
                "prefill_vs_hf_float32_median": hp,
                "decode_vs_hf_float32_median": hd,
                "prefill_vs_llama_cpp_median": lp,
                "decode_vs_llama_cpp_median": ld,
            }));
        }
    }
    if let Some(path) = &args.json {
        let obj = serde_json::json!({
            "model": model.describe(),
            "prompt_len": prompt_len,
            "new_tokens": args.new_tokens,
            "threads": rayon::current_num_threads(),
            "runs": runs,
            "statistic": "median over alternating runs; ratios: median of per-run ratios",
            "rows": rows,
            "per_run": all,
        });
        arlm::atomic::write_atomic(path, serde_json::to_string_pretty(&obj)?.as_bytes())?;
    }
    Ok(())
}
