//! The chain-rule explorer's endpoints (`arlm serve`'s `/explorer/*`), end to end on the
//! real binary: a tiny GPT (`arlm train --preset tiny`), a tiny LSTM (`--preset
//! tiny-lstm`), a Kneser-Ney trigram and the synthetic corpus's exact source, checked
//! against `arlm score`, `arlm generate` and `arlm exposure` on the same models.
//!
//! The models are built once per run and shared with the browser test
//! ([`super::explorer_browser`]); each test starts its own server.

use crate::common::arlm_ok;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Models on disk: "gpt" (a tiny GPT over bytes), "kn" (words), "synth" (the source),
/// "rnn" (a tiny LSTM over bytes).
pub struct Fixture {
    pub dir: PathBuf,
    pub gpt: PathBuf,
    pub rnn: PathBuf,
    pub kn: PathBuf,
    pub synth: PathBuf,
}

/// `arlm serve` as a child process, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// The three fixture models, "gpt" first (the default).
    pub fn start() -> Server {
        let f = fixture();
        Server::with(
            &[
                format!("gpt={}", s(&f.gpt)),
                format!("kn={}", s(&f.kn)),
                format!("synth={}", s(&f.synth)),
                format!("rnn={}", s(&f.rnn)),
            ],
            &[],
        )
    }

    pub fn with(models: &[String], extra: &[&str]) -> Server {
        let (child, addr) = start_server(models, extra);
        Server { child, addr }
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (st, text) = request(self.addr, "POST", path, Some(&body));
        (
            st,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    }

    /// The events of a generation stream.
    pub fn generate_events(&self, body: Value) -> Vec<Value> {
        let (st, text) = request(self.addr, "POST", "/explorer/generate", Some(&body));
        assert_eq!(st, 200, "{text}");
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Builds the models once per test run (under Cargo's test scratch directory).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        remove_stale_fixtures();
        let dir = tempfile::Builder::new()
            .prefix("explorer-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap()
            .keep();
        let gpt = dir.join("gpt");
        arlm_ok(&["train", "--preset", "tiny", "--out", s(&gpt)]);
        let rnn = dir.join("rnn");
        arlm_ok(&["train", "--preset", "tiny-lstm", "--out", s(&rnn)]);
        let synth = dir.join("synth");
        let text = dir.join("synth.txt");
        arlm_ok(&[
            "corpus",
            "synth",
            "--bytes",
            "20000",
            "--out",
            s(&text),
            "--model-out",
            s(&synth),
        ]);
        let kn = dir.join("kn");
        arlm_ok(&[
            "ngram",
            "fit",
            "--order",
            "3",
            "--input",
            s(&text),
            "--out",
            s(&kn),
            "--discount-fallback",
            "0.5 1 1.5",
        ]);
        Fixture {
            dir,
            gpt,
            rnn,
            kn,
            synth,
        }
    })
}

/// Removes the fixtures of earlier runs (kept to the end of their run, since a static
/// is never dropped) once they are an hour old.
fn remove_stale_fixtures() {
    let Ok(entries) = std::fs::read_dir(env!("CARGO_TARGET_TMPDIR")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if name.starts_with("explorer-") && name != "explorer-screenshots" && old {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Starts `arlm serve --port 0` with `models` and reads the address it printed.
fn start_server(models: &[String], extra: &[&str]) -> (Child, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arlm"));
    cmd.args(["serve", "--port", "0", "--threads", "2"]);
    cmd.args(extra);
    for m in models {
        cmd.args(["--model", m]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run arlm serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("arlm serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// One HTTP/1.1 request (Connection: close); returns the status and the de-chunked body.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head.to_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = &tail[n + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

/// `arlm generate`'s text (its trailing newline removed).
pub fn cli_generate(model: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["generate", "--model", s(model)];
    all.extend_from_slice(args);
    let out = arlm_ok(&all);
    out.strip_suffix('\n').unwrap_or(&out).to_string()
}

/// `arlm score --format jsonl` of one text.
pub fn cli_score(model: &std::path::Path, text: &str) -> Value {
    let out = arlm_ok(&["score", "--model", s(model), "--format", "jsonl", text]);
    serde_json::from_str(out.lines().next().unwrap()).unwrap()
}

#[test]
fn models_lists_every_model_with_its_class_and_source() {
    let srv = Server::start();
    let (st, text) = request(srv.addr, "GET", "/explorer/models", None);
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    let m = v["models"].as_array().unwrap();
    let names: Vec<&str> = m.iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gpt", "kn", "synth", "rnn"]);
    assert_eq!(m[0]["class"], "GPT");
    assert_eq!(m[0]["tokenizer"], "bytes");
    assert_eq!(m[0]["max_context"], 32);
    assert_eq!(m[1]["class"], "n-gram (backoff)");
    assert_eq!(m[2]["class"], "exact synthetic source");
    assert_eq!(m[3]["class"], "RNN");
    let exact: Vec<bool> = m
        .iter()
        .map(|x| x["exact_source"].as_bool().unwrap())
        .collect();
    assert_eq!(exact, [true, false, true, true]);
}

#[test]
fn score_equals_arlm_score_on_every_model() {
    let f = fixture();
    let srv = Server::start();
    // Longer than the GPT's context of 32: the sliding windows must match too.
    let text = "the old dog saw a small bird near the river, and the bird sang.";
    for (name, dir) in [
        ("gpt", &f.gpt),
        ("kn", &f.kn),
        ("synth", &f.synth),
        ("rnn", &f.rnn),
    ] {
        let (st, v) = srv.post(
            "/explorer/score",
            json!({"model": name, "text": text, "top_k": 3}),
        );
        assert_eq!(st, 200, "{v}");
        let want = cli_score(dir, text);
        assert_eq!(v["joint_logprob"], want["joint_logprob"], "{name}");
        assert_eq!(v["metrics"], want["metrics"], "{name}");
        let (a, b) = (
            v["tokens"].as_array().unwrap(),
            want["tokens"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{name}");
        for (x, y) in a.iter().zip(b) {
            for k in ["id", "logprob", "rank", "cumulative_logprob"] {
                assert_eq!(x[k], y[k], "{name} {k}");
            }
            assert_eq!(x["top"].as_array().unwrap().len(), 3);
        }
        let bytes: u64 = v["token_bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .sum();
        if name != "kn" {
            // Byte tokens: their bytes are the text's (bits per byte divides by these).
            assert_eq!(bytes, v["totals"]["bytes"].as_u64().unwrap(), "{name}");
        }
        assert_eq!(v["model"], name);
    }
}

/// A What-if branch: the ids scored as given; the tokens before the branch keep their
/// log-probs (the model is causal), the joint is the sum.
#[test]
fn scoring_ids_branches_the_text() {
    let srv = Server::start();
    let text = "the cat sat on the mat and the dog ran";
    let (_, orig) = srv.post("/explorer/score", json!({"text": text}));
    let ids: Vec<u64> = orig["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    let (_, same) = srv.post("/explorer/score", json!({"ids": ids}));
    assert_eq!(same["joint_logprob"], orig["joint_logprob"]);
    assert_eq!(same["text"], text);
    let at = 10;
    let alt = orig["tokens"][at]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .find(|&id| id != ids[at])
        .unwrap();
    let mut branched = ids.clone();
    branched[at] = alt;
    let (st, b) = srv.post("/explorer/score", json!({"ids": branched}));
    assert_eq!(st, 200);
    let (bt, ot) = (
        b["tokens"].as_array().unwrap(),
        orig["tokens"].as_array().unwrap(),
    );
    for k in 0..at {
        assert_eq!(bt[k]["logprob"], ot[k]["logprob"], "position {k}");
    }
    let alt_lp = ot[at]["top"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"].as_u64() == Some(alt))
        .unwrap()["logprob"]
        .clone();
    assert_eq!(bt[at]["logprob"], alt_lp);
    let sum: f64 = bt.iter().map(|t| t["logprob"].as_f64().unwrap()).sum();
    assert!((sum - b["joint_logprob"].as_f64().unwrap()).abs() < 1e-9);
    // The branch as text scores the same (the bytes tokenizer round-trips).
    let (_, again) = srv.post("/explorer/score", json!({"text": b["text"]}));
    assert_eq!(again["joint_logprob"], b["joint_logprob"]);
}

#[test]
fn bad_score_requests_name_the_field() {
    let srv = Server::start();
    for (body, param) in [
        (json!({"text": "a", "ids": [1]}), "text"),
        (json!({}), "text"),
        (json!({"ids": [9999]}), "ids"),
        (json!({"text": "a", "top_k": 1000}), "top_k"),
    ] {
        let (st, v) = srv.post("/explorer/score", body.clone());
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{body}: {v}");
    }
    let (st, v) = srv.post("/explorer/score", json!({"text": "a", "model": "nope"}));
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("model")));
    let (st, v) = srv.post("/explorer/score", json!({"txt": "a"}));
    assert_eq!(st, 400, "{v}");
    let (st, v) = srv.post("/explorer/generate", json!({"method": "psychic"}));
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("method")));
    let (st, v) = srv.post("/explorer/generate", json!({"temperature": -1}));
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("sampler")));
}

/// The streamed text is `arlm generate`'s with the same settings; every step shows the
/// model's distribution and each stage's, with the chosen token still possible at the end.
#[test]
fn generation_streams_the_cli_text_with_stage_distributions() {
    let f = fixture();
    let srv = Server::start();
    for (method, cli) in [
        (
            "sample",
            vec!["--seed", "7", "-n", "24", "--prompt", "the cat"],
        ),
        (
            "greedy",
            vec!["--greedy", "-n", "24", "--prompt", "the cat"],
        ),
    ] {
        let ev = srv.generate_events(json!({
            "prompt": "the cat", "method": method, "seed": 7, "max_tokens": 24, "show": 5
        }));
        let text: String = ev
            .iter()
            .filter(|e| e["type"] == "text")
            .map(|e| e["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, cli_generate(&f.gpt, &cli), "{method}");
        let done = ev.last().unwrap();
        assert_eq!(done["type"], "done");
        assert_eq!(done["text"], text);
        let steps: Vec<&Value> = ev.iter().filter(|e| e["type"] == "step").collect();
        assert_eq!(steps.len() as u64, done["tokens"].as_u64().unwrap());
        let want_stages = if method == "greedy" { 2 } else { 7 };
        let mut total = 0.0;
        for s in &steps {
            let stages = s["stages"].as_array().unwrap();
            assert_eq!(stages.len(), want_stages, "{method}");
            assert_eq!(stages[0]["name"], "model");
            let shown = s["shown"].as_array().unwrap();
            let at = shown.iter().position(|x| *x == s["chosen"]).unwrap();
            let last = &stages[stages.len() - 1];
            assert!(last["probs"][at].as_f64().unwrap() > 0.0);
            let p_model = stages[0]["probs"][at].as_f64().unwrap();
            let lp = s["chosen_logprob"].as_f64().unwrap();
            assert!((p_model.ln() - lp).abs() < 1e-4, "{p_model} {lp}");
            total += lp;
            for st in stages {
                let sum: f64 = st["probs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_f64().unwrap())
                    .sum();
                assert!(sum <= 1.0 + 1e-9);
            }
        }
        assert!((total - done["total_logprob"].as_f64().unwrap()).abs() < 1e-3);
    }
    // The other classes stream their CLI text too.
    for (name, dir) in [("rnn", &f.rnn), ("kn", &f.kn), ("synth", &f.synth)] {
        let ev = srv.generate_events(json!({
            "model": name, "prompt": "the", "seed": 3, "max_tokens": 16
        }));
        let text: String = ev
            .iter()
            .filter(|e| e["type"] == "text")
            .map(|e| e["text"].as_str().unwrap())
            .collect();
        let want = cli_generate(dir, &["--seed", "3", "-n", "16", "--prompt", "the"]);
        assert_eq!(text, want, "{name}");
    }
    // Beam search: the best hypothesis is `arlm generate --beam`'s first.
    let ev = srv.generate_events(json!({
        "prompt": "the cat", "method": "beam", "beams": 3, "max_tokens": 12
    }));
    let out = arlm_ok(&[
        "generate",
        "--model",
        s(&f.gpt),
        "--beam",
        "3",
        "-n",
        "12",
        "--prompt",
        "the cat",
        "--json",
    ]);
    let cli: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let best = &cli["hypotheses"][0];
    let text = ev.iter().find(|e| e["type"] == "text").unwrap();
    assert_eq!(text["text"], best["text"], "{out}");
}

/// Exposure under the exact source: the CLI's numbers; the source itself has no gap;
/// a model over another vocabulary gets a clear refusal.
#[test]
fn exposure_matches_the_cli_and_needs_the_source() {
    let f = fixture();
    let srv = Server::start();
    let (st, v) = srv.post(
        "/explorer/exposure",
        json!({"model": "gpt", "prompts": 6, "prefix": 8, "length": 16, "seed": 3}),
    );
    assert_eq!(st, 200, "{v}");
    // The plot folder does not exist yet: exposure creates it.
    let out = arlm_ok(&[
        "exposure",
        "--model",
        s(&f.gpt),
        "--prompts",
        "6",
        "--prefix",
        "8",
        "--length",
        "16",
        "--seed",
        "3",
        "--json",
        "--plot-dir",
        s(&f.dir.join("plots")),
    ]);
    assert!(f.dir.join("plots/exposure.svg").exists());
    let cli: Value = serde_json::from_str(&out).unwrap();
    for run in ["teacher_forced", "sampled", "greedy"] {
        assert_eq!(v[run], cli[run], "{run}");
    }
    let (st, v) = srv.post(
        "/explorer/exposure",
        json!({"model": "synth", "prompts": 4, "prefix": 4, "length": 8}),
    );
    assert_eq!(st, 200, "{v}");
    for (a, b) in v["teacher_forced"]["model_nll"]
        .as_array()
        .unwrap()
        .iter()
        .zip(v["teacher_forced"]["true_nll"].as_array().unwrap())
    {
        assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-5);
    }
    let (st, v) = srv.post("/explorer/exposure", json!({"model": "kn"}));
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("model")));
    assert!(v["error"]["message"].as_str().unwrap().contains("words"));
    let (st, v) = srv.post("/explorer/exposure", json!({"model": "gpt", "length": 40}));
    assert_eq!((st, v["error"]["param"].as_str()), (400, Some("length")));
}

#[test]
fn the_page_and_its_assets_are_served_without_a_network() {
    let f = fixture();
    let srv = Server::start();
    let (st, html) = request(srv.addr, "GET", "/", None);
    assert_eq!(st, 200);
    assert!(html.contains("chain-rule explorer"));
    let mut srcs = Vec::new();
    for part in html.split("/explorer/static/").skip(1) {
        srcs.push(part.split('"').next().unwrap().to_string());
    }
    assert_eq!(srcs.len(), 4, "{srcs:?}");
    for name in &srcs {
        let (st, body) = request(srv.addr, "GET", &format!("/explorer/static/{name}"), None);
        assert_eq!(st, 200, "{name}");
        assert!(!body.is_empty());
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{name} fetches from the network"
        );
    }
    assert_eq!(
        request(srv.addr, "GET", "/explorer/static/nope.js", None).0,
        404
    );
    // With an API key the page still loads; its data needs the key.
    let keyed = Server::with(
        &[format!("synth={}", s(&f.synth))],
        &["--api-key", "sesame"],
    );
    assert_eq!(request(keyed.addr, "GET", "/", None).0, 200);
    assert_eq!(request(keyed.addr, "GET", "/explorer/models", None).0, 401);
}
