//! The chars tokenizer: a character vocabulary learned from a corpus, as in nanoGPT's
//! `shakespeare_char` (the sorted distinct characters; tiny-shakespeare gives 65), plus
//! `<|endoftext|>` as the last id.
//!
//! Saved as a Hugging Face BPE model without merges, without pre-tokenizer and with the
//! `Fuse` decoder: `tokenizers` then splits text into characters and maps each one, which
//! is exactly this tokenizer, so the file works in Python too.

use super::bytes::EOT_TEXT;
use super::{Tokenizer, TokenizerError};
use rustc_hash::FxHashMap;

/// Characters as tokens (ids in sorted character order) plus end-of-text.
#[derive(Debug, Clone)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: FxHashMap<char, u32>,
    /// ASCII fast path: id of each ASCII character (`u32::MAX`: not in the vocabulary).
    ascii: [u32; 128],
}

impl CharTokenizer {
    /// The sorted distinct characters of `texts`.
    pub fn train(texts: &[&str]) -> CharTokenizer {
        let mut set = std::collections::BTreeSet::new();
        for t in texts {
            set.extend(t.chars());
        }
        Self::from_chars(set.into_iter().collect())
    }

    /// A tokenizer over exactly these characters (ids in the given order).
    pub fn from_chars(chars: Vec<char>) -> CharTokenizer {
        let ids: FxHashMap<char, u32> = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        let mut ascii = [u32::MAX; 128];
        for (&c, &id) in &ids {
            if (c as u32) < 128 {
                ascii[c as usize] = id;
            }
        }
        CharTokenizer { chars, ids, ascii }
    }

    /// The characters, in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Recognises this tokenizer's tokenizer.json (a BPE model without merges, without
    /// pre-tokenizer, every vocabulary entry one character); `None` when it is another kind.
    pub fn from_hf_json(json: &serde_json::Value) -> Result<Option<Self>, TokenizerError> {
        let model = &json["model"];
        let marked = model["arlm_kind"].as_str() == Some("chars");
        let shaped = model["type"].as_str() == Some("BPE")
            && json["pre_tokenizer"].is_null()
            && model["merges"].as_array().is_some_and(|m| m.is_empty())
            && json.pointer("/decoder/type").and_then(|v| v.as_str()) == Some("Fuse");
        if !marked && !shaped {
            return Ok(None);
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| TokenizerError::Invalid("model.vocab is not an object".into()))?;
        let mut slots: Vec<Option<char>> = vec![None; vocab.len()];
        let mut eot_seen = false;
        for (k, v) in vocab {
            let id = v.as_u64().unwrap_or(u64::MAX) as usize;
            if k == EOT_TEXT {
                if id != vocab.len() - 1 {
                    return Err(TokenizerError::Invalid(format!(
                        "chars tokenizer: {EOT_TEXT} must have the last id, has {id}"
                    )));
                }
                eot_seen = true;
                continue;
            }
            let mut it = k.chars();
            let (Some(c), None) = (it.next(), it.next()) else {
                return Err(TokenizerError::Invalid(format!(
                    "chars tokenizer: vocabulary entry {k:?} is not one character"
                )));
            };
            match slots.get_mut(id) {
                Some(slot @ None) => *slot = Some(c),
                _ => {
                    return Err(TokenizerError::Invalid(format!(
                        "chars tokenizer: bad or repeated id {v} for {k:?}"
                    )))
                }
            }
        }
        if !eot_seen {
            return Err(TokenizerError::Invalid(format!(
                "chars tokenizer: no {EOT_TEXT} token"
            )));
        }
        slots.pop();
        let chars: Option<Vec<char>> = slots.into_iter().collect();
        let chars = chars.ok_or_else(|| {
            TokenizerError::Invalid("chars tokenizer: ids are not contiguous".into())
        })?;
        Ok(Some(Self::from_chars(chars)))
    }
}

impl Tokenizer for CharTokenizer {
    fn kind(&self) -> &'static str {
        "chars"
    }
    fn vocab_size(&self) -> usize {
        self.chars.len() + 1
    }
    fn eot_token(&self) -> u32 {
        self.chars.len() as u32
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len());
        for (offset, c) in text.char_indices() {
            let id = if (c as u32) < 128 {
                self.ascii[c as usize]
            } else {
                self.ids.get(&c).copied().unwrap_or(u32::MAX)
            };
            if id == u32::MAX {
                return Err(TokenizerError::UnknownChar { ch: c, offset });
            }
            out.push(id);
        }
        Ok(out)
    }
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut buf = [0u8; 4];
        for &id in ids {
            match self.chars.get(id as usize) {
                Some(c) => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
                None if id as usize == self.chars.len() => {
                    out.extend_from_slice(EOT_TEXT.as_bytes())
                }
                None => {
                    return Err(TokenizerError::UnknownId {
                        id,
                        vocab_size: self.vocab_size(),
                    })
                }
            }
        }
        Ok(out)
    }
    fn to_hf_json(&self) -> serde_json::Value {
        let mut vocab = serde_json::Map::new();
        for (i, c) in self.chars.iter().enumerate() {
            vocab.insert(c.to_string(), serde_json::json!(i));
        }
        let eot = self.chars.len();
        vocab.insert(EOT_TEXT.to_string(), serde_json::json!(eot));
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": eot, "content": EOT_TEXT, "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {"type": "BPE", "arlm_kind": "chars", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": []}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_vocabulary_round_trip_and_json() {
        let t = CharTokenizer::train(&["hello wörld", "zz\n"]);
        assert_eq!(
            t.chars(),
            &['\n', ' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w', 'z', 'ö']
        );
        assert_eq!(t.vocab_size(), 12);
        assert_eq!(t.eot_token(), 11);
        let ids = t.encode("low\n").unwrap();
        assert_eq!(ids, vec![5, 6, 8, 0]);
        assert_eq!(t.decode(&ids).unwrap(), "low\n");
        assert_eq!(t.decode(&[11]).unwrap(), EOT_TEXT);
        assert!(matches!(
            t.encode("lox"),
            Err(TokenizerError::UnknownChar { ch: 'x', offset: 2 })
        ));
        assert!(t.decode(&[12]).is_err());
        let back = super::super::from_hf_json(&t.to_hf_json()).unwrap();
        assert_eq!(back.kind(), "chars");
        assert_eq!(back.fingerprint(), t.fingerprint());
    }
}
