//! `arlm corpus`: the embedded synthetic corpus (generate it, measure its floor, export its
//! exact source as a model directory).

use anyhow::Context;
use arlm::corpus;
use std::path::PathBuf;

/// Flags of `arlm corpus`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Sample English-like text from the synthetic source and report its exact NLL (the floor).
    Synth(SynthArgs),
    /// Exact NLL of an existing text under the synthetic source.
    Floor(FloorArgs),
}

#[derive(clap::Args)]
struct SynthArgs {
    /// Number of bytes to generate.
    #[arg(long, default_value_t = corpus::DEFAULT_BYTES)]
    bytes: usize,
    /// Sampler seed (decimal or 0x hex); the default gives the embedded default corpus.
    #[arg(long, default_value = "0x61726c6d", value_parser = parse_seed)]
    seed: u64,
    /// Where to write the text; its meta.json goes beside it (FILE with extension ".meta.json").
    #[arg(long)]
    out: PathBuf,
    /// Also write a model directory for the exact source (`arlm eval --model DIR`).
    #[arg(long)]
    model_out: Option<PathBuf>,
    /// Write --model-out even if it is a non-empty directory that is not the synthetic source's.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct FloorArgs {
    /// Text file to score (default: the embedded default corpus).
    #[arg(long)]
    input: Option<PathBuf>,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a seed (a u64, decimal or 0x hex): {e}"))
}

/// Where `arlm corpus synth --out FILE` writes its meta.json.
fn meta_path(out: &std::path::Path) -> PathBuf {
    out.with_extension("meta.json")
}

/// Runs `arlm corpus`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Synth(a) => synth(a),
        Command::Floor(a) => floor(a),
    }
}

fn synth(a: SynthArgs) -> anyhow::Result<()> {
    if let Some(dir) = &a.model_out {
        let kind = arlm::outdir::OutputKind::ModelDir(&["arlm-synth"]);
        arlm::outdir::check(dir, kind, a.force)?;
    }
    let (text, meta) = corpus::synth_with_meta(a.seed, a.bytes)?;
    arlm::atomic::write_atomic(&a.out, text.as_bytes())
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    let meta_file = meta_path(&a.out);
    let json = serde_json::to_string_pretty(&meta)?;
    arlm::atomic::write_atomic(&meta_file, json.as_bytes())
        .with_context(|| format!("cannot write {}", meta_file.display()))?;
    println!(
        "wrote {} ({} bytes, seed {:#x}) and {}",
        a.out.display(),
        meta.floor.bytes,
        meta.seed,
        meta_file.display()
    );
    print_floor(&meta.floor);
    if let Some(dir) = &a.model_out {
        corpus::save_model_dir(dir, Some(&meta))?;
        println!("wrote the exact source as a model: {}", dir.display());
    }
    Ok(())
}

fn floor(a: FloorArgs) -> anyhow::Result<()> {
    let f = match &a.input {
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            corpus::floor(&bytes)
        }
        None => corpus::floor(corpus::default_corpus().as_bytes()),
    };
    print_floor(&f);
    Ok(())
}

fn print_floor(f: &corpus::Floor) {
    println!(
        "exact NLL: {:.2} nats = {:.4} bits/byte (floor); entropy rate {:.4} bits/byte",
        f.nll_nats, f.bits_per_byte, f.entropy_rate_bits_per_byte
    );
}
