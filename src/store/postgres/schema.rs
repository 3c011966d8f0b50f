//! The schema: its tables and the migrations that make them, applied by the first
//! node to start and skipped by the others.

use super::{StoreError, connect};

/// The advisory lock taken while migrating, so nodes that start together take turns.
const MIGRATION_LOCK_KEY: i64 = 0x5357_4152_4d5f_4d47; // "SWARM_MG"

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
    // 4: alert rules (DESIGN §11). Their state is not kept here: it is folded from
    // the log's alert events and a window of recent events.
    r#"
    CREATE TABLE alert_rules (
        id          TEXT   PRIMARY KEY,
        name        TEXT   NOT NULL,
        filter      TEXT   NOT NULL,
        threshold   BIGINT,
        window_secs BIGINT,
        absent_secs BIGINT,
        created_ms  BIGINT NOT NULL
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
        delivered_seq    BIGINT  NOT NULL,
        created_ms       BIGINT  NOT NULL,
        last_status      INTEGER,
        last_error       TEXT,
        failing_since_ms BIGINT,
        last_attempt_ms  BIGINT
    );
    "#,
    // 6: the task and agent boards (DESIGN §10), folded from the log behind the
    // writer; `board_head.seq` is the last seq folded into them (see `store::board`).
    r#"
    CREATE TABLE board_head (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq BIGINT NOT NULL
    );
    INSERT INTO board_head (one, seq) VALUES (1, 0);
    CREATE TABLE board_tasks (
        task_id        TEXT COLLATE "C" PRIMARY KEY,
        description    TEXT   NOT NULL,
        status         TEXT COLLATE "C" NOT NULL,
        created_seq    BIGINT NOT NULL UNIQUE,
        created_ms     BIGINT NOT NULL,
        updated_ms     BIGINT NOT NULL,
        agent_id       TEXT COLLATE "C",
        bid_sats       BIGINT,
        bids           BIGINT NOT NULL,
        retry_of       TEXT COLLATE "C",
        reason         TEXT,
        auction_closed BIGINT NOT NULL
    );
    CREATE INDEX board_tasks_by_status ON board_tasks (status, created_seq);
    CREATE INDEX board_tasks_by_agent  ON board_tasks (agent_id, created_seq) WHERE agent_id IS NOT NULL;
    CREATE TABLE board_agents (
        agent_id     TEXT COLLATE "C" PRIMARY KEY,
        name         TEXT   NOT NULL,
        status       TEXT COLLATE "C" NOT NULL,
        capabilities TEXT   NOT NULL,
        tasks_done   BIGINT NOT NULL,
        tasks_failed BIGINT NOT NULL,
        sats_earned  BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL,
        open_tasks   BIGINT NOT NULL,
        reported     TEXT
    );
    "#,
    // 7: full-text search (DESIGN §10). The words of each event, split and lowercased
    // by `crate::search` and parsed with the `simple` configuration (no stemming, no
    // stop words, as SQLite's FTS5 index), written by the indexer behind the writer,
    // from seq 0 for a log that predates this step.
    r#"
    CREATE TABLE event_search (
        seq BIGINT PRIMARY KEY,
        doc tsvector NOT NULL
    );
    CREATE INDEX event_search_doc ON event_search USING GIN (doc);
    CREATE TABLE search_position (
        one INTEGER PRIMARY KEY CHECK (one = 1),
        seq BIGINT NOT NULL
    );
    INSERT INTO search_position (one, seq) VALUES (1, 0);
    "#,
    // 8: snapshots of the swarm projection (`swarm::history`), every so many events,
    // so that the swarm at any past seq is the nearest snapshot plus a short fold.
    // `limits` names the projection limits it was folded under: only a fold under the
    // same limits may start from it.
    r#"
    CREATE TABLE swarm_snapshots (
        limits TEXT COLLATE "C" NOT NULL,
        seq    BIGINT NOT NULL,
        body   BYTEA  NOT NULL,
        PRIMARY KEY (limits, seq)
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

pub(super) async fn migrate(config: &super::tls::Target) -> Result<(), StoreError> {
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

#[cfg(test)]
mod tests {
    use super::super::test_support::Scratch;
    use super::super::{PostgresStore, connect, parse_url};
    use crate::store::StoreError;

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
}
