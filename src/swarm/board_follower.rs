//! The task that keeps the boards (DESIGN §10): it follows the log behind the writer
//! with a cursor of its own, folds each step's swarm events into the stored rows they
//! change ([`super::board`]) and saves them with the seq they reach, in one
//! transaction. Ingest never waits for it: the write path is untouched, and a board
//! read lags the log by one fold step (milliseconds).
//!
//! It starts where the store's board seq says, so a restart refolds nothing and loses
//! nothing. With several nodes on one log each node runs it, and the store takes the
//! first save of each step ([`crate::store::Store::save_board`]); a node that was
//! overtaken skips to the seq saved. When retention prunes events before the board
//! folded them (the board was down for longer than the log is kept), it goes on from
//! the oldest event kept: the tasks those events told of keep the rows they had.
//!
//! It owns nothing else. [`BoardHandle`] tells readers how far the board has folded,
//! so `GET /api/tasks` can wait (briefly) to include what was just committed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::board::{Board, ids_named, winners};
use super::projection::SWARM_TYPES;
use crate::cursor::{Cursor, CursorError, Step};
use crate::filter::{Filter, FilterSpec};
use crate::hub::{Hub, ReadLimit};
use crate::store::{Store, StoreError};

/// What one fold step reads: a few thousand events is one transaction of a few
/// hundred rows.
const FOLD_LIMIT: ReadLimit = ReadLimit { max_events: 2_000, max_bytes: 4 * 1024 * 1024 };
/// How long the follower waits before trying again after the store failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How far the boards have folded the log, for readers.
#[derive(Clone)]
pub struct BoardHandle {
    folded: watch::Receiver<u64>,
}

impl BoardHandle {
    /// Waits until the board has folded the log up to `seq`, or `within` has passed;
    /// returns whether it has.
    pub(crate) async fn caught_up(&self, seq: u64, within: Duration) -> bool {
        let mut folded = self.folded.clone();
        matches!(tokio::time::timeout(within, folded.wait_for(|f| *f >= seq)).await, Ok(Ok(_)))
    }
}

/// Starts the follower at the board's stored seq.
pub(crate) fn spawn(
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> (BoardHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(0);
    let task = tokio::spawn(async move { run(hub, store, tx, shutdown).await });
    (BoardHandle { folded: rx }, task)
}

fn swarm_filter() -> Filter {
    Filter::from_spec(FilterSpec {
        types: SWARM_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        ..FilterSpec::default()
    })
    // A constant list of valid patterns.
    .expect("swarm types are valid patterns")
}

async fn run(hub: Arc<Hub>, store: Arc<dyn Store>, folded: watch::Sender<u64>, shutdown: CancellationToken) {
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = follow(&hub, &store, &folded) => outcome,
        };
        match outcome {
            Err(CursorError::Closed) => return,
            Err(CursorError::Store(e)) => {
                tracing::error!(error = %e, "the task board could not follow the log; will retry");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(RETRY_AFTER) => {}
                }
            }
            Ok(()) => {}
        }
    }
}

/// Follows the log from the stored board seq until the store fails or another node
/// saved first (then it returns `Ok` to be started again from the seq saved).
async fn follow(hub: &Arc<Hub>, store: &Arc<dyn Store>, folded: &watch::Sender<u64>) -> Result<(), CursorError> {
    let mut saved = store.board_seq().await?;
    let mut cursor = Cursor::new(Arc::clone(hub), Arc::clone(store), swarm_filter(), Some(saved));
    folded.send_replace(cursor.position());
    loop {
        // Up to the head as it is now, so that a head of non-swarm events is reported
        // as folded too; past it, wait for the next swarm event.
        let head = hub.head();
        let step = if cursor.position() >= head {
            cursor.next(FOLD_LIMIT).await?
        } else {
            cursor.next_until(head, FOLD_LIMIT).await?
        };
        let events = match step {
            Step::Events(events) => events,
            Step::Reset { oldest } => {
                tracing::warn!(oldest, board = saved, "retention pruned events the task board had not folded");
                Vec::new()
            }
        };
        let to = cursor.position();
        if !events.is_empty() {
            if !save(store.as_ref(), &events, saved, to).await? {
                tracing::debug!(from = saved, "another node saved the board first");
                return Ok(());
            }
            saved = to;
        }
        folded.send_replace(to);
    }
}

/// Folds `events` into the rows they touch and saves them as the step `from` → `to`.
async fn save(store: &dyn Store, events: &[Arc<crate::event::Event>], from: u64, to: u64) -> Result<bool, StoreError> {
    let (task_ids, mut agent_ids) = ids_named(events);
    let (tasks, _) = store.board_rows(task_ids.into_iter().collect(), Vec::new()).await?;
    agent_ids.extend(winners(&tasks));
    let (_, agents) = store.board_rows(Vec::new(), agent_ids.into_iter().collect()).await?;
    let mut board = Board::new(tasks, agents);
    for e in events {
        board.apply(e);
    }
    store.save_board(board.changes(from, to)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::NewEvent;
    use crate::store::Bounds;
    use crate::store::board::{BoardStatus, TaskQuery};
    use crate::store::sqlite::SqliteStore;

    fn task_event(id: &str, event_type: &str, task: &str) -> NewEvent {
        NewEvent {
            id: id.into(),
            event_type: event_type.into(),
            source: "test".into(),
            task_id: Some(task.into()),
            agent_id: None,
            data: r#"{"description":"d","reason":"r"}"#.into(),
        }
    }

    #[tokio::test]
    async fn the_board_follows_the_log_and_a_new_follower_continues_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 2).unwrap());
        let hub = Arc::new(Hub::new(Bounds { oldest: 1, head: 0 }, 16));
        let mut writer = store.writer().await.unwrap();
        let mut events: Vec<NewEvent> =
            (0..30).map(|i| task_event(&format!("c{i}"), "task.created", &format!("t{i}"))).collect();
        events.push(task_event("other", "system.info", "t0"));
        hub.publish(&writer.append(events).await.unwrap().stored);

        let stop = CancellationToken::new();
        let (board, task) = spawn(Arc::clone(&hub), Arc::clone(&store), stop.clone());
        assert!(board.caught_up(31, Duration::from_secs(10)).await, "a head of other events counts as folded");
        let all = TaskQuery { limit: 100, ..TaskQuery::default() };
        assert_eq!(store.list_tasks(all.clone()).await.unwrap().len(), 30);
        stop.cancel();
        task.await.unwrap();
        let saved = store.board_seq().await.unwrap();
        assert_eq!(saved, 31, "saved up to where the step read");

        // While no follower runs, more is committed; a new one folds only that.
        let failed = (0..5).map(|i| task_event(&format!("f{i}"), "task.failed", &format!("t{i}"))).collect();
        hub.publish(&writer.append(failed).await.unwrap().stored);
        let stop = CancellationToken::new();
        let (board, task) = spawn(Arc::clone(&hub), Arc::clone(&store), stop.clone());
        assert!(board.caught_up(36, Duration::from_secs(10)).await);
        let failed = TaskQuery { status: Some(BoardStatus::Failed), ..all };
        assert_eq!(store.list_tasks(failed).await.unwrap().len(), 5);
        stop.cancel();
        task.await.unwrap();
    }
}
