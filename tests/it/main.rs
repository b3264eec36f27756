//! All integration tests in one crate: one link of the library instead of one per file.
//! Each module is one area of the CLI or library; `common` runs the real `arlm` binary.

mod common;
mod corpus;
mod data;
mod eval;
mod eval_exact;
mod explorer;
mod explorer_browser;
mod exposure_cli;
mod fuzz_loaders;
mod generate;
mod generate_cli;
mod generate_gpt;
mod gpt_parity;
mod ngram_binary;
mod ngram_cli;
mod ngram_kenlm;
mod ngram_memory;
mod reliability;
mod rnn_parity;
mod score;
mod serve;
mod tokenizer_cli;
mod tokenizer_fixtures;
mod tokenizer_props;
mod tokenizer_unigram;
mod train_cli;
mod train_init;
mod train_resume;
