//! The uniform model: p(x_t | x_<t) = 1/V. The baseline every model must beat, and a
//! check on evaluation code (its perplexity is exactly V).

use super::{check_token, LanguageModel, ModelError};

/// The uniform distribution over a vocabulary of `vocab_size` tokens.
#[derive(Debug, Clone)]
pub struct Uniform {
    pub vocab_size: usize,
    pub bos_token: u32,
}

impl Uniform {
    /// A uniform model over `vocab_size` tokens whose conditioning token is `bos_token`.
    pub fn new(vocab_size: usize, bos_token: u32) -> Result<Self, ModelError> {
        if vocab_size == 0 {
            return Err(ModelError::InvalidConfig(
                "vocabulary size must be positive".into(),
            ));
        }
        check_token(bos_token, vocab_size)?;
        Ok(Self {
            vocab_size,
            bos_token,
        })
    }
}

impl LanguageModel for Uniform {
    type State = ();

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
    fn max_context(&self) -> Option<usize> {
        None
    }
    fn bos_token(&self) -> u32 {
        self.bos_token
    }
    fn describe(&self) -> String {
        format!("uniform over {} tokens", self.vocab_size)
    }
    fn new_state(&self) {}

    fn feed(&self, _state: &mut (), token: u32, logprobs: &mut [f32]) -> Result<(), ModelError> {
        check_token(token, self.vocab_size)?;
        logprobs.fill(-(self.vocab_size as f32).ln());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_conforms_and_has_perplexity_v() {
        let m = Uniform::new(7, 6).unwrap();
        super::super::conformance::check_model(&m, &[6, 1, 2, 3, 0, 5], 1e-6);
        let lp = m.score_next(&[6, 1, 2, 3]).unwrap();
        let mean_nll = -lp.iter().map(|&x| x as f64).sum::<f64>() / lp.len() as f64;
        assert!((mean_nll.exp() - 7.0).abs() < 1e-5);
        assert!(matches!(
            m.score_next(&[6, 7]),
            Err(ModelError::TokenOutOfRange { .. })
        ));
    }
}
