//! The load generator, run as the real binary against a real server: small runs whose
//! integrity checks must come out clean, so that a harness that misreads the wire fails
//! here rather than in a benchmark.
//!
//! The server runs in this process through the product's library, on port 0 over a
//! temporary SQLite log, as the product's own integration harness starts it; the bench
//! is this package's binary, so cargo builds it for these tests and names its path.

use std::time::Duration;

use serde_json::Value;
use swarmfeed::config::Config;
use swarmfeed::config::Limits;
use swarmfeed::server::Application;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// Longest a small run may take.
const RUN: Duration = Duration::from_secs(60);

/// Longest the server may take to stop once asked.
const STOP: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1, port 0, with its own data directory.
struct Server {
    url: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), swarmfeed::server::RunError>>,
    /// Held so that the data directory outlives the server.
    _dir: tempfile::TempDir,
}

/// Starts a server with the default configuration changed by `adjust`. The per-IP
/// limits are off: every connection of a run comes from 127.0.0.1.
async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        bind: "127.0.0.1:0".parse().expect("a literal socket address"),
        data_dir: dir.path().to_path_buf(),
        limits: Limits::unlimited(),
        ..Config::default()
    };
    adjust(&mut config);
    let app = Application::build(config).await.expect("server starts");
    let url = format!("http://{}", app.addr());
    let shutdown = app.shutdown_token();
    let task = tokio::spawn(app.run());
    Server { url, shutdown, task, _dir: dir }
}

impl Server {
    /// Asks the server to stop and waits until it has, so that a run that left the
    /// server unable to stop fails the test.
    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(STOP, self.task).await.expect("server stops in time");
        stopped.expect("server task does not panic").expect("server stops cleanly");
    }
}

/// The bench as cargo built it for this package's tests. Its environment is cleared of
/// `SWARMFEED_BENCH_URL`, so a value in the caller's shell cannot pick another server.
fn bench_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarmfeed-bench"));
    command.args(args).env_remove("SWARMFEED_BENCH_URL").kill_on_drop(true);
    command
}

/// Runs `swarmfeed-bench` with `args`; returns its JSON line, after checking it
/// succeeded.
async fn bench(args: &[&str]) -> Value {
    let output = tokio::time::timeout(RUN, bench_command(args).output())
        .await
        .expect("the run ends in time")
        .expect("swarmfeed-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| panic!("no JSON line; stderr: {stderr}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn assert_clean(report: &Value, expected: u64) {
    assert_eq!(report["deliveries"], expected, "{report}");
    let integrity = &report["integrity"];
    for key in ["lost", "duplicates", "out_of_order", "closed_early", "error_frames", "resets"] {
        assert_eq!(integrity[key], 0, "{key}: {report}");
    }
    assert_eq!(integrity["expected"], expected, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_sees_every_event_once_on_every_subscriber() {
    let server = spawn_with(|c| {
        c.no_auth = true;
        c.max_frames_per_sec = 0;
    })
    .await;
    let report = bench(&[
        "fanout",
        "--url",
        &server.url,
        "--subscribers",
        "40",
        "--ramp",
        "15",
        "--events",
        "60",
        "--rate",
        "300",
        "--batch",
        "3",
        "--client-threads",
        "2",
    ])
    .await;
    assert_clean(&report, 40 * 60);
    assert_eq!(report["drained"], true, "{report}");
    assert_eq!(report["subscribers_connected"], 40, "{report}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_wants_credentials_is_named_as_the_reason() {
    let server = spawn_with(|_| {}).await;
    let output = tokio::time::timeout(
        RUN,
        bench_command(&["fanout", "--url", &server.url, "--subscribers", "3", "--events", "3"]).output(),
    )
    .await
    .expect("the run ends in time")
    .expect("swarmfeed-bench runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--no-auth"), "{stderr}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_writes_and_reads_every_frame() {
    let report = bench(&["floor", "--subscribers", "30", "--events", "40", "--rate", "200", "--writers", "2"]).await;
    assert_clean(&report, 30 * 40);
    assert!(report["writer_cpu_s"].as_f64().is_some(), "{report}");
}
