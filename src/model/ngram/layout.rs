//! `model.bin`'s hash tables laid out from a sorted stream, slot after slot, without the
//! table in memory: the writer half of [`super::backoff::insertion_order`].
//!
//! Inserted by linear probing in (home slot, hash) order, each n-gram lands on
//! max(home, previous + 1); the ones that run past the last slot wrap around and take the
//! first free slots from 0. So a first pass over the sorted slots finds those few (kept
//! in memory) and a second writes every slot in order: the next placed one when it lands
//! there, else the next wrapped one, else an empty slot.

use super::backoff::Entry;
use super::binary::PutTable;
use super::extsort::Record;
use super::NgramError;

/// Pass 1 of laying out a table from slots sorted by [`super::backoff::insertion_order`]: each lands on
/// max(home, previous + 1); those past the last slot wrap around and are returned, the
/// others go to `keep` in order. Equal hashes (a duplicate n-gram or a collision) are an
/// error, as they are for [`Table::insert`].
pub(super) fn split_wrapped(
    m: usize,
    mask: usize,
    next: &mut dyn FnMut() -> Result<Option<Slotted>, NgramError>,
    keep: &mut dyn FnMut(&Slotted) -> Result<(), NgramError>,
) -> Result<Vec<Entry>, NgramError> {
    let mut wrapped: Vec<Entry> = Vec::new();
    let mut last: Option<(usize, u64)> = None; // (slot, hash)
    while let Some(e) = next()? {
        if last.is_some_and(|(_, h)| h == e.lo) {
            return Err(NgramError::Invalid(format!(
                "duplicate {m}-gram (or a 64-bit hash collision): hash {:#x}",
                e.lo
            )));
        }
        let home = e.hi as usize;
        let at = last.map_or(home, |(s, _)| home.max(s + 1));
        if at > mask {
            wrapped.push(e.entry());
        } else {
            keep(&e)?;
        }
        last = Some((at, e.lo));
    }
    Ok(wrapped)
}

/// Pass 2: every slot in order to `put`: the next placed slot when it lands there, else
/// the next wrapped one (they take the first free slots from 0, as linear probing puts
/// them), else empty.
pub(super) fn emit_slots(
    mask: usize,
    next: &mut dyn FnMut() -> Result<Option<Slotted>, NgramError>,
    wrapped: Vec<Entry>,
    put: &mut PutTable,
) -> Result<(), NgramError> {
    let mut placed = next()?;
    let mut prev: Option<usize> = None;
    let mut wrapped = wrapped.into_iter();
    let mut chunk: Vec<Entry> = Vec::with_capacity(4096);
    for slot in 0..=mask {
        let at = placed.map(|e| prev.map_or(e.hi as usize, |s| (e.hi as usize).max(s + 1)));
        let entry = if at == Some(slot) {
            let e = placed.take().expect("at is Some");
            prev = Some(slot);
            placed = next()?;
            e.entry()
        } else {
            wrapped.next().unwrap_or_default()
        };
        chunk.push(entry);
        if chunk.len() == chunk.capacity() {
            put(&chunk)?;
            chunk.clear();
        }
    }
    put(&chunk)
}

/// A table slot on its way to `model.bin`: sorted by (home slot, hash).
#[derive(Clone, Copy)]
pub(super) struct Slotted {
    /// The home slot.
    pub(super) hi: u64,
    /// The n-gram's hash.
    pub(super) lo: u64,
    pub(super) prob: f32,
    pub(super) backoff: f32,
}

impl Slotted {
    pub(super) fn entry(&self) -> Entry {
        Entry {
            key: self.lo,
            prob: self.prob,
            backoff: self.backoff,
        }
    }
}

impl Record for Slotted {
    const BYTES: usize = 24;
    #[inline]
    fn key(&self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.hi.to_le_bytes());
        out[8..16].copy_from_slice(&self.lo.to_le_bytes());
        out[16..20].copy_from_slice(&self.prob.to_le_bytes());
        out[20..24].copy_from_slice(&self.backoff.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let f32_at = |i: usize| f32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Slotted {
            hi: u64_at(0),
            lo: u64_at(8),
            prob: f32_at(16),
            backoff: f32_at(20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ngram::backoff::{insertion_order, Table};

    /// The streamed layout equals linear-probing insertion in [`super::backoff::insertion_order`], also
    /// when clusters run past the last slot and wrap around to slot 0.
    #[test]
    fn streamed_table_layout_equals_insertion_with_wraparound() {
        let mut state = 99u64;
        let mut rounds_wrapping = 0;
        for round in 0..200 {
            let len = 1 + round % 40;
            let (mut table, mask) = Table::with_len(len);
            // Hashes whose homes crowd the last slots (every third round), or anywhere.
            let mut hashes: Vec<u64> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let home = if round % 3 == 0 {
                        mask - (state >> 61) as usize % 3.min(mask + 1)
                    } else {
                        (state >> 20) as usize & mask
                    };
                    // Home in bits 7.., distinct low bits; odd, as stored hashes are.
                    ((home as u64) << 7) | ((state >> 40) & 0x7e) | 1 | (state & !0 << 40)
                })
                .collect();
            hashes.sort_unstable();
            hashes.dedup();
            hashes.sort_unstable_by_key(|&h| insertion_order(h, mask));
            for (i, &h) in hashes.iter().enumerate() {
                assert!(Table::insert(&mut table, mask, h, -(i as f32), 0.5));
            }
            let sorted: Vec<Slotted> = hashes
                .iter()
                .enumerate()
                .map(|(i, &h)| Slotted {
                    hi: Table::home(h, mask) as u64,
                    lo: h,
                    prob: -(i as f32),
                    backoff: 0.5,
                })
                .collect();
            let mut kept = Vec::new();
            let mut it = sorted.iter().copied();
            let wrapped = split_wrapped(2, mask, &mut || Ok(it.next()), &mut |e| {
                kept.push(*e);
                Ok(())
            })
            .unwrap();
            rounds_wrapping += !wrapped.is_empty() as usize;
            let mut it = kept.into_iter();
            let mut got: Vec<Entry> = Vec::new();
            emit_slots(mask, &mut || Ok(it.next()), wrapped, &mut |c| {
                got.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, table, "round {round}");
        }
        assert!(rounds_wrapping > 20, "{rounds_wrapping} rounds wrapped");
    }

    #[test]
    fn duplicate_hashes_are_refused() {
        let e = Slotted {
            hi: 3,
            lo: 3 << 7 | 1,
            prob: -1.0,
            backoff: 0.0,
        };
        let mut it = [e, e].into_iter();
        let err = split_wrapped(3, 15, &mut || Ok(it.next()), &mut |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("duplicate 3-gram"), "{err}");
    }
}
