//! Ingest: turns a producer's JSON into events ready to commit.
//!
//! Owns the rules of DESIGN §2 for incoming events (field types and limits, unknown
//! fields, server-set fields), id assignment (UUIDv7 when the producer gives none) and
//! the call to redaction. A batch is all or nothing: the first invalid event rejects
//! it, naming its index and field. It does not commit anything (`writer`).

use serde_json::{Map, Value};

use crate::event::{MAX_ID_CHARS, MAX_NAME_CHARS, MAX_TYPE_CHARS, NewEvent, is_valid_event_type};
use crate::redact::Redactor;

/// Most events one request may carry (DESIGN §4).
pub const MAX_BATCH: usize = 1000;
/// Default cap on one event's serialised `data`, bytes (DESIGN §2).
pub const DEFAULT_MAX_DATA_BYTES: usize = 16 * 1024;

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

impl IngestRules {
    /// Parses a request body: one event object or an array of them.
    ///
    /// # Errors
    /// [`Invalid`] naming the first problem; the whole batch is refused.
    pub fn parse_body(&self, body: &[u8]) -> Result<Vec<NewEvent>, Invalid> {
        let value: Value = serde_json::from_slice(body).map_err(|e| Invalid::Json(e.to_string()))?;
        let objects = match value {
            Value::Array(items) => {
                if items.is_empty() {
                    return Err(Invalid::Empty);
                }
                if items.len() > self.max_batch {
                    return Err(Invalid::TooMany { count: items.len(), max: self.max_batch });
                }
                items
            }
            Value::Object(_) => vec![value],
            _ => return Err(Invalid::Shape),
        };
        objects
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::Object(map) => self.event(index, map),
                _ => Err(Invalid::Event { index, field: None, message: "is not a JSON object".into() }),
            })
            .collect()
    }

    /// Validates and redacts one event given as fields (the coordinator's path).
    ///
    /// # Errors
    /// [`Invalid::Event`] naming the field.
    pub fn event(&self, index: usize, mut map: Map<String, Value>) -> Result<NewEvent, Invalid> {
        for key in map.keys() {
            match key.as_str() {
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
            Some(id) => id,
            None => uuid::Uuid::now_v7().to_string(),
        };
        let task_id = string(index, "task_id", map.remove("task_id"), MAX_NAME_CHARS)?;
        let agent_id = string(index, "agent_id", map.remove("agent_id"), MAX_NAME_CHARS)?;
        let data = match map.remove("data") {
            None | Some(Value::Null) => "{}".to_owned(),
            Some(mut data @ Value::Object(_)) => {
                let before = serde_json::to_string(&data).map_err(|e| Invalid::at(index, "data", e.to_string()))?;
                if before.len() > self.max_data_bytes {
                    return Err(Invalid::at(
                        index,
                        "data",
                        format!("is {} bytes serialised; at most {} are allowed", before.len(), self.max_data_bytes),
                    ));
                }
                if self.redactor.redact(&mut data) {
                    serde_json::to_string(&data).map_err(|e| Invalid::at(index, "data", e.to_string()))?
                } else {
                    before
                }
            }
            Some(_) => return Err(Invalid::at(index, "data", "must be a JSON object")),
        };
        Ok(NewEvent { id, event_type, source, task_id, agent_id, data })
    }
}

/// An optional string field: absent or null is `None`; otherwise it must be a
/// non-empty string of at most `max` characters without control characters.
fn string(index: usize, field: &str, value: Option<Value>, max: usize) -> Result<Option<String>, Invalid> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.is_empty() {
                Err(Invalid::at(index, field, "must not be empty; leave it out instead"))
            } else if s.chars().count() > max {
                Err(Invalid::at(index, field, format!("is longer than {max} characters")))
            } else if s.chars().any(char::is_control) {
                Err(Invalid::at(index, field, "must not contain control characters"))
            } else {
                Ok(Some(s))
            }
        }
        Some(_) => Err(Invalid::at(index, field, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
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
    fn secrets_are_redacted_before_commit() {
        let e = parse(r#"{"event_type":"a.b","source":"s","data":{"api_key":"k","x":{"token":"t"}}}"#).unwrap();
        assert_eq!(e[0].data, r#"{"api_key":"[REDACTED]","x":{"token":"[REDACTED]"}}"#);
    }
}
