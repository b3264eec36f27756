//! Chain-rule scoring and evaluation: per-token log-probs, NLL, perplexity, bits per byte, sliding windows.
//! (Not built yet.)
