//! Maximum-likelihood training by teacher forcing: batches, AdamW, schedules, checkpoints, the training loop.
//! (Not built yet.)
