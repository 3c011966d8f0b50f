//! The coordinator's HTTP commands (DESIGN §4, §7) and `GET /api/swarm`.
//!
//! Handlers only parse bodies into [`Command`]s; the coordinator decides. Its
//! refusals map to 404 (unknown task or agent), 409 (a step out of order) and 400
//! (a malformed body), each naming what was wrong.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AppState;
use super::error::{ApiBody, ApiError, ApiQuery, json_body};
use super::schema::{CommandRefusals, Refusals};
use crate::swarm::coordinator::{Command, CommandError};
use crate::swarm::rules::Rejected;
use crate::swarm::snapshot::{MAX_PAGE, SwarmPage};

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rejected(Rejected::NotFound(m)) => ApiError::not_found(m),
            CommandError::Rejected(Rejected::Conflict(m)) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            CommandError::Rejected(Rejected::Invalid { field, message }) => {
                ApiError::bad_request("invalid_body", format!("{field} {message}")).with_field(field)
            }
            CommandError::Busy => ApiError::unavailable("busy", "the coordinator is busy; retry shortly", 1),
            CommandError::Stopped => ApiError::unavailable("shutting_down", "the server is shutting down", 5),
            CommandError::Append(e) => e.into(),
            CommandError::Ingest(m) => ApiError::internal(&m),
            // Several nodes share the log and another one runs the coordinator: a
            // client (or a load balancer that retries on 503) tries another node.
            CommandError::NotLeader => ApiError::unavailable("not_leader", CommandError::NotLeader.to_string(), 1),
        }
    }
}

/// Parses a JSON body, or the empty body as `{}`, into `T`.
fn body<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    let raw = if raw.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { raw };
    json_body(raw)
}

async fn run(state: &AppState, command: Command, created: bool) -> Result<Response, ApiError> {
    let answer = state.coordinator.run(command).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, sorted_json(&answer)?).into_response())
}

/// `value` as a JSON body with every object's keys in order, as the API has always
/// written them (a struct serialises its fields in declaration order).
fn sorted_json(value: &impl Serialize) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(value).map(Json).map_err(|e| ApiError::internal(&format!("swarm answer: {e}")))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    name: String,
    agent_id: Option<String>,
    #[serde(default)]
    capabilities: Vec<String>,
}

/// `POST /swarm/agents` → 201 `{"agent_id"}`.
#[utoipa::path(post, path = "/swarm/agents", tag = "swarm",
    request_body = JoinBody,
    responses((status = 201, description = "Joined; answers the agent_id", body = Object), CommandRefusals))]
pub async fn join(State(state): State<AppState>, ApiBody(raw): ApiBody) -> Result<Response, ApiError> {
    let b: JoinBody = body(&raw)?;
    run(&state, Command::Join { name: b.name, agent_id: b.agent_id, capabilities: b.capabilities }, true).await
}

/// `DELETE /swarm/agents/{id}`.
#[utoipa::path(delete, path = "/swarm/agents/{id}", tag = "swarm",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "Left; its tasks fail", body = Object), CommandRefusals))]
pub async fn leave(State(state): State<AppState>, Path(agent_id): Path<String>) -> Result<Response, ApiError> {
    run(&state, Command::Leave { agent_id }, false).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
}

/// `POST /swarm/agents/{id}/status` `{"status":"idle|busy"}`.
#[utoipa::path(post, path = "/swarm/agents/{id}/status", tag = "swarm",
    params(("id" = String, Path, description = "Agent id")),
    request_body = StatusBody,
    responses((status = 200, description = "Status logged", body = Object), CommandRefusals))]
pub async fn status(
    State(state): State<AppState>,
    Path(agent_id): Path<String>,
    ApiBody(raw): ApiBody,
) -> Result<Response, ApiError> {
    let b: StatusBody = body(&raw)?;
    run(&state, Command::Status { agent_id, status: b.status }, false).await
}

/// `POST /swarm/agents/{id}/heartbeat`.
#[utoipa::path(post, path = "/swarm/agents/{id}/heartbeat", tag = "swarm",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "Alive", body = Object), CommandRefusals))]
pub async fn heartbeat(State(state): State<AppState>, Path(agent_id): Path<String>) -> Result<Response, ApiError> {
    run(&state, Command::Heartbeat { agent_id }, false).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    description: String,
}

/// `POST /swarm/tasks` `{"description"}` → 201 `{"task_id","closes_at"}`; opens an auction.
#[utoipa::path(post, path = "/swarm/tasks", tag = "swarm",
    request_body = TaskBody,
    responses((status = 201, description = "Posted and auction opened; answers task_id and closes_at", body = Object), CommandRefusals))]
pub async fn post_task(State(state): State<AppState>, ApiBody(raw): ApiBody) -> Result<Response, ApiError> {
    let b: TaskBody = body(&raw)?;
    run(&state, Command::PostTask { description: b.description }, true).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BidBody {
    agent_id: String,
    bid_sats: Value,
}

/// `POST /swarm/tasks/{id}/bids` `{"agent_id","bid_sats"}` → 201.
#[utoipa::path(post, path = "/swarm/tasks/{id}/bids", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body = BidBody,
    responses((status = 201, description = "Bid counted", body = Object), CommandRefusals))]
pub async fn bid(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    ApiBody(raw): ApiBody,
) -> Result<Response, ApiError> {
    let b: BidBody = body(&raw)?;
    let bid_sats = b.bid_sats.as_u64().filter(|s| *s > 0).ok_or_else(|| {
        ApiError::bad_request("invalid_body", "bid_sats must be a positive integer").with_field("bid_sats")
    })?;
    run(&state, Command::Bid { task_id, agent_id: b.agent_id, bid_sats }, true).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StartBody {
    agent_id: Option<String>,
}

/// `POST /swarm/tasks/{id}/start` (optionally `{"agent_id"}`, which must be the winner).
#[utoipa::path(post, path = "/swarm/tasks/{id}/start", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body = StartBody,
    responses((status = 200, description = "Started", body = Object), CommandRefusals))]
pub async fn start(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    ApiBody(raw): ApiBody,
) -> Result<Response, ApiError> {
    let b: StartBody = body(&raw)?;
    run(&state, Command::Start { task_id, agent_id: b.agent_id }, false).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    result: Option<Value>,
}

/// `POST /swarm/tasks/{id}/complete` `{"result"}`.
#[utoipa::path(post, path = "/swarm/tasks/{id}/complete", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body = CompleteBody,
    responses((status = 200, description = "Completed", body = Object), CommandRefusals))]
pub async fn complete(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    ApiBody(raw): ApiBody,
) -> Result<Response, ApiError> {
    let b: CompleteBody = body(&raw)?;
    run(&state, Command::Complete { task_id, result: b.result }, false).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FailBody {
    reason: String,
}

/// `POST /swarm/tasks/{id}/fail` `{"reason"}`.
#[utoipa::path(post, path = "/swarm/tasks/{id}/fail", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body = FailBody,
    responses((status = 200, description = "Failed", body = Object), CommandRefusals))]
pub async fn fail(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    ApiBody(raw): ApiBody,
) -> Result<Response, ApiError> {
    let b: FailBody = body(&raw)?;
    run(&state, Command::Fail { task_id, reason: b.reason }, false).await
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ToolBody {
    tool_name: String,
    status: Option<String>,
    /// Anything else the agent reports about the call (arguments, duration, …).
    #[serde(flatten)]
    data: Map<String, Value>,
}

/// `POST /swarm/tasks/{id}/tools` `{"tool_name","status"?,…}` → 201; logs
/// `tool.called` (or `tool.completed` / `tool.failed` by `status`).
#[utoipa::path(post, path = "/swarm/tasks/{id}/tools", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body = ToolBody,
    responses((status = 201, description = "Tool call logged", body = Object), CommandRefusals))]
pub async fn tools(
    State(state): State<AppState>,
    Path(task_id): Path<String>,
    ApiBody(raw): ApiBody,
) -> Result<Response, ApiError> {
    let b: ToolBody = body(&raw)?;
    run(&state, Command::Tool { task_id, tool_name: b.tool_name, status: b.status, data: b.data }, true).await
}

/// The paging parameters of `GET /api/swarm`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SwarmParams {
    /// Tasks in the page, newest first: 1 to 1 000, default 100.
    tasks_limit: Option<usize>,
    /// The previous page's `tasks_next`: only tasks created before it.
    tasks_before: Option<u64>,
    /// Agents in the page, by id: 1 to 1 000, default 200.
    agents_limit: Option<usize>,
    /// The previous page's `agents_next`: only agents whose id sorts after it.
    agents_after: Option<String>,
}

/// `GET /api/swarm`: totals, open auctions, and a page each of tasks (newest first) and
/// agents (by id), folded from the log; `tasks_next` and `agents_next` continue them.
#[utoipa::path(get, path = "/api/swarm", tag = "swarm", params(SwarmParams),
    responses((status = 200, description = "Totals, open auctions (at most 100; auctions_more counts the rest), \
        a page of tasks and a page of agents, with cursors for the next pages", body = Object), Refusals))]
pub async fn snapshot(State(state): State<AppState>, ApiQuery(q): ApiQuery<SwarmParams>) -> Result<Response, ApiError> {
    let limit =
        |given: Option<usize>, default: usize, name: &'static str| match given {
            None => Ok(default),
            Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            Some(n) => Err(ApiError::bad_request("invalid_query", format!("{name} must be 1 to {MAX_PAGE}, not {n}"))
                .with_field(name)),
        };
    let defaults = SwarmPage::default();
    let page = SwarmPage {
        tasks_limit: limit(q.tasks_limit, defaults.tasks_limit, "tasks_limit")?,
        tasks_before: q.tasks_before,
        agents_limit: limit(q.agents_limit, defaults.agents_limit, "agents_limit")?,
        agents_after: q.agents_after,
    };
    Ok(sorted_json(&state.coordinator.snapshot(page).await?)?.into_response())
}
