//! The embedded default corpus: a seeded English-like source whose exact probability is known (the entropy floor).
//! (Not built yet.)
