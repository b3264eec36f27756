//! The byte tokenizer: ids 0..=255 are bytes, 256 is end-of-text. Needs no training and
//! never fails to encode; the natural unit for bits per byte.

use super::{Tokenizer, TokenizerError};

/// Raw UTF-8 bytes as tokens, plus one end-of-text token (id 256).
#[derive(Debug, Clone, Default)]
pub struct ByteTokenizer;

/// The end-of-text token's text form, as in GPT-2.
pub const EOT_TEXT: &str = "<|endoftext|>";

impl ByteTokenizer {
    /// Recognises the tokenizer.json written by [`ByteTokenizer::to_hf_json`].
    pub fn from_hf_json(json: &serde_json::Value) -> Result<Option<Self>, TokenizerError> {
        let is_bytes = json.pointer("/model/arlm_kind").and_then(|v| v.as_str()) == Some("bytes");
        Ok(is_bytes.then_some(ByteTokenizer))
    }
}

impl Tokenizer for ByteTokenizer {
    fn kind(&self) -> &'static str {
        "bytes"
    }
    fn vocab_size(&self) -> usize {
        257
    }
    fn eot_token(&self) -> u32 {
        256
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            match id {
                0..=255 => out.push(id as u8),
                256 => out.extend_from_slice(EOT_TEXT.as_bytes()),
                _ => {
                    return Err(TokenizerError::UnknownId {
                        id,
                        vocab_size: 257,
                    })
                }
            }
        }
        Ok(out)
    }
    fn to_hf_json(&self) -> serde_json::Value {
        // A Hugging Face BPE with no merges over the 256 byte-level symbols is exactly
        // this tokenizer, so the file also loads in `tokenizers`.
        let table = byte_level_alphabet();
        let mut vocab = serde_json::Map::new();
        for (b, ch) in table.iter().enumerate() {
            vocab.insert(ch.to_string(), serde_json::json!(b));
        }
        vocab.insert(EOT_TEXT.to_string(), serde_json::json!(256));
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [{"id": 256, "content": EOT_TEXT, "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false},
            "model": {"type": "BPE", "arlm_kind": "bytes", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": []}
        })
    }
}

/// GPT-2's byte -> printable character table (`bytes_to_unicode`): byte `b` is written
/// as `table[b]` in byte-level vocabularies and merges.
pub fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).expect("latin-1 code point")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("code point below 0x200")
        };
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_json() {
        let t = ByteTokenizer;
        let s = "héllo 🌍\n";
        let ids = t.encode(s).unwrap();
        assert_eq!(ids.len(), s.len());
        assert_eq!(t.decode(&ids).unwrap(), s);
        let back = super::super::from_hf_json(&t.to_hf_json()).unwrap();
        assert_eq!(back.kind(), "bytes");
        assert_eq!(back.fingerprint(), t.fingerprint());
        assert!(t.decode_bytes(&[257]).is_err());
        assert_eq!(byte_level_alphabet()[b' ' as usize], 'Ġ');
    }
}
