//! OpenTelemetry in: OTLP/HTTP export requests, protobuf and JSON, built with the
//! OpenTelemetry project's own types, against a real server.

use std::io::Write;

use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{TestApp, spawn_app};

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }) }
}

fn resource() -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", "crew")], ..Default::default() })
}

fn tool_span(span: u8, error: bool) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![span; 8],
        name: "execute_tool web_search".into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_250_000_000,
        attributes: vec![
            kv("gen_ai.operation.name", "execute_tool"),
            kv("gen_ai.tool.name", "web_search"),
            kv("gen_ai.agent.id", "researcher-1"),
            kv("swarmfeed.task_id", "task-42"),
        ],
        status: error.then(|| Status { code: status::StatusCode::Error as i32, message: "rate limited".into() }),
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

async fn post(app: &TestApp, path: &str, content_type: &str, body: Vec<u8>, gzip: bool) -> reqwest::Response {
    let mut req = app.http.post(app.url(path)).bearer_auth(&app.admin).header("content-type", content_type);
    let body = if gzip {
        req = req.header("content-encoding", "gzip");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&body).unwrap();
        gz.finish().unwrap()
    } else {
        body
    };
    req.body(body).send().await.expect("request sent")
}

#[tokio::test]
async fn a_protobuf_tool_span_is_stored_once_and_shows_on_the_live_page_as_a_tool_call() {
    let app = spawn_app().await;
    let body = traces(vec![tool_span(1, false), tool_span(2, true)]).encode_to_vec();
    for _ in 0..2 {
        let resp = post(&app, "/v1/traces", "application/x-protobuf", body.clone(), false).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
        let answer = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
        assert_eq!(answer.partial_success, None, "nothing rejected");
    }
    let stored = app.all_events().await;
    assert_eq!(stored.len(), 2, "the retried export stored nothing twice: {stored:?}");
    let done = &stored[0];
    assert_eq!(done["event_type"], "tool.completed");
    assert_eq!(done["id"], format!("otel:{}:{}", "ab".repeat(16), "01".repeat(8)));
    assert_eq!(
        (&done["source"], &done["agent_id"], &done["task_id"]),
        (&"crew".into(), &"researcher-1".into(), &"task-42".into())
    );
    assert_eq!((&done["data"]["tool_name"], done["data"]["duration_ms"].as_f64()), (&"web_search".into(), Some(250.0)));
    assert_eq!(stored[1]["event_type"], "tool.failed");
    assert_eq!(stored[1]["data"]["error"], "rate limited");

    let page = app.http.get(app.url("/swarm/live")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for expected in ["Tool completed", "Tool: web_search", "agent researcher-1", "task task-42", "Tool failed"] {
        assert!(html.contains(expected), "{expected:?} missing from /swarm/live");
    }
    app.stop().await;
}

#[tokio::test]
async fn otlp_json_and_gzip_bodies_are_read_and_answered_in_kind() {
    let app = spawn_app().await;
    // OTLP/JSON as an exporter writes it: hex ids, 64-bit times as strings, enums as numbers.
    let json = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "graph"}}]},
        "scopeSpans": [{"scope": {"name": "langgraph"}, "spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
            "parentSpanId": "eee19b7ec3c1b173", "name": "plan", "kind": 1,
            "startTimeUnixNano": "1544712660000000000", "endTimeUnixNano": "1544712661500000000",
            "attributes": [{"key": "gen_ai.agent.name", "value": {"stringValue": "planner"}},
                           {"key": "attempt", "value": {"intValue": "3"}}],
            "status": {"code": 1}
        }]}]
    }]});
    let resp = post(&app, "/v1/traces", "application/json", json.to_string().into_bytes(), true).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let answer: Value = resp.json().await.unwrap();
    assert!(answer.get("partialSuccess").is_none_or(Value::is_null), "{answer}");
    let span = &app.all_events().await[0];
    assert_eq!(
        (&span["event_type"], &span["source"], &span["agent_id"]),
        (&"otel.span".into(), &"graph".into(), &"planner".into())
    );
    let data = &span["data"];
    assert_eq!(
        (&data["name"], &data["status"], data["duration_ms"].as_f64()),
        (&"plan".into(), &"ok".into(), Some(1500.0))
    );
    assert_eq!(
        (&data["trace_id"], &data["parent_span_id"]),
        (&"5b8efff798038103d269b633813fc60c".into(), &"eee19b7ec3c1b173".into())
    );
    assert_eq!(data["attributes"]["attempt"], 3);
    app.stop().await;
}

#[tokio::test]
async fn log_records_become_system_events_by_severity() {
    let app = spawn_app().await;
    let record = |severity: i32, text: &str| LogRecord {
        time_unix_nano: 1_700_000_000_000_000_000 + severity as u64,
        severity_number: severity,
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(text.into())) }),
        attributes: vec![kv("gen_ai.agent.name", "worker"), kv("swarmfeed.task_id", "t9")],
        ..Default::default()
    };
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record(9, "started"), record(13, "slow"), record(17, "crashed")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    for _ in 0..2 {
        let resp = post(&app, "/v1/logs", "application/x-protobuf", request.encode_to_vec(), true).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(ExportLogsServiceResponse::decode(resp.bytes().await.unwrap()).unwrap().partial_success, None);
    }
    let stored = app.all_events().await;
    let got: Vec<(&str, &str, &str)> = stored
        .iter()
        .map(|e| {
            (e["event_type"].as_str().unwrap(), e["data"]["message"].as_str().unwrap(), e["task_id"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        got,
        [("system.info", "started", "t9"), ("system.warning", "slow", "t9"), ("system.error", "crashed", "t9")],
        "each record once, though the export was sent twice"
    );
    assert_eq!(stored[0]["agent_id"], "worker");
    app.stop().await;
}

#[tokio::test]
async fn a_partly_bad_export_stores_the_good_spans_and_counts_the_rest() {
    let app = spawn_app().await;
    let mut no_id = tool_span(1, false);
    no_id.span_id = vec![];
    let mut long_task = tool_span(2, false);
    long_task.attributes.push(kv("swarmfeed.task_id", &"t".repeat(129)));
    long_task.attributes.remove(3);
    let body = traces(vec![no_id, tool_span(3, false), long_task]).encode_to_vec();
    let resp = post(&app, "/v1/traces", "application/x-protobuf", body, false).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let partial = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(partial.error_message.contains("item 0: span_id"), "{}", partial.error_message);
    let stored = app.all_events().await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["id"], format!("otel:{}:{}", "ab".repeat(16), "03".repeat(8)));

    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"01"}]}]}]}"#;
    let resp = post(&app, "/v1/traces", "application/json", json.into(), false).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "an id that is not hex fails the whole request");
    app.stop().await;
}

#[tokio::test]
async fn malformed_unsupported_and_unauthorised_exports_are_refused_with_otlp_statuses() {
    let app = spawn_app().await;
    let good = traces(vec![tool_span(1, false)]).encode_to_vec();
    let resp = post(&app, "/v1/traces", "application/x-protobuf", b"\xff\xff\xff not protobuf".to_vec(), false).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    assert!(!resp.bytes().await.unwrap().is_empty(), "a google.rpc.Status says what was wrong");
    let resp = post(&app, "/v1/logs", "application/json", b"{\"resourceLogs\": 7}".to_vec(), false).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let status: Value = resp.json().await.unwrap();
    assert!(status["message"].as_str().unwrap().contains("ExportLogsServiceRequest"), "{status}");
    let resp = post(&app, "/v1/traces", "text/plain", good.clone(), false).await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let resp = app
        .http
        .post(app.url("/v1/traces"))
        .bearer_auth(&app.admin)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "a body that is not gzip, sent as gzip");
    let resp = app.http.post(app.url("/v1/traces")).header("content-type", "application/x-protobuf").body(good.clone());
    assert_eq!(resp.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let reader = app.token("read").await;
    let resp =
        app.http.post(app.url("/v1/traces")).bearer_auth(reader).header("content-type", "application/x-protobuf");
    assert_eq!(resp.body(good).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    assert!(app.all_events().await.is_empty(), "nothing was stored");
    app.stop().await;
}
