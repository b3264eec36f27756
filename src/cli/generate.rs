//! `arlm generate`: stream text from a model with any decoding method.
//!
//! Sampling flags follow llama.cpp's names and defaults (temperature 0.8, top-k 40,
//! top-p 0.95, min-p 0.05, chain `penalties;top_k;typ_p;top_p;min_p;temperature`).
//! Text goes to stdout as it is generated (flushed per token); statistics go to stderr.
//! `--json` prints one JSON object per sample instead (per-token ids, pieces, log-probs
//! under the model and under the sampling distribution, finish reason).

use anyhow::{bail, Context, Result};
use arlm::generate::{
    self, beam_search, BeamConfig, GenerateOptions, Sampler, SamplerConfig, Session, Stage,
};
use arlm::model::LanguageModel;
use arlm::tokenizer::Tokenizer;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `arlm generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (config.json + weights + tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text (default: empty, i.e. start a new document).
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// Maximum number of new tokens per sample.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    /// Number of independent samples (each uses its own random stream of the seed).
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    /// Random seed: the same seed gives the same output.
    #[arg(long, short = 's', default_value_t = 0)]
    pub seed: u64,
    /// Stop at this string (not included in the output); repeatable.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Keep going when the model chooses end-of-text.
    #[arg(long)]
    pub ignore_eot: bool,
    /// How a GPT stores its matmul weights for inference: f32 (exact), f16, bf16, q8
    /// (int8 with a scale per 32 weights), or w8a8 (q8, and the decode step also rounds
    /// each matmul input to int8: integer dot products, fastest). The compact formats
    /// decode faster at a small quality cost (docs/parts/gen.md); bf16 and f16 also
    /// prefill the prompt with a bf16 GEMM where the CPU has AVX512_BF16 (~2x f32's
    /// speed; f16 weights and the activations round to bf16 there), w8a8 with an int8
    /// GEMM on AVX-512 VNNI.
    #[arg(long, default_value = "f32")]
    pub weights: arlm::model::gpt::WeightFormat,
    /// Print one JSON object per sample instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Greedy decoding (same as --temp 0).
    #[arg(long)]
    pub greedy: bool,
    /// Temperature (0 = greedy).
    #[arg(
        long,
        allow_negative_numbers = true,
        alias = "temperature",
        default_value_t = 0.8
    )]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p / nucleus, in (0, 1] (1 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p, in [0, 1] (0 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.05)]
    pub min_p: f32,
    /// Locally typical sampling, in (0, 1] (1 = off).
    #[arg(
        long,
        allow_negative_numbers = true,
        alias = "typical",
        default_value_t = 1.0
    )]
    pub typical_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(allow_negative_numbers = true, long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Presence penalty (0 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Frequency penalty (0 = off).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Never repeat an n-gram of this size (0 = off).
    #[arg(long, default_value_t = 0)]
    pub no_repeat_ngram: usize,
    /// TOKEN=BIAS added to a token's log-prob (-inf bans it). TOKEN is a token id or a
    /// text that is exactly one token; repeatable.
    #[arg(long, allow_hyphen_values = true)]
    pub logit_bias: Vec<String>,
    /// Sampler order, `;`-separated (llama.cpp names).
    #[arg(long, default_value = "penalties;top_k;typ_p;top_p;min_p;temperature")]
    pub samplers: String,
    /// Beam search with this many beams (replaces sampling).
    #[arg(long)]
    pub beam: Option<usize>,
    /// Beam search length penalty (Hugging Face convention).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub length_penalty: f32,
    /// How many beam hypotheses to print.
    #[arg(long, default_value_t = 1)]
    pub num_return: usize,
}

/// Parses one `--logit-bias TOKEN=BIAS`.
fn parse_bias(spec: &str, tok: &dyn Tokenizer) -> Result<(u32, f32)> {
    let (left, right) = spec
        .rsplit_once('=')
        .with_context(|| format!("invalid --logit-bias {spec:?}: expected TOKEN=BIAS"))?;
    let bias: f32 = match right.trim() {
        "-inf" | "-infinity" => f32::NEG_INFINITY,
        s => s
            .parse()
            .with_context(|| format!("invalid --logit-bias {spec:?}: {s:?} is not a number"))?,
    };
    let id = match left.parse::<u32>() {
        Ok(id) => {
            if id as usize >= tok.vocab_size() {
                bail!(
                    "invalid --logit-bias {spec:?}: unknown token id {id} (vocabulary has {} tokens)",
                    tok.vocab_size()
                );
            }
            id
        }
        Err(_) => {
            let ids = tok.encode(left).unwrap_or_default();
            if ids.len() != 1 {
                bail!(
                    "invalid --logit-bias {spec:?}: unknown token {left:?} (it encodes to {} tokens, not 1)",
                    ids.len()
                );
            }
            ids[0]
        }
    };
    Ok((id, bias))
}

/// Builds the sampler configuration from the flags.
fn sampler_config(args: &Args, tok: &dyn Tokenizer) -> Result<SamplerConfig> {
    let logit_bias = args
        .logit_bias
        .iter()
        .map(|s| parse_bias(s, tok))
        .collect::<Result<Vec<_>>>()?;
    Ok(SamplerConfig {
        temperature: if args.greedy { 0.0 } else { args.temp },
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        typical_p: args.typical_p,
        repeat_penalty: args.repeat_penalty,
        presence_penalty: args.presence_penalty,
        frequency_penalty: args.frequency_penalty,
        penalty_last_n: args.repeat_last_n,
        no_repeat_ngram: args.no_repeat_ngram,
        logit_bias,
        order: Stage::parse_list(&args.samplers)?,
        seed: args.seed,
    })
}

/// Runs `arlm generate`.
pub fn run(args: Args) -> Result<()> {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the prompt file {}", f.display()))?,
        (None, None) => String::new(),
    };
    let mut loaded = arlm::load::load(&args.model)
        .with_context(|| format!("cannot load the model {}", args.model.display()))?;
    loaded.set_weight_format(args.weights)?;
    let tok = &*loaded.tokenizer;
    let mut prompt_ids = tok.encode(&prompt).context("cannot tokenize the prompt")?;
    // Sentence-level tokenizers (words) close every line with end-of-text; a prompt is to
    // be continued, so its last sentence stays open unless the prompt ends with a newline.
    if prompt_ids.last() == Some(&tok.eot_token()) && !prompt.ends_with('\n') {
        prompt_ids.pop();
    }
    arlm::with_model!(&loaded.model, m => run_model(m, tok, &args, &prompt_ids))
}

fn run_model<M: LanguageModel>(
    model: &M,
    tok: &dyn Tokenizer,
    args: &Args,
    prompt: &[u32],
) -> Result<()> {
    let cfg = sampler_config(args, tok)?;
    cfg.validate(model.vocab_size())?;
    if args.num_samples == 0 {
        bail!("invalid --num-samples 0: must be at least 1");
    }
    if let Some(nb) = args.beam {
        return run_beam(model, tok, args, prompt, nb);
    }
    let opts = GenerateOptions {
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        stop_at_eot: !args.ignore_eot,
        sampler: cfg.clone(),
    };
    let t0 = Instant::now();
    let root = Session::new(model, prompt)?;
    let prefill_s = t0.elapsed().as_secs_f64();
    let stdout = std::io::stdout();
    let mut total_tokens = 0usize;
    let t1 = Instant::now();
    for i in 0..args.num_samples {
        let mut sampler = Sampler::with_stream(cfg.clone(), model.vocab_size(), i as u64)?;
        let session = root.clone();
        let gen = if args.json {
            generate::generate(session, tok, &mut sampler, &opts, &mut |_| Ok(()))?
        } else {
            if args.num_samples > 1 {
                let mut out = stdout.lock();
                writeln!(out, "--- sample {} ---", i + 1)?;
            }
            let g = generate::generate(session, tok, &mut sampler, &opts, &mut |text| {
                let mut out = stdout.lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            })?;
            let mut out = stdout.lock();
            writeln!(out)?;
            out.flush()?;
            g
        };
        total_tokens += gen.tokens.len();
        if args.json {
            let obj = SampleJson {
                sample: i,
                seed: args.seed,
                prompt: tok.decode(prompt).unwrap_or_default(),
                prompt_tokens: prompt.len(),
                generation: &gen,
            };
            let mut out = stdout.lock();
            writeln!(out, "{}", serde_json::to_string(&obj)?)?;
            out.flush()?;
        } else {
            eprintln!(
                "[{} tokens, finish: {}, log p = {:.3} nats]",
                gen.tokens.len(),
                gen.finish_reason.as_str(),
                gen.total_logprob
            );
        }
    }
    let gen_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "arlm generate: {} | prompt {} tokens in {:.3}s | {} new tokens in {:.3}s ({:.1} tokens/s)",
        model.describe(),
        prompt.len() + 1,
        prefill_s,
        total_tokens,
        gen_s,
        total_tokens as f64 / gen_s.max(1e-9)
    );
    Ok(())
}

fn run_beam<M: LanguageModel>(
    model: &M,
    tok: &dyn Tokenizer,
    args: &Args,
    prompt: &[u32],
    num_beams: usize,
) -> Result<()> {
    let cfg = BeamConfig {
        num_beams,
        num_return: args.num_return,
        length_penalty: args.length_penalty,
        max_tokens: args.max_tokens,
        eot: (!args.ignore_eot).then(|| tok.eot_token()),
    };
    let t0 = Instant::now();
    let hyps = beam_search(model, prompt, &cfg)?;
    let secs = t0.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    let mut items = Vec::new();
    for (rank, h) in hyps.iter().enumerate() {
        let generation = h.to_generation(tok)?;
        if args.json {
            items.push(BeamJson {
                rank: rank + 1,
                generation,
            });
        } else {
            writeln!(
                out,
                "--- beam {} | log p = {:.4} | score = {:.4} | {} tokens{} ---",
                rank + 1,
                h.logprob,
                h.score,
                h.tokens.len(),
                if h.ended_with_eot { ", eot" } else { "" }
            )?;
            writeln!(out, "{}", generation.text)?;
        }
    }
    if args.json {
        let obj = serde_json::json!({
            "beam": num_beams,
            "length_penalty": args.length_penalty,
            "prompt_tokens": prompt.len(),
            "hypotheses": items,
        });
        writeln!(out, "{obj}")?;
    }
    out.flush()?;
    eprintln!(
        "arlm generate: beam {num_beams} over {} in {secs:.3}s",
        model.describe()
    );
    Ok(())
}

/// One `--json` line of sampling: the sample's [`generate::Generation`] and its context.
#[derive(serde::Serialize)]
struct SampleJson<'a> {
    sample: usize,
    seed: u64,
    prompt: String,
    prompt_tokens: usize,
    #[serde(flatten)]
    generation: &'a generate::Generation,
}

/// One beam-search hypothesis in `--json`: its rank and its [`generate::Generation`].
#[derive(serde::Serialize)]
struct BeamJson {
    rank: usize,
    #[serde(flatten)]
    generation: generate::Generation,
}
