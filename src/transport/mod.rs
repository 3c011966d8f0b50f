//! Transports: encoders over one [`Cursor`](crate::cursor::Cursor).
//!
//! Each transport drives a cursor, paces what it yields and encodes it for its wire:
//! frames on a socket it is given, an SSE body, a long-poll answer. None of them keeps
//! events of its own between frames. `/ws/html`, and SSE and long-poll with
//! `format=html`, encode events as the dashboard's HTML rows.
//!
//! A transport knows nothing of HTTP routing, auth or error bodies: it takes a
//! [`StreamContext`] (what every stream reads from), the opener's
//! [`Revocation`](crate::auth::Revocation) and an already-validated subscription, and
//! reports failures as its own types. The thin axum handlers in `http::streams`
//! extract and authorise the request, call a transport and answer its errors.
//!
//! Every transport ends when its token is revoked ([`crate::auth::Revocation`]):
//! the watch is a branch of each one's `select!`, ahead of the cursor, and is made
//! once per stream, so no stream of events can put it off; and nothing is sent once
//! the token is known revoked, even events a step had already read.

pub mod poll;
pub mod sse;
pub mod ws;
pub mod ws_html;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cursor::{Cursor, CursorError, Step};
use crate::event::{Event, write_payload_array};
use crate::filter::Filter;
use crate::hub::{Hub, ReadLimit};
use crate::metrics::Metrics;
use crate::store::Store;

/// What every stream reads from and is bounded by. Cheap to clone: the server's
/// shared parts behind `Arc`s and the pacing settings.
#[derive(Clone)]
pub struct StreamContext {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    /// Cancelled once, on shutdown; every stream ends with it.
    pub shutdown: CancellationToken,
    /// The most one cursor step (one frame) reads.
    pub frame_limit: ReadLimit,
    /// Frames a subscription gets a second at most; 0 is unpaced.
    pub max_frames_per_sec: u32,
    /// Keep-alive period of streams that stay open.
    pub keepalive: Duration,
}

impl StreamContext {
    /// A cursor over this server's hub and store.
    pub fn cursor(&self, filter: Filter, since: Option<u64>) -> Cursor {
        Cursor::new(self.hub.clone(), self.store.clone(), filter, since)
    }

    pub(crate) fn pace(&self) -> Pace {
        Pace::new(self.max_frames_per_sec)
    }
}

/// Spaces frames so that a subscription gets at most `per_sec` a second; what arrives
/// in between is coalesced into the next frame, not dropped.
pub(crate) struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    /// `per_sec` 0 means no pacing.
    pub(crate) fn new(per_sec: u32) -> Self {
        Pace { interval: (per_sec > 0).then(|| Duration::from_secs(1) / per_sec), next: Instant::now() }
    }

    /// Waits until the next frame may go.
    pub(crate) async fn ready(&self) {
        if self.interval.is_some() {
            tokio::time::sleep_until(self.next).await;
        }
    }

    /// Records that a frame went now. Spacing from the send time (not the planned
    /// time) keeps any one-second window at or under the limit.
    pub(crate) fn sent(&mut self) {
        if let Some(interval) = self.interval {
            self.next = Instant::now() + interval;
        }
    }
}

/// The cursor's next step, paced; never ready without a cursor (no subscription).
pub(crate) async fn paced_next(
    pace: &Pace,
    cursor: Option<&mut Cursor>,
    limit: ReadLimit,
) -> Result<Step, CursorError> {
    let Some(cursor) = cursor else { return std::future::pending().await };
    pace.ready().await;
    cursor.next(limit).await
}

/// Most bytes of events (by [`Event::weight`]) one SSE chunk carries: a paced step of
/// an event stream is read and sent as chunks of at most this much, each read only
/// when hyper asks for the next, which it does only while its write queue has room.
/// So a client that stops reading holds hyper's queue and one chunk, never a step of
/// the frame limit's 1 MiB, and never its backlog (DESIGN §1). hyper's queue takes up
/// to its `max_buf_size` (64 KiB here) before it stops asking; 16 KiB chunks keep the
/// two under issue 19's 128 KiB a stalled viewer (32 KiB ones held 109 KiB in the
/// debug build's test, 16 KiB ones 68 KiB).
pub(crate) const SSE_CHUNK_BYTES: usize = 16 * 1024;
/// The same for `format=html`, whose rows are larger than the events' JSON.
pub(crate) const SSE_HTML_CHUNK_BYTES: usize = 8 * 1024;

/// What is left of one paced step read in chunks: a step may read up to the frame
/// limit, a chunk at a time, without waiting for the pace between its chunks, but
/// only up to the head it started at, so a steady flow of events cannot stretch it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    left: ReadLimit,
    /// The head when the step's first chunk was read.
    upto: u64,
}

impl Slot {
    /// The limit of a step's first chunk.
    pub(crate) fn first(limit: ReadLimit, chunk_bytes: usize) -> ReadLimit {
        ReadLimit { max_bytes: limit.max_bytes.min(chunk_bytes), ..limit }
    }

    /// What is left of a step of `limit` after a chunk of `events` read from
    /// `cursor` (whose head then was `upto`), or `None` when the step is done: its
    /// budget is spent or the cursor has reached `upto`.
    pub(crate) fn after(limit: ReadLimit, upto: u64, cursor: &Cursor, events: &[Arc<Event>]) -> Option<Slot> {
        Slot { left: limit, upto }.spend(cursor, events)
    }

    /// Takes a chunk of `events` off the budget; `None` when the step is done.
    pub(crate) fn spend(mut self, cursor: &Cursor, events: &[Arc<Event>]) -> Option<Slot> {
        self.left.max_events = self.left.max_events.saturating_sub(events.len());
        self.left.max_bytes = self.left.max_bytes.saturating_sub(events.iter().map(|e| e.weight()).sum());
        let more = cursor.position() < self.upto && self.left.max_events > 0 && self.left.max_bytes > 0;
        more.then_some(self)
    }

    /// Reads the step's next chunk of at most `chunk_bytes`, without waiting: it stops
    /// at the head the step began at, with no events if none up to it matched.
    pub(crate) async fn next(&self, cursor: &mut Cursor, chunk_bytes: usize) -> Result<Step, CursorError> {
        cursor.next_until(self.upto, Slot::first(self.left, chunk_bytes)).await
    }
}

/// A WebSocket frame for `events`: the shared `event` frame when there is one,
/// else `{"type":"batch","payload":[…]}`.
pub fn ws_events_frame(events: &[Arc<Event>]) -> Bytes {
    if let [one] = events {
        return one.frame();
    }
    let mut out = Vec::with_capacity(32 + events.iter().map(|e| e.payload().len() + 1).sum::<usize>());
    out.extend_from_slice(br#"{"type":"batch","payload":"#);
    write_payload_array(events, &mut out);
    out.push(b'}');
    Bytes::from(out)
}

/// How SSE and long-poll encode events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The event JSON of DESIGN §3.
    #[default]
    Json,
    /// Each event as the HTML row the pages show ([`crate::view::event::row`]).
    Html,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pace_spaces_frames_by_the_interval() {
        let mut pace = Pace::new(10);
        let start = Instant::now();
        for _ in 0..5 {
            pace.ready().await;
            pace.sent();
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        let unpaced = Pace::new(0);
        let before = Instant::now();
        unpaced.ready().await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[test]
    fn one_event_is_its_own_frame_and_several_are_a_batch() {
        let e = |seq| crate::hub::tests::event(seq, "a.b");
        let single: serde_json::Value = serde_json::from_slice(&ws_events_frame(&[e(1)])).unwrap();
        assert_eq!(single["type"], "event");
        let batch: serde_json::Value = serde_json::from_slice(&ws_events_frame(&[e(1), e(2)])).unwrap();
        assert_eq!(batch["type"], "batch");
        assert_eq!(batch["payload"][1]["seq"], 2);
    }
}
