//! The candidate list every sampler stage rewrites: token ids with log-probs, and the
//! total order (log-prob descending, ties to the lower id) that stages sort by.

/// The candidate tokens still in play, with their (biased, penalized, scaled) log-probs.
#[derive(Clone, Debug, Default)]
pub struct Candidates {
    /// (token id, logit) pairs; never empty after a stage.
    pub items: Vec<(u32, f32)>,
    /// True when `items` is sorted by logit descending (ties: lower id first).
    pub sorted: bool,
}

pub(crate) fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// A u64 whose ascending order is [`by_logit_desc`]: the logit's `total_cmp` order
/// reversed in the high 32 bits, the token id in the low 32.
fn desc_key(&(id, l): &(u32, f32)) -> u64 {
    let b = l.to_bits();
    let asc = if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    };
    ((!asc as u64) << 32) | id as u64
}

/// Inverse of [`desc_key`].
fn from_desc_key(k: u64) -> (u32, f32) {
    let asc = !((k >> 32) as u32);
    let b = if asc & 0x8000_0000 != 0 {
        asc & 0x7fff_ffff
    } else {
        !asc
    };
    (k as u32, f32::from_bits(b))
}

/// Sorts like `sort_unstable_by(by_logit_desc)` (the same order: it is total), as an LSD
/// radix sort of [`desc_key`]s by bytes, skipping bytes that are equal in every key, and
/// the id bytes when the ids are already ascending (a fresh row: the sort is stable). For
/// a full vocabulary (top-p at every decode step of a 50K-token model) it takes ~0.7 of
/// the comparison sort's time.
pub(crate) fn radix_sort_by_logit_desc(items: &mut [(u32, f32)]) {
    let ids_ascending = items.windows(2).all(|w| w[0].0 < w[1].0);
    let first = if ids_ascending { 4 } else { 0 };
    let mut keys: Vec<u64> = items.iter().map(desc_key).collect();
    let mut hist = [[0usize; 256]; 8];
    for &k in &keys {
        for (byte, h) in hist.iter_mut().enumerate().skip(first) {
            h[(k >> (8 * byte)) as usize & 0xff] += 1;
        }
    }
    let mut tmp = vec![0u64; keys.len()];
    for (byte, h) in hist.iter().enumerate().skip(first) {
        if h.contains(&keys.len()) {
            continue; // every key has the same byte here
        }
        let mut start = [0usize; 256];
        let mut acc = 0;
        for (s, &c) in start.iter_mut().zip(h) {
            *s = acc;
            acc += c;
        }
        for &k in &keys {
            let d = (k >> (8 * byte)) as usize & 0xff;
            tmp[start[d]] = k;
            start[d] += 1;
        }
        std::mem::swap(&mut keys, &mut tmp);
    }
    for (it, &k) in items.iter_mut().zip(&keys) {
        *it = from_desc_key(k);
    }
}

impl Candidates {
    /// All tokens with finite log-prob from a full distribution row.
    pub fn from_logprobs(row: &[f32]) -> Candidates {
        let mut c = Candidates::default();
        c.reset(row);
        c
    }

    /// Refills from `row`, reusing the allocation.
    pub fn reset(&mut self, row: &[f32]) {
        self.items.clear();
        self.items.extend(
            row.iter()
                .enumerate()
                .filter(|(_, &l)| l > f32::NEG_INFINITY)
                .map(|(i, &l)| (i as u32, l)),
        );
        self.sorted = false;
    }

    /// Sorts by logit descending, ties by id.
    pub fn sort(&mut self) {
        if !self.sorted {
            if self.items.len() < 1024 {
                self.items.sort_unstable_by(by_logit_desc);
            } else {
                radix_sort_by_logit_desc(&mut self.items);
            }
            self.sorted = true;
        }
    }

    /// Drops banned (-inf / NaN) tokens.
    pub fn drop_banned(&mut self) {
        self.items.retain(|&(_, l)| l > f32::NEG_INFINITY);
    }

    /// Normalized probabilities (f64) of the current candidates, in `items` order.
    ///
    /// The exponentials are the vectorized f32 polynomial ([`crate::ops::simd::exp`],
    /// relative error ~2e-7), widened to f64 for the sum: over a 50K vocabulary libm's f64
    /// `exp` was ~0.9 ms a sampled token, most of top-p's cost.
    pub fn probs(&self) -> Vec<f64> {
        let max = self
            .items
            .iter()
            .map(|&(_, l)| l)
            .fold(f32::NEG_INFINITY, f32::max);
        let mut p: Vec<f64> = crate::ops::cpu::avx512(
            #[inline(always)]
            || {
                self.items
                    .iter()
                    .map(|&(_, l)| crate::ops::simd::exp(l - max) as f64)
                    .collect()
            },
        );
        let z: f64 = p.iter().sum();
        for x in p.iter_mut() {
            *x /= z;
        }
        p
    }
}
