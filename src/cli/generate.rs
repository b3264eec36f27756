//! `arlm generate` (not built yet).

/// Flags of `arlm generate`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm generate`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm generate` is not implemented yet")
}
