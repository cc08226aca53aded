//! Waiting between polls: the interval plus random jitter, and an exponential, capped,
//! jittered backoff while the store fails — so a fleet does not hammer a recovering store
//! in lockstep.

use std::time::Duration;

/// A small xorshift generator; jitter needs spread, not cryptographic randomness.
#[derive(Debug, Clone)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    /// Seeded from the clock, the PID and a per-host string.
    pub fn new(seed_text: &str) -> Jitter {
        let mut state = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()).rotate_left(32);
        for byte in seed_text.bytes() {
            state = (state ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        Jitter { state: state | 1 }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    /// A random duration in `[0, max]`.
    pub fn up_to(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next() % (nanos + 1))
    }
}

/// The exponential backoff after consecutive failures.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    /// Starting at `base`, doubling per failure, capped at `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// Record a failure and return how long to wait: `base·2^n` capped, with "equal
    /// jitter" (half fixed, half random) so waits are spread but never near zero.
    pub fn failure(&mut self, jitter: &mut Jitter) -> Duration {
        let exponent = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let full = self.base.saturating_mul(1u32 << exponent).min(self.max);
        full / 2 + jitter.up_to(full / 2)
    }

    /// A success resets the backoff.
    pub fn success(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let mut jitter = Jitter::new("host");
        let values: Vec<_> = (0..100)
            .map(|_| jitter.up_to(Duration::from_millis(100)))
            .collect();
        assert!(values.iter().all(|v| *v <= Duration::from_millis(100)));
        assert!(values.iter().any(|v| *v != values[0]));
        assert_eq!(jitter.up_to(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn backoff_grows_is_capped_and_resets() {
        let mut jitter = Jitter::new("host");
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = backoff.failure(&mut jitter);
        assert!(
            first >= Duration::from_millis(50) && first <= Duration::from_millis(100),
            "{first:?}"
        );
        for _ in 0..30 {
            let wait = backoff.failure(&mut jitter);
            assert!(wait <= Duration::from_secs(1), "{wait:?}");
        }
        let capped = backoff.failure(&mut jitter);
        assert!(capped >= Duration::from_millis(500), "{capped:?}");
        backoff.success();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.failure(&mut jitter) <= Duration::from_millis(100));
    }
}
