//! Storage: the only place with SQL.
//!
//! [`Store`] is the interface everything above storage uses; [`sqlite`] is the
//! embedded default and [`postgres`] the shared one, for several nodes on one log.
//! A store hands out exactly one [`LogWriter`] per node, owned by the writer task,
//! which assigns `seq` and commits; everything else only reads. Nothing above this
//! module knows which engine runs: what differs between one node and several is told
//! as capabilities, [`CommitFeed`] (who publishes commits to the hub) and
//! [`Leadership`] (whether this node runs the coordinator). [`open`] picks the engine.

pub mod board;
#[cfg(test)]
pub(crate) mod conformance;
pub mod postgres;
pub(crate) mod sql;
pub mod sqlite;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use self::board::{AgentQuery, BoardAgent, BoardChanges, BoardStatus, BoardTask, TaskQuery};
use crate::event::{CorruptData, Event, NewEvent};
use crate::filter::Filter;

/// Storage failures. Callers map them to 5xx; the cause is logged once, where handled.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Not a `#[source]`: the message already carries the server's words, which
    /// `tokio_postgres::Error` itself leaves out, and a chain would repeat the rest.
    #[error("postgres: {}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    #[error("postgres connection pool: {0}")]
    Pool(String),
    #[error("--database must be a postgres:// or postgresql:// URL: {0}")]
    BadUrl(String),
    #[error(transparent)]
    Corrupt(#[from] CorruptData),
    #[error("database schema version {found} is newer than this build knows ({known}); upgrade swarmfeed")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("could not prepare the data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The database file exists but cannot be used (not a database, unreadable): the
    /// path tells the operator which file to look at.
    #[error("{path} cannot be opened as a swarmfeed database: {source}")]
    File {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("storage worker stopped: {0}")]
    Worker(String),
    /// The store took longer than `--store-timeout` to answer (a stalled network):
    /// the statement was abandoned and its connection dropped.
    #[error("the store did not answer {what} within {after:?}")]
    TimedOut { what: &'static str, after: Duration },
}

/// What a storage failure means for a client, whichever engine raised it: the answer
/// it gets (DESIGN §6, issue "faults") and whether retrying later can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The disk under the store is full (SQLite's `SQLITE_FULL`, PostgreSQL's
    /// `disk_full`, `ENOSPC`): nothing was written; writes succeed again once space is
    /// freed, with no restart.
    OutOfSpace,
    /// The store takes no writes (a read-only file, a PostgreSQL standby or
    /// `default_transaction_read_only`).
    ReadOnly,
    /// The store did not answer: a lost or refused connection, a server shutting
    /// down, a busy pool. Reconnection is automatic.
    Unavailable,
    /// Anything else: a fault of this server or its data, for the log.
    Fault,
}

impl StoreError {
    /// Classifies this failure for the client's answer.
    pub fn condition(&self) -> Condition {
        match self {
            StoreError::Sqlite(e) | StoreError::File { source: e, .. } => sqlite::condition(e),
            StoreError::Postgres(e) => postgres::condition(e),
            StoreError::Pool(_) | StoreError::TimedOut { .. } => Condition::Unavailable,
            StoreError::DataDir { source, .. } if is_out_of_space(source) => Condition::OutOfSpace,
            StoreError::BadUrl(_)
            | StoreError::Corrupt(_)
            | StoreError::SchemaTooNew { .. }
            | StoreError::DataDir { .. }
            | StoreError::Worker(_) => Condition::Fault,
        }
    }
}

/// `ENOSPC` or `EDQUOT`: the file system (or the user's quota on it) is full.
fn is_out_of_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}

/// Sort order of a query, by seq.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// A read of the log: a filter, a seq window, a time window, an order and a limit.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub filter: Filter,
    /// Only events with seq greater than this.
    pub after: Option<u64>,
    /// Only events with seq less than this.
    pub before: Option<u64>,
    /// Only events committed at or after this time (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Only events committed at or before this time (ms since the epoch).
    pub to_ms: Option<i64>,
    pub order: Order,
    pub limit: usize,
    /// Only events whose words match this full-text search (DESIGN §10).
    pub text: Option<crate::search::SearchQuery>,
}

/// What committing one incoming event produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub id: String,
    pub seq: u64,
    /// The id was already in the log; nothing new was stored and `seq` is the original.
    pub duplicate: bool,
}

/// The result of committing a group.
#[derive(Debug, Default)]
pub struct Commit {
    /// One outcome per incoming event, in order.
    pub outcomes: Vec<Appended>,
    /// The events this commit stored, in seq order, encoded for viewers.
    pub stored: Vec<Arc<Event>>,
}

/// The first and last retained seq; both 0 for an empty log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    pub oldest: u64,
    pub head: u64,
}

/// Event counts of one time bucket and type, for `GET /api/summary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketCount {
    /// Start of the bucket, ms since the epoch: a multiple of the bucket's width.
    pub start_ms: i64,
    pub event_type: String,
    pub count: u64,
}

/// What one [`Store::index_for_search`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indexed {
    /// The index's position now: every event up to it is indexed or was pruned.
    pub position: u64,
    /// How many events it read and indexed.
    pub events: usize,
}

/// A token's stored record; the token itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub created_ms: i64,
    pub revoked: bool,
}

/// A browser session's stored record (DESIGN §9); the cookie's secret is never stored,
/// only its hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionRecord {
    /// The session's public id, for `GET /api/sessions` and `DELETE /api/sessions/{id}`.
    pub id: String,
    /// The token the session acts as.
    pub token_id: String,
    pub token_name: String,
    pub scope: String,
    pub created_ms: i64,
    pub last_used_ms: i64,
}

/// A session found by its cookie's hash, with the hash of its token, so the caller can
/// resolve the token (and its revocation) as if it had been presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLookup {
    pub session: SessionRecord,
    pub token_hash: String,
}

/// A login code taken (and so used up) by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenLoginCode {
    /// The hash of the token the code logs in as; `None` when that token was revoked.
    pub token_hash: Option<String>,
    pub expires_ms: i64,
}

/// An alert rule as the store keeps it (DESIGN §11). The store knows nothing of what
/// it means: `alert` checks it before it is stored and reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRuleRecord {
    pub id: String,
    pub name: String,
    /// The rule's filter, as the JSON of a `filter::FilterSpec`.
    pub filter: String,
    /// A threshold rule: at least `threshold` matches within `window_secs`.
    pub threshold: Option<u64>,
    pub window_secs: Option<u64>,
    /// An absence rule: no match for `absent_secs`.
    pub absent_secs: Option<u64>,
    pub created_ms: i64,
}

/// A webhook as stored (DESIGN §11): where it sends, what, and how far it got. The
/// secret is kept as it is: the leader signs with it. The API never shows it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRecord {
    pub id: String,
    pub url: String,
    /// The filter as `FilterSpec` JSON.
    pub filter: String,
    /// `standard` or `slack`.
    pub format: String,
    /// `whsec_<base64>`.
    pub secret: String,
    /// The last seq delivered (or passed over as not matching); delivery resumes after it.
    pub delivered_seq: u64,
    pub created_ms: i64,
    /// The HTTP status of the last attempt, when it got one.
    pub last_status: Option<u16>,
    /// Why the last attempt failed; `None` after a success.
    pub last_error: Option<String>,
    /// When the current run of failures began; `None` while deliveries succeed.
    pub failing_since_ms: Option<i64>,
    pub last_attempt_ms: Option<i64>,
}

/// What one delivery attempt of a webhook came to, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx: delivered up to `upto`, failures cleared.
    Delivered { upto: u64, status: u16 },
    /// Nothing matched up to `upto`: the position moves, nothing else.
    Passed { upto: u64 },
    /// The attempt failed; it will be made again.
    Failed { status: Option<u16>, error: String },
}

/// How a node's hub learns of commits.
pub enum CommitFeed {
    /// This node's writer is the only writer of the log: it publishes its own commits
    /// to the hub, straight after each one.
    OnlyWriter,
    /// Other nodes commit to the same log. A follower must read every commit back, in
    /// seq order, and publish it; the signal wakes it when any node commits.
    Shared(CommitSignal),
}

/// Wakes a follower when the log has grown, with the head some node committed.
///
/// A hint, not a record: signals may be coalesced or lost (a dropped connection), so a
/// follower also reads the log on a timer and never relies on the value alone.
pub struct CommitSignal {
    committed: watch::Receiver<u64>,
    /// The task that listens for commits; it stops when the signal is dropped.
    _listener: AbortOnDropHandle<()>,
}

impl CommitSignal {
    pub fn new(committed: watch::Receiver<u64>, listener: tokio::task::JoinHandle<()>) -> Self {
        CommitSignal { committed, _listener: AbortOnDropHandle::new(listener) }
    }

    /// The highest head any node is known to have committed.
    pub fn committed(&self) -> u64 {
        *self.committed.borrow()
    }

    /// Waits until a new commit is announced and returns the head it announced.
    /// Cancel-safe. Never returns if the listener has stopped for good.
    pub async fn changed(&mut self) -> u64 {
        if self.committed.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.committed.borrow_and_update()
    }
}

/// Wakes a node when another process (another node, or `swarmfeed token revoke`
/// against the shared store) may have revoked a token or ended a browser session.
///
/// A hint, like [`CommitSignal`]: it carries no token id, may coalesce several
/// revocations into one wake-up, and is lost while its connection is down; whoever
/// holds it re-reads the revoked tokens (and sessions) when it fires, and on a timer regardless
/// ([`crate::auth::follow_revocations`]).
pub struct RevocationSignal {
    notified: watch::Receiver<u64>,
    /// The task that listens for revocations; it stops when the signal is dropped.
    _listener: AbortOnDropHandle<()>,
}

impl RevocationSignal {
    pub fn new(notified: watch::Receiver<u64>, listener: tokio::task::JoinHandle<()>) -> Self {
        RevocationSignal { notified, _listener: AbortOnDropHandle::new(listener) }
    }

    /// Waits for the next wake-up. Cancel-safe. Never returns if the listener has
    /// stopped for good.
    pub async fn changed(&mut self) {
        if self.notified.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.notified.borrow_and_update();
    }
}

/// Whether this node is the one that runs the coordinator.
///
/// A single-node store is always the leader. A shared one holds a lock that at most
/// one node has at a time, and that frees itself when its holder dies, so another node
/// can take over. Clones share the one lock (the coordinator and the alert evaluator
/// follow the same election); it is given up when the last clone is dropped.
#[derive(Clone)]
pub struct Leadership {
    held: watch::Receiver<bool>,
    /// The task that holds (or waits for) the lock; dropping the last clone gives the
    /// lock up.
    _keeper: Option<Arc<AbortOnDropHandle<()>>>,
}

impl Leadership {
    /// The only node there is: always the leader.
    pub fn always() -> Self {
        Leadership { held: watch::channel(true).1, _keeper: None }
    }

    /// Leadership told by `held`, kept by the task `keeper`.
    pub(crate) fn kept_by(held: watch::Receiver<bool>, keeper: tokio::task::JoinHandle<()>) -> Self {
        Leadership { held, _keeper: Some(Arc::new(AbortOnDropHandle::new(keeper))) }
    }

    /// Another view of the same leadership, for a second task that acts only while
    /// this node leads (the webhooks' scheduler beside the coordinator). It keeps no
    /// lock of its own: it follows this one while this one lives.
    pub(crate) fn follower(&self) -> Self {
        Leadership { held: self.held.clone(), _keeper: None }
    }

    pub(crate) fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Waits until leadership is gained or lost and returns whether it is held now.
    /// Cancel-safe. Never returns when leadership cannot change.
    pub async fn changed(&mut self) -> bool {
        if self.held.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        *self.held.borrow_and_update()
    }
}

/// Opens the log: the SQLite file in `data_dir`, or the PostgreSQL database at
/// `database` when one is given, whose commits and reads are abandoned after
/// `timeout`. Migrates its schema.
///
/// # Errors
/// The store cannot be opened or reached, or its schema is newer than this build.
pub async fn open(
    data_dir: &Path,
    database: Option<&str>,
    read_connections: usize,
    timeout: Duration,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match database {
        Some(url) => Arc::new(postgres::PostgresStore::connect_with_timeout(url, read_connections, timeout).await?),
        None => {
            let dir = data_dir.to_path_buf();
            Arc::new(
                tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&dir, read_connections))
                    .await
                    .map_err(|e| StoreError::Worker(e.to_string()))??,
            )
        }
    })
}

/// The log's single writer. Owned by the writer task; not shared.
#[async_trait]
pub trait LogWriter: Send {
    /// Commits `events` in one durable transaction, assigning gapless seqs to the new
    /// ones and returning the original seq for ids already stored.
    ///
    /// # Errors
    /// The transaction failed and was rolled back: nothing of `events` is stored.
    async fn append(&mut self, events: Vec<NewEvent>) -> Result<Commit, StoreError>;
}

/// Read access to the log, and the token table.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Takes the one writer. Called once, by the writer task.
    ///
    /// # Errors
    /// The writer connection could not be opened.
    async fn writer(&self) -> Result<Box<dyn LogWriter>, StoreError>;

    /// How this node learns of commits (see [`CommitFeed`]).
    ///
    /// # Errors
    /// The listening connection could not be opened.
    async fn commit_feed(&self) -> Result<CommitFeed, StoreError>;

    /// This node's claim to run the coordinator (see [`Leadership`]). Held at once when
    /// no other node has it.
    ///
    /// # Errors
    /// The lock's connection could not be opened.
    async fn leadership(&self) -> Result<Leadership, StoreError>;

    /// # Errors
    /// The read failed.
    async fn query(&self, q: Query) -> Result<Vec<Arc<Event>>, StoreError>;

    /// # Errors
    /// The read failed.
    async fn get_by_seq(&self, seq: u64) -> Result<Option<Arc<Event>>, StoreError>;

    /// # Errors
    /// The read failed.
    async fn get_by_id(&self, id: &str) -> Result<Option<Arc<Event>>, StoreError>;

    /// # Errors
    /// The read failed.
    async fn bounds(&self) -> Result<Bounds, StoreError>;

    /// Counts per time bucket of `width_ms` (buckets start at multiples of it) and
    /// type, of events committed at or after `since_ms`, grouped in SQL.
    ///
    /// # Errors
    /// The read failed.
    async fn bucket_counts(&self, since_ms: i64, width_ms: i64) -> Result<Vec<BucketCount>, StoreError>;

    /// The last seq the search index has taken in; 0 for none.
    ///
    /// # Errors
    /// The read failed.
    async fn search_position(&self) -> Result<u64, StoreError>;

    /// Indexes for search up to `limit` of the events committed after `after` (the
    /// index's position) and records the new position, in one transaction: the last
    /// seq read, or the head when fewer than `limit` were left (so events retention
    /// pruned before they were indexed are passed over). With `drop_below`, also drops
    /// the index rows of events below it (the ones retention pruned). The words of each
    /// event are [`crate::search::document`]'s. Only the indexer calls it
    /// ([`crate::search::run_indexer`]); on SQLite it runs on a thread of its own at a
    /// lower CPU priority, so that indexing takes CPU time ingest leaves idle.
    ///
    /// # Errors
    /// The read or write failed; nothing of it is stored.
    async fn index_for_search(&self, after: u64, limit: usize, drop_below: Option<u64>) -> Result<Indexed, StoreError>;

    /// Stores a new token by the SHA-256 hash of its secret.
    ///
    /// # Errors
    /// The write failed.
    async fn insert_token(&self, record: TokenRecord, hash: String) -> Result<(), StoreError>;

    /// The token whose secret hashes to `hash`, if any (revoked ones included).
    ///
    /// # Errors
    /// The read failed.
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// How many tokens exist, revoked or not.
    ///
    /// # Errors
    /// The read failed.
    async fn token_count(&self) -> Result<u64, StoreError>;

    /// Every token, oldest first, revoked ones included.
    ///
    /// # Errors
    /// The read failed.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// Marks token `id` revoked and deletes its sessions and login codes; false when
    /// there is no such token or it already was.
    ///
    /// # Errors
    /// The write failed.
    async fn revoke_token(&self, id: &str) -> Result<bool, StoreError>;

    /// The seq of the first event committed at or after `ts_ms`, if any.
    ///
    /// # Errors
    /// The read failed.
    async fn first_seq_since(&self, ts_ms: i64) -> Result<Option<u64>, StoreError>;

    /// The seq of the last event committed at or before `ts_ms` (the latest commit
    /// time not after it; of several at that time, the highest seq), if any: where the
    /// swarm stood at that time. One step down the time index, where
    /// [`Store::first_seq_since`]'s exact minimum may walk the log (0.5 s near the head
    /// of 10 million events, docs/BENCHMARKS.md).
    ///
    /// # Errors
    /// The read failed.
    async fn last_seq_at_or_before(&self, ts_ms: i64) -> Result<Option<u64>, StoreError>;

    /// Deletes up to `limit` of the oldest events with seq below `before`; returns how
    /// many went. Retention calls it in small steps so the writer is never held up for
    /// long. Each deleted event's id, seq and commit time stay behind in a compact
    /// index, so a producer that re-sends the id is still answered with the original
    /// seq (DESIGN §6), until [`Store::forget_pruned_ids`] lets it go.
    ///
    /// # Errors
    /// The write failed.
    async fn delete_before(&self, before: u64, limit: usize) -> Result<u64, StoreError>;

    /// Forgets the ids of pruned events committed before `before_ms`: re-sending one
    /// of those stores it anew. Returns how many were forgotten.
    ///
    /// # Errors
    /// The write failed.
    async fn forget_pruned_ids(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// The last seq folded into the task and agent boards; 0 before any.
    ///
    /// # Errors
    /// The read failed.
    async fn board_seq(&self) -> Result<u64, StoreError>;

    /// The board rows of those of `task_ids` and `agent_ids` that have one.
    ///
    /// # Errors
    /// The read failed.
    async fn board_rows(
        &self,
        task_ids: Vec<String>,
        agent_ids: Vec<String>,
    ) -> Result<(Vec<BoardTask>, Vec<BoardAgent>), StoreError>;

    /// Writes folded rows and moves the board's seq from `changes.from_seq` to
    /// `changes.to_seq`, in one transaction. Returns false, having written nothing,
    /// when the board's seq is no longer `from_seq` (another node saved first).
    ///
    /// # Errors
    /// The write failed and was rolled back.
    async fn save_board(&self, changes: BoardChanges) -> Result<bool, StoreError>;

    /// Tasks on the board, newest first (by their `task.created`).
    ///
    /// # Errors
    /// The read failed.
    async fn list_tasks(&self, q: TaskQuery) -> Result<Vec<BoardTask>, StoreError>;

    /// How many tasks of each status match `q`'s agent and text.
    ///
    /// # Errors
    /// The read failed.
    async fn count_tasks(&self, q: TaskQuery) -> Result<Vec<(BoardStatus, u64)>, StoreError>;

    /// Agents on the board, by id.
    ///
    /// # Errors
    /// The read failed.
    async fn list_agents(&self, q: AgentQuery) -> Result<Vec<BoardAgent>, StoreError>;

    /// Removes finished tasks created before `before_seq` from the board: retention
    /// pruned their story, so the board lets them go too. Unfinished tasks and agents
    /// stay. Returns how many went.
    ///
    /// # Errors
    /// The write failed.
    async fn prune_board(&self, before_seq: u64) -> Result<u64, StoreError>;

    /// Stores a snapshot of the swarm projection folded up to `seq` under the limits
    /// named `limits` (`swarm::history`), unless that seq has one already (another node
    /// saved it first), then keeps the newest `keep` of those limits and deletes the rest.
    ///
    /// # Errors
    /// The write failed and was rolled back.
    async fn save_swarm_snapshot(&self, limits: &str, seq: u64, body: Vec<u8>, keep: usize) -> Result<(), StoreError>;

    /// The newest swarm snapshot folded under `limits` up to `seq` or before: its seq
    /// and body.
    ///
    /// # Errors
    /// The read failed.
    async fn swarm_snapshot_at_or_before(&self, limits: &str, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Deletes the swarm snapshots no fold can start from once retention kept only the
    /// events from `oldest` on: those folded up to a seq below `oldest - 1`, whose next
    /// events are gone. Returns how many went.
    ///
    /// # Errors
    /// The write failed.
    async fn prune_swarm_snapshots(&self, oldest: u64) -> Result<u64, StoreError>;

    /// Stores a new browser session by the SHA-256 hash of its cookie's secret.
    ///
    /// # Errors
    /// The write failed.
    async fn insert_session(&self, id: &str, hash: &str, token_id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// The session whose cookie secret hashes to `hash`, if it exists and its token is
    /// not revoked.
    ///
    /// # Errors
    /// The read failed.
    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionLookup>, StoreError>;

    /// Records that session `id` was used at `now_ms`.
    ///
    /// # Errors
    /// The write failed.
    async fn touch_session(&self, id: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Deletes session `id`; false when there was none.
    ///
    /// # Errors
    /// The write failed.
    async fn delete_session(&self, id: &str) -> Result<bool, StoreError>;

    /// Every session, newest first.
    ///
    /// # Errors
    /// The read failed.
    async fn list_sessions(&self) -> Result<Vec<SessionRecord>, StoreError>;

    /// Deletes sessions last used before `idle_before_ms` or created before
    /// `created_before_ms`, and login codes that expired before `now_ms`; returns how
    /// many rows went.
    ///
    /// # Errors
    /// The write failed.
    async fn prune_sessions(&self, idle_before_ms: i64, created_before_ms: i64, now_ms: i64)
    -> Result<u64, StoreError>;

    /// Stores a one-time login code by its hash.
    ///
    /// # Errors
    /// The write failed.
    async fn insert_login_code(
        &self,
        hash: &str,
        token_id: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError>;

    /// Deletes the login code with `hash` and returns what it was, so that of two nodes
    /// taking the same code at once, exactly one gets it.
    ///
    /// # Errors
    /// The write failed.
    async fn take_login_code(&self, hash: &str) -> Result<Option<TakenLoginCode>, StoreError>;

    /// Stores a new alert rule, unless `max` rules exist already; false then.
    ///
    /// # Errors
    /// The write failed.
    async fn insert_alert_rule(&self, rule: AlertRuleRecord, max: usize) -> Result<bool, StoreError>;

    /// Every alert rule, oldest first.
    ///
    /// # Errors
    /// The read failed.
    async fn list_alert_rules(&self) -> Result<Vec<AlertRuleRecord>, StoreError>;

    /// Deletes alert rule `id`; false when there was none.
    ///
    /// # Errors
    /// The write failed.
    async fn delete_alert_rule(&self, id: &str) -> Result<bool, StoreError>;

    /// Stores a new webhook.
    ///
    /// # Errors
    /// The write failed.
    async fn insert_webhook(&self, record: WebhookRecord) -> Result<(), StoreError>;

    /// Every webhook, oldest first.
    ///
    /// # Errors
    /// The read failed.
    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError>;

    /// Deletes webhook `id`; false when there was none.
    ///
    /// # Errors
    /// The write failed.
    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError>;

    /// Records an attempt's outcome for webhook `id` at `now_ms`. The stored seq never
    /// moves back, so a node that lost leadership mid-delivery cannot undo its
    /// successor's progress. False when the webhook no longer exists.
    ///
    /// # Errors
    /// The write failed.
    async fn record_webhook(&self, id: &str, outcome: &WebhookOutcome, now_ms: i64) -> Result<bool, StoreError>;

    /// A wake-up for revocations made by other processes on this same store, when the
    /// engine can send one (PostgreSQL: NOTIFY from [`Store::revoke_token`] and
    /// [`Store::delete_session`]). `None`
    /// (the default, and SQLite's answer) leaves the periodic re-read of revoked
    /// tokens as the only way this node learns of them.
    ///
    /// # Errors
    /// The listening connection could not be opened.
    async fn revocation_feed(&self) -> Result<Option<RevocationSignal>, StoreError> {
        Ok(None)
    }

    /// The sessions among `hashes` that exist and whose token is not revoked, each
    /// with its hash: [`Store::session_by_hash`] for many at once, for the periodic
    /// look at the sessions of a node's open streams. The default asks one by one,
    /// which costs SQLite little; PostgreSQL answers in one round trip.
    ///
    /// # Errors
    /// The read failed.
    async fn sessions_by_hashes(&self, hashes: &[String]) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let mut found = Vec::new();
        for hash in hashes {
            if let Some(lookup) = self.session_by_hash(hash).await? {
                found.push((hash.clone(), lookup.session));
            }
        }
        Ok(found)
    }
}
