//! Exactness checks of evaluation across tokenizers, models and thread counts.

use crate::common;

use arlm::eval::{evaluate, Corpus, DocMode, EvalOptions, WindowSpec};
use arlm::model::gpt::{Gpt, GptConfig};
use arlm::model::uniform::Uniform;
use arlm::tokenizer::bpe::{BpeTokenizer, Pretokenizer};
use arlm::tokenizer::bytes::ByteTokenizer;
use arlm::tokenizer::Tokenizer;
use common::arlm_ok;
use std::path::Path;
use std::process::Command;

const TEXT: &str = "the quick brown fox jumps over the lazy dog\nthe lazy dog sleeps; the fox runs away\nnaïve café résumé — 🌍 unicode too\n";

#[test]
fn bits_per_byte_uses_the_same_bytes_for_byte_and_bpe_tokenizers() {
    let bpe = BpeTokenizer::train(&[TEXT, TEXT], 300, Pretokenizer::Gpt2).unwrap();
    let spec = WindowSpec::new(None, None, None).unwrap();
    let opts = EvalOptions::new(spec);
    let mut results = Vec::new();
    for tok in [&ByteTokenizer as &dyn Tokenizer, &bpe] {
        for mode in [DocMode::File, DocMode::Lines] {
            let m = Uniform::new(tok.vocab_size(), tok.eot_token()).unwrap();
            let c = Corpus::from_text(Path::new("t"), TEXT, tok, mode, false).unwrap();
            let r = evaluate(&m, tok, &c, &opts).unwrap();
            let want_bytes: usize = match mode {
                DocMode::File => TEXT.len(),
                _ => TEXT.lines().map(str::len).sum(),
            };
            assert_eq!(
                r.totals.bytes as usize,
                want_bytes,
                "{} {mode:?}",
                tok.kind()
            );
            // bits per byte = total NLL in bits / bytes of text, whatever the tokens.
            let bits = r.totals.tokens as f64 * (tok.vocab_size() as f64).log2();
            assert!((r.metrics.bits_per_byte - bits / want_bytes as f64).abs() < 1e-5);
            results.push((tok.kind(), mode, r.totals));
        }
    }
    // BPE compresses: fewer tokens for the same bytes and words.
    assert!(results[2].2.tokens < results[0].2.tokens);
    assert_eq!(results[0].2.words, results[2].2.words);
}

/// A tiny random GPT over bytes, saved as a model directory.
fn tiny_gpt(dir: &Path) {
    let config = GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        block_size: 16,
        vocab_size: 257,
        dropout: 0.0,
        activation: Default::default(),
    };
    let mut m = Gpt::new(config, 3).unwrap();
    for p in m.params_mut() {
        *p *= 8.0; // peaked distributions, so windowing mistakes show
    }
    m.save(dir).unwrap();
    arlm::tokenizer::save(&ByteTokenizer, &dir.join("tokenizer.json")).unwrap();
}

fn eval_json(model: &str, data: &str, extra: &[&str], threads: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_arlm"))
        .args(["eval", "--model", model, "--data", data, "--json"])
        .args(extra)
        .env("RAYON_NUM_THREADS", threads)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn gpt_eval_equals_score_and_is_thread_count_independent() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("gpt");
    tiny_gpt(&model);
    let m = model.to_str().unwrap();
    let line = "It was the best of times, it was the worst of times, it was the age of wisdom.";
    let data = dir.path().join("d.txt");
    std::fs::write(&data, line).unwrap();
    let d = data.to_str().unwrap();
    for stride in ["1", "5", "15"] {
        // eval: batched score_next over sliding windows.
        let e = eval_json(m, d, &["--context", "16", "--stride", stride], "2");
        assert_eq!(e["totals"]["tokens"], line.len(), "every byte scored once");
        let nll = e["totals"]["nll"].as_f64().unwrap();
        // score: full distributions over the same windows, token by token.
        let s = arlm_ok(&[
            "score", "--model", m, "--format", "jsonl", "--top-k", "0", "--window", "16",
            "--stride", stride, line,
        ]);
        let s: serde_json::Value = serde_json::from_str(s.trim()).unwrap();
        let joint = s["joint_logprob"].as_f64().unwrap();
        assert!(
            (nll + joint).abs() < 1e-3 * nll.abs(),
            "stride {stride}: {nll} vs {joint}"
        );
        // Same number on any thread count, to the last digit.
        let e1 = eval_json(m, d, &["--context", "16", "--stride", stride], "1");
        assert_eq!(e1["totals"], e["totals"]);
        assert_eq!(e1["interval"], e["interval"]);
    }
    // More left context helps a model that uses it: stride 1 differs from stride 15.
    let a = eval_json(m, d, &["--context", "16", "--stride", "1"], "2");
    let b = eval_json(m, d, &["--context", "16", "--stride", "15"], "2");
    assert_ne!(a["totals"]["nll"], b["totals"]["nll"]);
}

#[test]
fn synthetic_source_on_its_own_text_returns_its_floor() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("s.txt");
    let model = dir.path().join("m");
    arlm_ok(&[
        "corpus",
        "synth",
        "--bytes",
        "20000",
        "--seed",
        "7",
        "--out",
        text.to_str().unwrap(),
        "--model-out",
        model.to_str().unwrap(),
    ]);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("s.meta.json")).unwrap())
            .unwrap();
    let e = eval_json(model.to_str().unwrap(), text.to_str().unwrap(), &[], "2");
    let bytes = std::fs::read(&text).unwrap().len();
    assert_eq!(e["totals"]["bytes"], bytes);
    assert_eq!(e["totals"]["tokens"], bytes);
    let nll = e["totals"]["nll"].as_f64().unwrap();
    let floor = meta["nll_nats"].as_f64().unwrap();
    assert!(
        (nll - floor).abs() < 1e-6 * floor,
        "eval {nll} vs floor {floor}"
    );
    let bpb = e["metrics"]["bits_per_byte"].as_f64().unwrap();
    assert!((bpb - meta["bits_per_byte"].as_f64().unwrap()).abs() < 1e-6);
}
