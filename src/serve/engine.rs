//! The model workers: one OS thread per model runs a continuous-batching decode loop.
//!
//! Requests arrive as [`Job`]s on a channel. Between decode steps the worker takes new
//! jobs into the batch (up to `max_batch` sequences), feeds waiting prompts up to one
//! prefill chunk of tokens in all (whole short prompts, or one chunk of a long one, so a
//! long prompt delays the others by one chunk, not by its whole length), then runs one
//! decode step for every active sequence: each samples its next
//! token from its own row with its own seeded [`Sampler`], and the chosen tokens go
//! through one [`Session::push_batch`] ([`LanguageModel::feed_batch`]: for the GPT one
//! pass over the weights for the whole batch). Every sequence has its own sampler and
//! random stream and `feed_batch` gives each row what `feed` gives alone, so a request's
//! tokens do not depend on what else is in the batch.
//!
//! Results flow back as [`Event`]s on a per-request channel. A request whose receiver is
//! gone (the client disconnected, so its handler was dropped) is removed at the next step
//! boundary, which frees its slots. A panic inside a step fails the requests in that
//! batch with a 500 and the worker goes on.

use super::error::ApiError;
use super::metrics::Metrics;
use crate::eval::score::describe_position;
use crate::generate::{
    Choice, FinishReason, GenerateError, Sampler, SamplerConfig, Session, TextStream,
};
use crate::model::LanguageModel;
use crate::tokenizer::Tokenizer;
use rayon::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// What to generate for one prompt.
#[derive(Clone, Debug)]
pub struct GenRequest {
    /// Prompt ids after the conditioning BOS (the session puts BOS first).
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub sampler: SamplerConfig,
    /// Independent samples of this prompt (choice `first_choice + i` uses random stream i).
    pub n: usize,
    /// Alternatives per generated token to report (None: no log-probs).
    pub logprobs: Option<usize>,
    /// Index of this prompt's first choice in the response.
    pub first_choice: usize,
    /// End the choice when the model chooses end-of-text.
    pub stop_at_eot: bool,
}

/// One generated token as the response reports it.
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub id: u32,
    pub piece: String,
    /// log p(token | context) under the model, nats.
    pub logprob: f32,
    /// The most probable tokens at this position (piece, log-prob), most probable first.
    pub top: Vec<(String, f32)>,
}

/// What a worker sends back about a request.
#[derive(Debug)]
pub enum Event {
    /// A token was generated; `text` is the text that became safe to show with it.
    Token {
        choice: usize,
        text: String,
        token: TokenInfo,
    },
    /// A choice finished; `text` is the rest of its text.
    Done {
        choice: usize,
        text: String,
        finish: FinishReason,
    },
    /// The request failed (every choice of it).
    Failed(ApiError),
}

/// A request handed to a worker.
pub struct Job {
    pub req: GenRequest,
    pub tx: UnboundedSender<Event>,
    pub admitted: Instant,
}

/// Worker settings.
#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    /// Most sequences decoded together.
    pub max_batch: usize,
    /// Most prompt tokens fed between two decode steps.
    pub prefill_chunk: usize,
}

/// A sequence in the decode batch.
struct Seq<'m, M: LanguageModel> {
    session: Session<'m, M>,
    sampler: Sampler,
    stream: TextStream,
    choice: usize,
    generated: usize,
    max_tokens: usize,
    logprobs: Option<usize>,
    tx: UnboundedSender<Event>,
    admitted: Instant,
    stop_at_eot: bool,
    done: bool,
}

/// Runs the batching loop for `model` until every sender of `rx` is dropped and the
/// work in hand is finished. `waiting` mirrors the number of queued sequences.
pub fn run_worker<M: LanguageModel>(
    model: &M,
    tok: &dyn Tokenizer,
    rx: Receiver<Job>,
    opts: EngineOptions,
    waiting_gauge: &AtomicU64,
    metrics: &Metrics,
) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut prefilling: Vec<(Session<'_, M>, Job)> = Vec::new();
    let mut active: Vec<Seq<'_, M>> = Vec::new();
    let mut open = true;
    loop {
        if active.is_empty() && prefilling.is_empty() && waiting.is_empty() {
            if !open {
                break;
            }
            match rx.recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(j) => waiting.push_back(j),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // Cancelled requests leave at the step boundary.
        waiting.retain(|j| !j.tx.is_closed());
        prefilling.retain(|(_, j)| !j.tx.is_closed());
        active.retain(|s| !s.tx.is_closed());
        admit(model, opts, &mut waiting, &mut prefilling, active.len());
        waiting_gauge.store(
            waiting.iter().map(|j| j.req.n as u64).sum(),
            Ordering::Relaxed,
        );
        metrics
            .active_sequences
            .store(active.len() as u64, Ordering::Relaxed);
        let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            prefill_some(model, opts, &mut prefilling, &mut active);
            decode_step(tok, &mut active, metrics);
        }));
        metrics
            .active_sequences
            .store(active.len() as u64, Ordering::Relaxed);
        if let Err(panic) = stepped {
            let what = panic_message(&panic);
            eprintln!("arlm serve: a decode step panicked ({what}); failing its batch");
            let err = ApiError::internal(format!("internal error in the decode step: {what}"));
            for s in active.drain(..) {
                let _ = s.tx.send(Event::Failed(err.clone()));
            }
            for (_, j) in prefilling.drain(..) {
                let _ = j.tx.send(Event::Failed(err.clone()));
            }
        }
    }
    waiting_gauge.store(0, Ordering::Relaxed);
}

/// The text of a caught panic's payload.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Moves jobs from the queue into prefill while their sequences fit in the batch (a job
/// larger than the whole batch runs alone).
fn admit<'m, M: LanguageModel>(
    model: &'m M,
    opts: EngineOptions,
    waiting: &mut VecDeque<Job>,
    prefilling: &mut Vec<(Session<'m, M>, Job)>,
    n_active: usize,
) {
    while let Some(front) = waiting.front() {
        let used = n_active + prefilling.iter().map(|(_, j)| j.req.n).sum::<usize>();
        if used > 0 && used + front.req.n > opts.max_batch {
            break;
        }
        let Some(job) = waiting.pop_front() else {
            break;
        };
        match Session::begin(model, &job.req.prompt) {
            Ok(s) => prefilling.push((s, job)),
            Err(e) => {
                let _ = job.tx.send(Event::Failed(generate_error(e)));
            }
        }
    }
}

/// Feeds waiting prompts, oldest first, up to `prefill_chunk` tokens in all this step:
/// whole prompts while they fit, or one chunk of the oldest when it alone is longer (so a
/// long prompt still holds the batch for one chunk per step, and a burst of short
/// prompts all start in the same step instead of one per step). A prompt that is complete
/// becomes `n` sequences.
fn prefill_some<'m, M: LanguageModel>(
    model: &'m M,
    opts: EngineOptions,
    prefilling: &mut Vec<(Session<'m, M>, Job)>,
    active: &mut Vec<Seq<'m, M>>,
) {
    let mut budget = opts.prefill_chunk.max(1);
    while let Some((session, _)) = prefilling.first_mut() {
        let pending = session.pending_len();
        let fresh = budget == opts.prefill_chunk.max(1);
        if pending > budget && !fresh {
            break;
        }
        match session.prefill_pending(budget) {
            Ok(false) => break,
            Ok(true) => {
                budget = budget.saturating_sub(pending);
                let (session, job) = prefilling.remove(0);
                start_sequences(model, session, job, active);
            }
            Err(e) => {
                let (_, job) = prefilling.remove(0);
                let _ = job.tx.send(Event::Failed(generate_error(e)));
            }
        }
        if budget == 0 {
            break;
        }
    }
}

/// A fully prefilled prompt becomes its `n` sequences (each with its own random stream).
fn start_sequences<'m, M: LanguageModel>(
    model: &'m M,
    session: Session<'m, M>,
    job: Job,
    active: &mut Vec<Seq<'m, M>>,
) {
    let r = &job.req;
    for i in 0..r.n {
        let sampler = match Sampler::with_stream(r.sampler.clone(), model.vocab_size(), i as u64) {
            Ok(s) => s,
            Err(e) => {
                let _ = job.tx.send(Event::Failed(generate_error(e)));
                return;
            }
        };
        active.push(Seq {
            session: session.clone(),
            sampler,
            stream: TextStream::new(&r.stop),
            choice: r.first_choice + i,
            generated: 0,
            max_tokens: r.max_tokens,
            logprobs: r.logprobs,
            tx: job.tx.clone(),
            admitted: job.admitted,
            stop_at_eot: r.stop_at_eot,
            done: false,
        });
    }
}

/// A sequence's sampled token (or why sampling failed) and its alternatives (id,
/// log-prob), most probable first.
type Pick = (Result<Choice, GenerateError>, Vec<(u32, f64)>);

/// Every active sequence's next token from its own row with its own sampler, and the
/// alternatives it asked for (ids and log-probs), in parallel: each is independent and
/// costs a pass or a sort over the vocabulary (~1 ms at 50k), which 16 sequences in
/// series would add to every step.
fn sample_all<M: LanguageModel>(active: &mut [Seq<'_, M>]) -> Vec<Pick> {
    let work: Vec<_> = active
        .iter_mut()
        .map(|s| {
            (
                &mut s.sampler,
                s.session.logprobs(),
                s.session.tokens(),
                s.logprobs,
            )
        })
        .collect();
    work.into_par_iter()
        .map(|(sampler, row, tokens, logprobs)| {
            let pick = sampler.sample(row, tokens);
            let top = match (&pick, logprobs) {
                (Ok(c), Some(k)) if k > 0 => describe_position(row, c.token, k).top,
                _ => Vec::new(),
            };
            (pick, top)
        })
        .collect()
}

fn decode_step<M: LanguageModel>(
    tok: &dyn Tokenizer,
    active: &mut Vec<Seq<'_, M>>,
    metrics: &Metrics,
) {
    if active.is_empty() {
        return;
    }
    let eot = tok.eot_token();
    let picks = sample_all(active);
    let mut chosen = Vec::with_capacity(active.len());
    for (s, (pick, top)) in active.iter_mut().zip(picks) {
        let choice = match pick {
            Ok(c) => c,
            Err(e) => {
                let _ = s.tx.send(Event::Failed(generate_error(e)));
                s.done = true;
                chosen.push(None);
                continue;
            }
        };
        if s.generated == 0 {
            metrics
                .time_to_first_token_seconds
                .observe(s.admitted.elapsed().as_secs_f64());
        }
        s.generated += 1;
        metrics.completion_tokens.fetch_add(1, Ordering::Relaxed);
        let top = top
            .into_iter()
            .map(|(id, lp)| (crate::eval::score::piece(tok, id), lp as f32))
            .collect();
        let is_eot = s.stop_at_eot && choice.token == eot;
        let bytes = if is_eot {
            Vec::new()
        } else {
            tok.token_bytes(choice.token).unwrap_or_default()
        };
        let text = s.stream.push(&bytes);
        let info = TokenInfo {
            id: choice.token,
            piece: crate::eval::score::piece(tok, choice.token),
            logprob: choice.logprob_model,
            top,
        };
        let mut ok =
            s.tx.send(Event::Token {
                choice: s.choice,
                text,
                token: info,
            })
            .is_ok();
        let finish = if is_eot || s.stream.stopped() {
            Some(FinishReason::Stop)
        } else if s.generated >= s.max_tokens {
            Some(FinishReason::Length)
        } else {
            None
        };
        if let Some(finish) = finish {
            let text = s.stream.finish();
            ok &=
                s.tx.send(Event::Done {
                    choice: s.choice,
                    text,
                    finish,
                })
                .is_ok();
            s.done = true;
        }
        if !ok {
            s.done = true;
        }
        chosen.push(if s.done { None } else { Some(choice.token) });
    }
    let mut tokens = Vec::with_capacity(active.len());
    let mut sessions: Vec<&mut Session<'_, M>> = Vec::with_capacity(active.len());
    let mut fed = Vec::new();
    for (i, (s, c)) in active.iter_mut().zip(&chosen).enumerate() {
        if let Some(t) = c {
            tokens.push(*t);
            sessions.push(&mut s.session);
            fed.push(i);
        }
    }
    metrics.batch_size.observe(sessions.len() as f64);
    if let Err(e) = Session::push_batch(&mut sessions, &tokens) {
        let err = generate_error(e);
        for i in fed {
            let _ = active[i].tx.send(Event::Failed(err.clone()));
            active[i].done = true;
        }
    }
    active.retain(|s| !s.done);
}

/// A generation error as the client sees it: bad parameters are the request's fault,
/// anything else the server's.
pub fn generate_error(e: GenerateError) -> ApiError {
    let message = crate::error_chain(&e);
    match e {
        GenerateError::InvalidParam { name, .. } => ApiError::invalid(name, message),
        GenerateError::EmptyVocabulary { .. } => ApiError::invalid("logit_bias", message),
        _ => ApiError::internal(message),
    }
}

/// A handle on a running worker thread.
pub struct Worker {
    tx: Option<std::sync::mpsc::Sender<Job>>,
    join: Option<std::thread::JoinHandle<()>>,
    /// Sequences waiting to join the batch.
    pub waiting: Arc<AtomicU64>,
}

impl Worker {
    /// Starts a worker thread for `model` (anything that runs the loop given the
    /// receiver; see [`run_worker`]).
    pub fn spawn(
        name: &str,
        run: impl FnOnce(Receiver<Job>, Arc<AtomicU64>) + Send + 'static,
    ) -> std::io::Result<Worker> {
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = Arc::new(AtomicU64::new(0));
        let w = waiting.clone();
        let join = std::thread::Builder::new()
            .name(format!("arlm-serve-{name}"))
            .spawn(move || run(rx, w))?;
        Ok(Worker {
            tx: Some(tx),
            join: Some(join),
            waiting,
        })
    }

    /// Hands a job to the worker; false when it has stopped.
    pub fn submit(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// Stops taking jobs and waits until the work in hand is done.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.tx = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::SamplerConfig;
    use crate::model::{check_token, ModelError};
    use crate::tokenizer::bytes::ByteTokenizer;

    /// A uniform byte model with a bug: feeding `!` panics.
    struct Trap;

    impl LanguageModel for Trap {
        type State = ();
        fn vocab_size(&self) -> usize {
            257
        }
        fn max_context(&self) -> Option<usize> {
            None
        }
        fn bos_token(&self) -> u32 {
            256
        }
        fn describe(&self) -> String {
            "trap".into()
        }
        fn new_state(&self) {}
        fn feed(&self, _: &mut (), token: u32, logprobs: &mut [f32]) -> Result<(), ModelError> {
            check_token(token, 257)?;
            assert_ne!(token, u32::from(b'!'), "trap token fed");
            logprobs.fill(-(257f32).ln());
            Ok(())
        }
    }

    fn job(prompt: &str, max_tokens: usize) -> (Job, tokio::sync::mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let req = GenRequest {
            prompt: prompt.bytes().map(u32::from).collect(),
            max_tokens,
            stop: Vec::new(),
            sampler: SamplerConfig::greedy(),
            n: 1,
            logprobs: None,
            first_choice: 0,
            stop_at_eot: false,
        };
        let admitted = Instant::now();
        (Job { req, tx, admitted }, rx)
    }

    /// Waits for the request's last event: Done or Failed.
    fn last_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Event {
        loop {
            match rx.blocking_recv().expect("the worker dropped the request") {
                Event::Token { .. } => continue,
                e => return e,
            }
        }
    }

    /// Whole short prompts share a step's prefill budget (oldest first, in order); a prompt
    /// longer than the budget gets one chunk in a step of its own.
    #[test]
    fn short_prompts_share_a_steps_prefill_budget() {
        let opts = EngineOptions {
            max_batch: 8,
            prefill_chunk: 16,
        };
        let mut prefilling = Vec::new();
        let mut rxs = Vec::new();
        // 5 bytes + BOS = 6 tokens each; the long one 101.
        for p in ["aaaaa", "bbbbb", "ccccc", &"d".repeat(100), "eeeee"] {
            let (j, rx) = job(p, 1);
            prefilling.push((Session::begin(&Trap, &j.req.prompt).unwrap(), j));
            rxs.push(rx);
        }
        let mut active = Vec::new();
        let started = |active: &Vec<Seq<'_, Trap>>| -> Vec<usize> {
            active.iter().map(|s| s.session.tokens().len()).collect()
        };
        prefill_some(&Trap, opts, &mut prefilling, &mut active);
        assert_eq!(
            started(&active),
            [5, 5],
            "6 + 6 fit in 16, the third does not"
        );
        prefill_some(&Trap, opts, &mut prefilling, &mut active);
        assert_eq!(
            started(&active),
            [5, 5, 5],
            "the long prompt waits for a step of its own"
        );
        assert_eq!(prefilling.len(), 2);
        prefill_some(&Trap, opts, &mut prefilling, &mut active);
        assert_eq!(
            prefilling[0].0.pending_len(),
            101 - 16,
            "one chunk of the long prompt"
        );
        assert_eq!(active.len(), 3, "the prompt behind it waits its turn");
    }

    #[test]
    fn a_panic_in_a_step_fails_its_batch_and_the_worker_goes_on() {
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn(move || {
            let opts = EngineOptions {
                max_batch: 4,
                prefill_chunk: 64,
            };
            run_worker(
                &Trap,
                &ByteTokenizer,
                rx,
                opts,
                &AtomicU64::new(0),
                &Metrics::default(),
            );
        });
        let (bad, mut bad_rx) = job("a trap!", 3);
        tx.send(bad).unwrap();
        match last_event(&mut bad_rx) {
            Event::Failed(e) => {
                assert_eq!(e.status, axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                assert!(e.message.contains("trap token fed"), "{}", e.message);
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        // The same worker still serves the next request.
        let (good, mut good_rx) = job("fine", 3);
        tx.send(good).unwrap();
        match last_event(&mut good_rx) {
            Event::Done { finish, .. } => assert_eq!(finish, FinishReason::Length),
            other => panic!("expected a finished choice, got {other:?}"),
        }
        drop(tx);
        worker.join().unwrap();
    }
}
