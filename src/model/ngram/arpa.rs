//! ARPA back-off files: the interchange format of KenLM, SRILM and IRSTLM.
//!
//! ```text
//! \data\
//! ngram 1=10002
//! ngram 2=264990
//!
//! \1-grams:
//! -5.3312373    <unk>    0
//! ...
//! \end\
//! ```
//! Each line is log10 p, the n-gram's words, and (below the highest order) log10 backoff.
//! Reading accepts plain or gzip files (detected by the gzip magic, not the name), tabs or
//! spaces, a missing backoff (0), and blank lines anywhere. Words are resolved to ids by a
//! [`Vocab`]: a words tokenizer, numeric ids (how models over other tokenizers are
//! written), or a vocabulary built from the unigram section (for a foreign ARPA file).

use super::kneser_ney::{ArpaGrams, OrderGrams};
use super::{NgramError, Packer, MAX_ORDER};
use crate::tokenizer::words::{WordTokenizer, SPECIALS};
use rustc_hash::FxHashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// How ARPA words map to ids.
pub enum Vocab<'a> {
    /// The words of a words tokenizer (unknown words are an error).
    Words(&'a WordTokenizer),
    /// Decimal token ids; `<s>` is `vocab_size` (a virtual start id) and `</s>` is `eot`.
    Ids { vocab_size: usize, eot: u32 },
    /// Build a words vocabulary from the unigram section (`<unk>`, `<s>`, `</s>` first).
    Build,
}

/// An ARPA file's content.
pub struct ArpaFile {
    /// The n-grams, keyed by ids.
    pub grams: ArpaGrams,
    /// The vocabulary built from the unigrams (only for [`Vocab::Build`]).
    pub tokenizer: Option<WordTokenizer>,
}

/// Opens `path` for reading, decompressing gzip transparently.
pub fn open_maybe_gz(path: &Path) -> Result<Box<dyn BufRead>, NgramError> {
    let io = |source| NgramError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(io)?;
    drop(f);
    let f = std::fs::File::open(path).map_err(io)?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(f),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 20, f))
    })
}

/// Reads an ARPA file (plain or gzip).
pub fn read(path: &Path, vocab: Vocab) -> Result<ArpaFile, NgramError> {
    let mut input = open_maybe_gz(path)?;
    let err = |line: usize, message: String| NgramError::Arpa {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut line = String::new();
    let mut lineno = 0usize;
    let mut next_line = |line: &mut String| -> Result<bool, NgramError> {
        line.clear();
        let n = input.read_line(line).map_err(|source| NgramError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(n > 0)
    };
    // Header.
    let mut counts: Vec<usize> = Vec::new();
    let mut in_data = false;
    loop {
        if !next_line(&mut line)? {
            return Err(err(lineno, "no \\1-grams: section".into()));
        }
        lineno += 1;
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t == "\\data\\" {
            in_data = true;
            continue;
        }
        if let Some(rest) = t.strip_prefix("ngram ") {
            let (n, c) = rest
                .split_once('=')
                .ok_or_else(|| err(lineno, format!("bad count line {t:?}")))?;
            let n: usize = n
                .trim()
                .parse()
                .map_err(|_| err(lineno, format!("bad order in {t:?}")))?;
            let c: usize = c
                .trim()
                .parse()
                .map_err(|_| err(lineno, format!("bad count in {t:?}")))?;
            if n != counts.len() + 1 {
                return Err(err(lineno, format!("expected ngram {}=", counts.len() + 1)));
            }
            counts.push(c);
            continue;
        }
        if t == "\\1-grams:" {
            break;
        }
        if in_data {
            return Err(err(lineno, format!("unexpected line {t:?} in \\data\\")));
        }
    }
    let order = counts.len();
    if order == 0 || order > MAX_ORDER {
        return Err(err(
            lineno,
            format!("the header lists {order} orders (1..={MAX_ORDER} supported)"),
        ));
    }
    // Word resolution.
    let (n_ids, start, eot) = match &vocab {
        Vocab::Words(t) => {
            use crate::tokenizer::Tokenizer;
            (t.vocab_size(), 1u32, 2u32)
        }
        Vocab::Ids { vocab_size, eot } => (vocab_size + 1, *vocab_size as u32, *eot),
        Vocab::Build => (counts[0] + SPECIALS.len(), 1, 2),
    };
    let mut built: FxHashMap<String, u32> = FxHashMap::default();
    let mut built_words: Vec<String> = Vec::new();
    if matches!(vocab, Vocab::Build) {
        for (i, s) in SPECIALS.iter().enumerate() {
            built.insert(s.to_string(), i as u32);
        }
    }
    let packer = Packer::new(n_ids, order)?;
    let mut orders: Vec<OrderGrams> = Vec::with_capacity(order);
    let mut ids = Vec::with_capacity(order);
    for n in 1..=order {
        let mut og = OrderGrams::default();
        og.keys.reserve(counts[n - 1]);
        og.probs.reserve(counts[n - 1]);
        og.backoffs.reserve(counts[n - 1]);
        let mut pairs: Vec<(u128, f32, f32)> = Vec::with_capacity(counts[n - 1]);
        loop {
            if !next_line(&mut line)? {
                return Err(err(lineno, format!("file ends inside the {n}-grams")));
            }
            lineno += 1;
            let t = line.trim();
            if t.is_empty() {
                continue;
            }
            if t.starts_with('\\') {
                let want = if n == order {
                    "\\end\\".to_string()
                } else {
                    format!("\\{}-grams:", n + 1)
                };
                if t != want {
                    return Err(err(lineno, format!("expected {want}, found {t:?}")));
                }
                break;
            }
            let mut fields = t.split_ascii_whitespace();
            let prob: f32 = fields
                .next()
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| err(lineno, format!("bad probability in {t:?}")))?;
            ids.clear();
            for _ in 0..n {
                let w = fields
                    .next()
                    .ok_or_else(|| err(lineno, format!("fewer than {n} words in {t:?}")))?;
                let id = match &vocab {
                    Vocab::Words(tok) => tok.lookup(w),
                    Vocab::Ids { vocab_size, eot } => match w {
                        "<s>" => Some(*vocab_size as u32),
                        "</s>" => Some(*eot),
                        _ => w
                            .parse::<u32>()
                            .ok()
                            .filter(|&i| (i as usize) < *vocab_size),
                    },
                    Vocab::Build => match built.get(w) {
                        Some(&id) => Some(id),
                        None if n == 1 => {
                            let id = built.len() as u32;
                            built.insert(w.to_string(), id);
                            built_words.push(w.to_string());
                            Some(id)
                        }
                        None => None,
                    },
                };
                let id =
                    id.ok_or_else(|| err(lineno, format!("word {w:?} is not in the vocabulary")))?;
                ids.push(id);
            }
            let backoff: f32 = match fields.next() {
                Some(f) => f
                    .parse()
                    .map_err(|_| err(lineno, format!("bad backoff in {t:?}")))?,
                None => 0.0,
            };
            if fields.next().is_some() {
                return Err(err(lineno, format!("too many fields in {t:?}")));
            }
            pairs.push((packer.pack(&ids), prob, backoff));
        }
        if pairs.len() != counts[n - 1] {
            return Err(err(
                lineno,
                format!(
                    "the header says {} {n}-grams, the section has {}",
                    counts[n - 1],
                    pairs.len()
                ),
            ));
        }
        pairs.sort_unstable_by_key(|p| p.0);
        for (k, p, b) in pairs {
            og.keys.push(k);
            og.probs.push(p);
            og.backoffs.push(b);
        }
        orders.push(og);
    }
    let _ = (start, eot);
    let tokenizer = match vocab {
        Vocab::Build => Some(WordTokenizer::from_words(
            built_words.iter().map(|s| s.as_str()),
        )),
        _ => None,
    };
    Ok(ArpaFile {
        grams: ArpaGrams {
            n_ids,
            packer,
            orders,
        },
        tokenizer,
    })
}

/// Writes `grams` as an ARPA file (gzip when `path` ends in `.gz`), atomically.
/// `name(id)` spells each id.
pub fn write(
    path: &Path,
    grams: &ArpaGrams,
    name: &dyn Fn(u32) -> String,
) -> Result<(), NgramError> {
    let io = |source| NgramError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = crate::atomic::AtomicFile::create(path).map_err(io)?;
    {
        let buf = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        if path.extension().is_some_and(|e| e == "gz") {
            let mut gz = flate2::write::GzEncoder::new(buf, flate2::Compression::fast());
            write_to(&mut gz, grams, name).map_err(io)?;
            gz.finish().map_err(io)?.flush().map_err(io)?;
        } else {
            let mut buf = buf;
            write_to(&mut buf, grams, name).map_err(io)?;
            buf.flush().map_err(io)?;
        }
    }
    file.commit().map_err(io)
}

fn write_to(
    out: &mut dyn Write,
    grams: &ArpaGrams,
    name: &dyn Fn(u32) -> String,
) -> std::io::Result<()> {
    let order = grams.order();
    let names: Vec<String> = (0..grams.n_ids as u32).map(name).collect();
    writeln!(out, "\\data\\")?;
    for (i, og) in grams.orders.iter().enumerate() {
        writeln!(out, "ngram {}={}", i + 1, og.keys.len())?;
    }
    let p = grams.packer;
    let mask = (1u128 << p.bits) - 1;
    for (i, og) in grams.orders.iter().enumerate() {
        let n = i + 1;
        writeln!(out, "\n\\{n}-grams:")?;
        for (j, &k) in og.keys.iter().enumerate() {
            write!(out, "{}\t", og.probs[j])?;
            for w in (0..n).rev() {
                let id = ((k >> (w as u32 * p.bits)) & mask) as usize;
                out.write_all(names[id].as_bytes())?;
                if w > 0 {
                    out.write_all(b" ")?;
                }
            }
            if n < order {
                write!(out, "\t{}", og.backoffs[j])?;
            }
            out.write_all(b"\n")?;
        }
    }
    writeln!(out, "\n\\end\\")
}
