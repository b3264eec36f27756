//! The sampler chain with a window on it: the distribution after every stage, for the
//! explorer's Generate panel.
//!
//! [`Tracing`] is one [`SamplerStage`] that holds the configured stages, each as its own
//! one-stage [`Chain`] built by [`Chain::from_config`] (so each stage is exactly the one
//! `arlm generate` runs, in the same order, with the same settings). It runs them in turn
//! and keeps a copy of the candidates after each; when the sampler reports the token it
//! chose ([`SamplerStage::accept`]), it turns the copies into one [`StepTrace`]. A
//! [`crate::generate::Sampler`] built with [`Sampler::with_chain`] around it draws the
//! same tokens from the same seed as the plain sampler: the stages, their order, the
//! bans before them and the draw after them are the same.

use crate::generate::candidates::Candidates;
use crate::generate::sampler::{Sampler, SamplerConfig};
use crate::generate::stage::{Chain, SamplerStage};
use crate::generate::GenerateError;
use serde::Serialize;

/// Where finished steps go.
pub type StepSink = Box<dyn FnMut(StepTrace) + Send>;

/// One stage's distribution over the displayed tokens.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageTrace {
    /// "model" for the distribution the chain starts from, else llama.cpp's stage name.
    pub name: String,
    /// Candidates left after the stage.
    pub kept: usize,
    /// Probability of each displayed token after the stage (0: filtered out), in the
    /// order of [`StepTrace::shown`].
    pub probs: Vec<f64>,
}

/// One generation step: the displayed tokens, every stage's distribution over them, and
/// the chosen token.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepTrace {
    /// Token ids shown: the model's most probable first, then the chosen one if it is
    /// not among them.
    pub shown: Vec<u32>,
    /// The model's distribution first, then one entry per stage in chain order.
    pub stages: Vec<StageTrace>,
    /// The token the sampler drew.
    pub chosen: u32,
    /// Its log-prob under the model, nats.
    pub chosen_logprob: f64,
}

/// The chain of `cfg` with every stage's distribution recorded; finished steps go to `out`.
pub struct Tracing {
    stages: Vec<(String, Chain)>,
    show: usize,
    /// Candidates at the start of the step, then after each stage.
    snapshots: Vec<(String, Candidates)>,
    out: StepSink,
}

impl Tracing {
    /// The stages of `cfg` (those [`Chain::from_config`] runs), showing the `show` most
    /// probable tokens of the model at each step.
    pub fn new(cfg: &SamplerConfig, show: usize, out: StepSink) -> Tracing {
        let stages = cfg
            .order
            .iter()
            .filter_map(|&stage| {
                let one = SamplerConfig {
                    order: vec![stage],
                    ..cfg.clone()
                };
                let chain = Chain::from_config(&one);
                // from_config leaves out what greedy decoding skips.
                (!chain.names().is_empty()).then(|| (stage.name().to_string(), chain))
            })
            .collect();
        Tracing {
            stages,
            show,
            snapshots: Vec::new(),
            out,
        }
    }

    /// A sampler for `cfg` whose chain is this tracer.
    pub fn sampler(
        cfg: &SamplerConfig,
        vocab_size: usize,
        show: usize,
        out: StepSink,
    ) -> Result<Sampler, GenerateError> {
        let mut chain = Chain::new();
        chain.push(Box::new(Tracing::new(cfg, show, out)));
        Sampler::with_chain(cfg.clone(), vocab_size, chain)
    }

    fn finish_step(&mut self, chosen: u32) -> Option<StepTrace> {
        let (_, first) = self.snapshots.first()?;
        let mut by_prob = first.clone();
        by_prob.sort();
        let mut shown: Vec<u32> = by_prob
            .items
            .iter()
            .take(self.show)
            .map(|&(t, _)| t)
            .collect();
        if !shown.contains(&chosen) {
            shown.push(chosen);
        }
        let first_probs = first.probs();
        let chosen_logprob = first
            .items
            .iter()
            .zip(&first_probs)
            .find(|((t, _), _)| *t == chosen)
            .map_or(f64::NEG_INFINITY, |(_, &p)| p.ln());
        let stages = self
            .snapshots
            .iter()
            .map(|(name, c)| {
                let probs = c.probs();
                let lookup = |id: u32| {
                    c.items
                        .iter()
                        .zip(&probs)
                        .find(|((t, _), _)| *t == id)
                        .map_or(0.0, |(_, &p)| p)
                };
                StageTrace {
                    name: name.clone(),
                    kept: c.items.len(),
                    probs: shown.iter().map(|&id| lookup(id)).collect(),
                }
            })
            .collect();
        Some(StepTrace {
            shown,
            stages,
            chosen,
            chosen_logprob,
        })
    }
}

impl SamplerStage for Tracing {
    fn name(&self) -> &str {
        "tracing"
    }

    fn apply(&mut self, cands: &mut Candidates, history: &[u32]) -> Result<(), GenerateError> {
        self.snapshots.clear();
        self.snapshots.push(("model".into(), cands.clone()));
        for (name, chain) in &mut self.stages {
            chain.apply(cands, history)?;
            self.snapshots.push((name.clone(), cands.clone()));
        }
        Ok(())
    }

    fn accept(&mut self, token: u32) {
        for (_, chain) in &mut self.stages {
            chain.accept(token);
        }
        if let Some(step) = self.finish_step(token) {
            (self.out)(step);
        }
        self.snapshots.clear();
    }

    fn reset(&mut self) {
        for (_, chain) in &mut self.stages {
            chain.reset();
        }
        self.snapshots.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ps: &[f64]) -> Vec<f32> {
        ps.iter().map(|&p| (p.ln()) as f32).collect()
    }

    /// Same seed, same draws as the plain sampler; each stage's distribution is what its
    /// filter leaves, renormalized.
    #[test]
    fn traced_sampler_draws_like_the_plain_one_and_records_each_stage() {
        let cfg = SamplerConfig {
            temperature: 0.5,
            top_k: 3,
            top_p: 0.9,
            min_p: 0.0,
            seed: 7,
            ..SamplerConfig::default()
        };
        let r = row(&[0.4, 0.3, 0.15, 0.1, 0.05]);
        let (tx, rx) = std::sync::mpsc::channel();
        let sink: StepSink = Box::new(move |s| tx.send(s).unwrap());
        let mut traced = Tracing::sampler(&cfg, 5, 3, sink).unwrap();
        let mut plain = Sampler::new(cfg.clone(), 5).unwrap();
        for step in 0..50 {
            let hist: Vec<u32> = (0..step % 4).collect();
            let a = traced.sample(&r, &hist).unwrap();
            let b = plain.sample(&r, &hist).unwrap();
            assert_eq!(a, b, "step {step}");
            let t = rx.try_recv().unwrap();
            assert_eq!(t.chosen, a.token);
            assert!((t.chosen_logprob - r[a.token as usize] as f64).abs() < 1e-6);
            let names: Vec<&str> = t.stages.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(
                names,
                [
                    "model",
                    "penalties",
                    "top_k",
                    "typ_p",
                    "top_p",
                    "min_p",
                    "temperature"
                ]
            );
            assert_eq!(&t.shown[..3], &[0, 1, 2]);
            let model = &t.stages[0];
            assert_eq!(model.kept, 5);
            assert!((model.probs[0] - 0.4).abs() < 1e-6);
            // top_k 3: 0.4, 0.3, 0.15 renormalized.
            let k = &t.stages[2];
            assert_eq!(k.kept, 3);
            assert!((k.probs[0] - 0.4 / 0.85).abs() < 1e-6);
            // top_p 0.9 of (0.47, 0.35, 0.18): all three are needed.
            assert_eq!(t.stages[4].kept, 3);
            // Temperature 0.5 squares and renormalizes.
            let z = 0.16 + 0.09 + 0.0225;
            assert!((t.stages[6].probs[1] - 0.09 / z).abs() < 1e-6);
        }
    }

    /// Greedy keeps only the penalties stage; the chosen token is the argmax.
    #[test]
    fn greedy_trace_has_only_penalties() {
        let cfg = SamplerConfig::greedy();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut s = Tracing::sampler(&cfg, 4, 2, Box::new(move |s| tx.send(s).unwrap())).unwrap();
        let c = s.sample(&row(&[0.1, 0.2, 0.6, 0.1]), &[]).unwrap();
        assert_eq!(c.token, 2);
        let t = rx.try_recv().unwrap();
        assert_eq!(t.stages.len(), 2);
        assert_eq!(t.shown, vec![2, 1]);
    }
}
