//! [`LanguageModel`] for [`Rnn`]: the state is h (and c) of every layer, `feed` is one
//! step, and whole sequences run the batched forward of [`super::bptt`] in chunks of
//! [`SCORE_CHUNK`] steps with the state carried from chunk to chunk, so a document of any
//! length is scored exactly (the context is unbounded: `max_context` is `None`) with
//! activations bounded by the chunk.

use super::bptt::{forward, Workspace};
use super::{CellKind, Rnn};
use crate::model::{check_token, log_softmax_in_place, LanguageModel, ModelError};

/// Steps per batched forward when scoring a long sequence.
pub const SCORE_CHUNK: usize = 256;

/// The recurrent state after a prefix: per layer h (H) then, for the LSTM, c (H).
#[derive(Debug, Clone)]
pub struct RnnState {
    pub values: Vec<f32>,
}

impl Rnn<f32> {
    /// Runs `tokens` from `state` (updated in place) and calls `row(i, logprobs)` with the
    /// log-softmaxed distribution after each token.
    fn run_chunks(
        &self,
        state: &mut [f32],
        tokens: &[u32],
        mut row: impl FnMut(usize, &[f32]),
    ) -> Result<(), ModelError> {
        let v = self.config.vocab_size;
        for &tok in tokens {
            check_token(tok, v)?;
        }
        let mut ws: Option<Workspace<f32>> = None;
        for (ci, chunk) in tokens.chunks(SCORE_CHUNK).enumerate() {
            let t = chunk.len();
            if ws.as_ref().is_none_or(|w| w.t != t) {
                ws = Some(Workspace::new(&self.config, 1, t, false));
            }
            let w = ws.as_mut().expect("set above");
            forward(&self.config, self.params(), w, chunk, state, None)?;
            w.final_state(&self.config, state);
            for (i, r) in w.logits.chunks_exact_mut(v).enumerate() {
                log_softmax_in_place(r);
                if !r[0].is_finite() {
                    return Err(ModelError::NonFinite(format!(
                        "log-prob at position {}",
                        ci * SCORE_CHUNK + i
                    )));
                }
                row(ci * SCORE_CHUNK + i, r);
            }
        }
        Ok(())
    }
}

impl LanguageModel for Rnn<f32> {
    type State = RnnState;

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn max_context(&self) -> Option<usize> {
        None
    }

    fn bos_token(&self) -> u32 {
        self.bos_token
    }

    fn describe(&self) -> String {
        let c = &self.config;
        let name = match c.kind {
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
            CellKind::Rnn => "rnn-tanh",
        };
        format!(
            "{name} {}L/{} (embd {}{}), {:.2}M params",
            c.n_layer,
            c.hidden,
            c.embd,
            if c.tied { ", tied" } else { "" },
            self.num_params() as f64 / 1e6
        )
    }

    fn new_state(&self) -> RnnState {
        RnnState {
            values: vec![0.0; self.config.state_size()],
        }
    }

    fn feed(
        &self,
        state: &mut RnnState,
        token: u32,
        logprobs: &mut [f32],
    ) -> Result<(), ModelError> {
        self.run_chunks(&mut state.values, &[token], |_, r| {
            logprobs.copy_from_slice(r)
        })
    }

    fn prefill(
        &self,
        state: &mut RnnState,
        tokens: &[u32],
        logprobs: &mut [f32],
    ) -> Result<(), ModelError> {
        if tokens.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let last = tokens.len() - 1;
        self.run_chunks(&mut state.values, tokens, |i, r| {
            if i == last {
                logprobs.copy_from_slice(r)
            }
        })
    }

    fn score_next(&self, input: &[u32]) -> Result<Vec<f32>, ModelError> {
        if input.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        for &tok in input {
            check_token(tok, self.config.vocab_size)?;
        }
        let mut state = self.new_state();
        let mut out = Vec::with_capacity(input.len() - 1);
        self.run_chunks(&mut state.values, &input[..input.len() - 1], |i, r| {
            out.push(r[input[i + 1] as usize])
        })?;
        Ok(out)
    }

    fn distributions(&self, input: &[u32]) -> Result<Vec<f32>, ModelError> {
        if input.is_empty() {
            return Err(ModelError::EmptyInput);
        }
        let mut state = self.new_state();
        let mut out = Vec::with_capacity(input.len() * self.config.vocab_size);
        self.run_chunks(&mut state.values, input, |_, r| out.extend_from_slice(r))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conformance::check_model;
    use crate::model::rnn::{InitScheme, RnnConfig};

    #[test]
    fn every_cell_passes_conformance_across_chunks() {
        for kind in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
            let c = RnnConfig {
                kind,
                n_layer: 2,
                hidden: 8,
                embd: 5,
                vocab_size: 11,
                dropout: 0.0,
                tied: false,
            };
            let m = Rnn::<f32>::init(c, InitScheme::Uniform(0.5), 2).unwrap();
            // Longer than one chunk, so the carried state between chunks is exercised.
            let seq: Vec<u32> = (0..SCORE_CHUNK as u32 + 40)
                .map(|i| (i * 7 + i / 3) % 11)
                .collect();
            check_model(&m, &seq, 2e-5);
            assert!(m.score_next(&[3, 11]).is_err());
        }
    }
}
