//! A team of threads for one decode step: one rayon fork-join per token instead of one per
//! matrix-vector product.
//!
//! The step of a GPT-2 124M runs ~60 dependent parallel phases per token (4 matvecs and the
//! attention per layer, the LM head); as separate rayon fork-joins each one paid a futex
//! wake-up and a sleep (~10% of a q8 token in `perf`). Here `with_team` starts
//! `current_num_threads() - 1` helpers once (one `rayon::scope`) and `Team::run` hands
//! them each phase through shared memory: the caller publishes a phase (a closure over
//! chunk indices and a chunk count) under a new generation number, everyone claims chunks
//! with a compare-and-swap on one word (generation | count | next), and the caller waits
//! until every chunk is done. Idle helpers spin a bounded number of times, then yield.
//!
//! Why dynamic claiming rather than a fixed share per thread with a barrier: the caller
//! never waits for a helper that has not started (one that is descheduled, or busy with
//! other rayon work, or absent in a 1-thread pool): it simply runs every chunk itself. So
//! a step cannot deadlock, and since each chunk's arithmetic depends only on its index,
//! the results are bit-identical for any number of threads (tested in `infer`).

use crate::ops::float::Float;
use crate::ops::par::SyncPtr;
use crate::ops::residual::add_in_place;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Spins of an idle helper (each a `spin_loop` hint, ~40-140 cycles) before it starts
/// yielding its core: the serial gaps between a step's phases (a LayerNorm, a residual add,
/// quantizing an input) take a few microseconds, and on a loaded machine a longer spin only
/// keeps the core from the thread everyone waits for.
const SPINS: u32 = 1 << 8;

/// One phase's work: called once per chunk index, from any team thread.
pub(crate) type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// Shared state of one step's team (see the module doc).
pub(crate) struct Team {
    /// generation (high 32 bits) | chunk count (16 bits) | next unclaimed chunk (16 bits).
    word: AtomicU64,
    /// Chunks finished in the current generation.
    done: AtomicUsize,
    /// Points at the current phase's `Job` (a fat reference on the caller's stack).
    job: AtomicPtr<()>,
    /// Set when the step is over: helpers return.
    quit: AtomicBool,
}

/// Largest chunk count of one phase (16 bits of `word`).
pub(crate) const MAX_CHUNKS: usize = (1 << 16) - 1;

/// Counts a claimed chunk as done even if it panics, so the caller never waits forever
/// (the panic then surfaces from the rayon scope).
struct DoneGuard<'a>(&'a AtomicUsize);

impl Drop for DoneGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// Sets `quit` when the caller's work ends, also by panic, so helpers always return.
struct QuitGuard<'a>(&'a AtomicBool);

impl Drop for QuitGuard<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Team {
    fn new() -> Team {
        Team {
            word: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            quit: AtomicBool::new(false),
        }
    }

    /// Runs `f(i)` for every i in 0..n on the team (the caller included) and returns when
    /// all are done. Each index runs exactly once, on some thread.
    pub(crate) fn run(&self, n: usize, f: Job<'_>) {
        if n == 0 {
            return;
        }
        assert!(n <= MAX_CHUNKS, "{n} chunks in one phase");
        // The previous phase is complete (all its chunks claimed and done), so no helper
        // can still read `job` or bump `done` for it (see `work`).
        self.job
            .store(&f as *const Job<'_> as *mut (), Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        let g = (self.word.load(Ordering::Relaxed) >> 32) + 1;
        self.word
            .store(g << 32 | (n as u64) << 16, Ordering::Release);
        self.work(g);
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < n {
            // Only chunks already claimed (running on some thread) are left.
            backoff(&mut spins);
        }
    }

    /// Claims and runs chunks of generation `g` until none are left.
    fn work(&self, g: u64) {
        let mut w = self.word.load(Ordering::Acquire);
        loop {
            let (wg, n, i) = (w >> 32, (w >> 16) & 0xffff, w & 0xffff);
            if wg != g || i >= n {
                return;
            }
            match self
                .word
                .compare_exchange_weak(w, w + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    // SAFETY: the claim succeeded while the word still had generation g and
                    // chunk i < n unclaimed, so phase g is not complete: the caller is
                    // still inside `run` for g, and `job` (written before the Release
                    // store of generation g, which our Acquire load saw) points at its
                    // live `Job`.
                    let f: Job<'_> =
                        unsafe { *(self.job.load(Ordering::Relaxed) as *const Job<'_>) };
                    let _done = DoneGuard(&self.done);
                    f(i as usize);
                    w = self.word.load(Ordering::Acquire);
                }
                Err(now) => w = now,
            }
        }
    }

    /// A helper's loop: wait for a new generation, work on it, until `quit`.
    fn help(&self) {
        let mut seen = 0u64;
        loop {
            let mut spins = 0u32;
            let g = loop {
                if self.quit.load(Ordering::Acquire) {
                    return;
                }
                let g = self.word.load(Ordering::Acquire) >> 32;
                if g != seen {
                    break g;
                }
                backoff(&mut spins);
            };
            seen = g;
            self.work(g);
        }
    }
}

/// Spin (cheap, keeps the core) for a while, then yield it to other runnable threads.
#[inline]
fn backoff(spins: &mut u32) {
    if *spins < SPINS {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// The merge phase of a batch-split training step: adds buffers `bufs[1..]` into
/// `bufs[0]` (each `len` long), in parallel chunks on `team`; every element sums in buffer
/// order, so the bits do not depend on the threads.
///
/// # Safety
/// Each pointer must be valid for `len` elements, and no other thread may touch the
/// buffers while this runs.
pub(crate) unsafe fn add_into_first<F: Float>(team: &Team, bufs: &[SyncPtr<F>], len: usize) {
    const CH: usize = 1 << 14;
    team.run(len.div_ceil(CH), &|ci| {
        let r0 = ci * CH;
        let n = CH.min(len - r0);
        // SAFETY: chunk ci covers elements [r0, r0 + n) of each buffer, disjoint across
        // chunks; the caller vouches for the pointers.
        let dst = unsafe { std::slice::from_raw_parts_mut(bufs[0].get().add(r0), n) };
        for b in &bufs[1..] {
            let src = unsafe { std::slice::from_raw_parts(b.get().add(r0) as *const F, n) };
            add_in_place(dst, src);
        }
    });
}

/// Runs `f` with a team of all the current rayon pool's threads (the caller plus
/// `current_num_threads() - 1` helpers spawned in one `rayon::scope`), or, if `!parallel`,
/// the caller alone (no rayon at all: for work too small to pay a wake-up).
pub(crate) fn with_team<R: Send>(parallel: bool, f: impl FnOnce(&Team) -> R + Send) -> R {
    let team = Team::new();
    let helpers = if parallel {
        rayon::current_num_threads().saturating_sub(1)
    } else {
        0
    };
    if helpers == 0 {
        return f(&team);
    }
    rayon::scope(|s| {
        let team = &team;
        for _ in 0..helpers {
            s.spawn(move |_| team.help());
        }
        let _quit = QuitGuard(&team.quit);
        f(team)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_runs_exactly_once_for_any_thread_count() {
        for threads in [1, 2, 3, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let counts: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
            pool.install(|| {
                with_team(true, |team| {
                    for (phase, n) in [7usize, 1, 0, 1000, 3, 64].into_iter().enumerate() {
                        team.run(n, &|i| {
                            counts[i].fetch_add(1 << (4 * phase), Ordering::Relaxed);
                        });
                    }
                })
            });
            for (i, c) in counts.iter().enumerate() {
                let want: usize = [7usize, 1, 0, 1000, 3, 64]
                    .iter()
                    .enumerate()
                    .filter(|&(_, &n)| i < n)
                    .map(|(p, _)| 1 << (4 * p))
                    .sum();
                assert_eq!(
                    c.load(Ordering::Relaxed),
                    want,
                    "{threads} threads, chunk {i}"
                );
            }
        }
    }

    #[test]
    fn teams_nested_in_busy_pools_finish() {
        // Steps running concurrently on every worker of a small pool (as a parallel
        // beam search would): helpers may never get a thread; callers do the work.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let total: usize = pool.install(|| {
            use rayon::prelude::*;
            (0..8usize)
                .into_par_iter()
                .map(|k| {
                    with_team(true, |team| {
                        let sum = AtomicUsize::new(0);
                        for _ in 0..20 {
                            team.run(10, &|i| {
                                sum.fetch_add(i + k, Ordering::Relaxed);
                            });
                        }
                        sum.into_inner()
                    })
                })
                .sum()
        });
        let want: usize = (0..8).map(|k| 20 * (45 + 10 * k)).sum();
        assert_eq!(total, want);
    }
}
