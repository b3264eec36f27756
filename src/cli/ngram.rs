//! `arlm ngram` (not built yet).

/// Flags of `arlm ngram`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm ngram`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm ngram` is not implemented yet")
}
