//! Long-poll `GET /api/events/poll?after=SEQ&wait=25` (DESIGN §3): for clients that can
//! hold neither a WebSocket nor an event stream.
//!
//! Answers at once when matching events after `after` exist, else waits up to `wait`
//! seconds. With `format=html` the answer is `{"html","next","head"}`, the events as
//! the dashboard's rows. `next` is where to continue: it can be past the last event returned when
//! the cursor skipped events that do not match.
//!
//! A poll waits on its token's revocation too: revoked while it waits, or before it
//! answers, it answers 401 `{"error":{"code":"token_revoked",…}}` and returns no
//! event, whatever its cursor had read.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Format, StreamParams};
use crate::auth::Principal;
use crate::cursor::{Cursor, CursorError, Step};
use crate::filter::Filter;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiQuery};
use crate::metrics::Transport;

/// Longest wait a client may ask for, seconds (DESIGN §3).
pub const MAX_WAIT_SECS: u64 = 60;
const DEFAULT_WAIT_SECS: u64 = 25;

/// Waits for events after `after`. A token revoked while the poll waits gets 401 with
/// code `token_revoked` and no events.
#[utoipa::path(get, path = "/api/events/poll", tag = "streams",
    params(
        ("after" = Option<u64>, Query, description = "Return events after this seq (default: the head)"),
        ("wait" = Option<u64>, Query, description = "Seconds to wait for one (default 25, at most 60)"),
        ("types" = Option<String>, Query, description = "Comma-separated types or prefixes like task.*"),
        ("task_id" = Option<String>, Query), ("agent_id" = Option<String>, Query), ("source" = Option<String>, Query)),
    responses((status = 200, description = "Events, or none after the wait", body = crate::http::schema::PollAnswer), crate::http::schema::Refusals))]
pub async fn poll(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(params): ApiQuery<StreamParams>,
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
    let filter = Filter::from_query(&params.filter_query())?;
    let _connection = state.metrics.connection(Transport::Poll);
    let mut cursor = Cursor::new(state.hub.clone(), state.store.clone(), filter, params.after);
    let mut revocation = state.tokens.revocation(&principal);
    let step = tokio::select! {
        biased;
        () = state.shutdown.cancelled() => None,
        () = revocation.revoked() => return Err(revoked()),
        r = tokio::time::timeout(Duration::from_secs(wait), cursor.next(state.config.frame_limit)) => r.ok(),
    };
    // The cursor may have read events while the token was being revoked.
    if revocation.is_revoked() {
        return Err(revoked());
    }
    let head = state.hub.head();
    let body = match step {
        Some(Ok(Step::Events(events))) if params.format == Format::Html => {
            let html = crate::view::event::rows(&events, crate::view::event::Detail::Compact).into_string();
            serde_json::json!({ "html": html, "next": cursor.position(), "head": head }).to_string().into_bytes()
        }
        Some(Ok(Step::Events(events))) => {
            state.metrics.delivered(&events, cursor.lag());
            let mut body = crate::http::api::page(&events, Some(cursor.position()));
            body.pop();
            body.extend_from_slice(format!(",\"head\":{head}}}").as_bytes());
            body
        }
        Some(Ok(Step::Reset { oldest })) => {
            format!(r#"{{"events":[],"next":{},"head":{head},"reset":true,"oldest":{oldest}}}"#, cursor.position())
                .into_bytes()
        }
        None | Some(Err(CursorError::Closed)) => {
            format!(r#"{{"events":[],"next":{},"head":{head}}}"#, cursor.position()).into_bytes()
        }
        Some(Err(CursorError::Store(e))) => return Err(e.into()),
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The answer to a poll whose token was revoked while it waited.
fn revoked() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "token_revoked",
        "the token was revoked while this poll waited; no events were returned",
    )
}
