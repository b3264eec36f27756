//! Which model a run trains: [`ModelSpec`], and the one function that builds it.
//!
//! The training loop only knows [`super::Trainable`]; a model class enters training
//! through one variant of [`ModelSpec`] (its shape, without the vocabulary, which comes
//! from the data) and one arm in [`ModelSpec::build`] (in `build.rs`) and
//! [`ModelSpec::of_model`]. The CLI calls [`ModelSpec::build`] and nothing class-specific.
//!
//! In JSON (`train_state.json`) the spec is an object tagged by `class`:
//! `{"class": "gpt", "n_layer": 4, ...}` or `{"class": "rnn", "cell": "lstm", ...}`.

use super::rnn::RnnSpec;
use super::TrainError;
use crate::load::AnyModel;
use crate::model::gpt::Activation;
use serde::{Deserialize, Serialize};

/// The shape of a GPT to train (the vocabulary comes from the data, the context length
/// from the config's `block_size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptSpec {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Learn biases in the linear layers and LayerNorms (GPT-2 has them). `false` is
    /// nanoGPT's `bias=False`: the bias tensors stay in the checkpoint (so it still loads
    /// as a GPT-2) but are held at zero, which is the same function as having none.
    #[serde(default = "default_bias")]
    pub bias: bool,
    /// The MLP activation: `gelu_new` (GPT-2's tanh approximation, the default) or `gelu`
    /// (exact erf, PyTorch's `nn.GELU()` as in nanoGPT); saved as config.json's
    /// `activation_function`.
    #[serde(default, skip_serializing_if = "Activation::is_default")]
    pub activation: Activation,
}

fn default_bias() -> bool {
    true
}

/// The model class of a run and its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "lowercase")]
pub enum ModelSpec {
    /// A GPT-2 style transformer ([`super::TrainableGpt`]); batched as random windows.
    Gpt(GptSpec),
    /// An LSTM / GRU / tanh RNN ([`super::TrainableRnn`]); batched as contiguous streams with
    /// the state carried (truncated BPTT).
    Rnn(RnnSpec),
}

impl ModelSpec {
    /// The class name used in messages and in `model` of a TOML config's answer
    /// (`gpt`, `lstm`, `gru`, `rnn`).
    pub fn class_name(&self) -> &'static str {
        match self {
            ModelSpec::Gpt(_) => "gpt",
            ModelSpec::Rnn(r) => match r.cell {
                crate::model::rnn::CellKind::Lstm => "lstm",
                crate::model::rnn::CellKind::Gru => "gru",
                crate::model::rnn::CellKind::Rnn => "rnn",
            },
        }
    }

    /// Whether the loop batches this model as contiguous streams (truncated BPTT).
    pub fn is_recurrent(&self) -> bool {
        matches!(self, ModelSpec::Rnn(_))
    }

    /// Number of layers (both classes have them; flags set it for either).
    pub fn n_layer(&self) -> usize {
        match self {
            ModelSpec::Gpt(g) => g.n_layer,
            ModelSpec::Rnn(r) => r.n_layer,
        }
    }

    /// Checks the shape values a run cannot start with.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        match self {
            ModelSpec::Gpt(g) => {
                if g.n_layer == 0 || g.n_head == 0 || g.n_embd == 0 {
                    return bad("n_layer, n_head and n_embd must be positive".into());
                }
                if !g.n_embd.is_multiple_of(g.n_head) {
                    return bad(format!(
                        "n_embd ({}) must be a multiple of n_head ({})",
                        g.n_embd, g.n_head
                    ));
                }
            }
            ModelSpec::Rnn(r) => {
                if r.n_layer == 0 || r.hidden == 0 || r.embd == Some(0) {
                    return bad("n_layer, hidden and embd must be positive".into());
                }
                if r.tied && r.embd.is_some_and(|e| e != r.hidden) {
                    return bad(format!(
                        "tied embeddings need embd = hidden (embd {:?}, hidden {})",
                        r.embd, r.hidden
                    ));
                }
            }
        }
        Ok(())
    }

    /// The spec of a loaded model (its class and shape), or an error naming `path` when
    /// arlm cannot train that class. A GPT's `bias` is `false` when every bias is zero.
    pub fn of_model(model: &AnyModel, path: &std::path::Path) -> Result<ModelSpec, TrainError> {
        match model {
            AnyModel::Gpt(g) => {
                let c = g.config;
                let params = g.params();
                let bias = c
                    .tensors()
                    .iter()
                    .filter(|t| t.name.ends_with(".bias"))
                    .any(|t| params[t.offset..t.offset + t.len].iter().any(|&x| x != 0.0));
                Ok(ModelSpec::Gpt(GptSpec {
                    n_layer: c.n_layer,
                    n_head: c.n_head,
                    n_embd: c.n_embd,
                    bias,
                    activation: c.activation,
                }))
            }
            AnyModel::Rnn(r) => {
                let c = r.config;
                Ok(ModelSpec::Rnn(RnnSpec {
                    cell: c.kind,
                    n_layer: c.n_layer,
                    hidden: c.hidden,
                    embd: (c.embd != c.hidden).then_some(c.embd),
                    tied: c.tied,
                    // Unused: the weights come from the directory.
                    init: crate::model::rnn::InitScheme::Uniform(0.1),
                }))
            }
            other => {
                let what = crate::with_model!(other, m => crate::model::LanguageModel::describe(m));
                Err(TrainError::Config(format!(
                    "--init-from {}: {what} is not a model arlm can train (a GPT or an RNN)",
                    path.display()
                )))
            }
        }
    }

    /// Names of the shape fields on which `self` and `other` differ (`"n_embd: 32 -> 64"`).
    pub fn differences(&self, other: &ModelSpec) -> Vec<String> {
        let a = serde_json::to_value(self).unwrap_or_default();
        let b = serde_json::to_value(other).unwrap_or_default();
        let mut out = Vec::new();
        if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
            // Both sides' keys: a field at its default is left out of the JSON.
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                if k == "init" {
                    continue;
                }
                let va = a.get(k).cloned().unwrap_or_default();
                let vb = b.get(k).cloned().unwrap_or_default();
                if va != vb {
                    out.push(format!("{k}: {va} -> {vb}"));
                }
            }
        }
        out
    }
}

/// Rewrites a `train_state.json` config object of the flat form (the GPT's `n_layer`,
/// `n_head`, `n_embd`, `bias` at the top level, and an optional `rnn` object) into the
/// `model` form, and moves a top-level `activation` into a GPT's `model`, so checkpoints
/// of every earlier form resume.
pub(crate) fn upgrade_flat_config(config: &mut serde_json::Value) {
    let Some(obj) = config.as_object_mut() else {
        return;
    };
    let activation = obj.remove("activation");
    if !obj.contains_key("model") {
        let gpt: Vec<(String, serde_json::Value)> = ["n_layer", "n_head", "n_embd", "bias"]
            .iter()
            .filter_map(|k| obj.remove(*k).map(|v| (k.to_string(), v)))
            .collect();
        let model = match obj.remove("rnn") {
            Some(serde_json::Value::Object(mut r)) => {
                r.insert("class".into(), "rnn".into());
                serde_json::Value::Object(r)
            }
            _ => {
                let mut g: serde_json::Map<String, serde_json::Value> = gpt.into_iter().collect();
                g.insert("class".into(), "gpt".into());
                serde_json::Value::Object(g)
            }
        };
        obj.insert("model".into(), model);
    }
    if let (Some(act), Some(serde_json::Value::Object(m))) = (activation, obj.get_mut("model")) {
        m.insert("activation".into(), act);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_json_round_trip_and_flat_form() {
        use crate::train::config::{TrainConfig, PRESETS};
        for p in PRESETS {
            let c = TrainConfig::preset(p).unwrap();
            let v = serde_json::to_value(&c).unwrap();
            let back: TrainConfig = serde_json::from_value(v).unwrap();
            assert_eq!(back, c, "{p}");
        }
        let flat = serde_json::json!({"n_layer": 2, "n_head": 2, "n_embd": 32, "bias": false});
        let mut v = flat.clone();
        upgrade_flat_config(&mut v);
        let spec: ModelSpec = serde_json::from_value(v["model"].clone()).unwrap();
        let want = GptSpec {
            n_layer: 2,
            n_head: 2,
            n_embd: 32,
            bias: false,
            activation: Activation::GeluTanh,
        };
        assert_eq!(spec, ModelSpec::Gpt(want.clone()));
        // A top-level `activation` (flat form, or beside `model`) moves into the GPT's spec.
        for mut v in [
            serde_json::json!({"n_layer": 2, "n_head": 2, "n_embd": 32, "bias": false,
                "activation": "gelu"}),
            serde_json::json!({"model": {"class": "gpt", "n_layer": 2, "n_head": 2,
                "n_embd": 32, "bias": false}, "activation": "gelu"}),
        ] {
            upgrade_flat_config(&mut v);
            assert!(v.get("activation").is_none());
            let spec: ModelSpec = serde_json::from_value(v["model"].clone()).unwrap();
            let exact = GptSpec {
                activation: Activation::GeluExact,
                ..want.clone()
            };
            assert_eq!(spec, ModelSpec::Gpt(exact));
        }
        let mut v = serde_json::json!({"n_layer": 4, "n_head": 4, "n_embd": 128, "bias": false,
            "rnn": {"cell": "gru", "n_layer": 2, "hidden": 200, "embd": null,
                    "tied": false, "init": {"uniform": 0.1}}});
        upgrade_flat_config(&mut v);
        let spec: ModelSpec = serde_json::from_value(v["model"].clone()).unwrap();
        assert_eq!(spec.class_name(), "gru");
        assert!(v.get("n_layer").is_none() && v.get("rnn").is_none());
        // Unknown fields inside the spec are refused, not ignored.
        let bad = serde_json::json!({"class": "gpt", "n_layer": 1, "n_head": 1, "n_embd": 8,
            "n_lyer": 3});
        assert!(serde_json::from_value::<ModelSpec>(bad).is_err());
    }
}
