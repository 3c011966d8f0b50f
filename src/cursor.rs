//! A cursor: one subscription's filter and the last seq it has delivered.
//!
//! Every transport (WebSocket, HTML WebSocket, SSE, long-poll) drives one of these and
//! only encodes what it yields. A cursor reads the hub's ring while it is close to the
//! head and the store when it has fallen behind, so a slow viewer costs a number, not
//! a queue. It owns no socket and no timing; the transport paces it.

use std::sync::Arc;

use tokio::sync::watch;

use crate::event::Event;
use crate::filter::Filter;
use crate::hub::{Hub, ReadLimit, RingRead};
use crate::store::{Order, Query, Store, StoreError};

/// What a cursor yields.
#[derive(Debug)]
pub enum Step {
    /// The next matching events, in seq order, none delivered before.
    Events(Vec<Arc<Event>>),
    /// The events after the position were removed by retention; the cursor continues
    /// from `oldest`, and the viewer should reload what it shows.
    Reset { oldest: u64 },
}

/// Why a cursor cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    Closed,
}

pub struct Cursor {
    filter: Filter,
    /// The last seq delivered or skipped as not matching.
    position: u64,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    head: watch::Receiver<u64>,
    /// Mean [`Event::weight`] of the last events read from the store: how many rows to
    /// ask for so that a step fills its byte limit without reading rows it cannot send.
    store_weight: usize,
}

/// The weight guessed for store rows before any has been read.
const FIRST_STORE_WEIGHT: usize = 512;

impl Cursor {
    /// A cursor positioned after `since`, or at the head (live only) without it.
    /// A `since` beyond the head is treated as the head: there is nothing after it yet.
    pub fn new(hub: Arc<Hub>, store: Arc<dyn Store>, filter: Filter, since: Option<u64>) -> Self {
        let head = hub.watch();
        let now = *head.borrow();
        Cursor {
            filter,
            position: since.map_or(now, |s| s.min(now)),
            hub,
            store,
            head,
            store_weight: FIRST_STORE_WEIGHT,
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// How many committed events lie after the position (matching or not).
    pub fn lag(&self) -> u64 {
        self.hub.head().saturating_sub(self.position)
    }

    /// Waits for the next matching events and returns them, within `limit`.
    ///
    /// Cancel-safe: the position moves only in the same poll that returns the events,
    /// so dropping the future (in a `select!`) loses nothing.
    ///
    /// # Errors
    /// A store read failed, or the hub is gone (shutdown).
    pub async fn next(&mut self, limit: ReadLimit) -> Result<Step, CursorError> {
        self.step(limit, None).await
    }

    /// Like [`Cursor::next`], but returns as soon as the position has reached `upto`,
    /// with no events if none after the previous position matched. For folding the
    /// log up to a known seq, whose last events need not match the filter.
    ///
    /// # Errors
    /// As [`Cursor::next`].
    pub async fn next_until(&mut self, upto: u64, limit: ReadLimit) -> Result<Step, CursorError> {
        self.step(limit, Some(upto)).await
    }

    async fn step(&mut self, limit: ReadLimit, upto: Option<u64>) -> Result<Step, CursorError> {
        loop {
            let head = *self.head.borrow_and_update();
            if self.position >= head {
                if upto.is_some_and(|u| self.position >= u) {
                    return Ok(Step::Events(Vec::new()));
                }
                self.head.changed().await.map_err(|_| CursorError::Closed)?;
                continue;
            }
            let oldest = self.hub.oldest();
            if self.position + 1 < oldest {
                self.position = oldest - 1;
                return Ok(Step::Reset { oldest });
            }
            let mut events = Vec::new();
            match self.hub.read_after(self.position, head, &self.filter, limit, &mut events) {
                RingRead::Covered { scanned_to } => self.position = scanned_to,
                RingRead::Behind => {
                    // As many rows as the byte limit is likely to take: a frame read
                    // from the store is held whole while it is sent (and a WebSocket
                    // keeps a buffer that large), so it must respect the limit too.
                    let rows = (limit.max_bytes / self.store_weight.max(1)).clamp(1, limit.max_events);
                    events = self
                        .store
                        .query(Query {
                            filter: self.filter.clone(),
                            after: Some(self.position),
                            before: Some(head + 1),
                            order: Order::Asc,
                            limit: rows,
                            ..Query::default()
                        })
                        .await?;
                    // Retention may have removed events while the read ran; only a
                    // reset is honest then.
                    let oldest = self.hub.oldest();
                    if self.position + 1 < oldest {
                        self.position = oldest - 1;
                        return Ok(Step::Reset { oldest });
                    }
                    let read = events.len();
                    if let Some(mean) = events.iter().map(|e| e.weight()).sum::<usize>().checked_div(read) {
                        self.store_weight = mean;
                    }
                    events.truncate(fitting(&events, limit));
                    // A full read or a cut one may have more after it; a short one
                    // reached `head`.
                    self.position =
                        if read == rows || events.len() < read { events.last().map_or(head, |e| e.seq) } else { head };
                }
            }
            if !events.is_empty() || upto.is_some_and(|u| self.position >= u) {
                return Ok(Step::Events(events));
            }
        }
    }
}

/// How many of `events`, from the first, one frame within `limit` takes.
fn fitting(events: &[Arc<Event>], limit: ReadLimit) -> usize {
    let mut bytes = 0;
    events
        .iter()
        .enumerate()
        .position(|(count, e)| {
            let room = limit.has_room(count, bytes, e.weight());
            bytes += e.weight();
            !room
        })
        .unwrap_or(events.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::store::Bounds;
    use crate::store::sqlite::SqliteStore;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const LIMIT: ReadLimit = ReadLimit { max_events: 7, max_bytes: 1 << 20 };

    async fn fixture(ring: usize) -> (tempfile::TempDir, Arc<Hub>, Arc<dyn Store>, Box<dyn crate::store::LogWriter>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 2).unwrap());
        let hub = Arc::new(Hub::new(Bounds { oldest: 1, head: 0 }, ring));
        let writer = store.writer().await.unwrap();
        (dir, hub, store, writer)
    }

    fn batch(from: usize, n: usize) -> Vec<NewEvent> {
        (from..from + n)
            .map(|i| NewEvent {
                id: format!("e{i}"),
                event_type: if i % 3 == 0 { "task.created".into() } else { "bid.submitted".into() },
                source: "s".into(),
                task_id: None,
                agent_id: None,
                data: "{}".into(),
            })
            .collect()
    }

    async fn drain(cursor: &mut Cursor) -> Vec<u64> {
        let mut seen = Vec::new();
        while cursor.lag() > 0 {
            match tokio::time::timeout(std::time::Duration::from_millis(200), cursor.next(LIMIT)).await {
                Ok(Ok(Step::Events(events))) => seen.extend(events.iter().map(|e| e.seq)),
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => break,
            }
        }
        seen
    }

    #[tokio::test]
    async fn frames_read_from_the_store_keep_to_the_byte_limit() {
        let (_dir, hub, store, mut writer) = fixture(1).await;
        let mut events = batch(0, 40);
        // Mixed sizes, one of them alone over the limit.
        for (i, e) in events.iter_mut().enumerate() {
            e.data = format!(r#"{{"pad":"{}"}}"#, "x".repeat(if i == 17 { 3000 } else { 50 * (i % 4) }));
        }
        hub.publish(&writer.append(events).await.unwrap().stored);
        let limit = ReadLimit { max_events: 1000, max_bytes: 1000 };
        let mut cursor = Cursor::new(Arc::clone(&hub), Arc::clone(&store), Filter::default(), Some(0));
        let mut seen = Vec::new();
        while cursor.lag() > 0 {
            let Step::Events(step) = cursor.next(limit).await.unwrap() else { panic!("no reset here") };
            let bytes: usize = step.iter().map(|e| e.weight()).sum();
            assert!(bytes <= limit.max_bytes || step.len() == 1, "{} events, {bytes} bytes", step.len());
            seen.extend(step.iter().map(|e| e.seq));
        }
        assert_eq!(seen, (1..=40).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_cursor_behind_the_ring_catches_up_from_the_store_in_order() {
        let (_dir, hub, store, mut writer) = fixture(5).await;
        let mut cursor = Cursor::new(Arc::clone(&hub), Arc::clone(&store), Filter::default(), Some(0));
        for chunk in 0..6 {
            let commit = writer.append(batch(chunk * 10, 10)).await.unwrap();
            hub.publish(&commit.stored);
        }
        assert_eq!(drain(&mut cursor).await, (1..=60).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_cursor_without_since_starts_at_the_head() {
        let (_dir, hub, store, mut writer) = fixture(100).await;
        hub.publish(&writer.append(batch(0, 3)).await.unwrap().stored);
        let mut cursor = Cursor::new(Arc::clone(&hub), Arc::clone(&store), Filter::default(), None);
        assert_eq!(cursor.position(), 3);
        hub.publish(&writer.append(batch(3, 2)).await.unwrap().stored);
        assert_eq!(drain(&mut cursor).await, vec![4, 5]);
    }

    #[tokio::test]
    async fn next_until_returns_at_the_target_even_when_nothing_after_it_matches() {
        let (_dir, hub, store, mut writer) = fixture(100).await;
        // Seqs 1..=5, of which only 3 is task.* (see `batch`): 4 and 5 match nothing.
        hub.publish(&writer.append(batch(1, 5)).await.unwrap().stored);
        let tasks = Filter::from_spec(crate::filter::FilterSpec { types: vec!["task.*".into()], ..Default::default() })
            .unwrap();
        let mut cursor = Cursor::new(Arc::clone(&hub), Arc::clone(&store), tasks, Some(0));
        let wait = std::time::Duration::from_secs(5);
        let Step::Events(first) = tokio::time::timeout(wait, cursor.next_until(5, LIMIT)).await.unwrap().unwrap()
        else {
            panic!("no reset here")
        };
        assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3]);
        assert_eq!(cursor.position(), 5);
        let Step::Events(none) = tokio::time::timeout(wait, cursor.next_until(5, LIMIT)).await.unwrap().unwrap() else {
            panic!("no reset here")
        };
        assert!(none.is_empty());
    }

    #[tokio::test]
    async fn a_position_before_retention_yields_reset() {
        let (_dir, hub, store, mut writer) = fixture(100).await;
        hub.publish(&writer.append(batch(0, 10)).await.unwrap().stored);
        hub.set_oldest(6);
        let mut cursor = Cursor::new(Arc::clone(&hub), Arc::clone(&store), Filter::default(), Some(2));
        assert!(matches!(cursor.next(LIMIT).await.unwrap(), Step::Reset { oldest: 6 }));
        assert_eq!(drain(&mut cursor).await, vec![6, 7, 8, 9, 10]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        // Whatever the ring size, batch sizes and filter, a cursor from 0 yields exactly
        // the matching seqs, ascending, each once.
        #[test]
        fn cursors_deliver_each_matching_event_once_in_order(
            ring in 1usize..20, sizes in proptest::collection::vec(1usize..15, 1..8), only_tasks in any::<bool>()
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (_dir, hub, store, mut writer) = fixture(ring).await;
                let filter = if only_tasks {
                    Filter::from_spec(crate::filter::FilterSpec { types: vec!["task.*".into()], ..Default::default() }).unwrap()
                } else {
                    Filter::default()
                };
                let mut cursor = Cursor::new(Arc::clone(&hub), Arc::clone(&store), filter, Some(0));
                let mut seen = Vec::new();
                let mut from = 0;
                for n in &sizes {
                    let commit = writer.append(batch(from, *n)).await.unwrap();
                    hub.publish(&commit.stored);
                    from += n;
                    seen.extend(drain(&mut cursor).await);
                }
                let expected: Vec<u64> = (0..from).filter(|i| !only_tasks || i % 3 == 0).map(|i| i as u64 + 1).collect();
                assert_eq!(seen.len(), seen.iter().collect::<HashSet<_>>().len());
                assert_eq!(seen, expected);
            });
        }
    }
}
