//! Memory budgets: a size asked for by a flag or a file is checked against the machine's
//! memory before it is allocated, so an impossible request gets an error naming the flag
//! and the bytes it would need instead of an out-of-memory abort (which Rust reports
//! with no message and no chance to clean up).

/// Bytes of memory the machine could still give this process (`MemAvailable` in
/// `/proc/meminfo`), or `None` where that is unknown (not Linux).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// A request that cannot fit in memory.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} needs about {} of memory, more than this machine has available ({})",
    human(*needed),
    human(*available as u128)
)]
pub struct TooLarge {
    /// What asked for it, in the user's terms ("--bytes 1000000000000").
    pub what: String,
    pub needed: u128,
    pub available: u64,
}

/// Refuses `needed` bytes for `what` when they exceed the memory available now (or,
/// where that is unknown, 2^48 bytes: no machine has that much).
pub fn check_fits(what: impl Into<String>, needed: u128) -> Result<(), TooLarge> {
    let available = available_bytes().unwrap_or(1 << 48);
    if needed > available as u128 {
        return Err(TooLarge {
            what: what.into(),
            needed,
            available,
        });
    }
    Ok(())
}

/// "1.5 GB" style sizes for messages.
pub fn human(bytes: u128) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        1_000_000_000..1_000_000_000_000 => format!("{:.1} GB", b / 1e9),
        _ => format!("{:.3e} bytes", b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_requests_are_refused_and_small_ones_pass() {
        check_fits("a small buffer", 1 << 20).unwrap();
        let e = check_fits("--bytes 18446744073709551615", u64::MAX as u128)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--bytes 18446744073709551615"), "{e}");
        assert_eq!(human(1_500_000_000), "1.5 GB");
    }
}
