//! The JSON API of DESIGN §4 for events, tokens and health.
//!
//! Handlers parse input into domain types at the edge and hand the work to the
//! writer, the store or the hub; they hold no state of their own. Streaming endpoints
//! are `streams`', over `transport`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiBody, ApiError, ApiQuery, Filtered, json_body};
use super::schema::{ErrorBody, EventIn, EventPage, Refusals};
use crate::auth::{Principal, Scope};
use crate::event::{Event, KNOWN_TYPES, UNKNOWN_ICON, events_object, format_timestamp, parse_timestamp};
use crate::search::SearchQuery;
use crate::store::{Order, Query, Store, StoreError};

/// Most events one `GET /api/events` page returns (DESIGN §4).
pub(crate) const MAX_PAGE: usize = 1000;
/// Page size when `limit` is not given.
const DEFAULT_PAGE: usize = 100;
/// Types a summary names; the rest are summed as `other`, so a producer inventing a
/// new type per event cannot make the summary, or the events page, grow with them.
pub(crate) const MAX_SUMMARY_TYPES: usize = 20;
/// Bodies above this are parsed on the blocking pool: a 16 MiB batch takes tens of
/// milliseconds to parse, which would stall every connection sharing the worker.
const PARSE_INLINE_BYTES: usize = 64 * 1024;

/// A JSON response from bytes we already hold encoded.
fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// One committed event of a `POST /api/events`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = AcceptedEvent)]
pub(crate) struct Accepted<'a> {
    id: &'a str,
    seq: u64,
    /// Present and true when the id was already stored; `seq` is the original.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    duplicate: bool,
}

/// The answer to a `POST /api/events`: its events in the order sent.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AcceptedBody<'a> {
    events: Vec<Accepted<'a>>,
}

/// `POST /api/events`: one event or a batch, all or nothing; 201 after commit.
#[tracing::instrument(skip_all, fields(bytes = body.len()))]
#[utoipa::path(post, path = "/api/events", tag = "events",
    request_body(content = Vec<EventIn>, description = "One event object or an array of up to 1000 (all or nothing)"),
    responses(
        (status = 201, description = "Committed durably", body = AcceptedBody<'static>),
        Refusals,
        (status = 413, description = "Body or batch over the limit", body = ErrorBody),
        (status = 429, description = "Over the token's ingest rate; see Retry-After", body = ErrorBody),
        (status = 503, description = "Writer queue full (`queue_full`), the server holds as many request bodies as --max-inflight-body-bytes allows, or the store does not answer (`store_unavailable`) or takes no writes (`store_read_only`); see Retry-After", body = ErrorBody),
        (status = 507, description = "The store's disk is full (`storage_full`): nothing was stored; see Retry-After", body = ErrorBody)))]
pub(crate) async fn post_events(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let arrived = std::time::Instant::now();
    let events = if body.len() <= PARSE_INLINE_BYTES {
        state.config.ingest.parse_body(&body)?
    } else {
        let rules = state.config.ingest.clone();
        tokio::task::spawn_blocking(move || rules.parse_body(&body)).await.map_err(|e| ApiError::internal(&e))??
    };
    state.limiters.ingest(&principal, events.len())?;
    let outcomes = state.writer.append(events).await?;
    state.metrics.ingest_latency(arrived.elapsed());
    let events = outcomes.iter().map(|o| Accepted { id: &o.id, seq: o.seq, duplicate: o.duplicate }).collect();
    Ok((StatusCode::CREATED, Json(AcceptedBody { events })).into_response())
}

/// Query parameters of `GET /api/events` besides the filter's, which [`Filtered`]
/// reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    after: Option<u64>,
    before: Option<u64>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    /// `asc` (default) or `desc`.
    #[param(value_type = Option<String>)]
    order: Option<Order>,
    /// Full-text search of the display text and data values: words (all must match),
    /// `"a phrase"`, `prefix*`; case-insensitive; at most 200 characters and 16 terms.
    q: Option<String>,
}

/// The `q` parameter as a search; blank means none.
///
/// # Errors
/// 400 naming `q` when it is too long, has no words, or too many terms.
pub(crate) fn search_param(q: Option<&str>) -> Result<Option<SearchQuery>, ApiError> {
    let parsed = q.map(SearchQuery::parse).transpose();
    parsed.map(Option::flatten).map_err(|e| ApiError::bad_request("invalid_query", e.to_string()).with_field("q"))
}

pub(crate) fn time_param(field: &'static str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            parse_timestamp(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("{field} must be an RFC 3339 time, like 2026-01-31T12:00:00Z"),
                )
                .with_field(field)
            })
        })
        .transpose()
}

/// `GET /api/events`: filtered, cursor-paged by seq.
#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/api/events", tag = "events", params(ListParams, crate::filter::FilterSpec),
    responses((status = 200, description = "A page of events, by seq", body = EventPage), Refusals))]
pub(crate) async fn list_events(
    State(state): State<AppState>,
    Filtered(filter, p): Filtered<ListParams>,
) -> Result<Response, ApiError> {
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request("invalid_query", format!("limit must be between 1 and {MAX_PAGE}"))
            .with_field("limit"));
    }
    let order = p.order.unwrap_or_default();
    let query = Query {
        filter,
        after: p.after,
        before: p.before,
        from_ms: time_param("from", p.from.as_deref())?,
        to_ms: time_param("to", p.to.as_deref())?,
        order,
        limit,
        text: search_param(p.q.as_deref())?,
    };
    // The first chunk is read before answering, so a store error is still a clean 500.
    let first = state.store.query(Query { limit: limit.min(PAGE_CHUNK_EVENTS), ..query.clone() }).await?;
    if first.len() == limit || first.len() < PAGE_CHUNK_EVENTS {
        // The whole page: `next` is the seq to pass as `after` (asc) or `before` (desc)
        // for the next page.
        let next = (first.len() == limit).then(|| first.last().map(|e| e.seq)).flatten();
        return Ok(json_bytes(StatusCode::OK, events_object(&first, &[("next", next)])));
    }
    let chunks = PageChunks { store: Arc::clone(&state.store), query, sent: 0, ready: Some(first), done: false };
    let body = axum::body::Body::from_stream(futures_util::stream::unfold(chunks, PageChunks::next));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Events read from the store per chunk of a `GET /api/events` page. A full page
/// (1 000 events of up to 16 KiB) is 16 MB, and was held twice over (the events and
/// their encoding) until the client had read it all. Read and written 100 events at a
/// time, a client that stops reading pins one chunk (at most 1.6 MB) until the write
/// timeout ends its connection.
const PAGE_CHUNK_EVENTS: usize = 100;

/// A page of `GET /api/events` larger than one chunk, read from the store as the client
/// takes it. The result is the one query would give: each chunk continues the seq
/// window past the last event sent, in the page's order.
struct PageChunks {
    store: Arc<dyn Store>,
    /// The page's query: `limit` is what is left of the page, and the seq window is
    /// narrowed past every event sent.
    query: Query,
    sent: usize,
    /// A chunk already read (the first).
    ready: Option<Vec<Arc<Event>>>,
    done: bool,
}

impl PageChunks {
    /// The next piece of the body, `{"events":[` first and `],"next":…}` last.
    async fn next(mut self) -> Option<(Result<bytes::Bytes, StoreError>, Self)> {
        if self.done {
            return None;
        }
        let asked = self.query.limit.min(PAGE_CHUNK_EVENTS);
        let events = match self.ready.take() {
            Some(events) => events,
            None => match self.store.query(Query { limit: asked, ..self.query.clone() }).await {
                Ok(events) => events,
                Err(e) => {
                    // The status line is gone; ending the body short is all that is left.
                    tracing::error!(error = %e, sent = self.sent, "reading the rest of a page failed");
                    self.done = true;
                    return Some((Err(e), self));
                }
            },
        };
        let mut out = Vec::with_capacity(32 + events.iter().map(|e| e.payload().len() + 1).sum::<usize>());
        if self.sent == 0 {
            out.extend_from_slice(br#"{"events":["#);
        }
        for e in &events {
            if self.sent > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&e.payload());
            self.sent += 1;
        }
        self.query.limit -= events.len();
        if let Some(last) = events.last() {
            match self.query.order {
                Order::Asc => self.query.after = Some(last.seq),
                Order::Desc => self.query.before = Some(last.seq),
            }
        }
        if events.len() < asked || self.query.limit == 0 {
            let next = if self.query.limit == 0 {
                events.last().map_or("null".to_owned(), |e| e.seq.to_string())
            } else {
                "null".to_owned()
            };
            out.extend_from_slice(br#"],"next":"#);
            out.extend_from_slice(next.as_bytes());
            out.push(b'}');
            self.done = true;
        }
        Some((Ok(out.into()), self))
    }
}

/// `GET /api/events/{seq or id}`: a number is a seq (then an id, if no such seq).
#[utoipa::path(get, path = "/api/events/{key}", tag = "events",
    params(("key" = String, Path, description = "A seq, or a producer id")),
    responses((status = 200, description = "The event", body = crate::event::EventPayload), (status = 404, description = "No such event", body = ErrorBody), Refusals))]
pub(crate) async fn get_event(State(state): State<AppState>, Path(key): Path<String>) -> Result<Response, ApiError> {
    let mut found = None;
    if let Ok(seq) = key.parse::<u64>() {
        found = state.store.get_by_seq(seq).await?;
    }
    if found.is_none() && key.len() <= crate::event::MAX_ID_CHARS * 4 {
        found = state.store.get_by_id(&key).await?;
    }
    let event = found.ok_or_else(|| ApiError::not_found(format!("no event with seq or id {key:?}")))?;
    Ok(json_bytes(StatusCode::OK, event.payload().to_vec()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct SummaryParams {
    /// `hour` (default), `day` or `week`: the window and its bucket width (1 minute,
    /// 15 minutes, 1 hour).
    range: Option<String>,
    /// A window of this many minutes (1 to 10080) instead of a named range; buckets
    /// are the narrowest of 1, 5, 15, 30, 60 or 120 minutes that make at most 200.
    minutes: Option<u32>,
}

/// Longest window `GET /api/summary` covers, minutes (a week).
const MAX_SUMMARY_MINUTES: u32 = 7 * 24 * 60;
/// Most buckets a summary has: a chart's worth, however long the window.
const MAX_SUMMARY_BUCKETS: u32 = 200;
/// The bucket widths a summary chooses from, minutes.
const BUCKET_MINUTES: &[u32] = &[1, 5, 15, 30, 60, 120];

/// A summary's window: how many minutes, in buckets of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SummaryRange {
    pub minutes: u32,
    pub bucket_minutes: u32,
}

impl SummaryRange {
    /// The ranges the events page offers, by name: (name, label, range).
    pub(crate) const NAMED: &[(&str, &str, SummaryRange)] = &[
        ("hour", "last hour", SummaryRange { minutes: 60, bucket_minutes: 1 }),
        ("day", "last day", SummaryRange { minutes: 1440, bucket_minutes: 15 }),
        ("week", "last week", SummaryRange { minutes: 10_080, bucket_minutes: 60 }),
    ];

    /// The range called `name`, if there is one.
    pub(crate) fn named(name: &str) -> Option<Self> {
        Self::NAMED.iter().find(|(n, _, _)| *n == name).map(|(_, _, r)| *r)
    }

    /// A window of `minutes`, in the narrowest buckets of which it takes at most
    /// [`MAX_SUMMARY_BUCKETS`].
    ///
    /// # Errors
    /// 400 when `minutes` is 0 or over a week.
    pub(crate) fn of_minutes(minutes: u32) -> Result<Self, ApiError> {
        if minutes == 0 || minutes > MAX_SUMMARY_MINUTES {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("minutes must be between 1 and {MAX_SUMMARY_MINUTES}"),
            )
            .with_field("minutes"));
        }
        let bucket_minutes = BUCKET_MINUTES
            .iter()
            .copied()
            .find(|b| minutes.div_ceil(*b) <= MAX_SUMMARY_BUCKETS)
            .unwrap_or(BUCKET_MINUTES[BUCKET_MINUTES.len() - 1]);
        Ok(SummaryRange { minutes, bucket_minutes })
    }

    fn from_params(p: &SummaryParams) -> Result<Self, ApiError> {
        match (p.range.as_deref(), p.minutes) {
            (Some(_), Some(_)) => {
                Err(ApiError::bad_request("invalid_query", "give range or minutes, not both").with_field("range"))
            }
            (Some(name), None) => Self::named(name).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("range must be hour, day or week, not {name:?}"))
                    .with_field("range")
            }),
            (None, Some(minutes)) => Self::of_minutes(minutes),
            (None, None) => Ok(Self::NAMED[0].2),
        }
    }
}

/// One time bucket of `GET /api/summary`.
#[derive(Debug, Serialize)]
pub(crate) struct Bucket {
    /// Start of the bucket, RFC 3339 (named for the one-minute buckets it began with).
    pub minute: String,
    pub total: u64,
    /// The summary's named types only.
    pub by_type: BTreeMap<String, u64>,
    /// Events of every other type.
    pub other: u64,
}

/// What `GET /api/summary` answers; the events page renders the same.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub minutes: u32,
    /// Width of each bucket, minutes.
    pub bucket_minutes: u32,
    pub from: String,
    pub to: String,
    pub total: u64,
    /// The [`MAX_SUMMARY_TYPES`] busiest types of the window.
    pub by_type: BTreeMap<String, u64>,
    /// Events of every other type.
    pub other: u64,
    pub buckets: Vec<Bucket>,
}

/// `GET /api/summary?range=hour|day|week` (or `minutes=N`): counts of the busiest types
/// (at most 20; `other` sums the rest), and one bucket per 1, 15 or 60 minutes (empty
/// buckets included, so charts need no gap filling), counted by the store.
#[utoipa::path(get, path = "/api/summary", tag = "events", params(SummaryParams),
    responses((status = 200, description = "Counts by type, and per time bucket (`bucket_minutes` wide) by type", body = Object), Refusals))]
pub(crate) async fn summary(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<SummaryParams>,
) -> Result<Response, ApiError> {
    Ok(Json(summarise(&state, SummaryRange::from_params(&p)?).await?).into_response())
}

/// Counts of the last `range.minutes` minutes, in buckets aligned to their width, the
/// current one included.
///
/// # Errors
/// The store's errors.
pub(crate) async fn summarise(state: &AppState, range: SummaryRange) -> Result<Summary, ApiError> {
    let width = i64::from(range.bucket_minutes) * 60_000;
    let now = chrono::Utc::now().timestamp_millis();
    let this_bucket = now - now.rem_euclid(width);
    let count = i64::from(range.minutes.div_ceil(range.bucket_minutes));
    let first = this_bucket - (count - 1) * width;
    let counts = state.store.bucket_counts(first, width).await?;
    let mut buckets: Vec<Bucket> = (0..count)
        .map(|i| Bucket { minute: format_timestamp(first + i * width), total: 0, by_type: BTreeMap::new(), other: 0 })
        .collect();
    let mut all_types: HashMap<&str, u64> = HashMap::new();
    for c in &counts {
        *all_types.entry(c.event_type.as_str()).or_default() += c.count;
    }
    let mut busiest: Vec<(&str, u64)> = all_types.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let named: HashSet<&str> = busiest.iter().take(MAX_SUMMARY_TYPES).map(|(t, _)| *t).collect();
    let mut by_type: BTreeMap<String, u64> = BTreeMap::new();
    let (mut total, mut other) = (0, 0);
    for c in &counts {
        let Ok(i) = usize::try_from((c.start_ms - first) / width) else { continue };
        // Events stamped in a bucket after "now" (a clock step back) land in the last one.
        let last = buckets.len() - 1;
        let bucket = &mut buckets[i.min(last)];
        bucket.total += c.count;
        total += c.count;
        if named.contains(c.event_type.as_str()) {
            *bucket.by_type.entry(c.event_type.clone()).or_default() += c.count;
            *by_type.entry(c.event_type.clone()).or_default() += c.count;
        } else {
            bucket.other += c.count;
            other += c.count;
        }
    }
    Ok(Summary {
        minutes: range.minutes,
        bucket_minutes: range.bucket_minutes,
        from: format_timestamp(first),
        to: format_timestamp(now),
        total,
        by_type,
        other,
        buckets,
    })
}

/// `GET /api/event-types`: the known-type table of DESIGN §2.
#[utoipa::path(get, path = "/api/event-types", tag = "events",
    responses((status = 200, description = "The known-type table: icon, label, display template", body = Object)))]
pub(crate) async fn event_types() -> Response {
    Json(serde_json::json!({ "types": KNOWN_TYPES, "unknown_icon": UNKNOWN_ICON })).into_response()
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewToken {
    /// `read`, `write` or `admin`.
    #[schema(value_type = String)]
    scope: Scope,
    name: Option<String>,
}

/// `POST /api/tokens` (admin): issues a token; its secret is in this answer only.
#[utoipa::path(post, path = "/api/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, description = "The token; its secret is shown only here", body = Object), Refusals))]
pub(crate) async fn post_token(State(state): State<AppState>, ApiBody(body): ApiBody) -> Result<Response, ApiError> {
    let req: NewToken = json_body(&body)?;
    let name = req.name.unwrap_or_else(|| format!("{} token", req.scope));
    if name.is_empty() || name.chars().count() > crate::event::MAX_NAME_CHARS {
        return Err(ApiError::bad_request("invalid_body", "name must be 1 to 128 characters").with_field("name"));
    }
    let issued = state.tokens.issue(req.scope, &name).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// `GET /api/tokens` (admin): every token's id, name, scope and state; never a secret.
#[utoipa::path(get, path = "/api/tokens", tag = "tokens",
    responses((status = 200, description = "Every token's id, name, scope and state", body = Object), Refusals))]
pub(crate) async fn list_tokens(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(serde_json::json!({ "tokens": state.tokens.list().await? })).into_response())
}

/// `DELETE /api/tokens/{id}` (admin): revokes a token; its open streams close.
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "Revoked; its open streams close", body = Object), (status = 404, description = "No live token with that id", body = ErrorBody), Refusals))]
pub(crate) async fn revoke_token(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.tokens.revoke(&id).await? {
        Ok(Json(serde_json::json!({ "id": id, "revoked": true })).into_response())
    } else {
        Err(ApiError::not_found(format!("no live token with id {id:?}")))
    }
}

/// `GET /api/sessions` (admin): every live browser session: its id, its token, when it
/// was created, last used, and when it will expire unless used again; never a secret.
#[utoipa::path(get, path = "/api/sessions", tag = "tokens",
    responses((status = 200, description = "Every live browser session, newest first", body = Object), Refusals))]
pub(crate) async fn list_sessions(State(state): State<AppState>) -> Result<Response, ApiError> {
    let sessions: Vec<serde_json::Value> = state
        .sessions
        .list()
        .await?
        .into_iter()
        .map(|s| {
            let expires_ms = state.sessions.expires_ms(&s);
            serde_json::json!({
                "id": s.id,
                "token_id": s.token_id,
                "token_name": s.token_name,
                "scope": s.scope,
                "created_at": format_timestamp(s.created_ms),
                "last_used_at": format_timestamp(s.last_used_ms),
                "expires_at": format_timestamp(expires_ms),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "sessions": sessions })).into_response())
}

/// `DELETE /api/sessions/{id}` (admin): ends a browser session on every node; its
/// cookie is worthless from then on and its open streams close.
#[utoipa::path(delete, path = "/api/sessions/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Session id, as GET /api/sessions lists it")),
    responses((status = 200, description = "Ended", body = Object), (status = 404, description = "No session with that id", body = ErrorBody), Refusals))]
pub(crate) async fn end_session(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    if state.sessions.end_by_id(&id).await? {
        state.tokens.session_ended();
        tracing::info!(session_id = %id, "browser session ended by an admin");
        Ok(Json(serde_json::json!({ "id": id, "ended": true })).into_response())
    } else {
        Err(ApiError::not_found(format!("no session with id {id:?}")))
    }
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let bounds = state.hub.bounds();
    state.metrics.webhook_lags(bounds.head, &state.webhooks.positions());
    let now = crate::metrics::Snapshot {
        head: bounds.head,
        oldest: bounds.oldest,
        writer_queue_events: state.writer.queued_events(&state.config.writer),
        open_connections: state.conns.open(),
        inflight_body_bytes: state.limiters.bodies.held(),
        search_lag: state.search.lag(bounds.head),
    };
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics.render(now)).into_response()
}

/// Middleware: counts every refusal by its error code.
pub(crate) async fn count_rejections(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(super::error::Refused(code)) = response.extensions().get() {
        state.metrics.rejected(code);
    }
    response
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "The process is up", body = Object)))]
pub(crate) async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the store answers and the server is not shutting down.
///
/// Anyone may ask whether the node is ready; only a caller with a valid token (any
/// scope) is told the log's head and oldest seq and the coordinator's problems, which
/// say how busy the log is and what went wrong. A node with problems answers 200 with
/// `"status":"degraded"`: it still serves reads and ingest, and taking it out of a load
/// balancer would not settle anything; the problems need an operator.
#[utoipa::path(get, path = "/readyz", tag = "ops", security((), ("bearer" = [])),
    responses((status = 200, description = "The store answers: `status` is `ready`, or `degraded` when the coordinator has problems. With a valid token also `head`, `oldest` and `problems`", body = Object), (status = 503, description = "Shutting down, a long-running task ended (`task_ended`, naming it), or the store does not answer", body = ErrorBody)))]
pub(crate) async fn readyz(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if let Some(why) = state.ended_early.get() {
        return Err(ApiError::unavailable("task_ended", format!("{why}; the server is stopping"), 5));
    }
    if state.shutdown.is_cancelled() {
        return Err(ApiError::unavailable("shutting_down", "the server is shutting down", 5));
    }
    let bounds = state.store.bounds().await.map_err(|e| {
        tracing::error!(error = %e, "readiness check: the store does not answer");
        ApiError::unavailable("store_unavailable", "the store does not answer", 5)
    })?;
    let problems = state.coordinator.problems();
    let status = if problems.is_empty() { "ready" } else { "degraded" };
    // An unknown or missing token is not an error here: the caller is told less.
    let trusted = super::auth::authenticate(&state, &headers).await.is_ok();
    let body = if trusted {
        serde_json::json!({ "status": status, "head": bounds.head, "oldest": bounds.oldest, "problems": problems })
    } else {
        serde_json::json!({ "status": status })
    };
    Ok(Json(body).into_response())
}

/// Any path without a route.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// Last line of defence: a handler that panicked answers 500 and the server goes on.
pub(crate) fn panicked(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = cause
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    ApiError::internal(&format!("handler panicked: {message}")).into_response()
}
