//! Hugging Face-compatible checkpoints: `model.safetensors` with GPT-2's tensor names
//! (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight` (C, 3C), ...; the tied
//! LM head is not stored, as `save_pretrained` does) and a `config.json` that
//! `GPT2LMHeadModel.from_pretrained(dir)` loads as-is (checked by tools/gen_gpt2_fixture.py).
//!
//! Loading accepts names with or without the `transformer.` prefix (the hub's `gpt2` files
//! have none), ignores the `attn.bias`/`attn.masked_bias` buffers and `lm_head.weight`
//! (tied), and refuses anything arlm's kernels would compute differently (another
//! activation, untied head, a different MLP width, missing tensors, wrong shapes) with a
//! message naming the field or tensor.

use super::{Activation, Float, Gpt, GptConfig};
use crate::atomic::write_atomic;
use crate::model::ModelError;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};
use std::path::Path;

/// File names inside a model directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The configuration file.
pub const CONFIG_FILE: &str = "config.json";

/// The config.json `transformers` expects for this model.
pub fn hf_config(config: &GptConfig, bos_token: u32) -> Value {
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": null,
        "activation_function": config.activation.hf_name(),
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "use_cache": true,
        "bos_token_id": bos_token,
        "eos_token_id": bos_token,
        "tie_word_embeddings": true,
        "torch_dtype": "float32"
    })
}

/// Writes `dir/model.safetensors` and `dir/config.json` (each atomically).
pub fn save<F: Float>(model: &Gpt<F>, dir: &Path) -> Result<(), ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let params: Vec<f32> = model.params().iter().map(|x| x.to_f64() as f32).collect();
    let bytes: Vec<u8> = params.iter().flat_map(|x| x.to_le_bytes()).collect();
    let specs = model.config.tensors();
    let mut views = Vec::with_capacity(specs.len());
    for s in &specs {
        let data = &bytes[s.offset * 4..(s.offset + s.len) * 4];
        let view = TensorView::new(Dtype::F32, s.shape.clone(), data)
            .map_err(|e| ModelError::InvalidConfig(format!("tensor {}: {e}", s.name)))?;
        views.push((format!("transformer.{}", s.name), view));
    }
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let out = safetensors::serialize(views, Some(meta)).map_err(|e| ModelError::Format {
        path: dir.join(WEIGHTS_FILE),
        message: e.to_string(),
    })?;
    let wpath = dir.join(WEIGHTS_FILE);
    write_atomic(&wpath, &out).map_err(io(&wpath))?;
    let cpath = dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&hf_config(&model.config, model.bos_token))
        .expect("JSON values serialize");
    write_atomic(&cpath, text.as_bytes()).map_err(io(&cpath))?;
    Ok(())
}

/// Reads a GPT-2 configuration from a Hugging Face config.json value, refusing variants
/// arlm does not implement. Returns the config and the BOS/EOS token id if given.
pub fn config_from_json(v: &Value, path: &Path) -> Result<(GptConfig, Option<u32>), ModelError> {
    let err = |message: String| ModelError::Format {
        path: path.to_path_buf(),
        message,
    };
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    if model_type != "gpt2" {
        return Err(err(format!(
            "model_type is {model_type:?}, expected \"gpt2\""
        )));
    }
    let int = |key: &str, default: Option<usize>| -> Result<usize, ModelError> {
        match v.get(key) {
            Some(x) => x
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| err(format!("{key} must be a non-negative integer, got {x}"))),
            None => default.ok_or_else(|| err(format!("missing {key}"))),
        }
    };
    let n_embd = int("n_embd", None)?;
    let config = GptConfig {
        n_layer: int("n_layer", None)?,
        n_head: int("n_head", None)?,
        n_embd,
        block_size: int("n_positions", None)?,
        vocab_size: int("vocab_size", None)?,
        dropout: v.get("resid_pdrop").and_then(Value::as_f64).unwrap_or(0.0) as f32,
        activation: activation_from_json(v, path)?,
    };
    if let Some(inner) = v.get("n_inner").filter(|x| !x.is_null()) {
        if inner.as_u64() != Some(4 * n_embd as u64) {
            return Err(err(format!(
                "n_inner {inner} is not supported (arlm's MLP width is 4 * n_embd)"
            )));
        }
    }
    let flag = |key: &str, want: bool| -> Result<(), ModelError> {
        match v.get(key).and_then(Value::as_bool) {
            Some(b) if b != want => Err(err(format!("{key} = {b} is not supported"))),
            _ => Ok(()),
        }
    };
    flag("tie_word_embeddings", true)?;
    flag("scale_attn_weights", true)?;
    flag("scale_attn_by_inverse_layer_idx", false)?;
    if let Some(eps) = v.get("layer_norm_epsilon").and_then(Value::as_f64) {
        if (eps - 1e-5).abs() > 1e-12 {
            return Err(err(format!(
                "layer_norm_epsilon {eps} is not supported (arlm uses 1e-5)"
            )));
        }
    }
    config
        .validate()
        .map_err(|e| err(format!("invalid GPT-2 configuration: {e}")))?;
    let bos = v
        .get("eos_token_id")
        .or_else(|| v.get("bos_token_id"))
        .and_then(Value::as_u64)
        .filter(|&b| (b as usize) < config.vocab_size)
        .map(|b| b as u32);
    Ok((config, bos))
}

/// The MLP activation named by config.json's `activation_function` (absent: GPT-2's
/// `gelu_new`), refusing the ones arlm does not implement.
pub fn activation_from_json(v: &Value, path: &Path) -> Result<Activation, ModelError> {
    let name = v
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new");
    Activation::from_hf_name(name).ok_or_else(|| ModelError::Format {
        path: path.to_path_buf(),
        message: format!(
            "activation_function {name:?} is not supported (arlm implements GELU: gelu_new, \
             gelu_pytorch_tanh and gelu)"
        ),
    })
}

/// Loads `dir/config.json` and `dir/model.safetensors`.
pub fn load(dir: &Path) -> Result<Gpt<f32>, ModelError> {
    let (value, cpath, bytes, wpath) =
        crate::model::read_model_files(dir, CONFIG_FILE, WEIGHTS_FILE)?;
    let (config, bos) = config_from_json(&value, &cpath)?;
    let mut model = load_weights(config, &bytes, &wpath)?;
    if let Some(b) = bos {
        model.bos_token = b;
    }
    Ok(model)
}

/// Builds a model of `config` from safetensors bytes, checking every tensor's shape.
pub fn load_weights(config: GptConfig, bytes: &[u8], path: &Path) -> Result<Gpt<f32>, ModelError> {
    let err = |message: String| ModelError::Format {
        path: path.to_path_buf(),
        message,
    };
    config
        .validate()
        .map_err(|e| err(format!("invalid GPT-2 configuration: {e}")))?;
    // Before allocating: the file must be large enough for the config's parameters even
    // at 2 bytes each (BF16), so a damaged config.json cannot ask for terabytes.
    let n = config.num_params();
    if (n as u128) * 2 > bytes.len() as u128 {
        return Err(err(format!(
            "config.json implies {n} parameters (at least {} bytes) but the file has {} bytes",
            n as u128 * 2,
            bytes.len()
        )));
    }
    let st =
        SafeTensors::deserialize(bytes).map_err(|e| err(format!("not a safetensors file: {e}")))?;
    // The decode step streams these every token (f32 weights): huge pages.
    let mut params = crate::huge_pages::zeroed_vec::<f32>(n);
    for spec in config.tensors() {
        let prefixed = format!("transformer.{}", spec.name);
        let t = st
            .tensor(&prefixed)
            .or_else(|_| st.tensor(&spec.name))
            .map_err(|_| err(format!("missing tensor {prefixed}")))?;
        if t.shape() != spec.shape.as_slice() {
            return Err(err(format!(
                "tensor {prefixed} has shape {:?} but config.json implies {:?}",
                t.shape(),
                spec.shape
            )));
        }
        let dst = &mut params[spec.offset..spec.offset + spec.len];
        match t.dtype() {
            Dtype::F32 => {
                for (d, ch) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                    *d = f32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]);
                }
            }
            Dtype::BF16 => {
                for (d, ch) in dst.iter_mut().zip(t.data().chunks_exact(2)) {
                    *d = f32::from_bits((u16::from_le_bytes([ch[0], ch[1]]) as u32) << 16);
                }
            }
            other => {
                return Err(err(format!(
                    "tensor {prefixed} has dtype {other:?}; arlm reads F32 and BF16"
                )))
            }
        }
    }
    // A NaN or inf weight would turn every score into NaN with exit 0: refuse it here,
    // by name (one pass over the weights, well under the cost of reading them).
    for spec in config.tensors() {
        let slice = &params[spec.offset..spec.offset + spec.len];
        crate::model::check_finite_tensor(&spec.name, slice, path)?;
    }
    Gpt::from_params(config, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GptConfig {
        GptConfig {
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            block_size: 8,
            vocab_size: 11,
            dropout: 0.0,
            activation: Default::default(),
        }
    }

    #[test]
    fn save_load_round_trip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Gpt::new(cfg(), 5).unwrap();
        m.bos_token = 3;
        m.save(dir.path()).unwrap();
        let back = Gpt::load(dir.path()).unwrap();
        assert_eq!(back.params(), m.params());
        assert_eq!(back.config, m.config);
        assert_eq!(back.bos_token, 3);

        // A config whose shapes disagree with the weights is refused, naming the tensor.
        let cpath = dir.path().join(CONFIG_FILE);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cpath).unwrap()).unwrap();
        v["n_embd"] = json!(16);
        std::fs::write(&cpath, v.to_string()).unwrap();
        let e = Gpt::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("config.json implies"), "{e}");
        // Sizes from a hostile config.json: errors before any allocation, never a wrap.
        for (key, val) in [
            ("n_layer", json!(1_000_000_000_000u64)),
            ("n_embd", json!(1u64 << 32)),
            ("vocab_size", json!(u64::MAX)),
        ] {
            let mut w = v.clone();
            w["n_embd"] = json!(8);
            w[key] = val;
            std::fs::write(&cpath, w.to_string()).unwrap();
            let e = Gpt::load(dir.path()).unwrap_err().to_string();
            assert!(
                e.contains("cannot be held") || e.contains("too large") || e.contains("implies"),
                "{key}: {e}"
            );
        }
        // Same shapes, one fewer head: the tensors match, so the load succeeds.
        v["n_embd"] = json!(8);
        v["n_head"] = json!(1);
        std::fs::write(&cpath, v.to_string()).unwrap();
        Gpt::load(dir.path()).unwrap();
        v["n_head"] = json!(2);
        v["activation_function"] = json!("relu");
        std::fs::write(&cpath, v.to_string()).unwrap();
        let e = Gpt::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("activation_function"), "{e}");
        v["activation_function"] = json!("gelu_new");
        v["n_head"] = json!(3);
        std::fs::write(&cpath, v.to_string()).unwrap();
        assert!(Gpt::load(dir.path()).is_err());
    }

    #[test]
    fn non_finite_weights_are_refused_by_tensor_name() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let dir = tempfile::tempdir().unwrap();
            let mut m = Gpt::new(cfg(), 5).unwrap();
            let spec = cfg()
                .tensors()
                .into_iter()
                .find(|t| t.name == "h.1.mlp.c_fc.weight")
                .unwrap();
            m.params_mut()[spec.offset + 3] = bad;
            m.save(dir.path()).unwrap();
            let e = Gpt::load(dir.path()).unwrap_err().to_string();
            assert!(
                e.contains("h.1.mlp.c_fc.weight") && e.contains("element 3"),
                "{e}"
            );
        }
    }
}
