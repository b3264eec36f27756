//! `arlm exposure`: exposure bias of a model, measured per continuation position.
//!
//! A command of its own rather than an `arlm eval` mode: eval scores a given corpus,
//! while this one generates (sampled and greedy continuations) and compares the model
//! with a true source, so it shares neither eval's inputs nor its report.

use anyhow::{bail, Context, Result};
use arlm::corpus::synth::SynthSource;
use arlm::eval::exposure::{self, mean, ExposureOptions, ExposureReport};
use arlm::load::load;
use arlm::model::LanguageModel;
use arlm::with_model;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

/// Flags of `arlm exposure`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory (a training run or a saved model).
    #[arg(long)]
    model: PathBuf,
    /// Number of prompts (true prefixes with their true continuations).
    #[arg(long, default_value_t = 200)]
    prompts: usize,
    /// Tokens of true prefix before each continuation.
    #[arg(long, default_value_t = 16)]
    prefix: usize,
    /// Tokens of continuation (prefix + length must fit the model's context).
    #[arg(long, default_value_t = 48)]
    length: usize,
    /// Seed of the prompts and the sampled continuations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Real text instead of the synthetic source: prompts are random windows of this file
    /// (no true distribution, so no KL and no true NLL).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
    /// Directory for exposure.svg / exposure.png (default: the model directory).
    #[arg(long)]
    plot_dir: Option<PathBuf>,
}

/// Runs `arlm exposure`.
pub fn run(args: Args) -> Result<()> {
    if args.prompts == 0 || args.length == 0 {
        bail!("--prompts and --length must be at least 1");
    }
    let loaded = load(&args.model)
        .with_context(|| format!("cannot load the model {}", args.model.display()))?;
    let tok = &*loaded.tokenizer;
    let opts = ExposureOptions {
        prefix_len: args.prefix,
        length: args.length,
        seed: args.seed,
    };
    let total = args.prefix + args.length;
    let report = match &args.text {
        Some(path) => {
            let text = super::tokenizer::read_text(path)?;
            let ids = tok.encode(&text)?;
            if ids.len() < total {
                bail!(
                    "{}: {} tokens, fewer than --prefix + --length = {total}",
                    path.display(),
                    ids.len()
                );
            }
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed ^ 0x7465_7874);
            let prompts: Vec<Vec<u32>> = (0..args.prompts)
                .map(|_| {
                    let at = rng.random_range(0..=ids.len() - total);
                    ids[at..at + total].to_vec()
                })
                .collect();
            with_model!(&loaded.model, m => exposure::measure(None::<&SynthSource>, m, &prompts, opts))?
        }
        None => {
            let src = SynthSource::new();
            if tok.kind() != "bytes" || tok.vocab_size() != src.vocab_size() {
                bail!(
                    "the synthetic source is over bytes (257 ids, end-of-text 256); this model's \
                     tokenizer is {} with {} ids. Train on the default corpus with the bytes \
                     tokenizer, or pass --text FILE to compare teacher-forced and free-running \
                     NLL on real text",
                    tok.kind(),
                    tok.vocab_size()
                );
            }
            let prompts = exposure::sample_prompts(&src, args.prompts, total, args.seed)?;
            with_model!(&loaded.model, m => exposure::measure(Some(&src), m, &prompts, opts))?
        }
    };
    let dir = args.plot_dir.clone().unwrap_or_else(|| args.model.clone());
    let title = format!("exposure: {}", args.model.display());
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create --plot-dir {}: {e}", dir.display()))?;
    arlm::eval::exposure_plot::plot(&dir, &report, &title)
        .map_err(|e| anyhow::anyhow!("cannot draw the plot in {}: {e}", dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    eprintln!("wrote {0}/exposure.svg and {0}/exposure.png", dir.display());
    Ok(())
}

fn cell(v: &Option<Vec<f64>>, t: usize) -> String {
    v.as_ref().map_or("-".into(), |v| format!("{:.4}", v[t]))
}

fn cell_mean(v: &Option<Vec<f64>>) -> String {
    v.as_ref().map_or("-".into(), |v| format!("{:.4}", mean(v)))
}

/// The per-position table (positions 1, 2, 4, 8, ... and the last) and the means.
fn print_table(r: &ExposureReport) {
    let o = r.options;
    println!(
        "{} prompts, true prefix {} tokens, continuation {} tokens, seed {} (nats per token)",
        r.prompts, o.prefix_len, o.length, o.seed
    );
    println!(
        "{:>5} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} {:>7} | {:>9} {:>9} {:>9}",
        "pos",
        "tf model",
        "tf true",
        "tf KL",
        "smp model",
        "smp true",
        "smp KL",
        "smp p=0",
        "grd model",
        "grd true",
        "grd KL"
    );
    let mut rows: Vec<usize> = (0..)
        .map(|k| 1usize << k)
        .take_while(|&p| p < o.length)
        .collect();
    rows.push(o.length);
    let (tf, sa, gr) = (&r.teacher_forced, &r.sampled, &r.greedy);
    for p in rows {
        let t = p - 1;
        println!(
            "{:>5} | {:>9.4} {:>9} {:>9} | {:>9.4} {:>9} {:>9} {:>7} | {:>9.4} {:>9} {:>9}",
            p,
            tf.model_nll[t],
            cell(&tf.true_nll, t),
            cell(&tf.kl, t),
            sa.model_nll[t],
            cell(&sa.true_nll, t),
            cell(&sa.kl, t),
            cell(&sa.impossible, t),
            gr.model_nll[t],
            cell(&gr.true_nll, t),
            cell(&gr.kl, t),
        );
    }
    println!(
        "{:>5} | {:>9.4} {:>9} {:>9} | {:>9.4} {:>9} {:>9} {:>7} | {:>9.4} {:>9} {:>9}",
        "mean",
        mean(&tf.model_nll),
        cell_mean(&tf.true_nll),
        cell_mean(&tf.kl),
        mean(&sa.model_nll),
        cell_mean(&sa.true_nll),
        cell_mean(&sa.kl),
        cell_mean(&sa.impossible),
        mean(&gr.model_nll),
        cell_mean(&gr.true_nll),
        cell_mean(&gr.kl),
    );
    println!("tf: true text (teacher forcing); smp: the model's sampled text (temperature 1); grd: greedy.");
    println!("model/true: NLL under the model / the true source; KL: KL(true || model) at that prefix; p=0: fraction the truth calls impossible.");
}
