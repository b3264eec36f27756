//! `arlm tokenizer` (not built yet).

/// Flags of `arlm tokenizer`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm tokenizer`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm tokenizer` is not implemented yet")
}
