//! The token file format (`.bin`), little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `ARLMTOK\0` |
//! | 8..12 | version (u32) = 1 |
//! | 12..16 | bytes per id (u32): 2 or 4 |
//! | 16..24 | token count (u64) |
//! | 24..28 | vocabulary size (u32) |
//! | 28..32 | reserved (0) |
//! | 32.. | ids |
//!
//! u16 ids halve the size when the vocabulary fits (GPT-2's 50257 does), as in nanoGPT.

use super::DataError;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ARLMTOK\0";
const VERSION: u32 = 1;
/// Size of the header in bytes.
pub const HEADER_BYTES: usize = 32;

/// Smallest id width (2 or 4 bytes) that holds every id of a `vocab_size` vocabulary.
pub fn id_width(vocab_size: usize) -> u32 {
    if vocab_size <= 1 << 16 {
        2
    } else {
        4
    }
}

/// Streams ids into a `.bin` file; the file appears under its name only on [`TokenWriter::finish`].
pub struct TokenWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    dest: PathBuf,
    width: u32,
    vocab_size: u32,
    count: u64,
    finished: bool,
}

impl TokenWriter {
    /// Starts writing `dest` for a vocabulary of `vocab_size` ids.
    pub fn create(dest: &Path, vocab_size: usize) -> Result<Self, DataError> {
        Self::create_with_width(dest, vocab_size, id_width(vocab_size))
    }

    /// Like [`TokenWriter::create`] with an explicit id width (2 or 4 bytes); an error
    /// when the vocabulary does not fit it.
    pub fn create_with_width(
        dest: &Path,
        vocab_size: usize,
        width: u32,
    ) -> Result<Self, DataError> {
        if width != 2 && width != 4 {
            return Err(DataError::Invalid(format!(
                "id width {width} is neither 2 nor 4"
            )));
        }
        if width == 2 && vocab_size > 1 << 16 {
            return Err(DataError::Invalid(format!(
                "a vocabulary of {vocab_size} tokens does not fit 16-bit ids"
            )));
        }
        let vocab_size = u32::try_from(vocab_size)
            .map_err(|_| DataError::Invalid(format!("vocabulary of {vocab_size} is too large")))?;
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
        let io = |source| DataError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let file = File::create(&tmp).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_BYTES]).map_err(io)?;
        Ok(Self {
            out,
            tmp,
            dest: dest.to_path_buf(),
            width,
            vocab_size,
            count: 0,
            finished: false,
        })
    }

    /// Appends ids (each must be below the vocabulary size).
    pub fn write(&mut self, ids: &[u32]) -> Result<(), DataError> {
        let io = |source| DataError::Io {
            path: self.dest.clone(),
            source,
        };
        let mut buf = Vec::with_capacity(ids.len() * self.width as usize);
        for &id in ids {
            if id >= self.vocab_size {
                return Err(DataError::TokenTooLarge {
                    token: id,
                    bits: self.width * 8,
                });
            }
            if self.width == 2 {
                buf.extend_from_slice(&(id as u16).to_le_bytes());
            } else {
                buf.extend_from_slice(&id.to_le_bytes());
            }
        }
        self.out.write_all(&buf).map_err(io)?;
        self.count += ids.len() as u64;
        Ok(())
    }

    /// Number of ids written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Writes the header, syncs, and renames the file into place.
    pub fn finish(mut self) -> Result<u64, DataError> {
        let dest = self.dest.clone();
        let io = |source| DataError::Io {
            path: dest.clone(),
            source,
        };
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&self.width.to_le_bytes());
        header.extend_from_slice(&self.count.to_le_bytes());
        header.extend_from_slice(&self.vocab_size.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        self.out.flush().map_err(io)?;
        let file = self.out.get_mut();
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&header).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.dest).map_err(io)?;
        self.finished = true;
        Ok(self.count)
    }
}

impl Drop for TokenWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A memory-mapped `.bin` file: random windows for training, sequential reads for evaluation.
pub struct TokenFile {
    map: memmap2::Mmap,
    width: usize,
    len: usize,
    vocab_size: usize,
    path: PathBuf,
}

impl TokenFile {
    /// Opens and validates a `.bin` file.
    pub fn open(path: &Path) -> Result<Self, DataError> {
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |message: String| DataError::Format {
            path: path.to_path_buf(),
            message,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; arlm never writes a .bin in place (writers rename
        // a finished temp file over it), so the mapped bytes do not change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        if map.len() < HEADER_BYTES || &map[..8] != MAGIC {
            return Err(bad("missing ARLMTOK header".into()));
        }
        let u32_at = |o: usize| u32::from_le_bytes(map[o..o + 4].try_into().expect("4 bytes"));
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!("unsupported version {version}")));
        }
        let width = u32_at(12) as usize;
        if width != 2 && width != 4 {
            return Err(bad(format!("id width {width} is neither 2 nor 4")));
        }
        let len64 = u64::from_le_bytes(map[16..24].try_into().expect("8 bytes"));
        let vocab_size = u32_at(24) as usize;
        // In u128: a count near 2^64 from a damaged header must not wrap into a match.
        let want = HEADER_BYTES as u128 + len64 as u128 * width as u128;
        let len = len64 as usize;
        if map.len() as u128 != want {
            return Err(bad(format!(
                "header says {len} ids of {width} bytes but the file has {} bytes",
                map.len()
            )));
        }
        Ok(Self {
            map,
            width,
            len,
            vocab_size,
            path: path.to_path_buf(),
        })
    }

    /// Number of ids in the file.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the file holds no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The vocabulary size recorded when the file was written.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Where the file lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The id at position `i` (panics if `i >= len`, like slice indexing).
    pub fn get(&self, i: usize) -> u32 {
        let o = HEADER_BYTES + i * self.width;
        if self.width == 2 {
            u16::from_le_bytes([self.map[o], self.map[o + 1]]) as u32
        } else {
            u32::from_le_bytes(self.map[o..o + 4].try_into().expect("4 bytes"))
        }
    }

    /// Copies ids `start..start + out.len()` into `out` (panics when out of range).
    pub fn read_into(&self, start: usize, out: &mut [u32]) {
        assert!(
            start + out.len() <= self.len,
            "window past the end of the token file"
        );
        let bytes = &self.map[HEADER_BYTES + start * self.width..];
        if self.width == 2 {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = u16::from_le_bytes([c[0], c[1]]) as u32;
            }
        } else {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }

    /// Ids `start..end` as a vector.
    pub fn slice(&self, start: usize, end: usize) -> Vec<u32> {
        let mut v = vec![0; end - start];
        self.read_into(start, &mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_u16_and_u32() {
        let dir = tempfile::tempdir().unwrap();
        for vocab in [300usize, 70_000] {
            let p = dir.path().join(format!("t{vocab}.bin"));
            let mut w = TokenWriter::create(&p, vocab).unwrap();
            let ids: Vec<u32> = (0..1000)
                .map(|i| (i * 7919) as u32 % vocab as u32)
                .collect();
            w.write(&ids[..400]).unwrap();
            w.write(&ids[400..]).unwrap();
            assert!(!p.exists(), "not visible before finish");
            assert_eq!(w.finish().unwrap(), 1000);
            let f = TokenFile::open(&p).unwrap();
            assert_eq!(f.len(), 1000);
            assert_eq!(f.vocab_size(), vocab);
            assert_eq!(f.slice(0, 1000), ids);
            assert_eq!(f.get(999), ids[999]);
        }
    }

    #[test]
    fn rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.bin");
        std::fs::write(&p, b"hello").unwrap();
        assert!(matches!(TokenFile::open(&p), Err(DataError::Format { .. })));
        let mut w = TokenWriter::create(&p, 10).unwrap();
        assert!(matches!(
            w.write(&[10]),
            Err(DataError::TokenTooLarge { .. })
        ));
        w.write(&[1, 2, 3]).unwrap();
        w.finish().unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.pop();
        std::fs::write(&p, &bytes).unwrap();
        assert!(matches!(TokenFile::open(&p), Err(DataError::Format { .. })));
        bytes.push(0);
        // A count whose size in bytes wraps around 2^64 to the real file size (3 ids of
        // width 4: 2^62 + 3 ids take 2^64 + 12 bytes, which wraps to 12).
        let mut wrap = bytes.clone();
        wrap[12..16].copy_from_slice(&4u32.to_le_bytes());
        wrap.extend_from_slice(&[0; 6]);
        wrap[16..24].copy_from_slice(&((1u64 << 62) + 3).to_le_bytes());
        std::fs::write(&p, &wrap).unwrap();
        let e = TokenFile::open(&p).err().unwrap().to_string();
        assert!(e.contains("header says"), "{e}");
    }
}
