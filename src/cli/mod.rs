//! One module per subcommand: its flags and a `run` that calls the library.

pub mod bench;
pub mod corpus;
pub mod eval;
pub mod exposure;
pub mod generate;
pub mod ngram;
pub mod prepare;
pub mod score;
pub mod serve;
pub mod tokenizer;
pub mod train;
pub mod unigram;

/// True when `err` comes from writing to a closed pipe (not an error for a CLI).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
