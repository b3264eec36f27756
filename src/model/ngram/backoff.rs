//! The query side of Kneser-Ney / ARPA models: standard backoff over hashed n-grams.
//!
//! log10 p(w | h) = log10 p(h_m w) + sum of log10 backoff(h_j) for the context suffixes h_j
//! longer than the longest matching context h_m, exactly KenLM's rule. The state carries,
//! like KenLM's, the last words (most recent first) and the backoff of each context suffix,
//! so a query is one probe per matched order plus a sum, with no allocation.
//!
//! # Representation
//! Unigrams are a dense array indexed by id. Each higher order is an open-addressing
//! table of 16-byte entries (64-bit hash of the n-gram, log10 p, log10 backoff), sized
//! to a load factor of at most 0.6, as KenLM's probing structure. Only the hash is stored
//! (as KenLM does): building fails on a hash collision between two stored n-grams, and a
//! query for an absent n-gram is misread as present with probability about
//! entries / 2^64 per probe. The hash of (x_1 .. x_n) is built from x_n backwards, so the
//! lookups for w, (c1 w), (c2 c1 w), ... extend one hash incrementally.
//!
//! # Performance notes
//! PTB trigram: 850 k entries, 21 MB of tables. See `arlm bench ngram` for query speed
//! against KenLM's probing model.

use super::kneser_ney::ArpaGrams;
use super::{NgramError, MAX_ORDER};
use crate::model::{check_token, LanguageModel, ModelError};

const LN10: f32 = std::f32::consts::LN_10;

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// Hash of a unigram (the start of the incremental hash).
#[inline]
fn hash1(w: u32) -> u64 {
    mix(w as u64 ^ 0x9e3779b97f4a7c15)
}

/// Extends the hash of (x_k .. x_n) to (x_{k-1} .. x_n).
#[inline]
fn extend(h: u64, w: u32) -> u64 {
    mix(h.rotate_left(21) ^ (w as u64).wrapping_mul(0x9e3779b97f4a7c15)) | 1
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Entry {
    key: u64,
    prob: f32,
    backoff: f32,
}

/// One order's open-addressing table (key 0 marks an empty slot; stored keys are odd).
struct Table {
    entries: Vec<Entry>,
    mask: usize,
}

impl Table {
    fn with_len(len: usize) -> Table {
        let size = ((len as f64 / 0.6) as usize + 2).next_power_of_two();
        Table {
            entries: vec![Entry::default(); size],
            mask: size - 1,
        }
    }

    fn insert(&mut self, key: u64, prob: f32, backoff: f32) -> bool {
        let mut i = (key >> 7) as usize & self.mask;
        loop {
            let e = &mut self.entries[i];
            if e.key == 0 {
                *e = Entry { key, prob, backoff };
                return true;
            }
            if e.key == key {
                return false;
            }
            i = (i + 1) & self.mask;
        }
    }

    #[inline]
    fn find(&self, key: u64) -> Option<&Entry> {
        let mut i = (key >> 7) as usize & self.mask;
        loop {
            // SAFETY-free: `i` is masked to the table's power-of-two length.
            let e = &self.entries[i];
            if e.key == key {
                return Some(e);
            }
            if e.key == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
    }
}

/// The context of a query: the last words (most recent first) that, together, form an
/// n-gram present in the model, and the log10 backoff of each such context suffix.
#[derive(Clone, Copy, Debug)]
pub struct BackoffState {
    len: u8,
    words: [u32; MAX_ORDER - 1],
    backoffs: [f32; MAX_ORDER - 1],
}

/// A backoff n-gram model ready for queries (from an ARPA file or Kneser-Ney estimation).
pub struct BackoffModel {
    order: usize,
    vocab_size: usize,
    start: u32,
    eot: u32,
    unk: u32,
    /// (log10 p, log10 backoff) per id below `n_ids`.
    unigrams: Vec<(f32, f32)>,
    tables: Vec<Table>,
    n_grams: Vec<usize>,
    describe: String,
}

impl BackoffModel {
    /// Builds the query tables. `vocab_size` ids are visible to callers; `start` (maybe
    /// `vocab_size` itself, a virtual id) conditions sentence starts; `eot` ends them;
    /// ids absent from the unigrams are scored as `unk` (or get log10 p = -100, KenLM's
    /// substitute, when `unk` is absent too).
    pub fn new(
        grams: &ArpaGrams,
        vocab_size: usize,
        start: u32,
        eot: u32,
        unk: u32,
        describe: String,
    ) -> Result<BackoffModel, NgramError> {
        let order = grams.order();
        if order == 0 || order > MAX_ORDER {
            return Err(NgramError::Order {
                order,
                max: MAX_ORDER,
            });
        }
        let n_ids = vocab_size.max(start as usize + 1);
        let p = grams.packer;
        let uni = &grams.orders[0];
        // Absent ids are None until they get `unk`'s entry: no in-band sentinel value
        // that a number read from a file could collide with.
        let mut present: Vec<Option<(f32, f32)>> = vec![None; n_ids];
        for (i, &k) in uni.keys.iter().enumerate() {
            let id = k as usize;
            if id >= n_ids {
                return Err(NgramError::Invalid(format!(
                    "unigram id {id} is outside the vocabulary of {n_ids}"
                )));
            }
            present[id] = Some((uni.probs[i], uni.backoffs[i]));
        }
        let unk_entry = match present.get(unk as usize) {
            Some(Some(e)) => (e.0, 0.0),
            _ => (-100.0, 0.0),
        };
        let unigrams: Vec<(f32, f32)> = present
            .into_iter()
            .map(|e| e.unwrap_or(unk_entry))
            .collect();
        let mut tables = Vec::with_capacity(order.saturating_sub(1));
        for (m, og) in grams.orders.iter().enumerate().skip(1) {
            let n = m + 1;
            let mut t = Table::with_len(og.keys.len());
            let mut ids = vec![0u32; n];
            for (i, &k) in og.keys.iter().enumerate() {
                let mut kk = k;
                for slot in ids.iter_mut().rev() {
                    *slot = (kk & ((1u128 << p.bits) - 1)) as u32;
                    kk >>= p.bits;
                }
                let h = hash_gram(&ids);
                if !t.insert(h, og.probs[i], og.backoffs[i]) {
                    return Err(NgramError::Invalid(format!(
                        "duplicate {n}-gram (or a 64-bit hash collision) at ids {ids:?}"
                    )));
                }
            }
            tables.push(t);
        }
        Ok(BackoffModel {
            order,
            vocab_size,
            start,
            eot,
            unk,
            unigrams,
            tables,
            n_grams: grams.orders.iter().map(|o| o.keys.len()).collect(),
            describe,
        })
    }

    /// The n-gram order.
    pub fn order(&self) -> usize {
        self.order
    }

    /// Number of n-grams per order.
    pub fn counts(&self) -> &[usize] {
        &self.n_grams
    }

    /// The id unseen words are scored as.
    pub fn unk(&self) -> u32 {
        self.unk
    }

    /// Bytes held by the query tables.
    pub fn memory_bytes(&self) -> usize {
        self.unigrams.len() * 8
            + self
                .tables
                .iter()
                .map(|t| t.entries.len() * std::mem::size_of::<Entry>())
                .sum::<usize>()
    }

    /// The state at the start of a sentence (context `<s>`).
    pub fn start_state(&self) -> BackoffState {
        let mut s = BackoffState {
            len: 0,
            words: [0; MAX_ORDER - 1],
            backoffs: [0.0; MAX_ORDER - 1],
        };
        if self.order > 1 {
            s.len = 1;
            s.words[0] = self.start;
            s.backoffs[0] = self.unigrams[self.start as usize].1;
        }
        s
    }

    /// log10 p(w | state) by standard backoff, and the state after `w` in `out`.
    #[inline]
    pub fn score_log10(&self, state: &BackoffState, w: u32, out: &mut BackoffState) -> f32 {
        let (mut prob, bo) = match self.unigrams.get(w as usize) {
            Some(&e) => e,
            None => self.unigrams[self.unk as usize],
        };
        let keep = self.order - 1;
        out.words[0] = w;
        out.backoffs[0] = bo;
        out.len = keep.min(1) as u8;
        let ctx = (state.len as usize).min(keep);
        let mut matched = 0; // context words used by the longest match
        let mut h = hash1(w);
        for i in 0..ctx {
            h = extend(h, state.words[i]);
            match self.tables[i].find(h) {
                Some(e) => {
                    prob = e.prob;
                    matched = i + 1;
                    if i + 1 < keep {
                        out.words[i + 1] = state.words[i];
                        out.backoffs[i + 1] = e.backoff;
                        out.len = (i + 2) as u8;
                    }
                }
                None => break,
            }
        }
        for &b in &state.backoffs[matched..ctx] {
            prob += b;
        }
        prob
    }

    /// Like [`BackoffModel::score_log10`], but a sentence end or start resets the state.
    #[inline]
    fn step(&self, state: &BackoffState, w: u32, out: &mut BackoffState) -> f32 {
        let lp = self.score_log10(state, w, out);
        if w == self.eot || w == self.start {
            *out = self.start_state();
        }
        lp
    }

    /// Sum of log10 p over `words` (each sentence ends with the end-of-text id), from the
    /// start of a sentence: what KenLM's `query` prints as the total.
    pub fn total_log10(&self, words: &[u32]) -> f64 {
        let mut s = self.start_state();
        let mut next = s;
        let mut total = 0f64;
        for &w in words {
            total += self.step(&s, w, &mut next) as f64;
            s = next;
        }
        total
    }

    fn fill_row(&self, state: &BackoffState, logprobs: &mut [f32]) {
        let mut scratch = *state;
        for (w, lp) in logprobs.iter_mut().enumerate() {
            *lp = if w as u32 == self.start {
                super::NEVER
            } else {
                self.score_log10(state, w as u32, &mut scratch) * LN10
            };
        }
    }
}

/// The table key of the n-gram `ids` (in text order).
fn hash_gram(ids: &[u32]) -> u64 {
    let (&last, rest) = ids.split_last().expect("n-grams are not empty");
    rest.iter().rev().fold(hash1(last), |h, &w| extend(h, w))
}

impl LanguageModel for BackoffModel {
    type State = BackoffState;

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
        self.describe.clone()
    }

    fn new_state(&self) -> BackoffState {
        self.start_state()
    }

    fn feed(
        &self,
        state: &mut BackoffState,
        token: u32,
        logprobs: &mut [f32],
    ) -> Result<(), ModelError> {
        check_token(token, self.vocab_size)?;
        let mut next = *state;
        self.step(state, token, &mut next);
        *state = next;
        self.fill_row(state, logprobs);
        Ok(())
    }

    fn score_next(&self, input: &[u32]) -> Result<Vec<f32>, ModelError> {
        let (&first, rest) = input.split_first().ok_or(ModelError::EmptyInput)?;
        check_token(first, self.vocab_size)?;
        let mut s = self.start_state();
        let mut next = s;
        self.step(&s, first, &mut next);
        s = next;
        let mut out = Vec::with_capacity(rest.len());
        for &w in rest {
            check_token(w, self.vocab_size)?;
            let lp = if w == self.start {
                super::NEVER
            } else {
                self.step(&s, w, &mut next) * LN10
            };
            if w == self.start {
                next = self.start_state();
            }
            out.push(lp);
            s = next;
        }
        Ok(out)
    }
}
