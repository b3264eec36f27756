//! Sharing one buffer between parallel tasks, and keeping a shard's work on its thread.
//!
//! [`SyncPtr`] is the one raw-pointer type the kernels and the decode step hand to rayon
//! tasks or team chunks that write disjoint elements of one buffer. [`with_serial_gemm`]
//! marks a thread as running one shard of a batch-split training step: the kernels' rayon
//! loops ([`min_len`]) and GEMMs ([`serial`]) then stay on it, since the shards themselves
//! are the parallelism. The chunking, and so every result's bits, do not change.

/// A raw pointer that may be shared across rayon tasks writing disjoint elements.
/// Copy for any `T` (a derived impl would require `T: Copy`).
pub struct SyncPtr<T>(pub *mut T);
impl<T> Clone for SyncPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SyncPtr<T> {}

// SAFETY: only used to hand disjoint parts of one buffer to parallel tasks.
unsafe impl<T> Send for SyncPtr<T> {}

unsafe impl<T> Sync for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }

    /// The pointer, through a reference (for element types that are not `Copy`).
    #[inline(always)]
    pub fn ptr(&self) -> *mut T {
        self.0
    }
}

/// Rows per rayon task for row-wise kernels: keeps tasks around 16K elements.
#[inline]
pub(crate) fn rows_per_task(n: usize, c: usize) -> usize {
    ((1 << 14) / c.max(1)).clamp(1, n.max(1))
}

/// The tile walk of the register-tiled GEMMs that hold tokens in their lanes
/// (`gemm_bf16`, the w8a8 GEMM): blocks of `rows` outputs (of `n`) in parallel, each
/// walking the panels of `tokens` tokens (of `m`) in order from `t0 = 0`, so a block's
/// weight rows stay in cache while the panels stream; `tile(scratch, o0, nrows, t0, ntoks)`
/// for every pair. `scratch` is a per-task buffer made by `new_scratch`, for a block's
/// weights prepared once at its first panel. Blocks own disjoint output columns.
pub(crate) fn for_each_tile<S>(
    n: usize,
    rows: usize,
    m: usize,
    tokens: usize,
    new_scratch: impl Fn() -> S + Sync + Send,
    tile: impl Fn(&mut S, usize, usize, usize, usize) + Sync + Send,
) {
    use rayon::prelude::*;
    (0..n.div_ceil(rows))
        .into_par_iter()
        .for_each_init(new_scratch, |scratch, blk| {
            let o0 = blk * rows;
            let nrows = rows.min(n - o0);
            let mut t0 = 0;
            while t0 < m {
                let ntoks = tokens.min(m - t0);
                tile(scratch, o0, nrows, t0, ntoks);
                t0 += ntoks;
            }
        });
}

/// Calls `$tile::<RR, NV>(args)` for a tile of `$rows` outputs (one of the listed
/// literals) and `$toks` tokens (NV = 2 vectors of 16 above 16 tokens, else 1): the
/// monomorphized register tiles of the GEMMs that walk [`for_each_tile`].
macro_rules! tile_by_shape {
    ($tile:ident, $rows:expr, $toks:expr, [$($r:literal),*], $args:tt) => {
        match ($rows, $toks > 16) {
            $(($r, true) => $tile::<$r, 2> $args,
              ($r, false) => $tile::<$r, 1> $args,)*
            _ => unreachable!("tiles have 1..=R rows"),
        }
    };
}
pub(crate) use tile_by_shape;

thread_local! {
    /// Set while this thread runs one shard of a batch-split training step: GEMMs and the
    /// rayon loops of the kernels stay on this thread (the shards themselves are the
    /// parallelism).
    static SERIAL_GEMM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Minimum items per rayon task of the kernels' parallel loops: 1 normally, unlimited
/// inside [`with_serial_gemm`], where the loop then runs inline on the calling thread
/// without splitting (no jobs pushed, no sleeping worker woken, no stealing of another
/// shard's chunks). The chunking, and so the bits of every result, stay the same.
#[inline]
pub fn min_len() -> usize {
    if serial() {
        usize::MAX
    } else {
        1
    }
}

/// Runs `f` with every `gemm_strided` call made on this thread single-threaded and the
/// kernels' rayon loops inline ([`min_len`]) (restores the previous setting afterwards,
/// also on unwind).
pub fn with_serial_gemm<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL_GEMM.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SERIAL_GEMM.with(|s| s.replace(true)));
    f()
}

/// Whether this thread runs one shard of a batch-split step ([`with_serial_gemm`]): GEMMs
/// then stay single-threaded.
#[inline]
pub fn serial() -> bool {
    SERIAL_GEMM.with(|s| s.get())
}
