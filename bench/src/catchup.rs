//! `catch-up`: how fast a subscriber far behind reads the log back from the store, and
//! what that costs the subscribers who are live.
//!
//! 1. Commit `--backlog` events (batches of 1 000, two POSTs in flight).
//! 2. Open `--live` live subscribers.
//! 3. Alone: publish stamped events at `--rate` for `--phase-secs`, then drain. The
//!    live latency of this phase is the baseline.
//! 4. With catch-up: open one more subscriber with `since=0`, the whole log behind,
//!    and publish at the same rate until it has read every seq up to the head it
//!    subscribed at (or `--max-secs`), then drain. Backlog ÷ the time that took is the
//!    catch-up rate; the live latency of this phase against the baseline is its cost.
//! 5. Check every live subscriber got every event published while it was subscribed
//!    once and in order, and the catcher every seq from 1 to its head.
//!
//! The catcher's frames are `batch` frames of up to the server's frame limit (5 000
//! events), read from the store, since the backlog is far past the hub's ring.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::Common;
use crate::fanout::{self, Integrity, Plan};
use crate::procfs::{self, Proc};
use crate::report::{self, Latency, Report, grouped};
use crate::subscriber::{self, Seen, Sink};
use crate::target::Target;

/// How often the catcher's progress is checked.
const POLL: Duration = Duration::from_millis(2);
/// Events per POST while committing the backlog (the API's maximum), and POSTs in flight.
const BACKLOG_BATCH: u64 = swarmfeed::ingest::MAX_BATCH as u64;
const BACKLOG_IN_FLIGHT: u64 = 2;

#[derive(Debug, Args)]
pub struct CatchUpArgs {
    #[command(flatten)]
    pub common: Common,
    /// Events committed before anyone subscribes: how far behind the catcher starts.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
    backlog: u64,
    /// Live WebSocket subscribers.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    live: u64,
    /// Live subscribers opened at a time.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    ramp: u64,
    /// Stamped events per second published to the live subscribers in both phases.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    rate: u64,
    /// Length of the baseline phase, seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    phase_secs: u64,
    /// Hard cap on the catch-up phase, seconds.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_secs: u64,
    /// How long a drain may wait for deliveries still under way, seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    drain_secs: u64,
}

/// # Errors
/// The server is unreachable or needs credentials, no live subscriber could connect,
/// the catcher could not subscribe, or a POST failed with anything but 429/503.
pub async fn run(target: &Target, args: CatchUpArgs) -> anyhow::Result<Report> {
    procfs::check_open_files(&Proc::me(), "the harness", args.live + 1)?;
    let server = args.common.pid.map(Proc::pid);
    let usage = || server.as_ref().map(Proc::usage).transpose().context("reading the server's /proc");

    eprintln!("committing a backlog of {} events", grouped(args.backlog as f64));
    let backlog_plan = Plan {
        events: args.backlog,
        rate: 0,
        batch: BACKLOG_BATCH,
        in_flight: BACKLOG_IN_FLIGHT,
        max_secs: 600,
        pad: 0,
    };
    let backlog = fanout::publish(target, &backlog_plan, None).await?;
    anyhow::ensure!(
        backlog.seqs.len() as u64 == args.backlog,
        "only {} of {} backlog events were committed in time",
        backlog.seqs.len(),
        args.backlog
    );

    let threads = args.common.client_threads.max(1);
    let live_sink = Arc::new(Sink::new(threads));
    let stop = CancellationToken::new();
    // Ends the catcher however this function returns.
    let _stop_guard = stop.clone().drop_guard();
    // Each live subscriber tracks what both phases can publish.
    let span = args.rate.saturating_mul(args.phase_secs + args.max_secs).saturating_mul(2).max(65_536);
    let (readers, connect_failed) =
        fanout::open_subscribers(target, args.live, args.ramp, span, threads, &live_sink).await?;
    let live = readers.len() as u64;
    eprintln!("{live} live subscribers; baseline for {} s", args.phase_secs);

    let phase = |events| Plan { events, rate: args.rate, batch: 1, in_flight: 16, max_secs: args.max_secs, pad: 0 };
    let drain = Duration::from_secs(args.drain_secs);
    let alone = fanout::publish(target, &phase(args.rate * args.phase_secs), None).await?;
    let mut expected = alone.seqs.len() as u64 * live;
    anyhow::ensure!(live_sink.drained(expected, drain).await, "live deliveries of the baseline did not drain");
    let baseline = live_sink.merged().from_send;

    eprintln!("catching up from seq 0 while publishing");
    let catch_sink = Arc::new(Sink::new(1));
    let before = usage()?;
    let started = Instant::now();
    let (catcher, head) = spawn_catcher(target.ws.clone(), span, Arc::clone(&catch_sink), stop.clone()).await?;
    let caught_up = CancellationToken::new();
    let watch = {
        let (sink, caught_up, deadline) =
            (Arc::clone(&catch_sink), caught_up.clone(), started + Duration::from_secs(args.max_secs));
        // Seqs arrive in order, so `head` events received means every one up to it.
        tokio::spawn(async move {
            while sink.received.load(Ordering::Relaxed) < head && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            caught_up.cancel();
            started.elapsed()
        })
    };
    // At most `--max-secs` of events; the catcher's arrival ends it sooner.
    let during = fanout::publish(target, &phase(args.rate * args.max_secs), Some(&caught_up)).await?;
    let took = watch.await.context("the progress watch panicked")?;
    let after = usage()?;
    let caught = catch_sink.received.load(Ordering::Relaxed) >= head;
    expected += during.seqs.len() as u64 * live;
    let live_drained = live_sink.drained(expected, drain).await;
    let with_catch_up = {
        let mut all = live_sink.merged().from_send;
        // The baseline is a subset of the total, recorded with the same bounds.
        all.subtract(&baseline).context("separating the two phases' latencies")?;
        all
    };

    stop.cancel();
    let published: Vec<u64> = alone.seqs.iter().chain(&during.seqs).copied().collect();
    let mut live_integrity = Integrity::default();
    for seen in readers.finish()? {
        fanout::check(&seen, &published, &mut live_integrity);
    }
    let seen = catcher.join().map_err(|_| anyhow::anyhow!("the catcher panicked"))??;
    let catcher_lost = (1..=head).filter(|s| !seen.has(*s)).count() as u64;

    let rate = head as f64 / took.as_secs_f64().max(1e-9);
    let (alone_latency, during_latency) = (Latency::of(&baseline), Latency::of(&with_catch_up));
    let slowdown = during_latency.p99_ms / alone_latency.p99_ms.max(1e-9);
    let mut r = Report::new("catch-up");
    r.field("url", args.common.url.as_str())
        .field("backlog", args.backlog)
        .field("catcher_head", head)
        .field("live_subscribers", live)
        .field("connect_failed", connect_failed)
        .field("rate", args.rate)
        .field("caught_up", caught)
        .field("catch_up_s", took.as_secs_f64())
        .field("catch_up_events_per_sec", rate)
        .field("catcher_lost", catcher_lost)
        .field("catcher_duplicates", seen.duplicates)
        .field("catcher_out_of_order", seen.out_of_order)
        .field("live_latency_alone", alone_latency)
        .field("live_latency_during", during_latency)
        .field("live_p99_ratio", slowdown)
        .field("live_drained", live_drained)
        .field("live_integrity", &live_integrity);
    r.row("backlog", format!("{} events; the catcher subscribed at head {head}", grouped(args.backlog as f64)))
        .row(
            "catch-up",
            format!("{} events/s ({head} events in {:.2} s), caught up: {caught}", grouped(rate), took.as_secs_f64()),
        )
        .row("catcher lost / dup / disorder", format!("{catcher_lost} / {} / {}", seen.duplicates, seen.out_of_order))
        .row("live subscribers", format!("{live} (failed {connect_failed}), {} events/s to each", args.rate))
        .row("live latency, alone", alone_latency.cell())
        .row("live latency, during", during_latency.cell())
        .row("live p99 during ÷ alone", format!("{slowdown:.2}"))
        .row("live lost / dup / disorder", format!("{}, drained: {live_drained}", live_integrity.cell()));
    if let (Some(before), Some(after)) = (before, after) {
        let cpu = after.cpu_secs - before.cpu_secs;
        r.field("server_cpu_s_during", cpu).field("server_rss_bytes", after.rss_bytes);
        r.row(
            "server during catch-up",
            format!(
                "{cpu:.2} s CPU ({:.0}% of a core), RSS {}",
                100.0 * cpu / took.as_secs_f64().max(1e-9),
                report::bytes(after.rss_bytes as f64)
            ),
        );
    }
    report::client_usage(&mut r);
    Ok(r)
}

/// Subscribes from seq 0 on a thread and runtime of its own, so that parsing half a
/// million events a second does not queue the live subscribers' frames behind it in
/// the harness. Returns the thread, which ends with what the catcher saw once `stop`
/// is cancelled, and the head it subscribed at.
async fn spawn_catcher(
    url: String,
    span: u64,
    sink: Arc<Sink>,
    stop: CancellationToken,
) -> anyhow::Result<(std::thread::JoinHandle<anyhow::Result<Seen>>, u64)> {
    let (subscribed, head) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("catcher".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the catcher's runtime")?;
            runtime.block_on(async move {
                let (ws, head) = subscriber::subscribe(&url, Some(0), subscriber::CONNECT_TIMEOUT).await?;
                // The receiver only goes away if the run already failed.
                let _ = subscribed.send(head);
                Ok(subscriber::listen(ws, Seen::new(0, head.saturating_add(span)), sink, 0, stop).await)
            })
        })
        .context("starting the catcher's thread")?;
    match head.await {
        Ok(head) => Ok((thread, head)),
        // The thread ended before subscribing: its result says why.
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e.context("the catcher could not subscribe")),
            _ => anyhow::bail!("the catcher ended before subscribing"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_the_total_less_the_baseline() {
        let (mut total, mut baseline) = (report::histogram(), report::histogram());
        for v in [100, 200, 300] {
            baseline.record(v).unwrap();
            total.record(v).unwrap();
        }
        for v in [10_000, 20_000] {
            total.record(v).unwrap();
        }
        total.subtract(&baseline).unwrap();
        assert_eq!(total.len(), 2);
        assert!(total.min() >= 9_990, "{}", total.min());
    }
}
