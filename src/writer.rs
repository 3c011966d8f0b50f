//! The writer: the one task of a node that commits events, with group commit.
//!
//! Producers hand batches to a [`WriterHandle`]; the writer task takes whatever is
//! queued (up to [`WriterSettings::max_group_events`]), commits it as one durable
//! transaction, has the new events published to the hub and only then answers each
//! producer. The queue is bounded in events: when it is full, ingest is refused at
//! once (503), never left waiting and never dropped silently.
//!
//! Who publishes is the [`Fanout`]: the writer itself when it is the log's only writer,
//! or the follower when other nodes write the same log. Either way a producer's answer
//! waits until its events are in this node's hub, so a producer that then subscribes
//! here with `since` sees them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event::NewEvent;
use crate::follower::FollowerHandle;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Appended, LogWriter, StoreError};

/// Longest a producer's answer waits for its commit to reach this node's hub. Past it
/// the producer is answered anyway: the commit is durable, only this node's view of it
/// is late (the follower cannot read the store), and refusing would invite a retry that
/// stores the events twice under new ids.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

/// Default number of events that may wait for the writer (`--writer-queue-events`).
pub(crate) const DEFAULT_QUEUE_EVENTS: usize = 100_000;
/// Default most events committed in one transaction.
pub(crate) const DEFAULT_MAX_GROUP_EVENTS: usize = 20_000;

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

/// Who publishes commits to the hub.
pub enum Fanout {
    /// This writer is the log's only writer: it publishes each commit itself.
    Direct,
    /// Other nodes write the same log: the follower publishes every commit in seq
    /// order; the writer hands its own over and waits for them to be published.
    Follower(FollowerHandle),
}

type Answer = Result<Vec<Appended>, Arc<StoreError>>;

struct Job {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Answer>,
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
    pub(crate) fn queued_events(&self, settings: &WriterSettings) -> usize {
        settings.queue_events.saturating_sub(self.room.available_permits())
    }
}

/// Answers for one committed group, held until the hub has published `upto`.
struct Pending {
    upto: u64,
    /// When to answer even if the hub has not got there (see [`PUBLISH_WAIT`]).
    deadline: Instant,
    /// Each job's reply, answer, and queue room (freed when answered).
    answers: Vec<(oneshot::Sender<Answer>, Answer, OwnedSemaphorePermit)>,
}

/// Groups waiting for publication, oldest (lowest seq) first. Bounded by the queue:
/// each holds its jobs' room.
#[derive(Default)]
struct Acks(VecDeque<Pending>);

impl Acks {
    /// Answers every group the hub has published, and any whose wait ran out.
    fn release(&mut self, head: u64) {
        let now = Instant::now();
        while let Some(p) = self.0.front() {
            if p.upto > head && p.deadline > now {
                break;
            }
            if p.upto > head {
                tracing::warn!(upto = p.upto, head, "answering producers before this node published their commit");
            }
            let Some(p) = self.0.pop_front() else { break };
            for (reply, answer, _room) in p.answers {
                // A producer that gave up waiting (disconnected) no longer needs its
                // answer; its events are committed all the same.
                let _ = reply.send(answer);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.0.front().map(|p| p.deadline)
    }
}

/// Starts the writer task. It runs until `shutdown` is cancelled, then commits what
/// is already queued, refuses new work, answers its producers, and returns.
pub fn spawn(
    log: Box<dyn LogWriter>,
    hub: Arc<Hub>,
    fanout: Fanout,
    metrics: Arc<Metrics>,
    settings: WriterSettings,
    shutdown: CancellationToken,
) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let capacity = settings.queue_events.max(1);
    let (jobs, rx) = mpsc::channel(capacity);
    let room = Arc::new(Semaphore::new(capacity.min(Semaphore::MAX_PERMITS)));
    let handle = WriterHandle { jobs, room: Arc::clone(&room) };
    let task = tokio::spawn(run(log, hub, fanout, metrics, settings, Intake { rx, room }, shutdown));
    (handle, task)
}

/// The writer's end of the queue: the jobs, and the room that producers take from.
struct Intake {
    rx: mpsc::Receiver<Job>,
    room: Arc<Semaphore>,
}

async fn run(
    mut log: Box<dyn LogWriter>,
    hub: Arc<Hub>,
    fanout: Fanout,
    metrics: Arc<Metrics>,
    settings: WriterSettings,
    intake: Intake,
    shutdown: CancellationToken,
) {
    let Intake { mut rx, room } = intake;
    let mut published = hub.watch();
    let mut acks = Acks::default();
    let mut accepting = true;
    loop {
        let deadline = acks.next_deadline();
        let first = tokio::select! {
            job = rx.recv() => job,
            // The hub owns its watch sender and lives as long as this task's `hub`, so
            // `changed` never fails here.
            _ = published.changed(), if deadline.is_some() => {
                acks.release(hub.head());
                continue;
            }
            () = sleep_until(deadline), if deadline.is_some() => {
                acks.release(hub.head());
                continue;
            }
            () = shutdown.cancelled(), if accepting => {
                // Refuse new work; what is queued is still received, then `None`.
                room.close();
                rx.close();
                accepting = false;
                continue;
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
        commit_group(log.as_mut(), &hub, &fanout, &metrics, group, size, &mut acks).await;
        acks.release(hub.head());
    }
    while let Some(deadline) = acks.next_deadline() {
        tokio::select! {
            _ = published.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
        acks.release(hub.head());
    }
    tracing::info!("writer stopped; every queued event was committed");
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[tracing::instrument(skip_all, fields(jobs = group.len(), events = size))]
async fn commit_group(
    log: &mut dyn LogWriter,
    hub: &Hub,
    fanout: &Fanout,
    metrics: &Metrics,
    group: Vec<Job>,
    size: usize,
    acks: &mut Acks,
) {
    let mut events = Vec::with_capacity(size);
    let mut replies = Vec::with_capacity(group.len());
    for job in group {
        replies.push((job.events.len(), job.reply, job._room));
        events.extend(job.events);
    }
    match log.append(events).await {
        Ok(commit) => {
            // Duplicates answer with an earlier seq; wait for that too, so every seq a
            // producer is told is already in this node's hub.
            let upto = commit.outcomes.iter().map(|o| o.seq).max().unwrap_or(0);
            metrics.ingested(&commit.stored);
            match fanout {
                Fanout::Direct => hub.publish(&commit.stored),
                Fanout::Follower(follower) => follower.committed(commit.stored),
            }
            let mut outcomes = commit.outcomes.into_iter();
            let answers =
                replies.into_iter().map(|(n, reply, room)| (reply, Ok(outcomes.by_ref().take(n).collect()), room));
            acks.0.push_back(Pending { upto, deadline: Instant::now() + PUBLISH_WAIT, answers: answers.collect() });
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
            Fanout::Direct,
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
    async fn in_a_shared_log_producers_are_answered_once_their_commit_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1).unwrap());
        let hub = Arc::new(Hub::new(Bounds { oldest: 1, head: 0 }, 1000));
        // No announcements and no timer: only the hand-over can publish.
        let (_announce, heard) = tokio::sync::watch::channel(0);
        let signal = crate::store::CommitSignal::new(heard, tokio::spawn(std::future::pending()));
        let stop = CancellationToken::new();
        let (follower, follower_task) = crate::follower::spawn(
            Arc::clone(&hub),
            Arc::clone(&store),
            signal,
            std::time::Duration::from_secs(3600),
            stop.clone(),
        );
        let shutdown = CancellationToken::new();
        let (writer, task) = spawn(
            store.writer().await.unwrap(),
            Arc::clone(&hub),
            Fanout::Follower(follower),
            Arc::default(),
            WriterSettings::default(),
            shutdown.clone(),
        );
        for i in 0..20 {
            let seq = writer.append(one(&format!("s{i}"))).await.unwrap()[0].seq;
            assert!(hub.head() >= seq, "seq {seq} answered before the hub has it");
        }
        let again = writer.append(one("s3")).await.unwrap();
        assert_eq!((again[0].seq, again[0].duplicate), (4, true));
        shutdown.cancel();
        task.await.unwrap();
        stop.cancel();
        follower_task.await.unwrap();
        assert_eq!(hub.head(), 20);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1).unwrap();
        let hub = Arc::new(Hub::new(Bounds { oldest: 1, head: 0 }, 10));
        let settings = WriterSettings { queue_events: 2, max_group_events: 10 };
        let (writer, _task) = spawn(
            store.writer().await.unwrap(),
            hub,
            Fanout::Direct,
            Arc::default(),
            settings,
            CancellationToken::new(),
        );
        let mut three = one("a");
        three.extend(one("b"));
        three.extend(one("c"));
        assert!(matches!(writer.append(three).await, Err(AppendError::QueueFull)));
        assert_eq!(writer.append(one("d")).await.unwrap()[0].seq, 1);
    }
}
