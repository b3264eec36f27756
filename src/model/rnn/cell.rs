//! One time step of each recurrent cell on B rows, forward and backward side by side.
//!
//! The matrix products are done by the caller ([`super::bptt`]): `xg` (B, G*H) = x W_ih^T +
//! b_ih and `hg` (B, G*H) = h_prev W_hh^T + b_hh arrive precomputed, so a step here is only
//! the element-wise gate math, in PyTorch's formulation:
//!
//! - LSTM (gates i, f, g, o): i = σ(xi + hi), f = σ(xf + hf), g = tanh(xg + hg),
//!   o = σ(xo + ho); c = f ⊙ c_prev + i ⊙ g; h = o ⊙ tanh(c).
//! - GRU (gates r, z, n): r = σ(xr + hr), z = σ(xz + hz), n = tanh(xn + r ⊙ hn) where
//!   hn = W_hn h_prev + b_hn (the reset gate applies after the hidden product and its
//!   bias); h = (1 - z) ⊙ n + z ⊙ h_prev.
//! - tanh RNN: h = tanh(x + hh).
//!
//! The forward saves what the backward needs in `act` (per row: LSTM i, f, g, o, tanh c
//! = 5H; GRU r, z, n, hn = 4H; tanh RNN nothing, h itself is kept by the caller).
//! The backward returns the gradients of the pre-activations: `dxg` for the input side
//! and, for the GRU only, `dhg` for the hidden side (they differ in the n block: d hn =
//! dn_pre ⊙ r). For the LSTM and the tanh RNN the two are the same and only `dxg` is
//! written. These loops are plain arithmetic (no intrinsics): the same code is the f64
//! reference the finite-difference tests check and, compiled for AVX-512 at run time, the
//! f32 training kernel.

use super::{CellKind, Float};

/// Floats of `act` per row for a cell of `h` units.
pub fn act_width(kind: CellKind, h: usize) -> usize {
    match kind {
        CellKind::Lstm => 5 * h,
        CellKind::Gru => 4 * h,
        CellKind::Rnn => 0,
    }
}

/// Gate block k (of `hs` units) of a row.
#[inline(always)]
fn blk<F>(row: &[F], k: usize, hs: usize) -> &[F] {
    &row[k * hs..][..hs]
}

/// The first `N` gate blocks of a row, mutable.
#[inline(always)]
fn blks_mut<const N: usize, F>(row: &mut [F], hs: usize) -> [&mut [F]; N] {
    let mut it = row.chunks_exact_mut(hs);
    std::array::from_fn(|_| it.next().expect("row holds N blocks"))
}

/// One step forward for B = `h_out.len() / hs` rows. `xg`, `hg`: (B, G*hs); `h_prev`,
/// `c_prev`, `h_out`, `c_out`: (B, hs) (`c_*` empty unless LSTM); `act`: (B, act_width).
///
/// Runs under [`crate::ops::cpu::avx512`], and each row's gate blocks are sliced to `hs`
/// before the loop, so the f32 loops (with [`Float::sigmoid`] and [`Float::tanh_vec`])
/// compile to 16-wide vectors.
#[allow(clippy::too_many_arguments)]
pub fn step_forward<F: Float>(
    kind: CellKind,
    hs: usize,
    xg: &[F],
    hg: &[F],
    h_prev: &[F],
    c_prev: &[F],
    act: &mut [F],
    h_out: &mut [F],
    c_out: &mut [F],
) {
    let b = h_out.len() / hs;
    let gw = kind.gates() * hs;
    let aw = act_width(kind, hs);
    crate::ops::cpu::avx512(
        #[inline(always)]
        || {
            for r in 0..b {
                let xg = &xg[r * gw..][..gw];
                let hg = &hg[r * gw..][..gw];
                let h = &mut h_out[r * hs..][..hs];
                match kind {
                    CellKind::Lstm => {
                        let (xi, xf, xc, xo) = (
                            blk(xg, 0, hs),
                            blk(xg, 1, hs),
                            blk(xg, 2, hs),
                            blk(xg, 3, hs),
                        );
                        let (hi, hf, hc, ho) = (
                            blk(hg, 0, hs),
                            blk(hg, 1, hs),
                            blk(hg, 2, hs),
                            blk(hg, 3, hs),
                        );
                        let [ai, af, ag, ao, atc] = blks_mut::<5, F>(&mut act[r * aw..][..aw], hs);
                        let cp = &c_prev[r * hs..][..hs];
                        let c = &mut c_out[r * hs..][..hs];
                        for j in 0..hs {
                            let i = F::sigmoid(xi[j] + hi[j]);
                            let f = F::sigmoid(xf[j] + hf[j]);
                            let g = (xc[j] + hc[j]).tanh_vec();
                            let o = F::sigmoid(xo[j] + ho[j]);
                            let cj = f * cp[j] + i * g;
                            let tc = cj.tanh_vec();
                            c[j] = cj;
                            h[j] = o * tc;
                            ai[j] = i;
                            af[j] = f;
                            ag[j] = g;
                            ao[j] = o;
                            atc[j] = tc;
                        }
                    }
                    CellKind::Gru => {
                        let (xr, xz, xn) = (blk(xg, 0, hs), blk(xg, 1, hs), blk(xg, 2, hs));
                        let (hr, hz, hn) = (blk(hg, 0, hs), blk(hg, 1, hs), blk(hg, 2, hs));
                        let [ar, az, an, ahn] = blks_mut::<4, F>(&mut act[r * aw..][..aw], hs);
                        let hp = &h_prev[r * hs..][..hs];
                        for j in 0..hs {
                            let rr = F::sigmoid(xr[j] + hr[j]);
                            let z = F::sigmoid(xz[j] + hz[j]);
                            let n = (xn[j] + rr * hn[j]).tanh_vec();
                            h[j] = (F::ONE - z) * n + z * hp[j];
                            ar[j] = rr;
                            az[j] = z;
                            an[j] = n;
                            ahn[j] = hn[j];
                        }
                    }
                    CellKind::Rnn => {
                        for j in 0..hs {
                            h[j] = (xg[j] + hg[j]).tanh_vec();
                        }
                    }
                }
            }
        },
    )
}

/// Backward of [`step_forward`]. In: `dh` (B, hs) the total gradient of h_out, `dc` (LSTM)
/// the gradient of c_out from the next step. Out (all OVERWRITTEN): `dxg` (B, G*hs), `dhg`
/// (GRU only; empty otherwise), `dc` becomes the gradient of c_prev (LSTM), `dh_prev`
/// (B, hs) the part of the gradient of h_prev that does not go through W_hh (GRU: z ⊙ dh;
/// zero otherwise). Vectorized as [`step_forward`] is.
#[allow(clippy::too_many_arguments)]
pub fn step_backward<F: Float>(
    kind: CellKind,
    hs: usize,
    act: &[F],
    h_out: &[F],
    h_prev: &[F],
    c_prev: &[F],
    dh: &[F],
    dc: &mut [F],
    dxg: &mut [F],
    dhg: &mut [F],
    dh_prev: &mut [F],
) {
    let b = dh.len() / hs;
    let gw = kind.gates() * hs;
    let aw = act_width(kind, hs);
    crate::ops::cpu::avx512(
        #[inline(always)]
        || {
            for r in 0..b {
                let dhr = &dh[r * hs..][..hs];
                let dx = &mut dxg[r * gw..][..gw];
                let dhp = &mut dh_prev[r * hs..][..hs];
                match kind {
                    CellKind::Lstm => {
                        let a = &act[r * aw..][..aw];
                        let (ai, af, ag, ao, atc) = (
                            blk(a, 0, hs),
                            blk(a, 1, hs),
                            blk(a, 2, hs),
                            blk(a, 3, hs),
                            blk(a, 4, hs),
                        );
                        let [di, df, dg, d_o] = blks_mut::<4, F>(dx, hs);
                        let cp = &c_prev[r * hs..][..hs];
                        let dcr = &mut dc[r * hs..][..hs];
                        for j in 0..hs {
                            let (i, f, g, o, tc) = (ai[j], af[j], ag[j], ao[j], atc[j]);
                            let dcj = dcr[j] + dhr[j] * o * (F::ONE - tc * tc);
                            di[j] = dcj * g * i * (F::ONE - i);
                            df[j] = dcj * cp[j] * f * (F::ONE - f);
                            dg[j] = dcj * i * (F::ONE - g * g);
                            d_o[j] = dhr[j] * tc * o * (F::ONE - o);
                            dcr[j] = dcj * f;
                            dhp[j] = F::ZERO;
                        }
                    }
                    CellKind::Gru => {
                        let a = &act[r * aw..][..aw];
                        let (ar, az, an, ahn) =
                            (blk(a, 0, hs), blk(a, 1, hs), blk(a, 2, hs), blk(a, 3, hs));
                        let hp = &h_prev[r * hs..][..hs];
                        let [dxr, dxz, dxn] = blks_mut::<3, F>(dx, hs);
                        let [dhr_, dhz, dhn] = blks_mut::<3, F>(&mut dhg[r * gw..][..gw], hs);
                        for j in 0..hs {
                            let (rr, z, n, hn) = (ar[j], az[j], an[j], ahn[j]);
                            let d = dhr[j];
                            let dn_pre = d * (F::ONE - z) * (F::ONE - n * n);
                            let dz_pre = d * (hp[j] - n) * z * (F::ONE - z);
                            let dr_pre = dn_pre * hn * rr * (F::ONE - rr);
                            dxr[j] = dr_pre;
                            dxz[j] = dz_pre;
                            dxn[j] = dn_pre;
                            dhr_[j] = dr_pre;
                            dhz[j] = dz_pre;
                            dhn[j] = dn_pre * rr;
                            dhp[j] = d * z;
                        }
                    }
                    CellKind::Rnn => {
                        let h = &h_out[r * hs..][..hs];
                        for j in 0..hs {
                            dx[j] = dhr[j] * (F::ONE - h[j] * h[j]);
                            dhp[j] = F::ZERO;
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rand_vec(rng: &mut rand_chacha::ChaCha8Rng, n: usize, s: f64) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(-s..s)).collect()
    }

    /// Loss = <wh, h_out> + <wc, c_out> of one step from (xg, hg, h_prev, c_prev).
    fn loss(kind: CellKind, hs: usize, v: &[Vec<f64>; 4], wh: &[f64], wc: &[f64]) -> f64 {
        let b = v[2].len() / hs;
        let mut act = vec![0.0; b * act_width(kind, hs)];
        let mut h = vec![0.0; b * hs];
        let mut c = vec![0.0; if kind.has_cell() { b * hs } else { 0 }];
        step_forward(
            kind, hs, &v[0], &v[1], &v[2], &v[3], &mut act, &mut h, &mut c,
        );
        let lh: f64 = h.iter().zip(wh).map(|(a, b)| a * b).sum();
        lh + c.iter().zip(wc).map(|(a, b)| a * b).sum::<f64>()
    }

    #[test]
    fn each_cell_backward_matches_finite_differences() {
        let (b, hs) = (3, 4);
        for kind in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let gw = kind.gates() * hs;
            let nc = if kind.has_cell() { b * hs } else { 0 };
            let mut v = [
                rand_vec(&mut rng, b * gw, 1.5),
                rand_vec(&mut rng, b * gw, 1.5),
                rand_vec(&mut rng, b * hs, 1.0),
                rand_vec(&mut rng, nc, 1.0),
            ];
            let wh = rand_vec(&mut rng, b * hs, 1.0);
            let wc = rand_vec(&mut rng, nc, 1.0);
            // Analytic.
            let mut act = vec![0.0; b * act_width(kind, hs)];
            let mut h = vec![0.0; b * hs];
            let mut c = vec![0.0; nc];
            step_forward(
                kind, hs, &v[0], &v[1], &v[2], &v[3], &mut act, &mut h, &mut c,
            );
            let mut dc = wc.clone();
            let mut dxg = vec![0.0; b * gw];
            let mut dhg = vec![0.0; if kind == CellKind::Gru { b * gw } else { 0 }];
            let mut dhp = vec![0.0; b * hs];
            step_backward(
                kind, hs, &act, &h, &v[2], &v[3], &wh, &mut dc, &mut dxg, &mut dhg, &mut dhp,
            );
            if kind != CellKind::Gru {
                dhg = dxg.clone();
            }
            // d/dhg is d/d(hidden pre-activation); d/dh_prev here is only the direct part
            // (the W_hh part is the caller's GEMM), so h_prev is perturbed with hg fixed.
            let grads = [dxg, dhg, dhp, dc];
            for (which, g) in grads.iter().enumerate() {
                for i in 0..v[which].len() {
                    let e = 1e-6;
                    let x0 = v[which][i];
                    v[which][i] = x0 + e;
                    let lp = loss(kind, hs, &v, &wh, &wc);
                    v[which][i] = x0 - e;
                    let lm = loss(kind, hs, &v, &wh, &wc);
                    v[which][i] = x0;
                    let fd = (lp - lm) / (2.0 * e);
                    assert!(
                        (fd - g[i]).abs() < 1e-8 * (1.0 + fd.abs()),
                        "{kind:?} input {which} elem {i}: fd {fd} vs {}",
                        g[i]
                    );
                }
            }
        }
    }
}
