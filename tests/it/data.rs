//! End-to-end tests of `arlm prepare`: real splits on shared data, bad input through the binary.

use crate::common;
use arlm::data::bin::TokenFile;
use common::{arlm, arlm_ok, shared_data};
use std::path::Path;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn meta(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap()
}

fn fails_with(args: &[&str], needle: &str) {
    let out = arlm(args);
    assert_eq!(out.status.code(), Some(2), "{args:?} should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
}

#[test]
fn tinyshakespeare_chars_gives_nanogpts_split() {
    let Some(shk) = shared_data("tinyshakespeare.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("chars.json");
    let out = dir.path().join("shk");
    arlm_ok(&[
        "tokenizer",
        "train",
        "--kind",
        "chars",
        "--input",
        p(&shk),
        "--out",
        p(&tok),
    ]);
    arlm_ok(&[
        "prepare",
        "--tokenizer",
        p(&tok),
        "--input",
        p(&shk),
        "--out",
        p(&out),
    ]);
    // nanoGPT data/shakespeare_char/prepare.py: 1,003,854 train and 111,540 val tokens.
    let train = TokenFile::open(&out.join("train.bin")).unwrap();
    let val = TokenFile::open(&out.join("val.bin")).unwrap();
    assert_eq!(train.len(), 1_003_854);
    assert_eq!(val.len(), 111_540);
    let m = meta(&out);
    assert_eq!(m["train"]["tokens"], 1_003_854);
    assert_eq!(m["tokenizer_kind"], "chars");
    // The ids decode back to the text, split where nanoGPT splits it.
    let text = std::fs::read_to_string(&shk).unwrap();
    let t = arlm::tokenizer::load(&out).unwrap();
    let decoded = t.decode(&val.slice(0, val.len())).unwrap();
    assert_eq!(decoded, text.chars().skip(1_003_854).collect::<String>());
}

#[test]
fn tinyshakespeare_gpt2_gives_nanogpts_split() {
    let (Some(shk), Some(gpt2)) = (shared_data("tinyshakespeare.txt"), shared_data("gpt2")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("shk");
    arlm_ok(&[
        "prepare",
        "--tokenizer",
        p(&gpt2),
        "--input",
        p(&shk),
        "--out",
        p(&out),
    ]);
    // nanoGPT data/shakespeare/prepare.py: 301,966 train and 36,059 val tokens.
    let m = meta(&out);
    assert_eq!(m["train"]["tokens"], 301_966);
    assert_eq!(m["val"]["tokens"], 36_059);
    assert_eq!(m["id_bytes"], 2);
}

#[test]
fn default_corpus_needs_no_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let stdout = arlm_ok(&["prepare", "--tokenizer", "bytes", "--out", p(&out)]);
    assert!(stdout.contains("floor"), "{stdout}");
    let m = meta(&out);
    assert_eq!(m["train"]["tokens"], 900_000);
    assert_eq!(m["val"]["tokens"], 100_000);
    // The train split is the default corpus's first 900,000 bytes.
    let train = TokenFile::open(&out.join("train.bin")).unwrap();
    let want: Vec<u32> = arlm::corpus::default_corpus()
        .bytes()
        .take(1000)
        .map(u32::from)
        .collect();
    assert_eq!(train.slice(0, 1000), want);
}

#[test]
fn bad_input_gives_clear_errors_and_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out");
    let good = d.join("good.txt");
    std::fs::write(&good, "Some text here.\n").unwrap();

    fails_with(
        &[
            "prepare",
            "--tokenizer",
            "bytes",
            "--input",
            p(&d.join("nope.txt")),
            "--out",
            p(&out),
        ],
        "nope.txt",
    );
    fails_with(
        &[
            "prepare",
            "--tokenizer",
            p(&d.join("tok.json")),
            "--input",
            p(&good),
            "--out",
            p(&out),
        ],
        "tok.json",
    );

    let bad = d.join("bad.txt");
    std::fs::write(&bad, b"caf\xc3\xa9 ok \xff\xfe more").unwrap();
    fails_with(
        &[
            "prepare",
            "--tokenizer",
            "bytes",
            "--input",
            p(&bad),
            "--out",
            p(&out),
        ],
        "byte offset 9",
    );
    assert!(!out.join("train.bin").exists() && !out.join("meta.json").exists());
    arlm_ok(&[
        "prepare",
        "--tokenizer",
        "bytes",
        "--input",
        p(&bad),
        "--out",
        p(&out),
        "--lossy",
    ]);
    let m = meta(&out);
    // Two U+FFFD (3 bytes each) replace the two invalid bytes.
    assert_eq!(
        m["train"]["bytes"].as_u64().unwrap() + m["val"]["bytes"].as_u64().unwrap(),
        "café ok \u{FFFD}\u{FFFD} more".len() as u64
    );

    let empty = d.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    fails_with(
        &[
            "prepare",
            "--tokenizer",
            "bytes",
            "--input",
            p(&empty),
            "--out",
            p(&out),
        ],
        "empty",
    );

    // Unwritable output: a path below a regular file (works even as root).
    fails_with(
        &[
            "prepare",
            "--tokenizer",
            "bytes",
            "--input",
            p(&good),
            "--out",
            p(&good.join("sub")),
        ],
        "good.txt",
    );

    fails_with(
        &[
            "prepare",
            "--tokenizer",
            "bytes",
            "--input",
            p(&good),
            "--out",
            p(&out),
            "--val-fraction",
            "1.5",
        ],
        "val-fraction",
    );

    // A vocabulary of more than 65,536 tokens does not fit u16 ids.
    let wide = d.join("wide.txt");
    let text: String = (0x100u32..0x12000).filter_map(char::from_u32).collect();
    std::fs::write(&wide, &text).unwrap();
    let tok = d.join("wide.json");
    arlm_ok(&[
        "tokenizer",
        "train",
        "--kind",
        "chars",
        "--input",
        p(&wide),
        "--out",
        p(&tok),
    ]);
    let out2 = d.join("wide");
    fails_with(
        &[
            "prepare",
            "--tokenizer",
            p(&tok),
            "--input",
            p(&wide),
            "--out",
            p(&out2),
            "--dtype",
            "u16",
        ],
        "u16",
    );
    assert!(!out2.join("train.bin").exists());
    arlm_ok(&[
        "prepare",
        "--tokenizer",
        p(&tok),
        "--input",
        p(&wide),
        "--out",
        p(&out2),
    ]);
    assert_eq!(meta(&out2)["id_bytes"], 4);
    let train = TokenFile::open(&out2.join("train.bin")).unwrap();
    assert!(train.vocab_size() > 65_536);
}

#[test]
fn jsonl_and_val_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let j = d.join("docs.jsonl");
    std::fs::write(&j, "{\"text\": \"first doc\"}\n{\"text\": \"second\"}\n").unwrap();
    let v = d.join("v.jsonl");
    std::fs::write(&v, "{\"text\": \"held out\"}\n").unwrap();
    let out = d.join("out");
    arlm_ok(&[
        "prepare",
        "--tokenizer",
        "bytes",
        "--input",
        p(&j),
        "--val",
        p(&v),
        "--jsonl",
        "--out",
        p(&out),
    ]);
    let m = meta(&out);
    assert_eq!(m["train"]["documents"], 2);
    assert_eq!(m["train"]["tokens"], "first doc".len() + 1 + "second".len());
    assert_eq!(m["val"]["tokens"], "held out".len());
    std::fs::write(&j, "{\"text\": \"ok\"}\nnot json\n").unwrap();
    fails_with(
        &[
            "prepare",
            "--tokenizer",
            "bytes",
            "--input",
            p(&j),
            "--jsonl",
            "--out",
            p(&out),
        ],
        "docs.jsonl:2",
    );
}
