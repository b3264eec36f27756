//! Detailed scoring of one text: every token's log-prob, rank, entropy and alternatives.

use super::metrics::{count_words, Metrics, Totals};
use super::window::WindowSpec;
use super::EvalError;
use crate::model::LanguageModel;
use crate::tokenizer::Tokenizer;
use serde::Serialize;

/// A competing token at one position.
#[derive(Debug, Clone, Serialize)]
pub struct Alternative {
    pub id: u32,
    pub piece: String,
    /// log p(alternative | prefix), nats.
    pub logprob: f64,
}

/// One scored token.
#[derive(Debug, Clone, Serialize)]
pub struct TokenScore {
    /// Position among the scored tokens (0-based; context tokens are not counted).
    pub position: usize,
    pub id: u32,
    /// The token's text (lossy UTF-8: a piece holding part of a character shows U+FFFD).
    pub piece: String,
    /// log p(x_t | x_<t), nats.
    pub logprob: f64,
    /// 1 + number of tokens strictly more probable than this one.
    pub rank: usize,
    /// Entropy of the distribution this token was drawn from, nats.
    pub entropy: f64,
    /// Running sum of `logprob` up to and including this token (the chain rule at work).
    pub cumulative_logprob: f64,
    /// The `top_k` most probable tokens at this position, most probable first.
    pub top: Vec<Alternative>,
}

/// A scored text: its tokens and totals.
#[derive(Debug, Clone, Serialize)]
pub struct TextScore {
    /// The conditioning context, if any (its tokens are not scored).
    pub context: Option<String>,
    pub text: String,
    /// Number of context tokens (conditioning only).
    pub context_tokens: usize,
    pub tokens: Vec<TokenScore>,
    /// log p(text | BOS, context) = the sum of the per-token log-probs, nats.
    pub joint_logprob: f64,
    /// Totals (NLL, tokens, bytes, words) of the scored text.
    pub totals: Totals,
    /// Metrics derived from the totals.
    pub metrics: Metrics,
}

/// Raw per-token values from [`score_ids`].
#[derive(Debug, Clone)]
pub struct IdScore {
    pub id: u32,
    pub logprob: f64,
    pub rank: usize,
    pub entropy: f64,
    /// (id, log-prob) of the top-k tokens, most probable first (ties: lower id first).
    pub top: Vec<(u32, f64)>,
}

/// Scores `ids` after `[BOS] + context`, window by window, with full distributions.
///
/// Only the positions of `ids` are returned; context positions are conditioning.
pub fn score_ids<M: LanguageModel>(
    model: &M,
    context: &[u32],
    ids: &[u32],
    spec: &WindowSpec,
    top_k: usize,
) -> Result<Vec<IdScore>, EvalError> {
    let v = model.vocab_size();
    let mut seq = Vec::with_capacity(1 + context.len() + ids.len());
    seq.push(model.bos_token());
    seq.extend_from_slice(context);
    seq.extend_from_slice(ids);
    let first_counted = 1 + context.len();
    let mut out = Vec::with_capacity(ids.len());
    for w in spec.plan(seq.len()) {
        if w.end <= first_counted {
            continue;
        }
        let rows = model.distributions(&seq[w.start..w.end - 1])?;
        for t in w.first_target.max(first_counted)..w.end {
            let row = &rows[(t - w.start - 1) * v..(t - w.start) * v];
            let target = seq[t] as usize;
            super::check_finite(&row[target..=target], &seq[t..=t], t - first_counted)?;
            crate::model::check_logprob_row(row, t)?;
            out.push(describe_position(row, seq[t], top_k));
        }
    }
    Ok(out)
}

/// Log-prob, rank, entropy and top-k of `target` under the log-prob row `row`.
pub fn describe_position(row: &[f32], target: u32, top_k: usize) -> IdScore {
    let lp = row[target as usize];
    let rank = 1 + row.iter().filter(|&&x| x > lp).count();
    let entropy = (-row
        .iter()
        .map(|&x| {
            let x = x as f64;
            if x == f64::NEG_INFINITY {
                0.0
            } else {
                x.exp() * x
            }
        })
        .sum::<f64>())
    .max(0.0);
    let mut top: Vec<(u32, f64)> = Vec::with_capacity(top_k + 1);
    if top_k > 0 {
        for (i, &x) in row.iter().enumerate() {
            let x = x as f64;
            if top.len() == top_k && x <= top[top_k - 1].1 {
                continue;
            }
            let pos = top.partition_point(|&(_, y)| y >= x);
            top.insert(pos, (i as u32, x));
            top.truncate(top_k);
        }
    }
    IdScore {
        id: target,
        logprob: lp as f64,
        rank,
        entropy,
        top,
    }
}

/// Lossy text of one token, for display.
pub fn piece(tok: &dyn Tokenizer, id: u32) -> String {
    match tok.token_bytes(id) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => format!("<{id}>"),
    }
}

/// Scores `text` (conditioned on `context` when given) with `model` and `tok`.
///
/// Context and text are tokenized separately, so the text's tokens are exactly those of
/// the text alone; the bytes and words are the text's.
pub fn score_text<M: LanguageModel>(
    model: &M,
    tok: &dyn Tokenizer,
    context: Option<&str>,
    text: &str,
    spec: &WindowSpec,
    top_k: usize,
) -> Result<TextScore, EvalError> {
    let ctx_ids = match context {
        Some(c) => tok.encode(c)?,
        None => Vec::new(),
    };
    let ids = tok.encode(text)?;
    let raw = score_ids(model, &ctx_ids, &ids, spec, top_k)?;
    let tokens = token_scores(tok, raw);
    let joint: f64 = tokens.iter().map(|t| t.logprob).sum();
    let totals = Totals {
        nll: -joint,
        tokens: tokens.len() as u64,
        bytes: text.len() as u64,
        words: count_words(text),
    };
    Ok(TextScore {
        context: context.map(str::to_string),
        text: text.to_string(),
        context_tokens: ctx_ids.len(),
        tokens,
        joint_logprob: joint,
        totals,
        metrics: totals.metrics(),
    })
}

/// Per-token detail from raw id scores: pieces, alternatives and the running sum of
/// log-probs (the chain rule's partial sums).
pub fn token_scores(tok: &dyn Tokenizer, raw: Vec<IdScore>) -> Vec<TokenScore> {
    let mut running = 0f64;
    raw.into_iter()
        .enumerate()
        .map(|(position, r)| {
            running += r.logprob;
            TokenScore {
                position,
                id: r.id,
                piece: piece(tok, r.id),
                logprob: r.logprob,
                rank: r.rank,
                entropy: r.entropy,
                cumulative_logprob: running,
                top: r
                    .top
                    .iter()
                    .map(|&(id, logprob)| Alternative {
                        id,
                        piece: piece(tok, id),
                        logprob,
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_models::Toy;
    use super::*;
    use crate::model::uniform::Uniform;
    use crate::tokenizer::bytes::ByteTokenizer;

    /// All sequences of length `len` over `v` symbols.
    fn all_sequences(v: u32, len: usize) -> Vec<Vec<u32>> {
        let mut out = vec![vec![]];
        for _ in 0..len {
            out = out
                .into_iter()
                .flat_map(|s| {
                    (0..v).map(move |x| {
                        let mut s = s.clone();
                        s.push(x);
                        s
                    })
                })
                .collect();
        }
        out
    }

    #[test]
    fn brute_force_joint_probabilities_sum_to_one() {
        // Unbounded context, a window smaller than the sequence, and a context prefix:
        // each way, the joint distribution over all sequences of a fixed length must sum
        // to 1 (a dropped or doubled position makes it V^k or less than 1).
        for (window, stride) in [(None, None), (Some(3), Some(1)), (Some(3), Some(2))] {
            for ctx in [vec![], vec![2u32]] {
                let m = Toy {
                    vocab: 4,
                    max_context: Some(8),
                };
                let spec = WindowSpec::new(window, stride, m.max_context).unwrap();
                for len in 1..=5 {
                    let total: f64 = all_sequences(4, len)
                        .iter()
                        .map(|s| {
                            let r = score_ids(&m, &ctx, s, &spec, 0).unwrap();
                            assert_eq!(r.len(), len);
                            r.iter().map(|x| x.logprob).sum::<f64>().exp()
                        })
                        .sum();
                    assert!(
                        (total - 1.0).abs() < 1e-6,
                        "window {window:?} stride {stride:?} ctx {ctx:?} len {len}: {total}"
                    );
                }
            }
        }
    }

    #[test]
    fn stride_one_window_equals_direct_scoring() {
        let m = Toy {
            vocab: 5,
            max_context: None,
        };
        let ids: Vec<u32> = (0..30).map(|i| (i * 7 % 5) as u32).collect();
        let w = 4;
        let spec = WindowSpec::new(Some(w), Some(1), None).unwrap();
        let got = score_ids(&m, &[], &ids, &spec, 0).unwrap();
        let mut seq = vec![m.bos_token()];
        seq.extend(&ids);
        for t in 1..seq.len() {
            let start = t.saturating_sub(w - 1);
            let direct = m.score_next(&seq[start..=t]).unwrap();
            let want = *direct.last().unwrap() as f64;
            assert!((got[t - 1].logprob - want).abs() < 1e-6, "target {t}");
        }
        // A text shorter than the window: identical to full-context scoring.
        let short = &ids[..2];
        let full = m.score_next(&seq[..3]).unwrap();
        let got = score_ids(&m, &[], short, &spec, 0).unwrap();
        for (a, b) in got.iter().zip(&full) {
            assert_eq!(a.logprob, *b as f64);
        }
    }

    #[test]
    fn ranks_entropy_and_top_k() {
        let m = Toy {
            vocab: 6,
            max_context: None,
        };
        let spec = WindowSpec::new(None, None, None).unwrap();
        let r = score_ids(&m, &[1], &[3, 0, 2], &spec, 3).unwrap();
        let rows = m.distributions(&[5, 1, 3, 0]).unwrap();
        for (i, s) in r.iter().enumerate() {
            let row = &rows[(i + 1) * 6..(i + 2) * 6];
            let mut sorted: Vec<f32> = row.to_vec();
            sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
            assert_eq!(s.top.len(), 3);
            for (k, &(id, lp)) in s.top.iter().enumerate() {
                assert_eq!(lp, sorted[k] as f64);
                assert_eq!(row[id as usize] as f64, lp);
            }
            assert_eq!(sorted[s.rank - 1] as f64, s.logprob);
            let h: f64 = row.iter().map(|&x| -(x as f64).exp() * x as f64).sum();
            assert!((h - s.entropy).abs() < 1e-9);
        }
    }

    #[test]
    fn joint_is_sum_of_tokens_and_uniform_is_exact() {
        let m = Uniform::new(257, 256).unwrap();
        let spec = WindowSpec::new(Some(4), Some(2), None).unwrap();
        let s = score_text(&m, &ByteTokenizer, Some("ab"), "héllo", &spec, 2).unwrap();
        assert_eq!(s.tokens.len(), 6);
        assert_eq!(s.context_tokens, 2);
        assert_eq!(s.totals.bytes, 6);
        let sum: f64 = s.tokens.iter().map(|t| t.logprob).sum();
        assert_eq!(s.joint_logprob, sum);
        assert_eq!(s.tokens.last().unwrap().cumulative_logprob, sum);
        assert!((s.metrics.token_perplexity - 257.0).abs() < 1e-3);
        assert_eq!(s.tokens[0].rank, 1);
        assert!((s.tokens[0].entropy - (257f64).ln()).abs() < 1e-4);
    }
}
