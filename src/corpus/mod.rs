//! The embedded default corpus: a seeded English-like source whose exact probability is
//! known, so every model trained on it can be compared with the best possible loss.
//!
//! [`synth`] compiles the grammar of [`lexicon`] into a probabilistic automaton over bytes,
//! samples text from it, and exposes its exact conditionals as a
//! [`crate::model::LanguageModel`] ([`synth::SynthSource`]). [`default_corpus`] is the text
//! every command uses when it gets no corpus; [`floor`] is the exact NLL of a text under
//! the source (the floor no model beats in expectation).

pub mod lexicon;
pub mod synth;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Seed of the default corpus ("arlm" in ASCII).
pub const DEFAULT_SEED: u64 = 0x6172_6c6d;
/// Size of the default corpus in bytes.
pub const DEFAULT_BYTES: usize = 1_000_000;

/// Errors from the corpus commands.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid corpus settings: {0}")]
    Invalid(String),
    #[error(transparent)]
    TooLarge(#[from] crate::memory::TooLarge),
}

/// The embedded default corpus: [`DEFAULT_BYTES`] bytes from [`DEFAULT_SEED`], generated
/// on first use (~15 ms in release) and cached for the life of the process.
pub fn default_corpus() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| synth::generate(DEFAULT_SEED, DEFAULT_BYTES))
}

/// The exact NLL of a text under the synthetic source (conditioned on BOS).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Floor {
    /// Number of bytes scored.
    pub bytes: usize,
    /// -log p(text | BOS) in nats.
    pub nll_nats: f64,
    /// The same per byte, in bits.
    pub bits_per_byte: f64,
    /// The source's exact entropy rate in bits per byte (the expectation of the above on
    /// long texts).
    pub entropy_rate_bits_per_byte: f64,
}

/// Computes the exact NLL of `text` under the synthetic source.
pub fn floor(text: &[u8]) -> Floor {
    let m = synth::SynthSource::new();
    let (nll, _) = m.nll(text);
    Floor {
        bytes: text.len(),
        nll_nats: nll,
        bits_per_byte: if text.is_empty() {
            0.0
        } else {
            nll / text.len() as f64 / std::f64::consts::LN_2
        },
        entropy_rate_bits_per_byte: m.entropy_rate_bits(),
    }
}

/// What `arlm corpus synth` records beside the text (meta.json).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SynthMeta {
    /// Always "arlm-synth".
    pub generator: String,
    /// Grammar version ([`synth::GRAMMAR_VERSION`]).
    pub grammar_version: u32,
    /// Sampler seed.
    pub seed: u64,
    /// The exact NLL of the text.
    #[serde(flatten)]
    pub floor: Floor,
    /// Automaton size, for the record.
    pub states: usize,
    /// Distinct words in the lexicon.
    pub words: usize,
}

/// Generates `n_bytes` of text from `seed`, with its exact floor.
pub fn synth_with_meta(seed: u64, n_bytes: usize) -> Result<(String, SynthMeta), CorpusError> {
    if n_bytes == 0 {
        return Err(CorpusError::Invalid("--bytes must be positive".into()));
    }
    // The text is built in memory (and then written): twice its size, to be safe.
    crate::memory::check_fits(format!("--bytes {n_bytes}"), 2 * n_bytes as u128)?;
    let text = if seed == DEFAULT_SEED && n_bytes == DEFAULT_BYTES {
        default_corpus().to_string()
    } else {
        synth::generate(seed, n_bytes)
    };
    let a = synth::automaton();
    let meta = SynthMeta {
        generator: "arlm-synth".into(),
        grammar_version: synth::GRAMMAR_VERSION,
        seed,
        floor: floor(text.as_bytes()),
        states: a.num_states(),
        words: a.num_words(),
    };
    Ok((text, meta))
}

/// Writes a model directory for the synthetic source (config.json with model_type
/// "arlm-synth", tokenizer.json of the bytes tokenizer), loadable by
/// [`crate::load::load`].
pub fn save_model_dir(dir: &Path, meta: Option<&SynthMeta>) -> Result<(), CorpusError> {
    let io = |source| CorpusError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let m = synth::SynthSource::new();
    let mut config = serde_json::json!({
        "model_type": "arlm-synth",
        "grammar_version": synth::GRAMMAR_VERSION,
        "vocab_size": synth::VOCAB,
        "entropy_rate_bits_per_byte": m.entropy_rate_bits(),
    });
    if let Some(meta) = meta {
        config["corpus_seed"] = serde_json::json!(meta.seed);
        config["corpus_bytes"] = serde_json::json!(meta.floor.bytes);
    }
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    crate::atomic::write_atomic(dir.join("config.json"), text.as_bytes()).map_err(io)?;
    crate::tokenizer::save_in_model_dir(&crate::tokenizer::bytes::ByteTokenizer, dir, None).map_err(
        |e| CorpusError::Io {
            path: dir.join("tokenizer.json"),
            source: std::io::Error::other(crate::error_chain(&e)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_corpus_is_cached_and_deterministic() {
        let a = default_corpus();
        assert_eq!(a.len(), DEFAULT_BYTES);
        assert!(std::ptr::eq(a, default_corpus()));
        assert_eq!(&a[..2000], &synth::generate(DEFAULT_SEED, 2000)[..]);
    }

    #[test]
    fn floor_of_empty_and_small() {
        let f = floor(b"");
        assert_eq!(f.nll_nats, 0.0);
        let f = floor(synth::generate(1, 5000).as_bytes());
        assert!(f.bits_per_byte > 0.5 && f.bits_per_byte < 2.0);
    }
}
