//! `arlm tokenizer`: train, run and inspect tokenizers.

use anyhow::{bail, Context};
use arlm::tokenizer::bpe::{BpeTokenizer, Pretokenizer};
use arlm::tokenizer::bytes::ByteTokenizer;
use arlm::tokenizer::chars::CharTokenizer;
use arlm::tokenizer::{self, Tokenizer};
use clap::{Subcommand, ValueEnum};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Flags of `arlm tokenizer`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a tokenizer on text files and save it as tokenizer.json.
    Train(TrainArgs),
    /// Encode text (stdin or --input) to token ids on stdout.
    Encode(EncodeArgs),
    /// Decode token ids (stdin: a JSON array or whitespace-separated) to text on stdout.
    Decode(DecodeArgs),
    /// Print a tokenizer's kind, vocabulary size, special tokens and fingerprint.
    Info(InfoArgs),
}

/// Tokenizer kinds `arlm tokenizer train` can build.
#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// Byte-level BPE with a target vocabulary size.
    Bpe,
    /// The sorted distinct characters of the corpus (nanoGPT shakespeare_char).
    Chars,
    /// The 256 bytes + end-of-text (nothing to learn).
    Bytes,
    /// Whitespace words with <unk>, <s>, </s> (for n-gram models).
    Words,
    /// SentencePiece-style Unigram language model over ▁-marked words (EM + pruning).
    Unigram,
}

#[derive(Clone, Copy, ValueEnum)]
enum PretokenizerArg {
    Gpt2,
    Gpt4,
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Which tokenizer to build.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Target vocabulary size, special tokens included (bpe: required; words: optional cap).
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Pre-tokenization regex for bpe.
    #[arg(long, value_enum, default_value = "gpt2")]
    pretokenizer: PretokenizerArg,
    /// words: drop words seen fewer times than this (they become <unk>).
    #[arg(long, default_value_t = 1)]
    min_count: usize,
    /// unigram: longest piece, in characters.
    #[arg(long, default_value_t = 16)]
    max_piece_length: usize,
    /// unigram: extra special tokens (after <|unk|> and <|endoftext|>).
    #[arg(long = "special", num_args = 1..)]
    special: Vec<String>,
    /// UTF-8 text files to learn from (default: the embedded synthetic corpus).
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Where to write tokenizer.json.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    /// A JSON array.
    Json,
    /// Space-separated ids.
    Ids,
}

#[derive(clap::Args)]
struct EncodeArgs {
    /// A tokenizer.json, a directory with one, or a directory with GPT-2's encoder.json + vocab.bpe.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Read this file instead of stdin.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "ids")]
    format: Format,
    /// unigram: sample each word's segmentation (subword regularization) instead of Viterbi.
    #[arg(long)]
    sample: bool,
    /// unigram --sample: p(segmentation) ∝ exp(alpha * score); 0 is uniform, large is Viterbi.
    #[arg(long, default_value_t = 0.1)]
    alpha: f64,
    /// unigram --sample: random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// unigram: print the N best segmentations of each word with log-probabilities.
    #[arg(long, value_name = "N")]
    show_lattice: Option<usize>,
}

#[derive(clap::Args)]
struct DecodeArgs {
    /// A tokenizer.json, a directory with one, or a directory with GPT-2's encoder.json + vocab.bpe.
    #[arg(long)]
    tokenizer: PathBuf,
    /// Read ids from this file instead of stdin.
    #[arg(long)]
    input: Option<PathBuf>,
}

#[derive(clap::Args)]
struct InfoArgs {
    /// A tokenizer.json, a directory with one, or a directory with GPT-2's encoder.json + vocab.bpe.
    #[arg(long)]
    tokenizer: PathBuf,
}

/// Runs `arlm tokenizer`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        Cmd::Train(a) => train(a),
        Cmd::Encode(a) => encode(a),
        Cmd::Decode(a) => decode(a),
        Cmd::Info(a) => info(a),
    }
}

/// Reads a UTF-8 text file; the error names the file and the first bad byte offset.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

fn load(path: &Path) -> anyhow::Result<Box<dyn Tokenizer>> {
    tokenizer::load(path).with_context(|| format!("cannot load tokenizer {}", path.display()))
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    let texts: Vec<String> = a
        .input
        .iter()
        .map(|p| read_text(p))
        .collect::<Result<_, _>>()?;
    let mut refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    if refs.is_empty() {
        eprintln!("no --input: learning from the embedded default corpus");
        refs.push(arlm::corpus::default_corpus());
    }
    let total: usize = refs.iter().map(|t| t.len()).sum();
    let start = Instant::now();
    let tok: Box<dyn Tokenizer> = match a.kind {
        Kind::Bytes => Box::new(ByteTokenizer),
        Kind::Chars => {
            if total == 0 {
                bail!("the input is empty: a chars tokenizer needs at least one character");
            }
            Box::new(CharTokenizer::train(&refs))
        }
        Kind::Bpe => {
            let Some(n) = a.vocab_size else {
                bail!("--kind bpe needs --vocab-size (for example 8000)");
            };
            let pre = match a.pretokenizer {
                PretokenizerArg::Gpt2 => Pretokenizer::Gpt2,
                PretokenizerArg::Gpt4 => Pretokenizer::Gpt4,
            };
            let t = BpeTokenizer::train(&refs, n, pre)?;
            if t.vocab_size() < n {
                eprintln!(
                    "note: the corpus ran out of pairs: vocabulary {} < requested {n}",
                    t.vocab_size()
                );
            }
            Box::new(t)
        }
        Kind::Words => train_words(&refs, a.vocab_size, a.min_count)?,
        Kind::Unigram => Box::new(super::unigram::train(
            &refs,
            a.vocab_size,
            a.max_piece_length,
            &a.special,
        )?),
    };
    let secs = start.elapsed().as_secs_f64();
    tokenizer::save(tok.as_ref(), &a.out)?;
    eprintln!(
        "{} tokenizer: {} tokens, fingerprint {}; learned from {:.2} MB in {:.2} s; wrote {}",
        tok.kind(),
        tok.vocab_size(),
        tok.fingerprint(),
        total as f64 / 1e6,
        secs,
        a.out.display()
    );
    Ok(())
}

/// Trains the words tokenizer (see `arlm::tokenizer::words` for its conventions).
fn train_words(
    texts: &[&str],
    max_vocab: Option<usize>,
    min_count: usize,
) -> anyhow::Result<Box<dyn Tokenizer>> {
    Ok(Box::new(arlm::tokenizer::words::WordTokenizer::train(
        texts, max_vocab, min_count,
    )?))
}

fn read_input(path: Option<&Path>) -> anyhow::Result<String> {
    match path {
        Some(p) => read_text(p),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
            String::from_utf8(buf).map_err(|e| {
                anyhow::anyhow!(
                    "stdin: not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                )
            })
        }
    }
}

fn encode(a: EncodeArgs) -> anyhow::Result<()> {
    let tok = load(&a.tokenizer)?;
    let text = read_input(a.input.as_deref())?;
    if let Some(n) = a.show_lattice {
        let u = super::unigram::as_unigram(tok.as_ref(), "--show-lattice")?;
        print!("{}", super::unigram::show_lattice(&u, &text, n));
        return Ok(());
    }
    let ids = if a.sample {
        let u = super::unigram::as_unigram(tok.as_ref(), "--sample")?;
        super::unigram::encode_sampled(&u, &text, a.alpha, a.seed)?
    } else {
        tok.encode(&text)?
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match a.format {
        Format::Json => serde_json::to_writer(&mut out, &ids)?,
        Format::Ids => {
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    out.write_all(b" ")?;
                }
                write!(out, "{id}")?;
            }
        }
    }
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Parses ids written as a JSON array or separated by whitespace/commas.
fn parse_ids(text: &str) -> anyhow::Result<Vec<u32>> {
    let t = text.trim();
    if t.starts_with('[') {
        return serde_json::from_str(t).context("ids: not a JSON array of non-negative integers");
    }
    t.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>()
                .with_context(|| format!("ids: {s:?} is not a token id"))
        })
        .collect()
}

fn decode(a: DecodeArgs) -> anyhow::Result<()> {
    let tok = load(&a.tokenizer)?;
    let ids = parse_ids(&read_input(a.input.as_deref())?)?;
    let bytes = tok.decode_bytes(&ids)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)?;
    out.flush()?;
    Ok(())
}

fn info(a: InfoArgs) -> anyhow::Result<()> {
    let tok = load(&a.tokenizer)?;
    let json = tok.to_hf_json();
    let eot = tok.eot_token();
    println!("path:          {}", a.tokenizer.display());
    println!("kind:          {}", tok.kind());
    println!("vocab size:    {}", tok.vocab_size());
    println!(
        "end-of-text:   {} = {:?}",
        eot,
        String::from_utf8_lossy(&tok.token_bytes(eot)?)
    );
    if tok.kind() == "bpe" {
        let merges = json
            .pointer("/model/merges")
            .and_then(|m| m.as_array())
            .map_or(0, Vec::len);
        let pre =
            if json.pointer("/pre_tokenizer/type").and_then(|v| v.as_str()) == Some("Sequence") {
                "gpt4"
            } else {
                "gpt2"
            };
        println!("merges:        {merges}");
        println!("pre-tokenizer: {pre}");
    }
    println!("fingerprint:   {}", tok.fingerprint());
    let sample = "Hello world! It's 2024.";
    if let Ok(ids) = tok.encode(sample) {
        println!(
            "sample:        {sample:?} -> {} tokens {:?}",
            ids.len(),
            ids
        );
    }
    Ok(())
}
