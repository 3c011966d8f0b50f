//! `floor`: the fan-out of `fanout`, served by the least any server could do, to show
//! what this machine's kernel alone costs.
//!
//! The harness starts a copy of itself as the writer (`floor-writer`, a process of its
//! own as the server is, which also keeps each process under its open-file limit). The
//! writer listens on a loopback port; the harness opens `--subscribers` plain TCP
//! connections to it and reads them with the reader threads `fanout` uses. Once all are
//! accepted the writer's threads (`--writers`, one per core by default, as the server's
//! runtime has) send the events at `--rate`, `--batch` to a frame, as one ready-made
//! WebSocket `event` or `batch` frame per connection: one `write` each, with no HTTP,
//! commit, cursor, task, framing or allocation per delivery. A delivery's latency runs
//! from the moment its frame was due.
//!
//! What `fanout` measures above this floor is swarmfeed's; the floor itself is two
//! processes' TCP over loopback on the same cores, and no server can go under it here.
//!
//! The writer reports on its stdout, a line at a time: `port P` once listening, then
//! `done FRAMES CPU_SECONDS` once it has written everything. It then keeps its sockets
//! open until its stdin closes, so that the readers finish before the connections end.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use swarmfeed::event::{Event, EventParts, format_timestamp};
use swarmfeed::transport::ws_events_frame;

use crate::fanout::{self, Integrity};
use crate::procfs::{self, Proc};
use crate::readers::Readers;
use crate::report::{Latency, Report, grouped};
use crate::subscriber::{self, Seen, Sink};
use crate::wire::{self, OP_TEXT, Subscribed};

/// Longest one write may block: a reader that stops reading fails the run, not hangs it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a run may write for: `--events` ÷ `--rate`.
const MAX_WRITING: Duration = Duration::from_secs(900);
/// How long to wait after the last event for deliveries still under way.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    #[command(flatten)]
    writer: WriterArgs,
    /// Reader threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    client_threads: u64,
}

impl FloorArgs {
    /// `subscribers` connections, `events` at `rate` one to a frame, read by
    /// `client_threads`: the floor under a `fanout` of the same shape.
    pub fn like_fanout(subscribers: u64, events: u64, rate: u64, client_threads: u64) -> Self {
        FloorArgs { writer: WriterArgs { subscribers, events, rate, batch: 1, writers: None }, client_threads }
    }
}

/// What the writer process is told.
#[derive(Debug, Clone, Args)]
pub struct WriterArgs {
    /// Connections to write to.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=50_000))]
    subscribers: u64,
    /// Events to send to every connection.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    events: u64,
    /// Events per second.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    rate: u64,
    /// Events per frame: several make a `batch` frame, as the server's pacing does in
    /// a burst.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5_000))]
    batch: u64,
    /// Writer threads, each writing to its share of the connections; by default one per
    /// core.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=64))]
    writers: Option<u64>,
}

impl WriterArgs {
    /// Refuses a run that would write for longer than [`MAX_WRITING`].
    fn check(&self) -> anyhow::Result<()> {
        let secs = self.events as f64 / self.rate as f64;
        anyhow::ensure!(
            secs <= MAX_WRITING.as_secs_f64(),
            "--events {} at --rate {} would write for {secs:.0} s; the most is {} s",
            self.events,
            self.rate,
            MAX_WRITING.as_secs()
        );
        Ok(())
    }

    fn writers(&self) -> u64 {
        self.writers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u64))
    }
}

/// The writer process, killed if the run ends early.
struct WriterProcess {
    child: Child,
    lines: BufReader<ChildStdout>,
    /// Dropped, it lets the writer end.
    hold: Option<ChildStdin>,
}

impl WriterProcess {
    fn start(args: &WriterArgs) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this program to start the writer")?;
        let mut child = Command::new(exe)
            .arg("floor-writer")
            .args(["--subscribers", &args.subscribers.to_string()])
            .args(["--events", &args.events.to_string()])
            .args(["--rate", &args.rate.to_string()])
            .args(["--batch", &args.batch.to_string()])
            .args(["--writers", &args.writers().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the writer process")?;
        let stdout = child.stdout.take().context("the writer's stdout")?;
        let hold = child.stdin.take();
        Ok(WriterProcess { child, lines: BufReader::new(stdout), hold })
    }

    /// Lets the writer close its sockets and end; returns how it ended.
    fn end(&mut self) -> anyhow::Result<()> {
        self.hold = None;
        let status = self.child.wait().context("waiting for the writer")?;
        anyhow::ensure!(status.success(), "the writer failed: {status}");
        Ok(())
    }

    /// The writer's next line, split at spaces, checked to start with `word`.
    fn expect(&mut self, word: &str) -> anyhow::Result<Vec<String>> {
        let mut line = String::new();
        self.lines.read_line(&mut line).context("reading the writer's report")?;
        let parts: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        anyhow::ensure!(
            parts.first().map(String::as_str) == Some(word),
            "the writer said {line:?} (see above), not {word}"
        );
        Ok(parts)
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        // Gone already after a run that went to the end.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// # Errors
/// The writer could not start, the connections could not be opened, a write failed
/// or a thread panicked.
pub async fn run(args: FloorArgs) -> anyhow::Result<Report> {
    args.writer.check()?;
    procfs::check_open_files(&Proc::me(), "the harness", args.writer.subscribers)?;
    let sink = Arc::new(Sink::new(args.client_threads as usize));
    let mut readers = Readers::start(args.client_threads as usize, &sink)?;
    let (writer_args, span) = (args.writer.clone(), args.writer.events + 1);
    let started = Instant::now();
    let (readers, mut writer, done, before) = tokio::task::spawn_blocking(move || {
        let mut writer = WriterProcess::start(&writer_args)?;
        let port: u16 = writer.expect("port")?.get(1).and_then(|p| p.parse().ok()).context("the writer's port")?;
        for _ in 0..writer_args.subscribers {
            let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).context("connecting to the writer")?;
            stream.set_nodelay(true).context("setting TCP_NODELAY")?;
            readers.add(Subscribed { stream, leftover: Vec::new(), head: 0 }, Seen::new(0, span))?;
        }
        eprintln!("{} connections in {:.1} s; writing", writer_args.subscribers, started.elapsed().as_secs_f64());
        let before = Proc::me().usage().context("reading this process's /proc")?;
        let done = writer.expect("done")?;
        anyhow::Ok((readers, writer, done, before))
    })
    .await
    .context("the connecting thread panicked")??;
    let writer_cpu: f64 = done.get(2).and_then(|c| c.parse().ok()).context("the writer's CPU time")?;

    let (events, count) = (args.writer.events, args.writer.subscribers);
    let expected = events * count;
    sink.drained(expected, DRAIN).await;
    let delivered = sink.delivered.load(Ordering::Relaxed);
    let reader_cpu = Proc::me().usage().context("reading this process's /proc")?.cpu_secs - before.cpu_secs;
    let published: Vec<u64> = (1..=events).collect();
    let mut integrity = Integrity::default();
    for seen in readers.finish()? {
        fanout::check(&seen, &published, &mut integrity);
    }
    writer.end()?;

    let latency = Latency::of(&sink.merged().from_send);
    let per = |cpu: f64| cpu * 1e6 / delivered.max(1) as f64;
    let mut r = Report::new("floor");
    r.field("subscribers", count)
        .field("events", events)
        .field("rate", args.writer.rate)
        .field("batch", args.writer.batch)
        .field("writers", args.writer.writers())
        .field("reader_threads", args.client_threads)
        .field("deliveries", delivered)
        .field("deliveries_expected", expected)
        .field("latency_from_due", latency)
        .field("writer_cpu_s", writer_cpu)
        .field("writer_cpu_us_per_delivery", per(writer_cpu))
        .field("reader_cpu_s", reader_cpu)
        .field("reader_cpu_us_per_delivery", per(reader_cpu))
        .field("integrity", &integrity);
    r.row(
        "connections",
        format!("{count}, {} writer threads, {} reader threads", args.writer.writers(), args.client_threads),
    )
    .row("deliveries", format!("{} of {}", grouped(delivered as f64), grouped(expected as f64)))
    .row("latency due→receive", latency.cell())
    .row("writer CPU", format!("{writer_cpu:.2} s, {:.2} µs per delivery", per(writer_cpu)))
    .row("reader CPU", format!("{reader_cpu:.2} s, {:.2} µs per delivery", per(reader_cpu)))
    .row("lost / dup / disorder", integrity.cell());
    crate::report::client_usage(&mut r);
    Ok(r)
}

/// The writer process: listens, accepts `--subscribers` connections, writes every event
/// to each and reports on stdout (see the module's documentation).
///
/// # Errors
/// Listening, accepting or a write failed, or a writer thread panicked.
pub fn writer(args: &WriterArgs) -> anyhow::Result<()> {
    args.check()?;
    procfs::check_open_files(&Proc::me(), "the writer", args.subscribers)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("listening on loopback")?;
    let port = listener.local_addr().context("reading the listener's address")?.port();
    let mut out = std::io::stdout().lock();
    writeln!(out, "port {port}").and_then(|()| out.flush()).context("reporting the port")?;
    let mut ends = Vec::with_capacity(args.subscribers as usize);
    for _ in 0..args.subscribers {
        let (end, _) = listener.accept().context("accepting a connection")?;
        end.set_nodelay(true).context("setting TCP_NODELAY")?;
        end.set_write_timeout(Some(WRITE_TIMEOUT)).context("setting a write timeout")?;
        ends.push(end);
    }
    let before = Proc::me().usage().context("reading this process's /proc")?;
    let interval = Duration::from_secs(1) / args.rate as u32;
    let batch = args.batch;
    let (start, start_ns) = (Instant::now(), subscriber::unix_nanos());
    let per_thread = ends.len().div_ceil(args.writers() as usize);
    let mut threads = Vec::new();
    while !ends.is_empty() {
        let share: Vec<TcpStream> = ends.drain(..per_thread.min(ends.len())).collect();
        let events = args.events;
        threads.push(
            std::thread::Builder::new()
                .name("writer".into())
                .spawn(move || write_events(share, events, batch, start, start_ns, interval))
                .context("starting a writer thread")?,
        );
    }
    let (mut frames, mut open) = (0, Vec::with_capacity(args.subscribers as usize));
    for thread in threads {
        let (written, share) = thread.join().map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        frames += written;
        open.extend(share);
    }
    let cpu = Proc::me().usage().context("reading this process's /proc")?.cpu_secs - before.cpu_secs;
    writeln!(out, "done {frames} {cpu}").and_then(|()| out.flush()).context("reporting the result")?;
    // Until `floor` is done reading: an error or EOF both mean it is.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(open);
    Ok(())
}

/// Writes events `1..=events` to every stream of `share`, `batch` to a frame, the
/// frame that ends with event `last` due at `start + (last - 1) × interval`; returns
/// the frames written and the streams, still open.
fn write_events(
    mut share: Vec<TcpStream>,
    events: u64,
    batch: u64,
    start: Instant,
    start_ns: u64,
    interval: Duration,
) -> anyhow::Result<(u64, Vec<TcpStream>)> {
    let mut frames = 0;
    let mut first = 1;
    while first <= events {
        let last = (first + batch - 1).min(events);
        let offset = interval.mul_f64((last - 1) as f64);
        if let Some(wait) = (start + offset).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let frame = events_frame(first..=last, start_ns + offset.as_nanos() as u64);
        for stream in &mut share {
            stream.write_all(&frame).context("writing a frame (a reader stopped reading?)")?;
            frames += 1;
        }
        first = last + 1;
    }
    Ok((frames, share))
}

/// Events `seqs`, all due at `due_ns`, framed by the server's own encoder: one `event`
/// frame, or a `batch` frame for several; each event what the `fanout` publisher posts.
fn events_frame(seqs: RangeInclusive<u64>, due_ns: u64) -> Vec<u8> {
    let data = format!(r#"{{"sent_ns":{due_ns},"i":0}}"#);
    let ts_ms = (due_ns / 1_000_000) as i64;
    let timestamp = format_timestamp(ts_ms);
    let events: Vec<Arc<Event>> = seqs
        .map(|seq| {
            let parts = EventParts {
                seq,
                id: &format!("0196f3a2-7c1e-7d30-9a4b-{seq:012}"),
                event_type: "bench.tick",
                source: "bench",
                task_id: None,
                agent_id: None,
                ts_ms,
                data: &data,
            };
            // `data` is JSON made here: nothing for `Event::encode`'s check to catch.
            Arc::new(Event::encode_committed(parts, &timestamp))
        })
        .collect();
    wire::server_frame(OP_TEXT, &ws_events_frame(&events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_longer_than_the_cap_is_refused_before_it_starts() {
        let args = |events, rate| WriterArgs { subscribers: 1, events, rate, batch: 1, writers: Some(1) };
        assert!(args(9_000, 10).check().is_ok());
        let err = args(100_000, 10).check().unwrap_err().to_string();
        assert!(err.contains("10000 s") && err.contains("900 s"), "{err}");
    }

    #[test]
    fn frames_are_server_frames_the_readers_check() {
        let due = subscriber::unix_nanos() - 3_000_000;
        // One event, a batch in a 2-byte length, and one in an 8-byte length.
        for (seqs, expect) in [(7..=7, 1), (1..=200, 200), (1..=400, 400)] {
            let frame = events_frame(seqs.clone(), due);
            let (parsed, used) = crate::wire::parse(&frame).unwrap().unwrap();
            assert_eq!((parsed.fin, parsed.opcode, used), (true, OP_TEXT, frame.len()));
            let sink = Sink::new(1);
            let mut seen = Seen::new(0, 1000);
            subscriber::on_frame(parsed.payload, due + 3_000_000, &mut seen, &sink, 0);
            assert!(seqs.clone().all(|s| seen.has(s)) && seen.errors == 0, "{seqs:?}");
            let latency = sink.merged();
            assert_eq!(latency.from_send.len(), expect);
            assert!((latency.from_send.max() as i64 - 3000).abs() < 5, "{}", latency.from_send.max());
        }
    }
}
