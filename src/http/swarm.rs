//! The coordinator's HTTP commands (DESIGN §4, §7) and `GET /api/swarm`.
//!
//! Handlers only parse bodies into [`Command`]s; the coordinator decides. Its
//! refusals map to 404 (unknown task or agent), 409 (a step out of order) and 400
//! (a malformed body), each naming what was wrong.
//!
//! Every command is run as the caller: its events carry `data.actor`, the name of
//! the token (or the browser session's token) that sent it. Bodies are JSON or
//! `application/x-www-form-urlencoded` ([`CommandBody`]), checked alike; a form a
//! browser sent from a page (it accepts `text/html`) is answered with a 303 back to
//! the page of what it acted on, and a refusal with a page that names it.

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AppState;
use super::error::{ApiBody, ApiError, ApiQuery, json_body};
use super::schema::{CommandRefusals, Refusals};
use crate::auth::{Principal, Scope};
use crate::swarm::coordinator::{Answer, Command, CommandError};
use crate::swarm::history::{self, PastError};
use crate::swarm::rules::Rejected;
use crate::swarm::snapshot::{MAX_PAGE, SwarmPage, SwarmSnapshot};

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

/// A command's body and how it came: JSON (whatever the `Content-Type`, as the API
/// has always read it) or a form, and whether a browser sent the form from a page.
pub(crate) struct CommandBody {
    raw: bytes::Bytes,
    form: bool,
    from_page: bool,
}

impl<S: Send + Sync> FromRequest<S> for CommandBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers();
        let form = header_starts(headers, header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        // A page's form navigates: the browser asks for HTML back. A program that posts
        // a form asks for anything, and gets the API's JSON.
        let from_page =
            form && headers.get_all(header::ACCEPT).iter().any(|v| v.as_bytes().windows(9).any(|w| w == b"text/html"));
        let ApiBody(raw) = ApiBody::from_request(req, state).await?;
        Ok(CommandBody { raw, form, from_page })
    }
}

fn header_starts(headers: &HeaderMap, name: header::HeaderName, prefix: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().get(..prefix.len()).is_some_and(|start| start.eq_ignore_ascii_case(prefix)))
}

/// How form fields map onto a body's JSON fields: a form's values are all text.
#[derive(Default, Clone, Copy)]
struct FormFields {
    /// Fields that are lists: each occurrence adds an item.
    lists: &'static [&'static str],
    /// Fields that are whole numbers: digits become a JSON number (anything else stays
    /// text and is refused by the body's own check, which names the field).
    numbers: &'static [&'static str],
}

impl CommandBody {
    /// Parses the body into `T`: JSON (the empty body as `{}`), or a form read as the
    /// JSON object of its fields. An empty form value is a field not given, as an
    /// empty text box on a page means; a field given twice that is not a list is 400.
    fn parse<T: DeserializeOwned>(&self, fields: FormFields) -> Result<T, ApiError> {
        if !self.form {
            let raw = if self.raw.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { &self.raw };
            return json_body(raw);
        }
        let mut object = Map::new();
        for (name, value) in form_urlencoded::parse(&self.raw) {
            let name = name.into_owned();
            if fields.lists.contains(&name.as_str()) {
                let list = object.entry(name).or_insert_with(|| Value::Array(Vec::new()));
                if let (Value::Array(items), false) = (list, value.is_empty()) {
                    items.push(Value::String(value.into_owned()));
                }
                continue;
            }
            if value.is_empty() {
                continue;
            }
            let value = match value.parse::<u64>() {
                Ok(n) if fields.numbers.contains(&name.as_str()) => Value::from(n),
                _ => Value::String(value.into_owned()),
            };
            if object.insert(name.clone(), value).is_some() {
                return Err(
                    ApiError::bad_request("invalid_body", format!("{name}: given more than once")).with_field(name)
                );
            }
        }
        json_body(Value::Object(object).to_string().as_bytes())
    }
}

/// Where a browser's form goes back to after a command: the page of the task or
/// agent it acted on (a retry's new task).
enum Back {
    Task(String),
    Agent(String),
    /// The task board's post form: a refusal is shown in the form, with what was typed.
    PostForm,
}

impl Back {
    /// The page to go back to: a new task's or agent's once the answer names it.
    fn href(&self, answer: Option<&Answer>) -> String {
        use crate::view::event::{agent_href, task_href};
        match (self, answer) {
            (_, Some(Answer::Retried { task_id, .. } | Answer::Posted { task_id, .. })) => task_href(task_id),
            (_, Some(Answer::Joined { agent_id })) => agent_href(agent_id),
            (Back::Task(task_id), _) if !task_id.is_empty() => task_href(task_id),
            (Back::Agent(agent_id), _) if !agent_id.is_empty() => agent_href(agent_id),
            _ => crate::http::session::HOME.to_owned(),
        }
    }
}

/// Runs `command` (or the body's refusal) as `principal`, answering JSON (201 when
/// `created`), or for a form sent from a page a 303 to `back` or a page naming the
/// refusal, whether the body or the coordinator refused.
async fn run(
    state: &AppState,
    principal: &Principal,
    body: &CommandBody,
    command: Result<Command, ApiError>,
    created: bool,
    back: Back,
) -> Result<Response, ApiError> {
    let answer = match command {
        Ok(command) => state.coordinator.run_as(&principal.name, command).await.map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) if body.from_page && matches!(back, Back::PostForm) => {
            let description = form_urlencoded::parse(&body.raw)
                .find(|(name, _)| name == "description")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            return Ok(super::pages::tasks::refused_post(state, principal, description, &e).await);
        }
        Err(e) if body.from_page => return Ok(refused_page(principal, &e, &back.href(None))),
        Err(e) => return Err(e),
    };
    if body.from_page {
        return Ok(Redirect::to(&back.href(Some(&answer))).into_response());
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, sorted_json(&answer)?).into_response())
}

/// A refusal shown to a browser whose form a command refused: what was wrong and the
/// way back, with the status the API would answer.
fn refused_page(principal: &Principal, error: &ApiError, back: &str) -> Response {
    use crate::view::layout::{Nav, Shell, page};
    let body = maud::html! {
        header.page-head { h1.page-title { "Refused" } }
        section.panel {
            p.bad { (error.message) }
            p { a href=(back) { "← Back" } }
        }
    };
    let shell = Shell {
        title: "Refused",
        nav: Nav::Other,
        user: Some(&principal.name),
        chart: false,
        admin: principal.may(Scope::Admin),
    };
    (error.status, axum::response::Html(page(&shell, &body).into_string())).into_response()
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
    request_body(content((JoinBody = "application/json"), (JoinBody = "application/x-www-form-urlencoded"))),
    responses((status = 201, description = "Joined; answers the agent_id", body = Object), CommandRefusals))]
pub(crate) async fn join(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let command = body
        .parse(FormFields { lists: &["capabilities"], ..FormFields::default() })
        .map(|b: JoinBody| Command::Join { name: b.name, agent_id: b.agent_id, capabilities: b.capabilities });
    run(&state, &who, &body, command, true, Back::Agent(String::new())).await
}

/// A body with no fields (`{}`, an empty body or an empty form).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoBody {}

/// `DELETE /swarm/agents/{id}`: an operator removes the agent.
#[utoipa::path(delete, path = "/swarm/agents/{id}", tag = "swarm",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "Removed (`agent.left`, reason `removed`); its tasks fail", body = Object),
        CommandRefusals))]
pub(crate) async fn leave(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(agent_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    // Any body is ignored, as it always was.
    let back = Back::Agent(agent_id.clone());
    run(&state, &who, &body, Ok(Command::Remove { agent_id }), false, back).await
}

/// `POST /swarm/agents/{id}/remove`: [`leave`] for a page's form, which cannot send
/// `DELETE`.
#[utoipa::path(post, path = "/swarm/agents/{id}/remove", tag = "swarm",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "Removed (`agent.left`, reason `removed`); its tasks fail", body = Object),
        CommandRefusals))]
pub(crate) async fn remove(
    state: State<AppState>,
    who: Extension<Principal>,
    agent_id: Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    leave(state, who, agent_id, body).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
}

/// `POST /swarm/agents/{id}/status` `{"status":"idle|busy"}`.
#[utoipa::path(post, path = "/swarm/agents/{id}/status", tag = "swarm",
    params(("id" = String, Path, description = "Agent id")),
    request_body(content((StatusBody = "application/json"), (StatusBody = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "Status logged", body = Object), CommandRefusals))]
pub(crate) async fn status(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(agent_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Agent(agent_id.clone());
    let command = body.parse(FormFields::default()).map(|b: StatusBody| Command::Status { agent_id, status: b.status });
    run(&state, &who, &body, command, false, back).await
}

/// `POST /swarm/agents/{id}/heartbeat`.
#[utoipa::path(post, path = "/swarm/agents/{id}/heartbeat", tag = "swarm",
    params(("id" = String, Path, description = "Agent id")),
    responses((status = 200, description = "Alive", body = Object), CommandRefusals))]
pub(crate) async fn heartbeat(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(agent_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    // Any body is ignored, as it always was.
    let back = Back::Agent(agent_id.clone());
    run(&state, &who, &body, Ok(Command::Heartbeat { agent_id }), false, back).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    description: String,
}

/// `POST /swarm/tasks` `{"description"}` → 201 `{"task_id","closes_at"}`; opens an auction.
#[utoipa::path(post, path = "/swarm/tasks", tag = "swarm",
    request_body(content((TaskBody = "application/json"), (TaskBody = "application/x-www-form-urlencoded"))),
    responses((status = 201, description = "Posted and auction opened; answers task_id and closes_at", body = Object), CommandRefusals))]
pub(crate) async fn post_task(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let command = body.parse(FormFields::default()).map(|b: TaskBody| Command::PostTask { description: b.description });
    run(&state, &who, &body, command, true, Back::PostForm).await
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
    request_body(content((BidBody = "application/json"), (BidBody = "application/x-www-form-urlencoded"))),
    responses((status = 201, description = "Bid counted", body = Object), CommandRefusals))]
pub(crate) async fn bid(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(task_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Task(task_id.clone());
    let command = body.parse(FormFields { numbers: &["bid_sats"], ..FormFields::default() }).and_then(|b: BidBody| {
        let bid_sats = b.bid_sats.as_u64().filter(|s| *s > 0).ok_or_else(|| {
            ApiError::bad_request("invalid_body", "bid_sats must be a positive integer").with_field("bid_sats")
        })?;
        Ok(Command::Bid { task_id, agent_id: b.agent_id, bid_sats })
    });
    run(&state, &who, &body, command, true, back).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct StartBody {
    agent_id: Option<String>,
}

/// `POST /swarm/tasks/{id}/start` (optionally `{"agent_id"}`, which must be the winner).
#[utoipa::path(post, path = "/swarm/tasks/{id}/start", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body(content((StartBody = "application/json"), (StartBody = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "Started", body = Object), CommandRefusals))]
pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(task_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Task(task_id.clone());
    let command =
        body.parse(FormFields::default()).map(|b: StartBody| Command::Start { task_id, agent_id: b.agent_id });
    run(&state, &who, &body, command, false, back).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    result: Option<Value>,
}

/// `POST /swarm/tasks/{id}/complete` `{"result"}`.
#[utoipa::path(post, path = "/swarm/tasks/{id}/complete", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body(content((CompleteBody = "application/json"), (CompleteBody = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "Completed", body = Object), CommandRefusals))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(task_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Task(task_id.clone());
    let command =
        body.parse(FormFields::default()).map(|b: CompleteBody| Command::Complete { task_id, result: b.result });
    run(&state, &who, &body, command, false, back).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FailBody {
    reason: String,
}

/// `POST /swarm/tasks/{id}/fail` `{"reason"}`.
#[utoipa::path(post, path = "/swarm/tasks/{id}/fail", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body(content((FailBody = "application/json"), (FailBody = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "Failed", body = Object), CommandRefusals))]
pub(crate) async fn fail(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(task_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Task(task_id.clone());
    let command = body.parse(FormFields::default()).map(|b: FailBody| Command::Fail { task_id, reason: b.reason });
    run(&state, &who, &body, command, false, back).await
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
    request_body(content((ToolBody = "application/json"), (ToolBody = "application/x-www-form-urlencoded"))),
    responses((status = 201, description = "Tool call logged", body = Object), CommandRefusals))]
pub(crate) async fn tools(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(task_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Task(task_id.clone());
    let command = body.parse(FormFields::default()).map(|b: ToolBody| Command::Tool {
        task_id,
        tool_name: b.tool_name,
        status: b.status,
        data: b.data,
    });
    run(&state, &who, &body, command, true, back).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelBody {
    /// Why; "no reason given" when left out.
    reason: Option<String>,
}

/// `POST /swarm/tasks/{id}/cancel` `{"reason"?}`: logs `task.cancelled`.
#[utoipa::path(post, path = "/swarm/tasks/{id}/cancel", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    request_body(content((CancelBody = "application/json"), (CancelBody = "application/x-www-form-urlencoded"))),
    responses((status = 200, description = "Cancelled; an open auction closes without a winner", body = Object),
        CommandRefusals))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(task_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Task(task_id.clone());
    let command = body.parse(FormFields::default()).map(|b: CancelBody| Command::Cancel { task_id, reason: b.reason });
    run(&state, &who, &body, command, false, back).await
}

/// `POST /swarm/tasks/{id}/retry` → 201 `{"task_id","retry_of","closes_at"}`: a new
/// task with the failed or cancelled one's description, its auction open.
#[utoipa::path(post, path = "/swarm/tasks/{id}/retry", tag = "swarm",
    params(("id" = String, Path, description = "Id of the failed or cancelled task")),
    responses((status = 201, description = "Posted the retry; answers its task_id, retry_of and closes_at", body = Object),
        CommandRefusals))]
pub(crate) async fn retry(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(task_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Task(task_id.clone());
    let command = body.parse(FormFields::default()).map(|NoBody {}| Command::Retry { task_id });
    run(&state, &who, &body, command, true, back).await
}

/// `POST /swarm/tasks/{id}/close`: closes the auction now and settles it as its
/// window's end would (the lowest bid wins, or the task fails without bids).
#[utoipa::path(post, path = "/swarm/tasks/{id}/close", tag = "swarm",
    params(("id" = String, Path, description = "Task id")),
    responses((status = 200, description = "Closed and settled; answers the task's status (assigned or failed)",
        body = Object), CommandRefusals))]
pub(crate) async fn close(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(task_id): Path<String>,
    body: CommandBody,
) -> Result<Response, ApiError> {
    let back = Back::Task(task_id.clone());
    let command = body.parse(FormFields::default()).map(|NoBody {}| Command::Close { task_id });
    run(&state, &who, &body, command, false, back).await
}

/// The paging parameters of `GET /api/swarm`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SwarmParams {
    /// Tasks in the page, newest first: 1 to 1 000, default 100.
    tasks_limit: Option<usize>,
    /// The previous page's `tasks_next`: only tasks created before it.
    tasks_before: Option<u64>,
    /// Agents in the page, by id: 1 to 1 000, default 200.
    agents_limit: Option<usize>,
    /// The previous page's `agents_next`: only agents whose id sorts after it.
    agents_after: Option<String>,
    /// The swarm as it stood after this seq, or at this RFC 3339 time (after the last
    /// event committed at or before it). A seq beyond the head is the head; a moment
    /// before the oldest event retention kept is 410.
    at: Option<String>,
}

impl From<PastError> for ApiError {
    fn from(e: PastError) -> Self {
        match e {
            PastError::Pruned { .. } => ApiError::new(StatusCode::GONE, "pruned", e.to_string()).with_field("at"),
            PastError::CatchingUp { .. } => ApiError::unavailable("catching_up", e.to_string(), 2),
            PastError::Damaged { .. } => ApiError::internal(&e),
            PastError::Store(e) => e.into(),
        }
    }
}

/// Where a past view of the swarm stands: the moment shown and the log around it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AtView {
    /// The last event folded.
    pub seq: u64,
    /// When it was committed, RFC 3339; absent for seq 0 (before any event).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The log's head and oldest retained seq now: the range a scrubber moves over.
    pub head: u64,
    pub oldest: u64,
}

/// The swarm as it stood at `at` (a seq or an RFC 3339 time), one page of it, as the
/// live projection would have shown it then (auctions' seconds left counted from
/// that moment).
///
/// # Errors
/// 400 naming `at` when it is neither; 410 before the oldest event kept; 503 while the
/// history has not reached the moment; the store failed.
pub(crate) async fn swarm_at(
    state: &AppState,
    at: &str,
    page: &SwarmPage,
) -> Result<(AtView, SwarmSnapshot), ApiError> {
    let at = history::At::parse(at).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_query",
            format!("at must be a seq (a whole number) or an RFC 3339 time, not {at:?}"),
        )
        .with_field("at")
    })?;
    let store = state.store.as_ref();
    let moment = history::resolve(store, at).await?;
    let projection = history::fold_at(store, &state.config.coordinator.projection, &moment).await?;
    let now_ms = moment.ts_ms.unwrap_or(0);
    let view = AtView {
        seq: moment.seq,
        time: moment.ts_ms.map(crate::event::format_timestamp),
        head: moment.head,
        oldest: moment.oldest,
    };
    Ok((view, crate::swarm::snapshot::snapshot(&projection, page, now_ms)))
}

/// `GET /api/swarm?at=…`: the page of the swarm, and where it stands.
#[derive(Serialize)]
struct PastSwarm {
    #[serde(flatten)]
    swarm: SwarmSnapshot,
    at: AtView,
}

/// `GET /api/swarm`: totals, open auctions, and a page each of tasks (newest first) and
/// agents (by id), folded from the log; `tasks_next` and `agents_next` continue them.
/// With `at`, the same as it stood then, and `at` saying which moment that is.
#[utoipa::path(get, path = "/api/swarm", tag = "swarm", params(SwarmParams),
    responses((status = 200, description = "Totals, open auctions (at most 100; auctions_more counts the rest), \
        a page of tasks and a page of agents, with cursors for the next pages. With `at`: the swarm as it stood \
        after that seq (or the last event at or before that time), folded from the nearest stored snapshot, \
        and `at` = {seq, time, head, oldest}: the moment shown and the log's range now", body = Object),
        (status = 410, description = "`at` is before the oldest event retention kept", body = Object),
        (status = 503, description = "The swarm's history has not been folded up to `at` yet (a first start \
        on a long log); retry after Retry-After", body = Object),
        Refusals))]
pub(crate) async fn snapshot(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SwarmParams>,
) -> Result<Response, ApiError> {
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
    if let Some(at) = q.at {
        let (at, swarm) = swarm_at(&state, &at, &page).await?;
        return Ok(sorted_json(&PastSwarm { swarm, at })?.into_response());
    }
    Ok(sorted_json(&state.coordinator.snapshot(page).await?)?.into_response())
}
