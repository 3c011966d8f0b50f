//! Transports: encoders over one [`Cursor`](crate::cursor::Cursor).
//!
//! Each transport parses its subscription (a WebSocket message or query parameters),
//! drives a cursor, paces what it yields and encodes it for its wire. None of them
//! keeps events of its own between frames. `/ws/html`, and SSE and long-poll with
//! `format=html`, encode events as the dashboard's HTML rows.
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

use crate::cursor::{Cursor, CursorError, Step};
use crate::event::{Event, write_payload_array};
use crate::filter::FilterQuery;
use crate::hub::ReadLimit;

/// Spaces frames so that a subscription gets at most `per_sec` a second; what arrives
/// in between is coalesced into the next frame, not dropped.
pub struct Pace {
    interval: Option<Duration>,
    next: Instant,
}

impl Pace {
    /// `per_sec` 0 means no pacing.
    pub fn new(per_sec: u32) -> Self {
        Pace { interval: (per_sec > 0).then(|| Duration::from_secs(1) / per_sec), next: Instant::now() }
    }

    /// Waits until the next frame may go.
    pub async fn ready(&self) {
        if self.interval.is_some() {
            tokio::time::sleep_until(self.next).await;
        }
    }

    /// Records that a frame went now. Spacing from the send time (not the planned
    /// time) keeps any one-second window at or under the limit.
    pub fn sent(&mut self) {
        if let Some(interval) = self.interval {
            self.next = Instant::now() + interval;
        }
    }
}

/// The cursor's next step, paced; never ready without a cursor (no subscription).
pub async fn paced_next(pace: &Pace, cursor: Option<&mut Cursor>, limit: ReadLimit) -> Result<Step, CursorError> {
    let Some(cursor) = cursor else { return std::future::pending().await };
    pace.ready().await;
    cursor.next(limit).await
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

/// The filter and position parameters shared by SSE and long-poll.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    pub types: Option<String>,
    pub task_id: Option<String>,
    pub agent_id: Option<String>,
    pub source: Option<String>,
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

impl StreamParams {
    pub fn filter_query(&self) -> FilterQuery {
        FilterQuery {
            types: self.types.clone(),
            task_id: self.task_id.clone(),
            agent_id: self.agent_id.clone(),
            source: self.source.clone(),
        }
    }
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
