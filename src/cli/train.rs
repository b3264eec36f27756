//! `arlm train`: flags -> a [`TrainConfig`] (preset, then TOML file, then flags), data,
//! the model ([`ModelSpec::build`]: fresh, or `--init-from` a model directory), and the
//! library's training loop.

use anyhow::{bail, Context};
use arlm::model::gpt::Activation;
use arlm::train::{
    checkpoint, data, ConfigOverrides, InitModel, ModelSpec, RunOptions, TrainConfig, Trainable,
    Trainer,
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
    /// Starting configuration: tiny, default, shakespeare-char-cpu, shakespeare-char-fast,
    /// baby-shakespeare, gpt2-124m, tiny-lstm, ptb-lstm-small, ptb-gru-small, ptb-lstm-medium.
    #[arg(long)]
    preset: Option<String>,
    /// Start from the weights of this model directory (an arlm run or model, or a GPT-2
    /// saved by transformers) instead of a fresh init, with a fresh optimizer. The shape
    /// comes from the directory (shape flags must agree with it); its tokenizer.json
    /// tokenizes raw text, and a prepared --data must use the same tokenizer.
    #[arg(long, value_name = "DIR")]
    init_from: Option<PathBuf>,
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
    /// Model class: gpt, lstm, gru or rnn (tanh); see the presets for whole recipes.
    #[arg(long)]
    model: Option<String>,
    /// Layers (transformer blocks, or stacked recurrent layers).
    #[arg(long)]
    n_layer: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    n_head: Option<usize>,
    /// Embedding width.
    #[arg(long)]
    n_embd: Option<usize>,
    /// Hidden units per recurrent layer.
    #[arg(long)]
    hidden: Option<usize>,
    /// Embedding size of a recurrent model (0: same as --hidden).
    #[arg(long)]
    embd: Option<usize>,
    /// Tie a recurrent model's decoder to its embedding (needs embd = hidden).
    #[arg(long, value_name = "true|false")]
    tied: Option<bool>,
    /// Recurrent weight init: a range r (uniform in [-r, r]) or `torch` (PyTorch's).
    #[arg(long, value_name = "R|torch")]
    weight_init: Option<String>,
    /// Dropout probability.
    #[arg(long)]
    dropout: Option<f32>,
    /// Optimizer: adamw or sgd.
    #[arg(long, value_name = "adamw|sgd")]
    optimizer: Option<String>,
    /// Run length in epochs over the contiguous streams (recurrent models; 0: use --steps).
    #[arg(long)]
    epochs: Option<u64>,
    /// Per-epoch step decay: full rate for this many epochs (recurrent models).
    #[arg(long)]
    lr_decay_after_epoch: Option<u64>,
    /// Per-epoch step decay: multiply the rate by this each later epoch (0.5: halve).
    #[arg(long)]
    lr_decay_factor: Option<f32>,
    /// Multiply the rate by this after each evaluation that does not improve on the best
    /// validation loss (0.25 as PyTorch's word_language_model; 1: off).
    #[arg(long)]
    lr_plateau: Option<f32>,
    /// Gradient of the loss summed over the T steps (Zaremba et al.'s scale) instead of
    /// the per-token mean.
    #[arg(long, value_name = "true|false")]
    loss_sum_over_time: Option<bool>,
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
    fn overrides(&self) -> anyhow::Result<ConfigOverrides> {
        let optimizer = match self.optimizer.as_deref() {
            None => None,
            Some("adamw") => Some(arlm::train::config::Optimizer::AdamW),
            Some("sgd") => Some(arlm::train::config::Optimizer::Sgd),
            Some(o) => bail!("--optimizer {o:?}: expected adamw or sgd"),
        };
        Ok(ConfigOverrides {
            preset: None,
            model: self.model.clone(),
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            bias: self.bias,
            hidden: self.hidden,
            embd: self.embd,
            tied: self.tied,
            init: self.weight_init.clone(),
            block_size: self.block_size,
            dropout: self.dropout,
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
            optimizer,
            epochs: self.epochs,
            lr_decay_after_epoch: self.lr_decay_after_epoch,
            lr_decay_factor: self.lr_decay_factor,
            lr_plateau: self.lr_plateau,
            loss_sum_over_time: self.loss_sum_over_time,
            activation: self.activation,
        })
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
    let flags = args.overrides()?;
    if args.resume && args.init_from.is_some() {
        bail!("--init-from starts a new run; --resume continues one (pass one of them)");
    }

    let (out, config, init) = if args.resume {
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
            config.apply(f).with_context(|| config_source(&args))?;
        }
        config.apply(&flags)?;
        if !args.quiet {
            println!("resuming {} at step {}", dir.display(), state.step);
        }
        // The checkpoint's model fixes the shape the weights are loaded into (a model
        // started --init-from keeps its directory's context length). If it does not
        // open, a fresh model of the config's shape is built and the resume skips the
        // damaged checkpoint as usual.
        let init = open_init(&dir).ok();
        (out, config, init)
    } else {
        let name = preset.clone().unwrap_or_else(|| "default".into());
        let mut config = TrainConfig::preset(&name)?;
        if let Some(f) = &file {
            config.apply(f).with_context(|| config_source(&args))?;
        }
        config.apply(&flags)?;
        let init = match &args.init_from {
            Some(dir) => {
                let init = open_init(dir)?;
                let mut explicit = TrainConfig::shape_fields(&flags);
                if let Some(f) = &file {
                    explicit.extend(TrainConfig::shape_fields(f));
                }
                if flags.block_size.is_some()
                    || file.as_ref().is_some_and(|f| f.block_size.is_some())
                {
                    explicit.push("block_size");
                }
                let tokenizer_set = flags.tokenizer.is_some()
                    || file.as_ref().is_some_and(|f| f.tokenizer.is_some());
                adopt_init(&mut config, &init, &explicit, tokenizer_set)?;
                Some(init)
            }
            None => None,
        };
        let out = args.out.clone().unwrap_or_else(|| default_out(&name));
        arlm::outdir::check(&out, arlm::outdir::OutputKind::TrainRun, args.force)?;
        (out, config, init)
    };
    config.validate()?;

    let data = data::load_data(args.data.as_deref(), &config.tokenizer, config.val_fraction)?;
    // Before allocating the model: a context longer than the data fails fast.
    data.check_windows(config.block_size)?;
    let tok = data.tokenizer.as_ref();
    if let (Some(init), Some(dir)) = (&init, &args.init_from) {
        let (want, got) = (init.tokenizer.fingerprint(), tok.fingerprint());
        if want != got || init.tokenizer.kind() != tok.kind() {
            bail!(
                "--init-from {}: the model's tokenizer ({} {want}) is not the data's ({} {got}); \
                 prepare the data with the model's tokenizer.json",
                dir.display(),
                init.tokenizer.kind(),
                tok.kind()
            );
        }
    }
    let (vocab, bos) = (tok.vocab_size(), tok.eot_token());
    let init = init.map(|i| InitModel {
        model: i.model,
        path: i.path,
    });
    let model = ModelSpec::build(&config, vocab, bos, init)?;
    run_trainer(&args, model, config, data, out)
}

/// Which file a TOML error came from.
fn config_source(args: &Args) -> String {
    args.config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Opens an `--init-from` directory (or a checkpoint being resumed) through the model
/// registry.
fn open_init(dir: &Path) -> anyhow::Result<arlm::load::LoadedModel> {
    arlm::load::load(dir).with_context(|| format!("--init-from {}", dir.display()))
}

/// Puts the shape of `init`'s model into `config` (refusing another class, or shape
/// fields in `explicit` that disagree), clamps a preset's context to the model's, and
/// makes the model's tokenizer.json the raw-text tokenizer unless one was chosen.
fn adopt_init(
    config: &mut TrainConfig,
    init: &arlm::load::LoadedModel,
    explicit: &[&str],
    tokenizer_set: bool,
) -> anyhow::Result<()> {
    let dir = init.path.display();
    let mut spec = ModelSpec::of_model(&init.model, &init.path)?;
    match (&mut spec, &config.model) {
        // All-zero biases fit either setting (learned, or held at zero): the config decides.
        (ModelSpec::Gpt(have), ModelSpec::Gpt(want)) => have.bias |= want.bias,
        // The init scheme is not used (the weights are loaded); the config's is recorded.
        (ModelSpec::Rnn(have), ModelSpec::Rnn(want)) => have.init = want.init,
        _ => {}
    }
    if spec.is_recurrent() != config.model.is_recurrent() {
        bail!(
            "--init-from {dir}: the directory holds a {} but the configuration trains a {} \
             (choose a preset of the same class, or --model {})",
            spec.class_name(),
            config.model.class_name(),
            spec.class_name()
        );
    }
    let conflicts: Vec<String> = config
        .model
        .differences(&spec)
        .into_iter()
        .filter(|d| {
            explicit.iter().any(|f| d.starts_with(&format!("{f}:"))) || d.starts_with("cell:")
        })
        .collect();
    if !conflicts.is_empty() {
        bail!(
            "--init-from {dir}: the model's shape conflicts with the given settings ({}: \
             given -> the model's); drop those flags to take the model's shape",
            conflicts.join("; ")
        );
    }
    config.model = spec;
    if let arlm::load::AnyModel::Gpt(g) = &init.model {
        let context = g.config.block_size;
        if config.block_size > context {
            if explicit.contains(&"block_size") {
                bail!(
                    "--init-from {dir}: --block-size {} exceeds the model's context of {context}",
                    config.block_size
                );
            }
            config.block_size = context;
        }
    }
    if !tokenizer_set && config.tokenizer == "auto" {
        config.tokenizer = init.path.join("tokenizer.json").display().to_string();
    }
    Ok(())
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
