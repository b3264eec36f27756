//! `arlm bench ngram` (not built yet).

/// Flags of `arlm bench ngram`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm bench ngram`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm bench ngram` is not implemented yet")
}
