//! The task and agent boards on PostgreSQL: [`crate::store::board`]'s statements on
//! pooled connections. Forwarded from the [`crate::store::Store`] impl in `reads`.

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::PostgresStore;
use super::reads::pg_args;
use crate::store::StoreError;
use crate::store::board::{
    AGENT_COLUMNS, AgentQuery, AgentRow, BoardAgent, BoardChanges, BoardStatus, BoardTask, TASK_COLUMNS, TaskQuery,
    TaskRow, agent_args, count_tasks_sql, list_agents_sql, list_tasks_sql, task_args, to_sql_int, upsert_agent_sql,
    upsert_task_sql,
};
use crate::store::sql::Arg;

fn task_from_row(r: &Row) -> Result<TaskRow, StoreError> {
    Ok(TaskRow {
        task_id: r.try_get(0)?,
        description: r.try_get(1)?,
        status: r.try_get(2)?,
        created_seq: r.try_get(3)?,
        created_ms: r.try_get(4)?,
        updated_ms: r.try_get(5)?,
        agent_id: r.try_get(6)?,
        bid_sats: r.try_get(7)?,
        bids: r.try_get(8)?,
        retry_of: r.try_get(9)?,
        reason: r.try_get(10)?,
        auction_closed: r.try_get(11)?,
    })
}

fn agent_from_row(r: &Row) -> Result<AgentRow, StoreError> {
    Ok(AgentRow {
        agent_id: r.try_get(0)?,
        name: r.try_get(1)?,
        status: r.try_get(2)?,
        capabilities: r.try_get(3)?,
        tasks_done: r.try_get(4)?,
        tasks_failed: r.try_get(5)?,
        sats_earned: r.try_get(6)?,
        last_seen_ms: r.try_get(7)?,
        open_tasks: r.try_get(8)?,
        reported: r.try_get(9)?,
    })
}

impl PostgresStore {
    /// Runs one read built by `store::board` on a pooled connection.
    async fn board_read(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<Row>, StoreError> {
        let args = pg_args(args);
        let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, &params).await?)
    }

    pub(super) async fn read_board_seq(&self) -> Result<u64, StoreError> {
        let rows = self.board_read("SELECT seq FROM board_head", Vec::new()).await?;
        let row = rows.first().ok_or_else(|| StoreError::Worker("board_head has no row".into()))?;
        Ok(row.try_get::<_, i64>(0)?.max(0) as u64)
    }

    pub(super) async fn read_board_rows(
        &self,
        task_ids: Vec<String>,
        agent_ids: Vec<String>,
    ) -> Result<(Vec<BoardTask>, Vec<BoardAgent>), StoreError> {
        let client = self.pool.get().await?;
        // One round trip each, however many ids.
        let tasks = client
            .query(&format!("SELECT {TASK_COLUMNS} FROM board_tasks WHERE task_id = ANY($1)"), &[&task_ids])
            .await?;
        let agents = client
            .query(&format!("SELECT {AGENT_COLUMNS} FROM board_agents WHERE agent_id = ANY($1)"), &[&agent_ids])
            .await?;
        let tasks = tasks.iter().map(task_from_row).collect::<Result<Vec<_>, _>>()?;
        let agents = agents.iter().map(agent_from_row).collect::<Result<Vec<_>, _>>()?;
        Ok((
            tasks.into_iter().filter_map(TaskRow::into_task).collect(),
            agents.into_iter().filter_map(AgentRow::into_agent).collect(),
        ))
    }

    pub(super) async fn write_board(&self, changes: BoardChanges) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The row lock taken here orders two nodes saving at once: the second waits,
        // then finds the seq moved and saves nothing.
        let moved = tx
            .execute(
                "UPDATE board_head SET seq = $1 WHERE seq = $2",
                &[&to_sql_int(changes.to_seq), &to_sql_int(changes.from_seq)],
            )
            .await?;
        if moved == 0 {
            return Ok(false);
        }
        let upsert = tx.prepare(&upsert_task_sql('$')).await?;
        for t in &changes.tasks {
            let args = pg_args(task_args(t));
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
            tx.execute(&upsert, &params).await?;
        }
        let upsert = tx.prepare(&upsert_agent_sql('$')).await?;
        for a in &changes.agents {
            let args = pg_args(agent_args(a));
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
            tx.execute(&upsert, &params).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    pub(super) async fn read_tasks(&self, q: TaskQuery) -> Result<Vec<BoardTask>, StoreError> {
        let (sql, args) = list_tasks_sql(&q, '$');
        let rows = self.board_read(&sql, args).await?;
        Ok(rows
            .iter()
            .map(task_from_row)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter_map(TaskRow::into_task)
            .collect())
    }

    pub(super) async fn read_task_counts(&self, q: TaskQuery) -> Result<Vec<(BoardStatus, u64)>, StoreError> {
        let (sql, args) = count_tasks_sql(&q, '$');
        let mut out = Vec::new();
        for row in self.board_read(&sql, args).await? {
            let status: String = row.try_get(0)?;
            let n: i64 = row.try_get(1)?;
            out.extend(BoardStatus::parse(&status).map(|s| (s, n.max(0) as u64)));
        }
        Ok(out)
    }

    pub(super) async fn read_agents(&self, q: AgentQuery) -> Result<Vec<BoardAgent>, StoreError> {
        let (sql, args) = list_agents_sql(&q, '$');
        let rows = self.board_read(&sql, args).await?;
        Ok(rows
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter_map(AgentRow::into_agent)
            .collect())
    }

    /// [`crate::store::Store::save_swarm_snapshot`]: the insert and the trim in one
    /// transaction.
    pub(super) async fn write_swarm_snapshot(
        &self,
        limits: &str,
        seq: u64,
        body: Vec<u8>,
        keep: usize,
    ) -> Result<(), StoreError> {
        // The newest `keep` stay: delete below the one `keep - 1` places under the newest.
        let keep = i64::try_from(keep.max(1) - 1).unwrap_or(i64::MAX);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO swarm_snapshots (limits, seq, body) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&limits, &to_sql_int(seq), &body],
        )
        .await?;
        tx.execute(
            "DELETE FROM swarm_snapshots WHERE limits = $1 AND seq < (SELECT seq FROM swarm_snapshots
             WHERE limits = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
            &[&limits, &keep],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn delete_finished_board_tasks(&self, before_seq: u64) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "DELETE FROM board_tasks WHERE created_seq < $1 AND status IN ('completed', 'failed', 'cancelled')",
                &[&to_sql_int(before_seq)],
            )
            .await?)
    }
}
