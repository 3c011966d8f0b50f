//! The load generator, run as the real binary against a real server: small runs whose
//! integrity checks must come out clean, so that a harness that misreads the wire fails
//! here rather than in a benchmark.

use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

use crate::harness::spawn_with;

/// Longest a small run may take.
const RUN: Duration = Duration::from_secs(60);

/// Runs `swarmfeed-bench` with `args`; returns its JSON line, after checking it
/// succeeded.
async fn bench(args: &[&str]) -> Value {
    let output = tokio::time::timeout(
        RUN,
        Command::new(env!("CARGO_BIN_EXE_swarmfeed-bench")).args(args).env_remove("SWARMFEED_BENCH_URL").output(),
    )
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
    let app = spawn_with(|c| {
        c.no_auth = true;
        c.max_frames_per_sec = 0;
    })
    .await;
    let url = format!("http://{}", app.addr);
    let report = bench(&[
        "fanout",
        "--url",
        &url,
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_wants_credentials_is_named_as_the_reason() {
    let app = spawn_with(|_| {}).await;
    let url = format!("http://{}", app.addr);
    let output = Command::new(env!("CARGO_BIN_EXE_swarmfeed-bench"))
        .args(["fanout", "--url", &url, "--subscribers", "3", "--events", "3"])
        .output()
        .await
        .expect("swarmfeed-bench runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--no-auth"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_writes_and_reads_every_frame() {
    let report = bench(&["floor", "--subscribers", "30", "--events", "40", "--rate", "200", "--writers", "2"]).await;
    assert_clean(&report, 30 * 40);
    assert!(report["writer_cpu_s"].as_f64().is_some(), "{report}");
}
