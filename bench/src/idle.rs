//! `idle-memory`: what one idle, subscribed WebSocket connection costs the server.
//!
//! Opens `--warmup` connections first (so one-off costs, such as the runtime's
//! first allocations per thread, land before the baseline), reads the server's
//! `VmRSS`, opens `--connections` more, waits `--settle-secs`, reads it again:
//! the difference over the connections is the marginal cost of one. Nothing is
//! published meanwhile. The connections are then pinged (each must answer `pong`, so
//! the figure is for live sessions) and closed, and the RSS read once more.
//!
//! `VmRSS` is user-space memory only; kernel socket buffers are not in it. The
//! system-wide kernel TCP memory (`/proc/net/sockstat`, both ends of every loopback
//! connection) is reported beside it.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::Common;
use crate::procfs::{self, Proc};
use crate::report::{self, Report, grouped};
use crate::subscriber::{self, Ws};
use crate::target::Target;

/// How long a connection may take to answer the liveness ping.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle subscribers to measure.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    connections: u64,
    /// Subscribers opened before the baseline reading.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    warmup: u64,
    /// Subscribers opened at a time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    ramp: u64,
    /// Wait before each reading, seconds, for the server's allocator to settle.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(0..=300))]
    settle_secs: u64,
}

/// # Errors
/// `--pid` is missing, `/proc` cannot be read, or connections fail.
pub async fn run(target: &Target, args: IdleArgs) -> anyhow::Result<Report> {
    let pid = args.common.pid.context("idle-memory needs --pid of the server to read its memory")?;
    let server = Proc::pid(pid);
    let total = args.connections + args.warmup;
    procfs::check_open_files(&Proc::me(), "the harness", total)?;
    procfs::check_open_files(&server, "the server", total)?;
    let settle = Duration::from_secs(args.settle_secs);

    let (mut held, warm_failed) = open(target, args.warmup, args.ramp).await?;
    anyhow::ensure!(warm_failed == 0, "{warm_failed} warm-up connections failed");
    // A pause, not a wait for an event: there is no signal for "the allocator is done".
    tokio::time::sleep(settle).await;
    let base = server.usage().context("reading the server's memory")?;
    let tcp_base = procfs::tcp_mem_bytes().ok();
    let started = tokio::time::Instant::now();
    let (measured, failed) = open(target, args.connections, args.ramp).await?;
    let open_secs = started.elapsed().as_secs_f64();
    let connected = measured.len() as u64;
    anyhow::ensure!(connected > 0, "no connection could be opened");
    held.extend(measured);
    tokio::time::sleep(settle).await;
    let loaded = server.usage().context("reading the server's memory")?;
    let tcp_loaded = procfs::tcp_mem_bytes().ok();
    let (held, alive) = ping_all(held).await;
    drop(held);
    tokio::time::sleep(settle).await;
    let closed = server.usage().context("reading the server's memory")?;

    let delta = loaded.rss_bytes as f64 - base.rss_bytes as f64;
    let per_connection = delta / connected as f64;
    let tcp_per = tcp_base.zip(tcp_loaded).map(|(b, l)| (l as f64 - b as f64) / connected as f64);
    let mut r = Report::new("idle-memory");
    r.field("url", args.common.url.as_str())
        .field("connections", args.connections)
        .field("connected", connected)
        .field("connect_failed", failed)
        .field("warmup", args.warmup)
        .field("open_s", open_secs)
        .field("alive_after", alive)
        .field("server_rss_base_bytes", base.rss_bytes)
        .field("server_rss_loaded_bytes", loaded.rss_bytes)
        .field("server_rss_after_close_bytes", closed.rss_bytes)
        .field("server_bytes_per_connection", per_connection)
        .field("kernel_tcp_bytes_per_connection_both_ends", tcp_per);
    r.row(
        "connections",
        format!(
            "{connected} of {} (failed {failed}) in {open_s:.1} s, after {} warm-up",
            args.connections,
            args.warmup,
            open_s = open_secs
        ),
    )
    .row("alive after settle", format!("{alive} of {} answered ping", connected + args.warmup))
    .row(
        "server RSS",
        format!(
            "{} → {} → {} after close",
            report::bytes(base.rss_bytes as f64),
            report::bytes(loaded.rss_bytes as f64),
            report::bytes(closed.rss_bytes as f64)
        ),
    )
    .row("per idle connection", format!("{} ({} bytes)", report::bytes(per_connection), grouped(per_connection)));
    if let Some(tcp) = tcp_per {
        r.row("kernel TCP memory", format!("{} per connection (system-wide, both ends)", report::bytes(tcp)));
    }
    report::client_usage(&mut r);
    Ok(r)
}

/// Opens `n` subscribed connections, `ramp` at a time; returns them and the failures.
async fn open(target: &Target, n: u64, ramp: u64) -> anyhow::Result<(Vec<Ws>, u64)> {
    let mut held = Vec::with_capacity(n as usize);
    let url = target.ws.clone();
    let connect = move || {
        let url = url.clone();
        async move { subscriber::subscribe(&url, None, subscriber::CONNECT_TIMEOUT).await }
    };
    let failed = subscriber::open_waves(n, ramp, connect, |(ws, _head)| {
        held.push(ws);
        Ok(())
    })
    .await?;
    Ok((held, failed))
}

/// Sends `ping` on every connection and counts those that answer `pong`.
async fn ping_all(held: Vec<Ws>) -> (Vec<Ws>, u64) {
    let mut pinging = JoinSet::new();
    for mut ws in held {
        pinging.spawn(async move {
            let answered = tokio::time::timeout(PING_TIMEOUT, async {
                ws.send(Message::text(r#"{"action":"ping"}"#)).await.ok()?;
                // Bounded by the timeout; only `pong` (or a keep-alive ping) can come.
                while let Some(Ok(message)) = ws.next().await {
                    if let Message::Text(t) = message
                        && t.contains(r#""pong""#)
                    {
                        return Some(());
                    }
                }
                None
            })
            .await
            .is_ok_and(|a| a.is_some());
            (ws, answered)
        });
    }
    let (mut back, mut alive) = (Vec::new(), 0);
    while let Some(done) = pinging.join_next().await {
        // A panicking ping task loses its connection, which counts as not alive.
        if let Ok((ws, answered)) = done {
            alive += u64::from(answered);
            back.push(ws);
        }
    }
    (back, alive)
}
