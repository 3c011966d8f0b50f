//! `versus-nats`: `fanout`'s load against swarmfeed, then the same load against a
//! private nats-server's WebSocket gateway, then (unless `--no-floor`) the same
//! deliveries with no server at all, in one run; figures as ratios.
//!
//! Each server is started by the harness ([`launch`]), loaded and stopped before the
//! next starts, so neither shares the cores with the other's work. For each:
//!
//! 1. `--subscribers` WebSocket subscriptions, opened `--ramp` at a time and read by
//!    the same reader threads (`--client-threads`): swarmfeed's `subscribe` action, or
//!    NATS `CONNECT`/`SUB` confirmed by `PONG`.
//! 2. `--events` at `--rate`, one at a time, each stamped with the wall clock just
//!    before it leaves and padded with `--pad` bytes: a `POST /api/events` each to
//!    swarmfeed (acknowledged after its commit, fsync included), a `PUB` each to
//!    nats-server on a plain client connection (confirmed by a final `PING`).
//! 3. The drain: until every subscriber has every event, or `--drain-secs`.
//!
//! Measured per server: its CPU time (`/proc/PID/stat`) over steps 2–3 ÷ deliveries,
//! latency from send to receive (p50, p99), and lost and duplicated events against
//! the seqs the server acknowledged (swarmfeed's own seqs; for NATS the harness's
//! numbering). One JSON line per server and per floor, then one with the ratios
//! swarmfeed ÷ nats-server.
//!
//! The comparison is of a durable log (every event committed to SQLite with fsync
//! before it is sent) against a broker that keeps nothing: swarmfeed's latency from
//! send includes its commit, nats-server's has none to include.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio::time::Instant;

use crate::fanout::{self, Integrity, Plan};
use crate::floor::{self, FloorArgs};
use crate::launch::{Kind, Launched, each_in_turn};
use crate::readers::{Protocol, Readers};
use crate::report::{Latency, Report, grouped};
use crate::subscriber::{self, Sink};
use crate::target::Target;
use crate::{nats, nofile, report};

/// POSTs in flight at most on the swarmfeed side, as `fanout`'s default.
const IN_FLIGHT: u64 = 16;

/// The two servers' programs.
#[derive(Debug, Clone, Args)]
pub struct Programs {
    /// The swarmfeed binary to start; by default `swarmfeed` beside this program
    /// (`target/release/swarmfeed` for `target/release/swarmfeed-bench`).
    #[arg(long, env = "SWARMFEED_BENCH_SWARMFEED")]
    pub swarmfeed: Option<PathBuf>,
    /// The nats-server binary to start (Debian's package installs it here).
    #[arg(long, env = "SWARMFEED_BENCH_NATS_SERVER", default_value = "/usr/sbin/nats-server")]
    pub nats_server: PathBuf,
}

impl Programs {
    /// The swarmfeed binary, checked to exist.
    ///
    /// # Errors
    /// It does not exist, or this program's own path is unknown.
    pub fn swarmfeed(&self) -> anyhow::Result<PathBuf> {
        let path = match &self.swarmfeed {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("finding this program")?
                .with_file_name(format!("swarmfeed{}", std::env::consts::EXE_SUFFIX)),
        };
        anyhow::ensure!(
            path.is_file(),
            "no swarmfeed binary at {}: build it (`cargo build --release -p swarmfeed`) or pass --swarmfeed",
            path.display()
        );
        Ok(path)
    }

    /// The nats-server binary, checked to exist.
    ///
    /// # Errors
    /// It does not exist.
    pub fn nats_server(&self) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            self.nats_server.is_file(),
            "no nats-server at {}: install Debian's `nats-server` package or pass --nats-server",
            self.nats_server.display()
        );
        Ok(self.nats_server.clone())
    }
}

#[derive(Debug, Args)]
pub struct VersusArgs {
    #[command(flatten)]
    programs: Programs,
    /// WebSocket subscribers to open on each server.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    subscribers: u64,
    /// Subscribers opened at a time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    ramp: u64,
    /// Events to publish to each server.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    events: u64,
    /// Events per second, one per POST or PUB.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Bytes of padding in every payload, the same on both servers.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pad: u64,
    /// Hard cap on each publishing phase, seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=900))]
    max_secs: u64,
    /// How long to wait after the last event for deliveries still under way, seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    drain_secs: u64,
    /// The harness's reader threads (and runtime workers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub client_threads: u64,
    /// Leave out the `floor` run (the same deliveries with no server).
    #[arg(long)]
    no_floor: bool,
}

/// What one server's run came to.
struct Side {
    cpu_us_per_delivery: f64,
    from_send: Latency,
    integrity: Integrity,
    deliveries: u64,
    expected: u64,
}

/// The ratios a run reports, swarmfeed ÷ nats-server unless named otherwise.
#[derive(Debug, Serialize)]
struct Ratios {
    cpu_per_delivery: f64,
    p50: f64,
    p99: f64,
    swarmfeed_p99_over_floor: Option<f64>,
    nats_p99_over_floor: Option<f64>,
}

/// The targets, each met or not in this run.
#[derive(Debug, Serialize)]
struct Targets {
    /// swarmfeed's CPU per delivery ≤ 0.8 × nats-server's.
    cpu_per_delivery_le_0_8: bool,
    /// swarmfeed's p99 ≤ nats-server's.
    p99_le_1: bool,
    /// No event lost or repeated, on either server.
    zero_loss_and_duplicates: bool,
}

/// # Errors
/// A server could not start, no subscriber could connect, or publishing failed.
pub async fn run(args: VersusArgs) -> anyhow::Result<Report> {
    let (swarmfeed_bin, nats_bin) = (args.programs.swarmfeed()?, args.programs.nats_server()?);
    // Servers started below inherit this limit.
    let limit = nofile::raise(args.subscribers)?;
    eprintln!("open-file limit {limit}");

    let (sf, nt) = each_in_turn(&swarmfeed_bin, &nats_bin, async |server| measure(server, &args).await).await?;
    let floor_p99 = if args.no_floor {
        None
    } else {
        let floor = floor::run(FloorArgs::like_fanout(args.subscribers, args.events, args.rate, args.client_threads))
            .await
            .context("the floor's run")?;
        let p99 = floor.number(&["latency_from_due", "p99_ms"]);
        floor.emit();
        p99
    };

    let over = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let ratios = Ratios {
        cpu_per_delivery: over(sf.cpu_us_per_delivery, nt.cpu_us_per_delivery),
        p50: over(sf.from_send.p50_ms, nt.from_send.p50_ms),
        p99: over(sf.from_send.p99_ms, nt.from_send.p99_ms),
        swarmfeed_p99_over_floor: floor_p99.map(|f| over(sf.from_send.p99_ms, f)),
        nats_p99_over_floor: floor_p99.map(|f| over(nt.from_send.p99_ms, f)),
    };
    let clean =
        |s: &Side| s.integrity.lost == 0 && s.integrity.duplicates == 0 && s.deliveries == s.expected && s.expected > 0;
    let targets = Targets {
        cpu_per_delivery_le_0_8: ratios.cpu_per_delivery <= 0.8,
        p99_le_1: ratios.p99 <= 1.0,
        zero_loss_and_duplicates: clean(&sf) && clean(&nt),
    };
    let mut r = Report::new("versus-nats");
    r.field("server", "ratio")
        .field("subscribers", args.subscribers)
        .field("events", args.events)
        .field("rate", args.rate)
        .field("pad", args.pad)
        .field("swarmfeed_cpu_us_per_delivery", sf.cpu_us_per_delivery)
        .field("nats_cpu_us_per_delivery", nt.cpu_us_per_delivery)
        .field("swarmfeed_p99_ms", sf.from_send.p99_ms)
        .field("nats_p99_ms", nt.from_send.p99_ms)
        .field("floor_p99_ms", floor_p99)
        .field("swarmfeed_lost", sf.integrity.lost)
        .field("swarmfeed_duplicates", sf.integrity.duplicates)
        .field("nats_lost", nt.integrity.lost)
        .field("nats_duplicates", nt.integrity.duplicates)
        .field("ratios", &ratios)
        .field("targets", &targets);
    r.row(
        "CPU per delivery",
        format!(
            "swarmfeed {:.2} µs, nats-server {:.2} µs: {:.2}× (target ≤ 0.8×)",
            sf.cpu_us_per_delivery, nt.cpu_us_per_delivery, ratios.cpu_per_delivery
        ),
    )
    .row(
        "p99 send→receive",
        format!(
            "swarmfeed {:.2} ms, nats-server {:.2} ms: {:.2}× (target ≤ 1×); floor {}",
            sf.from_send.p99_ms,
            nt.from_send.p99_ms,
            ratios.p99,
            floor_p99.map_or("not run".into(), |f| format!("{f:.2} ms"))
        ),
    )
    .row(
        "lost / duplicates",
        format!(
            "swarmfeed {} / {}, nats-server {} / {}",
            sf.integrity.lost, sf.integrity.duplicates, nt.integrity.lost, nt.integrity.duplicates
        ),
    );
    report::client_usage(&mut r);
    Ok(r)
}

/// Loads one server as the module says; emits its JSON line and table.
async fn measure(server: &Launched, args: &VersusArgs) -> anyhow::Result<Side> {
    let threads = args.client_threads as usize;
    let sink = Arc::new(Sink::new(threads));
    // swarmfeed's seqs start at its head; NATS's at 1. Room for the run's events and a
    // margin, as `fanout` keeps.
    let span = args.events.saturating_mul(4).max(65_536);
    let ramp_start = Instant::now();
    let target = Target::parse(&server.http_url).ok();
    let (readers, connect_failed) = match (server.kind, &target) {
        (Kind::Swarmfeed, Some(target)) => {
            fanout::open_subscribers(target, args.subscribers, args.ramp, span, threads, &sink).await?
        }
        (Kind::Swarmfeed, None) => anyhow::bail!("swarmfeed's URL {} does not parse", server.http_url),
        (Kind::Nats, _) => open_nats(&server.ws_url, args.subscribers, args.ramp, span, threads, &sink).await?,
    };
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let connected = readers.len() as u64;
    eprintln!("{}: {connected} subscribers in {ramp_secs:.1} s; publishing", server.kind.name());

    let plan = Plan {
        events: args.events,
        rate: args.rate,
        batch: 1,
        in_flight: IN_FLIGHT,
        max_secs: args.max_secs,
        pad: args.pad as usize,
    };
    let proc = server.proc();
    let before = proc.usage().context("reading the server's /proc")?;
    let publish_start = Instant::now();
    let seqs = match (server.kind, &target) {
        (Kind::Swarmfeed, Some(target)) => fanout::publish(target, &plan, None).await?.seqs,
        (Kind::Nats, _) => nats::publish(server.client_addr, &plan, &"x".repeat(plan.pad)).await?,
        (Kind::Swarmfeed, None) => unreachable!("refused above"),
    };
    let publish_secs = publish_start.elapsed().as_secs_f64();
    let expected = seqs.len() as u64 * connected;
    let drained = sink.drained(expected, Duration::from_secs(args.drain_secs)).await;
    let after = proc.usage().context("reading the server's /proc")?;
    let mut integrity = Integrity::default();
    for seen in readers.finish()? {
        fanout::check(&seen, &seqs, &mut integrity);
    }

    let deliveries = sink.delivered.load(Ordering::Relaxed);
    let latencies = sink.merged();
    let from_send = Latency::of(&latencies.from_send);
    let cpu = after.cpu_secs - before.cpu_secs;
    let cpu_us_per_delivery = cpu * 1e6 / deliveries.max(1) as f64;

    let mut r = Report::new("versus-nats");
    r.field("server", server.kind.name())
        .field("subscribers", args.subscribers)
        .field("subscribers_connected", connected)
        .field("connect_failed", connect_failed)
        .field("ramp_s", ramp_secs)
        .field("rate_target", args.rate)
        .field("pad", args.pad)
        .field("events_published", seqs.len())
        .field("publish_s", publish_secs)
        .field("deliveries", deliveries)
        .field("deliveries_expected", expected)
        .field("drained", drained)
        .field("latency_from_send", from_send)
        .field("server_cpu_s", cpu)
        .field("server_cpu_us_per_delivery", cpu_us_per_delivery)
        .field("server_rss_bytes", after.rss_bytes)
        .field("integrity", &integrity);
    if server.kind == Kind::Swarmfeed {
        r.field("latency_from_commit", Latency::of(&latencies.from_commit));
    }
    r.row("server", format!("{} (pid {})", server.kind.name(), server.pid()))
        .row(
            "subscribers",
            format!("{connected} of {} (failed {connect_failed}) in {ramp_secs:.1} s", args.subscribers),
        )
        .row("published", format!("{} events in {publish_secs:.2} s (target {}/s)", seqs.len(), args.rate))
        .row(
            "deliveries",
            format!("{} of {}, drained: {drained}", grouped(deliveries as f64), grouped(expected as f64)),
        )
        .row("latency send→receive", from_send.cell())
        .row("server CPU", format!("{cpu:.2} s, {cpu_us_per_delivery:.2} µs per delivery"))
        .row("server RSS", report::bytes(after.rss_bytes as f64))
        .row("lost / dup / disorder", integrity.cell());
    r.emit();
    Ok(Side { cpu_us_per_delivery, from_send, integrity, deliveries, expected })
}

/// Opens `count` NATS subscriptions over WebSocket, `ramp` at a time, on `threads`
/// reader threads; returns the readers and how many could not connect.
async fn open_nats(
    url: &str,
    count: u64,
    ramp: u64,
    span: u64,
    threads: usize,
    sink: &Arc<Sink>,
) -> anyhow::Result<(Readers, u64)> {
    let url = url.to_owned();
    let connect = move || {
        let url = url.clone();
        async move { nats::subscribe(&url, None, subscriber::CONNECT_TIMEOUT).await }
    };
    // A NATS subscription reports head 0: its readers track seqs from the start.
    fanout::open_readers(count, ramp, span, threads, sink, Protocol::Nats, connect).await
}
