//! The task and agent boards' rows (DESIGN §10) and the SQL both engines share for
//! them.
//!
//! The boards are a table of every task and every agent the retained log mentions,
//! folded from the log by [`crate::swarm::board_follower`] behind the writer, so
//! `GET /api/tasks` covers the whole retained log, not only the tasks the in-memory
//! projection keeps. This module owns the rows' shape and the text of their queries;
//! the fold that fills them is [`crate::swarm::board`]'s.
//!
//! `board_head.seq` is the last seq folded into the rows. Every write of the rows
//! advances it in the same transaction, and only from the seq the writer read
//! ([`BoardChanges::from_seq`]): of two nodes folding the same events, one saves and
//! the other learns it was overtaken, so no event is counted twice.

use super::sql::Arg;

/// Where a task is, as the boards and `GET /api/tasks?status=` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BoardStatus {
    /// Posted, taking bids (or posted by a producer that opened no auction yet).
    Bidding,
    Assigned,
    /// Started by its agent (`task.started`).
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl BoardStatus {
    /// Every status, in the order a task moves through them (the tabs' order).
    pub const ALL: [BoardStatus; 6] = [
        BoardStatus::Bidding,
        BoardStatus::Assigned,
        BoardStatus::Running,
        BoardStatus::Completed,
        BoardStatus::Failed,
        BoardStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BoardStatus::Bidding => "bidding",
            BoardStatus::Assigned => "assigned",
            BoardStatus::Running => "running",
            BoardStatus::Completed => "completed",
            BoardStatus::Failed => "failed",
            BoardStatus::Cancelled => "cancelled",
        }
    }

    /// The status named `s`, or `None` when it names none.
    pub fn parse(s: &str) -> Option<Self> {
        BoardStatus::ALL.into_iter().find(|b| b.as_str() == s)
    }

    /// Nothing more happens to the task.
    pub fn is_finished(self) -> bool {
        matches!(self, BoardStatus::Completed | BoardStatus::Failed | BoardStatus::Cancelled)
    }
}

/// Where an agent is: `idle`, `busy` or `offline`, as the boards name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BoardAgentStatus {
    Idle,
    Busy,
    Offline,
}

impl BoardAgentStatus {
    pub const ALL: [BoardAgentStatus; 3] = [BoardAgentStatus::Idle, BoardAgentStatus::Busy, BoardAgentStatus::Offline];

    pub fn as_str(self) -> &'static str {
        match self {
            BoardAgentStatus::Idle => "idle",
            BoardAgentStatus::Busy => "busy",
            BoardAgentStatus::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        BoardAgentStatus::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

/// One task on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardTask {
    pub task_id: String,
    pub description: String,
    pub status: BoardStatus,
    /// Seq of its `task.created`: orders the board newest first and is its paging cursor.
    pub created_seq: u64,
    pub created_ms: i64,
    /// Commit time of the last event that changed it.
    pub updated_ms: i64,
    /// The agent it was assigned to.
    pub agent_id: Option<String>,
    /// The winning bid.
    pub bid_sats: Option<u64>,
    /// Bids counted while its auction was open.
    pub bids: u64,
    /// The failed or cancelled task this one retries.
    pub retry_of: Option<String>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// `auction.closed` was seen: later bids do not count.
    pub auction_closed: bool,
}

/// One agent on the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardAgent {
    pub agent_id: String,
    pub name: String,
    pub status: BoardAgentStatus,
    pub capabilities: Vec<String>,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub sats_earned: u64,
    /// Commit time of the last swarm event naming it.
    pub last_seen_ms: i64,
    /// Tasks assigned to it and not finished: busy while any.
    pub open_tasks: u64,
    /// The status it reported itself (`agent.status_changed`), shown while it has no task.
    pub reported: Option<BoardAgentStatus>,
}

/// Rows changed by folding the events after `from_seq` up to `to_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoardChanges {
    /// The board's seq the fold started from; the save is refused unless it still is.
    pub from_seq: u64,
    pub to_seq: u64,
    pub tasks: Vec<BoardTask>,
    pub agents: Vec<BoardAgent>,
}

/// How recently a task last changed, as `GET /api/tasks?within=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within {
    Hour,
    Day,
    Week,
}

impl Within {
    /// Every window, shortest first (the chips' order).
    pub const ALL: [Within; 3] = [Within::Hour, Within::Day, Within::Week];

    pub fn as_str(self) -> &'static str {
        match self {
            Within::Hour => "hour",
            Within::Day => "day",
            Within::Week => "week",
        }
    }

    /// The window named `s`, or `None` when it names none.
    pub fn parse(s: &str) -> Option<Self> {
        Within::ALL.into_iter().find(|w| w.as_str() == s)
    }

    /// Its length in milliseconds.
    pub fn millis(self) -> i64 {
        const HOUR: i64 = 3_600_000;
        match self {
            Within::Hour => HOUR,
            Within::Day => 24 * HOUR,
            Within::Week => 7 * 24 * HOUR,
        }
    }
}

/// Only tasks whose last change (`updated_ms`: the commit time of the last event that
/// changed it, which for a finished task is when it finished) is at or after
/// `since_ms`, the start of `within` counted back from when the read was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent {
    pub within: Within,
    pub since_ms: i64,
}

impl Recent {
    /// The last `within` before `now_ms`.
    pub fn before(within: Within, now_ms: i64) -> Self {
        Recent { within, since_ms: now_ms.saturating_sub(within.millis()) }
    }
}

/// Which tasks a board read wants, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    pub status: Option<BoardStatus>,
    pub agent_id: Option<String>,
    /// A case-insensitive substring of the description or the task id.
    pub q: Option<String>,
    /// Only tasks that changed recently.
    pub recent: Option<Recent>,
    /// Only the retries of this task (a task page lists them).
    pub retry_of: Option<String>,
    /// Only tasks created before this seq (the previous page's last `created_seq`).
    pub before_seq: Option<u64>,
    pub limit: usize,
}

/// Which agents a board read wants, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentQuery {
    pub status: Option<BoardAgentStatus>,
    /// Only agents whose id sorts after this one.
    pub after: Option<String>,
    pub limit: usize,
}

/// The columns of `board_tasks`, in the order both engines read them.
pub(crate) const TASK_COLUMNS: &str = "task_id, description, status, created_seq, created_ms, updated_ms, agent_id, \
     bid_sats, bids, retry_of, reason, auction_closed";

/// The columns of `board_agents`, in the order both engines read them.
pub(crate) const AGENT_COLUMNS: &str =
    "agent_id, name, status, capabilities, tasks_done, tasks_failed, sats_earned, last_seen_ms, open_tasks, reported";

/// Numbers are stored as SQL `BIGINT`: a count or an amount past `i64::MAX` is kept at
/// it (no swarm pays 9.2 × 10¹⁸ sats; a producer's absurd bid must not fail the fold).
pub(crate) fn to_sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The upsert of one task row, its placeholders numbered `{prefix}1`… in
/// [`TASK_COLUMNS`]' order.
pub(crate) fn upsert_task_sql(prefix: char) -> String {
    upsert_sql("board_tasks", TASK_COLUMNS, "task_id", prefix)
}

/// The upsert of one agent row, its placeholders in [`AGENT_COLUMNS`]' order.
pub(crate) fn upsert_agent_sql(prefix: char) -> String {
    upsert_sql("board_agents", AGENT_COLUMNS, "agent_id", prefix)
}

fn upsert_sql(table: &str, columns: &str, key: &str, prefix: char) -> String {
    let names: Vec<&str> = columns.split(',').map(str::trim).collect();
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("{prefix}{i}")).collect();
    let updates: Vec<String> = names.iter().filter(|n| **n != key).map(|n| format!("{n} = excluded.{n}")).collect();
    format!(
        "INSERT INTO {table} ({columns}) VALUES ({}) ON CONFLICT ({key}) DO UPDATE SET {}",
        placeholders.join(", "),
        updates.join(", ")
    )
}

/// The arguments of [`upsert_task_sql`].
pub(crate) fn task_args(t: &BoardTask) -> Vec<Arg> {
    let opt_text = |v: &Option<String>| v.clone().map_or(Arg::NullText, Arg::Text);
    vec![
        Arg::Text(t.task_id.clone()),
        Arg::Text(t.description.clone()),
        Arg::Text(t.status.as_str().to_owned()),
        Arg::Int(to_sql_int(t.created_seq)),
        Arg::Int(t.created_ms),
        Arg::Int(t.updated_ms),
        opt_text(&t.agent_id),
        t.bid_sats.map_or(Arg::NullInt, |b| Arg::Int(to_sql_int(b))),
        Arg::Int(to_sql_int(t.bids)),
        opt_text(&t.retry_of),
        opt_text(&t.reason),
        Arg::Int(i64::from(t.auction_closed)),
    ]
}

/// The arguments of [`upsert_agent_sql`].
pub(crate) fn agent_args(a: &BoardAgent) -> Vec<Arg> {
    vec![
        Arg::Text(a.agent_id.clone()),
        Arg::Text(a.name.clone()),
        Arg::Text(a.status.as_str().to_owned()),
        // A list of strings always serialises.
        Arg::Text(serde_json::to_string(&a.capabilities).unwrap_or_else(|_| "[]".into())),
        Arg::Int(to_sql_int(a.tasks_done)),
        Arg::Int(to_sql_int(a.tasks_failed)),
        Arg::Int(to_sql_int(a.sats_earned)),
        Arg::Int(a.last_seen_ms),
        Arg::Int(to_sql_int(a.open_tasks)),
        a.reported.map_or(Arg::NullText, |r| Arg::Text(r.as_str().to_owned())),
    ]
}

/// A task row as read: [`TASK_COLUMNS`]' values, engine-neutral.
pub(crate) struct TaskRow {
    pub task_id: String,
    pub description: String,
    pub status: String,
    pub created_seq: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub agent_id: Option<String>,
    pub bid_sats: Option<i64>,
    pub bids: i64,
    pub retry_of: Option<String>,
    pub reason: Option<String>,
    pub auction_closed: i64,
}

impl TaskRow {
    /// The task, or `None` for a status this build does not know (a row written by a
    /// newer one), which the board then leaves out.
    pub(crate) fn into_task(self) -> Option<BoardTask> {
        Some(BoardTask {
            status: BoardStatus::parse(&self.status)?,
            task_id: self.task_id,
            description: self.description,
            created_seq: self.created_seq.max(0) as u64,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            agent_id: self.agent_id,
            bid_sats: self.bid_sats.map(|b| b.max(0) as u64),
            bids: self.bids.max(0) as u64,
            retry_of: self.retry_of,
            reason: self.reason,
            auction_closed: self.auction_closed != 0,
        })
    }
}

/// An agent row as read: [`AGENT_COLUMNS`]' values, engine-neutral.
pub(crate) struct AgentRow {
    pub agent_id: String,
    pub name: String,
    pub status: String,
    pub capabilities: String,
    pub tasks_done: i64,
    pub tasks_failed: i64,
    pub sats_earned: i64,
    pub last_seen_ms: i64,
    pub open_tasks: i64,
    pub reported: Option<String>,
}

impl AgentRow {
    pub(crate) fn into_agent(self) -> Option<BoardAgent> {
        Some(BoardAgent {
            status: BoardAgentStatus::parse(&self.status)?,
            capabilities: serde_json::from_str(&self.capabilities).unwrap_or_default(),
            reported: self.reported.as_deref().and_then(BoardAgentStatus::parse),
            agent_id: self.agent_id,
            name: self.name,
            tasks_done: self.tasks_done.max(0) as u64,
            tasks_failed: self.tasks_failed.max(0) as u64,
            sats_earned: self.sats_earned.max(0) as u64,
            last_seen_ms: self.last_seen_ms,
            open_tasks: self.open_tasks.max(0) as u64,
        })
    }
}

/// `q` as a `LIKE` pattern: lower-cased, its wildcards escaped with `\`.
fn like_pattern(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 2);
    out.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The `WHERE` clause of a task read, without its status, and its arguments.
fn task_conditions(q: &TaskQuery, prefix: char, args: &mut Vec<Arg>) -> String {
    let mut sql = String::from("1 = 1");
    if let Some(agent) = &q.agent_id {
        args.push(Arg::Text(agent.clone()));
        sql.push_str(&format!(" AND agent_id = {prefix}{}", args.len()));
    }
    if let Some(text) = q.q.as_deref().filter(|t| !t.is_empty()) {
        args.push(Arg::Text(like_pattern(text)));
        let n = args.len();
        sql.push_str(&format!(
            " AND (lower(description) LIKE {prefix}{n} ESCAPE '\\' OR lower(task_id) LIKE {prefix}{n} ESCAPE '\\')"
        ));
    }
    if let Some(recent) = q.recent {
        args.push(Arg::Int(recent.since_ms));
        sql.push_str(&format!(" AND updated_ms >= {prefix}{}", args.len()));
    }
    if let Some(original) = &q.retry_of {
        args.push(Arg::Text(original.clone()));
        sql.push_str(&format!(" AND retry_of = {prefix}{}", args.len()));
    }
    sql
}

/// A page of tasks, newest first.
pub(crate) fn list_tasks_sql(q: &TaskQuery, prefix: char) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut sql = format!("SELECT {TASK_COLUMNS} FROM board_tasks WHERE {}", task_conditions(q, prefix, &mut args));
    if let Some(status) = q.status {
        args.push(Arg::Text(status.as_str().to_owned()));
        sql.push_str(&format!(" AND status = {prefix}{}", args.len()));
    }
    if let Some(before) = q.before_seq {
        args.push(Arg::Int(to_sql_int(before)));
        sql.push_str(&format!(" AND created_seq < {prefix}{}", args.len()));
    }
    args.push(Arg::Int(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(" ORDER BY created_seq DESC LIMIT {prefix}{}", args.len()));
    (sql, args)
}

/// How many tasks of each status match `q`'s agent and text (its status, cursor and
/// limit are not used): the tabs' counts.
pub(crate) fn count_tasks_sql(q: &TaskQuery, prefix: char) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let sql = format!(
        "SELECT status, COUNT(*) FROM board_tasks WHERE {} GROUP BY status",
        task_conditions(q, prefix, &mut args)
    );
    (sql, args)
}

/// A page of agents, by id.
pub(crate) fn list_agents_sql(q: &AgentQuery, prefix: char) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut sql = format!("SELECT {AGENT_COLUMNS} FROM board_agents WHERE 1 = 1");
    if let Some(status) = q.status {
        args.push(Arg::Text(status.as_str().to_owned()));
        sql.push_str(&format!(" AND status = {prefix}{}", args.len()));
    }
    if let Some(after) = &q.after {
        args.push(Arg::Text(after.clone()));
        sql.push_str(&format!(" AND agent_id > {prefix}{}", args.len()));
    }
    args.push(Arg::Int(i64::try_from(q.limit).unwrap_or(i64::MAX)));
    sql.push_str(&format!(" ORDER BY agent_id LIMIT {prefix}{}", args.len()));
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_matches_its_text_literally() {
        assert_eq!(like_pattern("50%_OFF\\"), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn both_engines_get_the_same_statements() {
        let q = TaskQuery {
            status: Some(BoardStatus::Failed),
            agent_id: Some("a".into()),
            q: Some("x".into()),
            recent: Some(Recent::before(Within::Day, 100_000_000)),
            retry_of: Some("t0".into()),
            before_seq: Some(9),
            limit: 5,
        };
        let (lite, lite_args) = list_tasks_sql(&q, '?');
        let (pg, pg_args) = list_tasks_sql(&q, '$');
        assert_eq!(lite.replace('?', "$"), pg);
        assert_eq!(lite_args, pg_args);
        assert!(pg.contains("AND updated_ms >= $3 AND retry_of = $4"), "{pg}");
        assert_eq!(lite_args[2], Arg::Int(100_000_000 - 86_400_000));
        assert!(pg.ends_with("AND status = $5 AND created_seq < $6 ORDER BY created_seq DESC LIMIT $7"), "{pg}");
        assert!(
            upsert_task_sql('$').contains("ON CONFLICT (task_id) DO UPDATE SET description = excluded.description")
        );
    }

    #[test]
    fn every_status_reads_back_by_its_name() {
        for s in BoardStatus::ALL {
            assert_eq!(BoardStatus::parse(s.as_str()), Some(s));
        }
        for s in BoardAgentStatus::ALL {
            assert_eq!(BoardAgentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(BoardStatus::parse("started"), None);
        for w in Within::ALL {
            assert_eq!(Within::parse(w.as_str()), Some(w));
        }
        assert_eq!(Within::parse("month"), None);
    }
}
