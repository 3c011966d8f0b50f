//! Webhooks (DESIGN §11) against a real HTTP receiver on 127.0.0.1: signed, ordered,
//! retried, durable across `kill -9`, refused on private addresses unless allowed,
//! managed from the CLI and shown on the admin page.

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::harness::{BinaryServer, TestApp, WAIT, events, spawn_app, spawn_with};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
    /// What the receiver answered (0 for a request it never answered).
    status: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("deliveries are JSON")
    }

    fn seqs(&self) -> Vec<u64> {
        self.json()["events"].as_array().expect("a batch").iter().map(|e| e["seq"].as_u64().unwrap()).collect()
    }
}

/// How the receiver answers its `n`th request (from 0).
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Never answers: the request is in flight until its connection goes.
    Hang,
}

/// A real HTTP server on 127.0.0.1 that records every request and answers as told.
struct Receiver {
    addr: SocketAddr,
    log: watch::Receiver<Vec<Received>>,
    _server: tokio_util::task::AbortOnDropHandle<()>,
}

impl Receiver {
    async fn start(answer: impl Fn(usize) -> Answer + Send + Sync + 'static) -> Self {
        let (log_tx, log) = watch::channel(Vec::new());
        let log_tx = Arc::new(log_tx);
        let count = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(answer);
        let handler = move |headers: HeaderMap, body: Bytes| {
            let (log_tx, count, answer) = (Arc::clone(&log_tx), Arc::clone(&count), Arc::clone(&answer));
            async move {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let header =
                    |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let decided = answer(n);
                let status = match decided {
                    Answer::Status(s) => s,
                    Answer::Hang => 0,
                };
                log_tx.send_modify(|log| {
                    log.push(Received {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body,
                        status,
                    })
                });
                if let Answer::Hang = decided {
                    std::future::pending::<()>().await;
                }
                StatusCode::from_u16(status).unwrap()
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { addr, log, _server: tokio_util::task::AbortOnDropHandle::new(server) }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Waits until the requests received satisfy `done`; returns them.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let mut log = self.log.clone();
        let found = tokio::time::timeout(WAIT * 3, log.wait_for(|l| done(l))).await;
        match found {
            Ok(Ok(log)) => log.clone(),
            _ => panic!(
                "the receiver never saw {what}; it got {:#?}",
                self.log.borrow().iter().map(|r| (&r.id, r.status, r.seqs())).collect::<Vec<_>>()
            ),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.log.borrow().clone()
    }
}

/// Verifies one delivery with the Standard Webhooks reference library: the signature
/// over `{id}.{timestamp}.{body}` with the `whsec_` secret, and the timestamp within
/// the five minutes receivers tolerate.
fn verifies(secret: &str, r: &Received) -> bool {
    let reference = standardwebhooks::Webhook::new(secret).expect("a whsec_ secret the reference library accepts");
    let mut headers = http::HeaderMap::new();
    for (name, value) in
        [("webhook-id", &r.id), ("webhook-timestamp", &r.timestamp), ("webhook-signature", &r.signature)]
    {
        headers.insert(name, value.parse().expect("a header value"));
    }
    match reference.verify(&r.body, &headers) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("delivery {} does not verify: {e:?}", r.id);
            false
        }
    }
}

/// A server whose webhooks may reach 127.0.0.1 and retry within tens of milliseconds.
async fn app_reaching_loopback() -> TestApp {
    spawn_with(|c| {
        c.webhooks.allow_private = true;
        c.webhooks.retry_min = Duration::from_millis(50);
        c.webhooks.retry_max = Duration::from_millis(200);
    })
    .await
}

/// Creates a webhook through the API; returns its id and secret.
async fn create(app: &TestApp, body: Value) -> (String, String) {
    let (status, answer) = app.post_raw("/api/webhooks", &body.to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    (answer["id"].as_str().unwrap().to_owned(), answer["secret"].as_str().unwrap().to_owned())
}

/// The seqs a POST /api/events answered.
fn posted(answer: &Value) -> Vec<u64> {
    answer["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Every event seq delivered, in the order delivered, each kept once.
fn first_deliveries(log: &[Received]) -> Vec<u64> {
    let mut seen = std::collections::HashSet::new();
    log.iter().filter(|r| r.status / 100 == 2).flat_map(Received::seqs).filter(|s| seen.insert(*s)).collect()
}

/// The webhook as `GET /api/webhooks` lists it.
async fn listed(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get("/api/webhooks").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["webhooks"].as_array().unwrap().iter().find(|w| w["id"] == id).cloned().unwrap_or(Value::Null)
}

/// Re-reads the webhook until `done` holds; panics after the wait.
async fn listed_until(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let w = listed(app, id).await;
        if done(&w) {
            return w;
        }
        assert!(tokio::time::Instant::now() < deadline, "the webhook never got there: {w}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The value of `metric{webhook="id"}` in `/metrics`, if it is there.
async fn webhook_metric(app: &TestApp, metric: &str, id: &str) -> Option<u64> {
    let metrics = app.http.get(app.url("/metrics")).bearer_auth(&app.admin).send().await.unwrap().text().await.unwrap();
    let name = format!("{metric}{{webhook=\"{id}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&name)).map(|v| v.parse().expect("a count"))
}

#[tokio::test]
async fn every_matching_event_arrives_in_order_and_every_signature_verifies() {
    let app = app_reaching_loopback().await;
    let receiver = Receiver::start(|_| Answer::Status(204)).await;
    let (before, _) = app.post_events(&events("task.created", 3)).await;
    assert_eq!(before, StatusCode::CREATED);
    let (id, secret) = create(&app, json!({ "url": receiver.url(), "filter": { "types": ["task.*"] } })).await;
    assert!(id.starts_with("wh_") && secret.starts_with("whsec_"), "{id} {secret}");

    let mut expected = Vec::new();
    for (event_type, count) in [("task.created", 120), ("bid.submitted", 50), ("task.failed", 130)] {
        let (status, answer) = app.post_events(&events(event_type, count)).await;
        assert_eq!(status, StatusCode::CREATED);
        if event_type.starts_with("task.") {
            expected.extend(posted(&answer));
        }
    }
    let log = receiver.wait_for("every task event", |l| first_deliveries(l).len() >= expected.len()).await;
    let delivered: Vec<u64> = log.iter().flat_map(Received::seqs).collect();
    assert_eq!(delivered, expected, "every matching event, in seq order, once, and nothing from before");
    let ids: std::collections::HashSet<&str> = log.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), log.len(), "each delivery has its own webhook-id");
    for r in &log {
        assert!(verifies(&secret, r), "signature of {} does not verify: {}", r.id, r.signature);
        assert!(!r.id.is_empty() && r.seqs().len() <= 100, "{} carries {}", r.id, r.seqs().len());
    }
    let tampered = Received { body: Bytes::from_static(b"{\"events\":[]}"), ..log[0].clone() };
    assert!(!verifies(&secret, &tampered), "the reference library refuses a body the server did not sign");
    // The events exactly as GET /api/events/{seq} gives them.
    let first = &log[0].json()["events"][0];
    let (_, stored) = app.get(&format!("/api/events/{}", expected[0])).await;
    assert_eq!(first, &stored);

    let w = listed_until(&app, &id, |w| w["lag"] == 0).await;
    assert_eq!(w["delivered_seq"], 303, "{w}");
    assert_eq!(
        (w["last_status"].as_u64(), &w["last_error"], &w["failing_since"]),
        (Some(204), &Value::Null, &Value::Null)
    );
    let (_, list) = app.get("/api/webhooks").await;
    assert!(!list.to_string().contains(&secret) && !list.to_string().contains("whsec_"), "never the secret: {list}");
    let metrics = app.http.get(app.url("/metrics")).bearer_auth(&app.admin).send().await.unwrap().text().await.unwrap();
    let deliveries = format!("swarmfeed_webhook_deliveries_total{{webhook=\"{id}\"}} {}", log.len());
    assert!(metrics.lines().any(|l| l == deliveries), "{deliveries} missing from\n{metrics}");
    assert!(metrics.lines().any(|l| l == format!("swarmfeed_webhook_lag_events{{webhook=\"{id}\"}} 0")), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_delivery_again_then_everything() {
    let app = app_reaching_loopback().await;
    let healthy = Arc::new(AtomicBool::new(false));
    let receiver = {
        let healthy = Arc::clone(&healthy);
        Receiver::start(move |_| Answer::Status(if healthy.load(Ordering::SeqCst) { 200 } else { 503 })).await
    };
    let (id, secret) = create(&app, json!({ "url": receiver.url() })).await;
    // A second webhook, whose receiver answers, is not held up by the failing one.
    let other = Receiver::start(|_| Answer::Status(204)).await;
    let _ = create(&app, json!({ "url": other.url() })).await;
    let (_, answer) = app.post_events(&events("system.info", 30)).await;
    let mut expected = posted(&answer);
    let failed = receiver.wait_for("three failed attempts", |l| l.len() >= 3).await;
    for r in &failed[1..] {
        assert_eq!((&r.id, &r.body), (&failed[0].id, &failed[0].body), "a retry is the same delivery");
        assert!(verifies(&secret, r));
    }
    let beside = other.wait_for("the 30 events beside the failing webhook", |l| first_deliveries(l).len() >= 30).await;
    assert_eq!(first_deliveries(&beside), expected, "the healthy webhook delivers while the other fails");
    let failures = webhook_metric(&app, "swarmfeed_webhook_failures_total", &id).await;
    assert!(failures.is_some_and(|n| n >= 3), "failed attempts counted: {failures:?}");
    let w = listed_until(&app, &id, |w| w["last_status"] == 503).await;
    assert!(w["last_error"].as_str().unwrap().contains("503"), "{w}");
    assert!(w["failing_since"].is_string(), "{w}");
    let page = app.http.get(app.url("/swarm/webhooks")).bearer_auth(&app.admin).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("Failing for") && page.contains("HTTP 503"), "{page}");
    // Ingest goes on while the webhook fails.
    let (status, answer) = app.post_events(&events("system.info", 30)).await;
    assert_eq!(status, StatusCode::CREATED);
    expected.extend(posted(&answer));

    healthy.store(true, Ordering::SeqCst);
    let log = receiver.wait_for("all 60 events", |l| first_deliveries(l).len() >= 60).await;
    assert_eq!(first_deliveries(&log), expected, "everything, in order");
    let first_ok = log.iter().find(|r| r.status == 200).unwrap();
    assert_eq!((&first_ok.id, &first_ok.body), (&failed[0].id, &failed[0].body), "the failed delivery, taken at last");
    let w = listed_until(&app, &id, |w| w["lag"] == 0).await;
    assert_eq!(
        (&w["last_error"], &w["failing_since"], w["last_status"].as_u64()),
        (&Value::Null, &Value::Null, Some(200))
    );
    app.stop().await;
}

#[tokio::test]
async fn slack_webhooks_get_one_text_per_event() {
    let app = app_reaching_loopback().await;
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let (_, secret) =
        create(&app, json!({ "url": receiver.url(), "format": "slack", "filter": { "types": "task.created" } })).await;
    let tasks = json!([
        { "event_type": "task.created", "source": "t", "data": { "description": "sort the logs" } },
        { "event_type": "bid.submitted", "source": "t" },
        { "event_type": "task.created", "source": "t", "data": { "description": "ship it" } },
    ]);
    assert_eq!(app.post_events(&tasks).await.0, StatusCode::CREATED);
    let log = receiver.wait_for("two messages", |l| l.len() >= 2).await;
    let texts: Vec<Value> = log.iter().map(Received::json).collect();
    assert_eq!(texts, [json!({ "text": "📝 New task: sort the logs" }), json!({ "text": "📝 New task: ship it" })]);
    assert_ne!(log[0].id, log[1].id);
    assert!(log.iter().all(|r| verifies(&secret, r)));
    app.stop().await;
}

#[tokio::test]
async fn loopback_and_private_destinations_are_refused_without_the_flag() {
    let app = spawn_app().await;
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let port = receiver.addr.port();
    for (url, says) in [
        (receiver.url(), "loopback"),
        (format!("http://localhost:{port}/hook"), "loopback"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), "loopback"),
        ("http://[::1]/hook".to_owned(), "loopback"),
        ("http://0.0.0.0/hook".to_owned(), "unspecified"),
        ("http://10.1.2.3/hook".to_owned(), "private"),
        ("http://169.254.169.254/latest".to_owned(), "link-local"),
        ("http://100.64.0.1/".to_owned(), "CGNAT"),
        ("http://[fd00::1]/".to_owned(), "unique-local"),
        ("ftp://example.com/hook".to_owned(), "http:// or https://"),
        ("not a url".to_owned(), "not a valid URL"),
    ] {
        let (status, body) = app.post_raw("/api/webhooks", &json!({ "url": url }).to_string(), Some(&app.admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(
            (body["error"]["code"].as_str(), body["error"]["field"].as_str()),
            (Some("invalid_url"), Some("url"))
        );
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{url}: {body}");
    }
    let bad_filter = json!({ "url": "http://8.8.8.8/hook", "filter": { "types": ["Not A Type"] } });
    let (status, body) = app.post_raw("/api/webhooks", &bad_filter.to_string(), Some(&app.admin)).await;
    assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("filter.types")), "{body}");
    let unknown = json!({ "url": "http://8.8.8.8/hook", "colour": "red" });
    let (status, body) = app.post_raw("/api/webhooks", &unknown.to_string(), Some(&app.admin)).await;
    assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("colour")), "{body}");
    let (_, list) = app.get("/api/webhooks").await;
    assert_eq!(list, json!({ "webhooks": [] }), "refusals store nothing");
    assert!(receiver.received().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_destination_that_turns_private_fails_delivery_with_a_clear_error() {
    // Made while private addresses were allowed; the server then restarts without it,
    // as a name that resolved to a public address may later resolve to a private one.
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let server = BinaryServer::start(dir.path(), &["--webhook-allow-private"]).await;
    let token = server.admin_token();
    let http = reqwest::Client::new();
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let created = http
        .post(format!("http://{}/api/webhooks", server.addr))
        .bearer_auth(&token)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    server.terminate().await;

    let server = BinaryServer::start(dir.path(), &["--webhook-retry-min-secs", "0.05"]).await;
    let post = http.post(format!("http://{}/api/events", server.addr)).bearer_auth(&token).json(&events("a.b", 2));
    assert_eq!(post.send().await.unwrap().status(), StatusCode::CREATED);
    let deadline = tokio::time::Instant::now() + WAIT;
    let webhook = loop {
        let list: Value = http
            .get(format!("http://{}/api/webhooks", server.addr))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let w = list["webhooks"][0].clone();
        if w["last_error"].is_string() {
            break w;
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery failure recorded: {w}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let error = webhook["last_error"].as_str().unwrap();
    assert!(
        error.contains("localhost") && error.contains("loopback") && error.contains("--webhook-allow-private"),
        "{error}"
    );
    assert!(webhook["failing_since"].is_string() && webhook["last_status"].is_null(), "{webhook}");
    assert!(receiver.received().is_empty(), "nothing reached the loopback receiver");
    server.terminate().await;
}

#[tokio::test]
async fn kill_9_mid_delivery_loses_nothing_and_the_restart_resumes_in_order() {
    let dir = tempfile::tempdir().unwrap();
    // The third delivery is never answered: the server is killed while it is in flight.
    let receiver = Receiver::start(|n| if n == 2 { Answer::Hang } else { Answer::Status(200) }).await;
    let flags = ["--webhook-allow-private", "--webhook-retry-min-secs", "0.05"];
    let server = BinaryServer::start(dir.path(), &flags).await;
    let token = server.admin_token();
    let http = reqwest::Client::new();
    let api = |addr: SocketAddr, path: &str| format!("http://{addr}{path}");
    let created = http
        .post(api(server.addr, "/api/webhooks"))
        .bearer_auth(&token)
        .json(&json!({ "url": receiver.url() }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut expected = Vec::new();
    let post = |addr: SocketAddr, n: usize| {
        let request = http.post(api(addr, "/api/events")).bearer_auth(&token).json(&events("tool.called", n));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            posted(&response.json::<Value>().await.unwrap())
        }
    };
    for requests in 1..=3 {
        expected.extend(post(server.addr, 30).await);
        receiver.wait_for("the next delivery", |l| l.len() >= requests).await;
    }
    // Ingest does not wait for the stuck delivery.
    expected.extend(post(server.addr, 30).await);
    server.kill9().await;

    let server = BinaryServer::start(dir.path(), &flags).await;
    expected.extend(post(server.addr, 30).await);
    let log = receiver.wait_for("every event after the restart", |l| first_deliveries(l).len() >= expected.len()).await;
    assert_eq!(first_deliveries(&log), expected, "every event at least once, first seen in order");
    for r in &log {
        let seqs = r.seqs();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "a delivery is in seq order: {seqs:?}");
    }
    let hung = &log[2];
    let after = log.iter().skip(3).find(|r| r.status == 200).unwrap();
    assert_eq!(after.seqs()[0], hung.seqs()[0], "the restart delivers again from the unacknowledged delivery");
    server.terminate().await;
}

/// `swarmfeed webhook ARGS…` against `addr` as `token`.
async fn webhook_cli(addr: SocketAddr, token: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
    command
        .env_remove("SWARMFEED_DATA_DIR")
        .env("SWARMFEED_URL", format!("http://{addr}"))
        .env("SWARMFEED_TOKEN", token)
        .arg("webhook")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(WAIT, command.output()).await.expect("the command ends in time").expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn the_cli_adds_lists_and_removes_webhooks() {
    let app = app_reaching_loopback().await;
    let add = webhook_cli(
        app.addr,
        &app.admin,
        &["add", "http://127.0.0.1:9/hook", "--types", "task.*,bid.submitted", "--format", "slack"],
    )
    .await;
    assert!(add.status.success(), "{}", text(&add.stderr));
    let out = text(&add.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let (id, secret) = (lines[0], lines[1]);
    assert!(id.starts_with("wh_") && secret.starts_with("whsec_"), "{out}");
    assert!(text(&add.stderr).contains("shown once"), "{}", text(&add.stderr));

    let list = webhook_cli(app.addr, &app.admin, &["list"]).await;
    let shown = text(&list.stdout);
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(shown.contains(id) && shown.contains("slack") && shown.contains("http://127.0.0.1:9/hook"), "{shown}");
    assert!(shown.contains(r#""types":["task.*","bid.submitted"]"#), "{shown}");
    assert!(!shown.contains("whsec_"), "the list never shows a secret: {shown}");

    let refused = webhook_cli(app.addr, &app.admin, &["add", "http://8.8.8.8/", "--types", "Nope"]).await;
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("filter.types"), "{}", text(&refused.stderr));

    let rm = webhook_cli(app.addr, &app.admin, &["rm", id]).await;
    assert!(rm.status.success(), "{}", text(&rm.stderr));
    let list = webhook_cli(app.addr, &app.admin, &["list"]).await;
    assert!(!text(&list.stdout).contains(id), "{}", text(&list.stdout));
    let again = webhook_cli(app.addr, &app.admin, &["rm", id]).await;
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("404"), "{}", text(&again.stderr));
    let read = app.token("read").await;
    let denied = webhook_cli(app.addr, &read, &["list"]).await;
    assert!(!denied.status.success() && text(&denied.stderr).contains("403"), "{}", text(&denied.stderr));
    app.stop().await;
}

#[tokio::test]
async fn the_webhooks_page_renders_for_an_admin_and_is_refused_to_read_scope() {
    let app = app_reaching_loopback().await;
    let (id, _) = create(&app, json!({ "url": "http://127.0.0.1:9/hook", "filter": { "types": ["task.*"] } })).await;
    let get = |token: String, path: &'static str| {
        let request = app.http.get(app.url(path)).bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    };
    let (status, page) = get(app.admin.clone(), "/swarm/webhooks").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(&id) && page.contains("http://127.0.0.1:9/hook") && page.contains("task.*"), "{page}");
    assert!(page.contains(r#"href="/swarm/webhooks""#), "the header links it for admins");
    let read = app.token("read").await;
    let (status, page) = get(read.clone(), "/swarm/webhooks").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    let (_, live) = get(read.clone(), "/swarm/live").await;
    assert!(!live.contains("/swarm/webhooks"), "no link for read scope");
    let (status, _) = app.get_as("/api/webhooks", Some(&read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        app.post_raw("/api/webhooks", &json!({ "url": "http://8.8.8.8/" }).to_string(), Some(&read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_made_with_since_replays_and_deleting_it_stops_deliveries() {
    let app = app_reaching_loopback().await;
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let (_, answer) = app.post_events(&events("agent.joined", 5)).await;
    let seqs = posted(&answer);
    let (id, _) = create(&app, json!({ "url": receiver.url(), "since": seqs[1] })).await;
    let log = receiver.wait_for("the replay", |l| first_deliveries(l).len() >= 3).await;
    assert_eq!(first_deliveries(&log), seqs[2..], "after since, not before");
    let (status, _) = app
        .http
        .delete(app.url(&format!("/api/webhooks/{id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed(&app, &id).await, Value::Null);
    // A second receiver's webhook, made after the delete, sees the next event; by then
    // the deleted one has had every chance to send it too.
    let witness = Receiver::start(|_| Answer::Status(200)).await;
    create(&app, json!({ "url": witness.url() })).await;
    app.post_events(&events("agent.left", 1)).await;
    witness.wait_for("the next event", |l| !l.is_empty()).await;
    assert_eq!(receiver.received().len(), log.len(), "the deleted webhook sent nothing more");
    let (status, body) = app
        .http
        .delete(app.url(&format!("/api/webhooks/{id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:?}");
    app.stop().await;
}

#[tokio::test]
async fn only_the_leader_delivers_and_a_takeover_resumes_from_the_stored_seq() {
    // Two nodes on one PostgreSQL log, whatever store the suite runs on.
    let db = crate::database::Database::fresh().await;
    let node = || {
        let url = db.url.clone();
        spawn_with(move |c| {
            c.database = Some(url);
            c.webhooks.allow_private = true;
            c.webhooks.retry_min = Duration::from_millis(50);
        })
    };
    let leader = node().await;
    let follower = node().await;
    let token = leader.admin.clone();
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let body = json!({ "url": receiver.url() }).to_string();
    let (status, created) = follower.post_raw("/api/webhooks", &body, Some(&token)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, answer) = follower.post_raw("/api/events", &events("a.b", 20).to_string(), Some(&token)).await;
    let mut expected = posted(&answer);
    receiver.wait_for("the first events", |l| first_deliveries(l).len() >= 20).await;
    let scrape = |app: &TestApp| {
        let request = app.http.get(app.url("/metrics")).bearer_auth(&token);
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    // The lag series exists on the node that runs the webhook, and only there.
    let series = format!("swarmfeed_webhook_lag_events{{webhook=\"{id}\"}}");
    let on_leader = scrape(&leader).await;
    assert!(on_leader.contains(&series), "the leader delivers: {on_leader}");
    assert!(!scrape(&follower).await.contains(&series), "the other node does not");

    leader.stop().await;
    let (_, answer) = follower.post_raw("/api/events", &events("a.b", 20).to_string(), Some(&token)).await;
    expected.extend(posted(&answer));
    let log = receiver.wait_for("the events after the takeover", |l| first_deliveries(l).len() >= 40).await;
    assert_eq!(first_deliveries(&log), expected, "resumed from the stored seq: nothing skipped, in order");
    assert!(scrape(&follower).await.contains(&series), "the new leader delivers");
    follower.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn https_destinations_are_reached_over_tls() {
    let app = app_reaching_loopback().await;
    // A plain-HTTP receiver behind an https:// URL: the attempt must speak TLS to it,
    // and fail the handshake, rather than send the events in the clear.
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let (id, _) = create(&app, json!({ "url": format!("https://{}/hook", receiver.addr) })).await;
    app.post_events(&events("a.b", 1)).await;
    let w = listed_until(&app, &id, |w| w["last_error"].is_string()).await;
    let error = w["last_error"].as_str().unwrap();
    assert!(!error.contains("scheme"), "https is supported: {error}");
    assert!(receiver.received().is_empty(), "nothing was sent in the clear: {error}");
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_moves_past_events_it_does_not_want_without_sending_them() {
    let app = app_reaching_loopback().await;
    let receiver = Receiver::start(|_| Answer::Status(200)).await;
    let (id, _) = create(&app, json!({ "url": receiver.url(), "filter": { "types": ["task.created"] } })).await;
    for _ in 0..5 {
        assert_eq!(app.post_events(&events("bid.submitted", 10)).await.0, StatusCode::CREATED);
    }
    let w = listed_until(&app, &id, |w| w["lag"] == 0).await;
    assert_eq!(w["delivered_seq"], 50, "{w}");
    assert!(receiver.received().is_empty(), "nothing matched, nothing was sent");
    app.stop().await;
}

#[tokio::test]
async fn past_a_hundred_webhooks_a_new_one_is_refused_until_one_is_deleted() {
    let app = app_reaching_loopback().await;
    let body = json!({ "url": "http://127.0.0.1:9/hook" }).to_string();
    let mut first = None;
    for _ in 0..100 {
        let (id, _) = create(&app, json!({ "url": "http://127.0.0.1:9/hook" })).await;
        first.get_or_insert(id);
    }
    let (status, answer) = app.post_raw("/api/webhooks", &body, Some(&app.admin)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_webhooks")),
        "{answer}"
    );
    let first = first.unwrap();
    let deleted = app.http.delete(app.url(&format!("/api/webhooks/{first}"))).bearer_auth(&app.admin).send().await;
    assert_eq!(deleted.unwrap().status(), StatusCode::OK);
    let (status, _) = app.post_raw("/api/webhooks", &body, Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    app.stop().await;
}

#[tokio::test]
async fn an_attempt_without_an_answer_times_out_and_the_same_delivery_is_sent_again() {
    let app = spawn_with(|c| {
        c.webhooks.allow_private = true;
        c.webhooks.retry_min = Duration::from_millis(50);
        c.webhooks.retry_max = Duration::from_millis(200);
        c.webhooks.attempt_timeout = Duration::from_millis(500);
    })
    .await;
    // The first two attempts never get an answer; the third does.
    let receiver = Receiver::start(|n| if n < 2 { Answer::Hang } else { Answer::Status(200) }).await;
    let (id, _) = create(&app, json!({ "url": receiver.url() })).await;
    let (_, answer) = app.post_events(&events("system.info", 5)).await;
    let log = receiver.wait_for("an answered attempt", |l| l.iter().any(|r| r.status == 200)).await;
    assert_eq!(log.iter().map(|r| r.status).collect::<Vec<_>>(), [0, 0, 200], "two timed out, then one answered");
    assert!(log.iter().all(|r| r.id == log[0].id && r.body == log[0].body), "every attempt is the same delivery");
    assert_eq!(first_deliveries(&log), posted(&answer));
    listed_until(&app, &id, |w| w["lag"] == 0).await;
    assert_eq!(webhook_metric(&app, "swarmfeed_webhook_failures_total", &id).await, Some(2));
    app.stop().await;
}

#[tokio::test]
async fn a_redirect_is_a_failed_attempt_and_is_never_followed() {
    let app = app_reaching_loopback().await;
    // Where the redirect points: it must never be reached.
    let elsewhere = Receiver::start(|_| Answer::Status(200)).await;
    let location = elsewhere.url();
    let redirector = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let location = location.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [(axum::http::header::LOCATION, location)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let _server = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        axum::serve(listener, redirector).await.unwrap();
    }));

    let (id, _) = create(&app, json!({ "url": url })).await;
    app.post_events(&events("system.info", 3)).await;
    let w = listed_until(&app, &id, |w| w["last_status"] == 307).await;
    assert!(w["last_error"].as_str().unwrap().contains("307"), "{w}");
    assert!(w["failing_since"].is_string() && w["lag"].as_u64() >= Some(3), "nothing counts as delivered: {w}");
    // Let it retry: each attempt meets the redirect again, and none goes on to it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while webhook_metric(&app, "swarmfeed_webhook_failures_total", &id).await.unwrap_or(0) < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the webhook stopped retrying after a redirect");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(elsewhere.received().is_empty(), "the redirect was followed: {:?}", elsewhere.received().len());
    app.stop().await;
}
