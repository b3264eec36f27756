//! `arlm corpus` (not built yet).

/// Flags of `arlm corpus`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `arlm corpus`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`arlm corpus` is not implemented yet")
}
