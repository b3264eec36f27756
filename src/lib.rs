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
pub mod model;
pub mod tokenizer;
pub mod train;
