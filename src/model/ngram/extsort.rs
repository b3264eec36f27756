//! External sorting of fixed-size records within a memory budget: what the bounded-memory
//! Kneser-Ney pipeline ([`super::streamed`]) streams its n-grams through.
//!
//! A [`Sorter`] fills a buffer of at most `budget` bytes; when it is full the buffer is
//! sorted by the records' u128 key and, for records that combine (counts of the same
//! n-gram), equal keys are folded together. If folding freed at least half the buffer,
//! filling goes on (a corpus that repeats itself never touches the disk); otherwise the
//! buffer is written to a sorted run file in a [`Scratch`] directory. [`Sorter::finish`]
//! returns a [`Merged`] stream: the buffer itself when nothing was spilled, or a k-way
//! merge (a binary heap over the runs' heads) that folds equal keys across runs. When the
//! runs are too many for each to get a read buffer of [`MIN_READ_BUFFER`] bytes within
//! the budget, groups of them are merged into longer runs first (multi-pass merge).
//!
//! Written by hand, not taken from a crate: the records, their on-disk encoding and the
//! folding of duplicates are the estimator's own, and the whole of it is ~300 lines.
//!
//! Files are plain concatenations of `R::BYTES`-byte encodings ([`RecordFile`]); each is
//! removed when dropped and the scratch directory when the [`Scratch`] is, so a failed
//! or finished run leaves nothing behind.

use super::NgramError;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Smallest read buffer a run gets while merging; fewer bytes per run and the runs are
/// merged in several passes.
pub const MIN_READ_BUFFER: usize = 4 << 10;
/// Largest read or write buffer of one stream (more buys nothing for sequential I/O).
const MAX_IO_BUFFER: usize = 1 << 20;

/// A fixed-size record with a sort key.
pub trait Record: Copy {
    /// Bytes of the encoding (at most 64).
    const BYTES: usize;
    /// The sort key (ascending).
    fn key(&self) -> u128;
    /// Writes the record into `out` (`BYTES` long).
    fn encode(&self, out: &mut [u8]);
    /// Reads a record from `b` (`BYTES` long).
    fn decode(b: &[u8]) -> Self;
    /// Folds `other`, a record with the same key, into `self`; false when records with
    /// equal keys stay separate (the default).
    fn absorb(&mut self, _other: &Self) -> bool {
        false
    }
}

/// A directory for temporary files, removed with everything in it when dropped.
pub struct Scratch {
    dir: PathBuf,
    /// Atomic (not `Cell`) so that writers reading different files can share the
    /// scratch directory across threads (`model.bin` and ARPA are written at once).
    next: AtomicUsize,
    runs: AtomicUsize,
}

impl Scratch {
    /// Creates `parent/.sort.tmp.PID` (the name `arlm::outdir::remove_stale_temps` knows,
    /// so a killed run's leftovers are removed by the next one).
    pub fn new(parent: &Path) -> Result<Scratch, NgramError> {
        let dir = parent.join(format!(".sort.tmp.{}", std::process::id()));
        let io = |source| NgramError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(parent).map_err(io)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io)?;
        }
        std::fs::create_dir(&dir).map_err(io)?;
        Ok(Scratch {
            dir,
            next: AtomicUsize::new(0),
            runs: AtomicUsize::new(0),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Sorted runs spilled by the sorters using this directory so far.
    pub fn runs_spilled(&self) -> usize {
        self.runs.load(Ordering::Relaxed)
    }

    /// A fresh file name in the directory (`what` makes it readable in listings).
    fn file_name(&self, what: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{n:05}-{what}"))
    }

    /// Starts writing a new record file.
    pub fn writer<R: Record>(&self, what: &str) -> Result<RecordWriter<R>, NgramError> {
        RecordWriter::create(self.file_name(what))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> NgramError + '_ {
    move |source| NgramError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes records to a file, in the order given.
pub struct RecordWriter<R: Record> {
    out: BufWriter<File>,
    path: PathBuf,
    len: u64,
    _r: PhantomData<R>,
}

impl<R: Record> RecordWriter<R> {
    fn create(path: PathBuf) -> Result<Self, NgramError> {
        let f = File::create(&path).map_err(io_err(&path))?;
        Ok(RecordWriter {
            out: BufWriter::with_capacity(MAX_IO_BUFFER, f),
            path,
            len: 0,
            _r: PhantomData,
        })
    }

    /// Appends `r`.
    #[inline]
    pub fn push(&mut self, r: &R) -> Result<(), NgramError> {
        let mut b = [0u8; 64];
        r.encode(&mut b[..R::BYTES]);
        self.len += 1;
        self.out
            .write_all(&b[..R::BYTES])
            .map_err(io_err(&self.path))
    }

    /// Flushes and closes the file.
    pub fn finish(self) -> Result<RecordFile<R>, NgramError> {
        let path = self.path;
        self.out
            .into_inner()
            .map_err(|e| NgramError::Io {
                path: path.clone(),
                source: e.into_error(),
            })?
            .flush()
            .map_err(io_err(&path))?;
        Ok(RecordFile {
            path,
            len: self.len,
            _r: PhantomData,
        })
    }
}

/// A file of `len` records, removed when dropped.
pub struct RecordFile<R: Record> {
    path: PathBuf,
    len: u64,
    _r: PhantomData<R>,
}

impl<R: Record> RecordFile<R> {
    /// Number of records.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the file holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of the file.
    pub fn bytes(&self) -> u64 {
        self.len * R::BYTES as u64
    }

    /// Reads the records in order through a buffer of about `buffer` bytes.
    pub fn reader(&self, buffer: usize) -> Result<RecordReader<R>, NgramError> {
        let f = File::open(&self.path).map_err(io_err(&self.path))?;
        let cap = buffer.clamp(R::BYTES, MAX_IO_BUFFER);
        Ok(RecordReader {
            input: BufReader::with_capacity(cap, f),
            path: self.path.clone(),
            left: self.len,
            _r: PhantomData,
        })
    }
}

impl<R: Record> Drop for RecordFile<R> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads a [`RecordFile`] front to back.
pub struct RecordReader<R: Record> {
    input: BufReader<File>,
    path: PathBuf,
    left: u64,
    _r: PhantomData<R>,
}

impl<R: Record> RecordReader<R> {
    /// The next record, or `None` at the end.
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<R>, NgramError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        let mut b = [0u8; 64];
        self.input
            .read_exact(&mut b[..R::BYTES])
            .map_err(io_err(&self.path))?;
        Ok(Some(R::decode(&b[..R::BYTES])))
    }
}

/// Sorts records within a memory budget (see the module doc).
pub struct Sorter<'s, R: Record> {
    scratch: &'s Scratch,
    what: &'static str,
    buf: Vec<R>,
    cap: usize,
    budget: usize,
    runs: Vec<RecordFile<R>>,
}

/// Fewest records a sorter's buffer must hold for the budget to count as workable.
pub const MIN_SORT_RECORDS: usize = 256;

impl<'s, R: Record> Sorter<'s, R> {
    /// A sorter that holds at most `budget` bytes of records in memory. The buffer is
    /// reserved up front: pages are only resident once records are written into them.
    pub fn new(
        scratch: &'s Scratch,
        what: &'static str,
        budget: usize,
    ) -> Result<Self, NgramError> {
        let cap = budget / std::mem::size_of::<R>();
        if cap < MIN_SORT_RECORDS {
            return Err(NgramError::Memory(format!(
                "--memory is too small: the {what} sort gets {budget} bytes, too few for \
                 {MIN_SORT_RECORDS} records of {} bytes",
                std::mem::size_of::<R>()
            )));
        }
        let mut buf = Vec::new();
        buf.try_reserve_exact(cap).map_err(|_| {
            NgramError::Memory(format!(
                "--memory: the {what} sort cannot reserve {budget} bytes of address space"
            ))
        })?;
        Ok(Sorter {
            scratch,
            what,
            buf,
            cap,
            budget,
            runs: Vec::new(),
        })
    }

    /// Adds a record.
    #[inline]
    pub fn push(&mut self, r: R) -> Result<(), NgramError> {
        if self.buf.len() == self.cap {
            self.sort_buffer();
            if self.buf.len() > self.cap / 2 {
                self.spill()?;
            }
        }
        self.buf.push(r);
        Ok(())
    }

    /// Number of runs written to disk so far.
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Sorts the buffer and folds equal keys.
    fn sort_buffer(&mut self) {
        self.buf.sort_unstable_by_key(|r| r.key());
        let mut w = 0usize;
        for i in 0..self.buf.len() {
            let r = self.buf[i];
            if w > 0 && self.buf[w - 1].key() == r.key() && self.buf[w - 1].absorb(&r) {
                continue;
            }
            self.buf[w] = r;
            w += 1;
        }
        self.buf.truncate(w);
    }

    fn spill(&mut self) -> Result<(), NgramError> {
        let mut w = self.scratch.writer::<R>(self.what)?;
        for r in &self.buf {
            w.push(r)?;
        }
        self.runs.push(w.finish()?);
        self.scratch.runs.fetch_add(1, Ordering::Relaxed);
        self.buf.clear();
        Ok(())
    }

    /// The records in key order, equal keys folded.
    pub fn finish(mut self) -> Result<Merged<R>, NgramError> {
        self.sort_buffer();
        if self.runs.is_empty() {
            return Ok(Merged::Memory {
                buf: std::mem::take(&mut self.buf),
                at: 0,
            });
        }
        if !self.buf.is_empty() {
            self.spill()?;
        }
        self.buf = Vec::new();
        let fan_in = (self.budget / MIN_READ_BUFFER).max(2);
        let mut runs = std::mem::take(&mut self.runs);
        while runs.len() > fan_in {
            // Merge the first `fan_in` runs into one, at the back: every run is merged
            // about log_fan_in(runs) times.
            let group: Vec<RecordFile<R>> = runs.drain(..fan_in).collect();
            let mut merged = Merged::of_runs(group, self.budget)?;
            let mut w = self.scratch.writer::<R>(self.what)?;
            while let Some(r) = merged.next_record()? {
                w.push(&r)?;
            }
            runs.push(w.finish()?);
        }
        Merged::of_runs(runs, self.budget)
    }
}

/// A sorted stream: a sorter's buffer, or a merge of sorted runs.
pub enum Merged<R: Record> {
    /// Nothing was spilled: the sorted buffer.
    Memory { buf: Vec<R>, at: usize },
    /// A k-way merge of runs (the heap holds each run's head key and index).
    Runs {
        readers: Vec<RecordReader<R>>,
        heads: Vec<Option<R>>,
        heap: BinaryHeap<Reverse<(u128, usize)>>,
        /// Kept so the files live (and are removed) with the merge.
        _files: Vec<RecordFile<R>>,
    },
}

impl<R: Record> Merged<R> {
    fn of_runs(files: Vec<RecordFile<R>>, budget: usize) -> Result<Self, NgramError> {
        let per_run = budget / files.len().max(1);
        let mut readers = Vec::with_capacity(files.len());
        let mut heads = Vec::with_capacity(files.len());
        let mut heap = BinaryHeap::with_capacity(files.len());
        for (i, f) in files.iter().enumerate() {
            let mut r = f.reader(per_run)?;
            let head = r.next_record()?;
            if let Some(h) = &head {
                heap.push(Reverse((h.key(), i)));
            }
            readers.push(r);
            heads.push(head);
        }
        Ok(Merged::Runs {
            readers,
            heads,
            heap,
            _files: files,
        })
    }

    /// The next record in key order (equal keys folded), or `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<R>, NgramError> {
        match self {
            Merged::Memory { buf, at } => {
                let r = buf.get(*at).copied();
                *at += 1;
                if *at >= buf.len() && !buf.is_empty() {
                    // Give the memory back as soon as the stream is drained.
                    *buf = Vec::new();
                    *at = 0;
                }
                Ok(r)
            }
            Merged::Runs {
                readers,
                heads,
                heap,
                ..
            } => {
                let mut pop = |heap: &mut BinaryHeap<Reverse<(u128, usize)>>| {
                    let Reverse((_, i)) = heap.pop()?;
                    let r = heads[i].take().expect("a run in the heap has a head");
                    Some((r, i))
                };
                let Some((mut out, i)) = pop(heap) else {
                    return Ok(None);
                };
                let mut refill = |i: usize,
                                  heads: &mut Vec<Option<R>>,
                                  heap: &mut BinaryHeap<Reverse<(u128, usize)>>|
                 -> Result<(), NgramError> {
                    heads[i] = readers[i].next_record()?;
                    if let Some(h) = &heads[i] {
                        heap.push(Reverse((h.key(), i)));
                    }
                    Ok(())
                };
                refill(i, heads, heap)?;
                while let Some(&Reverse((k, j))) = heap.peek() {
                    if k != out.key() {
                        break;
                    }
                    let other = heads[j].expect("a run in the heap has a head");
                    if !out.absorb(&other) {
                        break;
                    }
                    heap.pop();
                    heads[j] = None;
                    refill(j, heads, heap)?;
                }
                Ok(Some(out))
            }
        }
    }
}

/// A u128 sort key kept as two u64, so a record with a 4-byte payload is 24 bytes in
/// memory, not 32 (a u128 field would align the record to 16); encoded as 16 bytes,
/// little-endian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitKey {
    hi: u64,
    lo: u64,
}

impl SplitKey {
    #[inline]
    pub fn new(key: u128) -> SplitKey {
        SplitKey {
            hi: (key >> 64) as u64,
            lo: key as u64,
        }
    }

    #[inline]
    pub fn get(self) -> u128 {
        ((self.hi as u128) << 64) | self.lo as u128
    }

    /// Writes the key into `out[..16]`.
    pub fn encode(self, out: &mut [u8]) {
        out[..16].copy_from_slice(&self.get().to_le_bytes());
    }

    /// Reads a key from `b[..16]`.
    pub fn decode(b: &[u8]) -> SplitKey {
        SplitKey::new(u128::from_le_bytes(b[..16].try_into().expect("16 bytes")))
    }
}

/// An n-gram's packed key with a count: what counting and adjusting sort and fold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    key: SplitKey,
    /// Occurrences (raw counts) or distinct extensions (continuation counts).
    pub count: u32,
}

impl Counted {
    /// The record of `key` with `count`.
    #[inline]
    pub fn new(key: u128, count: u32) -> Counted {
        Counted {
            key: SplitKey::new(key),
            count,
        }
    }
}

impl Record for Counted {
    const BYTES: usize = 20;
    #[inline]
    fn key(&self) -> u128 {
        self.key.get()
    }
    fn encode(&self, out: &mut [u8]) {
        self.key.encode(out);
        out[16..20].copy_from_slice(&self.count.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        Counted {
            key: SplitKey::decode(b),
            count: u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
        }
    }
    #[inline]
    fn absorb(&mut self, other: &Self) -> bool {
        self.count = self.count.saturating_add(other.count);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(mut m: Merged<Counted>) -> Vec<(u128, u32)> {
        let mut out = Vec::new();
        while let Some(r) = m.next_record().unwrap() {
            out.push((r.key(), r.count));
        }
        out
    }

    /// Brute force: a BTreeMap of summed counts.
    fn expected(items: &[(u128, u32)]) -> Vec<(u128, u32)> {
        let mut m = std::collections::BTreeMap::new();
        for &(k, c) in items {
            *m.entry(k).or_insert(0u32) += c;
        }
        m.into_iter().collect()
    }

    fn sort_with(items: &[(u128, u32)], budget: usize) -> (Vec<(u128, u32)>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(dir.path()).unwrap();
        let mut s = Sorter::new(&scratch, "test", budget).unwrap();
        for &(k, c) in items {
            s.push(Counted::new(k, c)).unwrap();
        }
        let runs = s.runs();
        let out = drain(s.finish().unwrap());
        (out, runs)
    }

    fn pseudo_random(n: usize, distinct: u64, seed: u64) -> Vec<(u128, u32)> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let k = (state >> 20) % distinct;
                // High bits too, so both halves of the key are compared.
                ((k as u128) << 70 | k as u128, 1 + (state >> 60) as u32)
            })
            .collect()
    }

    #[test]
    fn duplicates_across_many_runs_are_folded() {
        let items = pseudo_random(50_000, 20_000, 7);
        let budget = MIN_SORT_RECORDS * 24 * 2;
        let (got, runs) = sort_with(&items, budget);
        assert!(runs > 20, "the budget should force many runs, got {runs}");
        assert_eq!(got, expected(&items));
    }

    #[test]
    fn multi_pass_merge_when_runs_exceed_the_fan_in() {
        // 6 KiB: 256 records per buffer, fan-in 2 (4 KiB read buffers): many passes.
        let items = pseudo_random(30_000, 1 << 40, 3);
        let (got, runs) = sort_with(&items, 6 << 10);
        assert!(runs > 8, "{runs}");
        assert_eq!(got, expected(&items));
    }

    #[test]
    fn repeated_keys_fold_in_memory_without_spilling() {
        let items: Vec<(u128, u32)> = (0..100_000).map(|i| ((i % 10) as u128, 1)).collect();
        let (got, runs) = sort_with(&items, 64 << 10);
        assert_eq!(runs, 0);
        assert_eq!(got, expected(&items));
    }

    #[test]
    fn empty_input_and_a_single_run() {
        let (got, runs) = sort_with(&[], 64 << 10);
        assert_eq!((got, runs), (vec![], 0));
        // Exactly one spilled run plus the rest of the buffer.
        let items = pseudo_random(MIN_SORT_RECORDS + 10, 1 << 40, 11);
        let (got, runs) = sort_with(&items, MIN_SORT_RECORDS * 24);
        assert_eq!(runs, 1);
        assert_eq!(got, expected(&items));
    }

    #[test]
    fn a_budget_below_the_minimum_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(dir.path()).unwrap();
        let e = Sorter::<Counted>::new(&scratch, "test", 100).err().unwrap();
        assert!(matches!(e, NgramError::Memory(_)), "{e}");
    }

    #[test]
    fn scratch_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let scratch = Scratch::new(dir.path()).unwrap();
            path = scratch.path().to_path_buf();
            let mut s = Sorter::new(&scratch, "test", MIN_SORT_RECORDS * 24).unwrap();
            for (k, c) in pseudo_random(5000, 1 << 40, 5) {
                s.push(Counted::new(k, c)).unwrap();
            }
            assert!(std::fs::read_dir(&path).unwrap().count() > 0);
            let m = s.finish().unwrap();
            drop(m);
            assert_eq!(std::fs::read_dir(&path).unwrap().count(), 0);
        }
        assert!(!path.exists());
    }
}
