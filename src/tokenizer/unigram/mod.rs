//! The unigram tokenizer: SentencePiece's Unigram language model (Kudo 2018) with the
//! `▁` metaspace convention, stored as a Hugging Face `tokenizer.json` (model `Unigram`,
//! pre-tokenizer and decoder `Metaspace`), trained here ([`train`]) or loaded from files
//! the `tokenizers` library writes ([`hf`]; parity with its ids is tested on WikiText-2).
//!
//! Encoding: spaces become `▁`, a `▁` is put in front (prepend scheme `always`), the text
//! is cut before every `▁` (each word carries its leading `▁`), and each word is segmented
//! by the model's Viterbi path ([`model`]). A run of characters no piece covers becomes one
//! unknown token, or its bytes as `<0xAB>` pieces with byte fallback. Words never
//! interact, so long texts are cut at `▁` boundaries and encoded in parallel with rayon,
//! with a per-chunk cache of word -> ids.
//!
//! The bytes of a token are its piece with `▁` read as a space, so the bytes of an
//! encoded text's tokens are the text plus the one prepended space; decoding drops that
//! space again, as the `Metaspace` decoder does (a text that starts with a space loses it,
//! as in `tokenizers`).
//!
//! Written by hand rather than with the `tokenizers` crate for the reasons in
//! [`super::bpe`]; the lattice algorithms (sampling, n-best, forward-backward) are the
//! teaching point and need the lattice in hand anyway.

pub mod hf;
pub mod model;
pub mod train;

pub use model::{Segmentation, UnigramModel};

use super::{Tokenizer, TokenizerError};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

/// SentencePiece's word-boundary mark.
pub const METASPACE: char = '▁';

/// When the `Metaspace` pre-tokenizer puts a `▁` in front of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrependScheme {
    Always,
    First,
    Never,
}

impl PrependScheme {
    pub fn as_str(self) -> &'static str {
        match self {
            PrependScheme::Always => "always",
            PrependScheme::First => "first",
            PrependScheme::Never => "never",
        }
    }
}

/// The `Metaspace` pre-tokenizer's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metaspace {
    pub replacement: char,
    pub prepend: PrependScheme,
    /// Cut the text before every replacement character.
    pub split: bool,
}

impl Default for Metaspace {
    fn default() -> Self {
        Metaspace {
            replacement: METASPACE,
            prepend: PrependScheme::Always,
            split: true,
        }
    }
}

/// Texts longer than this are encoded in parallel chunks.
const PARALLEL_CHUNK_BYTES: usize = 1 << 18;

/// A Unigram tokenizer: pieces with scores, special tokens, metaspace handling.
#[derive(Debug, Clone)]
pub struct UnigramTokenizer {
    model: UnigramModel,
    unk_id: Option<u32>,
    byte_fallback: bool,
    /// Id of each `<0xAB>` piece (`u32::MAX` when absent).
    byte_ids: [u32; 256],
    metaspace: Option<Metaspace>,
    /// Per id: whether it is a special (added) token, which never matches text.
    special: Vec<bool>,
    eot: u32,
    /// Bytes of every id (pieces with `▁` as a space, `<0xAB>` as that byte).
    bytes: Vec<Vec<u8>>,
}

impl UnigramTokenizer {
    /// Builds a tokenizer from `(piece, score)` pairs (id = index). `special[id]` marks
    /// special tokens; the end-of-text token is `eot`.
    pub fn new(
        pieces: Vec<(String, f64)>,
        special: Vec<bool>,
        unk_id: Option<u32>,
        byte_fallback: bool,
        metaspace: Option<Metaspace>,
        eot: u32,
    ) -> Result<UnigramTokenizer, TokenizerError> {
        let n = pieces.len();
        let bad = |m: String| Err(TokenizerError::Invalid(m));
        if special.len() != n {
            return bad(format!("{} special flags for {n} pieces", special.len()));
        }
        if eot as usize >= n {
            return bad(format!("end-of-text id {eot} is not below {n}"));
        }
        if let Some(u) = unk_id {
            if u as usize >= n {
                return bad(format!("unk_id {u} is not below the vocabulary size {n}"));
            }
        }
        let mut seen = FxHashMap::default();
        for (id, (p, s)) in pieces.iter().enumerate() {
            if !s.is_finite() {
                return bad(format!("piece {p:?} (id {id}) has a non-finite score {s}"));
            }
            if let Some(prev) = seen.insert(p.as_str(), id) {
                return bad(format!("piece {p:?} appears twice (ids {prev} and {id})"));
            }
        }
        let mut byte_ids = [u32::MAX; 256];
        let repl = metaspace.map(|m| m.replacement);
        let bytes: Vec<Vec<u8>> = pieces
            .iter()
            .enumerate()
            .map(|(id, (p, _))| {
                if !special[id] {
                    if let Some(b) = byte_piece(p) {
                        byte_ids[b as usize] = id as u32;
                        return vec![b];
                    }
                }
                match repl {
                    Some(r) if !special[id] => p.replace(r, " ").into_bytes(),
                    _ => p.as_bytes().to_vec(),
                }
            })
            .collect();
        let in_lattice: Vec<bool> = special.iter().map(|s| !s).collect();
        Ok(UnigramTokenizer {
            model: UnigramModel::new(pieces, &in_lattice),
            unk_id,
            byte_fallback,
            byte_ids,
            metaspace,
            special,
            eot,
            bytes,
        })
    }

    pub fn model(&self) -> &UnigramModel {
        &self.model
    }
    pub fn metaspace(&self) -> Option<Metaspace> {
        self.metaspace
    }
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }
    pub fn byte_fallback(&self) -> bool {
        self.byte_fallback
    }
    /// The word-boundary character (`▁` when there is no metaspace pre-tokenizer).
    pub fn replacement(&self) -> char {
        self.metaspace.map_or(METASPACE, |m| m.replacement)
    }
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The text as the model sees it, cut into words: spaces as `▁`, the prepended `▁`,
    /// a cut before every `▁` (when the pre-tokenizer splits).
    pub fn pretokenize(&self, text: &str) -> Vec<String> {
        let Some(ms) = self.metaspace else {
            return if text.is_empty() {
                Vec::new()
            } else {
                vec![text.to_string()]
            };
        };
        let mut norm: String = text
            .chars()
            .map(|c| if c == ' ' { ms.replacement } else { c })
            .collect();
        if ms.prepend != PrependScheme::Never
            && !norm.is_empty()
            && !norm.starts_with(ms.replacement)
        {
            norm.insert(0, ms.replacement);
        }
        if !ms.split {
            return if norm.is_empty() { vec![] } else { vec![norm] };
        }
        split_before(&norm, ms.replacement)
            .map(str::to_string)
            .collect()
    }

    /// Ids of one word's segmentation spans (unknown spans: byte fallback or unk).
    fn spans_to_ids(
        &self,
        word: &str,
        spans: &[(usize, usize, Option<u32>)],
        out: &mut Vec<u32>,
    ) -> Result<(), ()> {
        for &(a, b, id) in spans {
            match id {
                Some(id) => out.push(id),
                None => {
                    let bytes = &word.as_bytes()[a..b];
                    if self.byte_fallback
                        && bytes.iter().all(|&x| self.byte_ids[x as usize] != u32::MAX)
                    {
                        out.extend(bytes.iter().map(|&x| self.byte_ids[x as usize]));
                    } else if let Some(u) = self.unk_id {
                        out.push(u);
                    } else {
                        return Err(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Encodes a text whose words are all independent (one chunk), with a word cache.
    fn encode_chunk(&self, norm_chunk: &str) -> Result<Vec<u32>, ()> {
        let mut out = Vec::with_capacity(norm_chunk.len() / 3);
        let mut cache: FxHashMap<&str, (usize, usize)> = FxHashMap::default();
        let mut store: Vec<u32> = Vec::new();
        let repl = self.metaspace.filter(|m| m.split).map(|m| m.replacement);
        let words: Box<dyn Iterator<Item = &str>> = match repl {
            Some(r) => Box::new(split_before(norm_chunk, r)),
            None => Box::new(std::iter::once(norm_chunk).filter(|s| !s.is_empty())),
        };
        for w in words {
            if let Some(&(a, b)) = cache.get(w) {
                out.extend_from_slice(&store[a..b]);
                continue;
            }
            let a = store.len();
            let spans = self.model.viterbi(w);
            self.spans_to_ids(w, &spans, &mut store)?;
            out.extend_from_slice(&store[a..]);
            if w.len() <= 64 {
                cache.insert(w, (a, store.len()));
            }
        }
        Ok(out)
    }

    /// Encodes by sampling each word's segmentation from p(seg) ∝ exp(alpha * score)
    /// (subword regularization), with `rng` drawn in text order.
    pub fn encode_sampled(
        &self,
        text: &str,
        alpha: f64,
        rng: &mut impl rand::Rng,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        for w in self.pretokenize(text) {
            let spans = self.model.sample(&w, alpha, rng);
            if self.spans_to_ids(&w, &spans, &mut out).is_err() {
                return Err(self.unknown_char_error(text));
            }
        }
        Ok(out)
    }

    /// The error for a text with a character no piece covers and no unk/byte fallback.
    fn unknown_char_error(&self, text: &str) -> TokenizerError {
        let repl = self.metaspace.map(|m| m.replacement);
        let mut buf = [0u8; 4];
        for (offset, c) in text.char_indices() {
            let m = if c == ' ' { repl.unwrap_or(c) } else { c };
            let s = m.encode_utf8(&mut buf);
            if self.model.viterbi(s).iter().any(|sp| sp.2.is_none()) {
                return TokenizerError::UnknownChar { ch: c, offset };
            }
        }
        TokenizerError::Invalid("a character has no piece, no unk_id and no byte fallback".into())
    }
}

/// Cuts `s` before every `sep` (the first piece may not start with `sep`; no empty pieces).
fn split_before(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let skip = if rest.starts_with(sep) {
            sep.len_utf8()
        } else {
            0
        };
        let cut = rest[skip..].find(sep).map_or(rest.len(), |i| i + skip);
        let (word, tail) = rest.split_at(cut);
        rest = tail;
        Some(word)
    })
}

/// The byte of a `<0xAB>` byte-fallback piece.
fn byte_piece(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer for UnigramTokenizer {
    fn kind(&self) -> &'static str {
        "unigram"
    }
    fn vocab_size(&self) -> usize {
        self.model.len()
    }
    fn eot_token(&self) -> u32 {
        self.eot
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let Some(ms) = self.metaspace else {
            return self
                .encode_chunk(text)
                .map_err(|_| self.unknown_char_error(text));
        };
        let mut norm: String = text
            .chars()
            .map(|c| if c == ' ' { ms.replacement } else { c })
            .collect();
        if ms.prepend != PrependScheme::Never
            && !norm.is_empty()
            && !norm.starts_with(ms.replacement)
        {
            norm.insert(0, ms.replacement);
        }
        let result = if !ms.split || norm.len() <= PARALLEL_CHUNK_BYTES {
            self.encode_chunk(&norm)
        } else {
            let mut chunks = Vec::new();
            let mut rest = norm.as_str();
            while rest.len() > PARALLEL_CHUNK_BYTES {
                let mut at = PARALLEL_CHUNK_BYTES;
                while !rest.is_char_boundary(at) {
                    at += 1;
                }
                let cut = rest[at..]
                    .find(ms.replacement)
                    .map_or(rest.len(), |i| i + at);
                let (head, tail) = rest.split_at(cut);
                chunks.push(head);
                rest = tail;
            }
            if !rest.is_empty() {
                chunks.push(rest);
            }
            chunks
                .par_iter()
                .map(|c| self.encode_chunk(c))
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.concat())
        };
        result.map_err(|_| self.unknown_char_error(text))
    }
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            let b = self
                .bytes
                .get(id as usize)
                .ok_or(TokenizerError::UnknownId {
                    id,
                    vocab_size: self.vocab_size(),
                })?;
            let strip_space = i == 0
                && !self.special[id as usize]
                && self
                    .metaspace
                    .is_some_and(|m| m.prepend != PrependScheme::Never)
                && self.model.pieces()[id as usize].starts_with(self.replacement());
            out.extend_from_slice(if strip_space { &b[1..] } else { b });
        }
        Ok(out)
    }
    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        self.bytes
            .get(id as usize)
            .cloned()
            .ok_or(TokenizerError::UnknownId {
                id,
                vocab_size: self.vocab_size(),
            })
    }
    fn to_hf_json(&self) -> serde_json::Value {
        hf::to_hf_json(self)
    }
}
