//! Micro-benchmarks of the three hot paths: ingest (parse, validate, redact, encode),
//! the writer's group commit into SQLite, and a cursor's filter-and-encode step; plus
//! the metrics each of them records (one count per event, one frame's latency and lag).
//!
//! `cargo bench --bench hot_paths`; results and their reading are in
//! docs/BENCHMARKS.md.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use swarmfeed::event::{Event, EventParts, NewEvent, format_timestamp};
use swarmfeed::filter::{Filter, FilterSpec};
use swarmfeed::hub::{Hub, ReadLimit};
use swarmfeed::ingest::IngestRules;
use swarmfeed::metrics::Metrics;
use swarmfeed::store::sqlite::SqliteStore;
use swarmfeed::store::{Bounds, Store};
use swarmfeed::transport::ws_events_frame;

/// The server's allocator, so that these figures are the server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A batch of 1 000 events as a producer posts them.
fn batch_body() -> Vec<u8> {
    let events: Vec<_> = (0..1000)
        .map(|i| {
            serde_json::json!({"event_type": "tool.called", "source": "bench", "task_id": format!("t{}", i % 50),
                               "agent_id": "forge", "data": {"tool_name": "grep", "args": ["-r", "pattern"], "n": i}})
        })
        .collect();
    serde_json::to_vec(&events).expect("serialises")
}

/// The commit time the encoding benchmarks give every event.
const TS_MS: i64 = 1_764_000_000_000;

fn ingest(c: &mut Criterion) {
    let rules = IngestRules::default();
    let body = batch_body();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("parse_validate_redact_1000", |b| b.iter(|| rules.parse_body(&body).expect("valid")));
    let events = rules.parse_body(&body).expect("valid");
    // What the writer does for each commit: one timestamp, data known to be JSON.
    g.bench_function("encode_committed_1000", |b| {
        b.iter(|| {
            let timestamp = format_timestamp(TS_MS);
            events
                .iter()
                .enumerate()
                .map(|(i, e)| Event::encode_committed(e.parts(i as u64 + 1, TS_MS), &timestamp))
                .collect::<Vec<_>>()
        })
    });
    // What a read from the store does: each row's data checked, each time formatted.
    g.bench_function("encode_from_store_1000", |b| {
        b.iter(|| {
            events
                .iter()
                .enumerate()
                .map(|(i, e)| Event::encode(e.parts(i as u64 + 1, TS_MS)).expect("valid data"))
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), 1).expect("store");
    let mut writer = rt.block_on(store.writer()).expect("writer");
    let rules = IngestRules::default();
    let template = rules.parse_body(&batch_body()).expect("valid");
    let mut g = c.benchmark_group("writer");
    for size in [1usize, 100, 1000] {
        g.throughput(Throughput::Elements(size as u64));
        g.bench_with_input(BenchmarkId::new("group_commit_fsync", size), &size, |b, &size| {
            let mut n = 0u64;
            b.iter(|| {
                let events: Vec<NewEvent> = template[..size]
                    .iter()
                    .map(|e| {
                        n += 1;
                        NewEvent { id: format!("c{n}"), ..e.clone() }
                    })
                    .collect();
                rt.block_on(writer.append(events)).expect("commits")
            })
        });
    }
    g.finish();
}

fn cursor_step(c: &mut Criterion) {
    let hub = Hub::new(Bounds { oldest: 1, head: 0 }, 10_000);
    let events: Vec<Arc<Event>> = (1..=10_000u64)
        .map(|seq| {
            Arc::new(
                Event::encode(EventParts {
                    seq,
                    id: &format!("e{seq}"),
                    event_type: if seq % 4 == 0 { "task.completed" } else { "tool.called" },
                    source: "bench",
                    task_id: Some("t1"),
                    agent_id: Some("forge"),
                    ts_ms: 0,
                    data: r#"{"tool_name":"grep"}"#,
                })
                .expect("valid"),
            )
        })
        .collect();
    hub.publish(&events);
    let limit = ReadLimit { max_events: 1000, max_bytes: 4 << 20 };
    let all = Filter::default();
    let tasks =
        Filter::from_spec(FilterSpec { types: vec!["task.*".into()], ..FilterSpec::default() }).expect("filter");
    let mut g = c.benchmark_group("cursor");
    g.throughput(Throughput::Elements(1000));
    for (name, filter) in [("read_and_frame_1000_all", &all), ("read_and_frame_1000_scanned_task_filter", &tasks)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(1000);
                hub.read_after(5_000, 10_000, filter, limit, &mut out);
                ws_events_frame(&out).len()
            })
        });
    }
    g.finish();
}

/// What recording costs where it happens: the writer counts each committed event, a
/// cursor counts each delivered event and observes one frame's latency and lag.
fn metrics(c: &mut Criterion) {
    let metrics = Metrics::default();
    let events: Vec<Arc<Event>> = (1..=1000u64)
        .map(|seq| {
            Arc::new(
                Event::encode(EventParts {
                    seq,
                    id: &format!("e{seq}"),
                    event_type: if seq % 4 == 0 { "task.completed" } else { "custom.thing" },
                    source: "bench",
                    task_id: None,
                    agent_id: None,
                    ts_ms: TS_MS,
                    data: "{}",
                })
                .expect("valid"),
            )
        })
        .collect();
    let mut g = c.benchmark_group("metrics");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("ingested_1000", |b| b.iter(|| metrics.ingested(&events)));
    g.throughput(Throughput::Elements(1));
    g.bench_function("delivered_frame_of_1", |b| b.iter(|| metrics.delivered(&events[..1], 3)));
    // An empty frame records only the lag: one histogram observation, beside the
    // library's own histogram (which takes a lock per observation) doing the same.
    g.bench_function("lag_observation", |b| b.iter(|| metrics.delivered(&[], 3)));
    let library = prometheus_client::metrics::histogram::Histogram::new([
        0.0,
        1.0,
        10.0,
        100.0,
        1_000.0,
        10_000.0,
        100_000.0,
        1_000_000.0,
    ]);
    g.bench_function("library_histogram_observation", |b| b.iter(|| library.observe(3.0)));
    g.finish();
}

criterion_group!(benches, ingest, group_commit, cursor_step, metrics);
criterion_main!(benches);
