//! The `arlm` command: parses flags and calls the library. Each subcommand lives in
//! `src/cli/<name>.rs` with its flags (`Args`) and a `run` function.
//!
//! Exit codes: 0 success, 2 error (the message goes to stderr). A closed stdout pipe
//! (`arlm generate | head`) ends the program quietly with 0.

mod cli;

use clap::{Parser, Subcommand};

/// Autoregressive language models on your own machine: tokenize, train, evaluate, score, generate.
#[derive(Parser)]
#[command(name = "arlm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant (train's flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Generate the embedded synthetic corpus (a source with a known entropy floor).
    Corpus(cli::corpus::Args),
    /// Train, inspect and run tokenizers.
    Tokenizer(cli::tokenizer::Args),
    /// Tokenize text files into train.bin / val.bin / meta.json.
    Prepare(cli::prepare::Args),
    /// Fit n-gram models (add-k, Kneser-Ney) and work with ARPA files.
    Ngram(cli::ngram::Args),
    /// Train a GPT by teacher forcing.
    Train(Box<cli::train::Args>),
    /// Evaluate a model on a corpus: NLL, perplexity, bits per byte and per word.
    Eval(cli::eval::Args),
    /// Score texts token by token with the chain rule.
    Score(cli::score::Args),
    /// Generate text with a chosen decoding method.
    Generate(cli::generate::Args),
    /// Measure exposure bias: teacher-forced vs free-running NLL and KL per position.
    Exposure(cli::exposure::Args),
    /// Serve models over HTTP with OpenAI's completions API (generate and score).
    Serve(cli::serve::Args),
    /// Speed benchmarks, side by side with reference implementations.
    Bench(cli::bench::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Corpus(a) => cli::corpus::run(a),
        Command::Tokenizer(a) => cli::tokenizer::run(a),
        Command::Prepare(a) => cli::prepare::run(a),
        Command::Ngram(a) => cli::ngram::run(a),
        Command::Train(a) => cli::train::run(*a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Score(a) => cli::score::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Exposure(a) => cli::exposure::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Bench(a) => cli::bench::run(a),
    };
    if let Err(err) = result {
        if cli::is_broken_pipe(&err) {
            std::process::exit(0);
        }
        eprintln!("arlm: error: {err:#}");
        std::process::exit(2);
    }
}
