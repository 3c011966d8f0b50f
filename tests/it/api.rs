//! The JSON API: ingest, queries, paging, idempotency and every refusal.

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::harness::{BinaryServer, TestApp, events, rss_bytes, seqs, spawn_app, spawn_with};

#[tokio::test]
async fn a_batch_is_committed_with_gapless_seqs_and_read_back_in_order() {
    let app = spawn_app().await;
    let (status, body) = app.post_events(&events("task.created", 3)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let accepted: Vec<u64> = body["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(accepted, vec![1, 2, 3]);
    let (status, one) = app.post_events(&json!({"event_type": "bid.submitted", "source": "forge"})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(one["events"][0]["seq"], 4);
    let stored = app.all_events().await;
    assert_eq!(seqs(&stored), vec![1, 2, 3, 4]);
    assert_eq!(stored[1]["data"]["n"], 1);
    assert!(stored[0]["timestamp"].as_str().unwrap().ends_with('Z'));
    app.stop().await;
}

#[tokio::test]
async fn resending_an_id_returns_the_original_seq_and_stores_nothing() {
    let app = spawn_app().await;
    let e = json!({"id": "order-77", "event_type": "task.created", "source": "c"});
    let (_, first) = app.post_events(&e).await;
    let (status, again) = app.post_events(&json!([e, {"event_type": "task.started", "source": "c"}])).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["events"][0], json!({"id": "order-77", "seq": first["events"][0]["seq"], "duplicate": true}));
    assert_eq!(again["events"][1]["seq"], 2);
    assert_eq!(app.all_events().await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn every_bad_request_is_refused_with_a_clear_error_and_stores_nothing() {
    let app = spawn_with(|c| c.max_body_bytes = 64 * 1024).await;
    app.post_events(&events("a.b", 1)).await;
    let too_many = events("a.b", 1001).to_string();
    let big = json!({"event_type": "a.b", "source": "s", "data": {"x": "y".repeat(100_000)}}).to_string();
    let cases: Vec<(String, StatusCode, &str, Option<&str>)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "invalid_json", None),
        ("[]".into(), StatusCode::BAD_REQUEST, "invalid_body", None),
        ("\"text\"".into(), StatusCode::BAD_REQUEST, "invalid_body", None),
        (
            json!([{"event_type": "a.b", "source": "s"}, {"event_type": "Not A Type", "source": "s"}]).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            Some("event_type"),
        ),
        (json!({"event_type": "a.b"}).to_string(), StatusCode::BAD_REQUEST, "invalid_event", Some("source")),
        (
            json!({"event_type": "a.b", "source": "s", "data": "x"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            Some("data"),
        ),
        (
            json!({"event_type": "a.b", "source": "s", "colour": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_event",
            Some("colour"),
        ),
        (too_many, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", None),
        (big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
    ];
    for (body, status, code, field) in cases {
        let (got, err) = app.post_raw("/api/events", &body, Some(&app.admin)).await;
        assert_eq!(got, status, "{}: {err}", &body[..body.len().min(60)]);
        assert_eq!(err["error"]["code"], code, "{err}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
        if let Some(f) = field {
            assert_eq!(err["error"]["field"], f, "{err}");
        }
    }
    let (_, err) = app
        .post_raw(
            "/api/events",
            &json!([{"event_type": "a.b", "source": "s"}, {"event_type": "a.b"}]).to_string(),
            Some(&app.admin),
        )
        .await;
    assert_eq!(err["error"]["index"], 1);
    let invalid_utf8 = reqwest::Body::from(vec![b'{', 0xff, 0xfe, b'}']);
    let resp = app.http.post(app.url("/api/events")).bearer_auth(&app.admin).body(invalid_utf8).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.all_events().await.len(), 1, "nothing of a refused request is stored");
    app.stop().await;
}

#[tokio::test]
async fn queries_filter_and_page_by_cursor_in_both_orders() {
    let app = spawn_app().await;
    for i in 0..5 {
        let batch: Vec<_> = (0..50)
            .map(|j| {
                json!({"event_type": if j % 2 == 0 { "task.created" } else { "bid.submitted" }, "source": format!("s{i}"),
                        "task_id": format!("t{}", j % 5), "agent_id": "forge"})
            })
            .collect();
        assert_eq!(app.post_events(&json!(batch)).await.0, StatusCode::CREATED);
    }
    let (_, page) = app.get("/api/events?types=task.*&limit=100").await;
    let first = seqs(page["events"].as_array().unwrap());
    assert_eq!(first.len(), 100);
    assert!(first.iter().all(|s| s % 2 == 1), "task.created are the odd seqs");
    let next = page["next"].as_u64().unwrap();
    let (_, page2) = app.get(&format!("/api/events?types=task.*&limit=100&after={next}")).await;
    assert_eq!(page2["events"].as_array().unwrap().len(), 25);
    assert!(page2["next"].is_null());
    let (_, desc) = app.get("/api/events?order=desc&limit=10&source=s4").await;
    let d = seqs(desc["events"].as_array().unwrap());
    assert_eq!(d, (241..=250).rev().collect::<Vec<_>>());
    let (_, older) = app.get(&format!("/api/events?order=desc&limit=10&source=s4&before={}", desc["next"])).await;
    assert_eq!(seqs(older["events"].as_array().unwrap()), (231..=240).rev().collect::<Vec<_>>());
    let (_, by_task) = app.get("/api/events?task_id=t3&agent_id=forge&types=bid.submitted&limit=1000").await;
    assert_eq!(by_task["events"].as_array().unwrap().len(), 25);
    let (_, window) = app.get("/api/events?after=10&before=15").await;
    assert_eq!(seqs(window["events"].as_array().unwrap()), vec![11, 12, 13, 14]);
    let (_, timed) = app.get("/api/events?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z&limit=1").await;
    assert_eq!(timed["events"].as_array().unwrap().len(), 1);
    for (bad, field) in
        [("limit=0", "limit"), ("limit=1001", "limit"), ("from=yesterday", "from"), ("types=Bad", "types")]
    {
        let (status, err) = app.get(&format!("/api/events?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(err["error"]["field"], field, "{bad}: {err}");
    }
    let (status, err) = app.get("/api/events?after=minus").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, err) = app.get("/api/events?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    app.stop().await;
}

#[tokio::test]
async fn one_event_is_found_by_seq_or_by_id() {
    let app = spawn_app().await;
    app.post_events(
        &json!([{"event_type": "a.b", "source": "s"}, {"id": "job-9", "event_type": "a.c", "source": "s"}]),
    )
    .await;
    let (status, by_seq) = app.get("/api/events/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_seq["event_type"], "a.b");
    let (_, by_id) = app.get("/api/events/job-9").await;
    assert_eq!(by_id["seq"], 2);
    let (status, missing) = app.get("/api/events/99").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn summary_counts_by_type_and_minute() {
    let app = spawn_app().await;
    app.post_events(&events("task.created", 3)).await;
    app.post_events(&events("bid.submitted", 2)).await;
    let (status, s) = app.get("/api/summary?minutes=5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["total"], 5);
    assert_eq!(s["by_type"]["task.created"], 3);
    let buckets = s["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 5);
    assert_eq!(buckets.iter().map(|b| b["total"].as_u64().unwrap()).sum::<u64>(), 5);
    assert_eq!(app.get("/api/summary?minutes=0").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(app.get("/api/summary?minutes=100000").await.0, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn the_known_type_table_is_served() {
    let app = spawn_app().await;
    let (status, t) = app.get("/api/event-types").await;
    assert_eq!(status, StatusCode::OK);
    let types = t["types"].as_array().unwrap();
    assert!(types.iter().any(|k| k["event_type"] == "task.assigned" && k["icon"] == "👤"));
    assert_eq!(t["unknown_icon"], "•");
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    assert_eq!(app.get_as("/healthz", None).await.0, StatusCode::OK);
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["head"], 0);
    let (status, err) = app.get("/nowhere").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(err["error"]["code"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn secrets_are_redacted_before_storage() {
    let app = spawn_app().await;
    let e = json!({"event_type": "tool.called", "source": "forge",
                   "data": {"tool_name": "http", "headers": {"Authorization": "Bearer abc"}, "args": [{"api_key": "k"}],
                            "note": "used bearer sk-123 today"}});
    app.post_events(&e).await;
    let stored = &app.all_events().await[0]["data"];
    assert_eq!(stored["headers"]["Authorization"], "[REDACTED]");
    assert_eq!(stored["args"][0]["api_key"], "[REDACTED]");
    assert_eq!(stored["note"], "used Bearer [REDACTED] today");
    assert_eq!(stored["tool_name"], "http");
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_connections_ingest_delivery_and_refusals() {
    let app = crate::harness::spawn_with(|c| c.max_frames_per_sec = 0).await;
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({})).await;
    app.post_events(&events("task.created", 3)).await;
    ws.collect_events(3).await;
    assert_eq!(app.get_as("/api/events", None).await.0, StatusCode::UNAUTHORIZED);
    let resp = app.http.get(app.url("/metrics")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8",
        "the Prometheus text format"
    );
    let text = resp.text().await.unwrap();
    for line in [
        "# TYPE swarmfeed_events_ingested_total counter",
        "# TYPE swarmfeed_ingest_latency_seconds histogram",
        "swarmfeed_connections{transport=\"ws\"} 1",
        "swarmfeed_connections{transport=\"sse\"} 0",
        "swarmfeed_subscribers 1",
        "swarmfeed_events_ingested_total{type=\"task.created\"} 3",
        "swarmfeed_events_delivered_total{type=\"task.created\"} 3",
        "swarmfeed_ingest_latency_seconds_count 1",
        "swarmfeed_rejected_total{reason=\"unauthorized\"} 1",
        "swarmfeed_head_seq 3",
        "swarmfeed_writer_queue_events 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert_eq!(app.get_as("/metrics", None).await.0, StatusCode::UNAUTHORIZED, "metrics need a token");
    app.stop().await;
}

/// The value of the unlabelled gauge `name` in the server's `/metrics`.
async fn gauge(app: &TestApp, name: &str) -> u64 {
    let resp = app.http.get(app.url("/metrics")).bearer_auth(&app.admin).send().await.unwrap();
    let text = resp.text().await.unwrap();
    let prefix = format!("{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics:\n{text}"))
}

/// Scrapes until the gauge `name` reads `want`; bounded: 200 scrapes.
async fn gauge_reaches(app: &TestApp, name: &str, want: u64) -> u64 {
    let mut seen = gauge(app, name).await;
    for _ in 0..200 {
        if seen == want {
            break;
        }
        tokio::task::yield_now().await;
        seen = gauge(app, name).await;
    }
    seen
}

#[tokio::test]
async fn metrics_show_the_bytes_a_slow_body_holds_until_its_client_goes_away() {
    const BODY: u64 = 64 * 1024;
    let app = spawn_app().await;
    assert_eq!(gauge(&app, "swarmfeed_inflight_body_bytes").await, 0, "nothing held at rest");
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/events HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {BODY}\r\n\r\n[",
        app.admin
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    // A declared length is charged in full when the head is read, whatever has arrived.
    assert_eq!(gauge_reaches(&app, "swarmfeed_inflight_body_bytes", BODY).await, BODY);
    drop(slow);
    assert_eq!(gauge_reaches(&app, "swarmfeed_inflight_body_bytes", 0).await, 0, "given back when the client goes");
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let (status, doc) = app.get_as("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/api/events", "post"),
        ("/api/events", "get"),
        ("/swarm/tasks/{id}/bids", "post"),
        ("/api/tokens/{id}", "delete"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let params = doc["paths"]["/api/tasks"]["get"]["parameters"].as_array().unwrap();
    let within = params.iter().find(|p| p["name"] == "within").expect("/api/tasks documents within");
    assert!(within["description"].as_str().unwrap().contains("`hour`, `day` or `week`"), "{within}");
    app.stop().await;
}

#[tokio::test]
async fn readiness_details_are_shown_only_to_a_caller_with_a_token() {
    let app = spawn_app().await;
    app.post_events(&events("task.created", 3)).await;
    for token in [None, Some("sf_not_a_token")] {
        let (status, ready) = app.get_as("/readyz", token).await;
        assert_eq!(status, StatusCode::OK, "{token:?}");
        assert_eq!(ready, json!({"status": "ready"}), "{token:?}: only ready or not");
    }
    let read = app.token("read").await;
    let (status, ready) = app.get_as("/readyz", Some(&read)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready, json!({"status": "ready", "head": 3, "oldest": 1, "problems": []}));
    app.stop().await;
}

#[tokio::test]
async fn ids_in_the_servers_namespace_are_refused_and_nothing_is_stored() {
    let app = spawn_app().await;
    let batch = json!([{"event_type": "a.b", "source": "s", "id": "mine"},
                       {"event_type": "task.assigned", "source": "s", "id": "sf:settle.t1.outcome"}]);
    let (status, err) = app.post_events(&batch).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!((err["error"]["index"].clone(), err["error"]["field"].clone()), (json!(1), json!("id")), "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("sf:"), "{err}");
    assert!(app.all_events().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn integers_beyond_64_bits_in_data_round_trip_exactly_through_post_get_and_the_stream() {
    let app = spawn_app().await;
    let big = "123456789012345678901234567890";
    let mut ws = app.ws().await;
    ws.subscribe(Some(0), json!({})).await;
    let body =
        format!(r#"{{"event_type":"a.b","source":"s","id":"big","data":{{"n":{big},"neg":-{big},"x":[{big}]}}}}"#);
    let (status, answer) = app.post_raw("/api/events", &body, Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let data = format!(r#""data":{{"n":{big},"neg":-{big},"x":[{big}]}}"#);
    let one = app.http.get(app.url("/api/events/big")).bearer_auth(&app.admin).send().await.unwrap();
    let one = one.text().await.unwrap();
    assert!(one.contains(&data), "GET by id: {one}");
    let page = app.http.get(app.url("/api/events")).bearer_auth(&app.admin).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains(&data), "GET list: {page}");
    let frame = match ws.next_message().await {
        Some(tokio_tungstenite::tungstenite::Message::Text(t)) => t.to_string(),
        other => panic!("expected an event frame, got {other:?}"),
    };
    assert!(frame.contains(&data), "WebSocket: {frame}");
    // Redaction works on the text too, so a secret beside the number costs it nothing.
    let body = format!(r#"{{"event_type":"a.b","source":"s","id":"big2","data":{{"n":{big},"password":"hunter2"}}}}"#);
    let (status, answer) = app.post_raw("/api/events", &body, Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let one = app.http.get(app.url("/api/events/big2")).bearer_auth(&app.admin).send().await.unwrap();
    let one = one.text().await.unwrap();
    assert!(one.contains(&format!(r#""data":{{"n":{big},"password":"[REDACTED]"}}"#)), "{one}");
    app.stop().await;
}

#[tokio::test]
async fn bearer_tokens_are_redacted_in_every_string_field_and_refused_in_ids() {
    let app = spawn_app().await;
    let e = json!({"event_type": "a.b", "source": "proxy Bearer sk-live-1",
                   "task_id": "t-bearer abc.def", "agent_id": "BEARER xyz="});
    let (status, body) = app.post_events(&e).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let stored = &app.all_events().await[0];
    assert_eq!(stored["source"], "proxy Bearer [REDACTED]");
    assert_eq!(stored["task_id"], "t-Bearer [REDACTED]");
    assert_eq!(stored["agent_id"], "Bearer [REDACTED]");
    let (status, err) = app.post_events(&json!({"event_type": "a.b", "source": "s", "id": "Bearer sk-2"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["field"], "id");
    assert_eq!(app.all_events().await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn invisible_format_and_bidi_characters_are_refused_in_identifiers_by_field() {
    let app = spawn_app().await;
    for (field, c) in [("agent_id", '\u{202E}'), ("source", '\u{200B}'), ("task_id", '\u{2066}'), ("id", '\u{202E}')] {
        let mut e = json!({"event_type": "a.b", "source": "s"});
        e[field] = json!(format!("evil{c}gpj.exe"));
        let (status, err) = app.post_events(&e).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}: {err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    assert!(app.all_events().await.is_empty());
    app.stop().await;
}

/// `GET /api/events/export` as the client receives it: status, headers, body text.
async fn export(app: &TestApp, query: &str, token: Option<&str>) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = app.http.get(app.url(&format!("/api/events/export?{query}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request sent");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.text().await.expect("whole body"))
}

#[tokio::test]
async fn export_writes_the_filtered_log_as_ndjson_and_csv_attachments() {
    let app = spawn_app().await;
    let batch: Vec<_> = (0..30)
        .map(|i| {
            json!({"event_type": if i % 3 == 0 { "task.failed" } else { "tool.called" }, "source": format!("s{}", i % 2),
                   "task_id": format!("t{i}"), "agent_id": "@forge", "data": {"n": i, "reason": "disk full, \"again\""}})
        })
        .collect();
    assert_eq!(app.post_events(&json!(batch)).await.0, StatusCode::CREATED);
    let listed = app.all_events().await;

    let (status, headers, body) = export(&app, "format=ndjson", Some(&app.admin)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment; filename=\"swarmfeed-events-"), "{disposition}");
    assert!(disposition.ends_with(".ndjson\""), "{disposition}");
    let lines: Vec<serde_json::Value> = body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines, listed, "each line is the event exactly as the API gives it");
    assert!(body.ends_with('\n'));

    let (_, _, filtered) = export(&app, "types=task.failed&source=s0&after=3", Some(&app.admin)).await;
    let got: Vec<serde_json::Value> = filtered.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(seqs(&got), vec![7, 13, 19, 25], "odd seqs are s0, every third is task.failed");
    let (_, _, windowed) =
        export(&app, "task_id=t4&agent_id=%40forge&before=100&from=2000-01-01T00:00:00Z", Some(&app.admin)).await;
    assert_eq!(windowed.lines().count(), 1);

    let (status, headers, csv) = export(&app, "format=csv&types=task.failed&before=5", Some(&app.admin)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    assert!(headers["content-disposition"].to_str().unwrap().ends_with(".csv\""));
    let rows: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(rows[0], "seq,id,ts,event_type,source,task_id,agent_id,display,data");
    assert_eq!(rows.len(), 4, "header, seqs 1 and 4, and the empty tail after the last CRLF: {csv}");
    assert_eq!(rows[3], "");
    let first = &listed[0];
    let data = first["data"].to_string().replace('"', "\"\"");
    assert_eq!(
        rows[1],
        format!(
            "1,{},{},task.failed,s0,t0,\"'@forge\",\"Task failed: disk full, \"\"again\"\"\",\"{data}\"",
            first["id"].as_str().unwrap(),
            first["timestamp"].as_str().unwrap()
        ),
        "agent_id is guarded against formula injection, cells with commas and quotes are quoted, data is its JSON text"
    );
    assert!(rows[2].starts_with("4,"));

    let read = app.token("read").await;
    assert_eq!(export(&app, "format=csv", Some(&read)).await.0, StatusCode::OK, "read scope may export");
    assert_eq!(export(&app, "", None).await.0, StatusCode::UNAUTHORIZED);
    for (bad, field) in [
        ("format=xml", Some("format")),
        ("q=%22%22", Some("q")),
        ("limit=5", None),
        ("from=yesterday", Some("from")),
        ("types=Bad", Some("types")),
    ] {
        let (status, _, body) = export(&app, bad, Some(&app.admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        if let Some(field) = field {
            let err: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(err["error"]["field"], field, "{bad}: {err}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn export_of_a_log_larger_than_memory_would_allow_buffered_keeps_the_servers_memory_flat() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &[]).await;
    let (http, token) = (reqwest::Client::new(), server.admin_token());
    let pad = "x".repeat(1000);
    const EVENTS: usize = 50_000;
    for chunk in 0..EVENTS / 1000 {
        let body: Vec<_> = (0..1000)
            .map(|i| json!({"id": format!("e{}", chunk * 1000 + i), "event_type": "tool.called", "source": "m", "data": {"pad": pad}}))
            .collect();
        let resp = http
            .post(format!("http://{}/api/events", server.addr))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    // A first export warms the store's caches and the allocator, so the one measured
    // sees what exporting itself holds.
    let warm =
        http.get(format!("http://{}/api/events/export?format=csv", server.addr)).bearer_auth(&token).send().await;
    assert!(warm.unwrap().bytes().await.unwrap().len() > EVENTS * 1000);
    let before = rss_bytes(server.pid());
    let resp = http.get(format!("http://{}/api/events/export", server.addr)).bearer_auth(&token).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let (mut bytes, mut lines, mut peak) = (0usize, 0usize, before);
    let mut tail = Vec::new();
    while let Some(piece) = body.next().await {
        let piece = piece.expect("the body arrives whole");
        bytes += piece.len();
        tail.extend_from_slice(&piece);
        lines += tail.iter().filter(|&&b| b == b'\n').count();
        let last_newline = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        tail.drain(..last_newline);
        peak = peak.max(rss_bytes(server.pid()));
        // A slow reader: the server must wait for it, not read ahead into memory.
        if lines % 5000 < 50 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    assert_eq!(lines, EVENTS);
    assert!(bytes > 50 * 1024 * 1024, "the export is {bytes} bytes");
    let growth = peak.saturating_sub(before);
    assert!(growth < 16 * 1024 * 1024, "exporting {} MiB grew the server by {} KiB", bytes >> 20, growth / 1024);
    server.terminate().await;
}
