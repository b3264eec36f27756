//! `arlm train` (not built yet).

/// Flags of `arlm train`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm train`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm train` is not implemented yet")
}
