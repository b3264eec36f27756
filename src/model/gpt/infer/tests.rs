//! Tests of the GPT's inference paths: the KV-cache step against the parallel pass, every
//! weight format, thread-count independence, the fused attention kernel.

use super::*;
use crate::model::gpt::GptConfig;

/// A 2-layer, 4-head GPT with context 12 and weights `scale` times GPT-2's init, so
/// the distributions are far from uniform.
pub(super) fn scaled_model(n_embd: usize, vocab_size: usize, seed: u64, scale: f32) -> Gpt {
    let cfg = GptConfig {
        n_layer: 2,
        n_head: 4,
        n_embd,
        block_size: 12,
        vocab_size,
        dropout: 0.0,
        activation: Default::default(),
    };
    let mut m = Gpt::new(cfg, seed).unwrap();
    for x in m.params_mut().iter_mut() {
        *x *= scale;
    }
    m
}

fn model() -> Gpt {
    scaled_model(16, 13, 7, 8.0)
}

#[test]
fn kv_cache_path_matches_parallel_path() {
    let m = model();
    let seq = [12u32, 3, 5, 7, 0, 1, 1, 11, 4, 2];
    crate::model::conformance::check_model(&m, &seq, 2e-4);
}

/// Wide enough (C = 64) that q8 rows have full 32-blocks and the SIMD kernels run.
fn wide_model() -> Gpt {
    scaled_model(64, 37, 3, 6.0)
}

/// Max |logprob difference| between two models along `seq` (KV-cache path).
fn max_step_diff(a: &Gpt, b: &Gpt, seq: &[u32]) -> f32 {
    let v = a.config.vocab_size;
    let (mut sa, mut sb) = (a.new_state(), b.new_state());
    let (mut ra, mut rb) = (vec![0.0; v], vec![0.0; v]);
    let mut worst = 0f32;
    for &t in seq {
        a.feed(&mut sa, t, &mut ra).unwrap();
        b.feed(&mut sb, t, &mut rb).unwrap();
        for (x, y) in ra.iter().zip(&rb) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

#[test]
fn reduced_precision_weights_keep_both_paths_in_agreement() {
    let seq = [36u32, 3, 5, 7, 0, 1, 1, 11, 4, 2, 30, 17];
    let f32m = wide_model();
    for (format, tol) in [(WeightFormat::F16, 0.1f32), (WeightFormat::Q8, 1.5)] {
        let m = wide_model().with_weight_format(format);
        assert_eq!(m.weight_format(), format);
        // The step (compact kernels) and the scoring pass (gemm on the rounded f32
        // copy) compute with the same weights. An f16 model's prefill runs the bf16
        // GEMM where the CPU has it (weights and activations rounded to bf16, below).
        let prefill_tol = if format == WeightFormat::F16 && ops::gemm_bf16::available() {
            0.5
        } else {
            2e-4
        };
        crate::model::conformance::check_model_with_prefill_tol(&m, &seq, 2e-4, prefill_tol);
        // The rounding costs little, but something: a model that ignored the format
        // would give 0 here.
        let d = max_step_diff(&f32m, &m, &seq);
        eprintln!("{format}: max |logprob diff| vs f32 {d:.2e}");
        assert!(d < tol && d > 0.0, "{format}: {d}");
        if prefill_tol > 2e-4 {
            // The prefill took the bf16 GEMM: its distribution moved off the scoring one.
            let v = m.config.vocab_size;
            let mut row = vec![0f32; v];
            m.prefill(&mut m.new_state(), &seq, &mut row).unwrap();
            let scored = m.distributions(&seq).unwrap();
            let last = &scored[(seq.len() - 1) * v..];
            let d = row
                .iter()
                .zip(last)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!("f16 prefill (bf16 GEMM) vs scoring: {d:.2e}");
            assert!(d > 0.0 && d < prefill_tol, "f16 prefill: {d}");
        }
    }
    // w8a8: the step also rounds its matmul inputs to int8; the parallel paths do too
    // on AVX-512 VNNI (the int8 GEMM), else they keep f32, so the two agree up to that
    // rounding (and the GEMM's f32 block sums). It must cost something over q8.
    let q8 = wide_model().with_weight_format(WeightFormat::Q8);
    let m = wide_model().with_weight_format(WeightFormat::W8A8);
    assert_eq!(m.weight_format(), WeightFormat::W8A8);
    let d = max_step_diff(&q8, &m, &seq);
    let d32 = max_step_diff(&f32m, &m, &seq);
    eprintln!("w8a8: max |logprob diff| vs q8 {d:.2e}, vs f32 {d32:.2e}");
    assert!(d > 0.0 && d < 1.0 && d32 < 2.0, "w8a8: {d} {d32}");
    crate::model::conformance::check_model(&m, &seq, 1.0);
    // bf16: with AVX512_BF16 the parallel paths run the bf16 GEMM, which also rounds
    // their activations to bf16 (the step keeps f32), so the paths agree only up to
    // that rounding; elsewhere they use the rounded f32 copy and agree as for f16.
    let m = wide_model().with_weight_format(WeightFormat::Bf16);
    let d = max_step_diff(&f32m, &m, &seq);
    assert!(d < 0.5 && d > 0.0, "bf16: {d}");
    let rounded = Gpt::from_params(m.config, m.params().to_vec()).unwrap();
    let (gemm, f32_gemm) = (
        m.distributions(&seq).unwrap(),
        rounded.distributions(&seq).unwrap(),
    );
    let worst = gemm
        .iter()
        .zip(&f32_gemm)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("bf16: max |logprob diff| bf16 GEMM vs f32 GEMM {worst:.2e}");
    if ops::gemm_bf16::available() {
        // (This model's logits are sharp, tens of nats apart: 2^-9 relative rounding of
        // the activations moves them by tenths. The GEMM itself is checked exactly in
        // ops::gemm_bf16; docs/parts/gen.md has the cost on a trained model.)
        assert!(worst > 0.0 && worst < 0.5, "bf16 GEMM: {worst}");
        crate::model::conformance::check_model(&m, &seq, 0.5);
    } else {
        assert!(worst < 2e-4, "bf16 without the GEMM: {worst}");
        crate::model::conformance::check_model(&m, &seq, 2e-4);
    }
    let same = wide_model().with_weight_format(WeightFormat::F32);
    assert_eq!(max_step_diff(&f32m, &same, &seq), 0.0);
    // Mutating the parameters drops the stale compact copy.
    let mut m = wide_model().with_weight_format(WeightFormat::Q8);
    m.params_mut();
    assert_eq!(m.weight_format(), WeightFormat::F32);
}

/// Logits of every step along `seq` (KV-cache path), in a pool of `threads` threads.
fn step_logits(m: &Gpt, seq: &[u32], threads: usize) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut st = m.new_state();
        seq.iter()
            .map(|&t| {
                let mut row = vec![0.0; m.config.vocab_size];
                m.feed(&mut st, t, &mut row).unwrap();
                row
            })
            .collect()
    })
}

#[test]
fn step_is_bit_identical_for_any_thread_count() {
    // Tiny test models step serially by default; run them on the team too (the same
    // results either way, so other tests running meanwhile are unaffected).
    PARALLEL_STEP_PARAMS.store(0, Ordering::Relaxed);
    let seq = [36u32, 3, 5, 7, 0, 1, 1, 11, 4, 2, 30, 17];
    for format in WeightFormat::ALL {
        let m = wide_model().with_weight_format(format);
        let one = step_logits(&m, &seq, 1);
        for threads in [2, 3] {
            let many = step_logits(&m, &seq, threads);
            for (a, b) in one.iter().zip(&many) {
                let (a, b): (Vec<u32>, Vec<u32>) = (
                    a.iter().map(|x| x.to_bits()).collect(),
                    b.iter().map(|x| x.to_bits()).collect(),
                );
                assert_eq!(a, b, "{format}, {threads} threads");
            }
        }
    }
}

#[test]
fn fused_attention_matches_plain_softmax_attention() {
    let data = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (h % 2001) as f32 / 500.0 - 2.0
            })
            .collect()
    };
    for hs in [16, 24, 64, 128] {
        for n in [1, 5, 33] {
            let (q, k, v) = (data(hs, 1), data(n * hs, 2), data(n * hs, 3));
            let scale = 1.0 / (hs as f64).sqrt();
            // f64 reference: softmax(scale * K q) V.
            let s: Vec<f64> = (0..n)
                .map(|t| {
                    scale
                        * (0..hs)
                            .map(|j| q[j] as f64 * k[t * hs + j] as f64)
                            .sum::<f64>()
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
            let z: f64 = e.iter().sum();
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; hs];
                let mut sc = vec![0.0; n];
                attend(&mut y, &q, &k, &v, scale as f32, &mut sc, isa);
                for j in 0..hs {
                    let want: f64 = (0..n).map(|t| e[t] / z * v[t * hs + j] as f64).sum();
                    assert!(
                        (y[j] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                        "hs {hs} n {n} {isa:?} [{j}]: {} vs {want}",
                        y[j]
                    );
                }
            }
        }
    }
}

#[test]
fn batch_scoring_matches_single() {
    let m = model();
    let a: &[u32] = &[12, 3, 5, 7, 0, 1];
    let b: &[u32] = &[12, 9];
    let c: &[u32] = &[12, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4];
    let batch = m.score_next_batch(&[a, b, c]).unwrap();
    for (s, got) in [a, b, c].iter().zip(&batch) {
        let want = m.score_next(s).unwrap();
        assert_eq!(got.len(), want.len());
        for (x, y) in got.iter().zip(&want) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }
    let too_long = [0u32; 13];
    assert!(matches!(
        m.score_next(&too_long),
        Err(ModelError::ContextTooLong { .. })
    ));
    let mut st = m.new_state();
    let mut row = vec![0.0; 13];
    for _ in 0..12 {
        m.feed(&mut st, 1, &mut row).unwrap();
    }
    assert!(m.feed(&mut st, 1, &mut row).is_err());
}
