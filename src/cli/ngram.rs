//! `arlm ngram fit`: estimate a Kneser-Ney or add-k n-gram model; `arlm ngram ppl`: KenLM-style
//! perplexity of a text under an n-gram / ARPA model; `arlm ngram build-binary`: an ARPA
//! file into a model directory with the binary (mapped) model.

use anyhow::{bail, Context};
use arlm::data::bin::TokenFile;
use arlm::model::ngram::kneser_ney::KnOptions;
use arlm::model::ngram::store::{self, Corpus};
use arlm::tokenizer::words::WordTokenizer;
use arlm::tokenizer::Tokenizer;
use clap::{Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `arlm ngram`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Estimate an n-gram model from text (one sentence per line) or a prepared .bin.
    Fit(FitArgs),
    /// Total log10 probability and perplexity of a text, KenLM `query` style.
    Ppl(PplArgs),
    /// Convert an ARPA file (KenLM's, SRILM's, arlm's; plain or .gz) into a model
    /// directory holding the binary model (loads by mmap in milliseconds).
    BuildBinary(BuildBinaryArgs),
}

#[derive(clap::Args)]
struct BuildBinaryArgs {
    /// The ARPA file (.arpa or .arpa.gz).
    arpa: PathBuf,
    /// Output model directory (model.bin, tokenizer.json, config.json).
    out: PathBuf,
    /// Write into OUT even if it is a non-empty directory that is not an n-gram model.
    #[arg(long)]
    force: bool,
}

/// Smoothing methods.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum Smoothing {
    /// Interpolated modified Kneser-Ney (KenLM lmplz compatible).
    KneserNey,
    /// Add-k smoothed counts.
    AddK,
}

#[derive(clap::Args)]
struct FitArgs {
    /// n-gram order.
    #[arg(long, default_value_t = 3)]
    order: usize,
    /// Smoothing method.
    #[arg(long, value_enum, default_value_t = Smoothing::KneserNey)]
    smoothing: Smoothing,
    /// The k of add-k smoothing.
    #[arg(long, default_value_t = 1.0)]
    k: f64,
    /// Training text files, one sentence per line (words tokenizer).
    #[arg(long, num_args = 1.., conflicts_with = "data")]
    input: Vec<PathBuf>,
    /// A prepared data directory (DIR/train.bin); its tokenizer is DIR/tokenizer.json
    /// unless --tokenizer is given.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokenizer to use (default: a words tokenizer trained on --input).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Cap the trained words vocabulary at this many ids (specials included).
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Keep only words seen at least this often when training the words vocabulary.
    #[arg(long, default_value_t = 1)]
    min_count: usize,
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    /// Write into --out even if it is a non-empty directory that is not an n-gram model.
    #[arg(long)]
    force: bool,
    /// Also write the model as an ARPA file here (.gz: gzip). Kneser-Ney only.
    #[arg(long)]
    arpa: Option<PathBuf>,
    /// Do not keep model.arpa in the model directory (only the binary model.bin, which
    /// loads faster but cannot be converted back to ARPA). Kneser-Ney only.
    #[arg(long)]
    no_arpa: bool,
    /// Do not reproduce lmplz's count-of-counts quirk (see `arlm::model::ngram::kneser_ney`).
    #[arg(long)]
    no_kenlm_quirk: bool,
    /// Discounts "D1 D2 D3+" for orders whose discounts cannot be estimated (lmplz's
    /// --discount_fallback uses "0.5 1 1.5").
    #[arg(long, value_name = "\"D1 D2 D3\"")]
    discount_fallback: Option<String>,
    /// Memory for Kneser-Ney estimation's n-gram sorts (like lmplz -S): bytes, or with a
    /// K/M/G/T suffix (powers of 1024: 64K, 512M, 1G). n-gram streams that do not fit are
    /// sorted on disk. Default: a quarter of the memory available (MemAvailable), at
    /// most 4G (1G where it is unknown). The vocabulary-sized arrays and, while writing
    /// model.bin, one order's hash table come on top (see docs/parts/ngram.md).
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    memory: Option<usize>,
    /// Directory for the temporary sorted runs (default: inside --out; a RAM-backed /tmp
    /// would defeat --memory). Removed when the fit ends, successful or not.
    #[arg(long)]
    temp_dir: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// Parses a `--memory` size: bytes, or a number with a K, M, G or T suffix (powers of
/// 1024; an optional trailing "B" or "iB").
fn parse_memory(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s:?}: unknown unit {c:?} (use K, M, G or T)")),
            };
            (&t[..t.len() - 1], shift)
        }
        _ => (t, 0),
    };
    let bad = || format!("{s:?}: expected a size like 1G, 512M, 64K or a number of bytes");
    let value: f64 = num.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value <= 0.0 {
        return Err(bad());
    }
    let bytes = value * (1u64 << shift) as f64;
    if bytes >= usize::MAX as f64 {
        return Err(format!("{s:?}: too large"));
    }
    Ok(bytes as usize)
}

/// A size as `--memory` takes it ("200M", "1.5G", "64K", "100").
fn binary_size(bytes: usize) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        let v = bytes as f64 / (1u64 << shift) as f64;
        if v >= 1.0 {
            return format!("{}{unit}", (v * 10.0).round() / 10.0);
        }
    }
    bytes.to_string()
}

/// The default `--memory`: a quarter of MemAvailable, at most 4 GiB (1 GiB if unknown).
fn default_memory() -> usize {
    arlm::memory::available_bytes().map_or(1 << 30, |b| (b / 4).min(4 << 30)) as usize
}

#[derive(clap::Args)]
struct PplArgs {
    /// Model directory or .arpa / .arpa.gz file.
    #[arg(long)]
    model: PathBuf,
    /// Text files to score, one sentence per line.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
}

/// Runs `arlm ngram`.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.cmd {
        Cmd::Fit(a) => fit(a),
        Cmd::Ppl(a) => ppl(a),
        Cmd::BuildBinary(a) => build_binary(a),
    }
}

fn parse_fallback(s: &str) -> anyhow::Result<[f32; 3]> {
    let v: Vec<f32> = s
        .split_whitespace()
        .map(|x| x.parse::<f32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--discount-fallback {s:?}: expected three numbers"))?;
    match v[..] {
        [a, b, c] => Ok([a, b, c]),
        _ => bail!("--discount-fallback {s:?}: expected three numbers \"D1 D2 D3+\""),
    }
}

fn fit(a: FitArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    if a.order == 0 {
        bail!("--order must be at least 1");
    }
    let kinds = &[store::KN_TYPE, store::ADDK_TYPE];
    arlm::outdir::check(&a.out, arlm::outdir::OutputKind::ModelDir(kinds), a.force)?;
    arlm::outdir::remove_stale_temps(&a.out)?;
    let bin;
    let tok: Box<dyn Tokenizer>;
    let words: WordTokenizer;
    let corpus = if let Some(dir) = &a.data {
        let tok_path = a
            .tokenizer
            .clone()
            .unwrap_or_else(|| dir.join("tokenizer.json"));
        tok = arlm::tokenizer::load(&tok_path)
            .with_context(|| format!("loading the tokenizer {}", tok_path.display()))?;
        bin = TokenFile::open(&dir.join("train.bin"))?;
        if bin.vocab_size() != tok.vocab_size() {
            bail!(
                "{} has a vocabulary of {} but the tokenizer {} has {}",
                bin.path().display(),
                bin.vocab_size(),
                tok_path.display(),
                tok.vocab_size()
            );
        }
        let file: &TokenFile = &bin;
        Corpus::Tokens {
            len: file.len(),
            get: Box::new(|i| file.get(i)),
            eot: tok.eot_token(),
        }
    } else {
        if a.input.is_empty() {
            bail!("give the training text with --input FILES or a prepared --data DIR");
        }
        words = match &a.tokenizer {
            Some(p) => {
                let t = arlm::tokenizer::load(p)?;
                store::as_words(&*t).with_context(|| {
                    format!(
                        "--input needs a words tokenizer; {} is {:?} (use --data for others)",
                        p.display(),
                        t.kind()
                    )
                })?
            }
            None => {
                // Line by line: the vocabulary's memory, not the corpus's.
                use std::io::BufRead;
                let mut counter = arlm::tokenizer::words::WordCounter::default();
                let mut line = String::new();
                for p in &a.input {
                    let file = std::fs::File::open(p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
                    loop {
                        line.clear();
                        let n = r
                            .read_line(&mut line)
                            .with_context(|| format!("reading {}", p.display()))?;
                        if n == 0 {
                            break;
                        }
                        counter.add(&line);
                    }
                }
                counter.finish(a.vocab_size, a.min_count)?
            }
        };
        tok = Box::new(words.clone());
        Corpus::Text {
            files: &a.input,
            tokenizer: &words,
        }
    };
    match a.smoothing {
        Smoothing::KneserNey => {
            let opts = KnOptions {
                order: a.order,
                kenlm_quirk: !a.no_kenlm_quirk,
                discount_fallback: a
                    .discount_fallback
                    .as_deref()
                    .map(parse_fallback)
                    .transpose()?,
            };
            let plan = arlm::model::ngram::streamed::Plan {
                budget: a.memory.unwrap_or_else(default_memory),
                temp_parent: a.temp_dir.clone().unwrap_or_else(|| a.out.clone()),
                progress: !a.quiet,
            };
            let mut est = 0.0;
            let fit = store::fit_kn_streamed(
                &corpus,
                &*tok,
                &opts,
                &plan,
                &a.out,
                !a.no_arpa,
                a.arpa.as_deref(),
                &mut |fit| {
                    est = t0.elapsed().as_secs_f64();
                    println!(
                        "tokens {}  vocabulary {} ({} tokenizer)",
                        fit.tokens,
                        tok.vocab_size(),
                        tok.kind()
                    );
                    for (i, (c, d)) in fit.counts.iter().zip(&fit.discounts).enumerate() {
                        println!(
                            "order {}: {:>9} n-grams  discounts D1 {} D2 {} D3+ {}",
                            i + 1,
                            c,
                            d[0],
                            d[1],
                            d[2]
                        );
                    }
                },
            )
            .with_context(|| format!("estimating with --memory {}", binary_size(plan.budget)))?;
            if fit.runs_spilled > 0 {
                println!(
                    "sorted on disk: {} runs (in {})",
                    fit.runs_spilled,
                    plan.temp_parent.display()
                );
            }
            if let Some(p) = &a.arpa {
                println!("wrote {}", p.display());
            }
            println!(
                "estimated in {est:.2} s; peak memory {:.0} MB (--memory {}); wrote {} ({:.2} s total)",
                peak_rss_mb(),
                binary_size(plan.budget),
                a.out.display(),
                t0.elapsed().as_secs_f64()
            );
        }
        Smoothing::AddK => {
            if a.arpa.is_some() || a.no_arpa {
                bail!(
                    "--arpa / --no-arpa are only for --smoothing kneser-ney \
                     (add-k is not a backoff model)"
                );
            }
            let model = store::fit_addk(&corpus, &*tok, a.order, a.k)?;
            store::save_addk(&a.out, &model, &*tok)?;
            println!(
                "add-k order {} k={}: {} distinct {}-grams, vocabulary {}; wrote {} ({:.2} s)",
                a.order,
                a.k,
                model.distinct_grams(),
                a.order,
                tok.vocab_size(),
                a.out.display(),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// This process's peak resident memory in MB (Linux VmHWM; NaN elsewhere).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn build_binary(a: BuildBinaryArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    arlm::outdir::check(
        &a.out,
        arlm::outdir::OutputKind::ModelDir(&[store::KN_TYPE]),
        a.force,
    )?;
    arlm::outdir::remove_stale_temps(&a.out)?;
    let model = store::build_binary(&a.arpa, &a.out)
        .with_context(|| format!("converting {}", a.arpa.display()))?;
    let bin = a.out.join(store::KN_BINARY);
    let size = std::fs::metadata(&bin).map_or(0, |m| m.len());
    println!(
        "{}-gram ({} n-grams): wrote {} ({:.1} MB) in {:.2} s",
        model.order(),
        model
            .counts()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        bin.display(),
        size as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ppl(a: PplArgs) -> anyhow::Result<()> {
    use arlm::model::LanguageModel;
    let t_load = Instant::now();
    let loaded =
        arlm::load::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
    let tok = &loaded.tokenizer;
    let mut total = 0f64;
    let mut tokens = 0u64;
    let mut oov = 0u64;
    let t0 = Instant::now();
    for p in &a.input {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let mut ids = Vec::new();
        arlm::with_model!(&loaded.model, m => ids.push(m.bos_token()));
        ids.extend(tok.encode(&text)?);
        if tok.kind() == "words" {
            oov += ids[1..]
                .iter()
                .filter(|&&i| i == arlm::tokenizer::words::UNK)
                .count() as u64;
        }
        let lp = arlm::with_model!(&loaded.model, m => m.score_next(&ids))?;
        total += lp.iter().map(|&x| x as f64).sum::<f64>() / std::f64::consts::LN_10;
        tokens += lp.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("model: {}  (loaded in {load_ms:.1} ms)", loaded.describe());
    println!(
        "tokens {tokens} (<unk> {oov})  log10 total {total:.3}  perplexity {:.4}  ({:.0} tokens/s)",
        10f64.powf(-total / tokens.max(1) as f64),
        tokens as f64 / secs
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_memory("64K"), Ok(64 << 10));
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        assert_eq!(parse_memory("1G"), Ok(1 << 30));
        assert_eq!(parse_memory("1.5g"), Ok(3 << 29));
        assert_eq!(parse_memory("2GiB"), Ok(2 << 30));
        assert_eq!(parse_memory("100MB"), Ok(100 << 20));
        assert_eq!(parse_memory("123456"), Ok(123456));
        for bad in ["", "G", "-1G", "0", "1Q", "lots", "nanG", "1e30T"] {
            assert!(parse_memory(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(binary_size(200 << 20), "200M");
        assert_eq!(binary_size(3 << 29), "1.5G");
        assert_eq!(binary_size(100), "100");
    }
}
