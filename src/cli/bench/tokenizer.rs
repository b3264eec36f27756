//! `arlm bench tokenizer` (not built yet).

/// Flags of `arlm bench tokenizer`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm bench tokenizer`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm bench tokenizer` is not implemented yet")
}
