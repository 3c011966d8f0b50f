//! The follower: when several nodes write one log, the one task that publishes commits
//! to this node's hub.
//!
//! With a single writer, the writer publishes each of its commits itself. When other
//! nodes commit to the same log that would be wrong: this node's commit need not
//! continue its hub's head (another node may have committed the seqs in between, and
//! this node has not read them yet), and the head must never skip or go back. So in a
//! shared log every commit, this node's or another's, reaches the hub here, strictly
//! in seq order: the follower reads the committed events after the hub's head from the
//! store and publishes them. It wakes on the store's commit signal (another node
//! committed), on a hand-over from this node's writer, and on a timer, so that a lost
//! signal delays an event by at most one tick and never loses it.
//!
//! The writer hands over what it committed, so that a commit that does continue the
//! head (always, with one node) is published from memory without a read. The writer
//! answers its producers only once the follower has published their commit.
//!
//! Owns the publishing side of the hub in a shared log; not the store's connections.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::hub::Hub;
use crate::store::{CommitSignal, Order, Query, Store, StoreError};

/// How often the follower reads the log even when nothing announced a commit: the
/// longest a lost announcement can delay an event.
pub(crate) const CATCH_UP_INTERVAL: Duration = Duration::from_millis(500);
/// Commits the writer may hand over before the follower takes them; beyond it they are
/// read back from the store instead.
const HANDOVER_COMMITS: usize = 64;
/// Most events one read of the store takes.
const READ_LIMIT: usize = 5_000;
/// Pause after a failed read, so a database outage is not hammered.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// The writer's way to hand its commits to the follower.
#[derive(Clone)]
pub struct FollowerHandle {
    commits: mpsc::Sender<Vec<Arc<Event>>>,
}

impl FollowerHandle {
    /// Hands over events this node just committed, in seq order. Never waits.
    pub fn committed(&self, events: Vec<Arc<Event>>) {
        if events.is_empty() {
            return;
        }
        // Full: the follower is behind and will read these from the store anyway.
        // Closed: it has stopped, on shutdown. Neither loses an event.
        let _ = self.commits.try_send(events);
    }
}

/// Starts the follower; it runs until `shutdown` is cancelled.
pub(crate) fn spawn(
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    signal: CommitSignal,
    catch_up: Duration,
    shutdown: CancellationToken,
) -> (FollowerHandle, tokio::task::JoinHandle<()>) {
    let (commits, handed) = mpsc::channel(HANDOVER_COMMITS);
    let follower = Follower { hub, store, signal, handed_over: VecDeque::new(), known: 0 };
    let task = tokio::spawn(follower.run(handed, catch_up, shutdown));
    (FollowerHandle { commits }, task)
}

struct Follower {
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    signal: CommitSignal,
    /// This node's commits not yet published, in seq order; at most
    /// [`HANDOVER_COMMITS`] (older ones are dropped and read back instead).
    handed_over: VecDeque<Vec<Arc<Event>>>,
    /// The highest seq known to be committed, from signals and hand-overs.
    known: u64,
}

impl Follower {
    async fn run(
        mut self,
        mut handed: mpsc::Receiver<Vec<Arc<Event>>>,
        catch_up: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(catch_up);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let read_anyway = tokio::select! {
                () = shutdown.cancelled() => break,
                head = self.signal.changed() => {
                    self.known = self.known.max(head);
                    false
                }
                Some(events) = handed.recv() => {
                    self.take(events);
                    while let Ok(events) = handed.try_recv() {
                        self.take(events);
                    }
                    false
                }
                _ = tick.tick() => true,
            };
            if let Err(e) = self.catch_up(read_anyway).await {
                tracing::error!(error = %e, "follower could not read the log; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
        tracing::info!(head = self.hub.head(), "follower stopped");
    }

    fn take(&mut self, events: Vec<Arc<Event>>) {
        let Some(last) = events.last() else { return };
        self.known = self.known.max(last.seq);
        if self.handed_over.len() == HANDOVER_COMMITS {
            self.handed_over.pop_front();
        }
        self.handed_over.push_back(events);
    }

    /// Publishes everything committed after the hub's head, in order: hand-overs that
    /// continue the head as they are, the rest read from the store. Reads the store at
    /// least once when `read_anyway` (the timer), else only while the head is behind
    /// what is known to be committed.
    async fn catch_up(&mut self, mut read_anyway: bool) -> Result<(), StoreError> {
        loop {
            let head = self.hub.head();
            while self.handed_over.front().is_some_and(|c| c.last().is_none_or(|e| e.seq <= head)) {
                self.handed_over.pop_front();
            }
            if let Some(commit) = self.handed_over.front()
                && commit[0].seq == head + 1
            {
                self.hub.publish(commit);
                self.handed_over.pop_front();
                continue;
            }
            if !read_anyway && head >= self.known {
                return Ok(());
            }
            let events = self
                .store
                .query(Query { after: Some(head), order: Order::Asc, limit: READ_LIMIT, ..Query::default() })
                .await?;
            let Some(last) = events.last() else { return Ok(()) };
            self.known = self.known.max(last.seq);
            // The store shows a gapless prefix of the log, so these continue the head.
            self.hub.publish(&events);
            // A full read may have left more behind it.
            read_anyway = events.len() == READ_LIMIT;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::store::conformance::new_event;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Bounds, LogWriter};
    use tokio::sync::watch;

    const WAIT: Duration = Duration::from_secs(5);

    fn batch(from: usize, n: usize) -> Vec<NewEvent> {
        (from..from + n).map(|i| new_event(&format!("e{i}"), "a.b")).collect()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        hub: Arc<Hub>,
        /// Stands in for the other nodes: commits the hub hears of only through the
        /// store and the signal.
        writer: Box<dyn LogWriter>,
        announce: watch::Sender<u64>,
        handle: FollowerHandle,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    async fn fixture(catch_up: Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 2).unwrap());
        let hub = Arc::new(Hub::new(Bounds { oldest: 1, head: 0 }, 100));
        let writer = store.writer().await.unwrap();
        let (announce, heard) = watch::channel(0);
        let signal = CommitSignal::new(heard, tokio::spawn(std::future::pending()));
        let shutdown = CancellationToken::new();
        let (handle, task) = spawn(Arc::clone(&hub), store, signal, catch_up, shutdown.clone());
        Fixture { _dir: dir, hub, writer, announce, handle, shutdown, task }
    }

    /// Every seq the hub publishes, in order, until the head reaches `upto`.
    async fn published(hub: &Hub, upto: u64) -> Vec<u64> {
        let mut head = hub.watch();
        let mut seen = Vec::new();
        let mut last = 0;
        tokio::time::timeout(WAIT, async {
            loop {
                let now = *head.borrow_and_update();
                if now > last {
                    let mut out = Vec::new();
                    let all = crate::hub::ReadLimit { max_events: 10_000, max_bytes: usize::MAX };
                    hub.read_after(last, now, &crate::filter::Filter::default(), all, &mut out);
                    seen.extend(out.iter().map(|e| e.seq));
                    last = now;
                }
                if last >= upto {
                    return;
                }
                head.changed().await.unwrap();
            }
        })
        .await
        .expect("published in time");
        seen
    }

    #[tokio::test]
    async fn commits_of_other_nodes_are_published_in_order_when_announced() {
        let mut f = fixture(Duration::from_secs(3600)).await;
        let publishing = tokio::spawn({
            let hub = Arc::clone(&f.hub);
            async move { published(&hub, 30).await }
        });
        for chunk in 0..3 {
            let c = f.writer.append(batch(chunk * 10, 10)).await.unwrap();
            f.announce.send_replace(c.stored.last().unwrap().seq);
        }
        assert_eq!(publishing.await.unwrap(), (1..=30).collect::<Vec<_>>());
        f.shutdown.cancel();
        f.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_lost_announcement_is_caught_up_by_the_timer() {
        let mut f = fixture(Duration::from_millis(50)).await;
        f.writer.append(batch(0, 5)).await.unwrap();
        assert_eq!(published(&f.hub, 5).await, vec![1, 2, 3, 4, 5]);
        f.shutdown.cancel();
        f.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_handed_over_commit_waits_for_the_seqs_before_it() {
        let mut f = fixture(Duration::from_secs(3600)).await;
        // Another node commits 1..=4 unannounced; this node then commits 5..=6 and
        // hands them over. Publishing 5 first would skip 1..=4.
        f.writer.append(batch(0, 4)).await.unwrap();
        let mine = f.writer.append(batch(4, 2)).await.unwrap();
        f.handle.committed(mine.stored);
        assert_eq!(published(&f.hub, 6).await, vec![1, 2, 3, 4, 5, 6]);
        f.shutdown.cancel();
        f.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_handed_over_commit_is_published_without_an_announcement_or_a_tick() {
        let mut f = fixture(Duration::from_secs(3600)).await;
        let c = f.writer.append(batch(0, 3)).await.unwrap();
        f.handle.committed(c.stored);
        assert_eq!(published(&f.hub, 3).await, vec![1, 2, 3]);
        f.shutdown.cancel();
        f.task.await.unwrap();
    }
}
