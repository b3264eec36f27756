//! Stochastic gradient descent with optional momentum and L2 weight decay, with PyTorch's
//! `torch.optim.SGD` semantics (dampening 0, no Nesterov), and the same interface as
//! [`AdamW`](super::AdamW): one flat parameter buffer, one gradient buffer, a decay mask.
//!
//! ```text
//! g <- g * grad_scale + wd * p      (wd only where decay[i])
//! b <- momentum * b + g             (b = g on the first step; skipped when momentum = 0)
//! p <- p - lr * b
//! ```
//!
//! Elementwise, so it runs over fixed-size chunks in parallel (rayon); each element's
//! update does not depend on the chunking, so the bits do not depend on the thread count.

use rayon::prelude::*;

/// SGD state: hyperparameters, the momentum buffer (empty when momentum is 0) and the
/// step count.
#[derive(Debug, Clone, PartialEq)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    /// Momentum buffer (same length as the parameters; empty without momentum).
    pub buf: Vec<f32>,
    /// Steps taken so far.
    pub t: u64,
    n_params: usize,
}

/// Elements per parallel work item.
const CHUNK: usize = 1 << 14;

impl Sgd {
    /// A fresh optimizer for `n_params` parameters.
    pub fn new(n_params: usize, momentum: f32, weight_decay: f32) -> Sgd {
        Sgd {
            momentum,
            weight_decay,
            buf: if momentum != 0.0 {
                vec![0.0; n_params]
            } else {
                Vec::new()
            },
            t: 0,
            n_params,
        }
    }

    /// One update of `params` from `grads` at learning rate `lr`; weight decay applies where
    /// `decay[i]` is true. All three slices must have `n_params` elements.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], decay: &[bool], lr: f32) {
        self.step_scaled(params, grads, 1.0, decay, lr);
    }

    /// [`Sgd::step`] with the gradients multiplied by `grad_scale` on the fly (gradient
    /// accumulation and clipping).
    pub fn step_scaled(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        grad_scale: f32,
        decay: &[bool],
        lr: f32,
    ) {
        let n = self.n_params;
        assert!(
            params.len() == n && grads.len() == n && decay.len() == n,
            "Sgd::step: params {}, grads {}, decay {} but the optimizer has {n}",
            params.len(),
            grads.len(),
            decay.len()
        );
        let first = self.t == 0;
        self.t += 1;
        let (mu, wd) = (self.momentum, self.weight_decay);
        let chunks = params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(decay.par_chunks(CHUNK));
        if self.buf.is_empty() && wd == 0.0 {
            // The common case (the PTB recipes): no decay mask to read, one pass at memory
            // speed over p and g.
            params
                .par_chunks_mut(CHUNK)
                .zip(grads.par_chunks(CHUNK))
                .for_each(|(p, g)| {
                    super::cpu::avx512(
                        #[inline(always)]
                        || {
                            for (p, &g) in p.iter_mut().zip(g) {
                                *p -= lr * (g * grad_scale);
                            }
                        },
                    )
                });
        } else if self.buf.is_empty() {
            chunks.for_each(|((p, g), d)| {
                for i in 0..p.len() {
                    let gi = g[i] * grad_scale + if d[i] { wd * p[i] } else { 0.0 };
                    p[i] -= lr * gi;
                }
            });
        } else {
            chunks
                .zip(self.buf.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), d), b)| {
                    for i in 0..p.len() {
                        let gi = g[i] * grad_scale + if d[i] { wd * p[i] } else { 0.0 };
                        b[i] = if first { gi } else { mu * b[i] + gi };
                        p[i] -= lr * b[i];
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The update rule written out for one scalar, step by step, in f64: the optimizer
    /// must follow it (within f32 rounding) over several steps, with and without momentum
    /// and decay.
    #[test]
    fn follows_the_update_rule() {
        for (mu, wd) in [(0.0f32, 0.0f32), (0.9, 0.0), (0.0, 0.1), (0.9, 0.1)] {
            let n = 40_000; // more than two chunks
            let mut p: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 0.01).collect();
            let decay: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
            let mut want: Vec<f64> = p.iter().map(|&x| x as f64).collect();
            let mut buf = vec![0f64; n];
            let mut opt = Sgd::new(n, mu, wd);
            for step in 0..4 {
                let g: Vec<f32> = (0..n)
                    .map(|i| (((i * 31 + step * 7) % 53) as f32 - 26.0) * 0.02)
                    .collect();
                let (lr, scale) = (0.05f32, 0.5f32);
                opt.step_scaled(&mut p, &g, scale, &decay, lr);
                for i in 0..n {
                    let mut gi = g[i] as f64 * scale as f64;
                    if decay[i] {
                        gi += wd as f64 * want[i];
                    }
                    buf[i] = if step == 0 {
                        gi
                    } else {
                        mu as f64 * buf[i] + gi
                    };
                    let upd = if mu == 0.0 { gi } else { buf[i] };
                    want[i] -= lr as f64 * upd;
                }
            }
            for i in 0..n {
                assert!(
                    (p[i] as f64 - want[i]).abs() < 1e-5,
                    "mu {mu} wd {wd} [{i}]: {} vs {}",
                    p[i],
                    want[i]
                );
            }
        }
    }

    /// Plain SGD on f(x) = sum (x - c)^2 / 2 (gradient x - c) converges to c.
    #[test]
    fn minimizes_a_quadratic() {
        let c = [1.5f32, -2.0, 0.25];
        let mut x = [0f32; 3];
        let mut opt = Sgd::new(3, 0.5, 0.0);
        for _ in 0..200 {
            let g: Vec<f32> = x.iter().zip(&c).map(|(x, c)| x - c).collect();
            opt.step(&mut x, &g, &[false; 3], 0.1);
        }
        for (x, c) in x.iter().zip(&c) {
            assert!((x - c).abs() < 1e-4, "{x} vs {c}");
        }
    }

    #[test]
    #[should_panic(expected = "Sgd::step")]
    fn refuses_mismatched_lengths() {
        let mut opt = Sgd::new(3, 0.0, 0.0);
        opt.step(&mut [0.0; 3], &[0.0; 2], &[false; 3], 0.1);
    }
}
