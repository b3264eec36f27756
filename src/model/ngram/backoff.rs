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
//! lookups for w, (c1 w), (c2 c1 w), ... extend one hash incrementally. The arrays are
//! filled in (home slot, hash) order (`insertion_order`, which lets a writer lay a table
//! out from a sorted stream), built in memory ([`BackoffModel::new`]) or borrowed from a
//! mapped `model.bin`
//! ([`super::binary`]), which stores them byte for byte; changing the hash or the slot
//! layout changes that file format (bump `binary::VERSION`).
//!
//! # Performance notes
//! PTB trigram: 850 k entries, 21 MB of tables. A query is a few cache misses (one per
//! order probed), so [`BackoffModel::total_log10`] overlaps them across words: it
//! prefetches the slots of the word `AHEAD` (8) positions on. See `arlm bench ngram` and
//! docs/parts/ngram.md for query speed against KenLM's probing model.

use super::kneser_ney::ArpaGrams;
use super::{NgramError, MAX_ORDER};
use crate::hash::mix64;
use crate::model::{check_token, LanguageModel, ModelError};
use std::sync::Arc;

const LN10: f32 = std::f32::consts::LN_10;

/// How many words ahead [`BackoffModel::total_log10`] prefetches the probe slots (4 and
/// 8 measured alike, 1 clearly slower; see docs/parts/ngram.md).
const AHEAD: usize = 8;

/// Hash of a unigram (the start of the incremental hash).
#[inline]
fn hash1(w: u32) -> u64 {
    mix64(w as u64 ^ 0x9e3779b97f4a7c15)
}

/// Extends the hash of (x_k .. x_n) to (x_{k-1} .. x_n).
#[inline]
fn extend(h: u64, w: u32) -> u64 {
    mix64(h.rotate_left(21) ^ (w as u64).wrapping_mul(0x9e3779b97f4a7c15)) | 1
}

/// The bits of a log10 backoff of -0.0: zero, and no longer n-gram has this n-gram as its
/// context (KenLM's convention). The query state drops such n-grams, so the next query
/// does not probe for extensions that cannot exist. A zero backoff of an n-gram that is
/// some longer n-gram's context is +0.0.
pub(super) const NO_EXTENSION: u32 = 0x8000_0000;

/// A zero backoff marked as not extending (until a longer n-gram shows it does).
pub(super) fn mark_zero(backoff: f32) -> f32 {
    if backoff == 0.0 {
        -0.0
    } else {
        backoff
    }
}

/// One slot of an order's table: the n-gram's hash (0: empty), log10 p, log10 backoff.
/// `#[repr(C)]`, 16 bytes: the binary format stores these slots as they are in memory.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
#[repr(C)]
pub(super) struct Entry {
    pub(super) key: u64,
    pub(super) prob: f32,
    pub(super) backoff: f32,
}

/// A unigram's (log10 p, log10 backoff), 8 bytes, stored as it is in memory too.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
#[repr(C)]
pub(super) struct Unigram {
    pub(super) prob: f32,
    pub(super) backoff: f32,
}

/// Plain-old-data arrays that may be read straight out of a mapped file.
///
/// # Safety
/// Implementors are `#[repr(C)]`, have no padding, and every bit pattern is a valid value.
pub(super) unsafe trait Pod: Copy {}
// SAFETY: u64 + f32 + f32 under repr(C): 16 bytes, no padding, any bits are valid.
unsafe impl Pod for Entry {}
// SAFETY: two f32 under repr(C): 8 bytes, no padding, any bits are valid.
unsafe impl Pod for Unigram {}

/// An array owned in memory or borrowed from a mapped binary model file.
pub(super) enum Slots<T: Pod> {
    Owned(Vec<T>),
    /// `len` values at byte `offset` of `map` (aligned to `T`, checked when mapping).
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

impl<T: Pod> Slots<T> {
    /// Borrows `len` values at byte `offset` of `map`; `None` when they do not fit inside
    /// the map or are misaligned for `T`.
    pub(super) fn mapped(map: &Arc<memmap2::Mmap>, offset: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let end = offset.checked_add(bytes)?;
        let aligned = (map.as_ptr() as usize + offset).is_multiple_of(std::mem::align_of::<T>());
        (end <= map.len() && aligned).then(|| Slots::Mapped {
            map: Arc::clone(map),
            offset,
            len,
        })
    }

    #[inline]
    pub(super) fn as_slice(&self) -> &[T] {
        match self {
            Slots::Owned(v) => v,
            // SAFETY: `mapped` checked that the range lies inside the map and is aligned
            // for T, and T: Pod makes any bytes a valid T. The map is read-only and lives
            // as long as `self` (the Arc).
            Slots::Mapped { map, offset, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*offset) as *const T, *len)
            },
        }
    }
}

/// One order's open-addressing table (key 0 marks an empty slot; stored keys are odd).
pub(super) struct Table {
    pub(super) entries: Slots<Entry>,
    pub(super) mask: usize,
}

impl Table {
    /// Slots of the table for `len` n-grams (a power of two, load factor <= 0.6).
    pub(super) fn slots_for(len: usize) -> usize {
        ((len as f64 / 0.6) as usize + 2).next_power_of_two()
    }

    /// The slot where the probe for `key` starts.
    #[inline]
    pub(super) fn home(key: u64, mask: usize) -> usize {
        (key >> 7) as usize & mask
    }

    /// An empty table for `len` n-grams and its mask.
    pub(super) fn with_len(len: usize) -> (Vec<Entry>, usize) {
        let size = Table::slots_for(len);
        (vec![Entry::default(); size], size - 1)
    }

    /// Inserts by linear probing; false when `key` is already there. The slots depend on
    /// the insertion order: every writer inserts in ascending packed-key order.
    pub(super) fn insert(
        entries: &mut [Entry],
        mask: usize,
        key: u64,
        prob: f32,
        backoff: f32,
    ) -> bool {
        let mut i = (key >> 7) as usize & mask;
        loop {
            let e = &mut entries[i];
            if e.key == 0 {
                *e = Entry { key, prob, backoff };
                return true;
            }
            if e.key == key {
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    fn find_mut(entries: &mut [Entry], mask: usize, key: u64) -> Option<&mut Entry> {
        let mut i = (key >> 7) as usize & mask;
        for _ in 0..entries.len() {
            if entries[i].key == key {
                return Some(&mut entries[i]);
            }
            if entries[i].key == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Asks the CPU to start loading the slot where `key`'s probe begins.
    #[inline]
    fn prefetch(&self, key: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot = self
                .entries
                .as_slice()
                .as_ptr()
                .wrapping_add((key >> 7) as usize & self.mask);
            // SAFETY: a prefetch is a hint; it never faults, even for an invalid address
            // (and this one is inside the table).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    slot as *const i8,
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = key;
    }

    #[inline]
    fn find(&self, key: u64) -> Option<&Entry> {
        let entries = self.entries.as_slice();
        let mut i = (key >> 7) as usize & self.mask;
        // At most one pass over the table: a table read from a damaged file may have no
        // empty slot, and a query must still end.
        for _ in 0..entries.len() {
            let e = &entries[i];
            if e.key == key {
                return Some(e);
            }
            if e.key == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }
}

/// What [`BackoffModel::parts`] lends: (start, end-of-text, unk) ids, the unigrams, and
/// each higher order's (slots, mask).
pub(super) type ModelParts<'a> = ([u32; 3], &'a [Unigram], Vec<(&'a [Entry], usize)>);

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
    unigrams: Slots<Unigram>,
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
        let mut unigrams = unigram_slots(
            n_ids,
            unk,
            (0..uni.keys.len()).map(|i| (uni.keys[i], uni.probs[i], uni.backoffs[i])),
        )?;
        let mut owned: Vec<(Vec<Entry>, usize)> = Vec::with_capacity(order.saturating_sub(1));
        for (m, og) in grams.orders.iter().enumerate().skip(1) {
            let n = m + 1;
            let (mut entries, mask) = Table::with_len(og.keys.len());
            let mut ids = vec![0u32; n];
            let unpack = |k: u128, ids: &mut [u32]| {
                let mut kk = k;
                for slot in ids.iter_mut().rev() {
                    *slot = (kk & ((1u128 << p.bits) - 1)) as u32;
                    kk >>= p.bits;
                }
            };
            // Inserted in (home slot, hash) order, the order a streaming writer can
            // reproduce (see `insertion_order`).
            let mut order: Vec<(u64, u32)> = og
                .keys
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    unpack(k, &mut ids);
                    (hash_gram(&ids), i as u32)
                })
                .collect();
            order.sort_unstable_by_key(|&(h, _)| insertion_order(h, mask));
            for &(h, i) in &order {
                let i = i as usize;
                let b = mark_zero(og.backoffs[i]);
                if !Table::insert(&mut entries, mask, h, og.probs[i], b) {
                    unpack(og.keys[i], &mut ids);
                    return Err(NgramError::Invalid(format!(
                        "duplicate {n}-gram (or a 64-bit hash collision) at ids {ids:?}"
                    )));
                }
            }
            drop(order);
            for &k in &og.keys {
                unpack(k, &mut ids);
                // This n-gram's context extends: its zero backoff becomes +0.
                let context = &ids[..n - 1];
                let slot = if n == 2 {
                    unigrams
                        .get_mut(context[0] as usize)
                        .map(|u| &mut u.backoff)
                } else {
                    let (lower, lmask) = &mut owned[n - 3];
                    Table::find_mut(lower, *lmask, hash_gram(context)).map(|e| &mut e.backoff)
                };
                if let Some(b) = slot {
                    if b.to_bits() == NO_EXTENSION {
                        *b = 0.0;
                    }
                }
            }
            owned.push((entries, mask));
        }
        let tables = owned
            .into_iter()
            .map(|(entries, mask)| Table {
                entries: Slots::Owned(entries),
                mask,
            })
            .collect();
        Ok(BackoffModel {
            order,
            vocab_size,
            start,
            eot,
            unk,
            unigrams: Slots::Owned(unigrams),
            tables,
            n_grams: grams.orders.iter().map(|o| o.keys.len()).collect(),
            describe,
        })
    }

    /// Assembles a model from arrays read by [`super::binary`] (which validated them).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_parts(
        order: usize,
        vocab_size: usize,
        ids: [u32; 3],
        unigrams: Slots<Unigram>,
        tables: Vec<Table>,
        n_grams: Vec<usize>,
        describe: String,
    ) -> BackoffModel {
        let [start, eot, unk] = ids;
        BackoffModel {
            order,
            vocab_size,
            start,
            eot,
            unk,
            unigrams,
            tables,
            n_grams,
            describe,
        }
    }

    /// The arrays [`super::binary`] writes: the ids (start, end-of-text, unk), the
    /// unigrams, and each higher order's (slots, mask).
    pub(super) fn parts(&self) -> ModelParts<'_> {
        (
            [self.start, self.eot, self.unk],
            self.unigrams.as_slice(),
            self.tables
                .iter()
                .map(|t| (t.entries.as_slice(), t.mask))
                .collect(),
        )
    }

    /// The ids visible to callers.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Replaces the one-line description (e.g. with the tokenizer's kind once known).
    pub fn set_describe(&mut self, describe: String) {
        self.describe = describe;
    }

    /// The stored (log10 p, log10 backoff) of the n-gram `ids` (text order), or `None`
    /// when it is not in the model (unigrams: ids outside the vocabulary). An exact
    /// lookup, not a backed-off score: what a model file holds.
    pub fn lookup(&self, ids: &[u32]) -> Option<(f32, f32)> {
        match ids {
            [] => None,
            [w] => self
                .unigrams
                .as_slice()
                .get(*w as usize)
                // + 0.0 turns the -0.0 extension mark back into the file's 0.
                .map(|u| (u.prob, u.backoff + 0.0)),
            _ => {
                let t = self.tables.get(ids.len() - 2)?;
                t.find(hash_gram(ids)).map(|e| (e.prob, e.backoff + 0.0))
            }
        }
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
        std::mem::size_of_val(self.unigrams.as_slice())
            + self
                .tables
                .iter()
                .map(|t| std::mem::size_of_val(t.entries.as_slice()))
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
            s.backoffs[0] = self.unigrams.as_slice()[self.start as usize].backoff;
        }
        s
    }

    /// log10 p(w | state) by standard backoff, and the state after `w` in `out`.
    #[inline]
    pub fn score_log10(&self, state: &BackoffState, w: u32, out: &mut BackoffState) -> f32 {
        let ctx = (state.len as usize).min(self.order - 1);
        let hashes = self.probe_hashes(w, &state.words[..ctx]);
        self.score_hashed(state, w, &hashes, out)
    }

    /// The hashes of `w` after each suffix of `context` (most recent word first), each
    /// one's table slot prefetched: the probes of the orders are independent cache
    /// misses that then overlap instead of queueing.
    #[inline]
    fn probe_hashes(&self, w: u32, context: &[u32]) -> [u64; MAX_ORDER - 1] {
        let mut hashes = [0u64; MAX_ORDER - 1];
        let mut h = hash1(w);
        for ((slot, &c), table) in hashes.iter_mut().zip(context).zip(&self.tables) {
            h = extend(h, c);
            *slot = h;
            table.prefetch(h);
        }
        hashes
    }

    /// [`BackoffModel::score_log10`] with the probe hashes already computed
    /// ([`BackoffModel::probe_hashes`] of `w` after at least the state's context).
    #[inline]
    fn score_hashed(
        &self,
        state: &BackoffState,
        w: u32,
        hashes: &[u64; MAX_ORDER - 1],
        out: &mut BackoffState,
    ) -> f32 {
        let unigrams = self.unigrams.as_slice();
        let Unigram { prob, backoff: bo } = match unigrams.get(w as usize) {
            Some(&e) => e,
            None => unigrams[self.unk as usize],
        };
        let mut prob = prob;
        let keep = self.order - 1;
        out.words[0] = w;
        out.backoffs[0] = bo;
        // The state keeps the context suffixes up to the longest that may extend (or has a
        // backoff to add); shorter ones that cannot extend stay in it (their probe misses,
        // as it would anyway) so the backoffs above them are still added.
        out.len = (keep > 0 && bo.to_bits() != NO_EXTENSION) as u8;
        let ctx = (state.len as usize).min(keep);
        let mut matched = 0; // context words used by the longest match
        for (i, &h) in hashes[..ctx].iter().enumerate() {
            match self.tables[i].find(h) {
                Some(e) => {
                    prob = e.prob;
                    matched = i + 1;
                    if i + 1 < keep {
                        out.words[i + 1] = state.words[i];
                        out.backoffs[i + 1] = e.backoff;
                        if e.backoff.to_bits() != NO_EXTENSION {
                            out.len = (i + 2) as u8;
                        }
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
    ///
    /// The same sum as feeding the words one by one to [`BackoffModel::score_log10`]
    /// (resetting at sentence ends), bit for bit, but pipelined: the probes of a word
    /// depend on the words before it, not on their scores, so the hashes of the word
    /// `AHEAD` (8) positions on are computed (with the full context the text gives it)
    /// and their slots prefetched while this word is scored. A word's state holds a
    /// suffix of that context, so its probes are a prefix of those hashes.
    pub fn total_log10(&self, words: &[u32]) -> f64 {
        let mut total = 0f64;
        self.for_each_log10(words, |_, lp| total += lp as f64);
        total
    }

    /// Calls `f(i, log10 p(words[i] | the words before it))` for every word in order,
    /// from the start of a sentence, pipelined as [`BackoffModel::total_log10`] says.
    #[inline]
    fn for_each_log10(&self, words: &[u32], mut f: impl FnMut(usize, f32)) {
        let keep = self.order - 1;
        let mut ring = [[0u64; MAX_ORDER - 1]; AHEAD];
        // The lookahead's context: the text's last words, most recent first.
        let mut ahead = self.start_state();
        let mut feed = |ring: &mut [[u64; MAX_ORDER - 1]; AHEAD], j: usize| {
            let w = words[j];
            let ctx = (ahead.len as usize).min(keep);
            ring[j % AHEAD] = self.probe_hashes(w, &ahead.words[..ctx]);
            if w == self.eot || w == self.start {
                ahead.len = (keep > 0) as u8;
                ahead.words[0] = self.start;
            } else if keep > 0 {
                ahead.words.copy_within(0..keep - 1, 1);
                ahead.words[0] = w;
                ahead.len = (ahead.len + 1).min(keep as u8);
            }
        };
        for j in 0..words.len().min(AHEAD) {
            feed(&mut ring, j);
        }
        let mut s = self.start_state();
        let mut next = s;
        for (i, &w) in words.iter().enumerate() {
            let hashes = ring[i % AHEAD];
            if i + AHEAD < words.len() {
                feed(&mut ring, i + AHEAD);
            }
            f(i, self.score_hashed(&s, w, &hashes, &mut next));
            if w == self.eot || w == self.start {
                next = self.start_state();
            }
            s = next;
        }
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

/// The order in which a table's n-grams are inserted: by home slot, then by hash. Under
/// linear probing this makes the layout a function of the set of hashes that a writer
/// can produce streaming, from the hashes sorted on this key: each n-gram lands on
/// max(home, previous + 1), and those that run past the end wrap to the first free slots
/// from 0 ([`super::streamed`]). (Probe lengths do not depend on the insertion order.)
pub(super) fn insertion_order(hash: u64, mask: usize) -> u128 {
    ((Table::home(hash, mask) as u128) << 64) | hash as u128
}

/// The dense unigram array over `n_ids` ids from (id, log10 p, log10 backoff) triples:
/// ids absent from them get `unk`'s probability (or KenLM's -100 when `unk` is absent
/// too), and every zero backoff is marked as not extending (see [`NO_EXTENSION`]).
pub(super) fn unigram_slots(
    n_ids: usize,
    unk: u32,
    grams: impl Iterator<Item = (u128, f32, f32)>,
) -> Result<Vec<Unigram>, NgramError> {
    // Absent ids are None until they get `unk`'s entry: no in-band sentinel value that a
    // number read from a file could collide with.
    let mut present: Vec<Option<(f32, f32)>> = vec![None; n_ids];
    for (k, prob, backoff) in grams {
        let id = k as usize;
        if k >= n_ids as u128 {
            return Err(NgramError::Invalid(format!(
                "unigram id {id} is outside the vocabulary of {n_ids}"
            )));
        }
        present[id] = Some((prob, backoff));
    }
    let unk_entry = match present.get(unk as usize) {
        Some(Some(e)) => (e.0, 0.0),
        _ => (-100.0, 0.0),
    };
    Ok(present
        .into_iter()
        .map(|e| {
            let (prob, backoff) = e.unwrap_or(unk_entry);
            Unigram {
                prob,
                backoff: mark_zero(backoff),
            }
        })
        .collect())
}

/// The table key of the n-gram `ids` (in text order).
pub(super) fn hash_gram(ids: &[u32]) -> u64 {
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
        if input.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        for &w in input {
            check_token(w, self.vocab_size)?;
        }
        // The first token only conditions (its score is dropped); the start symbol is
        // never predicted. Pipelined as `total_log10`.
        let mut out = Vec::with_capacity(input.len() - 1);
        self.for_each_log10(input, |i, lp| {
            if i > 0 {
                out.push(if input[i] == self.start {
                    super::NEVER
                } else {
                    lp * LN10
                });
            }
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{BackoffModel, LN10};
    use crate::model::ngram::kneser_ney::KnOptions;
    use crate::model::ngram::store::{backoff_model, fit_kn, Corpus};
    use crate::model::ngram::NEVER;
    use crate::model::LanguageModel;
    use crate::tokenizer::bytes::ByteTokenizer;
    use crate::tokenizer::Tokenizer;

    /// A pseudo-random token stream over a few ids, sentences ended by `eot`.
    fn stream(len: usize, alphabet: u32, eot: u32, seed: u64) -> Vec<u32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (state >> 33) as u32;
                if r.is_multiple_of(7) {
                    eot
                } else {
                    r % alphabet
                }
            })
            .collect()
    }

    /// The pipelined total equals the word-by-word sum bit for bit, at every order,
    /// across sentence ends, the start id inside the text, ids without a unigram, and
    /// texts shorter than the lookahead.
    #[test]
    fn pipelined_total_equals_word_by_word_scores() {
        // Bytes (a virtual start id outside the vocabulary) and words (<s> = 1 inside it,
        // so texts may hold it).
        let words = crate::tokenizer::words::WordTokenizer::from_words(
            (0..12)
                .map(|i| format!("w{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(|w| w.as_str()),
        );
        let toks: [(&dyn Tokenizer, u32, u32); 2] = [(&ByteTokenizer, 256, 0), (&words, 2, 3)];
        for (tok, eot, shift) in toks {
            let train: Vec<u32> = stream(20_000, 12, u32::MAX, 1)
                .into_iter()
                .map(|w| if w == u32::MAX { eot } else { w + shift })
                .collect();
            for order in 1..=6 {
                let corpus = Corpus::Tokens {
                    len: train.len(),
                    get: Box::new(|i| train[i]),
                    eot,
                };
                let mut opts = KnOptions::new(order);
                opts.discount_fallback = Some([0.5, 1.0, 1.5]);
                let fit = fit_kn(&corpus, tok, &opts).unwrap();
                let model = backoff_model(&fit.grams, tok).unwrap();
                check_pipelined(&model, eot, order);
            }
        }
    }

    fn check_pipelined(model: &BackoffModel, eot: u32, order: usize) {
        let start = model.parts().0[0];
        for (round, len) in [0usize, 1, 2, 3, 5, 9, 3000].into_iter().enumerate() {
            // Ids the training never saw: unigrams of unk's probability (bytes).
            let mut text = stream(len, 15, eot, 100 + round as u64);
            if len > 4 {
                text[len / 2] = start;
            }
            let mut s = model.start_state();
            let mut next = s;
            let mut want = 0f64;
            for &w in &text {
                want += model.step(&s, w, &mut next) as f64;
                s = next;
            }
            let got = model.total_log10(&text);
            assert_eq!(got.to_bits(), want.to_bits(), "order {order}, {len} words");
            // score_next: the same scores after a conditioning first token.
            let mut input = vec![eot];
            input.extend(&text);
            if start as usize >= model.vocab_size() && text.contains(&start) {
                assert!(model.score_next(&input).is_err());
                continue;
            }
            let lps = model.score_next(&input).unwrap();
            assert_eq!(lps.len(), text.len());
            let mut s = model.start_state();
            let mut next = s;
            for (&w, lp) in text.iter().zip(&lps) {
                let want = model.step(&s, w, &mut next);
                s = next;
                let want = if w == start { NEVER } else { want * LN10 };
                assert_eq!(lp.to_bits(), want.to_bits(), "order {order}, {len} words");
            }
        }
    }
}
