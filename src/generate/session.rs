//! A decoding session: the model state, the tokens fed so far, and the next-token row,
//! with the past-context policy.
//!
//! # Past-context policy (sliding window with re-prefill)
//! A model with a finite context (`max_context() = Some(C)`, counting the BOS token)
//! cannot condition on more than C tokens. When feeding a token would exceed C, the
//! session drops the oldest tokens and rebuilds the state from scratch with one
//! [`LanguageModel::prefill`] of `BOS + the most recent R tokens + the new token`, where
//! R = (C - 1) / 2. Keeping half the window means a re-prefill happens once every ~C/2
//! steps, so its cost is amortized (one parallel pass over C/2 tokens per C/2 decode
//! steps) while the model still sees at least C/2 tokens of context. The BOS token stays
//! first, as in training. A prompt longer than the window is cut the same way (its most
//! recent tokens are kept). Generation never stops or fails because of the context
//! length; `slides()` counts how often the window moved.

use super::GenerateError;
use crate::model::{check_logprob_row, check_token, LanguageModel, ModelError};

/// The state of one decoding stream over a model.
pub struct Session<'m, M: LanguageModel> {
    model: &'m M,
    state: M::State,
    /// Tokens currently in the model state, BOS first.
    in_state: usize,
    /// Every token fed after BOS (prompt, then generated), including ones slid out.
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    slides: usize,
    /// Prompt tokens (BOS first) not fed yet (see [`Session::begin`]).
    pending: Vec<u32>,
}

impl<M: LanguageModel> Clone for Session<'_, M> {
    fn clone(&self) -> Self {
        Self {
            model: self.model,
            state: self.state.clone(),
            in_state: self.in_state,
            tokens: self.tokens.clone(),
            logprobs: self.logprobs.clone(),
            slides: self.slides,
            pending: self.pending.clone(),
        }
    }
}

impl<'m, M: LanguageModel> Session<'m, M> {
    /// Starts a session: prefills BOS + `prompt` (cut to the window if needed).
    pub fn new(model: &'m M, prompt: &[u32]) -> Result<Self, GenerateError> {
        let mut s = Self::begin(model, prompt)?;
        s.prefill_pending(usize::MAX)?;
        Ok(s)
    }

    /// A session whose prompt is not fed yet: [`Session::prefill_pending`] feeds it in
    /// chunks (a server prefills long prompts between decode steps of other sessions).
    pub fn begin(model: &'m M, prompt: &[u32]) -> Result<Self, GenerateError> {
        let v = model.vocab_size();
        for &t in prompt {
            check_token(t, v)?;
        }
        if let Some(c) = model.max_context() {
            if c < 2 {
                return Err(ModelError::InvalidConfig(format!(
                    "a context of {c} token(s) cannot hold BOS and one token"
                ))
                .into());
            }
        }
        let mut s = Session {
            model,
            state: model.new_state(),
            in_state: 0,
            tokens: prompt.to_vec(),
            logprobs: vec![0f32; v],
            slides: 0,
            pending: Vec::new(),
        };
        let fits = model.max_context().is_none_or(|c| prompt.len() < c);
        s.pending = if fits {
            let mut input = Vec::with_capacity(prompt.len() + 1);
            input.push(model.bos_token());
            input.extend_from_slice(prompt);
            input
        } else {
            s.slides += 1;
            s.window_input()
        };
        Ok(s)
    }

    /// Feeds up to `max_tokens` (at least 1) of the prompt not fed yet; true once all of it
    /// is in the state and [`Session::logprobs`] is the next-token row.
    pub fn prefill_pending(&mut self, max_tokens: usize) -> Result<bool, GenerateError> {
        if self.pending.is_empty() {
            return Ok(true);
        }
        let take = max_tokens.max(1).min(self.pending.len());
        self.model
            .prefill(&mut self.state, &self.pending[..take], &mut self.logprobs)?;
        self.in_state += take;
        self.pending.drain(..take);
        if self.pending.is_empty() {
            check_logprob_row(&self.logprobs, self.in_state)?;
        }
        Ok(self.pending.is_empty())
    }

    /// Prompt tokens (BOS included) not fed yet.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// True once the whole prompt is fed.
    pub fn is_ready(&self) -> bool {
        self.pending.is_empty()
    }

    /// BOS + the most recent tokens that the window keeps (see the module doc).
    fn window_input(&self) -> Vec<u32> {
        let c = self.model.max_context().unwrap_or(usize::MAX);
        // Keep R = (C-1)/2 old tokens plus the newest one (the last of `tokens`).
        let keep = ((c - 1) / 2 + 1).min(self.tokens.len()).min(c - 1);
        let mut input = Vec::with_capacity(keep + 1);
        input.push(self.model.bos_token());
        input.extend_from_slice(&self.tokens[self.tokens.len() - keep..]);
        input
    }

    /// Rebuilds the state from BOS + the most recent tokens (see the module doc).
    fn rebuild(&mut self) -> Result<(), GenerateError> {
        let input = self.window_input();
        self.state = self.model.new_state();
        self.model
            .prefill(&mut self.state, &input, &mut self.logprobs)?;
        self.in_state = input.len();
        self.slides += 1;
        check_logprob_row(&self.logprobs, self.in_state)?;
        Ok(())
    }

    /// log p(. | everything fed so far), length V.
    pub fn logprobs(&self) -> &[f32] {
        &self.logprobs
    }

    /// Every token after BOS: the prompt, then what was pushed.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// How many times the window slid (re-prefills).
    pub fn slides(&self) -> usize {
        self.slides
    }

    /// The model.
    pub fn model(&self) -> &'m M {
        self.model
    }

    /// Appends `token`, sliding the window if the context is full.
    pub fn push(&mut self, token: u32) -> Result<(), GenerateError> {
        check_token(token, self.model.vocab_size())?;
        self.tokens.push(token);
        let full = self
            .model
            .max_context()
            .is_some_and(|c| self.in_state + 1 > c);
        if full {
            self.rebuild()
        } else {
            self.model
                .feed(&mut self.state, token, &mut self.logprobs)?;
            self.in_state += 1;
            check_logprob_row(&self.logprobs, self.in_state)?;
            Ok(())
        }
    }

    /// [`Session::push`] for several sessions at once: the ones with room in their window
    /// take one [`LanguageModel::feed_batch`] (one pass over the weights for all of them,
    /// where the model batches), the others slide their window alone.
    pub fn push_batch(sessions: &mut [&mut Self], tokens: &[u32]) -> Result<(), GenerateError> {
        assert_eq!(sessions.len(), tokens.len(), "one token per session");
        let Some(model) = sessions.first().map(|s| s.model) else {
            return Ok(());
        };
        let mut states = Vec::with_capacity(sessions.len());
        let mut rows = Vec::with_capacity(sessions.len());
        let mut fed = Vec::with_capacity(sessions.len());
        for (s, &token) in sessions.iter_mut().zip(tokens) {
            check_token(token, s.model.vocab_size())?;
            if !s.is_ready() {
                return Err(ModelError::InvalidConfig(
                    "push on a session whose prompt is not fed yet".into(),
                )
                .into());
            }
            s.tokens.push(token);
            let full = s.model.max_context().is_some_and(|c| s.in_state + 1 > c);
            if full {
                s.rebuild()?;
            } else {
                s.in_state += 1;
                states.push(&mut s.state);
                rows.push(&mut s.logprobs[..]);
                fed.push(token);
            }
        }
        if !fed.is_empty() {
            model.feed_batch(&mut states, &fed, &mut rows)?;
        }
        for s in sessions.iter() {
            check_logprob_row(&s.logprobs, s.in_state)?;
        }
        Ok(())
    }
}
