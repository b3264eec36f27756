//! The batch-split training step: the B streams of a batch cut into fixed shards, each
//! shard's forward and backward through time one task on its own thread.
//!
//! The B sequences of a truncated-BPTT batch never interact until their gradients are
//! summed, so a shard of rows `b0..b0 + bs` runs the whole step ([`forward`], then
//! [`loss_backward_with`]) on its own workspace, with single-threaded GEMMs
//! ([`crate::ops::with_serial_gemm`]) when there are no more threads than shards; the
//! shards' gradients are then added in shard order. A shard draws the dropout masks and
//! scales its loss as the whole batch does ([`Workspace::shard`]), so the step equals the
//! unsplit one up to the order of float sums; the shard count is fixed
//! ([`SPLIT_SHARDS`]), not the thread count, so the bits do not depend on the threads.
//!
//! # Performance notes
//! `arlm bench train --model lstm-small` (2 x 200, B 20, T 20, V 10001), 2-core AMD EPYC:
//! - **Why split**: the recurrent products h_{t-1} W_hh^T are (B x H) @ (H x 4H) per step,
//!   far too small to share between two threads: `gemm`'s own parallelism made the 20
//!   forward products of a layer 1.7x slower than one thread (3.4 vs 2.0 ms) and the
//!   backward ones 3.6x slower (5.3 vs 1.5 ms), each step paying a fork-join. Split, each
//!   thread runs its half of the batch with no synchronisation until the gradient merge.
//! - **Cost**: one more gradient buffer per extra shard (the parameters' size), merged in
//!   parallel chunks. A shard's buffer is never zeroed: its backward overwrites it
//!   ([`loss_backward_with`]), and so does shard 0's into the caller's buffer when the
//!   caller says its contents are stale (`overwrite`): a memset of the parameters' size
//!   fewer per buffer and step.

use super::bptt::{forward, loss_backward_with, Workspace};
use super::{Float, RnnConfig};
use crate::model::ModelError;
use crate::ops::{self, team, SyncPtr};

/// Shards of a batch-split step: fixed, so the result does not depend on the threads.
pub const SPLIT_SHARDS: usize = 2;

/// Rows `b0..b0 + ws.b` of the batch.
struct Shard<F> {
    b0: usize,
    ws: Workspace<F>,
    /// (bs * state_size) this shard's rows of the carried state, in `state`'s layout.
    state: Vec<F>,
    /// The shard's mean loss, or why its step failed.
    result: Result<f64, ModelError>,
}

/// Workspaces and gradient buffers of a batch-split training step at a fixed (B, T).
pub struct SplitStep<F> {
    b: usize,
    t: usize,
    shards: Vec<Shard<F>>,
    /// Gradient buffers of shards 1.. (shard 0 adds straight into the caller's).
    grads: Vec<Vec<F>>,
}

impl<F: Float> SplitStep<F> {
    /// A step over (`b`, `t`) batches cut into `shards` shards (capped at `b`; 1 = one
    /// workspace, no extra gradient buffer).
    pub fn new(cfg: &RnnConfig, b: usize, t: usize, shards: usize) -> SplitStep<F> {
        let ns = shards.clamp(1, b.max(1));
        let mut b0 = 0;
        let shards = (0..ns)
            .map(|i| {
                let bs = b / ns + usize::from(i < b % ns);
                let sh = Shard {
                    b0,
                    ws: Workspace::shard(cfg, b0, bs, b, t),
                    state: vec![F::ZERO; bs * cfg.state_size()],
                    result: Ok(0.0),
                };
                b0 += bs;
                sh
            })
            .collect();
        let n_params = cfg.num_params();
        SplitStep {
            b,
            t,
            shards,
            grads: (1..ns).map(|_| vec![F::ZERO; n_params]).collect(),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// One training step on `inputs`, `targets` (B, T) from the carried `state` (B *
    /// state_size, [`forward`]'s layout), which becomes the state after the last step:
    /// ADDS the gradient of the batch's mean loss into `grads` (or with `overwrite` writes
    /// it over whatever `grads` holds) and returns that mean.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward(
        &mut self,
        cfg: &RnnConfig,
        params: &[F],
        grads: &mut [F],
        inputs: &[u32],
        targets: &[u32],
        state: &mut [F],
        dropout: Option<(f32, u64)>,
        overwrite: bool,
    ) -> Result<f64, ModelError> {
        let (b, t, h) = (self.b, self.t, cfg.hidden);
        assert_eq!(inputs.len(), b * t, "inputs are (B, T)");
        assert_eq!(targets.len(), b * t, "targets are (B, T)");
        assert_eq!(
            grads.len(),
            cfg.num_params(),
            "grads are the parameters' size"
        );
        let blocks = state.len() / (b * h);
        for sh in &mut self.shards {
            copy_state_rows(&mut sh.state, state, blocks, (sh.b0, sh.ws.b, b), h, true);
        }
        let ns = self.shards.len();
        let serial = rayon::current_num_threads() <= ns;
        let np = grads.len();
        let shards_p = SyncPtr(self.shards.as_mut_ptr());
        let mut gbufs = vec![SyncPtr(grads.as_mut_ptr())];
        gbufs.extend(self.grads.iter_mut().map(|g| SyncPtr(g.as_mut_ptr())));
        team::with_team(ns > 1, |team| {
            // SAFETY: chunk i of the first phase touches only shard i and gradient buffer
            // i.
            team.run(ns, &|i| {
                let sh = unsafe { &mut *shards_p.ptr().add(i) };
                let g = unsafe { std::slice::from_raw_parts_mut(gbufs[i].get(), np) };
                let rows = sh.b0 * t..(sh.b0 + sh.ws.b) * t;
                let mut step = || -> Result<f64, ModelError> {
                    let x = &inputs[rows.clone()];
                    forward(cfg, params, &mut sh.ws, x, &sh.state, dropout)?;
                    let y = &targets[rows.clone()];
                    loss_backward_with(cfg, params, g, &mut sh.ws, y, overwrite || i > 0)
                };
                sh.result = if serial {
                    ops::with_serial_gemm(step)
                } else {
                    step()
                };
            });
            // SAFETY: the buffers are `np` long and the first phase is over.
            unsafe { team::add_into_first(team, &gbufs, np) };
        });
        let mut sum = 0f64;
        for sh in &mut self.shards {
            let mean = std::mem::replace(&mut sh.result, Ok(0.0))?;
            sum += mean * sh.ws.b as f64;
            sh.ws.final_state(cfg, &mut sh.state);
            copy_state_rows(&mut sh.state, state, blocks, (sh.b0, sh.ws.b, b), h, false);
        }
        Ok(sum / b as f64)
    }
}

/// Copies rows `b0..b0 + bs` of each of the `blocks` (B, h) blocks of `whole` into the
/// (bs, h) blocks of `part` (`gather`), or back.
fn copy_state_rows<F: Copy>(
    part: &mut [F],
    whole: &mut [F],
    blocks: usize,
    (b0, bs, b): (usize, usize, usize),
    h: usize,
    gather: bool,
) {
    for k in 0..blocks {
        let p = &mut part[k * bs * h..][..bs * h];
        let w = &mut whole[(k * b + b0) * h..][..bs * h];
        if gather {
            p.copy_from_slice(w);
        } else {
            w.copy_from_slice(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rnn::{CellKind, InitScheme, Rnn};
    use rand::{Rng, SeedableRng};

    /// The split step adds up to the unsplit one (gradients, loss, final state), with
    /// and without dropout, for even and uneven shards, and on one thread or two.
    #[test]
    fn split_step_equals_the_unsplit_step() {
        let (b, t, v) = (5, 4, 11);
        for kind in [CellKind::Lstm, CellKind::Gru] {
            for dropout in [0.0, 0.3] {
                let cfg = RnnConfig {
                    kind,
                    n_layer: 2,
                    hidden: 6,
                    embd: 6,
                    vocab_size: v,
                    dropout,
                    tied: false,
                };
                let model = Rnn::<f64>::init(cfg, InitScheme::Uniform(0.3), 3).unwrap();
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
                let x: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..v as u32)).collect();
                let y: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..v as u32)).collect();
                let state0: Vec<f64> = (0..b * cfg.state_size())
                    .map(|_| rng.random_range(-0.5..0.5))
                    .collect();
                let drop = Some((dropout, 9));
                let run = |shards: usize, threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    pool.install(|| {
                        let mut step = SplitStep::new(&cfg, b, t, shards);
                        let mut g = vec![0.0; cfg.num_params()];
                        let mut st = state0.clone();
                        let p = model.params();
                        let loss = step
                            .forward_backward(&cfg, p, &mut g, &x, &y, &mut st, drop, false)
                            .unwrap();
                        // Overwriting a buffer of garbage gives the same bits as adding
                        // into zeros.
                        let mut junk = vec![f64::NAN; cfg.num_params()];
                        let mut st2 = state0.clone();
                        let mut again = SplitStep::new(&cfg, b, t, shards);
                        again
                            .forward_backward(&cfg, p, &mut junk, &x, &y, &mut st2, drop, true)
                            .unwrap();
                        assert!(
                            junk.iter().zip(&g).all(|(a, c)| a.to_bits() == c.to_bits()),
                            "overwrite differs from add-into-zeros"
                        );
                        (loss, g, st)
                    })
                };
                let (l1, g1, s1) = run(1, 1);
                for (shards, threads) in [(2, 2), (2, 1), (3, 2)] {
                    let (l, g, s) = run(shards, threads);
                    let what = format!("{kind:?} dropout {dropout} shards {shards}");
                    assert!((l - l1).abs() < 1e-12, "{what}: loss {l} vs {l1}");
                    for (i, (a, c)) in g.iter().zip(&g1).enumerate() {
                        assert!((a - c).abs() < 1e-12, "{what}: grad {i}: {a} vs {c}");
                    }
                    // Equal up to rounding: `gemm` may order a row's sums by the row count.
                    for (i, (a, c)) in s.iter().zip(&s1).enumerate() {
                        assert!((a - c).abs() < 1e-12, "{what}: state {i}: {a} vs {c}");
                    }
                }
            }
        }
    }

    /// A bad token in any shard is an error, not a panic.
    #[test]
    fn a_bad_token_in_a_shard_is_an_error() {
        let cfg = RnnConfig {
            kind: CellKind::Lstm,
            n_layer: 1,
            hidden: 4,
            embd: 4,
            vocab_size: 7,
            dropout: 0.0,
            tied: false,
        };
        let model = Rnn::<f32>::init(cfg, InitScheme::Uniform(0.1), 1).unwrap();
        let mut step = SplitStep::new(&cfg, 4, 3, 2);
        let mut x = vec![1u32; 12];
        x[10] = 99;
        let mut g = vec![0.0; cfg.num_params()];
        let mut st = vec![0.0; 4 * cfg.state_size()];
        let r = step.forward_backward(&cfg, model.params(), &mut g, &x, &x, &mut st, None, false);
        assert!(r.is_err());
    }
}
