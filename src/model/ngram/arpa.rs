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
///
/// Long (~220 lines) on purpose: one streaming pass over the lines in which the header,
/// each `\\N-grams:` section and the end marker share the line reader, the line number
/// for error messages and the counts declared in the header; split into functions, each
/// would take that state as arguments and the order of the sections would be harder to
/// see.
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
        Vocab::Build => {
            let n = counts[0]
                .checked_add(SPECIALS.len())
                .filter(|&n| n <= u32::MAX as usize)
                .ok_or_else(|| err(lineno, format!("{} unigrams is too many", counts[0])))?;
            (n, 1, 2)
        }
    };
    if counts[0] == 0 {
        return Err(err(lineno, "the header lists no unigrams".into()));
    }
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
        // The header's count is untrusted: reserve at most a few million entries up front
        // (the vectors grow past that as lines really arrive) and compare at the end.
        let reserve = counts[n - 1].min(1 << 22);
        og.keys.reserve(reserve);
        og.probs.reserve(reserve);
        og.backoffs.reserve(reserve);
        // (key, log10 p, log10 backoff, line number)
        let mut pairs: Vec<(u128, f32, f32, usize)> = Vec::with_capacity(reserve);
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
            check_values(prob, backoff, n == 1 && ids[0] == start)
                .map_err(|m| err(lineno, format!("{m} in {t:?}")))?;
            pairs.push((packer.pack(&ids), prob, backoff, lineno));
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
        pairs.sort_unstable_by_key(|p| (p.0, p.3));
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            let words = packer.unpack(w[0].0, n);
            return Err(err(
                w[1].3,
                format!(
                    "duplicate {n}-gram (ids {words:?}), first on line {}",
                    w[0].3
                ),
            ));
        }
        if n == 1 {
            // KenLM refuses a model without these: every sentence is conditioned on <s>
            // and ends with </s>, so without them no sentence has a probability.
            for (id, name) in [(start, "<s>"), (eot, "</s>")] {
                if pairs.binary_search_by_key(&(id as u128), |p| p.0).is_err() {
                    return Err(err(lineno, format!("the unigrams have no {name}")));
                }
            }
        }
        for (k, p, b, _) in pairs {
            og.keys.push(k);
            og.probs.push(p);
            og.backoffs.push(b);
        }
        orders.push(og);
    }
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

/// Checks one ARPA line's numbers: a log10 probability is at most 0 and not NaN (only
/// `<s>`, never predicted, may have log10 p = -inf, as some writers give it); a log10
/// backoff is finite (it may be positive: a backoff weight above 1 is legal).
fn check_values(log10_p: f32, log10_backoff: f32, is_start: bool) -> Result<(), String> {
    if log10_p.is_nan() || log10_p > 0.0 {
        return Err(format!(
            "log10 probability {log10_p} is not a probability (must be <= 0)"
        ));
    }
    if log10_p == f32::NEG_INFINITY && !is_start {
        return Err("log10 probability -inf (p = 0) is only allowed for <s>".into());
    }
    if !log10_backoff.is_finite() {
        return Err(format!("log10 backoff {log10_backoff} is not finite"));
    }
    Ok(())
}

/// Writes `grams` as an ARPA file (gzip when `path` ends in `.gz`), atomically.
/// `name(id)` spells each id.
pub fn write(
    path: &Path,
    grams: &ArpaGrams,
    name: &dyn Fn(u32) -> String,
) -> Result<(), NgramError> {
    let counts: Vec<usize> = grams.orders.iter().map(|o| o.keys.len()).collect();
    write_orders(
        path,
        grams.n_ids,
        grams.packer,
        &counts,
        name,
        &mut |m, line| {
            let og = &grams.orders[m - 1];
            for (j, &k) in og.keys.iter().enumerate() {
                line(k, og.probs[j], og.backoffs[j])?;
            }
            Ok(())
        },
    )
}

/// Receives one n-gram: packed key, log10 p, log10 backoff.
pub type GramSink<'a> = dyn FnMut(u128, f32, f32) -> Result<(), NgramError> + 'a;

/// Writes an ARPA file (gzip when `path` ends in `.gz`) whose order m has `counts[m - 1]`
/// n-grams, which `order(m, sink)` hands to `sink` in ascending key order: the n-grams
/// may come from memory or be streamed from disk, with the same bytes out.
pub fn write_orders(
    path: &Path,
    n_ids: usize,
    packer: Packer,
    counts: &[usize],
    name: &dyn Fn(u32) -> String,
    order: &mut dyn FnMut(usize, &mut GramSink) -> Result<(), NgramError>,
) -> Result<(), NgramError> {
    let io = |source| NgramError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = crate::atomic::AtomicFile::create(path).map_err(io)?;
    {
        let buf = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        let lines = Lines {
            path,
            n_ids,
            packer,
            counts,
            name,
        };
        if path.extension().is_some_and(|e| e == "gz") {
            let mut gz = flate2::write::GzEncoder::new(buf, flate2::Compression::fast());
            lines.write_to(&mut gz, order)?;
            gz.finish().map_err(io)?.flush().map_err(io)?;
        } else {
            let mut buf = buf;
            lines.write_to(&mut buf, order)?;
            buf.flush().map_err(io)?;
        }
    }
    file.commit().map_err(io)
}

/// What an ARPA file's lines are made from.
struct Lines<'a> {
    path: &'a Path,
    n_ids: usize,
    packer: Packer,
    counts: &'a [usize],
    name: &'a dyn Fn(u32) -> String,
}

impl Lines<'_> {
    fn write_to(
        &self,
        out: &mut dyn Write,
        order_grams: &mut dyn FnMut(usize, &mut GramSink) -> Result<(), NgramError>,
    ) -> Result<(), NgramError> {
        let io = |source| NgramError::Io {
            path: self.path.to_path_buf(),
            source,
        };
        let order = self.counts.len();
        let names: Vec<String> = (0..self.n_ids as u32).map(self.name).collect();
        writeln!(out, "\\data\\").map_err(io)?;
        for (i, c) in self.counts.iter().enumerate() {
            writeln!(out, "ngram {}={}", i + 1, c).map_err(io)?;
        }
        let p = self.packer;
        let mask = (1u128 << p.bits) - 1;
        // Lines are formatted into one buffer handed to `out` a megabyte at a time: one
        // dynamic call per megabyte instead of several per line.
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
        for n in 1..=order {
            writeln!(out, "\n\\{n}-grams:").map_err(io)?;
            let mut written = 0usize;
            order_grams(n, &mut |k, prob, backoff| {
                write!(buf, "{prob}\t").map_err(io)?;
                for w in (0..n).rev() {
                    let id = ((k >> (w as u32 * p.bits)) & mask) as usize;
                    let word = names.get(id).ok_or_else(|| {
                        NgramError::Invalid(format!("id {id} is outside the vocabulary"))
                    })?;
                    buf.extend_from_slice(word.as_bytes());
                    if w > 0 {
                        buf.push(b' ');
                    }
                }
                if n < order {
                    write!(buf, "\t{backoff}").map_err(io)?;
                }
                buf.push(b'\n');
                if buf.len() >= (1 << 20) - 4096 {
                    out.write_all(&buf).map_err(io)?;
                    buf.clear();
                }
                written += 1;
                Ok(())
            })?;
            if written != self.counts[n - 1] {
                return Err(NgramError::Invalid(format!(
                    "order {n}: {written} n-grams written, the header says {}",
                    self.counts[n - 1]
                )));
            }
            out.write_all(&buf).map_err(io)?;
            buf.clear();
        }
        writeln!(out, "\n\\end\\").map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-1.0\t<unk>\t0\n0\t<s>\t-0.5\n-0.3\t</s>\t0\n-0.6\ta\t-0.2\n\n\\2-grams:\n-0.2\t<s> a\n-0.1\ta </s>\n\n\\end\\\n";

    fn read_text(text: &str) -> Result<ArpaFile, NgramError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.arpa");
        std::fs::write(&p, text).unwrap();
        read(&p, Vocab::Build)
    }

    fn error_of(text: &str) -> String {
        match read_text(text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_file_reads() {
        let f = read_text(GOOD).unwrap();
        assert_eq!(f.grams.orders[0].keys.len(), 4);
        assert_eq!(f.grams.orders[1].keys.len(), 2);
    }

    #[test]
    fn bad_numbers_are_refused_with_their_line() {
        for (bad, want) in [
            ("-0.6\ta\t-0.2", "nan\ta\t-0.2"),
            ("-0.6\ta\t-0.2", "5.0\ta\t-0.2"),
            ("-0.6\ta\t-0.2", "inf\ta\t-0.2"),
            ("-0.6\ta\t-0.2", "-inf\ta\t-0.2"),
            ("-0.6\ta\t-0.2", "-0.6\ta\tnan"),
            ("-0.6\ta\t-0.2", "-0.6\ta\tinf"),
            ("-0.1\ta </s>", "nan\ta </s>"),
        ] {
            let e = error_of(&GOOD.replace(bad, want));
            assert!(
                e.contains("m.arpa:9:") || e.contains("m.arpa:13:"),
                "{want}: {e}"
            );
            assert!(
                e.contains("probability") || e.contains("backoff"),
                "{want}: {e}"
            );
        }
        // -inf is legal for <s> (never predicted), as some writers give it.
        read_text(&GOOD.replace("0\t<s>\t-0.5", "-inf\t<s>\t-0.5")).unwrap();
        // A positive backoff (a weight above 1) is legal.
        read_text(&GOOD.replace("-0.6\ta\t-0.2", "-0.6\ta\t0.3")).unwrap();
    }

    #[test]
    fn duplicates_missing_specials_and_empty_sections_are_refused() {
        let dup = GOOD
            .replace("ngram 1=4", "ngram 1=5")
            .replace("-0.6\ta\t-0.2\n", "-0.6\ta\t-0.2\n-0.7\ta\t-0.2\n");
        assert!(error_of(&dup).contains("duplicate 1-gram"));
        let dup2 = GOOD
            .replace("ngram 2=2", "ngram 2=3")
            .replace("-0.1\ta </s>\n", "-0.1\ta </s>\n-0.4\ta </s>\n");
        assert!(error_of(&dup2).contains("duplicate 2-gram"));
        let no_s = GOOD
            .replace("ngram 1=4", "ngram 1=3")
            .replace("0\t<s>\t-0.5\n", "")
            .replace("-0.2\t<s> a\n", "")
            .replace("ngram 2=2", "ngram 2=1");
        assert!(error_of(&no_s).contains("no <s>"), "{}", error_of(&no_s));
        let no_end = GOOD
            .replace("ngram 1=4", "ngram 1=3")
            .replace("-0.3\t</s>\t0\n", "")
            .replace("-0.1\ta </s>\n", "")
            .replace("ngram 2=2", "ngram 2=1");
        assert!(error_of(&no_end).contains("no </s>"));
        let empty = "\\data\\\nngram 1=0\n\n\\1-grams:\n\n\\end\\\n";
        assert!(error_of(empty).contains("no unigrams"));
    }

    #[test]
    fn absurd_header_counts_are_errors_not_aborts() {
        for (from, to) in [
            ("ngram 1=4", "ngram 1=18446744073709551615"),
            ("ngram 1=4", "ngram 1=18446744073709551612"),
            ("ngram 2=2", "ngram 2=100000000000000"),
            ("ngram 2=2", "ngram 2=18446744073709551615"),
        ] {
            let e = error_of(&GOOD.replace(from, to));
            assert!(e.contains("header") || e.contains("too many"), "{to}: {e}");
        }
    }
}
