//! The unigram-only parts of `arlm tokenizer`: training options, sampled encoding
//! (subword regularization) and the n-best lattice view.

use anyhow::{bail, Context};
use arlm::tokenizer::unigram::{self, UnigramTokenizer};
use arlm::tokenizer::Tokenizer;
use rand::SeedableRng;
use std::fmt::Write as _;

/// The concrete unigram tokenizer behind `tok` (`--sample` and `--show-lattice` need its
/// lattice), or an error naming the flag when `tok` is another kind.
pub fn as_unigram(tok: &dyn Tokenizer, flag: &str) -> anyhow::Result<UnigramTokenizer> {
    if tok.kind() != "unigram" {
        bail!(
            "{flag} needs a unigram tokenizer; this one is {}",
            tok.kind()
        );
    }
    unigram::hf::from_hf_json(&tok.to_hf_json())?.context("a unigram tokenizer's own JSON")
}

/// Trains `arlm tokenizer train --kind unigram`.
pub fn train(
    texts: &[&str],
    vocab_size: Option<usize>,
    max_piece_length: usize,
    special: &[String],
) -> anyhow::Result<UnigramTokenizer> {
    let Some(n) = vocab_size else {
        bail!("--kind unigram needs --vocab-size (for example 8000)");
    };
    let mut opts = unigram::train::TrainOptions::new(n);
    opts.max_piece_length = max_piece_length;
    opts.special_tokens = special.to_vec();
    let t = unigram::train::train(texts, &opts)?;
    if t.vocab_size() < n {
        eprintln!(
            "note: the corpus ran out of pieces worth keeping: vocabulary {} < requested {n}",
            t.vocab_size()
        );
    }
    Ok(t)
}

/// Ids of `text` with every word's segmentation sampled at `alpha`, seeded.
pub fn encode_sampled(
    tok: &UnigramTokenizer,
    text: &str,
    alpha: f64,
    seed: u64,
) -> anyhow::Result<Vec<u32>> {
    if !(alpha.is_finite() && alpha >= 0.0) {
        bail!("--alpha must be a finite number >= 0, got {alpha}");
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    Ok(tok.encode_sampled(text, alpha, &mut rng)?)
}

/// The `n` best segmentations of every word of `text`, with log-probabilities.
pub fn show_lattice(tok: &UnigramTokenizer, text: &str, n: usize) -> String {
    let m = tok.model();
    let mut out = String::new();
    for word in tok.pretokenize(text) {
        let log_z = m.log_z(&word, 1.0);
        let _ = writeln!(
            out,
            "{word:?}: log Z = {log_z:.4} (log-sum over all segmentations)"
        );
        for (rank, seg) in m.nbest(&word, n).iter().enumerate() {
            let pieces: Vec<String> = seg
                .spans
                .iter()
                .map(|&(a, b, id)| match id {
                    Some(id) => m.pieces()[id as usize].clone(),
                    None => format!("<unk:{}>", &word[a..b]),
                })
                .collect();
            let _ = writeln!(
                out,
                "  {:>2}. log p(seg) {:>9.4}  log p(seg | word) {:>8.4}  {}",
                rank + 1,
                seg.score,
                seg.score - log_z,
                pieces.join(" | ")
            );
        }
    }
    out
}
