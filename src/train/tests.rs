//! The training loop's tests, on the exact bigram model of `trainable.rs`.

use super::data::Tokens;
use super::trainable::Bigram;
use super::*;
use crate::tokenizer::bytes::ByteTokenizer;

fn toy_data() -> TrainData {
    let text = "the cat sat on the mat. the dog sat on the log. ".repeat(40);
    TrainData::from_text(&text, Box::new(ByteTokenizer), 0.1, "toy").unwrap()
}

fn toy_config() -> TrainConfig {
    let mut c = TrainConfig::preset("tiny").unwrap();
    c.steps = 20;
    c.block_size = 8;
    c.batch_size = 4;
    c.lr = 0.5;
    c.min_lr = 0.05;
    c.eval_every = 5;
    c.checkpoint_every = 5;
    c
}

#[test]
fn loss_goes_down() {
    let mut t = Trainer::new(Bigram::new(257, 1), toy_config(), toy_data(), None).unwrap();
    let before = t.evaluate().unwrap();
    let s = t
        .run(&RunOptions {
            quiet: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(s.steps, 20);
    assert!(s.val_loss < before - 1.0, "{before} -> {}", s.val_loss);
}

#[test]
fn accumulation_equals_bigger_batch_without_clipping() {
    // Two micro-batches of 4 give the mean gradient of the same 8 windows: compare
    // one accumulated step against a hand-made batch of 8 on a bigram.
    let mut c = toy_config();
    c.grad_clip = 0.0;
    c.grad_accum = 2;
    let mut a = Trainer::new(Bigram::new(257, 1), c.clone(), toy_data(), None).unwrap();
    a.train_step().unwrap();
    let mut c8 = c.clone();
    c8.grad_accum = 1;
    c8.batch_size = 8;
    let mut b = Trainer::new(Bigram::new(257, 1), c8, toy_data(), None).unwrap();
    // Same windows: the 8-batch draws 8 starts in a row, the accumulated run draws 4,
    // a dropout seed, then 4. Replay that order by hand.
    let mut rng = Rng::new(c.seed);
    let (mut x, mut y, mut w) = (vec![0; 32], vec![0; 32], Vec::new());
    let d = toy_data();
    d.train
        .sample_batch(&mut rng, 4, 8, &mut x[..32], &mut y[..32], &mut w);
    let (x1, y1) = (x.clone(), y.clone());
    rng.next_u64();
    d.train.sample_batch(&mut rng, 4, 8, &mut x, &mut y, &mut w);
    let xs = [x1, x].concat();
    let ys = [y1, y].concat();
    b.model.zero_grad();
    b.model.forward_backward(&xs, &ys, 0).unwrap();
    let (p, g) = b.model.params_and_grads();
    b.opt.step(p, g, &b.decay, c.lr_at(0));
    for (pa, pb) in a.model.params().iter().zip(b.model.params()) {
        assert!((pa - pb).abs() < 1e-6, "{pa} vs {pb}");
    }
}

#[test]
fn clipping_bounds_the_update_norm() {
    let mut c = toy_config();
    c.grad_clip = 1e-3;
    c.weight_decay = 0.0;
    let mut t = Trainer::new(Bigram::new(257, 1), c, toy_data(), None).unwrap();
    t.train_step().unwrap();
    assert!(t.last_grad_norm > 1e-3);
    // With Adam the first update is lr * sign-like; the moments see the clipped grad.
    let m_norm: f64 = t
        .opt
        .m
        .iter()
        .map(|&m| (m as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!((m_norm - 0.1 * 1e-3).abs() < 1e-7, "{m_norm}");
}

#[test]
fn nan_stops_and_keeps_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut m = Bigram::new(257, 1);
    m.nan_after = Some(9); // steps 1-5, 2 eval batches, steps 6-7; NaN at step 8
    let mut t = Trainer::new(m, toy_config(), toy_data(), Some(out.clone())).unwrap();
    let err = t
        .run(&RunOptions {
            quiet: true,
            ..Default::default()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::NonFinite { .. }), "{msg}");
    assert!(msg.contains("NaN") && msg.contains("step-5"), "{msg}");
    let (dir5, st) = checkpoint::latest(&out).unwrap().unwrap();
    assert_eq!(st.step, 5);
    assert!(dir5.join("bigram.bin").exists());
}

/// Every checkpoint directory of `out` holds finite weights.
fn all_checkpoints_finite(out: &Path) -> usize {
    let mut dirs: Vec<PathBuf> = checkpoint::step_dirs(out)
        .into_iter()
        .map(|d| d.1)
        .collect();
    dirs.push(out.join("checkpoints").join("best"));
    let mut n = 0;
    for d in dirs.iter().filter(|d| d.exists()) {
        let bytes = std::fs::read(d.join("bigram.bin")).unwrap();
        assert!(bytes
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()));
        n += 1;
    }
    n
}

#[test]
fn divergence_never_writes_a_bad_checkpoint() {
    for lr in [3.4e38f32, 1e6] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut c = toy_config();
        c.lr = lr;
        c.min_lr = 0.0;
        c.warmup_steps = 0;
        c.checkpoint_every = 1;
        c.eval_every = 1;
        let mut t = Trainer::new(Bigram::new(257, 1), c, toy_data(), Some(out.clone())).unwrap();
        let err = t
            .run(&RunOptions {
                quiet: true,
                ..Default::default()
            })
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, TrainError::NonFinite { .. }),
            "lr {lr}: {msg}"
        );
        assert!(
            msg.contains("no checkpoint was written yet"),
            "lr {lr}: {msg}"
        );
        assert_eq!(all_checkpoints_finite(&out), 0, "lr {lr}");
    }
}

#[test]
fn resume_skips_damaged_checkpoints_and_stale_temps_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let opts = RunOptions {
        stop_at: Some(10),
        quiet: true,
        ..Default::default()
    };
    let mut t = Trainer::new(
        Bigram::new(257, 1),
        toy_config(),
        toy_data(),
        Some(out.clone()),
    )
    .unwrap();
    t.run(&opts).unwrap();
    // step-10's weights truncated, an empty stray step dir, and a dead process's temp dir.
    let w = out.join("checkpoints/step-10/bigram.bin");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..100]).unwrap();
    std::fs::create_dir(out.join("checkpoints/step-99999")).unwrap();
    std::fs::create_dir(out.join("checkpoints/.step-15.tmp.4194305")).unwrap();
    std::fs::write(out.join(".bigram.bin.tmp.4194305"), b"x").unwrap();
    let t = Trainer::resume(Bigram::new(257, 1), toy_config(), toy_data(), out.clone()).unwrap();
    assert_eq!(t.step_count(), 5);
    let notes = t.notes.join("\n");
    assert!(
        notes.contains("step-99999") && notes.contains("step-10"),
        "{notes}"
    );
    assert!(notes.contains(".step-15.tmp.4194305"), "{notes}");
    assert!(!out.join("checkpoints/.step-15.tmp.4194305").exists());
    assert!(!out.join(".bigram.bin.tmp.4194305").exists());
    // With every checkpoint damaged the resume fails and says why.
    let w5 = out.join("checkpoints/step-5/bigram.bin");
    std::fs::write(&w5, b"").unwrap();
    let e = Trainer::resume(Bigram::new(257, 1), toy_config(), toy_data(), out)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("no intact checkpoint") && e.contains("step-5"),
        "{e}"
    );
}

#[test]
fn evaluate_all_is_the_mean_over_consecutive_windows() {
    let mut t = Trainer::new(Bigram::new(257, 4), toy_config(), toy_data(), None).unwrap();
    let (loss, n) = t.evaluate_all(1000).unwrap();
    // Brute force: every consecutive window of T, whole batches only.
    let (b, tt) = (4usize, 8usize);
    let Tokens::Memory(val) = &t.data.val else {
        panic!("in-memory data")
    };
    let windows = (val.len() - 1) / tt / b * b;
    let x: Vec<u32> = val[..windows * tt].to_vec();
    let y: Vec<u32> = val[1..windows * tt + 1].to_vec();
    let want = t.model.forward_loss(&x, &y).unwrap();
    assert_eq!(n, windows * tt);
    assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
}

#[test]
fn resume_refuses_other_config_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut t = Trainer::new(
        Bigram::new(257, 1),
        toy_config(),
        toy_data(),
        Some(out.clone()),
    )
    .unwrap();
    t.run(&RunOptions {
        stop_at: Some(5),
        quiet: true,
        ..Default::default()
    })
    .unwrap();
    let mut other = toy_config();
    other.lr = 0.1;
    let e = Trainer::resume(Bigram::new(257, 1), other, toy_data(), out.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("lr: 0.5 -> 0.1"), "{e}");
    let small =
        TrainData::from_text(&"abc ".repeat(50), Box::new(ByteTokenizer), 0.1, "x").unwrap();
    let e = Trainer::resume(Bigram::new(257, 1), toy_config(), small, out.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("training tokens"), "{e}");
    let e = Trainer::new(Bigram::new(257, 1), toy_config(), toy_data(), Some(out))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("--resume"), "{e}");
}

/// Given batch offsets replace the sampler: the offsets the sampler would draw (replayed
/// with its RNG) give the sampler's losses bit for bit, whatever the run's seed; running
/// past the list stops with an error naming it.
#[test]
fn given_batches_replace_the_sampler() {
    let c = toy_config();
    let (b, t, steps) = (c.batch_size, c.block_size, 6);
    let d = toy_data();
    let mut rng = Rng::new(c.seed);
    let mut lines = String::new();
    for _ in 0..steps {
        let starts: Vec<String> = (0..b)
            .map(|_| rng.below((d.train.len() - t) as u64).to_string())
            .collect();
        rng.next_u64(); // the dropout seed of the micro-batch
        lines += &(starts.join(" ") + "\n");
    }
    let path = Path::new("offsets.txt");
    let given = data::GivenBatches::parse(&lines, path, b, t, d.train.len()).unwrap();
    assert_eq!(given.len(), steps);
    let mut sampled = Trainer::new(Bigram::new(257, 1), c.clone(), toy_data(), None).unwrap();
    let mut other_seed = c.clone();
    other_seed.seed += 1;
    let mut replayed = Trainer::new(Bigram::new(257, 1), other_seed, toy_data(), None).unwrap();
    replayed.use_given_batches(given).unwrap();
    for _ in 0..steps {
        let (a, r) = (
            sampled.train_step().unwrap(),
            replayed.train_step().unwrap(),
        );
        assert_eq!(a.to_bits(), r.to_bits());
    }
    assert_eq!(sampled.model.params(), replayed.model.params());
    let e = replayed.train_step().unwrap_err().to_string();
    assert!(e.contains("6 micro-batches") && e.contains("step 7"), "{e}");
}

#[test]
fn given_batches_refuse_bad_files() {
    let p = Path::new("offs.txt");
    let err = |text: &str| {
        data::GivenBatches::parse(text, p, 2, 8, 100)
            .unwrap_err()
            .to_string()
    };
    assert!(err("1 2 3\n").contains("offs.txt line 1: 3 offsets, the batch size is 2"));
    assert!(err("1 2\n4 x\n").contains("line 2: \"x\" is not an offset"));
    assert!(err("1 92\n").contains("offset 92 + 9 tokens runs past the 100 training ids"));
    assert!(err("\n\n").contains("has no batches"));
    let ok = data::GivenBatches::parse("0 91\n\n5 6\n", p, 2, 8, 100).unwrap();
    assert_eq!(ok.len(), 2);
}
