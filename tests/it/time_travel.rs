//! The swarm as it stood at any moment: `GET /api/swarm?at=<seq or time>` folds the
//! nearest stored snapshot and the events after it, under the same limits as the
//! live projection, so the past at the head is the live swarm.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app, spawn_with};

fn ev(event_type: &str, task: Option<&str>, agent: Option<&str>, data: Value) -> Value {
    let mut e = json!({"event_type": event_type, "source": "producer", "data": data});
    if let Some(t) = task {
        e["task_id"] = json!(t);
    }
    if let Some(a) = agent {
        e["agent_id"] = json!(a);
    }
    e
}

/// Posts `events` in one batch and returns the seq of the last.
async fn post(app: &TestApp, events: Vec<Value>) -> u64 {
    let (status, body) = app.post_events(&Value::Array(events)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["events"].as_array().and_then(|r| r.last()).and_then(|r| r["seq"].as_u64()).expect("a seq per event")
}

/// `GET /api/swarm` with `query`, as the admin.
async fn swarm(app: &TestApp, query: &str) -> (StatusCode, Value) {
    app.get(&format!("/api/swarm{query}")).await
}

#[tokio::test]
async fn the_swarm_at_a_seq_shows_the_auction_and_bids_of_that_moment() {
    let app = spawn_app().await;
    post(
        &app,
        vec![
            ev("agent.joined", None, Some("echo"), json!({"name": "Echo"})),
            ev("agent.joined", None, Some("forge"), json!({"name": "Forge"})),
            ev("task.created", Some("t1"), None, json!({"description": "sort the logs"})),
            ev("task.bidding", Some("t1"), None, json!({"closes_at": "2099-01-01T00:00:00Z"})),
        ],
    )
    .await;
    let bidding = post(
        &app,
        vec![
            ev("bid.submitted", Some("t1"), Some("echo"), json!({"bid_sats": 30})),
            ev("bid.submitted", Some("t1"), Some("forge"), json!({"bid_sats": 20})),
        ],
    )
    .await;
    let head = post(
        &app,
        vec![
            ev("auction.closed", Some("t1"), None, json!({"bids": 2})),
            ev("task.assigned", Some("t1"), Some("forge"), json!({"bid_sats": 20})),
            ev("task.failed", Some("t1"), Some("forge"), json!({"reason": "disk full"})),
        ],
    )
    .await;

    let (status, then) = swarm(&app, &format!("?at={bidding}")).await;
    assert_eq!(status, StatusCode::OK, "{then}");
    assert_eq!(then["at"]["seq"], bidding);
    assert_eq!(then["at"]["head"], head);
    assert!(then["at"]["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{then}");
    let auction = &then["auctions"][0];
    assert_eq!(auction["task_id"], "t1", "{then}");
    assert_eq!(auction["lowest_bid"], 20);
    assert_eq!(auction["bids"].as_array().unwrap().len(), 2);
    assert_eq!(then["tasks"][0]["status"], "bidding");
    assert_eq!(then["totals"]["tasks_failed"], 0);

    let (_, now) = swarm(&app, "").await;
    assert_eq!(now["tasks"][0]["status"], "failed", "the live swarm has moved on");
    assert!(now.get("at").is_none(), "the live answer is unchanged");
    let (_, at_head) = swarm(&app, &format!("?at={head}")).await;
    assert_eq!(at_head["tasks"][0]["reason"], "disk full");
    assert_eq!(at_head["totals"], now["totals"]);

    // Before the first event: the empty swarm.
    let (status, empty) = swarm(&app, "?at=0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((empty["at"]["seq"].as_u64(), empty["totals"]["events"].as_u64()), (Some(0), Some(0)));
    assert!(empty["at"].get("time").is_none());
}

#[tokio::test]
async fn a_time_is_the_last_event_committed_at_or_before_it_and_beyond_the_head_is_the_head() {
    let app = spawn_app().await;
    let first = post(&app, vec![ev("agent.joined", None, Some("echo"), json!({"name": "Echo"}))]).await;
    let (_, event) = app.get(&format!("/api/events/{first}")).await;
    let committed = event["timestamp"].as_str().map(str::to_owned);
    let committed = committed.unwrap_or_else(|| panic!("the event's commit time: {event}"));
    // A later commit, at a later millisecond.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let head = post(&app, vec![ev("agent.joined", None, Some("forge"), json!({"name": "Forge"}))]).await;

    let (status, at) = swarm(&app, &format!("?at={}", committed.replace('+', "%2B"))).await;
    assert_eq!(status, StatusCode::OK, "{at}");
    assert_eq!(at["at"]["seq"], first, "{at}");
    assert_eq!(at["totals"]["agents_total"], 1);
    let (_, before) = swarm(&app, "?at=2000-01-01T00:00:00Z").await;
    assert_eq!(before["at"]["seq"], 0);
    let (_, later) = swarm(&app, "?at=2999-01-01T00:00:00Z").await;
    assert_eq!(later["at"]["seq"], head);
    let (status, beyond) = swarm(&app, "?at=999999999").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((beyond["at"]["seq"].as_u64(), beyond["totals"]["agents_total"].as_u64()), (Some(head), Some(2)));
}

#[tokio::test]
async fn an_at_that_is_neither_a_seq_nor_a_time_is_400_naming_at() {
    let app = spawn_app().await;
    for bad in ["yesterday", "-3", "1.5", "2026-02-30T00:00:00Z", ""] {
        let (status, body) = swarm(&app, &format!("?at={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(body["error"]["field"], "at", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("at must be"), "{body}");
    }
}

/// More events than one fold may read ([`MAX_FOLD`] is four snapshots' worth), so the
/// past can only be answered from stored snapshots; under small caps, so a snapshot
/// read back wrongly (a lost index, a dropped field) shows as a difference.
#[tokio::test]
async fn past_folds_start_from_stored_snapshots_and_at_the_head_equal_the_live_projection() {
    let app = spawn_with(|c| {
        c.coordinator.projection.open_tasks = 40;
        c.coordinator.projection.finished_tasks = 30;
        c.coordinator.projection.online_agents = 25;
        c.coordinator.projection.offline_agents = 10;
        c.coordinator.projection.bids_per_auction = 3;
    })
    .await;
    let (mut head, mut batch) = (0, Vec::new());
    // 5 000 rounds of ten events: agents come and go, tasks are bid on, some finish.
    for round in 0..5_000usize {
        let (a, t) = (format!("a{}", round % 60), format!("t{round}"));
        batch.extend([
            ev("agent.joined", None, Some(&a), json!({"name": a, "capabilities": ["code"]})),
            ev("task.created", Some(&t), None, json!({"description": format!("job {round}")})),
            ev("task.bidding", Some(&t), None, json!({"closes_at": "2099-01-01T00:00:00Z"})),
        ]);
        for (i, sats) in [50, 10, 70, 5].iter().enumerate() {
            let bidder = format!("a{}", (round + i) % 60);
            batch.push(ev("bid.submitted", Some(&t), Some(&bidder), json!({"bid_sats": sats})));
        }
        match round % 4 {
            0 => batch.push(ev("task.assigned", Some(&t), Some(&a), json!({"bid_sats": 5}))),
            1 => batch.push(ev("task.failed", Some(&t), None, json!({"reason": "no luck"}))),
            2 => batch.push(ev("agent.left", None, Some(&a), json!({"reason": "timeout"}))),
            _ => batch.push(ev("agent.status_changed", None, Some(&a), json!({"status": "busy"}))),
        }
        batch.push(ev("system.info", None, None, json!({"message": "not a swarm event"})));
        batch.push(ev("tool.called", Some(&t), Some(&a), json!({"tool_name": "grep"})));
        if round % 100 == 99 {
            head = post(&app, std::mem::take(&mut batch)).await;
        }
    }
    assert_eq!(head, 50_000);

    // The history follows behind the writer: wait (bounded) until it has stored the
    // snapshots that make the head answerable.
    let deadline = Instant::now() + Duration::from_secs(60);
    let past = loop {
        let (status, body) = swarm(&app, &format!("?at={head}&tasks_limit=1000&agents_limit=1000")).await;
        if status == StatusCode::OK {
            break body;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"]["code"], "catching_up");
        assert!(Instant::now() < deadline, "the history never reached the head");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (_, live) = swarm(&app, "?tasks_limit=1000&agents_limit=1000").await;
    // Seconds left are counted from the moment shown: the head's commit, or now.
    let (past, live) = (without_seconds_left(past), without_seconds_left(live));
    for part in ["agents", "tasks", "auctions", "totals", "auctions_more"] {
        assert!(past[part] == live[part], "{part} differs between the fold at the head and the live projection");
    }
    assert_eq!(live["totals"]["tasks_total"], 5_000);

    // A moment just before a snapshot (the longest fold) and one just after.
    for at in [39_999u64, 40_001, 12_345] {
        let (status, body) = swarm(&app, &format!("?at={at}")).await;
        assert_eq!(status, StatusCode::OK, "{at}: {body}");
        // Round r is seqs 10r+1..=10r+10, its task.created the second of them.
        let created = (at - 2) / 10 + 1;
        assert_eq!(body["totals"]["tasks_total"].as_u64(), Some(created), "{at}");
    }
}

fn without_seconds_left(mut swarm: Value) -> Value {
    for auction in swarm["auctions"].as_array_mut().into_iter().flatten() {
        auction.as_object_mut().map(|a| a.remove("seconds_left"));
    }
    swarm
}

#[tokio::test]
async fn a_moment_retention_pruned_is_410_gone_naming_the_oldest_kept_in_the_api_and_on_the_page() {
    let app = spawn_with(|c| {
        c.retention.events = Some(3);
        c.retention.interval = Duration::from_millis(50);
    })
    .await;
    let head =
        post(&app, (0..10).map(|i| ev("tool.called", None, None, json!({"tool_name": format!("t{i}")}))).collect())
            .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let oldest = loop {
        let (status, body) = swarm(&app, &format!("?at={head}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["at"]["oldest"].as_u64() == Some(head - 2) {
            break head - 2;
        }
        assert!(Instant::now() < deadline, "retention never pruned: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A seq and a time before the oldest event kept: gone, and why.
    for at in ["1".to_owned(), (oldest - 1).to_string(), "2000-01-01T00:00:00Z".to_owned()] {
        let (status, body) = swarm(&app, &format!("?at={at}")).await;
        assert_eq!(status, StatusCode::GONE, "{at}: {body}");
        assert_eq!((body["error"]["code"].as_str(), body["error"]["field"].as_str()), (Some("pruned"), Some("at")));
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("oldest event kept (seq {oldest})")) && message.contains("retention"),
            "{message}"
        );
    }
    let (status, body) = swarm(&app, &format!("?at={oldest}")).await;
    assert_eq!(status, StatusCode::OK, "the oldest event kept is still a moment: {body}");
    assert_eq!(body["at"]["seq"], oldest);

    let resp = app.http.get(app.url("/swarm/live?at=1")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::GONE);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("410 · Gone") && html.contains(&format!("(seq {oldest})")), "{html}");
    app.stop().await;
}
