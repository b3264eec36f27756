//! Rendering scores and evaluation reports: text, JSON, a GLTR-coloured terminal table,
//! and a standalone HTML page.
//!
//! Colours follow GLTR (Gehrmann et al. 2019) with the buckets asked for here: the token
//! was the model's top-1 choice (green), in its top 10 (yellow), top 100 (red), or further
//! down (purple). A text a model finds predictable is mostly green.

use super::evaluate::EvalReport;
use super::score::TextScore;
use std::fmt::Write;

/// GLTR bucket of a rank: 0 = top-1, 1 = top-10, 2 = top-100, 3 = rest.
pub fn bucket(rank: usize) -> usize {
    match rank {
        0..=1 => 0,
        2..=10 => 1,
        11..=100 => 2,
        _ => 3,
    }
}

const BUCKET_NAMES: [&str; 4] = ["top-1", "top-10", "top-100", "rest"];
/// ANSI background colours per bucket (black text on green/yellow/red/magenta).
const ANSI_BG: [&str; 4] = ["\x1b[30;42m", "\x1b[30;43m", "\x1b[30;41m", "\x1b[30;45m"];
const ANSI_RESET: &str = "\x1b[0m";
const HTML_BG: [&str; 4] = ["#a6e3a1", "#f9e2af", "#f38ba8", "#cba6f7"];

/// A piece made visible: newlines and tabs as symbols.
fn visible(piece: &str) -> String {
    piece
        .replace('\n', "↵")
        .replace('\t', "⇥")
        .replace('\r', "␍")
}

/// A log-prob for display: models mark impossible tokens with a huge negative number
/// (or -inf); both show as "-inf".
fn lp(x: f64, digits: usize) -> String {
    if x < -1e29 {
        "-inf".to_string()
    } else {
        format!("{x:.digits$}")
    }
}

/// A non-negative cost (NLL, bits) for display: "inf" once an impossible token is in it.
fn cost(x: f64, digits: usize, impossible: bool) -> String {
    if impossible || x.is_infinite() {
        "inf".to_string()
    } else {
        format!("{x:.digits$}")
    }
}

/// One JSON line per scored text.
pub fn score_jsonl(s: &TextScore) -> String {
    serde_json::to_string(s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The terminal view: the text with each token coloured by rank, then a table with the
/// running sum of log-probs, then the totals.
pub fn score_table(s: &TextScore, color: bool) -> String {
    let mut out = String::new();
    let paint = |b: usize, text: &str| {
        if color {
            format!("{}{}{}", ANSI_BG[b], text, ANSI_RESET)
        } else {
            text.to_string()
        }
    };
    if let Some(c) = &s.context {
        let _ = writeln!(
            out,
            "context ({} tokens, not scored): {c}",
            s.context_tokens
        );
    }
    let mut line = String::new();
    for t in &s.tokens {
        line.push_str(&paint(bucket(t.rank), &visible(&t.piece)));
    }
    let _ = writeln!(out, "{line}");
    let legend: Vec<String> = (0..4).map(|b| paint(b, BUCKET_NAMES[b])).collect();
    let _ = writeln!(out, "legend: {}", legend.join(" "));
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:<16} {:>9} {:>7} {:>8} {:>11}  top alternatives",
        "pos", "id", "piece", "logp", "rank", "entropy", "sum logp"
    );
    for t in &s.tokens {
        let shown = format!("{:?}", t.piece);
        let shown: String = shown.chars().take(16).collect();
        let pad = 16usize.saturating_sub(shown.chars().count());
        let alts: Vec<String> = t
            .top
            .iter()
            .map(|a| format!("{:?} {}", a.piece, lp(a.logprob, 2)))
            .collect();
        let _ = writeln!(
            out,
            "{:>5} {:>7} {}{} {:>9} {:>7} {:>8.4} {:>11}  {}",
            t.position,
            t.id,
            paint(bucket(t.rank), &shown),
            " ".repeat(pad),
            lp(t.logprob, 4),
            t.rank,
            t.entropy,
            lp(t.cumulative_logprob, 4),
            alts.join(", ")
        );
    }
    let counts = bucket_counts(s);
    let impossible = s.joint_logprob < -1e29;
    let _ = writeln!(
        out,
        "joint log p = {} nats = sum of the {} token terms | NLL {} bits | {} nats/token (ppl {}) | {} bits/byte over {} bytes | top-1/10/100/rest: {}/{}/{}/{}",
        lp(s.joint_logprob, 4),
        s.totals.tokens,
        cost(s.totals.nll / std::f64::consts::LN_2, 4, impossible),
        cost(s.metrics.nll_per_token_nats, 4, impossible),
        cost(s.metrics.token_perplexity, 3, impossible),
        cost(s.metrics.bits_per_byte, 4, impossible),
        s.totals.bytes,
        counts[0],
        counts[1],
        counts[2],
        counts[3]
    );
    out
}

fn bucket_counts(s: &TextScore) -> [usize; 4] {
    let mut c = [0; 4];
    for t in &s.tokens {
        c[bucket(t.rank)] += 1;
    }
    c
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A standalone HTML page (no scripts, no external resources) showing each text with its
/// tokens coloured by rank; hovering a token shows its log-prob, rank, entropy and the
/// top alternatives.
pub fn score_html(model: &str, scores: &[TextScore]) -> String {
    let mut body = String::new();
    for (i, s) in scores.iter().enumerate() {
        let _ = writeln!(body, "<section><h2>Text {}</h2>", i + 1);
        if let Some(c) = &s.context {
            let _ = writeln!(
                body,
                "<p class=\"ctx\">context ({} tokens, not scored): {}</p>",
                s.context_tokens,
                esc(c)
            );
        }
        body.push_str("<div class=\"text\">");
        for t in &s.tokens {
            let mut tip = format!(
                "<b>{}</b> id {}<br>log p = {} (p = {:.4})<br>rank {} · entropy {:.3} nats<br>running sum {}",
                esc(&format!("{:?}", t.piece)),
                t.id,
                lp(t.logprob, 4),
                t.logprob.exp(),
                t.rank,
                t.entropy,
                lp(t.cumulative_logprob, 3)
            );
            if !t.top.is_empty() {
                tip.push_str("<table>");
                for a in &t.top {
                    let _ = write!(
                        tip,
                        "<tr><td>{}</td><td>{}</td><td>{:.3}</td></tr>",
                        esc(&format!("{:?}", a.piece)),
                        lp(a.logprob, 4),
                        a.logprob.exp()
                    );
                }
                tip.push_str("</table>");
            }
            let shown = esc(&t.piece).replace('\n', "↵<br>");
            let _ = write!(
                body,
                "<span class=\"tok b{}\">{}<span class=\"tip\">{}</span></span>",
                bucket(t.rank),
                shown,
                tip
            );
        }
        body.push_str("</div>\n");
        let c = bucket_counts(s);
        let _ = writeln!(
            body,
            "<p class=\"sum\">joint log p = {} nats over {} tokens · NLL {:.4} bits · {:.4} nats/token (perplexity {:.3}) · {:.4} bits/byte · top-1/10/100/rest: {}/{}/{}/{}</p></section>",
            lp(s.joint_logprob, 4),
            s.totals.tokens,
            s.totals.nll / std::f64::consts::LN_2,
            s.metrics.nll_per_token_nats,
            s.metrics.token_perplexity,
            s.metrics.bits_per_byte,
            c[0],
            c[1],
            c[2],
            c[3]
        );
    }
    let legend: String = (0..4)
        .map(|b| format!("<span class=\"tok b{b}\">{}</span> ", BUCKET_NAMES[b]))
        .collect();
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>arlm score</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 60em; }}
.text {{ font-family: monospace; font-size: 15px; line-height: 2; white-space: pre-wrap; }}
.tok {{ position: relative; border-radius: 3px; padding: 1px 0; }}
.b0 {{ background: {b0}; }} .b1 {{ background: {b1}; }} .b2 {{ background: {b2}; }} .b3 {{ background: {b3}; }}
.tip {{ display: none; position: absolute; left: 0; top: 1.8em; z-index: 10; background: #222; color: #eee;
        padding: 6px; border-radius: 4px; font-size: 12px; line-height: 1.3; white-space: nowrap; }}
.tok:hover .tip {{ display: block; }}
.tip table {{ margin-top: 4px; border-collapse: collapse; }} .tip td {{ padding: 0 6px; }}
.sum, .ctx, .legend {{ color: #444; font-size: 14px; }}
</style></head><body>
<h1>arlm score</h1>
<p class="legend">model: {model} · colour = rank of the actual token under the model: {legend}· hover a token for its alternatives</p>
{body}</body></html>
"#,
        b0 = HTML_BG[0],
        b1 = HTML_BG[1],
        b2 = HTML_BG[2],
        b3 = HTML_BG[3],
        model = esc(model),
    )
}

fn fmt_ci(
    r: &EvalReport,
    f: impl Fn(&super::bootstrap::Intervals) -> super::bootstrap::Interval,
    digits: usize,
) -> String {
    match &r.interval {
        Some(i) => {
            let v = f(i);
            format!("  (95% CI {:.*} .. {:.*})", digits, v.lo, digits, v.hi)
        }
        None => String::new(),
    }
}

/// The human-readable report of `arlm eval`: metrics first, then the protocol.
pub fn eval_text(r: &EvalReport) -> String {
    let t = &r.totals;
    let m = &r.metrics;
    let mut out = String::new();
    let _ = writeln!(out, "tokens scored     {}", t.tokens);
    let _ = writeln!(out, "bytes             {}", t.bytes);
    let _ = writeln!(out, "words             {}", t.words);
    let _ = writeln!(
        out,
        "NLL total         {:.4} nats = {:.4} bits",
        t.nll,
        t.nll / std::f64::consts::LN_2
    );
    let _ = writeln!(
        out,
        "NLL per token     {:.6} nats = {:.6} bits{}",
        m.nll_per_token_nats,
        m.nll_per_token_bits,
        fmt_ci(r, |i| i.nll_per_token_nats, 6)
    );
    let _ = writeln!(
        out,
        "token perplexity  {:.4}{}",
        m.token_perplexity,
        fmt_ci(r, |i| i.token_perplexity, 4)
    );
    let _ = writeln!(
        out,
        "bits per byte     {:.6}{}",
        m.bits_per_byte,
        fmt_ci(r, |i| i.bits_per_byte, 6)
    );
    let _ = writeln!(
        out,
        "byte perplexity   {:.6}{}",
        m.byte_perplexity,
        fmt_ci(r, |i| i.byte_perplexity, 6)
    );
    let _ = writeln!(
        out,
        "word perplexity   {:.4}{}",
        m.word_perplexity,
        fmt_ci(r, |i| i.word_perplexity, 4)
    );
    let _ = writeln!(
        out,
        "speed             {:.0} tokens/s ({:.2} s)",
        r.tokens_per_second, r.seconds
    );
    let _ = writeln!(out, "protocol:");
    for (k, v) in r.protocol.lines() {
        let _ = writeln!(out, "  {k:<12} {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::{score_text, WindowSpec};
    use crate::model::uniform::Uniform;
    use crate::tokenizer::bytes::ByteTokenizer;

    #[test]
    fn buckets_and_renderings() {
        assert_eq!([1, 2, 10, 11, 100, 101].map(bucket), [0, 1, 1, 2, 2, 3]);
        let m = Uniform::new(257, 256).unwrap();
        let spec = WindowSpec::new(None, None, None).unwrap();
        let s = score_text(&m, &ByteTokenizer, None, "a<b\n", &spec, 2).unwrap();
        let html = score_html("uniform", std::slice::from_ref(&s));
        assert!(html.contains("&lt;") && !html.contains("<b\n"));
        assert_eq!(html.matches("class=\"tok b").count(), 4 + 4);
        let table = score_table(&s, false);
        assert!(table.contains("a<b↵"));
        assert!(!table.contains('\x1b'));
        assert!(score_table(&s, true).contains("\x1b[30;42m"));
        let v: serde_json::Value = serde_json::from_str(&score_jsonl(&s)).unwrap();
        assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
    }
}
