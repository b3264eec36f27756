//! GPT-2: a decoder-only transformer composed from arlm's own CPU kernels
//! ([`crate::ops`]), written the way llm.c is.
//!
//! This module is what is the GPT: its config ([`GptConfig`]), the parameter layout
//! (`parts`, `layer`), the forward/backward composition and the batch-split training
//! step ([`trainer`]), the KV-cache decode ([`infer`]), checkpoint names
//! ([`checkpoint`]) and the quantized decode formats ([`quant`]). The layers themselves
//! live in [`crate::ops`].
//!
//! # Design
//! - One contiguous parameter buffer ([`Gpt::params`]) in GPT-2 order (wte, wpe, then per
//!   layer ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, then ln_f), weights
//!   stored as Hugging Face's `Conv1D` stores them, (in, out), so a checkpoint is a
//!   byte copy. The gradient buffer ([`GptTrainer::grads`]) has the same layout, so the
//!   optimizer is one loop over two slices.
//! - Activations are allocated once per (B, T) by [`GptTrainer::new`] and reused every step;
//!   no allocation happens inside a step.
//! - Everything is generic over [`Float`] (f32 and f64) so finite-difference checks of
//!   every layer and of the whole model run in f64.
//! - Inference ([`LanguageModel`](crate::model::LanguageModel)): the state is a KV cache
//!   ([`GptState`]) so `feed` is one incremental step; `score_next`, `distributions`,
//!   `prefill` and `score_next_batch` are parallel passes.
//! - Build flags: no `target-cpu`; `gemm` (feature `x86-v4`) and [`crate::ops::cpu`]
//!   choose AVX-512/AVX2+FMA code at run time, so one binary runs on any x86-64.
//!
//! # Performance notes
//! Training-step numbers are from `arlm bench train` (model A: 4L/4H/128, T=64, B=12,
//! V=65; model B: 6L/6H/384, T=256, B=4, V=50304) on a shared 2-core Sapphire Rapids VM,
//! binary against binary in interleaved runs; shares are of `perf record -e cpu-clock`
//! profiles of model A. Current tables against PyTorch: docs/parts/train-speed.md.
//! - **Batch split** ([`GptTrainer::new`]): the batch is cut into 2 fixed shards (not the
//!   thread count, so the bits do not depend on threads); each shard's forward+backward is
//!   one task with single-threaded GEMMs and serial kernel loops
//!   ([`crate::ops::par::with_serial_gemm`]), and the shard gradients are added in shard
//!   order. Model A's (768 x 128) products were too small to share between 2 threads:
//!   wall time went from ~1.1 to ~2 cores of work (A 42.5 -> 31.5 ms/step). Cost: one more
//!   gradient buffer (taken only when it is no bigger than the activations).
//! - **One parallel region per step** (trainer's `forward_backward_split` on
//!   [`crate::ops::team`]): each rayon region was ~0.6-0.7 ms longer than its slower
//!   shard (worker wake-up, stealing); forward, backward and merge as three phases of one
//!   team: A 27.2 -> 26.4 ms.
//! - **Fused passes**: the fc bias is added in the GELU pass and the projection biases in
//!   the residual pass (memmove 3.3% -> 1.2% of the profile); softmax + cross-entropy +
//!   gradient in one pass over the logits; AdamW scales clipped gradients on the fly (no
//!   scaled copy: 120 MB less at B). All bit-identical to the unfused versions (tested).
//! - **Transposed weights for dinp**: a transposed copy of the block weights, made inside
//!   the shards' forward tasks, lets `gemm` read W^T row-major (8-13% faster per call).
//! - **Run-time AVX2 / AVX-512 loops** for the non-GEMM kernels (see each layer in
//!   [`crate::ops`]): the generic loops compiled to scalar SSE2; under feature-enabled
//!   wrappers A went 26.3 -> 24.4 ms.
//! - **Tried and dropped**: an AVX-512 AdamW (vrcp14 + Newton): 4x faster with its state
//!   in cache, no change inside a step, where the 23 MB of p, g, m, v come from DRAM, so
//!   the PyTorch-exact AdamW stays; attention softmax rows padded to a multiple of 8 with
//!   -inf (slower); a row-by-row AVX-512 attention with q/o/dq in registers (one
//!   horizontal reduction per (t, t2) costs more than it saves); a parallel zero_grad (no
//!   gain, one more fork-join).
//! - **What is left**: model A spends ~64% in the `gemm` microkernel and ~5% in its
//!   packing (per call, inside the crate); AdamW at B is memory-bound.
//!
//! # Shapes
//! B batch, T time (<= block_size), C = n_embd, NH = n_head, hs = C / NH, V = vocab_size,
//! L = n_layer, N = B*T rows.
//!
//! ```text
//! tokens (B,T) -> encoded (B,T,C) = wte[tok] + wpe[t]
//! per layer:  ln1 (B,T,C) -> qkv (B,T,3C) -> att (B,NH,T,T) -> atty (B,T,C)
//!             res2 = res + atty @ Wproj + b          (B,T,C)
//!             ln2 (B,T,C) -> fch (B,T,4C) -> gelu (B,T,4C)
//!             res3 = res2 + gelu @ Wproj2 + b       (B,T,C)
//! lnf (B,T,C) -> logits (B,T,V) = lnf @ wte^T (tied head) -> softmax + cross-entropy
//! ```

pub mod checkpoint;
pub mod infer;
pub mod quant;
pub mod trainer;

pub use crate::ops::Float;
pub use infer::GptState;
pub use quant::WeightFormat;
pub use trainer::GptTrainer;

use super::ModelError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// Hyperparameters of a GPT-2-style model.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GptConfig {
    /// Number of transformer blocks (L).
    pub n_layer: usize,
    /// Attention heads per block (NH).
    pub n_head: usize,
    /// Embedding width (C); must be divisible by n_head.
    pub n_embd: usize,
    /// Maximum context length (positions in wpe).
    pub block_size: usize,
    /// Vocabulary size (V).
    pub vocab_size: usize,
    /// Dropout probability on embeddings and residual branches during training (0 = off).
    pub dropout: f32,
    /// The MLP's activation (config.json's `activation_function`).
    #[serde(default, skip_serializing_if = "Activation::is_default")]
    pub activation: Activation,
}

impl GptConfig {
    /// GPT-2 small (124M parameters): 12 layers, 12 heads, 768 channels, context 1024,
    /// GPT-2's 50257-token vocabulary, no dropout.
    pub fn gpt2_124m() -> GptConfig {
        GptConfig {
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            block_size: 1024,
            vocab_size: 50257,
            dropout: 0.0,
            activation: Activation::GeluTanh,
        }
    }

    /// Checks the configuration is usable.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 {
            return bad(format!(
                "n_layer, n_head and n_embd must be positive (got {}, {}, {})",
                self.n_layer, self.n_head, self.n_embd
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be divisible by n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        if self.block_size == 0 || self.vocab_size == 0 {
            return bad(format!(
                "block_size and vocab_size must be positive (got {}, {})",
                self.block_size, self.vocab_size
            ));
        }
        if self.vocab_size > u32::MAX as usize {
            return bad(format!("vocab_size {} is too large", self.vocab_size));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        // Sizes come from files and flags: bound each one, then count in u128 (where those
        // bounds cannot wrap), and refuse a model whose parameters could not be addressed.
        const DIM_MAX: usize = 1 << 24;
        let dims = [
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("n_positions", self.block_size),
        ];
        if let Some((name, v)) = dims.iter().find(|(_, v)| *v > DIM_MAX) {
            return bad(format!("{name} {v} is too large (at most {DIM_MAX})"));
        }
        let (c, l) = (self.n_embd as u128, self.n_layer as u128);
        let params =
            (self.vocab_size as u128 + self.block_size as u128 + 2) * c + l * (12 * c * c + 13 * c);
        if params > (isize::MAX as u128) / 16 {
            return bad(format!(
                "{params} parameters (n_layer {}, n_embd {}, vocab_size {}, n_positions {}) \
                 cannot be held in memory",
                self.n_layer, self.n_embd, self.vocab_size, self.block_size
            ));
        }
        Ok(())
    }

    /// Parameters in one transformer block: 12 C^2 + 13 C.
    pub fn layer_size(&self) -> usize {
        12 * self.n_embd * self.n_embd + 13 * self.n_embd
    }

    /// Total parameters (the LM head is tied to wte, so it adds none).
    pub fn num_params(&self) -> usize {
        let c = self.n_embd;
        self.vocab_size * c + self.block_size * c + self.n_layer * self.layer_size() + 2 * c
    }

    /// Training FLOPs per token for one step (forward + backward = 3x forward): 6 N_matmul
    /// plus attention, as in the PaLM appendix / nanoGPT's estimate_mfu, counting the LM head.
    pub fn train_flops_per_token(&self, t: usize) -> f64 {
        let c = self.n_embd as f64;
        let n_mat = (self.n_layer * 12) as f64 * c * c + self.vocab_size as f64 * c;
        6.0 * n_mat + 6.0 * self.n_layer as f64 * c * t as f64
    }

    /// The HF tensor names, shapes and GPT-2 init of every parameter, in buffer order.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (c, l) = (self.n_embd, self.n_layer);
        let std = 0.02;
        let proj_std = 0.02 / ((2 * l) as f64).sqrt();
        let mut out = Vec::new();
        let mut offset = 0;
        let mut push = |name: String, shape: Vec<usize>, init: Init| {
            let len = shape.iter().product();
            let decay = shape.len() == 2;
            out.push(TensorSpec {
                name,
                shape,
                offset,
                len,
                decay,
                init,
            });
            offset += len;
        };
        push(
            "wte.weight".into(),
            vec![self.vocab_size, c],
            Init::Normal(std),
        );
        push(
            "wpe.weight".into(),
            vec![self.block_size, c],
            Init::Normal(std),
        );
        for i in 0..l {
            let p = |s: &str| format!("h.{i}.{s}");
            push(p("ln_1.weight"), vec![c], Init::Ones);
            push(p("ln_1.bias"), vec![c], Init::Zeros);
            push(p("attn.c_attn.weight"), vec![c, 3 * c], Init::Normal(std));
            push(p("attn.c_attn.bias"), vec![3 * c], Init::Zeros);
            push(p("attn.c_proj.weight"), vec![c, c], Init::Normal(proj_std));
            push(p("attn.c_proj.bias"), vec![c], Init::Zeros);
            push(p("ln_2.weight"), vec![c], Init::Ones);
            push(p("ln_2.bias"), vec![c], Init::Zeros);
            push(p("mlp.c_fc.weight"), vec![c, 4 * c], Init::Normal(std));
            push(p("mlp.c_fc.bias"), vec![4 * c], Init::Zeros);
            push(
                p("mlp.c_proj.weight"),
                vec![4 * c, c],
                Init::Normal(proj_std),
            );
            push(p("mlp.c_proj.bias"), vec![c], Init::Zeros);
        }
        push("ln_f.weight".into(), vec![c], Init::Ones);
        push("ln_f.bias".into(), vec![c], Init::Zeros);
        out
    }
}

/// How a parameter tensor is initialized (GPT-2: N(0, 0.02), residual projections scaled
/// by 1/sqrt(2L), LayerNorm weight 1 and biases 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Normal(f64),
    Zeros,
    Ones,
}

/// One named tensor inside the parameter buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    /// Hugging Face name without the `transformer.` prefix.
    pub name: String,
    pub shape: Vec<usize>,
    /// First element in the buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
    /// Weight decay applies (2-D tensors).
    pub decay: bool,
    pub init: Init,
}

/// The MLP's activation, by its transformers `activation_function` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// GELU, tanh approximation: GPT-2's `gelu_new` (also `gelu_pytorch_tanh`).
    #[default]
    #[serde(rename = "gelu_new")]
    GeluTanh,
    /// GELU, exact (erf): `gelu`, PyTorch's `nn.GELU()` (nanoGPT's MLP).
    #[serde(rename = "gelu")]
    GeluExact,
}

impl Activation {
    /// The transformers `activation_function` value.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::GeluTanh => "gelu_new",
            Activation::GeluExact => "gelu",
        }
    }

    /// From a transformers `activation_function` value (`None`: not implemented).
    pub fn from_hf_name(name: &str) -> Option<Activation> {
        match name {
            "gelu_new" | "gelu_pytorch_tanh" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::GeluExact),
            _ => None,
        }
    }

    /// Whether this is the default (so configs that never named one stay unchanged).
    pub fn is_default(&self) -> bool {
        *self == Activation::default()
    }
}

/// A GPT-2 model: configuration plus one contiguous parameter buffer.
#[derive(Debug, Clone)]
pub struct Gpt<F: Float = f32> {
    pub config: GptConfig,
    /// The token that conditions the first real token (the tokenizer's end-of-text).
    pub bos_token: u32,
    params: Vec<F>,
    /// Compact copies of the matmul weights for the decode step (None: the step reads
    /// `params` in f32). See [`Gpt::with_weight_format`].
    infer_weights: Option<std::sync::Arc<quant::InferWeights>>,
}

impl Gpt<f32> {
    /// A freshly initialized f32 model (GPT-2 init, deterministic in `seed`).
    pub fn new(config: GptConfig, seed: u64) -> Result<Gpt<f32>, ModelError> {
        Gpt::init(config, seed)
    }

    /// Loads `dir/config.json` + `dir/model.safetensors` (see [`checkpoint`]).
    pub fn load(dir: &Path) -> Result<Gpt<f32>, ModelError> {
        checkpoint::load(dir)
    }

    /// The model with its matmul weights (and the tied LM head) stored in `format` for the
    /// decode step. The f32 parameters are rounded to the values the format represents,
    /// so every path (KV-cache step, parallel forward, scoring) computes with the same
    /// weights; f32 is the identity. Embeddings, biases and LayerNorms stay f32.
    pub fn with_weight_format(mut self, format: WeightFormat) -> Gpt<f32> {
        self.infer_weights = match format {
            WeightFormat::F32 => None,
            _ => Some(std::sync::Arc::new(quant::InferWeights::encode(
                &mut self.params,
                &self.config,
                format,
            ))),
        };
        self
    }

    /// How the decode step stores the weights.
    pub fn weight_format(&self) -> WeightFormat {
        self.infer_weights
            .as_ref()
            .map_or(WeightFormat::F32, |w| w.format)
    }

    /// The same model in f64 (for finite-difference checks).
    pub fn to_f64(&self) -> Gpt<f64> {
        Gpt {
            config: self.config,
            bos_token: self.bos_token,
            params: self.params.iter().map(|&x| x as f64).collect(),
            infer_weights: None,
        }
    }
}

impl<F: Float> Gpt<F> {
    /// GPT-2 initialization in any precision (values drawn in f64, then rounded).
    pub fn init(config: GptConfig, seed: u64) -> Result<Gpt<F>, ModelError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = vec![F::ZERO; config.num_params()];
        for spec in config.tensors() {
            let dst = &mut params[spec.offset..spec.offset + spec.len];
            match spec.init {
                Init::Zeros => {}
                Init::Ones => dst.fill(F::ONE),
                Init::Normal(std) => {
                    for x in dst.iter_mut() {
                        *x = F::from_f64(std * standard_normal(&mut rng));
                    }
                }
            }
        }
        Ok(Gpt {
            bos_token: (config.vocab_size - 1) as u32,
            config,
            params,
            infer_weights: None,
        })
    }

    /// A model from a parameter buffer laid out as [`GptConfig::tensors`] says.
    pub fn from_params(config: GptConfig, params: Vec<F>) -> Result<Gpt<F>, ModelError> {
        config.validate()?;
        if params.len() != config.num_params() {
            return Err(ModelError::InvalidConfig(format!(
                "{} parameters given, the configuration needs {}",
                params.len(),
                config.num_params()
            )));
        }
        Ok(Gpt {
            bos_token: (config.vocab_size - 1) as u32,
            config,
            params,
            infer_weights: None,
        })
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// The parameter buffer.
    pub fn params(&self) -> &[F] {
        &self.params
    }

    /// The parameter buffer, mutable (the optimizer writes it). Drops the compact
    /// decode-step copy of a reduced-precision model, which would go stale: the model
    /// is f32 again (with whatever values the buffer holds).
    pub fn params_mut(&mut self) -> &mut [F] {
        self.infer_weights = None;
        &mut self.params
    }

    /// Per element: true where weight decay applies (every 2-D tensor: embeddings and
    /// matmul weights; not biases or LayerNorm parameters), as nanoGPT does.
    pub fn decay_mask(&self) -> Vec<bool> {
        let mut mask = vec![false; self.params.len()];
        for spec in self.config.tensors() {
            if spec.decay {
                mask[spec.offset..spec.offset + spec.len].fill(true);
            }
        }
        mask
    }

    /// Writes `dir/model.safetensors` (HF GPT-2 names) and `dir/config.json`, atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        checkpoint::save(self, dir)
    }
}

/// One N(0, 1) draw (Box-Muller; rand_distr is not a dependency).
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Views of one block's parameters (or gradients), in buffer order.
pub(crate) struct Layer<S> {
    pub ln1_w: S,
    pub ln1_b: S,
    pub qkv_w: S,
    pub qkv_b: S,
    pub attn_proj_w: S,
    pub attn_proj_b: S,
    pub ln2_w: S,
    pub ln2_b: S,
    pub fc_w: S,
    pub fc_b: S,
    pub proj_w: S,
    pub proj_b: S,
}

/// Views of the whole buffer: embeddings, the blocks' region, final LayerNorm.
pub(crate) struct Parts<S> {
    pub wte: S,
    pub wpe: S,
    pub layers: S,
    pub lnf_w: S,
    pub lnf_b: S,
}

fn take<'a, T>(buf: &mut &'a [T], n: usize) -> &'a [T] {
    let (a, b) = buf.split_at(n);
    *buf = b;
    a
}

fn take_mut<'a, T>(buf: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let (a, b) = std::mem::take(buf).split_at_mut(n);
    *buf = b;
    a
}

macro_rules! layer_split {
    ($buf:expr, $c:expr, $take:ident) => {{
        let c = $c;
        let mut b = $buf;
        Layer {
            ln1_w: $take(&mut b, c),
            ln1_b: $take(&mut b, c),
            qkv_w: $take(&mut b, 3 * c * c),
            qkv_b: $take(&mut b, 3 * c),
            attn_proj_w: $take(&mut b, c * c),
            attn_proj_b: $take(&mut b, c),
            ln2_w: $take(&mut b, c),
            ln2_b: $take(&mut b, c),
            fc_w: $take(&mut b, 4 * c * c),
            fc_b: $take(&mut b, 4 * c),
            proj_w: $take(&mut b, 4 * c * c),
            proj_b: $take(&mut b, c),
        }
    }};
}

macro_rules! parts_split {
    ($buf:expr, $cfg:expr, $take:ident) => {{
        let cfg = $cfg;
        let c = cfg.n_embd;
        let mut b = $buf;
        Parts {
            wte: $take(&mut b, cfg.vocab_size * c),
            wpe: $take(&mut b, cfg.block_size * c),
            layers: $take(&mut b, cfg.n_layer * cfg.layer_size()),
            lnf_w: $take(&mut b, c),
            lnf_b: $take(&mut b, c),
        }
    }};
}

/// Splits a parameter-shaped buffer into its parts.
pub(crate) fn parts<'a, F>(buf: &'a [F], cfg: &GptConfig) -> Parts<&'a [F]> {
    parts_split!(buf, cfg, take)
}

/// Splits a parameter-shaped buffer into mutable parts.
pub(crate) fn parts_mut<'a, F>(buf: &'a mut [F], cfg: &GptConfig) -> Parts<&'a mut [F]> {
    parts_split!(buf, cfg, take_mut)
}

/// Block `l` inside the layers region.
pub(crate) fn layer<'a, F>(layers: &'a [F], cfg: &GptConfig, l: usize) -> Layer<&'a [F]> {
    let ls = cfg.layer_size();
    layer_split!(&layers[l * ls..(l + 1) * ls], cfg.n_embd, take)
}

/// Block `l` inside the layers region, mutable.
pub(crate) fn layer_mut<'a, F>(
    layers: &'a mut [F],
    cfg: &GptConfig,
    l: usize,
) -> Layer<&'a mut [F]> {
    let ls = cfg.layer_size();
    layer_split!(&mut layers[l * ls..(l + 1) * ls], cfg.n_embd, take_mut)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiny() -> GptConfig {
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
    fn layout_is_contiguous_and_counts_match() {
        let cfg = tiny();
        let specs = cfg.tensors();
        let mut off = 0;
        for s in &specs {
            assert_eq!(s.offset, off, "{}", s.name);
            off += s.len;
        }
        assert_eq!(off, cfg.num_params());
        let m = Gpt::new(cfg, 1).unwrap();
        assert_eq!(m.num_params(), cfg.num_params());
        let mask = m.decay_mask();
        let decayed: usize = specs.iter().filter(|s| s.decay).map(|s| s.len).sum();
        assert_eq!(mask.iter().filter(|&&d| d).count(), decayed);
        // init: LN weights are one, biases zero, weights small and not all equal
        let p = m.params();
        let ln = &specs[2];
        assert_eq!(ln.name, "h.0.ln_1.weight");
        assert!(p[ln.offset..ln.offset + ln.len].iter().all(|&x| x == 1.0));
        let wte = &p[..cfg.vocab_size * cfg.n_embd];
        let var = wte.iter().map(|x| x * x).sum::<f32>() / wte.len() as f32;
        assert!(var > 0.0001 && var < 0.001, "wte variance {var}");
        assert_eq!(Gpt::new(cfg, 1).unwrap().params(), p);
        assert!(Gpt::new(GptConfig { n_embd: 9, ..cfg }, 1).is_err());
    }
}
