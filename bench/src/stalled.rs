//! `stalled`: what viewers that stop reading cost the server, and the viewers who
//! keep reading.
//!
//! 1. Open `--live` live subscribers.
//! 2. Alone: publish stamped events of `--pad` bytes at `--rate` for `--phase-secs`,
//!    then drain. The live latency of this phase is the baseline.
//! 3. Open `--stalled` subscribers that read their `subscribed` reply and nothing
//!    after, as a stopped process does, on sockets whose receive buffer is 4 KiB so
//!    the kernel hides little of their backlog.
//! 4. With them: publish at the same rate for `--settle-secs`, while they fill their
//!    socket buffers, then for `--phase-secs`, draining the live ones after each; the
//!    two are reported apart and together. The
//!    server's RSS is sampled every 100 ms: its peak over the RSS before step 3,
//!    divided by the stalled subscribers, is what each costs the server beyond its
//!    kernel socket buffers (its idle connection included).
//! 5. Wait `--let-go-secs` more, then read what each stalled subscriber was sent, for
//!    at most `--drain-secs`: one the server let go (after its `--write-timeout`) ends
//!    in a close.
//! 6. Check every live subscriber got every event published while it was subscribed
//!    once and in order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

use crate::Common;
use crate::fanout::{self, Integrity, Plan};
use crate::procfs::{self, Proc};
use crate::report::{self, Latency, Report};
use crate::subscriber::{self, Sink};
use crate::target::Target;

/// A stalled subscriber's receive buffer: small, so that what the server could not
/// send stays on the server's side, where it is measured.
const STALLED_RECV_BUFFER: u32 = 4096;
/// How often the server's RSS is sampled while the stalled subscribers lag.
const SAMPLE: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub struct StalledArgs {
    #[command(flatten)]
    pub common: Common,
    /// Live WebSocket subscribers.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    live: u64,
    /// Subscribers that never read after subscribing.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=20_000))]
    stalled: u64,
    /// Connections opened at a time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    ramp: u64,
    /// Stamped events per second, in both phases.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rate: u64,
    /// Bytes of padding in each event, so the stalled subscribers' backlog outgrows
    /// their socket buffers.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=60_000))]
    pad: u32,
    /// Length of each phase, seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    phase_secs: u64,
    /// Seconds published beside the stalled subscribers before the phase, reported
    /// apart: while they fill their socket buffers they are still read from.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    settle_secs: u64,
    /// Seconds the stalled subscribers go on not reading after the phase, before they
    /// read what they were sent: longer than the server's `--write-timeout` (30 s by
    /// default) from when they stalled, and the server has closed them by then.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(0..=600))]
    let_go_secs: u64,
    /// How long a drain may wait, seconds: the live deliveries, then the stalled
    /// subscribers' ends.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    drain_secs: u64,
}

/// # Errors
/// The server is unreachable or needs credentials, no live subscriber could connect,
/// too few files may be opened, or a POST failed with anything but 429/503.
pub async fn run(target: &Target, args: StalledArgs) -> anyhow::Result<Report> {
    procfs::check_open_files(&Proc::me(), "the harness", args.live + args.stalled)?;
    let server = args.common.pid.map(Proc::pid);
    let usage = || server.as_ref().map(Proc::usage).transpose().context("reading the server's /proc");

    let threads = args.common.client_threads.max(1);
    let sink = Arc::new(Sink::new(threads));
    let span = args.rate.saturating_mul(args.phase_secs).saturating_mul(4).max(65_536);
    let (readers, connect_failed) =
        fanout::open_subscribers(target, args.live, args.ramp, span, threads, &sink).await?;
    let live = readers.len() as u64;
    eprintln!("{live} live subscribers; baseline for {} s", args.phase_secs);

    let plan = Plan {
        events: args.rate * args.phase_secs,
        rate: args.rate,
        batch: 1,
        in_flight: 16,
        max_secs: args.phase_secs * 3,
        pad: args.pad as usize,
    };
    let drain = Duration::from_secs(args.drain_secs);
    let alone_from = usage()?;
    let alone = fanout::publish(target, &plan, None).await?;
    let mut expected = alone.seqs.len() as u64 * live;
    anyhow::ensure!(sink.drained(expected, drain).await, "live deliveries of the baseline did not drain");
    let baseline = sink.merged().from_send;
    let alone_cpu = cpu_between(alone_from, usage()?);

    let before = usage()?;
    let mut stalled = Vec::with_capacity(args.stalled as usize);
    let stalled_failed = subscriber::open_waves(
        args.stalled,
        args.ramp,
        || open_stalled(target.ws.clone()),
        |ws| {
            stalled.push(ws);
            Ok(())
        },
    )
    .await?;
    let opened = usage()?;
    eprintln!("{} stalled subscribers; publishing beside them for {} s", stalled.len(), args.phase_secs);

    let stop_sampling = CancellationToken::new();
    let sampler = server.clone().map(|proc| tokio::spawn(fanout::sample_rss(proc, SAMPLE, stop_sampling.clone())));
    // The first seconds, while the stalled fill their socket buffers, apart.
    let settle_plan = Plan { events: args.rate * args.settle_secs, max_secs: args.settle_secs * 3, ..plan };
    let settling = fanout::publish(target, &settle_plan, None).await?;
    expected += settling.seqs.len() as u64 * live;
    let settle_drained = sink.drained(expected, drain).await;
    let after_settling = sink.merged().from_send;
    let during = fanout::publish(target, &plan, None).await?;
    expected += during.seqs.len() as u64 * live;
    let live_drained = settle_drained && sink.drained(expected, drain).await;
    let during_cpu = cpu_between(opened, usage()?);
    stop_sampling.cancel();
    let peak = match sampler {
        Some(s) => {
            Some(s.await.context("the RSS sampler panicked")?.into_iter().map(|(_, rss)| rss).max().unwrap_or(0))
        }
        None => None,
    };
    let (with_stalled, settle_latency, steady) = {
        let all = sink.merged().from_send;
        let mut with_stalled = all.clone();
        with_stalled.subtract(&baseline).context("separating the phases' latencies")?;
        let mut settle = after_settling.clone();
        settle.subtract(&baseline).context("separating the phases' latencies")?;
        let mut steady = all;
        steady.subtract(&after_settling).context("separating the phases' latencies")?;
        (with_stalled, settle, steady)
    };

    let stalled_count = stalled.len() as u64;
    eprintln!("waiting {} s for the server to let the stalled subscribers go", args.let_go_secs);
    tokio::time::sleep(Duration::from_secs(args.let_go_secs)).await;
    let let_go = closed_by_server(stalled, drain).await;
    let after = usage()?;

    let published: Vec<u64> = alone.seqs.iter().chain(&settling.seqs).chain(&during.seqs).copied().collect();
    let mut integrity = Integrity::default();
    for seen in readers.finish()? {
        fanout::check(&seen, &published, &mut integrity);
    }

    let (alone_latency, during_latency) = (Latency::of(&baseline), Latency::of(&with_stalled));
    let (settle_latency, steady_latency) = (Latency::of(&settle_latency), Latency::of(&steady));
    let ratio = during_latency.p99_ms / alone_latency.p99_ms.max(1e-9);
    let steady_ratio = steady_latency.p99_ms / alone_latency.p99_ms.max(1e-9);
    let mut r = Report::new("stalled");
    r.field("url", args.common.url.as_str())
        .field("live_subscribers", live)
        .field("connect_failed", connect_failed)
        .field("stalled_subscribers", stalled_count)
        .field("stalled_connect_failed", stalled_failed)
        .field("rate", args.rate)
        .field("pad_bytes", u64::from(args.pad))
        .field("live_latency_alone", alone_latency)
        .field("settle_secs", args.settle_secs)
        .field("live_latency_beside_stalled", during_latency)
        .field("live_latency_settling", settle_latency)
        .field("live_latency_steady", steady_latency)
        .field("live_p99_ratio", ratio)
        .field("live_p99_ratio_steady", steady_ratio)
        .field("live_drained", live_drained)
        .field("live_integrity", &integrity)
        .field("stalled_let_go", let_go);
    r.row("live subscribers", format!("{live} (failed {connect_failed}), {} events/s of {} B", args.rate, args.pad))
        .row("stalled subscribers", format!("{stalled_count} (failed {stalled_failed})"))
        .row("live latency, alone", alone_latency.cell())
        .row("live latency, beside the stalled", during_latency.cell())
        .row(&format!("  of which the first {} s", args.settle_secs), settle_latency.cell())
        .row("  of which the rest", steady_latency.cell())
        .row("live p99 beside ÷ alone", format!("{ratio:.2} (the rest: {steady_ratio:.2})"))
        .row("live lost / dup / disorder", format!("{}, drained: {live_drained}", integrity.cell()))
        .row("stalled let go by the server", format!("{let_go} of {stalled_count}"));
    if let (Some(alone_cpu), Some(during_cpu)) = (alone_cpu, during_cpu) {
        r.field("server_cpu_s_alone", alone_cpu).field("server_cpu_s_beside_stalled", during_cpu);
        r.row("server CPU, alone / beside the stalled", format!("{alone_cpu:.2} s / {during_cpu:.2} s"));
    }
    if let (Some(before), Some(opened), Some(peak), Some(after)) = (before, opened, peak, after) {
        let per_stalled = peak.saturating_sub(before.rss_bytes) as f64 / stalled_count.max(1) as f64;
        let per_idle = opened.rss_bytes.saturating_sub(before.rss_bytes) as f64 / stalled_count.max(1) as f64;
        r.field("server_rss_before_bytes", before.rss_bytes)
            .field("server_rss_opened_bytes", opened.rss_bytes)
            .field("server_rss_peak_bytes", peak)
            .field("server_rss_after_bytes", after.rss_bytes)
            .field("rss_per_stalled_bytes", per_stalled)
            .field("rss_per_stalled_idle_bytes", per_idle);
        r.row(
            "server RSS per stalled subscriber",
            format!(
                "{} at the peak while lagging ({} once subscribed, before any backlog)",
                report::bytes(per_stalled),
                report::bytes(per_idle)
            ),
        )
        .row(
            "server RSS",
            format!(
                "{} before, {} peak, {} after they went",
                report::bytes(before.rss_bytes as f64),
                report::bytes(peak as f64),
                report::bytes(after.rss_bytes as f64)
            ),
        );
    }
    report::client_usage(&mut r);
    Ok(r)
}

/// Server CPU seconds from `from` to `to`, when the server's /proc is read.
fn cpu_between(from: Option<procfs::Usage>, to: Option<procfs::Usage>) -> Option<f64> {
    Some(to?.cpu_secs - from?.cpu_secs)
}

type Stalled = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// One subscriber that reads its `subscribed` reply and then stops reading.
async fn open_stalled(url: String) -> anyhow::Result<Stalled> {
    let attempt = async {
        let request = reqwest::Url::parse(&url).context("the WebSocket URL")?;
        let host = request.host_str().context("the WebSocket URL has no host")?;
        let port = request.port_or_known_default().context("the WebSocket URL has no port")?;
        let addr = tokio::net::lookup_host((host, port)).await?.next().context("the host resolves to nothing")?;
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_recv_buffer_size(STALLED_RECV_BUFFER)?;
        let tcp = socket.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let config = WebSocketConfig::default().write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), tcp, Some(config))
            .await
            .with_context(|| format!("WebSocket handshake with {url} (a 401 means the server needs --no-auth)"))?;
        subscriber::subscribe_on(&mut ws, None).await?;
        Ok(ws)
    };
    tokio::time::timeout(subscriber::CONNECT_TIMEOUT, attempt)
        .await
        .with_context(|| format!("no subscription within {:?}", subscriber::CONNECT_TIMEOUT))?
}

/// Reads each stalled subscriber's backlog for at most `within`; returns how many
/// ended, which only the server's closing them makes happen (reading lets a session
/// the server still holds go on).
async fn closed_by_server(stalled: Vec<Stalled>, within: Duration) -> u64 {
    let mut reading = tokio::task::JoinSet::new();
    for mut ws in stalled {
        reading.spawn(async move {
            tokio::time::timeout(within, async {
                while let Some(Ok(message)) = ws.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await
            .is_ok()
        });
    }
    let mut ended = 0;
    while let Some(done) = reading.join_next().await {
        ended += u64::from(done.unwrap_or(false));
    }
    ended
}
