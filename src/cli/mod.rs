//! One module per subcommand: its flags and a `run` that calls the library.

pub mod bench;
pub mod corpus;
pub mod eval;
pub mod generate;
pub mod ngram;
pub mod prepare;
pub mod score;
pub mod tokenizer;
pub mod train;

/// True when `err` comes from writing to a closed pipe (not an error for a CLI).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The one-line message for a failed command: the error and its causes joined by ": ",
/// leaving out a cause whose text the message already holds (the library's error enums
/// say their I/O cause in their own message and also expose it as `source`, so anyhow's
/// `{:#}` would print it twice).
pub fn error_message(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.is_empty() {
            msg = text;
        } else if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::error_message;
    use anyhow::Context;

    #[test]
    fn error_message_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let lib = arlm::model::ModelError::Io {
            path: "/x/model".into(),
            source: io,
        };
        let err = Err::<(), _>(lib)
            .context("cannot load the model")
            .unwrap_err();
        assert_eq!(format!("{err:#}").matches("no such file").count(), 2);
        assert_eq!(
            error_message(&err),
            "cannot load the model: cannot read or write /x/model: no such file"
        );
        // A cause the message does not already hold is kept.
        let err = anyhow::anyhow!("disk full").context("cannot write out.bin");
        assert_eq!(error_message(&err), "cannot write out.bin: disk full");
    }
}
