//! Maximum-likelihood training by teacher forcing: batches, AdamW, schedules, checkpoints,
//! the training loop.
//!
//! # Design
//! [`Trainer`] is generic over [`Trainable`] (flat parameters + gradients, a
//! forward+backward and a forward-only pass), so the loop is tested on a bigram model
//! ([`trainable::Bigram`]) with exact gradients and runs the GPT unchanged. One optimizer
//! step is:
//!
//! 1. learning rate from the schedule ([`TrainConfig::lr_at`]: warmup + cosine);
//! 2. `grad_accum` micro-batches of B random windows of T+1 tokens ([`data`]), each
//!    adding its gradient (dropout seeded from the run's RNG);
//! 3. mean loss; a NaN/inf loss or gradient norm stops the run with
//!    [`TrainError::NonFinite`] before the weights are touched;
//! 4. gradients scaled by 1/`grad_accum` and clipped to `grad_clip` global norm;
//! 5. AdamW ([`crate::ops::adamw`]) or momentum-free SGD ([`crate::ops::Sgd`]), weight
//!    decay on matrices only ([`Trainable::decay_mask`]).
//!
//! # Determinism and resume
//! All randomness comes from one SplitMix64 state ([`data::Rng`]) seeded by `seed`; it
//! is saved in every checkpoint with the AdamW moments and the step, and the weights are
//! stored as exact f32. So a run stopped at step k and resumed gives the same losses and
//! weights, bit for bit, as one that never stopped (tests/it/train_resume.rs), provided the
//! model's kernels are deterministic (the GPT's are: fixed work splits, no atomics).
//!
//! Evaluation uses a fixed set of validation windows (drawn from a separate RNG seeded
//! from `seed`), so successive evaluations are comparable and do not disturb training.

pub mod build;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod gpt;
pub mod metrics;
pub mod rnn;
pub mod spec;
pub mod trainable;

pub use build::InitModel;
pub use config::{ConfigOverrides, TrainConfig};
pub use data::TrainData;
pub use gpt::TrainableGpt;
pub use rnn::{RnnSpec, TrainableRnn};
pub use spec::{GptSpec, ModelSpec};
pub use trainable::Trainable;

use crate::ops::AdamW;
use checkpoint::TrainState;
use data::Rng;
use metrics::Record;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Errors from configuring, running or resuming training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training configuration: {0}")]
    Config(String),
    #[error("training data: {0}")]
    Data(String),
    #[error(
        "training diverged: the {what} became {value} at step {step}; stopped without \
         writing those weights ({kept})"
    )]
    NonFinite {
        what: &'static str,
        value: String,
        step: u64,
        kept: String,
    },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plotting the loss curve: {0}")]
    Plot(String),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    TokenData(#[from] crate::data::DataError),
    #[error(transparent)]
    OutputDir(#[from] crate::outdir::OutputDirError),
}

/// Removes what killed arlm processes left in a run directory and its `checkpoints/`
/// (see [`crate::outdir::remove_stale_temps`]); returns one note per removal.
fn remove_stale_temps(out: &Path) -> Result<Vec<String>, TrainError> {
    let mut removed = crate::outdir::remove_stale_temps(out)?;
    removed.extend(crate::outdir::remove_stale_temps(&out.join("checkpoints"))?);
    Ok(removed
        .iter()
        .map(|p| {
            format!(
                "removed {}, left by a process that no longer runs",
                p.display()
            )
        })
        .collect())
}

/// How [`Trainer::run`] reports progress and when it stops.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop (with a checkpoint) after this step even if the config has more steps.
    pub stop_at: Option<u64>,
    /// Show an indicatif progress bar (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Print nothing (no eval log lines).
    pub quiet: bool,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Optimizer updates done.
    pub steps: u64,
    /// Mean training loss over the last evaluation interval.
    pub train_loss: f32,
    /// Validation loss at the end.
    pub val_loss: f32,
    /// Best validation loss of the run.
    pub best_val: f32,
    /// Wall time of the whole run, resumed parts included (seconds).
    pub elapsed_s: f64,
    /// Training tokens per second over this invocation.
    pub tokens_per_s: f64,
}

/// The training loop for one model on one dataset, optionally writing a run directory.
pub struct Trainer<M: Trainable> {
    /// The model being trained.
    pub model: M,
    /// The run's configuration.
    pub config: TrainConfig,
    /// Train/val tokens and the tokenizer.
    pub data: TrainData,
    opt: AdamW,
    decay: Vec<bool>,
    rng: Rng,
    step: u64,
    tokens_seen: u64,
    best_val: Option<f32>,
    train_loss_acc: (f64, u64),
    elapsed_before: f64,
    started: Instant,
    out: Option<PathBuf>,
    records: Vec<Record>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    window: Vec<u32>,
    last_grad_norm: f32,
    /// Product of the `lr_plateau` decays so far (1 without them).
    lr_scale: f64,
    /// Batches per epoch of the contiguous streams (stateful models only).
    steps_per_epoch: Option<u64>,
    /// The step and loss of the last validation, so a checkpoint at that step reuses it.
    last_val: Option<(u64, f32)>,
    /// The newest checkpoint known to be good: written by this trainer or resumed from.
    last_good: Option<PathBuf>,
    /// Things the caller should tell the user: stale temporary files removed, damaged
    /// checkpoints skipped by a resume.
    pub notes: Vec<String>,
    /// Batch offsets given from outside instead of the sampler (a testing hook).
    given: Option<data::GivenBatches>,
}

impl<M: Trainable> Trainer<M> {
    /// A fresh run. With `out`, the run directory is created (it must not already hold
    /// checkpoints: resume those with [`Trainer::resume`]).
    pub fn new(
        model: M,
        config: TrainConfig,
        data: TrainData,
        out: Option<PathBuf>,
    ) -> Result<Trainer<M>, TrainError> {
        let mut config = config;
        let steps_per_epoch = resolve_epochs(&model, &mut config, &data)?;
        config.validate()?;
        data.check_windows(config.block_size)?;
        let mut notes = Vec::new();
        if let Some(out) = &out {
            if !checkpoint::step_dirs(out).is_empty() {
                return Err(TrainError::Config(format!(
                    "{} already holds checkpoints: pass --resume to continue that run, or \
                     choose another --out",
                    out.display()
                )));
            }
            std::fs::create_dir_all(out).map_err(|source| TrainError::Io {
                path: out.clone(),
                source,
            })?;
            notes = remove_stale_temps(out)?;
            metrics::write_jsonl(&out.join("metrics.jsonl"), &[])?;
        }
        let n = model.num_params();
        let (b, t) = (config.batch_size, config.block_size);
        Ok(Trainer {
            opt: AdamW::new(
                n,
                config.beta1,
                config.beta2,
                config.eps,
                config.weight_decay,
            ),
            decay: model.decay_mask(),
            rng: Rng::new(config.seed),
            step: 0,
            tokens_seen: 0,
            best_val: None,
            train_loss_acc: (0.0, 0),
            elapsed_before: 0.0,
            started: Instant::now(),
            out,
            records: Vec::new(),
            inputs: vec![0; b * t],
            targets: vec![0; b * t],
            window: Vec::with_capacity(t + 1),
            last_grad_norm: 0.0,
            lr_scale: 1.0,
            steps_per_epoch,
            last_val: None,
            last_good: None,
            notes,
            given: None,
            model,
            config,
            data,
        })
    }

    /// Continues the run in `out` from its latest checkpoint. `model` must be built from
    /// `config`, which must equal the checkpoint's (up to evaluation/checkpoint cadence);
    /// the data's tokenizer and size must match too. Refused with the differences listed.
    pub fn resume(
        model: M,
        config: TrainConfig,
        data: TrainData,
        out: PathBuf,
    ) -> Result<Trainer<M>, TrainError> {
        let mut notes = remove_stale_temps(&out)?;
        let mut model = model;
        let mut config = config;
        let steps_per_epoch = resolve_epochs(&model, &mut config, &data)?;
        let n = model.num_params();
        let (b, t) = (config.batch_size, config.block_size);
        let mut opt = AdamW::new(
            n,
            config.beta1,
            config.beta2,
            config.eps,
            config.weight_decay,
        );
        // Newest first; a damaged checkpoint (killed mid-copy, edited, an empty stray
        // directory) is skipped with a note, but a checkpoint of another configuration
        // or data is a user error, not damage, and stops the resume.
        let mut found = None;
        for (_, dir) in checkpoint::step_dirs(&out).into_iter().rev() {
            let attempt = checkpoint::read_state(&dir).and_then(|state| {
                check_compatible(&state, &config, &data, n)?;
                model.load_params(&dir)?;
                model.set_carried_state(&state.carried_state)?;
                checkpoint::read_optimizer(&dir.join("optimizer.bin"), &mut opt)?;
                Ok(state)
            });
            match attempt {
                Ok(state) => {
                    found = Some((dir, state));
                    break;
                }
                Err(e @ TrainError::Resume(_)) => return Err(e),
                Err(e) => notes.push(format!(
                    "skipped the damaged checkpoint {}: {}",
                    dir.display(),
                    crate::error_chain(&e)
                )),
            }
        }
        let Some((last_good, state)) = found else {
            let why = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join("; "))
            };
            return Err(TrainError::Resume(format!(
                "{} has no intact checkpoint to resume{why}",
                out.display()
            )));
        };
        // Metrics after the checkpoint belong to the abandoned continuation: drop them.
        let mpath = out.join("metrics.jsonl");
        let mut records = metrics::read_jsonl(&mpath)?;
        records.retain(|r| r.step() <= state.step);
        metrics::write_jsonl(&mpath, &records)?;
        Ok(Trainer {
            opt,
            decay: model.decay_mask(),
            rng: Rng {
                state: state.rng_state,
            },
            step: state.step,
            tokens_seen: state.tokens_seen,
            best_val: state.best_val,
            train_loss_acc: state.train_loss_acc,
            elapsed_before: state.elapsed_s,
            started: Instant::now(),
            out: Some(out),
            records,
            inputs: vec![0; b * t],
            targets: vec![0; b * t],
            window: Vec::with_capacity(t + 1),
            last_grad_norm: 0.0,
            lr_scale: state.lr_scale,
            steps_per_epoch,
            last_val: None,
            last_good: Some(last_good),
            notes,
            given: None,
            model,
            config,
            data,
        })
    }

    /// Learning rate of the next update: the per-epoch step decay when the config has
    /// one (stateful models), else warmup + cosine ([`TrainConfig::lr_at`]); times the
    /// `lr_plateau` decays so far.
    pub fn lr_now(&self) -> f32 {
        self.lr_of_step(self.step)
    }

    /// [`Self::lr_now`] for the update that follows `step` steps.
    fn lr_of_step(&self, step: u64) -> f32 {
        let lr = match (self.config.lr_step_decay, self.steps_per_epoch) {
            (Some(d), Some(spe)) => {
                let epoch = step / spe;
                let k = (epoch + 1).saturating_sub(d.after_epoch);
                (self.config.lr as f64 * (d.factor as f64).powi(k as i32)) as f32
            }
            _ => self.config.lr_at(step),
        };
        if self.lr_scale == 1.0 {
            lr
        } else {
            (lr as f64 * self.lr_scale) as f32
        }
    }

    /// Trains on these batches instead of sampling windows (a testing hook for
    /// step-by-step comparisons with a peer; random-window models only).
    pub fn use_given_batches(&mut self, given: data::GivenBatches) -> Result<(), TrainError> {
        if self.steps_per_epoch.is_some() {
            return Err(TrainError::Config(
                "given batch offsets need a random-window model (not a recurrent one)".into(),
            ));
        }
        self.given = Some(given);
        Ok(())
    }

    /// Optimizer updates done so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The run directory, if any.
    pub fn out(&self) -> Option<&Path> {
        self.out.as_deref()
    }

    /// The metrics recorded so far (also in `metrics.jsonl`).
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    fn kept_message(&self) -> String {
        match &self.last_good {
            Some(d) => format!("the last good checkpoint is {}", d.display()),
            None => "no checkpoint was written yet".into(),
        }
    }

    /// One optimizer update; returns the mean training loss of its batch(es).
    pub fn train_step(&mut self) -> Result<f32, TrainError> {
        let c = &self.config;
        let (b, t, accum) = (c.batch_size, c.block_size, c.grad_accum);
        let lr = self.lr_now();
        self.model.zero_grad();
        let mut loss_sum = 0f64;
        for micro in 0..accum {
            if let Some(given) = &self.given {
                let k = self.step as usize * accum + micro;
                let (i, tg, w) = (&mut self.inputs, &mut self.targets, &mut self.window);
                if !given.fill(k, &self.data.train, t, i, tg, w) {
                    return Err(TrainError::Data(format!(
                        "the given batch offsets hold {} micro-batches; step {} needs more",
                        given.len(),
                        self.step + 1
                    )));
                }
            } else if let Some(spe) = self.steps_per_epoch {
                // Truncated BPTT: batch k of the epoch continues batch k-1's streams.
                let k = self.step % spe;
                if k == 0 {
                    self.model.reset_state(false);
                }
                let (i, tg, w) = (&mut self.inputs, &mut self.targets, &mut self.window);
                self.data.train.stream_batch(b, t, k as usize, i, tg, w);
            } else {
                self.data.train.sample_batch(
                    &mut self.rng,
                    b,
                    t,
                    &mut self.inputs,
                    &mut self.targets,
                    &mut self.window,
                );
            }
            let seed = self.rng.next_u64();
            let loss = match self
                .model
                .forward_backward(&self.inputs, &self.targets, seed)
            {
                Err(crate::model::ModelError::NonFinite(what)) => {
                    return Err(TrainError::NonFinite {
                        what: "training loss",
                        value: what,
                        step: self.step + 1,
                        kept: self.kept_message(),
                    })
                }
                r => r?,
            };
            loss_sum += loss as f64;
        }
        let loss = (loss_sum / accum as f64) as f32;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                what: "training loss",
                value: loss.to_string(),
                step: self.step + 1,
                kept: self.kept_message(),
            });
        }
        let (params, grads) = self.model.params_and_grads();
        let sq = crate::ops::norm::sum_of_squares(grads);
        // The gradient of the loss summed over T (Zaremba's scale) is T times the mean's.
        let time_sum = if c.loss_sum_over_time { t as f64 } else { 1.0 };
        let norm = sq.sqrt() / accum as f64 * time_sum;
        if !norm.is_finite() {
            return Err(TrainError::NonFinite {
                what: "gradient norm",
                value: norm.to_string(),
                step: self.step + 1,
                kept: self.kept_message(),
            });
        }
        let mut scale = time_sum / accum as f64;
        if c.grad_clip > 0.0 && norm > c.grad_clip as f64 {
            scale *= c.grad_clip as f64 / norm;
        }
        match c.optimizer {
            // Scaled inside the update (same bits as scaling a copy, one pass fewer).
            config::Optimizer::AdamW => {
                self.opt
                    .step_scaled(params, grads, scale as f32, &self.decay, lr)
            }
            // Momentum-free: no state to keep between steps or in checkpoints.
            config::Optimizer::Sgd => crate::ops::Sgd::new(params.len(), 0.0, c.weight_decay)
                .step_scaled(params, grads, scale as f32, &self.decay, lr),
        }
        self.step += 1;
        self.tokens_seen += self.config.tokens_per_step() as u64;
        self.train_loss_acc.0 += loss as f64;
        self.train_loss_acc.1 += 1;
        self.last_grad_norm = norm as f32;
        let rec = Record::Train {
            step: self.step,
            loss,
            lr,
            grad_norm: norm as f32,
            tokens: self.tokens_seen,
            elapsed_s: self.elapsed(),
        };
        self.record(rec)?;
        Ok(loss)
    }

    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    fn record(&mut self, rec: Record) -> Result<(), TrainError> {
        if let Some(out) = &self.out {
            metrics::append_jsonl(&out.join("metrics.jsonl"), &rec)?;
        }
        self.records.push(rec);
        Ok(())
    }

    /// Mean loss over the fixed validation windows (`eval_batches` batches); for a
    /// stateful model, over the first `eval_batches` batches of the validation split cut
    /// into B contiguous streams, the state carried (reset first).
    pub fn evaluate(&mut self) -> Result<f32, TrainError> {
        let (b, t) = (self.config.batch_size, self.config.block_size);
        if self.steps_per_epoch.is_some() {
            self.model.reset_state(true);
            let n = self
                .data
                .val
                .stream_batches(b, t)
                .min(self.config.eval_batches);
            let mut sum = 0f64;
            for k in 0..n {
                let (i, tg, w) = (&mut self.inputs, &mut self.targets, &mut self.window);
                self.data.val.stream_batch(b, t, k, i, tg, w);
                sum += self.model.forward_loss(&self.inputs, &self.targets)? as f64;
            }
            let val = (sum / n.max(1) as f64) as f32;
            return self.finite_val(val);
        }
        let mut rng = Rng::new(self.config.seed ^ 0x00E7_A1E7_A1E7_A1E7);
        let mut sum = 0f64;
        for _ in 0..self.config.eval_batches {
            self.data.val.sample_batch(
                &mut rng,
                b,
                t,
                &mut self.inputs,
                &mut self.targets,
                &mut self.window,
            );
            sum += self.model.forward_loss(&self.inputs, &self.targets)? as f64;
        }
        let val = (sum / self.config.eval_batches as f64) as f32;
        self.finite_val(val)
    }

    fn finite_val(&self, val: f32) -> Result<f32, TrainError> {
        if !val.is_finite() {
            return Err(TrainError::NonFinite {
                what: "validation loss",
                value: val.to_string(),
                step: self.step,
                kept: self.kept_message(),
            });
        }
        Ok(val)
    }

    /// Mean loss over the validation split in consecutive non-overlapping windows of T
    /// (whole batches only, at most `max_batches`): a low-noise figure for reports.
    /// Returns the loss and the number of tokens scored.
    pub fn evaluate_all(&mut self, max_batches: usize) -> Result<(f32, usize), TrainError> {
        let (b, t) = (self.config.batch_size, self.config.block_size);
        if self.steps_per_epoch.is_some() {
            let n = self
                .data
                .val
                .stream_batches(b, t)
                .min(self.config.eval_batches);
            return Ok((self.evaluate()?, n * b * t));
        }
        let windows = (self.data.val.len() - 1) / t;
        let batches = (windows / b).min(max_batches);
        let mut sum = 0f64;
        for k in 0..batches {
            for i in 0..b {
                let start = (k * b + i) * t;
                self.window.resize(t + 1, 0);
                self.data.val.read_into(start, &mut self.window);
                self.inputs[i * t..(i + 1) * t].copy_from_slice(&self.window[..t]);
                self.targets[i * t..(i + 1) * t].copy_from_slice(&self.window[1..]);
            }
            sum += self.model.forward_loss(&self.inputs, &self.targets)? as f64;
        }
        if batches == 0 {
            return Ok((f32::NAN, 0));
        }
        Ok(((sum / batches as f64) as f32, batches * b * t))
    }

    fn state(&self) -> TrainState {
        TrainState {
            format: checkpoint::FORMAT,
            step: self.step,
            rng_state: self.rng.state,
            tokens_seen: self.tokens_seen,
            best_val: self.best_val,
            train_loss_acc: self.train_loss_acc,
            elapsed_s: self.elapsed(),
            config: self.config.clone(),
            tokenizer_kind: self.data.tokenizer.kind().to_string(),
            tokenizer_fingerprint: self.data.tokenizer.fingerprint(),
            data_source: self.data.source.clone(),
            train_tokens: self.data.train.len() as u64,
            num_params: self.model.num_params(),
            carried_state: self.model.carried_state(),
            lr_scale: self.lr_scale,
        }
    }

    /// Refuses to checkpoint weights that are not finite or whose loss is not: a
    /// checkpoint on disk is always one a resume or a user can start from. The loss is
    /// this step's validation loss when there is one, else the loss of one fixed
    /// validation batch (no RNG is touched, so the run's bits do not change). A loss
    /// above 100 ln V (a hundred times the uniform model's) counts as diverged too: an
    /// update that large has left the weights finite but meaningless.
    fn check_weights_are_good(&mut self) -> Result<(), TrainError> {
        let step = self.step;
        if let Some(i) = self.model.params().iter().position(|x| !x.is_finite()) {
            return Err(TrainError::NonFinite {
                what: "weights",
                value: format!("{} (parameter {i})", self.model.params()[i]),
                step,
                kept: self.kept_message(),
            });
        }
        let loss = match self.last_val {
            Some((s, v)) if s == step => v,
            _ => {
                let (b, t) = (self.config.batch_size, self.config.block_size);
                let mut rng = Rng::new(self.config.seed ^ 0x00E7_A1E7_A1E7_A1E7);
                self.data.val.sample_batch(
                    &mut rng,
                    b,
                    t,
                    &mut self.inputs,
                    &mut self.targets,
                    &mut self.window,
                );
                self.model.forward_loss(&self.inputs, &self.targets)?
            }
        };
        let limit = 100.0 * (self.data.tokenizer.vocab_size().max(2) as f32).ln();
        if !loss.is_finite() || loss > limit {
            return Err(TrainError::NonFinite {
                what: "loss of the updated weights",
                value: if loss.is_finite() {
                    format!("{loss} nats/token (over 100 ln V = {limit:.0})")
                } else {
                    loss.to_string()
                },
                step,
                kept: self.kept_message(),
            });
        }
        Ok(())
    }

    /// Writes `checkpoints/step-N` (pruning old ones) and the top-level model files.
    pub fn save_checkpoint(&mut self) -> Result<(), TrainError> {
        let Some(out) = self.out.clone() else {
            return Ok(());
        };
        self.check_weights_are_good()?;
        let state = self.state();
        let dir = out.join("checkpoints").join(format!("step-{}", self.step));
        checkpoint::write_checkpoint(
            &dir,
            &self.model,
            self.data.tokenizer.as_ref(),
            &self.opt,
            &state,
        )?;
        self.last_good = Some(dir);
        checkpoint::prune(&out, self.config.keep_last)?;
        self.model.save(&out)?;
        let context = Some(self.config.block_size);
        crate::tokenizer::save_in_model_dir(self.data.tokenizer.as_ref(), &out, context)?;
        Ok(())
    }

    fn save_best(&mut self) -> Result<(), TrainError> {
        let Some(out) = self.out.clone() else {
            return Ok(());
        };
        self.check_weights_are_good()?;
        let state = self.state();
        checkpoint::write_checkpoint(
            &out.join("checkpoints").join("best"),
            &self.model,
            self.data.tokenizer.as_ref(),
            &self.opt,
            &state,
        )
    }

    /// Evaluates, logs an eval record, keeps `best/` and redraws the loss curve.
    fn eval_and_log(&mut self) -> Result<(f32, f32), TrainError> {
        let val = self.evaluate()?;
        let (s, n) = self.train_loss_acc;
        let train = if n > 0 {
            (s / n as f64) as f32
        } else {
            f32::NAN
        };
        self.train_loss_acc = (0.0, 0);
        self.last_val = Some((self.step, val));
        let improved = self.best_val.is_none_or(|b| val < b);
        if improved {
            self.best_val = Some(val);
        } else if let Some(f) = self.config.lr_plateau {
            self.lr_scale *= f as f64;
        }
        let rec = Record::Eval {
            step: self.step,
            val_loss: val,
            train_loss: train,
            elapsed_s: self.elapsed(),
        };
        self.record(rec)?;
        if improved {
            self.save_best()?;
        }
        if let Some(out) = self.out.clone() {
            let title = format!("{} ({})", self.model.describe(), self.data.source);
            // A missing font or an unwritable plot is not worth stopping a run for.
            let _ = metrics::plot_losses(&out, &self.records, &title);
        }
        Ok((train, val))
    }

    /// Trains to `config.steps` (or `opts.stop_at`): evaluates every `eval_every` steps
    /// and at the end, checkpoints every `checkpoint_every` steps and at the end.
    pub fn run(&mut self, opts: &RunOptions) -> Result<TrainSummary, TrainError> {
        let end = opts
            .stop_at
            .map_or(self.config.steps, |s| s.min(self.config.steps));
        let start_step = self.step;
        let t0 = Instant::now();
        let pb = if opts.progress && !opts.quiet {
            indicatif::ProgressBar::new(self.config.steps)
        } else {
            indicatif::ProgressBar::hidden()
        };
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb.set_position(self.step);
        let say = |pb: &indicatif::ProgressBar, line: String| {
            if opts.quiet {
            } else if pb.is_hidden() {
                println!("{line}");
            } else {
                pb.println(line);
            }
        };
        let mut last = (f32::NAN, f32::NAN);
        let mut ema: Option<f32> = None;
        while self.step < end {
            let loss = self.train_step()?;
            let e = ema.map_or(loss, |e| 0.9 * e + 0.1 * loss);
            ema = Some(e);
            let done = (self.step - start_step) as f64;
            let tps = done * self.config.tokens_per_step() as f64 / t0.elapsed().as_secs_f64();
            pb.set_position(self.step);
            pb.set_message(format!("loss {e:.4}  {tps:.0} tok/s"));
            let last_step = self.step == end;
            // Evaluating at an early stop would change the eval records (and best/) of a
            // run that is resumed later, so only the schedule's steps evaluate.
            if self.step.is_multiple_of(self.config.eval_every) || self.step == self.config.steps {
                let (train, val) = self.eval_and_log()?;
                last = (train, val);
                say(
                    &pb,
                    format!(
                        "step {:>6}  train {:.4}  val {:.4}  lr {:.2e}  {:.0} tok/s  {:.1}s",
                        self.step,
                        train,
                        val,
                        self.lr_of_step(self.step.saturating_sub(1)),
                        tps,
                        self.elapsed()
                    ),
                );
            }
            if self.step.is_multiple_of(self.config.checkpoint_every) || last_step {
                self.save_checkpoint()?;
            }
        }
        pb.finish_and_clear();
        if last.1.is_nan()
            || self.step != self.config.steps && !self.step.is_multiple_of(self.config.eval_every)
        {
            // No evaluation at this step (stopped early, or nothing to do): report a fresh one.
            last.1 = self.evaluate()?;
        }
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        Ok(TrainSummary {
            steps: self.step,
            train_loss: last.0,
            val_loss: last.1,
            best_val: self.best_val.unwrap_or(last.1),
            elapsed_s: self.elapsed(),
            tokens_per_s: (self.step - start_step) as f64 * self.config.tokens_per_step() as f64
                / secs,
        })
    }
}

/// For a stateful model: the batches per epoch of its training streams (refusing data too
/// short for one batch of train or validation streams), and `steps` set from `epochs`.
fn resolve_epochs<M: Trainable>(
    model: &M,
    config: &mut TrainConfig,
    data: &TrainData,
) -> Result<Option<u64>, TrainError> {
    if !model.stateful() {
        return Ok(None);
    }
    let (b, t) = (config.batch_size, config.block_size);
    for (name, tokens) in [("training", &data.train), ("validation", &data.val)] {
        if tokens.stream_batches(b, t) == 0 {
            return Err(TrainError::Data(format!(
                "the {name} split of {} has {} tokens: too few for one batch of {b} streams \
                 of {t} + 1 tokens (use more data or a smaller --batch-size / --block-size)",
                data.source,
                tokens.len()
            )));
        }
    }
    let spe = data.train.stream_batches(b, t) as u64;
    if let Some(e) = config.epochs {
        config.steps = e * spe;
    }
    Ok(Some(spe))
}

/// Refuses a resume whose config, tokenizer, data or model size differ from the checkpoint's.
pub fn check_compatible(
    state: &TrainState,
    config: &TrainConfig,
    data: &TrainData,
    num_params: usize,
) -> Result<(), TrainError> {
    let diffs = state.config.differences(config);
    if !diffs.is_empty() {
        return Err(TrainError::Resume(format!(
            "the configuration differs from the checkpoint's ({}); resume with the \
             original settings or start a new --out",
            diffs.join("; ")
        )));
    }
    let fp = data.tokenizer.fingerprint();
    if state.tokenizer_fingerprint != fp || state.tokenizer_kind != data.tokenizer.kind() {
        return Err(TrainError::Resume(format!(
            "the checkpoint was trained with tokenizer {} {} but the data uses {} {}",
            state.tokenizer_kind,
            state.tokenizer_fingerprint,
            data.tokenizer.kind(),
            fp
        )));
    }
    if state.train_tokens != data.train.len() as u64 {
        return Err(TrainError::Resume(format!(
            "the checkpoint was trained on {} ({} training tokens) but the data is {} ({} tokens)",
            state.data_source,
            state.train_tokens,
            data.source,
            data.train.len()
        )));
    }
    if state.num_params != num_params {
        return Err(TrainError::Resume(format!(
            "the checkpoint has {} parameters, the model {num_params}",
            state.num_params
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
