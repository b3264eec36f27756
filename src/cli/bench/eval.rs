//! `arlm bench eval` (not built yet).

/// Flags of `arlm bench eval`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm bench eval`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm bench eval` is not implemented yet")
}
