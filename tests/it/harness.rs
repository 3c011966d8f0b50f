//! The test harness: a real server on port 0 with a temporary data directory, in
//! process (`spawn_app`) or as the real binary (`BinaryServer`, for `kill -9`), and
//! clients for each transport. The store is SQLite, or PostgreSQL when the suite runs
//! on it (see `database`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use swarmfeed::config::Config;
use swarmfeed::config::Limits;
use swarmfeed::server::Application;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::database::{Database, suite_on_postgres};

/// How long any single wait in a test may take before it counts as a failure.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestApp {
    pub addr: SocketAddr,
    pub admin: String,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), swarmfeed::server::RunError>>>,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database the harness made for this server, dropped on `stop`.
    database: Option<Database>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// A server with the default configuration changed by `adjust`.
pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    // Every test client comes from 127.0.0.1, so the per-IP limits are off unless a
    // test sets them.
    let mut config = Config {
        bind: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        limits: Limits::unlimited(),
        ..Config::default()
    };
    adjust(&mut config);
    let mut database = None;
    if config.database.is_none() && suite_on_postgres() {
        let db = Database::fresh().await;
        config.database = Some(db.url.clone());
        database = Some(db);
    }
    let app = Application::build(config).await.expect("server starts");
    let admin = app.first_admin_token().map(|t| t.token.clone()).unwrap_or_default();
    let addr = app.addr();
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run());
    TestApp { addr, admin, http: reqwest::Client::new(), shutdown, task: Some(task), dir, database }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to /api/events with the admin token.
    pub async fn post_events(&self, body: &Value) -> (StatusCode, Value) {
        self.post_raw("/api/events", &body.to_string(), Some(&self.admin)).await
    }

    pub async fn post_raw(&self, path: &str, body: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.post(self.url(path)).body(body.to_owned());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(path, Some(&self.admin)).await
    }

    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Issues a token with `scope` through the admin API.
    pub async fn token(&self, scope: &str) -> String {
        let (status, body) =
            self.post_raw("/api/tokens", &json!({ "scope": scope }).to_string(), Some(&self.admin)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Issues a token with `scope` named `name` (what events a command logs name as
    /// their actor) through the admin API.
    pub async fn named_token(&self, name: &str, scope: &str) -> String {
        let body = json!({ "name": name, "scope": scope }).to_string();
        let (status, body) = self.post_raw("/api/tokens", &body, Some(&self.admin)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// The seqs of every stored event, ascending, read through the API.
    pub async fn all_events(&self) -> Vec<Value> {
        all_events(&self.http, self.addr, &self.admin).await
    }

    pub async fn ws(&self) -> WsClient {
        WsClient::connect(self.addr, Some(&self.admin)).await.expect("websocket opens")
    }

    /// Asks the server to stop and waits until it has.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.expect("server stops in time").unwrap().unwrap();
        }
        if let Some(db) = self.database.take() {
            db.drop().await;
        }
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

pub async fn all_events(http: &reqwest::Client, addr: SocketAddr, token: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let resp = http
            .get(format!("http://{addr}/api/events?after={after}&limit=1000"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let page: Value = resp.json().await.unwrap();
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// `count` valid events of `event_type`, with data `{"n": i}`.
pub fn events(event_type: &str, count: usize) -> Value {
    Value::Array(
        (0..count).map(|n| json!({ "event_type": event_type, "source": "test", "data": { "n": n } })).collect(),
    )
}

pub struct WsClient {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Events of a batch frame not yet handed out by [`WsClient::next_event`].
    pending: std::collections::VecDeque<Value>,
}

impl WsClient {
    /// Opens /ws; the error is the HTTP status the upgrade was refused with, if any.
    pub async fn connect(addr: SocketAddr, token: Option<&str>) -> Result<Self, Option<u16>> {
        let bearer = token.map(|t| format!("Bearer {t}"));
        Self::connect_with(addr, bearer.as_deref().map(|b| ("authorization", b)).as_slice()).await
    }

    /// Opens `/ws` with extra request headers (a browser's `Cookie` and `Origin`).
    pub async fn connect_with(addr: SocketAddr, headers: &[(&'static str, &str)]) -> Result<Self, Option<u16>> {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((stream, _)) => Ok(WsClient { stream, pending: Default::default() }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Some(resp.status().as_u16())),
            Err(_) => Err(None),
        }
    }

    pub async fn send_json(&mut self, value: Value) {
        self.stream.send(Message::Text(value.to_string().into())).await.expect("ws send");
    }

    /// The next text frame as JSON, skipping pings; panics after [`WAIT`].
    pub async fn next_json(&mut self) -> Value {
        match self.next_message().await {
            Some(Message::Text(t)) => serde_json::from_str(&t).expect("server frames are JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next non-ping message, `None` when the stream ended.
    pub async fn next_message(&mut self) -> Option<Message> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next()).await.expect("frame within the wait")?;
            match msg {
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(m) => return Some(m),
                Err(_) => return None,
            }
        }
    }

    /// Subscribes and returns the `subscribed` frame.
    pub async fn subscribe(&mut self, since: Option<u64>, filter: Value) -> Value {
        let mut msg = json!({ "action": "subscribe", "channel": "events", "filter": filter });
        if let Some(s) = since {
            msg["since"] = json!(s);
        }
        self.send_json(msg).await;
        let reply = self.next_json().await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        reply
    }

    /// The next event, whether it came alone or in a batch.
    pub async fn next_event(&mut self) -> Value {
        while self.pending.is_empty() {
            let (events, _) = self.collect_events(1).await;
            self.pending.extend(events);
        }
        self.pending.pop_front().expect("not empty")
    }

    /// Reads frames until `count` events arrived; returns them and the frame count.
    pub async fn collect_events(&mut self, count: usize) -> (Vec<Value>, usize) {
        let mut events = Vec::new();
        let mut frames = 0;
        while events.len() < count {
            let frame = self.next_json().await;
            frames += 1;
            match frame["type"].as_str() {
                Some("event") => events.push(frame["payload"].clone()),
                Some("batch") => events.extend(frame["payload"].as_array().unwrap().iter().cloned()),
                _ => panic!("unexpected frame {frame}"),
            }
        }
        (events, frames)
    }
}

pub fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// What every fault test asserts of the whole log, `stored` in seq order: seq is
/// gapless from 1, each id is stored once, and every `acknowledged` id is stored with
/// the seq it was acknowledged with.
pub fn assert_acknowledged_stored_once<'a>(
    stored: &[Value],
    acknowledged: impl IntoIterator<Item = (&'a String, &'a u64)>,
) {
    assert_eq!(seqs(stored), (1..=stored.len() as u64).collect::<Vec<_>>(), "seq is gapless");
    let by_id: std::collections::HashMap<&str, u64> =
        stored.iter().map(|e| (e["id"].as_str().unwrap(), e["seq"].as_u64().unwrap())).collect();
    assert_eq!(by_id.len(), stored.len(), "each id stored once");
    for (id, seq) in acknowledged {
        assert_eq!(by_id.get(id.as_str()), Some(seq), "acknowledged {id} is stored with its seq");
    }
}

/// The real `swarmfeed` binary, for tests that kill it.
/// libfaketime from Debian's package, which moves a process's wall clock (and only it,
/// with `DONT_FAKE_MONOTONIC`) to what a file says, re-read on every call.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The wall clock of a server started by [`BinaryServer::with_clock`]: `set` moves it.
pub struct ServerClock {
    file: PathBuf,
}

impl ServerClock {
    /// Puts the server's wall clock `offset` (libfaketime's `-3d`, `-2h`, `+0`) away
    /// from the machine's, from its next reading on.
    pub fn set(&self, offset: &str) {
        std::fs::write(&self.file, format!("{offset}\n")).unwrap();
    }
}

pub struct BinaryServer {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The login link the server printed at start, once it has.
    login_link: tokio::sync::watch::Receiver<Option<String>>,
}

impl BinaryServer {
    /// Starts `swarmfeed serve` on a free loopback port with `data_dir`, plus `extra`
    /// flags, and waits until it is ready. When the suite runs on PostgreSQL the log is
    /// the database that belongs to `data_dir`, unless `extra` names a `--database`.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_at(data_dir, "127.0.0.1:0", extra).await
    }

    /// Like [`BinaryServer::start`], on `bind`: a restart on the address an open
    /// browser page (or a tail) keeps reconnecting to.
    pub async fn start_at(data_dir: &Path, bind: &str, extra: &[&str]) -> Self {
        Self::start_with_env(data_dir, bind, extra, &[]).await
    }

    /// Like [`BinaryServer::start_at`], with `env` added to the server's environment
    /// (a preloaded library that moves its wall clock, say).
    pub async fn start_with_env(data_dir: &Path, bind: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
        command.envs(env.iter().copied());
        match suite_on_postgres() {
            true => command.env("SWARMFEED_DATABASE", Database::for_data_dir(data_dir).await.url),
            false => command.env_remove("SWARMFEED_DATABASE"),
        };
        let mut child = command
            .args(["--log-format", "json", "serve", "--bind", bind])
            .args(["--max-conns-per-ip", "0", "--requests-per-ip-per-sec", "0", "--handshakes-per-ip-per-sec", "0"])
            .args(["--ingest-rate-per-token", "0", "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = ready_addr(&mut lines, |_| {}).await.expect("server exited before it was ready");
        // Keep draining stderr so the server never blocks on a full pipe, noting the
        // login link it prints.
        let (link_tx, login_link) = tokio::sync::watch::channel(None);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("Log in at ") {
                    let url = rest.split_whitespace().next().unwrap_or_default().to_owned();
                    // The test may have stopped watching; the line is then of no use.
                    let _ = link_tx.send(Some(url));
                }
            }
        });
        BinaryServer { child, addr, data_dir: data_dir.to_path_buf(), login_link }
    }

    /// Like [`BinaryServer::start`], with the server's wall clock at `offset` from the
    /// machine's and movable (commit times in the past, say), or `None` without
    /// [`LIBFAKETIME`]. The offset file lives in `data_dir`'s parent.
    pub async fn with_clock(data_dir: &Path, offset: &str, extra: &[&str]) -> Option<(Self, ServerClock)> {
        if !Path::new(LIBFAKETIME).exists() {
            eprintln!("SKIPPED: moving a server's wall clock needs {LIBFAKETIME} (Debian's libfaketime)");
            return None;
        }
        let clock = ServerClock { file: data_dir.parent().unwrap().join("clock-offset") };
        clock.set(offset);
        let file = clock.file.display().to_string();
        let env = [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", file.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
            ("DONT_FAKE_MONOTONIC", "1"),
        ];
        Some((Self::start_with_env(data_dir, "127.0.0.1:0", extra, &env).await, clock))
    }

    /// The one-time login link the server printed at start (`Log in at …`).
    pub async fn login_link(&self) -> String {
        let mut link = self.login_link.clone();
        let found = tokio::time::timeout(WAIT, link.wait_for(Option::is_some)).await;
        found.expect("a login link is printed in time").expect("stderr is read").clone().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token")).unwrap().trim().to_owned()
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.pid();
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("exits in time").unwrap()
    }
}

/// Resident memory of a process, bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Reads a server's JSON log (`--log-format json` on stderr) until it says it is
/// ready, for at most [`WAIT`]: the address it serves, or `None` if the log ended
/// first (the server exited). Earlier lines go to `before`.
pub async fn ready_addr<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    mut before: impl FnMut(String),
) -> Option<SocketAddr> {
    let ready = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && v["fields"]["message"] == "swarmfeed ready"
            {
                return Some(v["fields"]["addr"].as_str().unwrap().parse::<SocketAddr>().unwrap());
            }
            before(line);
        }
        None
    };
    tokio::time::timeout(WAIT, ready).await.expect("the server is ready or gone in time")
}
