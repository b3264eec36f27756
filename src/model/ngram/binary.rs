//! The binary n-gram model file (`model.bin`): the query tables of a [`BackoffModel`]
//! exactly as they lie in memory, so loading is one `mmap` and a header check.
//!
//! # Layout (all numbers little-endian)
//! ```text
//! offset  size  field
//!      0     8  magic "arlm-kn\n"
//!      8     4  format version (2; version 1 files, without a vocabulary, still load)
//!     12     4  order n (1..=12)
//!     16     8  vocab_size (ids visible to callers; the tokenizer's size)
//!     24     8  n_ids (unigram slots: vocab_size, plus 1 when <s> is a virtual id)
//!     32     4  start id (<s>)        36  4  end-of-text id (</s>)
//!     40     4  unk id                44  4  hash function (1: see backoff.rs)
//!     48     8  file length in bytes (a truncated copy is refused)
//!     56     8  byte offset of the vocabulary section (0: none; always 0 in version 1)
//!     64  32*n  per order m = 1..n: n-gram count, slots, byte offset, reserved (u64 each)
//! then, each at an offset that is a multiple of 64:
//!   order 1: n_ids slots of (log10 p: f32, log10 backoff: f32), indexed by id
//!   order m>1: a power-of-two number of 16-byte slots (hash: u64, log10 p: f32,
//!              log10 backoff: f32), an open-addressing table probed linearly from
//!              (hash >> 7) & (slots - 1); hash 0 marks an empty slot.
//!   vocabulary (models over the words tokenizer): its byte length (u64), then the
//!              words tokenizer's vocabulary table as `tokenizer::word_table` lays it
//!              out (the words, and a hash table from word to id).
//! ```
//! With the vocabulary in the file, loading a model directory maps it too and does not
//! parse `tokenizer.json` (which `arlm ngram fit` still writes beside it, for other
//! tools): loading costs the same whatever the vocabulary's size. `model.bin` is then the
//! directory's vocabulary; a `tokenizer.json` edited afterwards is not read. A model
//! without the section (another tokenizer, or a version 1 file) loads its tokenizer from
//! `tokenizer.json`.
//! A log10 backoff of -0.0 (sign bit set) marks a zero backoff of an n-gram that is no
//! longer n-gram's context (KenLM's convention; the query state drops it), +0.0 one that is.
//! A slot stores the 64-bit hash of its n-gram, not its words (as KenLM's probing model):
//! the file answers queries but cannot be turned back into ARPA, which is why
//! `arlm ngram fit` also keeps `model.arpa` unless `--no-arpa` is given.
//!
//! # What loading checks
//! Everything that costs no pass over the tables: the magic, version, endianness, hash
//! function, that the file has exactly the length its header says (a truncated or
//! appended file is refused), that every section lies inside the file, aligned and in
//! order, that table sizes are powers of two larger than their counts, every
//! unigram's numbers (a probability <= 0, finite backoff), and the vocabulary section's
//! header against its length and the model's vocabulary size (its own checks are in
//! `tokenizer::word_table`). The higher-order slots are
//! trusted as written, as KenLM trusts its binaries: checking them would read the whole
//! file and lose the point of mapping it. A query on a damaged table still terminates (a
//! probe visits each slot at most once). The mapping is read-only; a file changed while
//! mapped (not by arlm, which writes atomically) changes the numbers under the model.

use super::backoff::{BackoffModel, Entry, Slots, Table, Unigram};
use super::{NgramError, MAX_ORDER};
use crate::tokenizer::word_table::WordTable;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The first 8 bytes of a binary model.
pub const MAGIC: &[u8; 8] = b"arlm-kn\n";
/// The format version this build writes (it reads this one and version 1).
pub const VERSION: u32 = 2;
/// The hash function of `backoff.rs` the tables are keyed by.
const HASH_ID: u32 = 1;
/// KenLM's binary files start with this text.
const KENLM_MAGIC: &[u8] = b"mmap lm ";
const HEADER: usize = 64;
const ORDER_ENTRY: usize = 32;
const ALIGN: usize = 64;

/// True when the file at `path` starts with [`MAGIC`].
pub fn is_binary(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == MAGIC
}

fn align_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

/// Writes `model` to `path` atomically (a temp file renamed into place), with the
/// vocabulary `vocab` when the model is over the words tokenizer.
pub fn write(
    path: &Path,
    model: &BackoffModel,
    vocab: Option<&WordTable>,
) -> Result<(), NgramError> {
    let (ids, unigrams, tables) = model.parts();
    let table_slots: Vec<usize> = tables.iter().map(|(s, _)| s.len()).collect();
    let shape = Shape {
        order: model.order(),
        vocab_size: model.vocab_size(),
        ids,
        counts: model.counts(),
        table_slots: &table_slots,
        vocab,
    };
    write_with(path, &shape, unigrams, &mut |m, put| put(tables[m - 2].0))
}

/// What the header of a binary model says.
pub(super) struct Shape<'a> {
    pub(super) order: usize,
    pub(super) vocab_size: usize,
    /// (start, end-of-text, unk).
    pub(super) ids: [u32; 3],
    /// n-grams per order.
    pub(super) counts: &'a [usize],
    /// Slots of each table of order 2..=n.
    pub(super) table_slots: &'a [usize],
    /// The words vocabulary, stored after the tables.
    pub(super) vocab: Option<&'a WordTable>,
}

/// Hands one order's table to the file writer.
pub(super) type PutTable<'a> = dyn FnMut(&[Entry]) -> Result<(), NgramError> + 'a;

/// Writes a binary model to `path` atomically: the header from `shape`, the unigrams,
/// then each order m >= 2 as `table(m, put)` hands it to `put`, whole or in consecutive
/// pieces (so a streaming writer needs none of it in memory at once).
pub(super) fn write_with(
    path: &Path,
    shape: &Shape,
    unigrams: &[Unigram],
    table: &mut dyn FnMut(usize, &mut PutTable) -> Result<(), NgramError>,
) -> Result<(), NgramError> {
    let io = |source| NgramError::Io {
        path: path.to_path_buf(),
        source,
    };
    let order = shape.order;
    // Section offsets.
    let mut offsets = Vec::with_capacity(order);
    let mut at = align_up(HEADER + ORDER_ENTRY * order);
    offsets.push(at);
    at = align_up(at + std::mem::size_of_val(unigrams));
    for &slots in shape.table_slots {
        offsets.push(at);
        at = align_up(at + slots * std::mem::size_of::<Entry>());
    }
    let vocab_at = shape.vocab.map(|v| {
        let start = at;
        at = align_up(at + 8 + v.as_bytes().len());
        start
    });
    let file_len = at;

    let mut head = Vec::with_capacity(offsets[0]);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&(order as u32).to_le_bytes());
    head.extend_from_slice(&(shape.vocab_size as u64).to_le_bytes());
    head.extend_from_slice(&(unigrams.len() as u64).to_le_bytes());
    for id in shape.ids {
        head.extend_from_slice(&id.to_le_bytes());
    }
    head.extend_from_slice(&HASH_ID.to_le_bytes());
    head.extend_from_slice(&(file_len as u64).to_le_bytes());
    head.extend_from_slice(&(vocab_at.unwrap_or(0) as u64).to_le_bytes());
    let slots_of = |m: usize| {
        if m == 0 {
            unigrams.len()
        } else {
            shape.table_slots[m - 1]
        }
    };
    for (m, &off) in offsets.iter().enumerate() {
        for v in [shape.counts[m], slots_of(m), off, 0] {
            head.extend_from_slice(&(v as u64).to_le_bytes());
        }
    }
    let mut file = crate::atomic::AtomicFile::create(path).map_err(io)?;
    {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        let mut written = 0usize;
        let pad_to = |out: &mut dyn Write, written: &mut usize, to: usize| {
            out.write_all(&vec![0u8; to - *written])?;
            *written = to;
            Ok::<_, std::io::Error>(())
        };
        out.write_all(&head).map_err(io)?;
        written += head.len();
        pad_to(&mut out, &mut written, offsets[0]).map_err(io)?;
        for u in unigrams {
            out.write_all(&u.prob.to_le_bytes()).map_err(io)?;
            out.write_all(&u.backoff.to_le_bytes()).map_err(io)?;
        }
        written += std::mem::size_of_val(unigrams);
        for m in 2..=order {
            pad_to(&mut out, &mut written, offsets[m - 1]).map_err(io)?;
            let want = shape.table_slots[m - 2];
            let mut got = 0usize;
            let mut put = |slots: &[Entry]| -> Result<(), NgramError> {
                got += slots.len();
                if got > want {
                    return Err(NgramError::Invalid(format!(
                        "order {m}: more than the {want} slots the header says"
                    )));
                }
                let mut buf = Vec::with_capacity(16 << 12);
                for chunk in slots.chunks(1 << 12) {
                    buf.clear();
                    for e in chunk {
                        buf.extend_from_slice(&e.key.to_le_bytes());
                        buf.extend_from_slice(&e.prob.to_le_bytes());
                        buf.extend_from_slice(&e.backoff.to_le_bytes());
                    }
                    out.write_all(&buf).map_err(io)?;
                }
                Ok(())
            };
            table(m, &mut put)?;
            if got != want {
                return Err(NgramError::Invalid(format!(
                    "order {m}: a table of {got} slots, the header says {want}"
                )));
            }
            written += want * std::mem::size_of::<Entry>();
        }
        if let (Some(v), Some(vat)) = (shape.vocab, vocab_at) {
            pad_to(&mut out, &mut written, vat).map_err(io)?;
            let bytes = v.as_bytes();
            out.write_all(&(bytes.len() as u64).to_le_bytes())
                .map_err(io)?;
            out.write_all(bytes).map_err(io)?;
            written += 8 + bytes.len();
        }
        pad_to(&mut out, &mut written, file_len).map_err(io)?;
        out.flush().map_err(io)?;
    }
    file.commit().map_err(io)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Maps the binary model at `path`. `describe` is the model's one-line description.
pub fn load(path: &Path, describe: &str) -> Result<BackoffModel, NgramError> {
    Ok(load_with_vocab(path, describe)?.0)
}

/// Maps the binary model at `path` and its vocabulary, when the file has one.
pub fn load_with_vocab(
    path: &Path,
    describe: &str,
) -> Result<(BackoffModel, Option<WordTable>), NgramError> {
    let bad = |message: String| NgramError::Binary {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| NgramError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: the map is read-only; arlm replaces model files atomically (rename), so the
    // mapped inode never changes under it. Another process editing the file in place
    // would change the numbers read, which the module doc states.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| NgramError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let b: &[u8] = &map;
    if b.len() < HEADER {
        if b.starts_with(KENLM_MAGIC) || !MAGIC.starts_with(&b[..b.len().min(8)]) {
            return Err(bad("not an arlm binary n-gram model (wrong magic)".into()));
        }
        return Err(bad(format!(
            "truncated: {} bytes, shorter than the {HEADER}-byte header",
            b.len()
        )));
    }
    if &b[..8] != MAGIC {
        if b.starts_with(KENLM_MAGIC) {
            return Err(bad(
                "a KenLM binary, which arlm does not read; convert the ARPA file it was built \
                 from with `arlm ngram build-binary MODEL.arpa OUT`"
                    .into(),
            ));
        }
        return Err(bad("not an arlm binary n-gram model (wrong magic)".into()));
    }
    let version = u32_at(b, 8);
    if version != VERSION && version != 1 {
        return Err(bad(format!(
            "format version {version}, this build reads versions 1 and {VERSION}; rebuild it \
             with `arlm ngram build-binary` from the model's ARPA file"
        )));
    }
    if cfg!(target_endian = "big") {
        return Err(bad(
            "binary models are little-endian; this machine is not".into()
        ));
    }
    let order = u32_at(b, 12) as usize;
    if order == 0 || order > MAX_ORDER {
        return Err(bad(format!("order {order} (1..={MAX_ORDER} supported)")));
    }
    let vocab_size = u64_at(b, 16) as usize;
    let n_ids = u64_at(b, 24) as usize;
    let ids = [u32_at(b, 32), u32_at(b, 36), u32_at(b, 40)];
    if u32_at(b, 44) != HASH_ID {
        return Err(bad(format!(
            "hash function {}, this build has {HASH_ID}",
            u32_at(b, 44)
        )));
    }
    let file_len = u64_at(b, 48);
    if file_len != b.len() as u64 {
        return Err(bad(format!(
            "{}: the header says {file_len} bytes, the file has {}",
            if (b.len() as u64) < file_len {
                "truncated"
            } else {
                "damaged"
            },
            b.len()
        )));
    }
    let table_start = HEADER + ORDER_ENTRY * order;
    if n_ids < vocab_size || ids.iter().any(|&i| i as usize >= n_ids) || b.len() < table_start {
        return Err(bad(format!(
            "inconsistent header (vocabulary {vocab_size}, {n_ids} unigram slots, ids {ids:?})"
        )));
    }
    let map = Arc::new(map);
    let b: &[u8] = &map;
    let mut counts = Vec::with_capacity(order);
    let mut tables = Vec::with_capacity(order - 1);
    let mut unigrams = None;
    let mut prev_end = table_start;
    for m in 0..order {
        let at = HEADER + ORDER_ENTRY * m;
        let (count, slots, offset) = (
            u64_at(b, at) as usize,
            u64_at(b, at + 8) as usize,
            u64_at(b, at + 16) as usize,
        );
        let n = m + 1;
        let shape_ok = if m == 0 {
            slots == n_ids && count <= n_ids
        } else {
            slots.is_power_of_two() && count < slots
        };
        if !shape_ok || offset < prev_end || offset % ALIGN != 0 {
            return Err(bad(format!(
                "order {n}: {count} n-grams in {slots} slots at byte {offset} is not a valid table"
            )));
        }
        let outside = || {
            bad(format!(
                "order {n}: the table runs past the end of the file"
            ))
        };
        if m == 0 {
            let s = Slots::<Unigram>::mapped(&map, offset, slots).ok_or_else(outside)?;
            check_unigrams(s.as_slice(), ids[0]).map_err(bad)?;
            unigrams = Some(s);
            prev_end = offset + slots * std::mem::size_of::<Unigram>();
        } else {
            let s = Slots::<Entry>::mapped(&map, offset, slots).ok_or_else(outside)?;
            tables.push(Table {
                entries: s,
                mask: slots - 1,
            });
            prev_end = offset + slots * std::mem::size_of::<Entry>();
        }
        counts.push(count);
    }
    let unigrams = unigrams.expect("order >= 1");
    let vocab_at = u64_at(b, 56) as usize;
    let vocab = if vocab_at == 0 {
        None
    } else {
        let past_end = vocab_at.checked_add(8).is_none_or(|end| end > b.len());
        if version == 1 || vocab_at < prev_end || !vocab_at.is_multiple_of(ALIGN) || past_end {
            return Err(bad(format!(
                "the vocabulary section at byte {vocab_at} is not a valid section"
            )));
        }
        let len = u64_at(b, vocab_at) as usize;
        let table = WordTable::mapped(&map, vocab_at + 8, len).map_err(bad)?;
        if table.len() != vocab_size {
            return Err(bad(format!(
                "the vocabulary has {} words, the header says {vocab_size}",
                table.len()
            )));
        }
        Some(table)
    };
    let model = BackoffModel::from_parts(
        order,
        vocab_size,
        ids,
        unigrams,
        tables,
        counts,
        describe.to_string(),
    );
    Ok((model, vocab))
}

/// The unigram numbers a model needs to be a model (the same rule as ARPA reading).
fn check_unigrams(unigrams: &[Unigram], start: u32) -> Result<(), String> {
    for (id, u) in unigrams.iter().enumerate() {
        let prob_ok = u.prob <= 0.0 && (u.prob.is_finite() || id as u32 == start);
        if !prob_ok || !u.backoff.is_finite() {
            return Err(format!(
                "unigram {id}: log10 p {} / log10 backoff {} is not a probability and weight",
                u.prob, u.backoff
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ngram::arpa::{self, Vocab};
    use crate::model::ngram::store;

    const ARPA: &str = "\\data\\\nngram 1=5\nngram 2=4\nngram 3=2\n\n\\1-grams:\n-1.0\t<unk>\t0\n-99\t<s>\t-0.5\n-0.3\t</s>\t0\n-0.6\ta\t-0.2\n-0.7\tb\t-0.1\n\n\\2-grams:\n-0.2\t<s> a\t-0.05\n-0.1\ta </s>\t0\n-0.4\ta b\t-0.3\n-0.25\tb </s>\t0\n\n\\3-grams:\n-0.15\t<s> a b\n-0.05\ta b </s>\n\n\\end\\\n";

    fn model_pair() -> (tempfile::TempDir, BackoffModel, BackoffModel, Vec<Vec<u32>>) {
        let dir = tempfile::tempdir().unwrap();
        let ap = dir.path().join("m.arpa");
        std::fs::write(&ap, ARPA).unwrap();
        let (owned, tok) = store::load_arpa(&ap).unwrap();
        let bp = dir.path().join("m.bin");
        write(&bp, &owned, Some(tok.table())).unwrap();
        let (mapped, vocab) = load_with_vocab(&bp, "mapped").unwrap();
        let vocab = vocab.expect("the vocabulary section");
        assert_eq!(vocab.as_bytes(), tok.table().as_bytes());
        assert!(vocab.words().eq(["<unk>", "<s>", "</s>", "a", "b"]));
        let file = arpa::read(&ap, Vocab::Build).unwrap();
        let p = file.grams.packer;
        let grams = file
            .grams
            .orders
            .iter()
            .enumerate()
            .flat_map(|(m, o)| o.keys.iter().map(move |&k| p.unpack(k, m + 1)))
            .collect();
        (dir, owned, mapped, grams)
    }

    #[test]
    fn every_ngram_reads_back_bit_for_bit() {
        let (_d, owned, mapped, grams) = model_pair();
        assert_eq!(mapped.counts(), owned.counts());
        assert_eq!(mapped.order(), 3);
        assert_eq!(grams.len(), 11);
        for g in &grams {
            let (a, b) = (owned.lookup(g).unwrap(), mapped.lookup(g).unwrap());
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits())
            );
        }
        // Absent n-grams are absent in both.
        assert_eq!(mapped.lookup(&[4, 3, 2]), None);
        assert_eq!(owned.lookup(&[4, 3, 2]), None);
        // Backed-off queries agree too (`b a` is absent: backoff(b) + p(a)).
        for text in [
            vec![3u32, 4, 2],
            vec![4, 3, 0, 2],
            vec![3, 3, 3, 4, 4, 2, 4, 2],
        ] {
            assert_eq!(
                owned.total_log10(&text).to_bits(),
                mapped.total_log10(&text).to_bits()
            );
        }
    }

    #[test]
    fn damaged_files_are_refused_naming_the_file() {
        let (d, _owned, _mapped, _) = model_pair();
        let bp = d.path().join("m.bin");
        let good = std::fs::read(&bp).unwrap();
        let err_of = |bytes: &[u8]| {
            let p = d.path().join("bad.bin");
            std::fs::write(&p, bytes).unwrap();
            match load(&p, "") {
                Ok(_) => panic!("accepted a damaged file"),
                Err(e) => e.to_string(),
            }
        };
        for cut in [0, 7, 40, 100, good.len() - 1] {
            let e = err_of(&good[..cut]);
            assert!(e.contains("bad.bin"), "{e}");
            assert!(e.contains("truncated") || e.contains("magic"), "{cut}: {e}");
        }
        let mut wrong = good.clone();
        wrong[0] = b'X';
        assert!(err_of(&wrong).contains("wrong magic"));
        let mut v3 = good.clone();
        v3[8] = 3;
        assert!(err_of(&v3).contains("format version 3"));
        // Version 1 had no vocabulary section: claiming one is refused...
        let mut v1 = good.clone();
        v1[8] = 1;
        assert!(err_of(&v1).contains("vocabulary section"));
        // ... and a version 1 file (offset 0 there) loads without a vocabulary.
        v1[56..64].fill(0);
        let p1 = d.path().join("v1.bin");
        std::fs::write(&p1, &v1).unwrap();
        let (m1, no_vocab) = load_with_vocab(&p1, "").unwrap();
        assert!(no_vocab.is_none());
        assert_eq!(m1.counts(), [5, 4, 2]);
        // A damaged vocabulary: a length past the end, a word count that is not the
        // header's vocabulary size, a special spelled wrong.
        let vat = u64_at(&good, 56) as usize;
        let mut long = good.clone();
        long[vat..vat + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(err_of(&long).contains("not inside the file"));
        let mut count = good.clone();
        count[vat + 8..vat + 16].copy_from_slice(&4u64.to_le_bytes());
        assert!(err_of(&count).contains("vocabulary"));
        let mut header = good.clone();
        header[16..24].copy_from_slice(&4u64.to_le_bytes());
        assert!(
            err_of(&header).contains("inconsistent header") || err_of(&header).contains("words")
        );
        let mut longer = good.clone();
        longer.extend_from_slice(&[0; 64]);
        assert!(err_of(&longer).contains("the header says"));
        let mut kenlm = b"mmap lm http://kheafield.com/code format version 5\n\0".to_vec();
        kenlm.resize(200, 0);
        assert!(err_of(&kenlm).contains("KenLM binary"));
        // A NaN unigram probability.
        let mut nan = good.clone();
        let off = u64_at(&good, HEADER + 16) as usize;
        nan[off..off + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(err_of(&nan).contains("unigram 0"));
        // A table offset pointing past the end.
        let mut past = good.clone();
        let at = HEADER + ORDER_ENTRY * 2 + 16;
        past[at..at + 8].copy_from_slice(&(good.len() as u64).to_le_bytes());
        assert!(err_of(&past).contains("order 3"));
    }
}
