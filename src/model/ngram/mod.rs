//! n-gram models: the Markov assumption on the chain rule, p(x_t | x_<t) = p(x_t | last n-1).
//!
//! - [`addk`]: add-k smoothed counts of any order (the foundation baseline).
//! - [`kneser_ney`]: interpolated modified Kneser-Ney estimated in one pass over the corpus,
//!   following KenLM's `lmplz` to the digit (see that module for the conventions and quirk).
//! - [`arpa`]: ARPA read/write (plain or gzip), so models move between arlm, KenLM and SRILM.
//! - [`backoff`]: the query structure every Kneser-Ney / ARPA model is scored with (standard
//!   backoff, hashed n-grams), and its [`crate::model::LanguageModel`] implementation.
//! - [`binary`]: the binary model file (`model.bin`), the query tables as they lie in
//!   memory, mapped at load (milliseconds at any size).
//! - [`streamed`]: the same estimation within a memory budget (`--memory`), its n-gram
//!   streams sorted on disk by [`extsort`] when they do not fit, writing the same bytes.
//! - [`store`]: model directories (`config.json`, `tokenizer.json`, `model.bin` and
//!   `model.arpa`, or `counts.bin`) and the `--data` / `--input` corpus readers used by
//!   `arlm ngram fit`.
//!
//! # Sentences and the start symbol
//! A corpus is a stream of sentences, each ending with the tokenizer's end-of-text token
//! (`</s>` for the words tokenizer, one per line). Every sentence is conditioned on a
//! start symbol: `<s>` (id 1) for the words tokenizer, and for other tokenizers a virtual
//! id equal to the vocabulary size (it is never predicted, and never appears in a
//! distribution). In the [`crate::model::LanguageModel`] implementations, feeding the
//! end-of-text token (the model's `bos_token`) resets the context to the start symbol, so
//! the first token of every line is conditioned on `<s>`, exactly as KenLM scores it.

pub mod addk;
pub mod arpa;
pub mod backoff;
pub mod binary;
pub mod extsort;
pub mod kneser_ney;
mod layout;
pub mod store;
pub mod streamed;

use std::path::PathBuf;

/// The log-probability given to the start symbol `<s>`, which is never predicted: finite
/// (so sums, temperatures and differences stay NaN-free) but exp() of it is exactly 0.
pub const NEVER: f32 = -1.0e30;

/// Largest supported n-gram order (the query state is a fixed-size array).
pub const MAX_ORDER: usize = 12;

/// Errors from estimating, reading or writing n-gram models.
#[derive(Debug, thiserror::Error)]
pub enum NgramError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Arpa {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Binary { path: PathBuf, message: String },
    #[error("order {order} is not supported (1..={max})")]
    Order { order: usize, max: usize },
    #[error(
        "order {order} with a vocabulary of {vocab} ids does not fit 128-bit n-gram keys \
         ({bits} bits per id); use a lower order"
    )]
    KeyTooWide {
        order: usize,
        vocab: usize,
        bits: u32,
    },
    #[error(
        "cannot estimate the Kneser-Ney discount D{k} for order {order}: {reason} \
         (count-of-counts n1..n4 = {counts:?}); too little data? \
         Pass --discount-fallback to use fixed discounts (KenLM's: 0.5 1 1.5)"
    )]
    Discount {
        order: usize,
        k: usize,
        reason: String,
        counts: [u64; 4],
    },
    #[error("the training corpus is empty")]
    EmptyCorpus,
    /// A `--memory` budget that cannot work (the message names the flag).
    #[error("{0}")]
    Memory(String),
    #[error("{0}")]
    Invalid(String),
}

/// Packs up to `128 / bits` ids into one u128 key, first word in the highest bits, so a
/// key's context is `key >> bits` and its suffix (first word dropped) is `key & mask`.
#[derive(Debug, Clone, Copy)]
pub struct Packer {
    /// Bits per id.
    pub bits: u32,
}

impl Packer {
    /// A packer for ids below `n_ids`, checked to fit `order` ids into 128 bits.
    pub fn new(n_ids: usize, order: usize) -> Result<Packer, NgramError> {
        let bits = (usize::BITS - n_ids.saturating_sub(1).leading_zeros()).max(1);
        if bits as usize * order > 128 {
            return Err(NgramError::KeyTooWide {
                order,
                vocab: n_ids,
                bits,
            });
        }
        Ok(Packer { bits })
    }

    /// The key of `ids`.
    #[inline]
    pub fn pack(&self, ids: &[u32]) -> u128 {
        ids.iter()
            .fold(0u128, |k, &id| (k << self.bits) | id as u128)
    }

    /// The ids of a key of `n` words.
    pub fn unpack(&self, key: u128, n: usize) -> Vec<u32> {
        let m = (1u128 << self.bits) - 1;
        (0..n)
            .rev()
            .map(|i| ((key >> (i as u32 * self.bits)) & m) as u32)
            .collect()
    }

    /// The last `n` words of a key.
    #[inline]
    pub fn suffix(&self, key: u128, n: usize) -> u128 {
        let b = self.bits * n as u32;
        if b >= 128 {
            key
        } else {
            key & ((1u128 << b) - 1)
        }
    }

    /// The first word of a key of `n` words.
    #[inline]
    pub fn first(&self, key: u128, n: usize) -> u32 {
        (key >> (self.bits * (n as u32 - 1))) as u32
    }

    /// The last word of a key.
    #[inline]
    pub fn last(&self, key: u128) -> u32 {
        (key & ((1u128 << self.bits) - 1)) as u32
    }
}

/// Calls `f` on each sentence of a token stream (each slice ends with `eot`; a final
/// sentence without one gets it appended, as KenLM treats a last line without `\n`).
pub fn for_each_sentence(
    ids: impl Iterator<Item = u32>,
    eot: u32,
    mut f: impl FnMut(&[u32]) -> Result<(), NgramError>,
) -> Result<(), NgramError> {
    let mut buf = Vec::with_capacity(256);
    for id in ids {
        buf.push(id);
        if id == eot {
            f(&buf)?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        buf.push(eot);
        f(&buf)?;
    }
    Ok(())
}
