//! One WebSocket subscription to `/ws`, and what it saw.
//!
//! [`subscribe`] connects and subscribes, live or after a `since`, returning the head
//! the server reported. [`listen`] then reads frames until told to stop, and checks the
//! stream against the protocol's guarantees: every seq it receives is marked in a
//! bitmap (a second mark is a duplicate, a seq not above the last one is out of
//! order), and every event stamped with `data.sent_ns` adds its latency to a shared
//! [`Sink`]. Which published seqs never arrived (lost) is decided by the caller, which
//! knows what was published, after the drain. `event` and `batch` frames, a hundred
//! thousand a second or a burst's large ones, are read by search rather than parsed
//! (see [`on_events`]).
//!
//! Memory per subscriber is a small read buffer plus one bit per seq after its head.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use memchr::memmem::Finder;
use serde::Deserialize;
use serde_json::value::RawValue;
use swarmfeed::event::parse_timestamp;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::{report, wire};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Client read buffer per connection. tungstenite allocates it eagerly (128 KiB by
/// default), so with thousands of connections it is most of the harness's memory;
/// frames of single events are a few hundred bytes.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// How long one subscriber may take to connect and subscribe.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often [`Sink::drained`] looks at the count.
const DRAIN_POLL: Duration = Duration::from_millis(2);
/// How long a polite close may take when the run ends.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Wall-clock nanoseconds since the Unix epoch: the clock `data.sent_ns` is stamped
/// with, shared with the server's commit timestamps since both run on this machine.
pub fn unix_nanos() -> u64 {
    // A clock before 1970 is a broken machine; 0 makes its latencies absurd, not a panic.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Connects to `url` and subscribes to everything: live, or after `since`. Returns the
/// socket and the head the server reported in `subscribed`.
///
/// # Errors
/// The connection, handshake or subscription failed or took longer than `timeout`.
pub async fn subscribe(url: &str, since: Option<u64>, timeout: Duration) -> anyhow::Result<(Ws, u64)> {
    let attempt = async {
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_BYTES).write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .with_context(|| format!("WebSocket handshake with {url} (a 401 means the server needs --no-auth)"))?;
        let head = subscribe_on(&mut ws, since).await?;
        Ok((ws, head))
    };
    tokio::time::timeout(timeout, attempt).await.with_context(|| format!("no subscription within {timeout:?}"))?
}

/// Subscribes an open WebSocket to everything, live or after `since`, and reads the
/// reply; returns the head the server reported in `subscribed`.
///
/// # Errors
/// The subscribe could not be sent, or the reply was not `subscribed`.
pub async fn subscribe_on<S>(ws: &mut WebSocketStream<S>, since: Option<u64>) -> anyhow::Result<u64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(wire::subscribe_request(since))).await.context("sending subscribe")?;
    // Only `subscribed` can come first: nothing is delivered before the cursor exists.
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return wire::subscribed_head(t.as_bytes()),
            Some(Ok(Message::Close(c))) => anyhow::bail!("closed while subscribing: {c:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading the reply to subscribe"),
            None => anyhow::bail!("connection ended while subscribing"),
        }
    }
}

/// Opens `count` connections with `connect`, `ramp` at a time, the next wave once this
/// one is open, and hands each to `opened`. Returns how many could not connect, after
/// saying on stderr why the first did not.
///
/// # Errors
/// A connecting task panicked, or `opened` failed.
pub async fn open_waves<T, Connect, Opening>(
    count: u64,
    ramp: u64,
    connect: Connect,
    mut opened: impl FnMut(T) -> anyhow::Result<()>,
) -> anyhow::Result<u64>
where
    T: Send + 'static,
    Connect: Fn() -> Opening,
    Opening: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let (mut failed, mut first_error) = (0u64, None);
    let mut done = 0;
    while done < count {
        let wave = ramp.max(1).min(count - done);
        let mut connecting = tokio::task::JoinSet::new();
        for _ in 0..wave {
            connecting.spawn(connect());
        }
        while let Some(result) = connecting.join_next().await {
            match result.context("a connecting task panicked")? {
                Ok(connection) => opened(connection)?,
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        done += wave;
    }
    if let Some(e) = first_error {
        eprintln!("warning: {failed} of {count} subscriptions failed; the first: {e}");
    }
    Ok(failed)
}

/// A frame as the harness reads it: only what it checks.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Delivered<'a> {
    seq: u64,
    #[serde(borrow)]
    timestamp: &'a str,
    data: Option<Stamp>,
}

#[derive(Deserialize)]
struct Stamp {
    sent_ns: Option<u64>,
}

/// Latencies of one shard of subscribers.
pub struct Latencies {
    /// Receive time − `data.sent_ns` (set by the publisher just before its POST).
    pub from_send: Histogram<u64>,
    /// Receive time − the event's `timestamp` (the server's commit time, whole ms).
    pub from_commit: Histogram<u64>,
}

/// What all subscribers of a run add to.
pub struct Sink {
    /// Sharded so a thousand subscribers on a few threads rarely meet on one lock.
    /// Std mutexes: held to record one frame's values, never across an await.
    shards: Vec<Mutex<Latencies>>,
    /// Stamped events delivered, all subscribers together: the drain waits for it.
    pub delivered: AtomicU64,
    /// Every event delivered, stamped or not.
    pub received: AtomicU64,
    /// Unix ns of the last stamped delivery.
    pub last_delivery_ns: AtomicU64,
}

impl Sink {
    pub fn new(shards: usize) -> Self {
        let latencies = || Mutex::new(Latencies { from_send: report::histogram(), from_commit: report::histogram() });
        Sink {
            shards: (0..shards.max(1)).map(|_| latencies()).collect(),
            delivered: AtomicU64::new(0),
            received: AtomicU64::new(0),
            last_delivery_ns: AtomicU64::new(0),
        }
    }

    /// Counts a frame's `received` events, `stamped` of them with `data.sent_ns`,
    /// arrived at `now_ns`.
    fn count(&self, received: usize, stamped: u64, now_ns: u64) {
        self.received.fetch_add(received as u64, Ordering::Relaxed);
        if stamped > 0 {
            self.delivered.fetch_add(stamped, Ordering::Relaxed);
            self.last_delivery_ns.fetch_max(now_ns, Ordering::Relaxed);
        }
    }

    /// Waits until `expected` stamped events have been delivered, or `wait` has passed;
    /// whether they were.
    pub async fn drained(&self, expected: u64, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while self.delivered.load(Ordering::Relaxed) < expected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        self.delivered.load(Ordering::Relaxed) >= expected
    }

    /// Every shard merged.
    pub fn merged(&self) -> Latencies {
        let mut all = Latencies { from_send: report::histogram(), from_commit: report::histogram() };
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds everywhere, so adding cannot go out of range.
            all.from_send.add(&shard.from_send).expect("same histogram bounds");
            all.from_commit.add(&shard.from_commit).expect("same histogram bounds");
        }
        all
    }
}

/// The seqs one subscription received, and what was wrong with them.
#[derive(Debug)]
pub struct Seen {
    /// The first seq this subscription can expect: its head at subscribe + 1.
    base: u64,
    /// Bit `seq - base` is set once `seq` has arrived; grows as seqs do, up to `span`.
    bits: Vec<u64>,
    /// Seqs tracked past `base`; anything further is counted in `untracked`.
    span: u64,
    last: u64,
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub untracked: u64,
    pub resets: u64,
    pub errors: u64,
    /// The connection ended before the run did.
    pub closed_early: bool,
}

impl Seen {
    pub fn new(head: u64, span: u64) -> Self {
        Seen {
            base: head + 1,
            bits: Vec::new(),
            span,
            last: head,
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            untracked: 0,
            resets: 0,
            errors: 0,
            closed_early: false,
        }
    }

    pub fn mark(&mut self, seq: u64) {
        self.received += 1;
        let mut duplicate = false;
        if seq >= self.base && seq - self.base < self.span {
            let i = (seq - self.base) as usize;
            if self.bits.len() <= i / 64 {
                self.bits.resize(i / 64 + 1, 0);
            }
            let bit = 1u64 << (i % 64);
            duplicate = self.bits[i / 64] & bit != 0;
            self.bits[i / 64] |= bit;
        } else {
            self.untracked += 1;
        }
        // A duplicate is counted once, as a duplicate, not also as out of order.
        if duplicate {
            self.duplicates += 1;
        } else if seq <= self.last {
            self.out_of_order += 1;
        }
        self.last = self.last.max(seq);
    }

    /// Whether this subscription must receive `seq`: it was committed after it subscribed.
    pub fn expects(&self, seq: u64) -> bool {
        seq >= self.base
    }

    pub fn has(&self, seq: u64) -> bool {
        let Some(i) = seq.checked_sub(self.base) else { return false };
        self.bits.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// Reads frames until `stop`, recording into `seen` and `sink`.
pub async fn listen(mut ws: Ws, mut seen: Seen, sink: Arc<Sink>, shard: usize, stop: CancellationToken) -> Seen {
    let shard = shard % sink.shards.len();
    // Made once, on a child token: a `cancelled()` made afresh for every frame would
    // register with, and leave, the one `Notify` all subscribers share, under its lock.
    let stopped = stop.child_token().cancelled_owned();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => break,
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    // Stamp before parsing: the parse is the harness's cost, not the server's.
                    let now_ns = unix_nanos();
                    on_frame(text.as_bytes(), now_ns, &mut seen, &sink, shard);
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    seen.closed_early = true;
                    return seen;
                }
                Some(Ok(_)) => {}
            }
        }
    }
    // Best effort, and bounded: the figures are already taken.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
    seen
}

/// How every `batch` frame of the server begins; its events follow.
const BATCH_PREFIX: &[u8] = br#"{"type":"batch","payload":["#;
/// How every `event` frame of the server begins; its one event follows.
const EVENT_PREFIX: &[u8] = br#"{"type":"event","payload":"#;
/// How each event object in a frame begins: the server writes `seq` first.
const EVENT_START: &[u8] = br#"{"seq":"#;
const TIMESTAMP_KEY: &[u8] = br#""timestamp":""#;
const SENT_NS_KEY: &[u8] = br#""sent_ns":"#;

/// Searchers for the keys above, built once: building one for each search was 2 % of
/// the harness's CPU at 10 000 subscribers.
static EVENT_STARTS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(EVENT_START));
static TIMESTAMPS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(TIMESTAMP_KEY));
static SENT_NS: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(SENT_NS_KEY));

/// Checks one text frame received at `now_ns`.
pub fn on_frame(text: &[u8], now_ns: u64, seen: &mut Seen, sink: &Sink, shard: usize) {
    if let Some(events) = text.strip_prefix(BATCH_PREFIX).or_else(|| text.strip_prefix(EVENT_PREFIX)) {
        return on_events(events, now_ns, seen, sink, shard);
    }
    let Ok(frame) = serde_json::from_slice::<Frame<'_>>(text) else {
        seen.errors += 1;
        return;
    };
    let parsed = match (frame.kind, frame.payload) {
        ("event", Some(p)) => serde_json::from_str(p.get()).map(|e| vec![e]),
        // A batch the fast path did not recognise: parse it in full.
        ("batch", Some(p)) => serde_json::from_str(p.get()),
        ("reset", _) => {
            seen.resets += 1;
            return;
        }
        ("error", _) => {
            seen.errors += 1;
            return;
        }
        _ => return,
    };
    let Ok(events): Result<Vec<Delivered<'_>>, _> = parsed else {
        seen.errors += 1;
        return;
    };
    let mut stamped = 0;
    // Poisoned only if a recording thread panicked; a histogram stays usable.
    let mut latencies = sink.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
    for e in &events {
        seen.mark(e.seq);
        let Some(sent_ns) = e.data.as_ref().and_then(|d| d.sent_ns) else { continue };
        stamped += 1;
        record(&mut latencies, now_ns, sent_ns, parse_timestamp(e.timestamp));
    }
    drop(latencies);
    sink.count(events.len(), stamped, now_ns);
}

/// The events of an `event` or `batch` frame, read without parsing the JSON. At a
/// burst of 10 000 events/s to 1 000 subscribers the harness has ten million events a
/// second to check on the cores the server also uses, and at 10 000 subscribers a
/// hundred thousand frames; a full parse costs about a microsecond an event.
/// The server writes each event object with `seq` first (`Event::encode`), so
/// `{"seq":` opens every one, and its `"timestamp":"` and `data.sent_ns` are found by
/// search within it. Data holding an object whose first key is `seq` would be taken for
/// an event: the harness's own events never hold one.
fn on_events(events: &[u8], now_ns: u64, seen: &mut Seen, sink: &Sink, shard: usize) {
    let starts: Vec<usize> = EVENT_STARTS.find_iter(events).collect();
    if starts.first() != Some(&0) {
        seen.errors += 1;
        return;
    }
    let (mut stamped, mut last_timestamp, mut commit_ms) = (0, &b""[..], None);
    // Poisoned only if a recording thread panicked; a histogram stays usable.
    let mut latencies = sink.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
    for (i, &start) in starts.iter().enumerate() {
        let event = &events[start..starts.get(i + 1).copied().unwrap_or(events.len())];
        let Some(seq) = leading_u64(&event[EVENT_START.len()..]) else {
            seen.errors += 1;
            continue;
        };
        seen.mark(seq);
        let Some(sent_ns) = value_after(event, &SENT_NS).and_then(leading_u64) else { continue };
        // The events of one commit share a timestamp: parse it once.
        let timestamp = value_after(event, &TIMESTAMPS)
            .map_or(&b""[..], |t| &t[..t.iter().position(|&b| b == b'"').unwrap_or(t.len())]);
        if timestamp != last_timestamp {
            last_timestamp = timestamp;
            commit_ms = std::str::from_utf8(timestamp).ok().and_then(parse_timestamp);
        }
        stamped += 1;
        record(&mut latencies, now_ns, sent_ns, commit_ms);
    }
    drop(latencies);
    sink.count(starts.len(), stamped, now_ns);
}

/// Checks messages of another server's protocol that arrived at `now_ns`, each a seq
/// and the wall-clock ns it was sent at: the checks and the latency from send of
/// [`on_frame`], without a commit time (no such server commits).
pub fn on_messages(messages: &[(u64, u64)], now_ns: u64, seen: &mut Seen, sink: &Sink, shard: usize) {
    if messages.is_empty() {
        return;
    }
    // Poisoned only if a recording thread panicked; a histogram stays usable.
    let mut latencies = sink.shards[shard].lock().unwrap_or_else(|p| p.into_inner());
    for &(seq, sent_ns) in messages {
        seen.mark(seq);
        record(&mut latencies, now_ns, sent_ns, None);
    }
    drop(latencies);
    sink.count(messages.len(), messages.len() as u64, now_ns);
}

fn record(latencies: &mut Latencies, now_ns: u64, sent_ns: u64, commit_ms: Option<i64>) {
    latencies.from_send.saturating_record(now_ns.saturating_sub(sent_ns) / 1000);
    if let Some(commit_ms) = commit_ms {
        latencies.from_commit.saturating_record((now_ns / 1000).saturating_sub(commit_ms.max(0) as u64 * 1000));
    }
}

/// What follows the first occurrence of `key`'s needle in `haystack`.
fn value_after<'a>(haystack: &'a [u8], key: &Finder<'_>) -> Option<&'a [u8]> {
    key.find(haystack).map(|at| &haystack[at + key.needle().len()..])
}

/// The unsigned integer `bytes` begin with.
pub fn leading_u64(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_gaps_and_disorder_are_told_apart() {
        let mut seen = Seen::new(10, 100);
        for seq in [11, 12, 12, 14, 13, 500] {
            seen.mark(seq);
        }
        assert_eq!((seen.received, seen.duplicates, seen.out_of_order, seen.untracked), (6, 1, 1, 1));
        assert!(seen.has(11) && seen.has(13) && seen.has(14) && !seen.has(15) && !seen.has(10));
        assert!(!seen.expects(10) && seen.expects(11));
    }

    #[test]
    fn frames_record_latency_only_for_stamped_events() {
        let sink = Sink::new(1);
        let mut seen = Seen::new(0, 100);
        let now = unix_nanos();
        let event = |seq, data: &str| {
            format!(
                r#"{{"seq":{seq},"id":"x","event_type":"a.b","source":"s","timestamp":"2026-11-25T00:00:00.000Z","data":{data}}}"#
            )
        };
        let single =
            format!(r#"{{"type":"event","payload":{}}}"#, event(1, &format!(r#"{{"sent_ns":{}}}"#, now - 2_000_000)));
        let batch = format!(r#"{{"type":"batch","payload":[{},{}]}}"#, event(2, "{}"), event(3, r#"{"sent_ns":1}"#));
        on_frame(single.as_bytes(), now, &mut seen, &sink, 0);
        on_frame(batch.as_bytes(), now, &mut seen, &sink, 0);
        on_frame(br#"{"type":"reset","oldest":9}"#, now, &mut seen, &sink, 0);
        assert_eq!(sink.delivered.load(Ordering::Relaxed), 2);
        assert_eq!((seen.received, seen.resets), (3, 1));
        let l = sink.merged();
        assert_eq!(l.from_send.len(), 2);
        assert!((l.from_send.min() as i64 - 2000).abs() < 5, "{}", l.from_send.min());
    }

    #[test]
    fn the_batch_search_reads_what_a_full_parse_reads() {
        let now = unix_nanos();
        let event = |seq: u64, sent: u64, ts: &str| {
            format!(
                r#"{{"seq":{seq},"id":"x{seq}","event_type":"bench.tick","source":"s","task_id":"t","timestamp":"{ts}","data":{{"sent_ns":{sent},"i":{seq}}}}}"#
            )
        };
        let events = [
            event(5, now - 3_000_000, "2026-11-25T00:00:00.000Z"),
            event(6, now - 2_000_000, "2026-11-25T00:00:00.000Z"),
            event(6, now - 1_000_000, "2026-11-25T00:00:01.500Z"),
            r#"{"seq":8,"id":"y","event_type":"a.b","source":"s","timestamp":"2026-11-25T00:00:02.000Z","data":{}}"#
                .to_owned(),
        ]
        .join(",");
        let run = |frame: &str| {
            let sink = Sink::new(1);
            let mut seen = Seen::new(4, 100);
            on_frame(frame.as_bytes(), now, &mut seen, &sink, 0);
            let l = sink.merged();
            let summary = (seen.received, seen.duplicates, seen.errors, sink.received.load(Ordering::Relaxed));
            (summary, sink.delivered.load(Ordering::Relaxed), l.from_send.max(), l.from_commit.max(), seen.has(8))
        };
        let searched = run(&format!(r#"{{"type":"batch","payload":[{events}]}}"#));
        // A space after the colon misses the prefix: the frame is parsed in full instead.
        let parsed = run(&format!(r#"{{"type": "batch","payload":[{events}]}}"#));
        assert_eq!(searched, parsed);
        assert_eq!(searched.0, (4, 1, 0, 4));
        assert_eq!(searched.1, 3);
        let one = event(9, now - 4_000_000, "2026-11-25T00:00:03.000Z");
        let searched = run(&format!(r#"{{"type":"event","payload":{one}}}"#));
        let parsed = run(&format!(r#"{{"type": "event","payload":{one}}}"#));
        assert_eq!(searched, parsed);
        assert_eq!((searched.0, searched.1), ((1, 0, 0, 1), 1));
    }
}
