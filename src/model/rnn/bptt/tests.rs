//! Finite-difference checks (f64) of the whole model's backward through time: every
//! parameter and the carried-in state, for each cell, tied and untied, with and without
//! dropout; and the carried state joins two batches exactly.

use super::*;
use crate::model::rnn::{InitScheme, Rnn};
use rand::{Rng, SeedableRng};

fn cfg(kind: CellKind, tied: bool, dropout: f32) -> RnnConfig {
    RnnConfig {
        kind,
        n_layer: 2,
        hidden: 4,
        embd: if tied { 4 } else { 3 },
        vocab_size: 6,
        dropout,
        tied,
    }
}

fn loss_of(
    c: &RnnConfig,
    p: &[f64],
    x: &[u32],
    y: &[u32],
    s: &[f64],
    d: Option<(f32, u64)>,
) -> f64 {
    let mut ws = Workspace::<f64>::new(c, 2, 3, true);
    forward(c, p, &mut ws, x, s, d).unwrap();
    loss(&mut ws, y, c.vocab_size)
}

#[test]
fn whole_model_gradient_matches_finite_differences() {
    let (x, y) = ([0u32, 3, 5, 1, 2, 2], [3u32, 5, 1, 4, 0, 3]);
    for kind in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        for (tied, dropout) in [(false, 0.0), (true, 0.0), (false, 0.3)] {
            let c = cfg(kind, tied, dropout);
            let mut p = Rnn::<f64>::init(c, InitScheme::Uniform(0.6), 3)
                .unwrap()
                .params()
                .to_vec();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
            let mut s: Vec<f64> = (0..2 * c.state_size())
                .map(|_| rng.random_range(-0.8..0.8))
                .collect();
            let d = (dropout > 0.0).then_some((dropout, 77u64));
            let mut ws = Workspace::<f64>::new(&c, 2, 3, true);
            forward(&c, &p, &mut ws, &x, &s, d).unwrap();
            let mut g = vec![0.0; p.len()];
            let l0 = loss_backward(&c, &p, &mut g, &mut ws, &y).unwrap();
            assert!((l0 - loss_of(&c, &p, &x, &y, &s, d)).abs() < 1e-12);
            let tol = |fd: f64| 1e-7 * (1.0 + fd.abs());
            for i in 0..p.len() {
                let (e, p0) = (1e-5, p[i]);
                p[i] = p0 + e;
                let lp = loss_of(&c, &p, &x, &y, &s, d);
                p[i] = p0 - e;
                let lm = loss_of(&c, &p, &x, &y, &s, d);
                p[i] = p0;
                let fd = (lp - lm) / (2.0 * e);
                assert!(
                    (fd - g[i]).abs() < tol(fd),
                    "{kind:?} tied={tied} p={dropout} param {i}: fd {fd} vs {}",
                    g[i]
                );
            }
            for i in 0..s.len() {
                let (e, s0) = (1e-5, s[i]);
                s[i] = s0 + e;
                let lp = loss_of(&c, &p, &x, &y, &s, d);
                s[i] = s0 - e;
                let lm = loss_of(&c, &p, &x, &y, &s, d);
                s[i] = s0;
                let fd = (lp - lm) / (2.0 * e);
                assert!(
                    (fd - ws.dstate[i]).abs() < tol(fd),
                    "{kind:?} state {i}: fd {fd} vs {}",
                    ws.dstate[i]
                );
            }
        }
    }
}

/// Six steps at once equal three plus three with the state carried (same logits), and
/// the BPTT gradient through the six steps matches finite differences of a state that
/// reached the second half through the first.
#[test]
fn carried_state_joins_batches_exactly() {
    for kind in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
        let c = cfg(kind, false, 0.0);
        let p = Rnn::<f64>::init(c, InitScheme::Uniform(0.5), 5)
            .unwrap()
            .params()
            .to_vec();
        let x6 = [1u32, 4, 2, 0, 5, 3]; // B = 1, T = 6
        let zero = vec![0.0; c.state_size()];
        let mut w6 = Workspace::<f64>::new(&c, 1, 6, false);
        forward(&c, &p, &mut w6, &x6, &zero, None).unwrap();
        let mut w3 = Workspace::<f64>::new(&c, 1, 3, false);
        let mut state = zero.clone();
        let v = c.vocab_size;
        for half in 0..2 {
            forward(&c, &p, &mut w3, &x6[half * 3..half * 3 + 3], &state, None).unwrap();
            w3.final_state(&c, &mut state);
            for (a, b) in w3.logits.iter().zip(&w6.logits[half * 3 * v..][..3 * v]) {
                assert!((a - b).abs() < 1e-12, "{kind:?} half {half}: {a} vs {b}");
            }
        }
        let mut s6 = zero.clone();
        w6.final_state(&c, &mut s6);
        assert_eq!(s6, state);
    }
}
