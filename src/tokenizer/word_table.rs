//! The words tokenizer's vocabulary as one flat byte array: the words, and an
//! open-addressing table from a word's 64-bit hash to its id. The same bytes serve in
//! memory and mapped from a binary n-gram model (`model.bin`'s vocabulary section), so
//! loading a model's vocabulary is a header check, not a parse of every word.
//!
//! # Layout (little-endian; the array starts 8-byte aligned)
//! ```text
//! offset        size         field
//!      0           8         n_words (ids 0..n_words; 0, 1, 2 are <unk>, <s>, </s>)
//!      8           8         slots (a power of two, at least 2 * n_words)
//!     16           8         seed of the word hash
//!     24           8         blob length in bytes
//!     32    16*slots         table: (hash: u64, id: u32, 0: u32) per slot; hash 0 = empty
//!      .  8*(n_words+1)      offsets: word id's bytes are blob[offsets[id]..offsets[id+1]]
//!      .      blob           the words' UTF-8 bytes, in id order
//!      .     0..7            zero padding to a multiple of 8
//! ```
//! A lookup hashes the word ([`word_hash`]) and probes linearly from
//! `(hash >> 8) & (slots - 1)` until it finds the hash (the id) or an empty slot (not in
//! the vocabulary). Only the hash is compared, as KenLM's vocabulary does: a word outside
//! the vocabulary is taken for a vocabulary word when their 64-bit hashes are equal, with
//! probability about n_words / 2^64 per lookup (the n-gram tables make the same bargain).
//! Two vocabulary words never share a hash: building picks the first seed for which all
//! hashes differ.
//!
//! # What opening checks
//! The header's sizes against the array's length, and that ids 0..3 spell the specials:
//! constant work whatever the vocabulary's size. The words are checked when read (their
//! offsets in range and their bytes UTF-8), and an id a damaged table returns that is not
//! below n_words reads as `<unk>`, so a damaged array gives errors or `<unk>`, never a
//! panic.

use crate::hash::mix64;
use std::sync::Arc;

/// The spellings of the three special ids (`<unk>` = 0, `<s>` = 1, `</s>` = 2), the
/// first entries of every table.
pub const SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

const HEADER: usize = 32;
const SLOT: usize = 16;

/// The 64-bit hash of a word's bytes under `seed` (never 0: 0 marks an empty slot).
/// Part of the layout: changing it changes the files that store a table.
#[inline]
pub fn word_hash(word: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ (word.len() as u64).wrapping_mul(0x9e3779b97f4a7c15);
    let mut chunks = word.chunks_exact(8);
    for c in &mut chunks {
        h = mix64(h ^ u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    mix64(h ^ u64::from_le_bytes(tail) ^ 0x2545f4914f6cdd1d) | 1
}

/// Where the bytes of a table live.
#[derive(Clone)]
enum Store {
    /// Built in memory.
    Owned(Arc<[u8]>),
    /// `len` bytes at `offset` of a mapped file.
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

/// A vocabulary: words by id, and ids by word.
#[derive(Clone)]
pub struct WordTable {
    store: Store,
    n_words: usize,
    mask: usize,
    seed: u64,
    /// Byte offsets (within the array) of the offsets and of the blob.
    offsets_at: usize,
    blob_at: usize,
    blob_len: usize,
}

impl std::fmt::Debug for WordTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordTable")
            .field("n_words", &self.n_words)
            .field("slots", &(self.mask + 1))
            .finish()
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Bytes of the array for `n_words` words in `slots` slots with `blob_len` bytes of words.
fn array_len(n_words: usize, slots: usize, blob_len: usize) -> Option<usize> {
    let table = slots.checked_mul(SLOT)?;
    let offsets = n_words.checked_add(1)?.checked_mul(8)?;
    HEADER
        .checked_add(table)?
        .checked_add(offsets)?
        .checked_add(blob_len)?
        .checked_next_multiple_of(8)
}

impl WordTable {
    /// The table of `words` (ids in this order; no repeats).
    pub fn build(words: &[&str]) -> WordTable {
        let n = words.len();
        let slots = (2 * n).max(4).next_power_of_two();
        let mask = slots - 1;
        let blob_len: usize = words.iter().map(|w| w.len()).sum();
        let len = array_len(n, slots, blob_len).expect("a vocabulary that fits in memory");
        let mut bytes = vec![0u8; len];
        let offsets_at = HEADER + slots * SLOT;
        let blob_at = offsets_at + 8 * (n + 1);
        // Words and offsets do not depend on the seed.
        let mut at = 0usize;
        for (id, w) in words.iter().enumerate() {
            let o = offsets_at + 8 * id;
            bytes[o..o + 8].copy_from_slice(&(at as u64).to_le_bytes());
            bytes[blob_at + at..blob_at + at + w.len()].copy_from_slice(w.as_bytes());
            at += w.len();
        }
        let o = offsets_at + 8 * n;
        bytes[o..o + 8].copy_from_slice(&(at as u64).to_le_bytes());
        // The first seed under which no two words share a hash (almost always 0).
        let mut seed = 0u64;
        'seeds: loop {
            bytes[HEADER..offsets_at].fill(0);
            for (id, w) in words.iter().enumerate() {
                let h = word_hash(w.as_bytes(), seed);
                let mut i = (h >> 8) as usize & mask;
                loop {
                    let s = HEADER + i * SLOT;
                    let k = u64_at(&bytes, s);
                    if k == 0 {
                        bytes[s..s + 8].copy_from_slice(&h.to_le_bytes());
                        bytes[s + 8..s + 12].copy_from_slice(&(id as u32).to_le_bytes());
                        break;
                    }
                    if k == h {
                        seed += 1;
                        continue 'seeds;
                    }
                    i = (i + 1) & mask;
                }
            }
            break;
        }
        for (i, v) in [n, slots, seed as usize, blob_len].into_iter().enumerate() {
            bytes[8 * i..8 * i + 8].copy_from_slice(&(v as u64).to_le_bytes());
        }
        Self::open(Store::Owned(bytes.into())).expect("a table just built is valid")
    }

    /// The table stored in `len` bytes at `offset` of `map` (8-byte aligned), checked as
    /// the module doc says; the error says what is wrong.
    pub fn mapped(map: &Arc<memmap2::Mmap>, offset: usize, len: usize) -> Result<Self, String> {
        if offset.checked_add(len).is_none_or(|end| end > map.len()) || !offset.is_multiple_of(8) {
            return Err(format!(
                "the vocabulary ({len} bytes at byte {offset}) is not inside the file"
            ));
        }
        Self::open(Store::Mapped {
            map: Arc::clone(map),
            offset,
            len,
        })
    }

    fn open(store: Store) -> Result<Self, String> {
        let mut t = WordTable {
            store,
            n_words: 0,
            mask: 0,
            seed: 0,
            offsets_at: 0,
            blob_at: 0,
            blob_len: 0,
        };
        let b = t.bytes();
        if b.len() < HEADER {
            return Err(format!(
                "the vocabulary is {} bytes, shorter than its header",
                b.len()
            ));
        }
        let [n, slots, seed, blob_len] = [0, 8, 16, 24].map(|at| u64_at(b, at));
        let (n, slots, blob_len) = (n as usize, slots as usize, blob_len as usize);
        let fits = array_len(n, slots, blob_len) == Some(b.len());
        if !slots.is_power_of_two() || slots < 2 * n || n < SPECIALS.len() || !fits {
            return Err(format!(
                "the vocabulary's header ({n} words, {slots} slots, {blob_len} bytes of words) \
                 does not match its {} bytes",
                b.len()
            ));
        }
        t.n_words = n;
        t.mask = slots - 1;
        t.seed = seed;
        t.offsets_at = HEADER + slots * SLOT;
        t.blob_at = t.offsets_at + 8 * (n + 1);
        t.blob_len = blob_len;
        for (id, s) in SPECIALS.iter().enumerate() {
            if t.word(id as u32) != Some(s) || t.lookup(s) != Some(id as u32) {
                return Err(format!("vocabulary id {id} is not {s}"));
            }
        }
        Ok(t)
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match &self.store {
            Store::Owned(bytes) => bytes,
            Store::Mapped { map, offset, len } => &map[*offset..*offset + *len],
        }
    }

    /// The array, as a file stores it.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.n_words
    }

    /// True when there are no ids (never, for a table that opened: it has the specials).
    pub fn is_empty(&self) -> bool {
        self.n_words == 0
    }

    /// The id of `word`, if it is in the vocabulary.
    #[inline]
    pub fn lookup(&self, word: &str) -> Option<u32> {
        self.lookup_hash(word_hash(word.as_bytes(), self.seed))
    }

    /// The id whose word has `hash` ([`word_hash`] under [`WordTable::seed`]).
    #[inline]
    pub fn lookup_hash(&self, hash: u64) -> Option<u32> {
        let b = self.bytes();
        let table = &b[HEADER..self.offsets_at];
        let mut i = (hash >> 8) as usize & self.mask;
        // At most one pass: a damaged table may have no empty slot.
        for _ in 0..=self.mask {
            let s = &table[i * SLOT..i * SLOT + SLOT];
            let k = u64::from_le_bytes(s[..8].try_into().expect("8 bytes"));
            if k == hash {
                let id = u32::from_le_bytes(s[8..12].try_into().expect("4 bytes"));
                return ((id as usize) < self.n_words).then_some(id);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// The seed [`WordTable::lookup_hash`] expects hashes under.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The word of `id` (`None` outside the vocabulary, or where a damaged array's
    /// offsets or bytes do not make a word).
    pub fn word(&self, id: u32) -> Option<&str> {
        let id = id as usize;
        if id >= self.n_words {
            return None;
        }
        let b = self.bytes();
        let o = self.offsets_at + 8 * id;
        let (start, end) = (u64_at(b, o) as usize, u64_at(b, o + 8) as usize);
        if start > end || end > self.blob_len {
            return None;
        }
        std::str::from_utf8(&b[self.blob_at + start..self.blob_at + end]).ok()
    }

    /// Every word in id order (`""` where a damaged array has none).
    pub fn words(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.n_words as u32).map(|id| self.word(id).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(n: usize) -> Vec<String> {
        let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        v.extend((0..n).map(|i| format!("w{i}")));
        v.push("".into());
        v.push("ünïcödé-and-a-longer-word".into());
        v
    }

    #[test]
    fn every_word_finds_its_id_and_unknown_words_find_none() {
        let v = vocab(1000);
        let refs: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
        let t = WordTable::build(&refs);
        assert_eq!(t.len(), v.len());
        for (id, w) in v.iter().enumerate() {
            assert_eq!(t.lookup(w), Some(id as u32), "{w}");
            assert_eq!(t.word(id as u32), Some(w.as_str()));
        }
        for w in ["w1000", "W1", "w", "<S>", "w1 ", "ünïcödé"] {
            assert_eq!(t.lookup(w), None, "{w}");
        }
        assert_eq!(t.word(v.len() as u32), None);
        assert_eq!(t.words().collect::<Vec<_>>(), refs);
    }

    #[test]
    fn the_hash_reads_every_byte_and_the_length() {
        let mut seen = std::collections::HashSet::new();
        for w in [
            "",
            "\0",
            "\0\0",
            "a",
            "ab",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefgi",
        ] {
            assert!(seen.insert(word_hash(w.as_bytes(), 0)), "{w:?}");
        }
        assert_ne!(word_hash(b"a", 0), word_hash(b"a", 1));
    }

    #[test]
    fn damaged_arrays_are_refused_or_read_as_absent() {
        let v = vocab(10);
        let refs: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
        let good = WordTable::build(&refs).as_bytes().to_vec();
        let open = |b: Vec<u8>| WordTable::open(Store::Owned(b.into()));
        assert!(open(good.clone()).is_ok());
        let e = open(good[..good.len() - 8].to_vec()).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
        let mut wrong_n = good.clone();
        wrong_n[0] += 1;
        assert!(open(wrong_n).unwrap_err().contains("header"));
        // A blob byte changed inside `<s>`.
        let mut spelled = good.clone();
        let blob_at = HEADER + 16 * 32 + 8 * (v.len() + 1);
        spelled[blob_at + 6] = b'x';
        assert!(open(spelled).unwrap_err().contains("id 1"));
        // Offsets past the blob read as no word, not a panic.
        let mut offs = good.clone();
        let at = HEADER + 16 * 32 + 8 * 5;
        offs[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let t = open(offs).unwrap();
        assert_eq!(t.word(4), None);
        assert_eq!(t.word(5), None);
    }
}
