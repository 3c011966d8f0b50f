//! The embedded store: one SQLite file in WAL mode with `synchronous=FULL`, so an
//! acknowledged event survives a power cut.
//!
//! Owns the schema and its migrations, the single write connection (handed to the
//! writer task as [`SqliteWriter`]), the checkpointer thread that keeps the WAL short,
//! the search index (a second file, `search.db`, attached to every reader) and the
//! low-priority thread that writes it ([`SearchWriter`]), and a small pool of
//! read-only connections. Every call into SQLite runs on the blocking pool or one of
//! those threads, never on the async runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::board::{
    AGENT_COLUMNS, AgentQuery, AgentRow, BoardAgent, BoardChanges, BoardStatus, BoardTask, TASK_COLUMNS, TaskQuery,
    TaskRow, agent_args, count_tasks_sql, list_agents_sql, list_tasks_sql, task_args, to_sql_int, upsert_agent_sql,
    upsert_task_sql,
};
use super::sql::{
    ALERT_RULE_COLUMNS, Arg, EVENT_COLUMNS, SESSION_COLUMNS, TOKEN_COLUMNS, TextSearch, WEBHOOK_COLUMNS, query_sql,
};
use super::{
    AlertRuleRecord, Appended, Bounds, BucketCount, Commit, CommitFeed, Condition, Indexed, Leadership, LogWriter,
    Query, SessionLookup, SessionRecord, Store, StoreError, TakenLoginCode, TokenRecord, WebhookOutcome, WebhookRecord,
};
use crate::event::{Event, EventParts, NewEvent, format_timestamp};

/// File name of the database inside the data directory.
pub(crate) const DB_FILE: &str = "swarmfeed.db";

/// File name of the search index inside the data directory. A database of its own, so
/// that the indexer writing it never takes the log's write lock from the writer (in
/// one file, every index batch would make a commit wait), and so that it can skip the
/// fsync of each commit: it is derived from the log, and its position is stored in
/// the same transactions as its rows, so a power cut costs the last batches, which are
/// indexed again, never a row without its position or a position without its rows.
pub(crate) const SEARCH_FILE: &str = "search.db";

/// Default number of read-only connections; reads beyond it wait for one.
pub(crate) const DEFAULT_READ_CONNECTIONS: usize = 4;

/// Events the writer commits between two checkpoints: about 1 000 WAL pages (4 MiB),
/// where SQLite's own automatic checkpoint would run.
const CHECKPOINT_EVERY_EVENTS: u64 = 10_000;

/// How long a connection waits for SQLite's lock before failing, ms. Only token writes
/// and a second process ever contend with the writer.
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
/// Append new steps; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: the log, its head counter, and tokens.
    r#"
    CREATE TABLE events (
        seq        INTEGER PRIMARY KEY,
        id         TEXT    NOT NULL UNIQUE,
        event_type TEXT    NOT NULL,
        source     TEXT    NOT NULL,
        task_id    TEXT,
        agent_id   TEXT,
        ts_ms      INTEGER NOT NULL,
        data       TEXT    NOT NULL
    );
    CREATE INDEX events_by_type   ON events (event_type, seq);
    CREATE INDEX events_by_task   ON events (task_id, seq)  WHERE task_id IS NOT NULL;
    CREATE INDEX events_by_agent  ON events (agent_id, seq) WHERE agent_id IS NOT NULL;
    CREATE INDEX events_by_source ON events (source, seq);
    CREATE INDEX events_by_time   ON events (ts_ms);
    -- The last seq ever assigned. Kept apart from MAX(seq) so that retention deleting
    -- every event never lets seq start over.
    CREATE TABLE log_head (
        one  INTEGER PRIMARY KEY CHECK (one = 1),
        head INTEGER NOT NULL
    );
    INSERT INTO log_head (one, head) VALUES (1, 0);
    CREATE TABLE tokens (
        id         TEXT    PRIMARY KEY,
        name       TEXT    NOT NULL,
        scope      TEXT    NOT NULL,
        hash       TEXT    NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        revoked_ms INTEGER
    );
    "#,
    // 2: browser sessions and one-time login codes (DESIGN §9), both by the hash of
    // their secret. Each belongs to a token and goes when the token is revoked.
    r#"
    CREATE TABLE sessions (
        id           TEXT    PRIMARY KEY,
        hash         TEXT    NOT NULL UNIQUE,
        token_id     TEXT    NOT NULL REFERENCES tokens (id),
        created_ms   INTEGER NOT NULL,
        last_used_ms INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_token ON sessions (token_id);
    CREATE TABLE login_codes (
        hash       TEXT    PRIMARY KEY,
        token_id   TEXT    NOT NULL REFERENCES tokens (id),
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE INDEX login_codes_by_token ON login_codes (token_id);
    "#,
    // 3: the ids of events retention pruned, so that re-sending one still answers its
    // original seq for --idempotency-days (DESIGN §6).
    r#"
    CREATE TABLE pruned_ids (
        id    TEXT    PRIMARY KEY,
        seq   INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX pruned_ids_by_time ON pruned_ids (ts_ms);
    "#,
    // 4: alert rules (DESIGN §11). Their state is not kept here: it is folded from
    // the log's alert events and a window of recent events.
    r#"
    CREATE TABLE alert_rules (
        id          TEXT    PRIMARY KEY,
        name        TEXT    NOT NULL,
        filter      TEXT    NOT NULL,
        threshold   INTEGER,
        window_secs INTEGER,
        absent_secs INTEGER,
        created_ms  INTEGER NOT NULL
    );
    "#,
    // 5: webhooks (DESIGN §11), each a durable cursor: its filter, its secret (a
    // signing key, kept so the leader can sign) and the last seq it delivered.
    r#"
    CREATE TABLE webhooks (
        id               TEXT    PRIMARY KEY,
        url              TEXT    NOT NULL,
        filter           TEXT    NOT NULL,
        format           TEXT    NOT NULL,
        secret           TEXT    NOT NULL,
        delivered_seq    INTEGER NOT NULL,
        created_ms       INTEGER NOT NULL,
        last_status      INTEGER,
        last_error       TEXT,
        failing_since_ms INTEGER,
        last_attempt_ms  INTEGER
    );
    "#,
    // 6: the task and agent boards (DESIGN §10), folded from the log behind the
    // writer; `board_head.seq` is the last seq folded into them (see `store::board`).
    r#"
    CREATE TABLE board_head (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq INTEGER NOT NULL
    );
    INSERT INTO board_head (one, seq) VALUES (1, 0);
    CREATE TABLE board_tasks (
        task_id        TEXT    PRIMARY KEY,
        description    TEXT    NOT NULL,
        status         TEXT    NOT NULL,
        created_seq    INTEGER NOT NULL UNIQUE,
        created_ms     INTEGER NOT NULL,
        updated_ms     INTEGER NOT NULL,
        agent_id       TEXT,
        bid_sats       INTEGER,
        bids           INTEGER NOT NULL,
        retry_of       TEXT,
        reason         TEXT,
        auction_closed INTEGER NOT NULL
    );
    CREATE INDEX board_tasks_by_status ON board_tasks (status, created_seq);
    CREATE INDEX board_tasks_by_agent  ON board_tasks (agent_id, created_seq) WHERE agent_id IS NOT NULL;
    CREATE TABLE board_agents (
        agent_id     TEXT    PRIMARY KEY,
        name         TEXT    NOT NULL,
        status       TEXT    NOT NULL,
        capabilities TEXT    NOT NULL,
        tasks_done   INTEGER NOT NULL,
        tasks_failed INTEGER NOT NULL,
        sats_earned  INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        open_tasks   INTEGER NOT NULL,
        reported     TEXT
    );
    "#,
    // 7: nothing here. PostgreSQL's step 7 is its search table; SQLite keeps its search
    // index in a file of its own (`SEARCH_MIGRATIONS`). Empty, so that a step's number
    // means the same in both stores.
    "",
    // 8: snapshots of the swarm projection (`swarm::history`), every so many events,
    // so that the swarm at any past seq is the nearest snapshot plus a short fold.
    // `limits` names the projection limits it was folded under: only a fold under the
    // same limits may start from it.
    r#"
    CREATE TABLE swarm_snapshots (
        limits TEXT    NOT NULL,
        seq    INTEGER NOT NULL,
        body   BLOB    NOT NULL,
        UNIQUE (limits, seq)
    );
    "#,
    // 9: the board's reads by time and by original (DESIGN §10): `GET /api/tasks?within=`
    // (the failed tasks of the last day) and a task page's list of its retries, each
    // an index range rather than a scan of every task the retained log mentions.
    r#"
    CREATE INDEX board_tasks_by_update   ON board_tasks (status, updated_ms);
    CREATE INDEX board_tasks_by_retry_of ON board_tasks (retry_of) WHERE retry_of IS NOT NULL;
    "#,
];

/// The search database's migrations, counted by its own `user_version`. Deleting the
/// file is always safe: it is rebuilt from the log from seq 0.
const SEARCH_MIGRATIONS: &[&str] = &[
    // 1: the words of each event (rowid = seq), contentless: the text lives in the
    // log, the index only says which seqs hold which words. `contentless_delete` lets
    // the rows of pruned events go. The words come split and lowercased by
    // `crate::search`; `unicode61` without diacritic folding splits them no further,
    // as PostgreSQL's `simple` configuration does not.
    r#"
    CREATE VIRTUAL TABLE event_text USING fts5(
        words, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 0'
    );
    CREATE TABLE search_position (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq INTEGER NOT NULL
    );
    INSERT INTO search_position (one, seq) VALUES (1, 0);
    "#,
];

fn session_from_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: r.get(0)?,
        token_id: r.get(1)?,
        token_name: r.get(2)?,
        scope: r.get(3)?,
        created_ms: r.get(4)?,
        last_used_ms: r.get(5)?,
    })
}

fn alert_rule_from_row(r: &Row<'_>) -> rusqlite::Result<AlertRuleRecord> {
    let secs = |i: usize| r.get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
    Ok(AlertRuleRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        filter: r.get(2)?,
        threshold: secs(3)?,
        window_secs: secs(4)?,
        absent_secs: secs(5)?,
        created_ms: r.get(6)?,
    })
}

fn webhook_from_row(r: &Row<'_>) -> rusqlite::Result<WebhookRecord> {
    Ok(WebhookRecord {
        id: r.get(0)?,
        url: r.get(1)?,
        filter: r.get(2)?,
        format: r.get(3)?,
        secret: r.get(4)?,
        delivered_seq: r.get::<_, i64>(5)? as u64,
        created_ms: r.get(6)?,
        last_status: r.get::<_, Option<i64>>(7)?.and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(8)?,
        failing_since_ms: r.get(9)?,
        last_attempt_ms: r.get(10)?,
    })
}

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    Ok(TokenRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        scope: r.get(2)?,
        created_ms: r.get(3)?,
        revoked: r.get::<_, Option<i64>>(4)?.is_some(),
    })
}

/// The SQLite store.
pub struct SqliteStore {
    path: PathBuf,
    readers: Arc<ReadPool>,
    writer_taken: AtomicBool,
    /// The thread that writes the search index; see [`SearchWriter`].
    indexer: SearchWriter,
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/swarmfeed.db`, migrating its schema.
    /// Blocking: call it from a blocking context or before serving.
    ///
    /// # Errors
    /// The directory or database cannot be created or opened, or its schema is newer
    /// than this build.
    pub fn open(data_dir: &Path, read_connections: usize) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|source| StoreError::DataDir { path: data_dir.display().to_string(), source })?;
        let path = data_dir.join(DB_FILE);
        // SQLite's own messages ("file is not a database") do not say which file.
        let named = |e: StoreError| match e {
            StoreError::Sqlite(source) => StoreError::File { path: path.display().to_string(), source },
            other => other,
        };
        let mut conn = open_rw(&path).map_err(named)?;
        migrate(&mut conn).map_err(named)?;
        let head: i64 = conn.query_row("SELECT head FROM log_head", [], |r| r.get(0)).map_err(|e| named(e.into()))?;
        drop(conn);
        let search_path = data_dir.join(SEARCH_FILE);
        let search_named = |e: StoreError| match e {
            StoreError::Sqlite(source) => StoreError::File { path: search_path.display().to_string(), source },
            other => other,
        };
        let mut search = open_search(&search_path).map_err(search_named)?;
        migrate_search(&mut search, head).map_err(search_named)?;
        drop(search);
        let readers = (0..read_connections.max(1))
            .map(|_| open_ro(&path, &search_path))
            .collect::<Result<Vec<_>, _>>()
            .map_err(named)?;
        let indexer = SearchWriter::start(&search_path, &path)?;
        Ok(SqliteStore {
            path,
            readers: Arc::new(ReadPool { permits: Arc::new(Semaphore::new(readers.len())), idle: Mutex::new(readers) }),
            writer_taken: AtomicBool::new(false),
            indexer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn write<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&mut open_rw(&path)?))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

/// What an SQLite error means for a client (see [`Condition`]).
pub(crate) fn condition(e: &rusqlite::Error) -> Condition {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        // SQLITE_FULL; an I/O error while writing is how some file systems report
        // ENOSPC too, but it can also mean a failing disk, so it stays a fault.
        Some(ErrorCode::DiskFull) => Condition::OutOfSpace,
        Some(ErrorCode::ReadOnly) => Condition::ReadOnly,
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Condition::Unavailable,
        _ => Condition::Fault,
    }
}

fn open_rw(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))?;
    // WAL lets readers run beside the writer; FULL makes each commit durable before
    // it is acknowledged (DESIGN §5).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A read-only connection to the log, with the search index attached as `search`
/// (read-only too: an attached database takes the main one's open flags).
fn open_ro(path: &Path, search_path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))?;
    let search = search_path.to_str().ok_or_else(|| StoreError::DataDir {
        path: search_path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8"),
    })?;
    conn.execute("ATTACH DATABASE ?1 AS search", [search])?;
    Ok(conn)
}

/// The search index's connection. `synchronous=NORMAL`: see [`SEARCH_FILE`].
fn open_search(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// Migrates the search database. An index ahead of the log (`head`) belongs to
/// another log, the database file having been replaced beside it: it is emptied, to be
/// rebuilt from seq 0.
fn migrate_search(conn: &mut Connection, head: i64) -> Result<(), StoreError> {
    let known = SEARCH_MIGRATIONS.len() as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for step in SEARCH_MIGRATIONS.iter().skip(found as usize) {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    let position: i64 = tx.query_row("SELECT seq FROM search_position", [], |r| r.get(0))?;
    if position > head {
        tracing::warn!(position, head, "the search index is ahead of the log; rebuilding it");
        tx.execute("INSERT INTO event_text (event_text) VALUES ('delete-all')", [])?;
        tx.execute("UPDATE search_position SET seq = 0", [])?;
    }
    tx.commit()?;
    Ok(())
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(version = i + 1, "migrating database schema");
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", known)?;
    tx.commit()?;
    Ok(())
}

/// Read-only connections shared by every reader.
struct ReadPool {
    /// One permit per idle connection: holding a permit guarantees one is in `idle`.
    permits: Arc<Semaphore>,
    /// Locked only to push or pop, never across an await.
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let permit: OwnedSemaphorePermit =
            Arc::clone(&self.permits).acquire_owned().await.map_err(|e| StoreError::Worker(e.to_string()))?;
        let pool = Arc::clone(self);
        // The connection goes back to the pool inside the blocking closure, so a caller
        // that stops waiting (a viewer that disconnects) never leaks it.
        tokio::task::spawn_blocking(move || {
            let conn = pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .ok_or_else(|| StoreError::Worker("read pool is empty despite a permit".into()))?;
            let result = f(&conn);
            pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?
    }
}

fn event_from_row(row: &Row<'_>) -> Result<Arc<Event>, StoreError> {
    let seq: i64 = row.get(0)?;
    let id: String = row.get(1)?;
    let event_type: String = row.get(2)?;
    let source: String = row.get(3)?;
    let task_id: Option<String> = row.get(4)?;
    let agent_id: Option<String> = row.get(5)?;
    let ts_ms: i64 = row.get(6)?;
    let data: String = row.get(7)?;
    Ok(Arc::new(Event::encode(EventParts {
        seq: seq as u64,
        id: &id,
        event_type: &event_type,
        source: &source,
        task_id: task_id.as_deref(),
        agent_id: agent_id.as_deref(),
        ts_ms,
        data: &data,
    })?))
}

/// Binds the shared query's arguments as SQLite values.
fn sqlite_args(args: Vec<Arg>) -> Vec<SqlValue> {
    args.into_iter()
        .map(|a| match a {
            Arg::Text(t) => SqlValue::Text(t),
            Arg::Int(i) => SqlValue::Integer(i),
            Arg::NullText | Arg::NullInt => SqlValue::Null,
        })
        .collect()
}

#[async_trait]
impl Store for SqliteStore {
    async fn writer(&self) -> Result<Box<dyn LogWriter>, StoreError> {
        if self.writer_taken.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Worker("the log writer was already taken".into()));
        }
        let path = self.path.clone();
        let conn = tokio::task::spawn_blocking(move || open_rw(&path))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))??;
        let checkpointer = Checkpointer::start(&self.path)?;
        // The checkpointer does it instead, off the commit path.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(Box::new(SqliteWriter { conn: Some(conn), last_ts: 0, checkpointer }))
    }

    /// One process owns the file: its writer is the only one and publishes itself.
    async fn commit_feed(&self) -> Result<CommitFeed, StoreError> {
        Ok(CommitFeed::OnlyWriter)
    }

    async fn leadership(&self) -> Result<Leadership, StoreError> {
        Ok(Leadership::always())
    }

    #[tracing::instrument(skip_all, fields(limit = q.limit))]
    async fn query(&self, q: Query) -> Result<Vec<Arc<Event>>, StoreError> {
        self.readers
            .run(move |conn| {
                let (sql, args) = query_sql(&q, '?', TextSearch::Fts5);
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(params_from_iter(sqlite_args(args)))?;
                let mut out = Vec::with_capacity(q.limit.min(1024));
                while let Some(row) = rows.next()? {
                    out.push(event_from_row(row)?);
                }
                Ok(out)
            })
            .await
    }

    async fn get_by_seq(&self, seq: u64) -> Result<Option<Arc<Event>>, StoreError> {
        let Ok(seq) = i64::try_from(seq) else { return Ok(None) };
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = ?1"))?;
                let mut rows = stmt.query([seq])?;
                rows.next()?.map(event_from_row).transpose()
            })
            .await
    }

    async fn get_by_id(&self, id: &str) -> Result<Option<Arc<Event>>, StoreError> {
        let id = id.to_owned();
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))?;
                let mut rows = stmt.query([id])?;
                rows.next()?.map(event_from_row).transpose()
            })
            .await
    }

    async fn bounds(&self) -> Result<Bounds, StoreError> {
        self.readers
            .run(|conn| {
                let head: i64 = conn.query_row("SELECT head FROM log_head", [], |r| r.get(0))?;
                let oldest: Option<i64> = conn.query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))?;
                Ok(Bounds { head: head as u64, oldest: oldest.map_or(head as u64 + 1, |o| o as u64) })
            })
            .await
    }

    async fn bucket_counts(&self, since_ms: i64, width_ms: i64) -> Result<Vec<BucketCount>, StoreError> {
        let width_ms = width_ms.max(1);
        self.readers
            .run(move |conn| {
                // A range of `events_by_time` from `since_ms`, each row read for its type.
                let mut stmt = conn.prepare_cached(
                    "SELECT (ts_ms / ?2) * ?2 AS bucket, event_type, COUNT(*) FROM events
                     WHERE ts_ms >= ?1 GROUP BY bucket, event_type ORDER BY bucket, event_type",
                )?;
                let rows = stmt.query_map([since_ms, width_ms], |r| {
                    Ok(BucketCount { start_ms: r.get(0)?, event_type: r.get(1)?, count: r.get::<_, i64>(2)? as u64 })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn search_position(&self) -> Result<u64, StoreError> {
        self.readers
            .run(
                |conn| Ok(conn.query_row("SELECT seq FROM search.search_position", [], |r| r.get::<_, i64>(0))? as u64),
            )
            .await
    }

    async fn index_for_search(&self, after: u64, limit: usize, drop_below: Option<u64>) -> Result<Indexed, StoreError> {
        self.indexer.index(after, limit, drop_below).await
    }

    async fn insert_token(&self, record: TokenRecord, hash: String) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO tokens (id, name, scope, hash, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![record.id, record.name, record.scope, hash, record.created_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let hash = hash.to_owned();
        self.readers
            .run(move |conn| {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1");
                Ok(conn.query_row(&sql, [hash], token_from_row).optional()?)
            })
            .await
    }

    async fn first_seq_since(&self, ts_ms: i64) -> Result<Option<u64>, StoreError> {
        self.readers
            .run(move |conn| {
                let seq: Option<i64> =
                    conn.query_row("SELECT MIN(seq) FROM events WHERE ts_ms >= ?1", [ts_ms], |r| r.get(0))?;
                Ok(seq.map(|s| s as u64))
            })
            .await
    }

    async fn last_seq_at_or_before(&self, ts_ms: i64) -> Result<Option<u64>, StoreError> {
        self.readers
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT seq FROM events WHERE ts_ms <= ?1 ORDER BY ts_ms DESC, seq DESC LIMIT 1")?;
                let seq: Option<i64> = stmt.query_row([ts_ms], |r| r.get(0)).optional()?;
                Ok(seq.map(|s| s as u64))
            })
            .await
    }

    async fn delete_before(&self, before: u64, limit: usize) -> Result<u64, StoreError> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(move |conn| {
            // Rowid order: the oldest go first, so what remains is always a suffix of
            // the log and `MIN(seq)` is the exact oldest retained. The ids go into
            // `pruned_ids` in the same transaction: no moment where an id is in neither.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT OR IGNORE INTO pruned_ids (id, seq, ts_ms)
                 SELECT id, seq, ts_ms FROM events WHERE seq < ?1 ORDER BY seq LIMIT ?2",
                [before, limit],
            )?;
            let deleted = tx.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < ?1 ORDER BY seq LIMIT ?2)",
                [before, limit],
            )?;
            tx.commit()?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn forget_pruned_ids(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.write(move |conn| Ok(conn.execute("DELETE FROM pruned_ids WHERE ts_ms < ?1", [before_ms])? as u64)).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.readers
            .run(|conn| {
                let mut stmt = conn.prepare(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_ms, id"))?;
                let rows = stmt.query_map([], token_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE tokens SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, chrono::Utc::now().timestamp_millis()],
            )?;
            tx.execute("DELETE FROM sessions WHERE token_id = ?1", [&id])?;
            tx.execute("DELETE FROM login_codes WHERE token_id = ?1", [&id])?;
            tx.commit()?;
            Ok(changed == 1)
        })
        .await
    }

    async fn insert_session(&self, id: &str, hash: &str, token_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let (id, hash, token_id) = (id.to_owned(), hash.to_owned(), token_id.to_owned());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO sessions (id, hash, token_id, created_ms, last_used_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![id, hash, token_id, now_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionLookup>, StoreError> {
        let hash = hash.to_owned();
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {SESSION_COLUMNS}, t.hash FROM sessions s JOIN tokens t ON t.id = s.token_id
                     WHERE s.hash = ?1 AND t.revoked_ms IS NULL"
                ))?;
                let found = stmt
                    .query_row([hash], |r| Ok(SessionLookup { session: session_from_row(r)?, token_hash: r.get(6)? }))
                    .optional()?;
                Ok(found)
            })
            .await
    }

    async fn touch_session(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            conn.execute(
                "UPDATE sessions SET last_used_ms = MAX(last_used_ms, ?2) WHERE id = ?1",
                params![id, now_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| Ok(conn.execute("DELETE FROM sessions WHERE id = ?1", [id])? == 1)).await
    }

    async fn list_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.readers
            .run(|conn| {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions s JOIN tokens t ON t.id = s.token_id
                     ORDER BY s.created_ms DESC, s.id"
                ))?;
                let rows = stmt.query_map([], session_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn prune_sessions(
        &self,
        idle_before_ms: i64,
        created_before_ms: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let sessions = tx.execute(
                "DELETE FROM sessions WHERE last_used_ms < ?1 OR created_ms < ?2",
                [idle_before_ms, created_before_ms],
            )?;
            let codes = tx.execute("DELETE FROM login_codes WHERE expires_ms < ?1", [now_ms])?;
            tx.commit()?;
            Ok((sessions + codes) as u64)
        })
        .await
    }

    async fn insert_login_code(
        &self,
        hash: &str,
        token_id: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let (hash, token_id) = (hash.to_owned(), token_id.to_owned());
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO login_codes (hash, token_id, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4)",
                params![hash, token_id, created_ms, expires_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn take_login_code(&self, hash: &str) -> Result<Option<TakenLoginCode>, StoreError> {
        let hash = hash.to_owned();
        self.write(move |conn| {
            // One write transaction: of two takers, the second finds the row gone.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let taken = tx
                .query_row("DELETE FROM login_codes WHERE hash = ?1 RETURNING token_id, expires_ms", [&hash], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })
                .optional()?;
            let Some((token_id, expires_ms)) = taken else { return Ok(None) };
            let token_hash = tx
                .query_row("SELECT hash FROM tokens WHERE id = ?1 AND revoked_ms IS NULL", [&token_id], |r| r.get(0))
                .optional()?;
            tx.commit()?;
            Ok(Some(TakenLoginCode { token_hash, expires_ms }))
        })
        .await
    }

    async fn token_count(&self) -> Result<u64, StoreError> {
        self.readers
            .run(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM tokens", [], |r| r.get::<_, i64>(0))? as u64))
            .await
    }

    async fn insert_alert_rule(&self, rule: AlertRuleRecord, max: usize) -> Result<bool, StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let opt = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        self.write(move |conn| {
            // Counted and inserted in one statement, under SQLite's write lock: two
            // requests at once cannot both take the last place.
            let inserted = conn.execute(
                "INSERT INTO alert_rules (id, name, filter, threshold, window_secs, absent_secs, created_ms)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE (SELECT COUNT(*) FROM alert_rules) < ?8",
                params![
                    rule.id,
                    rule.name,
                    rule.filter,
                    opt(rule.threshold),
                    opt(rule.window_secs),
                    opt(rule.absent_secs),
                    rule.created_ms,
                    max
                ],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn insert_webhook(&self, w: WebhookRecord) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO webhooks (id, url, filter, format, secret, delivered_seq, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![w.id, w.url, w.filter, w.format, w.secret, w.delivered_seq as i64, w.created_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_alert_rules(&self) -> Result<Vec<AlertRuleRecord>, StoreError> {
        self.readers
            .run(|conn| {
                let mut stmt = conn
                    .prepare_cached(&format!("SELECT {ALERT_RULE_COLUMNS} FROM alert_rules ORDER BY created_ms, id"))?;
                let rows = stmt.query_map([], alert_rule_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.readers
            .run(|conn| {
                let mut stmt =
                    conn.prepare_cached(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_ms, id"))?;
                let rows = stmt.query_map([], webhook_from_row)?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn board_seq(&self) -> Result<u64, StoreError> {
        self.readers
            .run(|conn| Ok(conn.query_row("SELECT seq FROM board_head", [], |r| r.get::<_, i64>(0))?.max(0) as u64))
            .await
    }

    async fn board_rows(
        &self,
        task_ids: Vec<String>,
        agent_ids: Vec<String>,
    ) -> Result<(Vec<BoardTask>, Vec<BoardAgent>), StoreError> {
        self.readers
            .run(move |conn| {
                // One indexed lookup each: SQLite answers them in microseconds, and a
                // statement per id needs no limit on the number of parameters.
                let mut tasks = Vec::with_capacity(task_ids.len());
                let mut stmt =
                    conn.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM board_tasks WHERE task_id = ?1"))?;
                for id in &task_ids {
                    if let Some(t) = stmt.query_row([id], task_from_row).optional()?.and_then(TaskRow::into_task) {
                        tasks.push(t);
                    }
                }
                let mut agents = Vec::with_capacity(agent_ids.len());
                let mut stmt =
                    conn.prepare_cached(&format!("SELECT {AGENT_COLUMNS} FROM board_agents WHERE agent_id = ?1"))?;
                for id in &agent_ids {
                    if let Some(a) = stmt.query_row([id], agent_from_row).optional()?.and_then(AgentRow::into_agent) {
                        agents.push(a);
                    }
                }
                Ok((tasks, agents))
            })
            .await
    }

    async fn delete_alert_rule(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| Ok(conn.execute("DELETE FROM alert_rules WHERE id = ?1", [id])? == 1)).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| Ok(conn.execute("DELETE FROM webhooks WHERE id = ?1", [id])? == 1)).await
    }

    async fn record_webhook(&self, id: &str, outcome: &WebhookOutcome, now_ms: i64) -> Result<bool, StoreError> {
        let (id, outcome) = (id.to_owned(), outcome.clone());
        self.write(move |conn| {
            let changed = match outcome {
                WebhookOutcome::Delivered { upto, status } => conn.execute(
                    "UPDATE webhooks SET delivered_seq = MAX(delivered_seq, ?2), last_status = ?3, last_error = NULL,
                     failing_since_ms = NULL, last_attempt_ms = ?4 WHERE id = ?1",
                    params![id, upto as i64, status, now_ms],
                )?,
                WebhookOutcome::Passed { upto } => conn.execute(
                    "UPDATE webhooks SET delivered_seq = MAX(delivered_seq, ?2) WHERE id = ?1",
                    params![id, upto as i64],
                )?,
                WebhookOutcome::Failed { status, error } => conn.execute(
                    "UPDATE webhooks SET last_status = ?2, last_error = ?3,
                     failing_since_ms = COALESCE(failing_since_ms, ?4), last_attempt_ms = ?4 WHERE id = ?1",
                    params![id, status, error, now_ms],
                )?,
            };
            Ok(changed == 1)
        })
        .await
    }
    async fn save_board(&self, changes: BoardChanges) -> Result<bool, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let moved = tx.execute(
                "UPDATE board_head SET seq = ?1 WHERE seq = ?2",
                params![to_sql_int(changes.to_seq), to_sql_int(changes.from_seq)],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            {
                let mut stmt = tx.prepare_cached(&upsert_task_sql('?'))?;
                for t in &changes.tasks {
                    stmt.execute(params_from_iter(sqlite_args(task_args(t))))?;
                }
                let mut stmt = tx.prepare_cached(&upsert_agent_sql('?'))?;
                for a in &changes.agents {
                    stmt.execute(params_from_iter(sqlite_args(agent_args(a))))?;
                }
            }
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn list_tasks(&self, q: TaskQuery) -> Result<Vec<BoardTask>, StoreError> {
        self.readers
            .run(move |conn| {
                let (sql, args) = list_tasks_sql(&q, '?');
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(sqlite_args(args)), task_from_row)?;
                let mut out = Vec::new();
                for row in rows {
                    out.extend(row?.into_task());
                }
                Ok(out)
            })
            .await
    }

    async fn count_tasks(&self, q: TaskQuery) -> Result<Vec<(BoardStatus, u64)>, StoreError> {
        self.readers
            .run(move |conn| {
                let (sql, args) = count_tasks_sql(&q, '?');
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(sqlite_args(args)), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })?;
                let mut out = Vec::new();
                for row in rows {
                    let (status, n) = row?;
                    out.extend(BoardStatus::parse(&status).map(|s| (s, n.max(0) as u64)));
                }
                Ok(out)
            })
            .await
    }

    async fn list_agents(&self, q: AgentQuery) -> Result<Vec<BoardAgent>, StoreError> {
        self.readers
            .run(move |conn| {
                let (sql, args) = list_agents_sql(&q, '?');
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params_from_iter(sqlite_args(args)), agent_from_row)?;
                let mut out = Vec::new();
                for row in rows {
                    out.extend(row?.into_agent());
                }
                Ok(out)
            })
            .await
    }

    async fn save_swarm_snapshot(&self, limits: &str, seq: u64, body: Vec<u8>, keep: usize) -> Result<(), StoreError> {
        let (limits, seq, keep) =
            (limits.to_owned(), to_sql_int(seq), i64::try_from(keep.max(1) - 1).unwrap_or(i64::MAX));
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO swarm_snapshots (limits, seq, body) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![limits, seq, body],
            )?;
            tx.execute(
                "DELETE FROM swarm_snapshots WHERE limits = ?1 AND seq < (SELECT seq FROM swarm_snapshots
                 WHERE limits = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                params![limits, keep],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn swarm_snapshot_at_or_before(&self, limits: &str, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let (limits, seq) = (limits.to_owned(), to_sql_int(seq));
        self.readers
            .run(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, body FROM swarm_snapshots WHERE limits = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
                )?;
                let found = stmt
                    .query_row(params![limits, seq], |r| Ok((r.get::<_, i64>(0)?.max(0) as u64, r.get(1)?)))
                    .optional()?;
                Ok(found)
            })
            .await
    }

    async fn prune_swarm_snapshots(&self, oldest: u64) -> Result<u64, StoreError> {
        let below = to_sql_int(oldest.saturating_sub(1));
        self.write(move |conn| Ok(conn.execute("DELETE FROM swarm_snapshots WHERE seq < ?1", [below])? as u64)).await
    }

    async fn prune_board(&self, before_seq: u64) -> Result<u64, StoreError> {
        let before = to_sql_int(before_seq);
        self.write(move |conn| {
            Ok(conn.execute(
                "DELETE FROM board_tasks WHERE created_seq < ?1 AND status IN ('completed', 'failed', 'cancelled')",
                [before],
            )? as u64)
        })
        .await
    }
}

fn task_from_row(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        task_id: r.get(0)?,
        description: r.get(1)?,
        status: r.get(2)?,
        created_seq: r.get(3)?,
        created_ms: r.get(4)?,
        updated_ms: r.get(5)?,
        agent_id: r.get(6)?,
        bid_sats: r.get(7)?,
        bids: r.get(8)?,
        retry_of: r.get(9)?,
        reason: r.get(10)?,
        auction_closed: r.get(11)?,
    })
}

fn agent_from_row(r: &Row<'_>) -> rusqlite::Result<AgentRow> {
    Ok(AgentRow {
        agent_id: r.get(0)?,
        name: r.get(1)?,
        status: r.get(2)?,
        capabilities: r.get(3)?,
        tasks_done: r.get(4)?,
        tasks_failed: r.get(5)?,
        sats_earned: r.get(6)?,
        last_seen_ms: r.get(7)?,
        open_tasks: r.get(8)?,
        reported: r.get(9)?,
    })
}

/// Nice value of the search index's thread: on a machine whose cores ingest keeps busy,
/// a thread at 10 gets about a tenth of the CPU time of one at 0 (the kernel's weights
/// 110 and 1 024), so indexing slows ingest by little and lags instead; when there is
/// idle time, it runs at full speed.
const SEARCH_THREAD_NICE: i32 = 10;

/// One batch for the search thread, and where its outcome goes.
struct IndexJob {
    after: u64,
    limit: usize,
    drop_below: Option<u64>,
    reply: tokio::sync::oneshot::Sender<Result<Indexed, StoreError>>,
}

/// Writes the search index on a thread of its own, at [`SEARCH_THREAD_NICE`], with its
/// own connection: to `search.db`, with the log attached to read from. Everything a
/// batch costs (reading the events, building their words, FTS5's inserts) is spent
/// there, not on the runtime or the blocking pool that serve ingest and viewers.
struct SearchWriter {
    /// One job at a time: the indexer waits for each. Dropping it ends the thread.
    jobs: tokio::sync::mpsc::Sender<IndexJob>,
}

impl SearchWriter {
    fn start(search_path: &Path, log_path: &Path) -> Result<Self, StoreError> {
        let (jobs, mut incoming) = tokio::sync::mpsc::channel::<IndexJob>(1);
        let (search_path, log_path) = (search_path.to_path_buf(), log_path.to_path_buf());
        std::thread::Builder::new()
            .name("search-index".into())
            .spawn(move || {
                lower_this_threads_priority(SEARCH_THREAD_NICE);
                let mut conn = None;
                while let Some(job) = incoming.blocking_recv() {
                    let result = match &mut conn {
                        Some(conn) => index_batch(conn, job.after, job.limit, job.drop_below),
                        None => open_indexer(&search_path, &log_path)
                            .and_then(|c| index_batch(conn.insert(c), job.after, job.limit, job.drop_below)),
                    };
                    // The indexer stopped waiting (shutdown): the batch is stored, or not,
                    // all the same.
                    let _ = job.reply.send(result);
                }
            })
            .map_err(|e| StoreError::Worker(format!("starting the search index thread: {e}")))?;
        Ok(SearchWriter { jobs })
    }

    async fn index(&self, after: u64, limit: usize, drop_below: Option<u64>) -> Result<Indexed, StoreError> {
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let job = IndexJob { after, limit, drop_below, reply };
        self.jobs.send(job).await.map_err(|_| StoreError::Worker("the search index thread stopped".into()))?;
        outcome.await.map_err(|_| StoreError::Worker("the search index thread stopped".into()))?
    }
}

/// Gives the calling thread (and threads it starts) a lower CPU priority. Linux only:
/// there each thread has its own nice value. A failure leaves the thread as it was.
fn lower_this_threads_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `gettid` takes no arguments and cannot fail; `setpriority` only reads
        // its integer arguments.
        let failed = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0
        };
        if failed {
            tracing::warn!(error = %std::io::Error::last_os_error(), "could not lower the search index thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The search thread's connection: `search.db`, with the log attached as `log`. Only
/// read from: transactions here are deferred, so they take the log's read lock, never
/// its write lock.
fn open_indexer(search_path: &Path, log_path: &Path) -> Result<Connection, StoreError> {
    let conn = open_search(search_path)?;
    let log = log_path.to_str().ok_or_else(|| StoreError::DataDir {
        path: log_path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8"),
    })?;
    conn.execute("ATTACH DATABASE ?1 AS log", [log])?;
    Ok(conn)
}

/// One batch of [`Store::index_for_search`]. The head and the events are read in the
/// same transaction, so from one snapshot of the log: when fewer than `limit` events
/// follow `after`, every event up to that head has been read (or was pruned).
fn index_batch(
    conn: &mut Connection,
    after: u64,
    limit: usize,
    drop_below: Option<u64>,
) -> Result<Indexed, StoreError> {
    let tx = conn.transaction()?;
    let head: i64 = tx.query_row("SELECT head FROM log.log_head", [], |r| r.get(0))?;
    let mut docs = Vec::with_capacity(limit.min(4096));
    {
        let mut read = tx.prepare_cached(
            "SELECT seq, event_type, agent_id, data FROM log.events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let mut rows = read.query(params![after.min(i64::MAX as u64) as i64, limit.min(i64::MAX as usize) as i64])?;
        while let Some(row) = rows.next()? {
            let (seq, event_type, agent_id, data): (i64, String, Option<String>, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            // Stored data is always a JSON object; a damaged one is indexed by its
            // display text alone rather than holding up every later event.
            let data = serde_json::from_str(&data).unwrap_or_default();
            docs.push((seq, crate::search::document(&event_type, agent_id.as_deref(), &data)));
        }
    }
    let position = match docs.last() {
        Some((last, _)) if docs.len() == limit => *last as u64,
        _ => (head.max(0) as u64).max(after),
    };
    {
        let mut insert = tx.prepare_cached("INSERT INTO event_text (rowid, words) VALUES (?1, ?2)")?;
        for (seq, words) in &docs {
            insert.execute(params![seq, words])?;
        }
    }
    if let Some(below) = drop_below {
        tx.execute("DELETE FROM event_text WHERE rowid < ?1", [below.min(i64::MAX as u64) as i64])?;
    }
    if position != after {
        tx.execute("UPDATE search_position SET seq = MAX(seq, ?1)", [position as i64])?;
    }
    tx.commit()?;
    Ok(Indexed { position, events: docs.len() })
}

/// The single write connection, owned by the writer task.
pub(crate) struct SqliteWriter {
    /// `None` only while a commit runs on the blocking pool.
    conn: Option<Connection>,
    /// The last commit time handed out; timestamps never go backwards with seq, even if
    /// the wall clock does, so time windows and seq windows agree.
    last_ts: i64,
    checkpointer: Checkpointer,
}

/// Copies the WAL back into the database file on a thread and connection of its own.
///
/// SQLite's automatic checkpoint runs inside whichever commit takes the WAL past 1 000
/// pages, so the writer, the one serial step of ingest, would do that copying and its
/// fsync itself. Here the writer only counts what it commits and, every
/// [`CHECKPOINT_EVERY_EVENTS`], asks this thread for a `PASSIVE` checkpoint, which
/// never blocks the writer or readers. In process (`swarmfeed-bench ingest-local`),
/// that took ingest from 235 500 to 242 600 events/s.
struct Checkpointer {
    /// Holds at most one request: a checkpoint asked for while one is pending is the
    /// same checkpoint. Dropping it ends the thread.
    kick: std::sync::mpsc::SyncSender<()>,
    /// Events committed since the last request.
    since: u64,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = open_rw(path)?;
        let (kick, kicks) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while kicks.recv().is_ok() {
                    // `PASSIVE` copies what it can without waiting for anyone; what is
                    // left is copied next time. A failure leaves the WAL longer, not
                    // the log unsafe.
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Worker(format!("starting the checkpoint thread: {e}")))?;
        Ok(Checkpointer { kick, since: 0 })
    }

    fn committed(&mut self, events: usize) {
        self.since += events as u64;
        if self.since >= CHECKPOINT_EVERY_EVENTS {
            self.since = 0;
            // Full means a checkpoint is already asked for; it will cover these too.
            let _ = self.kick.try_send(());
        }
    }
}

#[async_trait]
impl LogWriter for SqliteWriter {
    async fn append(&mut self, events: Vec<NewEvent>) -> Result<Commit, StoreError> {
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| StoreError::Worker("the write connection was lost by an earlier commit".into()))?;
        let ts = chrono::Utc::now().timestamp_millis().max(self.last_ts);
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = commit(&mut conn, ts, events);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::Worker(e.to_string()))?;
        self.conn = Some(conn);
        if let Ok(commit) = &result {
            self.last_ts = ts;
            self.checkpointer.committed(commit.stored.len());
        }
        result
    }
}

/// One group commit. The head counter is read and written inside the transaction, so
/// seq stays gapless even if another process writes the same file.
fn commit(conn: &mut Connection, ts_ms: i64, events: Vec<NewEvent>) -> Result<Commit, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Whether retention left any ids behind: only then is each new id looked up there
    // too, so a log without retention pays one probe per commit, not one per event.
    let (head, any_pruned): (i64, bool) =
        tx.query_row("SELECT head, EXISTS (SELECT 1 FROM pruned_ids) FROM log_head", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
    let mut next = head + 1;
    let timestamp = format_timestamp(ts_ms);
    let mut result = Commit { outcomes: Vec::with_capacity(events.len()), stored: Vec::with_capacity(events.len()) };
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (seq, id, event_type, source, task_id, agent_id, ts_ms, data)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
        )?;
        let mut original = tx.prepare_cached("SELECT seq FROM events WHERE id = ?1")?;
        let mut pruned = tx.prepare_cached("SELECT seq FROM pruned_ids WHERE id = ?1")?;
        for e in events {
            if any_pruned && let Some(seq) = pruned.query_row([&e.id], |r| r.get::<_, i64>(0)).optional()? {
                result.outcomes.push(Appended { id: e.id, seq: seq as u64, duplicate: true });
                continue;
            }
            let inserted =
                insert.execute(params![next, e.id, e.event_type, e.source, e.task_id, e.agent_id, ts_ms, e.data])?;
            if inserted == 1 {
                result.stored.push(Arc::new(Event::encode_committed(e.parts(next as u64, ts_ms), &timestamp)));
                result.outcomes.push(Appended { id: e.id, seq: next as u64, duplicate: false });
                next += 1;
            } else {
                let seq: i64 = original.query_row([&e.id], |r| r.get(0))?;
                result.outcomes.push(Appended { id: e.id, seq: seq as u64, duplicate: true });
            }
        }
    }
    if next != head + 1 {
        tx.execute("UPDATE log_head SET head = ?1", [next - 1])?;
    }
    tx.commit()?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::CorruptData;
    use crate::store::conformance;

    #[tokio::test]
    async fn seqs_are_gapless_and_ids_idempotent_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        conformance::first_writes_are_gapless_and_idempotent(&SqliteStore::open(dir.path(), 2).unwrap()).await;
        conformance::reopened_log_keeps_ids_and_head(&SqliteStore::open(dir.path(), 2).unwrap()).await;
    }

    #[tokio::test]
    async fn alert_rules_are_kept_listed_capped_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        conformance::alert_rules_are_kept_listed_capped_and_deleted(&SqliteStore::open(dir.path(), 2).unwrap()).await;
    }

    #[tokio::test]
    async fn webhooks_keep_their_progress_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        conformance::webhooks_keep_their_progress_and_failures(&SqliteStore::open(dir.path(), 2).unwrap()).await;
    }

    #[tokio::test]
    async fn queries_apply_filters_windows_and_order() {
        let dir = tempfile::tempdir().unwrap();
        conformance::queries_apply_filters_windows_and_order(&SqliteStore::open(dir.path(), 2).unwrap()).await;
    }

    #[tokio::test]
    async fn board_rows_save_filter_page_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        conformance::board_rows_save_filter_page_and_prune(&SqliteStore::open(dir.path(), 2).unwrap()).await;
    }

    #[tokio::test]
    async fn swarm_snapshots_keep_the_newest_and_go_with_retention() {
        let dir = tempfile::tempdir().unwrap();
        conformance::swarm_snapshots_keep_the_newest_and_go_with_retention(&SqliteStore::open(dir.path(), 2).unwrap())
            .await;
    }

    #[tokio::test]
    async fn search_matches_words_phrases_prefixes_with_filters_and_paging() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 2).unwrap();
        conformance::search_matches_words_phrases_prefixes_with_filters_and_paging(&store).await;
    }

    #[tokio::test]
    async fn pruned_events_leave_the_search_index() {
        let dir = tempfile::tempdir().unwrap();
        conformance::pruned_events_leave_the_search_index(&SqliteStore::open(dir.path(), 2).unwrap()).await;
        let index = Connection::open(dir.path().join(SEARCH_FILE)).unwrap();
        let count = |word: &str| -> i64 {
            index.query_row("SELECT count(*) FROM event_text WHERE event_text MATCH ?1", [word], |r| r.get(0)).unwrap()
        };
        assert_eq!(count("common"), 0, "the pruned events' rows are gone");
        assert_eq!(count("late"), 1, "the kept event's row stays");
    }

    #[tokio::test]
    async fn an_existing_log_is_indexed_from_the_start_and_a_foreign_index_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1).unwrap();
        let mut writer = store.writer().await.unwrap();
        writer.append((0..3).map(|i| conformance::new_event(&format!("e{i}"), "old.kind")).collect()).await.unwrap();
        drop((writer, store));
        // A log from before search: no index file at all.
        std::fs::remove_file(dir.path().join(SEARCH_FILE)).unwrap();
        let store = SqliteStore::open(dir.path(), 1).unwrap();
        assert_eq!(store.search_position().await.unwrap(), 0);
        assert_eq!(crate::search::catch_up(&store).await.unwrap(), 3);
        drop(store);
        // An index ahead of the log beside it (the log file replaced) starts over.
        let conn = Connection::open(dir.path().join(SEARCH_FILE)).unwrap();
        conn.execute("UPDATE search_position SET seq = 99", []).unwrap();
        drop(conn);
        let store = SqliteStore::open(dir.path(), 1).unwrap();
        assert_eq!(store.search_position().await.unwrap(), 0);
        assert_eq!(crate::search::catch_up(&store).await.unwrap(), 3);
        let text = crate::search::SearchQuery::parse("kind").unwrap();
        assert_eq!(store.query(Query { text, limit: 10, ..Query::default() }).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1).unwrap();
        let mut writer = store.writer().await.unwrap();
        let file = dir.path().join(DB_FILE);
        let empty = std::fs::metadata(&file).unwrap().len();
        // The writer never checkpoints itself: until the checkpointer runs, the rows
        // are only in the WAL and the database file keeps its empty size.
        for batch in 0..3 {
            let events = (0..CHECKPOINT_EVERY_EVENTS / 2)
                .map(|i| conformance::new_event(&format!("e{batch}-{i}"), "a.b"))
                .collect();
            writer.append(events).await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&file).unwrap().len() < empty + 1_000_000 {
            assert!(std::time::Instant::now() < deadline, "no checkpoint reached the database file");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let bounds = store.bounds().await.unwrap();
        assert_eq!(bounds.head, 3 * CHECKPOINT_EVERY_EVENTS / 2);
    }

    #[tokio::test]
    async fn damaged_rows_are_errors_naming_the_seq_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), 1).unwrap();
        let mut writer = store.writer().await.unwrap();
        let events = (0..3).map(|i| conformance::new_event(&format!("e{i}"), "a.b")).collect();
        writer.append(events).await.unwrap();
        let read = |seq| store.get_by_seq(seq);
        assert_eq!(read(1).await.unwrap().unwrap().seq, 1);
        // What only a damaged file or a foreign writer could leave behind.
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute("UPDATE events SET data = '{\"cut' WHERE seq = 2", []).unwrap();
        conn.execute("UPDATE events SET source = x'ff00' WHERE seq = 3", []).unwrap();
        drop(conn);
        assert!(matches!(read(2).await, Err(StoreError::Corrupt(CorruptData { seq: 2, .. }))));
        assert!(matches!(read(3).await, Err(StoreError::Sqlite(_))), "{:?}", read(3).await);
        assert_eq!(read(1).await.unwrap().unwrap().seq, 1);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path(), 1).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(SqliteStore::open(dir.path(), 1), Err(StoreError::SchemaTooNew { found: 99, .. })));
    }
}
