//! `ingest-local`: how many events a second the in-process path commits, no HTTP.
//!
//! It runs the server's own parts in this process: a fresh SQLite log in a new
//! directory (`synchronous=FULL`, the same schema and indexes), the writer task with
//! its group commit, and the hub it publishes to. `--producers` tasks each do what an
//! ingest request's handler does, one batch at a time: parse, validate and redact a
//! JSON body of `--batch` events (`IngestRules::parse_body`, which also gives each
//! event its id), then hand the batch to the writer and wait until it is durable and
//! published. The figure is therefore the server's ingest ceiling with the HTTP layer
//! taken away. The runtime has `--threads` workers, the server's default being one per
//! core. As in the server, the search indexer follows the log beside the writer
//! (`--no-search` leaves it out); the report says how far behind the head it was when
//! the producers finished and how long it then took to catch up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use swarmfeed::hub::{DEFAULT_RING_CAPACITY, Hub};
use swarmfeed::ingest::IngestRules;
use swarmfeed::metrics::Metrics;
use swarmfeed::writer::{self, AppendError, Fanout, WriterSettings};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::ingest::{Budget, batch_body};
use crate::procfs::Proc;
use crate::report::{self, Latency, Report, grouped};

/// Read connections the store opens: the search indexer's reads.
const READ_CONNECTIONS: usize = 2;
/// Pause before offering a batch again when the writer's queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(1);

#[derive(Debug, Args)]
pub struct IngestLocalArgs {
    /// Leave the search indexer out, to measure the writer alone.
    #[arg(long)]
    no_search: bool,
    /// Concurrent producers, each with one batch in flight.
    #[arg(long, default_value_t = 2)]
    producers: usize,
    /// Events per batch (the API takes at most 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch: u64,
    /// Events to commit in all; the run ends when they are, or at --max-secs.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Hard cap on the run's length, seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    max_secs: u64,
    /// Runtime worker threads, as the server would have (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Directory for the log; it must not exist yet, and is removed afterwards.
    /// Default: a new directory under the system's temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Removes the run's data directory however the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// What the producers share.
struct Tally {
    budget: Budget,
    committed: AtomicU64,
    queue_full: AtomicU64,
    first_seq: AtomicU64,
    last_seq: AtomicU64,
    /// A std mutex: held only to record one value, never across an await.
    latency: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

/// # Errors
/// The data directory exists or cannot be made, the store cannot be opened, or a
/// batch fails to parse or commit.
pub async fn run(args: IngestLocalArgs) -> anyhow::Result<Report> {
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("swarmfeed-bench-{}-{}", std::process::id(), unix_millis())),
    };
    std::fs::create_dir(&dir).with_context(|| format!("creating {} (it must not exist yet)", dir.display()))?;
    let _scratch = Scratch(dir.clone());
    let store = swarmfeed::store::open(&dir, None, READ_CONNECTIONS, swarmfeed::store::postgres::DEFAULT_TIMEOUT)
        .await
        .context("opening the SQLite log")?;
    let hub = Arc::new(Hub::new(store.bounds().await?, DEFAULT_RING_CAPACITY));
    let stop = CancellationToken::new();
    let (writer, writer_task) = writer::spawn(
        store.writer().await.context("taking the log's writer")?,
        hub,
        Fanout::Direct,
        Arc::new(Metrics::default()),
        WriterSettings::default(),
        stop.clone(),
    );
    let progress = swarmfeed::search::SearchProgress::default();
    let indexer = (!args.no_search)
        .then(|| tokio::spawn(swarmfeed::search::run_indexer(Arc::clone(&store), progress.clone(), stop.clone())));
    let me = Proc::pid(std::process::id());
    let before = me.usage().context("reading this process's /proc")?;
    let start = Instant::now();
    let tally = Arc::new(Tally {
        budget: Budget::new(args.events, start + Duration::from_secs(args.max_secs)),
        committed: AtomicU64::new(0),
        queue_full: AtomicU64::new(0),
        first_seq: AtomicU64::new(u64::MAX),
        last_seq: AtomicU64::new(0),
        latency: std::sync::Mutex::new(report::histogram()),
    });
    let rules = Arc::new(IngestRules::default());
    let mut producers = tokio::task::JoinSet::new();
    for _ in 0..args.producers.max(1) {
        let (writer, tally, rules) = (writer.clone(), Arc::clone(&tally), Arc::clone(&rules));
        let batch = args.batch;
        producers.spawn(async move { produce(&writer, &rules, &tally, batch).await });
    }
    while let Some(done) = producers.join_next().await {
        done.context("a producer panicked")??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = me.usage().context("reading this process's /proc")?;
    let head = tally.last_seq.load(Ordering::Relaxed);
    let search = match indexer {
        Some(_) => {
            let lag = progress.lag(head);
            let waiting = Instant::now();
            let deadline = waiting + Duration::from_secs(args.max_secs);
            // The indexer reports its position after each batch; polled, as it has no
            // other signal to give.
            while progress.lag(head) > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some((lag, waiting.elapsed().as_secs_f64(), progress.lag(head)))
        }
        None => None,
    };
    stop.cancel();
    writer_task.await.context("the writer task panicked")?;
    if let Some(indexer) = indexer {
        indexer.await.context("the search indexer panicked")?;
    }
    let mut report = summarise(&args, &dir, &tally, elapsed, after.cpu_secs - before.cpu_secs);
    if let Some((lag, catch_up, left)) = search {
        report
            .field("search_lag_at_end", lag)
            .field("search_catch_up_s", catch_up)
            .field("search_unindexed", left)
            .row(
                "search index",
                format!("{lag} events behind at the end, caught up {catch_up:.2} s later ({left} left)"),
            );
    }
    Ok(report)
}

async fn produce(writer: &writer::WriterHandle, rules: &IngestRules, tally: &Tally, batch: u64) -> anyhow::Result<()> {
    let full = batch_body(batch, 0);
    while let Some(n) = tally.budget.claim(batch) {
        let body = if n == batch { full.clone() } else { batch_body(n, 0) };
        let sent = Instant::now();
        // As a handler does; a batch refused because the queue is full is parsed again,
        // as a resent request would be (with two producers the queue never fills).
        let appended = loop {
            let parsed = rules.parse_body(&body).map_err(|e| anyhow::anyhow!("the batch body was refused: {e}"))?;
            match writer.append(parsed).await {
                Ok(appended) => break appended,
                Err(AppendError::QueueFull) if Instant::now() < tally.budget.deadline => {
                    tally.queue_full.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err(AppendError::QueueFull) => return Ok(()),
                Err(e) => return Err(e).context("committing a batch"),
            }
        };
        let took = sent.elapsed();
        anyhow::ensure!(appended.len() as u64 == n, "the writer acknowledged {} of {n} events", appended.len());
        tally.committed.fetch_add(n, Ordering::Relaxed);
        for a in &appended {
            tally.first_seq.fetch_min(a.seq, Ordering::Relaxed);
            tally.last_seq.fetch_max(a.seq, Ordering::Relaxed);
        }
        // Poisoned only if a recording thread panicked, and a histogram stays usable.
        tally.latency.lock().unwrap_or_else(|p| p.into_inner()).saturating_record(took.as_micros() as u64);
    }
    Ok(())
}

fn summarise(args: &IngestLocalArgs, dir: &Path, tally: &Tally, elapsed: f64, cpu: f64) -> Report {
    let committed = tally.committed.load(Ordering::Relaxed);
    let rate = committed as f64 / elapsed.max(1e-9);
    let (first, last) = (tally.first_seq.load(Ordering::Relaxed), tally.last_seq.load(Ordering::Relaxed));
    // One writer, no other producer: every acknowledged seq, and only those, fill first..=last.
    let contiguous = committed > 0 && last - first + 1 == committed;
    let latency = Latency::of(&tally.latency.lock().unwrap_or_else(|p| p.into_inner()));
    let threads = args.threads.unwrap_or_else(default_threads);
    let mut r = Report::new("ingest-local");
    r.field("data_dir", dir.display().to_string())
        .field("threads", threads)
        .field("producers", args.producers)
        .field("batch", args.batch)
        .field("events_committed", committed)
        .field("elapsed_s", elapsed)
        .field("events_per_sec", rate)
        .field("queue_full_retries", tally.queue_full.load(Ordering::Relaxed))
        .field("seq_first", first)
        .field("seq_last", last)
        .field("seq_contiguous", contiguous)
        .field("batch_latency", latency)
        .field("cpu_s", cpu)
        .field("cpu_us_per_event", cpu * 1e6 / committed.max(1) as f64);
    r.row("threads, producers × batch", format!("{threads}, {} × {}", args.producers, args.batch))
        .row("committed", format!("{} events in {elapsed:.2} s", grouped(committed as f64)))
        .row("events/s", grouped(rate))
        .row("queue full, retried", tally.queue_full.load(Ordering::Relaxed).to_string())
        .row("seqs", format!("{first}..={last}, contiguous: {contiguous}"))
        .row("batch latency", latency.cell())
        .row(
            "CPU, whole process",
            format!(
                "{cpu:.2} s ({:.0}% of a core; {:.2} µs/event)",
                100.0 * cpu / elapsed,
                cpu * 1e6 / committed.max(1) as f64
            ),
        );
    r
}

/// One worker per core, as the server's runtime has.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}
