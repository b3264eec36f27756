//! The recurrent models as a [`Trainable`]: truncated BPTT over contiguous streams.
//!
//! A [`TrainableRnn`] is stateful ([`Trainable::stateful`]): the loop feeds it the next T
//! tokens of each of B contiguous streams ([`super::data::Tokens::stream_batch`]), and it
//! carries the final (h, c) of one batch into the next, detached (no gradient crosses the
//! cut), as Zaremba et al. 2014 and PyTorch's `word_language_model` do. The state is reset
//! at the start of each epoch and saved in checkpoints so `--resume` is bit-exact.

use super::trainable::Trainable;
use crate::model::rnn::bptt::{forward, loss, Workspace};
use crate::model::rnn::split::{SplitStep, SPLIT_SHARDS};
use crate::model::rnn::{checkpoint, CellKind, InitScheme, Rnn, RnnConfig};
use crate::model::ModelError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The shape of a recurrent model to train ([`super::ModelSpec::Rnn`]); B, T and
/// dropout are the config's `batch_size`, `block_size` and `dropout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RnnSpec {
    /// `lstm`, `gru` or `rnn` (tanh).
    pub cell: CellKind,
    pub n_layer: usize,
    pub hidden: usize,
    /// Embedding size (default: `hidden`).
    pub embd: Option<usize>,
    /// Tie decoder.weight to encoder.weight (needs embd = hidden).
    #[serde(default)]
    pub tied: bool,
    /// Weight initialization.
    pub init: InitScheme,
}

impl RnnSpec {
    /// The model configuration over `vocab_size` ids.
    pub fn model_config(&self, vocab_size: usize, dropout: f32) -> RnnConfig {
        RnnConfig {
            kind: self.cell,
            n_layer: self.n_layer,
            hidden: self.hidden,
            embd: self.embd.unwrap_or(self.hidden),
            vocab_size,
            dropout,
            tied: self.tied,
        }
    }
}

/// An RNN being trained: weights, gradients, the (B, T) workspaces and the carried states.
pub struct TrainableRnn {
    pub model: Rnn<f32>,
    grads: Vec<f32>,
    /// `zero_grad` was called and `grads` not yet written: the next step overwrites them
    /// instead of adding (no memset of the parameters' size; same bits).
    grads_stale: bool,
    step: SplitStep<f32>,
    eval_ws: Workspace<f32>,
    /// (B * state_size) state carried between training batches, and between eval batches.
    state: Vec<f32>,
    eval_state: Vec<f32>,
}

impl TrainableRnn {
    /// A freshly initialized model for (`b`, `t`) batches.
    pub fn new(
        spec: &RnnSpec,
        (b, t): (usize, usize),
        dropout: f32,
        vocab_size: usize,
        bos_token: u32,
        seed: u64,
    ) -> Result<TrainableRnn, ModelError> {
        let cfg = spec.model_config(vocab_size, dropout);
        let mut model = Rnn::init(cfg, spec.init, seed)?;
        model.bos_token = bos_token;
        Ok(Self::from_model(model, (b, t)))
    }

    /// Trains `model` (freshly initialized, or loaded from a directory: `--init-from`)
    /// on (`b`, `t`) batches; its `config.dropout` is the training dropout.
    pub fn from_model(model: Rnn<f32>, (b, t): (usize, usize)) -> TrainableRnn {
        let cfg = model.config;
        TrainableRnn {
            grads: vec![0.0; model.num_params()],
            grads_stale: false,
            step: SplitStep::new(&cfg, b, t, SPLIT_SHARDS),
            eval_ws: Workspace::new(&cfg, b, t, false),
            state: vec![0.0; b * cfg.state_size()],
            eval_state: vec![0.0; b * cfg.state_size()],
            model,
        }
    }
}

fn finite(loss: f64) -> Result<f32, ModelError> {
    if loss.is_finite() {
        Ok(loss as f32)
    } else {
        Err(ModelError::NonFinite(loss.to_string()))
    }
}

impl Trainable for TrainableRnn {
    fn num_params(&self) -> usize {
        self.model.num_params()
    }
    fn params(&self) -> &[f32] {
        self.model.params()
    }
    fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        if std::mem::take(&mut self.grads_stale) {
            self.grads.fill(0.0);
        }
        (self.model.params_mut(), &self.grads)
    }
    fn decay_mask(&self) -> Vec<bool> {
        self.model.decay_mask()
    }
    fn zero_grad(&mut self) {
        self.grads_stale = true;
    }
    fn forward_backward(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        seed: u64,
    ) -> Result<f32, ModelError> {
        let cfg = self.model.config;
        let l = self.step.forward_backward(
            &cfg,
            self.model.params(),
            &mut self.grads,
            inputs,
            targets,
            &mut self.state,
            Some((cfg.dropout, seed)),
            std::mem::take(&mut self.grads_stale),
        )?;
        finite(l)
    }
    fn forward_loss(&mut self, inputs: &[u32], targets: &[u32]) -> Result<f32, ModelError> {
        let cfg = self.model.config;
        forward(
            &cfg,
            self.model.params(),
            &mut self.eval_ws,
            inputs,
            &self.eval_state,
            None,
        )?;
        let l = loss(&mut self.eval_ws, targets, cfg.vocab_size);
        self.eval_ws.final_state(&cfg, &mut self.eval_state);
        finite(l)
    }
    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        checkpoint::save(&self.model, dir)
    }
    fn load_params(&mut self, dir: &Path) -> Result<(), ModelError> {
        let m = checkpoint::load(dir)?;
        let dropout = self.model.config.dropout;
        if (crate::model::rnn::RnnConfig {
            dropout,
            ..m.config
        }) != self.model.config
        {
            return Err(ModelError::Format {
                path: dir.to_path_buf(),
                message: format!(
                    "saved model {:?} differs from the configured {:?}",
                    m.config, self.model.config
                ),
            });
        }
        self.model.params_mut().copy_from_slice(m.params());
        Ok(())
    }
    fn describe(&self) -> String {
        crate::model::LanguageModel::describe(&self.model)
    }
    fn stateful(&self) -> bool {
        true
    }
    fn reset_state(&mut self, eval: bool) {
        if eval {
            self.eval_state.fill(0.0);
        } else {
            self.state.fill(0.0);
        }
    }
    fn carried_state(&self) -> Vec<f32> {
        self.state.clone()
    }
    fn set_carried_state(&mut self, state: &[f32]) -> Result<(), ModelError> {
        if state.len() != self.state.len() {
            return Err(ModelError::InvalidConfig(format!(
                "carried state of {} floats, the model needs {}",
                state.len(),
                self.state.len()
            )));
        }
        self.state.copy_from_slice(state);
        Ok(())
    }
}
