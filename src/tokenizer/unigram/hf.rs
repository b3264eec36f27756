//! The unigram tokenizer's `tokenizer.json` form, as Hugging Face `tokenizers` writes it:
//! `model: {type: "Unigram", unk_id, vocab: [[piece, score], ...], byte_fallback}`,
//! `pre_tokenizer` and `decoder` `Metaspace` (`replacement`, `prepend_scheme`, `split`;
//! older files' `add_prefix_space` is read too), special tokens in `added_tokens`.
//!
//! The end-of-text token is `<|endoftext|>` (or `</s>` in SentencePiece-style files);
//! a file with neither is refused, since every arlm model needs one.

use super::{Metaspace, PrependScheme, UnigramTokenizer, METASPACE};
use crate::tokenizer::bytes::EOT_TEXT;
use crate::tokenizer::TokenizerError;
use serde_json::{json, Value};

fn invalid(m: String) -> TokenizerError {
    TokenizerError::Invalid(m)
}

/// Reads a Metaspace pre-tokenizer (`None`: the field is null).
fn metaspace(v: &Value, field: &str) -> Result<Option<Metaspace>, TokenizerError> {
    if v.is_null() {
        return Ok(None);
    }
    if v["type"].as_str() != Some("Metaspace") {
        return Err(invalid(format!(
            "{field}: a Unigram tokenizer supports only the Metaspace {field} (or none), not {}",
            v["type"]
        )));
    }
    let replacement = match v.get("replacement") {
        None | Some(Value::Null) => METASPACE,
        Some(r) => {
            let s = r.as_str().unwrap_or("");
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => c,
                _ => {
                    return Err(invalid(format!(
                        "{field}.replacement must be one character, is {r}"
                    )))
                }
            }
        }
    };
    let prepend = match (v.get("prepend_scheme"), v.get("add_prefix_space")) {
        (Some(Value::String(s)), _) => match s.as_str() {
            "always" => PrependScheme::Always,
            "first" => PrependScheme::First,
            "never" => PrependScheme::Never,
            other => {
                return Err(invalid(format!(
                    "{field}.prepend_scheme {other:?} is not always, first or never"
                )))
            }
        },
        (_, Some(Value::Bool(false))) => PrependScheme::Never,
        _ => PrependScheme::Always,
    };
    let split = v.get("split").and_then(Value::as_bool).unwrap_or(true);
    Ok(Some(Metaspace {
        replacement,
        prepend,
        split,
    }))
}

/// Recognises a Unigram tokenizer.json; `None` when the model is another type.
pub fn from_hf_json(json: &Value) -> Result<Option<UnigramTokenizer>, TokenizerError> {
    let model = &json["model"];
    if model["type"].as_str() != Some("Unigram") {
        return Ok(None);
    }
    if !json["normalizer"].is_null() {
        return Err(invalid(format!(
            "normalizer: a Unigram tokenizer here supports no normalizer, found {}",
            json["normalizer"]["type"]
        )));
    }
    let ms = metaspace(&json["pre_tokenizer"], "pre_tokenizer")?;
    let vocab = model["vocab"]
        .as_array()
        .ok_or_else(|| invalid("model.vocab is not an array of [piece, score]".into()))?;
    let mut pieces = Vec::with_capacity(vocab.len());
    for (id, e) in vocab.iter().enumerate() {
        let (Some(p), Some(s)) = (e[0].as_str(), e[1].as_f64()) else {
            return Err(invalid(format!(
                "model.vocab[{id}] is not [piece, score]: {e}"
            )));
        };
        pieces.push((p.to_string(), s));
    }
    let unk_id = match &model["unk_id"] {
        Value::Null => None,
        v => Some(
            v.as_u64()
                .filter(|&u| (u as usize) < pieces.len())
                .ok_or_else(|| invalid(format!("model.unk_id {v} is not a vocabulary id")))?
                as u32,
        ),
    };
    let byte_fallback = model["byte_fallback"].as_bool().unwrap_or(false);
    let mut special = vec![false; pieces.len()];
    if let Some(added) = json["added_tokens"].as_array() {
        for t in added {
            let id = t["id"].as_u64().unwrap_or(u64::MAX) as usize;
            let content = t["content"].as_str().unwrap_or("");
            match pieces.get(id) {
                Some((p, _)) if p == content => {
                    special[id] = t["special"].as_bool().unwrap_or(true)
                }
                _ => {
                    return Err(invalid(format!(
                        "added_tokens: {content:?} with id {} is not that vocabulary entry",
                        t["id"]
                    )))
                }
            }
        }
    }
    let eot = [EOT_TEXT, "</s>"]
        .iter()
        .find_map(|name| pieces.iter().position(|(p, _)| p == name))
        .ok_or_else(|| {
            invalid(format!(
                "model.vocab has no end-of-text token ({EOT_TEXT} or </s>): arlm needs one"
            ))
        })?;
    UnigramTokenizer::new(pieces, special, unk_id, byte_fallback, ms, eot as u32).map(Some)
}

/// The tokenizer.json value `tokenizers` would write for `t`.
pub fn to_hf_json(t: &UnigramTokenizer) -> Value {
    let m = t.model();
    let vocab: Vec<Value> = m
        .pieces()
        .iter()
        .zip(m.scores())
        .map(|(p, s)| json!([p, s]))
        .collect();
    let added: Vec<Value> = (0..m.len())
        .filter(|&id| t.is_special(id as u32))
        .map(|id| {
            json!({"id": id, "content": m.pieces()[id], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let ms = t.metaspace().map(|ms| {
        json!({"type": "Metaspace", "replacement": ms.replacement.to_string(),
               "prepend_scheme": ms.prepend.as_str(), "split": ms.split})
    });
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": ms,
        "post_processor": null,
        "decoder": ms,
        "model": {"type": "Unigram", "unk_id": t.unk_id(), "vocab": vocab,
                  "byte_fallback": t.byte_fallback()}
    })
}
