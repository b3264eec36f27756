//! `arlm bench generate` (not built yet).

/// Flags of `arlm bench generate`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm bench generate`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm bench generate` is not implemented yet")
}
