//! Tests that cross layers: fused passes against their unfused pairs, f32 fast paths
//! against f64, and bits that must not depend on threads or shards.

use crate::ops::par::{min_len, with_serial_gemm};
use crate::ops::testutil::*;
use crate::ops::*;

#[test]
fn f32_fast_paths_match_f64() {
    let (b, t, c, nh) = (2, 9, 16, 2);
    let qkv = rnd(b * t * 3 * c, 21);
    let g = rnd(b * t * c, 22);
    let f = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let (mut o64, mut a64) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
    attention_forward(&mut o64, &mut a64, &qkv, b, t, c, nh);
    let (mut o32, mut a32) = (vec![0f32; b * t * c], vec![0f32; b * nh * t * t]);
    attention_forward(&mut o32, &mut a32, &f(&qkv), b, t, c, nh);
    let up = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    close(&up(&o32), &o64, 1e-5, "attention f32");
    let x: Vec<f64> = rnd(1000, 23).iter().map(|v| v * 6.0).collect();
    let mut y64 = vec![0.0; 1000];
    gelu_forward(&mut y64, &x);
    let mut y32 = vec![0f32; 1000];
    gelu_forward(&mut y32, &f(&x));
    close(&up(&y32), &y64, 1e-6, "gelu f32");
    let mut d64 = g[..1000.min(g.len())].to_vec();
    d64.resize(1000, 0.5);
    let mut d32 = f(&d64);
    gelu_backward_inplace(&mut d64, &x);
    gelu_backward_inplace(&mut d32, &f(&x));
    close(&up(&d32), &d64, 1e-6, "gelu backward f32");
    let mut y = f(&x);
    gelu_inplace(&mut y);
    close(&up(&y), &y64, 1e-6, "gelu in place f32");
}

/// The bias fused into the GELU pass and into the residual pass gives the bits of the
/// matmul with its bias followed by the plain GELU / residual add (f32 and f64).
#[test]
fn fused_bias_passes_give_the_unfused_bits() {
    fn check<F: Float>(cast: impl Fn(f64) -> F) {
        // (a row width that is a multiple of 16, as 4C is in practice: the AVX-512 GELU
        // then splits the rows into the same vectors either way)
        let (n, ic, oc) = (37, 24, 48);
        let v = |len: usize, seed: u64| rnd(len, seed).into_iter().map(&cast).collect();
        let (x, w, b, res): (Vec<F>, Vec<F>, Vec<F>, Vec<F>) =
            (v(n * ic, 71), v(ic * oc, 72), v(oc, 73), v(n * oc, 74));
        let mut with_bias = vec![F::ZERO; n * oc];
        matmul_forward(&mut with_bias, &x, &w, Some(&b), n, ic, oc);
        let mut no_bias = vec![F::ZERO; n * oc];
        matmul_forward(&mut no_bias, &x, &w, None, n, ic, oc);
        // GELU
        let mut want = vec![F::ZERO; n * oc];
        gelu_forward(&mut want, &with_bias);
        let (mut got, mut pre) = (vec![F::ZERO; n * oc], no_bias.clone());
        bias_gelu_forward(&mut got, &mut pre, &b, oc);
        assert!(pre == with_bias && got == want, "bias + GELU");
        // the training version: same output; its backward (from the stored derivative
        // where it keeps one) gives gelu_backward_inplace's bits
        let (mut got, mut kept) = (vec![F::ZERO; n * oc], no_bias.clone());
        bias_gelu_forward_train(&mut got, &mut kept, &b, oc);
        assert!(got == want, "bias + GELU, training version");
        let dout: Vec<F> = v(n * oc, 75);
        let mut want_d = dout.clone();
        gelu_backward_inplace(&mut want_d, &with_bias);
        let mut got_d = dout.clone();
        if gelu_keeps_derivative::<F>(oc) {
            gelu_backward_stored(&mut got_d, &kept);
        } else {
            assert!(kept == with_bias);
            gelu_backward_inplace(&mut got_d, &kept);
        }
        assert!(got_d == want_d, "GELU backward from the stored derivative");
        // residual
        let mut want = with_bias.clone();
        residual_add(&mut want, &res);
        let mut got = no_bias.clone();
        residual_bias_add(&mut got, &res, &b, oc);
        assert!(got == want, "bias + residual");
    }
    check::<f32>(|x| x as f32);
    check::<f64>(|x| x);
}

#[test]
fn gelu_and_softmax_ce_match_fd() {
    let x: Vec<f64> = rnd(50, 11).iter().map(|v| v * 4.0).collect();
    let g = rnd(50, 12);
    let fwd = |x: &[f64]| {
        let mut o = vec![0.0; x.len()];
        gelu_forward(&mut o, x);
        dot(&o, &g)
    };
    let mut d = g.clone();
    gelu_backward_inplace(&mut d, &x);
    close(&fd(&x, &fwd), &d, 1e-7, "gelu");

    let (n, v) = (4, 9);
    let logits = rnd(n * v, 13);
    let targets = [0u32, 8, 3, 3];
    let loss = |l: &[f64]| {
        let mut p = l.to_vec();
        let mut losses = vec![0.0; n];
        softmax_ce_forward(&mut p, &mut losses, &targets, v)
    };
    let mut p = logits.clone();
    let mut losses = vec![0.0; n];
    softmax_ce_forward(&mut p, &mut losses, &targets, v);
    softmax_ce_backward_inplace(&mut p, &targets, v, 1.0 / n as f64);
    close(&fd(&logits, &loss), &p, 1e-7, "softmax-ce");
}

/// Inside a serial shard the kernels' loops run inline (no splitting), with the same
/// chunking, so the same bits as the parallel loops.
#[test]
fn serial_shard_loops_give_the_parallel_bits() {
    assert_eq!(par::min_len(), 1);
    assert_eq!(with_serial_gemm(min_len), usize::MAX);
    assert_eq!(par::min_len(), 1, "the flag is restored");
    let (n, c) = (300, 96);
    let x: Vec<f32> = rnd(n * c, 61).iter().map(|&v| v as f32).collect();
    let d: Vec<f32> = rnd(n * c, 62).iter().map(|&v| v as f32).collect();
    let w: Vec<f32> = rnd(c, 63).iter().map(|&v| 1.0 + v as f32).collect();
    let run = |serial: bool| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        pool.install(|| {
            let go = || {
                let (mut o, mut mu, mut rs) = (vec![0f32; n * c], vec![0f32; n], vec![0f32; n]);
                layernorm_forward(&mut o, &mut mu, &mut rs, &x, &w, &w, c);
                let (mut dx, mut dw, mut db) = (d.clone(), vec![0f32; c], vec![0f32; c]);
                let mut scratch = vec![0f32; LN_BLOCKS * 2 * c];
                layernorm_backward(
                    &mut dx,
                    &mut dw,
                    &mut db,
                    &mut scratch,
                    &d,
                    &x,
                    &w,
                    &mu,
                    &rs,
                    c,
                );
                let mut g = vec![0f32; n * c];
                gelu_forward(&mut g, &o);
                gelu_backward_inplace(&mut dx, &o);
                bias_backward(&mut db, &g, n, c);
                (o, dx, dw, db, g)
            };
            if serial {
                with_serial_gemm(go)
            } else {
                go()
            }
        })
    };
    assert!(run(true) == run(false));
}
