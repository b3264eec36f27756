//! Percentile bootstrap confidence intervals for corpus metrics.
//!
//! The resampling unit is a document when there are enough of them (documents are the
//! independent draws), else a fixed-size block of consecutive scored tokens. Each
//! resample draws as many units as there are, with replacement, from a ChaCha8 stream with
//! a fixed seed, and recomputes the ratio metrics from the resampled sums; the interval
//! is the 2.5th and 97.5th percentile. Same units + same seed = same interval.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Sums over one resampling unit (counts as f64: block counts may be fractional shares).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unit {
    pub nll: f64,
    pub tokens: f64,
    pub bytes: f64,
    pub words: f64,
}

/// A two-sided interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

/// 95% intervals of the headline metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intervals {
    /// Confidence level (0.95).
    pub level: f64,
    /// "documents" or "blocks of N tokens".
    pub unit: String,
    /// Number of units resampled.
    pub units: usize,
    pub resamples: usize,
    pub seed: u64,
    pub nll_per_token_nats: Interval,
    pub token_perplexity: Interval,
    pub bits_per_byte: Interval,
    pub byte_perplexity: Interval,
    pub word_perplexity: Interval,
}

/// Linear-interpolated quantile of sorted data.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Percentile bootstrap over `units` (see the module doc).
pub fn bootstrap(units: &[Unit], unit_name: &str, resamples: usize, seed: u64) -> Intervals {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = units.len();
    let reserve = resamples.min(1 << 16);
    let mut nats = Vec::with_capacity(reserve);
    let mut bpb = Vec::with_capacity(reserve);
    let mut wpl = Vec::with_capacity(reserve);
    if n > 0 {
        for _ in 0..resamples {
            let mut s = Unit::default();
            for _ in 0..n {
                let u = &units[rng.random_range(0..n)];
                s.nll += u.nll;
                s.tokens += u.tokens;
                s.bytes += u.bytes;
                s.words += u.words;
            }
            nats.push(s.nll / s.tokens);
            bpb.push(s.nll / std::f64::consts::LN_2 / s.bytes);
            wpl.push(s.nll / s.words);
        }
    }
    let ci = |v: &mut Vec<f64>| {
        v.retain(|x| !x.is_nan());
        v.sort_by(f64::total_cmp);
        Interval {
            lo: quantile(v, 0.025),
            hi: quantile(v, 0.975),
        }
    };
    let nats = ci(&mut nats);
    let bpb = ci(&mut bpb);
    let words = ci(&mut wpl);
    Intervals {
        level: 0.95,
        unit: unit_name.to_string(),
        units: n,
        resamples,
        seed,
        nll_per_token_nats: nats,
        token_perplexity: Interval {
            lo: nats.lo.exp(),
            hi: nats.hi.exp(),
        },
        bits_per_byte: bpb,
        byte_perplexity: Interval {
            lo: bpb.lo.exp2(),
            hi: bpb.hi.exp2(),
        },
        word_perplexity: Interval {
            lo: words.lo.exp(),
            hi: words.hi.exp(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_covers_the_estimate_and_is_reproducible() {
        let units: Vec<Unit> = (0..200)
            .map(|i| {
                let tokens = 10.0 + (i % 7) as f64;
                Unit {
                    nll: tokens * (3.0 + ((i * 37) % 11) as f64 / 10.0),
                    tokens,
                    bytes: tokens * 4.0,
                    words: tokens * 0.8,
                }
            })
            .collect();
        let a = bootstrap(&units, "documents", 500, 7);
        let b = bootstrap(&units, "documents", 500, 7);
        assert_eq!(a, b);
        let nll: f64 = units.iter().map(|u| u.nll).sum();
        let tok: f64 = units.iter().map(|u| u.tokens).sum();
        let est = nll / tok;
        assert!(a.nll_per_token_nats.lo < est && est < a.nll_per_token_nats.hi);
        // Roughly the normal-theory width: sd of per-unit means / sqrt(n), times 2*1.96.
        let width = a.nll_per_token_nats.hi - a.nll_per_token_nats.lo;
        assert!(width > 0.02 && width < 0.2, "width {width}");
        // Constant units: a zero-width interval at the value.
        let c = vec![
            Unit {
                nll: 2.0,
                tokens: 1.0,
                bytes: 2.0,
                words: 1.0
            };
            10
        ];
        let k = bootstrap(&c, "documents", 50, 1);
        assert!((k.token_perplexity.lo - 2f64.exp()).abs() < 1e-12);
        assert!((k.token_perplexity.hi - 2f64.exp()).abs() < 1e-12);
    }
}
