//! What the fuzz targets in `fuzz/` reach (`cargo fuzz`; docs/RELIABILITY.md says how
//! to run them): the parsers behind ingest, filters, WebSocket messages and redaction,
//! and the limits they promise. Hidden from the docs and not part of the crate's API:
//! it exists so the targets need no crate-private item made `pub`.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::filter::Filter;
use crate::redact::Redactor;
use crate::transport::ws::{Request, parse_request};

/// Longest `id` ingest stores (DESIGN §2).
pub const MAX_ID_CHARS: usize = crate::event::MAX_ID_CHARS;
/// Longest `source`, `task_id` or `agent_id` ingest stores (DESIGN §2).
pub const MAX_NAME_CHARS: usize = crate::event::MAX_NAME_CHARS;
/// Most type patterns a filter holds.
pub const MAX_TYPE_PATTERNS: usize = crate::filter::MAX_TYPE_PATTERNS;
/// The namespace of the ids the server gives its own events, refused to producers.
pub const SERVER_ID_PREFIX: &str = crate::ingest::SERVER_ID_PREFIX;

/// Whether `s` is an event type ingest accepts.
pub fn is_valid_event_type(s: &str) -> bool {
    crate::event::is_valid_event_type(s)
}

/// How many type patterns `filter` holds.
pub fn type_pattern_count(filter: &Filter) -> usize {
    filter.type_patterns().len()
}

/// A WebSocket client message as the server reads it: the filter of a `subscribe`, or
/// `None` for the other actions; the error is the text of the `error` frame.
///
/// # Errors
/// The message the client would be sent.
pub fn parse_ws_message(text: &str) -> Result<Option<Filter>, String> {
    parse_request(text).map(|request| match request {
        Request::Subscribe { filter, .. } => Some(filter),
        Request::Unsubscribe | Request::Ping => None,
    })
}

/// Whether `redactor` replaces the values under `key`.
pub fn is_secret_key(redactor: &Redactor, key: &str) -> bool {
    redactor.is_secret_key(key)
}

/// Whether `text` holds a bearer token `redactor` would redact.
pub fn holds_bearer(redactor: &Redactor, text: &str) -> bool {
    redactor.redact_text(text).is_some()
}

/// The text ingest stores for a producer's `data` written as `json`: redacted as
/// ingest redacts it, or `None` when nothing needed redacting.
///
/// # Errors
/// `json` is not JSON, or nests too deep.
pub fn redact_raw(redactor: &Redactor, json: &str) -> Result<Option<String>, String> {
    let raw: &RawValue = serde_json::from_str(json).map_err(|e| e.to_string())?;
    redactor.redact_raw(raw).map_err(|e| e.to_string())
}

/// The path of the first value in `value` that `redactor` should have hidden and did
/// not: a value under a secret key that is not `"[REDACTED]"`, or a string that still
/// holds a bearer token. `None` when there is none.
pub fn unredacted(redactor: &Redactor, value: &Value) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if redactor.is_secret_key(k) {
                (v.as_str() != Some(crate::redact::REDACTED)).then(|| k.clone())
            } else {
                unredacted(redactor, v).map(|path| format!("{k}.{path}"))
            }
        }),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| unredacted(redactor, v).map(|p| format!("{i}.{p}")))
        }
        Value::String(s) => holds_bearer(redactor, s).then(String::new),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}
