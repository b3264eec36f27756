//! Opening a model from disk, whatever its class, together with its tokenizer.
//!
//! A model directory holds `config.json` (its `model_type` says the class: `gpt2` for the
//! transformer, as Hugging Face writes it; `arlm-uniform`, `arlm-rnn`, ... for ours) and
//! `tokenizer.json`. [`load`] looks the `model_type` up in one table, [`CLASSES`], whose
//! entry opens the directory; commands that take `--model` call [`load`] and then run
//! their generic code on the concrete model through [`with_model!`](crate::with_model).
//!
//! A new model class is its folder under `src/model/` plus, here, one [`CLASSES`] entry,
//! one [`AnyModel`] variant and its arm in `with_model!` (static dispatch on the hot path
//! needs the concrete type; see docs/ARCHITECTURE.md, "Adding a model class").

use crate::model::gpt::Gpt;
use crate::model::uniform::Uniform;
use crate::model::{LanguageModel, ModelError};
use crate::tokenizer::{self, Tokenizer};
use std::path::{Path, PathBuf};

/// A model of any class arlm knows.
pub enum AnyModel {
    Uniform(Uniform),
    /// Kneser-Ney or any ARPA backoff model (`arlm-kneser-ney`, or a bare `.arpa` file).
    Backoff(crate::model::ngram::backoff::BackoffModel),
    /// Add-k smoothed n-gram counts (`arlm-add-k`).
    AddK(crate::model::ngram::addk::AddK),
    /// The synthetic corpus's exact source (`arlm corpus synth --model-out`).
    Synth(crate::corpus::synth::SynthSource),
    Gpt(Gpt),
    /// LSTM / GRU / tanh RNN (`arlm-rnn`).
    Rnn(crate::model::rnn::Rnn),
}

/// Runs `$body` with `$m` bound to the concrete model inside an [`AnyModel`], so generic
/// functions over [`LanguageModel`] get static dispatch on the hot path.
#[macro_export]
macro_rules! with_model {
    ($any:expr, $m:ident => $body:expr) => {
        match $any {
            $crate::load::AnyModel::Uniform($m) => $body,
            $crate::load::AnyModel::Backoff($m) => $body,
            $crate::load::AnyModel::AddK($m) => $body,
            $crate::load::AnyModel::Synth($m) => $body,
            $crate::load::AnyModel::Gpt($m) => $body,
            $crate::load::AnyModel::Rnn($m) => $body,
        }
    };
}

/// A model, the tokenizer it was trained with, and where it came from.
pub struct LoadedModel {
    pub model: AnyModel,
    pub tokenizer: Box<dyn Tokenizer>,
    pub path: PathBuf,
}

impl LoadedModel {
    /// Stores the model's weights in `format` for inference (see
    /// [`Gpt::with_weight_format`]). Only the GPT has reduced-precision weights; f32 is
    /// accepted for every model.
    pub fn set_weight_format(
        &mut self,
        format: crate::model::gpt::WeightFormat,
    ) -> Result<(), ModelError> {
        if format == crate::model::gpt::WeightFormat::F32 {
            return Ok(());
        }
        match std::mem::replace(&mut self.model, AnyModel::Uniform(Uniform::new(1, 0)?)) {
            AnyModel::Gpt(g) => {
                self.model = AnyModel::Gpt(g.with_weight_format(format));
                Ok(())
            }
            other => {
                let what = with_model!(&other, m => m.describe());
                self.model = other;
                Err(ModelError::InvalidConfig(format!(
                    "--weights {format} needs a GPT model; {what} has no reduced-precision weights"
                )))
            }
        }
    }

    /// The model's one-line description.
    pub fn describe(&self) -> String {
        with_model!(&self.model, m => m.describe())
    }
}

/// A model class that [`load`] opens from a directory.
pub struct ModelClass {
    /// The `model_type` of its `config.json`.
    pub model_type: &'static str,
    /// Opens the directory, given its parsed `config.json` and its tokenizer.
    pub open: fn(&Path, &serde_json::Value, &dyn Tokenizer) -> Result<AnyModel, ModelError>,
    /// Opens the directory with a tokenizer stored in the model's own files, when they
    /// hold one (`Ok(None)`: they do not, and `open` runs with `tokenizer.json`'s).
    pub open_self_contained: Option<SelfContained>,
}

/// See [`ModelClass::open_self_contained`].
pub type SelfContained =
    fn(&Path, &serde_json::Value) -> Result<Option<(AnyModel, Box<dyn Tokenizer>)>, ModelError>;

/// Every model class a directory can hold, by `model_type`.
pub const CLASSES: &[ModelClass] = &[
    ModelClass {
        model_type: "arlm-uniform",
        open: |_, _, tok| {
            Ok(AnyModel::Uniform(Uniform::new(
                tok.vocab_size(),
                tok.eot_token(),
            )?))
        },
        open_self_contained: None,
    },
    ModelClass {
        model_type: crate::model::ngram::store::KN_TYPE,
        open: |dir, config, tok| {
            Ok(AnyModel::Backoff(crate::model::ngram::store::load_kn(
                dir, config, tok,
            )?))
        },
        // model.bin's vocabulary: no tokenizer.json to parse.
        open_self_contained: Some(|dir, config| {
            let found = crate::model::ngram::store::load_kn_self_contained(dir, config)?;
            Ok(found.map(|(m, t)| (AnyModel::Backoff(m), Box::new(t) as Box<dyn Tokenizer>)))
        }),
    },
    ModelClass {
        model_type: crate::model::ngram::store::ADDK_TYPE,
        open: |dir, config, tok| {
            Ok(AnyModel::AddK(crate::model::ngram::store::load_addk(
                dir, config, tok,
            )?))
        },
        open_self_contained: None,
    },
    ModelClass {
        model_type: "arlm-synth",
        open: open_synth,
        open_self_contained: None,
    },
    ModelClass {
        model_type: "gpt2",
        // The tokenizer is the truth about which token separates documents.
        open: |dir, _, tok| {
            let mut gpt = Gpt::load(dir)?;
            gpt.bos_token = tok.eot_token();
            Ok(AnyModel::Gpt(gpt))
        },
        open_self_contained: None,
    },
    ModelClass {
        model_type: crate::model::rnn::checkpoint::MODEL_TYPE,
        open: |dir, _, tok| {
            let mut rnn = crate::model::rnn::checkpoint::load(dir)?;
            rnn.bos_token = tok.eot_token();
            Ok(AnyModel::Rnn(rnn))
        },
        open_self_contained: None,
    },
];

fn open_synth(
    dir: &Path,
    config: &serde_json::Value,
    _: &dyn Tokenizer,
) -> Result<AnyModel, ModelError> {
    let want = crate::corpus::synth::GRAMMAR_VERSION as u64;
    let got = config.get("grammar_version").and_then(|v| v.as_u64());
    if got != Some(want) {
        return Err(ModelError::Format {
            path: dir.join("config.json"),
            message: format!("arlm-synth grammar_version {got:?}, this build has version {want}"),
        });
    }
    Ok(AnyModel::Synth(crate::corpus::synth::SynthSource::new()))
}

fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        message: format!("not valid JSON: {e}"),
    })
}

/// Opens the model at `path`: a model directory, or an ARPA file (`.arpa`, `.arpa.gz`).
pub fn load(path: &Path) -> Result<LoadedModel, ModelError> {
    if !path.exists() {
        return Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        });
    }
    if crate::model::ngram::store::is_arpa_path(path) {
        let (model, tok) = crate::model::ngram::store::load_arpa(path)?;
        return Ok(LoadedModel {
            model: AnyModel::Backoff(model),
            tokenizer: Box::new(tok),
            path: path.to_path_buf(),
        });
    }
    let config_path = path.join("config.json");
    let config = read_json(&config_path)?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let Some(class) = CLASSES.iter().find(|c| c.model_type == model_type) else {
        let known: Vec<&str> = CLASSES.iter().map(|c| c.model_type).collect();
        return Err(ModelError::Format {
            path: config_path,
            message: format!(
                "unknown model_type {model_type:?} (known: {})",
                known.join(", ")
            ),
        });
    };
    if let Some(open) = class.open_self_contained {
        if let Some((model, tokenizer)) = open(path, &config)? {
            return Ok(LoadedModel {
                model,
                tokenizer,
                path: path.to_path_buf(),
            });
        }
    }
    let tokenizer =
        tokenizer::load(&path.join("tokenizer.json")).map_err(|e| ModelError::Format {
            path: path.join("tokenizer.json"),
            message: crate::error_chain(&e),
        })?;
    let model = (class.open)(path, &config, &*tokenizer)?;
    let vocab = with_model!(&model, m => m.vocab_size());
    if vocab != tokenizer.vocab_size() {
        return Err(ModelError::Format {
            path: path.to_path_buf(),
            message: format!(
                "model vocabulary ({vocab}) and tokenizer vocabulary ({}) differ",
                tokenizer.vocab_size()
            ),
        });
    }
    Ok(LoadedModel {
        model,
        tokenizer,
        path: path.to_path_buf(),
    })
}

/// Writes a uniform model directory for `tok` (a baseline, and a fixture for tests).
pub fn save_uniform(dir: &Path, tok: &dyn Tokenizer) -> Result<(), ModelError> {
    let io = |source| ModelError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let config = serde_json::json!({"model_type": "arlm-uniform", "vocab_size": tok.vocab_size()});
    crate::atomic::write_atomic(dir.join("config.json"), config.to_string().as_bytes())
        .map_err(io)?;
    tokenizer::save_in_model_dir(tok, dir, None).map_err(|e| ModelError::Format {
        path: dir.to_path_buf(),
        message: crate::error_chain(&e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::bytes::ByteTokenizer;

    #[test]
    fn uniform_round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        save_uniform(dir.path(), &ByteTokenizer).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.tokenizer.kind(), "bytes");
        let lp = with_model!(&loaded.model, m => m.score_next(&[256, 1, 2]).unwrap());
        assert!((lp[0] + (257f32).ln()).abs() < 1e-6);
        assert!(load(&dir.path().join("missing")).is_err());
    }
}
