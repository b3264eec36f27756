//! The chars tokenizer: a character vocabulary learned from a corpus (nanoGPT's shakespeare_char).
//! (Not built yet: the foundation issue's tokenizer work fills this in.)

use super::TokenizerError;

/// Placeholder until the implementation lands; never constructed.
#[derive(Debug, Clone)]
pub struct CharTokenizer {
    _private: (),
}

impl CharTokenizer {
    /// Recognises this tokenizer's tokenizer.json; `None` when it is another kind.
    pub fn from_hf_json(_json: &serde_json::Value) -> Result<Option<Self>, TokenizerError> {
        Ok(None)
    }
}
