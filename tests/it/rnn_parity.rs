//! Parity of the recurrent models with PyTorch: tests/fixtures/rnn-tiny-{lstm,gru}/ were
//! made by tools/gen_rnn_fixture.py (PyTorch's word_language_model architecture,
//! nn.Embedding -> nn.LSTM/nn.GRU (2 layers) -> nn.Linear, random init with a fixed seed,
//! saved with its state_dict names) and hold the logits, loss and every gradient of one
//! (B, T) batch, and the losses of 10 SGD steps over consecutive batches with the state
//! carried (detached) between them.
//!
//! Tolerances (f32 on both sides, different summation orders):
//! - logits: |a - b| <= 1e-5 * (|b| + max|logits|)
//! - loss: relative 1e-6
//! - gradients: |a - b| <= 1e-5 * max|grad of that tensor| + 1e-7
//! - SGD losses over 10 steps: |a - b| <= 1e-5; logits after them 1e-4 * max|logits|

use arlm::model::rnn::bptt::{forward, loss_backward, Workspace};
use arlm::model::rnn::{checkpoint, Rnn};
use safetensors::tensor::{Dtype, SafeTensors};
use std::path::PathBuf;

const LR: f32 = 0.5;
const STEPS: usize = 10;

fn fixture_dir(cell: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/rnn-tiny-{cell}"))
}

struct Reference(Vec<u8>);

impl Reference {
    fn load(cell: &str) -> Reference {
        Reference(std::fs::read(fixture_dir(cell).join("reference.safetensors")).unwrap())
    }
    fn tensor(&self, name: &str) -> (Vec<u8>, Dtype, Vec<usize>) {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("missing {name}"));
        (t.data().to_vec(), t.dtype(), t.shape().to_vec())
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let (d, dt, _) = self.tensor(name);
        assert_eq!(dt, Dtype::F32, "{name}");
        d.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    fn f64s(&self, name: &str) -> Vec<f64> {
        let (d, dt, _) = self.tensor(name);
        assert_eq!(dt, Dtype::F64, "{name}");
        d.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }
    /// Token ids and (rows, cols).
    fn ids(&self, name: &str) -> (Vec<u32>, usize, usize) {
        let (d, dt, shape) = self.tensor(name);
        assert_eq!(dt, Dtype::I32, "{name}");
        let v = d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect();
        (v, shape[0], shape[1])
    }
}

fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

fn assert_logits(got: &[f32], want: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = max_abs(want);
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= rel * (b.abs() + scale),
            "{what} {i}: {a} vs {b}"
        );
    }
}

/// Batch k of the B streams: (B, T) inputs and targets.
fn batch(stream: &[u32], cols: usize, b: usize, t: usize, k: usize) -> (Vec<u32>, Vec<u32>) {
    let mut x = Vec::with_capacity(b * t);
    let mut y = Vec::with_capacity(b * t);
    for r in 0..b {
        x.extend_from_slice(&stream[r * cols + k * t..][..t]);
        y.extend_from_slice(&stream[r * cols + k * t + 1..][..t]);
    }
    (x, y)
}

/// 10 SGD steps over consecutive batches with the state carried; returns the losses.
fn sgd_steps(model: &mut Rnn<f32>, r: &Reference, b: usize, t: usize) -> Vec<f64> {
    let cfg = model.config;
    let (stream, _, cols) = r.ids("stream");
    let mut ws = Workspace::<f32>::new(&cfg, b, t, true);
    let mut state = vec![0f32; b * cfg.state_size()];
    let mut grads = vec![0f32; model.num_params()];
    let mut losses = Vec::new();
    for k in 0..STEPS {
        let (x, y) = batch(&stream, cols, b, t, k);
        grads.fill(0.0);
        forward(&cfg, model.params(), &mut ws, &x, &state, None).unwrap();
        losses.push(loss_backward(&cfg, model.params(), &mut grads, &mut ws, &y).unwrap());
        ws.final_state(&cfg, &mut state);
        for (p, g) in model.params_mut().iter_mut().zip(&grads) {
            *p -= LR * g;
        }
    }
    losses
}

fn check_cell(cell: &str) {
    let r = Reference::load(cell);
    let mut model = checkpoint::load(&fixture_dir(cell)).unwrap();
    let cfg = model.config;
    let (x, b, t) = r.ids("inputs");
    let (y, _, _) = r.ids("targets");
    let zero = vec![0f32; b * cfg.state_size()];
    let mut ws = Workspace::<f32>::new(&cfg, b, t, true);
    forward(&cfg, model.params(), &mut ws, &x, &zero, None).unwrap();
    // Both sides are time-major, (T, B, V).
    assert_logits(&ws.logits, &r.f32s("logits"), 1e-5, "logits");
    let mut grads = vec![0f32; model.num_params()];
    let loss = loss_backward(&cfg, model.params(), &mut grads, &mut ws, &y).unwrap();
    let want = r.f64s("loss")[0];
    assert!(((loss - want) / want).abs() < 1e-6, "loss {loss} vs {want}");
    for spec in cfg.tensors() {
        let want = r.f32s(&format!("grad.{}", spec.name));
        let got = &grads[spec.offset..spec.offset + spec.len];
        let tol = 1e-5 * max_abs(&want) + 1e-7;
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= tol,
                "{cell} grad.{} [{i}]: {a} vs {b}",
                spec.name
            );
        }
    }
    let losses = sgd_steps(&mut model, &r, b, t);
    for (k, (a, b)) in losses.iter().zip(r.f64s("sgd_losses")).enumerate() {
        assert!((a - b).abs() <= 1e-5, "{cell} SGD step {k}: {a} vs {b}");
    }
    let mut ws = Workspace::<f32>::new(&cfg, b, t, false);
    forward(&cfg, model.params(), &mut ws, &x, &zero, None).unwrap();
    assert_logits(
        &ws.logits,
        &r.f32s("trained_logits"),
        1e-4,
        "trained logits",
    );
}

#[test]
fn lstm_matches_pytorch() {
    check_cell("lstm");
}

#[test]
fn gru_matches_pytorch() {
    check_cell("gru");
}

/// Run by tools/gen_rnn_fixture.py --check-arlm: the fixture's 10 SGD steps in arlm, then
/// arlm's checkpoint written to $ARLM_RNN_PARITY_OUT for PyTorch to load.
#[test]
#[ignore]
fn arlm_trained_checkpoint() {
    let out = PathBuf::from(std::env::var("ARLM_RNN_PARITY_OUT").expect("ARLM_RNN_PARITY_OUT"));
    let cell = std::env::var("ARLM_RNN_PARITY_CELL").expect("ARLM_RNN_PARITY_CELL");
    let r = Reference::load(&cell);
    let mut model = checkpoint::load(&fixture_dir(&cell)).unwrap();
    let (_, b, t) = r.ids("inputs");
    sgd_steps(&mut model, &r, b, t);
    checkpoint::save(&model, &out).unwrap();
}
