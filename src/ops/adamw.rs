//! AdamW (Loshchilov & Hutter), with PyTorch's `torch.optim.AdamW` semantics so the parity
//! test (tests/it/gpt_parity.rs) can replay ten PyTorch steps exactly:
//!
//! ```text
//! p <- p * (1 - lr * wd)                    (decoupled decay, only where decay[i])
//! m <- b1 m + (1 - b1) g
//! v <- b2 v + (1 - b2) g^2
//! p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! ```
//!
//! The update is elementwise, so it runs over fixed-size chunks in parallel (rayon); the
//! moments are allocated once, never per step.

use rayon::prelude::*;

/// AdamW state: hyperparameters, first and second moments, and the step count.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// First moment (same length as the parameters).
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
    /// Steps taken so far (the bias corrections use t after increment).
    pub t: u64,
}

/// Elements per parallel work item: big enough to amortize scheduling, small enough to split.
const CHUNK: usize = 1 << 14;

impl AdamW {
    /// Zeroed moments for `n_params` parameters.
    pub fn new(n_params: usize, beta1: f32, beta2: f32, eps: f32, weight_decay: f32) -> AdamW {
        AdamW {
            beta1,
            beta2,
            eps,
            weight_decay,
            m: vec![0.0; n_params],
            v: vec![0.0; n_params],
            t: 0,
        }
    }

    /// One update of `params` from `grads` at learning rate `lr`; weight decay applies where
    /// `decay[i]` is true. All four slices must have the moments' length.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], decay: &[bool], lr: f32) {
        // g * 1.0 is exact: the same bits as an unscaled update.
        self.step_scaled(params, grads, 1.0, decay, lr);
    }

    /// [`AdamW::step`] with the gradients multiplied by `grad_scale` on the fly (gradient
    /// accumulation and clipping), bit-identical to scaling a copy first but without the
    /// extra pass and buffer.
    pub fn step_scaled(
        &mut self,
        params: &mut [f32],
        grads: &[f32],
        grad_scale: f32,
        decay: &[bool],
        lr: f32,
    ) {
        let n = self.m.len();
        assert!(
            params.len() == n && grads.len() == n && decay.len() == n,
            "AdamW::step: params {}, grads {}, decay {} but moments {n}",
            params.len(),
            grads.len(),
            decay.len()
        );
        self.t += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        // Same order of operations as torch's single-tensor AdamW.
        let bc1 = 1.0 - (b1 as f64).powi(self.t as i32);
        let bc2 = 1.0 - (b2 as f64).powi(self.t as i32);
        let step_size = (lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let shrink = 1.0 - lr * self.weight_decay;
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(decay.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK))
            .zip(self.v.par_chunks_mut(CHUNK))
            .for_each(|((((p, g), d), m), v)| {
                let k = Consts {
                    b1,
                    b2,
                    eps,
                    grad_scale,
                    shrink,
                    step_size,
                    bc2_sqrt,
                };
                update(p, g, d, m, v, &k)
            });
    }
}

/// The per-step constants of [`AdamW::step_scaled`].
struct Consts {
    b1: f32,
    b2: f32,
    eps: f32,
    grad_scale: f32,
    shrink: f32,
    step_size: f32,
    bc2_sqrt: f32,
}

/// One chunk of the update, compiled for AVX2+FMA when the CPU has them (8-wide sqrt and
/// divide; IEEE-exact like the scalar ones and no FMA contraction, so the same bits).
fn update(p: &mut [f32], g: &[f32], d: &[bool], m: &mut [f32], v: &mut [f32], k: &Consts) {
    #[inline(always)]
    fn plain(p: &mut [f32], g: &[f32], d: &[bool], m: &mut [f32], v: &mut [f32], k: &Consts) {
        let n = p.len();
        let (g, d, m, v) = (&g[..n], &d[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let mut pi = p[i];
            if d[i] {
                pi *= k.shrink;
            }
            let gi = g[i] * k.grad_scale;
            let mi = k.b1 * m[i] + (1.0 - k.b1) * gi;
            let vi = k.b2 * v[i] + (1.0 - k.b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            let denom = vi.sqrt() / k.bc2_sqrt + k.eps;
            p[i] = pi - k.step_size * (mi / denom);
        }
    }
    crate::ops::cpu::avx2(
        #[inline(always)]
        || plain(p, g, d, m, v, k),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Textbook AdamW in f64, one parameter at a time.
    fn reference(p0: &[f64], grads: &[Vec<f64>], decay: &[bool], lr: f64) -> Vec<f64> {
        let (b1, b2, eps, wd) = (0.9f64, 0.95f64, 1e-8f64, 0.1f64);
        let mut p = p0.to_vec();
        let mut m = vec![0.0; p.len()];
        let mut v = vec![0.0; p.len()];
        for (t, g) in grads.iter().enumerate() {
            let t = (t + 1) as i32;
            for i in 0..p.len() {
                if decay[i] {
                    p[i] -= lr * wd * p[i];
                }
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let mh = m[i] / (1.0 - b1.powi(t));
                let vh = v[i] / (1.0 - b2.powi(t));
                p[i] -= lr * mh / (vh.sqrt() + eps);
            }
        }
        p
    }

    /// The scaled step equals a plain step on a scaled copy of the gradients, bit for bit.
    #[test]
    fn scaled_step_equals_step_on_scaled_copy() {
        let n = 20_000;
        let p0: Vec<f32> = (0..n)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 30.0)
            .collect();
        let g: Vec<f32> = (0..n)
            .map(|i| ((i * 17 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let decay: Vec<bool> = (0..n).map(|i| i % 4 != 0).collect();
        let s = 0.37f32;
        let (mut a, mut b) = (p0.clone(), p0);
        let (mut oa, mut ob) = (
            AdamW::new(n, 0.9, 0.95, 1e-8, 0.1),
            AdamW::new(n, 0.9, 0.95, 1e-8, 0.1),
        );
        let scaled: Vec<f32> = g.iter().map(|x| x * s).collect();
        for _ in 0..3 {
            oa.step_scaled(&mut a, &g, s, &decay, 1e-2);
            ob.step(&mut b, &scaled, &decay, 1e-2);
        }
        assert_eq!(a, b);
        assert_eq!(oa, ob);
    }

    #[test]
    fn matches_textbook_adamw() {
        let n = 40_000; // spans several parallel chunks
        let p0: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 40.0)
            .collect();
        let decay: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
        let grads: Vec<Vec<f64>> = (0..5)
            .map(|s| {
                (0..n)
                    .map(|i| (((i * 13 + s * 7) % 29) as f64 - 14.0) / 10.0)
                    .collect()
            })
            .collect();
        let want = reference(&p0, &grads, &decay, 1e-2);
        let mut opt = AdamW::new(n, 0.9, 0.95, 1e-8, 0.1);
        let mut p: Vec<f32> = p0.iter().map(|&x| x as f32).collect();
        for g in &grads {
            let g32: Vec<f32> = g.iter().map(|&x| x as f32).collect();
            opt.step(&mut p, &g32, &decay, 1e-2);
        }
        assert_eq!(opt.t, 5);
        for (a, b) in p.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}
