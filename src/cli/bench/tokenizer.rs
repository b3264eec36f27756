//! `arlm bench tokenizer`: GPT-2 encode throughput of arlm vs tiktoken on the same text.
//!
//! arlm runs in-process at 1 and 2 rayon threads; tiktoken runs through
//! `tools/bench_tiktoken.py` with the peers Python (`$ARLM_PEERS_PYTHON`, else
//! the peers venv, see [`super::util::peers_python`]) and is skipped with a message when absent.
//! Each number is the median of `--runs` timed runs after one warm-up; token counts of
//! both implementations are printed and must be equal.

use anyhow::{bail, Context};
use arlm::tokenizer::{self, Tokenizer};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flags of `arlm bench tokenizer`.
#[derive(clap::Args)]
pub struct Args {
    /// Text to encode (default: ../shared/data/wikitext-2/train.txt).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Tokenizer: a tokenizer.json or a directory (default: ../shared/data/gpt2).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Timed runs per configuration (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
}

/// One measured row: MB/s and token count.
struct Row {
    mb_per_s: f64,
    tokens: usize,
}

fn bench_arlm(tok: &dyn Tokenizer, text: &str, threads: usize, runs: usize) -> anyhow::Result<Row> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    pool.install(|| {
        let mut tokens = tok.encode(text)?.len(); // warm-up
        let mut secs = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t0 = Instant::now();
            tokens = tok.encode(text)?.len();
            secs.push(t0.elapsed().as_secs_f64());
        }
        Ok(Row {
            mb_per_s: text.len() as f64 / 1e6 / super::util::median(&secs),
            tokens,
        })
    })
}

fn script() -> PathBuf {
    super::tool_script("bench_tiktoken.py")
}

fn bench_tiktoken(
    py: &Path,
    input: &Path,
    gpt2: &Path,
    a: &Args,
) -> anyhow::Result<Vec<(usize, Row)>> {
    let threads: Vec<String> = a.threads.iter().map(|t| t.to_string()).collect();
    let args = [
        "--input".to_string(),
        input.display().to_string(),
        "--gpt2".to_string(),
        gpt2.display().to_string(),
        "--runs".to_string(),
        a.runs.to_string(),
        "--threads".to_string(),
        threads.join(","),
    ];
    let out = super::util::run_script(py, &script(), &args)?;
    #[derive(serde::Deserialize)]
    struct Line {
        threads: usize,
        mb_per_s: f64,
        tokens: usize,
    }
    let mut rows = Vec::new();
    for line in out.lines() {
        let v: Line = serde_json::from_str(line)
            .with_context(|| format!("bench_tiktoken.py printed {line:?}"))?;
        rows.push((
            v.threads,
            Row {
                mb_per_s: v.mb_per_s,
                tokens: v.tokens,
            },
        ));
    }
    Ok(rows)
}

/// Runs `arlm bench tokenizer`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if a.runs == 0 || a.threads.contains(&0) {
        bail!("--runs and --threads must be at least 1");
    }
    let input = a
        .input
        .clone()
        .unwrap_or_else(|| super::util::shared_data("wikitext-2/train.txt"));
    let tok_path = a
        .tokenizer
        .clone()
        .unwrap_or_else(|| super::util::shared_data("gpt2"));
    let text = std::fs::read_to_string(&input)
        .with_context(|| format!("cannot read {} (pass --input FILE)", input.display()))?;
    let tok = tokenizer::load(&tok_path).with_context(|| {
        format!(
            "cannot load tokenizer {} (pass --tokenizer)",
            tok_path.display()
        )
    })?;
    let mb = text.len() as f64 / 1e6;
    println!(
        "{} encode ({} tokens vocabulary) of {} ({mb:.2} MB), median of {} runs",
        tok.kind(),
        tok.vocab_size(),
        input.display(),
        a.runs
    );
    let mut ours = Vec::new();
    for &t in &a.threads {
        ours.push((t, bench_arlm(tok.as_ref(), &text, t, a.runs)?));
    }
    let gpt2_dir = tok_path.is_dir() && tok_path.join("vocab.bpe").exists();
    let theirs = match super::util::peers_python_if_present(None) {
        None => {
            println!("tiktoken: skipped (no peers Python; set ARLM_PEERS_PYTHON)");
            Vec::new()
        }
        Some(_) if !gpt2_dir => {
            println!("tiktoken: skipped (it needs GPT-2's encoder.json + vocab.bpe directory)");
            Vec::new()
        }
        Some(py) => match bench_tiktoken(&py, &input, &tok_path, &a) {
            Ok(rows) => rows,
            Err(e) => {
                println!("tiktoken: skipped ({e:#})");
                Vec::new()
            }
        },
    };
    println!(
        "{:<10} {:>7} {:>10} {:>12} {:>13}",
        "impl", "threads", "MB/s", "tokens", "vs tiktoken"
    );
    let mut mismatch = false;
    for (t, row) in &ours {
        let other = theirs.iter().find(|(tt, _)| tt == t).map(|(_, r)| r);
        let ratio = other.map_or("-".to_string(), |o| {
            format!("{:.2}x", row.mb_per_s / o.mb_per_s)
        });
        println!(
            "{:<10} {:>7} {:>10.1} {:>12} {:>13}",
            "arlm", t, row.mb_per_s, row.tokens, ratio
        );
        if let Some(o) = other {
            println!(
                "{:<10} {:>7} {:>10.1} {:>12} {:>13}",
                "tiktoken", t, o.mb_per_s, o.tokens, "1.00x"
            );
            mismatch |= o.tokens != row.tokens;
        }
    }
    if mismatch {
        bail!("token counts differ between arlm and tiktoken");
    }
    if !theirs.is_empty() {
        println!("token counts match");
    }
    Ok(())
}
