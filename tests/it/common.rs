//! Helpers for end-to-end tests that run the real `arlm` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// `../shared/data/<rel>` beside the checkout (or under `$ARLM_SHARED_DATA`), if present.
/// Tests that need it print a clear "skipped" line and return when it is absent.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let base = arlm::data::shared_data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR")));
    let p = base.join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} is absent (shared data not available)",
            p.display()
        );
        None
    }
}

/// Runs `arlm` with `args` and returns its output.
pub fn arlm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arlm"))
        .args(args)
        .output()
        .expect("run arlm")
}

/// Runs `arlm` with `args`, asserts success, and returns stdout as a string.
pub fn arlm_ok(args: &[&str]) -> String {
    let out = arlm(args);
    assert!(
        out.status.success(),
        "arlm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}
