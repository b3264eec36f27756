//! The global gradient norm that clipping needs: a sum of squares in f64 over fixed
//! chunks, run in parallel and added in chunk order, so its bits do not depend on the
//! thread count.

use rayon::prelude::*;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 16;

/// Σ x_i² in f64 (deterministic: fixed chunks, partial sums added in order).
pub fn sum_of_squares(x: &[f32]) -> f64 {
    x.par_chunks(CHUNK)
        .map(|c| c.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>())
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sum_of_squares_matches_a_serial_f64_sum_and_ignores_threads() {
        let x: Vec<f32> = (0..200_001)
            .map(|i| ((i % 97) as f32 - 48.0) * 0.013)
            .collect();
        let serial: f64 = x.iter().map(|&g| (g as f64) * (g as f64)).sum();
        let got = super::sum_of_squares(&x);
        assert!((got - serial).abs() <= 1e-12 * serial, "{got} vs {serial}");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| super::sum_of_squares(&x)), got);
    }
}
