use super::*;

fn cfg() -> GptConfig {
    GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        block_size: 6,
        vocab_size: 7,
        dropout: 0.0,
        activation: Default::default(),
    }
}

/// Whole-model finite-difference check in f64 on every parameter of a tiny model.
#[test]
fn whole_model_gradient_matches_finite_differences() {
    whole_model_fd(cfg());
}

/// The same with the exact (erf) GELU.
#[test]
fn whole_model_gradient_matches_finite_differences_exact_gelu() {
    whole_model_fd(GptConfig {
        activation: Activation::GeluExact,
        ..cfg()
    });
}

#[allow(clippy::needless_range_loop)]
fn whole_model_fd(cfg: GptConfig) {
    let mut model: Gpt<f64> = Gpt::init(cfg, 3).unwrap();
    // Non-trivial LayerNorm params and biases so their gradients are exercised.
    for (i, x) in model.params_mut().iter_mut().enumerate() {
        *x += 0.05 * (((i * 7919) % 13) as f64 - 6.0) / 6.0;
    }
    let (b, t) = (2, 5);
    let inputs = [1u32, 2, 3, 4, 5, 6, 0, 0, 1, 3];
    let targets = [2u32, 3, 4, 5, 6, 0, 0, 1, 3, 2];
    // both the unsplit step and the batch-split one (2 shards of one sequence each)
    let mut tr = GptTrainer::with_shards(&model, b, t, 1);
    tr.zero_grad();
    let loss = tr.forward_backward(&model, &inputs, &targets, 0).unwrap();
    assert!(loss > 0.0);
    let grads = tr.grads().to_vec();
    let mut split = GptTrainer::with_shards(&model, b, t, 2);
    assert_eq!(split.shards(), 2);
    split.zero_grad();
    let loss2 = split
        .forward_backward(&model, &inputs, &targets, 0)
        .unwrap();
    assert!((loss - loss2).abs() < 1e-6);
    for (i, (x, y)) in grads.iter().zip(split.grads()).enumerate() {
        assert!(
            (x - y).abs() <= 1e-12 * (1.0 + x.abs()),
            "param {i}: {x} vs {y}"
        );
    }
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for i in 0..model.num_params() {
        let x0 = model.params()[i];
        model.params_mut()[i] = x0 + h;
        let lp = tr.forward_loss_f64(&model, &inputs, &targets).unwrap();
        model.params_mut()[i] = x0 - h;
        let lm = tr.forward_loss_f64(&model, &inputs, &targets).unwrap();
        model.params_mut()[i] = x0;
        let num = (lp - lm) / (2.0 * h);
        let err = (num - grads[i]).abs() / (1e-4 + num.abs().max(grads[i].abs()));
        worst = worst.max(err);
        assert!(
            err < 1e-3,
            "param {i}: numeric {num} vs analytic {}",
            grads[i]
        );
    }
    assert!(worst < 1e-3);
}

/// With dropout on, the gradient is that of the loss under the same (seeded) masks.
#[test]
fn dropout_gradient_matches_finite_differences() {
    let cfg = GptConfig {
        dropout: 0.3,
        ..cfg()
    };
    let mut model: Gpt<f64> = Gpt::init(cfg, 4).unwrap();
    let inputs = [1u32, 2, 3, 4, 5, 6];
    let targets = [2u32, 3, 4, 5, 6, 0];
    let mut tr = GptTrainer::new(&model, 1, 6);
    tr.zero_grad();
    let loss = tr.forward_backward(&model, &inputs, &targets, 9).unwrap() as f64;
    let clean = tr.forward_loss_f64(&model, &inputs, &targets).unwrap();
    assert!((loss - clean).abs() > 1e-6, "dropout changed nothing");
    let again = tr
        .loss_inner(&model, &inputs, &targets, Some((0.3, 9)))
        .unwrap();
    assert!((again - loss).abs() < 1e-6, "same seed, same masks");
    let zeros = tr.acts.drop_attn.iter().filter(|&&m| m == 0.0).count();
    let frac = zeros as f64 / tr.acts.drop_attn.len() as f64;
    assert!((frac - 0.3).abs() < 0.1, "dropped fraction {frac}");
    let grads = tr.grads().to_vec();
    let h = 1e-5;
    for i in (0..model.num_params()).step_by(7) {
        let x0 = model.params()[i];
        model.params_mut()[i] = x0 + h;
        let lp = tr
            .loss_inner(&model, &inputs, &targets, Some((0.3, 9)))
            .unwrap();
        model.params_mut()[i] = x0 - h;
        let lm = tr
            .loss_inner(&model, &inputs, &targets, Some((0.3, 9)))
            .unwrap();
        model.params_mut()[i] = x0;
        let num = (lp - lm) / (2.0 * h);
        let err = (num - grads[i]).abs() / (1e-4 + num.abs().max(grads[i].abs()));
        assert!(
            err < 1e-3,
            "param {i}: numeric {num} vs analytic {}",
            grads[i]
        );
    }
}

/// A batch-split step (any shard count, even or uneven shards, with dropout) gives the
/// unsplit step's loss and gradients up to float rounding, and the same bits for any
/// thread count.
#[test]
fn batch_split_matches_unsplit_and_ignores_thread_count() {
    for dropout in [0.0, 0.25] {
        let cfg = GptConfig { dropout, ..cfg() };
        let model: Gpt<f32> = Gpt::init(cfg, 5).unwrap();
        let (b, t) = (3, 6);
        let inputs: Vec<u32> = (0..b * t).map(|i| (i * 5 % 7) as u32).collect();
        let targets: Vec<u32> = (0..b * t).map(|i| (i * 3 % 7) as u32).collect();
        let run = |shards: usize, threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut tr = GptTrainer::with_shards(&model, b, t, shards);
                tr.zero_grad();
                // two accumulated steps, as gradient accumulation does
                let l1 = tr.forward_backward(&model, &inputs, &targets, 7).unwrap();
                let l2 = tr.forward_backward(&model, &targets, &inputs, 8).unwrap();
                (l1, l2, tr.losses().to_vec(), tr.grads().to_vec())
            })
        };
        let (l1, l2, losses, want) = run(1, 2);
        let gmax = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        for shards in [2, 3] {
            let got = run(shards, 2);
            assert!((got.0 - l1).abs() < 1e-5 && (got.1 - l2).abs() < 1e-5);
            for (x, y) in got.2.iter().zip(&losses) {
                assert!((x - y).abs() < 1e-5, "losses {x} vs {y}");
            }
            for (i, (x, y)) in got.3.iter().zip(&want).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-5 * gmax,
                    "dropout {dropout} shards {shards} param {i}: {x} vs {y}"
                );
            }
            let one_thread = run(shards, 1);
            assert_eq!(one_thread.3, got.3, "thread count changed the gradients");
            assert_eq!(one_thread.0.to_bits(), got.0.to_bits());
        }
    }
}

#[test]
fn batches_are_split_unless_the_extra_gradients_cost_more_than_activations() {
    let small = Gpt::<f32>::new(cfg(), 1).unwrap();
    assert_eq!(GptTrainer::new(&small, 4, 6).shards(), SPLIT_SHARDS);
    assert_eq!(GptTrainer::new(&small, 1, 6).shards(), 1);
    let wide = Gpt::<f32>::new(
        GptConfig {
            vocab_size: 5000,
            ..cfg()
        },
        1,
    )
    .unwrap();
    assert_eq!(GptTrainer::new(&wide, 2, 1).shards(), 1);
    // a split trainer still returns whole-batch logits, equal to an unsplit one's
    let x = [1u32, 2, 3, 4, 5, 6, 0, 1];
    let mut split = GptTrainer::with_shards(&small, 2, 4, 2);
    let mut one = GptTrainer::with_shards(&small, 2, 4, 1);
    let a = split.logits(&small, &x).unwrap().to_vec();
    assert_eq!(a, one.logits(&small, &x).unwrap());
    let la = split.forward_loss_f64(&small, &x, &x).unwrap();
    let lb = one.forward_loss_f64(&small, &x, &x).unwrap();
    assert!((la - lb).abs() < 1e-6);
    assert_eq!(split.losses().len(), 8);
    for (p, q) in split.losses().iter().zip(one.losses()) {
        assert!((p - q).abs() < 1e-6);
    }
}

#[test]
fn gradients_accumulate_and_bad_batches_are_refused() {
    let model = Gpt::new(cfg(), 1).unwrap();
    let mut tr = GptTrainer::new(&model, 1, 4);
    let x = [1u32, 2, 3, 4];
    let y = [2u32, 3, 4, 5];
    tr.zero_grad();
    tr.forward_backward(&model, &x, &y, 0).unwrap();
    let g1 = tr.grads().to_vec();
    tr.forward_backward(&model, &x, &y, 0).unwrap();
    for (a, b) in g1.iter().zip(tr.grads()) {
        assert!((2.0 * a - b).abs() <= 1e-6 * (1.0 + a.abs()));
    }
    assert!(tr.forward_loss(&model, &x[..3], &y[..3]).is_err());
    assert!(tr.forward_loss(&model, &[1, 2, 3, 7], &y).is_err());
    let l = tr.forward_loss(&model, &x, &y).unwrap();
    assert!(
        (l - (7f32).ln()).abs() < 0.1,
        "fresh model loss {l} should be near ln V"
    );
}
