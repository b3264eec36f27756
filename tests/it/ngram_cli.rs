//! End to end: `arlm ngram fit` / `arlm ngram ppl` on a small text, model directories and
//! ARPA files through `load`, and clear errors on bad input.
// with_model! expands the body for every model class, including ones whose State is ().
#![allow(clippy::let_unit_value)]
use crate::common;

use arlm::model::{logsumexp, LanguageModel};
use arlm::with_model;
use common::{arlm, arlm_ok};
use std::path::Path;
use std::process::Output;

/// `arlm ngram fit` of a Kneser-Ney trigram on the text file `train` into `out`, plus
/// `extra` flags, and its output. The fixed discounts: small synthetic texts lack the
/// count-of-counts real text has (see bad_input_fails_clearly).
pub fn fit_trigram_output(train: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "ngram",
        "fit",
        "--order",
        "3",
        "--input",
        train.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--discount-fallback",
        "0.5 1 1.5",
    ];
    args.extend_from_slice(extra);
    arlm(&args)
}

/// [`fit_trigram_output`], asserting success; returns stdout.
pub fn fit_trigram(train: &Path, out: &Path, extra: &[&str]) -> String {
    let o = fit_trigram_output(train, out, extra);
    assert!(
        o.status.success(),
        "ngram fit {extra:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8 stdout")
}

pub fn small_corpus() -> String {
    // Enough variety for every count-of-counts n1..n4 at orders 1-3.
    let mut state = 7u64;
    let mut prev = 0usize;
    let mut text = String::new();
    for _ in 0..1500 {
        let len = 2 + (state >> 60) as usize;
        for i in 0..len {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Zipf-ish: square the uniform draw.
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            // A Markov chain (so n-grams repeat) with a Zipf-like choice of successor.
            prev = (prev * 31 + (u * u * u * 60.0) as usize) % 800;
            let w = format!("w{prev}");
            if i > 0 {
                text.push(' ');
            }
            text.push_str(&w);
        }
        text.push('\n');
    }
    text
}

#[test]
fn fit_kn_and_addk_then_load_and_score() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.txt");
    std::fs::write(&train, small_corpus()).unwrap();
    let kn = dir.path().join("kn");
    let arpa = dir.path().join("kn.arpa.gz");
    let out = fit_trigram(&train, &kn, &["--arpa", arpa.to_str().unwrap()]);
    assert!(out.contains("discounts"), "{out}");
    // The directory and the ARPA file give the same model.
    let a = arlm::load::load(&kn).unwrap();
    let b = arlm::load::load(&arpa).unwrap();
    let text = "w0 w1 w2 w0 w3\nzebra w0 w5\n";
    let ids_a = a.tokenizer.encode(text).unwrap();
    let ids_b = b.tokenizer.encode(text).unwrap();
    assert_eq!(ids_a, ids_b, "ARPA vocabulary keeps the tokenizer's ids");
    let mut seq = vec![2u32];
    seq.extend(&ids_a);
    let la = with_model!(&a.model, m => m.score_next(&seq).unwrap());
    let lb = with_model!(&b.model, m => m.score_next(&seq).unwrap());
    for (x, y) in la.iter().zip(&lb) {
        assert!((x - y).abs() < 1e-5);
    }
    with_model!(&a.model, m => {
        let mut st = m.new_state();
        let mut row = vec![0f32; m.vocab_size()];
        for &t in &seq {
            m.feed(&mut st, t, &mut row).unwrap();
            assert!(logsumexp(&row).abs() < 1e-5);
        }
    });
    let ppl = arlm_ok(&[
        "ngram",
        "ppl",
        "--model",
        kn.to_str().unwrap(),
        "--input",
        train.to_str().unwrap(),
    ]);
    assert!(ppl.contains("perplexity"), "{ppl}");

    let ak = dir.path().join("addk");
    arlm_ok(&[
        "ngram",
        "fit",
        "--order",
        "2",
        "--smoothing",
        "add-k",
        "--k",
        "0.5",
        "--input",
        train.to_str().unwrap(),
        "--out",
        ak.to_str().unwrap(),
    ]);
    let c = arlm::load::load(&ak).unwrap();
    assert!(c.describe().contains("add-k"));
    let lc = with_model!(&c.model, m => m.score_next(&seq).unwrap());
    assert_eq!(lc.len(), la.len());
}

#[test]
fn bad_input_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = dir.path().join("tiny.txt");
    std::fs::write(&tiny, "a b\n").unwrap();
    let out_dir = dir.path().join("m");
    let args = [
        "ngram",
        "fit",
        "--order",
        "3",
        "--input",
        tiny.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = arlm(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("discount") && err.contains("--discount-fallback"),
        "{err}"
    );
    let mut with_fallback = args.to_vec();
    with_fallback.extend(["--discount-fallback", "0.5 1 1.5"]);
    arlm_ok(&with_fallback);

    let missing = arlm(&[
        "ngram",
        "fit",
        "--input",
        "/nonexistent/file.txt",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/file.txt"));

    let bad_arpa = dir.path().join("bad.arpa");
    std::fs::write(
        &bad_arpa,
        "\\data\\\nngram 1=2\n\n\\1-grams:\n-1\ta\n\\end\\\n",
    )
    .unwrap();
    let e = arlm::load::load(&bad_arpa).err().unwrap();
    assert!(e.to_string().contains("header says 2"), "{e}");
}
