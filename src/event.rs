//! The event: the one record swarmfeed stores and streams.
//!
//! Owns the field limits of DESIGN §2, the known-type table (icon, label, display
//! template) that every view reads, the shape of a committed [`Event`] as it is held in
//! the ring, and its one JSON encoding. It does not parse request bodies (`ingest`) or
//! talk to storage (`store`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Longest producer id, in characters.
pub(crate) const MAX_ID_CHARS: usize = 128;
/// Longest event type, in characters.
pub(crate) const MAX_TYPE_CHARS: usize = 64;
/// Longest `source`, `task_id` or `agent_id`, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 128;

/// Whether `c` may appear in an identifier (`id`, `event_type`, `source`, `task_id`,
/// `agent_id`, and the coordinator's ids and names). Control characters and format
/// characters (Unicode category Cf: bidi overrides such as U+202E, zero-width spaces
/// such as U+200B, isolates such as U+2066) are refused: they are invisible, so two
/// ids that look alike could differ, and a bidi override makes a name display as
/// another in every view and terminal.
pub(crate) fn is_identifier_char(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    // No ASCII character is a format character: the table lookup is for the rest.
    if c.is_ascii() {
        return !c.is_ascii_control();
    }
    !c.is_control() && c.general_category() != GeneralCategory::Format
}

/// One row of the known-type table of DESIGN §2.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct KnownType {
    /// The event type, e.g. `task.assigned`.
    pub event_type: &'static str,
    /// The icon every view shows beside it.
    pub icon: &'static str,
    /// A short label for filter chips and legends.
    pub label: &'static str,
    /// The display text; `{name}` is replaced by that key of the event's `data` (or by
    /// `agent_id` for `{agent}`), see [`render_display`].
    pub display: &'static str,
}

/// The one table of known types. Every view, the API (`GET /api/event-types`) and the
/// terminal client read it from here; nothing copies it.
pub(crate) const KNOWN_TYPES: &[KnownType] = &[
    KnownType { event_type: "task.created", icon: "📝", label: "Task created", display: "New task: {description}" },
    KnownType { event_type: "task.bidding", icon: "⏳", label: "Bidding open", display: "Bidding open" },
    KnownType {
        event_type: "task.assigned",
        icon: "👤",
        label: "Task assigned",
        display: "Task assigned to {agent} ({bid_sats} sats)",
    },
    KnownType { event_type: "task.started", icon: "▶️", label: "Task started", display: "Task started" },
    KnownType { event_type: "task.completed", icon: "✅", label: "Task completed", display: "Task completed" },
    KnownType { event_type: "task.failed", icon: "❌", label: "Task failed", display: "Task failed: {reason}" },
    KnownType {
        event_type: "task.cancelled",
        icon: "🚫",
        label: "Task cancelled",
        display: "Task cancelled: {reason}",
    },
    KnownType { event_type: "agent.joined", icon: "🟢", label: "Agent joined", display: "Agent {name} joined" },
    KnownType { event_type: "agent.left", icon: "🔴", label: "Agent left", display: "Agent {name} left" },
    KnownType {
        event_type: "agent.status_changed", icon: "🔄", label: "Agent status", display: "{name} is {status}"
    },
    KnownType { event_type: "bid.submitted", icon: "💰", label: "Bid", display: "Bid: {bid_sats} sats from {agent}" },
    KnownType { event_type: "auction.closed", icon: "🏁", label: "Auction closed", display: "Auction closed" },
    KnownType { event_type: "tool.called", icon: "🔧", label: "Tool called", display: "Tool: {tool_name}" },
    KnownType { event_type: "tool.completed", icon: "⚙️", label: "Tool completed", display: "Tool: {tool_name}" },
    KnownType { event_type: "tool.failed", icon: "💥", label: "Tool failed", display: "Tool: {tool_name}" },
    KnownType { event_type: "system.error", icon: "⚠️", label: "Error", display: "{message}" },
    KnownType { event_type: "system.warning", icon: "🔶", label: "Warning", display: "{message}" },
    KnownType { event_type: "system.info", icon: "ℹ️", label: "Info", display: "{message}" },
    KnownType { event_type: "alert.firing", icon: "🚨", label: "Alert firing", display: "Alert: {name}" },
    KnownType { event_type: "alert.resolved", icon: "🔕", label: "Alert resolved", display: "Resolved: {name}" },
    // An OpenTelemetry span that is not a tool call (`otlp`, DESIGN §12).
    KnownType { event_type: "otel.span", icon: "🔭", label: "Span", display: "Span: {name}" },
];

/// The icon shown for a type that is not in [`KNOWN_TYPES`].
pub(crate) const UNKNOWN_ICON: &str = "•";

/// The known-type row for `event_type`, if it has one.
pub(crate) fn known_type(event_type: &str) -> Option<&'static KnownType> {
    KNOWN_TYPES.iter().find(|k| k.event_type == event_type)
}

/// Fills a display template from an event's data: `{key}` becomes the value of `key`
/// (strings bare, other JSON as written), `{agent}` falls back to the event's
/// `agent_id`; a placeholder with nothing to fill it is left empty. Unknown types
/// display as their type name.
pub(crate) fn render_display(
    event_type: &str,
    agent_id: Option<&str>,
    data: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let Some(known) = known_type(event_type) else {
        return event_type.to_owned();
    };
    let mut out = String::with_capacity(known.display.len() + 16);
    let mut rest = known.display;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let key = &after[..close];
        match data.get(key) {
            Some(serde_json::Value::String(s)) => out.push_str(s),
            Some(serde_json::Value::Null) | None => {
                if key == "agent" {
                    let named = data.get("agent_name").and_then(|v| v.as_str());
                    out.push_str(named.or(agent_id).unwrap_or(""));
                }
            }
            Some(other) => out.push_str(&other.to_string()),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether `s` has the event-type shape `^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`.
/// Hand-written because it runs once per ingested event.
pub(crate) fn is_valid_event_type(s: &str) -> bool {
    is_dotted_name(s, 2)
}

/// Whether `s` is `min_segments` or more dot-separated segments of `[a-z][a-z0-9_]*`.
pub(crate) fn is_dotted_name(s: &str, min_segments: usize) -> bool {
    let mut segments = 0;
    for segment in s.split('.') {
        let mut bytes = segment.bytes();
        match bytes.next() {
            Some(b'a'..=b'z') => {}
            _ => return false,
        }
        if !bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_')) {
            return false;
        }
        segments += 1;
    }
    segments >= min_segments
}

/// An event that passed validation and redaction and waits to be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The producer's idempotency key, or a UUIDv7 made at ingest.
    pub id: String,
    pub event_type: String,
    pub source: String,
    pub task_id: Option<String>,
    pub agent_id: Option<String>,
    /// The redacted `data` object, compact JSON; `{}` when the producer sent none.
    pub data: String,
}

impl NewEvent {
    /// Its fields as the event it becomes when committed as `seq` at `ts_ms`.
    pub fn parts(&self, seq: u64, ts_ms: i64) -> EventParts<'_> {
        EventParts {
            seq,
            id: &self.id,
            event_type: &self.event_type,
            source: &self.source,
            task_id: self.task_id.as_deref(),
            agent_id: self.agent_id.as_deref(),
            ts_ms,
            data: &self.data,
        }
    }
}

/// A committed event as every viewer receives it.
///
/// The JSON is made once, at commit (or when read back from the store), and shared by
/// every subscriber as [`Bytes`]: fan-out to N viewers costs N reference counts, not N
/// serialisations. It is stored as a complete WebSocket `event` frame so that the
/// common case, one event in a frame, is sent without copying; the bare payload is a
/// zero-copy slice of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub event_type: Box<str>,
    pub source: Box<str>,
    pub task_id: Option<Box<str>>,
    pub agent_id: Option<Box<str>>,
    /// Commit time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Position of the type in [`KNOWN_TYPES`], found once here so per-delivery code
    /// (metrics, rendering) never searches the table.
    known: Option<u8>,
    frame: Bytes,
}

const FRAME_PREFIX: &str = r#"{"type":"event","payload":"#;
const FRAME_SUFFIX: &str = "}";

// The one declaration of the event's JSON shape: the OpenAPI document describes this
// type (as `EventOut`) and `tail` reads events into it. The encoder (`Event::encode`)
// writes the same object by hand, because it is the hot path, and is tested to write
// exactly what serialising this writes.
/// An event as every viewer receives it (DESIGN §2, §3).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = EventOut)]
pub(crate) struct EventPayload {
    /// Gapless, increasing position in the log.
    pub seq: u64,
    /// The producer's idempotency key, or a UUIDv7 made by the server.
    pub id: String,
    /// Dot-separated lowercase words, like `task.created`.
    pub event_type: String,
    pub source: String,
    pub task_id: Option<String>,
    pub agent_id: Option<String>,
    /// Commit time, RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    /// The event's data, secrets redacted; `{}` when none was sent. Kept as sent, so
    /// numbers beyond 64 bits keep every digit.
    #[schema(value_type = Object)]
    pub data: Box<RawValue>,
}

/// The fields of an event as they come out of a store row or a commit.
#[derive(Debug, Clone, Copy)]
pub struct EventParts<'a> {
    pub seq: u64,
    pub id: &'a str,
    pub event_type: &'a str,
    pub source: &'a str,
    pub task_id: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub ts_ms: i64,
    /// Compact JSON of the `data` object, as stored.
    pub data: &'a str,
}

/// A stored `data` column that is not a JSON value; only a corrupted store yields it.
#[derive(Debug, thiserror::Error)]
#[error("stored data of event {seq} is not JSON: {source}")]
pub struct CorruptData {
    pub seq: u64,
    #[source]
    pub source: serde_json::Error,
}

impl Event {
    /// Builds the shared encoding of an event read back from a store, after checking
    /// that its stored `data` is JSON.
    ///
    /// # Errors
    /// [`CorruptData`] when `parts.data` is not valid JSON, which only a damaged store
    /// produces: ingest always stores what it serialised itself.
    pub fn encode(parts: EventParts<'_>) -> Result<Self, CorruptData> {
        serde_json::from_str::<&RawValue>(parts.data).map_err(|source| CorruptData { seq: parts.seq, source })?;
        Ok(Self::encode_committed(parts, &format_timestamp(parts.ts_ms)))
    }

    /// Builds the shared encoding of an event the writer has just committed: its `data`
    /// is what ingest serialised, so is not checked again, and `timestamp` is
    /// `parts.ts_ms` already formatted, once for the whole commit. On the writer, the
    /// one serial step of ingest, that and writing the JSON by hand rather than through
    /// a derived `Serialize` took encoding from 8.7 % of ingest's CPU to under 5 %, and
    /// in-process ingest up by 8 % (`swarmfeed-bench ingest-local`, old and new
    /// alternately: 204 500 → 221 700, 201 500 → 219 100, 218 600 → 226 300 events/s).
    pub fn encode_committed(parts: EventParts<'_>, timestamp: &str) -> Self {
        let mut frame = Vec::with_capacity(FRAME_PREFIX.len() + 160 + parts.data.len());
        frame.extend_from_slice(FRAME_PREFIX.as_bytes());
        write_payload(&parts, timestamp, &mut frame);
        frame.extend_from_slice(FRAME_SUFFIX.as_bytes());
        Event {
            seq: parts.seq,
            event_type: parts.event_type.into(),
            source: parts.source.into(),
            task_id: parts.task_id.map(Into::into),
            agent_id: parts.agent_id.map(Into::into),
            ts_ms: parts.ts_ms,
            known: KNOWN_TYPES.iter().position(|k| k.event_type == parts.event_type).map(|i| i as u8),
            frame: Bytes::from(frame),
        }
    }

    /// Index of the event's type in [`KNOWN_TYPES`], if it is a known type.
    pub(crate) fn known_index(&self) -> Option<usize> {
        self.known.map(usize::from)
    }

    /// The event's JSON object (DESIGN §3 `payload`), shared, not copied.
    pub fn payload(&self) -> Bytes {
        self.frame.slice(FRAME_PREFIX.len()..self.frame.len() - FRAME_SUFFIX.len())
    }

    /// A complete WebSocket `{"type":"event","payload":…}` frame, shared, not copied.
    pub fn frame(&self) -> Bytes {
        self.frame.clone()
    }

    /// Approximate heap bytes this event holds, for bounding buffers by size.
    pub(crate) fn weight(&self) -> usize {
        self.frame.len() + self.event_type.len() + self.source.len() + 64
    }
}

/// Writes an event's payload object (DESIGN §3), fields in the documented order, with
/// `parts.data` as it is: the caller knows it to be JSON.
fn write_payload(parts: &EventParts<'_>, timestamp: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(br#"{"seq":"#);
    write_json(out, &parts.seq);
    out.extend_from_slice(br#","id":"#);
    write_json(out, parts.id);
    out.extend_from_slice(br#","event_type":"#);
    write_json(out, parts.event_type);
    out.extend_from_slice(br#","source":"#);
    write_json(out, parts.source);
    out.extend_from_slice(br#","task_id":"#);
    write_json(out, &parts.task_id);
    out.extend_from_slice(br#","agent_id":"#);
    write_json(out, &parts.agent_id);
    out.extend_from_slice(br#","timestamp":"#);
    write_json(out, timestamp);
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(parts.data.as_bytes());
    out.push(b'}');
}

/// One JSON value, escaped as serde_json escapes it.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Numbers, strings and options of strings written to a Vec cannot fail.
    serde_json::to_writer(out, value).expect("a plain value serialises");
}

/// Writes `[payload,payload,…]` to `out`: the shared bytes, concatenated, never
/// re-serialised.
pub(crate) fn write_payload_array(events: &[std::sync::Arc<Event>], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.payload());
    }
    out.push(b']');
}

/// `{"events":[payload,…],"name":n,…}`: the JSON of a page of events (`GET /api/events`,
/// a long-poll answer) from the shared bytes, with `fields` after the events in order,
/// `None` written as `null`.
pub(crate) fn events_object(events: &[std::sync::Arc<Event>], fields: &[(&str, Option<u64>)]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(32 + 24 * fields.len() + events.iter().map(|e| e.payload().len() + 1).sum::<usize>());
    out.extend_from_slice(br#"{"events":"#);
    write_payload_array(events, &mut out);
    for (name, value) in fields {
        out.extend_from_slice(format!(",\"{name}\":").as_bytes());
        match value {
            Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
    out
}

/// How loud an event is, wherever it is shown (a page's row, `tail`'s line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Normal,
    /// `*.warning`.
    Warning,
    /// `*.failed`, `*.error`: shown prominently.
    Problem,
}

impl Severity {
    /// The severity of a type, by its last segment, so producers' own types
    /// (`deploy.failed`) stand out like the known ones (`task.failed`).
    pub(crate) fn of(event_type: &str) -> Self {
        // An alert that fires is a problem by what it means, not by its last word.
        if event_type == "alert.firing" {
            return Severity::Problem;
        }
        match event_type.rsplit('.').next() {
            Some("failed" | "error") => Severity::Problem,
            Some("warning") => Severity::Warning,
            _ => Severity::Normal,
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-25T21:19:51.123Z`.
pub fn format_timestamp(ts_ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ts_ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        // Out of chrono's range (±262 000 years): only a corrupted clock gets here.
        None => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// Parses an RFC 3339 time into milliseconds since the Unix epoch.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serialising the declared shape writes for `parts`.
    fn declared(parts: EventParts<'_>) -> Vec<u8> {
        serde_json::to_vec(&EventPayload {
            seq: parts.seq,
            id: parts.id.to_owned(),
            event_type: parts.event_type.to_owned(),
            source: parts.source.to_owned(),
            task_id: parts.task_id.map(str::to_owned),
            agent_id: parts.agent_id.map(str::to_owned),
            timestamp: format_timestamp(parts.ts_ms),
            data: RawValue::from_string(parts.data.to_owned()).unwrap(),
        })
        .unwrap()
    }

    proptest! {
        // The hand-written encoder writes exactly the declared shape, byte for byte,
        // whatever the strings hold (quotes, escapes, control and non-ASCII characters).
        #[test]
        fn the_encoder_writes_the_declared_shape(
            seq in any::<u64>(),
            id in any::<String>(),
            source in any::<String>(),
            task_id in proptest::option::of(any::<String>()),
            agent_id in proptest::option::of(any::<String>()),
            ts_ms in -62_135_596_800_000i64..253_402_300_799_000,
            data in prop_oneof![
                Just("{}"),
                Just(r#"{"b":1,"a":123456789012345678901234567890}"#),
                Just(r#"{"message":"line\nbreak \"quoted\" \u00e9"}"#),
            ],
        ) {
            let parts = EventParts {
                seq,
                id: &id,
                event_type: "task.created",
                source: &source,
                task_id: task_id.as_deref(),
                agent_id: agent_id.as_deref(),
                ts_ms,
                data,
            };
            let event = Event::encode(parts).unwrap();
            prop_assert_eq!(String::from_utf8(event.payload().to_vec()).unwrap(), String::from_utf8(declared(parts)).unwrap());
            let back: EventPayload = serde_json::from_slice(&event.payload()).unwrap();
            prop_assert_eq!((back.seq, back.id, back.data.get()), (seq, id.clone(), data));
        }
    }

    #[test]
    fn severity_follows_the_last_segment_of_the_type() {
        assert_eq!(Severity::of("task.failed"), Severity::Problem);
        assert_eq!(Severity::of("deploy.failed"), Severity::Problem);
        assert_eq!(Severity::of("system.error"), Severity::Problem);
        assert_eq!(Severity::of("system.warning"), Severity::Warning);
        assert_eq!(Severity::of("task.completed"), Severity::Normal);
        assert_eq!(Severity::of("failed.task"), Severity::Normal);
        assert_eq!(Severity::of("alert.firing"), Severity::Problem);
        assert_eq!(Severity::of("alert.resolved"), Severity::Normal);
    }

    /// The payload as serde derives it: what the hand-written encoder must match.
    #[derive(Serialize)]
    struct Reference<'a> {
        seq: u64,
        id: &'a str,
        event_type: &'a str,
        source: &'a str,
        task_id: Option<&'a str>,
        agent_id: Option<&'a str>,
        timestamp: &'a str,
        data: &'a RawValue,
    }

    #[test]
    fn the_hand_written_payload_is_byte_for_byte_what_serde_writes() {
        let cases = [
            (1, "019a-id", "task.created", "coordinator", None, None, r#"{}"#),
            (
                u64::MAX,
                "quote\"back\\slash",
                "bid.submitted",
                "ünïcode ✓",
                Some("t-1"),
                Some("a\u{1}\n"),
                r#"{"n":[1,2.5,null],"s":"x"}"#,
            ),
            (42, "", "a.b", "tab\there", Some(""), None, r#"{"nested":{"deep":true}}"#),
        ];
        for (seq, id, event_type, source, task_id, agent_id, data) in cases {
            let parts = EventParts { seq, id, event_type, source, task_id, agent_id, ts_ms: 1_764_105_591_123, data };
            let timestamp = format_timestamp(parts.ts_ms);
            let reference = Reference {
                seq,
                id,
                event_type,
                source,
                task_id,
                agent_id,
                timestamp: &timestamp,
                data: serde_json::from_str(data).unwrap(),
            };
            let expected = serde_json::to_vec(&reference).unwrap();
            let event = Event::encode(parts).unwrap();
            assert_eq!(event.payload(), expected, "{id}");
            assert_eq!(Event::encode_committed(parts, &timestamp), event);
        }
        let corrupt = EventParts { seq: 7, data: "{x", ..parts_of_sample() };
        assert!(matches!(Event::encode(corrupt), Err(CorruptData { seq: 7, .. })));
    }

    #[test]
    fn event_type_shape_follows_the_design_pattern() {
        for good in ["task.created", "a.b", "agent.status_changed", "x1.y_2.z"] {
            assert!(is_valid_event_type(good), "{good}");
        }
        for bad in ["", "task", "Task.created", "task.", ".task", "task..x", "1a.b", "a.B", "a-b.c", "a.b c", "a._b"] {
            assert!(!is_valid_event_type(bad), "{bad}");
        }
    }

    #[test]
    fn known_types_are_valid_and_unique() {
        for (i, k) in KNOWN_TYPES.iter().enumerate() {
            assert!(is_valid_event_type(k.event_type));
            assert!(KNOWN_TYPES[..i].iter().all(|o| o.event_type != k.event_type));
        }
    }

    fn sample() -> Event {
        Event::encode(EventParts {
            seq: 7,
            id: "a\"b",
            event_type: "task.created",
            source: "coordinator",
            task_id: Some("t1"),
            agent_id: None,
            ts_ms: 1_764_105_591_123,
            data: r#"{"description":"x <y>"}"#,
        })
        .unwrap()
    }

    #[test]
    fn payload_is_the_frame_without_its_envelope() {
        let e = sample();
        let frame: serde_json::Value = serde_json::from_slice(&e.frame()).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&e.payload()).unwrap();
        assert_eq!(frame["type"], "event");
        assert_eq!(frame["payload"], payload);
        assert_eq!(payload["seq"], 7);
        assert_eq!(payload["id"], "a\"b");
        assert_eq!(payload["agent_id"], serde_json::Value::Null);
        assert_eq!(payload["timestamp"], "2025-11-25T21:19:51.123Z");
        assert_eq!(payload["data"]["description"], "x <y>");
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        let err = Event::encode(EventParts { data: "{", ..parts_of_sample() }).unwrap_err();
        assert_eq!(err.seq, 1);
    }

    fn parts_of_sample() -> EventParts<'static> {
        EventParts {
            seq: 1,
            id: "i",
            event_type: "a.b",
            source: "s",
            task_id: None,
            agent_id: None,
            ts_ms: 0,
            data: "{}",
        }
    }

    #[test]
    fn display_templates_fill_from_data_and_agent_id() {
        let data = serde_json::json!({"bid_sats": 42, "description": "sort"});
        let data = data.as_object().unwrap();
        assert_eq!(render_display("task.assigned", Some("forge"), data), "Task assigned to forge (42 sats)");
        assert_eq!(render_display("task.created", None, data), "New task: sort");
        assert_eq!(render_display("custom.thing", None, data), "custom.thing");
    }

    #[test]
    fn timestamps_round_trip() {
        let s = format_timestamp(1_764_105_591_123);
        assert_eq!(parse_timestamp(&s), Some(1_764_105_591_123));
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
