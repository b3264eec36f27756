//! Resume is bit-exact: 20 steps straight == 10 steps, stop, resume, 10 more
//! (losses and weights identical), through the library and through the binary.

use crate::common;

use arlm::tokenizer::bytes::ByteTokenizer;
use arlm::train::metrics::{read_jsonl, Record};
use arlm::train::trainable::Bigram;
use arlm::train::{RunOptions, TrainConfig, TrainData, Trainable, Trainer};

fn data() -> TrainData {
    let text =
        "she sells sea shells by the sea shore; the shells she sells are sea shells. ".repeat(30);
    TrainData::from_text(&text, Box::new(ByteTokenizer), 0.1, "toy").unwrap()
}

fn config() -> TrainConfig {
    let mut c = TrainConfig::preset("tiny").unwrap();
    c.steps = 20;
    c.block_size = 8;
    c.batch_size = 4;
    c.grad_accum = 2;
    c.lr = 0.3;
    c.warmup_steps = 3;
    c.eval_every = 4;
    c.checkpoint_every = 5;
    c.keep_last = 2;
    c
}

fn train_losses(records: &[Record]) -> Vec<(u64, u32)> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } => Some((*step, loss.to_bits())),
            _ => None,
        })
        .collect()
}

fn quiet(stop_at: Option<u64>) -> RunOptions {
    RunOptions {
        stop_at,
        quiet: true,
        progress: false,
    }
}

#[test]
fn library_resume_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Trainer::new(Bigram::new(257, 9), config(), data(), Some(a_dir.clone())).unwrap();
    a.run(&quiet(None)).unwrap();

    let mut b = Trainer::new(Bigram::new(257, 9), config(), data(), Some(b_dir.clone())).unwrap();
    b.run(&quiet(Some(10))).unwrap();
    assert_eq!(b.step_count(), 10);
    // A few steps past the checkpoint that the resumed run must forget.
    b.train_step().unwrap();
    drop(b);
    let mut b = Trainer::resume(Bigram::new(257, 1), config(), data(), b_dir.clone()).unwrap();
    assert_eq!(b.step_count(), 10);
    b.run(&quiet(None)).unwrap();

    let pa: Vec<u32> = a.model.params().iter().map(|x| x.to_bits()).collect();
    let pb: Vec<u32> = b.model.params().iter().map(|x| x.to_bits()).collect();
    assert!(pa == pb, "weights differ after resume");
    let (ra, rb) = (
        read_jsonl(&a_dir.join("metrics.jsonl")).unwrap(),
        read_jsonl(&b_dir.join("metrics.jsonl")).unwrap(),
    );
    assert_eq!(train_losses(&ra).len(), 20);
    assert_eq!(train_losses(&ra), train_losses(&rb));
    let evals = |r: &[Record]| -> Vec<(u64, u32)> {
        r.iter()
            .filter_map(|r| match r {
                Record::Eval { step, val_loss, .. } => Some((*step, val_loss.to_bits())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(evals(&ra), evals(&rb));
    assert_eq!(evals(&ra).len(), 5);
    // keep_last = 2: steps 15 and 20 remain, plus best/.
    let names: Vec<u64> = arlm::train::checkpoint::step_dirs(&a_dir)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec![15, 20]);
    assert!(a_dir.join("checkpoints/best/train_state.json").exists());
    assert!(a_dir.join("loss.svg").exists() && a_dir.join("loss.png").exists());
    assert_eq!(
        std::fs::read(a_dir.join("bigram.bin")).unwrap(),
        std::fs::read(b_dir.join("bigram.bin")).unwrap()
    );
}

fn train_loss_bits(run: &std::path::Path) -> Vec<(u64, u32)> {
    train_losses(&read_jsonl(&run.join("metrics.jsonl")).unwrap())
}

#[test]
fn binary_resume_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let common = [
        "train",
        "--preset",
        "tiny",
        "--steps",
        "20",
        "--eval-every",
        "5",
        "--checkpoint-every",
        "5",
        "--grad-accum",
        "2",
        "--quiet",
    ];
    common::arlm_ok(&[&common[..], &["--out", a_s]].concat());
    common::arlm_ok(&[&common[..], &["--out", b_s, "--stop-at", "10"]].concat());
    assert_eq!(train_loss_bits(&b).len(), 10);
    // A fresh run into a directory with checkpoints is refused (no silent overwrite).
    let out = common::arlm(&[&common[..], &["--out", b_s]].concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
    // Resuming with a different config is refused, naming the field.
    let out = common::arlm(&["train", "--resume", "--out", b_s, "--lr", "0.1", "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lr:"), "{err}");
    // Resuming on other data (another tokenizer) is refused.
    let txt = dir.path().join("t.txt");
    std::fs::write(&txt, "hello world, hello there. ".repeat(200)).unwrap();
    let out = common::arlm(&[
        "train",
        "--resume",
        "--out",
        b_s,
        "--data",
        txt.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokenizer"));

    common::arlm_ok(&["train", "--resume", "--out", b_s, "--quiet"]);
    assert_eq!(train_loss_bits(&a).len(), 20);
    assert_eq!(train_loss_bits(&a), train_loss_bits(&b));
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(
            std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
            "{f} differs after resume"
        );
    }
}

/// A recurrent model resumes bit-exactly mid-epoch: its carried (h, c) and the stream
/// position come back from the checkpoint (2 epochs, so the per-epoch state reset and the
/// step decay of the learning rate are crossed too; dropout exercises the seeds).
#[test]
fn rnn_resume_is_bit_exact_with_carried_state() {
    use arlm::train::config::StepDecay;
    use arlm::train::TrainableRnn;
    let mut c = TrainConfig::preset("tiny-lstm").unwrap();
    c.block_size = 8;
    c.batch_size = 4;
    c.dropout = 0.2;
    c.epochs = Some(2);
    c.lr_step_decay = Some(StepDecay {
        after_epoch: 1,
        factor: 0.5,
    });
    c.eval_every = 30;
    c.checkpoint_every = 35;
    let model = |c: &TrainConfig| {
        let arlm::train::ModelSpec::Rnn(spec) = c.model.clone() else {
            panic!("tiny-lstm is an RNN")
        };
        let (b, t) = (c.batch_size, c.block_size);
        TrainableRnn::new(&spec, (b, t), c.dropout, 257, 256, c.seed).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Trainer::new(model(&c), c.clone(), data(), Some(a_dir.clone())).unwrap();
    let steps = a.config.steps;
    assert!(steps > 100, "two epochs of streams: {steps} steps");
    a.run(&quiet(None)).unwrap();
    let mut b = Trainer::new(model(&c), c.clone(), data(), Some(b_dir.clone())).unwrap();
    b.run(&quiet(Some(70))).unwrap();
    // The state carried into step 71 is not zero, so a resume that lost it would differ.
    let st = arlm::train::checkpoint::read_state(&b_dir.join("checkpoints/step-70")).unwrap();
    assert!(st.carried_state.iter().any(|&x| x != 0.0));
    b.train_step().unwrap();
    drop(b);
    let mut b = Trainer::resume(model(&c), c.clone(), data(), b_dir.clone()).unwrap();
    assert_eq!(b.step_count(), 70);
    b.run(&quiet(None)).unwrap();
    let pa: Vec<u32> = a.model.params().iter().map(|x| x.to_bits()).collect();
    let pb: Vec<u32> = b.model.params().iter().map(|x| x.to_bits()).collect();
    assert!(pa == pb, "weights differ after resume");
    let (ra, rb) = (train_loss_bits(&a_dir), train_loss_bits(&b_dir));
    assert_eq!(ra.len() as u64, steps);
    assert_eq!(ra, rb);
}
