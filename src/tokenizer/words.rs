//! The words tokenizer: whitespace-separated words with <unk> and </s> (PTB, WikiText-2, KenLM conventions).
//! (Not built yet: the foundation issue's tokenizer work fills this in.)

use super::TokenizerError;

/// Placeholder until the implementation lands; never constructed.
#[derive(Debug, Clone)]
pub struct WordTokenizer {
    _private: (),
}

impl WordTokenizer {
    /// Recognises this tokenizer's tokenizer.json; `None` when it is another kind.
    pub fn from_hf_json(_json: &serde_json::Value) -> Result<Option<Self>, TokenizerError> {
        Ok(None)
    }
}
