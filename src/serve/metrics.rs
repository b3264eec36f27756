//! Server counters in the Prometheus text exposition format (`GET /metrics`).
//!
//! A handful of atomics and fixed-bucket histograms written by hand: the format is a few
//! lines of text, and a metrics crate would bring a registry and global state for it.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A histogram with fixed upper bounds (cumulative buckets, as Prometheus counts them).
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    /// Records one observation.
    pub fn observe(&self, x: f64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (b, c) in self.bounds.iter().zip(g.0.iter_mut()) {
            if x <= *b {
                *c += 1;
            }
        }
        g.1 += x;
        g.2 += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&g.0) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", g.2);
        let _ = writeln!(out, "{name}_sum {}", g.1);
        let _ = writeln!(out, "{name}_count {}", g.2);
    }
}

const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

/// Every counter the server keeps.
pub struct Metrics {
    pub requests_ok: AtomicU64,
    pub requests_client_error: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub requests_server_error: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Requests admitted and not finished (waiting or decoding).
    pub in_flight: AtomicU64,
    /// Sequences in the decode batch right now (all models).
    pub active_sequences: AtomicU64,
    pub batch_size: Histogram,
    pub request_seconds: Histogram,
    pub time_to_first_token_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests_ok: AtomicU64::new(0),
            requests_client_error: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            requests_server_error: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            active_sequences: AtomicU64::new(0),
            batch_size: Histogram::new(BATCH),
            request_seconds: Histogram::new(SECONDS),
            time_to_first_token_seconds: Histogram::new(SECONDS),
        }
    }
}

impl Metrics {
    /// Counts a finished request by its HTTP status.
    pub fn count_status(&self, status: u16) {
        let c = match status {
            200..=299 => &self.requests_ok,
            429 | 503 => &self.requests_rejected,
            400..=499 => &self.requests_client_error,
            _ => &self.requests_server_error,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text of every metric; `queue_depth` is passed in (it lives in the
    /// model workers).
    pub fn render(&self, queue_depth: u64) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP arlm_requests_total Completion requests answered, by outcome.\n# TYPE arlm_requests_total counter"
        );
        for (label, a) in [
            ("ok", &self.requests_ok),
            ("client_error", &self.requests_client_error),
            ("rejected", &self.requests_rejected),
            ("server_error", &self.requests_server_error),
        ] {
            let _ = writeln!(out, "arlm_requests_total{{outcome=\"{label}\"}} {}", get(a));
        }
        for (name, help, kind, v) in [
            (
                "arlm_prompt_tokens_total",
                "Prompt tokens received.",
                "counter",
                get(&self.prompt_tokens),
            ),
            (
                "arlm_completion_tokens_total",
                "Tokens generated.",
                "counter",
                get(&self.completion_tokens),
            ),
            (
                "arlm_requests_in_flight",
                "Requests admitted and not finished.",
                "gauge",
                get(&self.in_flight),
            ),
            (
                "arlm_queue_depth",
                "Sequences waiting to join a decode batch.",
                "gauge",
                queue_depth,
            ),
            (
                "arlm_active_sequences",
                "Sequences in a decode batch.",
                "gauge",
                get(&self.active_sequences),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        self.batch_size.write(
            &mut out,
            "arlm_batch_size",
            "Sequences decoded together in one step.",
        );
        self.request_seconds.write(
            &mut out,
            "arlm_request_duration_seconds",
            "Completion request latency.",
        );
        self.time_to_first_token_seconds.write(
            &mut out,
            "arlm_time_to_first_token_seconds",
            "From admission to the first generated token.",
        );
        out
    }
}
