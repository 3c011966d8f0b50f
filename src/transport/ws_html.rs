//! WebSocket `GET /ws/html` (DESIGN §3): the `/ws` session (one cursor, the same
//! pacing and limits) with frames rendered as HTML fragments for htmx's ws extension.
//!
//! The subscription comes from the URL (`?since=…&types=…&task_id=…`), so opening the
//! socket is subscribing; a client may re-subscribe or unsubscribe with a message,
//! either the `/ws` JSON or what htmx's `ws-send` sends (a form's fields as strings,
//! plus `HEADERS`). Every frame is top-level elements with `hx-swap-oob`: events are
//! appended to `#feed-incoming` (the page's script moves them into the feed, so it
//! can pause and de-duplicate); status, reset and errors replace `#feed-notice`.
//! Rows come from [`crate::view::event`], which escapes every field.

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use maud::html;
use serde_json::{Map, Value};

use super::StreamContext;
use super::ws::{CHANNEL, Dialect, Frames, Request, Session};
use crate::auth::Revocation;
use crate::event::Event;
use crate::filter::{Filter, FilterSpec, split_types};
use crate::metrics::Transport;
use crate::store::Bounds;
use crate::view::event::{Detail, rows};

/// Close code on shutdown: 1012 "service restart", one of the codes after which
/// htmx's ws extension reconnects by itself (it does not after 1001).
const CLOSE_SERVICE_RESTART: u16 = 1012;

/// Runs a `/ws/html` session on `socket`, subscribed from the start after `since`
/// with `filter` (the subscription in the URL, validated before the upgrade).
///
/// The session's own future, as [`super::ws::serve`] returns it, for its reason.
pub fn serve(
    ctx: StreamContext,
    revocation: Revocation,
    socket: WebSocket,
    since: Option<u64>,
    filter: Filter,
) -> impl Future<Output = ()> + Send {
    // One fragment carries any number of rows: `batch` makes no difference here.
    Session::new(ctx, revocation, socket, Html, Some((since, filter, true))).run()
}

/// HTML fragments for htmx.
struct Html;

fn fragment(markup: maud::Markup) -> Message {
    Message::Text(Utf8Bytes::from(markup.into_string()))
}

/// What `#feed-notice` says: how the page learns about its subscription.
#[derive(Default)]
struct Notice<'a> {
    state: &'a str,
    head: Option<u64>,
    oldest: Option<u64>,
    code: Option<&'a str>,
    message: Option<&'a str>,
}

fn notice(n: &Notice<'_>) -> Message {
    fragment(html! {
        div #feed-notice hx-swap-oob="true" hidden data-state=(n.state)
            data-head=[n.head] data-oldest=[n.oldest] data-code=[n.code] {
            @if let Some(m) = n.message { (m) }
        }
    })
}

impl Dialect for Html {
    /// A quarter of `/ws`'s: a row is its event's display text, escaped, in markup,
    /// which can be several times the event's JSON.
    const CHUNK_BYTES: usize = super::ws::FRAME_CHUNK_BYTES / 4;
    const SHUTDOWN_CLOSE: u16 = CLOSE_SERVICE_RESTART;
    const TRANSPORT: Transport = Transport::WsHtml;

    fn parse(&self, text: &str) -> Result<Request, String> {
        parse_htmx(text)
    }

    fn events(&self, events: &[Arc<Event>], _batch: bool) -> Frames {
        Frames::One(fragment(html! {
            ol #feed-incoming hx-swap-oob="beforeend" { (rows(events, Detail::Compact)) }
        }))
    }

    fn reset(&self, oldest: u64) -> Message {
        notice(&Notice { state: "reset", oldest: Some(oldest), ..Notice::default() })
    }

    fn subscribed(&self, bounds: Bounds) -> Message {
        notice(&Notice {
            state: "subscribed",
            head: Some(bounds.head),
            oldest: Some(bounds.oldest),
            ..Notice::default()
        })
    }

    fn unsubscribed(&self) -> Message {
        notice(&Notice { state: "unsubscribed", ..Notice::default() })
    }

    fn pong(&self) -> Message {
        notice(&Notice { state: "pong", ..Notice::default() })
    }

    fn error(&self, code: &str, message: &str) -> Message {
        notice(&Notice { state: "error", code: Some(code), message: Some(message), ..Notice::default() })
    }
}

/// A string field of an htmx message; form fields arrive as strings, and an empty one
/// means "not given".
fn field(map: &mut Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// Parses the `/ws` JSON messages and htmx's `ws-send` shape: `action` defaults to
/// `subscribe`; `since` may be a number or a numeric string; the filter is a `filter`
/// object or flat fields, `types` comma-separated or an array.
fn parse_htmx(text: &str) -> Result<Request, String> {
    let mut map: Map<String, Value> = serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    map.remove("HEADERS");
    let action = field(&mut map, "action")?.unwrap_or_else(|| "subscribe".to_owned());
    if let Some(channel) = field(&mut map, "channel")?
        && channel != CHANNEL
    {
        return Err(format!("unknown channel {channel:?}; the only channel is \"{CHANNEL}\""));
    }
    match action.as_str() {
        "ping" => return Ok(Request::Ping),
        "unsubscribe" => return Ok(Request::Unsubscribe),
        "subscribe" => {}
        other => return Err(format!("unknown action {other:?}; expected subscribe, unsubscribe or ping")),
    }
    // `/ws`'s opt-in to `batch` frames: every frame here holds any number of rows.
    if let Some(batch) = map.remove("batch")
        && !batch.is_boolean()
    {
        return Err("batch must be true or false".to_owned());
    }
    let since = field(&mut map, "since")?
        .map(|s| s.parse::<u64>().map_err(|_| format!("since must be a seq, not {s:?}")))
        .transpose()?;
    let filter = if let Some(spec) = map.remove("filter") {
        let spec: FilterSpec = serde_json::from_value(spec).map_err(|e| format!("filter: {e}"))?;
        Filter::from_spec(spec)
    } else {
        let types = match map.remove("types") {
            Some(Value::Array(list)) => list
                .iter()
                .map(|t| t.as_str().map(split_types).ok_or("types must hold strings"))
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            Some(other) => {
                map.insert("types".into(), other);
                field(&mut map, "types")?.as_deref().map(split_types).unwrap_or_default()
            }
            None => Vec::new(),
        };
        Filter::from_spec(FilterSpec {
            types,
            task_id: field(&mut map, "task_id")?,
            agent_id: field(&mut map, "agent_id")?,
            source: field(&mut map, "source")?,
        })
    }
    .map_err(|e| format!("filter.{e}"))?;
    if let Some(unknown) = map.keys().next() {
        return Err(format!("unknown field {unknown:?}"));
    }
    Ok(Request::Subscribe { since, filter, batch: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;

    #[test]
    fn htmx_form_messages_and_ws_json_both_subscribe() {
        let htmx = r#"{"since":"12","types":"task.*,bid.submitted","task_id":"","HEADERS":{"HX-Request":"true"}}"#;
        let Ok(Request::Subscribe { since, filter, .. }) = parse_htmx(htmx) else { panic!("htmx message refused") };
        assert_eq!(since, Some(12));
        assert_eq!(filter.type_patterns().len(), 2);
        assert_eq!(filter.task_id(), None);
        let json = r#"{"action":"subscribe","channel":"events","since":3,"filter":{"types":["task.*"]},"batch":true}"#;
        assert!(matches!(parse_htmx(json), Ok(Request::Subscribe { since: Some(3), .. })));
        assert!(matches!(parse_htmx(r#"{"action":"ping"}"#), Ok(Request::Ping)));
        assert!(matches!(parse_htmx(r#"{"action":"unsubscribe"}"#), Ok(Request::Unsubscribe)));
    }

    #[test]
    fn bad_htmx_messages_say_what_is_wrong() {
        for (bad, says) in [
            ("nope", "not a JSON object"),
            (r#"{"since":"x"}"#, "since must be a seq"),
            (r#"{"types":"Bad"}"#, "filter.types"),
            (r#"{"channel":"other"}"#, "unknown channel"),
            (r#"{"action":"dance"}"#, "unknown action"),
            (r#"{"sinse":"3"}"#, "unknown field"),
            (r#"{"batch":"yes"}"#, "batch must be true or false"),
        ] {
            let Err(err) = parse_htmx(bad) else { panic!("{bad} parsed") };
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn event_frames_are_escaped_out_of_band_appends() {
        let e = Event::encode(EventParts {
            seq: 4,
            id: "i",
            event_type: "system.error",
            source: "s",
            task_id: None,
            agent_id: None,
            ts_ms: 0,
            data: r#"{"message":"<script>alert(1)</script>"}"#,
        })
        .unwrap();
        let Frames::One(Message::Text(t)) = Html.events(&[Arc::new(e)], true) else { panic!("not one text frame") };
        assert!(t.starts_with(r#"<ol id="feed-incoming" hx-swap-oob="beforeend">"#), "{t}");
        assert!(t.contains("&lt;script&gt;") && !t.contains("<script"), "{t}");
        let Message::Text(t) = Html.error("bad_request", "<b>") else { panic!("not text") };
        assert!(t.contains("&lt;b&gt;") && t.contains(r#"data-state="error""#), "{t}");
    }
}
