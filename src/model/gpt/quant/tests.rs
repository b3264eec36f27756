use super::*;

/// Plain f64 y = W x from the rounded (as-represented) weights, (rows, cols) layout.
fn reference(w: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
    (0..rows)
        .map(|r| {
            (0..cols)
                .map(|c| w[r * cols + c] as f64 * x[c] as f64)
                .sum()
        })
        .collect()
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

#[test]
fn every_kernel_matches_the_reference() {
    // Shapes with tails in rows (not a multiple of 4), lanes and q8 blocks; one large
    // enough to take the parallel path.
    for &(rows, cols) in &[(1, 5), (7, 40), (13, 96), (6, 33), (300, 256), (75, 80)] {
        let w = data(rows * cols, 1);
        let x = data(cols, 2);
        let bias = data(rows, 3);
        for format in WeightFormat::ALL {
            for transposed in [false, true] {
                let win = if transposed {
                    // (cols, rows) layout of the same matrix
                    let mut t = vec![0f32; rows * cols];
                    for r in 0..rows {
                        for c in 0..cols {
                            t[c * rows + r] = w[r * cols + c];
                        }
                    }
                    t
                } else {
                    w.clone()
                };
                let (m, rounded) = QMat::encode(&win, rows, cols, transposed, format);
                let mut r_rc = vec![0f32; rows * cols];
                for r in 0..rows {
                    for c in 0..cols {
                        r_rc[r * cols + c] = if transposed {
                            rounded[c * rows + r]
                        } else {
                            rounded[r * cols + c]
                        };
                        // The encoding's error is what the format promises.
                        let (orig, got) = (w[r * cols + c], r_rc[r * cols + c]);
                        let tol = match format {
                            WeightFormat::F32 => 0.0,
                            WeightFormat::F16 => orig.abs() * 4.9e-4 + 6e-8,
                            // 8 significant bits: half a step is 2^-8 relative.
                            WeightFormat::Bf16 => orig.abs() * 3.91e-3,
                            WeightFormat::Q8 | WeightFormat::W8A8 => 1.0 / 127.0 / 2.0 * 1.0001,
                        };
                        assert!((orig - got).abs() <= tol, "{format} {orig} -> {got}");
                    }
                }
                // w8a8 rounds x too: the kernels must compute exactly with the
                // rounded x (and the rounding must stay within half a step).
                let x_eff = if format == WeightFormat::W8A8 {
                    let mut xq = ActQ8::default();
                    xq.quantize(&x);
                    let d = xq.dequantized();
                    for (b, (xb, db)) in x.chunks(Q8_BLOCK).zip(d.chunks(Q8_BLOCK)).enumerate() {
                        let step = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
                        for (u, v) in xb.iter().zip(db) {
                            assert!((u - v).abs() <= step * 0.5001, "block {b}: {u} -> {v}");
                        }
                    }
                    assert_ne!(d, x, "x was not rounded");
                    for (b, xb) in x.chunks(Q8_BLOCK).enumerate() {
                        let inv = 1.0 / xq.scales[b];
                        for (k, &u) in xb.iter().enumerate() {
                            let want = (u * inv).round_ties_even();
                            assert_eq!(xq.q[b * Q8_BLOCK + k] as f32, want, "{u}");
                        }
                    }
                    d
                } else {
                    x.clone()
                };
                let want = reference(&r_rc, rows, cols, &x_eff);
                for isa in Isa::available() {
                    let mut y = vec![f32::NAN; rows];
                    m.matvec_isa(&mut y, &x, Some(&bias), isa);
                    for r in 0..rows {
                        let w = want[r] + bias[r] as f64;
                        assert!(
                            (y[r] as f64 - w).abs() < 1e-4 * (1.0 + w.abs()),
                            "{format} {isa:?} {rows}x{cols} row {r}: {} vs {w}",
                            y[r]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn f32_streaming_kernels_match_plain_loops() {
    for &(rows, cols) in &[(1, 3), (9, 37), (130, 768), (6, 16)] {
        let w = data(rows * cols, 4);
        let x = data(cols, 5);
        let want = reference(&w, rows, cols, &x);
        // axpy_rows sees the same matrix as (in = cols, out = rows), transposed.
        let mut wt = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                wt[c * rows + r] = w[r * cols + c];
            }
        }
        for isa in Isa::available() {
            let mut y = vec![f32::NAN; rows];
            dot_rows_isa(&mut y, &w, &x, isa);
            let mut acc = vec![0f32; rows];
            axpy_rows_isa(&mut acc, &x, &wt, isa);
            for r in 0..rows {
                let tol = 1e-4 * (1.0 + want[r].abs());
                assert!((y[r] as f64 - want[r]).abs() < tol, "dot {isa:?} {r}");
                assert!((acc[r] as f64 - want[r]).abs() < tol, "axpy {isa:?} {r}");
            }
        }
    }
}

#[test]
fn q8_rounding_is_ties_to_even() {
    // Every quarter step over the range (ties at x.5 included), plus values near 127.
    for i in -510..=510 {
        for v in [i as f32 * 0.25, i as f32 * 0.249_9, 127.000_01, -127.4] {
            let want = v.round_ties_even().clamp(-127.0, 127.0);
            assert_eq!(round_q8(v) as f32, want, "{v}");
        }
    }
}

#[test]
fn format_names_round_trip() {
    for f in WeightFormat::ALL {
        assert_eq!(f.name().parse::<WeightFormat>().unwrap(), f);
    }
    assert!("q4".parse::<WeightFormat>().is_err());
}

/// Not a test: single-thread throughput of each format's matvec kernel on GPT-2's shapes
/// (weight bytes streamed per second), for the decode-speed notes.
/// `cargo test --release --lib kernel_throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn kernel_throughput() {
    let isa = crate::ops::cpu::Isa::detect();
    for &(rows, cols) in &[(2304, 768), (3072, 768), (768, 3072), (50257, 768)] {
        let w = data(rows * cols, 1);
        let x = data(cols, 2);
        for format in WeightFormat::ALL {
            let (m, _) = QMat::encode(&w, rows, cols, false, format);
            let mut xq = ActQ8::default();
            if m.act8() {
                xq.quantize(&x);
            }
            let mut y = vec![0f32; rows];
            let mut best = f64::MAX;
            for _ in 0..7 {
                let t = std::time::Instant::now();
                m.rows_range_q(&mut y, 0, &x, &xq, isa);
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{rows:>6} x {cols:<5} {:<5} {:>8.1} us  {:>5.1} GB/s",
                format.name(),
                best * 1e6,
                m.bytes() as f64 / best / 1e9
            );
        }
    }
}
