//! `arlm train --init-from DIR`: a run starts from a saved model's weights (a GPT-2 saved
//! by transformers, an arlm RNN run), and refuses another tokenizer, class or shape.

use crate::common;

use arlm::data::bin::TokenWriter;
use arlm::tokenizer::{self, chars::CharTokenizer, Tokenizer};
use std::path::Path;

/// The 64 characters ' '..='_' (uppercase text), so the chars tokenizer has the fixture's
/// 65 ids (64 + end-of-text).
fn alphabet() -> String {
    (b' '..=b'_').map(|b| b as char).collect()
}

const TEXT: &str = "TO BE, OR NOT TO BE: THAT IS THE QUESTION. WHETHER 'TIS NOBLER IN THE MIND. ";

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Largest |a - b| over the tensors both directories hold (GPT-2's `attn.bias` masks
/// aside), and how many tensors were compared.
fn max_diff(a: &Path, b: &Path) -> (f32, usize) {
    let (wa, wb) = (weights(a), weights(b));
    let mut n = 0;
    let mut worst = 0f32;
    for (name, va) in &wa {
        if let Some((_, vb)) = wb.iter().find(|(m, _)| m == name) {
            assert_eq!(va.len(), vb.len(), "{name}");
            n += 1;
            for (x, y) in va.iter().zip(vb) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    (worst, n)
}

fn fail(args: &[&str]) -> String {
    let o = common::arlm(args);
    assert!(!o.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn gpt_starts_from_a_transformers_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("gpt2-tiny");
    std::fs::create_dir_all(&model).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), model.join(f)).unwrap();
    }
    let tok = CharTokenizer::train(&[&alphabet()]);
    assert_eq!(tok.vocab_size(), 65);
    tokenizer::save(&tok, &model.join("tokenizer.json")).unwrap();
    let txt = dir.path().join("t.txt");
    std::fs::write(&txt, TEXT.repeat(60)).unwrap();
    let out = dir.path().join("run");
    let (m, t, o) = (
        model.to_str().unwrap(),
        txt.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    // A learning rate of 1e-12: one AdamW step moves every weight by about 1e-12, so the
    // result is the checkpoint's weights unless the run ignored them.
    let common_args = [
        "train",
        "--init-from",
        m,
        "--data",
        t,
        "--steps",
        "1",
        "--lr",
        "1e-12",
        "--min-lr",
        "1e-12",
        "--warmup-steps",
        "0",
        "--weight-decay",
        "0",
        "--batch-size",
        "2",
        "-q",
    ];
    let mut args = common_args.to_vec();
    args.extend(["--out", o]);
    common::arlm_ok(&args);
    let (diff, n) = max_diff(&model, &out);
    assert!(n >= 10, "compared {n} tensors");
    assert!(diff < 1e-6, "weights moved by {diff}");
    // The model's context (32) and shape were taken over from the directory.
    let loaded = arlm::load::load(&out).unwrap();
    assert!(
        loaded.describe().contains("2L/4H/32"),
        "{}",
        loaded.describe()
    );
    // The same run from a fresh init is far from the checkpoint (the check can fail).
    let fresh = dir.path().join("fresh");
    common::arlm_ok(&[
        "train",
        "--data",
        t,
        "--tokenizer",
        model.join("tokenizer.json").to_str().unwrap(),
        "--n-layer",
        "2",
        "--n-head",
        "4",
        "--n-embd",
        "32",
        "--block-size",
        "32",
        "--steps",
        "1",
        "--out",
        fresh.to_str().unwrap(),
        "-q",
    ]);
    assert!(max_diff(&model, &fresh).0 > 1e-3);

    // Refusals: a conflicting shape flag, another class, a context beyond the model's,
    // and prepared data in another tokenizer.
    let e = fail(
        &[
            &common_args[..],
            &[
                "--n-layer",
                "3",
                "--out",
                &dir.path().join("x1").display().to_string(),
            ],
        ]
        .concat(),
    );
    assert!(e.contains("n_layer") && e.contains("conflicts"), "{e}");
    let e = fail(
        &[
            &common_args[..],
            &[
                "--preset",
                "tiny-lstm",
                "--out",
                &dir.path().join("x2").display().to_string(),
            ],
        ]
        .concat(),
    );
    assert!(e.contains("gpt") && e.contains("lstm"), "{e}");
    // The activation is part of the GPT's shape: another one than the model's is refused.
    let e = fail(
        &[
            &common_args[..],
            &[
                "--activation",
                "gelu",
                "--out",
                &dir.path().join("x5").display().to_string(),
            ],
        ]
        .concat(),
    );
    assert!(e.contains("activation") && e.contains("conflicts"), "{e}");
    let e = fail(
        &[
            &common_args[..],
            &[
                "--block-size",
                "64",
                "--out",
                &dir.path().join("x3").display().to_string(),
            ],
        ]
        .concat(),
    );
    assert!(e.contains("context"), "{e}");
    let prep = dir.path().join("prep");
    std::fs::create_dir_all(&prep).unwrap();
    let other = CharTokenizer::train(&[TEXT]);
    tokenizer::save(&other, &prep.join("tokenizer.json")).unwrap();
    for name in ["train.bin", "val.bin"] {
        let mut w = TokenWriter::create(&prep.join(name), other.vocab_size()).unwrap();
        w.write(&other.encode(&TEXT.repeat(20)).unwrap()).unwrap();
        w.finish().unwrap();
    }
    let e = fail(&[
        "train",
        "--init-from",
        m,
        "--data",
        prep.to_str().unwrap(),
        "--out",
        dir.path().join("x4").to_str().unwrap(),
    ]);
    assert!(
        e.contains("tokenizer") && e.contains(&other.fingerprint()),
        "{e}"
    );
    let e = fail(&["train", "--init-from", m, "--resume", "--out", o]);
    assert!(e.contains("--init-from"), "{e}");
}

#[test]
fn rnn_starts_from_an_arlm_run() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("t.txt");
    std::fs::write(&txt, TEXT.repeat(60)).unwrap();
    let t = txt.to_str().unwrap();
    let first = dir.path().join("first");
    common::arlm_ok(&[
        "train",
        "--preset",
        "tiny-lstm",
        "--data",
        t,
        "--steps",
        "6",
        "--out",
        first.to_str().unwrap(),
        "-q",
    ]);
    let second = dir.path().join("second");
    let f = first.to_str().unwrap();
    common::arlm_ok(&[
        "train",
        "--preset",
        "tiny-lstm",
        "--init-from",
        f,
        "--data",
        t,
        "--steps",
        "1",
        "--lr",
        "1e-12",
        "--out",
        second.to_str().unwrap(),
        "-q",
    ]);
    let (diff, n) = max_diff(&first, &second);
    assert!(n >= 6, "compared {n} tensors");
    assert!(diff < 1e-6, "weights moved by {diff}");
    let e = fail(&[
        "train",
        "--preset",
        "tiny-lstm",
        "--init-from",
        f,
        "--data",
        t,
        "--hidden",
        "16",
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(e.contains("hidden"), "{e}");
    let e = fail(&[
        "train",
        "--preset",
        "tiny-lstm",
        "--model",
        "gru",
        "--init-from",
        f,
        "--data",
        t,
        "--out",
        dir.path().join("y").to_str().unwrap(),
    ]);
    assert!(e.contains("cell"), "{e}");
}
