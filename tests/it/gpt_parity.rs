//! Parity with PyTorch/transformers, like llm.c's test_gpt2: the fixture in
//! tests/fixtures/gpt2-tiny/ was made by tools/gen_gpt2_fixture.py (a tiny
//! GPT2LMHeadModel, random init, seed 1234, saved with save_pretrained) and holds the
//! logits, loss, every parameter gradient and 10 AdamW losses for one fixed batch.
//!
//! Tolerances (f32 on both sides, different summation orders):
//! - logits: |a - b| <= 1e-5 * (|b| + max|logits|)
//! - loss: relative 1e-6
//! - gradients: |a - b| <= 1e-5 * max|grad of that tensor| + 1e-7
//! - AdamW losses over 10 steps: |a - b| <= 1e-5 (and the trained logits 1e-4)

use arlm::model::gpt::{Activation, Gpt, GptTrainer};
use arlm::ops::AdamW;
use safetensors::tensor::{Dtype, SafeTensors};
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny")
}

/// The same fixture with `activation_function: "gelu"` (exact erf GELU, nanoGPT's).
fn fixture_dir_exact_gelu() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny-gelu")
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load(dir: &std::path::Path) -> Reference {
        Reference {
            bytes: std::fs::read(dir.join("reference.safetensors")).unwrap(),
        }
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
    fn f64s(&self, name: &str) -> Vec<f64> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        t.data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn tokens(&self, name: &str) -> (Vec<u32>, usize, usize) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        assert_eq!(t.dtype(), Dtype::I32);
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
            .collect();
        (v, t.shape()[0], t.shape()[1])
    }
}

fn assert_close(got: &[f32], want: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0f32;
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let d = (a - b).abs();
        worst = worst.max(d);
        assert!(
            d <= atol + rtol * b.abs(),
            "{what}[{i}]: arlm {a} vs PyTorch {b}"
        );
    }
    eprintln!("{what}: max abs diff {worst:.3e}");
}

/// Runs the fixture's batch through arlm and takes 10 AdamW steps; returns the model.
fn run_parity(dir: &std::path::Path, check: bool) -> Gpt {
    let mut model = Gpt::load(dir).expect("fixture loads");
    let r = Reference::load(dir);
    let (x, b, t) = r.tokens("inputs");
    let (y, _, _) = r.tokens("targets");
    let v = model.config.vocab_size;
    let mut tr = GptTrainer::new(&model, b, t);

    let logits = tr.logits(&model, &x).unwrap().to_vec();
    if check {
        let want = r.f32s("logits");
        let want_max = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(want_max > 0.0);
        assert_close(&logits, &want, 1e-5 * want_max, 1e-5, "logits");
    }
    assert_eq!(logits.len(), b * t * v);

    tr.zero_grad();
    let loss = tr.forward_backward(&model, &x, &y, 0).unwrap();
    let want_loss = r.f32s("loss")[0];
    if check {
        assert!(
            (loss - want_loss).abs() <= 1e-6 * want_loss,
            "loss {loss} vs {want_loss}"
        );
        for spec in model.config.tensors() {
            let want = r.f32s(&format!("grad.transformer.{}", spec.name));
            let got = &tr.grads()[spec.offset..spec.offset + spec.len];
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.0, "{}: zero gradient in fixture", spec.name);
            assert_close(got, &want, 1e-5 * scale + 1e-7, 0.0, &spec.name);
        }
    }

    let h = r.f64s("hyper");
    let (lr, b1, b2, eps, wd) = (
        h[0] as f32,
        h[1] as f32,
        h[2] as f32,
        h[3] as f32,
        h[4] as f32,
    );
    let mut opt = AdamW::new(model.num_params(), b1, b2, eps, wd);
    let mask = model.decay_mask();
    let want_losses = r.f32s("adamw_losses");
    for (step, want) in want_losses.iter().enumerate() {
        tr.zero_grad();
        let l = tr.forward_backward(&model, &x, &y, 0).unwrap();
        if check {
            assert!(
                (l - want).abs() <= 1e-5,
                "AdamW step {step}: loss {l} vs {want}"
            );
        }
        opt.step(model.params_mut(), tr.grads(), &mask, lr);
    }
    if check {
        let trained = tr.logits(&model, &x).unwrap().to_vec();
        assert_close(
            &trained,
            &r.f32s("trained_logits"),
            1e-4,
            1e-4,
            "trained logits",
        );
    }
    model
}

#[test]
fn matches_pytorch_logits_loss_grads_and_adamw() {
    run_parity(&fixture_dir(), true);
}

/// transformers' `gelu` (exact erf) model: the same checks, and the activation survives
/// arlm's save (config.json's activation_function).
#[test]
fn exact_gelu_matches_pytorch_and_round_trips() {
    let model = run_parity(&fixture_dir_exact_gelu(), true);
    assert_eq!(model.config.activation, Activation::GeluExact);
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    assert!(text.contains("\"activation_function\": \"gelu\""), "{text}");
    let back = Gpt::load(dir.path()).unwrap();
    assert_eq!(back.config, model.config);
    assert_eq!(back.params(), model.params());
}

#[test]
fn arlm_checkpoint_round_trips_and_refuses_mismatches() {
    let model = Gpt::load(&fixture_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path()).unwrap();
    let back = Gpt::load(dir.path()).unwrap();
    assert_eq!(back.params(), model.params());
    // Weights from one model with the config of another: refused with the tensor named.
    let other = dir.path().join("other");
    let mut cfg = model.config;
    cfg.n_layer = 3;
    Gpt::new(cfg, 1).unwrap().save(&other).unwrap();
    std::fs::copy(
        dir.path().join("model.safetensors"),
        other.join("model.safetensors"),
    )
    .unwrap();
    let err = Gpt::load(&other).unwrap_err().to_string();
    assert!(err.contains("missing tensor transformer.h.2"), "{err}");
}

/// Used by tools/gen_gpt2_fixture.py --check-arlm: saves arlm's model after the 10 AdamW
/// steps into $ARLM_SAVE_DIR so the script can load it with transformers.
#[test]
#[ignore]
fn save_trained_checkpoint() {
    let dir = std::env::var("ARLM_SAVE_DIR").expect("set ARLM_SAVE_DIR");
    let fixture = match std::env::var("ARLM_FIXTURE") {
        Ok(d) => PathBuf::from(d),
        Err(_) => fixture_dir(),
    };
    run_parity(&fixture, false)
        .save(std::path::Path::new(&dir))
        .unwrap();
}
