//! The numeric layer: the forward/backward kernels every model is composed of, llm.c
//! style, and the CPU plumbing they share.
//!
//! Shapes: B batch, T time, C channels, NH heads, hs = C/NH head size, OC output
//! channels, V vocabulary, N = B*T rows. All tensors are row-major slices, and every
//! kernel writes the shape of each buffer it takes in its doc (`inp(N, C)`).
//!
//! One file per layer ([`matmul`], [`layernorm`], [`attention`], [`gelu`] and [`gelu_erf`],
//! [`softmax_ce`], [`embedding`], [`residual`]) holds that layer's dispatcher (the public
//! function, generic over [`Float`]), its plain `reference` version where the fast one is
//! not obviously correct, its AVX-512 body (an inner `avx512` module) and its tests. The
//! plumbing under them: [`float`] (the scalar trait, f32 for work, f64 for gradient
//! checks), [`cpu`] (the one module that asks the CPU for features, and the run-time
//! dispatch of plain loops), [`simd`] (f32 vector math: exp, softmax, dot, axpy),
//! [`simd512`] (AVX-512 primitives), [`par`] (the shared-pointer type and the
//! serial-shard switch), [`team`] (the decode step's thread team). The optimizers
//! ([`adamw`], [`sgd`]) update a flat parameter buffer from a flat gradient buffer.
//!
//! Backward kernels ACCUMULATE into parameter gradients (`dw`, `db`) and into `dinp` where
//! the activation feeds a residual stream (layernorm), and OVERWRITE scratch gradients
//! otherwise (noted per function). The optimized kernels are tested against the
//! reference versions, and the reference versions against finite differences.
//!
//! Nothing here knows a model: `src/model/*` composes these kernels, and this module
//! imports nothing from the rest of the crate.

pub mod adamw;
pub mod attention;
pub mod cpu;
pub mod embedding;
pub mod float;
pub mod gelu;
pub mod gelu_erf;
pub mod gemm_bf16;
pub mod layernorm;
pub mod matmul;
pub mod norm;
pub mod par;
pub mod residual;
pub mod sgd;
pub mod simd;
pub mod simd512;
pub mod softmax_ce;
pub mod team;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use adamw::AdamW;
pub use attention::{attention_backward, attention_forward, attention_forward_no_probs};
pub use embedding::{encoder_backward, encoder_forward, lm_head_backward_dwte, lm_head_forward};
pub use float::Float;
pub use gelu::{
    bias_gelu_forward, bias_gelu_forward_train, gelu_backward_inplace, gelu_backward_stored,
    gelu_forward, gelu_inplace, gelu_keeps_derivative,
};
pub use gelu_erf::{bias_gelu_erf_forward, bias_gelu_erf_forward_train, gelu_erf_inplace};
pub use layernorm::{layernorm_backward, layernorm_forward, LN_BLOCKS, LN_EPS};
pub use matmul::{
    bias_backward, gemm_ceiling_gflops, matmul_backward, matmul_backward_t, matmul_forward,
    transpose,
};
pub use par::{with_serial_gemm, SyncPtr};
pub use residual::{add_in_place, residual_add, residual_bias_add};
pub use sgd::Sgd;
pub use softmax_ce::{
    softmax_ce_backward_inplace, softmax_ce_forward, softmax_ce_forward_backward,
};
