//! `ingest`: how many events a second `POST /api/events` commits.
//!
//! `--producers` tasks each keep one batch request in flight, claiming batches from a
//! shared budget of `--events` until it is spent or `--max-secs` has passed. A 503
//! (writer queue full) or 429 is retried after `--retry-ms` and counted; any other
//! failure ends the run with the server's answer. Each 201 adds its events to the
//! second it arrived in, so the report has the median of per-second rates beside the
//! overall rate, and the request latency (send → 201, commit included) percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::Common;
use crate::procfs::{Proc, Usage};
use crate::report::{self, Latency, Report, grouped};
use crate::target::{Created, Target};

/// Longest a single request may take before the run fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Transport errors (reset connections, timeouts) tolerated in one run before it stops.
const MAX_TRANSPORT_ERRORS: u64 = 100;
/// The API's cap on events per request (DESIGN §4).
const MAX_BATCH: u64 = swarmfeed::ingest::MAX_BATCH as u64;
/// Cap on `--pad-bytes`, under the server's default 16 KiB limit on `data`.
const MAX_PAD_BYTES: usize = 15_000;

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent producers, each with one request in flight.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Events per POST (the API takes at most 1000).
    #[arg(long, default_value_t = MAX_BATCH, value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH))]
    batch: u64,
    /// Events to commit in all; the run ends when they are, or at --max-secs.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Hard cap on the run's length, seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_secs: u64,
    /// Bytes of padding in each event's `data`, to vary the event size (at most 15000).
    #[arg(long, default_value_t = 0)]
    pad_bytes: usize,
    /// Pause before retrying a batch refused with 503 or 429, milliseconds.
    #[arg(long, default_value_t = 20)]
    retry_ms: u64,
}

/// The events a run may commit, shared by its producers, and when it must stop.
pub(crate) struct Budget {
    /// Events claimed so far.
    claimed: AtomicU64,
    events: u64,
    pub deadline: Instant,
}

impl Budget {
    pub fn new(events: u64, deadline: Instant) -> Self {
        Budget { claimed: AtomicU64::new(0), events, deadline }
    }

    /// The size of a producer's next batch, at most `batch`; `None` once every event is
    /// claimed or the deadline has passed.
    pub fn claim(&self, batch: u64) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let claimed = self.claimed.fetch_add(batch, Ordering::Relaxed);
        (claimed < self.events).then(|| batch.min(self.events - claimed))
    }
}

/// What the producers share; each counter is written by all of them.
struct Tally {
    budget: Budget,
    committed: AtomicU64,
    requests: AtomicU64,
    /// Batches refused with 503/429 and sent again.
    retries: AtomicU64,
    transport_errors: AtomicU64,
    /// Events committed in each second since the start.
    per_second: Vec<AtomicU64>,
    first_seq: AtomicU64,
    last_seq: AtomicU64,
    /// A std mutex: held only to record one value, never across an await.
    latency: Mutex<Histogram<u64>>,
    start: Instant,
}

/// A JSON array of `n` events; the same body is sent again and again (the server gives
/// every copy its own id and seq).
pub(crate) fn batch_body(n: u64, pad: usize) -> Bytes {
    let pad = "x".repeat(pad.min(MAX_PAD_BYTES));
    let events: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"event_type":"bench.tick","source":"bench","data":{{"n":{i},"pad":"{pad}"}}}}"#))
        .collect();
    Bytes::from(format!("[{}]", events.join(",")))
}

/// # Errors
/// The server is unreachable, needs credentials, or answers a batch with anything but
/// 201, 429 or 503.
pub async fn run(target: &Target, args: IngestArgs) -> anyhow::Result<Report> {
    let server = args.common.pid.map(Proc::pid);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.producers)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    probe(&client, target).await?;
    let before = server.as_ref().map(Proc::usage).transpose().context("reading the server's /proc")?;
    let start = Instant::now();
    let max = Duration::from_secs(args.max_secs);
    let tally = Arc::new(Tally {
        budget: Budget::new(args.events, start + max),
        committed: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        transport_errors: AtomicU64::new(0),
        per_second: (0..=args.max_secs + 1).map(|_| AtomicU64::new(0)).collect(),
        first_seq: AtomicU64::new(u64::MAX),
        last_seq: AtomicU64::new(0),
        latency: Mutex::new(report::histogram()),
        start,
    });
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..args.producers.max(1) {
        let (client, url, tally) = (client.clone(), target.events.clone(), Arc::clone(&tally));
        let body = batch_body(args.batch, args.pad_bytes);
        let (batch, pad, retry) = (args.batch, args.pad_bytes, Duration::from_millis(args.retry_ms));
        producers.spawn(async move { produce(&client, url, &tally, body, batch, pad, retry).await });
    }
    while let Some(done) = producers.join_next().await {
        // A producer that failed ends the run; the others are aborted when the set drops.
        done.context("a producer panicked")??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = server.as_ref().map(Proc::usage).transpose().context("reading the server's /proc")?;
    Ok(summarise(&args, &tally, elapsed, before.zip(after)))
}

/// One small POST, so a wrong URL or a server with auth on fails before the run.
async fn probe(client: &reqwest::Client, target: &Target) -> anyhow::Result<()> {
    let response = client
        .post(target.events.clone())
        .header("content-type", "application/json")
        .body(r#"{"event_type":"bench.probe","source":"bench"}"#)
        .send()
        .await
        .with_context(|| format!("cannot reach {}; is the server running?", target.events))?;
    match response.status().as_u16() {
        201 => Ok(()),
        401 | 403 => anyhow::bail!("the server wants credentials; start it with --no-auth on loopback for benchmarks"),
        s => anyhow::bail!("probe POST answered {s}: {}", response.text().await.unwrap_or_default()),
    }
}

async fn produce(
    client: &reqwest::Client,
    url: reqwest::Url,
    tally: &Tally,
    full: Bytes,
    batch: u64,
    pad: usize,
    retry: Duration,
) -> anyhow::Result<()> {
    while let Some(n) = tally.budget.claim(batch) {
        let body = if n == batch { full.clone() } else { batch_body(n, pad) };
        // Bounded by the deadline: every pass either commits, or pauses and re-checks it.
        while Instant::now() < tally.budget.deadline {
            let sent = Instant::now();
            tally.requests.fetch_add(1, Ordering::Relaxed);
            let result =
                client.post(url.clone()).header("content-type", "application/json").body(body.clone()).send().await;
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    let errors = tally.transport_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    anyhow::ensure!(errors <= MAX_TRANSPORT_ERRORS, "too many transport errors; the last: {e}");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            match response.status().as_u16() {
                201 => {
                    let body = response.bytes().await.context("reading a 201 body")?;
                    let took = sent.elapsed();
                    let created: Created = serde_json::from_slice(&body).context("parsing a 201 body")?;
                    anyhow::ensure!(
                        created.events.len() as u64 == n,
                        "201 listed {} of {n} events",
                        created.events.len()
                    );
                    record(tally, &created, took);
                    break;
                }
                429 | 503 => {
                    tally.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(retry).await;
                }
                s => anyhow::bail!("POST answered {s}: {}", response.text().await.unwrap_or_default()),
            }
        }
    }
    Ok(())
}

fn record(tally: &Tally, created: &Created, took: Duration) {
    let n = created.events.len() as u64;
    tally.committed.fetch_add(n, Ordering::Relaxed);
    let second = tally.start.elapsed().as_secs() as usize;
    if let Some(bucket) = tally.per_second.get(second) {
        bucket.fetch_add(n, Ordering::Relaxed);
    }
    for e in &created.events {
        tally.first_seq.fetch_min(e.seq, Ordering::Relaxed);
        tally.last_seq.fetch_max(e.seq, Ordering::Relaxed);
    }
    // Poisoned only if a recording thread panicked, and a histogram stays usable.
    tally.latency.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(took.as_micros() as u64);
}

fn summarise(args: &IngestArgs, tally: &Tally, elapsed: f64, server: Option<(Usage, Usage)>) -> Report {
    let committed = tally.committed.load(Ordering::Relaxed);
    let overall = committed as f64 / elapsed.max(1e-9);
    // Only whole seconds: the last one is cut short by the end of the run.
    let whole = (elapsed.floor() as usize).min(tally.per_second.len());
    let per_second: Vec<f64> = tally.per_second[..whole].iter().map(|c| c.load(Ordering::Relaxed) as f64).collect();
    let median = report::median(&per_second).unwrap_or(overall);
    let (first, last) = (tally.first_seq.load(Ordering::Relaxed), tally.last_seq.load(Ordering::Relaxed));
    // Each batch gets a contiguous run of seqs; with no other producer, all of them together
    // must fill first..=last exactly.
    let contiguous = committed > 0 && last - first + 1 == committed;
    let latency = Latency::of(&tally.latency.lock().unwrap_or_else(|p| p.into_inner()));
    let mut r = Report::new("ingest");
    r.field("url", args.common.url.as_str())
        .field("producers", args.producers)
        .field("batch", args.batch)
        .field("pad_bytes", args.pad_bytes)
        .field("events_committed", committed)
        .field("elapsed_s", elapsed)
        .field("events_per_sec", overall)
        .field("events_per_sec_median", median)
        .field("per_second", &per_second)
        .field("requests", tally.requests.load(Ordering::Relaxed))
        .field("retries_503_429", tally.retries.load(Ordering::Relaxed))
        .field("transport_errors", tally.transport_errors.load(Ordering::Relaxed))
        .field("seq_first", first)
        .field("seq_last", last)
        .field("seq_contiguous", contiguous)
        .field("request_latency", latency);
    r.row("producers × batch", format!("{} × {}", args.producers, args.batch))
        .row("committed", format!("{} events in {elapsed:.2} s", grouped(committed as f64)))
        .row("events/s overall", grouped(overall))
        .row("events/s median of seconds", format!("{} (over {} whole seconds)", grouped(median), per_second.len()))
        .row(
            "retries (503/429)",
            format!(
                "{} (transport errors {})",
                tally.retries.load(Ordering::Relaxed),
                tally.transport_errors.load(Ordering::Relaxed)
            ),
        )
        .row("seqs", format!("{first}..={last}, contiguous: {contiguous}"))
        .row("request latency", latency.cell());
    if let Some((before, after)) = server {
        let cpu = after.cpu_secs - before.cpu_secs;
        r.field("server_cpu_s", cpu)
            .field("server_cpu_us_per_event", cpu * 1e6 / committed.max(1) as f64)
            .field("server_rss_bytes", after.rss_bytes)
            .field("server_peak_rss_bytes", after.peak_rss_bytes);
        r.row(
            "server CPU",
            format!(
                "{cpu:.2} s ({:.0}% of a core; {:.2} µs/event)",
                100.0 * cpu / elapsed,
                cpu * 1e6 / committed.max(1) as f64
            ),
        )
        .row(
            "server RSS",
            format!("{} (peak {})", report::bytes(after.rss_bytes as f64), report::bytes(after.peak_rss_bytes as f64)),
        );
    }
    report::client_usage(&mut r);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_hands_out_whole_batches_then_the_rest_then_nothing() {
        let budget = Budget::new(2500, Instant::now() + Duration::from_secs(60));
        let claims: Vec<_> = std::iter::from_fn(|| budget.claim(1000)).collect();
        assert_eq!(claims, vec![1000, 1000, 500]);
        let late = Budget::new(2500, Instant::now());
        assert_eq!(late.claim(1000), None, "past its deadline a budget gives nothing");
    }
}
