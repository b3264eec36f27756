//! `arlm bench ngram`: Kneser-Ney estimation time and peak memory (each fit in a child
//! `arlm ngram fit`, so its peak RSS is its own), model load time and query throughput in
//! words/s on the test set next to KenLM's Python module (tools/bench_kenlm.py) on KenLM's
//! own probing binary of the same ARPA file (built with `build_binary` from
//! tools/build_kenlm_build_binary.sh when present, else the ARPA file), and document
//! scoring end to end (`arlm score --perplexity` against tools/score_docs_kenlm.py).
//! arlm and KenLM runs alternate; the medians are reported.

use super::util::median;
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
    /// KenLM's build_binary (default: $HOME/.cache/arlm-kenlm/build_binary, written by
    /// tools/build_kenlm_build_binary.sh); without it KenLM loads the ARPA file.
    #[arg(long)]
    kenlm_build_binary: Option<PathBuf>,
    /// Alternating rounds of arlm and KenLM (medians reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Also score the training text as JSONL documents of this many lines each
    /// (`arlm score --perplexity` against KenLM, 1 and 2 processes); 0: skip.
    #[arg(long, default_value_t = 20)]
    doc_lines: usize,
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
    load_s: f64,
    words_per_s: f64,
    total_log10: f64,
}

#[derive(serde::Deserialize)]
struct KenlmDocs {
    seconds: f64,
}

fn kenlm(python: &Path, model: &Path, test: &Path, repeat: usize) -> anyhow::Result<KenlmRun> {
    super::run_reference(
        python,
        &super::tool_script("bench_kenlm.py"),
        &[
            model.display().to_string(),
            test.display().to_string(),
            "--repeat".to_string(),
            repeat.to_string(),
        ],
    )
}

/// KenLM's build_binary, when it can be found.
fn build_binary_exe(args: &Args) -> Option<PathBuf> {
    let p = args.kenlm_build_binary.clone().or_else(|| {
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/arlm-kenlm/build_binary"))
    })?;
    p.is_file().then_some(p)
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

/// One fitted model: the directory (binary), the ARPA file, KenLM's model file.
struct Fitted {
    dir: PathBuf,
    kenlm_model: PathBuf,
    fit_s: f64,
    peak_mb: f64,
}

fn fit(
    args: &Args,
    exe: &Path,
    tmp: &Path,
    name: &str,
    order: usize,
    train: &Path,
) -> anyhow::Result<Fitted> {
    let dir = tmp.join(format!("{name}{order}"));
    let arpa = tmp.join(format!("{name}{order}.arpa"));
    let out = Command::new(exe)
        .args(["ngram", "fit", "--no-arpa", "--order", &order.to_string()])
        .arg("--input")
        .arg(train)
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
    let kenlm_model = match build_binary_exe(args) {
        Some(bb) => {
            let bin = tmp.join(format!("{name}{order}.kenlm"));
            let o = Command::new(bb)
                .arg("probing")
                .arg(&arpa)
                .arg(&bin)
                .output()?;
            if !o.status.success() {
                bail!(
                    "build_binary failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            bin
        }
        None => arpa,
    };
    Ok(Fitted {
        dir,
        kenlm_model,
        fit_s: field("estimated in "),
        peak_mb: field("peak memory "),
    })
}

fn bench(args: &Args, exe: &Path, tmp: &Path) -> anyhow::Result<()> {
    let python = super::peers_python(args.python.as_deref());
    let kenlm_kind = if build_binary_exe(args).is_some() {
        "KenLM probing binary (build_binary)"
    } else {
        "KenLM on the ARPA file (no build_binary: run tools/build_kenlm_build_binary.sh)"
    };
    println!("queries: test set, strings in, log10 totals out; KenLM = {kenlm_kind}");
    println!(
        "{:<5} {:>5} {:>7} {:>8} {:>8} {:>9} {:>11} {:>11} {:>7} {:>9} {:>9}",
        "data",
        "order",
        "fit s",
        "peak MB",
        "load ms",
        "kenlm ms",
        "arlm w/s",
        "kenlm w/s",
        "ratio",
        "arlm ppl",
        "kenlm ppl"
    );
    let root = args
        .data_root
        .clone()
        .unwrap_or_else(|| arlm::data::shared_data_root(Path::new(".")));
    let mut doc_rows = Vec::new();
    for name in &args.corpora {
        let (train, test) = corpus_files(&root, name)?;
        for &order in &args.orders {
            let f = fit(args, exe, tmp, name, order, &train)?;
            let text = std::fs::read_to_string(&test)?;
            let (mut ours, mut theirs, mut loads, mut their_loads) =
                (vec![], vec![], vec![], vec![]);
            let (mut total, mut tokens, mut their_total) = (0.0, 0, f64::NAN);
            // Queries run on a model loaded (and its pages touched) once, as a pipeline
            // uses it; each round also times a fresh load on its own.
            let loaded = arlm::load::load(&f.dir)?;
            let arlm::load::AnyModel::Backoff(model) = &loaded.model else {
                bail!("{} is not a backoff model", f.dir.display());
            };
            let words = store::as_words(&*loaded.tokenizer).context("words tokenizer")?;
            model.total_log10(&words.encode(&text)?);
            for _ in 0..args.repeat.max(1) {
                let t0 = Instant::now();
                drop(arlm::load::load(&f.dir)?);
                loads.push(t0.elapsed().as_secs_f64() * 1e3);
                // The best of two passes, as on KenLM's side.
                let mut best = f64::INFINITY;
                for _ in 0..2 {
                    let t0 = Instant::now();
                    let ids = words.encode(&text)?;
                    total = model.total_log10(&ids);
                    tokens = ids.len();
                    best = best.min(t0.elapsed().as_secs_f64());
                }
                ours.push(tokens as f64 / best);
                // KenLM: the best of two passes (its first pass touches the pages).
                match kenlm(&python, &f.kenlm_model, &test, 2) {
                    Ok(k) => {
                        theirs.push(k.words_per_s);
                        their_loads.push(k.load_s * 1e3);
                        their_total = k.total_log10;
                    }
                    Err(e) => eprintln!("kenlm skipped: {e}"),
                }
            }
            let (ours, theirs) = (median(&ours), median(&theirs));
            println!(
                "{:<5} {:>5} {:>7.2} {:>8.0} {:>8.1} {:>9.1} {:>11.0} {:>11.0} {:>6.2}x {:>9.4} {:>9.4}",
                name,
                order,
                f.fit_s,
                f.peak_mb,
                median(&loads),
                median(&their_loads),
                ours,
                theirs,
                ours / theirs,
                10f64.powf(-total / tokens as f64),
                10f64.powf(-their_total / tokens as f64)
            );
            if args.doc_lines > 0 {
                doc_rows.push(bench_docs(
                    args, exe, &python, tmp, name, order, &f, &train,
                )?);
            }
        }
    }
    if !doc_rows.is_empty() {
        println!(
            "\ndocument perplexity, end to end (load + read JSONL + score + write JSONL), \
             training text as documents of {} lines:",
            args.doc_lines
        );
        println!(
            "{:<5} {:>5} {:>7} {:>10} {:>9} {:>11} {:>11} {:>8} {:>8} {:>10}",
            "data",
            "order",
            "docs",
            "tokens",
            "arlm s",
            "kenlm1 s",
            "kenlm2 s",
            "vs k1",
            "vs k2",
            "max rel"
        );
        for r in doc_rows {
            println!("{r}");
        }
    }
    Ok(())
}

/// Scores the training text as JSONL documents with `arlm score --perplexity` (both
/// cores) and KenLM (1 and 2 processes), alternating; one table row.
#[allow(clippy::too_many_arguments)]
fn bench_docs(
    args: &Args,
    exe: &Path,
    python: &Path,
    tmp: &Path,
    name: &str,
    order: usize,
    f: &Fitted,
    train: &Path,
) -> anyhow::Result<String> {
    let docs = tmp.join(format!("{name}.docs.jsonl"));
    let text = std::fs::read_to_string(train)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut jsonl = String::new();
    for (i, chunk) in lines.chunks(args.doc_lines).enumerate() {
        jsonl += &serde_json::json!({"id": i, "text": chunk.join("\n")}).to_string();
        jsonl.push('\n');
    }
    std::fs::write(&docs, jsonl)?;
    let n_docs = lines.len().div_ceil(args.doc_lines);
    let (ours_out, theirs_out) = (tmp.join("arlm.docs.out"), tmp.join("kenlm.docs.out"));
    let (mut ours, mut k1, mut k2) = (vec![], vec![], vec![]);
    let script = super::tool_script("score_docs_kenlm.py");
    for _ in 0..args.repeat.clamp(1, 3) {
        let t0 = Instant::now();
        let o = Command::new(exe)
            .args(["score", "--perplexity", "--model"])
            .arg(&f.dir)
            .arg("--input")
            .arg(&docs)
            .arg("-o")
            .arg(&ours_out)
            .output()?;
        if !o.status.success() {
            bail!("arlm score failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        ours.push(t0.elapsed().as_secs_f64());
        for (procs, times) in [(1, &mut k1), (2, &mut k2)] {
            let margs = [
                f.kenlm_model.display().to_string(),
                docs.display().to_string(),
                theirs_out.display().to_string(),
                "--procs".into(),
                procs.to_string(),
            ];
            let t0 = Instant::now();
            match super::run_reference::<KenlmDocs>(python, &script, &margs) {
                Ok(k) => {
                    let _ = k.seconds;
                    times.push(t0.elapsed().as_secs_f64());
                }
                Err(e) => eprintln!("kenlm documents skipped: {e}"),
            }
        }
    }
    let (tokens, max_rel) = compare_docs(&ours_out, &theirs_out).unwrap_or((0, f64::NAN));
    let (o, a, b) = (median(&ours), median(&k1), median(&k2));
    Ok(format!(
        "{:<5} {:>5} {:>7} {:>10} {:>9.2} {:>11.2} {:>11.2} {:>7.2}x {:>7.2}x {:>10.1e}",
        name,
        order,
        n_docs,
        tokens,
        o,
        a,
        b,
        a / o,
        b / o,
        max_rel
    ))
}

/// Total tokens, and the largest relative difference between the two outputs'
/// per-document perplexities (KenLM's are log10 sums of f32 per line, arlm's per token).
fn compare_docs(ours: &Path, theirs: &Path) -> anyhow::Result<(u64, f64)> {
    let (a, b) = (
        std::fs::read_to_string(ours)?,
        std::fs::read_to_string(theirs)?,
    );
    let (mut tokens, mut max_rel) = (0u64, 0f64);
    for (x, y) in a.lines().zip(b.lines()) {
        let x: serde_json::Value = serde_json::from_str(x)?;
        let y: serde_json::Value = serde_json::from_str(y)?;
        if x["tokens"] != y["tokens"] {
            bail!("token counts differ: {} vs {}", x["tokens"], y["tokens"]);
        }
        tokens += x["tokens"].as_u64().unwrap_or(0);
        let (p, q) = (
            x["perplexity"].as_f64().unwrap_or(f64::NAN),
            y["perplexity"].as_f64().unwrap_or(f64::NAN),
        );
        if p.is_finite() && q.is_finite() {
            max_rel = max_rel.max((p / q - 1.0).abs());
        }
    }
    Ok((tokens, max_rel))
}
