//! Helpers every benchmark shares: the median, the peers' Python and the reference scripts
//! it runs, the shared data root, and the model shapes the benches use.

use anyhow::Context;
use std::path::{Path, PathBuf};

/// The median of `xs` (the mean of the middle two for an even count; NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The Python that runs the peers (torch, transformers, tiktoken, tokenizers, kenlm): the
/// `--python` flag, else `$ARLM_PEERS_PYTHON`, else the venv that
/// `../shared/tools/peers-venv.sh` creates (`$PEERS_VENV`, else `$HOME/.cache/arlm-peers`).
/// One rule for every benchmark.
pub fn peers_python(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ARLM_PEERS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("PEERS_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/arlm-peers")))
        .unwrap_or_else(|| PathBuf::from(".cache/arlm-peers"));
    venv.join("bin/python")
}

/// [`peers_python`] if that file exists (benchmarks skip their reference otherwise).
pub fn peers_python_if_present(explicit: Option<&Path>) -> Option<PathBuf> {
    let p = peers_python(explicit);
    p.exists().then_some(p)
}

/// Runs `python script args..` and returns its stdout: the one way benchmarks start a
/// reference script. A failing script is an error that carries its stderr.
pub fn run_script(python: &Path, script: &Path, args: &[String]) -> anyhow::Result<String> {
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `python script args..` and parses the last line of its stdout as JSON: the
/// protocol every `tools/bench_*.py` reference follows.
pub fn run_reference<T: serde::de::DeserializeOwned>(
    python: &Path,
    script: &Path,
    args: &[String],
) -> anyhow::Result<T> {
    let text = run_script(python, script, args)?;
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

/// `rel` under the shared public corpora ([`arlm::data::shared_data_root`]).
pub fn shared_data(rel: &str) -> PathBuf {
    arlm::data::shared_data_root(Path::new(".")).join(rel)
}

/// Peak resident set size of this process in MiB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resets the peak RSS to the current RSS (Linux >= 4.0; harmless elsewhere).
pub fn reset_peak_rss() {
    // "5" resets VmHWM to the current RSS (Linux >= 4.0); harmless elsewhere.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Prints the rayon thread count and the load average: timings mean little without them.
pub fn print_threads_and_load() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "threads: {} (rayon), load average: {}",
        rayon::current_num_threads(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
