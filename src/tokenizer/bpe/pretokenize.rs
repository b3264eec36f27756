//! Hand-written GPT-2 and GPT-4 (cl100k) pre-tokenizers.
//!
//! Byte-level BPE first splits text into "pieces" with a regex, then merges bytes inside
//! each piece. The two regexes ([`GPT2_PATTERN`], [`GPT4_PATTERN`]) need look-ahead
//! (`\s+(?!\S)`), so the `regex` crate cannot run them and `fancy-regex` runs them in its
//! backtracking VM. Both patterns are simple enough to be a hand-written scanner: each
//! alternative is a run of one character class, tried in the regex's order, and the
//! look-ahead only ever gives back the last whitespace character of a run.
//!
//! Character classes are exactly the regex ones: `\p{L}` and `\p{N}` come from
//! `regex-syntax`'s Unicode tables (the same tables `fancy-regex` uses), `\s` is
//! Unicode `White_Space` (`char::is_whitespace`). ASCII goes through a 128-entry table.
//!
//! Equality with `fancy-regex` on the official patterns is checked by property tests over
//! random strings drawn from a confusable alphabet (spaces, tabs, CR/LF, apostrophes,
//! letters, digits, punctuation, non-ASCII letters/digits/spaces) and on real corpora.
//!
//! Performance notes (release build, wikitext-2 train.txt 10.8 MB, one thread on the shared
//! 2-core dev machine; `cargo test --release --lib pretokenizer_speed -- --ignored --nocapture`,
//! which also checks every piece equals fancy-regex's):
//!
//! | pattern | hand-written | fancy-regex |
//! |---|---:|---:|
//! | GPT-2 | 110 MB/s | 14 MB/s |
//! | GPT-4 | 133 MB/s | 23 MB/s |
//!
//! With fancy-regex, splitting alone would cap encoding below tiktoken (which uses the same
//! regex engine); the scanner is why arlm's GPT-2 encoder is several times faster.

use std::sync::OnceLock;

/// The pre-tokenization regex of a byte-level BPE tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pretokenizer {
    /// GPT-2's regex ([`GPT2_PATTERN`]): contractions, letters, numbers, other, whitespace.
    Gpt2,
    /// GPT-4's cl100k regex ([`GPT4_PATTERN`]): case-insensitive contractions, numbers in
    /// groups of at most three, punctuation that keeps its trailing newlines.
    Gpt4,
}

/// GPT-2's pre-tokenization regex, as in `encoder.py` and Hugging Face's `ByteLevel`.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GPT-4's (cl100k_base) pre-tokenization regex.
pub const GPT4_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Pretokenizer {
    /// The regex this pre-tokenizer implements.
    pub fn pattern(self) -> &'static str {
        match self {
            Pretokenizer::Gpt2 => GPT2_PATTERN,
            Pretokenizer::Gpt4 => GPT4_PATTERN,
        }
    }

    /// Its name on the command line: "gpt2" or "gpt4".
    pub fn name(self) -> &'static str {
        match self {
            Pretokenizer::Gpt2 => "gpt2",
            Pretokenizer::Gpt4 => "gpt4",
        }
    }

    /// Parses "gpt2" / "gpt4".
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "gpt2" => Some(Pretokenizer::Gpt2),
            "gpt4" => Some(Pretokenizer::Gpt4),
            _ => None,
        }
    }

    /// The pieces of `text`, in order; they concatenate to `text`.
    pub fn pieces(self, text: &str) -> Pieces<'_> {
        // Build the Unicode tables before the hot loop.
        let _ = tables();
        Pieces {
            text,
            pos: 0,
            kind: self,
        }
    }

    /// Byte offset where the piece starting at `i` ends (`i < text.len()`).
    #[inline]
    fn piece_end(self, text: &str, i: usize) -> usize {
        match self {
            Pretokenizer::Gpt2 => gpt2_end(text, i),
            Pretokenizer::Gpt4 => gpt4_end(text, i),
        }
    }
}

/// Iterator over the pieces of a text (see [`Pretokenizer::pieces`]).
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
    kind: Pretokenizer,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;
    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let start = self.pos;
        let end = self.kind.piece_end(self.text, start);
        self.pos = end;
        Some(&self.text[start..end])
    }
}

/// A byte offset where `text` may be cut without changing the pieces of either pre-tokenizer,
/// at or after `from`: a space preceded by a printable ASCII character and followed by an
/// ASCII letter. No piece crosses such a point: runs of letters, numbers and punctuation
/// stop at the space, and the space starts the next piece (" word") in both regexes.
pub fn safe_split_point(text: &str, from: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut p = from.max(1);
    while p + 1 < b.len() {
        if b[p] == b' ' && (0x21..=0x7e).contains(&b[p - 1]) && b[p + 1].is_ascii_alphabetic() {
            return Some(p);
        }
        p += 1;
    }
    None
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

const fn ascii_classes() -> [Class; 128] {
    let mut t = [Class::Other; 128];
    let mut c = 0;
    while c < 128 {
        let b = c as u8;
        t[c] = if b.is_ascii_alphabetic() {
            Class::Letter
        } else if b.is_ascii_digit() {
            Class::Number
        } else if matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
            Class::Space
        } else {
            Class::Other
        };
        c += 1;
    }
    t
}

static ASCII: [Class; 128] = ascii_classes();

struct Tables {
    letter: Vec<(u32, u32)>,
    number: Vec<(u32, u32)>,
}

fn unicode_class(pattern: &str) -> Vec<(u32, u32)> {
    use regex_syntax::hir::{Class as HirClass, HirKind};
    // The pattern is a constant, so parsing cannot fail at run time.
    let hir = regex_syntax::parse(pattern).expect("constant Unicode class parses");
    match hir.kind() {
        HirKind::Class(HirClass::Unicode(c)) => c
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect(),
        _ => Vec::new(),
    }
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| Tables {
        letter: unicode_class(r"\p{L}"),
        number: unicode_class(r"\p{N}"),
    })
}

fn in_ranges(ranges: &[(u32, u32)], c: u32) -> bool {
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

#[inline]
fn classify(c: char) -> Class {
    let u = c as u32;
    if u < 128 {
        return ASCII[u as usize];
    }
    if c.is_whitespace() {
        return Class::Space;
    }
    let t = tables();
    if in_ranges(&t.letter, u) {
        Class::Letter
    } else if in_ranges(&t.number, u) {
        Class::Number
    } else {
        Class::Other
    }
}

/// The character at byte offset `i` (a char boundary, `i < s.len()`) and its length.
#[inline]
fn char_at(s: &str, i: usize) -> (char, usize) {
    let b = s.as_bytes()[i];
    if b < 0x80 {
        return (b as char, 1);
    }
    match s[i..].chars().next() {
        Some(c) => (c, c.len_utf8()),
        None => ('\0', 1),
    }
}

/// End of the run of `class` characters starting at `i`, at most `max` characters.
#[inline]
fn run_end(s: &str, mut i: usize, class: Class, max: usize) -> usize {
    let b = s.as_bytes();
    let mut n = 0;
    while i < b.len() && n < max {
        let x = b[i];
        if x < 0x80 {
            if ASCII[x as usize] != class {
                break;
            }
            i += 1;
        } else {
            let (c, l) = char_at(s, i);
            if classify(c) != class {
                break;
            }
            i += l;
        }
        n += 1;
    }
    i
}

/// `[\r\n]*` from `i`.
#[inline]
fn crlf_end(s: &str, mut i: usize) -> usize {
    let b = s.as_bytes();
    while i < b.len() && (b[i] == b'\r' || b[i] == b'\n') {
        i += 1;
    }
    i
}

/// The class of the character at `i`, if any.
#[inline]
fn class_at(s: &str, i: usize) -> Option<Class> {
    (i < s.len()).then(|| classify(char_at(s, i).0))
}

/// `\s+(?!\S)|\s+` from `i` (a whitespace character), with GPT-4's `\s*[\r\n]+` first when
/// `crlf` is set.
#[inline]
fn whitespace_end(s: &str, i: usize, crlf: bool) -> usize {
    let b = s.as_bytes();
    let mut j = i;
    let mut last = i;
    let mut count = 0usize;
    let mut last_crlf_end = None;
    while j < b.len() {
        let (c, l) = char_at(s, j);
        if !(if (c as u32) < 128 {
            ASCII[c as usize] == Class::Space
        } else {
            c.is_whitespace()
        }) {
            break;
        }
        if c == '\r' || c == '\n' {
            last_crlf_end = Some(j + l);
        }
        last = j;
        j += l;
        count += 1;
    }
    if crlf {
        if let Some(e) = last_crlf_end {
            return e;
        }
    }
    if j == b.len() || count == 1 {
        j
    } else {
        // `\s+(?!\S)` gives back the last whitespace character, which then starts the
        // next piece (usually " word").
        last
    }
}

fn gpt2_end(s: &str, i: usize) -> usize {
    let b = s.as_bytes();
    let (c, cl) = char_at(s, i);
    if c == '\'' {
        match b.get(i + 1) {
            Some(b's' | b't' | b'm' | b'd') => return i + 2,
            Some(b'r' | b'v') if b.get(i + 2) == Some(&b'e') => return i + 3,
            Some(b'l') if b.get(i + 2) == Some(&b'l') => return i + 3,
            _ => {}
        }
    }
    if c == ' ' {
        if let Some(k @ (Class::Letter | Class::Number | Class::Other)) = class_at(s, i + 1) {
            return run_end(s, i + 1, k, usize::MAX);
        }
    }
    let k = classify(c);
    if k != Class::Space {
        return run_end(s, i + cl, k, usize::MAX);
    }
    whitespace_end(s, i, false)
}

fn gpt4_end(s: &str, i: usize) -> usize {
    let (c, cl) = char_at(s, i);
    if c == '\'' && i + 1 < s.len() {
        let (c1, l1) = char_at(s, i + 1);
        let j = i + 1 + l1;
        match c1 {
            's' | 'S' | '\u{17f}' | 't' | 'T' | 'm' | 'M' | 'd' | 'D' => return j,
            'r' | 'R' | 'v' | 'V' if matches!(s.as_bytes().get(j), Some(b'e' | b'E')) => {
                return j + 1
            }
            'l' | 'L' if matches!(s.as_bytes().get(j), Some(b'l' | b'L')) => return j + 1,
            _ => {}
        }
    }
    let k = classify(c);
    if c != '\r'
        && c != '\n'
        && k != Class::Letter
        && k != Class::Number
        && class_at(s, i + cl) == Some(Class::Letter)
    {
        return run_end(s, i + cl, Class::Letter, usize::MAX);
    }
    match k {
        Class::Letter => return run_end(s, i, Class::Letter, usize::MAX),
        Class::Number => return run_end(s, i, Class::Number, 3),
        Class::Other => return crlf_end(s, run_end(s, i, Class::Other, usize::MAX)),
        Class::Space => {}
    }
    if c == ' ' && class_at(s, i + 1) == Some(Class::Other) {
        return crlf_end(s, run_end(s, i + 1, Class::Other, usize::MAX));
    }
    whitespace_end(s, i, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn regex_pieces(pattern: &str, text: &str) -> Vec<String> {
        static RE: OnceLock<[fancy_regex::Regex; 2]> = OnceLock::new();
        let res = RE.get_or_init(|| {
            [GPT2_PATTERN, GPT4_PATTERN].map(|p| fancy_regex::Regex::new(p).unwrap())
        });
        let re = if pattern == GPT2_PATTERN {
            &res[0]
        } else {
            &res[1]
        };
        re.find_iter(text)
            .map(|m| m.unwrap().as_str().to_string())
            .collect()
    }

    fn ours(p: Pretokenizer, text: &str) -> Vec<String> {
        p.pieces(text).map(str::to_string).collect()
    }

    const ALPHABET: &[&str] = &[
        " ", " ", "  ", "\t", "\n", "\r", "\r\n", "\u{a0}", "\u{3000}", "'", "'s", "'S", "'ll",
        "'LL", "'re", "'Ve", "'ſ", "a", "Z", "é", "ß", "中", "х", "0", "7", "١", "Ⅻ", "½", ".",
        ",", "!", "@", "-", "\"", "😀", "\u{301}", "_", "$", "word", "Hello", "123456",
    ];

    fn text_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(ALPHABET), 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn gpt2_equals_regex(text in text_strategy()) {
            prop_assert_eq!(ours(Pretokenizer::Gpt2, &text), regex_pieces(GPT2_PATTERN, &text));
        }
        #[test]
        fn gpt4_equals_regex(text in text_strategy()) {
            prop_assert_eq!(ours(Pretokenizer::Gpt4, &text), regex_pieces(GPT4_PATTERN, &text));
        }
        #[test]
        fn arbitrary_unicode_equals_regex(text in "\\PC{0,30}") {
            prop_assert_eq!(ours(Pretokenizer::Gpt2, &text), regex_pieces(GPT2_PATTERN, &text));
            prop_assert_eq!(ours(Pretokenizer::Gpt4, &text), regex_pieces(GPT4_PATTERN, &text));
        }
        #[test]
        fn split_points_do_not_change_pieces(text in text_strategy(), at in 0usize..200) {
            if let Some(p) = safe_split_point(&text, at.min(text.len())) {
                for kind in [Pretokenizer::Gpt2, Pretokenizer::Gpt4] {
                    let mut split = ours(kind, &text[..p]);
                    split.extend(ours(kind, &text[p..]));
                    prop_assert_eq!(split, ours(kind, &text));
                }
            }
        }
    }

    /// Speed of the scanner vs fancy-regex on a real corpus (numbers for the module doc):
    /// `cargo test --release --lib pretokenizer_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn pretokenizer_speed() {
        let path = crate::data::shared_data_root(std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
            .join("wikitext-2/train.txt");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("SKIPPED: {} is absent", path.display());
            return;
        };
        let mb = text.len() as f64 / 1e6;
        for kind in [Pretokenizer::Gpt2, Pretokenizer::Gpt4] {
            let t0 = std::time::Instant::now();
            let ours = kind.pieces(&text).count();
            let a = t0.elapsed().as_secs_f64();
            let re = fancy_regex::Regex::new(kind.pattern()).unwrap();
            let t0 = std::time::Instant::now();
            let theirs = re.find_iter(&text).count();
            let b = t0.elapsed().as_secs_f64();
            assert_eq!(ours, theirs);
            let same = kind
                .pieces(&text)
                .zip(re.find_iter(&text))
                .all(|(x, y)| x == y.unwrap().as_str());
            assert!(same, "{kind:?}: pieces differ from fancy-regex");
            eprintln!(
                "{kind:?}: {ours} pieces; hand-written {:.0} MB/s, fancy-regex {:.0} MB/s",
                mb / a,
                mb / b
            );
        }
    }

    #[test]
    fn known_examples() {
        assert_eq!(
            ours(Pretokenizer::Gpt2, "Hello world's  end\n\n 123"),
            vec!["Hello", " world", "'s", " ", " end", "\n\n", " 123"]
        );
        assert_eq!(
            ours(Pretokenizer::Gpt4, "I'LL pay 12345.\n\n ok"),
            vec!["I", "'LL", " pay", " ", "123", "45", ".\n\n", " ok"]
        );
    }
}
