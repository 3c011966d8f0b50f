//! The writer: the one task that commits events, with group commit.
//!
//! Producers hand batches to a [`WriterHandle`]; the writer task takes whatever is
//! queued (up to [`WriterSettings::max_group_events`]), commits it as one durable
//! transaction, publishes the new events to the hub and only then answers each
//! producer. The queue is bounded in events: when it is full, ingest is refused at
//! once (503), never left waiting and never dropped silently.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::event::NewEvent;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Appended, LogWriter, StoreError};

/// Default number of events that may wait for the writer (`--writer-queue-events`).
pub const DEFAULT_QUEUE_EVENTS: usize = 100_000;
/// Default most events committed in one transaction.
pub const DEFAULT_MAX_GROUP_EVENTS: usize = 20_000;

#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Events that may wait for a commit; beyond it ingest answers 503. Bounds the
    /// writer's memory at about this many events. Default [`DEFAULT_QUEUE_EVENTS`].
    pub queue_events: usize,
    /// Most events in one transaction; larger groups amortise the fsync further but
    /// delay the first producer longer. Default [`DEFAULT_MAX_GROUP_EVENTS`].
    pub max_group_events: usize,
}

impl Default for WriterSettings {
    fn default() -> Self {
        WriterSettings { queue_events: DEFAULT_QUEUE_EVENTS, max_group_events: DEFAULT_MAX_GROUP_EVENTS }
    }
}

/// Why a batch was not committed. In every case nothing of it is stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the writer queue is full")]
    QueueFull,
    #[error("the writer has stopped")]
    Stopped,
    #[error(transparent)]
    Store(#[from] Arc<StoreError>),
}

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Appended>, Arc<StoreError>>>,
    /// Released when the job is committed (or fails), freeing queue room.
    _room: OwnedSemaphorePermit,
}

/// A cheap, cloneable way to submit events to the writer.
#[derive(Clone)]
pub struct WriterHandle {
    jobs: mpsc::Sender<Job>,
    room: Arc<Semaphore>,
}

impl WriterHandle {
    /// Commits `events` (all or nothing) and returns one outcome per event, after the
    /// commit is durable and published.
    ///
    /// # Errors
    /// [`AppendError::QueueFull`] at once when the queue has no room; `Stopped` when
    /// the writer has shut down; `Store` when the transaction failed.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, AppendError> {
        let n = u32::try_from(events.len()).map_err(|_| AppendError::QueueFull)?;
        let room = match Arc::clone(&self.room).try_acquire_many_owned(n) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(AppendError::QueueFull),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(AppendError::Stopped),
        };
        let (reply, answer) = oneshot::channel();
        // The channel has one slot per event of room, and every job holds at least one
        // event's permit, so a job that got room always fits.
        self.jobs.try_send(Job { events, reply, _room: room }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => AppendError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => AppendError::Stopped,
        })?;
        answer.await.map_err(|_| AppendError::Stopped)?.map_err(AppendError::Store)
    }

    /// Events waiting for a commit now.
    pub fn queued_events(&self, settings: &WriterSettings) -> usize {
        settings.queue_events.saturating_sub(self.room.available_permits())
    }
}

/// Starts the writer task. It runs until `shutdown` is cancelled, then commits what
/// is already queued, refuses new work, and returns.
pub fn spawn(
    log: Box<dyn LogWriter>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    settings: WriterSettings,
    shutdown: CancellationToken,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let capacity = settings.queue_events.max(1);
    let (jobs, rx) = mpsc::channel(capacity);
    let room = Arc::new(Semaphore::new(capacity.min(Semaphore::MAX_PERMITS)));
    let handle = WriterHandle { jobs, room: Arc::clone(&room) };
    let task = tokio::spawn(run(log, hub, metrics, settings, rx, room, shutdown));
    (handle, task)
}

async fn run(
    mut log: Box<dyn LogWriter>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    settings: WriterSettings,
    mut rx: mpsc::Receiver<Job>,
    room: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            job = rx.recv() => job,
            () = shutdown.cancelled() => {
                // Refuse new work, then fall through to drain what is queued.
                room.close();
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        let mut group = vec![first];
        let mut size = group[0].events.len();
        while size < settings.max_group_events {
            match rx.try_recv() {
                Ok(job) => {
                    size += job.events.len();
                    group.push(job);
                }
                Err(_) => break,
            }
        }
        commit_group(log.as_mut(), &hub, &metrics, group, size).await;
    }
    tracing::info!("writer stopped; every queued event was committed");
}

#[tracing::instrument(skip_all, fields(jobs = group.len(), events = size))]
async fn commit_group(log: &mut dyn LogWriter, hub: &Hub, metrics: &Metrics, group: Vec<Job>, size: usize) {
    let mut events = Vec::with_capacity(size);
    let mut replies = Vec::with_capacity(group.len());
    for job in group {
        replies.push((job.events.len(), job.reply, job._room));
        events.extend(job.events);
    }
    match log.append(events).await {
        Ok(commit) => {
            hub.publish(&commit.stored);
            metrics.ingested(&commit.stored);
            let mut outcomes = commit.outcomes.into_iter();
            for (n, reply, _room) in replies {
                // A producer that gave up waiting (disconnected) no longer needs its
                // answer; its events are committed all the same.
                let _ = reply.send(Ok(outcomes.by_ref().take(n).collect()));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "group commit failed; its producers get an error and nothing was stored");
            let e = Arc::new(e);
            for (_, reply, _room) in replies {
                // As above: a producer that left needs no answer.
                let _ = reply.send(Err(Arc::clone(&e)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Bounds, Store};

    fn one(id: &str) -> Vec<NewEvent> {
        vec![NewEvent {
            id: id.into(),
            event_type: "a.b".into(),
            source: "s".into(),
            task_id: None,
            agent_id: None,
            data: "{}".into(),
        }]
    }

    #[tokio::test]
    async fn concurrent_producers_get_distinct_gapless_seqs() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1).unwrap();
        let hub = Arc::new(Hub::new(Bounds { oldest: 1, head: 0 }, 1000));
        let shutdown = CancellationToken::new();
        let (writer, task) = spawn(
            store.writer().await.unwrap(),
            Arc::clone(&hub),
            Arc::default(),
            WriterSettings::default(),
            shutdown.clone(),
        );
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let w = writer.clone();
                tokio::spawn(async move { w.append(one(&format!("p{i}"))).await.unwrap()[0].seq })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        assert_eq!(hub.head(), 50);
        shutdown.cancel();
        task.await.unwrap();
        assert!(matches!(writer.append(one("late")).await, Err(AppendError::Stopped)));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1).unwrap();
        let hub = Arc::new(Hub::new(Bounds { oldest: 1, head: 0 }, 10));
        let settings = WriterSettings { queue_events: 2, max_group_events: 10 };
        let (writer, _task) =
            spawn(store.writer().await.unwrap(), hub, Arc::default(), settings, CancellationToken::new());
        let mut three = one("a");
        three.extend(one("b"));
        three.extend(one("c"));
        assert!(matches!(writer.append(three).await, Err(AppendError::QueueFull)));
        assert_eq!(writer.append(one("d")).await.unwrap()[0].seq, 1);
    }
}
