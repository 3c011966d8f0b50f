//! Long-poll `GET /api/events/poll?after=SEQ&wait=25` (DESIGN §3): for clients that can
//! hold neither a WebSocket nor an event stream.
//!
//! Answers at once when matching events after `after` exist, else waits up to `wait`.
//! With `format=html` the answer is `{"html","next","head"}`, the events as the
//! dashboard's rows. `next` is where to continue: it can be past the last event
//! returned when the cursor skipped events that do not match.
//!
//! A poll waits on its token's revocation too: revoked while it waits, or before it
//! answers, it answers [`PollError::Revoked`] and no event, whatever its cursor had
//! read.

use std::time::Duration;

use super::{Format, StreamContext};
use crate::auth::Revocation;
use crate::cursor::{CursorError, Step};
use crate::event::events_object;
use crate::filter::Filter;
use crate::metrics::Transport;
use crate::store::StoreError;

/// Longest wait a client may ask for, seconds (DESIGN §3).
pub(crate) const MAX_WAIT_SECS: u64 = 60;
/// The wait when the client names none, seconds.
pub(crate) const DEFAULT_WAIT_SECS: u64 = 25;

/// One poll, validated.
#[derive(Debug)]
pub struct PollRequest {
    pub filter: Filter,
    /// Return events after this seq; `None` is the head.
    pub after: Option<u64>,
    /// How long to wait for one, at most [`MAX_WAIT_SECS`].
    pub wait: Duration,
    pub format: Format,
}

/// Why a poll has no answer.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("the token was revoked while this poll waited; no events were returned")]
    Revoked,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Waits for events after `request.after` and answers with the poll's JSON body:
/// `{"events":[…],"next":…,"head":…}` (with `"reset":true,"oldest":…` when `after` was
/// older than the oldest event kept), or `{"html":…,"next":…,"head":…}` with
/// `format=html`.
///
/// # Errors
/// [`PollError::Revoked`] when `revocation` fires before the answer is made;
/// [`PollError::Store`] when the cursor could not read the store.
pub async fn answer(
    ctx: &StreamContext,
    mut revocation: Revocation,
    request: PollRequest,
) -> Result<Vec<u8>, PollError> {
    let _connection = ctx.metrics.connection(Transport::Poll);
    let mut cursor = ctx.cursor(request.filter, request.after);
    let step = tokio::select! {
        biased;
        () = ctx.shutdown.cancelled() => None,
        () = revocation.revoked() => return Err(PollError::Revoked),
        r = tokio::time::timeout(request.wait, cursor.next(ctx.frame_limit)) => r.ok(),
    };
    // The cursor may have read events while the token was being revoked.
    if revocation.is_revoked() {
        return Err(PollError::Revoked);
    }
    let head = ctx.hub.head();
    let next = cursor.position();
    Ok(match step {
        Some(Ok(Step::Events(events))) if request.format == Format::Html => {
            let html = crate::view::event::rows(&events, crate::view::event::Detail::Compact).into_string();
            serde_json::json!({ "html": html, "next": next, "head": head }).to_string().into_bytes()
        }
        Some(Ok(Step::Events(events))) => {
            ctx.metrics.delivered(&events, cursor.lag());
            events_object(&events, &[("next", Some(next)), ("head", Some(head))])
        }
        Some(Ok(Step::Reset { oldest })) => {
            format!(r#"{{"events":[],"next":{next},"head":{head},"reset":true,"oldest":{oldest}}}"#).into_bytes()
        }
        None | Some(Err(CursorError::Closed)) => events_object(&[], &[("next", Some(next)), ("head", Some(head))]),
        Some(Err(CursorError::Store(e))) => return Err(e.into()),
    })
}
