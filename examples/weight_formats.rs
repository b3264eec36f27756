//! Quality cost of the reduced-precision decode weights: for a GPT model directory and a
//! text file, the next-token log-probs under f16, bf16, q8 and w8a8 weights against f32 over
//! windows of the model's context: max and mean |logprob difference| over the whole
//! vocabulary, NLL of the text in bits/token, and how often the argmax token agrees.
//!
//! Every format's rows come from the KV-cache decode step (`feed`, what generation runs;
//! w8a8 rounds activations only there), the f32 reference from the parallel pass
//! (`distributions`), so the f32 row shows the two paths' summation-order difference.
//! Two rows measure bf16 and w8a8 models' parallel pass (`distributions`: their GEMMs
//! of scoring and prefill, which round the activations too, where the CPU has the
//! instructions), the last an f16 model's generation prefill (the bf16 GEMM with the f16
//! weights rounded to bf16), each position's row from a prefill of the window up to it.
//!
//! `cargo run --release --example weight_formats -- MODEL_DIR TEXT_FILE [MAX_TOKENS]`

use arlm::load::{load, AnyModel};
use arlm::model::gpt::WeightFormat;
use arlm::model::LanguageModel;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() >= 3,
        "usage: weight_formats MODEL_DIR TEXT_FILE [MAX_TOKENS]"
    );
    let loaded = load(std::path::Path::new(&a[1]))?;
    let text = std::fs::read_to_string(&a[2])?;
    let max_tokens: usize = a.get(3).map_or(Ok(4096), |s| s.parse())?;
    let AnyModel::Gpt(f32m) = loaded.model else {
        anyhow::bail!("not a GPT model");
    };
    let mut ids = loaded.tokenizer.encode(&text)?;
    ids.truncate(max_tokens);
    let ctx = f32m.config.block_size;
    let v = f32m.config.vocab_size;
    // Windows of the model's context, each starting with BOS.
    let windows: Vec<Vec<u32>> = ids
        .chunks(ctx - 1)
        .map(|c| {
            std::iter::once(f32m.bos_token)
                .chain(c.iter().copied())
                .collect()
        })
        .collect();
    let reference: Vec<Vec<f32>> = windows
        .iter()
        .map(|w| f32m.distributions(w))
        .collect::<Result<_, _>>()?;
    println!(
        "model: {} | {} tokens of {}",
        f32m.describe(),
        ids.len(),
        a[2]
    );
    println!("| weights | max abs logprob diff | mean abs logprob diff | NLL bits/token | NLL diff vs f32 | argmax agreement |");
    println!("|---|---|---|---|---|---|");
    for format in WeightFormat::ALL {
        let m = f32m.clone().with_weight_format(format);
        let step_rows = |w: &[u32]| -> anyhow::Result<Vec<f32>> {
            let mut st = m.new_state();
            let mut d = vec![0f32; w.len() * v];
            for (&tok, row) in w.iter().zip(d.chunks_mut(v)) {
                m.feed(&mut st, tok, row)?;
            }
            Ok(d)
        };
        compare(&format.to_string(), &windows, &reference, v, step_rows)?;
    }
    // bf16 and w8a8 models score and prefill with their own GEMM where the CPU has the
    // instructions (AVX512_BF16; AVX-512 VNNI), which round the activations too (to bf16;
    // to int8 blocks, as w8a8's step does): their parallel path gets its own row.
    for format in [WeightFormat::Bf16, WeightFormat::W8A8] {
        let m = f32m.clone().with_weight_format(format);
        let label = format!("{format} (parallel path)");
        compare(&label, &windows, &reference, v, |w| Ok(m.distributions(w)?))?;
    }
    // An f16 model's generation prefill runs the bf16 GEMM too (its f16 weights rounded
    // to bf16): each position's row is the distribution a prefill of the window up to
    // it ends with (what the first sampled token of a prompt that long is drawn from).
    let m = f32m.clone().with_weight_format(WeightFormat::F16);
    compare("f16 (prefill path)", &windows, &reference, v, |w| {
        let mut d = vec![0f32; w.len() * v];
        for (p, row) in d.chunks_mut(v).enumerate() {
            m.prefill(&mut m.new_state(), &w[..=p], row)?;
        }
        Ok(d)
    })?;
    Ok(())
}

/// One table row: `rows(window)` (window length x v log-probs) against the f32 reference.
fn compare(
    label: &str,
    windows: &[Vec<u32>],
    reference: &[Vec<f32>],
    v: usize,
    rows: impl Fn(&[u32]) -> anyhow::Result<Vec<f32>>,
) -> anyhow::Result<()> {
    let (mut worst, mut sum_abs, mut n_abs) = (0f64, 0f64, 0usize);
    let (mut nll, mut nll_ref, mut agree, mut n) = (0f64, 0f64, 0usize, 0usize);
    for (w, r) in windows.iter().zip(reference) {
        let d = rows(w)?;
        for (pos, (row, rrow)) in d.chunks(v).zip(r.chunks(v)).enumerate() {
            for (x, y) in row.iter().zip(rrow) {
                let e = (*x as f64 - *y as f64).abs();
                worst = worst.max(e);
                sum_abs += e;
                n_abs += 1;
            }
            let argmax = |r: &[f32]| (0..v).max_by(|&i, &j| r[i].total_cmp(&r[j])).unwrap_or(0);
            agree += (argmax(row) == argmax(rrow)) as usize;
            if let Some(&next) = w.get(pos + 1) {
                nll -= row[next as usize] as f64;
                nll_ref -= rrow[next as usize] as f64;
                n += 1;
            }
        }
    }
    let bits = |x: f64| x / n as f64 / std::f64::consts::LN_2;
    println!(
        "| {label} | {worst:.2e} | {:.2e} | {:.5} | {:+.2e} | {:.2}% |",
        sum_abs / n_abs as f64,
        bits(nll),
        bits(nll) - bits(nll_ref),
        100.0 * agree as f64 / windows.iter().map(|w| w.len()).sum::<usize>() as f64
    );
    Ok(())
}
