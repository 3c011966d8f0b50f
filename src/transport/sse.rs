//! Server-sent events `GET /api/stream` (DESIGN §3).
//!
//! Each event is one SSE message whose `id` is its seq, so a browser's automatic
//! reconnect sends `Last-Event-ID` and resumes exactly. A paced cursor step goes out
//! as chunks of at most [`SSE_CHUNK_BYTES`] of events, each read when hyper asks for
//! it, paced like WebSocket frames: a client that stops reading holds one chunk and
//! hyper's write queue, not its step, and is cut by the connection's write timeout. When the token is revoked the stream sends `event: revoked` and
//! ends. The HTTP response around the body is `http::streams`'.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;

use super::{Format, Pace, SSE_CHUNK_BYTES, SSE_HTML_CHUNK_BYTES, Slot, StreamContext, paced_next};
use crate::auth::Revocation;
use crate::cursor::{Cursor, CursorError, Step};
use crate::filter::Filter;
use crate::metrics::{ConnectionGuard, SubscriberGuard, Transport};

/// How long a browser waits before reconnecting, ms.
const RETRY_MS: u32 = 2_000;
/// The last message of a stream whose token was revoked. A browser's `EventSource`
/// reconnects after any end and then meets a 401; this says why first.
const REVOKED_MESSAGE: &[u8] = b"event: revoked\ndata: {\"reason\":\"token revoked\"}\n\n";

/// The body of an event stream after `since`: the opening message with the log's
/// bounds, then a chunk per paced cursor step, keep-alive comments while idle. It ends
/// on shutdown, or after `event: revoked` when `revocation` fires.
pub fn body(
    ctx: StreamContext,
    revocation: Revocation,
    filter: Filter,
    since: Option<u64>,
    format: Format,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let cursor = ctx.cursor(filter, since);
    let bounds = ctx.hub.bounds();
    let opening = format!(
        "retry: {RETRY_MS}\nevent: subscribed\ndata: {{\"head\":{},\"oldest\":{}}}\n\n",
        bounds.head, bounds.oldest
    );
    let pace = ctx.pace();
    let mut watch = revocation.clone();
    futures_util::stream::unfold(
        Some(Feed {
            _guards: (ctx.metrics.connection(Transport::Sse), ctx.metrics.subscriber()),
            revoked: Box::pin(async move { watch.revoked().await }),
            revocation,
            ctx,
            cursor,
            pace,
            format,
            opening: Some(opening),
            slot: None,
            ended: false,
        }),
        |feed| async move {
            let mut feed = feed?;
            let chunk = feed.next_chunk().await?;
            Some((Ok::<_, Infallible>(chunk), Some(feed)))
        },
    )
}

struct Feed {
    ctx: StreamContext,
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
    /// The rest of a step whose first chunk has gone: read next, unpaced.
    slot: Option<Slot>,
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
        let chunk_bytes = match self.format {
            Format::Json => SSE_CHUNK_BYTES,
            Format::Html => SSE_HTML_CHUNK_BYTES,
        };
        loop {
            let continuing = self.slot.take();
            let step = match continuing {
                // The rest of a step: hyper asks for it only once the chunk before it
                // is queued, so it is not paced again.
                Some(slot) => tokio::select! {
                    biased;
                    () = self.ctx.shutdown.cancelled() => return None,
                    () = &mut self.revoked => return Some(self.end_revoked()),
                    step = slot.next(&mut self.cursor, chunk_bytes) => step,
                },
                None => tokio::select! {
                    biased;
                    () = self.ctx.shutdown.cancelled() => return None,
                    () = &mut self.revoked => return Some(self.end_revoked()),
                    () = tokio::time::sleep(self.ctx.keepalive) => {
                        return Some(Bytes::from_static(b": keepalive\n\n"));
                    }
                    step = paced_next(&self.pace, Some(&mut self.cursor), Slot::first(self.ctx.frame_limit, chunk_bytes)) => step,
                },
            };
            // The step may have read events while the token was being revoked.
            if self.revocation.is_revoked() {
                return Some(self.end_revoked());
            }
            let chunk = match step {
                Ok(Step::Events(events)) => {
                    self.slot = match continuing {
                        Some(slot) => slot.spend(&self.cursor, &events),
                        None => Slot::after(self.ctx.frame_limit, self.ctx.hub.head(), &self.cursor, &events),
                    };
                    if events.is_empty() {
                        // Nothing up to the step's head matched: the step is over.
                        self.pace.sent();
                        continue;
                    }
                    self.ctx.metrics.delivered(&events, self.cursor.lag());
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
            if self.slot.is_none() {
                self.pace.sent();
            }
            return Some(chunk);
        }
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
