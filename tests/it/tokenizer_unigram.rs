//! Unigram parity with Hugging Face `tokenizers`: the tokenizer.json its UnigramTrainer
//! wrote (tools/gen_unigram_fixture.py) gives the same ids in arlm on all of WikiText-2
//! test (hash of the id stream, plus the first ids and sampled lines to localise a
//! mismatch), and round-trips through arlm's writer.

use crate::common;

use arlm::tokenizer;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixture("hf_unigram_wt2_ids.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn hf_unigram_ids_match_on_all_of_wikitext2_test() {
    let Some(dir) = common::shared_data("wikitext-2") else {
        return;
    };
    let tok = tokenizer::load(&fixture("hf_unigram_wt2.json")).unwrap();
    assert_eq!(tok.kind(), "unigram");
    assert_eq!(tok.vocab_size(), 8000);
    let want = expected();
    let text = std::fs::read_to_string(dir.join("test.txt")).unwrap();
    let lines: Vec<&str> = text.split('\n').collect();
    for sample in want["lines"].as_array().unwrap() {
        let i = sample["line"].as_u64().unwrap() as usize;
        assert_eq!(
            tok.encode(lines[i]).unwrap(),
            ids_of(&sample["ids"]),
            "line {i}"
        );
    }
    let ids = tok.encode(&text).unwrap();
    let head = ids_of(&want["head"]);
    assert_eq!(&ids[..head.len()], &head[..], "first ids");
    assert_eq!(ids.len() as u64, want["n_ids"].as_u64().unwrap());
    let mut h = Sha256::new();
    for id in &ids {
        h.update(id.to_le_bytes());
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, want["sha256_u32le"].as_str().unwrap());
    // Decoding gives the text back without the one prepended space.
    assert_eq!(
        tok.decode(&ids).unwrap(),
        text.strip_prefix(' ').unwrap_or(&text)
    );
}

#[test]
fn hf_unigram_file_round_trips_through_arlm() {
    let path = fixture("hf_unigram_wt2.json");
    let tok = tokenizer::load(&path).unwrap();
    let back = tokenizer::from_hf_json(&tok.to_hf_json()).unwrap();
    assert_eq!(back.fingerprint(), tok.fingerprint());
    let orig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(tok.to_hf_json()["model"], orig["model"]);
    assert_eq!(tok.to_hf_json()["pre_tokenizer"], orig["pre_tokenizer"]);
    assert_eq!(tok.to_hf_json()["added_tokens"], orig["added_tokens"]);
    let text = "Robert <unk> is an English film actor , 1990s";
    let ids = tok.encode(text).unwrap();
    assert_eq!(back.encode(text).unwrap(), ids);
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.eot_token(), 1);
    // Characters outside the vocabulary: one fused unknown token per run.
    let ids = tok.encode("a\u{3000}\u{3001}b").unwrap();
    assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 1, "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), "a<|unk|>b");
}
