//! `arlm eval`: NLL, perplexity, bits per byte and per word of a model on a corpus,
//! always with the protocol that produced them.

use anyhow::{Context, Result};
use arlm::eval::{evaluate, report, Corpus, DocMode, EvalOptions, EvalReport, WindowSpec};
use arlm::load::load;
use arlm::model::LanguageModel;
use arlm::tokenizer::Tokenizer;
use arlm::with_model;
use std::io::IsTerminal;
use std::path::PathBuf;

/// The most bootstrap resamples `--resamples` accepts (each keeps three f64).
const MAX_RESAMPLES: usize = 10_000_000;

/// Flags of `arlm eval`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory (a training run or a saved model).
    #[arg(long)]
    model: PathBuf,
    /// How a GPT stores its matmul weights for inference: f32 (exact), f16, bf16, or q8
    /// (int8 with a scale per 32 weights). The compact formats decode faster at a small
    /// quality cost (docs/parts/gen.md); activations and sums stay f32, except that bf16
    /// scores with a bf16 GEMM where the CPU has AVX512_BF16 (~1.4x f32's speed; the
    /// activations round to bf16 there).
    #[arg(long, default_value = "f32")]
    weights: arlm::model::gpt::WeightFormat,
    /// A text file, a token file (.bin), or a directory with <split>.bin / <split>.txt.
    #[arg(long)]
    data: PathBuf,
    /// Which split to read from a data directory.
    #[arg(long, default_value = "val")]
    split: String,
    /// Ids per model call (window length; default: the model's maximum context).
    #[arg(long)]
    context: Option<usize>,
    /// New tokens scored per window after the first (default: context - 1, no overlap).
    #[arg(long)]
    stride: Option<usize>,
    /// How a text file is cut into documents (default: lines for word tokenizers,
    /// else the whole file).
    #[arg(long, value_enum)]
    docs: Option<DocMode>,
    /// Score an end-of-text token after each document (default: only for word tokenizers).
    #[arg(long)]
    end_token: Option<bool>,
    /// Bootstrap resamples for the 95% interval (0: none).
    #[arg(long, default_value_t = 1000)]
    resamples: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 1234)]
    seed: u64,
    /// Ids per batched model call.
    #[arg(long, default_value_t = 16384)]
    batch_tokens: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the JSON report to this file too (atomically).
    #[arg(long)]
    output: Option<PathBuf>,
}

fn run_model<M: LanguageModel>(m: &M, tok: &dyn Tokenizer, args: &Args) -> Result<EvalReport> {
    let spec = WindowSpec::new(args.context, args.stride, m.max_context())?;
    let corpus = Corpus::open(
        &args.data,
        &args.split,
        tok,
        m.bos_token(),
        args.docs,
        args.end_token,
    )
    .with_context(|| format!("cannot read the data at {}", args.data.display()))?;
    let mut opts = EvalOptions::new(spec);
    if args.resamples > MAX_RESAMPLES {
        anyhow::bail!(
            "--resamples {} is more than {MAX_RESAMPLES} (10000 already gives a stable 95% interval)",
            args.resamples
        );
    }
    opts.resamples = args.resamples;
    opts.seed = args.seed;
    opts.batch_tokens = args.batch_tokens.max(1);
    opts.progress = std::io::stderr().is_terminal();
    Ok(evaluate(m, tok, &corpus, &opts)?)
}

/// Runs `arlm eval`.
pub fn run(args: Args) -> Result<()> {
    let mut loaded = load(&args.model)
        .with_context(|| format!("cannot load the model at {}", args.model.display()))?;
    loaded.set_weight_format(args.weights)?;
    let tok = loaded.tokenizer.as_ref();
    let report = with_model!(&loaded.model, m => run_model(m, tok, &args))?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.output {
        arlm::atomic::write_atomic(path, json.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report::eval_text(&report));
    }
    Ok(())
}
