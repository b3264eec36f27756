//! The numbers a score turns into, from one set of totals.
//!
//! Everything is derived from four sums: the total negative log-likelihood in nats of the
//! scored tokens, the number of scored tokens, and the bytes and whitespace-separated words
//! of the text those tokens cover. Per-word and per-byte figures divide the *same* total NLL
//! by a different count (never a per-token average re-scaled), which is what makes them
//! comparable across tokenizers.

use serde::Serialize;

/// Sums over a scored text or corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Sum of -log p(x_t | x_<t) over scored tokens, in nats.
    pub nll: f64,
    /// Number of scored tokens.
    pub tokens: u64,
    /// UTF-8 bytes of the text the scored tokens stand for.
    pub bytes: u64,
    /// Whitespace-separated words in that text (the lm-eval convention).
    pub words: u64,
}

impl Totals {
    /// Adds another set of totals into this one.
    pub fn add(&mut self, other: &Totals) {
        self.nll += other.nll;
        self.tokens += other.tokens;
        self.bytes += other.bytes;
        self.words += other.words;
    }

    /// All derived metrics.
    pub fn metrics(&self) -> Metrics {
        Metrics::from_totals(self)
    }
}

/// Derived metrics; a count of zero makes the metrics that divide by it NaN.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Mean NLL per token, nats.
    pub nll_per_token_nats: f64,
    /// Mean NLL per token, bits.
    pub nll_per_token_bits: f64,
    /// exp(mean NLL per token in nats).
    pub token_perplexity: f64,
    /// Total NLL in bits divided by bytes.
    pub bits_per_byte: f64,
    /// 2^(bits per byte).
    pub byte_perplexity: f64,
    /// exp(total NLL in nats / words).
    pub word_perplexity: f64,
}

fn ratio(num: f64, den: u64) -> f64 {
    if den == 0 {
        f64::NAN
    } else {
        num / den as f64
    }
}

impl Metrics {
    /// Computes every metric from `t`.
    pub fn from_totals(t: &Totals) -> Metrics {
        let ln2 = std::f64::consts::LN_2;
        let nats = ratio(t.nll, t.tokens);
        let bpb = ratio(t.nll / ln2, t.bytes);
        Metrics {
            nll_per_token_nats: nats,
            nll_per_token_bits: nats / ln2,
            token_perplexity: nats.exp(),
            bits_per_byte: bpb,
            byte_perplexity: bpb.exp2(),
            word_perplexity: ratio(t.nll, t.words).exp(),
        }
    }
}

/// Whitespace-separated words of `text` (lm-eval's word count).
pub fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_hold() {
        let t = Totals {
            nll: 1234.5,
            tokens: 400,
            bytes: 1800,
            words: 310,
        };
        let m = t.metrics();
        let ln2 = std::f64::consts::LN_2;
        assert!((m.nll_per_token_bits - m.nll_per_token_nats / ln2).abs() < 1e-12);
        assert!((m.token_perplexity - (1234.5f64 / 400.0).exp()).abs() < 1e-9);
        assert!((m.byte_perplexity - 2f64.powf(m.bits_per_byte)).abs() < 1e-12);
        // word perplexity divides the total NLL by words, not the per-token mean.
        assert!((m.word_perplexity.ln() * 310.0 - 1234.5).abs() < 1e-9);
        assert!((m.bits_per_byte * 1800.0 * ln2 - 1234.5).abs() < 1e-9);
        // byte perplexity^bytes == token perplexity^tokens == exp(total NLL).
        let lhs = m.byte_perplexity.ln() * 1800.0;
        let rhs = m.token_perplexity.ln() * 400.0;
        assert!((lhs - rhs).abs() < 1e-9);
        assert!(Totals::default().metrics().token_perplexity.is_nan());
    }

    #[test]
    fn words_are_whitespace_separated() {
        assert_eq!(count_words(" the  cat\tsat\n on "), 4);
        assert_eq!(count_words(""), 0);
    }
}
