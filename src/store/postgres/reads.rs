//! Reads, and the small writes that are not the log's: the [`Store`] impl's queries,
//! tokens, sessions, login codes and retention, each on a pooled connection. The
//! methods that open a dedicated connection (the writer, the LISTEN feeds, the leader
//! lock) live with their concern and are only forwarded from here.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::notify::REVOKE_CHANNEL;
use super::{PostgresStore, within};
use crate::event::{Event, EventParts};
use crate::store::board::{AgentQuery, BoardAgent, BoardChanges, BoardStatus, BoardTask, TaskQuery, to_sql_int};
use crate::store::sql::{
    ALERT_RULE_COLUMNS, Arg, EVENT_COLUMNS, SESSION_COLUMNS, TOKEN_COLUMNS, TextSearch, WEBHOOK_COLUMNS, query_sql,
};
use crate::store::{
    AlertRuleRecord, Bounds, BucketCount, CommitFeed, Indexed, Leadership, LogWriter, Query, RevocationSignal,
    SessionLookup, SessionRecord, Store, StoreError, TakenLoginCode, TokenRecord, WebhookOutcome, WebhookRecord,
};

impl PostgresStore {
    /// Runs one read statement on a pooled connection, with its plan cached per
    /// connection. A read that takes longer than the store's timeout is abandoned, and its
    /// connection taken out of the pool: it may still carry the unanswered statement.
    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        let client = self.pool.get().await?;
        let read = async {
            let statement = client.prepare_cached(sql).await?;
            Ok(client.query(&statement, params).await?)
        };
        let result = within("a read", self.timeout, read).await;
        if matches!(result, Err(StoreError::TimedOut { .. })) {
            drop(deadpool_postgres::Object::take(client));
        }
        result
    }
}

/// Binds the shared statements' arguments as PostgreSQL parameters.
pub(super) fn pg_args(args: Vec<Arg>) -> Vec<Box<dyn ToSql + Sync + Send>> {
    args.into_iter()
        .map(|a| -> Box<dyn ToSql + Sync + Send> {
            match a {
                Arg::Text(t) => Box::new(t),
                Arg::Int(i) => Box::new(i),
                Arg::NullText => Box::new(None::<String>),
                Arg::NullInt => Box::new(None::<i64>),
            }
        })
        .collect()
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
        self.open_writer().await
    }

    async fn commit_feed(&self) -> Result<CommitFeed, StoreError> {
        self.open_commit_feed().await
    }

    async fn leadership(&self) -> Result<Leadership, StoreError> {
        self.open_leadership().await
    }

    #[tracing::instrument(skip_all, fields(limit = q.limit))]
    async fn query(&self, q: Query) -> Result<Vec<Arc<Event>>, StoreError> {
        let (sql, args) = query_sql(&q, '$', TextSearch::TsQuery);
        let args = pg_args(args);
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

    async fn bucket_counts(&self, since_ms: i64, width_ms: i64) -> Result<Vec<BucketCount>, StoreError> {
        let width_ms = width_ms.max(1);
        // A range of `events_by_time` from `since_ms`.
        let rows = self
            .rows(
                "SELECT (ts_ms / $2) * $2 AS bucket, event_type, COUNT(*) FROM events
                 WHERE ts_ms >= $1 GROUP BY bucket, event_type ORDER BY bucket, event_type",
                &[&since_ms, &width_ms],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(BucketCount {
                    start_ms: r.try_get(0)?,
                    event_type: r.try_get(1)?,
                    count: r.try_get::<_, i64>(2)? as u64,
                })
            })
            .collect()
    }

    async fn search_position(&self) -> Result<u64, StoreError> {
        let rows = self.rows("SELECT seq FROM search_position", &[]).await?;
        let seq: i64 = rows.first().map(|r| r.try_get(0)).transpose()?.unwrap_or(0);
        Ok(seq as u64)
    }

    async fn index_for_search(&self, after: u64, limit: usize, drop_below: Option<u64>) -> Result<Indexed, StoreError> {
        let after_seq = after.min(i64::MAX as u64) as i64;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The head first: every seq up to it is committed (seqs commit in order), so if
        // fewer than `limit` events follow `after`, none up to the head is missing but
        // the pruned.
        let head: i64 = tx.query_one("SELECT head FROM log_head", &[]).await?.try_get(0)?;
        let rows = tx
            .query(
                "SELECT seq, event_type, agent_id, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after_seq, &(limit.min(i64::MAX as usize) as i64)],
            )
            .await?;
        let (mut seqs, mut words) = (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for row in &rows {
            let agent_id: Option<&str> = row.try_get(2)?;
            // A damaged data column is indexed by the display text alone.
            let data = serde_json::from_str(row.try_get(3)?).unwrap_or_default();
            seqs.push(row.try_get::<_, i64>(0)?);
            words.push(crate::search::document(row.try_get(1)?, agent_id, &data));
        }
        let last = seqs.last().copied().unwrap_or(after_seq);
        let position = if rows.len() == limit { last } else { head.max(last).max(after_seq) };
        // Every node runs an indexer over the same tables: rows another node indexed
        // first are skipped, and the position only moves forward.
        tx.execute(
            "INSERT INTO event_search (seq, doc)
             SELECT s, to_tsvector('simple', w) FROM unnest($1::bigint[], $2::text[]) AS t (s, w)
             ON CONFLICT (seq) DO NOTHING",
            &[&seqs, &words],
        )
        .await?;
        if let Some(below) = drop_below {
            tx.execute("DELETE FROM event_search WHERE seq < $1", &[&(below.min(i64::MAX as u64) as i64)]).await?;
        }
        if position != after_seq {
            tx.execute("UPDATE search_position SET seq = GREATEST(seq, $1)", &[&position]).await?;
        }
        tx.commit().await?;
        Ok(Indexed { position: position as u64, events: rows.len() })
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
        self.open_revocation_feed().await
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

    async fn last_seq_at_or_before(&self, ts_ms: i64) -> Result<Option<u64>, StoreError> {
        let sql = "SELECT seq FROM events WHERE ts_ms <= $1 ORDER BY ts_ms DESC, seq DESC LIMIT 1";
        let rows = self.rows(sql, &[&ts_ms]).await?;
        let seq: Option<i64> = match rows.first() {
            Some(r) => r.try_get(0)?,
            None => None,
        };
        Ok(seq.map(|s| s as u64))
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
                     RETURNING id, seq, ts_ms),
                 unindexed AS (DELETE FROM event_search WHERE seq IN (SELECT seq FROM gone))
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

    async fn board_seq(&self) -> Result<u64, StoreError> {
        self.read_board_seq().await
    }

    async fn board_rows(
        &self,
        task_ids: Vec<String>,
        agent_ids: Vec<String>,
    ) -> Result<(Vec<BoardTask>, Vec<BoardAgent>), StoreError> {
        self.read_board_rows(task_ids, agent_ids).await
    }

    async fn save_board(&self, changes: BoardChanges) -> Result<bool, StoreError> {
        self.write_board(changes).await
    }

    async fn list_tasks(&self, q: TaskQuery) -> Result<Vec<BoardTask>, StoreError> {
        self.read_tasks(q).await
    }

    async fn count_tasks(&self, q: TaskQuery) -> Result<Vec<(BoardStatus, u64)>, StoreError> {
        self.read_task_counts(q).await
    }

    async fn list_agents(&self, q: AgentQuery) -> Result<Vec<BoardAgent>, StoreError> {
        self.read_agents(q).await
    }

    async fn save_swarm_snapshot(&self, limits: &str, seq: u64, body: Vec<u8>, keep: usize) -> Result<(), StoreError> {
        self.write_swarm_snapshot(limits, seq, body, keep).await
    }

    async fn swarm_snapshot_at_or_before(&self, limits: &str, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let rows = self
            .rows(
                "SELECT seq, body FROM swarm_snapshots WHERE limits = $1 AND seq <= $2 ORDER BY seq DESC LIMIT 1",
                &[&limits, &to_sql_int(seq)],
            )
            .await?;
        rows.first().map(|r| Ok((r.try_get::<_, i64>(0)?.max(0) as u64, r.try_get(1)?))).transpose()
    }

    async fn prune_swarm_snapshots(&self, oldest: u64) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let below = to_sql_int(oldest.saturating_sub(1));
        Ok(client.execute("DELETE FROM swarm_snapshots WHERE seq < $1", &[&below]).await?)
    }

    async fn prune_board(&self, before_seq: u64) -> Result<u64, StoreError> {
        self.delete_finished_board_tasks(before_seq).await
    }

    async fn insert_alert_rule(&self, rule: AlertRuleRecord, max: usize) -> Result<bool, StoreError> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let opt = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let (threshold, window, absent) = (opt(rule.threshold), opt(rule.window_secs), opt(rule.absent_secs));
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The table's lock makes count-then-insert one step across nodes: two requests
        // at once cannot both take the last place. Rules are few and rarely written.
        tx.batch_execute("LOCK TABLE alert_rules IN SHARE ROW EXCLUSIVE MODE").await?;
        let inserted = tx
            .execute(
                "INSERT INTO alert_rules (id, name, filter, threshold, window_secs, absent_secs, created_ms)
                 SELECT $1, $2, $3, $4, $5, $6, $7 WHERE (SELECT COUNT(*) FROM alert_rules) < $8",
                &[&rule.id, &rule.name, &rule.filter, &threshold, &window, &absent, &rule.created_ms, &max],
            )
            .await?;
        tx.commit().await?;
        Ok(inserted == 1)
    }

    async fn list_alert_rules(&self) -> Result<Vec<AlertRuleRecord>, StoreError> {
        let rows =
            self.rows(&format!("SELECT {ALERT_RULE_COLUMNS} FROM alert_rules ORDER BY created_ms, id"), &[]).await?;
        rows.iter().map(alert_rule_from_row).collect()
    }

    async fn delete_alert_rule(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        Ok(client.execute("DELETE FROM alert_rules WHERE id = $1", &[&id]).await? == 1)
    }

    async fn insert_webhook(&self, w: WebhookRecord) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO webhooks (id, url, filter, format, secret, delivered_seq, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[&w.id, &w.url, &w.filter, &w.format, &w.secret, &(w.delivered_seq as i64), &w.created_ms],
            )
            .await?;
        Ok(())
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        let rows = self.rows(&format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_ms, id"), &[]).await?;
        rows.iter().map(webhook_from_row).collect()
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        Ok(client.execute("DELETE FROM webhooks WHERE id = $1", &[&id]).await? == 1)
    }

    async fn record_webhook(&self, id: &str, outcome: &WebhookOutcome, now_ms: i64) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let changed = match outcome {
            WebhookOutcome::Delivered { upto, status } => {
                client
                    .execute(
                        "UPDATE webhooks SET delivered_seq = GREATEST(delivered_seq, $2), last_status = $3,
                         last_error = NULL, failing_since_ms = NULL, last_attempt_ms = $4 WHERE id = $1",
                        &[&id, &(*upto as i64), &i32::from(*status), &now_ms],
                    )
                    .await?
            }
            WebhookOutcome::Passed { upto } => {
                client
                    .execute(
                        "UPDATE webhooks SET delivered_seq = GREATEST(delivered_seq, $2) WHERE id = $1",
                        &[&id, &(*upto as i64)],
                    )
                    .await?
            }
            WebhookOutcome::Failed { status, error } => {
                client
                    .execute(
                        "UPDATE webhooks SET last_status = $2, last_error = $3,
                         failing_since_ms = COALESCE(failing_since_ms, $4), last_attempt_ms = $4 WHERE id = $1",
                        &[&id, &status.map(i32::from), &error, &now_ms],
                    )
                    .await?
            }
        };
        Ok(changed == 1)
    }
}

fn webhook_from_row(r: &tokio_postgres::Row) -> Result<WebhookRecord, StoreError> {
    Ok(WebhookRecord {
        id: r.try_get(0)?,
        url: r.try_get(1)?,
        filter: r.try_get(2)?,
        format: r.try_get(3)?,
        secret: r.try_get(4)?,
        delivered_seq: r.try_get::<_, i64>(5)? as u64,
        created_ms: r.try_get(6)?,
        last_status: r.try_get::<_, Option<i32>>(7)?.and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get(8)?,
        failing_since_ms: r.try_get(9)?,
        last_attempt_ms: r.try_get(10)?,
    })
}

fn alert_rule_from_row(r: &tokio_postgres::Row) -> Result<AlertRuleRecord, StoreError> {
    let secs = |i: usize| r.try_get::<_, Option<i64>>(i).map(|v| v.map(|v| v as u64));
    Ok(AlertRuleRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        filter: r.try_get(2)?,
        threshold: secs(3)?,
        window_secs: secs(4)?,
        absent_secs: secs(5)?,
        created_ms: r.try_get(6)?,
    })
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

#[cfg(test)]
mod tests {
    use super::super::PostgresStore;
    use super::super::test_support::Scratch;
    use crate::store::Store;
    use crate::store::conformance::{self, new_event};

    #[tokio::test]
    async fn queries_apply_filters_windows_and_order() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        conformance::queries_apply_filters_windows_and_order(&store).await;
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn alert_rules_are_kept_listed_capped_and_deleted() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        conformance::alert_rules_are_kept_listed_capped_and_deleted(&store).await;
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn search_matches_words_phrases_prefixes_with_filters_and_paging() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        conformance::search_matches_words_phrases_prefixes_with_filters_and_paging(&store).await;
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn webhooks_keep_their_progress_and_failures() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        conformance::webhooks_keep_their_progress_and_failures(&store).await;
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn board_rows_save_filter_page_and_prune() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        conformance::board_rows_save_filter_page_and_prune(&store).await;
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn swarm_snapshots_keep_the_newest_and_go_with_retention() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        conformance::swarm_snapshots_keep_the_newest_and_go_with_retention(&store).await;
        drop(store);
        db.drop().await;
    }

    #[tokio::test]
    async fn pruned_events_leave_the_search_index() {
        let db = Scratch::new().await;
        let store = PostgresStore::connect(&db.url, 2).await.unwrap();
        conformance::pruned_events_leave_the_search_index(&store).await;
        let count = |word: &'static str| {
            let client = store.pool.get();
            async move {
                let client = client.await.unwrap();
                let sql = "SELECT count(*) FROM event_search WHERE doc @@ to_tsquery('simple', $1)";
                client.query_one(sql, &[&word]).await.unwrap().get::<_, i64>(0)
            }
        };
        assert_eq!(count("common").await, 0, "the pruned events' rows are gone");
        assert_eq!(count("late").await, 1, "the kept event's row stays");
        drop(store);
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
}
