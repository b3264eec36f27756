//! Unigram training (Kudo 2018; the recipe of SentencePiece's `unigram_model_trainer` and
//! `tokenizers`' `UnigramTrainer`):
//!
//! 1. The texts are pre-tokenized (metaspace words) and counted.
//! 2. Seed vocabulary: every character, plus the most frequent substrings of the distinct
//!    words (at most `max_piece_length` characters, seen at least twice), ranked by
//!    occurrences × length, up to `seed_size`; scores are their log relative frequencies.
//!    The substrings are counted with a hash map over all substrings of the distinct words,
//!    not with a suffix array: pieces never cross a word, the words are short, and this
//!    is simpler; it also keeps non-maximal substrings that a suffix array's essential
//!    strings would drop (pruning removes them).
//! 3. EM: the E-step adds every piece's expected count over each word's lattice
//!    (forward-backward, weighted by the word's count); the M-step drops pieces with
//!    expected count < 0.5 and sets score = digamma(count) - digamma(total) (the
//!    variational-Bayes update SentencePiece uses, which favours dropping rare pieces).
//! 4. Pruning: after two EM steps, every piece whose own best segmentation is longer
//!    than itself is unused; for the others, the loss of removing it is the drop in the
//!    corpus log-likelihood when its Viterbi count moves to its second-best segmentation;
//!    the pieces with the smallest losses go, keeping max(75% of the pieces, 1.1 × target)
//!    and every single character. Repeat 3-4 until at most 1.1 × target remain.
//! 5. Keep the best-scoring pieces up to the target size (all characters included), after
//!    the special tokens.

use super::model::UnigramModel;
use super::{Metaspace, UnigramTokenizer};
use crate::tokenizer::bytes::EOT_TEXT;
use crate::tokenizer::TokenizerError;
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

/// The unknown token arlm's unigram tokenizers use (not `<unk>`: WikiText writes that as text).
pub const UNK_TEXT: &str = "<|unk|>";

/// Settings of [`train`].
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Target vocabulary size, special tokens included.
    pub vocab_size: usize,
    /// Longest piece, in characters.
    pub max_piece_length: usize,
    /// Special tokens after `<|unk|>` and `<|endoftext|>`.
    pub special_tokens: Vec<String>,
    /// Most seed pieces.
    pub seed_size: usize,
    /// Fraction of the pieces each pruning round keeps.
    pub shrinking_factor: f64,
    /// EM steps between pruning rounds.
    pub em_steps: usize,
}

impl TrainOptions {
    pub fn new(vocab_size: usize) -> TrainOptions {
        TrainOptions {
            vocab_size,
            max_piece_length: 16,
            special_tokens: Vec::new(),
            seed_size: 1_000_000,
            shrinking_factor: 0.75,
            em_steps: 2,
        }
    }
}

/// The digamma function ψ(x) (recurrence up to 7, then the asymptotic series).
pub fn digamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 7.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    x -= 0.5;
    let xx = 1.0 / x;
    let xx2 = xx * xx;
    let xx4 = xx2 * xx2;
    result + x.ln() + xx2 / 24.0 - 7.0 / 960.0 * xx4 + 31.0 / 8064.0 * xx4 * xx2
        - 127.0 / 30720.0 * xx4 * xx4
}

/// Trains a unigram tokenizer on `texts` (metaspace pre-tokenization, `▁`, prepend always).
pub fn train(texts: &[&str], opts: &TrainOptions) -> Result<UnigramTokenizer, TokenizerError> {
    let mut specials = vec![UNK_TEXT.to_string(), EOT_TEXT.to_string()];
    for s in &opts.special_tokens {
        if s.is_empty() || specials.contains(s) {
            return Err(TokenizerError::Invalid(format!(
                "special token {s:?} is empty or repeated"
            )));
        }
        specials.push(s.clone());
    }
    if opts.max_piece_length == 0 {
        return Err(TokenizerError::Invalid(
            "max piece length must be at least 1".into(),
        ));
    }
    let ms = Metaspace::default();
    let words = count_words(texts, ms);
    if words.is_empty() {
        return Err(TokenizerError::Invalid("the training text is empty".into()));
    }
    let chars = char_counts(&words);
    if opts.vocab_size < specials.len() + chars.len() {
        return Err(TokenizerError::Invalid(format!(
            "vocab size {} is below {} special tokens + {} distinct characters",
            opts.vocab_size,
            specials.len(),
            chars.len()
        )));
    }
    let target = opts.vocab_size - specials.len();
    let mut pieces = seed_pieces(&words, &chars, opts);
    let desired = target * 11 / 10;
    loop {
        for _ in 0..opts.em_steps {
            let model = UnigramModel::new(pieces.clone(), &[]);
            let expected = e_step(&model, &words);
            pieces = m_step(&pieces, &expected, &chars);
        }
        if pieces.len() <= desired {
            break;
        }
        let model = UnigramModel::new(pieces.clone(), &[]);
        let keep = desired.max((pieces.len() as f64 * opts.shrinking_factor) as usize);
        pieces = prune(&model, &words, keep);
    }
    let mut final_pieces = finalize(pieces, &chars, target);
    let n_special = specials.len();
    let mut all: Vec<(String, f64)> = specials.into_iter().map(|s| (s, 0.0)).collect();
    all.append(&mut final_pieces);
    let special: Vec<bool> = (0..all.len()).map(|i| i < n_special).collect();
    UnigramTokenizer::new(all, special, Some(0), false, Some(ms), 1)
}

/// Distinct pre-tokenized words with their counts, sorted by word.
fn count_words(texts: &[&str], ms: Metaspace) -> Vec<(String, f64)> {
    let tok = UnigramTokenizer::new(
        vec![(EOT_TEXT.to_string(), 0.0)],
        vec![true],
        None,
        false,
        Some(ms),
        0,
    )
    .expect("a one-token tokenizer is valid");
    let mut counts: FxHashMap<String, u64> = FxHashMap::default();
    for t in texts {
        for w in tok.pretokenize(t) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    let mut v: Vec<(String, f64)> = counts.into_iter().map(|(w, c)| (w, c as f64)).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every character with its count over the corpus.
fn char_counts(words: &[(String, f64)]) -> Vec<(char, f64)> {
    let mut m: FxHashMap<char, f64> = FxHashMap::default();
    for (w, c) in words {
        for ch in w.chars() {
            *m.entry(ch).or_insert(0.0) += c;
        }
    }
    let mut v: Vec<(char, f64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// Characters, then substrings ranked by (occurrences in distinct words) × length;
/// scores are log relative frequencies.
fn seed_pieces(
    words: &[(String, f64)],
    chars: &[(char, f64)],
    opts: &TrainOptions,
) -> Vec<(String, f64)> {
    let mut subs: FxHashMap<&str, u64> = FxHashMap::default();
    for (w, _) in words {
        let bounds: Vec<usize> = w
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(w.len()))
            .collect();
        for a in 0..bounds.len() {
            let last = (a + opts.max_piece_length).min(bounds.len() - 1);
            for b in a + 2..=last {
                *subs.entry(&w[bounds[a]..bounds[b]]).or_insert(0) += 1;
            }
        }
    }
    let mut ranked: Vec<(u64, &str)> = subs
        .into_iter()
        .filter(|&(_, c)| c >= 2)
        .map(|(s, c)| (c * s.chars().count() as u64, s))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut seeds: Vec<(String, f64)> = chars.iter().map(|(c, n)| (c.to_string(), *n)).collect();
    let room = opts.seed_size.saturating_sub(seeds.len());
    seeds.extend(
        ranked
            .into_iter()
            .take(room)
            .map(|(n, s)| (s.to_string(), n as f64)),
    );
    let log_total = seeds.iter().map(|p| p.1).sum::<f64>().ln();
    for p in &mut seeds {
        p.1 = p.1.ln() - log_total;
    }
    seeds
}

/// Expected piece counts over all words' lattices (weighted by word counts).
fn e_step(model: &UnigramModel, words: &[(String, f64)]) -> Vec<f64> {
    words
        .par_chunks(2048)
        .map(|chunk| {
            let mut counts = vec![0.0; model.len()];
            for (w, c) in chunk {
                model.expected_counts(w, *c, &mut counts);
            }
            counts
        })
        .reduce(
            || vec![0.0; model.len()],
            |mut a, b| {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
                a
            },
        )
}

/// Drops pieces with expected count < 0.5 (never a single character) and rescores the
/// rest by digamma(count) - digamma(total).
fn m_step(pieces: &[(String, f64)], expected: &[f64], chars: &[(char, f64)]) -> Vec<(String, f64)> {
    let char_set: FxHashSet<String> = chars.iter().map(|c| c.0.to_string()).collect();
    let kept: Vec<(String, f64)> = pieces
        .iter()
        .zip(expected)
        .filter(|((p, _), &c)| c >= 0.5 || char_set.contains(p))
        .map(|((p, _), &c)| (p.clone(), c.max(1e-3)))
        .collect();
    let total: f64 = kept.iter().map(|p| p.1).sum();
    let log_total = digamma(total);
    kept.into_iter()
        .map(|(p, c)| (p, digamma(c) - log_total))
        .collect()
}

/// Keeps the `keep` pieces whose removal costs the corpus likelihood the most (pieces
/// without an alternative segmentation, single characters among them, always stay).
fn prune(model: &UnigramModel, words: &[(String, f64)], keep: usize) -> Vec<(String, f64)> {
    let pieces = model.pieces();
    let n = pieces.len();
    // How each piece would be segmented without itself: its second-best segmentation.
    let mut always_keep = vec![true; n];
    let mut alternatives: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (id, p) in pieces.iter().enumerate() {
        let best = model.nbest(p, 2);
        if best.len() >= 2 {
            if best[0].spans.len() >= 2 {
                always_keep[id] = false;
            } else {
                alternatives[id] = best[1].spans.iter().filter_map(|s| s.2).collect();
            }
        }
    }
    // Viterbi counts, and which words use each piece.
    let segs: Vec<Vec<u32>> = words
        .par_iter()
        .map(|(w, _)| model.viterbi(w).iter().filter_map(|s| s.2).collect())
        .collect();
    let mut freq = vec![0.0f64; n];
    let mut inverted: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut vsum = 0.0;
    for (i, seg) in segs.iter().enumerate() {
        let c = words[i].1;
        vsum += c;
        for &id in seg {
            freq[id as usize] += c;
            inverted[id as usize].push(i);
        }
    }
    let sum: f64 = freq.iter().sum();
    let logsum = sum.ln();
    let mut kept: Vec<usize> = Vec::new();
    let mut candidates: Vec<(usize, f64)> = Vec::new();
    for id in 0..n {
        if freq[id] == 0.0 && !always_keep[id] {
            continue;
        }
        if alternatives[id].is_empty() {
            kept.push(id);
            continue;
        }
        let f: f64 = inverted[id].iter().map(|&i| words[i].1).sum::<f64>() / vsum;
        let logprob_sp = freq[id].ln() - logsum;
        let alts = &alternatives[id];
        let logsum_alt = (sum + freq[id] * (alts.len() as f64 - 1.0)).ln();
        let logprob_alt: f64 = alts
            .iter()
            .map(|&a| (freq[a as usize] + freq[id]).ln() - logsum_alt)
            .sum();
        candidates.push((id, f * (logprob_sp - logprob_alt)));
    }
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (id, _) in candidates {
        if kept.len() >= keep {
            break;
        }
        kept.push(id);
    }
    kept.sort_unstable();
    kept.into_iter()
        .map(|id| (pieces[id].clone(), model.scores()[id]))
        .collect()
}

/// Every character, then the best-scoring other pieces up to `target`; sorted by score.
fn finalize(
    pieces: Vec<(String, f64)>,
    chars: &[(char, f64)],
    target: usize,
) -> Vec<(String, f64)> {
    let min_score = pieces.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let by_piece: FxHashMap<&str, f64> = pieces.iter().map(|(p, s)| (p.as_str(), *s)).collect();
    let mut out: Vec<(String, f64)> = Vec::new();
    let mut inserted: FxHashSet<String> = FxHashSet::default();
    let mut penalty = 0.0;
    for (c, _) in chars {
        let s = c.to_string();
        let score = by_piece.get(s.as_str()).copied().unwrap_or_else(|| {
            penalty += 1e-4;
            min_score - penalty
        });
        inserted.insert(s.clone());
        out.push((s, score));
    }
    let mut rest: Vec<&(String, f64)> =
        pieces.iter().filter(|p| !inserted.contains(&p.0)).collect();
    rest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let room = target.saturating_sub(out.len());
    out.extend(rest.into_iter().take(room).cloned());
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    #[test]
    fn digamma_matches_known_values() {
        // ψ(1) = -γ, ψ(0.5) = -γ - 2 ln 2, ψ(x+1) = ψ(x) + 1/x.
        let gamma = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + gamma).abs() < 1e-10);
        assert!((digamma(0.5) + gamma + 2.0 * 2f64.ln()).abs() < 1e-10);
        assert!((digamma(20.5) - digamma(19.5) - 1.0 / 19.5).abs() < 1e-12);
    }

    #[test]
    fn trains_to_the_target_size_with_every_character() {
        let text = "the cat sat on the mat. the dog sat on the log. a cat and a dog.\n".repeat(20)
            + "zebra quokka";
        let mut opts = TrainOptions::new(60);
        opts.special_tokens = vec!["<pad>".into()];
        let t = train(&[&text], &opts).unwrap();
        // A small corpus can run out of pieces worth keeping (expected count >= 0.5).
        assert!(
            t.vocab_size() <= 60 && t.vocab_size() > 30,
            "{}",
            t.vocab_size()
        );
        let pieces = t.model().pieces();
        assert_eq!(&pieces[..3], &["<|unk|>", "<|endoftext|>", "<pad>"]);
        for c in text.chars().filter(|&c| c != ' ') {
            assert!(pieces.contains(&c.to_string()), "{c:?} kept");
        }
        let multi = pieces.iter().filter(|p| p.chars().count() >= 3).count();
        assert!(multi >= 3, "frequent substrings become pieces: {pieces:?}");
        let ids = t.encode(&text).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text);
        assert!(
            ids.len() * 3 < text.chars().count() * 2,
            "{} ids",
            ids.len()
        );
        let back = crate::tokenizer::from_hf_json(&t.to_hf_json()).unwrap();
        assert_eq!(back.fingerprint(), t.fingerprint());
        assert_eq!(back.encode(&text).unwrap(), ids);
        assert!(train(&[&text], &TrainOptions::new(10)).is_err());
    }
}
