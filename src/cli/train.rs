//! `arlm train`: flags -> a [`TrainConfig`] (preset, then TOML file, then flags), data,
//! a GPT or a recurrent model (`rnn` in the config), and the library's training loop.

use anyhow::{bail, Context};
use arlm::model::gpt::Activation;
use arlm::train::{
    checkpoint, data, ConfigOverrides, RunOptions, TrainConfig, Trainable, TrainableGpt,
    TrainableRnn, Trainer,
};
use std::path::{Path, PathBuf};

/// Flags of `arlm train`.
#[derive(clap::Args)]
pub struct Args {
    /// Training data: a prepared directory (train.bin, val.bin, tokenizer.json) or a UTF-8
    /// text file (split 90/10, chars tokenizer). Default: the embedded synthetic corpus.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Run directory (checkpoints, metrics.jsonl, loss.svg/png, final model).
    /// Default: runs/PRESET (or runs/PRESET-2, -3, ... if taken).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Starting configuration: tiny, default, shakespeare-char-cpu, baby-shakespeare, gpt2-124m.
    #[arg(long)]
    preset: Option<String>,
    /// A TOML file of config fields (e.g. `steps = 500`, `lr = 1e-3`), applied after the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint (bit-exact).
    #[arg(long)]
    resume: bool,
    /// Write into --out even if it is a non-empty directory that is not an arlm run.
    #[arg(long)]
    force: bool,
    /// Stop after this step (writing a checkpoint) even if the run has more steps.
    #[arg(long)]
    stop_at: Option<u64>,
    /// No progress bar and no log lines (the summary is still printed).
    #[arg(long, short)]
    quiet: bool,
    /// Total optimizer steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Final learning rate of the cosine decay.
    #[arg(long)]
    min_lr: Option<f32>,
    /// Linear warmup steps.
    #[arg(long)]
    warmup_steps: Option<u64>,
    /// Step where the cosine decay ends (default: --steps).
    #[arg(long)]
    lr_decay_steps: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    grad_accum: Option<usize>,
    /// Context length.
    #[arg(long)]
    block_size: Option<usize>,
    /// Transformer blocks.
    #[arg(long)]
    n_layer: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    n_head: Option<usize>,
    /// Embedding width.
    #[arg(long)]
    n_embd: Option<usize>,
    /// Dropout probability.
    #[arg(long)]
    dropout: Option<f32>,
    /// Learn biases in linear layers and LayerNorms (false = nanoGPT's bias=False: the
    /// biases stay zero).
    #[arg(long, value_name = "true|false")]
    bias: Option<bool>,
    /// AdamW weight decay (matrices only).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// AdamW beta1.
    #[arg(long)]
    beta1: Option<f32>,
    /// AdamW beta2.
    #[arg(long)]
    beta2: Option<f32>,
    /// Global gradient-norm clip (0 = off).
    #[arg(long)]
    grad_clip: Option<f32>,
    /// Evaluate every N steps.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Validation batches per evaluation.
    #[arg(long)]
    eval_batches: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Step checkpoints to keep.
    #[arg(long)]
    keep_last: Option<usize>,
    /// Seed (init, batches, dropout).
    #[arg(long)]
    seed: Option<u64>,
    /// Tokenizer for raw text: auto, bytes, chars, gpt2, or a tokenizer.json path.
    #[arg(long)]
    tokenizer: Option<String>,
    /// Fraction of a raw text held out for validation.
    #[arg(long)]
    val_fraction: Option<f64>,
    /// MLP activation: gelu_new (GPT-2's tanh approximation) or gelu (exact, nanoGPT's).
    #[arg(long, value_name = "gelu_new|gelu", value_parser = parse_activation)]
    activation: Option<Activation>,
    /// Testing hook: start from the weights of this model directory (config.json +
    /// model.safetensors of the run's shape) instead of the seeded init.
    #[arg(long, hide = true, value_name = "DIR")]
    init_weights: Option<PathBuf>,
    /// Testing hook: train on these windows instead of sampling them (one line per
    /// micro-batch, B offsets into the training ids; tools/nanogpt_stepcompare.py).
    #[arg(long, hide = true, value_name = "FILE")]
    batch_offsets: Option<PathBuf>,
}

impl Args {
    fn overrides(&self) -> ConfigOverrides {
        ConfigOverrides {
            preset: None,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            block_size: self.block_size,
            dropout: self.dropout,
            bias: self.bias,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            steps: self.steps,
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            lr_decay_steps: self.lr_decay_steps,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: None,
            grad_clip: self.grad_clip,
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            checkpoint_every: self.checkpoint_every,
            keep_last: self.keep_last,
            seed: self.seed,
            tokenizer: self.tokenizer.clone(),
            val_fraction: self.val_fraction,
            activation: self.activation,
        }
    }
}

fn parse_activation(s: &str) -> Result<Activation, String> {
    Activation::from_hf_name(s).ok_or_else(|| format!("{s:?} is not gelu_new or gelu"))
}

/// The first of runs/NAME, runs/NAME-2, ... that holds no checkpoints.
fn default_out(preset: &str) -> PathBuf {
    let base = Path::new("runs");
    (1..)
        .map(|i| {
            if i == 1 {
                base.join(preset)
            } else {
                base.join(format!("{preset}-{i}"))
            }
        })
        .find(|p| checkpoint::step_dirs(p).is_empty())
        .unwrap_or_else(|| base.join(preset))
}

/// Runs `arlm train`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(ConfigOverrides::from_toml(&text).with_context(|| p.display().to_string())?)
        }
        None => None,
    };
    let preset = args
        .preset
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.preset.clone()));
    let flags = args.overrides();

    let (out, config) = if args.resume {
        let Some(out) = args.out.clone() else {
            bail!("--resume needs --out RUN_DIR (the run to continue)");
        };
        let Some((dir, state)) = checkpoint::latest(&out)? else {
            bail!("{} has no checkpoints to resume", out.display());
        };
        // Unless a preset or file says otherwise, start from the checkpoint's own config.
        let mut config = match &preset {
            Some(p) => TrainConfig::preset(p)?,
            None => state.config.clone(),
        };
        if let Some(f) = &file {
            config.apply(f);
        }
        config.apply(&flags);
        if !args.quiet {
            println!("resuming {} at step {}", dir.display(), state.step);
        }
        (out, config)
    } else {
        let name = preset.clone().unwrap_or_else(|| "default".into());
        let mut config = TrainConfig::preset(&name)?;
        if let Some(f) = &file {
            config.apply(f);
        }
        config.apply(&flags);
        let out = args.out.clone().unwrap_or_else(|| default_out(&name));
        arlm::outdir::check(&out, arlm::outdir::OutputKind::TrainRun, args.force)?;
        (out, config)
    };
    config.validate()?;

    let data = data::load_data(args.data.as_deref(), &config.tokenizer, config.val_fraction)?;
    // Before allocating the model: a context longer than the data fails fast.
    data.check_windows(config.block_size)?;
    let tok = data.tokenizer.as_ref();
    let (vocab, bos) = (tok.vocab_size(), tok.eot_token());
    match config.rnn.clone() {
        Some(spec) => {
            let (b, t) = (config.batch_size, config.block_size);
            let model = TrainableRnn::new(&spec, (b, t), config.dropout, vocab, bos, config.seed)?;
            run_trainer(&args, model, config, data, out)
        }
        None => {
            let model = TrainableGpt::new(&config, vocab, bos)?;
            run_trainer(&args, model, config, data, out)
        }
    }
}

/// Trains `model` (a fresh run, or the resumed one in `out`) and prints the summary.
fn run_trainer<M: Trainable>(
    args: &Args,
    model: M,
    config: TrainConfig,
    data: arlm::train::TrainData,
    out: PathBuf,
) -> anyhow::Result<()> {
    let is_synthetic = args.data.is_none();
    if args.resume && (args.init_weights.is_some() || args.batch_offsets.is_some()) {
        bail!("--init-weights and --batch-offsets start a new run; they do not go with --resume");
    }
    let mut trainer = if args.resume {
        Trainer::resume(model, config, data, out.clone())?
    } else {
        Trainer::new(model, config, data, Some(out.clone()))?
    };
    if let Some(dir) = &args.init_weights {
        trainer
            .model
            .load_params(dir)
            .with_context(|| format!("--init-weights {}", dir.display()))?;
    }
    if let Some(path) = &args.batch_offsets {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --batch-offsets {}", path.display()))?;
        let (b, t) = (trainer.config.batch_size, trainer.config.block_size);
        let given = data::GivenBatches::parse(&text, path, b, t, trainer.data.train.len())?;
        trainer.use_given_batches(given)?;
    }
    for note in &trainer.notes {
        eprintln!("arlm: note: {note}");
    }
    let c = &trainer.config;
    if !args.quiet {
        println!(
            "training {} on {} ({} train / {} val tokens, tokenizer {} {}), {} steps of {} tokens -> {}",
            trainer.model.describe(),
            trainer.data.source,
            trainer.data.train.len(),
            trainer.data.val.len(),
            trainer.data.tokenizer.kind(),
            trainer.data.tokenizer.fingerprint(),
            c.steps,
            c.tokens_per_step(),
            out.display()
        );
    }
    let summary = trainer.run(&RunOptions {
        stop_at: args.stop_at,
        progress: true,
        quiet: args.quiet,
    })?;
    let bits = trainer
        .data
        .val_tokens_per_byte()
        .map(|tpb| summary.val_loss as f64 / std::f64::consts::LN_2 * tpb);
    println!(
        "done: {} steps in {:.1}s ({:.0} tok/s); val loss {:.4} nats/token{} (best {:.4}); run dir {}",
        summary.steps,
        summary.elapsed_s,
        summary.tokens_per_s,
        summary.val_loss,
        bits.map(|b| format!(", {b:.4} bits/byte")).unwrap_or_default(),
        summary.best_val,
        out.display()
    );
    let (all, n) = trainer.evaluate_all(500)?;
    let all_bits = (n > 0)
        .then(|| trainer.data.val_tokens_per_byte())
        .flatten()
        .map(|tpb| all as f64 / std::f64::consts::LN_2 * tpb);
    if n > 0 {
        println!(
            "val loss over {n} validation tokens (consecutive windows): {all:.4} nats/token{}",
            all_bits
                .map(|b| format!(", {b:.4} bits/byte"))
                .unwrap_or_default()
        );
    }
    if is_synthetic && trainer.data.tokenizer.kind() == "bytes" {
        print_floor(all_bits.or(bits));
    }
    Ok(())
}

/// The synthetic corpus's known floor: its source's entropy rate (no model beats it in
/// expectation), beside what the run reached.
fn print_floor(bits: Option<f64>) {
    let floor = arlm::corpus::synth::SynthSource::new().entropy_rate_bits();
    match bits {
        Some(b) => println!(
            "floor: the synthetic source's entropy rate is {floor:.4} bits/byte; this model is \
             {:.4} bits/byte above it ({:.0}% over)",
            b - floor,
            100.0 * (b - floor) / floor
        ),
        None => println!("floor: the synthetic source's entropy rate is {floor:.4} bits/byte"),
    }
}
