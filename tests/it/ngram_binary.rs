//! The binary n-gram model (`model.bin`): the same numbers as the ARPA file it stands for,
//! bit for bit; `arlm ngram build-binary`; clear errors on damaged files; and
//! `arlm score --perplexity` (document perplexity) against the query loop.
use crate::common;

use arlm::load::{load, AnyModel};
use arlm::model::ngram::arpa::{self, Vocab};
use arlm::model::ngram::backoff::BackoffModel;
use arlm::model::ngram::store;
use arlm::model::LanguageModel;
use common::{arlm, arlm_ok};
use std::path::{Path, PathBuf};

fn backoff(path: &Path) -> (BackoffModel, Box<dyn arlm::tokenizer::Tokenizer>) {
    let loaded = load(path).unwrap();
    match loaded.model {
        AnyModel::Backoff(m) => (m, loaded.tokenizer),
        _ => panic!("{} is not a backoff model", path.display()),
    }
}

/// A trigram model directory fitted on the small corpus, and the corpus file.
fn fit(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let train = dir.join("train.txt");
    std::fs::write(&train, crate::ngram_cli::small_corpus()).unwrap();
    let kn = dir.join("kn");
    crate::ngram_cli::fit_trigram(&train, &kn, extra);
    (kn, train)
}

/// Asserts that `a` and `b` give bit-identical log-probs on every token of `text`.
fn same_scores(a: &BackoffModel, b: &BackoffModel, ids: &[u32]) {
    let mut seq = vec![a.bos_token()];
    seq.extend(ids);
    let la = a.score_next(&seq).unwrap();
    let lb = b.score_next(&seq).unwrap();
    assert_eq!(la.len(), ids.len());
    for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "token {i}: {x} vs {y}");
    }
    assert_eq!(a.total_log10(ids).to_bits(), b.total_log10(ids).to_bits());
}

#[test]
fn binary_equals_arpa_for_every_ngram_and_every_query() {
    let dir = tempfile::tempdir().unwrap();
    let (kn, train) = fit(dir.path(), &[]);
    assert!(kn.join("model.bin").is_file() && kn.join("model.arpa").is_file());
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(kn.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["file"], "model.bin");
    assert_eq!(config["arpa"], "model.arpa");

    let (bin, tok) = backoff(&kn);
    let words = store::as_words(&*tok).unwrap();
    // Every n-gram of the ARPA file, read independently of the query tables.
    let file = arpa::read(&kn.join("model.arpa"), Vocab::Words(&words)).unwrap();
    let p = file.grams.packer;
    let mut checked = 0;
    for (m, og) in file.grams.orders.iter().enumerate() {
        for (i, &k) in og.keys.iter().enumerate() {
            let ids = p.unpack(k, m + 1);
            let (prob, backoff) = bin
                .lookup(&ids)
                .unwrap_or_else(|| panic!("{ids:?} missing"));
            assert_eq!(prob.to_bits(), og.probs[i].to_bits(), "{ids:?}");
            assert_eq!(backoff.to_bits(), og.backoffs[i].to_bits(), "{ids:?}");
            checked += 1;
        }
    }
    assert_eq!(checked, bin.counts().iter().sum::<usize>());
    assert!(checked > 5000, "{checked}");

    // Queries on text (seen and unseen words) against the model parsed from ARPA.
    let (parsed, ptok) = backoff(&kn.join("model.arpa"));
    let text = std::fs::read_to_string(&train).unwrap() + "zebra w0 w5\nw1 unseen w2 w3\n";
    let ids = tok.encode(&text).unwrap();
    assert_eq!(ids, ptok.encode(&text).unwrap());
    same_scores(&bin, &parsed, &ids);

    // A directory from before the binary format (config names the ARPA file) still loads.
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    for f in ["model.arpa", "tokenizer.json"] {
        std::fs::copy(kn.join(f), old.join(f)).unwrap();
    }
    let mut c = config.clone();
    c["file"] = "model.arpa".into();
    std::fs::write(old.join("config.json"), c.to_string()).unwrap();
    same_scores(&bin, &backoff(&old).0, &ids);

    // build-binary from the ARPA file: the same model in a new directory.
    let built = dir.path().join("built");
    let out = arlm_ok(&[
        "ngram",
        "build-binary",
        kn.join("model.arpa").to_str().unwrap(),
        built.to_str().unwrap(),
    ]);
    assert!(out.contains("model.bin"), "{out}");
    assert!(!built.join("model.arpa").exists());
    let (b2, tok2) = backoff(&built);
    assert_eq!(tok2.encode(&text).unwrap(), ids);
    same_scores(&bin, &b2, &ids);

    // --no-arpa: only the binary, and config.json does not name an ARPA file.
    let noarpa = dir.path().join("noarpa");
    let (na, _) = fit(dir.path(), &["--force"]);
    std::fs::rename(&na, &noarpa).unwrap();
    let (na, _) = fit(dir.path(), &["--no-arpa"]);
    assert!(!na.join("model.arpa").exists());
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(na.join("config.json")).unwrap()).unwrap();
    assert!(c.get("arpa").is_none());
    same_scores(&bin, &backoff(&na).0, &ids);

    // ppl prints the load time.
    let ppl = arlm_ok(&[
        "ngram",
        "ppl",
        "--model",
        kn.to_str().unwrap(),
        "--input",
        train.to_str().unwrap(),
    ]);
    assert!(ppl.contains("loaded in"), "{ppl}");
}

#[test]
fn the_vocabulary_is_in_the_binary_and_old_binaries_use_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let (kn, train) = fit(dir.path(), &[]);
    let text = std::fs::read_to_string(&train).unwrap() + "zebra w0 w5\nw1 unseen w2 <s> w3\n";
    // tokenizer.json is still written, and says what model.bin's vocabulary says.
    let json_tok = arlm::tokenizer::load(&kn.join("tokenizer.json")).unwrap();
    let (bin, tok) = backoff(&kn);
    let ids = tok.encode(&text).unwrap();
    assert_eq!(ids, json_tok.encode(&text).unwrap());
    assert_eq!(tok.to_hf_json(), json_tok.to_hf_json());
    assert_eq!(tok.vocab_size(), json_tok.vocab_size());
    // Unknown words (and a literal <s>) are <unk>.
    let tail = &ids[ids.len() - 10..];
    assert_eq!(
        tail[..4],
        [
            0,
            tok.encode("w0").unwrap()[0],
            tok.encode("w5").unwrap()[0],
            2
        ]
    );
    assert_eq!(tail[5], 0);
    assert_eq!(tail[7], 0);
    assert!(tail.iter().filter(|&&i| i == 0).count() == 3, "{tail:?}");

    // Without tokenizer.json the directory still loads: it is not read.
    let json = std::fs::read(kn.join("tokenizer.json")).unwrap();
    std::fs::remove_file(kn.join("tokenizer.json")).unwrap();
    let (bin2, tok2) = backoff(&kn);
    assert_eq!(tok2.encode(&text).unwrap(), ids);
    same_scores(&bin, &bin2, &ids);

    // A version 1 binary (no vocabulary section) loads its tokenizer from
    // tokenizer.json, and says so when that file is missing.
    let mut v1 = std::fs::read(kn.join("model.bin")).unwrap();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    v1[56..64].fill(0);
    std::fs::write(kn.join("model.bin"), &v1).unwrap();
    let err = match load(&kn) {
        Ok(_) => panic!("loaded a version 1 binary without tokenizer.json"),
        Err(e) => arlm::error_chain(&e),
    };
    assert!(err.contains("tokenizer.json"), "{err}");
    std::fs::write(kn.join("tokenizer.json"), &json).unwrap();
    let (old, old_tok) = backoff(&kn);
    assert_eq!(old_tok.encode(&text).unwrap(), ids);
    same_scores(&bin, &old, &ids);
}

#[test]
fn damaged_binary_models_fail_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let (kn, train) = fit(dir.path(), &["--no-arpa"]);
    let bin = kn.join("model.bin");
    let good = std::fs::read(&bin).unwrap();
    let ppl = |want: &str| {
        let out = arlm(&[
            "ngram",
            "ppl",
            "--model",
            kn.to_str().unwrap(),
            "--input",
            train.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("model.bin") && err.contains(want),
            "{want}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    };
    std::fs::write(&bin, &good[..good.len() / 2]).unwrap();
    ppl("truncated");
    let mut bad = good.clone();
    bad[..8].copy_from_slice(b"notmagic");
    std::fs::write(&bin, &bad).unwrap();
    ppl("wrong magic");
    let mut bad = good.clone();
    bad[8] = 99;
    std::fs::write(&bin, &bad).unwrap();
    ppl("format version 99");
    // A binary that does not belong to the directory's tokenizer.
    let mut bad = good.clone();
    bad[16..24].copy_from_slice(&3u64.to_le_bytes());
    std::fs::write(&bin, &bad).unwrap();
    ppl("vocabulary");
    std::fs::write(&bin, &good).unwrap();
    arlm_ok(&[
        "ngram",
        "ppl",
        "--model",
        kn.to_str().unwrap(),
        "--input",
        train.to_str().unwrap(),
    ]);
}

#[test]
fn kenlm_arpa_converts_and_scores_the_same() {
    let (Some(arpa_gz), Some(test)) = (
        common::shared_data("kenlm/ptb.UNK.o3.arpa.gz"),
        common::shared_data("ptb/ptb.test.txt"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ptb3");
    arlm_ok(&[
        "ngram",
        "build-binary",
        arpa_gz.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let t0 = std::time::Instant::now();
    let (bin, tok) = backoff(&out);
    eprintln!(
        "loaded the PTB trigram binary in {:.1} ms",
        t0.elapsed().as_secs_f64() * 1e3
    );
    let (parsed, ptok) = store::load_arpa(&arpa_gz).unwrap();
    assert_eq!(bin.counts(), &[10002, 264990, 586558]);
    let text = std::fs::read_to_string(test)
        .unwrap()
        .replace("<unk>", "UNK");
    let ids = tok.encode(&text).unwrap();
    assert_eq!(
        ids,
        arlm::tokenizer::Tokenizer::encode(&ptok, &text).unwrap()
    );
    same_scores(&bin, &parsed, &ids);
}

#[test]
fn score_perplexity_streams_documents_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (kn, train) = fit(dir.path(), &["--no-arpa"]);
    let (model, tok) = backoff(&kn);
    let words = store::as_words(&*tok).unwrap();
    let text = std::fs::read_to_string(&train).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // 300 documents of 1..7 lines (some unseen words), more than one batch's worth of
    // threads' work, with an id and a pre-existing "perplexity" on one record.
    let mut docs = Vec::new();
    let mut at = 0;
    for d in 0..300 {
        let n = 1 + d % 7;
        let body = lines[at % lines.len()..][..n.min(lines.len() - at % lines.len())].join("\n")
            + if d % 5 == 0 { "\nzebra w1" } else { "" };
        at += n;
        docs.push(body);
    }
    let jsonl: String = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i == 7 {
                serde_json::json!({"id": i, "text": d, "perplexity": 1}).to_string() + "\n"
            } else {
                serde_json::json!({"id": i, "text": d}).to_string() + "\n"
            }
        })
        .collect();
    let input = dir.path().join("docs.jsonl");
    std::fs::write(&input, &jsonl).unwrap();
    let out_path = dir.path().join("scored.jsonl");
    arlm_ok(&[
        "score",
        "--model",
        kn.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--field",
        "text",
        "--perplexity",
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let out = std::fs::read_to_string(&out_path).unwrap();
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), docs.len());
    for (i, ((row, line), doc)) in rows.iter().zip(out.lines()).zip(&docs).enumerate() {
        assert_eq!(row["id"], i, "order kept");
        assert_eq!(row["text"], doc.as_str());
        let (log10, tokens) = store::text_log10(&model, &words, doc);
        assert_eq!(row["tokens"], tokens);
        // Exact: the printed numbers are the shortest round-trip forms of these f64s.
        let ppl = 10f64.powf(-log10 / tokens as f64);
        let want = format!("\"log10_prob\":{log10},\"perplexity\":{ppl}");
        assert!(line.contains(&want), "{line} lacks {want}");
    }
    // The records are echoed byte for byte, the fields appended.
    let first_in = jsonl.lines().next().unwrap();
    let first_out = out.lines().next().unwrap();
    assert!(
        first_out.starts_with(&first_in[..first_in.len() - 1]),
        "{first_out}"
    );

    // A record without the field is an error naming the line.
    std::fs::write(&input, "{\"text\": \"w1\"}\n{\"body\": \"w1\"}\n").unwrap();
    let bad = arlm(&[
        "score",
        "--model",
        kn.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--perplexity",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("line 2") && err.contains("\"text\""), "{err}");
}
