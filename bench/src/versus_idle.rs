//! `idle-versus-nats`: what one idle WebSocket connection costs swarmfeed and what it
//! costs nats-server, in one run, as `idle-memory` measures it.
//!
//! For each server in turn (started by the harness, stopped before the next):
//! `--warmup` subscribed connections, `--settle-secs`, the server's `VmRSS`;
//! `--connections` more, `--settle-secs`, `VmRSS` again: the difference over the
//! connections is one idle subscriber's cost. Then every connection is asked to
//! answer (swarmfeed's `ping` action, NATS `PING`), so the figure is for live
//! sessions, and all are closed. A swarmfeed connection is subscribed to every event;
//! a NATS one has sent `CONNECT` and `SUB`.
//!
//! Past a few ten thousand connections two limits come first. Open files: the
//! harness raises its own limit (and so the servers' it starts) to what the run
//! needs, up to the hard limit, or past it when it runs as root. Ephemeral ports:
//! about 28 000 per source address (`ip_local_port_range`), so `--sources K` spreads
//! the connections over 127.0.0.1 … 127.0.0.K.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use memchr::memmem;
use serde::Serialize;
use tokio::time::Instant;

use crate::launch::{Kind, Launched, each_in_turn};
use crate::procfs;
use crate::report::{self, Report, grouped};
use crate::versus::Programs;
use crate::wire::{self, OP_TEXT, Subscribed};
use crate::{nats, nofile, subscriber};

/// How long all connections together may take to answer the liveness check.
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// The issue's target for one idle connection.
const TARGET_BYTES: f64 = 8.0 * 1024.0;

#[derive(Debug, Args)]
pub struct IdleVersusArgs {
    #[command(flatten)]
    programs: Programs,
    /// Idle connections to measure on each server.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    connections: u64,
    /// Connections opened before the baseline reading.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    warmup: u64,
    /// Connections opened at a time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    ramp: u64,
    /// Wait before each reading, seconds, for the server's allocator to settle.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=300))]
    settle_secs: u64,
    /// Source addresses to spread connections over, 127.0.0.1 up to 127.0.0.K: each
    /// gives about 28 000 ephemeral ports.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    sources: u8,
    /// The harness's runtime workers.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub client_threads: u64,
}

/// One server's figure.
#[derive(Debug, Serialize)]
struct Side {
    bytes_per_connection: f64,
    connected: u64,
    alive: u64,
}

/// # Errors
/// A server could not start, `/proc` cannot be read, or no connection could be opened.
pub async fn run(args: IdleVersusArgs) -> anyhow::Result<Report> {
    let (swarmfeed_bin, nats_bin) = (args.programs.swarmfeed()?, args.programs.nats_server()?);
    let total = args.connections + args.warmup;
    let limit = nofile::raise(total)?;
    eprintln!("open-file limit {limit}");

    let (sf, nt) = each_in_turn(&swarmfeed_bin, &nats_bin, async |server| measure(server, &args).await).await?;

    let ratio = sf.bytes_per_connection / nt.bytes_per_connection;
    let mut r = Report::new("idle-versus-nats");
    r.field("server", "ratio")
        .field("connections", args.connections)
        .field("sources", args.sources)
        .field("swarmfeed", &sf)
        .field("nats", &nt)
        .field("ratio_bytes_per_connection", ratio)
        .field("target_le_8_kib_met", sf.bytes_per_connection <= TARGET_BYTES);
    r.row(
        "per idle connection",
        format!(
            "swarmfeed {}, nats-server {}: {ratio:.2}× (target ≤ 8 KiB: {})",
            report::bytes(sf.bytes_per_connection),
            report::bytes(nt.bytes_per_connection),
            if sf.bytes_per_connection <= TARGET_BYTES { "met" } else { "not met" }
        ),
    );
    report::client_usage(&mut r);
    Ok(r)
}

/// Measures one server as the module says; emits its JSON line and table.
async fn measure(server: &Launched, args: &IdleVersusArgs) -> anyhow::Result<Side> {
    let proc = server.proc();
    procfs::check_open_files(&proc, "the server", args.connections + args.warmup)?;
    let settle = Duration::from_secs(args.settle_secs);
    let (mut held, warm_failed) = open(server, 0, args.warmup, args).await?;
    anyhow::ensure!(warm_failed == 0, "{warm_failed} warm-up connections failed");
    tokio::time::sleep(settle).await;
    let base = proc.usage().context("reading the server's memory")?;
    let started = Instant::now();
    let (measured, failed) = open(server, args.warmup, args.connections, args).await?;
    let open_secs = started.elapsed().as_secs_f64();
    let connected = measured.len() as u64;
    anyhow::ensure!(connected > 0, "no connection to {} could be opened", server.kind.name());
    held.extend(measured);
    tokio::time::sleep(settle).await;
    let loaded = proc.usage().context("reading the server's memory")?;
    let kind = server.kind;
    let (held, alive) =
        tokio::task::spawn_blocking(move || ping_all(kind, held)).await.context("the liveness check panicked")?;
    drop(held);

    let delta = loaded.rss_bytes as f64 - base.rss_bytes as f64;
    let per_connection = delta / connected as f64;
    let mut r = Report::new("idle-versus-nats");
    r.field("server", server.kind.name())
        .field("connections", args.connections)
        .field("connected", connected)
        .field("connect_failed", failed)
        .field("warmup", args.warmup)
        .field("sources", args.sources)
        .field("open_s", open_secs)
        .field("alive_after", alive)
        .field("server_rss_base_bytes", base.rss_bytes)
        .field("server_rss_loaded_bytes", loaded.rss_bytes)
        .field("server_bytes_per_connection", per_connection);
    r.row("server", format!("{} (pid {})", server.kind.name(), server.pid()))
        .row("connections", format!("{connected} of {} (failed {failed}) in {open_secs:.1} s", args.connections))
        .row("alive after settle", format!("{alive} of {} answered", connected + args.warmup))
        .row(
            "server RSS",
            format!("{} → {}", report::bytes(base.rss_bytes as f64), report::bytes(loaded.rss_bytes as f64)),
        )
        .row("per idle connection", format!("{} ({} bytes)", report::bytes(per_connection), grouped(per_connection)));
    r.emit();
    Ok(Side { bytes_per_connection: per_connection, connected, alive })
}

/// The source address of connection `i`: 127.0.0.1 … 127.0.0.K in turn.
fn source(i: u64, sources: u8) -> Option<Ipv4Addr> {
    (sources > 1).then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % u64::from(sources)) as u8))
}

/// Opens `n` subscribed connections numbered from `first`, `ramp` at a time; returns
/// their sockets and the failures.
async fn open(server: &Launched, first: u64, n: u64, args: &IdleVersusArgs) -> anyhow::Result<(Vec<TcpStream>, u64)> {
    let mut held = Vec::with_capacity(n as usize);
    let (url, kind, sources) = (server.ws_url.clone(), server.kind, args.sources);
    let next = std::cell::Cell::new(first);
    let connect = move || {
        let (url, i) = (url.clone(), next.get());
        next.set(i + 1);
        async move {
            let from = source(i, sources);
            match kind {
                Kind::Swarmfeed => wire::subscribe_from(&url, from, subscriber::CONNECT_TIMEOUT).await,
                Kind::Nats => nats::subscribe(&url, from, subscriber::CONNECT_TIMEOUT).await,
            }
        }
    };
    let failed = subscriber::open_waves(n, args.ramp, connect, |subscribed: Subscribed| {
        held.push(subscribed.stream);
        Ok(())
    })
    .await?;
    Ok((held, failed))
}

/// Asks every connection to answer and counts those that do within [`PING_TIMEOUT`].
/// Blocking: run off the runtime.
fn ping_all(kind: Kind, mut held: Vec<TcpStream>) -> (Vec<TcpStream>, u64) {
    let (ping, answer): (Vec<u8>, &[u8]) = match kind {
        Kind::Swarmfeed => (wire::client_frame(OP_TEXT, br#"{"action":"ping"}"#), br#""pong""#),
        Kind::Nats => nats::ping_frame(),
    };
    let deadline = std::time::Instant::now() + PING_TIMEOUT;
    let asked: Vec<bool> =
        held.iter_mut().map(|s| s.set_nonblocking(false).is_ok() && s.write_all(&ping).is_ok()).collect();
    let mut alive = 0;
    let mut buf = [0u8; 4096];
    for (stream, asked) in held.iter_mut().zip(asked) {
        let mut got = Vec::new();
        while asked && memmem::find(&got, answer).is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        alive += u64::from(memmem::find(&got, answer).is_some());
    }
    (held, alive)
}
