//! Metrics in the Prometheus text format, served at `/metrics`.
//!
//! Owns the counters, gauges and histograms. Every one is a fixed set of atomics:
//! labels come from closed sets (the transports, the known event types plus "other",
//! the API's error codes), so no input can grow the number of series, and recording is
//! a relaxed atomic add on the hot path (no lock, no allocation, no hashing).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::event::{Event, KNOWN_TYPES};

/// A streaming transport, for the connection gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Ws,
    WsHtml,
    Sse,
    Poll,
}

impl Transport {
    const ALL: [Transport; 4] = [Transport::Ws, Transport::WsHtml, Transport::Sse, Transport::Poll];

    fn label(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::WsHtml => "ws_html",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// Latency buckets, seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Cursor lag buckets, events behind the head.
const LAG_BUCKETS: &[f64] = &[0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// A histogram with fixed upper bounds.
struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus one for +Inf; not cumulative (summed when rendered).
    counts: Vec<AtomicU64>,
    /// Sum of observations, in millionths of the unit.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Counters per event type: one per known type, one for all others.
struct ByType {
    counts: Vec<AtomicU64>,
}

impl ByType {
    fn new() -> Self {
        ByType { counts: (0..=KNOWN_TYPES.len()).map(|_| AtomicU64::new(0)).collect() }
    }

    fn add(&self, event: &Event, n: u64) {
        self.counts[event.known_index().unwrap_or(KNOWN_TYPES.len())].fetch_add(n, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, count) in self.counts.iter().enumerate() {
            let label = KNOWN_TYPES.get(i).map_or("other", |k| k.event_type);
            let _ = writeln!(out, "{name}{{type=\"{label}\"}} {}", count.load(Ordering::Relaxed));
        }
    }
}

/// Process-wide metrics; one instance, shared by handle.
pub struct Metrics {
    connections: [AtomicI64; 4],
    subscribers: AtomicI64,
    ingested: ByType,
    delivered: ByType,
    ingest_latency: Histogram,
    fanout_latency: Histogram,
    cursor_lag: Histogram,
    /// Refusals by error code; codes are the API's fixed vocabulary. Locked only to
    /// bump a count, never across an await.
    rejected: Mutex<Vec<(&'static str, u64)>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connections: Default::default(),
            subscribers: AtomicI64::new(0),
            ingested: ByType::new(),
            delivered: ByType::new(),
            ingest_latency: Histogram::new(LATENCY_BUCKETS),
            fanout_latency: Histogram::new(LATENCY_BUCKETS),
            cursor_lag: Histogram::new(LAG_BUCKETS),
            rejected: Mutex::new(Vec::new()),
        }
    }
}

/// Counts one open streaming connection until dropped.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections[self.transport as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one live subscription until dropped.
pub struct SubscriberGuard(Arc<Metrics>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Values read from other parts at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub head: u64,
    pub oldest: u64,
    pub writer_queue_events: usize,
    pub open_connections: u32,
}

impl Metrics {
    pub fn connection(self: &Arc<Self>, transport: Transport) -> ConnectionGuard {
        self.connections[transport as usize].fetch_add(1, Ordering::Relaxed);
        ConnectionGuard { metrics: Arc::clone(self), transport }
    }

    pub fn subscriber(self: &Arc<Self>) -> SubscriberGuard {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        SubscriberGuard(Arc::clone(self))
    }

    /// Events just committed.
    pub fn ingested(&self, events: &[Arc<Event>]) {
        for e in events {
            self.ingested.add(e, 1);
        }
    }

    /// A frame of `events` sent to one viewer whose cursor is `lag` events behind the
    /// head; its latency is taken from the newest event's commit time.
    pub fn delivered(&self, events: &[Arc<Event>], lag: u64) {
        for e in events {
            self.delivered.add(e, 1);
        }
        if let Some(newest) = events.last() {
            let ms = chrono::Utc::now().timestamp_millis() - newest.ts_ms;
            self.fanout_latency.observe(ms.max(0) as f64 / 1000.0);
        }
        self.cursor_lag.observe(lag as f64);
    }

    /// An ingest request took `elapsed` from arrival to its commit.
    pub fn ingest_latency(&self, elapsed: Duration) {
        self.ingest_latency.observe(elapsed.as_secs_f64());
    }

    /// A request or connection was refused with `code`.
    pub fn rejected(&self, code: &'static str) {
        let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        match rejected.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => rejected.push((code, 1)),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self, now: Snapshot) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let _ = writeln!(out, "# HELP swarmfeed_connections Open streaming connections by transport.");
        let _ = writeln!(out, "# TYPE swarmfeed_connections gauge");
        for t in Transport::ALL {
            let _ = writeln!(
                out,
                "swarmfeed_connections{{transport=\"{}\"}} {}",
                t.label(),
                self.connections[t as usize].load(Ordering::Relaxed)
            );
        }
        let gauges: [(&str, &str, f64); 5] = [
            (
                "swarmfeed_subscribers",
                "Live subscriptions (WebSocket and SSE).",
                self.subscribers.load(Ordering::Relaxed) as f64,
            ),
            ("swarmfeed_open_connections", "Open TCP connections.", f64::from(now.open_connections)),
            ("swarmfeed_writer_queue_events", "Events waiting for the writer.", now.writer_queue_events as f64),
            ("swarmfeed_head_seq", "Seq of the last committed event.", now.head as f64),
            ("swarmfeed_oldest_seq", "Oldest retained seq.", now.oldest as f64),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        self.ingested.render(&mut out, "swarmfeed_events_ingested_total", "Events committed, by type.");
        self.delivered.render(&mut out, "swarmfeed_events_delivered_total", "Events sent to viewers, by type.");
        self.ingest_latency.render(
            &mut out,
            "swarmfeed_ingest_latency_seconds",
            "From an ingest request's arrival to its commit.",
        );
        self.fanout_latency.render(
            &mut out,
            "swarmfeed_fanout_latency_seconds",
            "From an event's commit to a frame carrying it being sent.",
        );
        self.cursor_lag.render(
            &mut out,
            "swarmfeed_cursor_lag_events",
            "How far behind the head a viewer's cursor was when a frame went.",
        );
        let _ = writeln!(out, "# HELP swarmfeed_rejected_total Requests and connections refused, by reason.");
        let _ = writeln!(out, "# TYPE swarmfeed_rejected_total counter");
        for (code, n) in self.rejected.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "swarmfeed_rejected_total{{reason=\"{code}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;

    fn event(event_type: &str) -> Arc<Event> {
        Arc::new(
            Event::encode(EventParts {
                seq: 1,
                id: "i",
                event_type,
                source: "s",
                task_id: None,
                agent_id: None,
                ts_ms: chrono::Utc::now().timestamp_millis(),
                data: "{}",
            })
            .unwrap(),
        )
    }

    #[test]
    fn the_exposition_has_every_family_with_bounded_labels() {
        let m = Arc::new(Metrics::default());
        let _ws = m.connection(Transport::Ws);
        {
            let _sse = m.connection(Transport::Sse);
        }
        m.ingested(&[event("task.created"), event("custom.one"), event("custom.two")]);
        m.delivered(&[event("task.created")], 3);
        m.ingest_latency(Duration::from_millis(3));
        m.rejected("rate_limited");
        m.rejected("rate_limited");
        let text = m.render(Snapshot { head: 9, ..Snapshot::default() });
        assert!(text.contains("swarmfeed_connections{transport=\"ws\"} 1"));
        assert!(text.contains("swarmfeed_connections{transport=\"sse\"} 0"));
        assert!(text.contains("swarmfeed_events_ingested_total{type=\"task.created\"} 1"));
        assert!(text.contains("swarmfeed_events_ingested_total{type=\"other\"} 2"), "unknown types share one series");
        assert!(text.contains("swarmfeed_ingest_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("swarmfeed_ingest_latency_seconds_count 1"));
        assert!(text.contains("swarmfeed_cursor_lag_events_bucket{le=\"10\"} 1"));
        assert!(text.contains("swarmfeed_rejected_total{reason=\"rate_limited\"} 2"));
        assert!(text.contains("swarmfeed_head_seq 9"));
    }
}
