//! `arlm bench train` (not built yet).

/// Flags of `arlm bench train`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm bench train`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm bench train` is not implemented yet")
}
