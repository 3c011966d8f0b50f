//! The coordinator, auctions and the swarm projection, through the public API.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::database::{Database, suite_on_postgres};
use crate::harness::{BinaryServer, TestApp, WsClient, all_events, spawn_with};

async fn swarm_app(bid_window_ms: u64) -> TestApp {
    spawn_with(|c| {
        c.max_frames_per_sec = 0;
        c.coordinator.bid_window = Duration::from_millis(bid_window_ms);
    })
    .await
}

impl TestApp {
    async fn call(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(path, &body.to_string(), Some(&self.admin)).await
    }

    async fn join(&self, name: &str, id: &str) {
        let (status, body) =
            self.call("/swarm/agents", json!({"name": name, "agent_id": id, "capabilities": ["code"]})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["agent_id"], id);
    }

    async fn post_task(&self, description: &str) -> String {
        let (status, body) = self.call("/swarm/tasks", json!({"description": description})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["task_id"].as_str().unwrap().to_owned()
    }

    async fn swarm_as(&self, token: &str) -> Value {
        let (status, body) = self.get_as("/api/swarm", Some(token)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn swarm(&self) -> Value {
        let (status, body) = self.get("/api/swarm").await;
        assert_eq!(status, StatusCode::OK);
        body
    }
}

fn task<'a>(swarm: &'a Value, id: &str) -> &'a Value {
    swarm["tasks"].as_array().unwrap().iter().find(|t| t["task_id"] == id).expect("task in projection")
}

fn agent<'a>(swarm: &'a Value, id: &str) -> &'a Value {
    swarm["agents"].as_array().unwrap().iter().find(|a| a["agent_id"] == id).expect("agent in projection")
}

/// Waits, on a subscription, for the first event of `event_type` (on `task_id` if given).
async fn await_event(ws: &mut WsClient, event_type: &str, task_id: Option<&str>) -> Value {
    loop {
        let e = ws.next_event().await;
        if e["event_type"] == event_type && task_id.is_none_or(|t| e["task_id"] == t) {
            return e;
        }
    }
}

fn types_of(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["event_type"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn a_full_task_lifecycle_is_logged_in_order_and_projected_at_every_step() {
    let app = swarm_app(400).await;
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({"types": ["task.*", "auction.*"]})).await;
    app.join("Echo", "echo").await;
    app.join("Forge", "forge").await;
    let t = app.post_task("sort the logs").await;
    let s = app.swarm().await;
    assert_eq!(task(&s, &t)["status"], "bidding");
    assert_eq!(s["auctions"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.call(&format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "forge", "bid_sats": 50})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        app.call(&format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "echo", "bid_sats": 30})).await.0,
        StatusCode::CREATED
    );
    let s = app.swarm().await;
    assert_eq!(task(&s, &t)["bids"].as_array().unwrap().len(), 2);
    assert_eq!(s["auctions"][0]["lowest_bid"], 30);
    let assigned = await_event(&mut ws, "task.assigned", Some(&t)).await;
    assert_eq!(assigned["agent_id"], "echo");
    assert_eq!(assigned["data"]["bid_sats"], 30);
    let s = app.swarm().await;
    assert_eq!(task(&s, &t)["status"], "assigned");
    assert_eq!(agent(&s, "echo")["status"], "busy");
    assert_eq!(s["totals"]["open_auctions"], 0);
    let (status, err) = app.call(&format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "forge", "bid_sats": 10})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a bid after close: {err}");
    assert_eq!(app.call(&format!("/swarm/tasks/{t}/start"), json!({"agent_id": "echo"})).await.0, StatusCode::OK);
    assert_eq!(task(&app.swarm().await, &t)["status"], "started");
    assert_eq!(
        app.call(&format!("/swarm/tasks/{t}/tools"), json!({"tool_name": "grep", "args": ["-r"]})).await.0,
        StatusCode::CREATED
    );
    assert_eq!(task(&app.swarm().await, &t)["tool_calls"], 1);
    assert_eq!(app.call(&format!("/swarm/tasks/{t}/complete"), json!({"result": "sorted"})).await.0, StatusCode::OK);
    let s = app.swarm().await;
    assert_eq!(task(&s, &t)["status"], "completed");
    let echo = agent(&s, "echo");
    assert_eq!(
        (echo["status"].as_str(), echo["tasks_completed"].as_u64(), echo["sats_earned"].as_u64()),
        (Some("idle"), Some(1), Some(30))
    );
    assert_eq!(s["totals"]["sats_paid"], 30);

    let (_, timeline) = app.get(&format!("/api/events?task_id={t}")).await;
    let timeline = timeline["events"].as_array().unwrap();
    assert_eq!(
        types_of(timeline),
        vec![
            "task.created",
            "task.bidding",
            "bid.submitted",
            "bid.submitted",
            "auction.closed",
            "task.assigned",
            "task.started",
            "tool.called",
            "task.completed"
        ]
    );
    assert!(timeline.iter().all(|e| e["source"] == "coordinator"));
    app.stop().await;
}

#[tokio::test]
async fn refusals_are_404_409_or_400_and_name_what_was_wrong() {
    let app = swarm_app(60_000).await;
    app.join("Echo", "echo").await;
    let t = app.post_task("x").await;
    let cases = [
        ("/swarm/tasks/nope/bids", json!({"agent_id": "echo", "bid_sats": 5}), StatusCode::NOT_FOUND, None),
        (&*format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "ghost", "bid_sats": 5}), StatusCode::NOT_FOUND, None),
        (
            &*format!("/swarm/tasks/{t}/bids"),
            json!({"agent_id": "echo", "bid_sats": 0}),
            StatusCode::BAD_REQUEST,
            Some("bid_sats"),
        ),
        (
            &*format!("/swarm/tasks/{t}/bids"),
            json!({"agent_id": "echo", "bid_sats": 1.5}),
            StatusCode::BAD_REQUEST,
            Some("bid_sats"),
        ),
        (&*format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "echo"}), StatusCode::BAD_REQUEST, Some("bid_sats")),
        (&*format!("/swarm/tasks/{t}/complete"), json!({"result": 1}), StatusCode::CONFLICT, None),
        (&*format!("/swarm/tasks/{t}/start"), json!({}), StatusCode::CONFLICT, None),
        ("/swarm/tasks", json!({"description": ""}), StatusCode::BAD_REQUEST, Some("description")),
        ("/swarm/tasks", json!({"title": "x"}), StatusCode::BAD_REQUEST, None),
        ("/swarm/agents", json!({"name": "Echo", "agent_id": "echo"}), StatusCode::CONFLICT, None),
        ("/swarm/agents", json!({"name": "Bad", "agent_id": "has space"}), StatusCode::BAD_REQUEST, Some("agent_id")),
        ("/swarm/agents/echo/status", json!({"status": "sleepy"}), StatusCode::BAD_REQUEST, Some("status")),
        ("/swarm/agents/ghost/heartbeat", json!({}), StatusCode::NOT_FOUND, None),
    ];
    let before = app.all_events().await.len();
    for (path, body, status, field) in cases {
        let (got, err) = app.call(path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
        if let Some(f) = field {
            assert_eq!(err["error"]["field"], f, "{path} {body}: {err}");
        }
    }
    assert_eq!(app.all_events().await.len(), before, "refused commands log nothing");
    let (status, _) = app.call(&format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "echo", "bid_sats": 5})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = app.call(&format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "echo", "bid_sats": 4})).await;
    assert_eq!(status, StatusCode::CONFLICT, "one bid per agent");
    let read = app.token("read").await;
    let (status, _) = app.post_raw("/swarm/tasks", &json!({"description": "x"}).to_string(), Some(&read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_bids_at_the_close_are_all_counted_or_refused_never_lost() {
    let window_ms = 600;
    let app = swarm_app(window_ms).await;
    let agents = 24;
    for i in 0..agents {
        app.join(&format!("A{i}"), &format!("a{i}")).await;
    }
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({"types": ["auction.closed"]})).await;
    let t = app.post_task("race").await;
    let opened = std::time::Instant::now();
    let mut bids = Vec::new();
    for i in 0..agents {
        let (http, url, token) = (app.http.clone(), app.url(&format!("/swarm/tasks/{t}/bids")), app.admin.clone());
        // Spread the bids over the last 60 ms before the close and just after it.
        let at = Duration::from_millis(window_ms - 60 + (i as u64 * 5));
        bids.push(tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(opened + at)).await;
            let resp = http
                .post(url)
                .bearer_auth(token)
                .json(&json!({"agent_id": format!("a{i}"), "bid_sats": 100 - i}))
                .send()
                .await
                .unwrap();
            (i, resp.status())
        }));
    }
    let mut accepted = HashSet::new();
    for b in bids {
        let (i, status) = b.await.unwrap();
        assert!(status == StatusCode::CREATED || status == StatusCode::CONFLICT, "{status}");
        if status == StatusCode::CREATED {
            accepted.insert(format!("a{i}"));
        }
    }
    let closed = await_event(&mut ws, "auction.closed", Some(&t)).await;
    assert_eq!(closed["data"]["bids"].as_u64().unwrap() as usize, accepted.len());
    let (_, timeline) = app.get(&format!("/api/events?task_id={t}")).await;
    let timeline = timeline["events"].as_array().unwrap();
    let logged: HashSet<String> = timeline
        .iter()
        .filter(|e| e["event_type"] == "bid.submitted")
        .map(|e| e["agent_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(logged, accepted, "exactly the accepted bids are logged");
    let close_at = timeline.iter().position(|e| e["event_type"] == "auction.closed").unwrap();
    assert!(timeline[close_at..].iter().all(|e| e["event_type"] != "bid.submitted"), "no bid after the close");
    if !accepted.is_empty() {
        let winner = timeline.iter().find(|e| e["event_type"] == "task.assigned").unwrap();
        let lowest = accepted.iter().map(|a| 100 - a[1..].parse::<u64>().unwrap()).min().unwrap();
        assert_eq!(winner["data"]["bid_sats"], lowest);
    }
    app.stop().await;
}

#[tokio::test]
async fn an_auction_without_bids_fails_the_task() {
    let app = swarm_app(200).await;
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({"types": ["task.failed"]})).await;
    let t = app.post_task("nobody wants this").await;
    let failed = await_event(&mut ws, "task.failed", Some(&t)).await;
    assert_eq!(failed["data"]["reason"], "no bids received");
    assert_eq!(task(&app.swarm().await, &t)["status"], "failed");
    app.stop().await;
}

#[tokio::test]
async fn a_silent_agent_times_out_and_its_task_fails() {
    let app = spawn_with(|c| {
        c.max_frames_per_sec = 0;
        c.coordinator.bid_window = Duration::from_millis(200);
        c.coordinator.agent_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({"types": ["agent.left", "task.failed", "task.assigned"]})).await;
    app.join("Sleepy", "sleepy").await;
    let t = app.post_task("x").await;
    app.call(&format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "sleepy", "bid_sats": 9})).await;
    await_event(&mut ws, "task.assigned", Some(&t)).await;
    let left = await_event(&mut ws, "agent.left", None).await;
    assert_eq!(left["agent_id"], "sleepy");
    assert_eq!(left["data"]["reason"], "timeout");
    let failed = await_event(&mut ws, "task.failed", Some(&t)).await;
    assert!(failed["data"]["reason"].as_str().unwrap().contains("timed out"));
    let s = app.swarm().await;
    assert_eq!(agent(&s, "sleepy")["status"], "offline");
    assert_eq!(agent(&s, "sleepy")["tasks_failed"], 1);
    app.stop().await;
}

/// What the projection says, without times and seqs (which differ between two logs of
/// the same story).
fn shape(swarm: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| {
                        !(k.ends_with("_ms")
                            || k.ends_with("_at")
                            || *k == "seq"
                            || *k == "last_seen"
                            || *k == "seconds_left")
                    })
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    strip(swarm)
}

#[tokio::test]
async fn an_external_coordinator_posting_the_same_events_gets_the_same_swarm() {
    let builtin = swarm_app(200).await;
    let mut ws = builtin.ws().await;
    ws.subscribe(None, json!({"types": ["task.assigned", "task.failed"]})).await;
    builtin.join("Echo", "echo").await;
    builtin.join("Forge", "forge").await;
    let t1 = builtin.post_task("one").await;
    builtin.call(&format!("/swarm/tasks/{t1}/bids"), json!({"agent_id": "forge", "bid_sats": 70})).await;
    await_event(&mut ws, "task.assigned", Some(&t1)).await;
    builtin.call(&format!("/swarm/tasks/{t1}/start"), json!({})).await;
    builtin.call(&format!("/swarm/tasks/{t1}/tools"), json!({"tool_name": "cc", "status": "failed"})).await;
    builtin.call(&format!("/swarm/tasks/{t1}/fail"), json!({"reason": "broke"})).await;
    let t2 = builtin.post_task("two").await;
    await_event(&mut ws, "task.failed", Some(&t2)).await;
    let delete =
        builtin.http.delete(builtin.url("/swarm/agents/echo")).bearer_auth(&builtin.admin).send().await.unwrap();
    assert_eq!(delete.status(), StatusCode::OK);
    let expected = builtin.swarm().await;

    let external = spawn_with(|c| c.coordinator.bid_window = Duration::from_secs(3600)).await;
    let replay: Vec<Value> = builtin
        .all_events()
        .await
        .into_iter()
        .map(|e| {
            json!({"event_type": e["event_type"], "source": "external-coordinator", "task_id": e["task_id"],
                   "agent_id": e["agent_id"], "data": e["data"]})
        })
        .collect();
    let (status, _) = external.post_events(&json!(replay)).await;
    assert_eq!(status, StatusCode::CREATED);
    let got = external.swarm().await;
    assert_eq!(shape(&got), shape(&expected));
    builtin.stop().await;
    external.stop().await;
}

#[tokio::test]
async fn an_auction_open_at_a_crash_is_settled_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--bid-window", "1", "--max-frames-per-sec", "0"];
    let server = BinaryServer::start(dir.path(), &flags).await;
    let token = server.admin_token();
    let http = reqwest::Client::new();
    let call = |addr: std::net::SocketAddr, path: &str, body: Value| {
        let req = http.post(format!("http://{addr}{path}")).bearer_auth(&token).json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<Value>().await.unwrap())
        }
    };
    call(server.addr, "/swarm/agents", json!({"name": "Echo", "agent_id": "echo"})).await;
    let (_, posted) = call(server.addr, "/swarm/tasks", json!({"description": "survive"})).await;
    let t = posted["task_id"].as_str().unwrap().to_owned();
    call(server.addr, &format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "echo", "bid_sats": 12})).await;
    server.kill9().await;
    // Stay down past the window, so the restarted coordinator must close it at once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let server = BinaryServer::start(dir.path(), &flags).await;
    let mut ws = WsClient::connect(server.addr, Some(&token)).await.unwrap();
    ws.subscribe(Some(0), json!({"task_id": t})).await;
    let assigned = await_event(&mut ws, "task.assigned", Some(&t)).await;
    assert_eq!(assigned["agent_id"], "echo");
    server.terminate().await;

    let server = BinaryServer::start(dir.path(), &flags).await;
    let events = all_events(&http, server.addr, &token).await;
    let timeline: Vec<&Value> = events.iter().filter(|e| e["task_id"] == t.as_str()).collect();
    let closes = timeline.iter().filter(|e| e["event_type"] == "auction.closed").count();
    assert_eq!(closes, 1, "settled exactly once across restarts");
    let resp = http.get(format!("http://{}/api/swarm", server.addr)).bearer_auth(&token).send().await.unwrap();
    let s: Value = resp.json().await.unwrap();
    assert_eq!(task(&s, &t)["status"], "assigned");
    assert_eq!(agent(&s, "echo")["status"], "busy");
    server.terminate().await;
}

#[tokio::test]
async fn the_projection_survives_a_restart_after_a_hundred_thousand_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &["--bid-window", "3600"]).await;
    let token = server.admin_token();
    let http = reqwest::Client::new();
    // 100 batches of 1 000: each has ten task lifecycles among filler events.
    for b in 0..100 {
        let mut batch = Vec::with_capacity(1000);
        batch.push(json!({"event_type": "agent.joined", "source": "ext", "agent_id": format!("ag{b}"), "data": {"name": format!("Agent {b}")}}));
        for k in 0..10 {
            let t = format!("t{b}-{k}");
            let a = format!("ag{b}");
            batch.push(
                json!({"event_type": "task.created", "source": "ext", "task_id": t, "data": {"description": "d"}}),
            );
            batch.push(json!({"event_type": "task.bidding", "source": "ext", "task_id": t}));
            batch.push(json!({"event_type": "bid.submitted", "source": "ext", "task_id": t, "agent_id": a, "data": {"bid_sats": k + 1}}));
            batch.push(json!({"event_type": "auction.closed", "source": "ext", "task_id": t}));
            batch.push(json!({"event_type": "task.assigned", "source": "ext", "task_id": t, "agent_id": a, "data": {"bid_sats": k + 1}}));
            if k % 3 != 0 {
                let done = if k % 2 == 0 { "task.completed" } else { "task.failed" };
                batch.push(
                    json!({"event_type": done, "source": "ext", "task_id": t, "agent_id": a, "data": {"reason": "r"}}),
                );
            }
        }
        while batch.len() < 1000 {
            batch.push(json!({"event_type": "system.info", "source": "ext", "data": {"message": "tick"}}));
        }
        let resp = http
            .post(format!("http://{}/api/events", server.addr))
            .bearer_auth(&token)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let get_swarm = |addr: std::net::SocketAddr| {
        let req = http.get(format!("http://{addr}/api/swarm")).bearer_auth(&token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let before = get_swarm(server.addr).await;
    assert_eq!(before["totals"]["tasks_total"], 1000);
    assert_eq!(before["totals"]["tasks_completed"], 300);
    server.kill9().await;
    let server = BinaryServer::start(dir.path(), &["--bid-window", "3600"]).await;
    let after = get_swarm(server.addr).await;
    assert_eq!(after, before);
    server.terminate().await;
}

#[tokio::test]
async fn the_coordinator_answers_at_once_after_a_restart_on_a_log_of_other_events_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &[]).await;
    let token = server.admin_token();
    let http = reqwest::Client::new();
    let join = |addr: std::net::SocketAddr, id: &str| {
        http.post(format!("http://{addr}/swarm/agents"))
            .bearer_auth(&token)
            .json(&json!({"name": id, "agent_id": id}))
            .send()
    };
    let filler = crate::harness::events("system.info", 50);
    let resp = http.post(format!("http://{}/api/events", server.addr)).bearer_auth(&token).json(&filler).send();
    assert_eq!(resp.await.unwrap().status(), StatusCode::CREATED);
    server.terminate().await;
    // The fold must not wait for a swarm event when the log has none to fold.
    let server = BinaryServer::start(dir.path(), &[]).await;
    let answer = tokio::time::timeout(Duration::from_secs(5), join(server.addr, "forge")).await.expect("answered");
    assert_eq!(answer.unwrap().status(), StatusCode::CREATED);
    server.terminate().await;
}

#[tokio::test]
async fn a_body_of_the_wrong_shape_names_the_field_not_the_value() {
    let app = swarm_app(60_000).await;
    app.join("Echo", "echo").await;
    let t = app.post_task("x").await;
    let bids = format!("/swarm/tasks/{t}/bids");
    let cases = [
        ("/swarm/agents", r#"{"name":42}"#, "name"),
        ("/swarm/agents", r#"{"name":"Ada","agent_id":7}"#, "agent_id"),
        ("/swarm/agents", r#"{"name":"Ada","capabilities":["a",3]}"#, "capabilities[1]"),
        ("/swarm/agents", r#"{"name":"Ada","colour":"red"}"#, "colour"),
        ("/swarm/agents", r#"{"agent_id":"ada"}"#, "name"),
        ("/swarm/agents", r#"{"name":"Ev\u202eil"}"#, "name"),
        ("/swarm/agents", r#"{"name":"Ada","capabilities":["co\u200bde"]}"#, "capabilities"),
        ("/swarm/tasks", r#"{"description":true}"#, "description"),
        ("/swarm/agents/echo/status", r#"{"status":["idle"]}"#, "status"),
        (&*bids, r#"{"agent_id":5,"bid_sats":5}"#, "agent_id"),
        (&*format!("/swarm/tasks/{t}/fail"), r#"{"reason":null}"#, "reason"),
        (&*format!("/swarm/tasks/{t}/start"), r#"{"agent_id":1}"#, "agent_id"),
        (&*format!("/swarm/tasks/{t}/tools"), r#"{"tool_name":"grep","status":9}"#, "status"),
    ];
    let before = app.all_events().await.len();
    for (path, body, field) in cases {
        let (status, err) = app.post_raw(path, body, Some(&app.admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {err}");
        assert_eq!(err["error"]["code"], "invalid_body", "{path} {body}: {err}");
        assert_eq!(err["error"]["field"], field, "{path} {body}: {err}");
        assert!(err["error"]["message"].as_str().unwrap().starts_with(field), "{path} {body}: {err}");
    }
    let (status, err) = app.post_raw("/swarm/tasks", r#"{"description":"x"} trailing"#, Some(&app.admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"].get("field"), None, "a syntax error blames no field: {err}");
    assert_eq!(app.all_events().await.len(), before, "refused commands log nothing");
    app.stop().await;
}

#[tokio::test]
async fn a_producer_cannot_squat_a_settlement_id_and_leave_the_task_bidding() {
    let app = swarm_app(1_000).await;
    let mut ws = app.ws().await;
    ws.subscribe(Some(0), json!({})).await;
    app.join("Echo", "echo").await;
    let t = app.post_task("contested").await;
    // The attack of issue 21: the settlement's id taken before the auction closes,
    // under the id the coordinator used before the namespace (an ordinary id now) and
    // under the one it uses today (refused).
    let squat = |id: String| json!({"id": id, "event_type": "task.assigned", "source": "mallory", "task_id": t});
    let (status, body) = app.post_events(&squat(format!("settle.{t}.outcome"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (namespaced, refusal) = app.post_events(&squat(format!("sf:settle.{t}.outcome"))).await;
    let (status, body) = app.call(&format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "echo", "bid_sats": 7})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let assigned = loop {
        let e = await_event(&mut ws, "task.assigned", Some(&t)).await;
        if e["source"] == "coordinator" {
            break e;
        }
    };
    assert_eq!(assigned["agent_id"], "echo");
    assert_eq!(assigned["id"], format!("sf:settle.{t}.outcome"));
    assert_eq!(namespaced, StatusCode::BAD_REQUEST, "{refusal}");
    assert_eq!(refusal["error"]["field"], "id", "{refusal}");
    assert_eq!(task(&app.swarm().await, &t)["status"], "assigned");
    let (_, ready) = app.get("/readyz").await;
    assert_eq!((ready["status"].clone(), ready["problems"].clone()), (json!("ready"), json!([])), "{ready}");
    app.stop().await;
}

#[tokio::test]
async fn a_settlement_id_held_by_another_event_is_an_error_that_readyz_shows() {
    use swarmfeed::event::{NewEvent, format_timestamp};
    // The namespace keeps producers out, so the id is planted in the store itself, as
    // a log written before the namespace existed (or a damaged one) would hold it.
    let dir = tempfile::tempdir().unwrap();
    let database = if suite_on_postgres() { Some(Database::for_data_dir(dir.path()).await) } else { None };
    let url = database.as_ref().map(|d| d.url.clone());
    {
        let store = swarmfeed::store::open(dir.path(), url.as_deref(), 1, swarmfeed::store::postgres::DEFAULT_TIMEOUT)
            .await
            .unwrap();
        let mut writer = store.writer().await.unwrap();
        let closed_a_second_ago = format_timestamp(chrono::Utc::now().timestamp_millis() - 1_000);
        let event = |id: &str, event_type: &str, source: &str, data: Value| NewEvent {
            id: id.into(),
            event_type: event_type.into(),
            source: source.into(),
            task_id: Some("held-1".into()),
            agent_id: None,
            data: data.to_string(),
        };
        writer
            .append(vec![
                event("e1", "task.created", "coordinator", json!({"description": "held"})),
                event("e2", "task.bidding", "coordinator", json!({"closes_at": closed_a_second_ago})),
                event("sf:settle.held-1.outcome", "system.info", "intruder", json!({"message": "mine now"})),
            ])
            .await
            .unwrap();
    }
    let app = spawn_with(|c| {
        c.data_dir = dir.path().to_path_buf();
        c.database = url.clone();
        c.max_frames_per_sec = 0;
    })
    .await;
    let mut ws = app.ws().await;
    ws.subscribe(Some(0), json!({"task_id": "held-1"})).await;
    await_event(&mut ws, "auction.closed", Some("held-1")).await;
    // A command is handled only after the settlement (and its check) has finished.
    assert_eq!(task(&app.swarm().await, "held-1")["status"], "bidding", "never settled");
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ready["status"], "degraded", "{ready}");
    let problem = ready["problems"][0].as_str().unwrap_or_default();
    assert!(problem.contains("held-1") && problem.contains("sf:settle.held-1.outcome"), "{ready}");
    let (_, anonymous) = app.get_as("/readyz", None).await;
    assert_eq!(anonymous, json!({"status": "degraded"}));
    let admin = app.admin.clone();
    app.stop().await;

    // After a restart the stuck auction is found again in the log.
    let app = spawn_with(|c| {
        c.data_dir = dir.path().to_path_buf();
        c.database = url.clone();
    })
    .await;
    assert_eq!(task(&app.swarm_as(&admin).await, "held-1")["status"], "bidding");
    let (_, ready) = app.get_as("/readyz", Some(&admin)).await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(ready["problems"][0].as_str().unwrap_or_default().contains("held-1"), "{ready}");
    app.stop().await;
    if let Some(db) = database {
        db.drop().await;
    }
}

/// Posts a form-encoded body with `token`, asking for what `accept` names.
async fn post_form(app: &TestApp, path: &str, form: &str, token: &str, accept: &str) -> reqwest::Response {
    app.http
        .post(app.url(path))
        .bearer_auth(token)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", accept)
        .body(form.to_owned())
        .send()
        .await
        .unwrap()
}

/// The stored events of `task_id` (or of `agent_id`), in order.
async fn events_of(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    app.all_events().await.into_iter().filter(|e| e[key] == id).collect()
}

#[tokio::test]
async fn an_operator_cancels_retries_closes_and_removes_and_each_event_names_them() {
    let app = swarm_app(60_000).await;
    let ops = app.named_token("ops-alice", "write").await;
    let call = |path: String, body: Value| {
        let ops = ops.clone();
        let app = &app;
        async move { app.post_raw(&path, &body.to_string(), Some(&ops)).await }
    };
    app.join("Echo", "echo").await;
    app.join("Forge", "forge").await;

    // Cancel, with and without a reason: the task leaves the open auctions.
    let t1 = app.post_task("resize the disk").await;
    let (status, body) = call(format!("/swarm/tasks/{t1}/cancel"), json!({"reason": "wrong repo"})).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"task_id": t1, "status": "cancelled"})));
    let cancelled = events_of(&app, "task_id", &t1).await.pop().unwrap();
    assert_eq!(cancelled["event_type"], "task.cancelled");
    assert_eq!(cancelled["data"], json!({"actor": "ops-alice", "reason": "wrong repo"}));
    let swarm = app.swarm().await;
    assert_eq!(task(&swarm, &t1)["status"], "cancelled");
    assert!(swarm["auctions"].as_array().unwrap().iter().all(|a| a["task_id"] != t1.as_str()), "{swarm}");
    let (status, _) = call(format!("/swarm/tasks/{t1}/bids"), json!({"agent_id": "echo", "bid_sats": 5})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a cancelled task takes no bids");

    // Retry: a new task with the same description that names the cancelled one.
    let (status, body) = call(format!("/swarm/tasks/{t1}/retry"), json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["retry_of"], t1.as_str());
    let t2 = body["task_id"].as_str().unwrap().to_owned();
    assert_ne!(t2, t1);
    let created = events_of(&app, "task_id", &t2).await;
    assert_eq!(types_of(&created), ["task.created", "task.bidding"]);
    assert_eq!(created[0]["data"]["retry_of"], t1.as_str());
    assert_eq!(created[0]["data"]["description"], "resize the disk");
    assert!(created.iter().all(|e| e["data"]["actor"] == "ops-alice"), "{created:?}");
    assert_eq!(task(&app.swarm().await, &t2)["retry_of"], t1.as_str());

    // Close now: settled at once, as the window's end would, by the lowest bid.
    for (agent, sats) in [("echo", 30), ("forge", 20)] {
        let (status, _) = call(format!("/swarm/tasks/{t2}/bids"), json!({"agent_id": agent, "bid_sats": sats})).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let (status, body) = call(format!("/swarm/tasks/{t2}/close"), json!({})).await;
    assert_eq!((status, &body), (StatusCode::OK, &json!({"task_id": t2, "status": "assigned"})));
    let settled = events_of(&app, "task_id", &t2).await;
    assert_eq!(&types_of(&settled)[4..], ["auction.closed", "task.assigned"]);
    assert_eq!(settled[5]["agent_id"], "forge");
    assert!(settled[4..].iter().all(|e| e["data"]["actor"] == "ops-alice"));

    // Remove: the agent leaves with reason `removed` and its task fails.
    let resp = app.http.delete(app.url("/swarm/agents/forge")).bearer_auth(&ops).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let left = events_of(&app, "agent_id", "forge").await;
    let left: Vec<&Value> = left.iter().filter(|e| e["event_type"] == "agent.left").collect();
    assert_eq!(left[0]["data"], json!({"actor": "ops-alice", "name": "Forge", "reason": "removed"}));
    let failed = events_of(&app, "task_id", &t2).await.pop().unwrap();
    assert_eq!(
        (&failed["event_type"], &failed["data"]["reason"]),
        (&json!("task.failed"), &json!("agent Forge was removed"))
    );
    let swarm = app.swarm().await;
    assert_eq!(agent(&swarm, "forge")["status"], "offline");
    assert_eq!(task(&swarm, &t2)["status"], "failed");
    app.stop().await;
}

#[tokio::test]
async fn actions_out_of_order_answer_409_naming_the_state_and_change_nothing() {
    let app = swarm_app(60_000).await;
    app.join("Echo", "echo").await;
    let bidding = app.post_task("x").await;
    let done = app.post_task("y").await;
    app.call(&format!("/swarm/tasks/{done}/bids"), json!({"agent_id": "echo", "bid_sats": 5})).await;
    let (status, _) = app.call(&format!("/swarm/tasks/{done}/close"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.call(&format!("/swarm/tasks/{done}/complete"), json!({"result": "ok"})).await;
    assert_eq!(status, StatusCode::OK);
    let cases = [
        (format!("/swarm/tasks/{done}/cancel"), "is completed"),
        (format!("/swarm/tasks/{done}/retry"), "is completed"),
        (format!("/swarm/tasks/{done}/close"), "is completed"),
        (format!("/swarm/tasks/{bidding}/retry"), "is bidding"),
    ];
    let before = app.all_events().await.len();
    for (path, state) in &cases {
        let (status, err) = app.call(path, json!({})).await;
        assert_eq!(status, StatusCode::CONFLICT, "{path}: {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(message.contains(state), "{path}: {message}");
    }
    for path in ["/swarm/tasks/nope/cancel", "/swarm/tasks/nope/retry", "/swarm/tasks/nope/close"] {
        assert_eq!(app.call(path, json!({})).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    let resp = app.http.delete(app.url("/swarm/agents/ghost")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let (status, err) = app.call(&format!("/swarm/tasks/{bidding}/cancel"), json!({"reason": 5})).await;
    assert_eq!((status, &err["error"]["field"]), (StatusCode::BAD_REQUEST, &json!("reason")));
    let (status, _) = app.call(&format!("/swarm/tasks/{bidding}/close"), json!({"now": true})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "an unknown field is refused");
    assert_eq!(app.all_events().await.len(), before, "refused actions log nothing");

    app.call(&format!("/swarm/tasks/{bidding}/cancel"), json!({})).await;
    let (status, err) = app.call(&format!("/swarm/tasks/{bidding}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(err["error"]["message"].as_str().unwrap().contains("is cancelled"), "{err}");
    let (status, err) = app.call(&format!("/swarm/tasks/{bidding}/close"), json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(err["error"]["message"].as_str().unwrap().contains("is cancelled"), "{err}");
    let reason = events_of(&app, "task_id", &bidding).await.pop().unwrap();
    assert_eq!(reason["data"]["reason"], "no reason given");
    app.stop().await;
}

#[tokio::test]
async fn read_scope_tokens_and_foreign_origins_get_403_from_the_actions_and_nothing_is_logged() {
    let app = swarm_app(60_000).await;
    app.join("Echo", "echo").await;
    let t = app.post_task("x").await;
    let read = app.token("read").await;
    let before = app.all_events().await.len();
    for action in ["cancel", "retry", "close"] {
        let (status, err) = app.post_raw(&format!("/swarm/tasks/{t}/{action}"), "{}", Some(&read)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{action}: {err}");
    }
    let resp = app.http.delete(app.url("/swarm/agents/echo")).bearer_auth(&read).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = post_form(&app, "/swarm/agents/echo/remove", "", &read, "text/html").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // A form another site's page makes a browser send is refused by its Origin, even
    // with a token that may act.
    let resp = app
        .http
        .post(app.url(&format!("/swarm/tasks/{t}/cancel")))
        .bearer_auth(&app.admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "http://attacker.example")
        .body("reason=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.all_events().await.len(), before);
    app.stop().await;
}

#[tokio::test]
async fn every_coordinator_endpoint_logs_the_actor_that_asked() {
    let app = swarm_app(60_000).await;
    let ops = app.named_token("bot-7", "write").await;
    let call = |path: String, body: Value| {
        let ops = ops.clone();
        let app = &app;
        async move {
            let (status, body) = app.post_raw(&path, &body.to_string(), Some(&ops)).await;
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        }
    };
    call("/swarm/agents".into(), json!({"name": "Echo", "agent_id": "echo"})).await;
    call("/swarm/agents/echo/status".into(), json!({"status": "busy"})).await;
    call("/swarm/agents/echo/heartbeat".into(), json!({})).await;
    let t = call("/swarm/tasks".into(), json!({"description": "x"})).await["task_id"].as_str().unwrap().to_owned();
    call(format!("/swarm/tasks/{t}/bids"), json!({"agent_id": "echo", "bid_sats": 3})).await;
    call(format!("/swarm/tasks/{t}/close"), json!({})).await;
    call(format!("/swarm/tasks/{t}/start"), json!({})).await;
    call(format!("/swarm/tasks/{t}/tools"), json!({"tool_name": "grep"})).await;
    call(format!("/swarm/tasks/{t}/fail"), json!({"reason": "disk full"})).await;
    call(format!("/swarm/tasks/{t}/retry"), json!({})).await;
    let resp = app.http.delete(app.url("/swarm/agents/echo")).bearer_auth(&ops).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let events = app.all_events().await;
    let kinds: HashSet<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    for kind in [
        "agent.joined",
        "agent.status_changed",
        "task.created",
        "bid.submitted",
        "auction.closed",
        "task.assigned",
        "task.started",
        "tool.called",
        "task.failed",
        "agent.left",
    ] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }
    for e in &events {
        assert_eq!(e["data"]["actor"], "bot-7", "{e}");
    }
    app.stop().await;
}

#[tokio::test]
async fn coordinator_endpoints_take_form_bodies_with_the_same_checks() {
    let app = swarm_app(60_000).await;
    let admin = app.admin.clone();
    let api = |path: &'static str, form: &'static str| post_form(&app, path, form, &admin, "*/*");
    let resp = api("/swarm/agents", "name=Echo&agent_id=echo&capabilities=code&capabilities=review").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(agent(&app.swarm().await, "echo")["capabilities"], json!(["code", "review"]));
    let resp = api("/swarm/tasks", "description=sort+the+%E2%9C%93+list").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let t = resp.json::<Value>().await.unwrap()["task_id"].as_str().unwrap().to_owned();
    assert_eq!(task(&app.swarm().await, &t)["description"], "sort the ✓ list");
    let bids = format!("/swarm/tasks/{t}/bids");
    let form = |body: &'static str| post_form(&app, &bids, body, &admin, "*/*");
    for (body, field) in [
        ("agent_id=echo&bid_sats=0", "bid_sats"),
        ("agent_id=echo&bid_sats=ten", "bid_sats"),
        ("agent_id=echo", "bid_sats"),
        ("agent_id=echo&agent_id=forge&bid_sats=5", "agent_id"),
    ] {
        let resp = form(body).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let resp = form("agent_id=echo&bid_sats=7").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.json::<Value>().await.unwrap()["bid_sats"], 7);
    let resp = post_form(&app, &format!("/swarm/tasks/{t}/cancel"), "reason=", &admin, "*/*").await;
    assert_eq!(resp.status(), StatusCode::OK, "an empty field is a field not given");
    assert_eq!(events_of(&app, "task_id", &t).await.pop().unwrap()["data"]["reason"], "no reason given");

    // A page's form (the browser asks for HTML) is sent back to the page, or shown
    // what was refused.
    let resp = post_form(&app, &format!("/swarm/tasks/{t}/retry"), "", &admin, "text/html,*/*").await;
    assert_eq!(resp.status(), StatusCode::OK, "reqwest follows the 303 to the new task's page");
    let retry = resp.url().path().strip_prefix("/swarm/tasks/").unwrap().to_owned();
    assert_eq!(task(&app.swarm().await, &retry)["retry_of"], t.as_str());
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = no_redirects
        .post(app.url(&format!("/swarm/tasks/{t}/cancel")))
        .bearer_auth(&admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .body("reason=again")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let page = resp.text().await.unwrap();
    assert!(page.contains("is cancelled") && page.contains(&format!("/swarm/tasks/{t}")), "{page}");
    let resp = no_redirects
        .post(app.url(&format!("/swarm/tasks/{retry}/close")))
        .bearer_auth(&admin)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], format!("/swarm/tasks/{retry}").as_str());
    let resp =
        post_form(&app, &format!("/swarm/tasks/{retry}/bids"), "agent_id=echo&bid_sats=ten", &admin, "text/html").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "a bad body is refused on a page too");
    let page = resp.text().await.unwrap();
    assert!(page.contains("bid_sats must be a positive integer"), "{page}");
    app.stop().await;
}
