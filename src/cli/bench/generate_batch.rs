//! `arlm bench generate --batch 1,4,16`: aggregate decode speed of n sequences sharing
//! each step ([`Session::push_batch`], the server's batched decode without HTTP), on the
//! same GPT checkpoint as `bench generate`.
//!
//! For each n: n sessions, each prefilled with its own seeded random prompt, then
//! `--new-tokens` steps in which every session samples (top-p 0.95, its own seed; the
//! sequences in parallel, as the server does) and all of them take one batched step. Aggregate tok/s = n * new tokens / decode time; the
//! speedup is against n = 1 in the same run. Runs alternate over the n values (1, 4, 16,
//! 1, 4, 16, ...) so a drifting machine slows all of them alike; medians are printed.

use super::generate::Args;
use anyhow::{Context, Result};
use arlm::generate::{Sampler, SamplerConfig, Session};
use arlm::model::gpt::Gpt;
use arlm::model::LanguageModel;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::time::Instant;

/// Decode time in seconds of `n` sequences for `new_tokens` batched steps.
fn decode_seconds(model: &Gpt, n: usize, prompt_len: usize, new_tokens: usize) -> Result<f64> {
    let v = model.vocab_size() as u32;
    let mut sessions = Vec::with_capacity(n);
    let mut samplers = Vec::with_capacity(n);
    for s in 0..n {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + s as u64);
        let prompt: Vec<u32> = (1..prompt_len).map(|_| rng.random_range(0..v)).collect();
        sessions.push(Session::new(model, &prompt)?);
        let cfg = SamplerConfig {
            top_p: 0.95,
            ..SamplerConfig::pure(s as u64)
        };
        samplers.push(Sampler::new(cfg, model.vocab_size())?);
    }
    let t0 = Instant::now();
    let mut tokens = vec![0u32; n];
    for _ in 0..new_tokens {
        // In parallel, as the server's decode step samples.
        tokens
            .par_iter_mut()
            .zip(&sessions)
            .zip(&mut samplers)
            .try_for_each(|((t, sess), sampler)| {
                *t = sampler.sample(sess.logprobs(), sess.tokens())?.token;
                Ok::<(), arlm::generate::GenerateError>(())
            })?;
        let mut refs: Vec<&mut Session<'_, Gpt>> = sessions.iter_mut().collect();
        Session::push_batch(&mut refs, &tokens)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Runs the batched-decode comparison over `batches`.
pub fn run(args: &Args, batches: &[usize]) -> Result<()> {
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => {
            super::generate::ensure_checkpoint(&args.checkpoint)?;
            args.checkpoint.clone()
        }
    };
    let model =
        Gpt::load(&dir).with_context(|| format!("cannot load the GPT at {}", dir.display()))?;
    let fmt = args.weights.first().copied().unwrap_or_default();
    let model = model.with_weight_format(fmt);
    anyhow::ensure!(
        !batches.is_empty() && batches.iter().all(|&n| n > 0),
        "--batch needs sequence counts >= 1, e.g. --batch 1,4,16"
    );
    anyhow::ensure!(
        args.prompt_len > 0 && args.prompt_len + args.new_tokens <= model.config.block_size,
        "prompt {} + new tokens {} must fit the context of {}",
        args.prompt_len,
        args.new_tokens,
        model.config.block_size
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "model: {} | weights {fmt:?} | prompt {} tokens, {} new tokens per sequence, {} threads, load average {}",
        model.describe(),
        args.prompt_len,
        args.new_tokens,
        rayon::current_num_threads(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); batches.len()];
    for run in 0..args.runs.max(1) {
        for (i, &n) in batches.iter().enumerate() {
            let s = decode_seconds(&model, n, args.prompt_len, args.new_tokens)?;
            println!(
                "run {} n={n:<3}: {:.1} tok/s aggregate, {:.1} ms per step",
                run + 1,
                (n * args.new_tokens) as f64 / s,
                s * 1e3 / args.new_tokens as f64
            );
            secs[i].push(s);
        }
    }
    println!(
        "{:>4} {:>16} {:>12} {:>14}",
        "n", "aggregate tok/s", "ms/step", "vs n=1"
    );
    let base = batches
        .iter()
        .position(|&n| n == 1)
        .map(|i| args.new_tokens as f64 / super::util::median(&secs[i]));
    for (i, &n) in batches.iter().enumerate() {
        let tps = (n * args.new_tokens) as f64 / super::util::median(&secs[i]);
        let vs = base.map_or("-".to_string(), |b| format!("{:.2}x", tps / b));
        println!(
            "{n:>4} {tps:>16.1} {:>12.1} {vs:>14}",
            super::util::median(&secs[i]) * 1e3 / args.new_tokens as f64
        );
    }
    Ok(())
}
