//! `arlm score`: every token of a text with its log-prob, rank, entropy and alternatives.

use anyhow::{bail, Context, Result};
use arlm::eval::{report, score_text, TextScore, WindowSpec};
use arlm::load::load;
use arlm::model::LanguageModel;
use arlm::tokenizer::Tokenizer;
use arlm::with_model;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

mod docs;

/// Output formats of `arlm score`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per text.
    Jsonl,
    /// GLTR-coloured terminal view with the running sum of log-probs.
    Table,
    /// A standalone HTML page (hover a token: its alternatives).
    Html,
}

/// When to colour the table.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// Flags of `arlm score`.
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
    /// Texts to score (each argument is one text). Without texts, reads --input.
    texts: Vec<String>,
    /// File with one text per line (or JSONL records), `-` for stdin.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Condition every text on this context: scores log p(text | context); the context's
    /// tokens are not counted.
    #[arg(long)]
    context: Option<String>,
    /// Alternatives to show per token.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Output format (default: table on a terminal, else jsonl).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Read JSONL records and score this field (implied by a .jsonl input). Records with
    /// "context" and "continuation" fields are scored conditionally.
    #[arg(long)]
    field: Option<String>,
    /// Treat input lines as JSONL records.
    #[arg(long)]
    jsonl: bool,
    /// Ids per model call for texts beyond the model's context (default: the model's max).
    #[arg(long)]
    window: Option<usize>,
    /// New tokens per sliding window (default: window - 1).
    #[arg(long)]
    stride: Option<usize>,
    /// Write the output to this file (atomically) instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Colour the table.
    #[arg(long, value_enum, default_value = "auto")]
    color: Color,
    /// Only each document's perplexity (CCNet-style filtering): JSONL records are echoed
    /// with "tokens", "log10_prob" and "perplexity" added, in input order, scoring the
    /// documents in parallel on all cores. For the words tokenizer each line of a
    /// document is a sentence (`<s>` ... `</s>`, as KenLM's `model.score`).
    #[arg(long)]
    perplexity: bool,
}

/// One thing to score.
struct Item {
    context: Option<String>,
    text: String,
}

fn read_items(args: &Args) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for t in &args.texts {
        items.push(Item {
            context: args.context.clone(),
            text: t.clone(),
        });
    }
    let Some(input) = &args.input else {
        if items.is_empty() {
            bail!("nothing to score: give texts as arguments or --input FILE (- for stdin)");
        }
        return Ok(items);
    };
    let reader: Box<dyn BufRead> = if input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(input)
            .with_context(|| format!("cannot open {}", input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let jsonl =
        args.jsonl || args.field.is_some() || input.extension().is_some_and(|e| e == "jsonl");
    let field = args.field.as_deref().unwrap_or("text");
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {} line {}", input.display(), n + 1))?;
        if !jsonl {
            items.push(Item {
                context: args.context.clone(),
                text: line,
            });
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not a JSON object", input.display(), n + 1))?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let (context, text) = if let Some(cont) = get("continuation") {
            (get("context").or_else(|| args.context.clone()), cont)
        } else if let Some(t) = get(field) {
            (get("context").or_else(|| args.context.clone()), t)
        } else {
            bail!(
                "{} line {}: no string field {field:?} (nor \"continuation\")",
                input.display(),
                n + 1
            );
        };
        items.push(Item { context, text });
    }
    Ok(items)
}

fn score_all<M: LanguageModel>(
    m: &M,
    tok: &dyn Tokenizer,
    items: &[Item],
    args: &Args,
) -> Result<Vec<TextScore>> {
    let spec = WindowSpec::new(args.window, args.stride, m.max_context())?;
    items
        .iter()
        .map(|it| {
            score_text(m, tok, it.context.as_deref(), &it.text, &spec, args.top_k)
                .map_err(anyhow::Error::from)
        })
        .collect()
}

/// Runs `arlm score`.
pub fn run(args: Args) -> Result<()> {
    let mut loaded = load(&args.model)
        .with_context(|| format!("cannot load the model at {}", args.model.display()))?;
    loaded.set_weight_format(args.weights)?;
    if args.perplexity {
        return docs::run(&args, &loaded);
    }
    let items = read_items(&args)?;
    let tok = loaded.tokenizer.as_ref();
    let scores = with_model!(&loaded.model, m => score_all(m, tok, &items, &args))?;
    let to_terminal = args.output.is_none() && std::io::stdout().is_terminal();
    let format = args.format.unwrap_or(if to_terminal {
        Format::Table
    } else {
        Format::Jsonl
    });
    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => to_terminal,
    };
    let out = match format {
        Format::Jsonl => scores
            .iter()
            .map(|s| report::score_jsonl(s) + "\n")
            .collect::<String>(),
        Format::Table => scores
            .iter()
            .map(|s| report::score_table(s, color))
            .collect::<Vec<_>>()
            .join("\n"),
        Format::Html => report::score_html(&loaded.describe(), &scores),
    };
    match &args.output {
        Some(path) => arlm::atomic::write_atomic(path, out.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(out.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(())
}
