//! `arlm bench generate --recurrent`: generation speed of an LSTM of Zaremba et al.'s
//! "medium" shape (2 x 650, V = 10001, random weights) beside a GPT of similar parameter
//! count (8L/8H/384, V = 10001, context 1024), same prompt, same sampler, batch 1:
//! decode tokens/s (median over runs, alternating the two) and the state each holds at
//! the end (the LSTM's (h, c) per layer is fixed; the GPT's KV cache grows with context).

use super::generate::{measure, Args};
use anyhow::Result;
use arlm::model::gpt::{Gpt, GptConfig};
use arlm::model::rnn::{CellKind, InitScheme, Rnn, RnnConfig};
use arlm::model::LanguageModel;
use rand::{Rng, SeedableRng};

/// Runs the recurrent-vs-GPT comparison.
pub fn run(args: &Args) -> Result<()> {
    let v = 10001;
    let rc = RnnConfig {
        kind: CellKind::Lstm,
        n_layer: 2,
        hidden: 650,
        embd: 650,
        vocab_size: v,
        dropout: 0.0,
        tied: false,
    };
    let rnn = Rnn::<f32>::init(rc, InitScheme::Uniform(0.05), 1)?;
    let gc = GptConfig {
        n_layer: 8,
        n_head: 8,
        n_embd: 384,
        block_size: 1024,
        vocab_size: v,
        dropout: 0.0,
        activation: Default::default(),
    };
    let gpt = Gpt::new(gc, 1)?;
    let ctx = args.prompt_len + args.new_tokens;
    anyhow::ensure!(
        args.prompt_len > 0 && ctx <= gc.block_size,
        "prompt {} + new tokens {} must fit the GPT's context of {}",
        args.prompt_len,
        args.new_tokens,
        gc.block_size
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut prompt = vec![(v - 1) as u32];
    while prompt.len() < args.prompt_len {
        prompt.push(rng.random_range(0..(v - 1) as u32));
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "prompt {} tokens, {} new tokens, batch 1, {} threads, load average {}",
        prompt.len(),
        args.new_tokens,
        rayon::current_num_threads(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (mut lstm_tps, mut gpt_tps) = (Vec::new(), Vec::new());
    for run in 0..args.runs.max(1) {
        for setting in ["greedy", "top-p"] {
            let a = measure(&rnn, &prompt, args.new_tokens, setting, run as u64)?;
            let b = measure(&gpt, &prompt, args.new_tokens, setting, run as u64)?;
            println!(
                "run {} {setting:<6}: lstm {:.0} tok/s decode ({:.0} prefill), gpt {:.0} tok/s decode ({:.0} prefill)",
                run + 1,
                a.decode_tokens_per_s,
                a.prefill_tokens_per_s,
                b.decode_tokens_per_s,
                b.prefill_tokens_per_s
            );
            lstm_tps.push(a.decode_tokens_per_s);
            gpt_tps.push(b.decode_tokens_per_s);
        }
    }
    let state_lstm = rc.state_size() * 4;
    // K and V of every layer for every position, f32.
    let state_gpt = 2 * gc.n_layer * ctx * gc.n_embd * 4;
    println!(
        "{:<44} {:>10} {:>14} {:>22}",
        "model", "params", "decode tok/s", "state at the end"
    );
    for (name, params, tps, bytes) in [
        (rnn.describe(), rnn.num_params(), &lstm_tps, state_lstm),
        (gpt.describe(), gpt.num_params(), &gpt_tps, state_gpt),
    ] {
        println!(
            "{name:<44} {:>9.2}M {:>14.0} {:>13} bytes",
            params as f64 / 1e6,
            super::util::median(tps),
            bytes
        );
    }
    println!(
        "(median over runs and both settings; the GPT's state is its KV cache at context {ctx})"
    );
    Ok(())
}
