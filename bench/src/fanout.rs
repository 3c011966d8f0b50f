//! `fanout`: how long one event takes to reach many WebSocket subscribers, and whether
//! each of them gets every event exactly once.
//!
//! 1. Open `--subscribers` connections, `--ramp` at a time, each subscribed live.
//! 2. Publish `--events` events at `--rate` events/s (0: as fast as `--in-flight`
//!    concurrent POSTs go), `--batch` per POST, each stamped `data.sent_ns` just before
//!    its POST is sent; remember every seq the server acknowledged.
//! 3. Wait until every subscriber has every published event, or `--drain-secs`.
//! 4. Count, per subscriber, acknowledged seqs never received (lost), seqs received
//!    twice (duplicates) and out of order; report latency from send and from commit.
//!
//! With `--pid`, the server's CPU time over steps 2–3 is divided by the deliveries.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::Common;
use crate::procfs::{self, Proc};
use crate::readers::{Protocol, Readers};
use crate::report::{self, Latency, Report, grouped};
use crate::subscriber::{self, Seen, Sink};
use crate::target::{Created, Target};
use crate::wire::{self, Subscribed};

/// Longest a POST may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before re-sending a POST refused with 503/429.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// WebSocket subscribers to open.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    subscribers: u64,
    /// Subscribers opened at a time; the next wave starts when this one is subscribed.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    ramp: u64,
    /// Events to publish.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    events: u64,
    /// Events per second to publish; 0 publishes as fast as --in-flight allows.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Events per POST.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch: u64,
    /// POSTs in flight at most.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
    in_flight: u64,
    /// Hard cap on the publishing phase, seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_secs: u64,
    /// How long to wait after the last POST for deliveries still under way, seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    drain_secs: u64,
    /// With --pid, read the server's RSS every this many seconds while publishing and
    /// draining, to show whether memory stays flat over a long run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    rss_every: u64,
}

/// What the publisher posts, and how fast.
pub struct Plan {
    /// Events to publish at most.
    pub events: u64,
    /// Events per second; 0 is as fast as `in_flight` POSTs go.
    pub rate: u64,
    /// Events per POST.
    pub batch: u64,
    /// POSTs in flight at most.
    pub in_flight: u64,
    /// Hard cap on publishing, seconds.
    pub max_secs: u64,
    /// Bytes of padding in each event's data (`"pad":"xx…"`), 0 for none.
    pub pad: usize,
}

impl FanoutArgs {
    fn plan(&self) -> Plan {
        Plan {
            events: self.events,
            rate: self.rate,
            batch: self.batch,
            in_flight: self.in_flight,
            max_secs: self.max_secs,
            pad: 0,
        }
    }
}

/// What the publisher's POST tasks share.
pub struct Published {
    /// Every seq the server acknowledged.
    pub seqs: Vec<u64>,
    pub post_latency: Histogram<u64>,
    pub retries: u64,
}

/// Stream checks summed over subscribers.
#[derive(Debug, Default, Serialize)]
pub struct Integrity {
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub untracked: u64,
    pub resets: u64,
    pub error_frames: u64,
    pub closed_early: u64,
    /// Subscribers that lost at least one event.
    pub subscribers_with_loss: u64,
}

impl Integrity {
    /// `lost / dup / disorder` and the rest, for the table.
    pub fn cell(&self) -> String {
        format!(
            "{} / {} / {} (resets {}, closed early {}, error frames {})",
            self.lost, self.duplicates, self.out_of_order, self.resets, self.closed_early, self.error_frames
        )
    }
}

/// # Errors
/// No subscriber could connect, the server needs credentials, or a POST failed with
/// anything but 429/503.
pub async fn run(target: &Target, args: FanoutArgs) -> anyhow::Result<Report> {
    procfs::check_open_files(&Proc::me(), "the harness", args.subscribers)?;
    let server = args.common.pid.map(Proc::pid);
    if let Some(server) = &server {
        procfs::check_open_files(server, "the server", args.subscribers)?;
    }
    let threads = args.common.client_threads.max(1);
    let sink = Arc::new(Sink::new(threads));
    let stop = CancellationToken::new();
    // The stop token ends the RSS sampler however this function returns.
    let _stop_guard = stop.clone().drop_guard();
    let ramp_start = Instant::now();
    // Seqs tracked per subscriber: the published ones plus room for a few concurrent
    // producers; beyond it seqs are only counted, so the bitmap stays small.
    let span = args.events.saturating_mul(4).max(65_536);
    let (readers, connect_failed) = open_subscribers(target, args.subscribers, args.ramp, span, threads, &sink).await?;
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    let connected = readers.len() as u64;
    eprintln!("{connected} subscribers in {ramp_secs:.1} s; publishing");

    let before = server.as_ref().map(Proc::usage).transpose().context("reading the server's /proc")?;
    let sampler = server
        .clone()
        .map(|server| tokio::spawn(sample_rss(server, Duration::from_secs(args.rss_every), stop.clone())));
    let publish_start_ns = subscriber::unix_nanos();
    let publish_start = Instant::now();
    let published = publish(target, &args.plan(), None).await?;
    let publish_secs = publish_start.elapsed().as_secs_f64();
    let expected_deliveries = published.seqs.len() as u64 * connected;
    let drained = sink.drained(expected_deliveries, Duration::from_secs(args.drain_secs)).await;
    let after = server.as_ref().map(Proc::usage).transpose().context("reading the server's /proc")?;
    stop.cancel();
    let rss_samples = match sampler {
        Some(task) => task.await.context("the RSS sampler panicked")?,
        None => Vec::new(),
    };
    let mut integrity = Integrity::default();
    for seen in readers.finish()? {
        check(&seen, &published.seqs, &mut integrity);
    }

    let delivered = sink.delivered.load(Ordering::Relaxed);
    let last_ns = sink.last_delivery_ns.load(Ordering::Relaxed);
    let delivery_secs = last_ns.saturating_sub(publish_start_ns) as f64 / 1e9;
    let latencies = sink.merged();
    let (from_send, from_commit) = (Latency::of(&latencies.from_send), Latency::of(&latencies.from_commit));
    let post = Latency::of(&published.post_latency);
    let publish_rate = published.seqs.len() as f64 / publish_secs.max(1e-9);
    let deliveries_per_sec = delivered as f64 / delivery_secs.max(1e-9);

    let mut r = Report::new("fanout");
    r.field("url", args.common.url.as_str())
        .field("subscribers", args.subscribers)
        .field("subscribers_connected", connected)
        .field("connect_failed", connect_failed)
        .field("ramp_s", ramp_secs)
        .field("rate_target", args.rate)
        .field("batch", args.batch)
        .field("in_flight", args.in_flight)
        .field("events_published", published.seqs.len())
        .field("publish_s", publish_secs)
        .field("publish_rate", publish_rate)
        .field("post_retries", published.retries)
        .field("deliveries", delivered)
        .field("deliveries_expected", expected_deliveries)
        .field("deliveries_per_sec", deliveries_per_sec)
        .field("drained", drained)
        .field("latency_from_send", from_send)
        .field("latency_from_commit", from_commit)
        .field("post_latency", post)
        .field("integrity", &integrity);
    r.row("subscribers", format!("{connected} of {} (failed {connect_failed}) in {ramp_secs:.1} s", args.subscribers))
        .row(
            "published",
            format!(
                "{} events, {} per POST, {:.0}/s (target {}), in {publish_secs:.2} s, {} retries",
                published.seqs.len(),
                args.batch,
                publish_rate,
                if args.rate == 0 { "max".into() } else { args.rate.to_string() },
                published.retries
            ),
        )
        .row(
            "deliveries",
            format!(
                "{} of {} expected, drained: {drained}",
                grouped(delivered as f64),
                grouped(expected_deliveries as f64)
            ),
        )
        .row("deliveries/s", grouped(deliveries_per_sec))
        .row("latency send→receive", from_send.cell())
        .row("latency commit→receive", from_commit.cell())
        .row("POST latency", post.cell())
        .row("lost / dup / disorder", integrity.cell());
    if let (Some(before), Some(after)) = (before, after) {
        let cpu = after.cpu_secs - before.cpu_secs;
        let per = cpu * 1e6 / delivered.max(1) as f64;
        r.field("server_cpu_s", cpu)
            .field("server_cpu_us_per_delivery", per)
            .field("server_rss_bytes", after.rss_bytes)
            .field("server_peak_rss_bytes", after.peak_rss_bytes);
        r.row("server CPU", format!("{cpu:.2} s over publish + drain, {per:.2} µs per delivery"))
            .row("server RSS", report::bytes(after.rss_bytes as f64));
    }
    if let (Some(first), Some(last)) = (rss_samples.first(), rss_samples.last()) {
        let rss = |s: &(f64, u64)| s.1;
        let (min, max) = (rss_samples.iter().map(rss).min(), rss_samples.iter().map(rss).max());
        r.field("server_rss_samples", &rss_samples);
        r.row(
            "server RSS over the run",
            format!(
                "{} samples every {} s: first {}, min {}, max {}, last {}",
                rss_samples.len(),
                args.rss_every,
                report::bytes(first.1 as f64),
                report::bytes(min.unwrap_or(0) as f64),
                report::bytes(max.unwrap_or(0) as f64),
                report::bytes(last.1 as f64)
            ),
        );
    }
    report::client_usage(&mut r);
    Ok(r)
}

/// Opens `count` live subscribers, `ramp` at a time, each tracking `span` seqs, on
/// `threads` reader threads recording into `sink`; returns the readers and how many
/// subscribers could not connect.
///
/// # Errors
/// None could connect, or the reader threads could not start.
pub async fn open_subscribers(
    target: &Target,
    count: u64,
    ramp: u64,
    span: u64,
    threads: usize,
    sink: &Arc<Sink>,
) -> anyhow::Result<(Readers, u64)> {
    let url = target.ws.clone();
    let connect = move || {
        let url = url.clone();
        async move { wire::subscribe(&url, subscriber::CONNECT_TIMEOUT).await }
    };
    open_readers(count, ramp, span, threads, sink, Protocol::Swarmfeed, connect).await
}

/// [`open_subscribers`] for any server: `connect` opens one subscription whose frames
/// carry `protocol`, and each tracks seqs from the head it reported.
///
/// # Errors
/// None could connect, or the reader threads could not start.
pub async fn open_readers<Opening>(
    count: u64,
    ramp: u64,
    span: u64,
    threads: usize,
    sink: &Arc<Sink>,
    protocol: Protocol,
    connect: impl Fn() -> Opening,
) -> anyhow::Result<(Readers, u64)>
where
    Opening: Future<Output = anyhow::Result<Subscribed>> + Send + 'static,
{
    let mut readers = Readers::start(threads, sink)?;
    let failed = subscriber::open_waves(count, ramp, connect, |subscribed: Subscribed| {
        let seen = Seen::new(subscribed.head, span);
        readers.add_speaking(subscribed, seen, protocol)
    })
    .await?;
    anyhow::ensure!(readers.len() > 0, "no subscriber could connect (see the warning above)");
    Ok((readers, failed))
}

/// Publishes the plan's events, paced by its rate, until they are all acknowledged or
/// `until` is cancelled; returns what the server acknowledged.
pub async fn publish(target: &Target, args: &Plan, until: Option<&CancellationToken>) -> anyhow::Result<Published> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.in_flight as usize)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let published = Arc::new(Mutex::new(Published {
        seqs: Vec::with_capacity(args.events.min(1 << 20) as usize),
        post_latency: report::histogram(),
        retries: 0,
    }));
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let slots = Arc::new(Semaphore::new(args.in_flight as usize));
    // One tick per POST; `Burst` keeps the average rate when a tick is shorter than the
    // timer's millisecond resolution.
    let mut ticker = (args.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(args.batch as f64 / args.rate as f64));
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    let mut posts = JoinSet::new();
    let pad: Arc<str> = if args.pad == 0 { "".into() } else { format!(r#","pad":"{}""#, "x".repeat(args.pad)).into() };
    let mut sent = 0;
    while sent < args.events && Instant::now() < deadline && !until.is_some_and(CancellationToken::is_cancelled) {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        // The semaphore is never closed, so acquiring only waits.
        let slot = Arc::clone(&slots).acquire_owned().await.expect("semaphore open");
        let n = args.batch.min(args.events - sent);
        let (client, url, published) = (client.clone(), target.events.clone(), Arc::clone(&published));
        let pad = Arc::clone(&pad);
        posts.spawn(async move {
            let result = post_stamped(&client, url, n, &pad, deadline, &published).await;
            drop(slot);
            result
        });
        sent += n;
        // Reap finished POSTs as we go so the set holds only those in flight.
        while let Some(done) = posts.try_join_next() {
            done.context("a POST task panicked")??;
        }
    }
    while let Some(done) = posts.join_next().await {
        done.context("a POST task panicked")??;
    }
    let mut published = Arc::into_inner(published)
        .context("POST tasks still hold the results")?
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    published.seqs.sort_unstable();
    Ok(published)
}

/// POSTs `n` events stamped with the send time, `pad` (a `,"pad":…` member or nothing)
/// at the end of each one's data; retries 503/429 until `deadline`.
async fn post_stamped(
    client: &reqwest::Client,
    url: reqwest::Url,
    n: u64,
    pad: &str,
    deadline: Instant,
    published: &Mutex<Published>,
) -> anyhow::Result<()> {
    while Instant::now() < deadline {
        let sent_ns = subscriber::unix_nanos();
        let events: Vec<String> = (0..n)
            .map(|i| {
                format!(r#"{{"event_type":"bench.tick","source":"bench","data":{{"sent_ns":{sent_ns},"i":{i}{pad}}}}}"#)
            })
            .collect();
        let body = format!("[{}]", events.join(","));
        let started = Instant::now();
        let response = client
            .post(url.clone())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("POST /api/events")?;
        match response.status().as_u16() {
            201 => {
                let bytes = response.bytes().await.context("reading a 201 body")?;
                let took = started.elapsed();
                let created: Created = serde_json::from_slice(&bytes).context("parsing a 201 body")?;
                // A std mutex: held to append, never across an await.
                let mut p = published.lock().unwrap_or_else(|p| p.into_inner());
                p.seqs.extend(created.events.iter().map(|e| e.seq));
                p.post_latency.saturating_record(took.as_micros() as u64);
                return Ok(());
            }
            401 | 403 => anyhow::bail!("the server wants credentials; start it with --no-auth for benchmarks"),
            429 | 503 => {
                published.lock().unwrap_or_else(|p| p.into_inner()).retries += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            s => anyhow::bail!("POST answered {s}: {}", response.text().await.unwrap_or_default()),
        }
    }
    Ok(())
}

/// The server's RSS every `every` until `stop`: (seconds since the start, bytes).
/// A failed read (the server gone) ends the series.
pub async fn sample_rss(server: Proc, every: Duration, stop: CancellationToken) -> Vec<(f64, u64)> {
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return samples,
            _ = tick.tick() => match server.usage() {
                Ok(usage) => samples.push((start.elapsed().as_secs_f64(), usage.rss_bytes)),
                Err(_) => return samples,
            },
        }
    }
}

/// Adds one subscriber's findings to `total`.
pub fn check(seen: &Seen, published: &[u64], total: &mut Integrity) {
    let expected: Vec<u64> = published.iter().copied().filter(|s| seen.expects(*s)).collect();
    let lost = expected.iter().filter(|s| !seen.has(**s)).count() as u64;
    total.expected += expected.len() as u64;
    total.lost += lost;
    total.subscribers_with_loss += u64::from(lost > 0);
    total.duplicates += seen.duplicates;
    total.out_of_order += seen.out_of_order;
    total.untracked += seen.untracked;
    total.resets += seen.resets;
    total.error_frames += seen.errors;
    total.closed_early += u64::from(seen.closed_early);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_and_duplicate_events_are_both_counted() {
        // Subscribed at head 10; 11..=15 published; 13 never arrives, 12 arrives twice.
        let mut seen = Seen::new(10, 100);
        for seq in [11, 12, 12, 14, 15] {
            seen.mark(seq);
        }
        let mut total = Integrity::default();
        check(&seen, &[9, 11, 12, 13, 14, 15], &mut total);
        assert_eq!((total.expected, total.lost, total.duplicates, total.subscribers_with_loss), (5, 1, 1, 1));
        assert_eq!(total.out_of_order, 0);
    }
}
