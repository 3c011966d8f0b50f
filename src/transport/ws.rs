//! WebSocket `GET /ws`: JSON frames over one cursor (DESIGN §3).
//!
//! One task per connection runs a `select!` over the client's messages, the cursor and
//! shutdown. It reads the client only between frames it sends, so a client that stops
//! reading holds back its own cursor (a lag, not a buffer) and nobody else.
//!
//! The session is generic over a [`Dialect`]: how client messages are read and frames
//! written. This file's is JSON; `ws_html` renders the same session as HTML fragments,
//! so both WebSockets share one loop, one pacing and one set of limits.

use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use futures_util::SinkExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Pace, Slot, StreamContext, paced_next, ws_events_frame};
use crate::auth::Revocation;
use crate::config::{MAX_CLIENT_ERRORS, MAX_CLIENT_FRAME_BYTES};
use crate::cursor::{Cursor, CursorError, Step};
use crate::event::Event;
use crate::filter::{Filter, FilterSpec};
use crate::metrics::{ConnectionGuard, SubscriberGuard, Transport};
use crate::store::Bounds;

/// The only channel there is.
pub(crate) const CHANNEL: &str = "events";
/// Bytes tungstenite reads from the socket at a time. Small, because an idle
/// subscriber's read buffer is much of what it costs, and because tungstenite
/// zero-fills this much each time the session polls for a client message, which is
/// after every frame it sends: at 4 KiB that `memset` was 4–5 % of the server's CPU in
/// fan-out. Client messages are rare and small; a large one takes a few more reads.
const READ_BUFFER_BYTES: usize = 512;
/// Most bytes of events (by [`Event::weight`]) one `/ws` frame carries, and one read
/// of the cursor takes: a step's events are read a frame at a time, each frame read
/// and built only when the one before it is in tungstenite's buffer. tungstenite
/// copies a whole frame into a buffer of the connection's that never shrinks, and a
/// client that stops reading leaves its last frame there: at the frame limit's 1 MiB,
/// 300 such viewers held 200–546 MiB, and a step read whole before the stall was
/// noticed still cost 370 KiB a viewer. Bounded here and by [`WRITE_BUFFER_BYTES`], a
/// stalled viewer holds under 128 KiB (DESIGN §1: a slow client costs a lagging
/// number, not memory). An event larger than this is a frame of its own.
pub(crate) const FRAME_CHUNK_BYTES: usize = 32 * 1024;
/// Bytes of frames tungstenite holds before it writes to the socket without being
/// asked to flush. A step's frames are fed and flushed once, so a step is one write
/// up to this size and a write every this many bytes beyond it. With frames of at
/// most [`FRAME_CHUNK_BYTES`], the buffer never holds more than the two together
/// (48 KiB), beside the one frame a stalled write waits to buffer. At 32 KiB a
/// stalled `/ws` viewer cost 136–149 KiB of RSS, at 16 KiB 89 KiB; a live viewer's
/// steps are far smaller than either, so its writes are the same.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Keepalive periods of silence (not even a pong) after which a client is idle.
const IDLE_KEEPALIVES: u32 = 3;
/// Keepalive periods one frame may take to be accepted by a client that does not read.
const STALLED_KEEPALIVES: u32 = 4;

/// Close codes (RFC 6455).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_INTERNAL: u16 = 1011;

/// Runs a `/ws` session of JSON frames on `socket` until the client leaves, the
/// server shuts down or `revocation` fires.
///
/// The session's own future rather than an `async fn` awaiting it: an `async fn` keeps
/// its arguments (the socket among them, 500 bytes) in its state for as long as it
/// runs, beside the future it awaits. See [`Session::run`] on the rest of that state.
pub fn serve(ctx: StreamContext, revocation: Revocation, socket: WebSocket) -> impl Future<Output = ()> + Send {
    Session::new(ctx, revocation, socket, Json, None).run()
}

/// The size limits every WebSocket of ours has.
pub fn limits(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.max_message_size(MAX_CLIENT_FRAME_BYTES)
        .max_frame_size(MAX_CLIENT_FRAME_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
}

/// What differs between `/ws` and `/ws/html`: how client messages read and how
/// frames are written. Everything else (the loop, pacing, keep-alive, limits) is the
/// session's.
pub(crate) trait Dialect: Send + 'static {
    /// Most bytes of events (by [`Event::weight`]) one frame carries; see
    /// [`FRAME_CHUNK_BYTES`].
    const CHUNK_BYTES: usize;
    /// The close code sent when the server shuts down.
    const SHUTDOWN_CLOSE: u16;
    /// Which gauge counts the connection.
    const TRANSPORT: Transport;
    /// Parses one client text message; the error is the message for an error frame.
    fn parse(&self, text: &str) -> Result<Request, String>;
    /// Frames for events the cursor yielded, in order. `batch` is whether the
    /// subscription asked for several events in one frame.
    fn events(&self, events: &[Arc<Event>], batch: bool) -> Frames;
    fn reset(&self, oldest: u64) -> Message;
    fn subscribed(&self, bounds: Bounds) -> Message;
    fn unsubscribed(&self) -> Message;
    fn pong(&self) -> Message;
    /// `code` is `bad_request` or `internal`.
    fn error(&self, code: &str, message: &str) -> Message;
}

/// What one paced step sends.
pub(crate) enum Frames {
    One(Message),
    /// A frame per event, for a subscriber that knows only `event` frames: written
    /// together and flushed once, so the step is still one write and one pacing slot.
    Each(Vec<Message>),
}

/// The JSON frames of DESIGN §3.
struct Json;

/// An `event` or `batch` frame as a text message.
fn json_frame(bytes: bytes::Bytes) -> Message {
    // Event JSON is built from `&str`s by serde_json: always UTF-8.
    Message::Text(Utf8Bytes::try_from(bytes).expect("event frames are UTF-8"))
}

impl Dialect for Json {
    const CHUNK_BYTES: usize = FRAME_CHUNK_BYTES;
    const SHUTDOWN_CLOSE: u16 = CLOSE_GOING_AWAY;
    const TRANSPORT: Transport = Transport::Ws;

    fn parse(&self, text: &str) -> Result<Request, String> {
        parse_request(text)
    }

    fn events(&self, events: &[Arc<Event>], batch: bool) -> Frames {
        if batch || events.len() == 1 {
            Frames::One(json_frame(ws_events_frame(events)))
        } else {
            // ADR 022's clients know only `event`; each one's frame is already made.
            Frames::Each(events.iter().map(|e| json_frame(e.frame())).collect())
        }
    }

    fn reset(&self, oldest: u64) -> Message {
        text(&json!({ "type": "reset", "oldest": oldest }))
    }

    fn subscribed(&self, bounds: Bounds) -> Message {
        text(&json!({ "type": "subscribed", "channel": CHANNEL, "head": bounds.head, "oldest": bounds.oldest }))
    }

    fn unsubscribed(&self) -> Message {
        text(&json!({ "type": "unsubscribed", "channel": CHANNEL }))
    }

    fn pong(&self) -> Message {
        text(&json!({ "type": "pong" }))
    }

    fn error(&self, code: &str, message: &str) -> Message {
        text(&json!({ "type": "error", "code": code, "message": message }))
    }
}

/// A message from the client, parsed.
#[derive(Debug)]
pub enum Request {
    /// `batch`: the client reads `batch` frames (DESIGN §3: opt-in).
    Subscribe {
        since: Option<u64>,
        filter: Filter,
        batch: bool,
    },
    Unsubscribe,
    Ping,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody {
    channel: String,
    since: Option<u64>,
    #[serde(default)]
    filter: FilterSpec,
    #[serde(default)]
    batch: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody {
    channel: String,
}

/// Parses one client text message; the error is the message for the `error` frame.
pub(crate) fn parse_request(text: &str) -> Result<Request, String> {
    let mut map: Map<String, Value> = serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let action = match map.remove("action") {
        Some(Value::String(a)) => a,
        Some(_) => return Err("action must be a string".into()),
        None => return Err("missing action; expected subscribe, unsubscribe or ping".into()),
    };
    let body = Value::Object(map);
    let channel_ok = |channel: &str| {
        if channel == CHANNEL {
            Ok(())
        } else {
            Err(format!("unknown channel {channel:?}; the only channel is \"{CHANNEL}\""))
        }
    };
    match action.as_str() {
        "subscribe" => {
            let b: SubscribeBody = serde_json::from_value(body).map_err(|e| format!("subscribe: {e}"))?;
            channel_ok(&b.channel)?;
            let filter = Filter::from_spec(b.filter).map_err(|e| format!("filter.{e}"))?;
            Ok(Request::Subscribe { since: b.since, filter, batch: b.batch })
        }
        "unsubscribe" => {
            let b: UnsubscribeBody = serde_json::from_value(body).map_err(|e| format!("unsubscribe: {e}"))?;
            channel_ok(&b.channel)?;
            Ok(Request::Unsubscribe)
        }
        "ping" => Ok(Request::Ping),
        other => Err(format!("unknown action {other:?}; expected subscribe, unsubscribe or ping")),
    }
}

fn text(value: &Value) -> Message {
    Message::Text(Utf8Bytes::from(value.to_string()))
}

/// How a session ended, for the log.
#[derive(Debug)]
enum End {
    ClientClosed,
    Shutdown,
    /// Nothing heard from the client, not even a pong, for [`IDLE_KEEPALIVES`] pings.
    Idle,
    Policy(&'static str),
    SendFailed,
    Cursor,
}

/// One connection: its socket, its subscription (a cursor, or none) and its pacing.
pub(crate) struct Session<D> {
    ctx: StreamContext,
    /// The token (and browser session) that opened the socket; the session ends when
    /// it is revoked.
    revocation: Revocation,
    /// Counts this socket in the connection gauge while it lives.
    _connection: ConnectionGuard,
    /// The server's shutdown token's child: cancelled with it, but waited on through
    /// a `Notify` of this session's own.
    shutdown: CancellationToken,
    /// Counts the subscription in the subscriber gauge while there is one.
    subscribed: Option<SubscriberGuard>,
    /// Last time anything (a message, a pong) came from the client.
    last_heard: Instant,
    socket: WebSocket,
    cursor: Option<Cursor>,
    pace: Pace,
    /// The subscription reads `batch` frames.
    batch: bool,
    errors: u32,
    dialect: D,
    /// A subscription made at connect time (from the URL), announced when the session
    /// starts: `since`, filter and whether it reads `batch` frames.
    initial: Option<(Option<u64>, Filter, bool)>,
}

impl<D: Dialect> Session<D> {
    /// A session; with `initial`, subscribed from the start as if the client had sent
    /// `subscribe` with that `since` and filter.
    pub(crate) fn new(
        ctx: StreamContext,
        revocation: Revocation,
        socket: WebSocket,
        dialect: D,
        initial: Option<(Option<u64>, Filter, bool)>,
    ) -> Self {
        let pace = ctx.pace();
        let _connection = ctx.metrics.connection(D::TRANSPORT);
        let shutdown = ctx.shutdown.child_token();
        Session {
            revocation,
            ctx,
            _connection,
            shutdown,
            subscribed: None,
            last_heard: Instant::now(),
            socket,
            cursor: None,
            pace,
            batch: false,
            errors: 0,
            dialect,
            initial,
        }
    }

    /// Runs the session until it ends, then sends the close frame its end calls for.
    ///
    /// Every connection's task holds this future for its whole life, and a future is as
    /// large as its largest state, so the rare states (a client message being handled,
    /// a reply, a ping, the closing frame) are boxed: allocated while they run, not
    /// reserved in every connection. With `serve` returning this future, that took an
    /// idle connection (`swarmfeed-bench idle-memory`, 10 000) from 8.1–8.2 KiB to
    /// 7.0–7.1 KiB. Boxing the step being sent as well made 6.2–6.4 KiB, but its
    /// allocation a step let the server's RSS swing by up to 21 MiB under a fast reader
    /// (`durability::a_client_that_does_not_read_lags_on_its_cursor_…`, 0–7 MiB
    /// without), so the step stays inline.
    pub(crate) async fn run(mut self) {
        let subscribed = match self.initial.take() {
            Some((since, filter, batch)) => {
                let reply = self.subscribe(since, filter, batch);
                Box::pin(self.send(reply)).await
            }
            None => true,
        };
        let end = if subscribed { self.serve().await } else { End::SendFailed };
        let close = match &end {
            End::Shutdown => Some((D::SHUTDOWN_CLOSE, "server shutting down")),
            End::Idle => Some((CLOSE_GOING_AWAY, "idle timeout")),
            End::Policy(reason) => Some((CLOSE_POLICY, *reason)),
            End::Cursor => Some((CLOSE_INTERNAL, "internal error")),
            End::ClientClosed | End::SendFailed => None,
        };
        if let Some((code, reason)) = close {
            let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
            // Best effort, and bounded: a peer that reads nothing cannot hold shutdown up.
            let close = self.socket.send(Message::Close(Some(frame)));
            let _ = Box::pin(tokio::time::timeout(std::time::Duration::from_secs(1), close)).await;
        }
        tracing::debug!(?end, "websocket session ended");
    }

    async fn serve(&mut self) -> End {
        let limit = self.ctx.frame_limit;
        let mut keepalive = tokio::time::interval(self.ctx.keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // `select!` polls every branch each time the task wakes, which at 10 000
        // subscribers is once per event each. Made afresh in the loop, these two would
        // register with a `Notify` shared by all sessions and leave it again at every
        // pass, each time under its lock; made once, they stay registered, and the
        // shutdown one waits on this session's own child token. Together with the send
        // below, that took p99 at 10 000 subscribers from about 300 to about 225 ms.
        let cancelled = self.shutdown.clone().cancelled_owned();
        tokio::pin!(cancelled);
        // Made once, like the two above, on a handle of its own: `self.revocation`
        // stays free for the look before each frame.
        let mut watch = self.revocation.clone();
        let revoked = watch.revoked();
        tokio::pin!(revoked);
        loop {
            // A step's first chunk; `send_events` reads the rest while the client keeps up.
            let chunk = Slot::first(limit, D::CHUNK_BYTES);
            tokio::select! {
                biased;
                () = &mut cancelled => return End::Shutdown,
                () = &mut revoked => return End::Policy("token revoked"),
                incoming = self.socket.recv() => {
                    if let Some(end) = Box::pin(self.on_incoming(incoming)).await {
                        return end;
                    }
                }
                step = paced_next(&self.pace, self.cursor.as_mut(), chunk) => {
                    // The step may have read events while the token was being revoked.
                    if self.revocation.is_revoked() {
                        return End::Policy("token revoked");
                    }
                    let sent = match step {
                        Ok(Step::Events(events)) => self.send_events(events).await,
                        Ok(Step::Reset { oldest }) => {
                            let frame = self.dialect.reset(oldest);
                            Ok(Box::pin(self.send(frame)).await)
                        }
                        Err(e) => Err(e),
                    };
                    let sent = match sent {
                        Ok(sent) => sent,
                        Err(CursorError::Closed) => return End::Shutdown,
                        Err(CursorError::Store(e)) => {
                            tracing::error!(error = %e, "websocket cursor failed to read the store");
                            let frame = self.dialect.error("internal", "internal error");
                            // The session ends either way; the frame is a courtesy.
                            let _ = Box::pin(self.send(frame)).await;
                            return End::Cursor;
                        }
                    };
                    if !sent {
                        return End::SendFailed;
                    }
                    self.pace.sent();
                }
                _ = keepalive.tick() => {
                    if self.last_heard.elapsed() > self.ctx.keepalive * IDLE_KEEPALIVES {
                        return End::Idle;
                    }
                    if !Box::pin(self.send(Message::Ping(bytes::Bytes::new()))).await {
                        return End::SendFailed;
                    }
                }
            }
        }
    }

    /// Handles one thing read from the client; `Some` ends the session.
    async fn on_incoming(&mut self, incoming: Option<Result<Message, axum::Error>>) -> Option<End> {
        if matches!(incoming, Some(Ok(_))) {
            self.last_heard = Instant::now();
        }
        let message = match incoming {
            None | Some(Ok(Message::Close(_))) => return Some(End::ClientClosed),
            Some(Err(e)) => {
                // An over-size message is a capacity error; anything else is a broken
                // connection.
                let oversize = e
                    .into_inner()
                    .downcast::<tungstenite::Error>()
                    .is_ok_and(|e| matches!(*e, tungstenite::Error::Capacity(_)));
                return Some(if oversize { End::Policy("message too large") } else { End::ClientClosed });
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return None,
            Some(Ok(Message::Binary(_))) => Err("binary frames are not supported; send JSON text".to_owned()),
            Some(Ok(Message::Text(t))) => self.dialect.parse(&t),
        };
        let reply = match message {
            Ok(Request::Ping) => self.dialect.pong(),
            Ok(Request::Unsubscribe) => {
                self.cursor = None;
                self.subscribed = None;
                self.dialect.unsubscribed()
            }
            Ok(Request::Subscribe { since, filter, batch }) => self.subscribe(since, filter, batch),
            Err(message) => {
                self.errors += 1;
                if self.errors >= MAX_CLIENT_ERRORS {
                    let frame = self.dialect.error("bad_request", &message);
                    // The socket is closed next either way.
                    let _ = self.send(frame).await;
                    return Some(End::Policy("too many bad messages"));
                }
                self.dialect.error("bad_request", &message)
            }
        };
        if self.send(reply).await { None } else { Some(End::SendFailed) }
    }

    /// Replaces the subscription; returns the `subscribed` frame to send.
    fn subscribe(&mut self, since: Option<u64>, filter: Filter, batch: bool) -> Message {
        let cursor = self.ctx.cursor(filter, since);
        let bounds = self.ctx.hub.bounds();
        self.cursor = Some(cursor);
        self.batch = batch;
        self.subscribed.get_or_insert_with(|| self.ctx.metrics.subscriber());
        self.dialect.subscribed(bounds)
    }

    /// Sends one message unless shutdown comes first; false when the connection is done.
    /// A client that reads nothing for [`STALLED_KEEPALIVES`] keepalive periods is let
    /// go: it can resume with `since`, and its socket buffers are freed.
    async fn send(&mut self, message: Message) -> bool {
        let stalled = self.ctx.keepalive * STALLED_KEEPALIVES;
        tokio::select! {
            // Biased, send first: a send that completes at once (nearly all of them)
            // never polls, so never registers, the shutdown future.
            biased;
            r = tokio::time::timeout(stalled, self.socket.send(message)) => matches!(r, Ok(Ok(()))),
            () = self.shutdown.cancelled() => false,
            // A client that reads nothing does not keep a revoked token's socket for
            // the stalled timeout. Made only if the send has to wait.
            () = async { self.revocation.clone().revoked().await } => false,
        }
    }

    /// Sends a step: its first chunk of `events`, then, while each frame is buffered at
    /// once, the step's next chunks (up to the frame limit and the head it began at,
    /// see [`Slot`]), each read when the frame before it is in tungstenite's buffer;
    /// then flushes once. A frame that cannot be buffered at once (the client is not
    /// keeping up) ends the step once it is: what a stalled client holds is that one
    /// frame and tungstenite's buffer, never the rest of its step, which the cursor
    /// has not read. `Ok(false)` when the connection is done, as [`Session::send`].
    ///
    /// # Errors
    /// Reading a later chunk failed.
    async fn send_events(&mut self, events: Vec<Arc<Event>>) -> Result<bool, CursorError> {
        let stalled = self.ctx.keepalive * STALLED_KEEPALIVES;
        let upto = self.ctx.hub.head();
        let limit = self.ctx.frame_limit;
        let (socket, dialect, batch, metrics, revocation) =
            (&mut self.socket, &self.dialect, self.batch, &self.ctx.metrics, &self.revocation);
        let Some(cursor) = self.cursor.as_mut() else { return Ok(true) };
        let write = async {
            let mut slot = Slot::after(limit, upto, cursor, &events);
            let mut events = events;
            loop {
                metrics.delivered(&events, cursor.lag());
                let frames = dialect.events(&events, batch);
                drop(events);
                let waited = {
                    let mut feed = std::pin::pin!(feed_all(socket, frames));
                    if let Poll::Ready(fed) = futures_util::poll!(feed.as_mut()) {
                        fed.map_err(|_| Failed::Send)?;
                        false
                    } else {
                        feed.await.map_err(|_| Failed::Send)?;
                        true
                    }
                };
                if waited {
                    break;
                }
                // Nothing is sent once the token is known revoked; the session's
                // `select!` ends it next.
                let Some(rest) = slot.filter(|_| !revocation.is_revoked()) else { break };
                match rest.next(cursor, D::CHUNK_BYTES).await.map_err(Failed::Cursor)? {
                    Step::Events(next) if next.is_empty() => break,
                    Step::Events(next) => {
                        slot = rest.spend(cursor, &next);
                        events = next;
                    }
                    Step::Reset { oldest } => {
                        socket.feed(dialect.reset(oldest)).await.map_err(|_| Failed::Send)?;
                        break;
                    }
                }
            }
            socket.flush().await.map_err(|_| Failed::Send)
        };
        tokio::select! {
            biased;
            r = tokio::time::timeout(stalled, write) => match r {
                Ok(Ok(())) => Ok(true),
                Ok(Err(Failed::Cursor(e))) => Err(e),
                Ok(Err(Failed::Send)) | Err(_) => Ok(false),
            },
            () = self.shutdown.cancelled() => Ok(false),
            // As in `send`: made only if the write has to wait.
            () = async { revocation.clone().revoked().await } => Ok(false),
        }
    }
}

/// Why a step's write stopped short.
enum Failed {
    Send,
    Cursor(CursorError),
}

/// Buffers `frames` in tungstenite, which writes to the socket past
/// [`WRITE_BUFFER_BYTES`].
async fn feed_all(socket: &mut WebSocket, frames: Frames) -> Result<(), axum::Error> {
    match frames {
        Frames::One(frame) => socket.feed(frame).await,
        Frames::Each(frames) => {
            for frame in frames {
                socket.feed(frame).await?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_or_say_what_is_wrong() {
        assert!(matches!(parse_request(r#"{"action":"ping"}"#), Ok(Request::Ping)));
        assert!(matches!(
            parse_request(r#"{"action":"subscribe","channel":"events","since":5,"filter":{"types":["task.*"]}}"#),
            Ok(Request::Subscribe { since: Some(5), batch: false, .. })
        ));
        assert!(matches!(
            parse_request(r#"{"action":"subscribe","channel":"events","batch":true}"#),
            Ok(Request::Subscribe { since: None, batch: true, .. })
        ));
        assert!(matches!(parse_request(r#"{"action":"unsubscribe","channel":"events"}"#), Ok(Request::Unsubscribe)));
        for (bad, says) in [
            ("nope", "not a JSON object"),
            (r#"{"action":"dance"}"#, "unknown action"),
            (r#"{"channel":"events"}"#, "missing action"),
            (r#"{"action":"subscribe","channel":"other"}"#, "unknown channel"),
            (r#"{"action":"subscribe","channel":"events","filter":{"types":["Bad"]}}"#, "filter.types"),
            (r#"{"action":"subscribe","channel":"events","sinse":3}"#, "unknown field"),
            (r#"{"action":"subscribe","channel":"events","since":-1}"#, "subscribe"),
            (r#"{"action":"subscribe","channel":"events","batch":"yes"}"#, "subscribe"),
        ] {
            let err = parse_request(bad).err().unwrap_or_else(|| panic!("{bad} parsed"));
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn several_events_are_one_batch_frame_only_for_a_subscription_that_asked() {
        let e = |seq| crate::hub::tests::event(seq, "a.b");
        let json = |m: &Message| -> Value {
            let Message::Text(t) = m else { panic!("not text: {m:?}") };
            serde_json::from_str(t).unwrap()
        };
        let events = [e(1), e(2), e(3)];
        let Frames::One(batch) = Json.events(&events, true) else { panic!("one frame when asked") };
        assert_eq!(json(&batch)["type"], "batch");
        let Frames::Each(each) = Json.events(&events, false) else { panic!("a frame per event otherwise") };
        let each: Vec<Value> = each.iter().map(json).collect();
        assert!(each.iter().all(|f| f["type"] == "event"), "{each:?}");
        assert_eq!(each.iter().map(|f| f["payload"]["seq"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
        let Frames::One(single) = Json.events(&events[..1], false) else { panic!("one event is one frame") };
        assert_eq!(json(&single)["type"], "event");
    }
}
