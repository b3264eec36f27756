//! Training data: token streams (memory-mapped or in memory) and seeded random windows.
//!
//! A batch is B windows of T+1 consecutive tokens at uniformly random offsets (nanoGPT's
//! `get_batch`): inputs are the first T, targets the last T. The sampler's whole state is
//! one `u64` ([`Rng`]), stored in checkpoints, so a resumed run draws the same windows.

use super::TrainError;
use crate::data::bin::TokenFile;
use crate::tokenizer::Tokenizer;
use std::path::Path;

/// SplitMix64: a tiny, fast, well-mixed generator whose entire state is one `u64`
/// (so saving and restoring it is trivial and exact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    /// The generator state.
    pub state: u64,
}

impl Rng {
    /// A generator seeded with `seed` (the seed is mixed once, so nearby seeds differ).
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng {
            state: seed ^ 0x5851_F42D_4C95_7F2D,
        };
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        crate::hash::mix64(self.state)
    }

    /// Uniform in `0..n` (`n > 0`), by the multiply-shift method.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// A stream of token ids.
pub enum Tokens {
    /// A memory-mapped `.bin` file (a prepared data directory).
    Mapped(TokenFile),
    /// Ids in memory (a raw text tokenized on the fly).
    Memory(Vec<u32>),
}

impl Tokens {
    /// Number of ids.
    pub fn len(&self) -> usize {
        match self {
            Tokens::Mapped(f) => f.len(),
            Tokens::Memory(v) => v.len(),
        }
    }

    /// True when there are no ids.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies ids `start..start + out.len()` into `out`.
    pub fn read_into(&self, start: usize, out: &mut [u32]) {
        match self {
            Tokens::Mapped(f) => f.read_into(start, out),
            Tokens::Memory(v) => out.copy_from_slice(&v[start..start + out.len()]),
        }
    }

    /// Batches per pass of [`Tokens::stream_batch`] over the ids cut into `b` contiguous
    /// streams (PyTorch's `batchify`; the ids that do not fill whole streams and whole
    /// batches are dropped, as Zaremba's `ptb_iterator` does).
    pub fn stream_batches(&self, b: usize, t: usize) -> usize {
        (self.len() / b).saturating_sub(1) / t
    }

    /// Fills `inputs` and `targets` (each `b * t`) with batch `k` of the `b` contiguous
    /// streams: row i is ids `i * L + k * t ..` of the stream of length L = len / b.
    pub fn stream_batch(
        &self,
        b: usize,
        t: usize,
        k: usize,
        inputs: &mut [u32],
        targets: &mut [u32],
        window: &mut Vec<u32>,
    ) {
        let stream_len = self.len() / b;
        debug_assert!((k + 1) * t < stream_len);
        window.resize(t + 1, 0);
        for i in 0..b {
            self.read_into(i * stream_len + k * t, window);
            inputs[i * t..(i + 1) * t].copy_from_slice(&window[..t]);
            targets[i * t..(i + 1) * t].copy_from_slice(&window[1..]);
        }
    }

    /// Fills `inputs` and `targets` (each `b * t`) with `b` random windows.
    pub fn sample_batch(
        &self,
        rng: &mut Rng,
        b: usize,
        t: usize,
        inputs: &mut [u32],
        targets: &mut [u32],
        window: &mut Vec<u32>,
    ) {
        debug_assert!(self.len() > t);
        window.resize(t + 1, 0);
        let starts = (self.len() - t) as u64;
        for i in 0..b {
            let start = rng.below(starts) as usize;
            self.read_into(start, window);
            inputs[i * t..(i + 1) * t].copy_from_slice(&window[..t]);
            targets[i * t..(i + 1) * t].copy_from_slice(&window[1..]);
        }
    }
}

/// Batches whose window offsets come from outside the run (a testing hook: a peer's
/// sampler, so both sides train on the same windows): micro-batch k is the B windows
/// starting at `starts[k * B..(k + 1) * B]`. The file has one line per micro-batch, B
/// whitespace-separated offsets into the training ids.
#[derive(Debug, Clone)]
pub struct GivenBatches {
    starts: Vec<usize>,
    b: usize,
}

impl GivenBatches {
    /// Parses `text` (read from `path`, named in errors) for batches of `b` windows of
    /// `t + 1` tokens in a training split of `len` ids.
    pub fn parse(
        text: &str,
        path: &Path,
        b: usize,
        t: usize,
        len: usize,
    ) -> Result<GivenBatches, TrainError> {
        let bad = |line: usize, what: String| {
            TrainError::Data(format!("{} line {}: {what}", path.display(), line + 1))
        };
        let mut starts = Vec::new();
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let row: Vec<&str> = line.split_whitespace().collect();
            if row.len() != b {
                return Err(bad(
                    i,
                    format!("{} offsets, the batch size is {b}", row.len()),
                ));
            }
            for w in row {
                let s: usize = w
                    .parse()
                    .map_err(|_| bad(i, format!("{w:?} is not an offset")))?;
                if s + t >= len {
                    return Err(bad(
                        i,
                        format!(
                            "offset {s} + {} tokens runs past the {len} training ids",
                            t + 1
                        ),
                    ));
                }
                starts.push(s);
            }
        }
        if starts.is_empty() {
            return Err(TrainError::Data(format!(
                "{} has no batches",
                path.display()
            )));
        }
        Ok(GivenBatches { starts, b })
    }

    /// Number of micro-batches.
    pub fn len(&self) -> usize {
        self.starts.len() / self.b
    }

    /// True when there are none (never, after [`GivenBatches::parse`]).
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Fills `inputs` and `targets` with micro-batch `k`; false when there is no such batch.
    pub fn fill(
        &self,
        k: usize,
        tokens: &Tokens,
        t: usize,
        inputs: &mut [u32],
        targets: &mut [u32],
        window: &mut Vec<u32>,
    ) -> bool {
        let Some(starts) = self.starts.get(k * self.b..(k + 1) * self.b) else {
            return false;
        };
        window.resize(t + 1, 0);
        for (i, &start) in starts.iter().enumerate() {
            tokens.read_into(start, window);
            inputs[i * t..(i + 1) * t].copy_from_slice(&window[..t]);
            targets[i * t..(i + 1) * t].copy_from_slice(&window[1..]);
        }
        true
    }
}

/// Train and validation tokens plus the tokenizer that made them.
pub struct TrainData {
    /// Training ids.
    pub train: Tokens,
    /// Validation ids.
    pub val: Tokens,
    /// The tokenizer (saved into every checkpoint).
    pub tokenizer: Box<dyn Tokenizer>,
    /// Where the data came from, for logs and the checkpoint's record.
    pub source: String,
}

impl TrainData {
    /// Splits `text` at the character `(1 - val_fraction) * chars` (the tail is validation,
    /// as nanoGPT's `prepare.py` does) and encodes both parts with `tokenizer`.
    pub fn from_text(
        text: &str,
        tokenizer: Box<dyn Tokenizer>,
        val_fraction: f64,
        source: impl Into<String>,
    ) -> Result<TrainData, TrainError> {
        let n_chars = text.chars().count();
        let n_train = ((1.0 - val_fraction) * n_chars as f64) as usize;
        let split = text
            .char_indices()
            .nth(n_train)
            .map(|(i, _)| i)
            .unwrap_or(text.len());
        let train = tokenizer.encode(&text[..split])?;
        let val = tokenizer.encode(&text[split..])?;
        Ok(TrainData {
            train: Tokens::Memory(train),
            val: Tokens::Memory(val),
            tokenizer,
            source: source.into(),
        })
    }

    /// Opens a prepared directory: `train.bin`, `val.bin` (memory-mapped) and its
    /// `tokenizer.json`.
    pub fn from_prepared(dir: &Path) -> Result<TrainData, TrainError> {
        let tokenizer = crate::tokenizer::load(&dir.join("tokenizer.json"))?;
        let train = TokenFile::open(&dir.join("train.bin"))?;
        let val = TokenFile::open(&dir.join("val.bin"))?;
        for f in [&train, &val] {
            if f.vocab_size() != tokenizer.vocab_size() {
                return Err(TrainError::Data(format!(
                    "{} was written for a vocabulary of {} but {}/tokenizer.json has {}",
                    f.path().display(),
                    f.vocab_size(),
                    dir.display(),
                    tokenizer.vocab_size()
                )));
            }
        }
        Ok(TrainData {
            train: Tokens::Mapped(train),
            val: Tokens::Mapped(val),
            tokenizer,
            source: dir.display().to_string(),
        })
    }

    /// Checks that both splits hold at least one window of `block_size + 1` tokens.
    pub fn check_windows(&self, block_size: usize) -> Result<(), TrainError> {
        for (name, t) in [("training", &self.train), ("validation", &self.val)] {
            if t.len() <= block_size {
                return Err(TrainError::Data(format!(
                    "the {name} split of {} has {} tokens, fewer than block_size + 1 = {} \
                     (use more data or a smaller --block-size)",
                    self.source,
                    t.len(),
                    block_size + 1
                )));
            }
        }
        Ok(())
    }

    /// Validation tokens per byte of text they stand for (to turn nats/token into bits/byte).
    pub fn val_tokens_per_byte(&self) -> Option<f64> {
        let v = self.tokenizer.vocab_size();
        let lens: Vec<usize> = (0..v as u32)
            .map(|id| self.tokenizer.token_bytes(id).map(|b| b.len()).unwrap_or(0))
            .collect();
        let n = self.val.len().min(10_000_000);
        let mut ids = vec![0u32; n];
        self.val.read_into(0, &mut ids);
        let bytes: usize = ids
            .iter()
            .map(|&i| lens.get(i as usize).copied().unwrap_or(0))
            .sum();
        (bytes > 0).then(|| n as f64 / bytes as f64)
    }
}

/// Where to find GPT-2's `encoder.json` + `vocab.bpe` for the `gpt2` tokenizer:
/// `$ARLM_SHARED_DATA/gpt2`, else `../shared/data/gpt2` from the working directory.
pub fn gpt2_tokenizer_dir() -> std::path::PathBuf {
    crate::data::shared_data_root(Path::new(".")).join("gpt2")
}

/// The tokenizer named by `spec` (see [`super::TrainConfig::tokenizer`]) for `text`.
/// `auto` means `auto_kind` ("chars" or "bytes").
pub fn make_tokenizer(
    spec: &str,
    auto_kind: &str,
    text: &str,
) -> Result<Box<dyn Tokenizer>, TrainError> {
    use crate::tokenizer::{bytes::ByteTokenizer, chars::CharTokenizer};
    let spec = if spec == "auto" { auto_kind } else { spec };
    Ok(match spec {
        "bytes" => Box::new(ByteTokenizer),
        "chars" => Box::new(CharTokenizer::train(&[text])),
        "gpt2" => {
            let dir = gpt2_tokenizer_dir();
            crate::tokenizer::load(&dir).map_err(|e| {
                TrainError::Data(format!(
                    "the gpt2 tokenizer needs {}/encoder.json and vocab.bpe (set \
                     ARLM_SHARED_DATA or pass --tokenizer PATH): {}",
                    dir.display(),
                    crate::error_chain(&e)
                ))
            })?
        }
        path => crate::tokenizer::load(Path::new(path))?,
    })
}

/// The embedded synthetic corpus (the default training text).
pub fn default_text() -> &'static str {
    crate::corpus::default_corpus()
}

/// Loads training data: `None` = the embedded synthetic corpus (bytes tokenizer unless
/// `tokenizer` says otherwise), a directory = a prepared dataset, a file = raw UTF-8 text
/// tokenized now (chars tokenizer unless `tokenizer` says otherwise), split by
/// `val_fraction`.
pub fn load_data(
    data: Option<&Path>,
    tokenizer: &str,
    val_fraction: f64,
) -> Result<TrainData, TrainError> {
    match data {
        None => {
            let text = default_text();
            let tok = make_tokenizer(tokenizer, "bytes", text)?;
            TrainData::from_text(text, tok, val_fraction, "the embedded synthetic corpus")
        }
        Some(p) if p.is_dir() => TrainData::from_prepared(p),
        Some(p) => {
            let bytes = std::fs::read(p).map_err(|source| TrainError::Io {
                path: p.to_path_buf(),
                source,
            })?;
            let text = String::from_utf8(bytes).map_err(|e| {
                TrainError::Data(format!(
                    "{} is not UTF-8 text (invalid byte at offset {}); tokenize it with \
                     `arlm prepare` first",
                    p.display(),
                    e.utf8_error().valid_up_to()
                ))
            })?;
            let tok = make_tokenizer(tokenizer, "chars", &text)?;
            TrainData::from_text(&text, tok, val_fraction, p.display().to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::bytes::ByteTokenizer;

    #[test]
    fn rng_is_uniform_enough_and_restorable() {
        let mut r = Rng::new(7);
        let mut counts = [0usize; 10];
        for _ in 0..100_000 {
            counts[r.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        let saved = r.clone();
        let a: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        let mut r2 = Rng { state: saved.state };
        let b: Vec<u64> = (0..5).map(|_| r2.next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn windows_are_shifted_by_one() {
        let d = TrainData::from_text(
            "abcdefghijklmnopqrstuvwxyz",
            Box::new(ByteTokenizer),
            0.2,
            "t",
        )
        .unwrap();
        assert_eq!(d.train.len(), 20);
        assert_eq!(d.val.len(), 6);
        let (b, t) = (3, 4);
        let (mut x, mut y, mut w) = (vec![0; b * t], vec![0; b * t], Vec::new());
        d.train
            .sample_batch(&mut Rng::new(1), b, t, &mut x, &mut y, &mut w);
        for i in 0..b {
            for j in 0..t {
                assert_eq!(y[i * t + j], x[i * t + j] + 1);
            }
            assert!(x[i * t] >= b'a' as u32 && y[i * t + t - 1] <= b't' as u32);
        }
        assert!(d.check_windows(5).is_ok());
        assert!(d.check_windows(6).is_err());
        assert_eq!(d.val_tokens_per_byte(), Some(1.0));
    }
}
