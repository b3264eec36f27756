//! The GPT as a [`Trainable`]: the model plus its preallocated (B, T) trainer buffers.

use super::config::TrainConfig;
use super::spec::GptSpec;
use super::trainable::Trainable;
use crate::model::gpt::{Gpt, GptConfig, GptTrainer};
use crate::model::{LanguageModel, ModelError};
use std::ops::Range;
use std::path::Path;

/// A GPT being trained: weights ([`Gpt`]) and activations/gradients ([`GptTrainer`]) for
/// the run's batch shape, allocated once.
pub struct TrainableGpt {
    /// The model (its `bos_token` is the tokenizer's end-of-text).
    pub model: Gpt,
    trainer: GptTrainer,
    /// Parameter ranges held at their initial zeros (the biases, when `config.bias` is
    /// false): their gradients are zeroed after every backward pass, so AdamW never moves
    /// them and the gradient norm does not see them.
    frozen: Vec<Range<usize>>,
}

impl TrainableGpt {
    /// A freshly initialized GPT of shape `spec` for `config`'s context over
    /// `vocab_size` ids (GPT-2 init from `config.seed`), conditioned on `bos_token`.
    pub fn new(
        spec: &GptSpec,
        config: &TrainConfig,
        vocab_size: usize,
        bos_token: u32,
    ) -> Result<TrainableGpt, ModelError> {
        let gc = GptConfig {
            n_layer: spec.n_layer,
            n_head: spec.n_head,
            n_embd: spec.n_embd,
            block_size: config.block_size,
            vocab_size,
            dropout: config.dropout,
            activation: spec.activation,
        };
        gc.validate()?;
        check_memory(&gc, config)?;
        let mut model = Gpt::new(gc, config.seed)?;
        model.bos_token = bos_token;
        Ok(Self::wrap(model, spec, config))
    }

    /// Trains `model` (loaded from a directory: `--init-from`) with `config`'s batch
    /// shape. Its context (`n_positions`) stays; `config.block_size` must not exceed it.
    pub fn from_model(
        mut model: Gpt,
        spec: &GptSpec,
        config: &TrainConfig,
    ) -> Result<TrainableGpt, ModelError> {
        if config.block_size > model.config.block_size {
            return Err(ModelError::InvalidConfig(format!(
                "--block-size {} exceeds the model's context of {} positions",
                config.block_size, model.config.block_size
            )));
        }
        model.config.dropout = config.dropout;
        check_memory(&model.config, config)?;
        Ok(Self::wrap(model, spec, config))
    }

    fn wrap(model: Gpt, spec: &GptSpec, config: &TrainConfig) -> TrainableGpt {
        let trainer = GptTrainer::new(&model, config.batch_size, config.block_size);
        let gc = model.config;
        let frozen = if spec.bias {
            Vec::new()
        } else {
            gc.tensors()
                .into_iter()
                .filter(|t| t.name.ends_with(".bias"))
                .map(|t| t.offset..t.offset + t.len)
                .collect()
        };
        TrainableGpt {
            model,
            trainer,
            frozen,
        }
    }
}

fn check_memory(gc: &GptConfig, config: &TrainConfig) -> Result<(), ModelError> {
    crate::memory::check_fits(
        format!(
            "training with --batch-size {} --block-size {} --n-layer {} --n-embd {} \
             (weights, gradients, AdamW state and activations)",
            config.batch_size, config.block_size, gc.n_layer, gc.n_embd
        ),
        training_bytes(gc, config.batch_size),
    )?;
    Ok(())
}

/// A slight over-estimate of what training `gc` with batch `b` allocates: parameters,
/// gradients and AdamW's two moments (plus one more gradient buffer for a batch split),
/// per-token activations of every layer (LayerNorms, qkv, attention rows, the 4C MLP
/// twice, residuals) and two (B, T, V) logit buffers. In u128: no flag can wrap it.
fn training_bytes(gc: &GptConfig, b: usize) -> u128 {
    let (c, l, h, t, v) = (
        gc.n_embd as u128,
        gc.n_layer as u128,
        gc.n_head as u128,
        gc.block_size as u128,
        gc.vocab_size as u128,
    );
    let params = (v + t + 2) * c + l * (12 * c * c + 13 * c);
    let per_token = l * (20 * c + h * t) + 2 * v + 8 * c;
    4 * (5 * params + b as u128 * t * per_token)
}

impl Trainable for TrainableGpt {
    fn num_params(&self) -> usize {
        self.model.num_params()
    }
    fn params(&self) -> &[f32] {
        self.model.params()
    }
    fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        (self.model.params_mut(), self.trainer.grads())
    }
    fn decay_mask(&self) -> Vec<bool> {
        self.model.decay_mask()
    }
    fn zero_grad(&mut self) {
        self.trainer.zero_grad();
    }
    fn forward_backward(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        seed: u64,
    ) -> Result<f32, ModelError> {
        let loss = self
            .trainer
            .forward_backward(&self.model, inputs, targets, seed)?;
        let grads = self.trainer.grads_mut();
        for r in &self.frozen {
            grads[r.clone()].fill(0.0);
        }
        Ok(loss)
    }
    fn forward_loss(&mut self, inputs: &[u32], targets: &[u32]) -> Result<f32, ModelError> {
        self.trainer.forward_loss(&self.model, inputs, targets)
    }
    fn save(&self, dir: &Path) -> Result<(), ModelError> {
        self.model.save(dir)
    }
    fn load_params(&mut self, dir: &Path) -> Result<(), ModelError> {
        let saved = Gpt::load(dir)?;
        let (a, b) = (saved.config, self.model.config);
        if (a.n_layer, a.n_head, a.n_embd, a.block_size, a.vocab_size)
            != (b.n_layer, b.n_head, b.n_embd, b.block_size, b.vocab_size)
        {
            return Err(ModelError::Format {
                path: dir.to_path_buf(),
                message: format!(
                    "the saved model is {}L/{}H/{} context {} vocab {}, the run's is \
                     {}L/{}H/{} context {} vocab {}",
                    a.n_layer,
                    a.n_head,
                    a.n_embd,
                    a.block_size,
                    a.vocab_size,
                    b.n_layer,
                    b.n_head,
                    b.n_embd,
                    b.block_size,
                    b.vocab_size
                ),
            });
        }
        if a.activation != b.activation {
            return Err(ModelError::Format {
                path: dir.to_path_buf(),
                message: format!(
                    "the saved model's activation_function is {}, the run's is {}",
                    a.activation.hf_name(),
                    b.activation.hf_name()
                ),
            });
        }
        self.model.params_mut().copy_from_slice(saved.params());
        Ok(())
    }
    fn describe(&self) -> String {
        self.model.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::bytes::ByteTokenizer;
    use crate::train::data::TrainData;
    use crate::train::Trainer;

    /// `bias = false` keeps every bias at exactly zero through training while the other
    /// parameters (LayerNorm gains included) move; `bias = true` moves the biases.
    #[test]
    fn bias_false_holds_biases_at_zero() {
        let text = "to be or not to be, that is the question. ".repeat(40);
        for bias in [false, true] {
            let mut c = TrainConfig::preset("tiny").unwrap();
            c.steps = 5;
            c.block_size = 8;
            c.batch_size = 4;
            let crate::train::ModelSpec::Gpt(spec) = &mut c.model else {
                unreachable!()
            };
            spec.bias = bias;
            let spec = spec.clone();
            let data = TrainData::from_text(&text, Box::new(ByteTokenizer), 0.1, "toy").unwrap();
            let model = TrainableGpt::new(&spec, &c, 257, 256).unwrap();
            let init = model.model.params().to_vec();
            let mut t = Trainer::new(model, c, data, None).unwrap();
            for _ in 0..5 {
                t.train_step().unwrap();
            }
            let p = t.model.model.params();
            for spec in t.model.model.config.tensors() {
                let moved = (spec.offset..spec.offset + spec.len).any(|i| p[i] != init[i]);
                let expect_moved = bias || !spec.name.ends_with(".bias");
                assert_eq!(moved, expect_moved, "{} (bias = {bias})", spec.name);
            }
        }
    }
}
