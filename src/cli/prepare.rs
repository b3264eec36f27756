//! `arlm prepare`: tokenize text files into train.bin / val.bin / meta.json.

use anyhow::Context;
use arlm::data::prepare::{prepare, Dtype, Input, PrepareOptions, ValSplit};
use std::path::PathBuf;

/// Flags of `arlm prepare`.
#[derive(clap::Args)]
pub struct Args {
    /// Tokenizer: a tokenizer.json (or a directory holding one), or `bytes`.
    #[arg(long)]
    tokenizer: String,
    /// Input text files, each one document (default: the embedded synthetic corpus).
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Output directory: train.bin, val.bin, tokenizer.json, meta.json.
    #[arg(long)]
    out: PathBuf,
    /// Write into --out even if it is a non-empty directory that is not prepared data.
    #[arg(long)]
    force: bool,
    /// Fraction of the characters (the end of the text) that goes to val.
    #[arg(long, default_value_t = 0.1, conflicts_with = "val")]
    val_fraction: f64,
    /// Validation files (instead of a fraction of the inputs).
    #[arg(long, num_args = 1..)]
    val: Vec<PathBuf>,
    /// Inputs are JSONL: one document per line, the string in --field.
    #[arg(long)]
    jsonl: bool,
    /// The JSONL field holding the text.
    #[arg(long, default_value = "text", requires = "jsonl")]
    field: String,
    /// Replace invalid UTF-8 with U+FFFD instead of failing.
    #[arg(long)]
    lossy: bool,
    /// Id width of the .bin files: auto (u16 when the vocabulary fits), u16 or u32.
    #[arg(long, default_value = "auto", value_parser = ["auto", "u16", "u32"])]
    dtype: String,
}

/// Runs `arlm prepare`.
pub fn run(args: Args) -> anyhow::Result<()> {
    arlm::outdir::check(&args.out, arlm::outdir::OutputKind::DataDir, args.force)?;
    arlm::outdir::remove_stale_temps(&args.out)?;
    let tokenizer: Box<dyn arlm::tokenizer::Tokenizer> = if args.tokenizer == "bytes" {
        Box::new(arlm::tokenizer::bytes::ByteTokenizer)
    } else {
        arlm::tokenizer::load(std::path::Path::new(&args.tokenizer))
            .with_context(|| format!("cannot load the tokenizer {}", args.tokenizer))?
    };
    let opts = PrepareOptions {
        tokenizer: tokenizer.as_ref(),
        input: if args.input.is_empty() {
            Input::DefaultCorpus
        } else {
            Input::Files(args.input.clone())
        },
        val: if args.val.is_empty() {
            ValSplit::Fraction(args.val_fraction)
        } else {
            ValSplit::Files(args.val.clone())
        },
        out: args.out.clone(),
        jsonl_field: args.jsonl.then(|| args.field.clone()),
        lossy: args.lossy,
        dtype: match args.dtype.as_str() {
            "u16" => Dtype::U16,
            "u32" => Dtype::U32,
            _ => Dtype::Auto,
        },
        progress: true,
    };
    let r = prepare(&opts)?;
    let mb = (r.train.bytes + r.val.bytes) as f64 / 1e6;
    println!(
        "{} tokenizer ({} tokens, fingerprint {}), u{} ids, {:.1} MB in {:.2} s ({:.1} MB/s)",
        r.tokenizer_kind,
        r.vocab_size,
        r.tokenizer_fingerprint,
        r.id_bytes * 8,
        mb,
        r.seconds,
        mb / r.seconds.max(1e-9)
    );
    for (name, s) in [("train", &r.train), ("val", &r.val)] {
        println!(
            "{name:5}: {} tokens, {} bytes, {} chars, {} words, {} documents",
            s.tokens, s.bytes, s.chars, s.words, s.documents
        );
    }
    if let Some(f) = &r.synth_floor {
        println!(
            "synthetic source floor: train {:.4}, val {:.4} bits/byte (entropy rate {:.4})",
            f.train.bits_per_byte, f.val.bits_per_byte, f.val.entropy_rate_bits_per_byte
        );
    }
    println!(
        "wrote {}/{{train.bin,val.bin,tokenizer.json,meta.json}}",
        args.out.display()
    );
    Ok(())
}
