//! OpenTelemetry in: OTLP export requests (traces and logs) turned into events
//! (DESIGN §12).
//!
//! Owns the decoding of an OTLP/HTTP body (protobuf or OTLP/JSON, gzip or not) into
//! the OpenTelemetry project's own message types (`opentelemetry-proto`), and the
//! mapping of each span and log record onto an event. Every mapped event then passes
//! the same rules as one posted to `/api/events` ([`IngestRules::event`]: limits,
//! redaction); an item that fails them is rejected alone and counted for OTLP's
//! `partial_success`. It does not commit anything, answer HTTP or check credentials
//! (`http::otlp`).
//!
//! Event ids are derived from what the exporter sends, never made up, so an exporter
//! that retries an export stores nothing twice: a span's is its trace and span id; a
//! log record's is a digest of the record and its resource.

use std::io::Read;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use prost::Message;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::event::NewEvent;
use crate::ingest::{IngestRules, Invalid};

/// The prefix of every id this module derives, so they cannot meet a producer's own.
const ID_PREFIX: &str = "otel:";
/// Longest string attribute value kept in an event's `data`, in characters. GenAI
/// spans may carry whole prompts and completions; the feed needs a glimpse, and the
/// event's `data` cap (16 KiB by default) would otherwise refuse the span outright.
const MAX_ATTRIBUTE_CHARS: usize = 1024;
/// Most attributes kept from one span or log record; the rest are counted.
const MAX_ATTRIBUTES: usize = 64;
/// Deepest nesting of array and key-value-list attribute values kept.
const MAX_VALUE_DEPTH: usize = 4;

/// How an OTLP/HTTP body is encoded (its `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`: OTLP/JSON (lowerCamelCase names, hex ids, enums as numbers).
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` names (parameters such as `charset` ignored).
    pub fn of_content_type(value: &str) -> Option<Self> {
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }

    /// The `Content-Type` of an answer in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// Why a whole export request was refused. Nothing of it is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadExport {
    #[error("the gzip body cannot be decompressed: {0}")]
    Gzip(String),
    #[error("the body is larger than {0} bytes once decompressed")]
    TooLarge(usize),
    #[error("the body is not a valid {what}: {message}")]
    Decode { what: &'static str, message: String },
}

/// The events of an export request, and what was rejected.
#[derive(Debug, Default)]
pub struct Mapped {
    pub events: Vec<NewEvent>,
    /// Spans or log records refused, for `partial_success`.
    pub rejected: i64,
    /// Why the first rejected item was refused (OTLP's `error_message`).
    pub first_error: Option<String>,
}

impl Mapped {
    fn push(&mut self, index: usize, result: Result<NewEvent, Invalid>) {
        match result {
            Ok(event) => self.events.push(event),
            Err(e) => {
                self.rejected += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(match e {
                        Invalid::Event { message, .. } => format!("item {index}: {message}"),
                        other => format!("item {index}: {other}"),
                    });
                }
            }
        }
    }
}

/// The body as sent, gunzipped when `gzip` is set, at most `max` bytes either way.
///
/// # Errors
/// [`BadExport::Gzip`] for a broken stream, [`BadExport::TooLarge`] past `max`.
pub fn decompress(body: bytes::Bytes, gzip: bool, max: usize) -> Result<bytes::Bytes, BadExport> {
    if !gzip {
        return Ok(body);
    }
    // Read one byte past the cap, so a gzip bomb is stopped there rather than inflated.
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(max));
    flate2::read::GzDecoder::new(&body[..])
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| BadExport::Gzip(e.to_string()))?;
    if out.len() > max {
        return Err(BadExport::TooLarge(max));
    }
    Ok(out.into())
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
    what: &'static str,
) -> Result<T, BadExport> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| BadExport::Decode { what, message: e.to_string() }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| BadExport::Decode { what, message: e.to_string() }),
    }
}

/// Maps an `ExportTraceServiceRequest` body onto events, one per span.
///
/// # Errors
/// [`BadExport`] when the body cannot be decoded; a span that maps onto an invalid
/// event is counted in [`Mapped::rejected`] instead.
pub fn traces(rules: &IngestRules, body: &[u8], encoding: Encoding) -> Result<Mapped, BadExport> {
    let request: ExportTraceServiceRequest = decode(body, encoding, "ExportTraceServiceRequest")?;
    let mut mapped = Mapped::default();
    let mut index = 0;
    for resource_spans in &request.resource_spans {
        let resource = resource_spans.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                mapped.push(index, span_event(rules, index, resource, span));
                index += 1;
            }
        }
    }
    Ok(mapped)
}

/// Maps an `ExportLogsServiceRequest` body onto events, one per log record.
///
/// # Errors
/// As [`traces`].
pub fn logs(rules: &IngestRules, body: &[u8], encoding: Encoding) -> Result<Mapped, BadExport> {
    let request: ExportLogsServiceRequest = decode(body, encoding, "ExportLogsServiceRequest")?;
    let mut mapped = Mapped::default();
    let mut index = 0;
    for resource_logs in &request.resource_logs {
        let resource = resource_logs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
        for scope_logs in &resource_logs.scope_logs {
            for record in &scope_logs.log_records {
                mapped.push(index, log_event(rules, index, resource, record));
                index += 1;
            }
        }
    }
    Ok(mapped)
}

fn invalid(index: usize, field: &str, message: impl Into<String>) -> Invalid {
    Invalid::Event { index, field: Some(field.to_owned()), message: format!("{field} {}", message.into()) }
}

/// The string value of attribute `key`, from the item's own attributes, else the
/// resource's.
fn attr<'a>(own: &'a [KeyValue], resource: &'a [KeyValue], key: &str) -> Option<&'a str> {
    let find = |list: &'a [KeyValue]| {
        list.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
    };
    find(own).or_else(|| find(resource))
}

/// The fields every mapped event shares: source, agent and task.
fn envelope(own: &[KeyValue], resource: &[KeyValue], id: String, event_type: &str, data: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("id".into(), id.into());
    map.insert("event_type".into(), event_type.into());
    // OpenTelemetry SDKs set service.name always ("unknown_service" at worst).
    let source = resource.iter().any(|kv| kv.key == "service.name").then(|| attr(&[], resource, "service.name"));
    map.insert("source".into(), source.flatten().unwrap_or("unknown_service").into());
    let agent = attr(own, resource, "gen_ai.agent.id").or_else(|| attr(own, resource, "gen_ai.agent.name"));
    if let Some(agent) = agent {
        map.insert("agent_id".into(), agent.into());
    }
    if let Some(task) = attr(own, resource, "swarmfeed.task_id") {
        map.insert("task_id".into(), task.into());
    }
    map.insert("data".into(), data);
    map
}

fn span_event(rules: &IngestRules, index: usize, resource: &[KeyValue], span: &Span) -> Result<NewEvent, Invalid> {
    if span.trace_id.len() != 16 || span.trace_id.iter().all(|b| *b == 0) {
        return Err(invalid(index, "trace_id", "must be 16 bytes, not all zero"));
    }
    if span.span_id.len() != 8 || span.span_id.iter().all(|b| *b == 0) {
        return Err(invalid(index, "span_id", "must be 8 bytes, not all zero"));
    }
    let trace_id = hex::encode(&span.trace_id);
    let span_id = hex::encode(&span.span_id);
    let id = format!("{ID_PREFIX}{trace_id}:{span_id}");
    let duration_ms = span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e6;
    let status = span.status.as_ref().map_or(StatusCode::Unset, |s| s.code());
    let status_message = span.status.as_ref().map(|s| s.message.as_str()).filter(|m| !m.is_empty());
    let is_tool = attr(&span.attributes, &[], "gen_ai.operation.name") == Some("execute_tool");
    let mut data = Map::new();
    let event_type = if is_tool {
        data.insert("tool_name".into(), attr(&span.attributes, &[], "gen_ai.tool.name").unwrap_or(&span.name).into());
        if let Some(call) = attr(&span.attributes, &[], "gen_ai.tool.call.id") {
            data.insert("call_id".into(), call.into());
        }
        if status == StatusCode::Error {
            data.insert("error".into(), status_message.unwrap_or("the span's status is ERROR").into());
            "tool.failed"
        } else {
            "tool.completed"
        }
    } else {
        data.insert("name".into(), span.name.clone().into());
        "otel.span"
    };
    data.insert("trace_id".into(), trace_id.into());
    data.insert("span_id".into(), span_id.into());
    if !span.parent_span_id.is_empty() {
        data.insert("parent_span_id".into(), hex::encode(&span.parent_span_id).into());
    }
    data.insert("duration_ms".into(), round_ms(duration_ms));
    if !is_tool {
        let status = match status {
            StatusCode::Unset => "unset",
            StatusCode::Ok => "ok",
            StatusCode::Error => "error",
        };
        data.insert("status".into(), status.into());
        if let Some(message) = status_message {
            data.insert("status_message".into(), message.into());
        }
    }
    attributes_into(&mut data, &span.attributes);
    rules.event(index, envelope(&span.attributes, resource, id, event_type, Value::Object(data)))
}

fn log_event(
    rules: &IngestRules,
    index: usize,
    resource: &[KeyValue],
    record: &LogRecord,
) -> Result<NewEvent, Invalid> {
    // A log record has no id of its own; the digest of its encoding and its resource's
    // is the same on every retry of one export, and differs for any other record.
    let mut digest = Sha256::new();
    digest.update(record.encode_to_vec());
    for kv in resource {
        digest.update(kv.encode_to_vec());
    }
    let id = format!("{ID_PREFIX}log:{}", hex::encode(&digest.finalize()[..16]));
    // SeverityNumber: 13–16 WARN, 17 and above ERROR and FATAL; a record without one
    // is read from its text.
    let severity = record.severity_number;
    let text = record.severity_text.to_ascii_lowercase();
    let event_type = if severity >= 17 || (severity == 0 && (text.starts_with("err") || text.starts_with("fatal"))) {
        "system.error"
    } else if severity >= 13 || (severity == 0 && text.starts_with("warn")) {
        "system.warning"
    } else {
        "system.info"
    };
    let mut data = Map::new();
    let message = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => truncate(s),
        Some(_) => record.body.as_ref().map_or(Value::Null, |b| any_json(b, 0)).to_string().into(),
        None => Value::String(String::new()),
    };
    data.insert("message".into(), message);
    if !record.severity_text.is_empty() {
        data.insert("severity".into(), record.severity_text.clone().into());
    }
    if record.trace_id.len() == 16 {
        data.insert("trace_id".into(), hex::encode(&record.trace_id).into());
    }
    if record.span_id.len() == 8 {
        data.insert("span_id".into(), hex::encode(&record.span_id).into());
    }
    attributes_into(&mut data, &record.attributes);
    rules.event(index, envelope(&record.attributes, resource, id, event_type, Value::Object(data)))
}

/// Milliseconds with at most three decimals (microseconds), as a JSON number.
fn round_ms(ms: f64) -> Value {
    serde_json::Number::from_f64((ms * 1000.0).round() / 1000.0).map_or(Value::Null, Value::Number)
}

/// `attributes` as a JSON object under `data.attributes`, bounded in count, length
/// and depth; what was left out is counted in `data.attributes_dropped`.
fn attributes_into(data: &mut Map<String, Value>, attributes: &[KeyValue]) {
    if attributes.is_empty() {
        return;
    }
    let mut out = Map::new();
    for kv in attributes.iter().take(MAX_ATTRIBUTES) {
        out.insert(kv.key.clone(), kv.value.as_ref().map_or(Value::Null, |v| any_json(v, 0)));
    }
    data.insert("attributes".into(), Value::Object(out));
    if attributes.len() > MAX_ATTRIBUTES {
        data.insert("attributes_dropped".into(), (attributes.len() - MAX_ATTRIBUTES).into());
    }
}

/// An OTLP `AnyValue` as JSON: bytes as hex, long strings cut.
fn any_json(value: &AnyValue, depth: usize) -> Value {
    let Some(value) = value.value.as_ref() else { return Value::Null };
    if depth >= MAX_VALUE_DEPTH {
        return Value::String("…".into());
    }
    match value {
        any_value::Value::StringValue(s) => truncate(s),
        any_value::Value::BoolValue(b) => (*b).into(),
        any_value::Value::IntValue(i) => (*i).into(),
        any_value::Value::DoubleValue(d) => serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number),
        any_value::Value::BytesValue(b) => truncate(&hex::encode(b)),
        any_value::Value::ArrayValue(a) => {
            Value::Array(a.values.iter().take(MAX_ATTRIBUTES).map(|v| any_json(v, depth + 1)).collect())
        }
        any_value::Value::KvlistValue(l) => Value::Object(
            l.values
                .iter()
                .take(MAX_ATTRIBUTES)
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, |v| any_json(v, depth + 1))))
                .collect(),
        ),
    }
}

fn truncate(s: &str) -> Value {
    match s.char_indices().nth(MAX_ATTRIBUTE_CHARS) {
        Some((cut, _)) => Value::String(format!("{}…", &s[..cut])),
        None => Value::String(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
    }

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", "crew")], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    fn tool_span(error: bool) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "execute_tool search".into(),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_012_500_000,
            attributes: vec![
                kv("gen_ai.operation.name", "execute_tool"),
                kv("gen_ai.tool.name", "search"),
                kv("gen_ai.agent.name", "researcher"),
                kv("swarmfeed.task_id", "t1"),
                kv("api_key", "sk-1"),
            ],
            status: error.then(|| Status { code: StatusCode::Error as i32, message: "timed out".into() }),
            ..Default::default()
        }
    }

    #[test]
    fn an_execute_tool_span_is_a_tool_event_with_its_agent_task_and_id() {
        let body = request(vec![tool_span(false)]).encode_to_vec();
        let m = traces(&IngestRules::default(), &body, Encoding::Protobuf).unwrap();
        let e = &m.events[0];
        assert_eq!((e.event_type.as_str(), e.source.as_str()), ("tool.completed", "crew"));
        assert_eq!((e.agent_id.as_deref(), e.task_id.as_deref()), (Some("researcher"), Some("t1")));
        assert_eq!(e.id, format!("otel:{}:{}", "01".repeat(16), "02".repeat(8)));
        let data: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!((data["tool_name"].as_str(), data["duration_ms"].as_f64()), (Some("search"), Some(12.5)));
        assert_eq!(data["attributes"]["api_key"], "[REDACTED]", "redacted like any event");
        let failed =
            traces(&IngestRules::default(), &request(vec![tool_span(true)]).encode_to_vec(), Encoding::Protobuf);
        let failed = &failed.unwrap().events[0];
        assert_eq!(failed.event_type, "tool.failed");
        assert!(failed.data.contains("timed out"), "{}", failed.data);
    }

    #[test]
    fn a_bad_span_is_rejected_alone_and_named() {
        let mut bad = tool_span(false);
        bad.span_id = vec![0; 8];
        let mut other = tool_span(false);
        other.span_id = vec![3; 8];
        other.attributes = vec![kv("http.method", "GET")];
        let m =
            traces(&IngestRules::default(), &request(vec![bad, other]).encode_to_vec(), Encoding::Protobuf).unwrap();
        assert_eq!((m.events.len(), m.rejected), (1, 1));
        assert_eq!(m.events[0].event_type, "otel.span");
        assert!(m.first_error.unwrap().contains("item 0: span_id"));
    }

    #[test]
    fn long_attributes_are_cut_not_refused() {
        let mut span = tool_span(false);
        span.attributes.push(kv("gen_ai.prompt", &"p".repeat(20_000)));
        let m = traces(&IngestRules::default(), &request(vec![span]).encode_to_vec(), Encoding::Protobuf).unwrap();
        assert_eq!(m.rejected, 0);
        assert!(m.events[0].data.len() < 4096);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        let small = gz.finish().unwrap();
        assert_eq!(decompress(small.clone().into(), true, 1000).unwrap_err(), BadExport::TooLarge(1000));
        assert_eq!(decompress(small.into(), true, 1 << 20).unwrap().len(), 1 << 20);
        assert!(matches!(decompress(b"nope"[..].into(), true, 10).unwrap_err(), BadExport::Gzip(_)));
    }

    #[test]
    fn content_types_are_read_without_their_parameters() {
        assert_eq!(Encoding::of_content_type("application/json; charset=utf-8"), Some(Encoding::Json));
        assert_eq!(Encoding::of_content_type("Application/X-Protobuf"), Some(Encoding::Protobuf));
        assert_eq!(Encoding::of_content_type("text/plain"), None);
    }
}
