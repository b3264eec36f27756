//! Tokenizers: text <-> token ids.
//!
//! One [`Tokenizer`] trait, one file per implementation: [`bytes`] (256 byte ids),
//! [`chars`] (a character vocabulary learned from a corpus), [`bpe`] (byte-level BPE,
//! trained here or loaded from GPT-2's files), [`unigram`] (SentencePiece's Unigram model
//! with `▁` metaspace words), [`words`] (whitespace words, for n-gram models). All of them are saved as Hugging Face `tokenizer.json` files ([`load`]/[`save`]).
//!
//! Every metric arlm reports names the tokenizer (its kind and [`Tokenizer::fingerprint`]).

pub mod bpe;
pub mod bytes;
pub mod chars;
pub mod unigram;
pub mod word_table;
pub mod words;

use std::path::{Path, PathBuf};

/// Errors from training, loading, encoding or decoding.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("token id {id} is not in the vocabulary ({vocab_size} tokens)")]
    UnknownId { id: u32, vocab_size: usize },
    #[error("character {ch:?} at byte offset {offset} is not in the vocabulary")]
    UnknownChar { ch: char, offset: usize },
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("invalid tokenizer settings: {0}")]
    Invalid(String),
}

/// Turns text into token ids and back.
pub trait Tokenizer: Send + Sync {
    /// The implementation's name: "bytes", "chars", "bpe", "words".
    fn kind(&self) -> &'static str;

    /// Number of ids, special tokens included.
    fn vocab_size(&self) -> usize;

    /// The end-of-text token: separates documents and conditions the first token.
    fn eot_token(&self) -> u32;

    /// Encodes ordinary text (special-token strings in `text` are treated as text).
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError>;

    /// The bytes that `ids` stand for. A token may hold part of a UTF-8 character, so
    /// this is bytes, not a string. Special tokens decode to their text form.
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>, TokenizerError>;

    /// The bytes of a single token (its length is what bits-per-byte divides by).
    fn token_bytes(&self, id: u32) -> Result<Vec<u8>, TokenizerError> {
        self.decode_bytes(&[id])
    }

    /// This tokenizer as the words tokenizer, when it is one (n-gram models use its
    /// vocabulary directly).
    fn as_words(&self) -> Option<&words::WordTokenizer> {
        None
    }

    /// The Hugging Face `tokenizer.json` form of this tokenizer.
    fn to_hf_json(&self) -> serde_json::Value;

    /// Decodes to a string: exact when the bytes are valid UTF-8, U+FFFD for invalid bytes.
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A short stable identity (hex of SHA-256 over the canonical tokenizer.json):
    /// two tokenizers with the same fingerprint encode every text identically.
    fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let canon = serde_json::to_vec(&self.to_hf_json()).unwrap_or_default();
        let digest = Sha256::digest(&canon);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Loads a tokenizer from a `tokenizer.json` file, a directory containing one, or a
/// directory with GPT-2's `encoder.json` + `vocab.bpe`.
pub fn load(path: &Path) -> Result<Box<dyn Tokenizer>, TokenizerError> {
    let file = if path.is_dir() {
        let json = path.join("tokenizer.json");
        let (enc, merges) = (path.join("encoder.json"), path.join("vocab.bpe"));
        if !json.exists() && enc.exists() && merges.exists() {
            return Ok(Box::new(bpe::BpeTokenizer::from_gpt2_files(&enc, &merges)?));
        }
        json
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(|source| TokenizerError::Io {
        path: file.clone(),
        source,
    })?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| TokenizerError::Format {
            path: file.clone(),
            message: format!("not valid JSON: {e}"),
        })?;
    from_hf_json(&json).map_err(|e| match e {
        TokenizerError::Invalid(message) => TokenizerError::Format {
            path: file,
            message,
        },
        other => other,
    })
}

/// Builds a tokenizer from parsed `tokenizer.json` content, whichever kind it is.
pub fn from_hf_json(json: &serde_json::Value) -> Result<Box<dyn Tokenizer>, TokenizerError> {
    let kind = json
        .pointer("/model/type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    // Each implementation recognises its own shape of tokenizer.json.
    if let Some(t) = bytes::ByteTokenizer::from_hf_json(json)? {
        return Ok(Box::new(t));
    }
    if let Some(t) = chars::CharTokenizer::from_hf_json(json)? {
        return Ok(Box::new(t));
    }
    if let Some(t) = words::WordTokenizer::from_hf_json(json)? {
        return Ok(Box::new(t));
    }
    if let Some(t) = bpe::BpeTokenizer::from_hf_json(json)? {
        return Ok(Box::new(t));
    }
    if let Some(t) = unigram::hf::from_hf_json(json)? {
        return Ok(Box::new(t));
    }
    Err(TokenizerError::Invalid(format!(
        "unsupported tokenizer.json (model type {kind:?})"
    )))
}

/// Saves `tok` as `tokenizer.json` at `path` (atomically).
pub fn save(tok: &dyn Tokenizer, path: &Path) -> Result<(), TokenizerError> {
    let text = serde_json::to_string_pretty(&tok.to_hf_json()).expect("JSON values serialize");
    crate::atomic::write_atomic(path, text.as_bytes()).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Saves `tok` into a model directory: `tokenizer.json`, and a `tokenizer_config.json`
/// that makes `transformers.AutoTokenizer.from_pretrained(dir)` load exactly that file.
/// Without it, transformers picks a tokenizer class from config.json's `model_type`
/// (GPT-2's byte-level BPE for `gpt2`), which drops spaces from a chars vocabulary and
/// gives other ids than arlm. `model_max_length` is the model's context, if it has one.
pub fn save_in_model_dir(
    tok: &dyn Tokenizer,
    dir: &Path,
    model_max_length: Option<usize>,
) -> Result<(), TokenizerError> {
    save(tok, &dir.join("tokenizer.json"))?;
    let path = dir.join("tokenizer_config.json");
    let text = serde_json::to_string_pretty(&hf_tokenizer_config(tok, model_max_length))
        .expect("JSON values serialize");
    crate::atomic::write_atomic(&path, text.as_bytes())
        .map_err(|source| TokenizerError::Io { path, source })
}

/// The `tokenizer_config.json` of [`save_in_model_dir`]: the fast tokenizer class (which
/// reads tokenizer.json as it is), the end-of-text token as BOS and EOS (GPT-2's
/// convention), `<unk>` where the vocabulary has one, and no clean-up of spaces on decode.
pub fn hf_tokenizer_config(
    tok: &dyn Tokenizer,
    model_max_length: Option<usize>,
) -> serde_json::Value {
    let json = tok.to_hf_json();
    let text_of = |id: u32| -> Option<String> {
        let added = json["added_tokens"].as_array().and_then(|a| {
            a.iter()
                .find(|t| t["id"].as_u64() == Some(id as u64))
                .and_then(|t| t["content"].as_str())
        });
        let in_vocab = || {
            json.pointer("/model/vocab")?
                .as_object()?
                .iter()
                .find(|(_, v)| v.as_u64() == Some(id as u64))
                .map(|(k, _)| k.as_str())
        };
        added.or_else(in_vocab).map(str::to_string)
    };
    let mut config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": false,
    });
    if let Some(eot) = text_of(tok.eot_token()) {
        config["bos_token"] = eot.clone().into();
        config["eos_token"] = eot.into();
    }
    // WordLevel and BPE name their unknown token; Unigram gives its index in the vocab list.
    let unk = json["model"]["unk_token"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            let id = json["model"]["unk_id"].as_u64()? as usize;
            json["model"]["vocab"]
                .get(id)?
                .get(0)?
                .as_str()
                .map(str::to_string)
        });
    if let Some(unk) = unk {
        config["unk_token"] = unk.into();
    }
    if let Some(n) = model_max_length {
        config["model_max_length"] = n.into();
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_dirs_get_a_tokenizer_config_that_names_the_fast_class() {
        let dir = tempfile::tempdir().unwrap();
        let chars = chars::CharTokenizer::train(&["ROMEO: hi"]);
        save_in_model_dir(&chars, dir.path(), Some(64)).unwrap();
        let text = std::fs::read_to_string(dir.path().join("tokenizer_config.json")).unwrap();
        let c: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(c["tokenizer_class"], "PreTrainedTokenizerFast");
        assert_eq!(c["eos_token"], bytes::EOT_TEXT);
        assert_eq!(c["model_max_length"], 64);
        assert_eq!(c["clean_up_tokenization_spaces"], false);
        assert!(c.get("unk_token").is_none());
        assert_eq!(load(dir.path()).unwrap().fingerprint(), chars.fingerprint());

        let words = words::WordTokenizer::train(&["a b c\n"], None, 1).unwrap();
        let c = hf_tokenizer_config(&words, None);
        assert_eq!(c["eos_token"], "</s>");
        assert_eq!(c["unk_token"], "<unk>");
        assert!(c.get("model_max_length").is_none());
    }
}
