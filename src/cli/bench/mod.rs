//! `arlm bench`: speed benchmarks that print arlm side by side with a reference
//! implementation (run through `tools/` scripts when Python peers are installed).

pub mod eval;
pub mod generate;
pub mod ngram;
pub mod tokenizer;
pub mod train;

use clap::Subcommand;
use std::path::{Path, PathBuf};

/// The Python that runs the peers (torch, transformers, tiktoken, tokenizers, kenlm): the
/// `--python` flag, else `$ARLM_PEERS_PYTHON`, else the venv `../shared/tools/peers-venv.sh`
/// creates. One rule for every benchmark.
pub fn peers_python(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ARLM_PEERS_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/root/.cache/arlm-peers/bin/python"))
}

/// Runs `python script args..` and parses the last line of its stdout as JSON: the
/// protocol every `tools/bench_*.py` reference follows. A failing script is an error that
/// carries its stderr.
pub fn run_reference<T: serde::de::DeserializeOwned>(
    python: &Path,
    script: &Path,
    args: &[String],
) -> anyhow::Result<T> {
    use anyhow::Context;
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .with_context(|| format!("unexpected output from {}: {line:?}", script.display()))
}

/// A reference script under this source tree's `tools/` (found wherever arlm is run from).
pub fn tool_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(name)
}

/// Flags of `arlm bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Tokenizer encode throughput (vs tiktoken).
    Tokenizer(tokenizer::Args),
    /// GPT training step speed (vs PyTorch).
    Train(train::Args),
    /// Scoring throughput (vs transformers).
    Eval(eval::Args),
    /// Generation speed (vs transformers).
    Generate(generate::Args),
    /// n-gram estimation and query speed (vs KenLM).
    Ngram(ngram::Args),
}

/// Runs `arlm bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Tokenizer(a) => tokenizer::run(a),
        What::Train(a) => train::run(a),
        What::Eval(a) => eval::run(a),
        What::Generate(a) => generate::run(a),
        What::Ngram(a) => ngram::run(a),
    }
}
