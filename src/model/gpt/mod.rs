//! GPT-2: a decoder-only transformer on arlm's own CPU kernels, written the way llm.c is.
//!
//! # Design
//! - One contiguous parameter buffer ([`Gpt::params`]) in GPT-2 order (wte, wpe, then per
//!   layer ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj, then ln_f), weights
//!   stored as Hugging Face's `Conv1D` stores them, (in, out), so a checkpoint is a
//!   byte copy. The gradient buffer ([`GptTrainer::grads`]) has the same layout, so the
//!   optimizer is one loop over two slices.
//! - Activations are allocated once per (B, T) by [`GptTrainer::new`] and reused every step;
//!   no allocation happens inside a step.
//! - Every layer is a forward/backward pair in [`kernels`], beside a plain reference
//!   version; matmuls go through the `gemm` crate (runtime CPU dispatch: AVX2/AVX-512/FMA
//!   chosen at run time by `gemm`'s `x86-v4` feature, so the binary still runs on any
//!   x86-64), the rest is rayon-parallel loops.
//! - Everything is generic over [`Float`] (f32 and f64) so finite-difference checks of
//!   every layer and of the whole model run in f64.
//! - Inference ([`LanguageModel`](crate::model::LanguageModel)): the state is a KV cache ([`GptState`]) so `feed` is one
//!   incremental step (gemv-shaped, parallel over output columns); `score_next`,
//!   `distributions`, `prefill` and `score_next_batch` are parallel passes.
//!
//! # Performance notes
//! Training step = forward + backward + AdamW, `arlm bench train` (release, 2 rayon
//! threads, median over 20 (A) / 5 (B) steps), PyTorch 2 eager with
//! `torch.set_num_threads(2)` in the same run (tools/bench_train_torch.py). The machine is
//! a shared 2-core VM (load 4-7 from other sessions), so the numbers of stop 9 were taken
//! under `chrt -f 10` (SCHED_FIFO: the benchmark, PyTorch included, owns both cores; the
//! GEMM ceiling then reads 230-275 GFLOP/s instead of ~90 under load):
//!
//! | model | arlm ms/step | PyTorch ms/step | speedup | arlm GFLOP/s (% ceiling) | peak RSS arlm / PyTorch |
//! |---|---|---|---|---|---|
//! | A 4L/4H/128 T=64 B=12 V=65 | 24.6 (24.4-30.9 over 4 runs) | 37.5 (34-48) | 1.52x (1.16-1.52x) | 154.8 (60%) | 59 / 813 MB |
//! | B 6L/6H/384 T=256 B=4 V=50304 | 1042 (945-1042) | 1573 (1394-1665) | 1.51x (1.46-1.76x) | 180.0 (69%) | 1021 / 1862 MB |
//!
//! Before stop 9 the same binary-vs-binary comparison (old vs new, interleaved, SCHED_FIFO)
//! gave A 42.5-43.6 -> 31.5 ms (batch split) -> 24.4 ms (AVX2 loops), and B 1245-1392 ->
//! 1057 ms. What mattered, in order:
//! - **Batch split** ([`GptTrainer::new`]): the batch is cut into 2 fixed shards (not the
//!   thread count, so the bits do not depend on threads), each shard's forward+backward is
//!   one task with single-threaded GEMMs, and the shard gradients are added in shard order.
//!   Model A's (768 x 128) products were too small to share between 2 threads (fork-join
//!   per kernel, gemm's threading): wall time went from ~1.1 cores to ~2 cores of work.
//!   B gains too (its CPU time per step was ~1.8 s single-threaded but 1.55 s wall on 2).
//!   Cost: one more gradient buffer (done only when it is no bigger than the activations).
//! - **LM head in vocabulary blocks** ([`kernels::lm_head_forward`]): one parallel GEMM
//!   over 50304 columns made `gemm` allocate, page-fault (25K faults per step) and pack a
//!   77 MB copy of wte per call; blocks of 2048 columns do not (and peak RSS fell 97 MB).
//! - **Baseline-SSE2 loops**: the generic kernels (layernorm, residual, bias gradient,
//!   attention softmax backward) compiled to scalar SSE2 (`perf annotate`: `mulss`); run
//!   under an `avx2,fma` function ([`kernels`]'s `avx2` helper), A went 26.3 -> 24.4 ms;
//!   the same for the AdamW update (scalar `sqrtss`/`divss` were 6% of A's samples) and
//!   explicit AVX2 builds of the layernorm rows: 22.8 -> 21.9 ms. LayerNorm sums use 8
//!   partial sums. GELU/softmax got AVX-512 variants ([`simd`]).
//! - Fused softmax + cross-entropy + gradient (one pass fewer over B's 206 MB of logits);
//!   AdamW scales clipped gradients on the fly (no scaled copy: 120 MB less at B).
//!
//! Profile now (`perf record -e cpu-clock`, model A, 200 steps): 56% gemm microkernels,
//! 7% gemm packing, 7% GELU fwd+bwd, 3% bias-row copies, 2% attention softmax, the rest
//! small loops; CPU time 48-54 ms/step on 2 threads, so A is GEMM-bound at ~85% of the
//! microkernel's peak on these shapes. B: ~60% microkernel, the LM head is 62% of its
//! FLOPs. Left: attention computes the masked half of every T x T product (~4% of A's
//! FLOPs), gemm repacks the weights on every call, AdamW on B is memory-bound (~30 ms).
//!
//! Stop 10 (training speed, model A; load 3.5-7 on the shared VM, so binary-vs-binary
//! comparisons interleaved and under `chrt -f 10`, microbenchmarks for single kernels):
//! - **Serial shards** (`kernels::min_len`): inside a shard's task the kernels' rayon
//!   loops no longer split (`with_min_len(usize::MAX)`): no jobs pushed, no sleeping
//!   worker woken, no stealing of the other shard's chunks. Same chunking, same bits.
//!   Context switches per 200-step run 4800 -> 4150; the effect on wall time is what the
//!   idle, non-SCHED_FIFO rerun shows (rayon wake-ups are what FIFO hides).
//! - **Biases fused** ([`kernels::bias_gelu_forward`], [`kernels::residual_bias_add`]):
//!   the fc bias is added in the GELU pass and the two projection biases in the residual
//!   pass (without dropout), instead of copying bias rows into the GEMM output first;
//!   bit-identical (tested). memmove 3.3% -> 1.2% of the profile (qkv keeps its copy).
//! - **AVX-512 GELU** (kernels' `gelu512`): 1/(e^{2y}+1) by `vrcp14ps` + one Newton step
//!   instead of `vdivps`: forward 0.70 -> 0.46 ns/element, GELU 7.1% -> 5.2% of the
//!   profile; within 1.3e-7 |x| (forward) and 2.1e-7 (derivative) of the f64 formula on a
//!   dense grid (test). AVX2-only CPUs keep the division (bits differ across machines).
//! - **Causal attention blocks** (32 query rows see only keys ..(i+1)*32): attention
//!   forward+backward per shard and layer (b=6, T=64, hs=32, 1 thread) 1150 -> 950 us.
//! - **Transposed weights for dinp** (trainer's `transpose_weights`,
//!   [`kernels::matmul_backward_t`]): dinp = dout @ W^T read W through a strided view, which
//!   `gemm` packed with a gather (4% of A's profile); a transposed copy of the block weights
//!   made once per step (parallel over layers) is 8-13% faster per call. 6 interleaved
//!   pairs: CPU 47.4 -> 46.0 ms/step, wall 24.7 -> 24.4 ms (load 4-5); B: +41 MB RSS.
//! - The first four together, 6 interleaved pairs of 150-step runs: wall 22.2 -> 21.7 ms median, CPU
//!   44.5 -> 43.9 ms/step; default 20-step runs 23.2 -> 22.2 ms (5 pairs). With PyTorch,
//!   `chrt -f 10 arlm bench train --model a --runs 5` (load 3.4-3.8): arlm 20.9 ms
//!   (20.5-22.8), PyTorch 35.6 ms (31.6-38.7), median per-run ratio 1.70x (1.39-1.87x);
//!   with the transposed weights too (load 4.5-5.3): arlm 27.7 ms (21.4-29.0), PyTorch
//!   44.4 ms (41.2-47.7), 1.69x (1.47-2.08x), peak RSS 62 vs 813 MB.
//! - Tried and dropped (measured slower): attention softmax rows padded to a multiple of 8
//!   with -inf (64 causal rows 7.9 -> 10.4 us); the block's softmax as one flat exp stream
//!   (7.5 vs 6.6 us); a row-by-row AVX-512 attention with registers for q/o/dq (forward
//!   435 vs 356 us, backward 751 vs 351 us: one horizontal reduction per (t, t2) costs
//!   more than `gemm`'s per-call work); a parallel zero_grad (no gain, one more fork-join).
//!
//! Profile after stop 10 (`perf record -e cpu-clock`, A, 200 steps): 56% gemm x4x6
//! microkernel + 4% x2x6 (attention's 32-wide heads), 8% gemm packing (half of it the
//! strided W^T of dinp, since replaced by the transposed copy above), 3% attention softmax (7.9 us per 64 causal rows: rows too short to pipeline the exp),
//! 5% GELU, 4.5% layernorm, 2% AdamW. The microkernels already run at ~150 GFLOP/s per
//! core, the large-GEMM ceiling, so what is left is the non-GEMM 40%.
//!
//! Stop 11 (training speed, model A; another session kept one of the 2 cores busy, load
//! 1.5-2, so `perf record -e cpu-clock` shares and interleaved runs; details in
//! [`simd512`] and docs/parts/train-speed.md):
//! - **Direct AVX-512 attention** ([`simd512::attention_forward`]/`_backward`): register
//!   tiles fed by broadcasts instead of ~2300 small `gemm` calls per step (x2x6 edge
//!   kernel, packing and a malloc/free per call); one shard-layer of A forward 172-235 ->
//!   120-144 us, backward 257-308 -> 181-225 us (one thread).
//! - **Softmax rows** with masked 16-lane vectors (no scalar tails), 4 rows interleaved:
//!   2.7% -> 1.2% of the profile; backward rows 1.15% -> 0.9%.
//! - **LayerNorm rows** in AVX-512 with independent accumulators: 4.5-5% -> 2.9%.
//! - **GELU**: the training forward adds the bias, applies GELU and keeps GELU'(x) in
//!   place of x in one pass ([`kernels::bias_gelu_forward_train`]); the backward is one
//!   multiply ([`kernels::gelu_backward_stored`]); bit-identical to the old pair (tested).
//!   ~5.2% -> 4.3%.
//! - **Fewer passes and fork-joins**: the weight transposes run inside the shards' forward
//!   tasks (layer l in shard l % 2; one fork-join less), in 8x8 AVX tiles (2.3% -> 1.7%);
//!   a shard's gradient buffer is no longer memset: its matrices' first GEMM overwrites
//!   (`read_dst = false`), only biases/LayerNorm/wpe are zeroed.
//! - **One parallel region per step** (trainer's `forward_backward_split`, on
//!   `team.rs`): a phase timing of A (load 1.4) showed each rayon region (forward,
//!   backward) ~0.6-0.7 ms longer than its slower shard's busy time (worker wake-up,
//!   stealing), plus a separate merge region; as three phases of one team (helpers spin
//!   briefly between phases) A's wall went 27.2 -> 26.4 ms over 6 interleaved pairs, CPU
//!   unchanged. Phase split of a step then (us, load 1.4): zero_grad 190, forward region
//!   8200 (shards 7400 / 7600), backward region 13000 (12300 / 11900), merge 290,
//!   AdamW 700.
//! - Together, 7 interleaved pairs of `arlm bench train --model a --no-torch --steps 200`
//!   (stop-10 binary vs this one, load 1.7-2.1): wall 29.9 -> 25.4 ms (-15%), CPU
//!   54.9 -> 47.4 ms/step (-14%) (medians; before the one-region step). With PyTorch in
//!   the same conditions,
//!   `arlm bench train --model a --runs 5`: arlm 26.8 ms (24.9-31.5), PyTorch 47.1 ms
//!   (43.1-48.1), median per-run ratio 1.63x (1.50-1.88), peak RSS 65 vs 812 MB. The
//!   whole stop, stop-10 binary vs final, 7 interleaved pairs (load 1.7-1.9): wall
//!   31.5 -> 25.9 ms (-18%), CPU 60.3 -> 51.0 ms/step (-15%), every pair faster; the
//!   final binary at load 1.4-1.6: A 26.4 vs 50.5 ms, 1.92x (1.37-2.50); B 984 vs 1459
//!   ms, 1.48x. Model B's step: 7 interleaved pairs wall 1021 -> 994 ms, CPU 1920 -> 1818
//!   ms (noise ~10%). B's peak RSS 1061 -> 1169 MB (PyTorch 1873): glibc's dynamic mmap
//!   threshold, not an arlm buffer (with `MALLOC_MMAP_THRESHOLD_=131072` both peak at
//!   1061 MB).
//! - Tried and dropped: an AVX-512 AdamW (vrcp14 + Newton instead of the two divisions):
//!   4x faster with its state in cache (0.57 vs 2.5 ms per 800K-parameter update, one
//!   thread), no change in the step's profile: inside a step the 23 MB of p, g, m, v come
//!   from DRAM (AdamW ~2.5% of A's CPU either way), so PyTorch-exact AdamW stays. The
//!   softmax backward in groups of 4 rows (spills; slower). Query blocks of 16 instead of
//!   8 rows in the direct attention (no difference).
//!
//! Profile after stop 11 (A, 300 steps, load ~1.8): 64% gemm x4x6 microkernel, 5.5% gemm
//! packing, 5.6% the direct attention tiles (+1.2% softmax, 1.1% its backward, 0.8% K^T/V^T),
//! 2.9% bias+GELU forward (+1.4% the backward multiply), 2.6% AdamW (DRAM-bound), 2.9%
//! LayerNorm, 1.8% weight transposes, 1.3% the qkv bias-row copy, 1% the shard-gradient
//! merge. Left: the gemm packing (per call, inside the crate), the merge could be fused
//! into AdamW (an API change through `Trainable` and the norm pass), the qkv bias could be
//! added where attention first reads q/k/v.
//!
//! Inference, `arlm bench train --infer` (GPT-2 124M shape, random init, same loaded
//! machine, one run): KV-cache decode step 189 ms/token vs transformers 1620 ms/token
//! (8.6x; transformers' per-step overhead dominates under load), batched scoring 8x128
//! tokens 100 tokens/s vs 66 (1.52x). The decode step streams all 500 MB of weights once
//! per token, so it is memory-bound; gemv is parallel over 256-column blocks.
//!
//! Build flags: no `target-cpu`; `gemm` (feature `x86-v4`) and [`simd`] choose
//! AVX-512/AVX2+FMA code at run time, so one binary runs on any x86-64.
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
pub mod float;
pub mod infer;
pub mod kernels;
pub mod quant;
pub mod simd;
pub mod simd512;
mod team;
pub mod trainer;

pub use float::Float;
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
}

impl GptConfig {
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
        // Sizes come from files and flags: count in u128 so that nothing wraps, and refuse
        // a model whose parameters alone could not be addressed as f32.
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
