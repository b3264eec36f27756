//! Exactness of the decoding methods on a tiny model whose every conditional is known:
//! greedy vs the hand-computed argmax chain, sampling vs the joint distribution
//! (chi-square), the filters vs brute force, beam search vs enumeration.

use arlm::generate::beam::length_penalized;
use arlm::generate::sampler::{self, Candidates};
use arlm::generate::{
    beam_search, sample_tokens, BeamConfig, Sampler, SamplerConfig, Session, Stage,
};
use arlm::model::{log_softmax_in_place, LanguageModel, ModelError};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A model whose next-token logits are a pseudo-random function of the whole context:
/// every prefix has its own distribution, so a sampler that ignores or mixes up the
/// context gets the joint distribution wrong.
#[derive(Clone)]
struct TableModel {
    vocab: usize,
    bos: u32,
    context: Option<usize>,
    spread: f32,
}

impl TableModel {
    fn row(&self, ctx: &[u32]) -> Vec<f32> {
        let mut h: u64 = 0xcbf29ce484222325;
        for &t in ctx {
            h = (h ^ (t as u64 + 1)).wrapping_mul(0x100000001b3);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(h);
        let mut row: Vec<f32> = (0..self.vocab)
            .map(|_| rng.random_range(-self.spread..self.spread))
            .collect();
        log_softmax_in_place(&mut row);
        row
    }
}

impl LanguageModel for TableModel {
    type State = Vec<u32>;
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn max_context(&self) -> Option<usize> {
        self.context
    }
    fn bos_token(&self) -> u32 {
        self.bos
    }
    fn describe(&self) -> String {
        "table".into()
    }
    fn new_state(&self) -> Vec<u32> {
        Vec::new()
    }
    fn feed(&self, state: &mut Vec<u32>, token: u32, out: &mut [f32]) -> Result<(), ModelError> {
        arlm::model::check_token(token, self.vocab)?;
        state.push(token);
        if let Some(c) = self.context {
            assert!(state.len() <= c, "context overflow: {} > {c}", state.len());
        }
        out.copy_from_slice(&self.row(state));
        Ok(())
    }
}

fn tiny() -> TableModel {
    TableModel {
        vocab: 4,
        bos: 3,
        context: None,
        spread: 1.5,
    }
}

/// Every outcome of generating up to `len` tokens that stops at `eot`.
fn outcomes(vocab: u32, eot: u32, len: usize) -> Vec<Vec<u32>> {
    let mut done = Vec::new();
    let mut frontier: Vec<Vec<u32>> = vec![vec![]];
    for step in 0..len {
        let mut next = Vec::new();
        for s in frontier {
            for t in 0..vocab {
                let mut c = s.clone();
                c.push(t);
                if t == eot || step + 1 == len {
                    done.push(c);
                } else {
                    next.push(c);
                }
            }
        }
        frontier = next;
    }
    done
}

/// log p(seq | BOS) by the chain rule through the scoring path.
fn joint(model: &TableModel, seq: &[u32]) -> f64 {
    let mut input = vec![model.bos];
    input.extend_from_slice(seq);
    model
        .score_next(&input)
        .unwrap()
        .iter()
        .map(|&x| x as f64)
        .sum()
}

#[test]
fn greedy_equals_hand_argmax_chain() {
    let m = TableModel {
        vocab: 7,
        bos: 6,
        context: None,
        spread: 3.0,
    };
    let prompt = [1u32, 4];
    let mut sampler = Sampler::new(SamplerConfig::greedy(), 7).unwrap();
    let got: Vec<u32> = sample_tokens(&m, &prompt, &mut sampler, 12, None)
        .unwrap()
        .iter()
        .map(|c| c.token)
        .collect();
    // By hand: recompute the full context's distribution at every step, take the argmax.
    let mut ctx = vec![6u32, 1, 4];
    let mut want = Vec::new();
    for _ in 0..12 {
        let row = m.row(&ctx);
        let best = (0..7)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
            .unwrap();
        want.push(best as u32);
        ctx.push(best as u32);
    }
    assert_eq!(got, want);
}

#[test]
fn temperature_to_zero_equals_greedy() {
    let m = TableModel {
        vocab: 7,
        bos: 6,
        context: None,
        spread: 3.0,
    };
    let mut g = Sampler::new(SamplerConfig::greedy(), 7).unwrap();
    let greedy: Vec<u32> = sample_tokens(&m, &[2], &mut g, 20, None)
        .unwrap()
        .iter()
        .map(|c| c.token)
        .collect();
    for seed in 0..5 {
        let cfg = SamplerConfig {
            temperature: 1e-3,
            ..SamplerConfig::pure(seed)
        };
        let mut s = Sampler::new(cfg, 7).unwrap();
        let cold: Vec<u32> = sample_tokens(&m, &[2], &mut s, 20, None)
            .unwrap()
            .iter()
            .map(|c| c.token)
            .collect();
        assert_eq!(cold, greedy, "seed {seed}");
    }
}

/// Pearson's chi-square of `n` samples drawn with `cfg` against the model's joint
/// distribution over all outcomes of up to 3 tokens.
fn chi_square(cfg: SamplerConfig, n: usize) -> f64 {
    let m = tiny();
    let outs = outcomes(4, 3, 3);
    assert_eq!(outs.len(), 40);
    let mut counts = std::collections::HashMap::new();
    let mut sampler = Sampler::new(cfg, 4).unwrap();
    for _ in 0..n {
        let toks: Vec<u32> = sample_tokens(&m, &[], &mut sampler, 3, Some(3))
            .unwrap()
            .iter()
            .map(|c| c.token)
            .collect();
        *counts.entry(toks).or_insert(0usize) += 1;
    }
    let total_p: f64 = outs.iter().map(|o| joint(&m, o).exp()).sum();
    assert!(
        (total_p - 1.0).abs() < 1e-5,
        "outcomes cover the space: {total_p}"
    );
    assert_eq!(
        counts.keys().filter(|k| !outs.contains(k)).count(),
        0,
        "sampled an impossible outcome"
    );
    outs.iter()
        .map(|o| {
            let e = joint(&m, o).exp() * n as f64;
            assert!(e >= 5.0, "expected count {e} too small for chi-square");
            let c = *counts.get(o).unwrap_or(&0) as f64;
            (c - e) * (c - e) / e
        })
        .sum()
}

/// chi-square 0.999 quantile at 39 degrees of freedom (40 outcomes), from the standard table.
const CHI2_999_DF39: f64 = 72.055;

#[test]
fn sampling_at_temperature_one_matches_the_joint_distribution() {
    let chi2 = chi_square(SamplerConfig::pure(7), 40_000);
    eprintln!("chi-square (temperature 1, n=40000, df=39): {chi2:.2} vs {CHI2_999_DF39}");
    assert!(chi2 < CHI2_999_DF39, "chi-square {chi2}");
    // The test has power: a slightly wrong sampler (temperature 1.15) fails it.
    let wrong = chi_square(
        SamplerConfig {
            temperature: 1.15,
            ..SamplerConfig::pure(7)
        },
        40_000,
    );
    eprintln!("chi-square of a wrong sampler (temperature 1.15): {wrong:.2}");
    assert!(wrong > CHI2_999_DF39, "wrong sampler passed: {wrong}");
}

#[test]
fn same_seed_same_output_different_seed_different_output() {
    let m = TableModel {
        vocab: 50,
        bos: 49,
        context: None,
        spread: 2.0,
    };
    let run = |seed| {
        let mut s = Sampler::new(SamplerConfig::pure(seed), 50).unwrap();
        sample_tokens(&m, &[1, 2], &mut s, 30, None)
            .unwrap()
            .iter()
            .map(|c| c.token)
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

fn random_row(rng: &mut ChaCha8Rng, v: usize) -> Vec<f32> {
    let mut row: Vec<f32> = (0..v).map(|_| rng.random_range(-3.0f32..3.0)).collect();
    log_softmax_in_place(&mut row);
    row
}

fn probs_of(row: &[f32]) -> Vec<f64> {
    let z: f64 = row.iter().map(|&l| (l as f64).exp()).sum();
    row.iter().map(|&l| (l as f64).exp() / z).collect()
}

/// (id, renormalized probability) sorted by id.
fn kept(c: &Candidates) -> Vec<(u32, f64)> {
    let mut v: Vec<(u32, f64)> = c.items.iter().map(|x| x.0).zip(c.probs()).collect();
    v.sort_by_key(|x| x.0);
    v
}

fn renormalize(p: &[f64], set: &[u32]) -> Vec<(u32, f64)> {
    let mut set = set.to_vec();
    set.sort();
    let z: f64 = set.iter().map(|&i| p[i as usize]).sum();
    set.iter().map(|&i| (i, p[i as usize] / z)).collect()
}

fn assert_same(a: &[(u32, f64)], b: &[(u32, f64)], what: &str) {
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "{what}: kept sets differ"
    );
    for (x, y) in a.iter().zip(b) {
        assert!((x.1 - y.1).abs() < 1e-6, "{what}: {x:?} vs {y:?}");
    }
}

#[test]
fn top_p_is_the_smallest_set_reaching_p_by_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let v = 10;
    for trial in 0..200 {
        let row = random_row(&mut rng, v);
        let p = probs_of(&row);
        let target = rng.random_range(0.05f32..1.0);
        // Brute force over all 2^V subsets: the smallest set with mass >= p (ties in size:
        // the one with the largest mass).
        let mut best: Option<(usize, f64, u32)> = None;
        for mask in 1u32..(1 << v) {
            let mass: f64 = (0..v).filter(|i| mask >> i & 1 == 1).map(|i| p[i]).sum();
            if mass < target as f64 {
                continue;
            }
            let size = mask.count_ones() as usize;
            let better = match best {
                None => true,
                Some((s, m, _)) => size < s || (size == s && mass > m),
            };
            if better {
                best = Some((size, mass, mask));
            }
        }
        let mask = best.unwrap().2;
        let set: Vec<u32> = (0..v as u32).filter(|i| mask >> i & 1 == 1).collect();
        let mut c = Candidates::from_logprobs(&row);
        sampler::top_p(&mut c, target, 1);
        assert_same(
            &kept(&c),
            &renormalize(&p, &set),
            &format!("top-p trial {trial}"),
        );
    }
}

#[test]
fn top_k_and_min_p_match_brute_force() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let v = 16;
    for trial in 0..200 {
        let row = random_row(&mut rng, v);
        let p = probs_of(&row);
        let k = rng.random_range(1..=v);
        // top-k: tokens with fewer than k tokens strictly more probable.
        let set: Vec<u32> = (0..v)
            .filter(|&i| (0..v).filter(|&j| p[j] > p[i]).count() < k)
            .map(|i| i as u32)
            .collect();
        let mut c = Candidates::from_logprobs(&row);
        sampler::top_k(&mut c, k);
        assert_same(
            &kept(&c),
            &renormalize(&p, &set),
            &format!("top-k trial {trial}"),
        );

        let mp = rng.random_range(0.0f32..1.0);
        let pmax = p.iter().cloned().fold(0.0, f64::max);
        let set: Vec<u32> = (0..v)
            .filter(|&i| p[i] >= mp as f64 * pmax)
            .map(|i| i as u32)
            .collect();
        let mut c = Candidates::from_logprobs(&row);
        sampler::min_p(&mut c, mp, 1);
        assert_same(
            &kept(&c),
            &renormalize(&p, &set),
            &format!("min-p trial {trial}"),
        );
    }
}

#[test]
fn typical_matches_its_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let v = 12;
    for trial in 0..100 {
        let row = random_row(&mut rng, v);
        let p = probs_of(&row);
        let tp = rng.random_range(0.05f32..1.0);
        let h: f64 = p.iter().map(|&q| -q * q.ln()).sum();
        let mut idx: Vec<usize> = (0..v).collect();
        idx.sort_by(|&a, &b| ((-p[a].ln() - h).abs()).total_cmp(&(-p[b].ln() - h).abs()));
        let mut cum = 0.0;
        let mut set = Vec::new();
        for i in idx {
            set.push(i as u32);
            cum += p[i];
            if cum >= tp as f64 {
                break;
            }
        }
        let mut c = Candidates::from_logprobs(&row);
        sampler::typical(&mut c, tp, 1);
        assert_same(
            &kept(&c),
            &renormalize(&p, &set),
            &format!("typical trial {trial}"),
        );
    }
}

#[test]
fn default_chain_equals_sequential_brute_force() {
    // top_k 5 -> top_p 0.8 -> min_p 0.1 -> temperature 0.7, each on the survivors.
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let v = 20;
    for trial in 0..100 {
        let row = random_row(&mut rng, v);
        let cfg = SamplerConfig {
            temperature: 0.7,
            top_k: 5,
            top_p: 0.8,
            min_p: 0.1,
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg, v).unwrap();
        let got = kept(s.filter(&row, &[]).unwrap());
        let p = probs_of(&row);
        let mut ids: Vec<usize> = (0..v).collect();
        ids.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        ids.truncate(5);
        let z: f64 = ids.iter().map(|&i| p[i]).sum();
        let mut cum = 0.0;
        let mut cut = ids.len();
        for (r, &i) in ids.iter().enumerate() {
            cum += p[i] / z;
            if cum >= 0.8 {
                cut = r + 1;
                break;
            }
        }
        ids.truncate(cut);
        let pmax = p[ids[0]];
        ids.retain(|&i| p[i] >= 0.1 * pmax);
        let z: f64 = ids.iter().map(|&i| p[i].powf(1.0 / 0.7)).sum();
        let mut want: Vec<(u32, f64)> = ids
            .iter()
            .map(|&i| (i as u32, p[i].powf(1.0 / 0.7) / z))
            .collect();
        want.sort_by_key(|x| x.0);
        assert_same(&got, &want, &format!("chain trial {trial}"));
        // And the draw reports its probability under that distribution.
        let ch = s.sample(&row, &[]).unwrap();
        let wp = want.iter().find(|x| x.0 == ch.token).unwrap().1;
        assert!((ch.logprob_sampler as f64 - wp.ln()).abs() < 1e-5);
        assert_eq!(ch.logprob_model, row[ch.token as usize]);
    }
}

#[test]
fn sampler_order_is_respected() {
    // temperature first, then top-p: a different kept set than top-p on temperature 1.
    let row: Vec<f32> = [0.5f64, 0.3, 0.15, 0.05]
        .iter()
        .map(|p| p.ln() as f32)
        .collect();
    let base = SamplerConfig {
        temperature: 3.0,
        top_p: 0.75,
        top_k: 0,
        min_p: 0.0,
        ..SamplerConfig::default()
    };
    let mut a = Sampler::new(base.clone(), 4).unwrap();
    assert_eq!(a.filter(&row, &[]).unwrap().items.len(), 2);
    let mut b = Sampler::new(
        SamplerConfig {
            order: vec![Stage::Temperature, Stage::TopP],
            ..base
        },
        4,
    )
    .unwrap();
    assert_eq!(b.filter(&row, &[]).unwrap().items.len(), 3);
}

fn best_by_enumeration(m: &TableModel, len: usize, alpha: f32) -> (Vec<u32>, f64, f64) {
    outcomes(m.vocab as u32, m.bos, len)
        .into_iter()
        .map(|o| {
            let lp = joint(m, &o);
            let s = length_penalized(lp, o.len(), alpha);
            (o, lp, s)
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .unwrap()
}

#[test]
fn full_width_beam_finds_the_enumeration_optimum_and_narrow_never_beats_it() {
    for (seed_spread, alpha) in [(1.5f32, 1.0f32), (2.5, 0.0), (1.0, 2.0), (3.0, -0.5)] {
        let m = TableModel {
            spread: seed_spread,
            ..tiny()
        };
        let (best, best_lp, best_score) = best_by_enumeration(&m, 4, alpha);
        let cfg = BeamConfig {
            num_beams: 256,
            num_return: 1,
            length_penalty: alpha,
            max_tokens: 4,
            eot: Some(m.bos),
        };
        let hyp = &beam_search(&m, &[], &cfg).unwrap()[0];
        assert_eq!(hyp.tokens, best, "alpha {alpha}");
        assert!((hyp.logprob - best_lp).abs() < 1e-4);
        assert!((hyp.score - best_score).abs() < 1e-4);
        for nb in 1..4 {
            let hyps = beam_search(
                &m,
                &[],
                &BeamConfig {
                    num_beams: nb,
                    num_return: nb,
                    ..cfg.clone()
                },
            )
            .unwrap();
            for h in hyps {
                // The reported log-prob is the model's, recomputed independently.
                let lp = joint(&m, &h.tokens);
                assert!((h.logprob - lp).abs() < 1e-4, "{} vs {lp}", h.logprob);
                assert!(h.score <= best_score + 1e-9, "beam {nb} beat the optimum");
            }
        }
    }
}

#[test]
fn beam_of_one_without_eot_is_greedy() {
    let m = TableModel {
        vocab: 9,
        bos: 8,
        context: None,
        spread: 2.0,
    };
    let mut g = Sampler::new(SamplerConfig::greedy(), 9).unwrap();
    let greedy: Vec<u32> = sample_tokens(&m, &[0], &mut g, 10, None)
        .unwrap()
        .iter()
        .map(|c| c.token)
        .collect();
    let cfg = BeamConfig {
        num_beams: 1,
        num_return: 1,
        length_penalty: 1.0,
        max_tokens: 10,
        eot: None,
    };
    assert_eq!(beam_search(&m, &[0], &cfg).unwrap()[0].tokens, greedy);
}

#[test]
fn past_the_context_the_window_slides_and_never_crashes() {
    let m = TableModel {
        vocab: 5,
        bos: 4,
        context: Some(6),
        spread: 2.0,
    };
    // A prompt longer than the window, then 40 tokens: the model asserts it never sees
    // more than 6 tokens.
    let prompt: Vec<u32> = (0..15).map(|i| i % 4).collect();
    let mut s = Sampler::new(SamplerConfig::pure(1), 5).unwrap();
    let out = sample_tokens(&m, &prompt, &mut s, 40, None).unwrap();
    assert_eq!(out.len(), 40);
    // The documented policy: after a slide the state is BOS + the last (C-1)/2 + 1 tokens.
    let mut sess = Session::new(&m, &prompt).unwrap();
    assert_eq!(sess.slides(), 1);
    assert_eq!(sess.logprobs(), m.row(&[4, 0, 1, 2]).as_slice());
    for t in [0u32, 1, 2] {
        sess.push(t).unwrap();
    }
    // Context was BOS 0 1 2 0 1 (6 = full); pushing 2 slides to BOS + the last 3 tokens.
    assert_eq!(sess.slides(), 2);
    assert_eq!(sess.logprobs(), m.row(&[4, 0, 1, 2]).as_slice());
}

#[test]
fn penalties_use_the_recent_window_only() {
    let row: Vec<f32> = [0.4f64, 0.3, 0.2, 0.1]
        .iter()
        .map(|p| p.ln() as f32)
        .collect();
    let cfg = SamplerConfig {
        repeat_penalty: 100.0,
        penalty_last_n: 2,
        ..SamplerConfig::greedy()
    };
    let mut s = Sampler::new(cfg, 4).unwrap();
    // 0 is outside the last 2 tokens: still chosen.
    assert_eq!(s.sample(&row, &[0, 1, 2]).unwrap().token, 0);
    // 0 inside the window [2, 0]: penalized away; 1 is the best unpenalized token.
    assert_eq!(s.sample(&row, &[1, 2, 0]).unwrap().token, 1);
}
