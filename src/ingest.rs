//! Ingest: turns a producer's JSON into events ready to commit.
//!
//! Owns the rules of DESIGN §2 for incoming events (field types and limits, unknown
//! fields, server-set fields), id assignment (UUIDv7 when the producer gives none) and
//! the call to redaction. A batch is all or nothing: the first invalid event rejects
//! it, naming its index and field. It does not commit anything (`writer`).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::event::{MAX_ID_CHARS, MAX_NAME_CHARS, MAX_TYPE_CHARS, NewEvent, is_identifier_char, is_valid_event_type};
use crate::redact::Redactor;

/// Ids that begin with this belong to events the server writes (the coordinator's
/// settlements, DESIGN §6); producers may not take them.
pub(crate) const SERVER_ID_PREFIX: &str = "sf:";
/// Most events one request may carry (DESIGN §4).
pub const MAX_BATCH: usize = 1000;
/// Default cap on one event's serialised `data`, bytes (DESIGN §2).
pub(crate) const DEFAULT_MAX_DATA_BYTES: usize = 16 * 1024;

/// Limits applied to every incoming event.
#[derive(Debug, Clone)]
pub struct IngestRules {
    /// Most events per request; default [`MAX_BATCH`].
    pub max_batch: usize,
    /// Cap on one event's serialised `data`; default [`DEFAULT_MAX_DATA_BYTES`]
    /// (`--max-data-bytes`, `SWARMFEED_MAX_DATA_BYTES`).
    pub max_data_bytes: usize,
    pub redactor: Redactor,
}

impl Default for IngestRules {
    fn default() -> Self {
        IngestRules { max_batch: MAX_BATCH, max_data_bytes: DEFAULT_MAX_DATA_BYTES, redactor: Redactor::default() }
    }
}

/// Why a request's events were refused. Nothing of the request is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body must be an event object or an array of event objects")]
    Shape,
    #[error("the batch is empty")]
    Empty,
    #[error("the batch has {count} events; at most {max} are allowed")]
    TooMany { count: usize, max: usize },
    #[error("event {index}: {message}")]
    Event { index: usize, field: Option<String>, message: String },
}

impl Invalid {
    fn at(index: usize, field: &str, message: impl Into<String>) -> Self {
        Invalid::Event { index, field: Some(field.to_owned()), message: format!("{field} {}", message.into()) }
    }
}

/// How `data` arrived: as the producer's own JSON text (kept as sent, so numbers
/// beyond 64 bits stay exact), or as a value the server built.
enum DataIn<'a> {
    Raw(&'a RawValue),
    Value(Value),
}

impl IngestRules {
    /// Parses a request body: one event object or an array of them.
    ///
    /// Each event's `data` is kept as the producer's JSON text, less whitespace and
    /// with secrets redacted on the text itself ([`Redactor::redact_raw`]):
    /// `serde_json::Value` holds numbers as 64-bit integers or floats, and going
    /// through it would turn 123456789012345678901234567890 into
    /// 1.2345678901234568e29. serde_json's `arbitrary_precision` would change every
    /// `Value` in the program instead.
    ///
    /// # Errors
    /// [`Invalid`] naming the first problem; the whole batch is refused.
    pub fn parse_body(&self, body: &[u8]) -> Result<Vec<NewEvent>, Invalid> {
        let items = match serde_json::from_slice(body).map_err(|e| Invalid::Json(e.to_string()))? {
            Body::One(event) => vec![Item::Event(event)],
            Body::Many(items) => items,
            Body::Other => return Err(Invalid::Shape),
        };
        if items.is_empty() {
            return Err(Invalid::Empty);
        }
        if items.len() > self.max_batch {
            return Err(Invalid::TooMany { count: items.len(), max: self.max_batch });
        }
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Item::Event(Incoming { fields, data }) => {
                    self.build(index, fields, data.map(DataIn::Raw), Origin::Producer)
                }
                Item::NotAnObject => Err(Invalid::Event { index, field: None, message: "is not a JSON object".into() }),
            })
            .collect()
    }

    /// Validates and redacts one producer's event given as fields (`swarmfeed emit`
    /// checks its events with this before sending them).
    ///
    /// # Errors
    /// [`Invalid::Event`] naming the field; ids in the server's namespace
    /// ([`SERVER_ID_PREFIX`]) are refused.
    pub fn event(&self, index: usize, mut map: Map<String, Value>) -> Result<NewEvent, Invalid> {
        let data = map.remove("data").map(DataIn::Value);
        self.build(index, map, data, Origin::Producer)
    }

    /// Validates and redacts an event the server itself writes (the coordinator's):
    /// the same rules as a producer's, and ids in the server's namespace allowed.
    ///
    /// # Errors
    /// [`Invalid::Event`] naming the field.
    pub(crate) fn server_event(&self, index: usize, mut map: Map<String, Value>) -> Result<NewEvent, Invalid> {
        let data = map.remove("data").map(DataIn::Value);
        self.build(index, map, data, Origin::Server)
    }

    fn build(
        &self,
        index: usize,
        mut map: Map<String, Value>,
        data: Option<DataIn<'_>>,
        origin: Origin,
    ) -> Result<NewEvent, Invalid> {
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        if data.is_some() {
            keys.push("data");
        }
        keys.sort_unstable();
        for key in keys {
            match key {
                "id" | "event_type" | "source" | "task_id" | "agent_id" | "data" => {}
                "seq" | "timestamp" => return Err(Invalid::at(index, key, "is set by the server; leave it out")),
                other => {
                    return Err(Invalid::Event {
                        index,
                        field: Some(other.to_owned()),
                        message: format!(
                            "unknown field {other:?}; expected id, event_type, source, task_id, agent_id or data"
                        ),
                    });
                }
            }
        }
        let event_type = string(index, "event_type", map.remove("event_type"), MAX_TYPE_CHARS)?
            .ok_or_else(|| Invalid::at(index, "event_type", "is required"))?;
        if !is_valid_event_type(&event_type) {
            return Err(Invalid::at(
                index,
                "event_type",
                format!("{event_type:?} must be dot-separated lowercase words, like \"task.created\""),
            ));
        }
        let source = string(index, "source", map.remove("source"), MAX_NAME_CHARS)?
            .ok_or_else(|| Invalid::at(index, "source", "is required"))?;
        let id = match string(index, "id", map.remove("id"), MAX_ID_CHARS)? {
            Some(id) if origin == Origin::Producer && id.starts_with(SERVER_ID_PREFIX) => {
                return Err(Invalid::at(
                    index,
                    "id",
                    format!("{id:?} begins with {SERVER_ID_PREFIX:?}, which is kept for events the server writes"),
                ));
            }
            // Redacting a token inside an id would make two different ids one, and
            // the second event a "duplicate" that is never stored: refuse it instead.
            Some(id) if self.redactor.redact_text(&id).is_some() => {
                return Err(Invalid::at(index, "id", "must not contain a bearer token"));
            }
            Some(id) => id,
            None => uuid::Uuid::now_v7().to_string(),
        };
        // Redacting a bearer token can lengthen a name ("bearer x" is stored as
        // "Bearer [REDACTED]"), and what is stored must still be within its limit.
        let redact = |field: &str, s: String| match self.redactor.redact_text(&s) {
            None => Ok(s),
            Some(r) if r.chars().count() > MAX_NAME_CHARS => Err(Invalid::at(
                index,
                field,
                format!("is longer than {MAX_NAME_CHARS} characters once its bearer token is redacted"),
            )),
            Some(r) => Ok(r),
        };
        let source = redact("source", source)?;
        let task_id = string(index, "task_id", map.remove("task_id"), MAX_NAME_CHARS)?
            .map(|s| redact("task_id", s))
            .transpose()?;
        let agent_id = string(index, "agent_id", map.remove("agent_id"), MAX_NAME_CHARS)?
            .map(|s| redact("agent_id", s))
            .transpose()?;
        let data = match data {
            None => "{}".to_owned(),
            Some(DataIn::Raw(raw)) => self.raw_data(index, raw)?,
            Some(DataIn::Value(value)) => self.data(index, value)?,
        };
        Ok(NewEvent { id, event_type, source, task_id, agent_id, data })
    }

    /// The stored text of the producer's `data`: its own text without whitespace,
    /// redacted where needed, every number as written.
    fn raw_data(&self, index: usize, raw: &RawValue) -> Result<String, Invalid> {
        match raw.get().as_bytes().first() {
            Some(b'{') => {}
            Some(b'n') => return Ok("{}".to_owned()),
            _ => return Err(Invalid::at(index, "data", "must be a JSON object")),
        }
        let before = compact(raw.get());
        self.check_size(index, &before)?;
        let redacted = self.redactor.redact_raw(raw).map_err(|e| Invalid::Json(format!("data: {e}")))?;
        // "[REDACTED]" can be longer than the value it replaces: the limit is on what
        // is stored.
        if let Some(redacted) = &redacted {
            self.check_size(index, redacted)?;
        }
        Ok(redacted.unwrap_or(before))
    }

    /// The stored text of `data` given as a value (the server's own events, and
    /// `emit`'s check).
    fn data(&self, index: usize, mut value: Value) -> Result<String, Invalid> {
        match value {
            Value::Null => return Ok("{}".to_owned()),
            Value::Object(_) => {}
            _ => return Err(Invalid::at(index, "data", "must be a JSON object")),
        }
        let before = serde_json::to_string(&value).map_err(|e| Invalid::at(index, "data", e.to_string()))?;
        self.check_size(index, &before)?;
        if self.redactor.redact(&mut value) {
            let redacted = serde_json::to_string(&value).map_err(|e| Invalid::at(index, "data", e.to_string()))?;
            self.check_size(index, &redacted)?;
            Ok(redacted)
        } else {
            Ok(before)
        }
    }

    fn check_size(&self, index: usize, data: &str) -> Result<(), Invalid> {
        if data.len() > self.max_data_bytes {
            return Err(Invalid::at(
                index,
                "data",
                format!("is {} bytes serialised; at most {} are allowed", data.len(), self.max_data_bytes),
            ));
        }
        Ok(())
    }
}

/// A request body as parsed in one pass: an event object, an array of items, or
/// something else (refused as [`Invalid::Shape`]).
enum Body<'a> {
    One(Incoming<'a>),
    Many(Vec<Item<'a>>),
    Other,
}

/// One element of a batch.
enum Item<'a> {
    Event(Incoming<'a>),
    NotAnObject,
}

/// An event object as sent: its fields as values, and `data` as the producer's text.
struct Incoming<'a> {
    fields: Map<String, Value>,
    data: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for Body<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Body<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event object or an array of them")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Body<'de>, A::Error> {
                incoming(map).map(Body::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body<'de>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_BATCH));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Body::Many(items))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Body<'de>, E> {
                Ok(Body::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Body<'de>, E> {
                Ok(Body::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Body<'de>, E> {
                Ok(Body::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Body<'de>, E> {
                Ok(Body::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Body<'de>, E> {
                Ok(Body::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Body<'de>, E> {
                Ok(Body::Other)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl<'de> Deserialize<'de> for Item<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Item<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item<'de>, A::Error> {
                incoming(map).map(Item::Event)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Item::NotAnObject)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Item<'de>, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Item<'de>, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Item<'de>, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Item<'de>, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Item<'de>, E> {
                Ok(Item::NotAnObject)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Item<'de>, E> {
                Ok(Item::NotAnObject)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// The fields of one event object; a repeated key keeps its last value, as
/// `serde_json::Map` does.
fn incoming<'de, A: MapAccess<'de>>(mut map: A) -> Result<Incoming<'de>, A::Error> {
    let mut fields = Map::new();
    let mut data = None;
    while let Some(key) = map.next_key::<String>()? {
        if key == "data" {
            data = Some(map.next_value::<&'de RawValue>()?);
        } else {
            fields.insert(key, map.next_value::<Value>()?);
        }
    }
    Ok(Incoming { fields, data })
}

/// Who wrote an event: only the server may use ids in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Producer,
    Server,
}

/// Valid JSON text without the whitespace between tokens. Whitespace inside strings
/// is kept: a byte is in a string from an unescaped `"` to the next one. Works on
/// bytes: every byte it looks for is ASCII, which never occurs inside a multi-byte
/// UTF-8 sequence.
fn compact(json: &str) -> String {
    let bytes = json.as_bytes();
    if !bytes.iter().any(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return json.to_owned();
    }
    let mut out = Vec::with_capacity(bytes.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            in_string = b == b'"';
            out.push(b);
        }
    }
    // Only whole ASCII bytes were left out of valid UTF-8, so it is still valid.
    String::from_utf8(out).expect("UTF-8 less ASCII whitespace is UTF-8")
}

/// An optional string field: absent or null is `None`; otherwise it must be a
/// non-empty string of at most `max` characters without control or format
/// characters (see [`is_identifier_char`]).
fn string(index: usize, field: &str, value: Option<Value>, max: usize) -> Result<Option<String>, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.is_empty() {
                Err(Invalid::at(index, field, "must not be empty; leave it out instead"))
            } else if s.chars().count() > max {
                Err(Invalid::at(index, field, format!("is longer than {max} characters")))
            } else if let Some(c) = s.chars().find(|c| !is_identifier_char(*c)) {
                Err(Invalid::at(
                    index,
                    field,
                    format!("must not contain control or invisible formatting characters (found U+{:04X})", c as u32),
                ))
            } else {
                Ok(Some(s))
            }
        }
        Some(_) => Err(Invalid::at(index, field, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(body: &str) -> Result<Vec<NewEvent>, Invalid> {
        IngestRules::default().parse_body(body.as_bytes())
    }

    fn field_of(err: Invalid) -> (usize, Option<String>) {
        match err {
            Invalid::Event { index, field, .. } => (index, field),
            other => panic!("expected an event error, got {other:?}"),
        }
    }

    #[test]
    fn one_object_or_an_array_is_accepted() {
        let one = parse(r#"{"event_type":"task.created","source":"c","data":{"description":"d"}}"#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].data, r#"{"description":"d"}"#);
        assert_eq!(one[0].id.len(), 36, "a UUID is made when no id is given");
        let many = parse(r#"[{"event_type":"a.b","source":"s","id":"k1"},{"event_type":"a.c","source":"s"}]"#).unwrap();
        assert_eq!(many[0].id, "k1");
        assert_eq!(many[1].data, "{}");
    }

    #[test]
    fn the_first_bad_event_names_its_index_and_field() {
        let err = parse(r#"[{"event_type":"a.b","source":"s"},{"event_type":"Bad","source":"s"}]"#).unwrap_err();
        assert_eq!(field_of(err), (1, Some("event_type".into())));
        let err = parse(r#"[{"event_type":"a.b"}]"#).unwrap_err();
        assert_eq!(field_of(err), (0, Some("source".into())));
        let err = parse(r#"{"event_type":"a.b","source":"s","colour":"red"}"#).unwrap_err();
        assert_eq!(field_of(err), (0, Some("colour".into())));
        let err = parse(r#"{"event_type":"a.b","source":"s","seq":4}"#).unwrap_err();
        assert_eq!(field_of(err), (0, Some("seq".into())));
        let err = parse(r#"{"event_type":"a.b","source":"s","data":[1]}"#).unwrap_err();
        assert_eq!(field_of(err), (0, Some("data".into())));
        let err = parse(r#"{"event_type":"a.b","source":7}"#).unwrap_err();
        assert_eq!(field_of(err), (0, Some("source".into())));
        let err = parse(r#"{"event_type":"a.b","source":"s","task_id":""}"#).unwrap_err();
        assert_eq!(field_of(err), (0, Some("task_id".into())));
        let err = parse(r#"[1]"#).unwrap_err();
        assert_eq!(field_of(err), (0, None));
    }

    #[test]
    fn limits_are_inclusive() {
        let at =
            |field: &str, n: usize| format!(r#"{{"event_type":"a.b","source":"s","{field}":"{}"}}"#, "x".repeat(n));
        for (field, max) in [("id", MAX_ID_CHARS), ("source", MAX_NAME_CHARS), ("task_id", MAX_NAME_CHARS)] {
            assert!(parse(&at(field, max)).is_ok(), "{field} at its limit");
            assert_eq!(field_of(parse(&at(field, max + 1)).unwrap_err()).1.as_deref(), Some(field));
        }
        let long_type = format!("a.{}", "b".repeat(MAX_TYPE_CHARS - 2));
        assert!(parse(&format!(r#"{{"event_type":"{long_type}","source":"s"}}"#)).is_ok());
        assert!(parse(&format!(r#"{{"event_type":"{long_type}b","source":"s"}}"#)).is_err());
    }

    #[test]
    fn data_size_is_capped_after_serialisation() {
        let rules = IngestRules { max_data_bytes: 20, ..IngestRules::default() };
        // {"k":"123456789012"} is exactly 20 bytes.
        assert!(rules.parse_body(br#"{"event_type":"a.b","source":"s","data":{"k":"123456789012"}}"#).is_ok());
        let err = rules.parse_body(br#"{"event_type":"a.b","source":"s","data":{"k":"1234567890123"}}"#).unwrap_err();
        assert_eq!(field_of(err).1.as_deref(), Some("data"));
    }

    #[test]
    fn batches_have_bounds() {
        assert_eq!(parse("[]").unwrap_err(), Invalid::Empty);
        let many = format!("[{}]", vec![r#"{"event_type":"a.b","source":"s"}"#; MAX_BATCH + 1].join(","));
        assert!(matches!(parse(&many).unwrap_err(), Invalid::TooMany { count: 1001, .. }));
        assert!(matches!(parse("not json").unwrap_err(), Invalid::Json(_)));
        assert_eq!(parse("42").unwrap_err(), Invalid::Shape);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep =
            format!(r#"{{"event_type":"a.b","source":"s","data":{}{}}}"#, "{\"a\":".repeat(10_000), "}".repeat(10_000));
        assert!(matches!(parse(&deep).unwrap_err(), Invalid::Json(_)));
    }

    #[test]
    fn ids_in_the_servers_namespace_are_refused_to_producers_only() {
        let body = r#"{"event_type":"task.assigned","source":"s","id":"sf:settle.t1.outcome"}"#;
        assert_eq!(field_of(parse(body).unwrap_err()), (0, Some("id".into())));
        let mut map = Map::new();
        map.insert("event_type".into(), "task.assigned".into());
        map.insert("source".into(), "s".into());
        map.insert("id".into(), "sf:settle.t1.outcome".into());
        assert_eq!(field_of(IngestRules::default().event(0, map.clone()).unwrap_err()).1.as_deref(), Some("id"));
        assert_eq!(IngestRules::default().server_event(0, map).unwrap().id, "sf:settle.t1.outcome");
        assert!(parse(r#"{"event_type":"a.b","source":"s","id":"settle.t1.outcome"}"#).is_ok());
    }

    #[test]
    fn format_and_bidi_characters_are_refused_in_identifiers_by_name() {
        for c in ['\u{202E}', '\u{200B}', '\u{2066}', '\u{FEFF}', '\u{00AD}'] {
            for field in ["id", "source", "task_id", "agent_id"] {
                let body = serde_json::json!({"event_type": "a.b", "source": "s", field: format!("ab{c}cd")});
                let err = parse(&body.to_string()).unwrap_err();
                assert_eq!(field_of(err.clone()).1.as_deref(), Some(field), "U+{:04X} in {field}", c as u32);
                assert!(err.to_string().contains(&format!("U+{:04X}", c as u32)), "{err}");
            }
        }
        assert!(parse(r#"{"event_type":"a.b","source":"Søren 🤖 Ω"}"#).is_ok(), "other letters and symbols pass");
    }

    #[test]
    fn bearer_tokens_are_redacted_in_every_string_field() {
        let body = r#"{"event_type":"a.b","source":"x Bearer abc.def","task_id":"t bearer q1","agent_id":"Bearer zz"}"#;
        let e = &parse(body).unwrap()[0];
        assert_eq!(e.source, "x Bearer [REDACTED]");
        assert_eq!(e.task_id.as_deref(), Some("t Bearer [REDACTED]"));
        assert_eq!(e.agent_id.as_deref(), Some("Bearer [REDACTED]"));
        let err = parse(r#"{"event_type":"a.b","source":"s","id":"Bearer abc"}"#).unwrap_err();
        assert_eq!(field_of(err).1.as_deref(), Some("id"), "an id is refused, never merged with another");
    }

    #[test]
    fn what_is_stored_stays_within_its_limits_once_redacted() {
        // "bearer x" (8 characters) is stored as "Bearer [REDACTED]" (17): a name of
        // 128 characters holding one would be stored longer than DESIGN §2 allows.
        let name = format!("{}bearer x", "a ".repeat(60));
        assert_eq!(name.chars().count(), MAX_NAME_CHARS);
        for field in ["source", "task_id", "agent_id"] {
            let mut event = json!({"event_type": "a.b", "source": "s"});
            event[field] = json!(name);
            let err = parse(&event.to_string()).unwrap_err();
            assert_eq!(field_of(err).1.as_deref(), Some(field), "{field} of {name:?}");
        }
        let short = json!({"event_type": "a.b", "source": "bearer x"});
        assert_eq!(parse(&short.to_string()).unwrap()[0].source, "Bearer [REDACTED]", "one that fits is stored");

        // `"token":1` (9 bytes) is stored as `"token":"[REDACTED]"` (20): data just
        // under the cap must not be stored over it.
        let rules = IngestRules::default();
        let pad = "x".repeat(rules.max_data_bytes - r#"{"p":"","token":1}"#.len());
        let body = format!(r#"{{"event_type":"a.b","source":"s","data":{{"p":"{pad}","token":1}}}}"#);
        let err = rules.parse_body(body.as_bytes()).unwrap_err();
        assert_eq!(field_of(err).1.as_deref(), Some("data"));
        let fields = serde_json::from_str::<Map<String, Value>>(&body).unwrap();
        let err = rules.event(0, fields).unwrap_err();
        assert_eq!(field_of(err).1.as_deref(), Some("data"), "the same for data given as a value");
    }

    #[test]
    fn data_keeps_the_producers_numbers_exactly_and_loses_only_whitespace() {
        let body = "{\"event_type\":\"a.b\",\"source\":\"s\",\"data\": { \"n\" : 123456789012345678901234567890,\n \
                    \"f\": 1.50, \"s\": \" a \\\" b \"  } }";
        let e = &parse(body).unwrap()[0];
        assert_eq!(e.data, r#"{"n":123456789012345678901234567890,"f":1.50,"s":" a \" b "}"#);
    }

    #[test]
    fn whitespace_around_events_and_bad_utf8_inside_them_are_handled() {
        let spaced =
            parse(" \n[ {\"event_type\":\"a.b\",\"source\":\"s\"} ,\t{\"event_type\":\"a.c\",\"source\":\"s\"} ]\n");
        assert_eq!(spaced.unwrap().len(), 2);
        assert_eq!(parse(" {\"event_type\":\"a.b\",\"source\":\"s\"} ").unwrap().len(), 1);
        let bad =
            IngestRules::default().parse_body(b"{\"event_type\":\"a.b\",\"source\":\"s\",\"data\":{\"k\":\"\xff\"}}");
        assert!(matches!(bad.unwrap_err(), Invalid::Json(_)));
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn compacting_any_pretty_json_gives_its_compact_encoding(value in any_json()) {
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            proptest::prop_assert_eq!(compact(&pretty), serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn secrets_are_redacted_before_commit() {
        let e = parse(r#"{"event_type":"a.b","source":"s","data":{"api_key":"k","x":{"token":"t"}}}"#).unwrap();
        assert_eq!(e[0].data, r#"{"api_key":"[REDACTED]","x":{"token":"[REDACTED]"}}"#);
    }
}
