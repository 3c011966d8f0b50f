//! Several nodes on one PostgreSQL log (DESIGN §5): one order for every viewer on
//! every node, nothing acknowledged lost when a node dies, one coordinator at a time.
//! These always run on PostgreSQL, each on a database of its own.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::database::Database;
use crate::harness::{BinaryServer, TestApp, WAIT, WsClient, all_events, seqs, spawn_with};

async fn node(db: &Database) -> TestApp {
    let url = db.url.clone();
    spawn_with(move |c| {
        c.database = Some(url);
        c.max_frames_per_sec = 0;
    })
    .await
}

async fn post(http: &reqwest::Client, addr: SocketAddr, token: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let resp = http.post(format!("http://{addr}{path}")).bearer_auth(token).json(body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `(seq, id)` of every event of a stream of frames.
fn seq_ids(events: &[Value]) -> Vec<(u64, String)> {
    events.iter().map(|e| (e["seq"].as_u64().unwrap(), e["id"].as_str().unwrap().to_owned())).collect()
}

#[tokio::test]
async fn events_posted_to_three_nodes_at_once_reach_a_viewer_on_each_in_one_order_exactly_once() {
    let db = Database::fresh().await;
    let first = node(&db).await;
    let token = first.admin.clone();
    let nodes = [first, node(&db).await, node(&db).await];
    let mut viewers = Vec::new();
    for n in &nodes {
        let mut ws = WsClient::connect(n.addr, Some(&token)).await.unwrap();
        ws.subscribe(Some(0), json!({})).await;
        viewers.push(ws);
    }
    // Two producers per node, 40 batches of 25 each: 6 000 events, interleaved.
    let (producers, batches, size) = (2, 40, 25);
    let mut posting = Vec::new();
    for (n, app) in nodes.iter().enumerate() {
        for p in 0..producers {
            let (http, addr, token) = (app.http.clone(), app.addr, token.clone());
            posting.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for b in 0..batches {
                    let batch: Vec<Value> = (0..size)
                        .map(|i| json!({"id": format!("n{n}-p{p}-{b}-{i}"), "event_type": "tool.called", "source": format!("node{n}")}))
                        .collect();
                    let (status, body) = post(&http, addr, &token, "/api/events", &json!(batch)).await;
                    assert_eq!(status, StatusCode::CREATED, "{body}");
                    acked.extend(seq_ids(body["events"].as_array().unwrap()));
                }
                acked
            }));
        }
    }
    let mut acked: HashMap<String, u64> = HashMap::new();
    for p in posting {
        for (seq, id) in p.await.unwrap() {
            assert!(acked.insert(id, seq).is_none());
        }
    }
    let total = nodes.len() * producers * batches * size;
    assert_eq!(acked.len(), total);
    let mut orders = Vec::new();
    for ws in &mut viewers {
        let (events, _) = ws.collect_events(total).await;
        orders.push(seq_ids(&events));
    }
    let expected: Vec<u64> = (1..=total as u64).collect();
    for (n, order) in orders.iter().enumerate() {
        assert_eq!(order.iter().map(|(s, _)| *s).collect::<Vec<_>>(), expected, "node {n}: gapless, in order, once");
        assert_eq!(order, &orders[0], "node {n} shows the same order as node 0");
    }
    for (seq, id) in &orders[0] {
        assert_eq!(acked.get(id), Some(seq), "{id} is shown with the seq its producer was told");
    }
    for n in nodes {
        n.stop().await;
    }
    db.drop().await;
}

#[tokio::test]
async fn a_node_killed_mid_stream_loses_nothing_it_acknowledged_and_its_viewer_resumes_on_another() {
    let db = Database::fresh().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let flags = ["--database", db.url.as_str(), "--max-frames-per-sec", "0"];
    let a = BinaryServer::start(dir_a.path(), &flags).await;
    let b = BinaryServer::start(dir_b.path(), &flags).await;
    let token = a.admin_token();
    let http = reqwest::Client::new();

    // A viewer on A reads until A dies under it.
    let mut viewer = WsClient::connect(a.addr, Some(&token)).await.unwrap();
    viewer.subscribe(Some(0), json!({})).await;
    let watching = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(message) = viewer.next_message().await {
            let tokio_tungstenite::tungstenite::Message::Text(text) = message else { break };
            let frame: Value = serde_json::from_str(&text).unwrap();
            match frame["type"].as_str() {
                Some("event") => seen.push(frame["payload"].clone()),
                Some("batch") => seen.extend(frame["payload"].as_array().unwrap().iter().cloned()),
                _ => panic!("unexpected frame {frame}"),
            }
        }
        seen
    });

    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let (progress, mut progressed) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let mut producers = Vec::new();
    for (p, addr) in [(0, a.addr), (1, a.addr), (2, b.addr)] {
        let (http, token, acked, progress) = (http.clone(), token.clone(), Arc::clone(&acked), Arc::clone(&progress));
        producers.push(tokio::spawn(async move {
            // Bounded: at most 300 requests per producer; those on A stop when it dies.
            for i in 0..300 {
                let batch: Vec<Value> = (0..10)
                    .map(|j| json!({"id": format!("p{p}-{i}-{j}"), "event_type": "task.created", "source": "kill"}))
                    .collect();
                let sent = http.post(format!("http://{addr}/api/events")).bearer_auth(&token).json(&batch).send().await;
                let Ok(resp) = sent else { return };
                if resp.status() != StatusCode::CREATED {
                    return;
                }
                let Ok(answer) = resp.json::<Value>().await else { return };
                let mut acked = acked.lock().unwrap();
                for e in answer["events"].as_array().unwrap() {
                    acked.insert(e["id"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap());
                }
                progress.send_replace(acked.len());
            }
        }));
    }
    tokio::time::timeout(WAIT, progressed.wait_for(|n| *n >= 1_500)).await.expect("producers make progress").unwrap();
    a.kill9().await;
    let seen = tokio::time::timeout(WAIT, watching).await.expect("the viewer notices").unwrap();
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let stored = all_events(&http, b.addr, &token).await;
    crate::harness::assert_acknowledged_stored_once(&stored, &acked);

    // The viewer goes on at B from the last seq it had: exactly the rest.
    let last = seen.last().map_or(0, |e| e["seq"].as_u64().unwrap());
    let mut resumed = WsClient::connect(b.addr, Some(&token)).await.unwrap();
    resumed.subscribe(Some(last), json!({})).await;
    let (rest, _) = resumed.collect_events(stored.len() - last as usize).await;
    let mut shown = seq_ids(&seen);
    shown.extend(seq_ids(&rest));
    assert_eq!(shown, seq_ids(&stored), "every event once, in order, across the move");
    b.terminate().await;
    db.drop().await;
}

/// Waits, on a subscription, for the first event of `event_type`.
async fn await_event(ws: &mut WsClient, event_type: &str) -> Value {
    loop {
        let e = ws.next_event().await;
        if e["event_type"] == event_type {
            return e;
        }
    }
}

#[tokio::test]
async fn leader_failover_during_an_open_auction_settles_it_exactly_once() {
    let db = Database::fresh().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let flags = ["--database", db.url.as_str(), "--max-frames-per-sec", "0", "--bid-window", "2"];
    // A starts alone, so it takes the coordinator lock; B waits for it.
    let a = BinaryServer::start(dir_a.path(), &flags).await;
    let b = BinaryServer::start(dir_b.path(), &flags).await;
    let token = a.admin_token();
    let http = reqwest::Client::new();

    let (status, err) = post(&http, b.addr, &token, "/swarm/agents", &json!({"name": "Echo"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{err}");
    assert_eq!(err["error"]["code"], "not_leader");
    let (status, _) = post(&http, a.addr, &token, "/swarm/agents", &json!({"name": "Echo", "agent_id": "echo"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, posted) = post(&http, a.addr, &token, "/swarm/tasks", &json!({"description": "survive"})).await;
    assert_eq!(status, StatusCode::CREATED);
    let t = posted["task_id"].as_str().unwrap().to_owned();
    let bid = json!({"agent_id": "echo", "bid_sats": 12});
    assert_eq!(post(&http, a.addr, &token, &format!("/swarm/tasks/{t}/bids"), &bid).await.0, StatusCode::CREATED);

    // B's viewer follows the task; the leader dies while bidding is open.
    let mut ws = WsClient::connect(b.addr, Some(&token)).await.unwrap();
    ws.subscribe(Some(0), json!({"task_id": t})).await;
    await_event(&mut ws, "bid.submitted").await;
    a.kill9().await;
    let assigned = await_event(&mut ws, "task.assigned").await;
    assert_eq!(assigned["agent_id"], "echo");
    assert_eq!(assigned["source"], "coordinator", "settled by the coordinator that took over");

    // B leads now: it takes commands, and a restarted A does not settle again.
    let (status, body) = post(&http, b.addr, &token, &format!("/swarm/tasks/{t}/start"), &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let a = BinaryServer::start(dir_a.path(), &flags).await;
    let (status, _) = post(&http, a.addr, &token, "/swarm/agents", &json!({"name": "Forge"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the restarted node follows");
    await_event(&mut ws, "task.started").await;
    let events = all_events(&http, a.addr, &token).await;
    let timeline: Vec<&str> =
        events.iter().filter(|e| e["task_id"] == t.as_str()).map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(
        timeline,
        ["task.created", "task.bidding", "bid.submitted", "auction.closed", "task.assigned", "task.started"]
    );
    let swarm: Value = http
        .get(format!("http://{}/api/swarm", a.addr))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task = swarm["tasks"].as_array().unwrap().iter().find(|x| x["task_id"] == t.as_str()).unwrap();
    assert_eq!(task["status"], "started", "a follower's projection agrees");
    a.terminate().await;
    b.terminate().await;
    db.drop().await;
}

#[tokio::test]
async fn a_double_settlement_by_two_leaders_is_stored_once() {
    // Two nodes that both believe they lead (a lock lost while a commit was in flight)
    // write the same settlement: the ids make the second a duplicate.
    let db = Database::fresh().await;
    let app = node(&db).await;
    let settle = |winner: &str| {
        json!([
            {"id": "settle.task-x.closed", "event_type": "auction.closed", "source": "coordinator", "task_id": "task-x"},
            {"id": "settle.task-x.outcome", "event_type": "task.assigned", "source": "coordinator", "task_id": "task-x",
             "agent_id": winner}
        ])
    };
    let (status, first) = app.post_events(&settle("echo")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, second) = app.post_events(&settle("forge")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(seqs(second["events"].as_array().unwrap()), seqs(first["events"].as_array().unwrap()));
    let stored = app.all_events().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored.iter().filter(|e| e["agent_id"] == "echo").count(), 1);
    let ids: HashSet<&str> = stored.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    app.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn a_node_started_on_a_busy_log_catches_up_and_follows_live() {
    let db = Database::fresh().await;
    let a = node(&db).await;
    let token = a.admin.clone();
    for _ in 0..5 {
        let (status, _) = a.post_events(&crate::harness::events("system.info", 1000)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let mut b = node(&db).await;
    b.admin = token.clone();
    let mut ws = b.ws().await;
    let subscribed = ws.subscribe(Some(4_990), json!({})).await;
    assert_eq!(subscribed["head"], 5_000, "the new node starts at the shared head");
    let (status, _) = a.post_events(&crate::harness::events("system.info", 10)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (got, _) = tokio::time::timeout(Duration::from_secs(5), ws.collect_events(20)).await.unwrap();
    assert_eq!(seqs(&got), (4_991..=5_010).collect::<Vec<_>>());
    let (status, swarm) = tokio::time::timeout(Duration::from_secs(5), b.get("/api/swarm")).await.unwrap();
    assert_eq!(status, StatusCode::OK, "a log of no swarm events is folded at once");
    assert_eq!(swarm["seq"], 0);
    a.stop().await;
    b.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn the_first_node_on_a_new_database_writes_the_admin_token_into_a_new_directory() {
    let db = Database::fresh().await;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("not-yet");
    let url = db.url.clone();
    let data_dir = dir.clone();
    let app = spawn_with(move |c| {
        c.database = Some(url);
        c.data_dir = data_dir;
    })
    .await;
    let written = std::fs::read_to_string(dir.join("admin.token")).expect("the directory was made");
    assert_eq!(written.trim(), app.admin);
    app.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn a_browser_session_started_on_one_node_works_on_another_until_it_logs_out_there() {
    use reqwest::header::{COOKIE, ORIGIN};
    let db = Database::fresh().await;
    let a = node(&db).await;
    let b = node(&db).await;
    let cookie = crate::sessions::form_login(a.addr, &a.admin).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let status = |addr: SocketAddr| {
        let (http, cookie) = (http.clone(), cookie.clone());
        async move { http.get(format!("http://{addr}/api/events")).header(COOKIE, cookie).send().await.unwrap().status() }
    };
    assert_eq!(status(b.addr).await, StatusCode::OK, "node B knows node A's session");
    let resp = http
        .post(format!("http://{}/logout", b.addr))
        .header(COOKIE, &cookie)
        .header(ORIGIN, format!("http://{}", b.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(status(a.addr).await, StatusCode::UNAUTHORIZED, "logged out on B, the cookie is worthless on A");
    a.stop().await;
    b.stop().await;
    db.drop().await;
}
