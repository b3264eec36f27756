//! arlm: autoregressive language models, end to end, on your own machine.
//!
//! The module tree follows the pipeline (see `docs/ARCHITECTURE.md`):
//!
//! text ([`corpus`]) -> [`tokenizer`] -> token data ([`data`]) -> [`model`]
//! (the [`model::LanguageModel`] trait and its implementations) -> [`train`] /
//! [`eval`] / [`generate`].
//!
//! Everything downstream of the model is written once against
//! [`model::LanguageModel`]: log p(x_1..x_n) = sum_t log p(x_t | x_<t), always in log space.

pub mod atomic;
pub mod corpus;
pub mod data;
pub mod eval;
pub mod generate;
pub mod hash;
pub mod huge_pages;
pub mod load;
pub mod memory;
pub mod model;
pub mod ops;
pub mod outdir;
pub mod serve;
pub mod tokenizer;
pub mod train;

/// An error and its causes (`source()` chain) on one line, joined by ": ". The library's
/// error enums do not repeat their cause in their own message (the cause is the source),
/// so code that keeps an error only as text must use this, not `to_string()`, to keep the
/// reason (e.g. "No such file or directory").
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    /// Each cause is said once: in the chain, not also inside the wrapping message
    /// (anyhow's `{:#}`, which the binary prints, walks the same chain).
    #[test]
    fn error_chain_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = crate::model::ModelError::Io {
            path: "/x/model".into(),
            source: io,
        };
        assert_eq!(
            super::error_chain(&err),
            "cannot read or write /x/model: no such file"
        );
        let err = anyhow::Error::new(err).context("cannot load the model");
        assert_eq!(
            format!("{err:#}"),
            "cannot load the model: cannot read or write /x/model: no such file"
        );
    }
}
