//! End-to-end tests of `arlm corpus`: the synthetic corpus, its floor, its model directory.

use crate::common;
use common::{arlm, arlm_ok};

#[test]
fn synth_is_seeded_and_reports_its_exact_floor() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    let c = dir.path().join("c.txt");
    let model = dir.path().join("synth-model");
    let out = arlm_ok(&[
        "corpus",
        "synth",
        "--bytes",
        "20000",
        "--seed",
        "7",
        "--out",
        a.to_str().unwrap(),
        "--model-out",
        model.to_str().unwrap(),
    ]);
    assert!(out.contains("bits/byte"), "{out}");
    arlm_ok(&[
        "corpus",
        "synth",
        "--bytes",
        "20000",
        "--seed",
        "0x7",
        "--out",
        b.to_str().unwrap(),
    ]);
    arlm_ok(&[
        "corpus",
        "synth",
        "--bytes",
        "20000",
        "--seed",
        "8",
        "--out",
        c.to_str().unwrap(),
    ]);
    let ta = std::fs::read(&a).unwrap();
    assert_eq!(ta.len(), 20000);
    assert_eq!(ta, std::fs::read(&b).unwrap());
    assert_ne!(ta, std::fs::read(&c).unwrap());

    // meta.json's NLL is the sum of the exact source's own per-byte log-probs, as loaded
    // from the model directory through the generic model loader.
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("a.meta.json")).unwrap())
            .unwrap();
    let nll = meta["nll_nats"].as_f64().unwrap();
    let loaded = arlm::load::load(&model).unwrap();
    assert_eq!(loaded.tokenizer.kind(), "bytes");
    let mut seq = vec![loaded.tokenizer.eot_token()];
    seq.extend(
        loaded
            .tokenizer
            .encode(std::str::from_utf8(&ta).unwrap())
            .unwrap(),
    );
    let lps = arlm::with_model!(&loaded.model, m => {
        use arlm::model::LanguageModel;
        m.score_next(&seq).unwrap()
    });
    let sum: f64 = lps.iter().map(|&x| x as f64).sum();
    assert!((nll + sum).abs() < 1e-3 * nll.max(1.0), "{nll} vs {}", -sum);
    let bpb = meta["bits_per_byte"].as_f64().unwrap();
    assert!((bpb - nll / 20000.0 / std::f64::consts::LN_2).abs() < 1e-9);

    let f = arlm_ok(&["corpus", "floor", "--input", a.to_str().unwrap()]);
    assert!(f.contains(&format!("{bpb:.4} bits/byte")), "{f}");
}

#[test]
fn synth_rejects_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    for args in [
        vec![
            "corpus",
            "synth",
            "--bytes",
            "0",
            "--out",
            a.to_str().unwrap(),
        ],
        vec![
            "corpus",
            "synth",
            "--seed",
            "banana",
            "--out",
            a.to_str().unwrap(),
        ],
        vec![
            "corpus",
            "synth",
            "--out",
            "/nonexistent-dir/x.txt",
            "--bytes",
            "10",
        ],
    ] {
        let out = arlm(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
    }
    assert!(!a.exists());
}
