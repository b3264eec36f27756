//! `arlm bench eval`: GPT scoring throughput, side by side with Hugging Face
//! transformers on the same checkpoint, the same token ids and the same sliding windows;
//! both NLLs are printed and must agree (arlm's f32 against transformers' float32). Each
//! `--weights` format scores too (bf16 runs the bf16 GEMM where the CPU has AVX512_BF16),
//! with its NLL change against f32. When llama.cpp is built, llama-perplexity's scoring
//! speed on the same weights in the matching GGUF type follows (a speed row: it scores the
//! ids' text). `--runs` alternates the engines run by run; the table has the medians, and
//! its ratios are medians of the per-run ratios.

use super::util::median;
use anyhow::{bail, Context, Result};
use arlm::eval::evaluate::{score_documents, Document};
use arlm::eval::{Corpus, DocMode, EvalOptions, WindowSpec};
use arlm::model::gpt::{Gpt, GptConfig, WeightFormat};
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
    /// arlm weight formats to score with, comma-separated (f32, f16, bf16, q8); f32 is
    /// the one checked against transformers.
    #[arg(long, value_delimiter = ',', default_value = "f32,bf16")]
    weights: Vec<WeightFormat>,
    /// Timed repetitions, alternating arlm, transformers and llama.cpp (medians reported).
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

/// One engine's scoring of the ids: tokens scored, their summed NLL (nats; NaN where
/// not comparable) and seconds.
#[derive(Clone, Copy)]
struct Scored {
    tokens: usize,
    nll: f64,
    secs: f64,
}

impl Scored {
    fn tps(&self) -> f64 {
        self.tokens as f64 / self.secs
    }
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
    if args.runs == 0 || args.weights.is_empty() {
        bail!("--runs and --weights need at least one each");
    }
    let models: Vec<(WeightFormat, Gpt)> = args
        .weights
        .iter()
        .map(|&f| (f, model.clone().with_weight_format(f)))
        .collect();
    let ids_path = tmp.join("ids.u32");
    let bytes: Vec<u8> = ids.iter().flat_map(|x| x.to_le_bytes()).collect();
    arlm::atomic::write_atomic(&ids_path, &bytes)?;
    let python = super::peers_python(args.python.as_deref());
    let llama = if args.no_reference {
        None
    } else {
        let dir = super::generate::llama_dir(args.llama.as_deref());
        if dir.is_none() {
            println!("llama.cpp: not built (tools/build_llama_cpp.sh, or --llama DIR)");
        }
        dir
    };
    // Per run: arlm per format, transformers, llama.cpp per format (None: skipped).
    let mut ours: Vec<Vec<Scored>> = vec![Vec::new(); models.len()];
    let mut hf: Vec<Scored> = Vec::new();
    let mut lcpp: Vec<Vec<Option<Scored>>> = vec![Vec::new(); models.len()];
    for run in 1..=args.runs {
        for (i, (f, m)) in models.iter().enumerate() {
            let t0 = std::time::Instant::now();
            let lp = score_documents(m, &corpus, &opts)?;
            let secs = t0.elapsed().as_secs_f64();
            let s = Scored {
                tokens: lp[0].len(),
                nll: -lp[0].iter().map(|&x| x as f64).sum::<f64>(),
                secs,
            };
            println!(
                "run {run}/{}: arlm {f:<5} {:>8} tokens  NLL/token {:.6}  {:>9.1} tokens/s  ({:.2} s)",
                args.runs,
                s.tokens,
                s.nll / s.tokens as f64,
                s.tps(),
                s.secs
            );
            ours[i].push(s);
        }
        if args.no_reference {
            continue;
        }
        let h = transformers_run(args, &python, &dir, &ids_path, bos, window, spec.stride)?;
        println!(
            "run {run}/{}: transformers float32 {:>8} tokens  NLL/token {:.6}  {:>9.1} tokens/s  ({:.2} s)",
            args.runs,
            h.tokens,
            h.nll / h.tokens as f64,
            h.tps(),
            h.secs
        );
        if let Some(i) = args.weights.iter().position(|&f| f == WeightFormat::F32) {
            check_same_nll(ours[i].last().expect("scored above"), &h)?;
        }
        hf.push(h);
        for (i, &(f, _)) in models.iter().enumerate() {
            let l = llama.as_ref().and_then(|l| {
                llama_run(
                    &python,
                    &dir,
                    l,
                    super::generate::llama_type(f),
                    &ids_path,
                    window,
                )
            });
            if let Some(l) = l {
                println!(
                    "run {run}/{}: llama.cpp {:<5} {:>8} tokens  (llama-perplexity)  {:>9.1} tokens/s  ({:.2} s)",
                    args.runs,
                    super::generate::llama_type(f),
                    l.tokens,
                    l.tps(),
                    l.secs
                );
            }
            lcpp[i].push(l);
        }
    }
    report(args, &ours, &hf, &lcpp);
    Ok(())
}

/// Median of the per-run ratios a/b of tokens/s (runs where b is missing are left out).
fn ratio(a: &[Scored], b: &[Option<Scored>]) -> Option<f64> {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter_map(|(a, b)| b.map(|b| a.tps() / b.tps()))
        .collect();
    (!r.is_empty()).then(|| median(&r))
}

/// The table: median tokens/s per engine and format, NLL change against arlm's f32, and
/// the per-run ratios against transformers float32 and llama.cpp in the same format.
fn report(args: &Args, ours: &[Vec<Scored>], hf: &[Scored], lcpp: &[Vec<Option<Scored>>]) {
    let med = |v: &[Scored]| median(&v.iter().map(Scored::tps).collect::<Vec<_>>());
    let f32_nll = args
        .weights
        .iter()
        .position(|&f| f == WeightFormat::F32)
        .map(|i| ours[i][0].nll / ours[i][0].tokens as f64);
    let hf_opt: Vec<Option<Scored>> = hf.iter().copied().map(Some).collect();
    let fmt = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
    println!(
        "medians over {} runs; engines alternate per run; ratios are medians of per-run ratios",
        args.runs
    );
    println!("| engine | weights | tokens/s | NLL/token | vs arlm f32 (nats/token) | vs HF float32 | vs llama.cpp |");
    println!("|---|---|---|---|---|---|---|");
    for (i, f) in args.weights.iter().enumerate() {
        let s = ours[i][0];
        let nll = s.nll / s.tokens as f64;
        let delta = f32_nll.map_or("-".to_string(), |b| format!("{:+.2e}", nll - b));
        println!(
            "| arlm | {f} | {:.1} | {nll:.6} | {delta} | {} | {} |",
            med(&ours[i]),
            fmt(ratio(&ours[i], &hf_opt)),
            fmt(ratio(&ours[i], &lcpp[i]))
        );
    }
    if !hf.is_empty() {
        println!(
            "| transformers | float32 | {:.1} | {:.6} | - | 1.00x | - |",
            med(hf),
            hf[0].nll / hf[0].tokens as f64
        );
    }
    for (i, f) in args.weights.iter().enumerate() {
        let got: Vec<Scored> = lcpp[i].iter().flatten().copied().collect();
        if !got.is_empty() {
            println!(
                "| llama.cpp | {} | {:.1} | - | - | - | - |",
                super::generate::llama_type(*f),
                med(&got)
            );
        }
    }
}

/// transformers (tools/bench_eval_hf.py) on the same checkpoint, ids and windows.
fn transformers_run(
    args: &Args,
    python: &std::path::Path,
    dir: &std::path::Path,
    ids: &std::path::Path,
    bos: u32,
    window: usize,
    stride: usize,
) -> Result<Scored> {
    let script = args
        .script
        .clone()
        .unwrap_or_else(|| super::tool_script("bench_eval_hf.py"));
    let r: serde_json::Value = super::run_reference(
        python,
        &script,
        &[
            "--model".into(),
            dir.display().to_string(),
            "--ids".into(),
            ids.display().to_string(),
            "--bos".into(),
            bos.to_string(),
            "--window".into(),
            window.to_string(),
            "--stride".into(),
            stride.to_string(),
            "--batch".into(),
            args.hf_batch.to_string(),
            "--threads".into(),
            rayon::current_num_threads().to_string(),
        ],
    )
    .context("the transformers reference failed")?;
    Ok(Scored {
        tokens: r["tokens"].as_u64().unwrap_or(0) as usize,
        nll: r["nll"].as_f64().unwrap_or(f64::NAN),
        secs: r["seconds"].as_f64().unwrap_or(f64::NAN),
    })
}

/// arlm's f32 and transformers' float32 NLL must agree: f32 on both sides through 12
/// layers with different summation orders agree to 1e-4 relative per token (measured:
/// 6e-5 at NLL 37.8 with weight scale 4; a wrong mask, position or window shows up as
/// 1e-2 or more).
fn check_same_nll(ours: &Scored, hf: &Scored) -> Result<()> {
    let (a, b) = (ours.nll / ours.tokens as f64, hf.nll / hf.tokens as f64);
    let diff = (a - b).abs();
    let tol = 1e-4 * a.abs() + 1e-5;
    println!("same NLL (arlm f32, transformers float32): |diff| = {diff:.2e} nats/token (tolerance {tol:.1e})");
    if hf.tokens != ours.tokens || diff.is_nan() || diff > tol {
        bail!(
            "arlm and transformers disagree: {} vs {} tokens, NLL/token differs by {diff:e}",
            ours.tokens,
            hf.tokens
        );
    }
    Ok(())
}

/// llama.cpp's llama-perplexity on the same weights (GGUF of type `typ`) and the same ids
/// as text (tools/bench_llama_cpp.py --score-ids). A speed row only: it re-tokenizes the
/// text and scores the second half of each window, so its NLL is not comparable. None
/// (with the reason printed) when it fails.
fn llama_run(
    python: &std::path::Path,
    dir: &std::path::Path,
    llama: &std::path::Path,
    typ: &str,
    ids: &std::path::Path,
    window: usize,
) -> Option<Scored> {
    let r: Result<serde_json::Value> = super::generate::run_llama_script(
        python,
        (dir, llama, typ),
        &[
            "--score-ids".into(),
            ids.display().to_string(),
            "--ctx".into(),
            window.to_string(),
        ],
    );
    match r {
        Ok(r) => Some(Scored {
            tokens: r["tokens"].as_u64().unwrap_or(0) as usize,
            nll: f64::NAN,
            secs: r["seconds"].as_f64().unwrap_or(f64::NAN),
        }),
        Err(e) => {
            println!("llama.cpp {typ} reference skipped: {e:#}");
            None
        }
    }
}
