//! Server-sent events `GET /api/stream` (DESIGN §3).
//!
//! Each event is one SSE message whose `id` is its seq, so a browser's automatic
//! reconnect sends `Last-Event-ID` and resumes exactly. Everything a cursor step
//! yields goes out as one chunk (one write, however many messages), paced like
//! WebSocket frames. When the token is revoked the stream sends `event: revoked` and
//! ends.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::{Format, Pace, StreamParams, paced_next};
use crate::auth::{Principal, Revocation};
use crate::cursor::{Cursor, CursorError, Step};
use crate::filter::Filter;
use crate::http::AppState;
use crate::http::error::{ApiError, ApiQuery};
use crate::metrics::{ConnectionGuard, SubscriberGuard, Transport};

/// How long a browser waits before reconnecting, ms.
const RETRY_MS: u32 = 2_000;
/// The last message of a stream whose token was revoked. A browser's `EventSource`
/// reconnects after any end and then meets a 401; this says why first.
const REVOKED_MESSAGE: &[u8] = b"event: revoked\ndata: {\"reason\":\"token revoked\"}\n\n";

/// Opens the stream after the route's auth check has passed.
#[utoipa::path(get, path = "/api/stream", tag = "streams",
    params(
        ("since" = Option<u64>, Query, description = "Resume after this seq; the Last-Event-ID header wins"),
        ("types" = Option<String>, Query, description = "Comma-separated types or prefixes like task.*"),
        ("task_id" = Option<String>, Query), ("agent_id" = Option<String>, Query), ("source" = Option<String>, Query)),
    responses((status = 200, description = "text/event-stream; each event's id is its seq; a revoked token's stream ends with `event: revoked` (docs/PROTOCOL.md)", content_type = "text/event-stream"), crate::http::schema::Refusals))]
pub async fn stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<StreamParams>,
) -> Result<Response, ApiError> {
    if params.after.is_some() || params.wait.is_some() {
        return Err(ApiError::bad_request(
            "invalid_query",
            "after and wait belong to /api/events/poll; use since here",
        ));
    }
    let filter = Filter::from_query(&params.filter_query())?;
    let since = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).ok_or_else(|| {
            ApiError::bad_request("invalid_header", "Last-Event-ID must be the seq of an event")
                .with_field("Last-Event-ID")
        })?),
        None => params.since,
    };
    let cursor = Cursor::new(state.hub.clone(), state.store.clone(), filter, since);
    let bounds = state.hub.bounds();
    let opening = format!(
        "retry: {RETRY_MS}\nevent: subscribed\ndata: {{\"head\":{},\"oldest\":{}}}\n\n",
        bounds.head, bounds.oldest
    );
    let pace = Pace::new(state.config.max_frames_per_sec);
    let format = params.format;
    let revocation = state.tokens.revocation(&principal);
    let mut watch = revocation.clone();
    let stream = futures_util::stream::unfold(
        Some(Feed {
            _guards: (state.metrics.connection(Transport::Sse), state.metrics.subscriber()),
            revoked: Box::pin(async move { watch.revoked().await }),
            revocation,
            state,
            cursor,
            pace,
            format,
            opening: Some(opening),
            ended: false,
        }),
        |feed| async move {
            let mut feed = feed?;
            let chunk = feed.next_chunk().await?;
            Some((Ok::<_, Infallible>(chunk), Some(feed)))
        },
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

struct Feed {
    state: AppState,
    /// Count the stream in the gauges while it lives.
    _guards: (ConnectionGuard, SubscriberGuard),
    /// Completes when the token that opened the stream is revoked. Made once per
    /// stream, not per chunk: a chunk's timers are made afresh, this is not, so a
    /// steady flow of events cannot put it off.
    revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The same token, for the look before each chunk of events.
    revocation: Revocation,
    cursor: Cursor,
    pace: Pace,
    format: Format,
    opening: Option<String>,
    /// The last message went out; the next call ends the stream.
    ended: bool,
}

impl Feed {
    /// The next bytes to send, or `None` to end the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        if let Some(opening) = self.opening.take() {
            return Some(Bytes::from(opening));
        }
        let limit = self.state.config.frame_limit;
        let step = tokio::select! {
            biased;
            () = self.state.shutdown.cancelled() => return None,
            () = &mut self.revoked => return Some(self.end_revoked()),
            () = tokio::time::sleep(self.state.config.keepalive) => {
                return Some(Bytes::from_static(b": keepalive\n\n"));
            }
            step = paced_next(&self.pace, Some(&mut self.cursor), limit) => step,
        };
        // The step may have read events while the token was being revoked.
        if self.revocation.is_revoked() {
            return Some(self.end_revoked());
        }
        let chunk = match step {
            Ok(Step::Events(events)) => {
                self.state.metrics.delivered(&events, self.cursor.lag());
                let mut out = Vec::with_capacity(events.iter().map(|e| e.payload().len() + 32).sum());
                for e in &events {
                    match self.format {
                        Format::Json => {
                            out.extend_from_slice(format!("id: {}\ndata: ", e.seq).as_bytes());
                            out.extend_from_slice(&e.payload());
                            out.extend_from_slice(b"\n\n");
                        }
                        Format::Html => write_html_message(e, &mut out),
                    }
                }
                Bytes::from(out)
            }
            Ok(Step::Reset { oldest }) => Bytes::from(format!(
                "id: {}\nevent: reset\ndata: {{\"oldest\":{oldest}}}\n\n",
                oldest.saturating_sub(1)
            )),
            Err(CursorError::Closed) => return None,
            Err(CursorError::Store(e)) => {
                tracing::error!(error = %e, "event stream cursor failed to read the store");
                return None;
            }
        };
        self.pace.sent();
        Some(chunk)
    }

    /// The last chunk of a stream whose token was revoked. `revoked` has completed (or
    /// is about to be dropped unpolled): it is never polled again.
    fn end_revoked(&mut self) -> Bytes {
        self.ended = true;
        Bytes::from_static(REVOKED_MESSAGE)
    }
}

/// One event as an SSE message whose data is its HTML row. A row's text may hold line
/// breaks; each line becomes a `data:` line (the browser joins them with `\n`), and a
/// bare `\r`, which SSE would also read as a line end, is written as its character
/// reference, which renders the same.
fn write_html_message(e: &crate::event::Event, out: &mut Vec<u8>) {
    let row = crate::view::event::row(e, crate::view::event::Detail::Compact).into_string().replace('\r', "&#13;");
    out.extend_from_slice(format!("id: {}\n", e.seq).as_bytes());
    for line in row.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventParts};

    #[test]
    fn html_messages_keep_line_breaks_inside_data_lines() {
        let e = Event::encode(EventParts {
            seq: 3,
            id: "i",
            event_type: "system.info",
            source: "s",
            task_id: None,
            agent_id: None,
            ts_ms: 0,
            data: r#"{"message":"one\ntwo\rthree"}"#,
        })
        .unwrap();
        let mut out = Vec::new();
        write_html_message(&e, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id: 3\ndata: <li"), "{text}");
        assert!(text.ends_with("\n\n") && !text.contains('\r'), "{text}");
        assert!(
            text.lines().filter(|l| !l.is_empty()).all(|l| l.starts_with("id: ") || l.starts_with("data: ")),
            "{text}"
        );
    }
}
