//! Output directories: arlm writes only into a directory that is empty or already its
//! own kind of output, and cleans up what a killed arlm process left behind.
//!
//! Every command that writes a directory (`train --out`, `ngram fit --out`, `prepare
//! --out`, `corpus synth --model-out`) calls [`check`] first. A directory is recognised by
//! what arlm itself writes there: a run (`metrics.jsonl` or `checkpoints/`), a prepared
//! data directory (`meta.json` + `train.bin`), or a model directory (`config.json` and its
//! `model_type`). Anything else that is not empty is refused with what was found, so a
//! mistyped `--out` never replaces someone's `config.json` or `tokenizer.json`; `--force`
//! writes anyway.
//!
//! Temporary files are named `.NAME.tmp.PID` (and `.NAME.old.PID` while a checkpoint is
//! swapped in), so after a `kill -9` the owner is known: [`remove_stale_temps`] removes
//! those whose process no longer exists, and never another live process's.

use std::path::{Path, PathBuf};

/// What a command is about to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A training run (`arlm train --out`).
    TrainRun,
    /// A prepared data directory (`arlm prepare --out`).
    DataDir,
    /// A model directory whose `config.json` has one of these `model_type`s.
    ModelDir(&'static [&'static str]),
}

impl OutputKind {
    fn describe(self) -> String {
        match self {
            OutputKind::TrainRun => "an arlm training run".into(),
            OutputKind::DataDir => "a prepared data directory".into(),
            OutputKind::ModelDir(types) => format!("a model directory of type {}", types.join("/")),
        }
    }
}

/// What an existing directory holds, as far as arlm can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Empty,
    TrainRun,
    DataDir,
    /// A `config.json` with this `model_type` ("" when it has none or is not JSON).
    Model(String),
    /// Something else: up to five of its entries.
    Foreign(Vec<String>),
}

impl Found {
    fn describe(&self) -> String {
        match self {
            Found::Empty => "empty".into(),
            Found::TrainRun => "an arlm training run (metrics.jsonl, checkpoints/)".into(),
            Found::DataDir => "a prepared data directory (train.bin, meta.json)".into(),
            Found::Model(t) if t.is_empty() => {
                "a directory with a config.json that names no model_type".into()
            }
            Found::Model(t) => format!("a model directory (config.json model_type {t:?})"),
            Found::Foreign(names) => format!("other files: {}", names.join(", ")),
        }
    }
}

/// Why a directory cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputDirError {
    #[error("{path} exists and is not a directory; choose another output path")]
    NotADirectory { path: PathBuf },
    #[error(
        "{path} is a symbolic link to a missing target; remove it or choose another output path"
    )]
    DanglingLink { path: PathBuf },
    #[error(
        "{path} is not empty and is not {expected}: it holds {found}. Choose another output \
         path, or pass --force to write into it anyway (files with the same names are replaced)"
    )]
    Foreign {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Looks at `dir` (which must exist and be a directory).
pub fn inspect(dir: &Path) -> Result<Found, OutputDirError> {
    let io = |source| OutputDirError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let name = entry
            .map_err(io)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if temp_owner(&name).is_none() {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(Found::Empty);
    }
    let has = |n: &str| names.iter().any(|x| x == n);
    if has("metrics.jsonl") || has("checkpoints") {
        return Ok(Found::TrainRun);
    }
    if has("meta.json") && has("train.bin") {
        return Ok(Found::DataDir);
    }
    if has("config.json") {
        let model_type = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("model_type")?.as_str().map(str::to_string))
            .unwrap_or_default();
        return Ok(Found::Model(model_type));
    }
    names.sort();
    names.truncate(5);
    Ok(Found::Foreign(names))
}

/// Refuses to write `kind` into `path` unless it is missing, an empty directory, or already
/// that kind of output (`force`: anything that is a directory). Also refuses a path that is
/// a file or a dangling symbolic link.
pub fn check(path: &Path, kind: OutputKind, force: bool) -> Result<(), OutputDirError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(OutputDirError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(_) => {}
    }
    match std::fs::metadata(path) {
        Err(_) => {
            return Err(OutputDirError::DanglingLink {
                path: path.to_path_buf(),
            })
        }
        Ok(m) if !m.is_dir() => {
            return Err(OutputDirError::NotADirectory {
                path: path.to_path_buf(),
            })
        }
        Ok(_) => {}
    }
    if force {
        return Ok(());
    }
    let found = inspect(path)?;
    let ours = match (&found, kind) {
        (Found::Empty, _) => true,
        (Found::TrainRun, OutputKind::TrainRun) => true,
        (Found::DataDir, OutputKind::DataDir) => true,
        (Found::Model(t), OutputKind::ModelDir(types)) => types.contains(&t.as_str()),
        _ => false,
    };
    if ours {
        Ok(())
    } else {
        Err(OutputDirError::Foreign {
            path: path.to_path_buf(),
            expected: kind.describe(),
            found: found.describe(),
        })
    }
}

/// The process id in an arlm temporary name (`.NAME.tmp.PID` or `.NAME.old.PID`).
fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (head, pid) = rest.rsplit_once('.')?;
    let pid: u32 = pid.parse().ok()?;
    (head.ends_with(".tmp") || head.ends_with(".old") || head == "prepare.tmp").then_some(pid)
}

/// Whether process `pid` may still be running. Without `/proc` (not Linux) every process
/// counts as alive, so nothing is ever removed there.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() || !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the temporary files and directories in `dir` left by arlm processes that no
/// longer exist; returns what it removed. A missing `dir` is not an error.
pub fn remove_stale_temps(dir: &Path) -> Result<Vec<PathBuf>, OutputDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OutputDirError::Io { path, source }
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map_err(io(&path))?.is_dir();
        let r = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(io(&path))?;
        removed.push(path);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KN: OutputKind = OutputKind::ModelDir(&["arlm-kneser-ney", "arlm-add-k"]);

    #[test]
    fn missing_and_empty_directories_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        check(&dir.path().join("new"), OutputKind::TrainRun, false).unwrap();
        check(dir.path(), OutputKind::DataDir, false).unwrap();
    }

    #[test]
    fn own_kind_is_accepted_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("train.bin"), b"x").unwrap();
        std::fs::write(d.join("meta.json"), b"{}").unwrap();
        std::fs::write(d.join("tokenizer.json"), b"{}").unwrap();
        check(d, OutputKind::DataDir, false).unwrap();
        let e = check(d, OutputKind::TrainRun, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("prepared data directory") && e.contains("--force"),
            "{e}"
        );
        check(d, OutputKind::TrainRun, true).unwrap();

        let m = tempfile::tempdir().unwrap();
        std::fs::write(m.path().join("config.json"), br#"{"model_type":"gpt2"}"#).unwrap();
        let e = check(m.path(), KN, false).unwrap_err().to_string();
        assert!(e.contains("\"gpt2\""), "{e}");
        std::fs::write(
            m.path().join("config.json"),
            br#"{"model_type":"arlm-kneser-ney"}"#,
        )
        .unwrap();
        check(m.path(), KN, false).unwrap();
        // A run directory also holds a model's config.json: it is still a run.
        std::fs::write(m.path().join("metrics.jsonl"), b"").unwrap();
        check(m.path(), OutputKind::TrainRun, false).unwrap();
        assert!(check(m.path(), KN, false).is_err());
    }

    #[test]
    fn files_and_dangling_links_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        let e = check(&f, OutputKind::TrainRun, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        #[cfg(unix)]
        {
            let l = dir.path().join("link");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &l).unwrap();
            let e = check(&l, OutputKind::TrainRun, true)
                .unwrap_err()
                .to_string();
            assert!(e.contains("symbolic link"), "{e}");
        }
    }

    #[test]
    fn foreign_listing_names_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let e = check(dir.path(), OutputKind::TrainRun, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("notes.txt"), "{e}");
    }

    #[test]
    fn stale_temps_of_dead_processes_are_removed_and_live_ones_kept() {
        if !Path::new("/proc/self").exists() {
            eprintln!("SKIPPED: no /proc");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A pid above the kernel's pid_max (4194304) never exists.
        let dead = 4_194_305u32;
        let me = std::process::id();
        std::fs::create_dir(d.join(format!(".step-7.tmp.{dead}"))).unwrap();
        std::fs::write(d.join(format!(".step-7.tmp.{dead}/x")), b"x").unwrap();
        std::fs::write(d.join(format!(".model.safetensors.tmp.{dead}")), b"x").unwrap();
        std::fs::write(d.join(format!(".config.json.tmp.{me}")), b"x").unwrap();
        std::fs::write(d.join("model.safetensors"), b"x").unwrap();
        std::fs::write(d.join(".hidden.tmp.notapid"), b"x").unwrap();
        let removed = remove_stale_temps(d).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(d.join(format!(".config.json.tmp.{me}")).exists());
        assert!(d.join("model.safetensors").exists());
        assert!(d.join(".hidden.tmp.notapid").exists());
        assert!(remove_stale_temps(&d.join("missing")).unwrap().is_empty());
    }
}
