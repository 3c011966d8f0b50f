//! The boards' JSON API (DESIGN §10): `GET /api/tasks`, `GET /api/tasks/{id}`,
//! `GET /api/agents`, `GET /api/agents/{id}`, read from the store's board tables.
//!
//! Parameters are parsed here into a [`TaskQuery`] or [`AgentQuery`]; a bad one is 400
//! naming it. The views ([`TaskView`], [`BoardAgentView`]) are what the API answers
//! and what the board pages render, so the two always show the same fields.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ApiQuery};
use super::schema::Refusals;
use crate::event::format_timestamp;
use crate::store::board::{
    AgentQuery, BoardAgent, BoardAgentStatus, BoardStatus, BoardTask, Recent, TaskQuery, Within,
};

/// Tasks or agents in a page unless `limit` says otherwise.
pub(crate) const DEFAULT_PAGE: usize = 50;
/// The most tasks or agents one page holds.
pub(crate) const MAX_PAGE: usize = 1_000;
/// How long a board read waits for the board to fold what was committed before it
/// (it lags the log by one fold step, milliseconds); past it, it answers what it has.
const CATCH_UP: Duration = Duration::from_secs(2);

/// A task as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct TaskView {
    pub task_id: String,
    pub description: String,
    /// `bidding`, `assigned`, `running`, `completed`, `failed` or `cancelled`.
    #[schema(value_type = String)]
    pub status: BoardStatus,
    /// RFC 3339: the commit time of its `task.created`.
    pub created_at: String,
    /// RFC 3339: the commit time of the last event that changed it.
    pub updated_at: String,
    /// The agent it was assigned to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The winning bid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bid_sats: Option<u64>,
    /// Bids counted while its auction was open.
    pub bids: u64,
    /// The failed or cancelled task this one retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// Why it failed or was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<BoardTask> for TaskView {
    fn from(t: BoardTask) -> Self {
        TaskView {
            task_id: t.task_id,
            description: t.description,
            status: t.status,
            created_at: format_timestamp(t.created_ms),
            updated_at: format_timestamp(t.updated_ms),
            agent_id: t.agent_id,
            bid_sats: t.bid_sats,
            bids: t.bids,
            retry_of: t.retry_of,
            reason: t.reason,
        }
    }
}

/// An agent as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) struct BoardAgentView {
    pub agent_id: String,
    pub name: String,
    /// `idle`, `busy` or `offline`.
    #[schema(value_type = String)]
    pub status: BoardAgentStatus,
    pub capabilities: Vec<String>,
    pub tasks_done: u64,
    pub tasks_failed: u64,
    pub sats_earned: u64,
    /// RFC 3339: the commit time of the last swarm event naming it.
    pub last_seen: String,
}

impl From<BoardAgent> for BoardAgentView {
    fn from(a: BoardAgent) -> Self {
        BoardAgentView {
            agent_id: a.agent_id,
            name: a.name,
            status: a.status,
            capabilities: a.capabilities,
            tasks_done: a.tasks_done,
            tasks_failed: a.tasks_failed,
            sats_earned: a.sats_earned,
            last_seen: format_timestamp(a.last_seen_ms),
        }
    }
}

/// A page of `GET /api/tasks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A page of `GET /api/agents`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AgentPage {
    pub agents: Vec<BoardAgentView>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The parameters of `GET /api/tasks`, as text: each is checked here and a bad one
/// named.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskParams {
    /// `bidding`, `assigned`, `running`, `completed`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Only tasks assigned to this agent.
    pub agent_id: Option<String>,
    /// Only tasks whose description or id contains this text (any case).
    pub q: Option<String>,
    /// `hour`, `day` or `week`: only tasks whose last change (`updated_at`; for a
    /// finished task, when it finished) is that recent.
    pub within: Option<String>,
    /// Tasks in the page: 1 to 1 000, default 50.
    pub limit: Option<String>,
    /// The previous page's `next`.
    pub after: Option<String>,
}

/// The parameters of `GET /api/agents`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AgentParams {
    /// `idle`, `busy` or `offline`.
    pub status: Option<String>,
    /// Agents in the page: 1 to 1 000, default 50.
    pub limit: Option<String>,
    /// The previous page's `next`: agents whose id sorts after it.
    pub after: Option<String>,
}

/// An empty parameter is one not given, as an empty box of a page's form sends it.
fn given(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

fn limit(v: Option<&str>) -> Result<usize, ApiError> {
    let Some(v) = given(v) else { return Ok(DEFAULT_PAGE) };
    v.parse::<usize>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
        ApiError::bad_request("invalid_query", format!("limit must be a whole number from 1 to {MAX_PAGE}, not {v:?}"))
            .with_field("limit")
    })
}

impl TaskParams {
    /// The store's query for these parameters, a `within` counted back from now.
    ///
    /// # Errors
    /// A status, window, limit or cursor that is not one, named.
    pub(crate) fn query(&self) -> Result<TaskQuery, ApiError> {
        self.query_at(chrono::Utc::now().timestamp_millis())
    }

    /// [`TaskParams::query`] as asked at `now_ms`.
    ///
    /// # Errors
    /// A status, window, limit or cursor that is not one, named.
    pub(crate) fn query_at(&self, now_ms: i64) -> Result<TaskQuery, ApiError> {
        let status = given(self.status.as_deref())
            .map(|s| {
                BoardStatus::parse(s).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!(
                            "status must be one of bidding, assigned, running, completed, failed, cancelled, not {s:?}"
                        ),
                    )
                    .with_field("status")
                })
            })
            .transpose()?;
        let recent = given(self.within.as_deref())
            .map(|w| {
                Within::parse(w).map(|w| Recent::before(w, now_ms)).ok_or_else(|| {
                    ApiError::bad_request("invalid_query", format!("within must be one of hour, day, week, not {w:?}"))
                        .with_field("within")
                })
            })
            .transpose()?;
        let before_seq = given(self.after.as_deref())
            .map(|a| {
                a.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::bad_request("invalid_query", format!("after must be a previous page's next, not {a:?}"))
                        .with_field("after")
                })
            })
            .transpose()?;
        Ok(TaskQuery {
            status,
            agent_id: given(self.agent_id.as_deref()).map(str::to_owned),
            q: given(self.q.as_deref()).map(str::to_owned),
            recent,
            retry_of: None,
            before_seq,
            limit: limit(self.limit.as_deref())?,
        })
    }
}

impl AgentParams {
    /// # Errors
    /// A status or limit that is not one, named.
    pub(crate) fn query(&self) -> Result<AgentQuery, ApiError> {
        let status = given(self.status.as_deref())
            .map(|s| {
                BoardAgentStatus::parse(s).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("status must be one of idle, busy, offline, not {s:?}"),
                    )
                    .with_field("status")
                })
            })
            .transpose()?;
        Ok(AgentQuery {
            status,
            after: given(self.after.as_deref()).map(str::to_owned),
            limit: limit(self.limit.as_deref())?,
        })
    }
}

/// Waits (briefly) for the board to include everything committed before this read.
pub(crate) async fn board_caught_up(state: &AppState) {
    let head = state.hub.head();
    if !state.board.caught_up(head, CATCH_UP).await {
        tracing::debug!(head, "the board is behind the log; answering what it has");
    }
}

/// A page of tasks matching `q`, and the cursor of the next page.
///
/// # Errors
/// The store failed.
pub(crate) async fn task_page(state: &AppState, q: TaskQuery) -> Result<TaskPage, ApiError> {
    board_caught_up(state).await;
    let limit = q.limit;
    let mut tasks = state.store.list_tasks(TaskQuery { limit: limit + 1, ..q }).await?;
    let next = (tasks.len() > limit).then(|| {
        tasks.truncate(limit);
        tasks.last().map(|t| t.created_seq.to_string()).unwrap_or_default()
    });
    Ok(TaskPage { tasks: tasks.into_iter().map(TaskView::from).collect(), next })
}

/// A page of agents matching `q`, and the cursor of the next page.
///
/// # Errors
/// The store failed.
pub(crate) async fn agent_page(state: &AppState, q: AgentQuery) -> Result<AgentPage, ApiError> {
    board_caught_up(state).await;
    let limit = q.limit;
    let mut agents = state.store.list_agents(AgentQuery { limit: limit + 1, ..q }).await?;
    let next = (agents.len() > limit).then(|| {
        agents.truncate(limit);
        agents.last().map(|a| a.agent_id.clone()).unwrap_or_default()
    });
    Ok(AgentPage { agents: agents.into_iter().map(BoardAgentView::from).collect(), next })
}

/// `GET /api/tasks`: the task board, newest first.
#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/api/tasks", tag = "boards", params(TaskParams),
    responses((status = 200, description = "A page of tasks, newest first", body = TaskPage), Refusals))]
pub(crate) async fn list_tasks(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<TaskParams>,
) -> Result<Response, ApiError> {
    Ok(Json(task_page(&state, p.query()?).await?).into_response())
}

/// `GET /api/tasks/{id}`: one task of the board.
#[tracing::instrument(skip_all, fields(task_id = %task_id))]
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "boards",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "The task", body = TaskView), Refusals))]
pub(crate) async fn get_task(State(state): State<AppState>, Path(task_id): Path<String>) -> Result<Response, ApiError> {
    board_caught_up(&state).await;
    let (tasks, _) = state.store.board_rows(vec![task_id.clone()], Vec::new()).await?;
    let task =
        tasks.into_iter().next().ok_or_else(|| ApiError::not_found(format!("no task {task_id:?} on the board")))?;
    Ok(Json(TaskView::from(task)).into_response())
}

/// `GET /api/agents`: the agent board, by id.
#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/api/agents", tag = "boards", params(AgentParams),
    responses((status = 200, description = "A page of agents, by id", body = AgentPage), Refusals))]
pub(crate) async fn list_agents(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<AgentParams>,
) -> Result<Response, ApiError> {
    Ok(Json(agent_page(&state, p.query()?).await?).into_response())
}

/// `GET /api/agents/{id}`: one agent of the board.
#[tracing::instrument(skip_all, fields(agent_id = %agent_id))]
#[utoipa::path(get, path = "/api/agents/{id}", tag = "boards",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "The agent", body = BoardAgentView), Refusals))]
pub(crate) async fn get_agent(
    State(state): State<AppState>,
    Path(agent_id): Path<String>,
) -> Result<Response, ApiError> {
    board_caught_up(&state).await;
    let (_, agents) = state.store.board_rows(Vec::new(), vec![agent_id.clone()]).await?;
    let agent =
        agents.into_iter().next().ok_or_else(|| ApiError::not_found(format!("no agent {agent_id:?} on the board")))?;
    Ok(Json(BoardAgentView::from(agent)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(status: &str, limit: &str, after: &str) -> TaskParams {
        TaskParams {
            status: Some(status.into()),
            limit: Some(limit.into()),
            after: Some(after.into()),
            ..TaskParams::default()
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(params("done", "", "").query().unwrap_err().field.as_deref(), Some("status"));
        assert_eq!(params("", "0", "").query().unwrap_err().field.as_deref(), Some("limit"));
        assert_eq!(params("", "1001", "").query().unwrap_err().field.as_deref(), Some("limit"));
        assert_eq!(params("", "", "x").query().unwrap_err().field.as_deref(), Some("after"));
        let month = TaskParams { within: Some("month".into()), ..TaskParams::default() }.query().unwrap_err();
        assert_eq!(month.field.as_deref(), Some("within"));
        assert!(month.message.contains("hour, day, week"), "{}", month.message);
        let agents = AgentParams { status: Some("asleep".into()), ..AgentParams::default() };
        assert_eq!(agents.query().unwrap_err().field.as_deref(), Some("status"));
    }

    #[test]
    fn empty_parameters_are_not_given() {
        let q = params(" ", "", "").query().unwrap();
        assert_eq!(q, TaskQuery { limit: DEFAULT_PAGE, ..TaskQuery::default() });
        let q = params("failed", "10", "42").query().unwrap();
        assert_eq!((q.status, q.limit, q.before_seq), (Some(BoardStatus::Failed), 10, Some(42)));
        let day = TaskParams { within: Some("day".into()), ..TaskParams::default() }.query_at(90_000_000).unwrap();
        assert_eq!(day.recent, Some(Recent { within: Within::Day, since_ms: 90_000_000 - 86_400_000 }));
    }
}
