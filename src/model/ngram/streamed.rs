//! Kneser-Ney estimation within a memory budget: [`super::kneser_ney`]'s algorithm as a
//! pipeline of sorted n-gram streams, as KenLM's `lmplz` runs it, writing byte for byte
//! the ARPA file and `model.bin` that the in-memory path writes.
//!
//! # Stages (each reads and writes record files in a scratch directory)
//! 1. **Count.** Every position's longest n-gram (see [`super::kneser_ney`]) goes into a
//!    [`Sorter`] per order that folds equal keys; the result is one key-sorted file of
//!    raw counts per order (below the highest order, only n-grams starting with `<s>`).
//! 2. **Adjust, top down.** The (m-1)-word suffix of every order-m n-gram goes into a
//!    folding sorter: the distinct extensions of each suffix, its continuation count.
//!    Merged with the raw counts of order m-1, that is order m-1's adjusted stream
//!    (unigrams: plus the ids that must exist, without `<s>`). Count-of-counts and the
//!    last n-gram in suffix order (for lmplz's quirk) are taken while writing it; one
//!    more pass over the raw files gives that n-gram's raw count.
//! 3. **Discounts** per order, from the count-of-counts ([`super::kneser_ney::discount`]).
//! 4. **Interpolate, bottom up.** The adjusted stream of order m is key-sorted, so each
//!    context's n-grams are adjacent: one context at a time gives the context's sums and
//!    gamma, each n-gram's discounted share, and the context's log10 gamma (the backoff
//!    of order m-1, joined with order m-1's probabilities into its final stream). The
//!    n-grams are then sorted by their (m-1)-word suffix and merge-joined with order
//!    m-1's key-sorted probabilities (the lower-order term), and sorted back by key.
//! 5. **Write.** ARPA streams each order's final file; `model.bin`'s hash tables are laid
//!    out slot by slot from the n-grams sorted by `backoff::insertion_order`, the order in which
//!    [`super::backoff::BackoffModel::new`] inserts them, so the bytes are the same.
//!
//! The arithmetic is the in-memory path's, operation for operation (same f64 sums and
//! f32 roundings), which is what makes the outputs identical; the integration tests
//! compare the bytes with a budget small enough to force every sort to spill.
//!
//! # Memory
//! The budget bounds every sort buffer and merge: counting shares it among the orders'
//! sorters (the highest order gets most), adjusting gives it to one sorter,
//! interpolating to two (half each, the suffix sort and the key sort), and writing
//! `model.bin` to the sort of one table's slots. Outside it: the vocabulary-sized arrays
//! (the tokenizer, the unigrams, one context's followers) and the 1 MB I/O buffers of a
//! few open files.

use super::backoff::{hash_gram, insertion_order, unigram_slots, Table, NO_EXTENSION};
use super::binary::{self, PutTable, Shape};
use super::extsort::{
    Counted, Merged, Record, RecordFile, RecordReader, Scratch, Sorter, SplitKey,
};
use super::kneser_ney::{discount, Discounts, KnOptions};
use super::layout::{emit_slots, split_wrapped, Slotted};
use super::{NgramError, Packer, MAX_ORDER};
use crate::tokenizer::word_table::WordTable;
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};

/// The smallest `--memory` accepted.
pub const MIN_BUDGET: usize = 48 << 10;

/// How a streamed estimation uses memory and disk.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Bytes the sort buffers may hold (see the module doc for what is outside it).
    pub budget: usize,
    /// Where the scratch directory is made.
    pub temp_parent: PathBuf,
    /// Show a progress bar per stage (on stderr, hidden when it is not a terminal).
    pub progress: bool,
}

/// An order-m n-gram during interpolation, keyed by its suffix: the key rotated so the
/// last m-1 words are the high bits and the first word the low bits.
#[derive(Clone, Copy)]
struct Suffixed {
    rot_hi: u64,
    rot_lo: u64,
    /// The discounted share (a(hw) - D) / sum_x a(hx).
    share: f64,
    /// The context's gamma.
    gamma: f64,
}

impl Record for Suffixed {
    const BYTES: usize = 32;
    #[inline]
    fn key(&self) -> u128 {
        ((self.rot_hi as u128) << 64) | self.rot_lo as u128
    }
    fn encode(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.key().to_le_bytes());
        out[16..24].copy_from_slice(&self.share.to_le_bytes());
        out[24..32].copy_from_slice(&self.gamma.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let rot = u128::from_le_bytes(b[..16].try_into().expect("16 bytes"));
        Suffixed {
            rot_hi: (rot >> 64) as u64,
            rot_lo: rot as u64,
            share: f64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            gamma: f64::from_le_bytes(b[24..32].try_into().expect("8 bytes")),
        }
    }
}

/// A key with a log10 value: an n-gram's probability, or a context's gamma.
#[derive(Clone, Copy)]
struct Logged {
    key: SplitKey,
    log10: f32,
}

impl Logged {
    fn new(key: u128, log10: f32) -> Logged {
        Logged {
            key: SplitKey::new(key),
            log10,
        }
    }
}

impl Record for Logged {
    const BYTES: usize = 20;
    #[inline]
    fn key(&self) -> u128 {
        self.key.get()
    }
    fn encode(&self, out: &mut [u8]) {
        self.key.encode(out);
        out[16..20].copy_from_slice(&self.log10.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        Logged {
            key: SplitKey::decode(b),
            log10: f32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
        }
    }
}

/// A finished n-gram: key, log10 p, log10 backoff, and whether it is the context of some
/// longer n-gram (which decides the sign of a zero backoff in `model.bin`).
#[derive(Clone, Copy)]
pub struct Final {
    pub key: u128,
    pub prob: f32,
    pub backoff: f32,
    pub extends: bool,
}

impl Record for Final {
    const BYTES: usize = 25;
    fn key(&self) -> u128 {
        self.key
    }
    fn encode(&self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.key.to_le_bytes());
        out[16..20].copy_from_slice(&self.prob.to_le_bytes());
        out[20..24].copy_from_slice(&self.backoff.to_le_bytes());
        out[24] = self.extends as u8;
    }
    fn decode(b: &[u8]) -> Self {
        Final {
            key: u128::from_le_bytes(b[..16].try_into().expect("16 bytes")),
            prob: f32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            backoff: f32::from_le_bytes(b[20..24].try_into().expect("4 bytes")),
            extends: b[24] != 0,
        }
    }
}

/// A streamed estimate: each order's final n-grams in key order, on disk.
pub struct Streamed {
    /// Number of ids the keys use.
    pub n_ids: usize,
    /// Packing of the keys.
    pub packer: Packer,
    /// (D1, D2, D3+) per order.
    pub discounts: Vec<Discounts>,
    /// Tokens counted.
    pub tokens: u64,
    plan: Plan,
    /// `orders[m - 1]`: order m's final n-grams.
    orders: Vec<RecordFile<Final>>,
    /// Declared last: dropped after the files in it.
    scratch: Scratch,
}

impl Streamed {
    /// n-grams per order.
    pub fn counts(&self) -> Vec<usize> {
        self.orders.iter().map(|f| f.len() as usize).collect()
    }

    /// Sorted runs written to disk during estimation (0: everything fit in the budget).
    pub fn runs_spilled(&self) -> usize {
        self.scratch.runs_spilled()
    }

    /// The scratch directory (removed when `self` is dropped).
    pub fn scratch_dir(&self) -> &Path {
        self.scratch.path()
    }

    /// Calls `f` on each n-gram of order `m` in key order (`stage` names the progress bar).
    pub fn for_each(
        &self,
        stage: &str,
        m: usize,
        f: &mut dyn FnMut(Final) -> Result<(), NgramError>,
    ) -> Result<(), NgramError> {
        let file = &self.orders[m - 1];
        let bar = stage_bar(
            self.plan.progress,
            &format!("{stage} {m}-grams"),
            file.bytes(),
        );
        let mut r = file.reader(1 << 20)?;
        while let Some(g) = r.next_record()? {
            f(g)?;
            bar.inc(Final::BYTES as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// Writes the ARPA file (as [`super::arpa::write`] would write the same model).
    pub fn write_arpa(&self, path: &Path, name: &dyn Fn(u32) -> String) -> Result<(), NgramError> {
        super::arpa::write_orders(
            path,
            self.n_ids,
            self.packer,
            &self.counts(),
            name,
            &mut |m, line| self.for_each("ARPA", m, &mut |g| line(g.key, g.prob, g.backoff)),
        )
    }

    /// Writes `model.bin` (as [`super::binary::write`] would write the model built from
    /// the same n-grams), one order's table in memory at a time.
    /// `ids`: (start, end-of-text, unk); `vocab`: the words vocabulary, when the model
    /// is over the words tokenizer.
    pub fn write_binary(
        &self,
        path: &Path,
        vocab_size: usize,
        ids: [u32; 3],
        vocab: Option<&WordTable>,
    ) -> Result<(), NgramError> {
        let [start, _eot, unk] = ids;
        let order = self.orders.len();
        let counts = self.counts();
        let n_ids = vocab_size.max(start as usize + 1);
        let mut unigrams_in = Vec::with_capacity(counts[0]);
        let mut extending = Vec::new();
        self.for_each("model.bin", 1, &mut |g| {
            unigrams_in.push((g.key, g.prob, g.backoff));
            if g.extends {
                extending.push(g.key as usize);
            }
            Ok(())
        })?;
        let mut unigrams = unigram_slots(n_ids, unk, unigrams_in.into_iter())?;
        for id in extending {
            let b = &mut unigrams[id].backoff;
            if b.to_bits() == NO_EXTENSION {
                *b = 0.0;
            }
        }
        let table_slots: Vec<usize> = counts[1..].iter().map(|&c| Table::slots_for(c)).collect();
        let shape = Shape {
            order,
            vocab_size,
            ids,
            counts: &counts,
            table_slots: &table_slots,
            vocab,
        };
        binary::write_with(path, &shape, &unigrams, &mut |m, put| {
            self.write_table(m, counts[m - 1], put)
        })
    }

    /// Streams order `m`'s hash table (`count` n-grams) to `put` in slot order, in the
    /// layout [`super::backoff::BackoffModel::new`] builds: the n-grams sorted by
    /// [`insertion_order`] (within the budget) and placed by linear probing in that
    /// order, which needs no table in memory (see [`insertion_order`]): two passes over
    /// the sorted slots, the first to find the few that wrap around past the last slot.
    fn write_table(&self, m: usize, count: usize, put: &mut PutTable) -> Result<(), NgramError> {
        let p = self.packer;
        let mask = Table::slots_for(count) - 1;
        let mut sorter = Sorter::<Slotted>::new(&self.scratch, "slots", self.plan.budget)?;
        let mut ids = vec![0u32; m];
        self.for_each("model.bin", m, &mut |g| {
            let mut k = g.key;
            for slot in ids.iter_mut().rev() {
                *slot = (k & ((1u128 << p.bits) - 1)) as u32;
                k >>= p.bits;
            }
            let backoff = if g.backoff != 0.0 {
                g.backoff
            } else if g.extends {
                0.0
            } else {
                -0.0
            };
            let h = hash_gram(&ids);
            let order = insertion_order(h, mask);
            sorter.push(Slotted {
                hi: (order >> 64) as u64,
                lo: h,
                prob: g.prob,
                backoff,
            })
        })?;
        let mut w = self.scratch.writer::<Slotted>("slots")?;
        let mut sorted = sorter.finish()?;
        let wrapped = split_wrapped(m, mask, &mut || sorted.next_record(), &mut |e| w.push(e))?;
        drop(sorted);
        let placed = w.finish()?;
        let mut r = placed.reader(1 << 20)?;
        emit_slots(mask, &mut || r.next_record(), wrapped, put)
    }
}

/// A progress bar for one stage, counting bytes.
pub fn stage_bar(show: bool, stage: &str, total_bytes: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total_bytes);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix:>20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(stage.to_string());
    pb
}

/// The corpus as the counting stage reads it: `feed(f)` calls `f(sentence, bytes)` for
/// each sentence (ending with the end-of-text id) and the input bytes it took.
pub type Feed<'a> =
    dyn FnMut(&mut dyn FnMut(&[u32], u64) -> Result<(), NgramError>) -> Result<(), NgramError> + 'a;

/// Estimates interpolated modified Kneser-Ney over ids below `n_ids` (`start` is `<s>`,
/// `always` the ids that must be in the vocabulary) within `plan.budget` bytes.
pub fn estimate(
    feed: &mut Feed,
    input_bytes: u64,
    n_ids: usize,
    start: u32,
    always: &[u32],
    opts: &KnOptions,
    plan: &Plan,
) -> Result<Streamed, NgramError> {
    let n = opts.order;
    if n == 0 || n > MAX_ORDER {
        return Err(NgramError::Order {
            order: n,
            max: MAX_ORDER,
        });
    }
    if plan.budget < MIN_BUDGET {
        return Err(NgramError::Memory(format!(
            "--memory is too small: {} bytes given, at least {} KiB are needed",
            plan.budget,
            MIN_BUDGET >> 10
        )));
    }
    crate::memory::check_fits("--memory", plan.budget as u128)
        .map_err(|e| NgramError::Memory(e.to_string()))?;
    let packer = Packer::new(n_ids, n)?;
    let scratch = Scratch::new(&plan.temp_parent)?;
    let cx = Cx {
        n,
        p: packer,
        start,
        scratch: &scratch,
        plan,
    };
    let (raw, tokens) = cx.count(feed, input_bytes)?;
    if tokens == 0 {
        return Err(NgramError::EmptyCorpus);
    }
    let (adjusted, raw_lower, stats) = cx.adjust(raw, always)?;
    let discounts = cx.discounts(&adjusted, &raw_lower, stats, opts)?;
    drop(raw_lower);
    let orders = cx.interpolate(adjusted, &discounts)?;
    Ok(Streamed {
        n_ids,
        packer,
        discounts,
        tokens,
        plan: plan.clone(),
        orders,
        scratch,
    })
}

/// Count-of-counts n1..n4 of one order's adjusted counts, and its last n-gram in suffix
/// order (compare the last word first) with that n-gram's adjusted count.
#[derive(Default, Clone, Copy)]
struct OrderStats {
    nk: [u64; 4],
    last: Option<(u128, u128, u32)>, // (reversed key, key, adjusted count)
}

/// Adds an order-`m` n-gram's adjusted count to `stats`; `track_last`: also keep the last
/// n-gram in suffix order (orders below the highest).
fn tally(stats: &mut OrderStats, g: Counted, m: usize, p: Packer, track_last: bool) {
    let c = g.count;
    if (1..=4).contains(&c) {
        stats.nk[c as usize - 1] += 1;
    }
    if track_last {
        let mut k = g.key();
        let mut reversed = 0u128;
        for _ in 0..m {
            reversed = (reversed << p.bits) | (k & ((1u128 << p.bits) - 1));
            k >>= p.bits;
        }
        if stats.last.is_none_or(|(r, _, _)| reversed > r) {
            stats.last = Some((reversed, g.key(), c));
        }
    }
}

/// What every stage needs.
struct Cx<'a> {
    n: usize,
    p: Packer,
    start: u32,
    scratch: &'a Scratch,
    plan: &'a Plan,
}

type Files<R> = Vec<RecordFile<R>>;

impl Cx<'_> {
    fn bar(&self, stage: &str, total: u64) -> ProgressBar {
        stage_bar(self.plan.progress, stage, total)
    }

    /// Writes a sorted stream to a file.
    fn save<R: Record>(&self, what: &str, mut m: Merged<R>) -> Result<RecordFile<R>, NgramError> {
        let mut w = self.scratch.writer::<R>(what)?;
        while let Some(r) = m.next_record()? {
            w.push(&r)?;
        }
        w.finish()
    }

    /// Stage 1: raw counts per order (`[m - 1]`: order m), and the tokens counted.
    fn count(
        &self,
        feed: &mut Feed,
        input_bytes: u64,
    ) -> Result<(Files<Counted>, u64), NgramError> {
        let (n, p, budget) = (self.n, self.p, self.plan.budget);
        // Below the highest order only n-grams starting with <s> are counted (a few per
        // sentence): those sorters share an eighth of the budget, at least a workable
        // minimum each.
        let row = std::mem::size_of::<Counted>();
        let least = super::extsort::MIN_SORT_RECORDS * row;
        let lower = if n > 1 {
            (budget / 8 / (n - 1)).max(least)
        } else {
            0
        };
        let top = budget.saturating_sub(lower * (n - 1));
        if top < least {
            return Err(NgramError::Memory(format!(
                "--memory is too small: counting {n}-grams needs at least {} KiB",
                (least * n).div_ceil(1024)
            )));
        }
        let mut sorters = Vec::with_capacity(n);
        for m in 1..=n {
            sorters.push(Sorter::<Counted>::new(
                self.scratch,
                "count",
                if m == n { top } else { lower },
            )?);
        }
        let bar = self.bar("counting", input_bytes);
        let mut tokens = 0u64;
        feed(&mut |sentence, bytes| {
            let mut key: u128 = self.start as u128;
            let mut len = 1usize;
            for &w in sentence {
                key = p.suffix((key << p.bits) | w as u128, n);
                len = (len + 1).min(n);
                sorters[len - 1].push(Counted::new(key, 1))?;
            }
            tokens += sentence.len() as u64;
            bar.inc(bytes);
            Ok(())
        })?;
        bar.finish_and_clear();
        let mut raw = Vec::with_capacity(n);
        for s in sorters {
            raw.push(self.save("raw", s.finish()?)?);
        }
        Ok((raw, tokens))
    }

    /// Stage 2: adjusted counts per order, the raw files below the highest order (for the
    /// quirk), and each order's statistics.
    #[allow(clippy::type_complexity)]
    fn adjust(
        &self,
        mut raw: Files<Counted>,
        always: &[u32],
    ) -> Result<(Files<Counted>, Files<Counted>, Vec<OrderStats>), NgramError> {
        let (n, p) = (self.n, self.p);
        let top = raw.pop().expect("one file per order");
        let total: u64 = top.bytes();
        let bar = self.bar("adjusting counts", total);
        let mut stats = vec![OrderStats::default(); n];
        // adjusted[m - 1], filled from the top.
        let mut adjusted: Vec<Option<RecordFile<Counted>>> = (0..n).map(|_| None).collect();
        {
            let mut r = top.reader(1 << 20)?;
            while let Some(g) = r.next_record()? {
                tally(&mut stats[n - 1], g, n, p, false);
            }
        }
        adjusted[n - 1] = Some(top);
        for m in (1..n).rev() {
            let upper = adjusted[m].as_ref().expect("filled above");
            bar.set_length(
                bar.length()
                    .unwrap_or(0)
                    .max(bar.position() + upper.bytes()),
            );
            let mut sorter = Sorter::<Counted>::new(self.scratch, "suffix", self.plan.budget)?;
            let mut r = upper.reader(1 << 20)?;
            while let Some(g) = r.next_record()? {
                sorter.push(Counted::new(p.suffix(g.key(), m), 1))?;
                bar.inc(Counted::BYTES as u64);
            }
            let mut cont = sorter.finish()?;
            let mut own = raw[m - 1].reader(1 << 20)?;
            let mut w = self.scratch.writer::<Counted>("adjusted")?;
            let mut unigrams = Vec::new();
            let mut emit = |g: Counted, stats: &mut OrderStats| -> Result<(), NgramError> {
                if m == 1 {
                    unigrams.push(g);
                    Ok(())
                } else {
                    tally(stats, g, m, p, true);
                    w.push(&g)
                }
            };
            // Merge the continuation counts with the raw counts kept by n-grams that start
            // with <s> (the two never share a key; a shared one would get both, as in
            // memory).
            let (mut a, mut b) = (cont.next_record()?, own.next_record()?);
            loop {
                match (a, b) {
                    (None, None) => break,
                    (Some(x), Some(y)) if x.key() == y.key() => {
                        emit(Counted::new(x.key(), x.count + y.count), &mut stats[m - 1])?;
                        (a, b) = (cont.next_record()?, own.next_record()?);
                    }
                    (Some(x), y) if y.is_none_or(|y| x.key() < y.key()) => {
                        emit(x, &mut stats[m - 1])?;
                        a = cont.next_record()?;
                    }
                    (_, Some(y)) => {
                        emit(y, &mut stats[m - 1])?;
                        b = own.next_record()?;
                    }
                    (Some(_), None) => unreachable!("handled by the guard above"),
                }
            }
            if m == 1 {
                for g in self.vocabulary(unigrams, always) {
                    tally(&mut stats[0], g, 1, p, true);
                    w.push(&g)?;
                }
            }
            adjusted[m - 1] = Some(w.finish()?);
        }
        if n == 1 {
            // Unigrams only: the raw counts, completed to the vocabulary.
            let top = adjusted[0].take().expect("filled above");
            let mut r = top.reader(1 << 20)?;
            let mut unigrams = Vec::with_capacity(top.len() as usize);
            while let Some(g) = r.next_record()? {
                unigrams.push(g);
            }
            let mut w = self.scratch.writer::<Counted>("adjusted")?;
            for g in self.vocabulary(unigrams, always) {
                w.push(&g)?;
            }
            adjusted[0] = Some(w.finish()?);
        }
        bar.finish_and_clear();
        let adjusted = adjusted
            .into_iter()
            .map(|f| f.expect("every order adjusted"))
            .collect();
        Ok((adjusted, raw, stats))
    }

    /// The unigrams completed to the vocabulary: every id of `always` is one (count 0 when
    /// unseen), `<s>` is not; in key order.
    fn vocabulary(&self, mut unigrams: Vec<Counted>, always: &[u32]) -> Vec<Counted> {
        let mut seen: rustc_hash::FxHashSet<u128> = unigrams.iter().map(|g| g.key()).collect();
        for &id in always {
            if id != self.start && seen.insert(id as u128) {
                unigrams.push(Counted::new(id as u128, 0));
            }
        }
        unigrams.retain(|g| g.key() != self.start as u128);
        unigrams.sort_unstable_by_key(|g| g.key());
        unigrams
    }

    /// Stage 3: discounts per order, with lmplz's count-of-counts quirk when asked for.
    fn discounts(
        &self,
        adjusted: &Files<Counted>,
        raw_lower: &Files<Counted>,
        mut stats: Vec<OrderStats>,
        opts: &KnOptions,
    ) -> Result<Vec<Discounts>, NgramError> {
        let (n, p) = (self.n, self.p);
        if opts.kenlm_quirk && n > 1 {
            // The raw count of each order's last n-gram in suffix order: how often it
            // ends a counted n-gram (all of the highest order's, and the <s>-initial
            // lower-order ones, which keep raw counts).
            let targets: Vec<Option<u128>> = (1..n)
                .map(|m| stats[m - 1].last.map(|(_, k, _)| k))
                .collect();
            let mut raw_counts = vec![0u32; n];
            for len in 1..=n {
                let file = if len == n {
                    &adjusted[n - 1]
                } else {
                    &raw_lower[len - 1]
                };
                let mut r = file.reader(1 << 20)?;
                while let Some(g) = r.next_record()? {
                    for m in 1..=len.min(n - 1) {
                        if targets[m - 1] == Some(p.suffix(g.key(), m)) {
                            raw_counts[m - 1] = raw_counts[m - 1].wrapping_add(g.count);
                        }
                    }
                }
            }
            for m in 1..n {
                if let Some((_, _, adjusted_count)) = stats[m - 1].last {
                    let nk = &mut stats[m - 1].nk;
                    for (c, d) in [(adjusted_count, -1i64), (raw_counts[m - 1], 1)] {
                        if (1..=4).contains(&c) {
                            nk[c as usize - 1] = (nk[c as usize - 1] as i64 + d) as u64;
                        }
                    }
                }
            }
        }
        (1..=n)
            .map(|m| discount(m, stats[m - 1].nk, opts.discount_fallback))
            .collect()
    }

    /// Stage 4: probabilities and backoffs, bottom up; the final stream of every order.
    fn interpolate(
        &self,
        adjusted: Files<Counted>,
        discounts: &[Discounts],
    ) -> Result<Files<Final>, NgramError> {
        let (n, p) = (self.n, self.p);
        let total: u64 = adjusted.iter().map(|f| f.bytes()).sum();
        let bar = self.bar("interpolating", total);
        let vocab_types = adjusted[0].len() as f64; // without <s>
        let mut finals: Files<Final> = Vec::with_capacity(n);
        let mut lower: Option<RecordFile<Logged>> = None;
        for (m, file) in (1..=n).zip(adjusted) {
            let d = discounts[m - 1];
            let gamma_of = |s: &[u64; 4]| -> f64 {
                (d[0] as f64 * s[1] as f64 + d[1] as f64 * s[2] as f64 + d[2] as f64 * s[3] as f64)
                    / s[0] as f64
            };
            let half = self.plan.budget / 2;
            let mut by_suffix = Sorter::<Suffixed>::new(self.scratch, "by-suffix", half)?;
            let mut gammas = self.scratch.writer::<Logged>("gamma")?;
            let mut unigrams: Vec<(u128, f32)> = Vec::new();
            let mut r = file.reader(1 << 20)?;
            let mut group: Vec<Counted> = Vec::new();
            let mut next = r.next_record()?;
            while let Some(first) = next {
                // One context: its n-grams are adjacent in key order.
                let ctx = first.key() >> p.bits;
                group.clear();
                while let Some(g) = next.filter(|g| g.key() >> p.bits == ctx) {
                    group.push(g);
                    next = r.next_record()?;
                }
                bar.inc((group.len() * Counted::BYTES) as u64);
                let mut s = [0u64; 4];
                for g in &group {
                    s[0] += g.count as u64;
                    if g.count > 0 {
                        s[(g.count as usize).min(3)] += 1;
                    }
                }
                let gamma = gamma_of(&s);
                if m > 1 {
                    gammas.push(&Logged::new(ctx, gamma.log10() as f32))?;
                }
                for g in &group {
                    let c = g.count;
                    let dc = if c == 0 {
                        0.0
                    } else {
                        d[(c as usize).min(3) - 1] as f64
                    };
                    let share = (c as f64 - dc) / s[0] as f64;
                    if m == 1 {
                        let prob = (share + gamma * (1.0 / vocab_types)).log10() as f32;
                        unigrams.push((g.key(), prob));
                    } else {
                        let key = g.key();
                        let first = p.first(key, m) as u128;
                        let rot = (p.suffix(key, m - 1) << p.bits) | first;
                        by_suffix.push(Suffixed {
                            rot_hi: (rot >> 64) as u64,
                            rot_lo: rot as u64,
                            share,
                            gamma,
                        })?;
                    }
                }
            }
            drop(r);
            drop(file);
            if m == 1 {
                // <s>: in the vocabulary, never predicted (log10 p = 0, as lmplz writes).
                if n > 1 {
                    let start = self.start as u128;
                    let pos = unigrams.partition_point(|&(k, _)| k < start);
                    unigrams.insert(pos, (start, 0.0));
                }
                let mut probs = self.scratch.writer::<Logged>("prob")?;
                for (k, prob) in unigrams.drain(..) {
                    probs.push(&Logged::new(k, prob))?;
                }
                lower = Some(probs.finish()?);
                continue;
            }
            let gammas = gammas.finish()?;
            let below = lower.take().expect("order m-1 done");
            finals.push(self.finish_order(&below, Some(&gammas))?);
            // The lower-order term, by merge-join on the suffix.
            let mut by_key = Sorter::<Logged>::new(self.scratch, "by-key", half)?;
            let mut joined = by_suffix.finish()?;
            let mut lr = below.reader(1 << 20)?;
            let mut low = lr.next_record()?;
            while let Some(g) = joined.next_record()? {
                let rot = g.key();
                let suffix = rot >> p.bits;
                while low.is_some_and(|l| l.key() < suffix) {
                    low = lr.next_record()?;
                }
                let l = low.filter(|l| l.key() == suffix).ok_or_else(|| {
                    NgramError::Invalid(format!(
                        "order {m}: the suffix of an n-gram is missing from order {}",
                        m - 1
                    ))
                })?;
                let key = ((rot & ((1u128 << p.bits) - 1)) << (p.bits * (m as u32 - 1))) | suffix;
                let prob = (g.share + g.gamma * 10f64.powf(l.log10 as f64)).log10() as f32;
                by_key.push(Logged::new(key, prob))?;
            }
            drop(joined);
            lower = Some(self.save("prob", by_key.finish()?)?);
        }
        let top = lower.take().expect("the highest order");
        finals.push(self.finish_order(&top, None)?);
        bar.finish_and_clear();
        Ok(finals)
    }

    /// An order's final stream: its probabilities with the backoffs (log10 gamma of the
    /// same n-gram as a context one order up; 0 and not extending when it is none).
    fn finish_order(
        &self,
        probs: &RecordFile<Logged>,
        gammas: Option<&RecordFile<Logged>>,
    ) -> Result<RecordFile<Final>, NgramError> {
        let mut w = self.scratch.writer::<Final>("final")?;
        let mut pr = probs.reader(1 << 20)?;
        let mut gr: Option<RecordReader<Logged>> = gammas.map(|g| g.reader(1 << 20)).transpose()?;
        let mut gamma = match &mut gr {
            Some(r) => r.next_record()?,
            None => None,
        };
        while let Some(g) = pr.next_record()? {
            let key = g.key();
            if let Some(r) = &mut gr {
                while gamma.is_some_and(|x| x.key() < key) {
                    gamma = r.next_record()?;
                }
            }
            let hit = gamma.filter(|x| x.key() == key);
            w.push(&Final {
                key,
                prob: g.log10,
                backoff: hit.map_or(0.0, |x| x.log10),
                extends: hit.is_some(),
            })?;
        }
        w.finish()
    }
}
