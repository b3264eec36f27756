//! Checkpoints PyTorch reads: `model.safetensors` with the `state_dict` names of
//! PyTorch's `word_language_model` `RNNModel` (`encoder.weight`, `rnn.weight_ih_l0`,
//! `rnn.weight_hh_l0`, `rnn.bias_ih_l0`, `rnn.bias_hh_l0`, ..., `decoder.weight`,
//! `decoder.bias`) and a `config.json` with `model_type` `arlm-rnn` and the constructor
//! arguments of `RNNModel(rnn_type, ntoken, ninp, nhid, nlayers, dropout, tie_weights)`.
//! A tied decoder weight is written under both names, as PyTorch's `state_dict` lists it;
//! on load the two must be equal. tools/gen_rnn_fixture.py loads these into PyTorch.

use super::{CellKind, Rnn, RnnConfig};
use crate::atomic::write_atomic;
use crate::model::ModelError;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use std::path::Path;

/// `model_type` in config.json.
pub const MODEL_TYPE: &str = "arlm-rnn";
/// Weights file inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Configuration file.
pub const CONFIG_FILE: &str = "config.json";

/// The config.json of a model.
pub fn config_json(c: &RnnConfig, bos_token: u32) -> Value {
    json!({
        "model_type": MODEL_TYPE,
        "architectures": ["RNNModel"],
        "rnn_type": c.kind.torch_name(),
        "ntoken": c.vocab_size,
        "ninp": c.embd,
        "nhid": c.hidden,
        "nlayers": c.n_layer,
        "dropout": c.dropout,
        "tie_weights": c.tied,
        "bos_token_id": bos_token,
        "torch_dtype": "float32"
    })
}

/// Reads a configuration (and the BOS id if given) from config.json's value.
pub fn config_from_json(v: &Value, path: &Path) -> Result<(RnnConfig, Option<u32>), ModelError> {
    let err = |message: String| ModelError::Format {
        path: path.to_path_buf(),
        message,
    };
    let int = |key: &str| -> Result<usize, ModelError> {
        let x = v.get(key).ok_or_else(|| err(format!("missing {key}")))?;
        x.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| err(format!("{key} must be a non-negative integer, got {x}")))
    };
    let kind_s = v
        .get("rnn_type")
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing rnn_type".into()))?;
    let kind = CellKind::parse(kind_s)
        .ok_or_else(|| err(format!("rnn_type {kind_s:?} is not LSTM, GRU or RNN_TANH")))?;
    let config = RnnConfig {
        kind,
        n_layer: int("nlayers")?,
        hidden: int("nhid")?,
        embd: int("ninp")?,
        vocab_size: int("ntoken")?,
        dropout: v.get("dropout").and_then(Value::as_f64).unwrap_or(0.0) as f32,
        tied: v
            .get("tie_weights")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };
    config.validate().map_err(|e| err(e.to_string()))?;
    let bos = v
        .get("bos_token_id")
        .and_then(Value::as_u64)
        .filter(|&b| (b as usize) < config.vocab_size)
        .map(|b| b as u32);
    Ok((config, bos))
}

/// Writes `dir/model.safetensors` and `dir/config.json` atomically.
pub fn save(model: &Rnn<f32>, dir: &Path) -> Result<(), ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let c = &model.config;
    let bytes: Vec<u8> = model
        .params()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut specs = c.tensors();
    if c.tied {
        let mut dec = specs[0].clone();
        dec.name = "decoder.weight".into();
        let at = specs.len() - 1;
        specs.insert(at, dec);
    }
    let mut views = Vec::with_capacity(specs.len());
    for s in &specs {
        let data = &bytes[s.offset * 4..(s.offset + s.len) * 4];
        let view = TensorView::new(Dtype::F32, s.shape.clone(), data)
            .map_err(|e| ModelError::InvalidConfig(format!("tensor {}: {e}", s.name)))?;
        views.push((s.name.clone(), view));
    }
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let wpath = dir.join(WEIGHTS_FILE);
    let out = safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::Format {
        path: wpath.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&wpath, &out).map_err(io(&wpath))?;
    let cpath = dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config_json(c, model.bos_token))
        .expect("JSON values serialize");
    write_atomic(&cpath, text.as_bytes()).map_err(io(&cpath))
}

/// Loads `dir/config.json` and `dir/model.safetensors`.
pub fn load(dir: &Path) -> Result<Rnn<f32>, ModelError> {
    let (value, cpath, bytes, wpath) =
        crate::model::read_model_files(dir, CONFIG_FILE, WEIGHTS_FILE)?;
    let (config, bos) = config_from_json(&value, &cpath)?;
    let mut model = load_weights(config, &bytes, &wpath)?;
    if let Some(b) = bos {
        model.bos_token = b;
    }
    Ok(model)
}

fn read_f32(t: &TensorView, name: &str, path: &Path) -> Result<Vec<f32>, ModelError> {
    if t.dtype() != Dtype::F32 {
        return Err(ModelError::Format {
            path: path.to_path_buf(),
            message: format!("tensor {name} has dtype {:?}; arlm reads F32", t.dtype()),
        });
    }
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|ch| f32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]))
        .collect();
    crate::model::check_finite_tensor(name, &values, path)?;
    Ok(values)
}

/// Builds a model of `config` from safetensors bytes, checking every tensor's shape.
pub fn load_weights(config: RnnConfig, bytes: &[u8], path: &Path) -> Result<Rnn<f32>, ModelError> {
    let err = |message: String| ModelError::Format {
        path: path.to_path_buf(),
        message,
    };
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
    // Before anything is sized from config.json: the floats it implies must fit in the
    // file, so a damaged config (nhid = 10^12) is an error, not a huge allocation.
    let implied = implied_floats(&config);
    if implied.saturating_mul(4) > bytes.len() as u128 {
        return Err(err(format!(
            "config.json implies {implied} parameters ({} bytes of f32) but the file holds {} \
             bytes: config.json does not describe these weights",
            implied.saturating_mul(4),
            bytes.len()
        )));
    }
    let mut params = vec![0f32; config.num_params()];
    for spec in config.tensors() {
        let t = st
            .tensor(&spec.name)
            .map_err(|_| err(format!("missing tensor {}", spec.name)))?;
        if t.shape() != spec.shape.as_slice() {
            return Err(err(format!(
                "tensor {} has shape {:?} but config.json implies {:?}",
                spec.name,
                t.shape(),
                spec.shape
            )));
        }
        params[spec.offset..spec.offset + spec.len]
            .copy_from_slice(&read_f32(&t, &spec.name, path)?);
    }
    if config.tied {
        if let Ok(t) = st.tensor("decoder.weight") {
            if read_f32(&t, "decoder.weight", path)? != params[..config.vocab_size * config.embd] {
                return Err(err(
                    "tie_weights is true but decoder.weight differs from encoder.weight".into(),
                ));
            }
        }
    }
    Rnn::from_params(config, params)
}

/// Parameters that `c` describes, counted in u128 so no size in a config.json can wrap.
fn implied_floats(c: &RnnConfig) -> u128 {
    let (v, e, h) = (c.vocab_size as u128, c.embd as u128, c.hidden as u128);
    let gw = c.kind.gates() as u128 * h;
    let layers = c.n_layer as u128;
    let first = gw * (e + h + 2);
    let rest = layers.saturating_sub(1) * gw * (2 * h + 2);
    let decoder = if c.tied { 0 } else { v * h };
    v * e + first + rest + decoder + v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rnn::InitScheme;

    #[test]
    fn save_load_round_trip_and_refusals() {
        for tied in [false, true] {
            let c = RnnConfig {
                kind: CellKind::Gru,
                n_layer: 2,
                hidden: 6,
                embd: 6,
                vocab_size: 9,
                dropout: 0.25,
                tied,
            };
            let dir = tempfile::tempdir().unwrap();
            let mut m = Rnn::<f32>::init(c, InitScheme::Torch, 4).unwrap();
            m.bos_token = 2;
            save(&m, dir.path()).unwrap();
            let back = load(dir.path()).unwrap();
            assert_eq!(back.params(), m.params());
            assert_eq!(implied_floats(&c), c.num_params() as u128);
            assert_eq!(back.config, c);
            assert_eq!(back.bos_token, 2);
            let cpath = dir.path().join(CONFIG_FILE);
            let mut v: Value =
                serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
            v["nhid"] = json!(7);
            v["ninp"] = json!(7);
            std::fs::write(&cpath, v.to_string()).unwrap();
            let e = load(dir.path()).unwrap_err().to_string();
            assert!(e.contains("shape"), "{e}");
            // Sizes far beyond the file are refused before any allocation.
            for (key, huge) in [("nhid", json!(1u64 << 40)), ("nlayers", json!(1u64 << 50))] {
                let mut w = v.clone();
                w["nhid"] = json!(6);
                w["ninp"] = json!(6);
                if key == "nhid" {
                    w["ninp"] = huge.clone();
                }
                w[key] = huge;
                std::fs::write(&cpath, w.to_string()).unwrap();
                let e = load(dir.path()).unwrap_err().to_string();
                assert!(e.contains("implies"), "{key}: {e}");
            }
            v["rnn_type"] = json!("LSTM2");
            std::fs::write(&cpath, v.to_string()).unwrap();
            let e = load(dir.path()).unwrap_err().to_string();
            assert!(e.contains("rnn_type"), "{e}");
        }
    }
}
