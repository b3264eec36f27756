//! Fuzzing the loaders of untrusted files: tokenizer.json, config.json + model.safetensors,
//! ARPA (plain and gzip), `.bin` token files, and the JSONL inputs of `prepare` and
//! `score`. Each property mutates a valid file (byte flips, truncation, a JSON value
//! swapped for a hostile one, an ARPA line's numbers replaced) and asserts only that the
//! loader returns, `Ok` or `Err`: a panic or an abort fails the test (proptest reports
//! the input). CI runs a few dozen cases per loader (seconds); `PROPTEST_CASES=20000`
//! runs the long campaign, and `ulimit -v 4000000` beforehand checks that no input makes
//! a loader allocate its way into an abort.

use crate::common;

use proptest::prelude::*;
use std::io::Write;
use std::path::Path;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn config() -> ProptestConfig {
    // Honour PROPTEST_CASES for the long runs; a small default keeps CI fast.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Values that have broken loaders elsewhere: huge and negative counts, NaN-ish strings,
/// wrong types.
fn hostile_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1u64 << 32)),
        Just(serde_json::json!((1u64 << 31) - 1)),
        Just(serde_json::json!(1_000_000_000_000u64)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1.5e300)),
        Just(serde_json::json!("NaN")),
        Just(serde_json::json!(null)),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!("")),
        any::<i64>().prop_map(|x| serde_json::json!(x)),
    ]
}

/// Replaces the `pick`-th value of `v` (in a depth-first walk) by `new`.
fn replace_nth(v: &mut serde_json::Value, pick: &mut usize, new: &serde_json::Value) -> bool {
    if *pick == 0 {
        *v = new.clone();
        return true;
    }
    *pick -= 1;
    match v {
        serde_json::Value::Array(a) => a.iter_mut().any(|x| replace_nth(x, pick, new)),
        serde_json::Value::Object(o) => o.values_mut().any(|x| replace_nth(x, pick, new)),
        _ => false,
    }
}

/// Byte-level damage: flip bytes at the given positions and maybe cut the end.
fn damage(bytes: &[u8], flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    for &(at, x) in flips {
        let i = at % out.len();
        out[i] ^= x | 1;
    }
    if let Some(c) = cut {
        out.truncate(c % (out.len() + 1));
    }
    out
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn tokenizer_json_never_panics(
        which in 0usize..3,
        pick in 0usize..4000,
        new in hostile_value(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let name = ["arlm_chars.json", "arlm_bpe_gpt2.json", "hf_bpe_gpt2.json"][which];
        let text = std::fs::read_to_string(Path::new(FIXTURES).join(name)).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut p = pick;
        replace_nth(&mut json, &mut p, &new);
        if let Ok(t) = arlm::tokenizer::from_hf_json(&json) {
            let _ = t.encode("Hello, world! 123 naïve");
            let _ = t.decode(&[0, 1, 2, 1 << 30]);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, damage(text.as_bytes(), &flips, cut)).unwrap();
        let _ = arlm::tokenizer::load(&path);
    }

    #[test]
    fn gpt_directory_never_panics(
        key in prop_oneof![
            Just("n_layer"), Just("n_head"), Just("n_embd"), Just("n_positions"),
            Just("vocab_size"), Just("n_inner"), Just("eos_token_id"), Just("resid_pdrop"),
        ],
        new in hostile_value(),
        flips in proptest::collection::vec((0usize..4096, any::<u8>()), 0..3),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let src = Path::new(FIXTURES).join("gpt2-tiny");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
        cfg[key] = new;
        std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
        let weights = std::fs::read(src.join("model.safetensors")).unwrap();
        // Flips land in the safetensors header and the first weights.
        std::fs::write(d.join("model.safetensors"), damage(&weights, &flips, cut)).unwrap();
        // The byte tokenizer fits the fixture's vocabulary question either way.
        arlm::tokenizer::save(&arlm::tokenizer::bytes::ByteTokenizer, &d.join("tokenizer.json")).unwrap();
        let _ = arlm::load::load(d);
    }

    #[test]
    fn arpa_never_panics(
        line in 0usize..20,
        field in 0usize..4,
        token in prop_oneof![
            Just("nan".to_string()), Just("inf".to_string()), Just("-inf".to_string()),
            Just("5.0".to_string()), Just("18446744073709551615".to_string()),
            Just("100000000000000".to_string()), Just("".to_string()), Just("<s>".to_string()),
            Just("ngram 9=1".to_string()), Just("\\end\\".to_string()),
            "[ -~]{0,12}",
        ],
        gz in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..2),
    ) {
        let good = "\\data\\\nngram 1=4\nngram 2=2\n\n\\1-grams:\n-1.0\t<unk>\t0\n0\t<s>\t-0.5\n-0.3\t</s>\t0\n-0.6\ta\t-0.2\n\n\\2-grams:\n-0.2\t<s> a\n-0.1\ta </s>\n\n\\end\\\n";
        let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
        let i = line % lines.len();
        let mut fields: Vec<String> = lines[i].split_whitespace().map(str::to_string).collect();
        if fields.is_empty() {
            lines[i] = token;
        } else {
            let f = field % fields.len();
            fields[f] = token;
            lines[i] = fields.join("\t");
        }
        let text = damage((lines.join("\n") + "\n").as_bytes(), &flips, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(if gz { "m.arpa.gz" } else { "m.arpa" });
        if gz {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&text).unwrap();
            let mut z = e.finish().unwrap();
            // Sometimes the gzip stream itself is damaged.
            if !flips.is_empty() {
                let n = z.len();
                z[flips[0].0 % n] ^= 0x5a;
            }
            std::fs::write(&path, z).unwrap();
        } else {
            std::fs::write(&path, &text).unwrap();
        }
        if let Ok(loaded) = arlm::load::load(&path) {
            let ids = loaded.tokenizer.encode("a a b\n").unwrap_or_default();
            let mut seq = vec![arlm::with_model!(&loaded.model, m => arlm::model::LanguageModel::bos_token(m))];
            seq.extend(ids);
            let _ = arlm::with_model!(&loaded.model, m => arlm::model::LanguageModel::score_next(m, &seq));
        }
    }

    #[test]
    fn token_file_never_panics(
        width in prop_oneof![Just(2u32), Just(4), Just(3), Just(0), any::<u32>()],
        count in prop_oneof![Just(u64::MAX), Just(1u64 << 63), Just((1u64 << 62) + 3), 0u64..64, any::<u64>()],
        vocab in any::<u32>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = b"ARLMTOK\0".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&width.to_le_bytes());
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&vocab.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&body);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(f) = arlm::data::bin::TokenFile::open(&path) {
            let n = f.len().min(64);
            let mut out = vec![0u32; n];
            f.read_into(0, &mut out);
            for i in 0..n {
                let _ = f.get(i);
            }
        }
    }

    #[test]
    fn prepare_jsonl_never_panics(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("{\"text\": \"hello world\"}".to_string()),
                Just("{\"text\": 5}".to_string()),
                Just("{\"other\": \"x\"}".to_string()),
                Just("[1, 2]".to_string()),
                Just("{\"text\": \"\\ud800\"}".to_string()),
                Just("".to_string()),
                "[ -~]{0,24}",
            ],
            0..6,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("docs.jsonl");
        std::fs::write(&input, lines.join("\n")).unwrap();
        let opts = arlm::data::prepare::PrepareOptions {
            tokenizer: &arlm::tokenizer::bytes::ByteTokenizer,
            input: arlm::data::prepare::Input::Files(vec![input]),
            val: arlm::data::prepare::ValSplit::Fraction(0.1),
            out: dir.path().join("out"),
            jsonl_field: Some("text".into()),
            lossy: false,
            dtype: arlm::data::prepare::Dtype::Auto,
            progress: false,
        };
        let _ = arlm::data::prepare::prepare(&opts);
    }
}

/// `arlm score --input X.jsonl` on hostile records: every run ends with exit 0 or 2.
#[test]
fn score_jsonl_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("uniform");
    arlm::load::save_uniform(&model, &arlm::tokenizer::bytes::ByteTokenizer).unwrap();
    let records = [
        "{\"text\": \"hello\"}",
        "{\"text\": 5}",
        "{\"context\": \"a\", \"continuation\": \"b\"}",
        "{\"continuation\": null}",
        "not json",
        "[\"text\"]",
        "{\"text\": \"\"}",
        "\u{feff}{\"text\": \"bom\"}",
    ];
    for r in records {
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, r).unwrap();
        let out = common::arlm(&[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ]);
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(2),
            "{r}: {code:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A BPE tokenizer.json whose one id is 2^31 - 1 once asked for 51 GB: now an error
/// before any allocation, naming the id.
#[test]
fn a_huge_bpe_token_id_is_an_error_not_an_allocation() {
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("hf_bpe_gpt2.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    let key = vocab.keys().next_back().unwrap().clone();
    vocab[&key] = serde_json::json!((1u64 << 31) - 1);
    let e = arlm::tokenizer::from_hf_json(&json)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("2147483647") && e.contains("out of range"),
        "{e}"
    );
}
