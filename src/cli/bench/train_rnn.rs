//! `arlm bench train --model lstm-small | gru-small | lstm-medium`: one truncated-BPTT
//! step of the recurrent models (forward + backward through T steps with the state
//! carried, global-norm clip 5, SGD on Zaremba's time-summed loss: the step of
//! `arlm train --preset ptb-lstm-small`), side by side with PyTorch eager
//! (tools/bench_rnn_torch.py: nn.Embedding + nn.LSTM/nn.GRU + nn.Linear,
//! `torch.set_num_threads(2)`), alternating runs, median of the per-run ratios, and the
//! peak RSS of both processes.
//!
//! Shapes: small = 2 x 200, T 20, B 20 (Zaremba et al. 2014 "small"); medium = 2 x 650,
//! T 35, B 20 ("medium", without its dropout: the shape is what is timed). V = 10001
//! (PTB's 10k words + end of text).

use super::util::{peak_rss_mb, reset_peak_rss};
use arlm::model::rnn::{CellKind, InitScheme};
use arlm::train::{RnnSpec, Trainable, TrainableRnn};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Instant;

/// One benchmark shape.
pub struct RnnBench {
    name: &'static str,
    cell: CellKind,
    hidden: usize,
    layers: usize,
    b: usize,
    t: usize,
    vocab: usize,
}

/// The shapes `--model` names, or `None` when it names no recurrent shape.
pub fn specs(which: &str) -> Option<Vec<RnnBench>> {
    let small = |name, cell| RnnBench {
        name,
        cell,
        hidden: 200,
        layers: 2,
        b: 20,
        t: 20,
        vocab: 10001,
    };
    let medium = RnnBench {
        name: "lstm-medium",
        hidden: 650,
        t: 35,
        ..small("lstm-medium", CellKind::Lstm)
    };
    Some(match which {
        "lstm-small" => vec![small("lstm-small", CellKind::Lstm)],
        "gru-small" => vec![small("gru-small", CellKind::Gru)],
        "lstm-medium" => vec![medium],
        "rnn" => vec![
            small("lstm-small", CellKind::Lstm),
            small("gru-small", CellKind::Gru),
            medium,
        ],
        _ => return None,
    })
}

/// Median ms per step and peak RSS (MiB) of `steps` timed steps after one warm-up.
fn bench_arlm(s: &RnnBench, steps: usize) -> anyhow::Result<(f64, f64)> {
    reset_peak_rss();
    let spec = RnnSpec {
        cell: s.cell,
        n_layer: s.layers,
        hidden: s.hidden,
        embd: None,
        tied: false,
        init: InitScheme::Uniform(0.1),
    };
    let mut model = TrainableRnn::new(&spec, (s.b, s.t), 0.0, s.vocab, 0, 1)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = s.b * s.t;
    let mut times = Vec::new();
    // The training loop's update: momentum-free SGD, lr 1, no weight decay.
    let mut sgd = arlm::ops::Sgd::new(model.num_params(), 0.0, 0.0);
    let no_decay = vec![false; model.num_params()];
    for step in 0..steps + 1 {
        let x: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..s.vocab as u32))
            .collect();
        let y: Vec<u32> = (0..n)
            .map(|_| rng.random_range(0..s.vocab as u32))
            .collect();
        let t0 = Instant::now();
        model.zero_grad();
        let loss = model.forward_backward(&x, &y, step as u64)?;
        // As the training loop: global norm of the time-summed gradient, clip 5, SGD lr 1.
        let (params, grads) = model.params_and_grads();
        let norm = arlm::ops::norm::sum_of_squares(grads).sqrt() * s.t as f64;
        let scale = s.t as f64 * if norm > 5.0 { 5.0 / norm } else { 1.0 };
        sgd.step_scaled(params, grads, scale as f32, &no_decay, 1.0);
        let dt = t0.elapsed().as_secs_f64();
        anyhow::ensure!(loss.is_finite(), "loss {loss}");
        if step > 0 {
            times.push(dt);
        }
    }
    Ok((super::util::median(&times) * 1e3, peak_rss_mb()))
}

#[derive(serde::Deserialize)]
struct TorchResult {
    ms_per_step_median: f64,
    peak_rss_mb: f64,
}

fn bench_torch(py: &Path, s: &RnnBench, steps: usize) -> anyhow::Result<TorchResult> {
    let cell = match s.cell {
        CellKind::Lstm => "LSTM",
        CellKind::Gru => "GRU",
        CellKind::Rnn => "RNN",
    };
    let args: Vec<String> = [
        ("--cell", cell.to_string()),
        ("--hidden", s.hidden.to_string()),
        ("--layers", s.layers.to_string()),
        ("--vocab", s.vocab.to_string()),
        ("--batch", s.b.to_string()),
        ("--bptt", s.t.to_string()),
        ("--steps", steps.to_string()),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect();
    super::run_reference(py, &super::tool_script("bench_rnn_torch.py"), &args)
}

/// Runs the recurrent shapes `specs` for `runs` alternating runs of `steps` steps.
pub fn run(
    specs: Vec<RnnBench>,
    steps: Option<usize>,
    runs: usize,
    py: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    super::util::print_threads_and_load();
    for s in &specs {
        let steps = steps.unwrap_or(30).max(1);
        println!(
            "-- {}: {:?} {} x {}, T={} B={} V={}, {steps} steps, SGD + clip 5",
            s.name, s.cell, s.layers, s.hidden, s.t, s.b, s.vocab
        );
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rss_a, mut rss_t) = (0f64, 0f64);
        for run in 0..runs.max(1) {
            let (ms, rss) = bench_arlm(s, steps)?;
            rss_a = rss_a.max(rss);
            ours.push(ms);
            let mut line = format!("   run {}: arlm {ms:.2} ms/step", run + 1);
            if let Some(py) = &py {
                let t = bench_torch(py, s, steps)?;
                rss_t = rss_t.max(t.peak_rss_mb);
                theirs.push(t.ms_per_step_median);
                ratios.push(t.ms_per_step_median / ms);
                line += &format!(
                    ", pytorch {:.2} ms/step, ratio {:.2}x",
                    t.ms_per_step_median,
                    t.ms_per_step_median / ms
                );
            }
            println!("{line}");
        }
        println!(
            "   arlm    median {:.2} ms/step, peak RSS {rss_a:.0} MB",
            super::util::median(&ours)
        );
        if !theirs.is_empty() {
            println!(
                "   pytorch median {:.2} ms/step, peak RSS {rss_t:.0} MB",
                super::util::median(&theirs)
            );
            println!(
                "   speedup arlm vs PyTorch eager: median of per-run ratios {:.2}x",
                super::util::median(&ratios)
            );
        }
    }
    Ok(())
}
