//! Delays between attempts when a server is away: `tail` reconnecting, `emit`
//! retrying.
//!
//! Owns only the arithmetic; the callers decide what counts as worth another attempt.

use std::time::Duration;

/// First delay; doubled after each failed attempt.
pub(crate) const INITIAL: Duration = Duration::from_millis(500);
/// Longest delay, before jitter.
pub(crate) const MAX: Duration = Duration::from_secs(10);

/// [`INITIAL`] doubling to [`MAX`], each delay scattered by ±25 % so that many clients
/// dropped by one restart do not come back in step.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: INITIAL }
    }
}

impl Backoff {
    /// The delay before the next attempt, with random jitter.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.delay(rand::random::<f64>())
    }

    /// The delay before the next attempt; `unit` in `[0, 1]` picks the jitter.
    pub(crate) fn delay(&mut self, unit: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX);
        base.mul_f64(0.75 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// After a success: the next failure starts small again.
    pub(crate) fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_to_the_cap_with_bounded_jitter_and_reset() {
        let mut b = Backoff::default();
        let lows: Vec<Duration> = (0..8).map(|_| b.delay(0.0)).collect();
        assert_eq!(lows[0], INITIAL.mul_f64(0.75));
        assert_eq!(lows[1], INITIAL.mul_f64(1.5));
        assert_eq!(*lows.last().unwrap(), MAX.mul_f64(0.75));
        assert_eq!(b.delay(1.0), MAX.mul_f64(1.25));
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= MAX.mul_f64(0.75) && d <= MAX.mul_f64(1.25), "{d:?}");
        }
        b.reset();
        assert_eq!(b.delay(0.5), INITIAL);
    }
}
