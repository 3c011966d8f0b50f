//! Metrics, served at `/metrics` in the Prometheus text format (0.0.4).
//!
//! Owns the counters, gauges and histograms and their registry; the Prometheus
//! project's `prometheus-client` writes the exposition. It does not own the values read
//! at scrape time (head, oldest, writer queue, open connections, in-flight bodies): the
//! `/metrics` handler reads those from their owners and hands them over as a
//! [`Snapshot`].
//!
//! Every label value comes from a closed set: the transports and the event types (the
//! known ones plus "other") are typed and their series made up front, in `Fixed`;
//! refusal reasons are the API's error codes, `&'static str` literals in the code. No
//! input can grow the number of series. Recording an ingested or delivered event is an
//! index by the label's position and one relaxed atomic add (no lock, no hashing, no
//! allocation), as it was before the library. Histograms are ours for the same reason:
//! the library's takes a lock per observation, which every cursor task would contend
//! for on each frame; ours is two atomic adds, written out by the library's histogram
//! encoder.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet, prometheus_text,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::event::{Event, KNOWN_TYPES};

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A streaming transport, for the connection gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Ws,
    WsHtml,
    Sse,
    Poll,
}

impl Transport {
    /// In the order the series are exposed; `ALL[t as usize] == t`.
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

// By hand rather than derived: the derive writes the variant's name (`WsHtml`), and the
// exposed values are the lower-case names the transports go by.
impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, self.label())
    }
}

/// An event's type as a label: its row in [`KNOWN_TYPES`], or past the end for every
/// other type, so a producer's invented types share one series, "other".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EventType(usize);

impl EventType {
    /// Known types in table order, then "other".
    fn all() -> impl Iterator<Item = EventType> {
        (0..=KNOWN_TYPES.len()).map(EventType)
    }

    fn of(event: &Event) -> EventType {
        EventType(event.known_index().unwrap_or(KNOWN_TYPES.len()))
    }
}

impl EncodeLabelValue for EventType {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_str(encoder, KNOWN_TYPES.get(self.0).map_or("other", |k| k.event_type))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TransportLabels {
    transport: Transport,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    r#type: EventType,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WebhookLabels {
    /// A webhook's id: at most `webhook::MAX_WEBHOOKS` of them, made by an admin.
    webhook: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectedLabels {
    /// One of the API's error codes (`ApiError::code`), all literals in the code.
    reason: &'static str,
}

/// A labelled family whose series are all made up front, in a fixed order: recording
/// indexes a slice instead of hashing a label set under a lock (what
/// [`Family`] does), and every series is exposed from the start, at zero.
#[derive(Debug, Clone)]
struct Fixed<L, M> {
    series: Arc<[(L, M)]>,
}

impl<L, M: Default> Fixed<L, M> {
    fn new(labels: impl Iterator<Item = L>) -> Self {
        Fixed { series: labels.map(|l| (l, M::default())).collect() }
    }

    fn get(&self, i: usize) -> &M {
        &self.series[i].1
    }
}

impl<L: EncodeLabelSet + fmt::Debug, M: EncodeMetric + TypedMetric + fmt::Debug> EncodeMetric for Fixed<L, M> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        for (labels, metric) in self.series.iter() {
            metric.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }
}

/// Latency buckets, seconds: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Cursor lag buckets, events behind the head.
const LAG_BUCKETS: &[f64] = &[0.0, 1.0, 10.0, 100.0, 1_000.0, 10_000.0, 100_000.0, 1_000_000.0];

/// A histogram with fixed upper bounds, recorded with atomics only.
#[derive(Debug, Clone)]
struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// One count per bound, plus one for +Inf; not cumulative (the encoder sums them).
    counts: Box<[AtomicU64]>,
    /// Sum of observations, in millionths of the unit: an integer, so one atomic add.
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram(Arc::new(HistogramInner {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }))
    }

    fn observe(&self, value: f64) {
        let h = &*self.0;
        let i = h.bounds.iter().position(|b| value <= *b).unwrap_or(h.bounds.len());
        h.counts[i].fetch_add(1, Ordering::Relaxed);
        h.sum_micros.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let h = &*self.0;
        // Each count is read once, so the buckets, +Inf and the count agree even while
        // observations land; the sum may be a little ahead of them, as in any client.
        let mut buckets: Vec<(f64, u64)> = h.bounds.iter().map(|b| (*b, 0)).collect();
        buckets.push((f64::INFINITY, 0));
        for (bucket, count) in buckets.iter_mut().zip(h.counts.iter()) {
            bucket.1 = count.load(Ordering::Relaxed);
        }
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A gauge of a value owned elsewhere, set from a [`Snapshot`] when scraped.
type ScrapeGauge = Gauge<u64, AtomicU64>;

/// Process-wide metrics; one instance, shared by handle.
pub struct Metrics {
    /// Holds a handle to every metric below (they share their atomics), in the order
    /// they are exposed.
    registry: Registry,
    connections: Fixed<TransportLabels, Gauge>,
    subscribers: Gauge,
    ingested: Fixed<TypeLabels, Counter>,
    delivered: Fixed<TypeLabels, Counter>,
    ingest_latency: Histogram,
    fanout_latency: Histogram,
    cursor_lag: Histogram,
    /// Refusals by error code. A `Family`: codes are many and each is counted once it
    /// happens; a refusal is off the hot paths, so its lookup under a lock costs nothing
    /// that matters.
    rejected: Family<RejectedLabels, Counter>,
    /// Per webhook, while this node delivers it: a `Family`, as webhooks come and go;
    /// one delivery is far off any hot path.
    webhook_deliveries: Family<WebhookLabels, Counter>,
    webhook_failures: Family<WebhookLabels, Counter>,
    webhook_lag: Family<WebhookLabels, ScrapeGauge>,
    open_connections: ScrapeGauge,
    writer_queue_events: ScrapeGauge,
    inflight_body_bytes: ScrapeGauge,
    head_seq: ScrapeGauge,
    oldest_seq: ScrapeGauge,
    search_lag: ScrapeGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Registry::default(),
            connections: Fixed::new(Transport::ALL.into_iter().map(|transport| TransportLabels { transport })),
            subscribers: Gauge::default(),
            ingested: Fixed::new(EventType::all().map(|r#type| TypeLabels { r#type })),
            delivered: Fixed::new(EventType::all().map(|r#type| TypeLabels { r#type })),
            ingest_latency: Histogram::new(LATENCY_BUCKETS),
            fanout_latency: Histogram::new(LATENCY_BUCKETS),
            cursor_lag: Histogram::new(LAG_BUCKETS),
            rejected: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_failures: Family::default(),
            webhook_lag: Family::default(),
            open_connections: ScrapeGauge::default(),
            writer_queue_events: ScrapeGauge::default(),
            inflight_body_bytes: ScrapeGauge::default(),
            head_seq: ScrapeGauge::default(),
            oldest_seq: ScrapeGauge::default(),
            search_lag: ScrapeGauge::default(),
        };
        metrics.registered()
    }
}

/// Counts one open streaming connection until dropped.
pub struct ConnectionGuard {
    metrics: Arc<Metrics>,
    transport: Transport,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.connections.get(self.transport as usize).dec();
    }
}

/// Counts one live subscription until dropped.
pub struct SubscriberGuard(Arc<Metrics>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.dec();
    }
}

/// Values read from other parts at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Snapshot {
    pub head: u64,
    pub oldest: u64,
    pub writer_queue_events: usize,
    pub open_connections: u32,
    /// Bytes of request bodies being received, against `--max-inflight-body-bytes`.
    pub inflight_body_bytes: usize,
    /// Committed events a search cannot find yet.
    pub search_lag: u64,
}

impl Metrics {
    /// Registers a handle to each metric. Help texts go without their final full stop:
    /// the registry adds it. Counters go without `_total`: the encoder adds it.
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register("swarmfeed_connections", "Open streaming connections by transport", self.connections.clone());
        r.register("swarmfeed_subscribers", "Live subscriptions (WebSocket and SSE)", self.subscribers.clone());
        r.register("swarmfeed_open_connections", "Open TCP connections", self.open_connections.clone());
        r.register("swarmfeed_writer_queue_events", "Events waiting for the writer", self.writer_queue_events.clone());
        r.register(
            "swarmfeed_inflight_body_bytes",
            "Bytes of request bodies being received, against the in-flight budget",
            self.inflight_body_bytes.clone(),
        );
        r.register("swarmfeed_head_seq", "Seq of the last committed event", self.head_seq.clone());
        r.register("swarmfeed_oldest_seq", "Oldest retained seq", self.oldest_seq.clone());
        r.register(
            "swarmfeed_search_lag_events",
            "Committed events the search index has not taken in yet",
            self.search_lag.clone(),
        );
        r.register("swarmfeed_events_ingested", "Events committed, by type", self.ingested.clone());
        r.register("swarmfeed_events_delivered", "Events sent to viewers, by type", self.delivered.clone());
        r.register(
            "swarmfeed_ingest_latency_seconds",
            "From an ingest request's arrival to its commit",
            self.ingest_latency.clone(),
        );
        r.register(
            "swarmfeed_fanout_latency_seconds",
            "From an event's commit to a frame carrying it being sent",
            self.fanout_latency.clone(),
        );
        r.register(
            "swarmfeed_cursor_lag_events",
            "How far behind the head a viewer's cursor was when a frame went",
            self.cursor_lag.clone(),
        );
        r.register("swarmfeed_rejected", "Requests and connections refused, by reason", self.rejected.clone());
        r.register(
            "swarmfeed_webhook_deliveries",
            "Webhook deliveries the receiver took (2xx), by webhook",
            self.webhook_deliveries.clone(),
        );
        r.register(
            "swarmfeed_webhook_failures",
            "Webhook delivery attempts that failed, by webhook",
            self.webhook_failures.clone(),
        );
        r.register(
            "swarmfeed_webhook_lag_events",
            "Events committed after each webhook's position, on the node delivering it",
            self.webhook_lag.clone(),
        );
        self
    }

    pub fn connection(self: &Arc<Self>, transport: Transport) -> ConnectionGuard {
        self.connections.get(transport as usize).inc();
        ConnectionGuard { metrics: Arc::clone(self), transport }
    }

    pub fn subscriber(self: &Arc<Self>) -> SubscriberGuard {
        self.subscribers.inc();
        SubscriberGuard(Arc::clone(self))
    }

    /// Events just committed.
    pub fn ingested(&self, events: &[Arc<Event>]) {
        for e in events {
            self.ingested.get(EventType::of(e).0).inc();
        }
    }

    /// A frame of `events` sent to one viewer whose cursor is `lag` events behind the
    /// head; its latency is taken from the newest event's commit time.
    pub fn delivered(&self, events: &[Arc<Event>], lag: u64) {
        for e in events {
            self.delivered.get(EventType::of(e).0).inc();
        }
        if let Some(newest) = events.last() {
            let ms = chrono::Utc::now().timestamp_millis() - newest.ts_ms;
            self.fanout_latency.observe(ms.max(0) as f64 / 1000.0);
        }
        self.cursor_lag.observe(lag as f64);
    }

    /// An ingest request took `elapsed` from arrival to its commit.
    pub(crate) fn ingest_latency(&self, elapsed: Duration) {
        self.ingest_latency.observe(elapsed.as_secs_f64());
    }

    /// A request or connection was refused with `code`.
    pub(crate) fn rejected(&self, code: &'static str) {
        self.rejected.get_or_create(&RejectedLabels { reason: code }).inc();
    }

    /// A webhook delivery the receiver took.
    pub(crate) fn webhook_delivered(&self, webhook: &str) {
        self.webhook_deliveries.get_or_create(&WebhookLabels { webhook: webhook.to_owned() }).inc();
    }

    /// A webhook delivery attempt failed.
    pub(crate) fn webhook_failed(&self, webhook: &str) {
        self.webhook_failures.get_or_create(&WebhookLabels { webhook: webhook.to_owned() }).inc();
    }

    /// A webhook was deleted: its series go.
    pub(crate) fn webhook_removed(&self, webhook: &str) {
        let labels = WebhookLabels { webhook: webhook.to_owned() };
        self.webhook_deliveries.remove(&labels);
        self.webhook_failures.remove(&labels);
        self.webhook_lag.remove(&labels);
    }

    /// Sets each delivered webhook's lag from its position, at scrape time; webhooks
    /// this node no longer delivers lose their lag series.
    pub(crate) fn webhook_lags(&self, head: u64, positions: &[(String, u64)]) {
        self.webhook_lag.clear();
        for (webhook, position) in positions {
            let labels = WebhookLabels { webhook: webhook.clone() };
            self.webhook_lag.get_or_create(&labels).set(head.saturating_sub(*position));
        }
    }

    /// The Prometheus text exposition, with `now`'s values for the gauges owned
    /// elsewhere.
    pub(crate) fn render(&self, now: Snapshot) -> String {
        // Two scrapes at once may each expose the other's snapshot: both are as fresh.
        self.open_connections.set(u64::from(now.open_connections));
        self.writer_queue_events.set(now.writer_queue_events as u64);
        self.inflight_body_bytes.set(now.inflight_body_bytes as u64);
        self.head_seq.set(now.head);
        self.oldest_seq.set(now.oldest);
        self.search_lag.set(now.search_lag);
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail, and no metric here returns an error.
        prometheus_text::encode(&mut out, &self.registry).expect("metrics encode into a String");
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
        let text = m.render(Snapshot { head: 9, inflight_body_bytes: 512, ..Snapshot::default() });
        for line in [
            "swarmfeed_connections{transport=\"ws\"} 1",
            "swarmfeed_connections{transport=\"ws_html\"} 0",
            "swarmfeed_connections{transport=\"sse\"} 0",
            "swarmfeed_events_ingested_total{type=\"task.created\"} 1",
            "swarmfeed_events_ingested_total{type=\"other\"} 2",
            "swarmfeed_events_delivered_total{type=\"task.created\"} 1",
            "swarmfeed_ingest_latency_seconds_bucket{le=\"0.0025\"} 0",
            "swarmfeed_ingest_latency_seconds_bucket{le=\"0.005\"} 1",
            "swarmfeed_ingest_latency_seconds_bucket{le=\"+Inf\"} 1",
            "swarmfeed_ingest_latency_seconds_count 1",
            "swarmfeed_ingest_latency_seconds_sum 0.003",
            "swarmfeed_cursor_lag_events_bucket{le=\"1\"} 0",
            "swarmfeed_cursor_lag_events_bucket{le=\"10\"} 1",
            "swarmfeed_rejected_total{reason=\"rate_limited\"} 2",
            "swarmfeed_head_seq 9",
            "swarmfeed_inflight_body_bytes 512",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        let others = text.lines().filter(|l| l.starts_with("swarmfeed_events_ingested_total{")).count();
        assert_eq!(others, KNOWN_TYPES.len() + 1, "unknown types share one series");
    }

    #[test]
    fn every_family_keeps_its_name_type_and_help() {
        let m = Arc::new(Metrics::default());
        m.rejected("unauthorized");
        m.webhook_delivered("wh_1");
        m.webhook_failed("wh_1");
        m.webhook_lags(5, &[("wh_1".into(), 2)]);
        let text = m.render(Snapshot::default());
        let declared: Vec<&str> = text.lines().filter(|l| l.starts_with("# ")).collect();
        assert_eq!(
            declared,
            [
                "# HELP swarmfeed_connections Open streaming connections by transport.",
                "# TYPE swarmfeed_connections gauge",
                "# HELP swarmfeed_subscribers Live subscriptions (WebSocket and SSE).",
                "# TYPE swarmfeed_subscribers gauge",
                "# HELP swarmfeed_open_connections Open TCP connections.",
                "# TYPE swarmfeed_open_connections gauge",
                "# HELP swarmfeed_writer_queue_events Events waiting for the writer.",
                "# TYPE swarmfeed_writer_queue_events gauge",
                "# HELP swarmfeed_inflight_body_bytes Bytes of request bodies being received, against the in-flight budget.",
                "# TYPE swarmfeed_inflight_body_bytes gauge",
                "# HELP swarmfeed_head_seq Seq of the last committed event.",
                "# TYPE swarmfeed_head_seq gauge",
                "# HELP swarmfeed_oldest_seq Oldest retained seq.",
                "# TYPE swarmfeed_oldest_seq gauge",
                "# HELP swarmfeed_search_lag_events Committed events the search index has not taken in yet.",
                "# TYPE swarmfeed_search_lag_events gauge",
                "# HELP swarmfeed_events_ingested_total Events committed, by type.",
                "# TYPE swarmfeed_events_ingested_total counter",
                "# HELP swarmfeed_events_delivered_total Events sent to viewers, by type.",
                "# TYPE swarmfeed_events_delivered_total counter",
                "# HELP swarmfeed_ingest_latency_seconds From an ingest request's arrival to its commit.",
                "# TYPE swarmfeed_ingest_latency_seconds histogram",
                "# HELP swarmfeed_fanout_latency_seconds From an event's commit to a frame carrying it being sent.",
                "# TYPE swarmfeed_fanout_latency_seconds histogram",
                "# HELP swarmfeed_cursor_lag_events How far behind the head a viewer's cursor was when a frame went.",
                "# TYPE swarmfeed_cursor_lag_events histogram",
                "# HELP swarmfeed_rejected_total Requests and connections refused, by reason.",
                "# TYPE swarmfeed_rejected_total counter",
                "# HELP swarmfeed_webhook_deliveries_total Webhook deliveries the receiver took (2xx), by webhook.",
                "# TYPE swarmfeed_webhook_deliveries_total counter",
                "# HELP swarmfeed_webhook_failures_total Webhook delivery attempts that failed, by webhook.",
                "# TYPE swarmfeed_webhook_failures_total counter",
                "# HELP swarmfeed_webhook_lag_events Events committed after each webhook's position, on the node delivering it.",
                "# TYPE swarmfeed_webhook_lag_events gauge",
            ]
        );
    }

    #[test]
    fn webhook_series_are_per_webhook_and_go_with_it() {
        let m = Metrics::default();
        m.webhook_delivered("wh_a");
        m.webhook_delivered("wh_a");
        m.webhook_failed("wh_b");
        m.webhook_lags(10, &[("wh_a".into(), 7), ("wh_b".into(), 12)]);
        let text = m.render(Snapshot::default());
        for line in [
            "swarmfeed_webhook_deliveries_total{webhook=\"wh_a\"} 2",
            "swarmfeed_webhook_failures_total{webhook=\"wh_b\"} 1",
            "swarmfeed_webhook_lag_events{webhook=\"wh_a\"} 3",
            "swarmfeed_webhook_lag_events{webhook=\"wh_b\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        m.webhook_removed("wh_a");
        m.webhook_lags(10, &[("wh_b".into(), 12)]);
        let text = m.render(Snapshot::default());
        assert!(!text.contains("wh_a"), "{text}");
    }

    #[test]
    fn histograms_keep_their_buckets() {
        let text = Metrics::default().render(Snapshot::default());
        let bounds = |name: &str| -> Vec<String> {
            let prefix = format!("{name}_bucket{{le=\"");
            text.lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
                .collect()
        };
        let latency = [
            "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
            "+Inf",
        ];
        assert_eq!(bounds("swarmfeed_ingest_latency_seconds"), latency);
        assert_eq!(bounds("swarmfeed_fanout_latency_seconds"), latency);
        // 1e6 is written the way Prometheus's own Go client writes it.
        let lag = ["0", "1", "10", "100", "1000", "10000", "100000", "1e+06", "+Inf"];
        assert_eq!(bounds("swarmfeed_cursor_lag_events"), lag);
    }

    #[test]
    fn an_observation_lands_in_the_first_bucket_that_holds_it_and_past_the_last_in_inf() {
        let m = Metrics::default();
        m.delivered(&[], 0);
        m.delivered(&[], 10);
        m.delivered(&[], 2_000_000);
        let text = m.render(Snapshot::default());
        for line in [
            "swarmfeed_cursor_lag_events_bucket{le=\"0\"} 1",
            "swarmfeed_cursor_lag_events_bucket{le=\"1\"} 1",
            "swarmfeed_cursor_lag_events_bucket{le=\"10\"} 2",
            "swarmfeed_cursor_lag_events_bucket{le=\"1e+06\"} 2",
            "swarmfeed_cursor_lag_events_bucket{le=\"+Inf\"} 3",
            "swarmfeed_cursor_lag_events_count 3",
            "swarmfeed_cursor_lag_events_sum 2000010.0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn guards_give_their_count_back_when_dropped() {
        let m = Arc::new(Metrics::default());
        let a = m.subscriber();
        let b = m.subscriber();
        let poll = m.connection(Transport::Poll);
        let text = m.render(Snapshot::default());
        assert!(text.lines().any(|l| l == "swarmfeed_subscribers 2"), "{text}");
        assert!(text.lines().any(|l| l == "swarmfeed_connections{transport=\"poll\"} 1"), "{text}");
        drop((a, b, poll));
        let text = m.render(Snapshot::default());
        assert!(text.lines().any(|l| l == "swarmfeed_subscribers 0"), "{text}");
        assert!(text.lines().any(|l| l == "swarmfeed_connections{transport=\"poll\"} 0"), "{text}");
    }
}
