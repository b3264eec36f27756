//! decode(encode(s)) == s for every tokenizer kind, on arbitrary UTF-8 and on hard cases.

use crate::common;

use arlm::tokenizer::bpe::{BpeTokenizer, Pretokenizer};
use arlm::tokenizer::bytes::ByteTokenizer;
use arlm::tokenizer::chars::CharTokenizer;
use arlm::tokenizer::{self, Tokenizer};
use proptest::prelude::*;
use std::sync::OnceLock;
use std::time::Instant;

/// Byte-level tokenizers that can encode any text: trained BPEs (both pre-tokenizers),
/// bytes, and GPT-2 when the shared data is present.
fn tokenizers() -> &'static Vec<Box<dyn Tokenizer>> {
    static T: OnceLock<Vec<Box<dyn Tokenizer>>> = OnceLock::new();
    T.get_or_init(|| {
        let corpus = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bpe_corpus.txt"),
        )
        .unwrap();
        let mut v: Vec<Box<dyn Tokenizer>> = vec![
            Box::new(ByteTokenizer),
            Box::new(BpeTokenizer::train(&[&corpus], 600, Pretokenizer::Gpt2).unwrap()),
            Box::new(BpeTokenizer::train(&[&corpus], 600, Pretokenizer::Gpt4).unwrap()),
        ];
        if let Some(dir) = common::shared_data("gpt2") {
            v.push(tokenizer::load(&dir).unwrap());
        }
        v
    })
}

fn check(text: &str) {
    for t in tokenizers() {
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids).unwrap(), text, "{} on {:?}", t.kind(), text);
        let len: usize = ids.iter().map(|&i| t.token_bytes(i).unwrap().len()).sum();
        assert_eq!(
            len,
            text.len(),
            "token byte lengths add up to the text length"
        );
    }
    let chars = CharTokenizer::train(&[text]);
    assert_eq!(chars.decode(&chars.encode(text).unwrap()).unwrap(), text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn round_trip_arbitrary_unicode(text in "\\PC{0,60}") {
        check(&text);
    }
    #[test]
    fn round_trip_any_chars(text in any::<String>()) {
        check(&text);
    }
    #[test]
    fn round_trip_whitespace_and_words(text in "([ \t\r\n\u{a0}\u{3000}]{0,5}[a-z0-9'.!😀]{0,6}){0,12}") {
        check(&text);
    }
}

#[test]
fn hard_cases() {
    for text in [
        "",
        " ",
        "\n\n\n",
        "          ",
        " \t \n \r\n  \u{a0}\u{3000} ",
        "😀",
        "👩‍👩‍👧‍👦🇫🇷",
        "'s's's'S'll",
        "a\u{301}\u{301}\u{301}",
    ] {
        check(text);
    }
}

#[test]
fn one_megabyte_without_spaces_is_fast_and_exact() {
    // One piece of a million bytes: no recursion, O(n log n) merging.
    for unit in ["a", "é", "😀", "ab1."] {
        let text = unit.repeat((1 << 20) / unit.len());
        for t in tokenizers() {
            let start = Instant::now();
            let ids = t.encode(&text).unwrap();
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(t.decode(&ids).unwrap(), text);
            // Generous bound for a loaded 2-core test machine; quadratic would take minutes.
            assert!(
                secs < 20.0,
                "{} took {secs:.1} s on {unit:?} x 1 MB",
                t.kind()
            );
        }
    }
}
