//! The bpe tokenizer: byte-level BPE, trained here ([`BpeTokenizer::train`]) or loaded from
//! GPT-2's official `encoder.json` + `vocab.bpe` ([`BpeTokenizer::from_gpt2_files`]) or from
//! a Hugging Face `tokenizer.json` (model `BPE` with the `ByteLevel` pre-tokenizer/decoder).
//!
//! Encoding: the text is cut into pieces by a pre-tokenizer regex ([`Pretokenizer`]), each
//! piece's bytes start as one-byte tokens, and the lowest-ranked adjacent pair is merged
//! until no pair has a merge. Pieces never interact, which gives three shortcuts:
//! - a piece that is itself a token (and that BPE would turn into that token, checked once
//!   per vocabulary entry at load time) is looked up directly: most English words;
//! - other pieces are cached per chunk of text;
//! - large inputs are cut at points where no piece can cross
//!   ([`pretokenize::safe_split_point`]) and the chunks are encoded in parallel with rayon.
//!
//! Merging uses the simple O(n²) scan with cached pair ranks for short pieces and a binary
//! heap over a linked list of symbols for long ones (a megabyte without spaces is one
//! piece: O(n log n) time, no recursion).
//!
//! Why not the Hugging Face `tokenizers` crate: it is a large dependency (onig C regex or
//! fancy-regex, many crates), it is slower than tiktoken on GPT-2 encoding, and the format
//! it reads and writes is plain JSON that this module handles directly. Why a hand-written
//! pre-tokenizer: see [`pretokenize`]; the regex was most of the encoding time.
//!
//! Performance notes (release build, wikitext-2 train.txt, 10.8 MB, GPT-2 vocabulary,
//! `arlm bench tokenizer`): see docs/parts/tok.md for the measured table against tiktoken.

pub mod pretokenize;
pub mod train;

pub use pretokenize::Pretokenizer;

use super::bytes::{byte_level_alphabet, EOT_TEXT};
use super::{Tokenizer, TokenizerError};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::collections::BinaryHeap;
use std::path::Path;

/// A byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct BpeTokenizer {
    pretokenizer: Pretokenizer,
    /// Bytes of every id (special tokens: their text).
    tokens: Vec<Vec<u8>>,
    /// Ordinary (mergeable) tokens by their bytes.
    encoder: FxHashMap<Vec<u8>, u32>,
    /// `left << 32 | right` -> (rank, merged id).
    merges: FxHashMap<u64, (u32, u32)>,
    /// Merges in rank order, for saving.
    merge_list: Vec<(u32, u32)>,
    /// Id of each single byte (`u32::MAX` when the vocabulary lacks it).
    byte_ids: [u32; 256],
    /// Special (added) tokens: ids.
    special: Vec<u32>,
    eot: u32,
    /// True when BPE turns the token's own bytes into that one token (piece fast path).
    self_encodes: Vec<bool>,
}

/// Pieces of at most this many bytes use the quadratic merge; longer ones the heap.
const SHORT_PIECE: usize = 48;
/// Pieces of at most this many bytes are cached.
const CACHE_PIECE: usize = 64;
/// Texts shorter than this are encoded on one thread.
const PARALLEL_MIN: usize = 1 << 17;

#[inline]
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

impl BpeTokenizer {
    /// Builds a tokenizer from its vocabulary (`tokens[id]` = bytes), its merges in rank
    /// order (pairs of ids whose concatenation is a token), the special token ids and the
    /// end-of-text id.
    pub fn from_parts(
        tokens: Vec<Vec<u8>>,
        merge_list: Vec<(u32, u32)>,
        special: Vec<u32>,
        eot: u32,
        pretokenizer: Pretokenizer,
    ) -> Result<Self, TokenizerError> {
        let n = tokens.len();
        if eot as usize >= n {
            return Err(TokenizerError::Invalid(format!(
                "end-of-text id {eot} is outside the vocabulary ({n} tokens)"
            )));
        }
        let mut encoder = FxHashMap::default();
        for (id, t) in tokens.iter().enumerate() {
            if special.contains(&(id as u32)) {
                continue;
            }
            if encoder.insert(t.clone(), id as u32).is_some() {
                return Err(TokenizerError::Invalid(format!(
                    "token {:?} appears twice in the vocabulary",
                    String::from_utf8_lossy(t)
                )));
            }
        }
        let mut byte_ids = [u32::MAX; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            if let Some(&id) = encoder.get(&[b as u8][..]) {
                *slot = id;
            }
        }
        let mut merges = FxHashMap::default();
        for (rank, &(a, b)) in merge_list.iter().enumerate() {
            let (ta, tb) = match (tokens.get(a as usize), tokens.get(b as usize)) {
                (Some(ta), Some(tb)) => (ta, tb),
                _ => {
                    return Err(TokenizerError::Invalid(format!(
                        "merge {rank} uses an id outside the vocabulary"
                    )))
                }
            };
            let joined = [ta.as_slice(), tb.as_slice()].concat();
            let Some(&id) = encoder.get(&joined) else {
                return Err(TokenizerError::Invalid(format!(
                    "merge {rank} ({:?} + {:?}) makes a token that is not in the vocabulary",
                    String::from_utf8_lossy(ta),
                    String::from_utf8_lossy(tb)
                )));
            };
            // A pair listed twice keeps its first (best) rank, as in other implementations.
            merges.entry(pair_key(a, b)).or_insert((rank as u32, id));
        }
        let mut tok = BpeTokenizer {
            pretokenizer,
            tokens,
            encoder,
            merges,
            merge_list,
            byte_ids,
            special,
            eot,
            self_encodes: Vec::new(),
        };
        let mut self_encodes = vec![false; n];
        let mut syms = Vec::new();
        let mut out = Vec::new();
        for (id, t) in tok.tokens.iter().enumerate() {
            if tok.special.contains(&(id as u32)) || t.is_empty() {
                continue;
            }
            out.clear();
            if tok.merge_bytes(t, &mut syms, &mut out).is_ok() {
                self_encodes[id] = out.len() == 1 && out[0] == id as u32;
            }
        }
        tok.self_encodes = self_encodes;
        Ok(tok)
    }

    /// Loads GPT-2's official tokenizer from `encoder.json` and `vocab.bpe`.
    pub fn from_gpt2_files(encoder_json: &Path, vocab_bpe: &Path) -> Result<Self, TokenizerError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| TokenizerError::Io {
                path: p.to_path_buf(),
                source,
            })
        };
        let enc_text = read(encoder_json)?;
        let bpe_text = read(vocab_bpe)?;
        let fmt = |p: &Path, message: String| TokenizerError::Format {
            path: p.to_path_buf(),
            message,
        };
        let enc: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&enc_text)
            .map_err(|e| fmt(encoder_json, format!("not a JSON object: {e}")))?;
        let mut vocab = Vec::with_capacity(enc.len());
        for (k, v) in &enc {
            let id = v
                .as_u64()
                .ok_or_else(|| fmt(encoder_json, format!("id of {k:?} is not an integer")))?;
            let id = u32::try_from(id).map_err(|_| {
                fmt(
                    encoder_json,
                    format!("id {id} of {k:?} does not fit in 32 bits"),
                )
            })?;
            vocab.push((k.clone(), id));
        }
        let mut merges = Vec::new();
        for (lineno, line) in bpe_text.lines().enumerate() {
            if line.starts_with("#version") || line.is_empty() {
                continue;
            }
            let mut it = line.split(' ');
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(b), None) => merges.push((a.to_string(), b.to_string())),
                _ => {
                    return Err(fmt(
                        vocab_bpe,
                        format!("line {}: expected two symbols, got {line:?}", lineno + 1),
                    ))
                }
            }
        }
        Self::from_byte_level(vocab, merges, &[EOT_TEXT.to_string()], Pretokenizer::Gpt2).map_err(
            |e| match e {
                TokenizerError::Invalid(m) => fmt(encoder_json, m),
                other => other,
            },
        )
    }

    /// Builds from byte-level strings (GPT-2's `bytes_to_unicode` spelling): vocabulary
    /// entries, merges, and which entries are special tokens (kept as literal text).
    fn from_byte_level(
        vocab: Vec<(String, u32)>,
        merges: Vec<(String, String)>,
        specials: &[String],
        pretokenizer: Pretokenizer,
    ) -> Result<Self, TokenizerError> {
        let mut inverse: FxHashMap<char, u8> = FxHashMap::default();
        for (b, c) in byte_level_alphabet().iter().enumerate() {
            inverse.insert(*c, b as u8);
        }
        let decode = |s: &str| -> Result<Vec<u8>, TokenizerError> {
            s.chars()
                .map(|c| {
                    inverse.get(&c).copied().ok_or_else(|| {
                        TokenizerError::Invalid(format!(
                            "vocabulary entry {s:?} is not byte-level text (character {c:?})"
                        ))
                    })
                })
                .collect()
        };
        let n = vocab
            .iter()
            .map(|(_, id)| *id as usize + 1)
            .max()
            .unwrap_or(0);
        // Ids are dense (0..N-1): checked before allocating, so one huge id in a damaged
        // file cannot ask for gigabytes.
        if n > vocab.len() {
            return Err(TokenizerError::Invalid(format!(
                "token id {} is out of range: the vocabulary has {} entries (ids 0..{})",
                n - 1,
                vocab.len(),
                vocab.len()
            )));
        }
        let mut tokens: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut by_text: FxHashMap<&str, u32> = FxHashMap::default();
        let mut special = Vec::new();
        for (text, id) in &vocab {
            let bytes = if specials.contains(text) {
                special.push(*id);
                text.as_bytes().to_vec()
            } else {
                decode(text)?
            };
            if tokens[*id as usize].replace(bytes).is_some() {
                return Err(TokenizerError::Invalid(format!("id {id} is used twice")));
            }
            by_text.insert(text.as_str(), *id);
        }
        let tokens: Vec<Vec<u8>> = tokens
            .into_iter()
            .enumerate()
            .map(|(id, t)| {
                t.ok_or_else(|| TokenizerError::Invalid(format!("id {id} has no token")))
            })
            .collect::<Result<_, _>>()?;
        let mut merge_list = Vec::with_capacity(merges.len());
        for (a, b) in &merges {
            match (by_text.get(a.as_str()), by_text.get(b.as_str())) {
                (Some(&x), Some(&y)) => merge_list.push((x, y)),
                _ => {
                    return Err(TokenizerError::Invalid(format!(
                        "merge {a:?} {b:?} uses a symbol that is not in the vocabulary"
                    )))
                }
            }
        }
        let eot = specials
            .iter()
            .find_map(|s| by_text.get(s.as_str()).copied())
            .or_else(|| special.first().copied())
            .ok_or_else(|| {
                TokenizerError::Invalid(format!(
                    "no end-of-text token ({EOT_TEXT}) in the vocabulary"
                ))
            })?;
        special.sort_unstable();
        Self::from_parts(tokens, merge_list, special, eot, pretokenizer)
    }

    /// The pre-tokenizer this tokenizer splits text with.
    pub fn pretokenizer(&self) -> Pretokenizer {
        self.pretokenizer
    }

    /// Number of merges.
    pub fn num_merges(&self) -> usize {
        self.merge_list.len()
    }

    /// BPE of one piece's bytes, appended to `out`.
    fn merge_bytes(
        &self,
        piece: &[u8],
        syms: &mut Vec<u32>,
        out: &mut Vec<u32>,
    ) -> Result<(), usize> {
        syms.clear();
        for (i, &b) in piece.iter().enumerate() {
            let id = self.byte_ids[b as usize];
            if id == u32::MAX {
                return Err(i);
            }
            syms.push(id);
        }
        if syms.len() <= SHORT_PIECE {
            self.merge_short(syms);
            out.extend_from_slice(syms);
        } else {
            self.merge_long(syms, out);
        }
        Ok(())
    }

    #[inline]
    fn rank(&self, a: u32, b: u32) -> (u32, u32) {
        match self.merges.get(&pair_key(a, b)) {
            Some(&r) => r,
            None => (u32::MAX, 0),
        }
    }

    /// Quadratic merge with cached pair ranks: fastest for the usual few-byte pieces.
    fn merge_short(&self, syms: &mut Vec<u32>) {
        if syms.len() < 2 {
            return;
        }
        let mut ranks: Vec<(u32, u32)> = syms.windows(2).map(|w| self.rank(w[0], w[1])).collect();
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &(r, _)) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            syms[at] = ranks[at].1;
            syms.remove(at + 1);
            ranks.remove(at);
            if at < ranks.len() {
                ranks[at] = self.rank(syms[at], syms[at + 1]);
            }
            if at > 0 {
                ranks[at - 1] = self.rank(syms[at - 1], syms[at]);
            }
        }
    }

    /// Heap merge over a linked list: O(n log n) for long pieces. Ties in rank go to the
    /// leftmost pair, as in the quadratic scan.
    fn merge_long(&self, syms: &[u32], out: &mut Vec<u32>) {
        let n = syms.len();
        let mut sym = syms.to_vec();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let (r, _) = self.rank(sym[i], sym[i + 1]);
            if r != u32::MAX {
                heap.push(std::cmp::Reverse(((r as u64) << 32) | i as u64));
            }
        }
        while let Some(std::cmp::Reverse(key)) = heap.pop() {
            let r = (key >> 32) as u32;
            let i = (key & 0xffff_ffff) as usize;
            if !alive[i] || next[i] >= n {
                continue;
            }
            let j = next[i];
            let (cur, merged) = self.rank(sym[i], sym[j]);
            if cur != r {
                continue; // stale entry
            }
            sym[i] = merged;
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
                let (r2, _) = self.rank(sym[i], sym[next[i]]);
                if r2 != u32::MAX {
                    heap.push(std::cmp::Reverse(((r2 as u64) << 32) | i as u64));
                }
            }
            let p = prev[i];
            if p < n {
                let (r0, _) = self.rank(sym[p], sym[i]);
                if r0 != u32::MAX {
                    heap.push(std::cmp::Reverse(((r0 as u64) << 32) | p as u64));
                }
            }
        }
        let mut i = 0;
        while i < n {
            out.push(sym[i]);
            i = next[i];
        }
    }

    /// Encodes one chunk of text (sequentially) into `out`. `base` is the chunk's offset in
    /// the whole text, for error messages.
    fn encode_chunk(
        &self,
        text: &str,
        base: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let mut cache: FxHashMap<&[u8], (u32, u32)> = FxHashMap::default();
        let mut arena: Vec<u32> = Vec::new();
        let mut syms = Vec::new();
        let mut offset = base;
        for piece in self.pretokenizer.pieces(text) {
            let bytes = piece.as_bytes();
            if let Some(&id) = self.encoder.get(bytes) {
                if self.self_encodes[id as usize] {
                    out.push(id);
                    offset += bytes.len();
                    continue;
                }
            }
            if let Some(&(s, l)) = cache.get(bytes) {
                out.extend_from_slice(&arena[s as usize..(s + l) as usize]);
                offset += bytes.len();
                continue;
            }
            let start = out.len();
            if let Err(at) = self.merge_bytes(bytes, &mut syms, out) {
                let ch = piece[at..].chars().next().unwrap_or('\u{fffd}');
                return Err(TokenizerError::UnknownChar {
                    ch,
                    offset: offset + at,
                });
            }
            if bytes.len() <= CACHE_PIECE {
                let s = arena.len() as u32;
                arena.extend_from_slice(&out[start..]);
                cache.insert(bytes, (s, (out.len() - start) as u32));
            }
            offset += bytes.len();
        }
        Ok(())
    }

    /// Cuts `text` into about `parts` chunks at safe split points.
    fn chunks(text: &str, parts: usize) -> Vec<(usize, usize)> {
        let target = (text.len() / parts.max(1)).max(1 << 15);
        let mut out = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = match pretokenize::safe_split_point(text, start + target) {
                Some(p) if start + target < text.len() => p,
                _ => text.len(),
            };
            out.push((start, end));
            start = end;
        }
        out
    }

    fn decode_into(&self, ids: &[u32], out: &mut Vec<u8>) -> Result<(), TokenizerError> {
        for &id in ids {
            match self.tokens.get(id as usize) {
                Some(t) => out.extend_from_slice(t),
                None => {
                    return Err(TokenizerError::UnknownId {
                        id,
                        vocab_size: self.tokens.len(),
                    })
                }
            }
        }
        Ok(())
    }

    /// Recognises a byte-level BPE `tokenizer.json` (model `BPE`, `ByteLevel` decoder);
    /// `None` when it is another kind.
    pub fn from_hf_json(json: &serde_json::Value) -> Result<Option<Self>, TokenizerError> {
        if json.pointer("/model/type").and_then(|v| v.as_str()) != Some("BPE") {
            return Ok(None);
        }
        let pre = json
            .get("pre_tokenizer")
            .unwrap_or(&serde_json::Value::Null);
        let decoder_is_byte_level =
            json.pointer("/decoder/type").and_then(|v| v.as_str()) == Some("ByteLevel");
        let pretokenizer = match hf_pretokenizer(pre)? {
            Some(p) => p,
            None if decoder_is_byte_level => {
                return Err(TokenizerError::Invalid(format!(
                    "byte-level BPE with an unsupported pre_tokenizer: {pre}"
                )))
            }
            None => return Ok(None),
        };
        let invalid = |m: &str| TokenizerError::Invalid(m.to_string());
        let model = &json["model"];
        let vocab_obj = model["vocab"]
            .as_object()
            .ok_or_else(|| invalid("model.vocab is not an object"))?;
        let mut vocab = Vec::with_capacity(vocab_obj.len());
        for (k, v) in vocab_obj {
            let id = v
                .as_u64()
                .ok_or_else(|| invalid(&format!("id of {k:?} is not an integer")))?;
            let id = u32::try_from(id)
                .map_err(|_| invalid(&format!("id {id} of {k:?} does not fit in 32 bits")))?;
            vocab.push((k.clone(), id));
        }
        let mut specials = Vec::new();
        if let Some(added) = json["added_tokens"].as_array() {
            for t in added {
                let (Some(content), Some(id)) = (t["content"].as_str(), t["id"].as_u64()) else {
                    return Err(invalid("added_tokens entry without content and id"));
                };
                if !vocab.iter().any(|(k, i)| k == content && *i as u64 == id) {
                    let id = u32::try_from(id).map_err(|_| {
                        invalid(&format!("added token id {id} does not fit in 32 bits"))
                    })?;
                    vocab.push((content.to_string(), id));
                }
                specials.push(content.to_string());
            }
        }
        // The end-of-text token first, so that it is the one `from_byte_level` picks.
        specials.sort_by_key(|s| s != EOT_TEXT);
        let mut merges = Vec::new();
        for m in model["merges"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let pair = match m {
                serde_json::Value::String(s) => {
                    let mut it = s.split(' ');
                    match (it.next(), it.next(), it.next()) {
                        (Some(a), Some(b), None) => Some((a.to_string(), b.to_string())),
                        _ => None,
                    }
                }
                serde_json::Value::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str())
                {
                    (Some(x), Some(y)) => Some((x.to_string(), y.to_string())),
                    _ => None,
                },
                _ => None,
            };
            merges.push(pair.ok_or_else(|| invalid(&format!("bad merge entry {m}")))?);
        }
        Self::from_byte_level(vocab, merges, &specials, pretokenizer).map(Some)
    }
}

/// Which of our pre-tokenizers a Hugging Face `pre_tokenizer` is (`None`: not byte-level).
fn hf_pretokenizer(pre: &serde_json::Value) -> Result<Option<Pretokenizer>, TokenizerError> {
    let ty = pre.get("type").and_then(|v| v.as_str()).unwrap_or("");
    let byte_level_ok = |p: &serde_json::Value, want_regex: bool| {
        p.get("add_prefix_space").and_then(|v| v.as_bool()) != Some(true)
            && p.get("use_regex").and_then(|v| v.as_bool()).unwrap_or(true) == want_regex
    };
    match ty {
        "ByteLevel" if byte_level_ok(pre, true) => Ok(Some(Pretokenizer::Gpt2)),
        "Sequence" => {
            let parts = pre["pretokenizers"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            if let [split, bl] = parts {
                let pattern = split.pointer("/pattern/Regex").and_then(|v| v.as_str());
                let is_split = split.get("type").and_then(|v| v.as_str()) == Some("Split")
                    && split.get("behavior").and_then(|v| v.as_str()) == Some("Isolated")
                    && split.get("invert").and_then(|v| v.as_bool()) != Some(true);
                let is_bl = bl.get("type").and_then(|v| v.as_str()) == Some("ByteLevel")
                    && byte_level_ok(bl, false);
                if is_split && is_bl {
                    for p in [Pretokenizer::Gpt2, Pretokenizer::Gpt4] {
                        if pattern == Some(p.pattern()) {
                            return Ok(Some(p));
                        }
                    }
                }
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// The Hugging Face `pre_tokenizer` for one of our pre-tokenizers.
fn hf_pre_tokenizer_json(p: Pretokenizer) -> serde_json::Value {
    match p {
        Pretokenizer::Gpt2 => serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
        }),
        Pretokenizer::Gpt4 => serde_json::json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": p.pattern()}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
            ]
        }),
    }
}

impl Tokenizer for BpeTokenizer {
    fn kind(&self) -> &'static str {
        "bpe"
    }
    fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    fn eot_token(&self) -> u32 {
        self.eot
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let threads = rayon::current_num_threads();
        if threads <= 1 || text.len() < PARALLEL_MIN {
            let mut out = Vec::with_capacity(text.len() / 4);
            self.encode_chunk(text, 0, &mut out)?;
            return Ok(out);
        }
        let chunks = Self::chunks(text, threads * 8);
        let parts: Vec<Vec<u32>> = chunks
            .par_iter()
            .map(|&(s, e)| {
                let mut out = Vec::with_capacity((e - s) / 4);
                self.encode_chunk(&text[s..e], s, &mut out).map(|_| out)
            })
            .collect::<Result<_, _>>()?;
        Ok(parts.concat())
    }
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        self.decode_into(ids, &mut out)?;
        Ok(out)
    }
    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        self.tokens
            .get(id as usize)
            .cloned()
            .ok_or(TokenizerError::UnknownId {
                id,
                vocab_size: self.tokens.len(),
            })
    }
    fn to_hf_json(&self) -> serde_json::Value {
        let alphabet = byte_level_alphabet();
        let spell = |b: &[u8]| -> String { b.iter().map(|&x| alphabet[x as usize]).collect() };
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (id, t) in self.tokens.iter().enumerate() {
            if self.special.contains(&(id as u32)) {
                let content = String::from_utf8_lossy(t).into_owned();
                vocab.insert(content.clone(), serde_json::json!(id));
                added.push(
                    serde_json::json!({"id": id, "content": content, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false, "special": true}),
                );
            } else {
                vocab.insert(spell(t), serde_json::json!(id));
            }
        }
        let merges: Vec<String> = self
            .merge_list
            .iter()
            .map(|&(a, b)| {
                format!(
                    "{} {}",
                    spell(&self.tokens[a as usize]),
                    spell(&self.tokens[b as usize])
                )
            })
            .collect();
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": hf_pre_tokenizer_json(self.pretokenizer),
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny hand-made vocabulary: bytes, then merges "a b" -> ab, "ab c" -> abc, "b c" -> bc.
    fn tiny() -> BpeTokenizer {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.push(b"bc".to_vec()); // 256
        tokens.push(b"ab".to_vec()); // 257
        tokens.push(b"abc".to_vec()); // 258
        tokens.push(EOT_TEXT.as_bytes().to_vec()); // 259
        let merges = vec![
            (b'b' as u32, b'c' as u32),
            (b'a' as u32, b'b' as u32),
            (257, b'c' as u32),
        ];
        BpeTokenizer::from_parts(tokens, merges, vec![259], 259, Pretokenizer::Gpt2).unwrap()
    }

    #[test]
    fn whole_piece_fast_path_only_when_bpe_agrees() {
        let t = tiny();
        // "abc": (b,c) has the best rank, so BPE gives [a, bc], never the token "abc".
        assert!(!t.self_encodes[258]);
        assert_eq!(t.encode("abc").unwrap(), vec![b'a' as u32, 256]);
        assert_eq!(t.encode("ab").unwrap(), vec![257]);
    }

    #[test]
    fn long_and_short_merges_agree() {
        let t = tiny();
        let text: String = "abcab".repeat(40);
        let mut syms = Vec::new();
        let mut short = Vec::new();
        for &b in text.as_bytes() {
            syms.push(t.byte_ids[b as usize]);
        }
        let mut s2 = syms.clone();
        t.merge_short(&mut s2);
        short.extend_from_slice(&s2);
        let mut long = Vec::new();
        t.merge_long(&syms, &mut long);
        assert_eq!(short, long);
    }

    #[test]
    fn hf_json_round_trip() {
        let t = tiny();
        let back = super::super::from_hf_json(&t.to_hf_json()).unwrap();
        assert_eq!(back.kind(), "bpe");
        assert_eq!(back.fingerprint(), t.fingerprint());
        assert_eq!(
            back.encode("abcab ab").unwrap(),
            t.encode("abcab ab").unwrap()
        );
    }
}
