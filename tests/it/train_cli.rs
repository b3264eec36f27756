//! `arlm train` end to end: data sources, config layering, run-directory contents, errors.

use crate::common;

use arlm::data::bin::TokenWriter;
use arlm::tokenizer::{self, chars::CharTokenizer, Tokenizer};
use arlm::train::metrics::{read_jsonl, Record};

const TEXT: &str =
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n";

#[test]
fn raw_text_uses_chars_and_toml_config_applies() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("t.txt");
    std::fs::write(&txt, TEXT.repeat(40)).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "preset = \"tiny\"\nsteps = 12\neval_every = 6\nblock_size = 16\n",
    )
    .unwrap();
    let out = dir.path().join("run");
    let stdout = common::arlm_ok(&[
        "train",
        "--data",
        txt.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "10",
        "--eval-every",
        "5",
    ]);
    // Flags override the file, the file overrides the preset.
    assert!(stdout.contains("10 steps of 128 tokens"), "{stdout}");
    assert!(
        stdout.contains("step      5") && stdout.contains("step     10"),
        "{stdout}"
    );
    assert!(stdout.contains("bits/byte"), "{stdout}");
    let tok = tokenizer::load(&out).unwrap();
    assert_eq!(tok.kind(), "chars");
    assert_eq!(
        tok.fingerprint(),
        CharTokenizer::train(&[&TEXT.repeat(40)]).fingerprint()
    );
    let recs = read_jsonl(&out.join("metrics.jsonl")).unwrap();
    let evals: Vec<u64> = recs
        .iter()
        .filter(|r| matches!(r, Record::Eval { .. }))
        .map(|r| r.step())
        .collect();
    assert_eq!(evals, vec![5, 10]);
    // The run directory is a model directory the rest of arlm loads.
    let loaded = arlm::load::load(&out).unwrap();
    assert!(
        loaded.describe().contains("2L/2H/32"),
        "{}",
        loaded.describe()
    );
    for f in ["loss.svg", "loss.png", "checkpoints/best/model.safetensors"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
}

#[test]
fn prepared_directory_is_memory_mapped_and_trained() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("prep");
    std::fs::create_dir_all(&data).unwrap();
    let tok = CharTokenizer::train(&[TEXT]);
    tokenizer::save(&tok, &data.join("tokenizer.json")).unwrap();
    for (name, reps) in [("train.bin", 30), ("val.bin", 4)] {
        let mut w = TokenWriter::create(&data.join(name), tok.vocab_size()).unwrap();
        w.write(&tok.encode(&TEXT.repeat(reps)).unwrap()).unwrap();
        w.finish().unwrap();
    }
    let out = dir.path().join("run");
    let stdout = common::arlm_ok(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--preset",
        "tiny",
        "--steps",
        "6",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout.contains(&format!("{} train", TEXT.len() * 30)),
        "{stdout}"
    );
    assert_eq!(
        tokenizer::load(&out).unwrap().fingerprint(),
        tok.fingerprint()
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = common::arlm(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let out = dir.path().join("r");
    let o = out.to_str().unwrap();
    assert!(run(&["train", "--preset", "nope", "--out", o]).contains("unknown preset"));
    assert!(
        run(&["train", "--preset", "tiny", "--n-head", "3", "--out", o])
            .contains("multiple of n_head")
    );
    let e = run(&[
        "train",
        "--preset",
        "tiny",
        "--block-size",
        "100000",
        "--data",
        "Cargo.toml",
        "--out",
        o,
    ]);
    assert!(e.contains("block_size + 1"), "{e}");
    assert!(
        run(&["train", "--data", "/nonexistent/x.txt", "--out", o]).contains("/nonexistent/x.txt")
    );
    assert!(run(&["train", "--resume"]).contains("--out"));
    assert!(run(&["train", "--resume", "--out", o]).contains("no checkpoints"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "stepz = 3").unwrap();
    assert!(run(&["train", "--config", bad.to_str().unwrap(), "--out", o]).contains("stepz"));
}
