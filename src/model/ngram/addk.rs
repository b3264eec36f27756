//! Add-k smoothed n-gram counts, any order: p(w | h) = (c(h w) + k) / (c(h) + k |V|).
//!
//! h is the last n-1 tokens, with sentence starts padded by n-1 start symbols (`<s>` for
//! the words tokenizer, a virtual id otherwise); |V| counts every id except the start
//! symbol (which is never predicted). k = 1 is Laplace smoothing. Counted in one pass
//! over a token stream ([`AddKCounter`]); stored as the order-n counts (`counts.bin`).

use super::{NgramError, Packer, MAX_ORDER};
use crate::model::{check_token, LanguageModel, ModelError};
use rustc_hash::FxHashMap;
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"ARLMADK1";

/// Counts n-grams for an add-k model.
pub struct AddKCounter {
    order: usize,
    packer: Packer,
    start: u32,
    grams: FxHashMap<u128, u32>,
}

impl AddKCounter {
    /// A counter for `order`-grams over ids below `n_ids`; `start` pads sentence starts.
    pub fn new(order: usize, n_ids: usize, start: u32) -> Result<AddKCounter, NgramError> {
        if order == 0 || order > MAX_ORDER {
            return Err(NgramError::Order {
                order,
                max: MAX_ORDER,
            });
        }
        Ok(AddKCounter {
            order,
            packer: Packer::new(n_ids, order)?,
            start,
            grams: FxHashMap::default(),
        })
    }

    /// Counts one sentence (ending with the end-of-sentence id).
    pub fn add_sentence(&mut self, sentence: &[u32]) {
        let p = self.packer;
        let n = self.order;
        let mut ctx = p.pack(&vec![self.start; n - 1]);
        for &w in sentence {
            let g = p.suffix((ctx << p.bits) | w as u128, n);
            *self.grams.entry(g).or_insert(0) += 1;
            ctx = p.suffix(g, n - 1);
        }
    }

    /// The model with smoothing constant `k`.
    pub fn finish(self, k: f64, vocab_size: usize, eot: u32) -> Result<AddK, NgramError> {
        AddK::from_counts(self.order, k, vocab_size, self.start, eot, self.grams)
    }
}

/// An add-k smoothed n-gram model.
pub struct AddK {
    order: usize,
    k: f64,
    vocab_size: usize,
    start: u32,
    eot: u32,
    packer: Packer,
    grams: FxHashMap<u128, u32>,
    contexts: FxHashMap<u128, u64>,
}

impl AddK {
    fn from_counts(
        order: usize,
        k: f64,
        vocab_size: usize,
        start: u32,
        eot: u32,
        grams: FxHashMap<u128, u32>,
    ) -> Result<AddK, NgramError> {
        if !(k > 0.0 && k.is_finite()) {
            return Err(NgramError::Invalid(format!(
                "add-k needs a positive finite k, got {k}"
            )));
        }
        if grams.is_empty() {
            return Err(NgramError::EmptyCorpus);
        }
        let n_ids = vocab_size.max(start as usize + 1);
        let packer = Packer::new(n_ids, order)?;
        let mut contexts: FxHashMap<u128, u64> = FxHashMap::default();
        for (&g, &c) in &grams {
            *contexts.entry(g >> packer.bits).or_insert(0) += c as u64;
        }
        Ok(AddK {
            order,
            k,
            vocab_size,
            start,
            eot,
            packer,
            grams,
            contexts,
        })
    }

    /// The n-gram order.
    pub fn order(&self) -> usize {
        self.order
    }

    /// The smoothing constant.
    pub fn k(&self) -> f64 {
        self.k
    }

    /// Number of distinct order-n n-grams seen.
    pub fn distinct_grams(&self) -> usize {
        self.grams.len()
    }

    fn predictable(&self) -> f64 {
        (self.vocab_size - usize::from((self.start as usize) < self.vocab_size)) as f64
    }

    fn start_ctx(&self) -> u128 {
        self.packer.pack(&vec![self.start; self.order - 1])
    }

    /// ln p(w | context key).
    fn logprob(&self, ctx: u128, w: u32) -> f32 {
        if w == self.start {
            return super::NEVER;
        }
        let g = (ctx << self.packer.bits) | w as u128;
        let c = self.grams.get(&g).copied().unwrap_or(0) as f64;
        let t = self.contexts.get(&ctx).copied().unwrap_or(0) as f64;
        ((c + self.k) / (t + self.k * self.predictable())).ln() as f32
    }

    fn advance(&self, ctx: u128, w: u32) -> u128 {
        if w == self.eot || w == self.start {
            self.start_ctx()
        } else {
            self.packer
                .suffix((ctx << self.packer.bits) | w as u128, self.order - 1)
        }
    }

    /// Writes the counts (`counts.bin`: magic, order, n_ids, entry count, then per entry
    /// the n ids and the count, all u32/u64 little-endian), atomically.
    pub fn save_counts(&self, path: &Path) -> Result<(), NgramError> {
        let io = |source| NgramError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = crate::atomic::AtomicFile::create(path).map_err(io)?;
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut file);
            w.write_all(MAGIC).map_err(io)?;
            w.write_all(&(self.order as u32).to_le_bytes())
                .map_err(io)?;
            w.write_all(&(self.vocab_size as u32).to_le_bytes())
                .map_err(io)?;
            w.write_all(&(self.grams.len() as u64).to_le_bytes())
                .map_err(io)?;
            let mut keys: Vec<(&u128, &u32)> = self.grams.iter().collect();
            keys.sort_unstable();
            for (&g, &c) in keys {
                for id in self.packer.unpack(g, self.order) {
                    w.write_all(&id.to_le_bytes()).map_err(io)?;
                }
                w.write_all(&c.to_le_bytes()).map_err(io)?;
            }
            w.flush().map_err(io)?;
        }
        file.commit().map_err(io)
    }

    /// Reads counts written by [`AddK::save_counts`].
    pub fn load_counts(
        path: &Path,
        k: f64,
        vocab_size: usize,
        start: u32,
        eot: u32,
    ) -> Result<AddK, NgramError> {
        let io = |source| NgramError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |m: String| NgramError::Invalid(format!("{}: {m}", path.display()));
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(io)?;
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(bad("not an arlm add-k counts file".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let order = u32_at(8) as usize;
        let v = u32_at(12) as usize;
        let n = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
        if v != vocab_size {
            return Err(bad(format!(
                "counts are over {v} ids but the tokenizer has {vocab_size}"
            )));
        }
        if order == 0 || order > MAX_ORDER {
            return Err(NgramError::Order {
                order,
                max: MAX_ORDER,
            });
        }
        let rec = 4 * (order + 1);
        if bytes.len() != 24 + n * rec {
            return Err(bad(format!("{n} entries do not match the file size")));
        }
        let n_ids = vocab_size.max(start as usize + 1);
        let packer = Packer::new(n_ids, order)?;
        let mut grams = FxHashMap::default();
        grams.reserve(n);
        let mut ids = vec![0u32; order];
        for r in bytes[24..].chunks_exact(rec) {
            for (i, id) in ids.iter_mut().enumerate() {
                *id = u32::from_le_bytes(r[4 * i..4 * i + 4].try_into().expect("4 bytes"));
                if *id as usize >= n_ids {
                    return Err(bad(format!("id {id} is outside the vocabulary")));
                }
            }
            let c = u32::from_le_bytes(r[4 * order..].try_into().expect("4 bytes"));
            grams.insert(packer.pack(&ids), c);
        }
        AddK::from_counts(order, k, vocab_size, start, eot, grams)
    }
}

impl LanguageModel for AddK {
    type State = u128;

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    fn max_context(&self) -> Option<usize> {
        None
    }

    fn bos_token(&self) -> u32 {
        self.eot
    }

    fn describe(&self) -> String {
        format!(
            "add-k n-gram, order {}, k={}, {} distinct {}-grams",
            self.order,
            self.k,
            self.grams.len(),
            self.order
        )
    }

    fn new_state(&self) -> u128 {
        self.start_ctx()
    }

    fn feed(&self, state: &mut u128, token: u32, logprobs: &mut [f32]) -> Result<(), ModelError> {
        check_token(token, self.vocab_size)?;
        *state = self.advance(*state, token);
        for (w, lp) in logprobs.iter_mut().enumerate() {
            *lp = self.logprob(*state, w as u32);
        }
        Ok(())
    }

    fn score_next(&self, input: &[u32]) -> Result<Vec<f32>, ModelError> {
        let (&first, rest) = input.split_first().ok_or(ModelError::EmptyInput)?;
        check_token(first, self.vocab_size)?;
        let mut ctx = self.advance(self.start_ctx(), first);
        let mut out = Vec::with_capacity(rest.len());
        for &w in rest {
            check_token(w, self.vocab_size)?;
            out.push(self.logprob(ctx, w));
            ctx = self.advance(ctx, w);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conformance::check_model;

    fn model(order: usize, k: f64) -> AddK {
        // Vocabulary of 6 with <s>=1, </s>=2 (the words tokenizer's layout).
        let mut c = AddKCounter::new(order, 6, 1).unwrap();
        for s in [&[3u32, 4, 5, 2][..], &[3, 3, 2], &[5, 2]] {
            c.add_sentence(s);
        }
        c.finish(k, 6, 2).unwrap()
    }

    #[test]
    fn conforms_and_matches_hand_counts() {
        for order in 1..=4 {
            let m = model(order, 0.5);
            check_model(&m, &[2, 3, 4, 5, 2, 3, 0, 2], 1e-5);
        }
        // Bigram, k = 1: after <s>, counts 3:2, 5:1 of 3 sentences; |V| = 5 (no <s>).
        let m = model(2, 1.0);
        let lp = m.score_next(&[2, 3, 0]).unwrap();
        assert!((lp[0] - (3.0f32 / 8.0).ln()).abs() < 1e-6);
        // After 3: 3 4, 3 3, 3 2 => c(3 0) = 0, c(3) = 3.
        assert!((lp[1] - (1.0f32 / 8.0).ln()).abs() < 1e-6);
    }

    #[test]
    fn counts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let m = model(3, 0.1);
        let p = dir.path().join("counts.bin");
        m.save_counts(&p).unwrap();
        let back = AddK::load_counts(&p, 0.1, 6, 1, 2).unwrap();
        let seq = [2, 3, 4, 5, 2, 5, 2];
        assert_eq!(m.score_next(&seq).unwrap(), back.score_next(&seq).unwrap());
        assert!(AddK::load_counts(&p, 0.1, 7, 1, 2).is_err());
    }
}
