//! End-to-end tests of `arlm score` on the real binary.

use crate::common;

use arlm::load::save_uniform;
use arlm::tokenizer::bytes::ByteTokenizer;
use common::{arlm, arlm_ok};

fn uniform_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    save_uniform(dir.path(), &ByteTokenizer).unwrap();
    dir
}

#[test]
fn jsonl_joint_is_sum_of_token_terms() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let out = arlm_ok(&["score", "--model", m, "--format", "jsonl", "héllo", "ab"]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let toks = lines[0]["tokens"].as_array().unwrap();
    assert_eq!(toks.len(), "héllo".len());
    let sum: f64 = toks.iter().map(|t| t["logprob"].as_f64().unwrap()).sum();
    let joint = lines[0]["joint_logprob"].as_f64().unwrap();
    assert!((sum - joint).abs() < 1e-9, "{sum} vs {joint}");
    assert!((joint + 6.0 * (257f64).ln()).abs() < 1e-4);
    assert_eq!(lines[0]["totals"]["bytes"], 6);
    assert_eq!(toks[0]["top"].as_array().unwrap().len(), 5);
}

#[test]
fn conditional_scoring_from_jsonl_does_not_count_context() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let input = dir.path().join("pairs.jsonl");
    std::fs::write(
        &input,
        "{\"context\": \"The capital of France is\", \"continuation\": \" Paris\"}\n{\"text\": \"xyz\"}\n",
    )
    .unwrap();
    let out = arlm_ok(&["score", "--model", m, "--input", input.to_str().unwrap()]);
    let v: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["tokens"].as_array().unwrap().len(), 6);
    assert_eq!(v[0]["context_tokens"], 24);
    assert_eq!(v[1]["tokens"].as_array().unwrap().len(), 3);
    // --context on plain text does the same.
    let out = arlm_ok(&[
        "score",
        "--model",
        m,
        "--format",
        "jsonl",
        "--context",
        "abc",
        "de",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), 2);
}

#[test]
fn table_and_html_formats() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let out = arlm_ok(&[
        "score", "--model", m, "--format", "table", "--color", "always", "hi",
    ]);
    assert!(out.contains("\x1b[30;42m"), "{out}");
    assert!(out.contains("sum logp"));
    let html = dir.path().join("s.html");
    arlm_ok(&[
        "score",
        "--model",
        m,
        "--format",
        "html",
        "-o",
        html.to_str().unwrap(),
        "a<b",
    ]);
    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>") && page.contains("class=\"tip\""));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let out = arlm(&["score", "--model", m]);
    assert_eq!(out.status.code(), Some(2));
    let out = arlm(&["score", "--model", "/nonexistent/model", "x"]);
    assert_eq!(out.status.code(), Some(2));
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"nope\": 1}\n").unwrap();
    let out = arlm(&["score", "--model", m, "--input", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no string field"));
}
