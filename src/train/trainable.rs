//! What the training loop needs from a model, and a tiny bigram model that implements it.
//!
//! The loop ([`super::Trainer`]) only sees one flat parameter buffer, one flat gradient
//! buffer and two passes (with and without backward), so it is tested here on
//! [`Bigram`] (exact gradients in a few lines) and runs the GPT unchanged.

use crate::model::ModelError;
use std::path::Path;

/// A model the training loop can optimize: flat parameters and gradients, a
/// forward+backward pass and a forward-only pass over a (B, T) batch.
pub trait Trainable {
    /// Number of parameters (length of [`Trainable::params`] and of the gradients).
    fn num_params(&self) -> usize;

    /// The parameters, one contiguous buffer.
    fn params(&self) -> &[f32];

    /// Parameters (mutable) and gradients together, for the optimizer step.
    fn params_and_grads(&mut self) -> (&mut [f32], &[f32]);

    /// Which parameter elements get weight decay (matrices yes; biases, norms no).
    fn decay_mask(&self) -> Vec<bool>;

    /// Sets the gradients to zero.
    fn zero_grad(&mut self);

    /// Mean next-token cross-entropy (nats) over the batch; ADDS its gradient into the
    /// gradient buffer. `seed` drives dropout (if any).
    fn forward_backward(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        seed: u64,
    ) -> Result<f32, ModelError>;

    /// Mean loss without gradients (evaluation; no dropout).
    fn forward_loss(&mut self, inputs: &[u32], targets: &[u32]) -> Result<f32, ModelError>;

    /// Writes the model (weights + config) into the directory `dir`.
    fn save(&self, dir: &Path) -> Result<(), ModelError>;

    /// Replaces the parameters with the ones saved in `dir` by [`Trainable::save`],
    /// refusing a model of another shape.
    fn load_params(&mut self, dir: &Path) -> Result<(), ModelError>;

    /// One line for logs ("gpt2 4L/4H/128, 0.80M params").
    fn describe(&self) -> String;

    /// How the loop batches: `false` (the default), B random windows per step; `true`, the
    /// next T tokens of B contiguous streams, the model carrying its state from one batch
    /// to the next (truncated BPTT; the recurrent models).
    fn stateful(&self) -> bool {
        false
    }

    /// Forgets the carried state of the training streams (`eval = false`: at each epoch's
    /// start) or of the evaluation streams (`eval = true`: before each evaluation).
    fn reset_state(&mut self, _eval: bool) {}

    /// The carried training state, saved in checkpoints (empty for stateless models).
    fn carried_state(&self) -> Vec<f32> {
        Vec::new()
    }

    /// Restores a state from [`Trainable::carried_state`] on resume.
    fn set_carried_state(&mut self, _state: &[f32]) -> Result<(), ModelError> {
        Ok(())
    }
}

/// A bigram model p(y | x) = softmax(W\[x\]) with an optional bias, for testing the loop:
/// its loss and gradient are exact and cheap.
pub struct Bigram {
    vocab: usize,
    /// W (V x V, decayed) then bias (V, not decayed).
    params: Vec<f32>,
    grads: Vec<f32>,
    /// Test hook: forward passes return NaN from this many calls on.
    pub nan_after: Option<usize>,
    calls: usize,
}

impl Bigram {
    /// A bigram model over `vocab` ids with small seeded random weights.
    pub fn new(vocab: usize, seed: u64) -> Bigram {
        let mut rng = super::data::Rng::new(seed);
        let n = vocab * vocab + vocab;
        let params = (0..n)
            .map(|_| (rng.below(2001) as f32 - 1000.0) * 1e-4)
            .collect();
        Bigram {
            vocab,
            params,
            grads: vec![0.0; n],
            nan_after: None,
            calls: 0,
        }
    }

    fn pass(&mut self, inputs: &[u32], targets: &[u32], backward: bool) -> f32 {
        let v = self.vocab;
        let n = inputs.len() as f32;
        let mut total = 0f64;
        let mut row = vec![0f32; v];
        for (&x, &y) in inputs.iter().zip(targets) {
            let (x, y) = (x as usize % v, y as usize % v);
            let (w, bias) = (&self.params[x * v..(x + 1) * v], &self.params[v * v..]);
            for ((r, w), b) in row.iter_mut().zip(w).zip(bias) {
                *r = w + b;
            }
            let lse = crate::model::logsumexp(&row) as f32;
            total += (lse - row[y]) as f64;
            if backward {
                for (j, &r) in row.iter().enumerate() {
                    let g = ((r - lse).exp() - if j == y { 1.0 } else { 0.0 }) / n;
                    self.grads[x * v + j] += g;
                    self.grads[v * v + j] += g;
                }
            }
        }
        self.calls += 1;
        if self.nan_after.is_some_and(|k| self.calls > k) {
            return f32::NAN;
        }
        (total / inputs.len() as f64) as f32
    }
}

impl Trainable for Bigram {
    fn num_params(&self) -> usize {
        self.params.len()
    }
    fn params(&self) -> &[f32] {
        &self.params
    }
    fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        (&mut self.params, &self.grads)
    }
    fn decay_mask(&self) -> Vec<bool> {
        let v = self.vocab;
        (0..self.params.len()).map(|i| i < v * v).collect()
    }
    fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }
    fn forward_backward(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        _seed: u64,
    ) -> Result<f32, ModelError> {
        Ok(self.pass(inputs, targets, true))
    }
    fn forward_loss(&mut self, inputs: &[u32], targets: &[u32]) -> Result<f32, ModelError> {
        Ok(self.pass(inputs, targets, false))
    }
    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let bytes: Vec<u8> = self.params.iter().flat_map(|p| p.to_le_bytes()).collect();
        crate::atomic::write_atomic(dir.join("bigram.bin"), &bytes).map_err(|source| {
            ModelError::Io {
                path: dir.to_path_buf(),
                source,
            }
        })
    }
    fn load_params(&mut self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join("bigram.bin");
        let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        if bytes.len() != self.params.len() * 4 {
            return Err(ModelError::Format {
                path,
                message: format!(
                    "{} bytes, expected {} parameters",
                    bytes.len(),
                    self.params.len()
                ),
            });
        }
        for (p, c) in self.params.iter_mut().zip(bytes.chunks_exact(4)) {
            *p = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("bigram V={}, {} params", self.vocab, self.params.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigram_gradient_matches_finite_differences() {
        let mut m = Bigram::new(5, 3);
        let (x, y) = ([0u32, 1, 2, 4, 1], [1u32, 2, 4, 0, 1]);
        m.zero_grad();
        m.forward_backward(&x, &y, 0).unwrap();
        let g = m.grads.clone();
        for i in [0usize, 6, 7, 22, 26, 29] {
            let h = 1e-2;
            let p0 = m.params[i];
            m.params[i] = p0 + h;
            let lp = m.forward_loss(&x, &y).unwrap() as f64;
            m.params[i] = p0 - h;
            let lm = m.forward_loss(&x, &y).unwrap() as f64;
            m.params[i] = p0;
            let fd = (lp - lm) / (2.0 * h as f64);
            assert!(
                (fd - g[i] as f64).abs() < 2e-3,
                "param {i}: fd {fd} vs {}",
                g[i]
            );
        }
    }
}
