//! `arlm prepare` (not built yet).

/// Flags of `arlm prepare`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm prepare`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm prepare` is not implemented yet")
}
