//! The sampler chain: model log-probs -> candidate set -> one token.
//!
//! The chain follows llama.cpp's names, defaults and default order:
//! logit bias and no-repeat-ngram bans first (they are hard constraints), then
//! `penalties -> top_k -> typ_p -> top_p -> min_p -> temperature`, then a seeded draw
//! from the softmax of what is left. Each stage is a public function over a
//! [`Candidates`] list so tests can check it against a brute-force implementation; the
//! chain runs them as [`super::stage::SamplerStage`] values ([`super::stage::Chain`]).
//!
//! Conventions (why they are what they are):
//! - Stages see log-probs (the model's log-softmaxed output), which are logits up to a
//!   constant; every filter (top-k/p, min-p, typical) and temperature are invariant to
//!   that constant. The repetition penalty (CTRL / llama.cpp: divide positive logits,
//!   multiply negative ones) is not, and on log-probs (all <= 0) it always multiplies:
//!   a repeated token's log-prob is scaled by the penalty, i.e. its probability raised
//!   to that power.
//! - Filters before `temperature` act on the temperature-1 distribution (llama.cpp's
//!   order); put `temperature` first with `--samplers` for the other convention.
//! - Temperature 0 is greedy: after the bans and penalties, the most probable token
//!   (ties: lowest id); its sampling log-prob is 0.
//! - Ties in sorting break toward the lower token id, so results never depend on the
//!   sort algorithm.

use super::candidates::by_logit_desc;
pub use super::candidates::Candidates;
use super::stage::{Chain, SamplerStage};
use super::GenerateError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rustc_hash::FxHashMap;

/// One stage of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Repetition / presence / frequency penalties over the last `penalty_last_n` tokens.
    Penalties,
    /// Keep the `top_k` most probable tokens.
    TopK,
    /// Locally typical sampling: keep tokens whose surprisal is closest to the entropy.
    Typical,
    /// Nucleus: the smallest set whose mass reaches `top_p`.
    TopP,
    /// Keep tokens with probability >= `min_p` times the most probable one's.
    MinP,
    /// Divide log-probs by the temperature.
    Temperature,
}

/// llama.cpp's default order.
pub const DEFAULT_ORDER: [Stage; 6] = [
    Stage::Penalties,
    Stage::TopK,
    Stage::Typical,
    Stage::TopP,
    Stage::MinP,
    Stage::Temperature,
];

impl Stage {
    /// llama.cpp's name for the stage.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Penalties => "penalties",
            Stage::TopK => "top_k",
            Stage::Typical => "typ_p",
            Stage::TopP => "top_p",
            Stage::MinP => "min_p",
            Stage::Temperature => "temperature",
        }
    }

    /// Parses a stage name (llama.cpp's, with `-` for `_` and a few aliases accepted).
    pub fn parse(s: &str) -> Result<Stage, GenerateError> {
        Ok(match s.trim().replace('-', "_").as_str() {
            "penalties" | "penalty" => Stage::Penalties,
            "top_k" | "k" => Stage::TopK,
            "typ_p" | "typical" | "typical_p" | "y" => Stage::Typical,
            "top_p" | "p" | "nucleus" => Stage::TopP,
            "min_p" | "m" => Stage::MinP,
            "temperature" | "temp" | "t" => Stage::Temperature,
            other => {
                return Err(GenerateError::InvalidParam {
                    name: "samplers",
                    value: other.to_string(),
                    reason:
                        "unknown sampler; use penalties, top_k, typ_p, top_p, min_p, temperature"
                            .into(),
                })
            }
        })
    }

    /// Parses a `;`- or `,`-separated list of stage names.
    pub fn parse_list(s: &str) -> Result<Vec<Stage>, GenerateError> {
        s.split([';', ','])
            .filter(|p| !p.trim().is_empty())
            .map(Stage::parse)
            .collect()
    }
}

/// Every setting of the sampler chain. `Default` is llama.cpp's defaults.
#[derive(Clone, Debug)]
pub struct SamplerConfig {
    /// 0 = greedy; 1 = the model's distribution. Default 0.8.
    pub temperature: f32,
    /// 0 disables. Default 40.
    pub top_k: usize,
    /// In (0, 1]; 1 disables. Default 0.95.
    pub top_p: f32,
    /// In [0, 1]; 0 disables. Default 0.05.
    pub min_p: f32,
    /// In (0, 1]; 1 disables. Default 1.
    pub typical_p: f32,
    /// > 0; 1 disables. Default 1.
    pub repeat_penalty: f32,
    /// Subtracted once from a token's log-prob if it occurs in the window. Default 0.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window. Default 0.
    pub frequency_penalty: f32,
    /// How many recent tokens (prompt included) the penalties look at. Default 64.
    pub penalty_last_n: usize,
    /// Ban any token that would repeat an n-gram of this size (0 disables; HF semantics).
    pub no_repeat_ngram: usize,
    /// Added to a token's log-prob before everything else (-inf bans it).
    pub logit_bias: Vec<(u32, f32)>,
    /// The stages in the order they run.
    pub order: Vec<Stage>,
    /// The seed of the draw: same seed, same tokens.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            no_repeat_ngram: 0,
            logit_bias: Vec::new(),
            order: DEFAULT_ORDER.to_vec(),
            seed: 0,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding: the argmax at every step.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::pure(0)
        }
    }

    /// Ancestral sampling from the model's own distribution (temperature 1, no filters).
    pub fn pure(seed: u64) -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            typical_p: 1.0,
            seed,
            ..Self::default()
        }
    }

    /// True when decoding is deterministic argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every parameter; the error names the bad one and its value.
    pub fn validate(&self, vocab_size: usize) -> Result<(), GenerateError> {
        let bad = |name: &'static str, value: String, reason: &str| {
            Err(GenerateError::InvalidParam {
                name,
                value,
                reason: reason.to_string(),
            })
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                self.temperature.to_string(),
                "must be a finite number >= 0 (0 = greedy)",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p", self.top_p.to_string(), "must be in (0, 1]");
        }
        if !(self.min_p >= 0.0 && self.min_p <= 1.0) {
            return bad("min-p", self.min_p.to_string(), "must be in [0, 1]");
        }
        if !(self.typical_p > 0.0 && self.typical_p <= 1.0) {
            return bad("typical-p", self.typical_p.to_string(), "must be in (0, 1]");
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return bad(
                "repeat-penalty",
                self.repeat_penalty.to_string(),
                "must be a finite number > 0 (1 = off)",
            );
        }
        if !self.presence_penalty.is_finite() {
            return bad(
                "presence-penalty",
                self.presence_penalty.to_string(),
                "must be finite",
            );
        }
        if !self.frequency_penalty.is_finite() {
            return bad(
                "frequency-penalty",
                self.frequency_penalty.to_string(),
                "must be finite",
            );
        }
        if self.order.len() == 1 && self.order[0] == Stage::TopK && self.top_k == 0 {
            return bad(
                "top-k",
                "0".into(),
                "top-k 0 disables the only sampler in the chain; give k > 0 or other samplers",
            );
        }
        for &(tok, bias) in &self.logit_bias {
            if tok as usize >= vocab_size {
                return bad(
                    "logit-bias",
                    tok.to_string(),
                    &format!("token id is outside the vocabulary of {vocab_size} tokens"),
                );
            }
            if bias.is_nan() || bias == f32::INFINITY {
                return bad(
                    "logit-bias",
                    format!("{tok}={bias}"),
                    "bias must be finite or -inf (ban)",
                );
            }
        }
        Ok(())
    }
}

/// Keeps the `k` highest-logit tokens (`k == 0` or `k >= len`: no-op). Leaves them sorted.
pub fn top_k(c: &mut Candidates, k: usize) {
    if k == 0 || k >= c.items.len() {
        return;
    }
    if !c.sorted {
        c.items.select_nth_unstable_by(k - 1, by_logit_desc);
        c.items.truncate(k);
    } else {
        c.items.truncate(k);
    }
    c.sort();
}

/// Nucleus: keeps the smallest prefix (by probability) whose mass reaches `p`
/// (at least `min_keep`). `p >= 1`: no-op.
pub fn top_p(c: &mut Candidates, p: f32, min_keep: usize) {
    if p >= 1.0 || c.items.is_empty() {
        return;
    }
    c.sort();
    let probs = c.probs();
    let mut cum = 0.0f64;
    let mut keep = c.items.len();
    for (i, &q) in probs.iter().enumerate() {
        cum += q;
        if cum >= p as f64 && i + 1 >= min_keep {
            keep = i + 1;
            break;
        }
    }
    c.items.truncate(keep);
}

/// Keeps tokens whose probability is at least `p` times the largest (at least `min_keep`).
/// `p <= 0`: no-op.
pub fn min_p(c: &mut Candidates, p: f32, min_keep: usize) {
    if p <= 0.0 || c.items.is_empty() {
        return;
    }
    c.sort();
    let threshold = c.items[0].1 as f64 + (p as f64).ln();
    let keep = c
        .items
        .iter()
        .take_while(|&&(_, l)| l as f64 >= threshold)
        .count()
        .max(min_keep)
        .min(c.items.len());
    c.items.truncate(keep);
}

/// Locally typical sampling (Meister et al.; llama.cpp's `typ_p`): sorts tokens by
/// |surprisal - entropy| and keeps the smallest such prefix whose mass reaches `p`.
/// `p >= 1`: no-op.
pub fn typical(c: &mut Candidates, p: f32, min_keep: usize) {
    if p >= 1.0 || c.items.is_empty() {
        return;
    }
    let probs = c.probs();
    let entropy: f64 = probs
        .iter()
        .filter(|&&q| q > 0.0)
        .map(|&q| -q * q.ln())
        .sum();
    let mut order: Vec<(f64, usize)> = probs
        .iter()
        .enumerate()
        .map(|(i, &q)| ((-q.ln() - entropy).abs(), i))
        .collect();
    order.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(c.items[a.1].0.cmp(&c.items[b.1].0))
    });
    let mut cum = 0.0;
    let mut keep = order.len();
    for (rank, &(_, i)) in order.iter().enumerate() {
        cum += probs[i];
        if cum >= p as f64 && rank + 1 >= min_keep {
            keep = rank + 1;
            break;
        }
    }
    let items: Vec<(u32, f32)> = order[..keep].iter().map(|&(_, i)| c.items[i]).collect();
    c.items = items;
    c.sorted = false;
}

/// Divides every logit by `t` (> 0).
pub fn temperature(c: &mut Candidates, t: f32) {
    if t == 1.0 {
        return;
    }
    for item in c.items.iter_mut() {
        item.1 /= t;
    }
}

/// Repetition / presence / frequency penalties from the token counts of the window.
pub fn penalties(c: &mut Candidates, window: &[u32], repeat: f32, presence: f32, frequency: f32) {
    if window.is_empty() || (repeat == 1.0 && presence == 0.0 && frequency == 0.0) {
        return;
    }
    let mut counts: FxHashMap<u32, u32> = FxHashMap::default();
    for &t in window {
        *counts.entry(t).or_insert(0) += 1;
    }
    for item in c.items.iter_mut() {
        if let Some(&n) = counts.get(&item.0) {
            let l = &mut item.1;
            if *l <= 0.0 {
                *l *= repeat;
            } else {
                *l /= repeat;
            }
            *l -= n as f32 * frequency + presence;
        }
    }
    c.sorted = false;
}

/// Tokens that would complete an n-gram (size `n`) already present in `history`.
pub fn banned_by_ngram(history: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || history.len() + 1 < n {
        return Vec::new();
    }
    if n == 1 {
        let mut all = history.to_vec();
        all.sort_unstable();
        all.dedup();
        return all;
    }
    let prefix = &history[history.len() - (n - 1)..];
    let mut out: Vec<u32> = history
        .windows(n)
        .filter(|w| &w[..n - 1] == prefix)
        .map(|w| w[n - 1])
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl Chain {
    /// The built-in chain `cfg` describes: its `order`, with the settings of `cfg`. Greedy
    /// decoding keeps only the penalties (filters cannot change the argmax, and typical
    /// sampling is skipped by definition: greedy means the most probable token).
    pub fn from_config(cfg: &SamplerConfig) -> Chain {
        let mut chain = Chain::new();
        for &stage in &cfg.order {
            if cfg.is_greedy() && stage != Stage::Penalties {
                continue;
            }
            chain.push(builtin(stage, cfg));
        }
        chain
    }
}

/// The built-in stage `stage` with the settings of `cfg`.
fn builtin(stage: Stage, cfg: &SamplerConfig) -> Box<dyn SamplerStage> {
    match stage {
        Stage::Penalties => Box::new(Penalties {
            repeat: cfg.repeat_penalty,
            presence: cfg.presence_penalty,
            frequency: cfg.frequency_penalty,
            last_n: cfg.penalty_last_n,
        }),
        Stage::TopK => Box::new(TopK(cfg.top_k)),
        Stage::Typical => Box::new(Typical(cfg.typical_p)),
        Stage::TopP => Box::new(TopP(cfg.top_p)),
        Stage::MinP => Box::new(MinP(cfg.min_p)),
        Stage::Temperature => Box::new(Temperature(cfg.temperature)),
    }
}

/// Repetition / presence / frequency penalties over the last `last_n` tokens; tokens
/// pushed to -inf are dropped.
pub struct Penalties {
    pub repeat: f32,
    pub presence: f32,
    pub frequency: f32,
    pub last_n: usize,
}

impl SamplerStage for Penalties {
    fn name(&self) -> &str {
        Stage::Penalties.name()
    }

    fn apply(&mut self, c: &mut Candidates, history: &[u32]) -> Result<(), GenerateError> {
        let start = history.len().saturating_sub(self.last_n);
        penalties(
            c,
            &history[start..],
            self.repeat,
            self.presence,
            self.frequency,
        );
        c.drop_banned();
        if c.items.is_empty() {
            return Err(GenerateError::EmptyVocabulary { stage: "penalties" });
        }
        Ok(())
    }
}

/// Keep the `k` most probable tokens (0 keeps all).
pub struct TopK(pub usize);
/// Locally typical sampling with mass `p`.
pub struct Typical(pub f32);
/// Nucleus sampling with mass `p`.
pub struct TopP(pub f32);
/// Keep tokens with probability >= `p` times the most probable one's.
pub struct MinP(pub f32);
/// Divide log-probs by the temperature.
pub struct Temperature(pub f32);

/// A stateless stage that calls one function of this module.
macro_rules! filter_stage {
    ($ty:ident, $stage:expr, |$c:ident, $v:ident| $body:expr) => {
        impl SamplerStage for $ty {
            fn name(&self) -> &str {
                $stage.name()
            }

            fn apply(&mut self, $c: &mut Candidates, _: &[u32]) -> Result<(), GenerateError> {
                let $v = self.0;
                $body;
                Ok(())
            }
        }
    };
}

filter_stage!(TopK, Stage::TopK, |c, k| top_k(c, k));
filter_stage!(Typical, Stage::Typical, |c, p| typical(c, p, 1));
filter_stage!(TopP, Stage::TopP, |c, p| top_p(c, p, 1));
filter_stage!(MinP, Stage::MinP, |c, p| min_p(c, p, 1));
filter_stage!(Temperature, Stage::Temperature, |c, t| temperature(c, t));

/// The token a sampler chose and what it cost.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The token id.
    pub token: u32,
    /// Its log-prob under the model (before any sampler stage).
    pub logprob_model: f32,
    /// Its log-prob under the final sampling distribution (0 for greedy).
    pub logprob_sampler: f32,
}

/// A configured, seeded sampler chain. Reuses its buffers across steps.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: ChaCha20Rng,
    cands: Candidates,
    vocab_size: usize,
    /// The stages after the bans ([`Chain::from_config`] of `cfg`, or a caller's chain).
    chain: Chain,
}

impl Sampler {
    /// Validates `cfg` against the vocabulary and seeds the generator.
    pub fn new(cfg: SamplerConfig, vocab_size: usize) -> Result<Sampler, GenerateError> {
        Self::with_stream(cfg, vocab_size, 0)
    }

    /// Like [`Sampler::new`], with an independent random stream `stream` of the same seed
    /// (sample `i` of `--num-samples` uses stream `i`, so samples do not depend on each other).
    pub fn with_stream(
        cfg: SamplerConfig,
        vocab_size: usize,
        stream: u64,
    ) -> Result<Sampler, GenerateError> {
        cfg.validate(vocab_size)?;
        let mut rng = ChaCha20Rng::seed_from_u64(cfg.seed);
        rng.set_stream(stream);
        let chain = Chain::from_config(&cfg);
        Ok(Sampler {
            cfg,
            rng,
            cands: Candidates::default(),
            vocab_size,
            chain,
        })
    }

    /// A sampler whose stages are `chain` instead of `cfg.order` (the bans of `cfg`, its
    /// temperature-0 greedy draw and its seed still apply): how a stage that is not
    /// built in runs (see [`super::stage`]).
    pub fn with_chain(
        cfg: SamplerConfig,
        vocab_size: usize,
        chain: Chain,
    ) -> Result<Sampler, GenerateError> {
        let mut s = Self::new(cfg, vocab_size)?;
        s.chain = chain;
        Ok(s)
    }

    /// Starts over: the stages forget their state (the random stream does not rewind).
    pub fn reset(&mut self) {
        self.chain.reset();
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Runs the bans and the stages on `logprobs` (the model's next-token row) given the
    /// tokens so far (`history`: prompt and generated, without BOS), leaving the final
    /// candidate set. Public so tests can inspect the distribution the draw uses.
    pub fn filter(
        &mut self,
        logprobs: &[f32],
        history: &[u32],
    ) -> Result<&Candidates, GenerateError> {
        let cfg = &self.cfg;
        if logprobs.len() != self.vocab_size {
            return Err(GenerateError::RowLength {
                got: logprobs.len(),
                vocab_size: self.vocab_size,
            });
        }
        let c = &mut self.cands;
        c.reset(logprobs);
        if !cfg.logit_bias.is_empty() || cfg.no_repeat_ngram > 0 {
            let mut row: Vec<f32> = logprobs.to_vec();
            for &(t, b) in &cfg.logit_bias {
                row[t as usize] += b;
            }
            for t in banned_by_ngram(history, cfg.no_repeat_ngram) {
                row[t as usize] = f32::NEG_INFINITY;
            }
            c.reset(&row);
        }
        if c.items.is_empty() {
            return Err(GenerateError::EmptyVocabulary {
                stage: "logit bias / no-repeat-ngram",
            });
        }
        self.chain.apply(c, history)?;
        Ok(&self.cands)
    }

    /// Chooses the next token.
    pub fn sample(&mut self, logprobs: &[f32], history: &[u32]) -> Result<Choice, GenerateError> {
        self.filter(logprobs, history)?;
        let c = &self.cands;
        if self.cfg.is_greedy() {
            let &(token, _) = c
                .items
                .iter()
                .min_by(|a, b| by_logit_desc(a, b))
                .ok_or(GenerateError::EmptyVocabulary { stage: "greedy" })?;
            self.chain.accept(token);
            return Ok(Choice {
                token,
                logprob_model: logprobs[token as usize],
                logprob_sampler: 0.0,
            });
        }
        let probs = c.probs();
        if probs.iter().any(|p| !p.is_finite()) {
            return Err(GenerateError::EmptyVocabulary {
                stage: "final distribution (not finite)",
            });
        }
        let u: f64 = self.rng.random::<f64>();
        let mut cum = 0.0;
        let mut pick = probs.len() - 1;
        for (i, &p) in probs.iter().enumerate() {
            cum += p;
            if u < cum {
                pick = i;
                break;
            }
        }
        // Rounding can leave cum slightly below 1: fall back to the last token with mass.
        while probs[pick] == 0.0 && pick > 0 {
            pick -= 1;
        }
        let token = c.items[pick].0;
        self.chain.accept(token);
        Ok(Choice {
            token,
            logprob_model: logprobs[token as usize],
            logprob_sampler: probs[pick].ln() as f32,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn radix_sort_orders_like_the_comparison_sort() {
        use crate::generate::candidates::{by_logit_desc, radix_sort_by_logit_desc};
        // Ties (the same logit on many ids), signed zeros, infinities, NaN and ids out of
        // order, as after a top-k selection.
        let special = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            1e-40,
        ];
        let mut items: Vec<(u32, f32)> = (0..5000u32)
            .map(|i| {
                let h = i.wrapping_mul(2_654_435_761) >> 7;
                let l = match h % 9 {
                    0 => special[(h / 9) as usize % special.len()],
                    1 => -1.5,
                    _ => ((h % 100_003) as f32 - 50_000.0) * 1e-3,
                };
                (h % 70_000 + i * 70_000, l)
            })
            .collect();
        let bits = |v: &[(u32, f32)]| v.iter().map(|&(i, l)| (i, l.to_bits())).collect::<Vec<_>>();
        // Ids in order (a fresh row: the id bytes are skipped) and out of order.
        for reverse in [false, true] {
            if reverse {
                items.reverse();
            } else {
                items.sort_by_key(|&(i, _)| i);
            }
            let mut got = items.clone();
            let mut want = items.clone();
            want.sort_unstable_by(by_logit_desc);
            radix_sort_by_logit_desc(&mut got);
            assert_eq!(bits(&got), bits(&want), "reversed: {reverse}");
        }
    }

    use super::*;

    fn row(ps: &[f64]) -> Vec<f32> {
        ps.iter().map(|p| p.ln() as f32).collect()
    }

    #[test]
    fn stage_names_round_trip() {
        for s in DEFAULT_ORDER {
            assert_eq!(Stage::parse(s.name()).unwrap(), s);
        }
        assert_eq!(
            Stage::parse_list("top-k;temperature").unwrap(),
            vec![Stage::TopK, Stage::Temperature]
        );
        assert!(Stage::parse("nope").is_err());
    }

    #[test]
    fn bad_params_are_errors() {
        let v = 5;
        let d = SamplerConfig::default;
        let bad = [
            SamplerConfig { top_p: 0.0, ..d() },
            SamplerConfig { top_p: 1.5, ..d() },
            SamplerConfig {
                temperature: -1.0,
                ..d()
            },
            SamplerConfig {
                temperature: f32::NAN,
                ..d()
            },
            SamplerConfig { min_p: 2.0, ..d() },
            SamplerConfig {
                typical_p: 0.0,
                ..d()
            },
            SamplerConfig {
                repeat_penalty: 0.0,
                ..d()
            },
            SamplerConfig {
                logit_bias: vec![(9, 1.0)],
                ..d()
            },
            SamplerConfig {
                logit_bias: vec![(1, f32::NAN)],
                ..d()
            },
            SamplerConfig {
                top_k: 0,
                order: vec![Stage::TopK],
                ..d()
            },
        ];
        for c in bad {
            assert!(c.validate(v).is_err(), "{c:?}");
        }
        assert!(d().validate(v).is_ok());
    }

    #[test]
    fn everything_banned_is_an_error_not_a_panic() {
        let cfg = SamplerConfig {
            logit_bias: (0..3).map(|t| (t, f32::NEG_INFINITY)).collect(),
            ..SamplerConfig::pure(1)
        };
        let mut s = Sampler::new(cfg, 3).unwrap();
        let err = s.sample(&row(&[0.2, 0.3, 0.5]), &[]).unwrap_err();
        assert!(matches!(err, GenerateError::EmptyVocabulary { .. }));
    }

    #[test]
    fn ngram_bans_match_hand_computation() {
        // history 1 2 3 1 2: the bigram prefix (2) was followed by 3 -> ban 3 for n=2;
        // trigram prefix (1 2) was followed by 3 -> ban 3 for n=3.
        assert_eq!(banned_by_ngram(&[1, 2, 3, 1, 2], 2), vec![3]);
        assert_eq!(banned_by_ngram(&[1, 2, 3, 1, 2], 3), vec![3]);
        assert_eq!(banned_by_ngram(&[1, 2, 3, 1, 2], 1), vec![1, 2, 3]);
        assert!(banned_by_ngram(&[1], 3).is_empty());
    }

    #[test]
    fn penalties_follow_llama_cpp_formula() {
        let mut c = Candidates::from_logprobs(&[-1.0, -2.0, -3.0]);
        penalties(&mut c, &[0, 0, 2], 1.5, 0.1, 0.2);
        let l: Vec<f32> = c.items.iter().map(|x| x.1).collect();
        assert!((l[0] - (-1.5 - 2.0 * 0.2 - 0.1)).abs() < 1e-6);
        assert_eq!(l[1], -2.0);
        assert!((l[2] - (-4.5 - 0.2 - 0.1)).abs() < 1e-6);
    }

    #[test]
    fn greedy_picks_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplerConfig::greedy(), 4).unwrap();
        let ch = s.sample(&row(&[0.1, 0.4, 0.4, 0.1]), &[]).unwrap();
        assert_eq!(ch.token, 1);
        assert_eq!(ch.logprob_sampler, 0.0);
    }
}
