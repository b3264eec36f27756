//! Corpus evaluation: documents -> sliding windows -> batched scoring -> metrics + protocol.

use super::bootstrap::{bootstrap, Intervals, Unit};
use super::metrics::{count_words, Metrics, Totals};
use super::window::{Window, WindowSpec};
use super::EvalError;
use crate::data::bin::TokenFile;
use crate::model::LanguageModel;
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How a text file is cut into documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DocMode {
    /// The whole file is one document.
    File,
    /// Every line is a document (the PTB / WikiText word-level convention).
    Lines,
    /// Blank-line-separated paragraphs are documents.
    Paragraphs,
    /// A token file: one stream, its end-of-text ids separate documents.
    Stream,
}

/// One document's ids (without the conditioning BOS) and the size of its text.
#[derive(Debug, Clone)]
pub struct Document {
    pub ids: Vec<u32>,
    pub bytes: u64,
    pub words: u64,
}

/// Documents ready to score, with how they were made.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Where the documents came from.
    pub source: PathBuf,
    pub mode: DocMode,
    /// Whether an end-of-text token was appended to (and scored after) each document.
    pub end_token: bool,
    pub docs: Vec<Document>,
}

impl Corpus {
    /// Tokenizes `text` into documents per `mode`; with `end_token`, each document ends
    /// with the tokenizer's end-of-text id (scored, as `</s>` is in n-gram evaluation),
    /// unless the tokenizer already put one there.
    pub fn from_text(
        source: &Path,
        text: &str,
        tok: &dyn Tokenizer,
        mode: DocMode,
        end_token: bool,
    ) -> Result<Corpus, EvalError> {
        use rayon::prelude::*;
        // (document text, bytes of the line break the end token stands for)
        let pieces: Vec<(&str, u64)> = match mode {
            DocMode::File => vec![(text, 0)],
            DocMode::Lines => text
                .split_inclusive('\n')
                .map(|l| {
                    let body = l.strip_suffix('\n').unwrap_or(l);
                    let body = body.strip_suffix('\r').unwrap_or(body);
                    (body, (l.len() - body.len()) as u64)
                })
                .collect(),
            DocMode::Paragraphs => text
                .split("\n\n")
                .map(|p| (p.trim_matches('\n'), 0))
                .filter(|(p, _)| !p.trim().is_empty())
                .collect(),
            DocMode::Stream => {
                return Err(EvalError::Invalid(
                    "the stream mode is for token files (.bin)".into(),
                ))
            }
        };
        let eot = tok.eot_token();
        let docs = pieces
            .par_iter()
            .map(|&(p, line_break)| {
                let mut ids = tok.encode(p)?;
                if end_token && ids.last() != Some(&eot) {
                    ids.push(eot);
                }
                // A scored end token stands for the line break, so its bytes count: the
                // byte total is then the file's, as for a byte model scoring the newlines.
                let extra = if end_token { line_break } else { 0 };
                Ok(Document {
                    ids,
                    bytes: p.len() as u64 + extra,
                    words: count_words(p),
                })
            })
            .collect::<Result<Vec<_>, EvalError>>()?;
        Ok(Corpus {
            source: source.to_path_buf(),
            mode,
            end_token,
            docs,
        })
    }

    /// A token stream as one document. A leading BOS is taken as the conditioning token;
    /// bytes are those of the non-special tokens, words those of the decoded text.
    pub fn from_tokens(
        source: &Path,
        ids: &[u32],
        tok: &dyn Tokenizer,
        bos: u32,
    ) -> Result<Corpus, EvalError> {
        let eot = tok.eot_token();
        let ids = match ids.first() {
            Some(&f) if f == bos => &ids[1..],
            _ => ids,
        };
        let v = tok.vocab_size();
        let mut len = vec![0u64; v];
        for (id, l) in len.iter_mut().enumerate() {
            let id = id as u32;
            if id != eot && id != bos {
                *l = tok.token_bytes(id).map(|b| b.len() as u64).unwrap_or(0);
            }
        }
        let mut bytes = 0u64;
        let mut words = 0u64;
        for run in ids.split(|&x| x == eot || x == bos) {
            for &id in run {
                bytes += len.get(id as usize).copied().unwrap_or(0);
            }
            words += count_words(&String::from_utf8_lossy(&tok.decode_bytes(run)?));
        }
        Ok(Corpus {
            source: source.to_path_buf(),
            mode: DocMode::Stream,
            end_token: false,
            docs: vec![Document {
                ids: ids.to_vec(),
                bytes,
                words,
            }],
        })
    }

    /// Opens `path`: a token file (`.bin`), a text file, or a directory holding
    /// `<split>.bin`, `<split>.txt` or `*.<split>.txt` (`val` also matches `valid`).
    /// `mode = None` picks lines for word tokenizers and the whole file otherwise;
    /// `end_token = None` scores an end-of-text token after each document only for word
    /// tokenizers (the `</s>` convention of n-gram evaluation).
    pub fn open(
        path: &Path,
        split: &str,
        tok: &dyn Tokenizer,
        bos: u32,
        mode: Option<DocMode>,
        end_token: Option<bool>,
    ) -> Result<Corpus, EvalError> {
        let file = if path.is_dir() {
            find_split(path, split)?
        } else {
            path.to_path_buf()
        };
        if file.extension().is_some_and(|e| e == "bin") {
            if mode.is_some_and(|m| m != DocMode::Stream) {
                return Err(EvalError::Invalid(format!(
                    "{} is a token file: its documents are fixed (mode stream)",
                    file.display()
                )));
            }
            let tf = TokenFile::open(&file)?;
            if tf.vocab_size() != tok.vocab_size() {
                return Err(EvalError::Format {
                    path: file.clone(),
                    message: format!(
                        "token file vocabulary ({}) differs from the model's tokenizer ({})",
                        tf.vocab_size(),
                        tok.vocab_size()
                    ),
                });
            }
            let ids = tf.slice(0, tf.len());
            return Corpus::from_tokens(&file, &ids, tok, bos);
        }
        let bytes = std::fs::read(&file).map_err(|source| EvalError::Io {
            path: file.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| EvalError::Format {
            path: file.clone(),
            message: format!("invalid UTF-8 at byte {}", e.utf8_error().valid_up_to()),
        })?;
        let words = tok.kind() == "words";
        let mode = mode.unwrap_or(if words { DocMode::Lines } else { DocMode::File });
        Corpus::from_text(&file, &text, tok, mode, end_token.unwrap_or(words))
    }

    /// Total ids over all documents.
    pub fn num_ids(&self) -> usize {
        self.docs.iter().map(|d| d.ids.len()).sum()
    }
}

fn find_split(dir: &Path, split: &str) -> Result<PathBuf, EvalError> {
    let mut names = vec![split.to_string()];
    if split == "val" {
        names.push("valid".into());
        names.push("validation".into());
    }
    for n in &names {
        for cand in [format!("{n}.bin"), format!("{n}.txt")] {
            let p = dir.join(cand);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|source| EvalError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| names.iter().any(|s| n.ends_with(&format!(".{s}.txt"))))
        })
        .collect();
    found.sort();
    found.into_iter().next().ok_or_else(|| {
        EvalError::Invalid(format!(
            "{} holds no {split}.bin, {split}.txt or *.{split}.txt",
            dir.display()
        ))
    })
}

/// Settings of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub window: WindowSpec,
    /// Ids per `score_next_batch` call (windows are grouped up to this many ids).
    pub batch_tokens: usize,
    /// Bootstrap resamples (0: no interval).
    pub resamples: usize,
    /// Bootstrap seed (fixed, so the interval is reproducible).
    pub seed: u64,
    /// Block size in scored tokens when resampling blocks rather than documents.
    pub block: usize,
    /// At least this many documents to resample documents rather than blocks.
    pub min_docs: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl EvalOptions {
    /// Defaults: 1000 resamples, seed 1234, 1024-token blocks below 100 documents.
    pub fn new(window: WindowSpec) -> EvalOptions {
        EvalOptions {
            window,
            batch_tokens: 16384,
            resamples: 1000,
            seed: 1234,
            block: 1024,
            min_docs: 100,
            progress: false,
        }
    }
}

/// Everything that determines the numbers, stated with them.
#[derive(Debug, Clone, Serialize)]
pub struct Protocol {
    pub model: String,
    pub tokenizer: String,
    pub tokenizer_fingerprint: String,
    pub vocab_size: usize,
    pub data: String,
    pub documents: usize,
    /// Ids per model call (`None`: whole documents, the model's context is unbounded).
    pub window: Option<usize>,
    pub stride: usize,
    pub conditioning: String,
    pub separation: String,
    pub scored: String,
    pub bytes: String,
    pub words: String,
    pub interval: String,
}

impl Protocol {
    /// Writes the protocol as indented `key: value` lines.
    pub fn lines(&self) -> Vec<(String, String)> {
        let window = match self.window {
            Some(w) => format!(
                "{w} ids per model call: each scored token sees up to {} tokens of left context",
                w - 1
            ),
            None => "whole documents (the model's context is unbounded)".into(),
        };
        let stride = match self.window {
            Some(w) if self.stride == w - 1 => {
                format!(
                    "{} (non-overlapping: each window scores new tokens only)",
                    self.stride
                )
            }
            Some(w) => format!(
                "{} new tokens per window; each sees {}..{} tokens of context",
                self.stride,
                w - self.stride,
                w - 1
            ),
            None => "-".into(),
        };
        vec![
            ("model".into(), self.model.clone()),
            (
                "tokenizer".into(),
                format!(
                    "{} ({} ids, fingerprint {})",
                    self.tokenizer, self.vocab_size, self.tokenizer_fingerprint
                ),
            ),
            (
                "data".into(),
                format!("{} ({} documents)", self.data, self.documents),
            ),
            ("window".into(), window),
            ("stride".into(), stride),
            ("first token".into(), self.conditioning.clone()),
            ("documents".into(), self.separation.clone()),
            ("scored".into(), self.scored.clone()),
            ("bytes".into(), self.bytes.clone()),
            ("words".into(), self.words.clone()),
            ("interval".into(), self.interval.clone()),
        ]
    }
}

/// The result of [`evaluate`]: totals, metrics, intervals, protocol, speed.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub totals: Totals,
    pub metrics: Metrics,
    pub interval: Option<Intervals>,
    pub protocol: Protocol,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// Per-token log-probs of every document (the scored positions, in order).
pub fn score_documents<M: LanguageModel>(
    model: &M,
    corpus: &Corpus,
    opts: &EvalOptions,
) -> Result<Vec<Vec<f32>>, EvalError> {
    let bos = model.bos_token();
    let seqs: Vec<Vec<u32>> = corpus
        .docs
        .iter()
        .map(|d| {
            let mut s = Vec::with_capacity(d.ids.len() + 1);
            s.push(bos);
            s.extend_from_slice(&d.ids);
            s
        })
        .collect();
    let jobs: Vec<(usize, Window)> = seqs
        .iter()
        .enumerate()
        .flat_map(|(i, s)| opts.window.plan(s.len()).into_iter().map(move |w| (i, w)))
        .collect();
    let total: u64 = corpus.docs.iter().map(|d| d.ids.len() as u64).sum();
    let bar = if opts.progress {
        indicatif::ProgressBar::new(total)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scoring {bar:40} {pos}/{len} tokens {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut out: Vec<Vec<f32>> = corpus
        .docs
        .iter()
        .map(|d| Vec::with_capacity(d.ids.len()))
        .collect();
    let mut at = 0;
    while at < jobs.len() {
        let mut end = at;
        let mut ids = 0;
        while end < jobs.len()
            && (end == at || ids + jobs[end].1.end - jobs[end].1.start <= opts.batch_tokens)
        {
            ids += jobs[end].1.end - jobs[end].1.start;
            end += 1;
        }
        let batch: Vec<&[u32]> = jobs[at..end]
            .iter()
            .map(|(d, w)| &seqs[*d][w.start..w.end])
            .collect();
        let scored = model.score_next_batch(&batch)?;
        for ((d, w), lp) in jobs[at..end].iter().zip(scored) {
            if lp.len() != w.end - w.start - 1 {
                return Err(EvalError::Invalid(format!(
                    "the model returned {} scores for a window of {} ids",
                    lp.len(),
                    w.end - w.start
                )));
            }
            let kept = &lp[w.skip()..];
            let targets = &seqs[*d][w.first_target..w.end];
            super::check_finite(kept, targets, w.first_target - 1)?;
            out[*d].extend_from_slice(kept);
            bar.inc((w.end - w.first_target) as u64);
        }
        at = end;
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Evaluates `model` on `corpus`: sums, metrics, bootstrap interval and protocol.
pub fn evaluate<M: LanguageModel>(
    model: &M,
    tok: &dyn Tokenizer,
    corpus: &Corpus,
    opts: &EvalOptions,
) -> Result<EvalReport, EvalError> {
    let started = std::time::Instant::now();
    let scores = score_documents(model, corpus, opts)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut totals = Totals::default();
    let mut per_doc = Vec::with_capacity(scores.len());
    for (d, lp) in corpus.docs.iter().zip(&scores) {
        let t = Totals {
            nll: -lp.iter().map(|&x| x as f64).sum::<f64>(),
            tokens: lp.len() as u64,
            bytes: d.bytes,
            words: d.words,
        };
        totals.add(&t);
        per_doc.push(t);
    }
    if totals.tokens == 0 {
        return Err(EvalError::Invalid(format!(
            "{}: nothing to score (the text has no tokens)",
            corpus.source.display()
        )));
    }
    let docs_as_units = corpus.docs.len() >= opts.min_docs;
    let (units, unit_name) = {
        if docs_as_units {
            let units: Vec<Unit> = per_doc
                .iter()
                .map(|t| Unit {
                    nll: t.nll,
                    tokens: t.tokens as f64,
                    bytes: t.bytes as f64,
                    words: t.words as f64,
                })
                .collect();
            (units, "documents".to_string())
        } else {
            // Blocks of consecutive scored tokens; bytes and words are shared out in
            // proportion to tokens (a block boundary does not fall on a byte boundary).
            let bytes_per = totals.bytes as f64 / totals.tokens as f64;
            let words_per = totals.words as f64 / totals.tokens as f64;
            let flat: Vec<f32> = scores.iter().flatten().copied().collect();
            let units: Vec<Unit> = flat
                .chunks(opts.block)
                .map(|c| {
                    let n = c.len() as f64;
                    Unit {
                        nll: -c.iter().map(|&x| x as f64).sum::<f64>(),
                        tokens: n,
                        bytes: n * bytes_per,
                        words: n * words_per,
                    }
                })
                .collect();
            (units, format!("blocks of {} scored tokens", opts.block))
        }
    };
    // One unit resamples to itself: a zero-width interval would look like certainty.
    let interval = (opts.resamples > 0 && units.len() >= 2)
        .then(|| bootstrap(&units, &unit_name, opts.resamples, opts.seed));
    let bos = model.bos_token();
    let name = |id: u32| {
        let p = crate::eval::score::piece(tok, id);
        if p.is_empty() {
            format!("id {id}")
        } else {
            format!("id {id} {p:?}")
        }
    };
    let bos_text = name(bos);
    let eot_text = name(tok.eot_token());
    let separation = match corpus.mode {
        DocMode::File => "the whole file is one document".to_string(),
        DocMode::Lines if corpus.end_token => "each line is a document, scored independently (context never crosses a line; the scored end token stands for the line break)".to_string(),
        DocMode::Lines => "each line is a document, scored independently (context never crosses a line; line breaks are not scored)".to_string(),
        DocMode::Paragraphs => "blank-line-separated paragraphs, scored independently".to_string(),
        DocMode::Stream => format!("one token stream; its end-of-text ids ({eot_text}) separate documents and the context crosses them (as in training)"),
    };
    let scored = if corpus.end_token {
        format!("every token of each document, plus the end-of-text token ({eot_text}) after it; BOS is never scored")
    } else if corpus.mode == DocMode::Stream {
        "every token after the first (BOS), separators included".to_string()
    } else {
        "every token of each document; BOS is never scored; no end-of-document token".to_string()
    };
    let interval_text = match &interval {
        Some(i) => format!(
            "95% percentile bootstrap over {} {}, {} resamples, seed {}",
            i.units, i.unit, i.resamples, i.seed
        ),
        None if opts.resamples == 0 => "none".into(),
        None => format!(
            "not available: {} {unit_name} (a bootstrap needs at least 2)",
            units.len()
        ),
    };
    let protocol = Protocol {
        model: model.describe(),
        tokenizer: tok.kind().to_string(),
        tokenizer_fingerprint: tok.fingerprint(),
        vocab_size: tok.vocab_size(),
        data: corpus.source.display().to_string(),
        documents: corpus.docs.len(),
        window: opts.window.window,
        stride: opts.window.stride,
        conditioning: format!(
            "each document is preceded by BOS ({bos_text}): x_1 is scored as log p(x_1 | BOS)"
        ),
        separation,
        scored,
        bytes: if corpus.end_token && corpus.mode == DocMode::Lines {
            "UTF-8 bytes of the text, each line's line break included (the scored end token stands for it): the file's bytes".into()
        } else {
            "UTF-8 bytes of the document text (special tokens and unscored separators count 0)"
                .into()
        },
        words: "whitespace-separated words of the document text".into(),
        interval: interval_text,
    };
    Ok(EvalReport {
        totals,
        metrics: totals.metrics(),
        interval,
        protocol,
        seconds,
        tokens_per_second: totals.tokens as f64 / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::super::score::score_ids;
    use super::super::test_models::Toy;
    use super::*;
    use crate::model::uniform::Uniform;
    use crate::tokenizer::bytes::ByteTokenizer;

    #[test]
    fn uniform_perplexity_is_vocab_and_bytes_are_text_bytes() {
        let m = Uniform::new(257, 256).unwrap();
        let text = "one two\nthree\n\nfour five six\n";
        let c =
            Corpus::from_text(Path::new("t"), text, &ByteTokenizer, DocMode::Lines, false).unwrap();
        assert_eq!(c.docs.len(), 4);
        let opts = EvalOptions::new(WindowSpec::new(Some(4), Some(2), None).unwrap());
        let r = evaluate(&m, &ByteTokenizer, &c, &opts).unwrap();
        assert_eq!(r.totals.tokens, 25);
        assert_eq!(r.totals.bytes, 25);
        assert_eq!(r.totals.words, 6);
        assert!((r.metrics.token_perplexity - 257.0).abs() < 1e-3);
        assert!((r.metrics.bits_per_byte - 257f64.log2()).abs() < 1e-5);
        // Ends scored: one more token per document, same bytes.
        let c =
            Corpus::from_text(Path::new("t"), text, &ByteTokenizer, DocMode::Lines, true).unwrap();
        let r = evaluate(&m, &ByteTokenizer, &c, &opts).unwrap();
        assert_eq!(r.totals.tokens, 29);
        assert_eq!(r.totals.bytes, text.len() as u64);
    }

    #[test]
    fn evaluate_matches_detailed_scoring_for_any_stride() {
        let m = Toy {
            vocab: 7,
            max_context: Some(6),
        };
        let docs: Vec<Document> = (0..5)
            .map(|k| Document {
                ids: (0..(3 + k * 9)).map(|i| ((i * 5 + k) % 6) as u32).collect(),
                bytes: 1,
                words: 1,
            })
            .collect();
        let corpus = Corpus {
            source: "toy".into(),
            mode: DocMode::File,
            end_token: false,
            docs,
        };
        for stride in 1..=5 {
            let spec = WindowSpec::new(None, Some(stride), m.max_context).unwrap();
            let mut opts = EvalOptions::new(spec);
            opts.batch_tokens = 10; // many small batches
            let got = score_documents(&m, &corpus, &opts).unwrap();
            for (d, lp) in corpus.docs.iter().zip(&got) {
                assert_eq!(lp.len(), d.ids.len(), "every token counted once");
                let want = score_ids(&m, &[], &d.ids, &spec, 0).unwrap();
                for (a, b) in lp.iter().zip(&want) {
                    assert!((*a as f64 - b.logprob).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn deterministic_across_thread_counts() {
        let m = Toy {
            vocab: 9,
            max_context: Some(16),
        };
        let text: String = (0..3000)
            .map(|i| ((i * 13 % 8) as u8 + b'a') as char)
            .collect();
        let ids: Vec<u32> = text.bytes().map(|b| (b - b'a') as u32).collect();
        let corpus = Corpus {
            source: "toy".into(),
            mode: DocMode::Stream,
            end_token: false,
            docs: vec![Document {
                ids,
                bytes: 3000,
                words: 1,
            }],
        };
        let opts = EvalOptions::new(WindowSpec::new(None, Some(5), m.max_context).unwrap());
        let tok = ByteTokenizer;
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| evaluate(&m, &tok, &corpus, &opts).unwrap())
        };
        let a = run(1);
        let b = run(3);
        assert_eq!(a.totals, b.totals);
        assert_eq!(a.interval, b.interval);
    }
}
