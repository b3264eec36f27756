//! n-gram models (a Markov assumption on the chain rule): add-k smoothed counts for
//! any order, and (issue: Kneser-Ney) interpolated modified Kneser-Ney with ARPA I/O.
//! (Not built yet.)
