//! Sampler stages as values: the [`SamplerStage`] trait, the built-in stages, and
//! [`Chain`], a list of stages that is itself a stage (llama.cpp's `llama_sampler` design).
//!
//! A stage rewrites the candidate list in place ([`SamplerStage::apply`]); a stateful
//! stage also hears which token was finally chosen ([`SamplerStage::accept`]) and can
//! start over ([`SamplerStage::reset`]). [`super::sampler::Sampler`] builds its chain from
//! [`super::sampler::SamplerConfig`] with `Chain::from_config`; a stage of your own is
//! one file with a struct that implements [`SamplerStage`], put into a chain with
//! [`Chain::push`] and given to [`super::sampler::Sampler::with_chain`]. The built-in
//! stages (in [`super::sampler`]) wrap its public functions, which the tests check against
//! brute force.

use super::candidates::Candidates;
use super::GenerateError;

/// One stage of a sampler chain.
pub trait SamplerStage: Send {
    /// A short name for errors and logs (llama.cpp's, for the built-in stages).
    fn name(&self) -> &str;

    /// Rewrites `cands` (token ids with log-probs) given the tokens so far (`history`:
    /// prompt and generated, without BOS). Must leave at least one candidate, or return
    /// [`GenerateError::EmptyVocabulary`].
    fn apply(&mut self, cands: &mut Candidates, history: &[u32]) -> Result<(), GenerateError>;

    /// The token the sampler finally chose (for stages with state). Default: nothing.
    fn accept(&mut self, _token: u32) {}

    /// Forgets any state (a new generation). Default: nothing.
    fn reset(&mut self) {}
}

/// Stages run in order; a chain is itself a stage.
#[derive(Default)]
pub struct Chain {
    stages: Vec<Box<dyn SamplerStage>>,
}

impl Chain {
    /// An empty chain (it leaves the candidates as they are).
    pub fn new() -> Chain {
        Chain::default()
    }

    /// Appends `stage`.
    pub fn push(&mut self, stage: Box<dyn SamplerStage>) -> &mut Chain {
        self.stages.push(stage);
        self
    }

    /// The stages' names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.stages.iter().map(|s| s.name()).collect()
    }
}

impl SamplerStage for Chain {
    fn name(&self) -> &str {
        "chain"
    }

    fn apply(&mut self, cands: &mut Candidates, history: &[u32]) -> Result<(), GenerateError> {
        for stage in &mut self.stages {
            stage.apply(cands, history)?;
        }
        Ok(())
    }

    fn accept(&mut self, token: u32) {
        for stage in &mut self.stages {
            stage.accept(token);
        }
    }

    fn reset(&mut self) {
        for stage in &mut self.stages {
            stage.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::sampler::SamplerConfig;

    /// A stage written outside the built-ins: bans one token, counts what it hears.
    struct Ban {
        token: u32,
        accepted: Vec<u32>,
    }

    impl SamplerStage for Ban {
        fn name(&self) -> &str {
            "ban"
        }

        fn apply(&mut self, c: &mut Candidates, _: &[u32]) -> Result<(), GenerateError> {
            c.items.retain(|&(t, _)| t != self.token);
            Ok(())
        }

        fn accept(&mut self, token: u32) {
            self.accepted.push(token);
        }
    }

    /// A chain passes accept and reset to its stages.
    #[test]
    fn a_chain_forwards_accept_and_reset() {
        struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl SamplerStage for Count {
            fn name(&self) -> &str {
                "count"
            }
            fn apply(&mut self, _: &mut Candidates, _: &[u32]) -> Result<(), GenerateError> {
                Ok(())
            }
            fn accept(&mut self, _: u32) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            fn reset(&mut self) {
                self.0.store(0, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut inner = Chain::new();
        inner.push(Box::new(Count(n.clone())));
        let mut outer = Chain::new();
        outer.push(Box::new(inner));
        outer.accept(3);
        outer.accept(4);
        assert_eq!(n.load(std::sync::atomic::Ordering::Relaxed), 2);
        outer.reset();
        assert_eq!(n.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    /// The chain from the default config names llama.cpp's order; greedy keeps only the
    /// penalties.
    #[test]
    fn chain_from_config_follows_the_order() {
        let cfg = SamplerConfig::default();
        let chain = Chain::from_config(&cfg);
        assert_eq!(
            chain.names(),
            [
                "penalties",
                "top_k",
                "typ_p",
                "top_p",
                "min_p",
                "temperature"
            ]
        );
        let greedy = SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        };
        assert_eq!(Chain::from_config(&greedy).names(), ["penalties"]);
    }

    /// A custom stage in a sampler: the banned token never comes out (it is the argmax).
    #[test]
    fn a_custom_stage_runs_in_the_sampler() {
        let cfg = SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        };
        let mut chain = Chain::new();
        chain.push(Box::new(Ban {
            token: 2,
            accepted: Vec::new(),
        }));
        let mut s = crate::generate::sampler::Sampler::with_chain(cfg, 4, chain).unwrap();
        let row = [(0.1f32).ln(), (0.2f32).ln(), (0.6f32).ln(), (0.1f32).ln()];
        for _ in 0..3 {
            let choice = s.sample(&row, &[]).unwrap();
            assert_eq!(choice.token, 1);
        }
    }
}
