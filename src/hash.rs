//! The one 64-bit mixing function: SplitMix64's output function (Steele, Lea & Flood
//! 2014), a bijection of u64 with good avalanche. arlm uses it wherever it needs a
//! fixed, seedable mix of an integer: dropout masks drawn per element (so a shard draws
//! what the unsplit batch draws), the training data sampler, and the n-gram and word
//! hashes that `model.bin` stores (part of that file format: changing this changes the
//! files).

/// SplitMix64's finalizer of `z`.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    /// SplitMix64's published first outputs for seed 0 (state advanced by the golden
    /// gamma before each mix), so the files that store these hashes stay readable.
    #[test]
    fn matches_splitmix64_reference_outputs() {
        let mut state = 0u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            super::mix64(state)
        };
        assert_eq!(next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(next(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(next(), 0x06C4_5D18_8009_454F);
    }
}
