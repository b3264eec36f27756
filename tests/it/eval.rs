//! End-to-end tests of `arlm eval` on the real binary.

use crate::common;

use arlm::load::save_uniform;
use arlm::tokenizer::bytes::ByteTokenizer;
use common::{arlm, arlm_ok, shared_data};

fn uniform_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    save_uniform(dir.path(), &ByteTokenizer).unwrap();
    dir
}

#[test]
fn uniform_eval_reports_exact_metrics_and_protocol() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let data = dir.path().join("val.txt");
    let text = "the cat sat\non the mat\n";
    std::fs::write(&data, text).unwrap();
    let out = arlm_ok(&[
        "eval",
        "--model",
        m,
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["totals"]["tokens"], text.len());
    assert_eq!(v["totals"]["bytes"], text.len());
    assert_eq!(v["totals"]["words"], 6);
    let ppl = v["metrics"]["token_perplexity"].as_f64().unwrap();
    assert!((ppl - 257.0).abs() < 1e-3, "{ppl}");
    let bpb = v["metrics"]["bits_per_byte"].as_f64().unwrap();
    assert!((bpb - 257f64.log2()).abs() < 1e-5);
    // Word perplexity divides the total NLL by words.
    let wp = v["metrics"]["word_perplexity"].as_f64().unwrap();
    let nll = v["totals"]["nll"].as_f64().unwrap();
    assert!((wp.ln() * 6.0 - nll).abs() < 1e-6);
    assert_eq!(v["protocol"]["tokenizer"], "bytes");
    // Text output always carries the protocol; a directory resolves the split.
    let out = arlm_ok(&["eval", "--model", m, "--data", dir.path().to_str().unwrap()]);
    for key in [
        "token perplexity",
        "bits per byte",
        "protocol:",
        "fingerprint",
        "first token",
        "scored",
    ] {
        assert!(out.contains(key), "missing {key}: {out}");
    }
}

#[test]
fn same_number_for_any_stride_with_a_context_free_model() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let data = dir.path().join("t.txt");
    std::fs::write(&data, "abcdefghij".repeat(30)).unwrap();
    let d = data.to_str().unwrap();
    let a = arlm_ok(&[
        "eval",
        "--model",
        m,
        "--data",
        d,
        "--json",
        "--context",
        "16",
        "--stride",
        "3",
    ]);
    let b = arlm_ok(&[
        "eval",
        "--model",
        m,
        "--data",
        d,
        "--json",
        "--context",
        "16",
    ]);
    let a: serde_json::Value = serde_json::from_str(&a).unwrap();
    let b: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(a["totals"]["tokens"], 300);
    assert_eq!(a["totals"], b["totals"]);
    assert_eq!(a["protocol"]["stride"], 3);
}

#[test]
fn bad_flags_are_clear_errors() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let data = dir.path().join("t.txt");
    std::fs::write(&data, "abc").unwrap();
    let d = data.to_str().unwrap();
    for args in [
        vec![
            "eval",
            "--model",
            m,
            "--data",
            d,
            "--context",
            "8",
            "--stride",
            "8",
        ],
        vec!["eval", "--model", m, "--data", "/nonexistent.txt"],
        vec![
            "eval",
            "--model",
            m,
            "--data",
            dir.path().to_str().unwrap(),
            "--split",
            "test",
        ],
    ] {
        let out = arlm(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn ptb_uniform_bytes_quick_check() {
    // Real data, cheap model: bytes per line of PTB test with a uniform byte model.
    let Some(ptb) = shared_data("ptb/ptb.test.txt") else {
        return;
    };
    let dir = uniform_model();
    let out = arlm_ok(&[
        "eval",
        "--model",
        dir.path().to_str().unwrap(),
        "--data",
        ptb.to_str().unwrap(),
        "--docs",
        "lines",
        "--json",
        "--resamples",
        "100",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = std::fs::read_to_string(&ptb).unwrap();
    let bytes: usize = text.lines().map(str::len).sum();
    assert_eq!(v["totals"]["bytes"], bytes);
    assert_eq!(v["totals"]["tokens"], bytes);
    assert_eq!(v["interval"]["unit"], "documents");
    assert_eq!(v["protocol"]["documents"], 3761);
}

#[test]
fn ptb_standard_counts_with_a_words_tokenizer() {
    // The word-level convention: one </s> scored per line (82,430 tokens on PTB test, the
    // standard figure), bytes = the file's bytes, words = whitespace words.
    let Some(test) = shared_data("ptb/ptb.test.txt") else {
        return;
    };
    let text = std::fs::read_to_string(&test).unwrap();
    let tok = arlm::tokenizer::words::WordTokenizer::train(&[&text], None, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_uniform(dir.path(), &tok).unwrap();
    let out = arlm_ok(&[
        "eval",
        "--model",
        dir.path().to_str().unwrap(),
        "--data",
        test.to_str().unwrap(),
        "--json",
        "--resamples",
        "50",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["totals"]["tokens"], 82430);
    assert_eq!(v["totals"]["bytes"], text.len());
    assert_eq!(v["totals"]["words"], text.split_whitespace().count());
    let ppl = v["metrics"]["token_perplexity"].as_f64().unwrap();
    let vocab = arlm::tokenizer::Tokenizer::vocab_size(&tok) as f64;
    assert!((ppl / vocab - 1.0).abs() < 1e-5, "{ppl} vs {vocab}");
}
