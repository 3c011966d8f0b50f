//! The streaming endpoints' HTTP edge (DESIGN §3): `/ws`, `/ws/html`, `/api/stream`
//! and `/api/events/poll`.
//!
//! Each handler extracts and validates its query, makes the caller's
//! [`Revocation`](crate::auth::Revocation), hands both to its [`crate::transport`] and
//! answers the transport's failures as [`ApiError`]s. The streams themselves (cursor,
//! pacing, frames) are the transports'.

use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::{ApiError, Filtered};
use crate::auth::Principal;
use crate::filter::FilterSpec;
use crate::transport::poll::{DEFAULT_WAIT_SECS, MAX_WAIT_SECS, PollError, PollRequest};
use crate::transport::{self, Format, StreamContext};

impl AppState {
    /// What the transports read from: this server's hub, store, metrics, shutdown and
    /// pacing.
    pub fn stream_context(&self) -> StreamContext {
        StreamContext {
            hub: self.hub.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
            frame_limit: self.config.frame_limit,
            max_frames_per_sec: self.config.max_frames_per_sec,
            keepalive: self.config.keepalive,
        }
    }
}

/// The position parameters of SSE and long-poll, besides the filter's, which
/// [`Filtered`] reads.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StreamParams {
    /// SSE: resume after this seq (the `Last-Event-ID` header wins).
    pub since: Option<u64>,
    /// Long-poll: return events after this seq.
    pub after: Option<u64>,
    /// Long-poll: seconds to wait for one.
    pub wait: Option<u64>,
    /// `json` (the default) or `html`: events rendered as rows, for the dashboard's
    /// fallback when it cannot open `/ws/html`.
    #[serde(default)]
    pub format: Format,
}

/// `/ws/html`'s position in its URL, besides the filter's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HtmlParams {
    since: Option<u64>,
}

/// Upgrades after the route's auth check has passed.
#[utoipa::path(get, path = "/ws", tag = "streams",
    responses((status = 101, description = "WebSocket of JSON frames: subscribe, event, batch (when the subscription says \"batch\":true), reset (docs/PROTOCOL.md)"), super::schema::Refusals))]
pub(crate) async fn ws(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ws: WebSocketUpgrade,
) -> Response {
    let ctx = state.stream_context();
    let revocation = state.tokens.revocation(&principal);
    transport::ws::limits(ws).on_upgrade(move |socket| transport::ws::serve(ctx, revocation, socket))
}

/// Upgrades after the route's auth check has passed; a bad filter is refused with 400
/// before the upgrade.
pub(crate) async fn ws_html(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Filtered(filter, p): Filtered<HtmlParams>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let ctx = state.stream_context();
    let revocation = state.tokens.revocation(&principal);
    let since = p.since;
    Ok(transport::ws::limits(ws)
        .on_upgrade(move |socket| transport::ws_html::serve(ctx, revocation, socket, since, filter)))
}

/// Opens the stream after the route's auth check has passed.
#[utoipa::path(get, path = "/api/stream", tag = "streams",
    params(
        ("since" = Option<u64>, Query, description = "Resume after this seq; the Last-Event-ID header wins"),
        FilterSpec),
    responses((status = 200, description = "text/event-stream; each event's id is its seq; a revoked token's stream ends with `event: revoked` (docs/PROTOCOL.md)", content_type = "text/event-stream"), super::schema::Refusals))]
pub(crate) async fn sse(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    Filtered(filter, params): Filtered<StreamParams>,
) -> Result<Response, ApiError> {
    if params.after.is_some() || params.wait.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "after and wait belong to /api/events/poll; use since here",
        ));
    }
    let since = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).ok_or_else(|| {
            ApiError::bad_request("invalid_header", "Last-Event-ID must be the seq of an event")
                .with_field("Last-Event-ID")
        })?),
        None => params.since,
    };
    let revocation = state.tokens.revocation(&principal);
    let body = transport::sse::body(state.stream_context(), revocation, filter, since, params.format);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Waits for events after `after`. A token revoked while the poll waits gets 401 with
/// code `token_revoked` and no events.
#[utoipa::path(get, path = "/api/events/poll", tag = "streams",
    params(
        ("after" = Option<u64>, Query, description = "Return events after this seq (default: the head)"),
        ("wait" = Option<u64>, Query, description = "Seconds to wait for one (default 25, at most 60)"),
        FilterSpec),
    responses((status = 200, description = "Events, or none after the wait", body = super::schema::PollAnswer), super::schema::Refusals))]
pub(crate) async fn poll(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Filtered(filter, params): Filtered<StreamParams>,
) -> Result<Response, ApiError> {
    if params.since.is_some() {
        return Err(
            ApiError::bad_request("invalid_query", "since belongs to /api/stream; use after here").with_field("since")
        );
    }
    let wait = params.wait.unwrap_or(DEFAULT_WAIT_SECS);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::bad_request("invalid_query", format!("wait must be at most {MAX_WAIT_SECS} seconds"))
            .with_field("wait"));
    }
    let request = PollRequest { filter, after: params.after, wait: Duration::from_secs(wait), format: params.format };
    let revocation = state.tokens.revocation(&principal);
    match transport::poll::answer(&state.stream_context(), revocation, request).await {
        Ok(body) => Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()),
        Err(e @ PollError::Revoked) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "token_revoked", e.to_string())),
        Err(PollError::Store(e)) => Err(e.into()),
    }
}
