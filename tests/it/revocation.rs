//! Revoking a token ends its streams on every transport, wherever the revocation is
//! made (DESIGN §6): through the admin API of the node that serves the stream, by
//! `swarmfeed token revoke` writing the store behind the server's back, and on
//! another node of a shared PostgreSQL log. Each test opens one stream of a read
//! token, revokes the token and measures how long the stream outlives it.
//!
//! Where the revocation must reach the node by itself (the node's own API, a
//! PostgreSQL notification from another node or the CLI), the node's periodic re-read
//! of revoked tokens is set to a minute, so that the re-read cannot be what passes the
//! test; the CLI on SQLite has nothing but the re-read, at its default period. Unless
//! the suite runs on PostgreSQL, `Revoker::Cli` is the SQLite case.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::database::{Database, suite_on_postgres};
use crate::harness::{TestApp, WAIT, WsClient, events, spawn_with};

/// How long a stream may outlive its token's revocation here: the default re-read
/// period (2 s) plus room for a loaded machine. Without the re-read a revocation from
/// another process waited for a 15 s keep-alive, and an SSE stream with events flowing
/// never noticed it.
const ENDS_WITHIN: Duration = Duration::from_secs(6);
/// A re-read period that cannot help a test finish within [`ENDS_WITHIN`].
const NO_SWEEP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Ws,
    WsHtml,
    Sse,
    Poll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revoker {
    /// `DELETE /api/tokens/{id}` on the node that serves the stream.
    Api,
    /// `swarmfeed token revoke ID` on the suite's store (SQLite unless the suite runs
    /// on PostgreSQL), the node left to find out by itself.
    Cli,
    /// `DELETE /api/tokens/{id}` on node A of a shared PostgreSQL log; the stream is
    /// on node B.
    OtherNode,
    /// `swarmfeed token revoke ID --database …` on a shared PostgreSQL log.
    CliOnSharedDatabase,
}

/// The servers of one test and how to revoke a token on them.
struct Scene {
    /// `nodes[0]` made the admin token; the last one serves the stream.
    nodes: Vec<TestApp>,
    admin: String,
    /// A database this module made (the harness drops its own).
    database: Option<Database>,
    revoker: Revoker,
}

impl Scene {
    async fn new(revoker: Revoker) -> Self {
        let on_postgres = match revoker {
            Revoker::Api => false,
            Revoker::Cli => suite_on_postgres(),
            Revoker::OtherNode | Revoker::CliOnSharedDatabase => true,
        };
        let database = if on_postgres { Some(Database::fresh().await) } else { None };
        let sweep = if revoker == Revoker::Cli { swarmfeed::auth::REVOCATION_SWEEP } else { NO_SWEEP };
        let count = if revoker == Revoker::OtherNode { 2 } else { 1 };
        let mut nodes = Vec::new();
        for _ in 0..count {
            let url = database.as_ref().map(|d| d.url.clone());
            nodes.push(
                spawn_with(move |c| {
                    c.database = url;
                    c.revocation_sweep = sweep;
                })
                .await,
            );
        }
        let admin = nodes[0].admin.clone();
        Scene { nodes, admin, database, revoker }
    }

    fn viewer_node(&self) -> &TestApp {
        self.nodes.last().expect("one node at least")
    }

    /// A read token issued through the first node: `(token, id)`.
    async fn read_token(&self) -> (String, String) {
        let app = &self.nodes[0];
        let body = json!({ "scope": "read", "name": "viewer" }).to_string();
        let (status, issued) = app.post_raw("/api/tokens", &body, Some(&self.admin)).await;
        assert_eq!(status, StatusCode::CREATED, "{issued}");
        (issued["token"].as_str().unwrap().to_owned(), issued["id"].as_str().unwrap().to_owned())
    }

    /// Revokes token `id` the way this scene does.
    async fn revoke(&self, id: &str) {
        match self.revoker {
            Revoker::Api | Revoker::OtherNode => {
                let app = &self.nodes[0];
                let resp = app
                    .http
                    .delete(app.url(&format!("/api/tokens/{id}")))
                    .bearer_auth(&self.admin)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
            }
            Revoker::Cli | Revoker::CliOnSharedDatabase => {
                let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
                command.env_remove("SWARMFEED_DATABASE").args(["token", "revoke", id, "--data-dir"]);
                command.arg(self.nodes[0].dir.path());
                if let Some(db) = &self.database {
                    command.args(["--database", &db.url]);
                }
                let run = command.stdin(std::process::Stdio::null()).output();
                let out = tokio::time::timeout(WAIT, run).await.expect("the CLI ends in time").unwrap();
                assert!(out.status.success(), "token revoke failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }

    async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
        if let Some(db) = self.database {
            db.drop().await;
        }
    }
}

/// Posts small batches to `app` until told to stop (at most 2 000 of them), so that a
/// stream always has events to send; returns how many batches went.
fn keep_posting(app: &TestApp, admin: &str) -> (Arc<AtomicBool>, tokio::task::JoinHandle<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (http, url, admin, flag) = (app.http.clone(), app.url("/api/events"), admin.to_owned(), Arc::clone(&stop));
    let task = tokio::spawn(async move {
        let mut posted = 0;
        while !flag.load(Ordering::Relaxed) && posted < 2_000 {
            let resp = http.post(&url).bearer_auth(&admin).json(&events("tool.called", 5)).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
            posted += 1;
        }
        posted
    });
    (stop, task)
}

/// One open stream of a read token.
enum Open {
    /// `/ws` or `/ws/html`, subscribed.
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Sse(futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>),
    Poll(tokio::task::JoinHandle<reqwest::Response>),
}

/// Opens `transport` on `app` with `token` and returns once the server serves it.
async fn open(transport: Transport, app: &TestApp, token: &str, admin: &str) -> Open {
    match transport {
        Transport::Ws => {
            let mut ws = WsClient::connect(app.addr, Some(token)).await.expect("websocket opens");
            ws.subscribe(None, json!({})).await;
            Open::Ws(Box::new(ws.stream))
        }
        Transport::WsHtml => {
            let mut request = format!("ws://{}/ws/html", app.addr).into_client_request().unwrap();
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            let (mut stream, _) = tokio_tungstenite::connect_async(request).await.expect("/ws/html opens");
            let first = tokio::time::timeout(WAIT, stream.next()).await.expect("the notice in time");
            match first {
                Some(Ok(Message::Text(t))) => assert!(t.contains(r#"data-state="subscribed""#), "{t}"),
                other => panic!("expected the subscribed notice, got {other:?}"),
            }
            Open::Ws(Box::new(stream))
        }
        Transport::Sse => {
            let resp = app.http.get(app.url("/api/stream")).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let mut body = resp.bytes_stream().boxed();
            let first = tokio::time::timeout(WAIT, body.next()).await.expect("the opening in time").unwrap().unwrap();
            assert!(std::str::from_utf8(&first).unwrap().contains("event: subscribed"));
            Open::Sse(body)
        }
        Transport::Poll => {
            let request = app.http.get(app.url("/api/events/poll?wait=50")).bearer_auth(token);
            let poll = tokio::spawn(async move { request.send().await.unwrap() });
            // In flight once the server counts it: its wait has begun.
            let metrics = app.url("/metrics");
            tokio::time::timeout(WAIT, async {
                loop {
                    let text = app.http.get(&metrics).bearer_auth(admin).send().await.unwrap().text().await.unwrap();
                    if text.contains("swarmfeed_connections{transport=\"poll\"} 1") {
                        return;
                    }
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the poll is waiting");
            Open::Poll(poll)
        }
    }
}

/// Reads until the stream has delivered an event: events are flowing to it.
async fn an_event_arrives(open: &mut Open) {
    let arrived = async {
        match open {
            Open::Ws(ws) => loop {
                match ws.next().await {
                    // `/ws` event and batch frames, `/ws/html` rows.
                    Some(Ok(Message::Text(t))) if t.contains("\"seq\"") || t.contains("feed-incoming") => return,
                    Some(Ok(_)) => {}
                    other => panic!("the socket ended before an event: {other:?}"),
                }
            },
            Open::Sse(body) => loop {
                let chunk = body.next().await.expect("the stream goes on").unwrap();
                if std::str::from_utf8(&chunk).unwrap().contains("\nid: ") || chunk.starts_with(b"id: ") {
                    return;
                }
            },
            Open::Poll(_) => unreachable!("a poll answers its first event"),
        }
    };
    tokio::time::timeout(WAIT, arrived).await.expect("an event within the wait");
}

/// Waits for the stream to end and says how it ended.
async fn ending(open: Open) -> String {
    match open {
        Open::Ws(mut ws) => loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(frame.code, CloseCode::Policy, "{frame:?}");
                    return format!("close {} {}", u16::from(frame.code), frame.reason);
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return "dropped without a close".into(),
                Some(Ok(_)) => {}
            }
        },
        Open::Sse(mut body) => {
            let mut tail = String::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { return "dropped".into() };
                tail.push_str(std::str::from_utf8(&chunk).unwrap());
                // Only the end matters; keep a little of it.
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 1024);
                }
            }
            let last = tail.trim_end().rsplit("\n\n").next().unwrap_or_default().to_owned();
            assert!(last.starts_with("event: revoked"), "the stream's last message says why: {last:?}");
            last
        }
        Open::Poll(poll) => {
            let resp = poll.await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(body["error"]["code"], "token_revoked", "{body}");
            format!("{status} {}", body["error"]["code"])
        }
    }
}

/// Opens `transport`, revokes its token with `revoker` (with events flowing, unless
/// `flowing` is false) and checks that the stream ends within [`ENDS_WITHIN`] and
/// the token is refused from then on.
async fn revocation_ends(transport: Transport, revoker: Revoker, flowing: bool) {
    let scene = Scene::new(revoker).await;
    let viewer = scene.viewer_node();
    let (token, id) = scene.read_token().await;
    let mut stream = open(transport, viewer, &token, &scene.admin).await;
    let producer = flowing.then(|| keep_posting(viewer, &scene.admin));
    if flowing {
        an_event_arrives(&mut stream).await;
    }
    scene.revoke(&id).await;
    let revoked_at = Instant::now();
    let how = tokio::time::timeout(ENDS_WITHIN, ending(stream))
        .await
        .unwrap_or_else(|_| panic!("{transport:?} outlived a revocation by {revoker:?} for {ENDS_WITHIN:?}"));
    let took = revoked_at.elapsed();
    let how = how.replace('\n', " ");
    eprintln!("{transport:?} revoked by {revoker:?} (events flowing: {flowing}): {how} after {took:?}");
    if let Some((stop, task)) = producer {
        stop.store(true, Ordering::Relaxed);
        let posted = task.await.unwrap();
        assert!(posted > 0, "events flowed while the token was revoked");
    }
    let (status, _) = viewer.get_as("/api/events?limit=1", Some(&token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the revoked token is refused");
    scene.stop().await;
}

#[tokio::test]
async fn a_websocket_ends_with_1008_when_its_token_is_revoked_through_the_api() {
    revocation_ends(Transport::Ws, Revoker::Api, true).await;
}

#[tokio::test]
async fn an_html_websocket_ends_with_1008_when_its_token_is_revoked_through_the_api() {
    revocation_ends(Transport::WsHtml, Revoker::Api, true).await;
}

#[tokio::test]
async fn an_event_stream_with_events_flowing_ends_when_its_token_is_revoked_through_the_api() {
    revocation_ends(Transport::Sse, Revoker::Api, true).await;
}

#[tokio::test]
async fn a_waiting_long_poll_answers_401_when_its_token_is_revoked_through_the_api() {
    revocation_ends(Transport::Poll, Revoker::Api, false).await;
}

#[tokio::test]
async fn a_waiting_long_poll_returns_no_event_committed_after_its_token_was_revoked() {
    let scene = Scene::new(Revoker::Api).await;
    let viewer = scene.viewer_node();
    let (token, id) = scene.read_token().await;
    let stream = open(Transport::Poll, viewer, &token, &scene.admin).await;
    scene.revoke(&id).await;
    // The event a moment after the revocation: the poll must not hand it over.
    let (status, body) = viewer.post_events(&events("task.created", 1)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let how = tokio::time::timeout(ENDS_WITHIN, ending(stream)).await.expect("the poll answers");
    assert!(how.starts_with("401"), "{how}");
    scene.stop().await;
}

#[tokio::test]
async fn a_websocket_ends_with_1008_when_its_token_is_revoked_by_the_cli() {
    revocation_ends(Transport::Ws, Revoker::Cli, true).await;
}

#[tokio::test]
async fn an_html_websocket_ends_with_1008_when_its_token_is_revoked_by_the_cli() {
    revocation_ends(Transport::WsHtml, Revoker::Cli, true).await;
}

#[tokio::test]
async fn an_event_stream_with_events_flowing_ends_when_its_token_is_revoked_by_the_cli() {
    revocation_ends(Transport::Sse, Revoker::Cli, true).await;
}

#[tokio::test]
async fn a_waiting_long_poll_answers_401_when_its_token_is_revoked_by_the_cli() {
    revocation_ends(Transport::Poll, Revoker::Cli, false).await;
}

#[tokio::test]
async fn a_websocket_on_node_b_ends_when_its_token_is_revoked_on_node_a() {
    revocation_ends(Transport::Ws, Revoker::OtherNode, true).await;
}

#[tokio::test]
async fn an_html_websocket_on_node_b_ends_when_its_token_is_revoked_on_node_a() {
    revocation_ends(Transport::WsHtml, Revoker::OtherNode, true).await;
}

#[tokio::test]
async fn an_event_stream_on_node_b_with_events_flowing_ends_when_its_token_is_revoked_on_node_a() {
    revocation_ends(Transport::Sse, Revoker::OtherNode, true).await;
}

#[tokio::test]
async fn a_waiting_long_poll_on_node_b_answers_401_when_its_token_is_revoked_on_node_a() {
    revocation_ends(Transport::Poll, Revoker::OtherNode, false).await;
}

#[tokio::test]
async fn a_websocket_ends_when_the_cli_revokes_its_token_in_the_shared_database() {
    revocation_ends(Transport::Ws, Revoker::CliOnSharedDatabase, true).await;
}

#[tokio::test]
async fn an_html_websocket_ends_when_the_cli_revokes_its_token_in_the_shared_database() {
    revocation_ends(Transport::WsHtml, Revoker::CliOnSharedDatabase, true).await;
}

#[tokio::test]
async fn an_event_stream_ends_when_the_cli_revokes_its_token_in_the_shared_database() {
    revocation_ends(Transport::Sse, Revoker::CliOnSharedDatabase, true).await;
}

#[tokio::test]
async fn a_waiting_long_poll_answers_401_when_the_cli_revokes_its_token_in_the_shared_database() {
    revocation_ends(Transport::Poll, Revoker::CliOnSharedDatabase, false).await;
}

#[tokio::test]
async fn a_stream_on_node_b_opened_with_a_browser_session_ends_when_the_browser_logs_out_on_node_a() {
    let scene = Scene::new(Revoker::OtherNode).await;
    let (a, b) = (&scene.nodes[0], scene.viewer_node());
    let cookie = crate::sessions::form_login(a.addr, &scene.admin).await;
    let origin = format!("http://{}", b.addr);
    let mut ws = WsClient::connect_with(b.addr, &[("cookie", &cookie), ("origin", &origin)]).await.unwrap();
    ws.subscribe(None, json!({})).await;
    let (stop, producer) = keep_posting(b, &scene.admin);
    let mut stream = Open::Ws(Box::new(ws.stream));
    an_event_arrives(&mut stream).await;

    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(a.url("/logout"))
        .header("cookie", &cookie)
        .header("origin", format!("http://{}", a.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // Node B re-reads on its own only once a minute: only the notification is in time.
    let how = tokio::time::timeout(ENDS_WITHIN, ending(stream)).await.expect("the stream on B ends");
    assert!(how.starts_with("close 1008"), "{how}");
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    scene.stop().await;
}

#[tokio::test]
async fn a_cli_revocation_ends_two_hundred_streams_of_one_token_and_none_of_another() {
    let scene = Scene::new(Revoker::Cli).await;
    let viewer = scene.viewer_node();
    let (token, id) = scene.read_token().await;
    let (other, _) = scene.read_token().await;
    let mut streams = Vec::new();
    for n in 0..200 {
        let transport = [Transport::Ws, Transport::WsHtml, Transport::Sse][n % 3];
        streams.push(open(transport, viewer, &token, &scene.admin).await);
    }
    let mut bystander = WsClient::connect(viewer.addr, Some(&other)).await.unwrap();
    bystander.subscribe(None, json!({})).await;

    scene.revoke(&id).await;
    let revoked_at = Instant::now();
    let endings = futures_util::future::join_all(streams.into_iter().map(ending));
    let endings = tokio::time::timeout(ENDS_WITHIN, endings).await.expect("every stream of the token ends in time");
    let took = revoked_at.elapsed();
    eprintln!("{} streams of one token ended {took:?} after a CLI revocation", endings.len());
    let (status, _) = viewer.post_events(&events("task.created", 1)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(bystander.next_event().await["event_type"], "task.created", "another token's stream goes on");
    scene.stop().await;
}

/// The value of the gauge `swarmfeed_connections{transport="…"}` on `app`.
async fn open_connections(app: &TestApp, transport: &str) -> u64 {
    let resp = app.http.get(app.url("/metrics")).bearer_auth(&app.admin).send().await.unwrap();
    let text = resp.text().await.unwrap();
    let prefix = format!("swarmfeed_connections{{transport=\"{transport}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).expect("the gauge is there")
}

#[tokio::test]
async fn a_websocket_stuck_on_a_client_that_reads_nothing_is_let_go_when_its_token_is_revoked() {
    let app = spawn_with(|c| {
        c.max_frames_per_sec = 0;
        c.revocation_sweep = NO_SWEEP;
    })
    .await;
    let body = json!({ "scope": "read" }).to_string();
    let (_, issued) = app.post_raw("/api/tokens", &body, Some(&app.admin)).await;
    let (token, id) = (issued["token"].as_str().unwrap(), issued["id"].as_str().unwrap());
    let mut stuck = WsClient::connect(app.addr, Some(token)).await.unwrap();
    stuck.subscribe(None, json!({})).await;
    // 30 MB of events for a client that reads none: far more than the socket buffers
    // hold, so the server is left waiting in a send (for up to a minute).
    let blob = "x".repeat(15_000);
    for _ in 0..2 {
        let batch: Vec<Value> = (0..1_000)
            .map(|_| json!({ "event_type": "tool.called", "source": "t", "data": { "blob": blob } }))
            .collect();
        let (status, body) = app.post_events(&json!(batch)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_eq!(open_connections(&app, "ws").await, 1);

    let resp = app.http.delete(app.url(&format!("/api/tokens/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let revoked_at = Instant::now();
    tokio::time::timeout(ENDS_WITHIN, async {
        while open_connections(&app, "ws").await > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the stuck socket is let go");
    eprintln!("a stuck websocket was let go {:?} after its token was revoked", revoked_at.elapsed());
    drop(stuck);
    app.stop().await;
}
