//! The command-line clients, run as the real binary: `swarmfeed emit` and
//! `swarmfeed tail` against a real server.

use std::net::SocketAddr;
use std::process::{Output, Stdio};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::watch;

use crate::harness::{BinaryServer, WAIT, all_events, seqs, spawn_app};

/// The binary with a given server and token, and nothing from the caller's
/// environment that could point it elsewhere.
fn swarmfeed(addr: SocketAddr, token: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
    command
        .env_remove("SWARMFEED_URL")
        .env_remove("SWARMFEED_TOKEN")
        .env_remove("NO_COLOR")
        .env("SWARMFEED_URL", format!("http://{addr}"))
        .env("SWARMFEED_TOKEN", token)
        .kill_on_drop(true);
    command
}

async fn run(mut command: Command) -> Output {
    let run = command.stdin(Stdio::null()).output();
    tokio::time::timeout(WAIT, run).await.expect("the command ends in time").expect("the binary runs")
}

/// `swarmfeed emit ARGS…`; its output.
async fn emit(addr: SocketAddr, token: &str, args: &[&str]) -> Output {
    let mut command = swarmfeed(addr, token);
    command.arg("emit").args(args);
    run(command).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `swarmfeed tail`, its stdout read line by line and its stderr kept.
struct TailProcess {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    stderr: watch::Receiver<Vec<String>>,
}

impl TailProcess {
    async fn start(addr: SocketAddr, token: &str, args: &[&str]) -> Self {
        let mut command = swarmfeed(addr, token);
        let mut child = command
            .arg("tail")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tail starts");
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let (kept, stderr) = watch::channel(Vec::new());
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // Drains stderr so that tail never blocks on a full pipe; ends with the process.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.send_modify(|kept| kept.push(line));
            }
        });
        TailProcess { child, stdout, stderr }
    }

    /// The next line tail printed; panics after [`WAIT`].
    async fn line(&mut self) -> String {
        let next = tokio::time::timeout(WAIT, self.stdout.next_line()).await;
        let stderr = self.stderr();
        next.unwrap_or_else(|_| panic!("no line from tail within the wait; its stderr:\n{stderr}"))
            .unwrap()
            .unwrap_or_else(|| panic!("tail ended; its stderr:\n{stderr}"))
    }

    async fn events(&mut self, count: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let line = self.line().await;
            out.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}")));
        }
        out
    }

    /// Sends SIGINT (Ctrl-C) and returns the exit status.
    async fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
        tokio::time::timeout(WAIT, self.child.wait()).await.expect("tail exits in time").unwrap()
    }

    fn stderr(&self) -> String {
        self.stderr.borrow().join("\n")
    }

    /// Waits until tail has said `words` on stderr; panics after [`WAIT`].
    async fn said(&mut self, words: &str) {
        let said = self.stderr.wait_for(|lines| lines.iter().any(|l| l.contains(words)));
        if !matches!(tokio::time::timeout(WAIT, said).await, Ok(Ok(_))) {
            panic!("tail did not say {words:?}; its stderr:\n{}", self.stderr());
        }
    }
}

#[tokio::test]
async fn emit_prints_the_seq_and_tail_json_since_0_prints_exactly_the_events() {
    let app = spawn_app().await;
    let first = emit(
        app.addr,
        &app.admin,
        &["task.created", "--source", "cli", "--task", "t1", "--data", r#"{"description":"sort the logs"}"#],
    )
    .await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert_eq!(text(&first.stdout), "1\n");
    let second = emit(app.addr, &app.admin, &["bid.submitted", "--source", "forge", "--agent", "forge"]).await;
    assert_eq!(text(&second.stdout), "2\n");
    let keyed = emit(app.addr, &app.admin, &["system.info", "--source", "cli", "--id", "k1"]).await;
    assert_eq!(text(&keyed.stdout), "3\n");
    let again = emit(app.addr, &app.admin, &["system.info", "--source", "cli", "--id", "k1"]).await;
    assert!(again.status.success());
    assert_eq!(text(&again.stdout), "3\n", "the same id is stored once");
    assert!(text(&again.stderr).contains("stored before"), "{}", text(&again.stderr));

    let mut tail = TailProcess::start(app.addr, &app.admin, &["--json", "--since", "0"]).await;
    for seq in 1..=3 {
        let line = tail.line().await;
        let resp = app.http.get(app.url(&format!("/api/events/{seq}"))).bearer_auth(&app.admin).send().await.unwrap();
        assert_eq!(line, resp.text().await.unwrap(), "line {seq} is the server's payload, byte for byte");
    }
    let stored = app.all_events().await;
    assert_eq!(stored[0]["data"]["description"], "sort the logs");
    assert_eq!(stored[1]["agent_id"], "forge");
    // The next line is the next event: nothing was printed twice or in between.
    emit(app.addr, &app.admin, &["task.completed", "--source", "cli", "--task", "t1"]).await;
    let next: Value = serde_json::from_str(&tail.line().await).unwrap();
    assert_eq!(next["seq"], 4);
    assert_eq!(next["event_type"], "task.completed");
    let status = tail.interrupt().await;
    assert!(status.success(), "Ctrl-C ends tail cleanly: {status:?}");
}

#[tokio::test]
async fn tail_without_json_prints_the_display_text_without_colour_into_a_pipe() {
    let app = spawn_app().await;
    app.post_events(&json!([
        {"event_type": "task.created", "source": "coordinator", "task_id": "t1", "data": {"description": "sort"}},
        {"event_type": "task.failed", "source": "coordinator", "task_id": "t1", "data": {"reason": "no bids received"}},
    ]))
    .await;
    let mut tail = TailProcess::start(app.addr, &app.admin, &["--since", "0", "--types", "task.*"]).await;
    let created = tail.line().await;
    assert!(created.contains("📝 New task: sort  coordinator task t1"), "{created:?}");
    let failed = tail.line().await;
    assert!(failed.contains("❌ Task failed: no bids received"), "{failed:?}");
    assert!(!created.contains('\x1b') && !failed.contains('\x1b'), "no colour into a pipe");
    tail.interrupt().await;
}

#[tokio::test]
async fn emit_file_twice_stores_the_events_once() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut content = String::new();
    for n in 0..2345 {
        let event = if n == 7 {
            json!({"id": "own-id", "event_type": "tool.called", "source": "file", "data": {"n": n}})
        } else {
            json!({"event_type": "tool.called", "source": "file", "data": {"n": n}})
        };
        content.push_str(&event.to_string());
        content.push('\n');
        if n % 500 == 0 {
            content.push_str("\n   \n");
        }
    }
    std::fs::write(&path, &content).unwrap();
    let file = path.to_str().unwrap();

    let first = emit(app.addr, &app.admin, &["--file", file]).await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(text(&first.stdout).contains("2345 events from"), "{}", text(&first.stdout));
    assert!(text(&first.stdout).contains("2345 stored, 0 stored before"), "{}", text(&first.stdout));
    let second = emit(app.addr, &app.admin, &["--file", file]).await;
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(text(&second.stdout).contains("0 stored, 2345 stored before"), "{}", text(&second.stdout));

    let stored = app.all_events().await;
    assert_eq!(stored.len(), 2345, "the second run stored nothing");
    let order: Vec<u64> = stored.iter().map(|e| e["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(order, (0..2345).collect::<Vec<_>>(), "in file order");
    assert_eq!(stored[7]["id"], "own-id", "a line's own id is kept");
    let digest: [u8; 32] = Sha256::digest(content.as_bytes()).into();
    assert_eq!(stored[0]["id"].as_str().unwrap(), swarmfeed::client::emit::line_id(&digest, 1));
}

#[tokio::test]
async fn a_bad_line_is_named_and_nothing_of_the_file_is_posted() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut lines: Vec<String> = (0..1500)
        .map(|n| json!({"event_type": "tool.called", "source": "file", "data": {"n": n}}).to_string())
        .collect();
    lines[1200] = json!({"event_type": "tool.called"}).to_string();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = emit(app.addr, &app.admin, &["--file", path.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("line 1201: source is required"), "{stderr}");
    assert!(app.all_events().await.is_empty(), "the good lines before it were not posted either");
}

#[tokio::test]
async fn bad_input_and_bad_tokens_are_named_and_store_nothing() {
    let app = spawn_app().await;
    let out = emit(app.addr, &app.admin, &["Task.Created", "--source", "cli"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("TYPE: event_type \"Task.Created\""), "{}", text(&out.stderr));
    let out = emit(app.addr, &app.admin, &["a.b", "--source", "cli", "--data", "[1]"]).await;
    assert!(text(&out.stderr).contains("--data is not a JSON object"), "{}", text(&out.stderr));
    let out = emit(app.addr, "not-a-token", &["a.b", "--source", "cli"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("refused the token"), "{}", text(&out.stderr));
    assert!(app.all_events().await.is_empty());

    let mut command = swarmfeed(app.addr, "not-a-token");
    command.args(["tail", "--json"]);
    let out = run(command).await;
    assert!(!out.status.success(), "tail gives up on a refused token instead of retrying");
    assert!(text(&out.stderr).contains("refused the token"), "{}", text(&out.stderr));
    let mut command = swarmfeed(app.addr, &app.admin);
    command.args(["tail", "--types", "Task"]);
    let out = run(command).await;
    assert!(text(&out.stderr).contains("bad filter: --types"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn tail_resumes_exactly_after_the_server_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--max-frames-per-sec", "0"];
    let server = BinaryServer::start(dir.path(), &flags).await;
    let (addr, token) = (server.addr, server.admin_token());
    let http = reqwest::Client::new();
    let post = |from: usize, count: usize| {
        let body: Vec<Value> = (from..from + count)
            .map(|i| json!({"id": format!("e{i}"), "event_type": "bid.submitted", "source": "r", "data": {"i": i}}))
            .collect();
        let request = http.post(format!("http://{addr}/api/events")).bearer_auth(&token).json(&body);
        async move { assert_eq!(request.send().await.unwrap().status(), 201) }
    };
    // Without --since, tail starts at the head: these five are history, not shown.
    post(1, 5).await;
    let mut tail = TailProcess::start(addr, &token, &["--json"]).await;
    // Only a subscribed tail sees the next events; its stderr says when it is.
    tail.said("watching").await;
    post(6, 10).await;
    let mut seen = seqs(&tail.events(10).await);

    server.kill9().await;
    let server = BinaryServer::start_at(dir.path(), &addr.to_string(), &flags).await;
    // Posted while tail is still away or reconnecting: it must replay them.
    post(16, 10).await;
    seen.extend(seqs(&tail.events(10).await));
    post(26, 5).await;
    seen.extend(seqs(&tail.events(5).await));

    assert_eq!(seen, (6..=30).collect::<Vec<_>>(), "every event after the start exactly once, in order");
    assert!(tail.stderr().contains("reconnecting"), "the connection really dropped:\n{}", tail.stderr());
    assert_eq!(all_events(&http, addr, &token).await.len(), 30);
    tail.interrupt().await;
    server.terminate().await;
}

/// The binary with nothing from the caller's environment that could change what it
/// opens or where it listens; SQLite in a data directory unless told otherwise.
fn bare_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
    for var in ["SWARMFEED_URL", "SWARMFEED_TOKEN", "SWARMFEED_DATABASE", "SWARMFEED_DATA_DIR", "NO_COLOR"] {
        command.env_remove(var);
    }
    command.kill_on_drop(true);
    command
}

#[tokio::test]
async fn a_startup_error_says_its_cause_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut command = bare_binary();
    command.args(["serve", "--bind", &addr, "--data-dir"]).arg(dir.path());
    let out = run(command).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let error = stderr.lines().find(|l| l.starts_with("error: ")).expect("an error line");
    assert!(error.contains(&addr), "{error}");
    assert_eq!(error.matches("Address already in use").count(), 1, "{error}");
}

#[tokio::test]
async fn a_corrupt_database_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("swarmfeed.db");
    std::fs::write(&file, vec![0x5a_u8; 8192]).unwrap();
    let mut command = bare_binary();
    command.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"]).arg(dir.path());
    let out = run(command).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let error = stderr.lines().find(|l| l.starts_with("error: ")).expect("an error line");
    assert!(error.contains(&file.display().to_string()), "the file is named: {error}");
    assert!(error.contains("not a database"), "{error}");
    assert_eq!(std::fs::read(&file).unwrap(), vec![0x5a_u8; 8192], "the file is left as it was");
}

#[tokio::test]
async fn a_flag_spelt_data_is_pointed_to_data_dir() {
    for args in [&["serve", "--data", "./d"][..], &["token", "list", "--data", "./d"], &["serve", "--data=./d"]] {
        let mut command = bare_binary();
        command.args(args);
        let out = run(command).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("'--data-dir'"), "{args:?}: {stderr}");
        assert!(!stderr.contains("--database"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn a_host_name_is_accepted_as_the_bind_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start_at(dir.path(), "localhost:0", &[]).await;
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    let health = reqwest::get(format!("http://{}/healthz", server.addr)).await.unwrap();
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    server.terminate().await;
    let mut command = bare_binary();
    command.args(["serve", "--bind", "no-such-host.invalid:80", "--data-dir"]).arg(dir.path());
    let out = run(command).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--bind"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn client_commands_ask_for_the_data_dir_but_not_a_database() {
    for client in ["tail", "emit"] {
        let mut command = bare_binary();
        command.args([client, "--help"]);
        let help = text(&run(command).await.stdout);
        assert!(help.contains("--data-dir"), "{client}: {help}");
        assert!(!help.contains("--database"), "{client}: {help}");
    }
    let mut command = bare_binary();
    command.args(["serve", "--help"]);
    assert!(text(&run(command).await.stdout).contains("--database"), "the server still takes one");
}

#[tokio::test]
async fn logs_into_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bare_binary()
        .args(["--log", "debug", "serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let seen = tokio::time::timeout(WAIT, async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            let ready = line.contains("swarmfeed ready");
            seen.push(line);
            if ready {
                return seen;
            }
        }
        panic!("the server exited before it was ready: {seen:?}");
    })
    .await
    .expect("ready in time");
    child.kill().await.unwrap();
    assert!(seen.len() > 1, "{seen:?}");
    assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "no ESC byte in {seen:?}");
}

#[tokio::test]
async fn emit_refuses_an_id_in_the_servers_namespace_and_names_the_flag() {
    let app = spawn_app().await;
    let out = emit(app.addr, &app.admin, &["task.assigned", "--source", "cli", "--id", "sf:settle.t1.outcome"]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("--id") && stderr.contains("sf:"), "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, "{\"event_type\":\"a.b\",\"source\":\"s\",\"id\":\"sf:x\"}\n").unwrap();
    let out = emit(app.addr, &app.admin, &["--file", file.to_str().unwrap()]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("line 1: id"), "{}", text(&out.stderr));
    assert!(app.all_events().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_coordinator_that_cannot_rebuild_stops_the_server_with_an_error_that_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = bare_binary();
    command.args(["token", "create", "--scope", "admin", "--data-dir"]).arg(dir.path());
    let out = run(command).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A swarm event whose stored data is damaged: the coordinator cannot fold it.
    {
        let conn = rusqlite::Connection::open(dir.path().join("swarmfeed.db")).unwrap();
        conn.execute_batch(
            "INSERT INTO events (seq, id, event_type, source, task_id, agent_id, ts_ms, data)
             VALUES (1, 'e1', 'task.created', 's', 't1', NULL, 0, '{damaged');
             UPDATE log_head SET head = 1;",
        )
        .unwrap();
    }
    let mut command = bare_binary();
    command.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"]).arg(dir.path());
    let out = run(command).await;
    assert!(!out.status.success(), "the process exits non-zero, for a supervisor to restart it");
    let stderr = text(&out.stderr);
    let error = stderr.lines().find(|l| l.starts_with("error: ")).expect("an error line");
    assert!(error.contains("the coordinator task ended before shutdown"), "{error}");
}

#[tokio::test]
async fn tail_until_head_prints_the_log_up_to_the_head_once_and_exits() {
    let app = spawn_app().await;
    // More than one page of the API, so the range is read in several requests.
    for chunk in 0..3 {
        let batch: Vec<Value> = (0..900)
            .map(|i| json!({"event_type": if i % 2 == 0 { "task.created" } else { "tool.called" }, "source": format!("s{chunk}")}))
            .collect();
        assert_eq!(app.post_events(&json!(batch)).await.0, 201);
    }
    let stored = all_events(&app.http, app.addr, &app.admin).await;
    let mut command = swarmfeed(app.addr, &app.admin);
    command.args(["tail", "--since", "0", "--until-head", "--json"]);
    let out = run(command).await;
    assert!(out.status.success(), "exits 0: {}", text(&out.stderr));
    let printed: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(printed, stored, "every event once, in seq order, as the API gives it");

    let mut command = swarmfeed(app.addr, &app.admin);
    command.args(["tail", "--since", "2000", "--until-head", "--json", "--types", "task.*", "--source", "s2"]);
    let out = run(command).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let want: Vec<u64> = (2001..=2700).filter(|s| s % 2 == 1).collect();
    assert_eq!(
        seqs(&printed),
        want,
        "the filter applies; the range ends at the head though its last event is filtered out"
    );

    let mut command = swarmfeed(app.addr, &app.admin);
    command.args(["tail", "--until-head"]);
    let out = run(command).await;
    assert!(!out.status.success() && text(&out.stderr).contains("--since"), "{}", text(&out.stderr));
    app.stop().await;
}
