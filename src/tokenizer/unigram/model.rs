//! The Unigram language model over pieces (Kudo 2018): every piece has a log-probability
//! (its score), a segmentation of a string has the sum of its pieces' scores, and the
//! segmentations of one string form a lattice (a DAG over its character boundaries).
//!
//! On that lattice: [`UnigramModel::viterbi`] (the best segmentation, tie-broken exactly
//! as Hugging Face `tokenizers` does, so ids match its files), [`UnigramModel::log_z`]
//! (the forward algorithm's normaliser, a log-sum-exp over all segmentations),
//! [`UnigramModel::sample`] (subword regularization: forward filtering, backward
//! sampling, exact samples from p(seg) ∝ exp(alpha * score(seg))),
//! [`UnigramModel::nbest`] (the n best segmentations, exact k-best dynamic programming),
//! and [`UnigramModel::expected_counts`] (forward-backward marginals, for training).
//!
//! A character no piece covers becomes an unknown edge with score `min_score - 10`
//! (as `tokenizers` and SentencePiece do); adjacent unknowns are fused into one span.
//! Scores are f64 and added in f64, as `tokenizers` adds them (ties then break the same).

use rand::Rng;

/// What `tokenizers` subtracts from the lowest piece score to score an unknown character.
pub const UNK_PENALTY: f64 = 10.0;

/// A byte trie over the pieces: `common_prefixes` walks one string position's matches.
#[derive(Debug, Clone, Default)]
struct Trie {
    /// Per node: the piece id ending here (`u32::MAX`: none) and its children sorted by byte.
    values: Vec<u32>,
    children: Vec<Vec<(u8, u32)>>,
}

impl Trie {
    fn new() -> Trie {
        Trie {
            values: vec![u32::MAX],
            children: vec![Vec::new()],
        }
    }

    fn insert(&mut self, key: &[u8], id: u32) {
        let mut node = 0usize;
        for &b in key {
            node = match self.children[node].binary_search_by_key(&b, |c| c.0) {
                Ok(i) => self.children[node][i].1 as usize,
                Err(i) => {
                    let next = self.values.len() as u32;
                    self.values.push(u32::MAX);
                    self.children.push(Vec::new());
                    self.children[node].insert(i, (b, next));
                    next as usize
                }
            };
        }
        self.values[node] = id;
    }

    /// Calls `f(len, id)` for every piece that is a prefix of `s`, shortest first.
    #[inline]
    fn common_prefixes(&self, s: &[u8], mut f: impl FnMut(usize, u32)) {
        let mut node = 0usize;
        for (i, &b) in s.iter().enumerate() {
            let ch = &self.children[node];
            node = match ch.binary_search_by_key(&b, |c| c.0) {
                Ok(k) => ch[k].1 as usize,
                Err(_) => return,
            };
            let v = self.values[node];
            if v != u32::MAX {
                f(i + 1, v);
            }
        }
    }
}

/// One edge of a lattice: the piece `id` covering bytes `start..end` with `score`
/// (`id == None`: an unknown character).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    pub start: usize,
    pub end: usize,
    pub id: Option<u32>,
    pub score: f64,
}

/// One segmentation: its spans (byte ranges of the string, piece id or unknown) and the
/// sum of their scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Segmentation {
    pub spans: Vec<(usize, usize, Option<u32>)>,
    pub score: f64,
}

/// Pieces with scores and the lattice algorithms over them.
#[derive(Debug, Clone)]
pub struct UnigramModel {
    pieces: Vec<String>,
    scores: Vec<f64>,
    trie: Trie,
    unk_score: f64,
}

impl UnigramModel {
    /// A model over `pieces` (id = index). Pieces with `in_lattice[id] == false` (special
    /// tokens) keep their id but never match text.
    pub fn new(pieces: Vec<(String, f64)>, in_lattice: &[bool]) -> UnigramModel {
        let mut trie = Trie::new();
        let mut min_score = f64::INFINITY;
        for (id, (p, s)) in pieces.iter().enumerate() {
            min_score = min_score.min(*s);
            if in_lattice.get(id).copied().unwrap_or(true) && !p.is_empty() {
                trie.insert(p.as_bytes(), id as u32);
            }
        }
        if !min_score.is_finite() {
            min_score = 0.0;
        }
        let (pieces, scores) = pieces.into_iter().unzip();
        UnigramModel {
            pieces,
            scores,
            trie,
            unk_score: min_score - UNK_PENALTY,
        }
    }

    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }
    pub fn scores(&self) -> &[f64] {
        &self.scores
    }
    pub fn len(&self) -> usize {
        self.pieces.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
    /// The score an unknown character's edge gets.
    pub fn unk_score(&self) -> f64 {
        self.unk_score
    }

    /// Every edge of `s`'s lattice, grouped by start byte (`out[start]`), in the order
    /// Viterbi visits them: shortest piece first, then the unknown edge when no piece
    /// covers exactly the character at `start`.
    pub fn lattice(&self, s: &str) -> Vec<Vec<Edge>> {
        let bytes = s.as_bytes();
        let mut out = vec![Vec::new(); bytes.len() + 1];
        for (start, ch) in s.char_indices() {
            let mblen = ch.len_utf8();
            let mut single = false;
            self.trie.common_prefixes(&bytes[start..], |len, id| {
                single |= len == mblen;
                out[start].push(Edge {
                    start,
                    end: start + len,
                    id: Some(id),
                    score: self.scores[id as usize],
                });
            });
            if !single {
                out[start].push(Edge {
                    start,
                    end: start + mblen,
                    id: None,
                    score: self.unk_score,
                });
            }
        }
        out
    }

    /// The best segmentation of `s` (empty for empty `s`). Ties go to the candidate seen
    /// first (earliest start, then shortest piece), as in `tokenizers`' `encode_optimized`.
    pub fn viterbi(&self, s: &str) -> Vec<(usize, usize, Option<u32>)> {
        let bytes = s.as_bytes();
        let n = bytes.len();
        // Per end byte: best score so far, its start byte (usize::MAX: unreached), its id.
        let mut best_score = vec![0.0f64; n + 1];
        let mut best_start = vec![usize::MAX; n + 1];
        let mut best_id = vec![u32::MAX; n + 1];
        best_start[0] = 0;
        for (start, ch) in s.char_indices() {
            let here = best_score[start];
            let mblen = ch.len_utf8();
            let mut single = false;
            self.trie.common_prefixes(&bytes[start..], |len, id| {
                single |= len == mblen;
                let end = start + len;
                let cand = here + self.scores[id as usize];
                if best_start[end] == usize::MAX || cand > best_score[end] {
                    best_score[end] = cand;
                    best_start[end] = start;
                    best_id[end] = id;
                }
            });
            if !single {
                let end = start + mblen;
                let cand = here + self.unk_score;
                if best_start[end] == usize::MAX || cand > best_score[end] {
                    best_score[end] = cand;
                    best_start[end] = start;
                    best_id[end] = u32::MAX;
                }
            }
        }
        let mut spans = Vec::new();
        let mut end = n;
        while end > 0 {
            let start = best_start[end];
            let id = (best_id[end] != u32::MAX).then_some(best_id[end]);
            spans.push((start, end, id));
            end = start;
        }
        spans.reverse();
        fuse_unknowns(spans)
    }

    /// log Σ_seg exp(alpha * score(seg)) over all segmentations of `s` (0 for empty `s`).
    pub fn log_z(&self, s: &str, alpha: f64) -> f64 {
        let lattice = self.lattice(s);
        forward(&lattice, s.len(), alpha)[s.len()]
    }

    /// A segmentation drawn from p(seg) = exp(alpha * score(seg)) / Z(alpha): forward
    /// log-sums to every boundary, then pieces drawn backwards from the end, each edge
    /// ending at the current boundary with probability `exp(fwd[start] + alpha*score - fwd[end])`.
    pub fn sample(
        &self,
        s: &str,
        alpha: f64,
        rng: &mut impl Rng,
    ) -> Vec<(usize, usize, Option<u32>)> {
        let n = s.len();
        let lattice = self.lattice(s);
        let fwd = forward(&lattice, n, alpha);
        let mut ending: Vec<Vec<Edge>> = vec![Vec::new(); n + 1];
        for e in lattice.iter().flatten() {
            ending[e.end].push(*e);
        }
        let mut spans = Vec::new();
        let mut end = n;
        while end > 0 {
            let edges = &ending[end];
            let u: f64 = rng.random::<f64>();
            let mut acc = 0.0;
            let mut pick = edges[edges.len() - 1];
            for e in edges {
                acc += (fwd[e.start] + alpha * e.score - fwd[end]).exp();
                if u < acc {
                    pick = *e;
                    break;
                }
            }
            spans.push((pick.start, pick.end, pick.id));
            end = pick.start;
        }
        spans.reverse();
        fuse_unknowns(spans)
    }

    /// The `n` best segmentations of `s`, best first (exact: every boundary keeps its `n`
    /// best partial paths, which contain the `n` best prefixes of any path through it).
    pub fn nbest(&self, s: &str, n: usize) -> Vec<Segmentation> {
        let len = s.len();
        if n == 0 {
            return Vec::new();
        }
        let lattice = self.lattice(s);
        // Per boundary: (score, edge, rank of the partial path at edge.start), best first.
        let mut kept: Vec<Vec<(f64, Edge, usize)>> = vec![Vec::new(); len + 1];
        let mut incoming: Vec<Vec<Edge>> = vec![Vec::new(); len + 1];
        for e in lattice.iter().flatten() {
            incoming[e.end].push(*e);
        }
        for end in 1..=len {
            let mut cands = Vec::new();
            for e in &incoming[end] {
                if e.start == 0 {
                    cands.push((e.score, *e, 0));
                } else {
                    for (rank, (sc, _, _)) in kept[e.start].iter().enumerate() {
                        cands.push((sc + e.score, *e, rank));
                    }
                }
            }
            cands.sort_by(|a, b| b.0.total_cmp(&a.0));
            cands.truncate(n);
            kept[end] = cands;
        }
        if len == 0 {
            return vec![Segmentation {
                spans: Vec::new(),
                score: 0.0,
            }];
        }
        (0..kept[len].len())
            .map(|rank| {
                let score = kept[len][rank].0;
                let mut spans = Vec::new();
                let (mut end, mut r) = (len, rank);
                while end > 0 {
                    let (_, e, prev) = kept[end][r];
                    spans.push((e.start, e.end, e.id));
                    end = e.start;
                    r = prev;
                }
                spans.reverse();
                Segmentation { spans, score }
            })
            .collect()
    }

    /// Adds `weight` times the expected count of every piece in `s`'s segmentations
    /// (forward-backward marginals under p(seg) ∝ exp(score)) to `counts`, and returns
    /// log Z(s). Unknown edges count nowhere.
    pub fn expected_counts(&self, s: &str, weight: f64, counts: &mut [f64]) -> f64 {
        let n = s.len();
        let lattice = self.lattice(s);
        let fwd = forward(&lattice, n, 1.0);
        let mut bwd = vec![f64::NEG_INFINITY; n + 1];
        bwd[n] = 0.0;
        for start in (0..n).rev() {
            let mut acc = LogSum::new();
            for e in &lattice[start] {
                acc.add(e.score + bwd[e.end]);
            }
            bwd[start] = acc.get();
        }
        let log_z = fwd[n];
        for e in lattice.iter().flatten() {
            if let Some(id) = e.id {
                let lp = fwd[e.start] + e.score + bwd[e.end] - log_z;
                counts[id as usize] += weight * lp.exp();
            }
        }
        log_z
    }
}

/// Forward log-sums: `fwd[b]` = log Σ over partial segmentations of bytes 0..b of
/// exp(alpha * score) (−∞ at non-boundaries).
fn forward(lattice: &[Vec<Edge>], n: usize, alpha: f64) -> Vec<f64> {
    let mut fwd = vec![f64::NEG_INFINITY; n + 1];
    let mut sums: Vec<LogSum> = vec![LogSum::new(); n + 1];
    fwd[0] = 0.0;
    for start in 0..n {
        if start > 0 {
            fwd[start] = sums[start].get();
        }
        if fwd[start] == f64::NEG_INFINITY {
            continue;
        }
        for e in &lattice[start] {
            sums[e.end].add(fwd[start] + alpha * e.score);
        }
    }
    if n > 0 {
        fwd[n] = sums[n].get();
    }
    fwd
}

/// A running log-sum-exp (max-shifted, so no term overflows or underflows alone).
#[derive(Debug, Clone, Copy)]
struct LogSum {
    max: f64,
    sum: f64,
}

impl LogSum {
    fn new() -> LogSum {
        LogSum {
            max: f64::NEG_INFINITY,
            sum: 0.0,
        }
    }
    fn add(&mut self, x: f64) {
        if x == f64::NEG_INFINITY {
            return;
        }
        if x > self.max {
            self.sum = self.sum * (self.max - x).exp() + 1.0;
            self.max = x;
        } else {
            self.sum += (x - self.max).exp();
        }
    }
    fn get(&self) -> f64 {
        if self.max == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            self.max + self.sum.ln()
        }
    }
}

/// Merges runs of adjacent unknown spans into one (as `tokenizers`' `fuse_unk`).
fn fuse_unknowns(spans: Vec<(usize, usize, Option<u32>)>) -> Vec<(usize, usize, Option<u32>)> {
    let mut out: Vec<(usize, usize, Option<u32>)> = Vec::with_capacity(spans.len());
    for sp in spans {
        match out.last_mut() {
            Some(last) if last.2.is_none() && sp.2.is_none() => last.1 = sp.1,
            _ => out.push(sp),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn model() -> UnigramModel {
        let pieces = [
            ("a", -1.0),
            ("b", -2.0),
            ("c", -2.5),
            ("ab", -2.2),
            ("bc", -2.9),
            ("abc", -4.0),
            ("ca", -3.1),
            ("é", -3.0),
        ];
        let v: Vec<(String, f64)> = pieces.iter().map(|(p, s)| (p.to_string(), *s)).collect();
        UnigramModel::new(v, &[])
    }

    /// Every segmentation of `s` by brute force: (spans, score).
    fn all_segmentations(m: &UnigramModel, s: &str) -> Vec<Segmentation> {
        if s.is_empty() {
            return vec![Segmentation {
                spans: vec![],
                score: 0.0,
            }];
        }
        let mut out = Vec::new();
        let first: Vec<Edge> = m.lattice(s)[0].clone();
        for e in first {
            for rest in all_segmentations(m, &s[e.end..]) {
                let mut spans = vec![(0, e.end, e.id)];
                spans.extend(
                    rest.spans
                        .iter()
                        .map(|&(a, b, id)| (a + e.end, b + e.end, id)),
                );
                out.push(Segmentation {
                    spans,
                    score: e.score + rest.score,
                });
            }
        }
        out
    }

    #[test]
    fn viterbi_nbest_and_normaliser_match_brute_force() {
        let m = model();
        for s in ["abcab", "abcabcca", "cabbé", "axb", "a"] {
            let mut all = all_segmentations(&m, s);
            all.sort_by(|a, b| b.score.total_cmp(&a.score));
            let best = m.nbest(s, 1000);
            assert_eq!(best.len(), all.len(), "{s}");
            for (x, y) in best.iter().zip(&all) {
                assert!((x.score - y.score).abs() < 1e-12, "{s}");
            }
            let v = m.viterbi(s);
            let v_score: f64 = v
                .iter()
                .map(|&(_, _, id)| id.map_or(m.unk_score(), |i| m.scores()[i as usize]))
                .sum();
            assert!((v_score - all[0].score).abs() < 1e-12, "{s}");
            for alpha in [1.0, 0.3] {
                let z: f64 = all.iter().map(|g| (alpha * g.score).exp()).sum();
                assert!((m.log_z(s, alpha) - z.ln()).abs() < 1e-12, "{s}");
            }
        }
        assert!(m.nbest("", 3)[0].spans.is_empty());
        assert_eq!(m.log_z("", 1.0), 0.0);
    }

    #[test]
    fn unknown_characters_fuse_and_score_min_minus_ten() {
        let m = model();
        assert_eq!(m.unk_score(), -4.0 - UNK_PENALTY);
        let v = m.viterbi("axyb");
        assert_eq!(v, vec![(0, 1, Some(0)), (1, 3, None), (3, 4, Some(1))]);
    }

    #[test]
    fn sampling_frequencies_match_exact_probabilities() {
        let m = model();
        let s = "abcab";
        let alpha = 0.5;
        let all = all_segmentations(&m, s);
        let log_z = m.log_z(s, alpha);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let draws = 20000;
        let mut counts = vec![0usize; all.len()];
        for _ in 0..draws {
            let got = m.sample(s, alpha, &mut rng);
            let k = all.iter().position(|g| g.spans == got).unwrap();
            counts[k] += 1;
        }
        for (g, &c) in all.iter().zip(&counts) {
            let p = (alpha * g.score - log_z).exp();
            let sd = (p * (1.0 - p) / draws as f64).sqrt();
            let freq = c as f64 / draws as f64;
            assert!((freq - p).abs() < 5.0 * sd + 1e-3, "p {p} freq {freq}");
        }
    }

    #[test]
    fn expected_counts_match_brute_force_marginals() {
        let m = model();
        let s = "abcabca";
        let all = all_segmentations(&m, s);
        let z: f64 = all.iter().map(|g| g.score.exp()).sum();
        let mut want = vec![0.0; m.len()];
        for g in &all {
            for &(_, _, id) in &g.spans {
                want[id.unwrap() as usize] += g.score.exp() / z;
            }
        }
        let mut got = vec![0.0; m.len()];
        let log_z = m.expected_counts(s, 1.0, &mut got);
        assert!((log_z - z.ln()).abs() < 1e-12);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
