//! Token data: tokenized corpora on disk.
//!
//! [`bin`] is the file format (a small header, then u16 or u32 ids) with a streaming
//! writer and a memory-mapped reader; [`prepare`] turns text files into
//! `train.bin` / `val.bin` / `meta.json`.

pub mod bin;
pub mod prepare;

use std::path::{Path, PathBuf};

/// Where the shared public corpora live (tinyshakespeare, wikitext-2, ptb, gpt2, ...):
/// `$ARLM_SHARED_DATA`, else `../shared/data` from `base` (the working directory for the
/// CLI, the checkout for tests). The one place that knows this layout.
pub fn shared_data_root(base: &Path) -> PathBuf {
    std::env::var_os("ARLM_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| base.join("../shared/data"))
}

/// Errors reading or writing token data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an arlm token file: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "{path}: invalid UTF-8 at byte offset {offset} (use --lossy to replace invalid bytes)"
    )]
    InvalidUtf8 { path: PathBuf, offset: u64 },
    #[error("token id {token} does not fit the file's {bits}-bit ids")]
    TokenTooLarge { token: u32, bits: u32 },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
}
