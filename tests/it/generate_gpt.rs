//! Generation with the GPT: the KV-cache path (prefill + one `feed` per token) chooses
//! exactly the tokens that re-running the full forward pass at every step chooses.

use arlm::generate::{sample_tokens, Sampler, SamplerConfig, Session};
use arlm::model::gpt::{Gpt, GptConfig, WeightFormat};
use arlm::model::LanguageModel;

fn small_gpt(block_size: usize) -> Gpt {
    small_gpt_scaled(block_size, 8.0)
}

fn small_gpt_scaled(block_size: usize, scale: f32) -> Gpt {
    let cfg = GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 32,
        block_size,
        vocab_size: 61,
        dropout: 0.0,
        activation: Default::default(),
    };
    let mut m = Gpt::new(cfg, 7).unwrap();
    // Larger weights than the GPT-2 init so the distributions are far from uniform.
    for p in m.params_mut() {
        *p *= scale;
    }
    m
}

/// Full recompute: the distribution after `ctx` from the parallel pass over all of it.
fn full_row(m: &Gpt, ctx: &[u32]) -> Vec<f32> {
    let v = m.vocab_size();
    let rows = m.distributions(ctx).unwrap();
    rows[(ctx.len() - 1) * v..].to_vec()
}

fn check(cfg: SamplerConfig, prompt: &[u32], n: usize) {
    check_with(cfg, prompt, n, WeightFormat::F32);
}

fn check_with(cfg: SamplerConfig, prompt: &[u32], n: usize, format: WeightFormat) {
    check_model(&small_gpt(64), cfg, prompt, n, format, 1e-3, true);
}

/// Generates with the KV cache, then re-runs the full pass on every prefix: `tol` is how far
/// the step's log-probability of each chosen token may be from the full pass's; `exact`,
/// whether the full pass must also choose the same tokens.
#[allow(clippy::too_many_arguments)]
fn check_model(
    m: &Gpt,
    cfg: SamplerConfig,
    prompt: &[u32],
    n: usize,
    format: WeightFormat,
    tol: f32,
    exact: bool,
) {
    let m = m.clone().with_weight_format(format);
    let v = m.vocab_size();
    let mut s1 = Sampler::new(cfg.clone(), v).unwrap();
    let cached = sample_tokens(&m, prompt, &mut s1, n, None).unwrap();
    let mut s2 = Sampler::new(cfg, v).unwrap();
    let mut ctx = vec![m.bos_token()];
    ctx.extend_from_slice(prompt);
    let mut history = prompt.to_vec();
    for (i, c) in cached.iter().enumerate() {
        let row = full_row(&m, &ctx);
        if exact {
            let want = s2.sample(&row, &history).unwrap();
            assert_eq!(c.token, want.token, "step {i}");
        }
        let want = row[c.token as usize];
        assert!(
            (c.logprob_model - want).abs() < tol,
            "step {i}: {} vs {want}",
            c.logprob_model
        );
        ctx.push(c.token);
        history.push(c.token);
    }
}

#[test]
fn kv_cache_greedy_equals_full_recompute() {
    check(SamplerConfig::greedy(), &[3, 14, 15, 9, 26], 40);
}

#[test]
fn kv_cache_sampling_equals_full_recompute() {
    check(SamplerConfig::pure(5), &[2, 7, 1, 8], 40);
    check(
        SamplerConfig {
            repeat_penalty: 1.3,
            ..SamplerConfig::default()
        },
        &[2, 7, 1, 8],
        40,
    );
}

#[test]
fn kv_cache_equals_full_recompute_with_reduced_precision_weights() {
    // The step runs the f16 / q8 kernels, the full pass runs gemm on the f32 copy rounded
    // to the same values: same weights, so the same tokens. (With AVX512_BF16, 16-bit
    // models prefill through the bf16 GEMM: the next test.)
    for format in [WeightFormat::F16, WeightFormat::Bf16, WeightFormat::Q8] {
        if format != WeightFormat::Q8 && arlm::ops::gemm_bf16::available() {
            continue;
        }
        check_with(SamplerConfig::greedy(), &[3, 14, 15, 9, 26], 40, format);
        check_with(SamplerConfig::pure(5), &[2, 7, 1, 8], 40, format);
    }
}

#[test]
fn kv_cache_follows_full_recompute_after_a_bf16_gemm_prefill() {
    // With AVX512_BF16 the full pass and the prefill of a bf16 model run the bf16 GEMM,
    // which rounds its activations to bf16 too; so does an f16 model's prefill (its
    // weights rounded to bf16 as well; its full pass keeps f16). The step keeps f32
    // activations. Near-ties may then pick different tokens, so this follows the cached
    // tokens and bounds the difference of their log-probabilities.
    if !arlm::ops::gemm_bf16::available() {
        eprintln!("SKIPPED: no AVX512_BF16 on this CPU");
        return;
    }
    // At 8x, attention is near-argmax and a rounding can flip which position wins (one
    // token's log-probability moved 2.9 nats); at 3x the distributions are still peaked.
    let m = small_gpt_scaled(64, 3.0);
    for format in [WeightFormat::Bf16, WeightFormat::F16] {
        for cfg in [SamplerConfig::greedy(), SamplerConfig::pure(5)] {
            check_model(&m, cfg, &[3, 14, 15, 9, 26], 40, format, 0.05, false);
        }
    }
}

#[test]
fn gpt_generation_past_its_context_slides_the_window() {
    let m = small_gpt(12);
    let mut s = Sampler::new(SamplerConfig::pure(1), m.vocab_size()).unwrap();
    let prompt: Vec<u32> = (0..20).collect();
    let out = sample_tokens(&m, &prompt, &mut s, 50, None).unwrap();
    assert_eq!(out.len(), 50);
    let sess = Session::new(&m, &prompt).unwrap();
    assert_eq!(sess.slides(), 1, "a prompt longer than the context is cut");
    // After the cut the state holds BOS + the last (12-1)/2+1 = 6 prompt tokens.
    let mut ctx = vec![m.bos_token()];
    ctx.extend_from_slice(&prompt[14..]);
    let want = full_row(&m, &ctx);
    for (a, b) in sess.logprobs().iter().zip(&want) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[test]
fn cli_generate_on_a_gpt_reports_the_models_logprobs() {
    use arlm::tokenizer::{bytes::ByteTokenizer, Tokenizer};
    let dir = tempfile::tempdir().unwrap();
    let cfg = GptConfig {
        n_layer: 1,
        n_head: 2,
        n_embd: 16,
        block_size: 32,
        vocab_size: 257,
        dropout: 0.0,
        activation: Default::default(),
    };
    let m = Gpt::new(cfg, 3).unwrap();
    m.save(dir.path()).unwrap();
    arlm::tokenizer::save(&ByteTokenizer, &dir.path().join("tokenizer.json")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arlm"))
        .args([
            "generate",
            "--model",
            dir.path().to_str().unwrap(),
            "--prompt",
            "ab",
        ])
        .args([
            "--max-tokens",
            "40",
            "--ignore-eot",
            "--json",
            "--seed",
            "9",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u32> = o["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(
        ids.len(),
        40,
        "40 tokens through a 32-token context: the window slid"
    );
    assert!(o["window_slides"].as_u64().unwrap() >= 1);
    // Within the context, the reported log-probs are the model's (scoring path).
    let mut seq = vec![m.bos_token()];
    seq.extend(ByteTokenizer.encode("ab").unwrap());
    seq.extend_from_slice(&ids[..20]);
    let want = m.score_next(&seq).unwrap();
    for (i, t) in o["tokens"].as_array().unwrap()[..20].iter().enumerate() {
        let got = t["logprob"].as_f64().unwrap() as f32;
        assert!(
            (got - want[i + 2]).abs() < 1e-4,
            "token {i}: {got} vs {}",
            want[i + 2]
        );
    }
}
