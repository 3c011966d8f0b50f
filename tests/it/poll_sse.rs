//! Server-sent events and long-poll: the same cursor, other encoders.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::{TestApp, WAIT, events, seqs, spawn_with};

/// Reads SSE messages until `count` events (messages with an id) arrived.
async fn sse_events(app: &TestApp, query: &str, last_event_id: Option<u64>, count: usize) -> Vec<(u64, Value)> {
    let mut req = app.http.get(app.url(&format!("/api/stream{query}"))).bearer_auth(&app.admin);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    while out.len() < count {
        let chunk = tokio::time::timeout(WAIT, body.next()).await.expect("sse data in time").unwrap().unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let message: String = buf.drain(..end + 2).collect();
            let mut id = None;
            let mut data = None;
            for line in message.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = Some(v.parse::<u64>().unwrap());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(v).unwrap());
                }
            }
            if let (Some(id), Some(data), false) = (id, data, message.contains("event: ")) {
                out.push((id, data));
            }
        }
    }
    out
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_and_filters() {
    let app = spawn_with(|c| c.max_frames_per_sec = 0).await;
    app.post_events(&events("task.created", 5)).await;
    app.post_events(&events("bid.submitted", 5)).await;
    let got = sse_events(&app, "?types=task.*", Some(2), 3).await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert!(got.iter().all(|(id, e)| e["seq"] == *id && e["event_type"] == "task.created"));
    let got = sse_events(&app, "?since=8", None, 2).await;
    assert_eq!(got.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![9, 10]);
    let resp = app
        .http
        .get(app.url("/api/stream"))
        .bearer_auth(&app.admin)
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn sse_delivers_live_events() {
    let app = spawn_with(|c| c.max_frames_per_sec = 0).await;
    let (opened, is_open) = tokio::sync::oneshot::channel();
    let reader = {
        let app_url = app.url("/api/stream");
        let (http, token) = (app.http.clone(), app.admin.clone());
        tokio::spawn(async move {
            let resp = http.get(app_url).bearer_auth(token).send().await.unwrap();
            let mut body = resp.bytes_stream();
            let mut text = String::new();
            let mut opened = Some(opened);
            while !text.contains("id: 3\n") {
                let chunk = tokio::time::timeout(WAIT, body.next()).await.unwrap().unwrap().unwrap();
                text.push_str(std::str::from_utf8(&chunk).unwrap());
                if text.contains("event: subscribed") {
                    opened.take().map(|o| o.send(()));
                }
            }
            text
        })
    };
    // Live only: post once the stream has said it is subscribed.
    tokio::time::timeout(WAIT, is_open).await.unwrap().unwrap();
    app.post_events(&events("a.b", 3)).await;
    let text = reader.await.unwrap();
    assert!(text.starts_with("retry: "));
    assert!(text.contains("id: 1\n") && text.contains("id: 2\n"));
    app.stop().await;
}

#[tokio::test]
async fn poll_answers_at_once_when_events_exist_and_waits_otherwise() {
    let app = spawn_with(|c| c.max_frames_per_sec = 0).await;
    app.post_events(&events("task.created", 3)).await;
    app.post_events(&events("bid.submitted", 3)).await;
    let (status, page) = app.get("/api/events/poll?after=1&wait=30").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seqs(page["events"].as_array().unwrap()), vec![2, 3, 4, 5, 6]);
    assert_eq!(page["next"], 6);
    let (_, filtered) = app.get("/api/events/poll?after=0&types=bid.*").await;
    assert_eq!(seqs(filtered["events"].as_array().unwrap()), vec![4, 5, 6]);
    let started = Instant::now();
    let (_, empty) = app.get("/api/events/poll?after=6&wait=1").await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(empty["events"].as_array().unwrap().len(), 0);
    assert_eq!(empty["next"], 6);
    let waiting = {
        let (http, url, token) = (app.http.clone(), app.url("/api/events/poll?after=6&wait=30"), app.admin.clone());
        tokio::spawn(
            async move { http.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap() },
        )
    };
    app.post_events(&events("a.b", 1)).await;
    let woke = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert_eq!(seqs(woke["events"].as_array().unwrap()), vec![7]);
    let (status, err) = app.get("/api/events/poll?wait=61").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["field"], "wait");
    app.stop().await;
}
