//! `swarmfeed-bench`: the load generator behind `docs/BENCHMARKS.md`.
//!
//! It drives a swarmfeed server that already runs on this machine (started with
//! `--no-auth --max-frames-per-sec 0`), or for `ingest-local` runs the server's own
//! parts in this process, and measures one figure per mode:
//!
//! ```text
//! ingest       N producers ── POST /api/events (batches) ──► server      events/s, request latency
//! ingest-local N producers ── parse ──► writer ──► SQLite, in process  events/s, no HTTP
//! fanout       publisher ── POST (data.sent_ns) ──► server ──► /ws × N   delivery latency, lost, dups
//! catch-up     one /ws from seq 0, 1M behind, beside N live ones         catch-up events/s, live p99 ÷ baseline
//! idle-memory  N subscribed, silent /ws connections                      server RSS per connection
//! stalled      N /ws that stop reading, beside N live ones               RSS per stalled, live p99 ÷ baseline
//! floor        no server: threads write frames to N loopback sockets      latency, CPU of TCP alone
//! versus-nats  fanout's load on swarmfeed, then on nats-server's /ws        ratios swarmfeed ÷ nats
//! idle-versus-nats  N idle /ws on each of the two                          RSS per connection, ratio
//! ```
//!
//! - `target`: the server's URL, refused unless it is on loopback.
//! - `ingest`, `ingest_local`, `fanout`, `catchup`, `idle`, `stalled`, `floor`: one
//!   mode each.
//! - `subscriber`: one WebSocket subscription and what it saw (seqs, latencies).
//! - `wire`, `readers`: subscriptions opened by hand and read by a few threads, for
//!   the modes with thousands of them.
//! - `versus`, `versus_idle`: the side-by-side modes, against servers they start
//!   themselves (`launch`); `nats`: the NATS client they load nats-server with.
//! - `procfs`: RSS, CPU time and open-file limits read from `/proc`; `nofile`: the
//!   open-file limit raised.
//! - `report`: latency summaries, the JSON line on stdout and the table on stderr.
//!
//! Every loop is bounded in count and in time, and the harness stops by itself.

mod catchup;
mod fanout;
mod floor;
mod idle;
mod ingest;
mod ingest_local;
mod launch;
mod nats;
mod nofile;
mod procfs;
mod readers;
mod report;
mod stalled;
mod subscriber;
mod target;
mod versus;
mod versus_idle;
mod wire;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::target::Target;

/// The server's allocator, so that `ingest-local` measures the server's path as built.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "swarmfeed-bench", version, about = "Load generator for a swarmfeed server on this machine")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Concurrent producers POST batches; reports events/s committed and request latency.
    Ingest(ingest::IngestArgs),
    /// The server's parsing, writer and SQLite log in this process, without HTTP;
    /// reports events/s committed.
    IngestLocal(ingest_local::IngestLocalArgs),
    /// N WebSocket subscribers; a publisher posts timestamped events; reports delivery
    /// latency, deliveries/s, lost and duplicate events.
    Fanout(fanout::FanoutArgs),
    /// A subscriber far behind reads the log back while live subscribers get events;
    /// reports its events/s and the live latency against a baseline without it.
    CatchUp(catchup::CatchUpArgs),
    /// N idle, subscribed WebSocket connections; reports server memory per connection.
    IdleMemory(idle::IdleArgs),
    /// N WebSocket subscribers that stop reading beside N live ones; reports server
    /// memory per stalled subscriber and the live latency against a baseline without them.
    Stalled(stalled::StalledArgs),
    /// No server: `fanout`'s deliveries written by bare threads of a second process
    /// over loopback; reports the latency and CPU that TCP alone costs on this machine.
    Floor(floor::FloorArgs),
    /// fanout's load against swarmfeed and then against a private nats-server's
    /// WebSocket gateway, and the floor, in one run; reports the ratios.
    VersusNats(versus::VersusArgs),
    /// N idle WebSocket connections to swarmfeed and to a private nats-server; reports
    /// each server's memory per connection and the ratio.
    IdleVersusNats(versus_idle::IdleVersusArgs),
    /// The writer process `floor` starts.
    #[command(hide = true)]
    FloorWriter(floor::WriterArgs),
}

/// What every mode needs to reach the server.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Base URL of the server; only loopback hosts are accepted.
    #[arg(long, env = "SWARMFEED_BENCH_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The server's process id, to read its memory and CPU time from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Worker threads of the harness's own runtime, and in `fanout` and `catch-up` its
    /// reader threads as well. The server and the harness share the machine's cores,
    /// so the default leaves the rest to the server.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

impl Mode {
    /// Worker threads of this process's runtime: the harness's own, or for the mode
    /// that runs the server's parts in process, the server's.
    fn threads(&self) -> usize {
        match self {
            Mode::Ingest(a) => a.common.client_threads,
            Mode::IngestLocal(a) => a.threads.unwrap_or_else(ingest_local::default_threads),
            Mode::Fanout(a) => a.common.client_threads,
            Mode::CatchUp(a) => a.common.client_threads,
            Mode::IdleMemory(a) => a.common.client_threads,
            Mode::Stalled(a) => a.common.client_threads,
            Mode::VersusNats(a) => a.client_threads as usize,
            Mode::IdleVersusNats(a) => a.client_threads as usize,
            // Its readers and writers are threads of their own; the runtime only waits.
            Mode::Floor(_) | Mode::FloorWriter(_) => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(mode: Mode) -> anyhow::Result<()> {
    if let Mode::FloorWriter(args) = &mode {
        // Threads of its own, and its stdout is what `floor` reads.
        return floor::writer(args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(mode.threads().max(1))
        .enable_all()
        .build()
        .context("starting the harness's runtime")?;
    let report = runtime.block_on(async {
        match mode {
            Mode::Ingest(args) => ingest::run(&Target::parse(&args.common.url)?, args).await,
            Mode::IngestLocal(args) => ingest_local::run(args).await,
            Mode::Fanout(args) => fanout::run(&Target::parse(&args.common.url)?, args).await,
            Mode::CatchUp(args) => catchup::run(&Target::parse(&args.common.url)?, args).await,
            Mode::IdleMemory(args) => idle::run(&Target::parse(&args.common.url)?, args).await,
            Mode::Stalled(args) => stalled::run(&Target::parse(&args.common.url)?, args).await,
            Mode::Floor(args) => floor::run(args).await,
            Mode::VersusNats(args) => versus::run(args).await,
            Mode::IdleVersusNats(args) => versus_idle::run(args).await,
            // Handled above, before the runtime.
            Mode::FloorWriter(_) => anyhow::bail!("floor-writer runs on threads of its own"),
        }
    })?;
    report.emit();
    Ok(())
}
