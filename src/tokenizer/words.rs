//! The words tokenizer: whitespace-separated words, one sentence per line, with `<unk>`,
//! `<s>` and `</s>` (the conventions of PTB, WikiText-2, KenLM and SRILM).
//!
//! Ids: `<unk>` = 0, `<s>` = 1, `</s>` = 2, then the vocabulary words in order of first
//! appearance in the training text (KenLM assigns ids the same way, so an ARPA file we
//! write lists words in the order lmplz would, and its suffix-sort quirk is reproducible).
//!
//! # Encoding and whitespace normalization
//! Text is split into lines on `\n` only; each line is split on Unicode whitespace
//! ([`str::split_whitespace`], so `\r`, tabs and runs of spaces all separate words), and
//! every line, including an empty one, ends with `</s>` (the end-of-text token). A final
//! line without a trailing `\n` is still a line; a trailing `\n` does not start a new one.
//! Words outside the vocabulary, and the literal strings `<s>` / `</s>` (which may not
//! appear inside a sentence), become `<unk>`; the literal `<unk>` is `<unk>`.
//!
//! Decoding joins the words of a line with single spaces and ends each line with `\n`,
//! so `decode(encode(s))` is `s` with every line's whitespace collapsed to single spaces,
//! leading/trailing blanks removed, a final `\n` added, and OOV words shown as `<unk>`.
//! [`Tokenizer::token_bytes`] counts a word as its bytes plus one separator (the space
//! or newline after it) and `</s>` as 0 bytes, so a sequence's byte count equals the
//! decoded text's length except that an empty line counts 0 instead of 1.
//!
//! # tokenizer.json
//! Saved as a Hugging Face `WordLevel` model with a `WhitespaceSplit` pre-tokenizer and the
//! three specials as added tokens, so Python's `tokenizers` loads it and encodes the words
//! of a line to the same ids (it has no notion of lines, so it never emits `</s>`).

use super::word_table::WordTable;
use super::{Tokenizer, TokenizerError};
use rustc_hash::{FxHashMap, FxHashSet};

/// Id of `<unk>`.
pub const UNK: u32 = 0;
/// Id of `<s>` (the sentence-start context; never predicted, never produced by encode).
pub const BOS: u32 = 1;
/// Id of `</s>` (end of sentence; the end-of-text token).
pub const EOS: u32 = 2;
pub use super::word_table::SPECIALS;

/// A word-level vocabulary with `<unk>`, `<s>` and `</s>`: a [`WordTable`], built in
/// memory or mapped from a binary n-gram model (cloning shares it).
#[derive(Debug, Clone)]
pub struct WordTokenizer {
    table: WordTable,
}

impl WordTokenizer {
    /// Builds a vocabulary from `texts`: words seen at least `min_count` times, at most
    /// `max_vocab` ids in all (specials included; the most frequent words win, ties go to
    /// the earlier first appearance), numbered in order of first appearance.
    pub fn train(
        texts: &[&str],
        max_vocab: Option<usize>,
        min_count: usize,
    ) -> Result<WordTokenizer, TokenizerError> {
        let mut counter = WordCounter::default();
        for text in texts {
            counter.add(text);
        }
        counter.finish(max_vocab, min_count)
    }

    /// A tokenizer whose non-special words are `words` (ids 3, 4, ... in this order);
    /// specials and repeats in `words` are skipped.
    pub fn from_words<'a>(words: impl IntoIterator<Item = &'a str>) -> WordTokenizer {
        let words = words.into_iter();
        let n = SPECIALS.len() + words.size_hint().0;
        let mut seen = FxHashSet::with_capacity_and_hasher(n, Default::default());
        let mut list = Vec::with_capacity(n);
        for w in SPECIALS.into_iter().chain(words) {
            if seen.insert(w) {
                list.push(w);
            }
        }
        WordTokenizer {
            table: WordTable::build(&list),
        }
    }

    /// The tokenizer of a vocabulary table (e.g. one mapped from `model.bin`).
    pub fn from_table(table: WordTable) -> WordTokenizer {
        WordTokenizer { table }
    }

    /// The vocabulary table (what `model.bin` stores).
    pub fn table(&self) -> &WordTable {
        &self.table
    }

    /// The id of `word` (`<unk>` when it is not in the vocabulary).
    #[inline]
    pub fn id(&self, word: &str) -> u32 {
        match self.table.lookup(word) {
            Some(id) if id != BOS && id != EOS => id,
            _ => UNK,
        }
    }

    /// The id of `word` if it is in the vocabulary (specials included).
    pub fn lookup(&self, word: &str) -> Option<u32> {
        self.table.lookup(word)
    }

    /// The spelling of `id`.
    pub fn word(&self, id: u32) -> Result<&str, TokenizerError> {
        self.table.word(id).ok_or(TokenizerError::UnknownId {
            id,
            vocab_size: self.table.len(),
        })
    }

    /// Encodes one line (no `\n` inside) and appends its ids and `</s>` to `out`.
    pub fn encode_line_into(&self, line: &str, out: &mut Vec<u32>) {
        out.extend(line.split_whitespace().map(|w| self.id(w)));
        out.push(EOS);
    }

    /// Recognises this tokenizer's tokenizer.json; `None` when it is another kind.
    pub fn from_hf_json(json: &serde_json::Value) -> Result<Option<Self>, TokenizerError> {
        if json.pointer("/model/type").and_then(|v| v.as_str()) != Some("WordLevel") {
            return Ok(None);
        }
        let bad = |m: String| TokenizerError::Invalid(format!("WordLevel tokenizer.json: {m}"));
        let vocab = json
            .pointer("/model/vocab")
            .and_then(|v| v.as_object())
            .ok_or_else(|| bad("model.vocab is not an object".into()))?;
        let mut words: Vec<Option<&str>> = vec![None; vocab.len()];
        for (w, id) in vocab {
            let id = id
                .as_u64()
                .filter(|&i| (i as usize) < vocab.len())
                .ok_or_else(|| bad(format!("id of {w:?} is not in 0..{}", vocab.len())))?;
            if words[id as usize].replace(w).is_some() {
                return Err(bad(format!("id {id} is used twice")));
            }
        }
        for (i, s) in SPECIALS.iter().enumerate() {
            if words.get(i).copied().flatten() != Some(*s) {
                return Err(bad(format!("id {i} must be {s}")));
            }
        }
        let words: Vec<&str> = words.into_iter().map(|w| w.unwrap_or("")).collect();
        Ok(Some(Self::from_words(words[3..].iter().copied())))
    }
}

impl Tokenizer for WordTokenizer {
    fn kind(&self) -> &'static str {
        "words"
    }

    fn vocab_size(&self) -> usize {
        self.table.len()
    }

    fn as_words(&self) -> Option<&WordTokenizer> {
        Some(self)
    }

    fn eot_token(&self) -> u32 {
        EOS
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 5 + 1);
        let body = text.strip_suffix('\n').unwrap_or(text);
        if text.is_empty() {
            return Ok(out);
        }
        for line in body.split('\n') {
            self.encode_line_into(line, &mut out);
        }
        Ok(out)
    }

    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        let mut line_start = true;
        for &id in ids {
            let w = self.word(id)?;
            if id == EOS {
                out.push(b'\n');
                line_start = true;
            } else {
                if !line_start {
                    out.push(b' ');
                }
                out.extend_from_slice(w.as_bytes());
                line_start = false;
            }
        }
        Ok(out)
    }

    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        let w = self.word(id)?;
        Ok(if id == EOS {
            Vec::new()
        } else {
            let mut b = w.as_bytes().to_vec();
            b.push(b' ');
            b
        })
    }

    fn to_hf_json(&self) -> serde_json::Value {
        let vocab: serde_json::Map<String, serde_json::Value> = self
            .table
            .words()
            .enumerate()
            .map(|(i, w)| (w.to_string(), serde_json::Value::from(i)))
            .collect();
        let added: Vec<serde_json::Value> = SPECIALS
            .iter()
            .enumerate()
            .map(|(i, s)| {
                serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null,
            "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
        })
    }
}

/// Word counts for training a words vocabulary from text given piece by piece (a file
/// line by line, so the text need not be in memory at once): words in first-appearance
/// order with their counts. [`WordTokenizer::train`] is this over whole texts.
#[derive(Default)]
pub struct WordCounter {
    seen: FxHashMap<String, usize>,
    order: Vec<(String, u64)>,
}

impl WordCounter {
    /// Counts the words of `text` (split on whitespace; specials are skipped).
    pub fn add(&mut self, text: &str) {
        for w in text.split_whitespace() {
            if SPECIALS.contains(&w) {
                continue;
            }
            match self.seen.get(w) {
                Some(&i) => self.order[i].1 += 1,
                None => {
                    self.seen.insert(w.to_string(), self.order.len());
                    self.order.push((w.to_string(), 1));
                }
            }
        }
    }

    /// The vocabulary: words seen at least `min_count` times, the `max_vocab - 3` most
    /// frequent when capped (ties to the first seen), in first-appearance order.
    pub fn finish(
        self,
        max_vocab: Option<usize>,
        min_count: usize,
    ) -> Result<WordTokenizer, TokenizerError> {
        if let Some(m) = max_vocab {
            if m < SPECIALS.len() {
                return Err(TokenizerError::Invalid(format!(
                    "a words vocabulary needs at least 3 ids (<unk>, <s>, </s>), got {m}"
                )));
            }
        }
        let order = self.order;
        let mut keep: Vec<usize> = (0..order.len())
            .filter(|&i| order[i].1 >= min_count as u64)
            .collect();
        if let Some(m) = max_vocab {
            let room = m - SPECIALS.len();
            if keep.len() > room {
                keep.sort_by_key(|&i| (std::cmp::Reverse(order[i].1), i));
                keep.truncate(room);
                keep.sort_unstable();
            }
        }
        Ok(WordTokenizer::from_words(
            keep.into_iter().map(|i| order[i].0.as_str()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_specials_and_first_appearance_order() {
        let t = WordTokenizer::train(&["b a  b\n\nc <unk> a\n"], None, 1).unwrap();
        assert_eq!(t.vocab_size(), 6);
        assert_eq!(t.word(3).unwrap(), "b");
        assert_eq!(t.word(4).unwrap(), "a");
        assert_eq!(t.word(5).unwrap(), "c");
        let ids = t.encode("b a  b\n\nc <unk> zz </s>\n").unwrap();
        assert_eq!(ids, vec![3, 4, 3, EOS, EOS, 5, UNK, UNK, UNK, EOS]);
        assert_eq!(t.encode("").unwrap(), Vec::<u32>::new());
        assert_eq!(t.encode("a").unwrap(), vec![4, EOS]);
        assert_eq!(
            t.decode(&ids).unwrap(),
            "b a b\n\nc <unk> <unk> <unk>\n".to_string()
        );
    }

    #[test]
    fn caps_by_size_and_count() {
        let text = "a a a b b c d d d d\n";
        let t = WordTokenizer::train(&[text], Some(5), 1).unwrap();
        // d (4) and a (3) survive, in first-appearance order.
        assert_eq!(t.vocab_size(), 5);
        assert_eq!(t.word(3).unwrap(), "a");
        assert_eq!(t.word(4).unwrap(), "d");
        let t = WordTokenizer::train(&[text], None, 2).unwrap();
        assert_eq!(t.vocab_size(), 6);
        assert!(WordTokenizer::train(&[text], Some(2), 1).is_err());
    }

    #[test]
    fn round_trip_normalizes_whitespace_and_hf_json() {
        let t = WordTokenizer::train(&["x y z"], None, 1).unwrap();
        let s = "  x\ty  z \r\nz\n\n";
        let back = t.decode(&t.encode(s).unwrap()).unwrap();
        assert_eq!(back, "x y z\nz\n\n");
        let bytes: usize = t
            .encode(s)
            .unwrap()
            .iter()
            .map(|&i| t.token_bytes(i).unwrap().len())
            .sum();
        assert_eq!(bytes, "x y z\nz\n".len());
        let j = t.to_hf_json();
        let u = WordTokenizer::from_hf_json(&j).unwrap().unwrap();
        assert!(u.table.words().eq(t.table.words()));
        assert!(
            WordTokenizer::from_hf_json(&serde_json::json!({"model": {"type": "BPE"}}))
                .unwrap()
                .is_none()
        );
    }
}
