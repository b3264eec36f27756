//! Document perplexity for data pipelines (CCNet-style filtering of web text): one number
//! per document, as fast as the model allows.
//!
//! A document's log10 probability is the chain-rule sum over its tokens, starting from the
//! model's BOS (conditioning only); for the words tokenizer every line is a sentence that
//! starts at `<s>` and whose `</s>` is scored, so the total over a document equals the
//! sum of KenLM's `model.score(line, bos=True, eos=True)` over its lines, and the token
//! count is words plus one `</s>` per line (CCNet's `len(line.split()) + 1`). A final
//! `\n` does not add an empty line. The perplexity is `10^(-log10 / tokens)`.
//!
//! Backoff (n-gram / ARPA) models are scored with their own query loop (no distributions,
//! no allocation beyond the token ids); other models through `score_next`, window by
//! window like [`super::score_ids`].

use super::{EvalError, WindowSpec};
use crate::load::AnyModel;
use crate::model::LanguageModel;
use crate::tokenizer::Tokenizer;

/// A document's total log10 probability and its number of scored tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DocScore {
    pub log10_prob: f64,
    pub tokens: u64,
}

impl DocScore {
    /// 10^(-log10 p / tokens); NaN for an empty document (nothing was scored).
    pub fn perplexity(&self) -> f64 {
        if self.tokens == 0 {
            f64::NAN
        } else {
            10f64.powf(-self.log10_prob / self.tokens as f64)
        }
    }
}

/// Scores one document.
pub fn doc_score(
    model: &AnyModel,
    tok: &dyn Tokenizer,
    spec: &WindowSpec,
    text: &str,
) -> Result<DocScore, EvalError> {
    let ids = tok.encode(text)?;
    if let AnyModel::Backoff(m) = model {
        for &id in &ids {
            crate::model::check_token(id, m.vocab_size())?;
        }
        return Ok(DocScore {
            log10_prob: m.total_log10(&ids),
            tokens: ids.len() as u64,
        });
    }
    let ln = crate::with_model!(model, m => windowed_ln(m, spec, &ids))?;
    Ok(DocScore {
        log10_prob: ln / std::f64::consts::LN_10,
        tokens: ids.len() as u64,
    })
}

/// Sum of ln p over `ids` after the model's BOS, window by window.
fn windowed_ln<M: LanguageModel>(
    model: &M,
    spec: &WindowSpec,
    ids: &[u32],
) -> Result<f64, EvalError> {
    let mut seq = Vec::with_capacity(ids.len() + 1);
    seq.push(model.bos_token());
    seq.extend_from_slice(ids);
    let mut total = 0f64;
    for w in spec.plan(seq.len()) {
        let lp = model.score_next(&seq[w.start..w.end])?;
        let kept = &lp[w.skip()..];
        super::check_finite(kept, &seq[w.first_target..w.end], w.first_target - 1)?;
        total += kept.iter().map(|&x| x as f64).sum::<f64>();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ngram::store;

    const ARPA: &str = "\\data\\\nngram 1=5\nngram 2=3\n\n\\1-grams:\n-1.0\t<unk>\t0\n-99\t<s>\t-0.5\n-0.3\t</s>\t0\n-0.6\ta\t-0.2\n-0.7\tb\t-0.1\n\n\\2-grams:\n-0.2\t<s> a\t0\n-0.1\ta </s>\t0\n-0.4\ta b\t0\n\n\\end\\\n";

    #[test]
    fn a_document_is_the_sum_of_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.arpa");
        std::fs::write(&p, ARPA).unwrap();
        let (m, tok) = store::load_arpa(&p).unwrap();
        let model = AnyModel::Backoff(m);
        let spec = WindowSpec::new(None, None, None).unwrap();
        let s = doc_score(&model, &tok, &spec, "a\na b\n").unwrap();
        // Line 1: p(a|<s>) + p(</s>|a) = -0.2 - 0.1; line 2: -0.2 + -0.4 + (b </s> absent:
        // backoff(b) -0.1 + p(</s>) -0.3).
        let want = -0.2 - 0.1 + (-0.2 - 0.4 + (-0.1 - 0.3));
        assert!((s.log10_prob - want).abs() < 1e-6, "{s:?}");
        assert_eq!(s.tokens, 5);
        let ppl = 10f64.powf(-s.log10_prob / 5.0);
        assert_eq!(s.perplexity(), ppl);
        assert!((ppl / 10f64.powf(-want / 5.0) - 1.0).abs() < 1e-6);
        // The generic path (score_next in natural log) agrees.
        let AnyModel::Backoff(m) = &model else {
            unreachable!()
        };
        let ln = windowed_ln(m, &spec, &tok.encode("a\na b\n").unwrap()).unwrap();
        assert!((ln / std::f64::consts::LN_10 - want).abs() < 1e-5);
        let empty = doc_score(&model, &tok, &spec, "").unwrap();
        assert_eq!(empty.tokens, 0);
        assert!(empty.perplexity().is_nan());
    }
}
