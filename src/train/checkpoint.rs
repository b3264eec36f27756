//! Checkpoints: everything needed to continue a run bit-exactly.
//!
//! Layout of a run directory:
//!
//! ```text
//! RUN/model.safetensors, config.json, tokenizer.json   the latest weights (a model dir)
//! RUN/metrics.jsonl, loss.svg, loss.png                metrics and the loss curve
//! RUN/checkpoints/step-N/                              the last `keep_last` checkpoints
//! RUN/checkpoints/best/                                the best validation loss so far
//! ```
//!
//! A checkpoint directory is a model directory (the model's own files, e.g. Hugging Face
//! GPT-2 `model.safetensors` + `config.json`, and `tokenizer.json`) plus
//! `train_state.json` ([`TrainState`]: step, sampler RNG, config, ...) and
//! `optimizer.bin` (AdamW moments, see [`write_optimizer`]). It is written under a
//! temporary name and renamed into place, so a crash mid-write never damages the
//! previous checkpoints.

use super::config::TrainConfig;
use super::trainable::Trainable;
use super::TrainError;
use crate::ops::AdamW;
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Version of the checkpoint format in `train_state.json`.
pub const FORMAT: u32 = 1;

/// The training loop's state besides weights and optimizer moments (`train_state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Checkpoint format version ([`FORMAT`]).
    pub format: u32,
    /// Optimizer updates done.
    pub step: u64,
    /// The batch sampler's RNG state (the data position).
    pub rng_state: u64,
    /// Training tokens consumed so far.
    pub tokens_seen: u64,
    /// Best validation loss so far.
    pub best_val: Option<f32>,
    /// Sum and count of training losses since the last evaluation.
    pub train_loss_acc: (f64, u64),
    /// Wall time spent training so far (seconds).
    pub elapsed_s: f64,
    /// The run's configuration.
    pub config: TrainConfig,
    /// Tokenizer kind and fingerprint: resuming with another tokenizer is refused.
    pub tokenizer_kind: String,
    /// See [`Tokenizer::fingerprint`].
    pub tokenizer_fingerprint: String,
    /// Where the training data came from (informational).
    pub data_source: String,
    /// Training tokens available: resuming on other data is refused.
    pub train_tokens: u64,
    /// Parameter count (a shape check before loading).
    pub num_params: usize,
    /// A stateful model's carried training state (truncated BPTT), exact f32 values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried_state: Vec<f32>,
    /// Product of the `lr_plateau` decays so far.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub lr_scale: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

const OPT_MAGIC: &[u8; 8] = b"ARLMOPT1";

/// Writes AdamW's state: magic `ARLMOPT1`, u64 step count, u64 n, then n f32 of m and n
/// f32 of v, all little-endian (exact: f32 bits round-trip).
pub fn write_optimizer(path: &Path, opt: &AdamW) -> Result<(), TrainError> {
    let n = opt.m.len();
    let mut bytes = Vec::with_capacity(24 + 8 * n);
    bytes.extend_from_slice(OPT_MAGIC);
    bytes.extend_from_slice(&opt.t.to_le_bytes());
    bytes.extend_from_slice(&(n as u64).to_le_bytes());
    for x in opt.m.iter().chain(&opt.v) {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    crate::atomic::write_atomic(path, &bytes).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads [`write_optimizer`]'s file into `opt` (whose size must match).
pub fn read_optimizer(path: &Path, opt: &mut AdamW) -> Result<(), TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let n = opt.m.len();
    let bad = |m: String| TrainError::Checkpoint(format!("{}: {m}", path.display()));
    if bytes.len() < 24 || &bytes[..8] != OPT_MAGIC {
        return Err(bad("not an arlm optimizer file".into()));
    }
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
    let (t, len) = (u64_at(8), u64_at(16) as usize);
    if len != n {
        return Err(bad(format!(
            "holds moments for {len} parameters, the model has {n}"
        )));
    }
    let want = 24 + 8 * n as u64;
    if bytes.len() as u64 != want {
        return Err(bad(format!(
            "is {} bytes long, but moments for {n} parameters take {want} bytes \
             (the file is truncated or damaged)",
            bytes.len()
        )));
    }
    let floats = bytes[24..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    for (i, x) in floats.enumerate() {
        if i < n {
            opt.m[i] = x;
        } else {
            opt.v[i - n] = x;
        }
    }
    opt.t = t;
    Ok(())
}

/// Writes a complete checkpoint to `dest` (replacing it) via a temporary sibling directory.
pub fn write_checkpoint<M: Trainable>(
    dest: &Path,
    model: &M,
    tokenizer: &dyn Tokenizer,
    opt: &AdamW,
    state: &TrainState,
) -> Result<(), TrainError> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(".{name}.tmp.{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    model.save(&tmp)?;
    let context = Some(state.config.block_size);
    crate::tokenizer::save_in_model_dir(tokenizer, &tmp, context)?;
    write_optimizer(&tmp.join("optimizer.bin"), opt)?;
    let json = serde_json::to_string_pretty(state).unwrap_or_default();
    crate::atomic::write_atomic(tmp.join("train_state.json"), json.as_bytes()).map_err(io(&tmp))?;
    // Swap in: the old copy (if any) moves aside first, so `dest` is never half-written.
    let old = parent.join(format!(".{name}.old.{}", std::process::id()));
    if dest.exists() {
        std::fs::rename(dest, &old).map_err(io(dest))?;
    }
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// Reads `dir/train_state.json`.
pub fn read_state(dir: &Path) -> Result<TrainState, TrainError> {
    let path = dir.join("train_state.json");
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let bad = |e: serde_json::Error| TrainError::Checkpoint(format!("{}: {e}", path.display()));
    let mut value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    if let Some(config) = value.get_mut("config") {
        super::spec::upgrade_flat_config(config);
    }
    let state: TrainState = serde_json::from_value(value).map_err(bad)?;
    if state.format != FORMAT {
        return Err(TrainError::Checkpoint(format!(
            "{}: checkpoint format {} (this arlm reads {FORMAT})",
            path.display(),
            state.format
        )));
    }
    Ok(state)
}

/// The `checkpoints/step-N` directories of a run, sorted by N.
pub fn step_dirs(run: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix("step-")?.parse().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The latest checkpoint of a run whose `train_state.json` reads, and its state, if the
/// run has one (a newer directory without a readable state, such as an empty stray
/// `step-N`, is passed over; [`super::Trainer::resume`] says which).
pub fn latest(run: &Path) -> Result<Option<(PathBuf, TrainState)>, TrainError> {
    let mut first_error = None;
    for (_, dir) in step_dirs(run).into_iter().rev() {
        match read_state(&dir) {
            Ok(state) => return Ok(Some((dir, state))),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// Removes all but the newest `keep` step directories.
pub fn prune(run: &Path, keep: usize) -> Result<(), TrainError> {
    let dirs = step_dirs(run);
    let excess = dirs.len().saturating_sub(keep);
    for (_, d) in dirs.into_iter().take(excess) {
        std::fs::remove_dir_all(&d).map_err(|source| TrainError::Io { path: d, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optimizer_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = AdamW::new(5, 0.9, 0.99, 1e-8, 0.1);
        a.m = vec![1.0, -2.5, f32::MIN_POSITIVE, 3e-30, 7.0];
        a.v = vec![0.1, 0.2, 0.3, 0.4, 1e-38];
        a.t = 42;
        let p = dir.path().join("opt.bin");
        write_optimizer(&p, &a).unwrap();
        let mut b = AdamW::new(5, 0.9, 0.99, 1e-8, 0.1);
        read_optimizer(&p, &mut b).unwrap();
        assert_eq!(a, b);
        let mut c = AdamW::new(6, 0.9, 0.99, 1e-8, 0.1);
        assert!(read_optimizer(&p, &mut c).is_err());
        // Truncated: the message says so instead of comparing equal sizes.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let e = read_optimizer(&p, &mut b).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
