//! `arlm prepare`: text files -> `train.bin`, `val.bin`, `meta.json` (+ `tokenizer.json`).
//!
//! # Design
//! - Documents: each plain-text input file is one document; with JSONL each line's
//!   `--field` string is one. Documents are separated by the tokenizer's end-of-text token
//!   (between documents, not after the last, so one file gives no end-of-text at all, as
//!   in nanoGPT's shakespeare_char). Empty documents are skipped.
//! - Split (nanoGPT convention): with `--val-fraction f` the whole text (all documents in
//!   order) is cut at character `floor(n_chars * (1 - f))`; the two parts are encoded
//!   separately. With `--val FILE..` the inputs are train and the val files are val.
//! - Two streaming passes over the inputs: the first validates UTF-8 (error with file and
//!   byte offset, or U+FFFD replacement with `--lossy`) and counts characters (to place the
//!   split); the second cuts each split's text into ~1 MB chunks at points where no
//!   tokenizer's pieces can cross (after a newline that follows a printable character and
//!   precedes a letter; failing that, before a space that precedes a letter), encodes a
//!   batch of chunks in parallel with rayon, and appends the ids in order. Memory stays at
//!   a few batches of text whatever the corpus size.
//! - Nothing half-written looks valid: everything is written into a staging directory
//!   inside `--out` and renamed into place only when all of it succeeded (meta.json last).
//!
//! # Performance notes
//! See docs/parts/data.md for the measured throughput and peak RSS (GPT-2 BPE on
//! wikitext-2 train, release).

use super::bin::{id_width, TokenWriter};
use super::DataError;
use crate::tokenizer::Tokenizer;
use rayon::prelude::*;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

/// Target size of one encoding chunk in bytes.
const CHUNK_BYTES: usize = 1 << 20;
/// Size of one read from an input file.
const READ_BYTES: usize = 4 << 20;

/// Where the text comes from.
#[derive(Debug, Clone)]
pub enum Input {
    /// Text files (or JSONL files when [`PrepareOptions::jsonl_field`] is set).
    Files(Vec<PathBuf>),
    /// The embedded default corpus ([`crate::corpus::default_corpus`]).
    DefaultCorpus,
}

/// How the validation split is made.
#[derive(Debug, Clone)]
pub enum ValSplit {
    /// The last `f` of the characters (0 <= f < 1).
    Fraction(f64),
    /// Separate validation files.
    Files(Vec<PathBuf>),
}

/// Requested id width of the .bin files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// The smallest that holds the vocabulary.
    Auto,
    /// 16-bit ids (vocabularies up to 65,536).
    U16,
    /// 32-bit ids.
    U32,
}

/// Everything `prepare` needs.
pub struct PrepareOptions<'a> {
    /// The tokenizer.
    pub tokenizer: &'a dyn Tokenizer,
    /// The training text (and, with [`ValSplit::Fraction`], the validation text).
    pub input: Input,
    /// The validation split.
    pub val: ValSplit,
    /// Output directory (created if missing).
    pub out: PathBuf,
    /// Read inputs as JSONL and take this field of each record as a document.
    pub jsonl_field: Option<String>,
    /// Replace invalid UTF-8 with U+FFFD instead of failing.
    pub lossy: bool,
    /// Id width of the .bin files.
    pub dtype: Dtype,
    /// Show a progress bar on stderr (when it is a terminal).
    pub progress: bool,
}

/// Counts for one split.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitStats {
    /// Token ids written (end-of-text separators included).
    pub tokens: u64,
    /// UTF-8 bytes of text (after --lossy replacement; separators not counted).
    pub bytes: u64,
    /// Unicode characters of text.
    pub chars: u64,
    /// Whitespace-separated words (a word cut by the split counts in both splits).
    pub words: u64,
    /// Documents with text in this split (one cut by the split counts in both).
    pub documents: u64,
}

/// What `prepare` did; also written as meta.json.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PrepareReport {
    /// Tokenizer kind ("bytes", "chars", "bpe", "words").
    pub tokenizer_kind: String,
    /// Tokenizer fingerprint ([`Tokenizer::fingerprint`]).
    pub tokenizer_fingerprint: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The document separator id.
    pub eot_token: u32,
    /// Bytes per id in the .bin files (2 or 4).
    pub id_bytes: u32,
    /// The inputs, or "default corpus".
    pub inputs: Vec<String>,
    /// How val was made ("fraction 0.1" or "files").
    pub split: String,
    /// Training split counts.
    pub train: SplitStats,
    /// Validation split counts.
    pub val: SplitStats,
    /// For the default corpus: the exact NLL of each split's text under the synthetic
    /// source (conditioned on BOS), the floor no model beats in expectation.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub synth_floor: Option<SynthFloors>,
    /// Wall time of the run in seconds.
    pub seconds: f64,
}

/// The synthetic source's exact floor on each split of the default corpus.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SynthFloors {
    /// Floor on the training text.
    pub train: crate::corpus::Floor,
    /// Floor on the validation text.
    pub val: crate::corpus::Floor,
}

/// One event from a document source: some text of the current document, or its end.
enum Event<'t> {
    Text(&'t str),
    EndDoc,
}

/// Reads a file as UTF-8 blocks, validating or replacing invalid bytes.
fn read_text_file(
    path: &Path,
    lossy: bool,
    f: &mut dyn FnMut(&str) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; READ_BYTES];
    let mut carry: Vec<u8> = Vec::new();
    let mut offset: u64 = 0; // file offset of carry[0]
    let mut text = String::new();
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        let eof = n == 0;
        carry.extend_from_slice(&buf[..n]);
        text.clear();
        let mut pos = 0;
        while pos < carry.len() {
            match std::str::from_utf8(&carry[pos..]) {
                Ok(s) => {
                    text.push_str(s);
                    pos = carry.len();
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // Valid by construction: from_utf8 checked these bytes.
                    text.push_str(std::str::from_utf8(&carry[pos..pos + good]).unwrap_or(""));
                    match e.error_len() {
                        Some(bad) => {
                            if !lossy {
                                return Err(DataError::InvalidUtf8 {
                                    path: path.to_path_buf(),
                                    offset: offset + (pos + good) as u64,
                                });
                            }
                            text.push(char::REPLACEMENT_CHARACTER);
                            pos += good + bad;
                        }
                        None if eof => {
                            if !lossy {
                                return Err(DataError::InvalidUtf8 {
                                    path: path.to_path_buf(),
                                    offset: offset + (pos + good) as u64,
                                });
                            }
                            text.push(char::REPLACEMENT_CHARACTER);
                            pos = carry.len();
                        }
                        None => {
                            // An incomplete character at the end of the block: keep it.
                            pos += good;
                            break;
                        }
                    }
                }
            }
        }
        if !text.is_empty() {
            f(&text)?;
        }
        offset += pos as u64;
        carry.drain(..pos);
        if eof {
            return Ok(());
        }
    }
}

/// Reads JSONL: one document per line, the string at `field`.
fn read_jsonl_file(
    path: &Path,
    field: &str,
    lossy: bool,
    f: &mut dyn FnMut(Event) -> Result<(), DataError>,
) -> Result<(), DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        let text = match std::str::from_utf8(&line) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(e) if !lossy => {
                return Err(DataError::InvalidUtf8 {
                    path: path.to_path_buf(),
                    offset: offset + e.valid_up_to() as u64,
                })
            }
            Err(_) => String::from_utf8_lossy(&line),
        };
        offset += n as u64;
        if text.trim().is_empty() {
            continue;
        }
        let bad = |message: String| {
            DataError::Invalid(format!("{}:{line_no}: {message}", path.display()))
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let doc = value
            .get(field)
            .ok_or_else(|| bad(format!("no field {field:?}")))?
            .as_str()
            .ok_or_else(|| bad(format!("field {field:?} is not a string")))?;
        f(Event::Text(doc))?;
        f(Event::EndDoc)?;
    }
}

/// Streams the documents of `files` (or the default corpus) as events.
fn for_each_event(
    input: &Input,
    jsonl_field: Option<&str>,
    lossy: bool,
    f: &mut dyn FnMut(Event) -> Result<(), DataError>,
) -> Result<(), DataError> {
    match input {
        Input::DefaultCorpus => {
            f(Event::Text(crate::corpus::default_corpus()))?;
            f(Event::EndDoc)
        }
        Input::Files(files) => {
            for path in files {
                match jsonl_field {
                    Some(field) => read_jsonl_file(path, field, lossy, f)?,
                    None => {
                        read_text_file(path, lossy, &mut |s| f(Event::Text(s)))?;
                        f(Event::EndDoc)?;
                    }
                }
            }
            Ok(())
        }
    }
}

/// A cut point in `text` at or before its end where no tokenizer's pieces cross, searching
/// backwards from the end down to `min`: after a newline that follows a printable ASCII
/// character and precedes an ASCII letter (safe for GPT-2/GPT-4 regexes, characters and
/// line-based word tokenizers); failing that, before a space that follows a printable
/// character and precedes a letter.
fn cut_point(text: &str, min: usize) -> Option<usize> {
    let b = text.as_bytes();
    let printable = |c: u8| (0x21..=0x7e).contains(&c);
    let mut p = b.len().saturating_sub(1);
    while p > min.max(1) {
        if b[p - 1] == b'\n' && p >= 2 && printable(b[p - 2]) && b[p].is_ascii_alphabetic() {
            return Some(p);
        }
        p -= 1;
    }
    let mut p = b.len().saturating_sub(2);
    while p > min.max(1) {
        if b[p] == b' ' && printable(b[p - 1]) && b[p + 1].is_ascii_alphabetic() {
            return Some(p);
        }
        p -= 1;
    }
    None
}

/// An encoded item: its ids, whitespace words and text bytes.
type Encoded = (Vec<u32>, u64, u64);

/// Work for the encoder, in file order.
enum Item {
    Chunk(String),
    Eot,
}

/// One split being written: its buffer of pending text, batch of items, and counts.
struct SplitWriter<'a> {
    tok: &'a dyn Tokenizer,
    writer: TokenWriter,
    pending: String,
    batch: Vec<Item>,
    batch_bytes: usize,
    stats: SplitStats,
    /// The current document has text in this split.
    in_doc: bool,
    /// A previous document has text in this split (the next one needs a separator).
    had_doc: bool,
    /// Keep the text for the synthetic floor (default corpus only: 1 MB).
    keep: Option<String>,
    progress: &'a indicatif::ProgressBar,
}

impl<'a> SplitWriter<'a> {
    fn text(&mut self, s: &str) -> Result<(), DataError> {
        if s.is_empty() {
            return Ok(());
        }
        if !self.in_doc {
            if self.had_doc {
                self.flush_pending();
                self.batch.push(Item::Eot);
            }
            self.in_doc = true;
            self.stats.documents += 1;
        }
        self.stats.bytes += s.len() as u64;
        self.stats.chars += s.chars().count() as u64;
        if let Some(k) = &mut self.keep {
            k.push_str(s);
        }
        self.pending.push_str(s);
        while self.pending.len() >= 2 * CHUNK_BYTES {
            match cut_point(&self.pending[..2 * CHUNK_BYTES], CHUNK_BYTES / 2) {
                Some(p) => {
                    let rest = self.pending.split_off(p);
                    let chunk = std::mem::replace(&mut self.pending, rest);
                    self.push_chunk(chunk)?;
                }
                None => {
                    // No safe point in this window: look further (a line of many MB
                    // without spaces); correctness before memory.
                    match cut_point(&self.pending, CHUNK_BYTES / 2) {
                        Some(p) => {
                            let rest = self.pending.split_off(p);
                            let chunk = std::mem::replace(&mut self.pending, rest);
                            self.push_chunk(chunk)?;
                        }
                        None => break,
                    }
                }
            }
        }
        Ok(())
    }

    fn end_doc(&mut self) {
        if self.in_doc {
            self.in_doc = false;
            self.had_doc = true;
        }
    }

    fn flush_pending(&mut self) {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.batch_bytes += chunk.len();
            self.batch.push(Item::Chunk(chunk));
        }
    }

    fn push_chunk(&mut self, chunk: String) -> Result<(), DataError> {
        self.batch_bytes += chunk.len();
        self.batch.push(Item::Chunk(chunk));
        if self.batch_bytes >= CHUNK_BYTES * 2 * rayon::current_num_threads().max(1) {
            self.encode_batch()?;
        }
        Ok(())
    }

    fn encode_batch(&mut self) -> Result<(), DataError> {
        let tok = self.tok;
        let eot = tok.eot_token();
        let encoded: Vec<Result<Encoded, DataError>> = self
            .batch
            .par_iter()
            .map(|item| match item {
                Item::Eot => Ok((vec![eot], 0, 0)),
                Item::Chunk(s) => Ok((
                    tok.encode(s)?,
                    s.split_whitespace().count() as u64,
                    s.len() as u64,
                )),
            })
            .collect();
        for r in encoded {
            let (ids, words, bytes) = r?;
            self.writer.write(&ids)?;
            self.stats.tokens += ids.len() as u64;
            self.stats.words += words;
            self.progress.inc(bytes);
        }
        self.batch.clear();
        self.batch_bytes = 0;
        Ok(())
    }

    fn finish(mut self) -> Result<(SplitStats, Option<String>), DataError> {
        self.flush_pending();
        self.encode_batch()?;
        let n = self.writer.finish()?;
        debug_assert_eq!(n, self.stats.tokens);
        Ok((self.stats, self.keep))
    }
}

/// Removes the staging directory unless disarmed.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Tokenizes the inputs into `out/train.bin`, `out/val.bin`, `out/tokenizer.json` and
/// `out/meta.json`: options checked, a counting pass (for the split point and the progress
/// bar), an encoding pass into a staging directory, then the files renamed into place.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport, DataError> {
    let start = std::time::Instant::now();
    let tok = opts.tokenizer;
    let vocab = tok.vocab_size();
    let (width, val_input) = check_options(opts)?;
    let (total_chars, total_bytes) = count_text(opts, val_input.as_ref())?;

    // Staging directory inside the output directory (same file system: renames are atomic).
    std::fs::create_dir_all(&opts.out).map_err(|source| DataError::Io {
        path: opts.out.clone(),
        source,
    })?;
    let staging = Staging(
        opts.out
            .join(format!(".prepare.tmp.{}", std::process::id())),
    );
    std::fs::create_dir_all(&staging.0).map_err(|source| DataError::Io {
        path: opts.out.clone(),
        source,
    })?;

    let progress = progress_bar(opts.progress, total_bytes);
    let keep = matches!(opts.input, Input::DefaultCorpus);
    let new_split = |name: &str| -> Result<SplitWriter, DataError> {
        Ok(SplitWriter {
            tok,
            writer: TokenWriter::create_with_width(&staging.0.join(name), vocab, width)?,
            pending: String::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            stats: SplitStats::default(),
            in_doc: false,
            had_doc: false,
            keep: keep.then(String::new),
            progress: &progress,
        })
    };
    let mut train = new_split("train.bin")?;
    let mut val = new_split("val.bin")?;
    encode_splits(opts, val_input.as_ref(), total_chars, &mut train, &mut val)?;
    let (train_stats, train_text) = train.finish()?;
    let (val_stats, val_text) = val.finish()?;
    progress.finish_and_clear();

    let synth_floor = match (train_text, val_text) {
        (Some(t), Some(v)) => Some(SynthFloors {
            train: crate::corpus::floor(t.as_bytes()),
            val: crate::corpus::floor(v.as_bytes()),
        }),
        _ => None,
    };
    let (inputs, split) = describe_inputs(opts);
    let report = PrepareReport {
        tokenizer_kind: tok.kind().to_string(),
        tokenizer_fingerprint: tok.fingerprint(),
        vocab_size: vocab,
        eot_token: tok.eot_token(),
        id_bytes: width,
        inputs,
        split,
        train: train_stats,
        val: val_stats,
        synth_floor,
        seconds: start.elapsed().as_secs_f64(),
    };
    install(opts, &staging.0, &report)?;
    Ok(report)
}

/// The id width and the validation input of `opts`, refusing bad options and input files
/// that do not open before any work (a missing file is the commonest mistake).
fn check_options(opts: &PrepareOptions) -> Result<(u32, Option<Input>), DataError> {
    let vocab = opts.tokenizer.vocab_size();
    let width = match opts.dtype {
        Dtype::Auto => id_width(vocab),
        Dtype::U16 if vocab > 1 << 16 => {
            return Err(DataError::Invalid(format!(
            "a vocabulary of {vocab} tokens does not fit u16 ids (at most 65,536); use --dtype u32"
        )))
        }
        Dtype::U16 => 2,
        Dtype::U32 => 4,
    };
    if let ValSplit::Fraction(f) = opts.val {
        if !(0.0..1.0).contains(&f) {
            return Err(DataError::Invalid(format!(
                "--val-fraction must be in [0, 1), got {f}"
            )));
        }
    }
    if let Input::Files(files) = &opts.input {
        if files.is_empty() {
            return Err(DataError::Invalid("no input files".into()));
        }
    }
    let val_input = match &opts.val {
        ValSplit::Files(v) if v.is_empty() => {
            return Err(DataError::Invalid("no validation files".into()))
        }
        ValSplit::Files(v) => Some(Input::Files(v.clone())),
        ValSplit::Fraction(_) => None,
    };
    for input in std::iter::once(&opts.input).chain(val_input.as_ref()) {
        if let Input::Files(files) = input {
            for p in files {
                std::fs::File::open(p).map_err(|source| DataError::Io {
                    path: p.clone(),
                    source,
                })?;
            }
        }
    }
    Ok((width, val_input))
}

/// Pass 1: validates the inputs and counts their characters and bytes.
fn count_text(opts: &PrepareOptions, val_input: Option<&Input>) -> Result<(u64, u64), DataError> {
    let jsonl = opts.jsonl_field.as_deref();
    let mut total_chars = 0u64;
    let mut total_bytes = 0u64;
    for input in std::iter::once(&opts.input).chain(val_input) {
        for_each_event(input, jsonl, opts.lossy, &mut |e| {
            if let Event::Text(s) = e {
                total_chars += s.chars().count() as u64;
                total_bytes += s.len() as u64;
            }
            Ok(())
        })?;
    }
    if total_chars == 0 {
        return Err(DataError::Invalid(
            "the corpus is empty (no text in the inputs)".into(),
        ));
    }
    Ok((total_chars, total_bytes))
}

fn progress_bar(show: bool, total_bytes: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total_bytes);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} tokenizing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

/// Pass 2: encodes the inputs into the two splits (the last fraction of the characters
/// goes to validation, or the validation files do).
fn encode_splits(
    opts: &PrepareOptions,
    val_input: Option<&Input>,
    total_chars: u64,
    train: &mut SplitWriter,
    val: &mut SplitWriter,
) -> Result<(), DataError> {
    let jsonl = opts.jsonl_field.as_deref();
    match &opts.val {
        ValSplit::Fraction(f) => {
            let train_chars = ((total_chars as f64) * (1.0 - f)).floor() as u64;
            let mut seen = 0u64;
            for_each_event(&opts.input, jsonl, opts.lossy, &mut |e| match e {
                Event::Text(s) => {
                    if seen >= train_chars {
                        return val.text(s);
                    }
                    let n = s.chars().count() as u64;
                    if seen + n <= train_chars {
                        seen += n;
                        return train.text(s);
                    }
                    let k = (train_chars - seen) as usize;
                    let cut = s.char_indices().nth(k).map_or(s.len(), |(i, _)| i);
                    seen += n;
                    train.text(&s[..cut])?;
                    val.text(&s[cut..])
                }
                Event::EndDoc => {
                    train.end_doc();
                    val.end_doc();
                    Ok(())
                }
            })
        }
        ValSplit::Files(_) => {
            for_each_event(&opts.input, jsonl, opts.lossy, &mut |e| match e {
                Event::Text(s) => train.text(s),
                Event::EndDoc => {
                    train.end_doc();
                    Ok(())
                }
            })?;
            if let Some(vi) = val_input {
                for_each_event(vi, jsonl, opts.lossy, &mut |e| match e {
                    Event::Text(s) => val.text(s),
                    Event::EndDoc => {
                        val.end_doc();
                        Ok(())
                    }
                })?;
            }
            Ok(())
        }
    }
}

/// The `inputs` and `split` lines of meta.json.
fn describe_inputs(opts: &PrepareOptions) -> (Vec<String>, String) {
    let inputs = match &opts.input {
        Input::DefaultCorpus => vec![format!(
            "default corpus (arlm-synth seed {:#x}, {} bytes)",
            crate::corpus::DEFAULT_SEED,
            crate::corpus::DEFAULT_BYTES
        )],
        Input::Files(f) => f.iter().map(|p| p.display().to_string()).collect(),
    };
    let split = match &opts.val {
        ValSplit::Fraction(f) => format!("last {f} of the characters"),
        ValSplit::Files(v) => format!(
            "files: {}",
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    (inputs, split)
}

/// Writes tokenizer.json and meta.json into `staging` and renames the four files into
/// `opts.out`: the old meta.json goes first, the new one last, so a directory with a
/// meta.json always has the .bin files it describes.
fn install(opts: &PrepareOptions, staging: &Path, report: &PrepareReport) -> Result<(), DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    crate::tokenizer::save(opts.tokenizer, &staging.join("tokenizer.json"))?;
    let meta = serde_json::to_string_pretty(report).unwrap_or_default();
    std::fs::write(staging.join("meta.json"), meta).map_err(io(staging))?;
    let meta_dest = opts.out.join("meta.json");
    if meta_dest.exists() {
        std::fs::remove_file(&meta_dest).map_err(io(&meta_dest))?;
    }
    for name in ["train.bin", "val.bin", "tokenizer.json", "meta.json"] {
        let dest = opts.out.join(name);
        std::fs::rename(staging.join(name), &dest).map_err(io(&dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::bin::TokenFile;
    use crate::tokenizer::bytes::ByteTokenizer;

    fn opts<'a>(tok: &'a dyn Tokenizer, files: Vec<PathBuf>, out: &Path) -> PrepareOptions<'a> {
        PrepareOptions {
            tokenizer: tok,
            input: Input::Files(files),
            val: ValSplit::Fraction(0.1),
            out: out.to_path_buf(),
            jsonl_field: None,
            lossy: false,
            dtype: Dtype::Auto,
            progress: false,
        }
    }

    #[test]
    fn cut_points_are_at_line_or_word_starts() {
        let t = "ab.\ncd ef";
        assert_eq!(cut_point(t, 0), Some(4));
        assert_eq!(cut_point("ab cd", 0), Some(2));
        assert_eq!(cut_point("abcdef", 0), None);
        assert_eq!(cut_point("ab\n\ncd", 0), None);
        assert_eq!(cut_point("a b", 0), None);
    }

    #[test]
    fn split_documents_and_counts_match_brute_force() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let b = dir.path().join("b.txt");
        let e = dir.path().join("empty.txt");
        // Multi-byte characters so that chars and bytes differ; big enough for many chunks.
        let text_a: String = (0..60_000)
            .map(|i| format!("wörd{} é\nLine {i}. ", i % 97))
            .collect();
        let text_b = "Zweites Dokument — kurz.\n".repeat(10_000);
        std::fs::write(&a, &text_a).unwrap();
        std::fs::write(&b, &text_b).unwrap();
        std::fs::write(&e, "").unwrap();
        let out = dir.path().join("out");
        let tok = ByteTokenizer;
        let r = prepare(&opts(&tok, vec![a, e, b], &out)).unwrap();
        // Brute force: the whole text, cut at 90% of the characters, bytes tokenizer.
        let all: Vec<char> = text_a.chars().chain(text_b.chars()).collect();
        let cut = (all.len() as f64 * 0.9).floor() as usize;
        let train_s: String = all[..cut].iter().collect();
        let val_s: String = all[cut..].iter().collect();
        assert!(
            cut > text_a.chars().count(),
            "cut lands in the second document"
        );
        let (ta, tb) = train_s.split_at(text_a.len());
        let mut want_train: Vec<u32> = tok.encode(ta).unwrap();
        want_train.push(256);
        want_train.extend(tok.encode(tb).unwrap());
        let want_val = tok.encode(&val_s).unwrap();
        let train = TokenFile::open(&out.join("train.bin")).unwrap();
        let val = TokenFile::open(&out.join("val.bin")).unwrap();
        assert_eq!(train.slice(0, train.len()), want_train);
        assert_eq!(val.slice(0, val.len()), want_val);
        assert_eq!(r.train.documents, 2);
        assert_eq!(r.val.documents, 1);
        assert_eq!(r.train.chars, cut as u64);
        assert_eq!(r.train.bytes, train_s.len() as u64);
        assert_eq!(r.val.words, val_s.split_whitespace().count() as u64);
        assert_eq!(
            r.train.words,
            ta.split_whitespace().count() as u64 + tb.split_whitespace().count() as u64
        );
        assert_eq!(r.train.tokens, want_train.len() as u64);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap();
        assert_eq!(meta["val"]["tokens"], want_val.len() as u64);
        assert_eq!(meta["tokenizer_fingerprint"], tok.fingerprint());
        // Only the four outputs remain (no staging leftovers).
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
    }

    #[test]
    fn utf8_errors_carry_the_offset_and_lossy_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        let mut bytes = vec![b'x'; READ_BYTES - 1];
        bytes.extend_from_slice("é".as_bytes()); // straddles the read boundary
        bytes.extend_from_slice(b"ok \xff tail");
        std::fs::write(&a, &bytes).unwrap();
        let out = dir.path().join("out");
        let tok = ByteTokenizer;
        let err = prepare(&opts(&tok, vec![a.clone()], &out)).unwrap_err();
        match err {
            DataError::InvalidUtf8 { offset, .. } => assert_eq!(offset, READ_BYTES as u64 + 4),
            other => panic!("{other}"),
        }
        assert!(!out.join("train.bin").exists());
        let mut o = opts(&tok, vec![a], &out);
        o.lossy = true;
        o.val = ValSplit::Fraction(0.0);
        let r = prepare(&o).unwrap();
        assert_eq!(r.train.chars, READ_BYTES as u64 + 9);
        assert_eq!(r.val.tokens, 0);
    }

    #[test]
    fn jsonl_documents_and_default_corpus() {
        let dir = tempfile::tempdir().unwrap();
        let j = dir.path().join("d.jsonl");
        std::fs::write(
            &j,
            "{\"text\": \"hello\"}\n\n{\"text\": \"world\", \"x\": 1}\n",
        )
        .unwrap();
        let out = dir.path().join("out");
        let tok = ByteTokenizer;
        let mut o = opts(&tok, vec![j.clone()], &out);
        o.jsonl_field = Some("text".into());
        o.val = ValSplit::Files(vec![j.clone()]);
        let r = prepare(&o).unwrap();
        let train = TokenFile::open(&out.join("train.bin")).unwrap();
        assert_eq!(
            tok.decode_bytes(&train.slice(0, train.len())).unwrap(),
            b"hello<|endoftext|>world"
        );
        assert_eq!(r.train.documents, 2);
        assert_eq!(r.val.tokens, 11);
        std::fs::write(&j, "{\"body\": \"x\"}\n").unwrap();
        let err = prepare(&o).unwrap_err().to_string();
        assert!(err.contains("d.jsonl:1") && err.contains("text"), "{err}");

        let mut o = opts(&tok, vec![], &out);
        o.input = Input::DefaultCorpus;
        let r = prepare(&o).unwrap();
        assert_eq!(
            r.train.bytes + r.val.bytes,
            crate::corpus::DEFAULT_BYTES as u64
        );
        assert_eq!(r.train.tokens, 900_000);
        let fl = r.synth_floor.unwrap();
        assert!((fl.val.bits_per_byte - fl.val.entropy_rate_bits_per_byte).abs() < 0.1);
    }

    #[test]
    fn bad_settings_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.txt");
        std::fs::write(&a, "text").unwrap();
        let out = dir.path().join("out");
        let tok = ByteTokenizer;
        let mut o = opts(&tok, vec![dir.path().join("missing.txt")], &out);
        assert!(matches!(prepare(&o), Err(DataError::Io { .. })));
        o.input = Input::Files(vec![a.clone()]);
        o.val = ValSplit::Fraction(1.0);
        assert!(prepare(&o).is_err());
        let e = dir.path().join("e.txt");
        std::fs::write(&e, "").unwrap();
        let o = opts(&tok, vec![e], &out);
        assert!(prepare(&o).unwrap_err().to_string().contains("empty"));
        assert!(!out.join("train.bin").exists());
    }
}
