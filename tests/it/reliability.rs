//! The failure model, end to end (docs/ARCHITECTURE.md "Failure model"): the real binary
//! refuses to write into directories that are not its own, and hostile numbers and sizes
//! end in a clear error (exit 2), never a panic, an abort or a silent wrong number.

use crate::common;

use std::path::Path;
use std::process::Output;

/// Asserts `out` failed cleanly (exit 2, an `arlm: error:` line, no panic) and that its
/// message contains every one of `needles`; returns the message.
fn clean_error(out: &Output, needles: &[&str]) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "exit {:?}: {err}", out.status);
    assert!(err.contains("arlm: error:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "missing {n:?} in: {err}");
    }
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const TEXT: &str = "the cat sat on the mat\nthe dog sat on the log\na cat and a dog\n";

/// A small Kneser-Ney model of `txt` (fixed discounts: the text is too small to estimate them).
fn fit_kn(txt: &Path, out: &Path, order: &str) {
    common::arlm_ok(&[
        "ngram",
        "fit",
        "--order",
        order,
        "--input",
        s(txt),
        "--out",
        s(out),
        "--discount-fallback",
        "0.5 1 1.5",
    ]);
}

/// A prepared data dir and a tiny trained run in `dir`.
fn data_and_run(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let txt = dir.join("t.txt");
    std::fs::write(&txt, TEXT.repeat(60)).unwrap();
    let tok = dir.join("chars.json");
    common::arlm_ok(&[
        "tokenizer",
        "train",
        "--kind",
        "chars",
        "--input",
        s(&txt),
        "--out",
        s(&tok),
    ]);
    let data = dir.join("data");
    common::arlm_ok(&[
        "prepare",
        "--tokenizer",
        s(&tok),
        "--input",
        s(&txt),
        "--out",
        s(&data),
    ]);
    let run = dir.join("run");
    common::arlm_ok(&[
        "train",
        "--preset",
        "tiny",
        "--data",
        s(&data),
        "--steps",
        "2",
        "--block-size",
        "16",
        "--out",
        s(&run),
        "--quiet",
    ]);
    (data, run)
}

#[test]
fn commands_refuse_directories_that_are_not_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run) = data_and_run(dir.path());
    let tok_before = std::fs::read(data.join("tokenizer.json")).unwrap();

    // train --out over prepared data: refused, and the data is untouched.
    let out = common::arlm(&[
        "train",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--out",
        s(&data),
    ]);
    clean_error(&out, &["prepared data directory", "--force"]);
    assert_eq!(
        std::fs::read(data.join("tokenizer.json")).unwrap(),
        tok_before
    );

    // ngram fit over a GPT run, prepare over a GPT run.
    let txt = dir.path().join("t.txt");
    let out = common::arlm(&[
        "ngram",
        "fit",
        "--order",
        "2",
        "--input",
        s(&txt),
        "--out",
        s(&run),
        "--discount-fallback",
        "0.5 1 1.5",
    ]);
    clean_error(&out, &["training run"]);
    let out = common::arlm(&[
        "prepare",
        "--tokenizer",
        "bytes",
        "--input",
        s(&txt),
        "--out",
        s(&run),
    ]);
    clean_error(&out, &["training run"]);

    // A KN model directory is not a training run either, and a project folder is neither.
    let kn = dir.path().join("kn");
    fit_kn(&txt, &kn, "2");
    let kn_config = std::fs::read(kn.join("config.json")).unwrap();
    let out = common::arlm(&["train", "--preset", "tiny", "--steps", "2", "--out", s(&kn)]);
    clean_error(&out, &["arlm-kneser-ney"]);
    assert_eq!(std::fs::read(kn.join("config.json")).unwrap(), kn_config);
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("config.json"), b"{\"name\": \"mine\"}").unwrap();
    let out = common::arlm(&[
        "train",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--out",
        s(&project),
    ]);
    clean_error(&out, &["config.json"]);
    assert_eq!(
        std::fs::read(project.join("config.json")).unwrap(),
        b"{\"name\": \"mine\"}"
    );

    // Re-fitting an n-gram model into its own directory is fine; --force overrides.
    fit_kn(&txt, &kn, "3");
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("todo.txt"), b"x").unwrap();
    let out = common::arlm(&[
        "prepare",
        "--tokenizer",
        "bytes",
        "--input",
        s(&txt),
        "--out",
        s(&notes),
    ]);
    clean_error(&out, &["todo.txt"]);
    common::arlm_ok(&[
        "prepare",
        "--tokenizer",
        "bytes",
        "--input",
        s(&txt),
        "--out",
        s(&notes),
        "--force",
    ]);
    assert!(notes.join("todo.txt").exists() && notes.join("train.bin").exists());

    // --out naming a file, or a dangling symbolic link.
    let out = common::arlm(&["train", "--preset", "tiny", "--out", s(&txt)]);
    clean_error(&out, &["not a directory"]);
    #[cfg(unix)]
    {
        let link = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let out = common::arlm(&["train", "--preset", "tiny", "--out", s(&link)]);
        clean_error(&out, &["symbolic link"]);
    }
}

#[test]
fn hostile_numbers_and_sizes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let big = "18446744073709551615";
    let out = common::arlm(&[
        "corpus",
        "synth",
        "--bytes",
        big,
        "--out",
        s(&d.join("x.txt")),
    ]);
    clean_error(&out, &["--bytes"]);
    let out = common::arlm(&[
        "train",
        "--preset",
        "tiny",
        "--batch-size",
        "100000000000",
        "--out",
        s(&d.join("r1")),
    ]);
    clean_error(&out, &["batch"]);
    let out = common::arlm(&[
        "train",
        "--preset",
        "tiny",
        "--n-embd",
        "4294967296",
        "--n-head",
        "1",
        "--out",
        s(&d.join("r2")),
    ]);
    clean_error(&out, &[]);

    let txt = d.join("t.txt");
    std::fs::write(&txt, TEXT.repeat(30)).unwrap();
    let empty = d.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    let kn = d.join("kn");
    fit_kn(&txt, &kn, "2");
    let out = common::arlm(&["eval", "--model", s(&kn), "--data", s(&empty)]);
    clean_error(&out, &["nothing to score"]);
    let out = common::arlm(&[
        "eval",
        "--model",
        s(&kn),
        "--data",
        s(&txt),
        "--resamples",
        big,
    ]);
    clean_error(&out, &["--resamples"]);
    // Shorter than one bootstrap block: the interval is said to be unavailable.
    let short = d.join("short.txt");
    std::fs::write(&short, b"the cat sat\n").unwrap();
    let report = common::arlm_ok(&["eval", "--model", s(&kn), "--data", s(&short)]);
    assert!(report.contains("not available"), "{report}");

    // --warmup-steps at u64::MAX trains (a tiny rate), it does not wrap to an infinite one.
    let stdout = common::arlm_ok(&[
        "train",
        "--preset",
        "tiny",
        "--data",
        s(&txt),
        "--steps",
        "2",
        "--block-size",
        "16",
        "--warmup-steps",
        big,
        "--out",
        s(&d.join("r3")),
        "--quiet",
    ]);
    assert!(stdout.contains("done: 2 steps"), "{stdout}");

    // A .bin header whose count wraps around 2^64 to the file's real size.
    let data = d.join("data");
    common::arlm_ok(&[
        "prepare",
        "--tokenizer",
        "bytes",
        "--input",
        s(&txt),
        "--out",
        s(&data),
    ]);
    let val = data.join("val.bin");
    let mut bytes = std::fs::read(&val).unwrap();
    let width = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as u64;
    let n = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    if width == 2 {
        // (2^63 + n) ids of 2 bytes take 2^64 + 2n bytes, which wraps to 2n.
        bytes[16..24].copy_from_slice(&((1u64 << 63) + n).to_le_bytes());
        std::fs::write(&val, &bytes).unwrap();
        let out = common::arlm(&["eval", "--model", s(&kn), "--data", s(&val)]);
        clean_error(&out, &["header says"]);
    }
}

#[test]
fn a_kn_config_cannot_point_outside_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("t.txt");
    std::fs::write(&txt, TEXT.repeat(30)).unwrap();
    let kn = dir.path().join("kn");
    fit_kn(&txt, &kn, "2");
    let cpath = kn.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
    v["file"] = "../t.txt".into();
    std::fs::write(&cpath, v.to_string()).unwrap();
    let out = common::arlm(&["eval", "--model", s(&kn), "--data", s(&txt)]);
    clean_error(&out, &["inside the model directory"]);
}
