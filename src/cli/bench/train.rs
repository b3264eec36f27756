//! `arlm bench train`: one full training step (forward + backward + AdamW) of the GPT on
//! arlm's kernels, side by side with PyTorch eager (tools/bench_train_torch.py, run with
//! the Python in --python / $ARLM_PEERS_PYTHON when it exists), in one run.
//!
//! Models (from the GPT issue): A = 4L/4H/128, T=64, B=12, V=65 (nanoGPT's CPU
//! shakespeare-char config); B = 6L/6H/384, T=256, B=4, V=50304. Prints ms/step (median),
//! tokens/s, GFLOP/s, the fraction of a GEMM ceiling measured in the same run (f32
//! 2048^3 through the `gemm` crate), peak RSS, and the ratio PyTorch/arlm time.

use anyhow::bail;
use arlm::model::gpt::{Gpt, GptConfig, GptTrainer};
use arlm::ops as kernels;
use arlm::ops::AdamW;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `arlm bench train`.
#[derive(clap::Args)]
pub struct Args {
    /// Which model: a, b or both (GPTs), or a recurrent shape: lstm-small, gru-small,
    /// lstm-medium, rnn (all three; see train_rnn.rs).
    #[arg(long, default_value = "both")]
    model: String,
    /// Timed steps per model (after one warm-up step); default 20 for A, 5 for B.
    #[arg(long)]
    steps: Option<usize>,
    /// Python with torch for the reference (default: $ARLM_PEERS_PYTHON, else the peers venv).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Batch shards of the arlm trainer (default: GptTrainer::new's choice, 2 for models A
    /// and B; 1 = no batch split, intra-op parallelism only).
    #[arg(long)]
    shards: Option<usize>,
    /// Skip the PyTorch reference.
    #[arg(long)]
    no_torch: bool,
    /// Repeat each model's measurement this many times, alternating arlm and PyTorch
    /// (arlm, torch, arlm, torch, ...) so that the machine's drift hits both; prints every
    /// run, the medians and the median of the per-run ratios.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Instead of training: inference at GPT-2 124M shape (KV-cache decode step and
    /// batched scoring), vs transformers (tools/bench_infer_torch.py).
    #[arg(long)]
    infer: bool,
}

fn bench_infer(args: &Args) -> anyhow::Result<()> {
    use arlm::model::LanguageModel;
    let model = Gpt::new(GptConfig::gpt2_124m(), 1)?;
    let v = model.config.vocab_size;
    let mut st = model.new_state();
    let mut row = vec![0f32; v];
    // decode: a 64-token prompt via prefill, then 32 single-token steps
    let prompt: Vec<u32> = (0..64).map(|i| (i * 7919 % v) as u32).collect();
    model.prefill(&mut st, &prompt, &mut row)?;
    let mut times = Vec::new();
    for i in 0..32u32 {
        let t0 = Instant::now();
        model.feed(&mut st, (i * 31) % v as u32, &mut row)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let decode_ms = super::util::median(&times) * 1e3;
    // batched scoring: 8 sequences of 128 tokens
    let seqs: Vec<Vec<u32>> = (0..8)
        .map(|s| (0..128).map(|i| ((i * 131 + s * 17) % v) as u32).collect())
        .collect();
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let mut times = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        model.score_next_batch(&refs)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let score_s = super::util::median(&times);
    println!("GPT-2 124M shape (random init), 2 threads");
    println!(
        "arlm     decode step (KV cache, context 64-96): {decode_ms:.1} ms/token; batched scoring 8x128: {:.0} tokens/s",
        8.0 * 128.0 / score_s
    );
    if let Some(py) = python(args) {
        #[derive(serde::Deserialize)]
        struct R {
            decode_ms: f64,
            score_tokens_per_s: f64,
        }
        let r: R = super::run_reference(&py, &super::tool_script("bench_infer_torch.py"), &[])?;
        println!(
            "transformers decode step: {:.1} ms/token; batched scoring: {:.0} tokens/s",
            r.decode_ms, r.score_tokens_per_s
        );
        println!(
            "ratio arlm vs transformers: decode {:.2}x, scoring {:.2}x",
            r.decode_ms / decode_ms,
            8.0 * 128.0 / score_s / r.score_tokens_per_s
        );
    }
    Ok(())
}

/// One benchmark model.
struct Spec {
    name: &'static str,
    config: GptConfig,
    b: usize,
    t: usize,
    default_steps: usize,
}

fn specs(which: &str) -> anyhow::Result<Vec<Spec>> {
    let a = Spec {
        name: "a",
        config: GptConfig {
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            block_size: 64,
            vocab_size: 65,
            dropout: 0.0,
            activation: Default::default(),
        },
        b: 12,
        t: 64,
        default_steps: 20,
    };
    let b = Spec {
        name: "b",
        config: GptConfig {
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            block_size: 256,
            vocab_size: 50304,
            dropout: 0.0,
            activation: Default::default(),
        },
        b: 4,
        t: 256,
        default_steps: 5,
    };
    Ok(match which {
        "a" => vec![a],
        "b" => vec![b],
        "both" => vec![a, b],
        other => bail!("--model must be a, b or both, not {other:?}"),
    })
}

/// Measured numbers of one implementation on one model.
#[derive(Debug, Default, Clone, serde::Deserialize)]
struct Result {
    ms_median: f64,
    tokens_per_s: f64,
    gflops: f64,
    peak_rss_mb: f64,
    #[serde(default)]
    gemm_gflops: f64,
    /// CPU time of all threads per step (arlm only; 0 when unknown).
    #[serde(default)]
    cpu_ms: f64,
    /// Batch shards of the arlm trainer (arlm only).
    #[serde(default)]
    shards: usize,
}

/// CPU time (user + system, all threads) this process has used, in seconds, from
/// /proc/self/stat (Linux; 0 elsewhere). Under load it tracks the work a step does better
/// than wall time does.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // Clock ticks are 100 per second on Linux (USER_HZ).
    f.iter().sum::<f64>() / 100.0
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn bench_arlm(spec: &Spec, steps: usize, shards: Option<usize>) -> anyhow::Result<Result> {
    super::util::reset_peak_rss();
    let mut model = Gpt::new(spec.config, 1337)?;
    let mut trainer = match shards {
        Some(s) => GptTrainer::with_shards(&model, spec.b, spec.t, s),
        None => GptTrainer::new(&model, spec.b, spec.t),
    };
    let mut opt = AdamW::new(model.num_params(), 0.9, 0.95, 1e-8, 0.1);
    let mask = model.decay_mask();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = spec.b * spec.t;
    let v = spec.config.vocab_size as u32;
    let mut times = Vec::new();
    let mut cpu0 = 0.0;
    for step in 0..steps + 1 {
        if step == 1 {
            cpu0 = cpu_seconds();
        }
        let x: Vec<u32> = (0..n).map(|_| rng.random_range(0..v)).collect();
        let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..v)).collect();
        let t0 = Instant::now();
        trainer.zero_grad();
        let loss = trainer.forward_backward(&model, &x, &y, step as u64)?;
        opt.step(model.params_mut(), trainer.grads(), &mask, 1e-4);
        let dt = t0.elapsed().as_secs_f64();
        anyhow::ensure!(loss.is_finite(), "loss {loss}");
        if step > 0 {
            times.push(dt);
        }
    }
    let cpu_ms = (cpu_seconds() - cpu0) * 1e3 / steps as f64;
    let s = super::util::median(&times);
    let tokens = n as f64;
    let flops = spec.config.train_flops_per_token(spec.t) * tokens;
    Ok(Result {
        ms_median: s * 1e3,
        tokens_per_s: tokens / s,
        gflops: flops / s / 1e9,
        peak_rss_mb: super::util::peak_rss_mb(),
        gemm_gflops: 0.0,
        cpu_ms,
        shards: trainer.shards(),
    })
}

fn python(args: &Args) -> Option<PathBuf> {
    if args.no_torch {
        return None;
    }
    super::util::peers_python_if_present(args.python.as_deref())
}

fn bench_torch(py: &std::path::Path, spec: &Spec, steps: usize) -> anyhow::Result<Result> {
    super::run_reference(
        py,
        &super::tool_script("bench_train_torch.py"),
        &[
            "--model".into(),
            spec.name.into(),
            "--steps".into(),
            steps.to_string(),
        ],
    )
}

/// Runs `arlm bench train`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.infer {
        return bench_infer(&args);
    }
    if let Some(rnn) = super::train_rnn::specs(&args.model) {
        return super::train_rnn::run(rnn, args.steps, args.runs, python(&args));
    }
    let specs = specs(&args.model)?;
    super::util::print_threads_and_load();
    let ceiling = kernels::gemm_ceiling_gflops(2048, 3);
    println!("GEMM ceiling (gemm crate, f32 2048^3, best of 3): {ceiling:.1} GFLOP/s");
    let py = python(&args);
    if py.is_none() && !args.no_torch {
        println!(
            "(no Python with torch found: set --python or ARLM_PEERS_PYTHON for the reference)"
        );
    }
    println!(
        "{:<6} {:<8} {:>10} {:>10} {:>9} {:>9} {:>10}",
        "model", "impl", "ms/step", "tokens/s", "GFLOP/s", "%ceiling", "peakRSS MB"
    );
    for spec in &specs {
        let steps = args.steps.unwrap_or(spec.default_steps).max(1);
        let c = &spec.config;
        let desc = format!(
            "{}L/{}H/{} T={} B={} V={}",
            c.n_layer, c.n_head, c.n_embd, spec.t, spec.b, c.vocab_size
        );
        let runs = args.runs.max(1);
        let mut arlm_runs: Vec<Result> = Vec::new();
        let mut torch_runs: Vec<Result> = Vec::new();
        let mut ratios = Vec::new();
        let mut torch_failed = false;
        for run in 0..runs {
            let ours = bench_arlm(spec, steps, args.shards)?;
            let row = |name: &str, r: &Result, ceil: f64| {
                println!(
                    "{:<6} {:<8} {:>10.1} {:>10.0} {:>9.1} {:>8.0}% {:>10.0}",
                    spec.name,
                    name,
                    r.ms_median,
                    r.tokens_per_s,
                    r.gflops,
                    100.0 * r.gflops / ceil,
                    r.peak_rss_mb
                )
            };
            if run == 0 {
                println!(
                    "-- model {}: {desc}, {steps} steps, arlm batch shards: {}",
                    spec.name.to_uppercase(),
                    ours.shards
                );
            }
            if runs > 1 {
                println!("   run {}/{runs}", run + 1);
            }
            row("arlm", &ours, ceiling);
            println!(
                "       arlm CPU time (all threads): {:.1} ms/step",
                ours.cpu_ms
            );
            if let (Some(py), false) = (&py, torch_failed) {
                match bench_torch(py, spec, steps) {
                    Ok(t) => {
                        let ceil = if t.gemm_gflops > 0.0 {
                            t.gemm_gflops
                        } else {
                            ceiling
                        };
                        row("pytorch", &t, ceil);
                        let ratio = t.ms_median / ours.ms_median;
                        println!(
                            "       speedup arlm vs PyTorch eager: {ratio:.2}x (PyTorch GEMM ceiling {:.1} GFLOP/s)",
                            t.gemm_gflops
                        );
                        ratios.push(ratio);
                        torch_runs.push(t);
                    }
                    Err(e) => {
                        println!("       PyTorch reference failed: {e:#}");
                        torch_failed = true;
                    }
                }
            }
            arlm_runs.push(ours);
        }
        if runs > 1 {
            let ms: Vec<f64> = arlm_runs.iter().map(|r| r.ms_median).collect();
            let (lo, hi) = min_max(&ms);
            let rss = arlm_runs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
            println!("   summary over {runs} alternating runs (arlm, torch, arlm, torch, ...):");
            println!(
                "       arlm    median {:.1} ms/step (range {lo:.1}-{hi:.1}), peak RSS {rss:.0} MB",
                super::util::median(&ms)
            );
            if !torch_runs.is_empty() {
                let ms: Vec<f64> = torch_runs.iter().map(|r| r.ms_median).collect();
                let (lo, hi) = min_max(&ms);
                let rss = torch_runs.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
                println!(
                    "       pytorch median {:.1} ms/step (range {lo:.1}-{hi:.1}), peak RSS {rss:.0} MB",
                    super::util::median(&ms)
                );
                let mut sorted = ratios.clone();
                sorted.sort_by(|a, b| a.total_cmp(b));
                let list: Vec<String> = sorted.iter().map(|r| format!("{r:.2}")).collect();
                println!(
                    "       speedup arlm vs PyTorch eager: median of per-run ratios {:.2}x (runs: {})",
                    super::util::median(&ratios),
                    list.join(", ")
                );
            }
        }
    }
    Ok(())
}
