//! `arlm bench`: speed benchmarks that print arlm side by side with a reference
//! implementation (run through `tools/` scripts when Python peers are installed).

pub mod eval;
pub mod generate;
pub mod generate_batch;
pub mod generate_rnn;
pub mod ngram;
pub mod tokenizer;
pub mod train;
pub mod train_rnn;
pub mod util;

pub use util::{peers_python, run_reference, tool_script};

use clap::Subcommand;

/// Flags of `arlm bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Tokenizer encode throughput (vs tiktoken).
    Tokenizer(tokenizer::Args),
    /// GPT training step speed (vs PyTorch).
    Train(train::Args),
    /// Scoring throughput (vs transformers).
    Eval(eval::Args),
    /// Generation speed (vs transformers).
    Generate(generate::Args),
    /// n-gram estimation and query speed (vs KenLM).
    Ngram(ngram::Args),
}

/// Runs `arlm bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Tokenizer(a) => tokenizer::run(a),
        What::Train(a) => train::run(a),
        What::Eval(a) => eval::run(a),
        What::Generate(a) if a.recurrent => generate_rnn::run(&a),
        What::Generate(a) if !a.batch.is_empty() => generate_batch::run(&a, &a.batch),
        What::Generate(a) => generate::run(a),
        What::Ngram(a) => ngram::run(a),
    }
}
