//! Bounded-memory Kneser-Ney estimation (`arlm ngram fit --memory`): the streamed path
//! writes byte for byte the ARPA file, `model.bin` and config.json of the in-memory path,
//! with budgets small enough that every sort spills to disk.
use crate::common;

use arlm::model::ngram::kneser_ney::KnOptions;
use arlm::model::ngram::store::{self, Corpus};
use arlm::model::ngram::streamed::Plan;
use arlm::tokenizer::words::WordTokenizer;
use common::arlm_ok;
use std::path::Path;

/// Fits `text` both ways into `dir/mem` and `dir/streamed`; asserts the files agree.
fn same_bytes_both_ways(
    dir: &Path,
    text: &str,
    order: usize,
    budget: usize,
    fallback: bool,
) -> usize {
    let train = dir.join("train.txt");
    std::fs::write(&train, text).unwrap();
    let tok = WordTokenizer::train(&[text], None, 1).unwrap();
    let files = [train];
    let corpus = Corpus::Text {
        files: &files,
        tokenizer: &tok,
    };
    let mut opts = KnOptions::new(order);
    if fallback {
        opts.discount_fallback = Some([0.5, 1.0, 1.5]);
    }
    let mem = dir.join(format!("mem{order}"));
    let fit = store::fit_kn(&corpus, &tok, &opts).unwrap();
    store::save_kn(&mem, &fit, &tok, &opts, true).unwrap();
    let streamed = dir.join(format!("streamed{order}"));
    let extra = dir.join(format!("extra{order}.arpa"));
    let plan = Plan {
        budget,
        temp_parent: streamed.clone(),
        progress: false,
    };
    let got = store::fit_kn_streamed(
        &corpus,
        &tok,
        &opts,
        &plan,
        &streamed,
        true,
        Some(&extra),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(got.discounts, fit.discounts, "order {order}");
    assert_eq!(got.tokens, fit.tokens);
    for name in ["model.arpa", "model.bin", "config.json", "tokenizer.json"] {
        let a = std::fs::read(mem.join(name)).unwrap();
        let b = std::fs::read(streamed.join(name)).unwrap();
        assert!(
            a == b,
            "order {order}: {name} differs ({} vs {} bytes)",
            a.len(),
            b.len()
        );
    }
    assert_eq!(
        std::fs::read(&extra).unwrap(),
        std::fs::read(mem.join("model.arpa")).unwrap()
    );
    // Both model.bin files carry the vocabulary (the same bytes, checked above).
    let (_, vocab) =
        arlm::model::ngram::binary::load_with_vocab(&streamed.join("model.bin"), "").unwrap();
    assert_eq!(vocab.unwrap().as_bytes(), tok.table().as_bytes());
    // Nothing is left of the scratch directory.
    let left: Vec<_> = std::fs::read_dir(&streamed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    got.runs_spilled
}

#[test]
fn streamed_fit_is_byte_identical_on_shakespeare() {
    let Some(path) = common::shared_data("tinyshakespeare.txt") else {
        return;
    };
    let text = std::fs::read_to_string(path).unwrap();
    // The first ~300 kB (60k words): every order's sorts spill at 64 KiB.
    let cut = text[..300_000].rfind('\n').unwrap() + 1;
    let dir = tempfile::tempdir().unwrap();
    for order in [3, 5] {
        let runs = same_bytes_both_ways(dir.path(), &text[..cut], order, 64 << 10, false);
        // Counting, adjusting and both interpolation sorts of every order spill.
        assert!(runs > 50 * order, "order {order}: {runs} runs");
    }
    // Memory to spare: nothing spills, same bytes.
    let runs = same_bytes_both_ways(dir.path(), &text[..cut], 4, 256 << 20, false);
    assert_eq!(runs, 0);
}

#[test]
fn streamed_fit_is_byte_identical_at_low_orders() {
    let text = crate::ngram_cli::small_corpus();
    let dir = tempfile::tempdir().unwrap();
    for order in [1, 2, 3] {
        same_bytes_both_ways(dir.path(), &text, order, 48 << 10, true);
    }
    // Order 12 (the largest) cannot count within the smallest budget: a clear error.
    let tok = WordTokenizer::train(&[text.as_str()], None, 1).unwrap();
    let train = dir.path().join("train.txt");
    let files = [train];
    let corpus = Corpus::Text {
        files: &files,
        tokenizer: &tok,
    };
    let plan = Plan {
        budget: 48 << 10,
        temp_parent: dir.path().join("o12"),
        progress: false,
    };
    let e = store::fit_kn_streamed(
        &corpus,
        &tok,
        &KnOptions::new(12),
        &plan,
        &dir.path().join("o12"),
        false,
        None,
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("--memory is too small"), "{e}");
}

#[test]
fn cli_memory_flag_spills_and_refuses_too_little() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.txt");
    std::fs::write(&train, crate::ngram_cli::small_corpus()).unwrap();
    let small = dir.path().join("small");
    let large = dir.path().join("large");
    for (out, mem) in [(&small, "64K"), (&large, "1G")] {
        crate::ngram_cli::fit_trigram(&train, out, &["--memory", mem]);
    }
    for name in ["model.arpa", "model.bin"] {
        assert!(
            std::fs::read(small.join(name)).unwrap() == std::fs::read(large.join(name)).unwrap()
        );
    }
    // The model scores.
    let test = dir.path().join("test.txt");
    std::fs::write(&test, "w1 w2 w3\n").unwrap();
    arlm_ok(&[
        "ngram",
        "ppl",
        "--model",
        small.to_str().unwrap(),
        "--input",
        test.to_str().unwrap(),
    ]);
    for (bad, want) in [
        ("10K", "--memory is too small"),
        ("lots", "--memory"),
        ("0", "--memory"),
        ("5X", "unknown unit"),
        ("1000T", "more than this machine has available"),
    ] {
        let out = dir.path().join(format!("bad-{bad}"));
        let o = crate::ngram_cli::fit_trigram_output(&train, &out, &["--memory", bad]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bad}: accepted");
        assert!(err.contains(want), "{bad}: {err}");
        assert!(!err.contains("panicked"), "{bad}: {err}");
        if out.exists() {
            let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
            assert!(left.is_empty(), "{bad}: scratch files left: {left:?}");
        }
    }
}
