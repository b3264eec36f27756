//! Fitting from corpora, and n-gram model directories on disk.
//!
//! A fitted model directory holds `tokenizer.json`, `config.json` and the model:
//! - Kneser-Ney: `model.bin` (the binary query tables, [`super::binary`], mapped at load;
//!   config.json's `"file"`) and, unless fitted with `--no-arpa`, `model.arpa` (plain
//!   ARPA, readable by KenLM/SRILM; words are the words tokenizer's words, or decimal ids
//!   for other tokenizers with `<s>`/`</s>` for the start symbol and end-of-text token;
//!   config.json's `"arpa"`); `model_type: "arlm-kneser-ney"`. Directories whose `"file"`
//!   is an ARPA file (no binary) load too, by parsing it.
//! - add-k: `counts.bin` ([`super::addk::AddK::save_counts`]); `model_type: "arlm-add-k"`.
//!
//! A bare `.arpa` / `.arpa.gz` file is a model too ([`load_arpa`]): its unigrams become a
//! words tokenizer.

use super::addk::{AddK, AddKCounter};
use super::arpa::{self, Vocab};
use super::backoff::BackoffModel;
use super::kneser_ney::{ArpaGrams, Discounts, KnCounter, KnOptions};
use super::streamed::{self, Plan};
use super::{for_each_sentence, NgramError};
use crate::model::ModelError;
use crate::tokenizer::words::WordTokenizer;
use crate::tokenizer::Tokenizer;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// `model_type` of a Kneser-Ney model directory.
pub const KN_TYPE: &str = "arlm-kneser-ney";
/// `model_type` of an add-k model directory.
pub const ADDK_TYPE: &str = "arlm-add-k";

/// A training corpus: text files (one sentence per line, words tokenizer) or a token file.
pub enum Corpus<'a> {
    /// Text files read line by line.
    Text {
        files: &'a [PathBuf],
        tokenizer: &'a WordTokenizer,
    },
    /// A token stream of `len` ids read by `get` (a `.bin` token file: a closure, so that
    /// the model layer needs nothing from `data`); sentences end at `eot`.
    Tokens {
        len: usize,
        get: Box<dyn Fn(usize) -> u32 + 'a>,
        eot: u32,
    },
}

/// Receives a sentence and the input bytes it took.
pub type SizedSink<'a> = dyn FnMut(&[u32], u64) -> Result<(), NgramError> + 'a;

impl Corpus<'_> {
    /// Streams the corpus sentence by sentence (each ends with the end-of-text id).
    pub fn for_each_sentence(
        &self,
        mut f: impl FnMut(&[u32]) -> Result<(), NgramError>,
    ) -> Result<(), NgramError> {
        self.for_each_sentence_sized(&mut |s, _| f(s))
    }

    /// Like [`Corpus::for_each_sentence`], with the input bytes each sentence took (its
    /// line with the newline, or 4 bytes per id of a token file), for progress bars.
    pub fn for_each_sentence_sized(&self, f: &mut SizedSink) -> Result<(), NgramError> {
        match self {
            Corpus::Text { files, tokenizer } => {
                let mut ids = Vec::with_capacity(256);
                let mut line = String::new();
                for path in files.iter() {
                    let io = |source| NgramError::Io {
                        path: path.clone(),
                        source,
                    };
                    let mut r = std::io::BufReader::with_capacity(
                        1 << 20,
                        std::fs::File::open(path).map_err(io)?,
                    );
                    loop {
                        line.clear();
                        let bytes = r.read_line(&mut line).map_err(io)?;
                        if bytes == 0 {
                            break;
                        }
                        ids.clear();
                        tokenizer.encode_line_into(line.trim_end_matches('\n'), &mut ids);
                        f(&ids, bytes as u64)?;
                    }
                }
                Ok(())
            }
            Corpus::Tokens { len, get, eot } => {
                for_each_sentence((0..*len).map(get), *eot, |s| f(s, 4 * s.len() as u64))
            }
        }
    }

    /// Total input bytes, as [`Corpus::for_each_sentence_sized`] counts them.
    pub fn bytes(&self) -> u64 {
        match self {
            Corpus::Text { files, .. } => files
                .iter()
                .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
                .sum(),
            Corpus::Tokens { len, .. } => 4 * *len as u64,
        }
    }
}

/// The words tokenizer inside `tok`, when it is one.
pub fn as_words(tok: &dyn Tokenizer) -> Option<WordTokenizer> {
    tok.as_words().cloned()
}

/// The start symbol and end-of-text id a model over `tok` uses.
pub fn start_and_eot(tok: &dyn Tokenizer) -> (u32, u32) {
    if tok.kind() == "words" {
        (crate::tokenizer::words::BOS, crate::tokenizer::words::EOS)
    } else {
        (tok.vocab_size() as u32, tok.eot_token())
    }
}

/// A fitted Kneser-Ney model in ARPA form.
pub struct KnFit {
    /// The n-grams with probabilities and backoffs.
    pub grams: ArpaGrams,
    /// (D1, D2, D3+) per order.
    pub discounts: Vec<Discounts>,
    /// Tokens counted (words and end-of-sentence ids).
    pub tokens: u64,
}

/// Estimates interpolated modified Kneser-Ney on `corpus` for tokenizer `tok`.
pub fn fit_kn(corpus: &Corpus, tok: &dyn Tokenizer, opts: &KnOptions) -> Result<KnFit, NgramError> {
    let (start, _eot) = start_and_eot(tok);
    let v = tok.vocab_size();
    let n_ids = v.max(start as usize + 1);
    let mut counter = KnCounter::new(opts.order, n_ids, start)?;
    corpus.for_each_sentence(|s| {
        counter.add_sentence(s);
        Ok(())
    })?;
    let tokens = counter.tokens();
    let always: Vec<u32> = (0..v as u32).collect();
    let (grams, discounts) = counter.estimate(opts, &always)?;
    Ok(KnFit {
        grams,
        discounts,
        tokens,
    })
}

/// Fits an add-k model of `order` on `corpus`.
pub fn fit_addk(
    corpus: &Corpus,
    tok: &dyn Tokenizer,
    order: usize,
    k: f64,
) -> Result<AddK, NgramError> {
    let (start, eot) = start_and_eot(tok);
    let v = tok.vocab_size();
    let mut counter = AddKCounter::new(order, v.max(start as usize + 1), start)?;
    corpus.for_each_sentence(|s| {
        counter.add_sentence(s);
        Ok(())
    })?;
    counter.finish(k, v, eot)
}

/// Spells ids for ARPA files of models over `tok`.
pub fn arpa_names(tok: &dyn Tokenizer) -> Box<dyn Fn(u32) -> String + Send + Sync> {
    match as_words(tok) {
        Some(w) => Box::new(move |id| w.word(id).unwrap_or("<unk>").to_string()),
        None => {
            let (start, eot) = start_and_eot(tok);
            Box::new(move |id| {
                if id == start {
                    "<s>".into()
                } else if id == eot {
                    "</s>".into()
                } else {
                    id.to_string()
                }
            })
        }
    }
}

/// The one-line description of a backoff model with `counts` n-grams per order.
fn describe_backoff(counts: &[usize], tok: &dyn Tokenizer) -> String {
    let counts: Vec<String> = counts.iter().map(|c| c.to_string()).collect();
    format!(
        "Kneser-Ney/backoff {}-gram ({} n-grams), {} tokenizer",
        counts.len(),
        counts.join(" / "),
        tok.kind()
    )
}

/// Builds the query model for `grams` over `tok`.
pub fn backoff_model(grams: &ArpaGrams, tok: &dyn Tokenizer) -> Result<BackoffModel, NgramError> {
    let (start, eot) = start_and_eot(tok);
    let counts: Vec<usize> = grams.orders.iter().map(|o| o.keys.len()).collect();
    BackoffModel::new(
        grams,
        tok.vocab_size(),
        start,
        eot,
        0,
        describe_backoff(&counts, tok),
    )
}

fn write_dir_files(
    dir: &Path,
    tok: &dyn Tokenizer,
    config: serde_json::Value,
) -> Result<(), NgramError> {
    let io = |source| NgramError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    crate::tokenizer::save_in_model_dir(tok, dir, None)
        .map_err(|e| NgramError::Invalid(e.to_string()))?;
    let text = serde_json::to_string_pretty(&config).expect("JSON values serialize");
    crate::atomic::write_atomic(dir.join("config.json"), text.as_bytes()).map_err(io)
}

/// The binary model file of a Kneser-Ney model directory.
pub const KN_BINARY: &str = "model.bin";
/// The ARPA file of a Kneser-Ney model directory.
pub const KN_ARPA: &str = "model.arpa";

/// Writes a Kneser-Ney model directory: `model.bin`, `model.arpa` when `with_arpa`,
/// `tokenizer.json` and `config.json`.
pub fn save_kn(
    dir: &Path,
    fit: &KnFit,
    tok: &dyn Tokenizer,
    opts: &KnOptions,
    with_arpa: bool,
) -> Result<(), NgramError> {
    std::fs::create_dir_all(dir).map_err(|source| NgramError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let model = backoff_model(&fit.grams, tok)?;
    let vocab = tok.as_words().map(|w| w.table());
    super::binary::write(&dir.join(KN_BINARY), &model, vocab)?;
    drop(model);
    if with_arpa {
        arpa::write(&dir.join(KN_ARPA), &fit.grams, &*arpa_names(tok))?;
    } else {
        // A model.arpa left by an earlier fit into this directory would not match.
        remove_if_present(&dir.join(KN_ARPA))?;
    }
    let counts: Vec<usize> = fit.grams.orders.iter().map(|o| o.keys.len()).collect();
    let config = kn_config(opts, tok, &fit.discounts, &counts, fit.tokens, with_arpa);
    write_dir_files(dir, tok, config)
}

/// config.json of a fitted Kneser-Ney model directory.
fn kn_config(
    opts: &KnOptions,
    tok: &dyn Tokenizer,
    discounts: &[Discounts],
    counts: &[usize],
    tokens: u64,
    with_arpa: bool,
) -> serde_json::Value {
    let mut config = serde_json::json!({
        "model_type": KN_TYPE,
        "order": opts.order,
        "vocab_size": tok.vocab_size(),
        "file": KN_BINARY,
        "kenlm_quirk": opts.kenlm_quirk,
        "discounts": discounts,
        "ngrams": counts,
        "tokens": tokens,
    });
    if with_arpa {
        config["arpa"] = KN_ARPA.into();
    }
    config
}

/// What [`fit_kn_streamed`] estimated.
pub struct StreamedFit {
    /// n-grams per order.
    pub counts: Vec<usize>,
    /// (D1, D2, D3+) per order.
    pub discounts: Vec<Discounts>,
    /// Tokens counted (words and end-of-sentence ids).
    pub tokens: u64,
    /// Sorted runs written to disk (0: every sort fit in the budget).
    pub runs_spilled: usize,
}

/// Estimates interpolated modified Kneser-Ney on `corpus` within `plan`'s memory budget
/// ([`super::streamed`]) and writes the model directory `dir` (plus the ARPA file
/// `extra_arpa` when given): the same bytes as [`fit_kn`] followed by [`save_kn`].
/// `on_estimated` runs between estimation and writing (to report the counts early).
#[allow(clippy::too_many_arguments)]
pub fn fit_kn_streamed(
    corpus: &Corpus,
    tok: &dyn Tokenizer,
    opts: &KnOptions,
    plan: &Plan,
    dir: &Path,
    with_arpa: bool,
    extra_arpa: Option<&Path>,
    on_estimated: &mut dyn FnMut(&StreamedFit),
) -> Result<StreamedFit, NgramError> {
    let (start, eot) = start_and_eot(tok);
    let v = tok.vocab_size();
    let n_ids = v.max(start as usize + 1);
    let always: Vec<u32> = (0..v as u32).collect();
    let est = streamed::estimate(
        &mut |f| corpus.for_each_sentence_sized(f),
        corpus.bytes(),
        n_ids,
        start,
        &always,
        opts,
        plan,
    )?;
    let fit = StreamedFit {
        counts: est.counts(),
        discounts: est.discounts.clone(),
        tokens: est.tokens,
        runs_spilled: est.runs_spilled(),
    };
    on_estimated(&fit);
    std::fs::create_dir_all(dir).map_err(|source| NgramError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let vocab = tok.as_words().map(|w| w.table());
    let names = arpa_names(tok);
    // model.bin and the ARPA file read the same sorted n-grams and write different
    // files: on two threads at once, the ARPA text (the slower of the two to format)
    // costs no wall time of its own.
    let (binary, text) = rayon::join(
        || est.write_binary(&dir.join(KN_BINARY), v, [start, eot, 0], vocab),
        || {
            if with_arpa {
                est.write_arpa(&dir.join(KN_ARPA), &*names)
            } else {
                remove_if_present(&dir.join(KN_ARPA))
            }
        },
    );
    binary?;
    text?;
    if let Some(p) = extra_arpa {
        est.write_arpa(p, &*names)?;
    }
    drop(est);
    let config = kn_config(
        opts,
        tok,
        &fit.discounts,
        &fit.counts,
        fit.tokens,
        with_arpa,
    );
    write_dir_files(dir, tok, config)?;
    Ok(fit)
}

fn remove_if_present(path: &Path) -> Result<(), NgramError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NgramError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Converts the ARPA file `arpa_path` (KenLM's, SRILM's or arlm's, plain or gzip) into a
/// model directory `dir` with `model.bin`, a words `tokenizer.json` built from its
/// unigrams, and `config.json`. Returns the model (ready for queries).
pub fn build_binary(arpa_path: &Path, dir: &Path) -> Result<BackoffModel, NgramError> {
    let file = arpa::read(arpa_path, Vocab::Build)?;
    let tok = file
        .tokenizer
        .ok_or_else(|| NgramError::Invalid("ARPA vocabulary was not built".into()))?;
    let model = backoff_model(&file.grams, &tok)?;
    let counts: Vec<usize> = file.grams.orders.iter().map(|o| o.keys.len()).collect();
    drop(file.grams);
    std::fs::create_dir_all(dir).map_err(|source| NgramError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    super::binary::write(&dir.join(KN_BINARY), &model, Some(tok.table()))?;
    remove_if_present(&dir.join(KN_ARPA))?;
    let config = serde_json::json!({
        "model_type": KN_TYPE,
        "order": model.order(),
        "vocab_size": tok.vocab_size(),
        "file": KN_BINARY,
        "ngrams": counts,
        "source_arpa": arpa_path.display().to_string(),
    });
    write_dir_files(dir, &tok, config)?;
    Ok(model)
}

/// Writes an add-k model directory (`counts.bin`, `tokenizer.json`, `config.json`).
pub fn save_addk(dir: &Path, model: &AddK, tok: &dyn Tokenizer) -> Result<(), NgramError> {
    std::fs::create_dir_all(dir).map_err(|source| NgramError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    model.save_counts(&dir.join("counts.bin"))?;
    let config = serde_json::json!({
        "model_type": ADDK_TYPE,
        "order": model.order(),
        "k": model.k(),
        "vocab_size": tok.vocab_size(),
        "file": "counts.bin",
    });
    write_dir_files(dir, tok, config)
}

/// The model file named by config.json's `"file"`: a plain file name inside the model
/// directory (no path separators, no `..`), so a config cannot point a load (and the
/// error messages that echo the file's lines) anywhere else on the machine.
fn config_file(
    dir: &Path,
    config: &serde_json::Value,
    default: &str,
) -> Result<PathBuf, ModelError> {
    let bad = |message: String| ModelError::Format {
        path: dir.join("config.json"),
        message,
    };
    let name = match config.get("file") {
        None => default,
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(other) => return Err(bad(format!("\"file\" must be a file name, not {other}"))),
    };
    let plain = Path::new(name).components().count() == 1
        && matches!(
            Path::new(name).components().next(),
            Some(std::path::Component::Normal(_))
        );
    if !plain {
        return Err(bad(format!(
            "\"file\" {name:?} must be a file name inside the model directory"
        )));
    }
    Ok(dir.join(name))
}

/// Opens a Kneser-Ney model directory whose `model.bin` holds its vocabulary, with that
/// vocabulary as its tokenizer (`tokenizer.json` is not read); `None` when the directory's
/// model has no vocabulary section (an ARPA file, another tokenizer, a version 1 binary),
/// whose tokenizer then comes from `tokenizer.json` ([`load_kn`]).
pub fn load_kn_self_contained(
    dir: &Path,
    config: &serde_json::Value,
) -> Result<Option<(BackoffModel, WordTokenizer)>, ModelError> {
    let path = config_file(dir, config, KN_ARPA)?;
    if !is_binary_path(&path) {
        return Ok(None);
    }
    let (model, vocab) = super::binary::load_with_vocab(&path, "")?;
    let Some(vocab) = vocab else {
        return Ok(None);
    };
    let tok = WordTokenizer::from_table(vocab);
    let model = checked_binary(path, model, &tok)?;
    Ok(Some((model, tok)))
}

fn is_binary_path(path: &Path) -> bool {
    super::binary::is_binary(path) || path.extension().is_some_and(|e| e == "bin")
}

/// `model` mapped from `path`, after checking that it is a model over `tok`.
fn checked_binary(
    path: PathBuf,
    mut model: BackoffModel,
    tok: &dyn Tokenizer,
) -> Result<BackoffModel, ModelError> {
    if model.vocab_size() != tok.vocab_size() {
        return Err(ModelError::Format {
            path,
            message: format!(
                "the model has a vocabulary of {} ids, the directory's tokenizer {}",
                model.vocab_size(),
                tok.vocab_size()
            ),
        });
    }
    let (start, eot) = start_and_eot(tok);
    let ids = model.parts().0;
    if ids[0] != start || ids[1] != eot {
        return Err(ModelError::Format {
            path,
            message: format!(
                "the model's <s> / </s> ids {:?} are not the tokenizer's {:?}",
                &ids[..2],
                [start, eot]
            ),
        });
    }
    let describe = describe_backoff(model.counts(), tok);
    model.set_describe(describe);
    Ok(model)
}

/// Opens a Kneser-Ney model directory with the directory's tokenizer: maps the binary
/// file config.json's `"file"` names (by its magic, or a `.bin` name, so a damaged binary
/// is reported as one), or parses it when it is an ARPA file.
pub fn load_kn(
    dir: &Path,
    config: &serde_json::Value,
    tok: &dyn Tokenizer,
) -> Result<BackoffModel, ModelError> {
    let path = config_file(dir, config, KN_ARPA)?;
    if is_binary_path(&path) {
        let model = super::binary::load(&path, "")?;
        return checked_binary(path, model, tok);
    }
    let words = as_words(tok);
    let vocab = match &words {
        Some(w) => Vocab::Words(w),
        None => Vocab::Ids {
            vocab_size: tok.vocab_size(),
            eot: tok.eot_token(),
        },
    };
    let file = arpa::read(&path, vocab)?;
    Ok(backoff_model(&file.grams, tok)?)
}

/// Opens an add-k model directory.
pub fn load_addk(
    dir: &Path,
    config: &serde_json::Value,
    tok: &dyn Tokenizer,
) -> Result<AddK, ModelError> {
    let path = config_file(dir, config, "counts.bin")?;
    let k = config
        .get("k")
        .and_then(|k| k.as_f64())
        .ok_or_else(|| ModelError::Format {
            path: dir.join("config.json"),
            message: "add-k config.json lacks a numeric \"k\"".into(),
        })?;
    let (start, eot) = start_and_eot(tok);
    Ok(AddK::load_counts(&path, k, tok.vocab_size(), start, eot)?)
}

/// True when `path` names an ARPA file (`.arpa` or `.arpa.gz`).
pub fn is_arpa_path(path: &Path) -> bool {
    let name = path.to_string_lossy();
    path.is_file() && (name.ends_with(".arpa") || name.ends_with(".arpa.gz"))
}

/// Opens a bare ARPA file (KenLM's, SRILM's, or ours): the words of its unigrams become
/// a words tokenizer (`<unk>`, `<s>`, `</s>` first, then the file's order).
pub fn load_arpa(path: &Path) -> Result<(BackoffModel, WordTokenizer), NgramError> {
    let file = arpa::read(path, Vocab::Build)?;
    let tok = file
        .tokenizer
        .ok_or_else(|| NgramError::Invalid("ARPA vocabulary was not built".into()))?;
    let model = backoff_model(&file.grams, &tok)?;
    Ok((model, tok))
}

/// Total log10 probability of `text` (one sentence per line; every word and each line's
/// `</s>` is scored, `<s>` is not) and the number of scored tokens: KenLM's `query` totals.
pub fn text_log10(model: &BackoffModel, tok: &WordTokenizer, text: &str) -> (f64, u64) {
    let ids = tok.encode(text).unwrap_or_default();
    (model.total_log10(&ids), ids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_stays_inside_the_model_directory() {
        let dir = Path::new("/models/kn");
        let cfg = |f: serde_json::Value| serde_json::json!({ "file": f });
        assert_eq!(
            config_file(dir, &serde_json::json!({}), "model.arpa").unwrap(),
            dir.join("model.arpa")
        );
        assert_eq!(
            config_file(dir, &cfg("x.arpa.gz".into()), "model.arpa").unwrap(),
            dir.join("x.arpa.gz")
        );
        for bad in [
            "/etc/passwd",
            "../other/model.arpa",
            "sub/model.arpa",
            "..",
            "",
        ] {
            let e = config_file(dir, &cfg(bad.into()), "model.arpa").unwrap_err();
            assert!(
                e.to_string().contains("inside the model directory"),
                "{bad}: {e}"
            );
        }
        assert!(config_file(dir, &cfg(7.into()), "model.arpa").is_err());
    }
}
