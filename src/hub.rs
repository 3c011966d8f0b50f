//! The hub: the head seq, the ring of recent events, and the wake-up of every cursor.
//!
//! The writer publishes each commit here after it is durable; cursors read from here
//! and wait on the head. The hub holds no per-viewer state: a thousand viewers cost a
//! thousand watch receivers, not a thousand queues. It does not read the store; a
//! cursor that has fallen behind the ring does that itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::event::Event;
use crate::filter::Filter;
use crate::store::Bounds;

/// Default number of recent events kept in memory for viewers near the head.
pub const DEFAULT_RING_CAPACITY: usize = 8192;

/// Bounds on one read from the ring or store: what one frame may carry.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimit {
    pub max_events: usize,
    /// Approximate bytes (see [`Event::weight`]).
    pub max_bytes: usize,
}

impl ReadLimit {
    /// Whether a frame that holds `count` events of `bytes` has room for one more of
    /// `weight`. The first always fits, so that an event larger than the byte limit
    /// still goes, alone.
    pub(crate) fn has_room(&self, count: usize, bytes: usize, weight: usize) -> bool {
        count < self.max_events && (count == 0 || bytes + weight <= self.max_bytes)
    }
}

/// The outcome of reading after a seq from the ring.
#[derive(Debug)]
pub enum RingRead {
    /// The ring covered the range; matches are in the caller's buffer and the
    /// position may move to `scanned_to`, the last seq examined.
    Covered { scanned_to: u64 },
    /// The ring no longer holds the next event; read the store.
    Behind,
}

/// Shared by the writer (publishing) and every cursor (reading).
pub struct Hub {
    /// Events `front.seq ..= head`, contiguous in seq. Written only by `publish`;
    /// the lock is held for a copy of `Arc`s, never across an await.
    ring: RwLock<VecDeque<Arc<Event>>>,
    capacity: usize,
    head: watch::Sender<u64>,
    /// The oldest seq the store retains (head + 1 when it retains none).
    oldest: AtomicU64,
}

impl Hub {
    pub fn new(bounds: Bounds, capacity: usize) -> Self {
        Hub {
            ring: RwLock::new(VecDeque::with_capacity(capacity.min(65_536))),
            capacity: capacity.max(1),
            head: watch::Sender::new(bounds.head),
            oldest: AtomicU64::new(bounds.oldest),
        }
    }

    /// The seq of the last committed event (0 before the first).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    pub fn oldest(&self) -> u64 {
        self.oldest.load(Ordering::Acquire)
    }

    pub fn bounds(&self) -> Bounds {
        Bounds { oldest: self.oldest(), head: self.head() }
    }

    /// A receiver that wakes when the head moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Publishes committed events, in seq order, and wakes every cursor. Called by one
    /// task only: the writer (one writer per log) or the follower (a shared log).
    ///
    /// Events must continue the head exactly. Seqs at or below the head were published
    /// already (a follower that read a commit twice) and are ignored, so the head never
    /// goes back and no cursor sees an event twice. A gap (a commit seen out of order)
    /// empties the ring first, so the ring stays contiguous and cursors fall back to
    /// the store rather than skip.
    pub fn publish(&self, events: &[Arc<Event>]) {
        let published = self.head();
        let events = &events[events.partition_point(|e| e.seq <= published)..];
        let Some(last) = events.last() else { return };
        // Only the trailing contiguous run can join the ring.
        let run = events.windows(2).rposition(|w| w[1].seq != w[0].seq + 1).map_or(0, |i| i + 1);
        {
            let mut ring = self.ring.write().unwrap_or_else(|p| p.into_inner());
            if run > 0 || events[0].seq != self.head() + 1 {
                ring.clear();
            }
            let skip = run.max(events.len().saturating_sub(self.capacity));
            for e in &events[skip..] {
                if ring.len() == self.capacity {
                    ring.pop_front();
                }
                ring.push_back(Arc::clone(e));
            }
        }
        // Published after the ring, so a woken cursor always finds what the head
        // promises (or finds the ring behind and reads the store).
        self.head.send_replace(last.seq);
    }

    /// Retention moved the oldest retained seq.
    pub(crate) fn set_oldest(&self, oldest: u64) {
        self.oldest.store(oldest, Ordering::Release);
    }

    /// Appends to `out` the events after `after`, up to `upto`, that match `filter`,
    /// within `limit`.
    pub fn read_after(
        &self,
        after: u64,
        upto: u64,
        filter: &Filter,
        limit: ReadLimit,
        out: &mut Vec<Arc<Event>>,
    ) -> RingRead {
        let ring = self.ring.read().unwrap_or_else(|p| p.into_inner());
        let Some(front) = ring.front() else { return RingRead::Behind };
        if after + 1 < front.seq {
            return RingRead::Behind;
        }
        let start = (after + 1 - front.seq) as usize;
        let mut scanned_to = after;
        let mut bytes = 0;
        for e in ring.range(start.min(ring.len())..) {
            if e.seq > upto {
                break;
            }
            if filter.matches(e) {
                if !limit.has_room(out.len(), bytes, e.weight()) {
                    break;
                }
                bytes += e.weight();
                out.push(Arc::clone(e));
            }
            scanned_to = e.seq;
        }
        RingRead::Covered { scanned_to }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::EventParts;

    /// An event of `event_type` with seq `seq` and id `e{seq}`, for tests of what
    /// carries events (the hub, cursors, transports).
    pub(crate) fn event(seq: u64, event_type: &str) -> Arc<Event> {
        Arc::new(
            Event::encode(EventParts {
                seq,
                id: &format!("e{seq}"),
                event_type,
                source: "s",
                task_id: None,
                agent_id: None,
                ts_ms: 0,
                data: "{}",
            })
            .unwrap(),
        )
    }

    const ALL: ReadLimit = ReadLimit { max_events: 100, max_bytes: 1 << 20 };

    #[test]
    fn the_ring_keeps_the_newest_events_contiguously() {
        let hub = Hub::new(Bounds { oldest: 1, head: 0 }, 3);
        hub.publish(&(1..=5).map(|s| event(s, "a.b")).collect::<Vec<_>>());
        assert_eq!(hub.head(), 5);
        let mut out = Vec::new();
        assert!(matches!(hub.read_after(1, 5, &Filter::default(), ALL, &mut out), RingRead::Behind));
        let r = hub.read_after(2, 5, &Filter::default(), ALL, &mut out);
        assert!(matches!(r, RingRead::Covered { scanned_to: 5 }));
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4, 5]);
    }

    #[test]
    fn reads_stop_at_the_limit_and_report_how_far_they_scanned() {
        let hub = Hub::new(Bounds { oldest: 1, head: 0 }, 100);
        hub.publish(&(1..=10).map(|s| event(s, if s % 2 == 0 { "a.even" } else { "a.odd" })).collect::<Vec<_>>());
        let filter =
            Filter::from_spec(crate::filter::FilterSpec { types: vec!["a.even".into()], ..Default::default() })
                .unwrap();
        let mut out = Vec::new();
        let limit = ReadLimit { max_events: 2, max_bytes: 1 << 20 };
        let r = hub.read_after(0, 10, &filter, limit, &mut out);
        assert!(matches!(r, RingRead::Covered { scanned_to: 5 }), "{r:?}");
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 4]);
    }

    #[test]
    fn seqs_already_published_are_ignored() {
        let hub = Hub::new(Bounds { oldest: 1, head: 0 }, 10);
        hub.publish(&(1..=3).map(|s| event(s, "a.b")).collect::<Vec<_>>());
        hub.publish(&(2..=5).map(|s| event(s, "a.b")).collect::<Vec<_>>());
        hub.publish(&[event(4, "a.b")]);
        assert_eq!(hub.head(), 5);
        let mut out = Vec::new();
        hub.read_after(0, 5, &Filter::default(), ALL, &mut out);
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_gap_empties_the_ring_instead_of_skipping() {
        let hub = Hub::new(Bounds { oldest: 1, head: 0 }, 10);
        hub.publish(&[event(1, "a.b")]);
        hub.publish(&[event(3, "a.b")]);
        let mut out = Vec::new();
        assert!(matches!(hub.read_after(1, 3, &Filter::default(), ALL, &mut out), RingRead::Behind));
        assert_eq!(hub.head(), 3);
    }
}
