//! The shared store: one PostgreSQL database behind several swarmfeed nodes
//! (DESIGN §5, `--database postgres://…`).
//!
//! Owns the PostgreSQL schema and its migrations (a `schema_version` table), a small
//! pool of connections for reads and token writes, and four dedicated connections per
//! node: the writer's ([`PostgresWriter`]), the one that LISTENs for commits of every
//! node ([`CommitFeed::Shared`]), the one that LISTENs for revoked tokens
//! ([`RevocationSignal`]), and the one that holds the coordinator's advisory
//! lock ([`Leadership`]). It does not publish to the hub: the follower does that from
//! what this store reads back.
//!
//! Behaviour matches the SQLite store: the same columns and indexes (text in the
//! bytewise `"C"` collation so that type-prefix ranges and orderings agree), the same
//! query text (`store::sql`), the same answers for duplicates and bounds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Row, Socket, Statement};

use super::sql::{Arg, EVENT_COLUMNS, SESSION_COLUMNS, TOKEN_COLUMNS, query_sql};
use super::{
    Appended, Bounds, Commit, CommitFeed, CommitSignal, Leadership, LogWriter, MinuteCount, Query, RevocationSignal,
    SessionLookup, SessionRecord, Store, StoreError, TakenLoginCode, TokenRecord,
};
use crate::event::{Event, EventParts, NewEvent, format_timestamp};

/// The channel every writer NOTIFYs after a commit, with the new head as payload.
pub const NOTIFY_CHANNEL: &str = "swarmfeed_log";
/// The channel [`Store::revoke_token`] NOTIFYs, with the revoked token's id as payload,
/// whoever revokes: a node's admin API or `swarmfeed token revoke --database …`.
pub const REVOKE_CHANNEL: &str = "swarmfeed_revoked";
/// The advisory lock whose holder is the coordinator leader. Advisory locks are per
/// database, so nodes of different logs on one server do not contend.
const LEADER_LOCK_KEY: i64 = 0x5357_4152_4d5f_4c44; // "SWARM_LD"
/// The advisory lock taken while migrating, so nodes that start together take turns.
const MIGRATION_LOCK_KEY: i64 = 0x5357_4152_4d5f_4d47; // "SWARM_MG"
/// How long a read waits for a pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// Pause before a lost LISTEN or lock connection is opened again.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// How often the leader checks that its lock's connection is still alive. A node that
/// lost it stops acting as leader within about this long.
const LEASE_CHECK: Duration = Duration::from_secs(1);

/// Schema migrations, applied in order; `schema_version` records how many ran.
/// Append new steps; never edit a released one.
const MIGRATIONS: &[&str] = &[
    // 1: the log, its head counter, and tokens. Text is collated "C" (bytewise), as in
    // SQLite, so a type prefix is an index range and orders agree between engines.
    r#"
    CREATE TABLE events (
        seq        BIGINT PRIMARY KEY,
        id         TEXT COLLATE "C" NOT NULL UNIQUE,
        event_type TEXT COLLATE "C" NOT NULL,
        source     TEXT COLLATE "C" NOT NULL,
        task_id    TEXT COLLATE "C",
        agent_id   TEXT COLLATE "C",
        ts_ms      BIGINT NOT NULL,
        data       TEXT NOT NULL
    );
    CREATE INDEX events_by_type   ON events (event_type, seq);
    CREATE INDEX events_by_task   ON events (task_id, seq)  WHERE task_id IS NOT NULL;
    CREATE INDEX events_by_agent  ON events (agent_id, seq) WHERE agent_id IS NOT NULL;
    CREATE INDEX events_by_source ON events (source, seq);
    CREATE INDEX events_by_time   ON events (ts_ms);
    -- The last seq ever assigned and the last commit time. Every writer of every node
    -- locks this row first in its transaction: that lock is what makes seq gapless and
    -- ordered by commit (see `WriteConn::commit`). Kept apart from MAX(seq) so that
    -- retention deleting every event never lets seq start over.
    CREATE TABLE log_head (
        one   INTEGER PRIMARY KEY CHECK (one = 1),
        head  BIGINT NOT NULL,
        ts_ms BIGINT NOT NULL
    );
    INSERT INTO log_head (one, head, ts_ms) VALUES (1, 0, 0);
    CREATE TABLE tokens (
        id         TEXT   PRIMARY KEY,
        name       TEXT   NOT NULL,
        scope      TEXT   NOT NULL,
        hash       TEXT   NOT NULL UNIQUE,
        created_ms BIGINT NOT NULL,
        revoked_ms BIGINT
    );
    "#,
    // 2: browser sessions and one-time login codes (DESIGN §9), both by the hash of
    // their secret. Each belongs to a token and goes when the token is revoked.
    r#"
    CREATE TABLE sessions (
        id           TEXT   PRIMARY KEY,
        hash         TEXT   NOT NULL UNIQUE,
        token_id     TEXT   NOT NULL REFERENCES tokens (id),
        created_ms   BIGINT NOT NULL,
        last_used_ms BIGINT NOT NULL
    );
    CREATE INDEX sessions_by_token ON sessions (token_id);
    CREATE TABLE login_codes (
        hash       TEXT   PRIMARY KEY,
        token_id   TEXT   NOT NULL REFERENCES tokens (id),
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL
    );
    CREATE INDEX login_codes_by_token ON login_codes (token_id);
    "#,
    // 3: the ids of events retention pruned, so that re-sending one still answers its
    // original seq for --idempotency-days (DESIGN §6).
    r#"
    CREATE TABLE pruned_ids (
        id    TEXT COLLATE "C" PRIMARY KEY,
        seq   BIGINT NOT NULL,
        ts_ms BIGINT NOT NULL
    );
    CREATE INDEX pruned_ids_by_time ON pruned_ids (ts_ms);
    "#,
];

/// A PostgreSQL error with the server's message, which `tokio_postgres::Error`'s own
/// `Display` leaves out ("db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let text = e.to_string();
    match std::error::Error::source(e).map(ToString::to_string) {
        Some(source) if !text.contains(&source) => format!("{text}: {source}"),
        _ => text,
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

/// The PostgreSQL store.
pub struct PostgresStore {
    /// Where the dedicated connections (writer, LISTEN, lock) connect.
    config: tokio_postgres::Config,
    /// Connections for reads and token writes; `--read-connections` of them at most.
    pool: Pool,
    writer_taken: AtomicBool,
}

/// Parses `--database`, refusing anything but a `postgres://` URL.
fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::BadUrl("it does not start with postgres://".into()));
    }
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        // The URL may carry a password: name the problem, never echo the URL.
        StoreError::BadUrl(describe(&e))
    })?;
    if config.get_application_name().is_none() {
        config.application_name("swarmfeed");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok(config)
}

type PgConnection = tokio_postgres::Connection<Socket, NoTlsStream>;

/// Opens a dedicated connection and runs its I/O on a task of its own, which ends
/// when the returned client is dropped or the server goes away; the returned handle
/// completes then, which is how the lock keeper notices a lost session.
async fn connect(config: &tokio_postgres::Config) -> Result<(Client, tokio::task::JoinHandle<()>), StoreError> {
    let (client, connection) = config.connect(NoTls).await?;
    let running = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "postgres connection ended");
        }
    });
    Ok((client, running))
}

async fn migrate(config: &tokio_postgres::Config) -> Result<(), StoreError> {
    let (mut client, _running) = connect(config).await?;
    let known = MIGRATIONS.len() as i64;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY});
         CREATE TABLE IF NOT EXISTS schema_version (
             one     INTEGER PRIMARY KEY CHECK (one = 1),
             version BIGINT NOT NULL
         );
         INSERT INTO schema_version (one, version) VALUES (1, 0) ON CONFLICT (one) DO NOTHING;"
    ))
    .await?;
    let found: i64 = tx.query_one("SELECT version FROM schema_version", &[]).await?.try_get(0)?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(version = i + 1, "migrating database schema");
        tx.batch_execute(step).await?;
    }
    tx.execute("UPDATE schema_version SET version = $1", &[&known]).await?;
    tx.commit().await?;
    Ok(())
}

impl PostgresStore {
    /// Connects to the database at `url`, migrating its schema, with a pool of up to
    /// `read_connections` connections for reads.
    ///
    /// # Errors
    /// The URL is not a `postgres://` URL, the server cannot be reached, or the
    /// schema is newer than this build.
    pub async fn connect(url: &str, read_connections: usize) -> Result<Self, StoreError> {
        let config = parse_url(url)?;
        migrate(&config).await?;
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(read_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(PostgresStore { config, pool, writer_taken: AtomicBool::new(false) })
    }

    /// Runs one read statement on a pooled connection, with its plan cached per
    /// connection.
    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }
}

fn event_from_row(row: &Row) -> Result<Arc<Event>, StoreError> {
    let seq: i64 = row.try_get(0)?;
    Ok(Arc::new(Event::encode(EventParts {
        seq: seq as u64,
        id: row.try_get(1)?,
        event_type: row.try_get(2)?,
        source: row.try_get(3)?,
        task_id: row.try_get(4)?,
        agent_id: row.try_get(5)?,
        ts_ms: row.try_get(6)?,
        data: row.try_get(7)?,
    })?))
}

#[async_trait]
impl Store for PostgresStore {
    async fn writer(&self) -> Result<Box<dyn LogWriter>, StoreError> {
        if self.writer_taken.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Worker("the log writer was already taken".into()));
        }
        let conn = WriteConn::open(&self.config).await?;
        Ok(Box::new(PostgresWriter { config: self.config.clone(), conn: Some(conn) }))
    }

    async fn commit_feed(&self) -> Result<CommitFeed, StoreError> {
        // The first connection is made here so that an unreachable server fails the
        // start, not a background task.
        let first = self.config.connect(NoTls).await?;
        let (committed, signal) = watch::channel(0);
        let on_message = move |payload: Option<&str>| {
            // `None` (listening again after a gap) needs nothing: the follower's
            // catch-up timer reads what was missed.
            if let Some(head) = payload.and_then(|p| p.parse::<u64>().ok()) {
                committed.send_if_modified(|known| {
                    let newer = head > *known;
                    *known = (*known).max(head);
                    newer
                });
            }
        };
        let listener = tokio::spawn(listen(self.config.clone(), first, NOTIFY_CHANNEL, on_message));
        Ok(CommitFeed::Shared(CommitSignal::new(signal, listener)))
    }

    async fn leadership(&self) -> Result<Leadership, StoreError> {
        let (client, running) = connect(&self.config).await?;
        // Tried once here, so a node that is alone leads from its first command on.
        let held_now: bool =
            client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY]).await?.try_get(0)?;
        if held_now {
            tracing::info!("this node holds the coordinator lock");
        }
        let (held, watch) = watch::channel(held_now);
        let keeper = tokio::spawn(keep_leadership(self.config.clone(), (client, running), held));
        Ok(Leadership::kept_by(watch, keeper))
    }

    #[tracing::instrument(skip_all, fields(limit = q.limit))]
    async fn query(&self, q: Query) -> Result<Vec<Arc<Event>>, StoreError> {
        let (sql, args) = query_sql(&q, '$');
        let args: Vec<Box<dyn ToSql + Sync + Send>> = args
            .into_iter()
            .map(|a| -> Box<dyn ToSql + Sync + Send> {
                match a {
                    Arg::Text(t) => Box::new(t),
                    Arg::Int(i) => Box::new(i),
                }
            })
            .collect();
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        self.rows(&sql, &params).await?.iter().map(event_from_row).collect()
    }

    async fn get_by_seq(&self, seq: u64) -> Result<Option<Arc<Event>>, StoreError> {
        let Ok(seq) = i64::try_from(seq) else { return Ok(None) };
        let rows = self.rows(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq = $1"), &[&seq]).await?;
        rows.first().map(event_from_row).transpose()
    }

    async fn get_by_id(&self, id: &str) -> Result<Option<Arc<Event>>, StoreError> {
        let rows = self.rows(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"), &[&id]).await?;
        rows.first().map(event_from_row).transpose()
    }

    async fn bounds(&self) -> Result<Bounds, StoreError> {
        // One statement, one snapshot: the head and the oldest agree.
        let rows = self.rows("SELECT head, (SELECT MIN(seq) FROM events) FROM log_head", &[]).await?;
        let row = rows.first().ok_or_else(|| StoreError::Worker("log_head has no row".into()))?;
        let head: i64 = row.try_get(0)?;
        let oldest: Option<i64> = row.try_get(1)?;
        Ok(Bounds { head: head as u64, oldest: oldest.map_or(head as u64 + 1, |o| o as u64) })
    }

    async fn minute_counts(&self, since_ms: i64) -> Result<Vec<MinuteCount>, StoreError> {
        let rows = self
            .rows(
                "SELECT (ts_ms / 60000) * 60000 AS minute, event_type, COUNT(*) FROM events
                 WHERE ts_ms >= $1 GROUP BY minute, event_type ORDER BY minute, event_type",
                &[&since_ms],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(MinuteCount {
                    minute_ms: r.try_get(0)?,
                    event_type: r.try_get(1)?,
                    count: r.try_get::<_, i64>(2)? as u64,
                })
            })
            .collect()
    }

    async fn insert_token(&self, record: TokenRecord, hash: String) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO tokens (id, name, scope, hash, created_ms) VALUES ($1, $2, $3, $4, $5)",
                &[&record.id, &record.name, &record.scope, &hash, &record.created_ms],
            )
            .await?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let rows = self.rows(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"), &[&hash]).await?;
        rows.first().map(token_from_row).transpose()
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows = self.rows(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_ms, id"), &[]).await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let now = chrono::Utc::now().timestamp_millis();
        let tx = client.transaction().await?;
        // The NOTIFY goes out at the commit, and only if the token really changed: every
        // node LISTENing hears of it.
        let revoke = format!(
            "WITH revoked AS (
                 UPDATE tokens SET revoked_ms = $2 WHERE id = $1 AND revoked_ms IS NULL RETURNING id
             )
             SELECT pg_notify('{REVOKE_CHANNEL}', id) FROM revoked"
        );
        let changed = tx.query(&revoke, &[&id, &now]).await?.len();
        tx.execute("DELETE FROM sessions WHERE token_id = $1", &[&id]).await?;
        tx.execute("DELETE FROM login_codes WHERE token_id = $1", &[&id]).await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn insert_session(&self, id: &str, hash: &str, token_id: &str, now_ms: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO sessions (id, hash, token_id, created_ms, last_used_ms) VALUES ($1, $2, $3, $4, $4)",
                &[&id, &hash, &token_id, &now_ms],
            )
            .await?;
        Ok(())
    }

    async fn session_by_hash(&self, hash: &str) -> Result<Option<SessionLookup>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {SESSION_COLUMNS}, t.hash FROM sessions s JOIN tokens t ON t.id = s.token_id
                     WHERE s.hash = $1 AND t.revoked_ms IS NULL"
                ),
                &[&hash],
            )
            .await?;
        rows.first().map(|r| Ok(SessionLookup { session: session_from_row(r)?, token_hash: r.try_get(6)? })).transpose()
    }

    async fn touch_session(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute("UPDATE sessions SET last_used_ms = GREATEST(last_used_ms, $2) WHERE id = $1", &[&id, &now_ms])
            .await?;
        Ok(())
    }

    async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        // Other nodes' streams opened with this session end when they hear of it.
        let sql = format!(
            "WITH ended AS (DELETE FROM sessions WHERE id = $1 RETURNING id)
             SELECT pg_notify('{REVOKE_CHANNEL}', 'session') FROM ended"
        );
        Ok(client.query(&sql, &[&id]).await?.len() == 1)
    }

    async fn list_sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions s JOIN tokens t ON t.id = s.token_id
                     ORDER BY s.created_ms DESC, s.id"
                ),
                &[],
            )
            .await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn prune_sessions(
        &self,
        idle_before_ms: i64,
        created_before_ms: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let sessions = client
            .execute(
                "DELETE FROM sessions WHERE last_used_ms < $1 OR created_ms < $2",
                &[&idle_before_ms, &created_before_ms],
            )
            .await?;
        let codes = client.execute("DELETE FROM login_codes WHERE expires_ms < $1", &[&now_ms]).await?;
        Ok(sessions + codes)
    }

    async fn insert_login_code(
        &self,
        hash: &str,
        token_id: &str,
        created_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO login_codes (hash, token_id, created_ms, expires_ms) VALUES ($1, $2, $3, $4)",
                &[&hash, &token_id, &created_ms, &expires_ms],
            )
            .await?;
        Ok(())
    }

    async fn take_login_code(&self, hash: &str) -> Result<Option<TakenLoginCode>, StoreError> {
        let client = self.pool.get().await?;
        // One statement: the DELETE decides which of several nodes taking the same code
        // gets it; the others delete nothing and find nothing.
        let rows = client
            .query(
                "WITH taken AS (DELETE FROM login_codes WHERE hash = $1 RETURNING token_id, expires_ms)
                 SELECT taken.expires_ms, t.hash FROM taken
                 LEFT JOIN tokens t ON t.id = taken.token_id AND t.revoked_ms IS NULL",
                &[&hash],
            )
            .await?;
        rows.first().map(|r| Ok(TakenLoginCode { expires_ms: r.try_get(0)?, token_hash: r.try_get(1)? })).transpose()
    }

    async fn revocation_feed(&self) -> Result<Option<RevocationSignal>, StoreError> {
        let first = self.config.connect(NoTls).await?;
        let (notified, signal) = watch::channel(0u64);
        // Every notification, and every (re)start of listening (notifications sent
        // while not listening are lost), wakes the holder to re-read revoked tokens.
        let on_message = move |_: Option<&str>| notified.send_modify(|n| *n = n.wrapping_add(1));
        let listener = tokio::spawn(listen(self.config.clone(), first, REVOKE_CHANNEL, on_message));
        Ok(Some(RevocationSignal::new(signal, listener)))
    }

    async fn sessions_by_hashes(&self, hashes: &[String]) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {SESSION_COLUMNS}, s.hash FROM sessions s JOIN tokens t ON t.id = s.token_id
                     WHERE s.hash = ANY($1) AND t.revoked_ms IS NULL"
                ),
                &[&hashes],
            )
            .await?;
        rows.iter().map(|r| Ok((r.try_get(6)?, session_from_row(r)?))).collect()
    }

    async fn first_seq_since(&self, ts_ms: i64) -> Result<Option<u64>, StoreError> {
        let rows = self.rows("SELECT MIN(seq) FROM events WHERE ts_ms >= $1", &[&ts_ms]).await?;
        let seq: Option<i64> = match rows.first() {
            Some(r) => r.try_get(0)?,
            None => None,
        };
        Ok(seq.map(|s| s as u64))
    }

    async fn delete_before(&self, before: u64, limit: usize) -> Result<u64, StoreError> {
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.pool.get().await?;
        // Oldest first, so what remains is always a suffix of the log; nodes pruning
        // at once delete disjoint or already-deleted rows, which is harmless. The ids
        // move to `pruned_ids` in the same statement, under the log's lock that every
        // writer takes first: a writer looking for an id finds it in one table or the
        // other, never in neither.
        let tx = client.transaction().await?;
        tx.execute("SELECT 1 FROM log_head WHERE one = 1 FOR UPDATE", &[]).await?;
        let deleted = tx
            .execute(
                "WITH gone AS (
                     DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq < $1 ORDER BY seq LIMIT $2)
                     RETURNING id, seq, ts_ms)
                 INSERT INTO pruned_ids (id, seq, ts_ms) SELECT id, seq, ts_ms FROM gone
                 ON CONFLICT (id) DO NOTHING",
                &[&before, &limit],
            )
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn forget_pruned_ids(&self, before_ms: i64) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client.execute("DELETE FROM pruned_ids WHERE ts_ms < $1", &[&before_ms]).await?)
    }

    async fn token_count(&self) -> Result<u64, StoreError> {
        let rows = self.rows("SELECT COUNT(*) FROM tokens", &[]).await?;
        let row = rows.first().ok_or_else(|| StoreError::Worker("COUNT(*) returned no row".into()))?;
        Ok(row.try_get::<_, i64>(0)? as u64)
    }
}

fn session_from_row(r: &tokio_postgres::Row) -> Result<SessionRecord, StoreError> {
    Ok(SessionRecord {
        id: r.try_get(0)?,
        token_id: r.try_get(1)?,
        token_name: r.try_get(2)?,
        scope: r.try_get(3)?,
        created_ms: r.try_get(4)?,
        last_used_ms: r.try_get(5)?,
    })
}

fn token_from_row(r: &tokio_postgres::Row) -> Result<TokenRecord, StoreError> {
    Ok(TokenRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        scope: r.try_get(2)?,
        created_ms: r.try_get(3)?,
        revoked: r.try_get::<_, Option<i64>>(4)?.is_some(),
    })
}

/// Hands every NOTIFY on `channel` to `on_message` (`Some(payload)`), reconnecting for
/// as long as it runs (until the signal that holds it is dropped). While it is
/// disconnected notifications are lost, so each time LISTEN takes effect it calls
/// `on_message(None)`; the holders' timers read what was missed either way.
async fn listen(
    config: tokio_postgres::Config,
    first: (Client, PgConnection),
    channel: &'static str,
    mut on_message: impl FnMut(Option<&str>) + Send + 'static,
) {
    let mut connection = Some(first);
    loop {
        let error = match connection.take() {
            Some((client, conn)) => listen_on(client, conn, channel, &mut on_message).await,
            None => match config.connect(NoTls).await {
                Ok((client, conn)) => listen_on(client, conn, channel, &mut on_message).await,
                Err(e) => e.into(),
            },
        };
        tracing::warn!(error = %error, channel, "stopped listening; reconnecting (a timer covers the gap)");
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// LISTENs on one connection until it fails, and returns why.
async fn listen_on(
    client: Client,
    mut connection: PgConnection,
    channel: &'static str,
    on_message: &mut (impl FnMut(Option<&str>) + Send),
) -> StoreError {
    // Notifications arrive as messages of the connection itself, so this task drives
    // the connection's I/O rather than handing it to a task of its own.
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let sql = format!("LISTEN {channel}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => match done {
                Ok(()) => {
                    listening = true;
                    on_message(None);
                }
                Err(e) => return e.into(),
            },
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => on_message(Some(n.payload())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.into(),
                None => return StoreError::Worker("the LISTEN connection closed".into()),
            },
        }
    }
}

/// Holds, or waits for, the coordinator lock for as long as it runs (until its
/// [`Leadership`] is dropped, which closes the session and so frees the lock).
async fn keep_leadership(
    config: tokio_postgres::Config,
    first: (Client, tokio::task::JoinHandle<()>),
    held: watch::Sender<bool>,
) {
    let mut connection = Some(first);
    loop {
        let error = lead(&config, connection.take(), &held).await;
        if held.send_replace(false) {
            tracing::warn!(error = %error, "lost the coordinator lock; this node stops leading");
        } else {
            tracing::warn!(error = %error, "could not wait for the coordinator lock; retrying");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Takes the lock on one connection (blocking until the holder's session ends, if
/// another node has it) and keeps it until that connection fails; returns why.
async fn lead(
    config: &tokio_postgres::Config,
    connection: Option<(Client, tokio::task::JoinHandle<()>)>,
    held: &watch::Sender<bool>,
) -> StoreError {
    let (client, mut running) = match connection {
        Some(c) => c,
        None => match connect(config).await {
            Ok(c) => c,
            Err(e) => return e,
        },
    };
    if !*held.borrow() {
        // The holder's lock is released by PostgreSQL when its session ends: when its
        // node exits or dies (the kernel closes its socket) or its connection breaks.
        let lock = format!("SELECT pg_advisory_lock({LEADER_LOCK_KEY})");
        tokio::select! {
            locked = client.batch_execute(&lock) => {
                if let Err(e) = locked {
                    return e.into();
                }
            }
            _ = &mut running => return StoreError::Worker("the lock connection closed".into()),
        }
        tracing::info!("this node took the coordinator lock");
        held.send_replace(true);
    }
    let mut check = tokio::time::interval(LEASE_CHECK);
    loop {
        tokio::select! {
            _ = &mut running => return StoreError::Worker("the lock connection closed".into()),
            _ = check.tick() => match tokio::time::timeout(LEASE_CHECK, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return e.into(),
                Err(_) => return StoreError::Worker("the lock connection stopped answering".into()),
            },
        }
    }
}

/// This node's writer: one dedicated connection, reopened after it breaks.
pub struct PostgresWriter {
    config: tokio_postgres::Config,
    /// `None` after the connection broke; the next append reconnects.
    conn: Option<WriteConn>,
}

#[async_trait]
impl LogWriter for PostgresWriter {
    async fn append(&mut self, events: Vec<NewEvent>) -> Result<Commit, StoreError> {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = Some(WriteConn::open(&self.config).await?);
        }
        let conn = self.conn.as_mut().ok_or_else(|| StoreError::Worker("the write connection is missing".into()))?;
        let result = conn.commit(events).await;
        if result.is_err() && conn.client.is_closed() {
            self.conn = None;
        }
        result
    }
}

/// The writer's connection and its prepared statements.
struct WriteConn {
    client: Client,
    lock_head: Statement,
    insert: Statement,
    advance: Statement,
}

/// A group numbered from a head: one outcome per event, and the events to store.
struct Numbered<'a> {
    outcomes: Vec<Appended>,
    fresh: Vec<(i64, &'a NewEvent)>,
}

/// Numbers `events` from `head + 1`, skipping ids in `in_log` (which keep their seq)
/// and ids seen earlier in the group (duplicates of that one, as in SQLite).
fn number<'a>(events: &'a [NewEvent], head: i64, in_log: &HashMap<String, u64>) -> Numbered<'a> {
    let mut seen: HashMap<&str, u64> = HashMap::new();
    let mut numbered = Numbered { outcomes: Vec::with_capacity(events.len()), fresh: Vec::with_capacity(events.len()) };
    let mut next = head + 1;
    for e in events {
        if let Some(&seq) = in_log.get(&e.id).or_else(|| seen.get(e.id.as_str())) {
            numbered.outcomes.push(Appended { id: e.id.clone(), seq, duplicate: true });
            continue;
        }
        seen.insert(&e.id, next as u64);
        numbered.outcomes.push(Appended { id: e.id.clone(), seq: next as u64, duplicate: false });
        numbered.fresh.push((next, e));
        next += 1;
    }
    numbered
}

impl WriteConn {
    async fn open(config: &tokio_postgres::Config) -> Result<Self, StoreError> {
        let (client, _running) = connect(config).await?;
        // One plan per statement, made once: none of them depends on the log's size
        // (the insert finds conflicts through the unique index, whatever the plan),
        // and re-planning the insert's arrays for every group cost a lot: groups of
        // 100 committed at 3 600 events/s with custom plans, 23 000 with this.
        client.batch_execute("SET plan_cache_mode = force_generic_plan").await?;
        // The third column says whether retention left any ids behind; only then are
        // a group's ids looked up there too, so a log without retention pays nothing.
        let lock_head = client
            .prepare("SELECT head, ts_ms, EXISTS (SELECT 1 FROM pruned_ids) FROM log_head WHERE one = 1 FOR UPDATE")
            .await?;
        // One statement for the whole group: arrays, one per column, unnested into rows.
        let insert = client
            .prepare(
                "INSERT INTO events (seq, id, event_type, source, task_id, agent_id, ts_ms, data)
                 SELECT seq, id, event_type, source, task_id, agent_id, $7, data
                 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $8::text[])
                   AS n (seq, id, event_type, source, task_id, agent_id, data)
                 ON CONFLICT (id) DO NOTHING
                 RETURNING id",
            )
            .await?;
        // NOTIFY inside the transaction is delivered at commit, and only if it commits.
        let advance = client
            .prepare(&format!(
                "WITH h AS (UPDATE log_head SET head = $1, ts_ms = $2 WHERE one = 1 RETURNING head)
                 SELECT pg_notify('{NOTIFY_CHANNEL}', head::text) FROM h"
            ))
            .await?;
        Ok(WriteConn { client, lock_head, insert, advance })
    }

    /// One group commit.
    ///
    /// Why seq is gapless and in commit order across every writer of every node: each
    /// transaction first locks the one `log_head` row (`FOR UPDATE`) and holds the lock
    /// until it commits or rolls back. Writers therefore assign seqs one transaction at
    /// a time. After waiting, `FOR UPDATE` reads the newest committed head (READ
    /// COMMITTED re-reads a row it waited for), so each writer continues exactly where
    /// the previous commit ended; a transaction that rolls back leaves the head as it
    /// was, so no hole remains. PostgreSQL releases row locks only after the commit is
    /// visible, so a later seq is never visible before an earlier one: any reader sees
    /// a prefix `1..=head` of the log, which is what followers rely on to publish in
    /// order without skipping. The same lock makes ids idempotent across nodes: while
    /// it is held no other writer inserts, so a conflict on `id` can only be an event
    /// already in the log.
    async fn commit(&mut self, events: Vec<NewEvent>) -> Result<Commit, StoreError> {
        let tx = self.client.transaction().await?;
        let row = tx.query_one(&self.lock_head, &[]).await?;
        let head: i64 = row.try_get(0)?;
        let last_ts: i64 = row.try_get(1)?;
        // Commit times never go backwards with seq, even across nodes whose clocks
        // differ, so time windows and seq windows agree.
        let ts_ms = chrono::Utc::now().timestamp_millis().max(last_ts);
        let mut pruned = HashMap::new();
        if row.try_get::<_, bool>(2)? {
            let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
            for row in tx.query("SELECT id, seq FROM pruned_ids WHERE id = ANY($1::text[])", &[&ids]).await? {
                pruned.insert(row.try_get::<_, String>(0)?, row.try_get::<_, i64>(1)? as u64);
            }
        }
        // Numbered as if every id not pruned were new: one statement in the usual case.
        let mut numbered = number(&events, head, &pruned);
        let inserted = insert_fresh(&tx, &self.insert, &numbered.fresh, ts_ms).await?;
        if inserted.len() != numbered.fresh.len() {
            // Some ids are in the log already, so the numbering has holes: take the
            // group back out, look up the seqs those ids have, and number again.
            let repeated: Vec<&str> =
                numbered.fresh.iter().map(|(_, e)| e.id.as_str()).filter(|id| !inserted.contains(*id)).collect();
            // Index lookups, whatever the planner thinks of a log that grew since its
            // statistics were taken.
            tx.batch_execute("SET LOCAL enable_seqscan = off").await?;
            let last_tried = head + numbered.fresh.len() as i64;
            tx.execute("DELETE FROM events WHERE seq > $1 AND seq <= $2", &[&head, &last_tried]).await?;
            let mut in_log = pruned;
            for row in tx.query("SELECT id, seq FROM events WHERE id = ANY($1::text[])", &[&repeated]).await? {
                in_log.insert(row.try_get::<_, String>(0)?, row.try_get::<_, i64>(1)? as u64);
            }
            numbered = number(&events, head, &in_log);
            if insert_fresh(&tx, &self.insert, &numbered.fresh, ts_ms).await?.len() != numbered.fresh.len() {
                return Err(StoreError::Worker("an id conflicted twice under the log's lock".into()));
            }
        }
        let mut result = Commit { outcomes: numbered.outcomes, stored: Vec::with_capacity(numbered.fresh.len()) };
        if let Some((last, _)) = numbered.fresh.last() {
            tx.execute(&self.advance, &[last, &ts_ms]).await?;
            let timestamp = format_timestamp(ts_ms);
            for (seq, e) in &numbered.fresh {
                result.stored.push(Arc::new(Event::encode_committed(e.parts(*seq as u64, ts_ms), &timestamp)));
            }
        }
        tx.commit().await?;
        Ok(result)
    }
}

/// Inserts `fresh` with the writer's `insert` statement, skipping ids already stored;
/// returns the ids it inserted.
async fn insert_fresh(
    tx: &tokio_postgres::Transaction<'_>,
    insert: &Statement,
    fresh: &[(i64, &NewEvent)],
    ts_ms: i64,
) -> Result<HashSet<String>, StoreError> {
    if fresh.is_empty() {
        return Ok(HashSet::new());
    }
    let seqs: Vec<i64> = fresh.iter().map(|(s, _)| *s).collect();
    let ids: Vec<&str> = fresh.iter().map(|(_, e)| e.id.as_str()).collect();
    let types: Vec<&str> = fresh.iter().map(|(_, e)| e.event_type.as_str()).collect();
    let sources: Vec<&str> = fresh.iter().map(|(_, e)| e.source.as_str()).collect();
    let tasks: Vec<Option<&str>> = fresh.iter().map(|(_, e)| e.task_id.as_deref()).collect();
    let agents: Vec<Option<&str>> = fresh.iter().map(|(_, e)| e.agent_id.as_deref()).collect();
    let data: Vec<&str> = fresh.iter().map(|(_, e)| e.data.as_str()).collect();
    let rows = tx.query(insert, &[&seqs, &ids, &types, &sources, &tasks, &agents, &ts_ms, &data]).await?;
    rows.iter().map(|r| Ok(r.try_get::<_, String>(0)?)).collect()
}

/// `url` with its database name replaced by `name` (for `postgres://` URLs).
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn check_database_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(()) } else { Err(StoreError::BadUrl(format!("{name:?} is not a plain database name"))) }
}

/// Creates the empty database `name` on the server of `server_url` and returns its
/// URL. The test suites give each test a database of its own this way.
///
/// # Errors
/// The name is not lowercase letters, digits and `_`, or the server refused.
pub async fn create_database(server_url: &str, name: &str) -> Result<String, StoreError> {
    check_database_name(name)?;
    let (client, _running) = connect(&parse_url(server_url)?).await?;
    client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    Ok(url_with_database(server_url, name))
}

/// Drops the database `name` on the server of `server_url`, closing its sessions.
///
/// # Errors
/// The name is not a plain name, or the server refused.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), StoreError> {
    check_database_name(name)?;
    let (client, _running) = connect(&parse_url(server_url)?).await?;
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance::{self, new_event};

    /// The server the tests use: `SWARMFEED_TEST_POSTGRES` (set by `scripts/test`), or
    /// the local default.
    fn server() -> String {
        std::env::var("SWARMFEED_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// A fresh database, dropped when the guard is.
    struct Scratch {
        url: String,
        name: String,
    }

    impl Scratch {
        async fn new() -> Self {
            let prefix = std::env::var("SWARMFEED_TEST_DB_PREFIX").unwrap_or_else(|_| "sftest".into());
            let name = format!("{prefix}_unit_{}", uuid::Uuid::now_v7().simple());
            let url = create_database(&server(), &name).await.expect("test PostgreSQL answers");
            Scratch { url, name }
        }

        async fn drop(self) {
            drop_database(&server(), &self.name).await.unwrap();
        }
    }

    #[test]
    fn database_urls_get_the_new_name_and_keep_their_options() {
        assert_eq!(url_with_database("postgres://u@h:5/postgres", "x"), "postgres://u@h:5/x");
        assert_eq!(url_with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(url_with_database("postgresql://h/db?sslmode=disable", "x"), "postgresql://h/x?sslmode=disable");
        assert!(parse_url("mysql://h/db").is_err());
        assert!(check_database_name("a; DROP").is_err());
    }

    #[tokio::test]
    async fn seqs_are_gapless_and_ids_idempotent_across_reopen() {
        let db = Scratch::new().await;
        conformance::first_writes_are_gapless_and_idempotent(&PostgresStore::connect(&db.url, 2).await.unwrap()).await;
        conformance::reopened_log_keeps_ids_and_head(&PostgresStore::connect(&db.url, 2).await.unwrap()).await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        let mut w = store.writer().await.unwrap();
        // An id already stored amid new ones: the new ones close up around it.
        let c = w
            .append(vec![new_event("x", "x.y"), new_event("a", "x.y"), new_event("y", "x.y"), new_event("x", "x.y")])
            .await
            .unwrap();
        let seqs: Vec<_> = c.outcomes.iter().map(|o| (o.seq, o.duplicate)).collect();
        assert_eq!(seqs, vec![(4, false), (1, true), (5, false), (4, true)]);
        assert_eq!(c.stored.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
        let all = store.query(Query { limit: 10, ..Query::default() }).await.unwrap();
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(store.get_by_id("y").await.unwrap().unwrap().seq, 5);
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn queries_apply_filters_windows_and_order() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        conformance::queries_apply_filters_windows_and_order(&store).await;
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn pruned_ids_answer_their_original_seq() {
        let db = Scratch::new().await;
        conformance::pruned_ids_answer_their_original_seq(&PostgresStore::connect(&db.url, 2).await.unwrap()).await;
        db.drop().await;
    }

    #[tokio::test]
    async fn events_read_back_are_byte_for_byte_the_ones_committed() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 1).await.unwrap();
        let mut w = store.writer().await.unwrap();
        let mut e = new_event("ü-1", "tool.called");
        e.task_id = Some("t".into());
        e.data = r#"{"name":"Zoë","nested":{"n":[1,2.5,null]},"s":"a\"b"}"#.into();
        let c = w.append(vec![e]).await.unwrap();
        let read = store.get_by_seq(1).await.unwrap().unwrap();
        assert_eq!(read.payload(), c.stored[0].payload());
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let db = Scratch::new().await;
        drop(PostgresStore::connect(&db.url, 1).await.unwrap());
        let (client, _running) = connect(&parse_url(&db.url).unwrap()).await.unwrap();
        client.batch_execute("UPDATE schema_version SET version = 99").await.unwrap();
        assert!(matches!(PostgresStore::connect(&db.url, 1).await, Err(StoreError::SchemaTooNew { found: 99, .. })));
        drop(client);
        db.drop().await;
    }

    #[tokio::test]
    async fn writers_of_several_nodes_share_one_gapless_sequence_and_one_set_of_ids() {
        let db = Scratch::new().await;
        // Three nodes start together: migrations take turns.
        let stores =
            futures_util::future::try_join_all((0..3).map(|_| PostgresStore::connect(&db.url, 1))).await.unwrap();
        let mut tasks = Vec::new();
        for (n, store) in stores.iter().enumerate() {
            let mut w = store.writer().await.unwrap();
            tasks.push(tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..20 {
                    // Every node also sends ids the others send: each is stored once.
                    let batch = vec![new_event(&format!("n{n}-{i}"), "a.b"), new_event(&format!("shared-{i}"), "a.b")];
                    outcomes.extend(w.append(batch).await.unwrap().outcomes);
                }
                outcomes
            }));
        }
        let mut by_id: HashMap<String, u64> = HashMap::new();
        for t in tasks {
            for o in t.await.unwrap() {
                let seq = *by_id.entry(o.id.clone()).or_insert(o.seq);
                assert_eq!(seq, o.seq, "{} has one seq on every node", o.id);
            }
        }
        let mut seqs: Vec<u64> = by_id.values().copied().collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=80).collect::<Vec<_>>(), "60 own ids and 20 shared ones, gapless");
        assert_eq!(stores[0].bounds().await.unwrap(), Bounds { oldest: 1, head: 80 });
        drop(stores);
        db.drop().await;
    }

    #[tokio::test]
    async fn every_node_hears_of_every_commit() {
        let db = Scratch::new().await;
        let a = PostgresStore::connect(&db.url, 1).await.unwrap();
        let b = PostgresStore::connect(&db.url, 1).await.unwrap();
        let CommitFeed::Shared(mut heard) = b.commit_feed().await.unwrap() else { panic!("postgres is shared") };
        let mut w = a.writer().await.unwrap();
        // LISTEN may still be on its way: commit until the signal reports the head.
        let mut n = 0;
        let head = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                n += 1;
                w.append(vec![new_event(&format!("e{n}"), "a.b")]).await.unwrap();
                if let Ok(head) = tokio::time::timeout(Duration::from_millis(200), heard.changed()).await {
                    return head;
                }
            }
        })
        .await
        .expect("a commit is announced");
        assert!(head >= 1 && head <= n);
        drop((a, b, heard));
        db.drop().await;
    }

    #[tokio::test]
    async fn one_node_leads_at_a_time_and_the_lock_passes_on_when_it_goes() {
        let db = Scratch::new().await;
        let a = PostgresStore::connect(&db.url, 1).await.unwrap();
        let b = PostgresStore::connect(&db.url, 1).await.unwrap();
        let first = a.leadership().await.unwrap();
        let mut second = b.leadership().await.unwrap();
        assert!(first.is_held(), "the first node alone takes the lock at once");
        assert!(!second.is_held());
        drop(first);
        let held = tokio::time::timeout(Duration::from_secs(10), second.changed()).await.expect("taken over");
        assert!(held && second.is_held());
        drop((a, b, second));
        db.drop().await;
    }
}
