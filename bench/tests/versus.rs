//! The side-by-side modes, run as the real binary against the real servers they
//! start: swarmfeed's binary (built beside the bench, as `cargo test --workspace`
//! builds it) and Debian's nats-server. Tiny runs whose output must name both servers
//! and come out clean, so that a NATS client that misreads the wire fails here rather
//! than in a benchmark.
//!
//! Skipped, with the reason on stderr, when either binary is missing.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;

/// Longest a tiny run may take: two servers started, connected, loaded and stopped.
const RUN: Duration = Duration::from_secs(120);

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// swarmfeed's binary beside the bench's, or the reason the test cannot run.
fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let nats =
        std::env::var_os("SWARMFEED_BENCH_NATS_SERVER").map_or_else(|| PathBuf::from(NATS_SERVER), PathBuf::from);
    if !nats.is_file() {
        return Err(format!("no nats-server at {} (install Debian's `nats-server` package)", nats.display()));
    }
    let swarmfeed = PathBuf::from(env!("CARGO_BIN_EXE_swarmfeed-bench")).with_file_name("swarmfeed");
    if !swarmfeed.is_file() {
        return Err(format!("no swarmfeed binary at {} (run `cargo build -p swarmfeed` first)", swarmfeed.display()));
    }
    Ok((swarmfeed, nats))
}

/// Runs the bench with `args`; returns its JSON lines, after checking it succeeded.
async fn bench(args: &[&str], swarmfeed: &PathBuf, nats: &PathBuf) -> Vec<Value> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarmfeed-bench"));
    command.args(args).arg("--swarmfeed").arg(swarmfeed).arg("--nats-server").arg(nats).kill_on_drop(true);
    let output =
        tokio::time::timeout(RUN, command.output()).await.expect("the run ends in time").expect("swarmfeed-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{args:?} failed: {stderr}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The line whose `server` is `name`.
fn line<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines.iter().find(|l| l["server"] == name).unwrap_or_else(|| panic!("no line for {name}: {lines:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versus_nats_delivers_every_event_once_from_both_servers() {
    let (swarmfeed, nats) = match binaries() {
        Ok(found) => found,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let args = ["versus-nats", "--subscribers", "20", "--events", "20", "--rate", "20", "--ramp", "10"];
    let lines = bench(&args, &swarmfeed, &nats).await;
    for name in ["swarmfeed", "nats-server"] {
        let side = line(&lines, name);
        assert_eq!(side["subscribers_connected"], 20, "{side}");
        assert_eq!(side["deliveries"], 20 * 20, "{side}");
        for key in ["lost", "duplicates", "out_of_order", "closed_early", "error_frames"] {
            assert_eq!(side["integrity"][key], 0, "{name} {key}: {side}");
        }
        assert!(side["server_cpu_us_per_delivery"].as_f64().is_some(), "{side}");
        assert!(side["latency_from_send"]["p99_ms"].as_f64().is_some_and(|p| p > 0.0), "{side}");
    }
    let floor = lines.iter().find(|l| l["mode"] == "floor").expect("a floor line");
    assert_eq!(floor["integrity"]["lost"], 0, "{floor}");
    let ratio = line(&lines, "ratio");
    assert_eq!(ratio["targets"]["zero_loss_and_duplicates"], true, "{ratio}");
    // /proc counts CPU in 10 ms ticks: at this size nats-server may use less than one,
    // and a ratio over zero is reported as null rather than infinite.
    let nats_idle = ratio["nats_cpu_us_per_delivery"].as_f64() == Some(0.0);
    let cpu_ratio = &ratio["ratios"]["cpu_per_delivery"];
    assert!(cpu_ratio.as_f64().is_some_and(f64::is_finite) || (nats_idle && cpu_ratio.is_null()), "{ratio}");
    assert!(ratio["ratios"]["p99"].as_f64().is_some_and(|r| r > 0.0), "{ratio}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_versus_nats_holds_and_measures_both_servers() {
    let (swarmfeed, nats) = match binaries() {
        Ok(found) => found,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    // Two source addresses, to exercise the spreading that 100 000 connections need.
    let args = ["idle-versus-nats", "--connections", "20", "--warmup", "5", "--settle-secs", "1", "--sources", "2"];
    let lines = bench(&args, &swarmfeed, &nats).await;
    for name in ["swarmfeed", "nats-server"] {
        let side = line(&lines, name);
        assert_eq!(side["connected"], 20, "{side}");
        assert_eq!(side["alive_after"], 25, "every connection answers: {side}");
        assert!(side["server_bytes_per_connection"].as_f64().is_some(), "{side}");
    }
    let ratio = line(&lines, "ratio");
    assert!(ratio["ratio_bytes_per_connection"].as_f64().is_some(), "{ratio}");
}
