//! WebSocket `/ws`: subscriptions, filters, replay, pacing, refusals, shutdown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::{TestApp, WAIT, WsClient, events, seqs, spawn_app, spawn_with};

#[tokio::test]
async fn a_subscriber_gets_live_events_matching_its_filter() {
    let app = spawn_with(|c| c.max_frames_per_sec = 0).await;
    app.post_events(&events("task.created", 2)).await;
    let mut ws = app.ws().await;
    let sub = ws.subscribe(None, json!({"types": ["bid.*", "task.completed"], "agent_id": "echo"})).await;
    assert_eq!(sub, json!({"type": "subscribed", "channel": "events", "head": 2, "oldest": 1}));
    app.post_events(&json!([
        {"event_type": "bid.submitted", "source": "s", "agent_id": "echo"},
        {"event_type": "bid.submitted", "source": "s", "agent_id": "forge"},
        {"event_type": "task.created", "source": "s", "agent_id": "echo"},
        {"event_type": "task.completed", "source": "s", "agent_id": "echo"},
    ]))
    .await;
    let (got, _) = ws.collect_events(2).await;
    assert_eq!(seqs(&got), vec![3, 6]);
    ws.send_json(json!({"action": "ping"})).await;
    assert_eq!(ws.next_json().await, json!({"type": "pong"}), "nothing else matched in between");
    app.stop().await;
}

#[tokio::test]
async fn since_replays_exactly_what_came_after_it() {
    let app = spawn_with(|c| {
        c.max_frames_per_sec = 0;
        c.ring_capacity = 16;
    })
    .await;
    app.post_events(&events("a.b", 100)).await;
    let mut ws = app.ws().await;
    ws.subscribe(Some(40), json!({})).await;
    app.post_events(&events("a.b", 10)).await;
    let (got, _) = ws.collect_events(70).await;
    assert_eq!(seqs(&got), (41..=110).collect::<Vec<_>>(), "from the store, then the ring, then live");
    app.stop().await;
}

/// Posts 2 000 events in 40 requests of 50, as fast as the server takes them: far more
/// than `max_frames_per_sec` wake-ups can carry one at a time, so pacing coalesces.
fn burst_of_two_thousand(app: &TestApp) -> tokio::task::JoinHandle<()> {
    let (http, url, token) = (app.http.clone(), app.url("/api/events"), app.admin.clone());
    tokio::spawn(async move {
        for chunk in 0..40 {
            let body = json!(
                (0..50)
                    .map(|i| json!({"event_type": "tool.called", "source": "p", "id": format!("e{chunk}-{i}")}))
                    .collect::<Vec<_>>()
            );
            let resp = http.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
            assert_eq!(resp.status(), 201);
        }
    })
}

/// Subscribes from the start of the log with `message`'s extra fields; returns nothing
/// until the `subscribed` frame came.
async fn subscribe_from_start(ws: &mut WsClient, extra: serde_json::Value) {
    let mut message = json!({"action": "subscribe", "channel": "events", "since": 0});
    message.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    ws.send_json(message).await;
    let reply = ws.next_json().await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
}

/// Asserts that no one-second window of `times` holds more than `per_sec` (one extra
/// for delivery jitter), and that there are no more than the elapsed time allows.
fn assert_paced(times: &[Instant], started: Instant, per_sec: u32, what: &str) {
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        times.len() as f64 <= elapsed * f64::from(per_sec) + 1.0,
        "{} {what} in {elapsed:.2}s exceed {per_sec}/s",
        times.len()
    );
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..].iter().take_while(|a| a.duration_since(*t) < Duration::from_secs(1)).count();
        assert!(in_window <= per_sec as usize + 1, "{in_window} {what} within one second");
    }
}

#[tokio::test]
async fn two_thousand_fast_events_arrive_once_each_within_the_frame_rate_and_in_batches_when_asked() {
    let per_sec = 10;
    let app = spawn_with(|c| c.max_frames_per_sec = per_sec).await;
    let mut ws = app.ws().await;
    subscribe_from_start(&mut ws, json!({"batch": true})).await;
    let started = Instant::now();
    let producer = burst_of_two_thousand(&app);
    let mut arrivals = Vec::new();
    let mut all = Vec::new();
    let mut batches = 0;
    while all.len() < 2000 {
        let frame = ws.next_json().await;
        // A step's events over 32 KiB are several `batch` frames sent in one write,
        // arriving together; the pacing is of steps (100 ms apart here), so a frame
        // within 50 ms of the last belongs to the same step.
        let now = Instant::now();
        if arrivals.last().is_none_or(|last: &Instant| now.duration_since(*last) > Duration::from_millis(50)) {
            arrivals.push(now);
        }
        match frame["type"].as_str().unwrap() {
            "event" => all.push(frame["payload"].clone()),
            "batch" => {
                batches += 1;
                all.extend(frame["payload"].as_array().unwrap().iter().cloned());
            }
            other => panic!("unexpected {other}"),
        }
    }
    producer.await.unwrap();
    assert_eq!(seqs(&all), (1..=2000).collect::<Vec<_>>(), "none lost, none repeated, in order");
    assert!(batches >= 1, "coalesced events came as batch frames");
    assert_paced(&arrivals, started, per_sec, "steps");
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_does_not_ask_for_batches_gets_coalesced_events_as_event_frames() {
    // A client written to ADR 022's protocol: it knows `event` frames and nothing else.
    // Two sends a second: steps far apart, so that a step is told from the next by the
    // gap alone even on a loaded machine.
    let per_sec = 2;
    let app = spawn_with(|c| c.max_frames_per_sec = per_sec).await;
    let mut ws = app.ws().await;
    subscribe_from_start(&mut ws, json!({})).await;
    let started = Instant::now();
    let producer = burst_of_two_thousand(&app);
    let mut all = Vec::new();
    // A step's frames are one write and arrive together; a gap this long between two
    // frames (the pacing interval is 500 ms) starts the next step.
    let step_gap = Duration::from_millis(200);
    let mut steps: Vec<Instant> = Vec::new();
    let mut last = started;
    while all.len() < 2000 {
        let frame = ws.next_json().await;
        let now = Instant::now();
        if steps.is_empty() || now.duration_since(last) >= step_gap {
            steps.push(now);
        }
        last = now;
        assert_eq!(frame["type"], "event", "only event frames: {frame}");
        all.push(frame["payload"].clone());
    }
    producer.await.unwrap();
    assert_eq!(seqs(&all), (1..=2000).collect::<Vec<_>>(), "none lost, none repeated, in order");
    // One event per step would take 1 000 s at 2 a second.
    assert!(started.elapsed() < WAIT, "coalesced: all 2000 within {WAIT:?}, not one per step");
    assert!(steps.len() < 2000 / 10, "{} steps for 2000 events: events were coalesced", steps.len());
    assert_paced(&steps, started, per_sec, "paced steps");
    app.stop().await;
}

#[tokio::test]
async fn bad_messages_get_error_frames_and_the_tenth_closes_the_socket() {
    let app = spawn_app().await;
    let mut ws = app.ws().await;
    let bad = [
        json!({"action": "dance"}),
        json!({"action": "subscribe", "channel": "gossip"}),
        json!({"action": "subscribe", "channel": "events", "filter": {"types": ["*"]}}),
        json!({"channel": "events"}),
    ];
    for msg in &bad {
        ws.send_json(msg.clone()).await;
        let reply = ws.next_json().await;
        assert_eq!(reply["type"], "error", "{msg}");
        assert_eq!(reply["code"], "bad_request");
        assert!(!reply["message"].as_str().unwrap().is_empty());
    }
    ws.stream.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(ws.next_json().await["type"], "error");
    ws.stream.send(Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    assert_eq!(ws.next_json().await["type"], "error");
    ws.send_json(json!({"action": "ping"})).await;
    assert_eq!(ws.next_json().await["type"], "pong", "still usable after errors");
    for _ in 0..3 {
        ws.send_json(json!({"action": "nope"})).await;
        assert_eq!(ws.next_json().await["type"], "error");
    }
    ws.send_json(json!({"action": "nope"})).await;
    assert_eq!(ws.next_json().await["type"], "error");
    match ws.next_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected close 1008, got {other:?}"),
    }
    let mut other = app.ws().await;
    other.send_json(json!({"action": "ping"})).await;
    assert_eq!(other.next_json().await["type"], "pong", "the server keeps serving others");
    app.stop().await;
}

#[tokio::test]
async fn a_frame_over_64_kib_closes_with_policy_violation() {
    let app = spawn_app().await;
    let mut ws = app.ws().await;
    let huge = json!({"action": "ping", "pad": "x".repeat(70 * 1024)});
    // The server may close before the client has written all of it.
    let _ = ws.stream.send(Message::Text(huge.to_string().into())).await;
    match ws.next_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected close 1008, got {other:?}"),
    }
    let mut other = app.ws().await;
    other.send_json(json!({"action": "ping"})).await;
    assert_eq!(other.next_json().await["type"], "pong");
    app.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_events_and_resubscribe_replaces_the_filter() {
    let app = spawn_with(|c| c.max_frames_per_sec = 0).await;
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({"types": ["a.b"]})).await;
    ws.send_json(json!({"action": "unsubscribe", "channel": "events"})).await;
    assert_eq!(ws.next_json().await["type"], "unsubscribed");
    app.post_events(&events("a.b", 3)).await;
    ws.subscribe(Some(1), json!({"types": ["a.*"]})).await;
    let (got, _) = ws.collect_events(2).await;
    assert_eq!(seqs(&got), vec![2, 3]);
    app.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let app = spawn_app().await;
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({})).await;
    app.shutdown_token().cancel();
    match ws.next_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn many_subscribers_each_get_every_event_once() {
    let app = spawn_with(|c| c.max_frames_per_sec = 0).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut ws = app.ws().await;
        ws.subscribe(None, json!({})).await;
        clients.push(ws);
    }
    for _ in 0..5 {
        app.post_events(&events("a.b", 20)).await;
    }
    for mut ws in clients {
        let (got, _) = tokio::time::timeout(WAIT, ws.collect_events(100)).await.unwrap();
        let s = seqs(&got);
        assert_eq!(s.iter().collect::<HashSet<_>>().len(), 100);
        assert_eq!(s, (1..=100).collect::<Vec<_>>());
    }
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_behind_retention_gets_an_exact_reset_then_the_rest() {
    let app = spawn_with(|c| {
        c.max_frames_per_sec = 0;
        c.retention.events = Some(30);
        c.retention.interval = Duration::from_millis(50);
    })
    .await;
    app.post_events(&events("a.b", 100)).await;
    // Retention runs in the background; the log's oldest event says when it has.
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, first) = app.get("/api/events?limit=1").await;
            if first["events"][0]["seq"] == 71 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("retention prunes to the newest 30");
    let mut ws = app.ws().await;
    let sub = ws.subscribe(Some(10), json!({})).await;
    assert_eq!(sub["oldest"], 71);
    assert_eq!(ws.next_json().await, json!({"type": "reset", "oldest": 71}));
    let (got, _) = ws.collect_events(30).await;
    assert_eq!(seqs(&got), (71..=100).collect::<Vec<_>>());
    app.stop().await;
}
