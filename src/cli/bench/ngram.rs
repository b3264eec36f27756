//! `arlm bench ngram`: Kneser-Ney estimation time and peak memory (each fit in a child
//! `arlm ngram fit`, so its peak RSS is its own), and query throughput in words/s on the
//! test set next to KenLM's Python module on the same ARPA file (tools/bench_kenlm.py).

use anyhow::{bail, Context};
use arlm::model::ngram::store;
use arlm::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Flags of `arlm bench ngram`.
#[derive(clap::Args)]
pub struct Args {
    /// n-gram orders to fit.
    #[arg(long, num_args = 1.., default_values_t = [3usize, 5])]
    orders: Vec<usize>,
    /// Corpora: ptb, wt2 (train/test files under --data-root).
    #[arg(long, num_args = 1.., default_values = ["ptb", "wt2"])]
    corpora: Vec<String>,
    /// Where ptb/ and wikitext-2/ live (default: $ARLM_SHARED_DATA, else ../shared/data).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Python with the `kenlm` module (skip KenLM when it cannot run).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Timed query repeats (the best is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

fn corpus_files(root: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    Ok(match name {
        "ptb" => (
            root.join("ptb/ptb.train.txt"),
            root.join("ptb/ptb.test.txt"),
        ),
        "wt2" => (
            root.join("wikitext-2/train.txt"),
            root.join("wikitext-2/test.txt"),
        ),
        other => bail!("unknown corpus {other:?} (ptb, wt2)"),
    })
}

#[derive(serde::Deserialize)]
struct KenlmRun {
    words_per_s: f64,
    total_log10: f64,
}

fn kenlm(python: &Path, arpa: &Path, test: &Path, repeat: usize) -> anyhow::Result<KenlmRun> {
    super::run_reference(
        python,
        &super::tool_script("bench_kenlm.py"),
        &[
            arpa.display().to_string(),
            test.display().to_string(),
            "--repeat".to_string(),
            repeat.to_string(),
        ],
    )
}

/// Runs `arlm bench ngram`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let tmp_dir = std::env::temp_dir().join(format!("arlm-bench-ngram-{}", std::process::id()));
    std::fs::create_dir_all(&tmp_dir)?;
    let result = bench(&args, &exe, &tmp_dir);
    std::fs::remove_dir_all(&tmp_dir).ok();
    result
}

fn bench(args: &Args, exe: &Path, tmp: &Path) -> anyhow::Result<()> {
    println!(
        "{:<5} {:>5} {:>8} {:>9} {:>12} {:>12} {:>7} {:>10} {:>10}",
        "data",
        "order",
        "fit s",
        "peak MB",
        "arlm w/s",
        "kenlm w/s",
        "ratio",
        "arlm ppl",
        "kenlm ppl"
    );
    for name in &args.corpora {
        let root = args
            .data_root
            .clone()
            .unwrap_or_else(|| arlm::data::shared_data_root(Path::new(".")));
        let (train, test) = corpus_files(&root, name)?;
        for &order in &args.orders {
            let dir = tmp.join(format!("{name}{order}"));
            let arpa = tmp.join(format!("{name}{order}.arpa"));
            let out = Command::new(exe)
                .args(["ngram", "fit", "--order", &order.to_string(), "--input"])
                .arg(&train)
                .arg("--out")
                .arg(&dir)
                .arg("--arpa")
                .arg(&arpa)
                .output()?;
            if !out.status.success() {
                bail!("fit failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            let field = |key: &str| -> f64 {
                stdout
                    .split(key)
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            let fit_s = field("estimated in ");
            let peak = field("peak memory ");

            let loaded = arlm::model::load::load(&dir)?;
            let arlm::model::load::AnyModel::Backoff(model) = &loaded.model else {
                bail!("{} is not a backoff model", dir.display());
            };
            let words = store::as_words(&*loaded.tokenizer).context("words tokenizer")?;
            let text = std::fs::read_to_string(&test)?;
            let mut best = f64::INFINITY;
            let mut total = 0.0;
            let mut tokens = 0;
            for _ in 0..args.repeat.max(1) {
                let t0 = Instant::now();
                let ids = words.encode(&text)?;
                total = model.total_log10(&ids);
                tokens = ids.len();
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let ours = tokens as f64 / best;
            let ppl = 10f64.powf(-total / tokens as f64);
            let (theirs, their_ppl) = match kenlm(
                &super::peers_python(args.python.as_deref()),
                &arpa,
                &test,
                args.repeat,
            ) {
                Ok(k) => (k.words_per_s, 10f64.powf(-k.total_log10 / tokens as f64)),
                Err(e) => {
                    eprintln!("kenlm skipped: {e}");
                    (f64::NAN, f64::NAN)
                }
            };
            println!(
                "{:<5} {:>5} {:>8.2} {:>9.0} {:>12.0} {:>12.0} {:>6.2}x {:>10.4} {:>10.4}",
                name,
                order,
                fit_s,
                peak,
                ours,
                theirs,
                ours / theirs,
                ppl,
                their_ppl
            );
        }
    }
    Ok(())
}
