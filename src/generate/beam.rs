//! Beam search with the Hugging Face conventions.
//!
//! At each step every running beam proposes its `2 * num_beams` best next tokens; the
//! globally best `2 * num_beams` (by total log-prob) are ranked. An end-of-text candidate
//! ranked within the first `num_beams` becomes a finished hypothesis; the best
//! `num_beams` others continue. Finished hypotheses are scored with the length penalty
//! `score = total_logprob / len^length_penalty` (len = generated tokens, end-of-text
//! included; `length_penalty` 1.0 by default, > 0 favours longer outputs). At
//! `max_tokens` the running beams finish as they are.
//!
//! Stopping is exact rather than HF's default heuristic (it is HF's
//! `early_stopping="never"`): search stops early only when `num_beams` hypotheses are
//! finished and no running beam can still beat the worst of them, using the bound
//! `total / max_len^alpha` for alpha > 0 (log-probs only decrease, the divisor can grow)
//! and `total / (len+1)^alpha` for alpha <= 0. So a beam as wide as every candidate
//! returns exactly the most probable (length-penalized) sequence.
//!
//! Each beam is a [`Session`] (the model state is `Clone`); a parent's state is moved
//! into its last child instead of cloned.

use super::{FinishReason, GenerateError, GeneratedToken, Generation, Session};
use crate::model::LanguageModel;
use crate::tokenizer::Tokenizer;

/// Settings of [`beam_search`].
#[derive(Clone, Debug)]
pub struct BeamConfig {
    /// Beam width.
    pub num_beams: usize,
    /// How many hypotheses to return (<= `num_beams`).
    pub num_return: usize,
    /// HF's length penalty exponent alpha.
    pub length_penalty: f32,
    /// Maximum generated tokens (end-of-text included).
    pub max_tokens: usize,
    /// The end-of-text token (finishes a hypothesis); `None` never finishes early.
    pub eot: Option<u32>,
}

/// One finished hypothesis.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Hypothesis {
    /// Generated tokens (ending with end-of-text if `ended_with_eot`).
    pub tokens: Vec<u32>,
    /// Sum of the model log-probs of `tokens` (nats).
    pub logprob: f64,
    /// log p(token | context) of each of `tokens` under the model.
    pub token_logprobs: Vec<f32>,
    /// How often the hypothesis's context window slid.
    pub window_slides: usize,
    /// `logprob / tokens.len()^length_penalty`: what the ranking uses.
    pub score: f64,
    /// True when the model chose end-of-text.
    pub ended_with_eot: bool,
}

impl Hypothesis {
    /// The hypothesis as a [`Generation`] (the result type sampling returns too): text
    /// without the end-of-text, every token with its model log-prob (the sampler's is 0:
    /// beam search chooses deterministically), and the beam score.
    pub fn to_generation(&self, tokenizer: &dyn Tokenizer) -> Result<Generation, GenerateError> {
        let body = if self.ended_with_eot {
            &self.tokens[..self.tokens.len() - 1]
        } else {
            &self.tokens[..]
        };
        let mut tokens = Vec::with_capacity(self.tokens.len());
        for (i, (&id, &lp)) in self.tokens.iter().zip(&self.token_logprobs).enumerate() {
            let eot = self.ended_with_eot && i + 1 == self.tokens.len();
            let piece = if eot {
                String::new()
            } else {
                String::from_utf8_lossy(&tokenizer.token_bytes(id)?).into_owned()
            };
            tokens.push(GeneratedToken {
                id,
                piece,
                logprob: lp,
                sampler_logprob: 0.0,
            });
        }
        Ok(Generation {
            text: tokenizer.decode(body)?,
            tokens,
            finish_reason: if self.ended_with_eot {
                FinishReason::Eot
            } else {
                FinishReason::Length
            },
            total_logprob: self.logprob,
            window_slides: self.window_slides,
            score: Some(self.score),
        })
    }
}

/// HF's length-penalized score.
pub fn length_penalized(logprob: f64, len: usize, alpha: f32) -> f64 {
    logprob / (len.max(1) as f64).powf(alpha as f64)
}

struct Beam<'m, M: LanguageModel> {
    session: Session<'m, M>,
    generated: Vec<u32>,
    /// Model log-prob of each generated token.
    token_logprobs: Vec<f32>,
    logprob: f64,
}

impl<M: LanguageModel> Beam<'_, M> {
    /// The hypothesis this beam followed by `token` makes (total log-prob `total`).
    fn finish(&self, token: u32, total: f64, len: usize, alpha: f32, eot: bool) -> Hypothesis {
        let mut tokens = self.generated.clone();
        tokens.push(token);
        let mut token_logprobs = self.token_logprobs.clone();
        token_logprobs.push(self.session.logprobs()[token as usize]);
        Hypothesis {
            tokens,
            logprob: total,
            token_logprobs,
            window_slides: self.session.slides(),
            score: length_penalized(total, len, alpha),
            ended_with_eot: eot,
        }
    }
}

fn validate(cfg: &BeamConfig) -> Result<(), GenerateError> {
    let bad = |name, value: String, reason: &str| {
        Err(GenerateError::InvalidParam {
            name,
            value,
            reason: reason.into(),
        })
    };
    if cfg.num_beams == 0 {
        return bad("beam", "0".into(), "the beam width must be at least 1");
    }
    if cfg.num_return == 0 || cfg.num_return > cfg.num_beams {
        return bad(
            "num-return",
            cfg.num_return.to_string(),
            &format!("must be between 1 and the beam width {}", cfg.num_beams),
        );
    }
    if !cfg.length_penalty.is_finite() {
        return bad(
            "length-penalty",
            cfg.length_penalty.to_string(),
            "must be finite",
        );
    }
    if cfg.max_tokens == 0 {
        return bad(
            "max-tokens",
            "0".into(),
            "beam search needs at least 1 token",
        );
    }
    Ok(())
}

/// Beam search after `prompt`; returns the `num_return` best hypotheses, best first.
pub fn beam_search<M: LanguageModel>(
    model: &M,
    prompt: &[u32],
    cfg: &BeamConfig,
) -> Result<Vec<Hypothesis>, GenerateError> {
    validate(cfg)?;
    let nb = cfg.num_beams;
    let alpha = cfg.length_penalty;
    let mut running = vec![Beam {
        session: Session::new(model, prompt)?,
        generated: Vec::new(),
        token_logprobs: Vec::new(),
        logprob: 0.0,
    }];
    let mut finished: Vec<Hypothesis> = Vec::new();
    let add_finished = |finished: &mut Vec<Hypothesis>, h: Hypothesis| {
        finished.push(h);
        if finished.len() > nb {
            finished.sort_by(|a, b| b.score.total_cmp(&a.score));
            finished.truncate(nb);
        }
    };
    let per_beam = nb.saturating_mul(2);
    for step in 0..cfg.max_tokens {
        let len = step + 1;
        // (total log-prob, beam index, token)
        let mut cands: Vec<(f64, usize, u32)> = Vec::new();
        for (b, beam) in running.iter().enumerate() {
            let row = beam.session.logprobs();
            let mut ids: Vec<u32> = (0..row.len() as u32)
                .filter(|&t| row[t as usize].is_finite())
                .collect();
            let desc =
                |a: &u32, c: &u32| row[*c as usize].total_cmp(&row[*a as usize]).then(a.cmp(c));
            if per_beam < ids.len() {
                ids.select_nth_unstable_by(per_beam - 1, desc);
                ids.truncate(per_beam);
            }
            cands.extend(
                ids.into_iter()
                    .map(|t| (beam.logprob + row[t as usize] as f64, b, t)),
            );
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        cands.truncate(per_beam);
        let mut next: Vec<(f64, usize, u32)> = Vec::with_capacity(nb);
        for (rank, &(total, b, t)) in cands.iter().enumerate() {
            if Some(t) == cfg.eot {
                if rank < nb {
                    add_finished(&mut finished, running[b].finish(t, total, len, alpha, true));
                }
                continue;
            }
            next.push((total, b, t));
            if next.len() == nb {
                break;
            }
        }
        if next.is_empty() {
            running.clear();
            break;
        }
        if len == cfg.max_tokens {
            for &(total, b, t) in &next {
                add_finished(
                    &mut finished,
                    running[b].finish(t, total, len, alpha, false),
                );
            }
            running.clear();
            break;
        }
        if finished.len() >= nb {
            let worst = finished
                .iter()
                .map(|h| h.score)
                .fold(f64::INFINITY, f64::min);
            let bound_len = if alpha > 0.0 { cfg.max_tokens } else { len + 1 };
            let best_possible = next
                .iter()
                .map(|&(total, _, _)| length_penalized(total, bound_len, alpha))
                .fold(f64::NEG_INFINITY, f64::max);
            if worst >= best_possible {
                running.clear();
                break;
            }
        }
        // Materialize the next beams: clone a parent's state for all but its last child.
        let mut children_left = vec![0usize; running.len()];
        for &(_, b, _) in &next {
            children_left[b] += 1;
        }
        let mut parents: Vec<Option<Beam<'_, M>>> = running.drain(..).map(Some).collect();
        for &(total, b, t) in &next {
            children_left[b] -= 1;
            let mut child = if children_left[b] == 0 {
                parents[b].take().ok_or(GenerateError::EmptyVocabulary {
                    stage: "beam bookkeeping",
                })?
            } else {
                let p = parents[b].as_ref().ok_or(GenerateError::EmptyVocabulary {
                    stage: "beam bookkeeping",
                })?;
                Beam {
                    session: p.session.clone(),
                    generated: p.generated.clone(),
                    token_logprobs: p.token_logprobs.clone(),
                    logprob: p.logprob,
                }
            };
            let lp = child.session.logprobs()[t as usize];
            child.session.push(t)?;
            child.generated.push(t);
            child.token_logprobs.push(lp);
            child.logprob = total;
            running.push(child);
        }
    }
    if finished.is_empty() {
        return Err(GenerateError::EmptyVocabulary {
            stage: "beam search (no finite continuation)",
        });
    }
    finished.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.tokens.cmp(&b.tokens)));
    finished.truncate(cfg.num_return);
    Ok(finished)
}
