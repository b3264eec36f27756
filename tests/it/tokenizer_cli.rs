//! `arlm tokenizer` end to end: train, encode, decode, info, and bad input.

use crate::common;

use common::{arlm, arlm_ok};
use std::io::Write;
use std::process::{Command, Stdio};

fn with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_arlm"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn train_encode_decode_info_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(
        &corpus,
        "the cat sat on the mat\nthe dog sat on the log\n".repeat(30),
    )
    .unwrap();
    let corpus = corpus.to_str().unwrap();
    let text = "the cat sat on the log\n";
    for (kind, extra) in [
        ("bpe", vec!["--vocab-size", "300"]),
        ("bpe", vec!["--vocab-size", "300", "--pretokenizer", "gpt4"]),
        ("chars", vec![]),
        ("bytes", vec![]),
    ] {
        let out = dir.path().join(format!("{kind}.json"));
        let out = out.to_str().unwrap();
        let mut args = vec![
            "tokenizer",
            "train",
            "--kind",
            kind,
            "--input",
            corpus,
            "--out",
            out,
        ];
        args.extend(extra);
        arlm_ok(&args);
        let info = arlm_ok(&["tokenizer", "info", "--tokenizer", out]);
        assert!(info.contains(&format!("kind:          {kind}")), "{info}");

        let enc = with_stdin(
            &[
                "tokenizer",
                "encode",
                "--tokenizer",
                out,
                "--format",
                "json",
            ],
            text.as_bytes(),
        );
        assert!(enc.status.success());
        let ids: Vec<u32> = serde_json::from_slice(&enc.stdout).unwrap();
        assert!(!ids.is_empty());
        if kind == "bpe" {
            assert!(
                ids.len() < text.len() / 2,
                "BPE compresses the training text"
            );
        }
        let dec = with_stdin(&["tokenizer", "decode", "--tokenizer", out], &enc.stdout);
        assert_eq!(String::from_utf8(dec.stdout).unwrap(), text);

        let enc2 = with_stdin(
            &["tokenizer", "encode", "--tokenizer", out],
            text.as_bytes(),
        );
        let spaced = String::from_utf8(enc2.stdout).unwrap();
        let parsed: Vec<u32> = spaced
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(parsed, ids);
        let dec2 = with_stdin(
            &["tokenizer", "decode", "--tokenizer", out],
            spaced.as_bytes(),
        );
        assert_eq!(String::from_utf8(dec2.stdout).unwrap(), text);
    }
}

#[test]
fn chars_on_tinyshakespeare_has_65_symbols() {
    let Some(shakespeare) = common::shared_data("tinyshakespeare.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tok.json");
    let out = out.to_str().unwrap();
    arlm_ok(&[
        "tokenizer",
        "train",
        "--kind",
        "chars",
        "--input",
        shakespeare.to_str().unwrap(),
        "--out",
        out,
    ]);
    let info = arlm_ok(&["tokenizer", "info", "--tokenizer", out]);
    assert!(
        info.contains("vocab size:    66"),
        "65 characters + <|endoftext|>: {info}"
    );
}

#[test]
fn gpt2_directory_loads() {
    let Some(dir) = common::shared_data("gpt2") else {
        return;
    };
    let dir = dir.to_str().unwrap();
    let enc = with_stdin(&["tokenizer", "encode", "--tokenizer", dir], b"Hello world");
    assert_eq!(String::from_utf8(enc.stdout).unwrap().trim(), "15496 995");
}

#[test]
fn bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tok.json");
    let out = out.to_str().unwrap();
    let missing = arlm(&[
        "tokenizer",
        "train",
        "--kind",
        "chars",
        "--input",
        "/no/such/file",
        "--out",
        out,
    ]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("/no/such/file"), "{err}");

    // One line, each cause said once (the library's I/O errors name their cause in their
    // own message and also chain it as the source; it used to come out twice).
    let missing = arlm(&["tokenizer", "info", "--tokenizer", "/no/such/tok.json"]);
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    let parts: Vec<&str> = err.trim().split(": ").collect();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for (i, a) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(a), "repeated cause in: {err}");
    }

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"ok\xffno").unwrap();
    let r = arlm(&[
        "tokenizer",
        "train",
        "--kind",
        "chars",
        "--input",
        bad.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("offset 2"));

    let good = dir.path().join("good.txt");
    std::fs::write(&good, "abc").unwrap();
    let r = arlm(&[
        "tokenizer",
        "train",
        "--kind",
        "bpe",
        "--input",
        good.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert_eq!(r.status.code(), Some(2), "bpe needs --vocab-size");

    arlm_ok(&[
        "tokenizer",
        "train",
        "--kind",
        "chars",
        "--input",
        good.to_str().unwrap(),
        "--out",
        out,
    ]);
    let r = with_stdin(&["tokenizer", "encode", "--tokenizer", out], b"abz");
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("'z'"));
    let r = with_stdin(&["tokenizer", "decode", "--tokenizer", out], b"0 99");
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("99"));
    let r = with_stdin(&["tokenizer", "decode", "--tokenizer", out], b"0 x");
    assert_eq!(r.status.code(), Some(2));
    let r = arlm(&["tokenizer", "info", "--tokenizer", "/no/such/tok.json"]);
    assert_eq!(r.status.code(), Some(2));
}

#[test]
fn no_input_uses_the_embedded_default_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tok.json");
    let out = out.to_str().unwrap();
    arlm_ok(&["tokenizer", "train", "--kind", "chars", "--out", out]);
    let expect = arlm::tokenizer::chars::CharTokenizer::train(&[arlm::corpus::default_corpus()]);
    let info = arlm_ok(&["tokenizer", "info", "--tokenizer", out]);
    use arlm::tokenizer::Tokenizer;
    assert!(info.contains(&expect.fingerprint()), "{info}");
}
