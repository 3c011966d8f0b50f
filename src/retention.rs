//! Retention: removes the oldest events by age (`--retain-days`) and/or count
//! (`--retain-events`), in the background, without holding up ingest.
//!
//! Owns the pruning loop. Before it deletes anything it moves the hub's oldest seq, so
//! a cursor that was reading what is about to go gets an exact `reset` instead of a
//! silent gap. Deletes run in small chunks between which the writer gets the database.
//! The ids of pruned events stay in the store's compact index for
//! `--idempotency-days`, so a producer re-sending one still gets its original seq;
//! this loop forgets them after that.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::store::{Store, StoreError};

/// Rows deleted per transaction: small enough that a waiting commit is delayed by
/// milliseconds, not seconds.
const CHUNK: usize = 5_000;
/// How often retention looks for work.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Default `--idempotency-days`: a pruned event's id is remembered for 7 days after
/// its commit.
pub(crate) const DEFAULT_IDEMPOTENCY_DAYS: u32 = 7;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Keep events newer than this many days (`--retain-days`); `None` keeps all ages.
    pub days: Option<u32>,
    /// Keep at most this many newest events (`--retain-events`); `None` keeps any number.
    pub events: Option<u64>,
    /// How often to prune. Default [`DEFAULT_INTERVAL`].
    pub interval: Duration,
    /// How long after its commit a pruned event's id still answers a re-send with the
    /// original seq (`--idempotency-days`, `SWARMFEED_IDEMPOTENCY_DAYS`; default 7).
    pub idempotency_days: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        RetentionSettings {
            days: None,
            events: None,
            interval: DEFAULT_INTERVAL,
            idempotency_days: DEFAULT_IDEMPOTENCY_DAYS,
        }
    }
}

impl RetentionSettings {
    pub fn is_enabled(&self) -> bool {
        self.days.is_some() || self.events.is_some()
    }
}

/// The first seq to keep under `settings`, given the head and the store.
///
/// # Errors
/// The store could not be read.
pub(crate) async fn keep_from(settings: &RetentionSettings, head: u64, store: &dyn Store) -> Result<u64, StoreError> {
    let mut keep = 1;
    if let Some(n) = settings.events {
        keep = keep.max(head.saturating_sub(n) + 1);
    }
    if let Some(days) = settings.days {
        let cutoff = chrono::Utc::now().timestamp_millis() - i64::from(days) * 86_400_000;
        // Nothing committed since the cutoff: everything up to the head is too old.
        let first_young = store.first_seq_since(cutoff).await?.unwrap_or(head + 1);
        keep = keep.max(first_young);
    }
    Ok(keep)
}

/// Prunes once: moves the hub's oldest, then deletes below it in chunks.
///
/// # Errors
/// The store failed; what was deleted before stays deleted, and the hub's oldest
/// already says so.
pub(crate) async fn prune(settings: &RetentionSettings, hub: &Hub, store: &dyn Store) -> Result<u64, StoreError> {
    let window_ms = i64::from(settings.idempotency_days) * 86_400_000;
    let forgotten = store.forget_pruned_ids(chrono::Utc::now().timestamp_millis() - window_ms).await?;
    if forgotten > 0 {
        tracing::info!(forgotten, days = settings.idempotency_days, "forgot the ids of long-pruned events");
    }
    let keep = keep_from(settings, hub.head(), store).await?;
    if keep <= hub.oldest() {
        return Ok(0);
    }
    hub.set_oldest(keep);
    let mut total = 0;
    loop {
        let deleted = store.delete_before(keep, CHUNK).await?;
        total += deleted;
        if deleted < CHUNK as u64 {
            break;
        }
        // Let a waiting commit take the write lock between chunks.
        tokio::task::yield_now().await;
    }
    if total > 0 {
        tracing::info!(deleted = total, oldest = keep, "retention pruned old events");
    }
    // A swarm snapshot whose next events are gone can start no fold.
    store.prune_swarm_snapshots(keep).await?;
    // Finished tasks whose story is gone leave the board with it; open ones stay.
    let tasks = store.prune_board(keep).await?;
    if tasks > 0 {
        tracing::info!(tasks, "retention removed finished tasks from the board");
    }
    Ok(total)
}

/// Runs [`prune`] every `settings.interval` until `shutdown`.
pub(crate) fn spawn(
    settings: RetentionSettings,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(settings.interval);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(e) = prune(&settings, &hub, store.as_ref()).await {
                        tracing::error!(error = %e, "retention failed; will retry");
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cursor::{Cursor, Step};
    use crate::event::NewEvent;
    use crate::filter::Filter;
    use crate::hub::ReadLimit;
    use crate::store::Bounds;
    use crate::store::conformance::new_event;
    use crate::store::sqlite::SqliteStore;

    fn batch(n: usize) -> Vec<NewEvent> {
        (0..n).map(|i| new_event(&format!("r{i}"), "a.b")).collect()
    }

    #[tokio::test]
    async fn count_retention_keeps_the_newest_and_moves_oldest_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 2).unwrap());
        let hub = Hub::new(Bounds { oldest: 1, head: 0 }, 4);
        let mut w = store.writer().await.unwrap();
        hub.publish(&w.append(batch(12_000)).await.unwrap().stored);
        let settings = RetentionSettings { events: Some(1_000), ..Default::default() };
        assert_eq!(prune(&settings, &hub, store.as_ref()).await.unwrap(), 11_000);
        assert_eq!(hub.oldest(), 11_001);
        assert_eq!(store.bounds().await.unwrap(), Bounds { oldest: 11_001, head: 12_000 });
        assert_eq!(prune(&settings, &hub, store.as_ref()).await.unwrap(), 0, "nothing more to do");
    }

    #[tokio::test]
    async fn a_cursor_behind_retention_gets_a_reset_to_the_oldest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 2).unwrap());
        let hub = Arc::new(Hub::new(Bounds { oldest: 1, head: 0 }, 4));
        let mut w = store.writer().await.unwrap();
        hub.publish(&w.append(batch(100)).await.unwrap().stored);
        let mut cursor = Cursor::new(Arc::clone(&hub), Arc::clone(&store), Filter::default(), Some(10));
        prune(&RetentionSettings { events: Some(50), ..Default::default() }, &hub, store.as_ref()).await.unwrap();
        let limit = ReadLimit { max_events: 1000, max_bytes: 1 << 20 };
        assert!(matches!(cursor.next(limit).await.unwrap(), Step::Reset { oldest: 51 }));
        let Step::Events(events) = cursor.next(limit).await.unwrap() else { panic!("events follow") };
        assert_eq!(events.first().unwrap().seq, 51);
    }

    #[tokio::test]
    async fn a_pruned_id_answers_its_original_seq_until_the_idempotency_window_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 2).unwrap());
        crate::store::conformance::pruned_ids_answer_their_original_seq(store.as_ref()).await;
    }

    #[tokio::test]
    async fn age_retention_keeps_young_events() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 2).unwrap());
        let hub = Hub::new(Bounds { oldest: 1, head: 0 }, 4);
        let mut w = store.writer().await.unwrap();
        hub.publish(&w.append(batch(10)).await.unwrap().stored);
        let settings = RetentionSettings { days: Some(1), ..Default::default() };
        assert_eq!(keep_from(&settings, 10, store.as_ref()).await.unwrap(), 1, "all were committed just now");
        assert_eq!(prune(&settings, &hub, store.as_ref()).await.unwrap(), 0);
    }
}
