//! Maximum-likelihood training by teacher forcing: batches, AdamW, schedules, checkpoints, the training loop.
//! (Partly built: the optimizer is in [`adamw`].)

pub mod adamw;
