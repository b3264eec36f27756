//! `arlm score --perplexity`: one perplexity per document (CCNet-style filtering), streamed
//! in input order while the documents of each batch are scored in parallel.
//!
//! JSONL records come back byte for byte with `"tokens"`, `"log10_prob"` and
//! `"perplexity"` appended (re-serialized only when the record already has one of those
//! keys), so a pipeline can filter on them and keep every other field; plain lines give
//! `{"tokens":..,"log10_prob":..,"perplexity":..}`. The next batch is read while the
//! current one is scored.

use super::Args;
use anyhow::{bail, Context, Result};
use arlm::eval::docs::{doc_score, DocScore};
use arlm::eval::WindowSpec;
use arlm::load::LoadedModel;
use arlm::model::LanguageModel;
use arlm::with_model;
use rayon::prelude::*;
use std::io::{BufRead, Write};
use std::time::Instant;

/// Documents per parallel batch (and at most this many bytes of input).
const BATCH_DOCS: usize = 4096;
const BATCH_BYTES: usize = 8 << 20;

/// (line number, line) pairs of one batch; empty at the end of the input.
fn read_batch(reader: &mut dyn BufRead, next_line: &mut usize) -> Result<Vec<(usize, String)>> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while batch.len() < BATCH_DOCS && bytes < BATCH_BYTES {
        let mut line = String::new();
        *next_line += 1;
        if reader
            .read_line(&mut line)
            .with_context(|| format!("reading input line {}", *next_line))?
            == 0
        {
            break;
        }
        if line.ends_with('\n') {
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
        }
        bytes += line.len();
        batch.push((*next_line, line));
    }
    Ok(batch)
}

fn number(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

fn fields(s: &DocScore) -> String {
    format!(
        "\"tokens\":{},\"log10_prob\":{},\"perplexity\":{}",
        s.tokens,
        number(s.log10_prob),
        number(s.perplexity())
    )
}

/// The output line for one input line and its token count; `None` for a blank JSONL line
/// (skipped).
fn one(
    loaded: &LoadedModel,
    spec: &WindowSpec,
    jsonl: bool,
    field: &str,
    input: &str,
    (n, line): &(usize, String),
) -> Result<Option<(String, u64)>> {
    let tok = loaded.tokenizer.as_ref();
    if !jsonl {
        let s = doc_score(&loaded.model, tok, spec, line)
            .with_context(|| format!("{input} line {n}"))?;
        return Ok(Some((format!("{{{}}}", fields(&s)), s.tokens)));
    }
    if line.trim().is_empty() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("{input} line {n}: not a JSON object"))?;
    let Some(obj) = v.as_object() else {
        bail!("{input} line {n}: not a JSON object");
    };
    if obj.contains_key("context") || obj.contains_key("continuation") {
        bail!(
            "{input} line {n}: --perplexity scores whole documents; this record has a \
             \"context\"/\"continuation\" (score it without --perplexity)"
        );
    }
    let Some(text) = obj.get(field).and_then(|t| t.as_str()) else {
        bail!("{input} line {n}: no string field {field:?}");
    };
    let s =
        doc_score(&loaded.model, tok, spec, text).with_context(|| format!("{input} line {n}"))?;
    let ours = ["tokens", "log10_prob", "perplexity"];
    if ours.iter().any(|k| obj.contains_key(*k)) {
        let mut obj = obj.clone();
        let extra: serde_json::Value =
            serde_json::from_str(&format!("{{{}}}", fields(&s))).expect("valid JSON");
        for (k, v) in extra.as_object().expect("an object") {
            obj.insert(k.clone(), v.clone());
        }
        return Ok(Some((serde_json::Value::Object(obj).to_string(), s.tokens)));
    }
    let body = line.trim_end();
    let body = body[..body.len() - 1].trim_end(); // without the closing '}'
    let sep = if obj.is_empty() { "" } else { "," };
    Ok(Some((format!("{body}{sep}{}}}", fields(&s)), s.tokens)))
}

/// Runs `arlm score --perplexity`.
pub(super) fn run(args: &Args, loaded: &LoadedModel) -> Result<()> {
    if args.context.is_some() {
        bail!("--perplexity scores whole documents; --context is not supported with it");
    }
    if matches!(args.format, Some(f) if f != super::Format::Jsonl) {
        bail!("--perplexity writes JSONL; --format table/html are not supported with it");
    }
    let spec = with_model!(&loaded.model, m => WindowSpec::new(args.window, args.stride, m.max_context()))?;
    let (mut reader, input, jsonl): (Box<dyn BufRead + Send>, String, bool) = match &args.input {
        None if args.texts.is_empty() => {
            bail!("nothing to score: give texts as arguments or --input FILE (- for stdin)")
        }
        None => (
            Box::new(std::io::Cursor::new(args.texts.join("\n").into_bytes())),
            "argument".into(),
            false,
        ),
        Some(p) => {
            if !args.texts.is_empty() {
                bail!("--perplexity scores either text arguments or --input, not both");
            }
            let jsonl =
                args.jsonl || args.field.is_some() || p.extension().is_some_and(|e| e == "jsonl");
            let r: Box<dyn BufRead + Send> = if p.as_os_str() == "-" {
                Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
            } else {
                let f = std::fs::File::open(p)
                    .with_context(|| format!("cannot open {}", p.display()))?;
                Box::new(std::io::BufReader::with_capacity(1 << 20, f))
            };
            (r, p.display().to_string(), jsonl)
        }
    };
    let field = args.field.as_deref().unwrap_or("text");
    let mut file = match &args.output {
        Some(p) => Some(
            arlm::atomic::AtomicFile::create(p)
                .with_context(|| format!("cannot write {}", p.display()))?,
        ),
        None => None,
    };
    let t0 = Instant::now();
    let (mut docs, mut tokens) = (0u64, 0u64);
    {
        let sink: Box<dyn Write> = match &mut file {
            Some(f) => Box::new(f),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut out = std::io::BufWriter::with_capacity(1 << 20, sink);
        let mut line_no = 0usize;
        let mut batch = read_batch(&mut *reader, &mut line_no)?;
        while !batch.is_empty() {
            let (scored, next) = rayon::join(
                || {
                    batch
                        .par_iter()
                        .map(|item| one(loaded, &spec, jsonl, field, &input, item))
                        .collect::<Result<Vec<_>>>()
                },
                || read_batch(&mut *reader, &mut line_no),
            );
            for (line, n) in scored?.into_iter().flatten() {
                docs += 1;
                tokens += n;
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
            }
            batch = next?;
        }
        out.flush()?;
    }
    if let (Some(f), Some(p)) = (file, &args.output) {
        f.commit()
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "scored {docs} documents ({tokens} tokens) in {secs:.2} s: {:.0} documents/s, \
         {:.0} tokens/s on {} threads",
        docs as f64 / secs,
        tokens as f64 / secs,
        rayon::current_num_threads()
    );
    Ok(())
}
