//! Interpolated modified Kneser-Ney (Chen & Goodman 1998), estimated as KenLM's `lmplz` does.
//!
//! # Algorithm (one pass over the corpus, then work proportional to the number of n-grams)
//! 1. Counting. Each sentence is `<s> w1 .. wk </s>`; at every position the longest n-gram
//!    ending there (at most `order` words, never reaching left of `<s>`) is counted once.
//!    This equals lmplz's padding with `order - 1` `<s>` followed by collapsing `<s> <s> ..`.
//! 2. Adjusted counts, top down. The highest order keeps raw counts; an n-gram of a lower
//!    order gets its continuation count N1+(. w2..wn) (the number of distinct (n+1)-grams
//!    it is the suffix of), except n-grams starting with `<s>`, which keep raw counts.
//! 3. Discounts per order from the count-of-counts n1..n4 of the adjusted counts:
//!    Y = n1 / (n1 + 2 n2), D_k = k - (k + 1) Y n_{k+1} / n_k (k = 1, 2, 3+), in f32.
//!    KenLM quirk (reproduced unless `kenlm_quirk` is false): for every order below the
//!    highest, the last n-gram in suffix-sorted order (compare the last word's id first)
//!    enters n1..n4 with its raw count instead of its adjusted count. It changes PTB's
//!    unigram D3+ from 1.26227 to KenLM's 1.26492.
//! 4. Probabilities, bottom up: p(w|h) = (a(hw) - D(a(hw))) / sum_x a(hx) + gamma(h) p(w|h'),
//!    gamma(h) = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / sum_x a(hx); the unigram level
//!    interpolates with the uniform distribution over the vocabulary without `<s>` (so
//!    `<unk>`, never seen, gets gamma/|V|). `<s>` is never predicted (log10 prob 0 in the
//!    ARPA, as lmplz writes it; the query side gives it probability 0).
//! 5. The result is stored in ARPA form: each n-gram's interpolated log10 p and, for each
//!    context, log10 gamma as its backoff, so scoring is plain backoff ([`super::backoff`]).
//!
//! # Performance notes
//! n-grams are u128 keys (packed ids) in FxHash maps, one per order; no sorting is needed
//! except for writing a deterministic ARPA. Everything is in memory at once (WikiText-2
//! 5-gram: 542 MB peak with the model files written), so `arlm ngram fit` runs the same
//! algorithm as sorted streams within a budget instead ([`super::streamed`], byte-identical
//! output); this module is the reference it is tested against, and what the library's
//! in-memory [`super::store::fit_kn`] uses.

use super::{NgramError, Packer, MAX_ORDER};
use rustc_hash::FxHashMap;

/// Estimation settings.
#[derive(Debug, Clone)]
pub struct KnOptions {
    /// n-gram order (1..=MAX_ORDER).
    pub order: usize,
    /// Reproduce lmplz's count-of-counts quirk (see the module doc).
    pub kenlm_quirk: bool,
    /// Discounts (D1, D2, D3+) used for every order whose discounts cannot be estimated.
    pub discount_fallback: Option<[f32; 3]>,
}

impl KnOptions {
    /// KenLM-compatible defaults for `order`.
    pub fn new(order: usize) -> KnOptions {
        KnOptions {
            order,
            kenlm_quirk: true,
            discount_fallback: None,
        }
    }
}

/// An n-gram model in ARPA form: per order, sorted keys with log10 probabilities and
/// log10 backoffs. What [`super::arpa`] reads and writes and [`super::backoff`] queries.
#[derive(Debug, Clone)]
pub struct ArpaGrams {
    /// Number of ids the keys use (the tokenizer vocabulary, plus one for a virtual start).
    pub n_ids: usize,
    /// Packing of the keys.
    pub packer: Packer,
    /// `orders[n - 1]`: the n-grams of order n.
    pub orders: Vec<OrderGrams>,
}

/// The n-grams of one order.
#[derive(Debug, Clone, Default)]
pub struct OrderGrams {
    /// Packed ids, ascending.
    pub keys: Vec<u128>,
    /// log10 p(w | h).
    pub probs: Vec<f32>,
    /// log10 backoff weight when this n-gram is a context (0 otherwise).
    pub backoffs: Vec<f32>,
}

impl ArpaGrams {
    /// The model's order.
    pub fn order(&self) -> usize {
        self.orders.len()
    }
}

/// The discounts of one order.
pub type Discounts = [f32; 3];

/// Counts n-grams sentence by sentence (step 1), then estimates the model.
pub struct KnCounter {
    order: usize,
    n_ids: usize,
    packer: Packer,
    start: u32,
    tables: Vec<FxHashMap<u128, u32>>,
    tokens: u64,
}

impl KnCounter {
    /// A counter for `order`-grams over ids below `n_ids`; `start` is the `<s>` id.
    pub fn new(order: usize, n_ids: usize, start: u32) -> Result<KnCounter, NgramError> {
        if order == 0 || order > MAX_ORDER {
            return Err(NgramError::Order {
                order,
                max: MAX_ORDER,
            });
        }
        Ok(KnCounter {
            order,
            n_ids,
            packer: Packer::new(n_ids, order)?,
            start,
            tables: vec![FxHashMap::default(); order],
            tokens: 0,
        })
    }

    /// Counts one sentence (its words, ending with the end-of-sentence id).
    pub fn add_sentence(&mut self, sentence: &[u32]) {
        let n = self.order;
        let bits = self.packer.bits;
        let mut key: u128 = self.start as u128;
        let mut len = 1usize;
        for &w in sentence {
            key = self.packer.suffix((key << bits) | w as u128, n);
            len = (len + 1).min(n);
            *self.tables[len - 1].entry(key).or_insert(0) += 1;
        }
        self.tokens += sentence.len() as u64;
    }

    /// Number of tokens counted (words and end-of-sentence ids).
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Estimates the model. `n_ids` ids exist; `start` is not predicted; `always` lists ids
    /// that must be in the vocabulary even if unseen (`<unk>`, as lmplz adds it).
    pub fn estimate(
        mut self,
        opts: &KnOptions,
        always: &[u32],
    ) -> Result<(ArpaGrams, Vec<Discounts>), NgramError> {
        let n = self.order;
        let p = self.packer;
        if self.tokens == 0 {
            return Err(NgramError::EmptyCorpus);
        }
        // Step 2: continuation counts, top down.
        for m in (1..n).rev() {
            let (lo, hi) = self.tables.split_at_mut(m);
            let lower = &mut lo[m - 1];
            lower.reserve(hi[0].len() / 2);
            for &key in hi[0].keys() {
                *lower.entry(p.suffix(key, m)).or_insert(0) += 1;
            }
        }
        for &id in always {
            if id != self.start {
                self.tables[0].entry(id as u128).or_insert(0);
            }
        }
        self.tables[0].remove(&(self.start as u128));

        // Step 3: discounts.
        let mut discounts = Vec::with_capacity(n);
        for m in 1..=n {
            let mut nk = [0u64; 4];
            for &c in self.tables[m - 1].values() {
                if (1..=4).contains(&c) {
                    nk[c as usize - 1] += 1;
                }
            }
            if opts.kenlm_quirk && m < n {
                if let Some(last) = self.last_in_suffix_order(m) {
                    let adjusted = self.tables[m - 1][&last];
                    let raw = self.raw_count(last, m);
                    for (c, d) in [(adjusted, -1i64), (raw, 1)] {
                        if (1..=4).contains(&c) {
                            nk[c as usize - 1] = (nk[c as usize - 1] as i64 + d) as u64;
                        }
                    }
                }
            }
            discounts.push(discount(m, nk, opts.discount_fallback)?);
        }

        // Step 4: probabilities, bottom up.
        let vocab_types = self.tables[0].len() as f64; // without <s>
        let mut orders: Vec<OrderGrams> = Vec::with_capacity(n);
        let mut lower_probs: FxHashMap<u128, f32> = FxHashMap::default();
        for m in 1..=n {
            let d = discounts[m - 1];
            let table = std::mem::take(&mut self.tables[m - 1]);
            // Per-context sums and N1/N2/N3+ for this order.
            let mut ctx: FxHashMap<u128, [u64; 4]> = FxHashMap::default();
            for (&key, &c) in &table {
                let s = ctx.entry(key >> p.bits).or_insert([0; 4]);
                s[0] += c as u64;
                if c > 0 {
                    s[(c as usize).min(3)] += 1;
                }
            }
            let gamma_of = |s: &[u64; 4]| -> f64 {
                (d[0] as f64 * s[1] as f64 + d[1] as f64 * s[2] as f64 + d[2] as f64 * s[3] as f64)
                    / s[0] as f64
            };
            // Backoffs of the previous order are this order's gammas.
            if m > 1 {
                let prev = &mut orders[m - 2];
                for (i, &k) in prev.keys.iter().enumerate() {
                    if let Some(s) = ctx.get(&k) {
                        prev.backoffs[i] = gamma_of(s).log10() as f32;
                    }
                }
            }
            let mut keys: Vec<u128> = table.keys().copied().collect();
            keys.sort_unstable();
            let mut probs = Vec::with_capacity(keys.len());
            let mut this_probs: FxHashMap<u128, f32> = FxHashMap::default();
            if m < n {
                this_probs.reserve(keys.len());
            }
            for &key in &keys {
                let c = table[&key];
                let s = &ctx[&(key >> p.bits)];
                let dc = if c == 0 {
                    0.0
                } else {
                    d[(c as usize).min(3) - 1] as f64
                };
                let u = (c as f64 - dc) / s[0] as f64;
                let lower = if m == 1 {
                    1.0 / vocab_types
                } else {
                    10f64.powf(lower_probs[&p.suffix(key, m - 1)] as f64)
                };
                let prob = (u + gamma_of(s) * lower).log10() as f32;
                probs.push(prob);
                if m < n {
                    this_probs.insert(key, prob);
                }
            }
            lower_probs = this_probs;
            if m == 1 && n > 1 {
                // <s>: in the vocabulary, never predicted (lmplz writes log10 p = 0); its
                // backoff is set with the bigrams' gammas.
                let pos = keys.partition_point(|&k| k < self.start as u128);
                keys.insert(pos, self.start as u128);
                probs.insert(pos, 0.0);
            }
            let len = keys.len();
            orders.push(OrderGrams {
                keys,
                probs,
                backoffs: vec![0.0; len],
            });
        }
        Ok((
            ArpaGrams {
                n_ids: self.n_ids,
                packer: p,
                orders,
            },
            discounts,
        ))
    }

    /// The last n-gram of order `m` in suffix order (last word first, then the one before).
    fn last_in_suffix_order(&self, m: usize) -> Option<u128> {
        let p = self.packer;
        let rev = |key: u128| p.pack(&p.unpack(key, m).into_iter().rev().collect::<Vec<_>>());
        self.tables[m - 1].keys().copied().max_by_key(|&k| rev(k))
    }

    /// How often `key` (order `m`) occurs in the corpus: the longest counted n-grams are
    /// the order-`order` ones and the `<s>`-initial lower-order ones, which keep raw counts.
    fn raw_count(&self, key: u128, m: usize) -> u32 {
        let p = self.packer;
        let mut total = 0;
        for (i, t) in self.tables.iter().enumerate().skip(m - 1) {
            let len = i + 1;
            for (&k, &c) in t {
                let raw = len == self.order || p.first(k, len) == self.start;
                if raw && p.suffix(k, m) == key {
                    total += c;
                }
            }
        }
        total
    }
}

/// Chen & Goodman's discounts for order `m` from n1..n4, as lmplz computes them (f32).
pub fn discount(
    m: usize,
    nk: [u64; 4],
    fallback: Option<[f32; 3]>,
) -> Result<Discounts, NgramError> {
    let fail = |k: usize, reason: String| -> Result<Discounts, NgramError> {
        match fallback {
            Some(f) => Ok(f),
            None => Err(NgramError::Discount {
                order: m,
                k,
                reason,
                counts: nk,
            }),
        }
    };
    for (k, &c) in nk.iter().enumerate() {
        if c == 0 {
            return fail(
                k.min(2) + 1,
                format!("no n-grams have adjusted count {}", k + 1),
            );
        }
    }
    let f = nk.map(|c| c as f32);
    let y = f[0] / (f[0] + 2.0 * f[1]);
    let mut d = [0f32; 3];
    for k in 0..3 {
        let kk = (k + 1) as f32;
        d[k] = kk - (kk + 1.0) * y * f[k + 1] / f[k];
        if !(d[k] > 0.0 && d[k] < kk) {
            return fail(
                k + 1,
                format!("D{} = {} is outside (0, {})", k + 1, d[k], k + 1),
            );
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conformance::check_model;
    use crate::model::ngram::backoff::BackoffModel;
    use crate::model::LanguageModel;

    /// A small corpus over ids 0..8 (<unk>=0, <s>=1, </s>=2) with a skewed distribution.
    fn corpus() -> Vec<Vec<u32>> {
        let mut state = 12345u64;
        let mut out = Vec::new();
        for _ in 0..300 {
            let mut s = Vec::new();
            loop {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (state >> 33) % 100;
                let w = match r {
                    0..=29 => 3,
                    30..=49 => 4,
                    50..=64 => 5,
                    65..=74 => 6,
                    75..=81 => 7,
                    _ => 2,
                };
                s.push(w);
                if w == 2 {
                    break;
                }
            }
            out.push(s);
        }
        out
    }

    fn fit(order: usize) -> (ArpaGrams, Vec<Discounts>) {
        let mut c = KnCounter::new(order, 9, 1).unwrap();
        for s in corpus() {
            c.add_sentence(&s);
        }
        let mut opts = KnOptions::new(order);
        opts.discount_fallback = Some([0.5, 1.0, 1.5]);
        c.estimate(&opts, &(0..9).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn distributions_sum_to_one_and_paths_agree() {
        for order in 1..=4 {
            let (g, _) = fit(order);
            let m = BackoffModel::new(&g, 9, 1, 2, 0, "test".into()).unwrap();
            check_model(&m, &[2, 3, 4, 3, 5, 2, 6, 7, 8, 0, 3, 2, 3], 1e-5);
            // <s> is never predicted.
            let lp = m.score_next(&[2, 3]).unwrap();
            assert!(lp[0].is_finite());
            let mut st = m.new_state();
            let mut row = vec![0f32; 9];
            m.feed(&mut st, 2, &mut row).unwrap();
            assert_eq!(row[1], crate::model::ngram::NEVER);
        }
    }

    #[test]
    fn interpolation_matches_the_formula_by_hand() {
        // Bigram: p(w | h) = (c(hw) - D(c)) / c(h.) + gamma(h) p1(w), with brute-force counts.
        let (g, d) = fit(2);
        let sents = corpus();
        let m = BackoffModel::new(&g, 9, 1, 2, 0, "test".into()).unwrap();
        // Raw bigram counts and continuation unigram counts.
        let mut bi = std::collections::BTreeMap::<(u32, u32), u64>::new();
        for s in &sents {
            let mut prev = 1;
            for &w in s {
                *bi.entry((prev, w)).or_insert(0) += 1;
                prev = w;
            }
        }
        let mut cont = [0u64; 9];
        for &(_, w) in bi.keys() {
            cont[w as usize] += 1;
        }
        let d1 = d[0];
        let total: u64 = cont.iter().sum();
        let (mut n1, mut n2, mut n3) = (0, 0, 0);
        for &c in &cont {
            match c {
                0 => {}
                1 => n1 += 1,
                2 => n2 += 1,
                _ => n3 += 1,
            }
        }
        let disc = |dd: &[f32; 3], c: u64| {
            if c == 0 {
                0.0
            } else {
                dd[(c as usize).min(3) - 1] as f64
            }
        };
        let gamma1 =
            (d1[0] as f64 * n1 as f64 + d1[1] as f64 * n2 as f64 + d1[2] as f64 * n3 as f64)
                / total as f64;
        let p1 = |w: usize| (cont[w] as f64 - disc(&d1, cont[w])) / total as f64 + gamma1 / 8.0;
        for h in [1u32, 3, 5, 7] {
            let row: Vec<(u32, u64)> = bi
                .iter()
                .filter(|((a, _), _)| *a == h)
                .map(|((_, b), &c)| (*b, c))
                .collect();
            let sum: u64 = row.iter().map(|r| r.1).sum();
            let mut nk = [0u64; 3];
            for &(_, c) in &row {
                nk[(c as usize).min(3) - 1] += 1;
            }
            let d2 = d[1];
            let gamma = (0..3).map(|i| d2[i] as f64 * nk[i] as f64).sum::<f64>() / sum as f64;
            for w in [0u32, 2, 3, 4, 8] {
                let c = row.iter().find(|r| r.0 == w).map_or(0, |r| r.1);
                let want = (c as f64 - disc(&d2, c)) / sum as f64 + gamma * p1(w as usize);
                let lp = m.score_next(&[2, h, w]);
                let got = if h == 1 {
                    m.score_next(&[2, w]).unwrap()[0]
                } else {
                    lp.unwrap()[1]
                };
                assert!(
                    (got as f64 - want.ln()).abs() < 1e-5,
                    "p({w} | {h}): {} vs {}",
                    got.exp(),
                    want
                );
            }
        }
    }

    #[test]
    fn discounts_fail_clearly_on_tiny_data() {
        let mut c = KnCounter::new(3, 9, 1).unwrap();
        c.add_sentence(&[3, 4, 2]);
        let err = c.estimate(&KnOptions::new(3), &[0]).unwrap_err();
        assert!(matches!(err, NgramError::Discount { .. }), "{err}");
        assert!(err.to_string().contains("--discount-fallback"));
        let c = KnCounter::new(3, 9, 1).unwrap();
        assert!(matches!(
            c.estimate(&KnOptions::new(3), &[0]),
            Err(NgramError::EmptyCorpus)
        ));
    }

    #[test]
    fn discount_formula() {
        // Y = 100 / (100 + 2*40) = 0.5556; D1 = 1 - 2 Y 40/100.
        let d = discount(1, [100, 40, 20, 10], None).unwrap();
        let y = 100.0f32 / 180.0;
        assert!((d[0] - (1.0 - 2.0 * y * 0.4)).abs() < 1e-6);
        assert!((d[1] - (2.0 - 3.0 * y * 0.5)).abs() < 1e-6);
        assert!((d[2] - (3.0 - 4.0 * y * 0.5)).abs() < 1e-6);
    }
}
