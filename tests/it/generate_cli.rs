//! `arlm generate` end to end on a uniform byte-level model (every token equally likely,
//! so the outcome of each flag is computable by hand).

use crate::common;

use common::{arlm, arlm_ok};

fn uniform_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    arlm::load::save_uniform(dir.path(), &arlm::tokenizer::bytes::ByteTokenizer).unwrap();
    dir
}

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn json_reports_per_token_logprobs_and_finish_reason() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let out = arlm_ok(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "hi",
        "--max-tokens",
        "7",
        "--temp",
        "1",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--min-p",
        "0",
        "--json",
        "--ignore-eot",
        "--num-samples",
        "2",
        "--seed",
        "5",
    ]);
    let objs = json_lines(&out);
    assert_eq!(objs.len(), 2);
    let lnv = (257f64).ln();
    for o in &objs {
        assert_eq!(o["finish_reason"], "length");
        assert_eq!(o["prompt_tokens"], 2);
        let toks = o["tokens"].as_array().unwrap();
        assert_eq!(toks.len(), 7);
        for t in toks {
            assert!((t["logprob"].as_f64().unwrap() + lnv).abs() < 1e-4);
            assert!((t["sampler_logprob"].as_f64().unwrap() + lnv).abs() < 1e-4);
        }
        assert!((o["total_logprob"].as_f64().unwrap() + 7.0 * lnv).abs() < 1e-3);
    }
    assert_ne!(
        objs[0]["tokens"], objs[1]["tokens"],
        "samples use different streams"
    );
    // Same seed, same output.
    let again = arlm_ok(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "hi",
        "--max-tokens",
        "7",
        "--temp",
        "1",
        "--top-k",
        "0",
        "--top-p",
        "1",
        "--min-p",
        "0",
        "--json",
        "--ignore-eot",
        "--num-samples",
        "2",
        "--seed",
        "5",
    ]);
    assert_eq!(out, again);
}

#[test]
fn logit_bias_no_repeat_and_stop_strings() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let base = [
        "generate",
        "--model",
        m,
        "--greedy",
        "--logit-bias",
        "a=5",
        "--logit-bias",
        "b=5",
        "--logit-bias",
        "99=5",
        "--no-repeat-ngram",
        "1",
        "--max-tokens",
        "3",
    ];
    assert_eq!(arlm_ok(&base), "abc\n");
    let mut with_stop = base.to_vec();
    with_stop.extend(["--stop", "bc", "--json"]);
    let o = &json_lines(&arlm_ok(&with_stop))[0];
    assert_eq!(o["text"], "a");
    assert_eq!(o["finish_reason"], "stop");
    // A two-byte character split over two tokens streams as one character.
    let out = arlm_ok(&[
        "generate",
        "--model",
        m,
        "--greedy",
        "--logit-bias",
        "195=6",
        "--logit-bias",
        "169=5",
        "--no-repeat-ngram",
        "1",
        "--max-tokens",
        "2",
    ]);
    assert_eq!(out, "é\n");
}

#[test]
fn beam_search_prints_hypotheses() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let out = arlm_ok(&[
        "generate",
        "--model",
        m,
        "--beam",
        "3",
        "--num-return",
        "2",
        "--max-tokens",
        "4",
        "--json",
    ]);
    let o = &json_lines(&out)[0];
    let hyps = o["hypotheses"].as_array().unwrap();
    assert_eq!(hyps.len(), 2);
    let lnv = (257f64).ln();
    for h in hyps {
        // The same result type as sampling: tokens with their model log-probs.
        let toks = h["tokens"].as_array().unwrap();
        let n = toks.len() as f64;
        assert!((h["total_logprob"].as_f64().unwrap() + n * lnv).abs() < 1e-3);
        let sum: f64 = toks.iter().map(|t| t["logprob"].as_f64().unwrap()).sum();
        assert!((sum + n * lnv).abs() < 1e-3, "{h}");
        assert!(
            h["score"].is_number() && h["finish_reason"] == "length",
            "{h}"
        );
    }
}

#[test]
fn bad_parameters_are_clear_errors() {
    let dir = uniform_model();
    let m = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--top-p", "0"], "top-p"),
        (&["--top-p", "1.5"], "top-p"),
        (&["--temp", "-1"], "temperature"),
        (&["--logit-bias", "999=1"], "unknown token"),
        (&["--logit-bias", "ab=1"], "unknown token"),
        (&["--samplers", "top_k", "--top-k", "0"], "top-k"),
        (&["--samplers", "top_q"], "unknown sampler"),
        (&["--beam", "0"], "beam"),
        (&["--weights", "q8"], "needs a GPT"),
        (&["--weights", "q4"], "unknown weight format"),
        // 257 distinct greedy tokens exhaust the vocabulary under no-repeat-ngram 1.
        (
            &[
                "--greedy",
                "--no-repeat-ngram",
                "1",
                "--max-tokens",
                "300",
                "--ignore-eot",
            ],
            "no token is left",
        ),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["generate", "--model", m];
        args.extend_from_slice(extra);
        let out = arlm(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
}

/// `--weights f16|q8` on a GPT: the CLI picks exactly the tokens the library's greedy chain
/// picks with the same weight format, and reports the format.
#[test]
fn gpt_reduced_precision_weights_from_the_cli() {
    use arlm::generate::{sample_tokens, Sampler, SamplerConfig};
    use arlm::model::gpt::{Gpt, GptConfig, WeightFormat};
    use arlm::model::LanguageModel;
    let dir = tempfile::tempdir().unwrap();
    let cfg = GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 64,
        block_size: 32,
        vocab_size: 257,
        dropout: 0.0,
        activation: Default::default(),
    };
    let mut gpt = Gpt::new(cfg, 11).unwrap();
    for p in gpt.params_mut() {
        *p *= 6.0;
    }
    gpt.save(dir.path()).unwrap();
    let tok = arlm::tokenizer::bytes::ByteTokenizer;
    arlm::tokenizer::save(&tok, &dir.path().join("tokenizer.json")).unwrap();
    let m = dir.path().to_str().unwrap();
    for format in [WeightFormat::F16, WeightFormat::Bf16, WeightFormat::Q8] {
        let name = format.to_string();
        let args = [
            "generate",
            "--model",
            m,
            "--prompt",
            "ab",
            "--greedy",
            "--max-tokens",
            "12",
            "--ignore-eot",
            "--json",
            "--weights",
            &name,
        ];
        let out = common::arlm(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains(&format!("{name} weights")), "{err}");
        let o = &json_lines(&String::from_utf8_lossy(&out.stdout))[0];
        let got: Vec<u64> = o["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect();
        let mut loaded = arlm::load::load(dir.path()).unwrap();
        loaded.set_weight_format(format).unwrap();
        let arlm::load::AnyModel::Gpt(g) = &loaded.model else {
            panic!("not a GPT")
        };
        let mut s = Sampler::new(SamplerConfig::greedy(), g.vocab_size()).unwrap();
        let want: Vec<u64> = sample_tokens(g, &[97, 98], &mut s, 12, None)
            .unwrap()
            .iter()
            .map(|c| c.token as u64)
            .collect();
        assert_eq!(got, want, "{name}");
    }
}
