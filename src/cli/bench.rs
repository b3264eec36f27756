//! `arlm bench` (not built yet).

/// Flags of `arlm bench`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm bench`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm bench` is not implemented yet")
}
