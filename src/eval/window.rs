//! Sliding windows: how a sequence longer than the model's context is scored.
//!
//! A sequence `s` (its first id is the conditioning token) is cut into windows of at most
//! `window` ids. The first window scores targets `1..window`; each later window ends
//! `stride` ids further on and scores only the targets the previous windows did not, so
//! every target is scored exactly once, and each new target sees as much left context as
//! the window allows (between `window - stride` and `window - 1` tokens). `stride =
//! window - 1` gives non-overlapping chunks of targets (each chunk is still conditioned on
//! the id before it); `stride = 1` gives every target the full `window - 1` tokens.
//!
//! This is the Hugging Face "perplexity of fixed-length models" recipe with its
//! boundary bug removed: there, with stride = max_length the first label of each window
//! is dropped.

use super::EvalError;

/// One model call: ids `start..end` of the sequence, of which targets `first_target..end`
/// are kept (`score_next` output index `t - start - 1` for target `t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: usize,
    pub end: usize,
    pub first_target: usize,
}

impl Window {
    /// Index into this window's `score_next` output of its first kept target.
    pub fn skip(&self) -> usize {
        self.first_target - self.start - 1
    }
}

/// Window length (ids per model call) and stride (new targets per window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Ids per model call; `None`: the whole sequence in one call (unbounded-context models).
    pub window: Option<usize>,
    /// New targets per window after the first (`1..=window-1`).
    pub stride: usize,
}

impl WindowSpec {
    /// Validates a window/stride pair against the model's maximum context.
    pub fn new(
        window: Option<usize>,
        stride: Option<usize>,
        max_context: Option<usize>,
    ) -> Result<WindowSpec, EvalError> {
        let window = match (window, max_context) {
            (Some(w), Some(m)) if w > m => {
                return Err(EvalError::Invalid(format!(
                    "--context {w} exceeds the model's maximum context of {m} tokens"
                )))
            }
            (Some(w), _) => Some(w),
            (None, m) => m,
        };
        if let Some(w) = window {
            if w < 2 {
                return Err(EvalError::Invalid(format!(
                    "the window must hold at least 2 tokens (conditioning + target), got {w}"
                )));
            }
        }
        let max_stride = window.map_or(usize::MAX, |w| w - 1);
        let stride = stride.unwrap_or(max_stride.min(1 << 30));
        if stride == 0 || stride > max_stride {
            return Err(EvalError::Invalid(format!(
                "--stride must be between 1 and the window minus one ({max_stride}), got {stride}"
            )));
        }
        Ok(WindowSpec { window, stride })
    }

    /// The windows covering a sequence of `len` ids.
    pub fn plan(&self, len: usize) -> Vec<Window> {
        plan(len, self.window, self.stride)
    }
}

/// The windows covering a sequence of `len` ids (see the module doc).
pub fn plan(len: usize, window: Option<usize>, stride: usize) -> Vec<Window> {
    if len < 2 {
        return Vec::new();
    }
    let w = match window {
        Some(w) if w < len => w,
        _ => {
            return vec![Window {
                start: 0,
                end: len,
                first_target: 1,
            }]
        }
    };
    let stride = stride.clamp(1, w - 1);
    let mut out = vec![Window {
        start: 0,
        end: w,
        first_target: 1,
    }];
    let mut end = w;
    while end < len {
        let next = (end + stride).min(len);
        out.push(Window {
            start: next - w,
            end: next,
            first_target: end,
        });
        end = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_target_scored_once(len in 0usize..200, w in 2usize..40, s in 1usize..40) {
            let s = s.min(w - 1);
            let wins = plan(len, Some(w), s);
            let mut seen = vec![0u32; len];
            for win in &wins {
                prop_assert!(win.end - win.start <= w);
                prop_assert!(win.start < win.first_target);
                prop_assert!(win.first_target <= win.end);
                for (t, count) in seen
                    .iter_mut()
                    .enumerate()
                    .take(win.end)
                    .skip(win.first_target)
                {
                    *count += 1;
                    // Context of target t inside the window: t - start tokens.
                    let ctx = t - win.start;
                    prop_assert!(ctx >= (w - s).min(t) && ctx < w);
                }
            }
            for (t, &c) in seen.iter().enumerate() {
                prop_assert_eq!(c, u32::from(t > 0), "target {} seen {} times", t, c);
            }
        }
    }

    #[test]
    fn specs_are_checked() {
        assert!(WindowSpec::new(Some(10), Some(10), None).is_err());
        assert!(WindowSpec::new(Some(10), Some(0), None).is_err());
        assert!(WindowSpec::new(Some(2048), None, Some(1024)).is_err());
        assert!(WindowSpec::new(Some(1), None, None).is_err());
        let s = WindowSpec::new(None, None, Some(64)).unwrap();
        assert_eq!((s.window, s.stride), (Some(64), 63));
        let s = WindowSpec::new(None, None, None).unwrap();
        assert_eq!(s.plan(5).len(), 1);
        assert_eq!(plan(1, Some(4), 1), vec![]);
    }
}
