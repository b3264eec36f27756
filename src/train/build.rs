//! Building the model a run trains: [`ModelSpec::build`], fresh or from a loaded model
//! directory (`--init-from`), as a boxed [`Trainable`] the loop drives.

use super::config::TrainConfig;
use super::gpt::TrainableGpt;
use super::rnn::TrainableRnn;
use super::spec::ModelSpec;
use super::trainable::Trainable;
use super::TrainError;
use crate::load::AnyModel;
use crate::model::ModelError;

/// A trained model to start a run from (`arlm train --init-from DIR`).
pub struct InitModel {
    /// The model as loaded from its directory.
    pub model: AnyModel,
    /// Where it came from (for messages).
    pub path: std::path::PathBuf,
}

impl ModelSpec {
    /// The model of `config` over `vocab_size` ids conditioned on `bos_token`, ready to
    /// train: freshly initialized from `config.seed`, or holding `init`'s weights (whose
    /// shape [`ModelSpec::of_model`] has already put into `config`).
    pub fn build(
        config: &TrainConfig,
        vocab_size: usize,
        bos_token: u32,
        init: Option<InitModel>,
    ) -> Result<Box<dyn Trainable>, TrainError> {
        let (b, t) = (config.batch_size, config.block_size);
        let mismatch = |init: &InitModel| {
            TrainError::Config(format!(
                "--init-from {}: the model is not a {} (the configured class)",
                init.path.display(),
                config.model.class_name()
            ))
        };
        Ok(match (&config.model, init) {
            (ModelSpec::Gpt(g), None) => {
                Box::new(TrainableGpt::new(g, config, vocab_size, bos_token)?)
            }
            (ModelSpec::Rnn(r), None) => {
                let m = TrainableRnn::new(
                    r,
                    (b, t),
                    config.dropout,
                    vocab_size,
                    bos_token,
                    config.seed,
                )?;
                Box::new(m)
            }
            (ModelSpec::Gpt(g), Some(init)) => match init.model {
                AnyModel::Gpt(mut m) => {
                    m.bos_token = bos_token;
                    Box::new(TrainableGpt::from_model(m, g, config)?)
                }
                _ => return Err(mismatch(&init)),
            },
            (ModelSpec::Rnn(_), Some(init)) => match init.model {
                AnyModel::Rnn(mut m) => {
                    m.bos_token = bos_token;
                    m.config.dropout = config.dropout;
                    Box::new(TrainableRnn::from_model(m, (b, t)))
                }
                _ => return Err(mismatch(&init)),
            },
        })
    }
}

impl<T: Trainable + ?Sized> Trainable for Box<T> {
    fn num_params(&self) -> usize {
        (**self).num_params()
    }
    fn params(&self) -> &[f32] {
        (**self).params()
    }
    fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        (**self).params_and_grads()
    }
    fn decay_mask(&self) -> Vec<bool> {
        (**self).decay_mask()
    }
    fn zero_grad(&mut self) {
        (**self).zero_grad()
    }
    fn forward_backward(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        seed: u64,
    ) -> Result<f32, ModelError> {
        (**self).forward_backward(inputs, targets, seed)
    }
    fn forward_loss(&mut self, inputs: &[u32], targets: &[u32]) -> Result<f32, ModelError> {
        (**self).forward_loss(inputs, targets)
    }
    fn save(&self, dir: &std::path::Path) -> Result<(), ModelError> {
        (**self).save(dir)
    }
    fn load_params(&mut self, dir: &std::path::Path) -> Result<(), ModelError> {
        (**self).load_params(dir)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn stateful(&self) -> bool {
        (**self).stateful()
    }
    fn reset_state(&mut self, eval: bool) {
        (**self).reset_state(eval)
    }
    fn carried_state(&self) -> Vec<f32> {
        (**self).carried_state()
    }
    fn set_carried_state(&mut self, state: &[f32]) -> Result<(), ModelError> {
        (**self).set_carried_state(state)
    }
}
