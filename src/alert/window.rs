//! One rule's memory of recent matches, and whether it is breached: the pure part of
//! alert evaluation, without I/O or clocks.
//!
//! Times are milliseconds on the evaluator's monotonic axis (see
//! `evaluator::Clock`), so a wall-clock jump moves no deadline. A threshold rule keeps
//! the times of its newest `threshold` matches and nothing older than its window: at
//! least N matches lie in the last W exactly when the N-th newest does, so N times
//! are all it needs (8 bytes each). An absence rule keeps one time, its last match.

use std::collections::VecDeque;

/// What a rule watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// At least `threshold` matches within `window_ms`.
    Threshold { threshold: usize, window_ms: i64 },
    /// No match for `absent_ms`.
    Absence { absent_ms: i64 },
}

/// A rule's recent matches.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    condition: Condition,
    /// Threshold: the newest matches, oldest first, at most `threshold` of them.
    times: VecDeque<i64>,
    /// Absence: the last match, or when watching began if there was none.
    last: i64,
}

impl Window {
    /// An empty window, watching since `since` (an absence rule counts its silence
    /// from there when no match is known).
    pub(crate) fn new(condition: Condition, since: i64) -> Self {
        let capacity = match condition {
            Condition::Threshold { threshold, .. } => threshold.min(1024),
            Condition::Absence { .. } => 0,
        };
        Window { condition, times: VecDeque::with_capacity(capacity), last: since }
    }

    /// A matching event committed at `at`. Matches arrive in log order; a time earlier
    /// than the last one recorded (a clock step between two commits) counts as that
    /// one, so the kept times stay sorted.
    pub(crate) fn record(&mut self, at: i64) {
        match self.condition {
            Condition::Threshold { threshold, .. } => {
                let at = self.times.back().map_or(at, |&last| at.max(last));
                self.times.push_back(at);
                while self.times.len() > threshold {
                    self.times.pop_front();
                }
            }
            Condition::Absence { .. } => self.last = self.last.max(at),
        }
    }

    /// Forgets matches that have left the window by `now`.
    pub(crate) fn expire(&mut self, now: i64) {
        if let Condition::Threshold { window_ms, .. } = self.condition {
            while self.times.front().is_some_and(|&t| t + window_ms <= now) {
                self.times.pop_front();
            }
        }
    }

    /// Matches within the window at `now`, counted up to the threshold (threshold
    /// rules); `None` for an absence rule.
    pub(crate) fn count(&self, now: i64) -> Option<u64> {
        match self.condition {
            Condition::Threshold { window_ms, .. } => {
                Some(self.times.iter().filter(|&&t| t + window_ms > now && t <= now).count() as u64)
            }
            Condition::Absence { .. } => None,
        }
    }

    /// When the last match was (absence rules), or when watching began without one.
    pub(crate) fn last_match(&self) -> Option<i64> {
        matches!(self.condition, Condition::Absence { .. }).then_some(self.last)
    }

    /// Whether the rule's condition holds at `now`.
    pub(crate) fn breached(&self, now: i64) -> bool {
        match self.condition {
            Condition::Threshold { threshold, .. } => self.count(now).is_some_and(|c| c as usize >= threshold),
            Condition::Absence { absent_ms } => now - self.last >= absent_ms,
        }
    }

    /// When [`Window::breached`] next changes if no match arrives: a threshold rule
    /// stops being breached when its oldest kept match leaves the window, an absence
    /// rule becomes breached when its silence reaches the limit. `None` when only a
    /// match can change it.
    pub(crate) fn next_change(&self, now: i64) -> Option<i64> {
        match self.condition {
            Condition::Threshold { window_ms, .. } => {
                self.breached(now).then(|| self.times.front().map(|&t| t + window_ms)).flatten()
            }
            Condition::Absence { absent_ms } => (!self.breached(now)).then_some(self.last + absent_ms),
        }
    }

    /// How many match times it holds: at most the threshold, whatever comes.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.times.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_threshold_is_breached_while_n_matches_lie_in_the_window() {
        let mut w = Window::new(Condition::Threshold { threshold: 3, window_ms: 1000 }, 0);
        for at in [100, 200] {
            w.record(at);
        }
        assert!(!w.breached(250));
        assert_eq!(w.next_change(250), None, "only a match can breach it");
        w.record(300);
        assert!(w.breached(300));
        assert_eq!(w.count(300), Some(3));
        assert_eq!(w.next_change(300), Some(1100), "when the match at 100 leaves");
        assert!(w.breached(1099));
        assert!(!w.breached(1100));
        w.expire(1100);
        assert_eq!(w.count(1100), Some(2));
    }

    #[test]
    fn an_absence_is_breached_after_the_silence_and_cleared_by_a_match() {
        let mut w = Window::new(Condition::Absence { absent_ms: 500 }, 0);
        assert!(!w.breached(499));
        assert_eq!(w.next_change(100), Some(500));
        assert!(w.breached(500));
        assert_eq!(w.next_change(500), None, "only a match clears it");
        w.record(700);
        assert!(!w.breached(700));
        assert_eq!(w.last_match(), Some(700));
        assert_eq!(w.count(700), None);
    }

    #[test]
    fn a_match_out_of_clock_order_keeps_the_times_sorted() {
        let mut w = Window::new(Condition::Threshold { threshold: 2, window_ms: 100 }, 0);
        w.record(50);
        w.record(40);
        assert_eq!(w.next_change(50), Some(150));
    }

    proptest! {
        // Whatever the matches and the moments asked about, a threshold window says
        // what counting every match would say, and never holds more than N times.
        #[test]
        fn a_threshold_window_agrees_with_counting_every_match(
            threshold in 1usize..6,
            window_ms in 1i64..200,
            gaps in proptest::collection::vec(0i64..80, 0..60),
            probe in 0i64..120,
        ) {
            let mut w = Window::new(Condition::Threshold { threshold, window_ms }, 0);
            let mut all = Vec::new();
            let mut at = 0;
            for gap in gaps {
                at += gap;
                w.record(at);
                all.push(at);
                let now = at + probe;
                let in_window = all.iter().filter(|&&t| t + window_ms > now).count();
                prop_assert_eq!(w.breached(now), in_window >= threshold);
                prop_assert!(w.held() <= threshold);
                if let Some(change) = w.next_change(now) {
                    let later = all.iter().filter(|&&t| t + window_ms > change).count();
                    prop_assert!(change > now && later < threshold, "at {} it is no longer breached", change);
                }
                w.expire(now);
                prop_assert_eq!(w.breached(now), in_window >= threshold, "expiring changes nothing now");
            }
        }

        // An absence window is breached exactly when the last match (or the start) is
        // at least the silence ago, and says when that will happen.
        #[test]
        fn an_absence_window_agrees_with_the_last_match(
            absent_ms in 1i64..200,
            gaps in proptest::collection::vec(0i64..300, 0..30),
            probe in 0i64..400,
        ) {
            let mut w = Window::new(Condition::Absence { absent_ms }, 0);
            let probe_silence = |w: &Window, last: i64, now: i64| -> Result<(), TestCaseError> {
                prop_assert_eq!(w.breached(now), now - last >= absent_ms);
                if let Some(change) = w.next_change(now) {
                    prop_assert_eq!(change, last + absent_ms);
                }
                Ok(())
            };
            probe_silence(&w, 0, probe)?;
            let mut at = 0;
            for gap in gaps {
                at += gap;
                w.record(at);
                probe_silence(&w, at, at + probe)?;
            }
        }
    }
}
