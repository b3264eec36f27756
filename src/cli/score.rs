//! `arlm score` (not built yet).

/// Flags of `arlm score`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm score`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm score` is not implemented yet")
}
