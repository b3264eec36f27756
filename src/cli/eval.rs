//! `arlm eval` (not built yet).

/// Flags of `arlm eval`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm eval`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm eval` is not implemented yet")
}
