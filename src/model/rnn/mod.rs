//! Recurrent language models: LSTM, GRU and the tanh RNN (Elman), as PyTorch's
//! `word_language_model` builds them (`nn.Embedding` -> `nn.LSTM`/`nn.GRU`/`nn.RNN` ->
//! `nn.Linear`), trained by truncated backpropagation through time.
//!
//! The state after x_1..x_t is a fixed-size summary (h, c per layer), so p(x_{t+1} | x_<=t)
//! costs O(1) per token and the context is unbounded: the chain rule is applied over the
//! whole document with no window.
//!
//! # Layout
//! One flat parameter buffer in PyTorch's `state_dict` order ([`RnnConfig::tensors`]):
//! `encoder.weight` (V, E); per layer l `rnn.weight_ih_l{l}` (G*H, in), `rnn.weight_hh_l{l}`
//! (G*H, H), `rnn.bias_ih_l{l}` (G*H), `rnn.bias_hh_l{l}` (G*H), with G gate blocks in
//! PyTorch's order (LSTM i, f, g, o; GRU r, z, n; tanh 1); `decoder.weight` (V, H) unless
//! tied to the encoder (Press & Wolf 2017, E = H); `decoder.bias` (V). Checkpoints are byte
//! copies of these tensors ([`checkpoint`]).
//!
//! # Files
//! - `cell.rs`: one time step of each cell, forward and backward, on (B, ·) rows.
//! - `bptt.rs`: the (B, T) workspace, the sequence forward (input projections as one
//!   GEMM per layer, only h @ W_hh^T sequential) and backward through time.
//! - `split.rs`: the training step with the batch cut into shards, one thread each.
//! - `infer.rs`: [`LanguageModel`](crate::model::LanguageModel) for [`Rnn`].
//! - `checkpoint.rs`: `config.json` + `model.safetensors` with PyTorch names.
//!
//! The matrix products and the fused softmax + cross-entropy are the shared kernels of
//! [`crate::ops`] (`gemm_strided`, `softmax_ce_forward_backward`); this folder holds only the
//! recurrent cell math, written out by hand like the GPT's kernels because its backward
//! pass is what the finite-difference tests check.

pub mod bptt;
pub mod cell;
pub mod checkpoint;
pub mod infer;
pub mod split;

// The shared numeric layer.
pub(crate) use crate::ops::matmul::gemm_strided;
pub use crate::ops::softmax_ce::{softmax_ce_forward, softmax_ce_forward_backward};
pub use crate::ops::Float;

use crate::model::ModelError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellKind {
    /// Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch gates i, f, g, o.
    Lstm,
    /// Gated recurrent unit (Cho et al. 2014), PyTorch gates r, z, n.
    Gru,
    /// Elman RNN with tanh (PyTorch `nn.RNN`, `RNN_TANH`).
    Rnn,
}

impl CellKind {
    /// Gate blocks per layer (rows of W_ih are gates * H).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
            CellKind::Rnn => 1,
        }
    }

    /// The name in config.json and PyTorch's `rnn_type` (`LSTM`, `GRU`, `RNN_TANH`).
    pub fn torch_name(self) -> &'static str {
        match self {
            CellKind::Lstm => "LSTM",
            CellKind::Gru => "GRU",
            CellKind::Rnn => "RNN_TANH",
        }
    }

    /// Parses `LSTM`/`lstm`, `GRU`/`gru`, `RNN_TANH`/`rnn`/`tanh`.
    pub fn parse(s: &str) -> Option<CellKind> {
        match s.to_ascii_lowercase().as_str() {
            "lstm" => Some(CellKind::Lstm),
            "gru" => Some(CellKind::Gru),
            "rnn" | "rnn_tanh" | "tanh" => Some(CellKind::Rnn),
            _ => None,
        }
    }

    /// Whether the state has a cell vector c beside h.
    pub fn has_cell(self) -> bool {
        self == CellKind::Lstm
    }
}

/// How the weights are initialized.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitScheme {
    /// Every parameter uniform in [-r, r] (Zaremba et al. 2014 use r = 0.1).
    Uniform(f64),
    /// PyTorch's defaults: embedding and decoder uniform [-0.1, 0.1], decoder bias 0 (as
    /// `word_language_model`'s `init_weights`), recurrent weights and biases uniform
    /// [-1/sqrt(H), 1/sqrt(H)] (`nn.LSTM.reset_parameters`).
    Torch,
}

/// Shape of a recurrent language model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RnnConfig {
    pub kind: CellKind,
    /// Number of stacked layers L.
    pub n_layer: usize,
    /// Hidden units H per layer.
    pub hidden: usize,
    /// Embedding size E (the input size of layer 0).
    pub embd: usize,
    /// Vocabulary size V.
    pub vocab_size: usize,
    /// Dropout on the non-recurrent connections (embedding output, between layers, before
    /// the decoder), as Zaremba et al. 2014; never on the recurrent path.
    pub dropout: f32,
    /// decoder.weight is encoder.weight (requires E = H).
    pub tied: bool,
}

/// One named tensor inside the parameter buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// PyTorch `state_dict` name (`rnn.weight_ih_l0`, ...).
    pub name: String,
    pub shape: Vec<usize>,
    /// First element in the buffer.
    pub offset: usize,
    pub len: usize,
}

/// Offsets of one layer's four tensors.
#[derive(Debug, Clone, Copy)]
pub struct LayerOffsets {
    pub w_ih: usize,
    pub w_hh: usize,
    pub b_ih: usize,
    pub b_hh: usize,
    /// Input size of this layer (E for layer 0, H above).
    pub input: usize,
}

impl RnnConfig {
    /// Checks sizes and the tied-embedding condition.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if self.n_layer == 0 || self.hidden == 0 || self.embd == 0 || self.vocab_size == 0 {
            return bad(format!(
                "n_layer ({}), hidden ({}), embd ({}) and vocab_size ({}) must be positive",
                self.n_layer, self.hidden, self.embd, self.vocab_size
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if self.tied && self.embd != self.hidden {
            return bad(format!(
                "tied embeddings need embd == hidden (embd {}, hidden {})",
                self.embd, self.hidden
            ));
        }
        Ok(())
    }

    /// Rows of W_ih and W_hh: gates * H.
    pub fn gate_width(&self) -> usize {
        self.kind.gates() * self.hidden
    }

    /// Input size of layer `l`.
    pub fn layer_input(&self, l: usize) -> usize {
        if l == 0 {
            self.embd
        } else {
            self.hidden
        }
    }

    /// Offsets of layer `l`'s tensors.
    pub fn layer(&self, l: usize) -> LayerOffsets {
        let gw = self.gate_width();
        let mut off = self.vocab_size * self.embd;
        for k in 0..l {
            off += gw * (self.layer_input(k) + self.hidden + 2);
        }
        let input = self.layer_input(l);
        LayerOffsets {
            w_ih: off,
            w_hh: off + gw * input,
            b_ih: off + gw * (input + self.hidden),
            b_hh: off + gw * (input + self.hidden + 1),
            input,
        }
    }

    /// Offset of the decoder weight (the encoder's when tied) and of the decoder bias.
    pub fn decoder(&self) -> (usize, usize) {
        let l = self.layer(self.n_layer - 1);
        let end = l.b_hh + self.gate_width();
        if self.tied {
            (0, end)
        } else {
            (end, end + self.vocab_size * self.hidden)
        }
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.decoder().1 + self.vocab_size
    }

    /// Floats of state per sequence: h (and c for the LSTM) of every layer.
    pub fn state_size(&self) -> usize {
        let per = if self.kind.has_cell() { 2 } else { 1 };
        per * self.n_layer * self.hidden
    }

    /// The tensors in buffer order with PyTorch's names. A tied decoder weight is not in
    /// the buffer (it is the encoder's); checkpoints write it under both names.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let gw = self.gate_width();
        let h = self.hidden;
        let t = |name: String, shape: Vec<usize>, offset: usize| TensorSpec {
            len: shape.iter().product(),
            name,
            shape,
            offset,
        };
        let mut out = vec![t(
            "encoder.weight".into(),
            vec![self.vocab_size, self.embd],
            0,
        )];
        for l in 0..self.n_layer {
            let o = self.layer(l);
            out.push(t(format!("rnn.weight_ih_l{l}"), vec![gw, o.input], o.w_ih));
            out.push(t(format!("rnn.weight_hh_l{l}"), vec![gw, h], o.w_hh));
            out.push(t(format!("rnn.bias_ih_l{l}"), vec![gw], o.b_ih));
            out.push(t(format!("rnn.bias_hh_l{l}"), vec![gw], o.b_hh));
        }
        let (dw, db) = self.decoder();
        if !self.tied {
            out.push(t("decoder.weight".into(), vec![self.vocab_size, h], dw));
        }
        out.push(t("decoder.bias".into(), vec![self.vocab_size], db));
        out
    }

    /// Multiply-adds per token of a training step (forward + backward = 3x forward):
    /// for benchmarks' FLOP counts.
    pub fn train_flops_per_token(&self) -> f64 {
        let gw = self.gate_width();
        let mut f = 0.0;
        for l in 0..self.n_layer {
            f += (gw * (self.layer_input(l) + self.hidden)) as f64;
        }
        f += (self.vocab_size * self.hidden) as f64;
        6.0 * f
    }
}

/// A recurrent language model: configuration plus one contiguous parameter buffer.
#[derive(Debug, Clone)]
pub struct Rnn<F: Float = f32> {
    pub config: RnnConfig,
    /// The token that conditions the first real token (the tokenizer's end-of-text).
    pub bos_token: u32,
    params: Vec<F>,
}

impl<F: Float> Rnn<F> {
    /// A freshly initialized model (values drawn in f64 from ChaCha8 seeded by `seed`,
    /// then rounded).
    pub fn init(config: RnnConfig, init: InitScheme, seed: u64) -> Result<Rnn<F>, ModelError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![F::ZERO; config.num_params()];
        let k = 1.0 / (config.hidden as f64).sqrt();
        let (_, dec_b) = config.decoder();
        for spec in config.tensors() {
            let r = match init {
                InitScheme::Uniform(r) => r,
                InitScheme::Torch if spec.name.starts_with("rnn.") => k,
                InitScheme::Torch if spec.offset == dec_b => 0.0,
                InitScheme::Torch => 0.1,
            };
            for x in &mut params[spec.offset..spec.offset + spec.len] {
                *x = F::from_f64(rng.random_range(-1.0..=1.0) * r);
            }
        }
        Ok(Rnn {
            bos_token: (config.vocab_size - 1) as u32,
            config,
            params,
        })
    }

    /// A model from a buffer laid out as [`RnnConfig::tensors`] says.
    pub fn from_params(config: RnnConfig, params: Vec<F>) -> Result<Rnn<F>, ModelError> {
        config.validate()?;
        if params.len() != config.num_params() {
            return Err(ModelError::InvalidConfig(format!(
                "{} parameters given, the configuration needs {}",
                params.len(),
                config.num_params()
            )));
        }
        Ok(Rnn {
            bos_token: (config.vocab_size - 1) as u32,
            config,
            params,
        })
    }

    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    pub fn params(&self) -> &[F] {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut [F] {
        &mut self.params
    }

    /// Weight decay on matrices (embedding, W_ih, W_hh, decoder), not on biases.
    pub fn decay_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.params.len()];
        for s in self.config.tensors() {
            if s.shape.len() == 2 {
                mask[s.offset..s.offset + s.len].fill(true);
            }
        }
        mask
    }

    /// The same model in f64 (for finite-difference checks).
    pub fn to_f64(&self) -> Rnn<f64> {
        Rnn {
            config: self.config,
            bos_token: self.bos_token,
            params: self.params.iter().map(|x| x.to_f64()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: CellKind, tied: bool) -> RnnConfig {
        RnnConfig {
            kind,
            n_layer: 2,
            hidden: 5,
            embd: if tied { 5 } else { 3 },
            vocab_size: 7,
            dropout: 0.0,
            tied,
        }
    }

    #[test]
    fn tensors_tile_the_buffer_in_torch_order() {
        for kind in [CellKind::Lstm, CellKind::Gru, CellKind::Rnn] {
            for tied in [false, true] {
                let c = cfg(kind, tied);
                let ts = c.tensors();
                let mut off = 0;
                for t in &ts {
                    assert_eq!(t.offset, off, "{}", t.name);
                    off += t.len;
                }
                assert_eq!(off, c.num_params());
                let g = kind.gates() * 5;
                assert_eq!(ts[1].name, "rnn.weight_ih_l0");
                assert_eq!(ts[1].shape, vec![g, c.embd]);
                assert_eq!(ts[5].name, "rnn.weight_ih_l1");
                assert_eq!(ts[5].shape, vec![g, 5]);
                assert_eq!(ts.last().unwrap().name, "decoder.bias");
                assert_eq!(tied, !ts.iter().any(|t| t.name == "decoder.weight"));
            }
        }
    }

    #[test]
    fn bad_configs_are_refused_by_name() {
        let mut c = cfg(CellKind::Lstm, true);
        c.embd = 4;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tied"), "{e}");
        let mut c = cfg(CellKind::Gru, false);
        c.dropout = 1.0;
        assert!(c.validate().unwrap_err().to_string().contains("dropout"));
    }

    #[test]
    fn init_ranges() {
        let c = cfg(CellKind::Lstm, false);
        let m = Rnn::<f32>::init(c, InitScheme::Uniform(0.1), 1).unwrap();
        assert!(m.params().iter().all(|x| x.abs() <= 0.1));
        let m = Rnn::<f32>::init(c, InitScheme::Torch, 1).unwrap();
        let (_, db) = c.decoder();
        assert!(m.params()[db..].iter().all(|&x| x == 0.0));
        let l = c.layer(0);
        let k = 1.0 / 5f32.sqrt();
        assert!(m.params()[l.w_ih..db].iter().all(|x| x.abs() <= k));
        assert!(m.params()[l.w_ih..db].iter().any(|x| x.abs() > 0.1));
    }
}
