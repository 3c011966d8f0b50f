//! The log's writer: one dedicated connection per node that commits groups of events
//! under the `log_head` row lock, which every writer of every node takes first, so
//! that seq stays gapless and in commit order across nodes (argued at
//! [`WriteConn::commit`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio_postgres::{Client, Statement};

use super::notify::NOTIFY_CHANNEL;
use super::{PostgresStore, connect, within};
use crate::event::{Event, NewEvent, format_timestamp};
use crate::store::{Appended, Commit, LogWriter, StoreError};

impl PostgresStore {
    /// [`Store::writer`](crate::store::Store::writer): the one writer this store hands out.
    pub(super) async fn open_writer(&self) -> Result<Box<dyn LogWriter>, StoreError> {
        if self.writer_taken.swap(true, Ordering::SeqCst) {
            return Err(StoreError::Worker("the log writer was already taken".into()));
        }
        let conn = WriteConn::open(&self.config, self.timeout).await?;
        Ok(Box::new(PostgresWriter { config: self.config.clone(), conn: Some(conn), timeout: self.timeout }))
    }
}

/// This node's writer: one dedicated connection, reopened after it breaks.
pub(crate) struct PostgresWriter {
    config: super::tls::Target,
    /// `None` after the connection broke; the next append reconnects.
    conn: Option<WriteConn>,
    /// How long opening the connection or one commit may take.
    timeout: Duration,
}

#[async_trait]
impl LogWriter for PostgresWriter {
    /// A commit that outlasts the timeout (a stalled network) is abandoned with its
    /// connection, so nothing is acknowledged that may not have committed; its
    /// transaction ends when the server notices the session is gone or idle in the
    /// transaction for the same timeout (`idle_in_transaction_session_timeout`), and
    /// until then it holds the `log_head` lock, so every node's next commit waits
    /// rather than numbering around it. Whether it committed is told by its ids: a re-sent
    /// batch answers their seqs.
    async fn append(&mut self, events: Vec<NewEvent>) -> Result<Commit, StoreError> {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = None;
            self.conn =
                Some(within("a new connection", self.timeout, WriteConn::open(&self.config, self.timeout)).await?);
        }
        let conn = self.conn.as_mut().ok_or_else(|| StoreError::Worker("the write connection is missing".into()))?;
        let result = within("a commit", self.timeout, conn.commit(events)).await;
        if result.is_err() && (conn.client.is_closed() || matches!(result, Err(StoreError::TimedOut { .. }))) {
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
    async fn open(config: &super::tls::Target, timeout: Duration) -> Result<Self, StoreError> {
        let (client, _running) = connect(config).await?;
        super::bound_idle_transactions(&client, timeout).await?;
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::PostgresStore;
    use super::super::test_support::Scratch;
    use crate::store::conformance::{self, new_event};
    use crate::store::{Bounds, Query, Store};

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
    async fn pruned_ids_answer_their_original_seq() {
        let db = Scratch::new().await;
        conformance::pruned_ids_answer_their_original_seq(&PostgresStore::connect(&db.url, 2).await.unwrap()).await;
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
}
