//! Agreement with KenLM on PTB (reference files in ../shared/data/kenlm, see its README).
use crate::common;

use arlm::model::ngram::kneser_ney::KnOptions;
use arlm::model::ngram::store::{self, Corpus};
use arlm::model::{logsumexp, LanguageModel};
use arlm::tokenizer::words::WordTokenizer;
use arlm::tokenizer::Tokenizer;
use std::path::PathBuf;

/// PTB text with `<unk>` written as `UNK`, as the KenLM reference was made.
fn unk_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .replace("<unk>", "UNK")
}

fn ppl(total_log10: f64, tokens: u64) -> f64 {
    10f64.powf(-total_log10 / tokens as f64)
}

/// Per-word expectations from KenLM's `query -v word`: (word, log10 p) per line, and totals.
fn first5(path: &std::path::Path) -> Vec<(Vec<(String, f64)>, f64)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| l.contains("Total:"))
        .map(|l| {
            let (words, total) = l.split_once("Total:").unwrap();
            let total: f64 = total.split_whitespace().next().unwrap().parse().unwrap();
            let items = words
                .split('\t')
                .filter(|s| !s.trim().is_empty())
                .map(|item| {
                    let mut f = item.split_whitespace();
                    let wid = f.next().unwrap();
                    let word = wid.rsplit_once('=').unwrap().0.to_string();
                    let _order = f.next().unwrap();
                    let lp: f64 = f.next().unwrap().parse().unwrap();
                    (word, lp)
                })
                .collect();
            (items, total)
        })
        .collect()
}

#[test]
fn kenlm_arpa_scores_ptb_like_kenlm() {
    let (Some(arpa), Some(test), Some(words)) = (
        common::shared_data("kenlm/ptb.UNK.o3.arpa.gz"),
        common::shared_data("ptb/ptb.test.txt"),
        common::shared_data("kenlm/ptb.UNK.o3.first5.words.txt"),
    ) else {
        return;
    };
    let (model, tok) = store::load_arpa(&arpa).unwrap();
    assert_eq!(model.counts(), &[10002, 264990, 586558]);
    let text = unk_text(&test);
    let (total, tokens) = store::text_log10(&model, &tok, &text);
    assert_eq!(tokens, 82430);
    assert!((total - -178962.699).abs() < 0.01, "total {total}");
    let p = ppl(total, tokens);
    assert!((p - 148.2814995).abs() < 1e-3, "ppl {p}");

    // Every word of the first five lines, through the LanguageModel scoring path.
    let lines: Vec<&str> = text.lines().take(5).collect();
    let expected = first5(&words);
    assert_eq!(expected.len(), 5);
    for (line, (items, line_total)) in lines.iter().zip(&expected) {
        let mut ids = vec![model.bos_token()];
        ids.extend(tok.encode(line).unwrap());
        let lp = model.score_next(&ids).unwrap();
        assert_eq!(lp.len(), items.len());
        let mut sum = 0f64;
        for (i, (word, want)) in items.iter().enumerate() {
            assert_eq!(tok.word(ids[i + 1]).unwrap(), word.as_str());
            let got = lp[i] as f64 / std::f64::consts::LN_10;
            assert!((got - want).abs() < 1e-4, "{word}: {got} vs {want}");
            sum += got;
        }
        assert!(
            (sum - line_total).abs() < 1e-4,
            "line total {sum} vs {line_total}"
        );
    }
}

fn ptb_unk_tokenizer_and_fit(order: usize) -> Option<(WordTokenizer, store::KnFit, PathBuf)> {
    let train = common::shared_data("ptb/ptb.train.txt")?;
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("train.UNK.txt");
    let text = unk_text(&train);
    std::fs::write(&path, &text).unwrap();
    let tok = WordTokenizer::train(&[&text], None, 1).unwrap();
    let files = [path];
    let corpus = Corpus::Text {
        files: &files,
        tokenizer: &tok,
    };
    let fit = store::fit_kn(&corpus, &tok, &KnOptions::new(order)).unwrap();
    drop(corpus);
    Some((tok, fit, dir))
}

#[test]
fn own_trigram_matches_kenlm_discounts_and_perplexity() {
    let Some(test) = common::shared_data("ptb/ptb.test.txt") else {
        return;
    };
    let Some((tok, fit, dir)) = ptb_unk_tokenizer_and_fit(3) else {
        return;
    };
    // Discounts lmplz printed (README), to 4 significant digits.
    let kenlm = [
        [0.25656, 0.82888, 1.26492],
        [0.727802, 1.09876, 1.4713],
        [0.84696, 1.22512, 1.38578],
    ];
    for (got, want) in fit.discounts.iter().zip(&kenlm) {
        for (g, w) in got.iter().zip(want) {
            assert!(((g - w) / w).abs() < 5e-5, "discount {g} vs {w}");
        }
    }
    let counts: Vec<usize> = fit.grams.orders.iter().map(|o| o.keys.len()).collect();
    assert_eq!(counts, vec![10002, 264990, 586558]);
    let model = store::backoff_model(&fit.grams, &tok).unwrap();
    let (total, tokens) = store::text_log10(&model, &tok, &unk_text(&test));
    let p = ppl(total, tokens);
    assert!((p - 148.2815).abs() / 148.2815 < 0.002, "ppl {p}");

    // The ARPA we write reads back to the same scores.
    let arpa = dir.join("own.arpa.gz");
    arlm::model::ngram::arpa::write(&arpa, &fit.grams, &*store::arpa_names(&tok)).unwrap();
    let (back, tok2) = store::load_arpa(&arpa).unwrap();
    let (total2, _) = store::text_log10(&back, &tok2, &unk_text(&test));
    assert!((total - total2).abs() < 1e-2, "{total} vs {total2}");

    // Sum to one in sampled contexts, through the generation path.
    let ids = tok.encode(&unk_text(&test)[..2000]).unwrap();
    let mut state = model.new_state();
    let mut row = vec![0f32; model.vocab_size()];
    for (i, &t) in ids.iter().enumerate().take(40) {
        model.feed(&mut state, t, &mut row).unwrap();
        let lse = logsumexp(&row);
        assert!(lse.abs() < 1e-5, "context {i}: logsumexp {lse}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn streamed_trigram_within_one_mebibyte_matches_kenlm_and_the_in_memory_fit() {
    let Some(test) = common::shared_data("ptb/ptb.test.txt") else {
        return;
    };
    let Some(train) = common::shared_data("ptb/ptb.train.txt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train.UNK.txt");
    let text = unk_text(&train);
    std::fs::write(&path, &text).unwrap();
    let tok = WordTokenizer::train(&[&text], None, 1).unwrap();
    let files = [path];
    let corpus = Corpus::Text {
        files: &files,
        tokenizer: &tok,
    };
    let opts = KnOptions::new(3);
    let out = dir.path().join("streamed");
    let plan = arlm::model::ngram::streamed::Plan {
        budget: 1 << 20,
        temp_parent: dir.path().to_path_buf(),
        progress: false,
    };
    let fit =
        store::fit_kn_streamed(&corpus, &tok, &opts, &plan, &out, true, None, &mut |_| {}).unwrap();
    assert!(fit.runs_spilled > 10, "{} runs", fit.runs_spilled);
    assert_eq!(fit.counts, vec![10002, 264990, 586558]);
    // Discounts lmplz printed (README), to 4 significant digits.
    let kenlm = [
        [0.25656, 0.82888, 1.26492],
        [0.727802, 1.09876, 1.4713],
        [0.84696, 1.22512, 1.38578],
    ];
    for (got, want) in fit.discounts.iter().zip(&kenlm) {
        for (g, w) in got.iter().zip(want) {
            assert!(((g - w) / w).abs() < 5e-5, "discount {g} vs {w}");
        }
    }
    let model = arlm::load::load(&out).unwrap();
    let arlm::load::AnyModel::Backoff(m) = &model.model else {
        panic!("not a backoff model");
    };
    let (total, tokens) = store::text_log10(m, &tok, &unk_text(&test));
    let p = ppl(total, tokens);
    assert!((p - 148.2815).abs() / 148.2815 < 0.002, "ppl {p}");
    // The same bytes as the in-memory fit.
    let mem = store::fit_kn(&corpus, &tok, &opts).unwrap();
    let mem_arpa = dir.path().join("mem.arpa");
    arlm::model::ngram::arpa::write(&mem_arpa, &mem.grams, &*store::arpa_names(&tok)).unwrap();
    assert!(std::fs::read(mem_arpa).unwrap() == std::fs::read(out.join("model.arpa")).unwrap());
}
