//! End to end: `arlm serve`'s HTTP API on an ephemeral loopback port, in process, on a
//! small GPT and a Kneser-Ney model: every endpoint and error, echo scoring against
//! `arlm score`, streaming against non-streaming, batching equivalence, cancellation,
//! the queue bound and shutdown with requests in flight.

use crate::common;

use arlm::load::{load, LoadedModel};
use arlm::model::gpt::{Gpt, GptConfig};
use arlm::serve::{self, AppState, ServeOptions};
use arlm::tokenizer::bytes::ByteTokenizer;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A byte-level GPT (vocab 257, context 64) with weights scaled so its distributions are
/// far from uniform.
fn gpt_dir(dir: &Path) {
    let cfg = GptConfig {
        n_layer: 2,
        n_head: 4,
        n_embd: 32,
        block_size: 64,
        vocab_size: 257,
        dropout: 0.0,
        activation: Default::default(),
    };
    let mut m = Gpt::new(cfg, 5).unwrap();
    for x in m.params_mut().iter_mut() {
        *x *= 6.0;
    }
    m.save(dir).unwrap();
    arlm::tokenizer::save(&ByteTokenizer, &dir.join("tokenizer.json")).unwrap();
}

/// A trigram Kneser-Ney model fitted by `arlm ngram fit` on a small text.
fn kn_dir(dir: &Path) -> std::path::PathBuf {
    let train = dir.join("train.txt");
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!("the cat {} sat on the mat {}\n", i % 7, i % 5));
    }
    std::fs::write(&train, text).unwrap();
    let kn = dir.join("kn");
    crate::ngram_cli::fit_trigram(&train, &kn, &[]);
    kn
}

struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(models: Vec<(String, LoadedModel)>, opts: ServeOptions) -> Server {
        let state = AppState::new(models, opts).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (atx, arx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                atx.send(l.local_addr().unwrap()).unwrap();
                serve::serve(st, l, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            });
        });
        let addr = arx.recv().unwrap();
        Server {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn gpt(dir: &Path, opts: ServeOptions) -> Server {
        gpt_dir(dir);
        Server::start(vec![("tiny".into(), load(dir).unwrap())], opts)
    }

    /// Sends the shutdown signal and waits for the server to stop.
    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, text) = request(self.addr, "POST", path, Some(&body.to_string()), &[]);
        let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, v)
    }

    fn get(&self, path: &str) -> (u16, String) {
        let (status, _, text) = request(self.addr, "GET", path, None, &[]);
        (status, text)
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from {text}"))
    }

    /// Waits (at most 10 s) until `cond` holds.
    fn wait_until(&self, what: &str, cond: impl Fn(&Server) -> bool) {
        let t = Instant::now();
        while !cond(self) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One HTTP/1.1 request (Connection: close); returns status, headers (lowercased
/// names) and the body, de-chunked.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, headers, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// The JSON payloads of a server-sent-event body, up to `[DONE]` (asserted present).
fn sse_events(body: &str) -> Vec<Value> {
    let datas: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(datas.last(), Some(&"[DONE]"), "{body}");
    datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn error_of(v: &Value) -> (&str, Option<&str>) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e.get("code").is_some() && e.get("param").is_some(), "{v}");
    (e["type"].as_str().unwrap(), e["param"].as_str())
}

#[test]
fn info_endpoints_answer_in_their_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::gpt(dir.path(), ServeOptions::default());
    let (s, body) = srv.get("/health");
    assert_eq!((s, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (s, body) = srv.get("/v1/models");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["max_model_len"], 64);
    let (s, v) = srv.post("/tokenize", &json!({"content": "hé"}));
    assert_eq!((s, &v["tokens"]), (200, &json!([104, 195, 169])));
    // vLLM's shape, with the end-of-text text read as its token (lm-evaluation-harness
    // asks for the EOS id this way).
    let (_, v) = srv.post("/tokenize", &json!({"prompt": "a<|endoftext|>"}));
    assert_eq!(v["tokens"], json!([97, 256]));
    let (_, v) = srv.post("/tokenize", &json!({"content": "a", "with_pieces": true}));
    assert_eq!(v["tokens"], json!([{"id": 97, "piece": "a"}]));
    let (s, v) = srv.post("/detokenize", &json!({"tokens": [104, 195, 169]}));
    assert_eq!(
        (s, &v["content"], &v["prompt"]),
        (200, &json!("hé"), &json!("hé"))
    );
    let (s, body) = srv.get("/tokenizer_info");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (s, &v["eos_token"], &v["model_max_length"]),
        (200, &json!("<|endoftext|>"), &json!(64))
    );
    let (s, body) = srv.get("/metrics");
    assert_eq!(s, 200);
    for name in [
        "arlm_requests_total{outcome=\"ok\"}",
        "arlm_queue_depth",
        "arlm_batch_size_bucket",
        "arlm_request_duration_seconds_count",
        "arlm_time_to_first_token_seconds_sum",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
}

#[test]
fn completions_have_openai_shape_and_logprobs() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::gpt(dir.path(), ServeOptions::default());
    let (s, v) = srv.post(
        "/v1/completions",
        &json!({"model": "tiny", "prompt": ["ab", "xyz"], "max_tokens": 6, "n": 2, "seed": 3, "logprobs": 3}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    let mut completion = 0;
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "length");
        let lp = &c["logprobs"];
        let n = lp["tokens"].as_array().unwrap().len();
        assert_eq!(n, 6);
        completion += n;
        for (t, top) in lp["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(lp["top_logprobs"].as_array().unwrap())
        {
            let t = t.as_f64().unwrap();
            let top: Vec<f64> = top
                .as_object()
                .unwrap()
                .values()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert!(t <= 0.0 && !top.is_empty() && top.len() <= 3);
            // The sampled token is at most as probable as the most probable one.
            assert!(
                top.iter().all(|&x| x <= 0.0)
                    && t <= top.iter().cloned().fold(f64::MIN, f64::max) + 1e-6
            );
        }
        let offs: Vec<u64> = lp["text_offset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert!(offs.windows(2).all(|w| w[0] <= w[1]));
    }
    // n samples of one prompt are independent streams, so they differ.
    assert_ne!(choices[0]["text"], choices[1]["text"]);
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], completion);
    assert_eq!(v["usage"]["total_tokens"], 5 + completion);
    // Same seed, same text; greedy is deterministic; a stop string cuts the text.
    let req = json!({"prompt": "ab", "max_tokens": 20, "seed": 7, "temperature": 0.9});
    let (_, a) = srv.post("/v1/completions", &req);
    let (_, b) = srv.post("/v1/completions", &req);
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    let text = a["choices"][0]["text"].as_str().unwrap().to_string();
    // An ASCII character that first occurs after the start (decoded text can hold U+FFFD
    // for invalid bytes, which a stop string cannot match).
    let stop = text
        .char_indices()
        .find(|&(i, c)| i > 0 && c.is_ascii_graphic() && !text[..i].contains(c))
        .map(|(_, c)| c.to_string())
        .expect("an ASCII character in the sample");
    let mut with_stop = req.clone();
    with_stop["stop"] = json!([stop.clone(), "never-appears"]);
    let (_, c) = srv.post("/v1/completions", &with_stop);
    assert_eq!(
        c["choices"][0]["finish_reason"], "stop",
        "{text:?} stop {stop:?}: {c}"
    );
    assert_eq!(
        c["choices"][0]["text"].as_str().unwrap(),
        &text[..text.find(&stop).unwrap()]
    );
    // Token-id prompts and llama.cpp's sampler fields.
    let (s, v) = srv.post(
        "/v1/completions",
        &json!({"prompt": [[97, 98], [120]], "max_tokens": 3, "top_k": 5, "min_p": 0.05, "typical_p": 0.9,
                "repeat_penalty": 1.1, "repeat_last_n": 16, "samplers": ["top_k", "temperature"],
                "presence_penalty": 0.5, "frequency_penalty": 0.5, "logit_bias": {"97": -100}}),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    // max_tokens 0 without echo: an empty completion.
    let (s, v) = srv.post("/v1/completions", &json!({"prompt": "ab", "max_tokens": 0}));
    assert_eq!(
        (
            s,
            &v["choices"][0]["text"],
            &v["choices"][0]["finish_reason"]
        ),
        (200, &json!(""), &json!("length"))
    );
}

/// `arlm score`'s per-token log-probs of `text`.
fn arlm_score(model: &Path, text: &str) -> Vec<f64> {
    let out = common::arlm_ok(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "jsonl",
        text,
    ]);
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["logprob"].as_f64().unwrap())
        .collect()
}

#[test]
fn echo_scoring_equals_arlm_score_on_gpt_and_kn() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("gpt");
    gpt_dir(&gdir);
    let kdir = kn_dir(dir.path());
    let srv = Server::start(
        vec![
            ("gpt".into(), load(&gdir).unwrap()),
            ("kn".into(), load(&kdir).unwrap()),
        ],
        ServeOptions::default(),
    );
    // Longer than the GPT's context of 64: scored in windows, as `arlm score` does.
    let long = "the cat 3 sat on the mat 1 and the cat 4 sat on the mat 2; ".repeat(2);
    for (name, path, text) in [
        ("gpt", &gdir, "the cat sat"),
        ("gpt", &gdir, long.as_str()),
        ("kn", &kdir, "the cat 3 sat on"),
    ] {
        let want = arlm_score(path, text);
        // As text: the first token's log-prob is null (OpenAI), the rest are arlm score's.
        let (s, v) = srv.post(
            "/v1/completions",
            &json!({"model": name, "prompt": text, "max_tokens": 0, "echo": true, "logprobs": 1}),
        );
        assert_eq!(s, 200, "{v}");
        let c = &v["choices"][0];
        assert_eq!(c["text"], text);
        let got = c["logprobs"]["token_logprobs"].as_array().unwrap();
        assert_eq!(got.len(), want.len());
        assert!(got[0].is_null());
        for (g, w) in got[1..].iter().zip(&want[1..]) {
            assert_eq!(g.as_f64().unwrap(), *w, "{name}");
        }
        // As ids after the end-of-text token (lm-evaluation-harness's request): every
        // token is scored, and the sum is arlm score's joint log-prob.
        let (_, t) = srv.post("/tokenize", &json!({"model": name, "content": text}));
        let mut ids = vec![json!(256)];
        let bos = {
            let m = load(path).unwrap();
            m.tokenizer.eot_token()
        };
        ids[0] = json!(bos);
        ids.extend(t["tokens"].as_array().unwrap().iter().cloned());
        let (s, v) = srv.post(
            "/v1/completions",
            &json!({"model": name, "prompt": ids, "max_tokens": 0, "echo": true, "logprobs": 0}),
        );
        assert_eq!(s, 200, "{v}");
        let got = v["choices"][0]["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .clone();
        assert!(got[0].is_null());
        let got: Vec<f64> = got[1..].iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(got, want, "{name}");
    }
    // Echo with generation: the prompt comes first in the text.
    let (s, v) = srv.post(
        "/v1/completions",
        &json!({"model": "kn", "prompt": "the cat", "max_tokens": 3, "echo": true, "seed": 1}),
    );
    assert_eq!(s, 200);
    assert!(v["choices"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("the cat"));
}

#[test]
fn streaming_yields_the_same_tokens_as_non_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::gpt(dir.path(), ServeOptions::default());
    for echo in [false, true] {
        let req = json!({"prompt": "hello", "max_tokens": 24, "seed": 11, "n": 2, "logprobs": 2, "echo": echo});
        let (_, whole) = srv.post("/v1/completions", &req);
        let mut sreq = req.clone();
        sreq["stream"] = json!(true);
        sreq["stream_options"] = json!({"include_usage": true});
        let (s, headers, body) = request(
            srv.addr,
            "POST",
            "/v1/completions",
            Some(&sreq.to_string()),
            &[],
        );
        assert_eq!(s, 200);
        assert!(headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream")));
        let events = sse_events(&body);
        let mut texts = vec![String::new(); 2];
        let mut lps: Vec<Vec<Value>> = vec![Vec::new(); 2];
        let mut finish = vec![Value::Null; 2];
        for e in &events[..events.len() - 1] {
            let c = &e["choices"][0];
            let i = c["index"].as_u64().unwrap() as usize;
            texts[i].push_str(c["text"].as_str().unwrap());
            if let Some(l) = c["logprobs"]["token_logprobs"].as_array() {
                lps[i].extend(l.iter().cloned());
            }
            if !c["finish_reason"].is_null() {
                finish[i] = c["finish_reason"].clone();
            }
        }
        for i in 0..2 {
            let w = &whole["choices"][i];
            assert_eq!(texts[i], w["text"].as_str().unwrap());
            assert_eq!(&lps[i], w["logprobs"]["token_logprobs"].as_array().unwrap());
            assert_eq!(finish[i], w["finish_reason"]);
        }
        assert_eq!(events.last().unwrap()["usage"], whole["usage"]);
    }
}

#[test]
fn batched_requests_return_what_each_returns_alone() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::gpt(dir.path(), ServeOptions::default());
    let reqs: Vec<Value> = (0..16)
        .map(|i| json!({"prompt": format!("prompt {i}"), "max_tokens": 40 + i, "seed": 100 + i, "logprobs": 1, "temperature": 1.0}))
        .collect();
    let alone: Vec<Value> = reqs
        .iter()
        .map(|r| srv.post("/v1/completions", r).1)
        .collect();
    let single_batches = srv.metric("arlm_batch_size_count");
    assert_eq!(
        srv.metric("arlm_batch_size_bucket{le=\"1\"}"),
        single_batches
    );
    let addr = srv.addr;
    let together: Vec<Value> = std::thread::scope(|s| {
        let hs: Vec<_> = reqs
            .iter()
            .map(|r| {
                s.spawn(move || {
                    let (_, _, b) =
                        request(addr, "POST", "/v1/completions", Some(&r.to_string()), &[]);
                    serde_json::from_str::<Value>(&b).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // The concurrent requests really shared steps.
    let batched =
        srv.metric("arlm_batch_size_count") - srv.metric("arlm_batch_size_bucket{le=\"1\"}");
    assert!(batched > 0.0, "no step decoded more than one sequence");
    for (a, b) in alone.iter().zip(&together) {
        let (a, b) = (&a["choices"][0], &b["choices"][0]);
        assert_eq!(a["text"], b["text"]);
        assert_eq!(a["logprobs"]["tokens"], b["logprobs"]["tokens"]);
        for (x, y) in a["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["logprobs"]["token_logprobs"].as_array().unwrap())
        {
            assert!((x.as_f64().unwrap() - y.as_f64().unwrap()).abs() <= 1e-4);
        }
    }
}

fn expect_error(srv: &Server, body: Value, status: u16, param: Option<&str>) {
    let (s, v) = srv.post("/v1/completions", &body);
    assert_eq!(s, status, "{body} -> {v}");
    let (_, p) = error_of(&v);
    assert_eq!(p, param, "{body} -> {v}");
}

#[test]
fn every_invalid_field_is_a_400_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::gpt(dir.path(), ServeOptions::default());
    let p = |k: &str, v: Value| {
        let mut b = json!({"prompt": "ab", "max_tokens": 2});
        b[k] = v;
        b
    };
    expect_error(&srv, p("model", json!("nope")), 400, Some("model"));
    expect_error(
        &srv,
        p("temperature", json!(-0.5)),
        400,
        Some("temperature"),
    );
    expect_error(&srv, p("top_p", json!(0.0)), 400, Some("top_p"));
    expect_error(&srv, p("top_p", json!(1.5)), 400, Some("top_p"));
    expect_error(&srv, p("logprobs", json!(21)), 400, Some("logprobs"));
    expect_error(
        &srv,
        p("stop", json!(["a", "b", "c", "d", "e"])),
        400,
        Some("stop"),
    );
    expect_error(&srv, p("prompt", json!([1, 2, 999])), 400, Some("prompt"));
    expect_error(
        &srv,
        p("prompt", json!("x".repeat(63))),
        400,
        Some("prompt"),
    );
    expect_error(&srv, p("max_tokens", json!(-1)), 400, Some("max_tokens"));
    expect_error(
        &srv,
        p("max_tokens", json!(100_000)),
        400,
        Some("max_tokens"),
    );
    expect_error(&srv, p("n", json!(0)), 400, Some("n"));
    expect_error(&srv, p("n", json!(17)), 400, Some("n"));
    expect_error(
        &srv,
        p("logit_bias", json!({"300": 1})),
        400,
        Some("logit_bias"),
    );
    expect_error(
        &srv,
        p("logit_bias", json!({"x": 1})),
        400,
        Some("logit_bias"),
    );
    expect_error(&srv, p("min_p", json!(2)), 400, Some("min_p"));
    expect_error(&srv, p("samplers", json!(["bogus"])), 400, Some("samplers"));
    expect_error(
        &srv,
        p("presence_penalty", json!(3)),
        400,
        Some("presence_penalty"),
    );
    expect_error(&srv, p("temperature", json!("hot")), 400, None);
    expect_error(&srv, p("prompt", json!([])), 400, Some("prompt"));
    // NaN is not JSON: the body itself is rejected.
    let (s, _, b) = request(
        srv.addr,
        "POST",
        "/v1/completions",
        Some(r#"{"prompt":"a","temperature":NaN}"#),
        &[],
    );
    assert_eq!(s, 400, "{b}");
    let (s, _, b) = request(srv.addr, "POST", "/v1/completions", Some("{not json"), &[]);
    assert_eq!(s, 400, "{b}");
    // A prompt that fills the context is fine for pure scoring.
    let (s, _) = srv.post(
        "/v1/completions",
        &json!({"prompt": "x".repeat(63), "max_tokens": 0, "echo": true}),
    );
    assert_eq!(s, 200);
    let (s, _, b) = request(srv.addr, "GET", "/nowhere", None, &[]);
    assert_eq!(s, 404, "{b}");
    // Every rejected request was counted.
    assert!(srv.metric("arlm_requests_total{outcome=\"client_error\"}") >= 20.0);
}

#[test]
fn limits_api_key_and_body_size() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ServeOptions {
        api_key: Some("sekret".into()),
        body_limit: 4096,
        ..ServeOptions::default()
    };
    let srv = Server::gpt(dir.path(), opts);
    let body = json!({"prompt": "a", "max_tokens": 1}).to_string();
    let (s, _, b) = request(srv.addr, "POST", "/v1/completions", Some(&body), &[]);
    assert_eq!(s, 401, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(error_of(&v).0, "authentication_error");
    let (s, _, _) = request(
        srv.addr,
        "POST",
        "/v1/completions",
        Some(&body),
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(s, 401);
    let (s, _, _) = request(srv.addr, "GET", "/v1/models", None, &[]);
    assert_eq!(s, 401);
    let auth = [("Authorization", "Bearer sekret")];
    let (s, _, b) = request(srv.addr, "POST", "/v1/completions", Some(&body), &auth);
    assert_eq!(s, 200, "{b}");
    // /health needs no key.
    assert_eq!(request(srv.addr, "GET", "/health", None, &[]).0, 200);
    let big = json!({"prompt": "a".repeat(10_000)}).to_string();
    let (s, _, b) = request(srv.addr, "POST", "/v1/completions", Some(&big), &auth);
    assert_eq!(s, 413, "{b}");
}

/// Opens a streaming request and reads until its first token arrives; the stream stays
/// open (unread) until the returned connection is dropped.
fn open_stream(addr: SocketAddr, max_tokens: usize) -> BufReader<TcpStream> {
    let body = json!({"prompt": "ab", "max_tokens": max_tokens, "stream": true, "seed": 1, "ignore_eos": true}).to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "stream closed early");
    }
    r
}

#[test]
fn queue_bound_answers_429_and_disconnect_frees_the_slot() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServeOptions::default();
    opts.engine.max_batch = 1;
    opts.queue = 1;
    opts.limits.max_tokens = 10_000_000;
    let srv = Server::gpt(dir.path(), opts);
    // One request decoding (effectively forever), one waiting behind it.
    let first = open_stream(srv.addr, 10_000_000);
    let body = json!({"prompt": "ab", "max_tokens": 2, "stream": true}).to_string();
    let waiting = std::thread::spawn({
        let addr = srv.addr;
        let body = body.clone();
        move || request(addr, "POST", "/v1/completions", Some(&body), &[])
    });
    srv.wait_until("the second request to queue", |s| {
        s.metric("arlm_queue_depth") == 1.0
    });
    let (s, headers, b) = request(srv.addr, "POST", "/v1/completions", Some(&body), &[]);
    assert_eq!(s, 429, "{b}");
    assert!(headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(error_of(&v).0, "rate_limit_error");
    // The client of the long request goes away: its slot frees, the waiting one runs.
    drop(first);
    let (s, _, b) = waiting.join().unwrap();
    assert_eq!(s, 200);
    // Two token chunks and the finish chunk.
    assert_eq!(sse_events(&b).len(), 3);
    srv.wait_until("nothing in flight", |s| {
        s.metric("arlm_requests_in_flight") == 0.0
    });
    srv.wait_until("no active sequence", |s| {
        s.metric("arlm_active_sequences") == 0.0
    });
    let (s, _) = srv.post("/v1/completions", &json!({"prompt": "ab", "max_tokens": 2}));
    assert_eq!(s, 200);
}

#[test]
fn shutdown_finishes_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ServeOptions::default();
    opts.limits.max_tokens = 100_000;
    let mut srv = Server::gpt(dir.path(), opts);
    let addr = srv.addr;
    let clients: Vec<_> = (0..3)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"prompt": "ab", "max_tokens": 30000, "seed": i, "stream": i == 2,
                                 "logit_bias": {"256": -100}})
                .to_string();
                request(addr, "POST", "/v1/completions", Some(&body), &[])
            })
        })
        .collect();
    srv.wait_until("three requests in flight", |s| {
        s.metric("arlm_requests_in_flight") == 3.0
    });
    let t = Instant::now();
    srv.shutdown();
    eprintln!("shutdown took {:?}", t.elapsed());
    for (i, c) in clients.into_iter().enumerate() {
        let (s, _, b) = c.join().unwrap();
        assert_eq!(s, 200, "{b}");
        if i == 2 {
            let ev = sse_events(&b);
            assert_eq!(ev.last().unwrap()["choices"][0]["finish_reason"], "length");
        } else {
            let v: Value = serde_json::from_str(&b).unwrap();
            assert_eq!(v["usage"]["completion_tokens"], 30000);
        }
    }
    assert_eq!(srv.state.queue_depth(), 0);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
}
