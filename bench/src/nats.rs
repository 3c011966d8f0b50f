//! Just enough of the NATS client protocol to load a nats-server the way `fanout`
//! loads swarmfeed, for the side-by-side modes.
//!
//! - [`subscribe`]: a WebSocket subscriber (the handshake of [`wire`]), which sends
//!   `CONNECT`, `SUB` and `PING` in one frame and waits for the `PONG` that says the
//!   subscription is in place; the socket then goes to the reader threads.
//! - [`Decoder`]: on a reader thread, the NATS byte stream carried in a connection's
//!   WebSocket frames (nats-server frames whatever its write buffer holds, so one
//!   frame may carry many `MSG`s or part of one): `MSG`s are checked like swarmfeed's
//!   events, a `PING` is answered.
//! - [`publish`]: a plain TCP client that `PUB`s stamped payloads at the plan's rate and
//!   ends with `PING`, whose `PONG` says every `PUB` before it was taken.
//!
//! A payload is `{"seq":N,"sent_ns":T,"pad":"…"}`: the harness numbers the messages,
//! since NATS assigns no seq, with the same padding the swarmfeed side puts in `data`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use memchr::memmem;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};

use crate::fanout::Plan;
use crate::subscriber::{self, Seen, Sink};
use crate::wire::{self, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, Subscribed};

/// The subject every message of a run goes to.
pub const SUBJECT: &str = "bench.fanout";
/// The most protocol bytes a connection keeps waiting for the rest of a message: a
/// run's messages are a few hundred bytes.
const MAX_PENDING_BYTES: usize = 4 << 20;
/// Longest the publisher waits for the server's `INFO` and for the final `PONG`.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one protocol line the publisher reads (`INFO` is about 300 bytes).
const MAX_LINE_BYTES: u64 = 64 * 1024;
/// What a client says first: no `+OK` after every command, no checks.
const CONNECT: &str =
    r#"CONNECT {"verbose":false,"pedantic":false,"lang":"swarmfeed-bench","version":"0.1","protocol":1}"#;

/// What makes a connection's NATS stream unreadable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NatsError {
    #[error("the server sent -ERR: {0}")]
    Refused(String),
    #[error("a protocol line the harness does not know: {0:?}")]
    Unknown(String),
    #[error("a MSG line without a valid size: {0:?}")]
    BadSize(String),
    #[error("over {MAX_PENDING_BYTES} bytes wait for the end of one message")]
    TooLarge,
}

/// A payload of `pad` bytes of padding, numbered `seq`, sent at `sent_ns`.
pub fn payload(seq: u64, sent_ns: u64, pad: &str) -> String {
    format!(r#"{{"seq":{seq},"sent_ns":{sent_ns},"pad":"{pad}"}}"#)
}

/// The seq and send time of a payload made by [`payload`].
fn stamp(payload: &[u8]) -> Option<(u64, u64)> {
    let after = |key: &[u8]| memmem::find(payload, key).map(|at| &payload[at + key.len()..]);
    let seq = after(br#""seq":"#).and_then(subscriber::leading_u64)?;
    let sent_ns = after(br#""sent_ns":"#).and_then(subscriber::leading_u64)?;
    Some((seq, sent_ns))
}

/// One connection's NATS stream, as its WebSocket frames bring it.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes of an operation not yet whole.
    pending: Vec<u8>,
    /// The messages of the frame being read, recorded together under one lock.
    messages: Vec<(u64, u64)>,
}

/// What a frame asks of the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    None,
    /// The server sent `PING`: send `PONG` or be dropped as stale.
    Pong,
}

impl Decoder {
    /// Takes the payload of one WebSocket frame arrived at `now_ns`, checks the whole
    /// messages in it and keeps the rest.
    ///
    /// # Errors
    /// The stream breaks the protocol, or the server sent `-ERR`.
    pub fn take(
        &mut self,
        bytes: &[u8],
        now_ns: u64,
        seen: &mut Seen,
        sink: &Sink,
        shard: usize,
    ) -> Result<Reply, NatsError> {
        self.pending.extend_from_slice(bytes);
        let pending = std::mem::take(&mut self.pending);
        let mut messages = std::mem::take(&mut self.messages);
        let result = decode(&pending, &mut messages, seen);
        subscriber::on_messages(&messages, now_ns, seen, sink, shard);
        messages.clear();
        self.messages = messages;
        let (used, reply) = result?;
        self.pending = pending;
        self.pending.drain(..used);
        if self.pending.len() > MAX_PENDING_BYTES {
            return Err(NatsError::TooLarge);
        }
        Ok(reply)
    }
}

/// Reads the whole operations at the start of `bytes` into `messages`; returns the
/// bytes they span and whether a `PING` was among them.
fn decode(bytes: &[u8], messages: &mut Vec<(u64, u64)>, seen: &mut Seen) -> Result<(usize, Reply), NatsError> {
    let (mut used, mut reply) = (0, Reply::None);
    while let Some(eol) = memmem::find(&bytes[used..], b"\r\n") {
        let line = &bytes[used..used + eol];
        let after_line = used + eol + 2;
        if let Some(args) = line.strip_prefix(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <size>: the size is the last word.
            let text = String::from_utf8_lossy(args);
            let size: usize =
                text.rsplit(' ').next().and_then(|s| s.parse().ok()).ok_or_else(|| NatsError::BadSize(text.into()))?;
            let end = after_line + size + 2;
            if bytes.len() < end {
                break;
            }
            match stamp(&bytes[after_line..after_line + size]) {
                Some(message) => messages.push(message),
                None => seen.errors += 1,
            }
            used = end;
            continue;
        }
        match line {
            b"PING" => reply = Reply::Pong,
            b"PONG" | b"+OK" => {}
            _ if line.starts_with(b"INFO ") => {}
            _ if line.starts_with(b"-ERR") => {
                return Err(NatsError::Refused(String::from_utf8_lossy(line).into()));
            }
            _ => return Err(NatsError::Unknown(String::from_utf8_lossy(line).into())),
        }
        used = after_line;
    }
    Ok((used, reply))
}

/// The WebSocket frame answering a `PING`.
pub fn pong_frame() -> Vec<u8> {
    wire::client_frame(OP_BINARY, b"PONG\r\n")
}

/// Connects to nats-server's WebSocket `url` (from `source` when given) and subscribes
/// to [`SUBJECT`]; returns the socket once the server has confirmed the subscription.
///
/// # Errors
/// The connection, upgrade or subscription failed or took over `timeout`.
pub async fn subscribe(url: &str, source: Option<Ipv4Addr>, timeout: Duration) -> anyhow::Result<Subscribed> {
    tokio::time::timeout(timeout, subscribe_now(url, source))
        .await
        .with_context(|| format!("no NATS subscription within {timeout:?}"))?
}

async fn subscribe_now(url: &str, source: Option<Ipv4Addr>) -> anyhow::Result<Subscribed> {
    let (mut stream, mut buf) = wire::upgrade(url, source).await?;
    let hello = format!("{CONNECT}\r\nSUB {SUBJECT} 1\r\nPING\r\n");
    stream.write_all(&wire::client_frame(OP_BINARY, hello.as_bytes())).await.context("sending CONNECT and SUB")?;
    // INFO comes first; the PONG answers our PING after the server took CONNECT and SUB,
    // and nothing is published before every subscriber has its PONG.
    let mut text = Vec::new();
    loop {
        let Some((frame, used)) = wire::parse(&buf).context("reading the reply to SUB")? else {
            wire::read_more(&mut stream, &mut buf).await.context("reading the reply to SUB")?;
            continue;
        };
        match frame.opcode {
            OP_PING => stream.write_all(&wire::client_frame(OP_PONG, frame.payload)).await?,
            OP_CLOSE => anyhow::bail!("closed while subscribing: {}", String::from_utf8_lossy(frame.payload)),
            OP_PONG => {}
            _ => text.extend_from_slice(frame.payload),
        }
        buf.drain(..used);
        if let Some(at) = memmem::find(&text, b"-ERR") {
            anyhow::bail!("nats-server refused the subscription: {}", String::from_utf8_lossy(&text[at..]).trim());
        }
        if memmem::find(&text, b"PONG\r\n").is_some() {
            let stream = stream.into_std().context("handing the socket over")?;
            return Ok(Subscribed { stream, leftover: buf, head: 0 });
        }
    }
}

/// The `PING` a held idle connection is asked to answer, and what the answer holds.
pub fn ping_frame() -> (Vec<u8>, &'static [u8]) {
    (wire::client_frame(OP_BINARY, b"PING\r\n"), b"PONG")
}

/// Publishes the plan's events to nats-server's client port `addr`, one `PUB` each,
/// paced by the plan's rate (`batch` per write), each payload padded with `pad`;
/// returns the seqs the server took: `1..=n`, confirmed by a final `PING`'s `PONG`.
///
/// # Errors
/// The connection failed, the server sent `-ERR`, or no `PONG` came in time.
pub async fn publish(addr: SocketAddr, plan: &Plan, pad: &str) -> anyhow::Result<Vec<u64>> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to nats-server at {addr}"))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let info = read_line(&mut lines).await?;
    anyhow::ensure!(info.starts_with("INFO "), "nats-server said {info:?} where INFO was due");
    write.write_all(format!("{CONNECT}\r\n").as_bytes()).await.context("sending CONNECT")?;

    let deadline = Instant::now() + Duration::from_secs(plan.max_secs);
    // One tick per write of `batch` PUBs, as `fanout::publish` ticks once per POST.
    let mut ticker = (plan.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(plan.batch as f64 / plan.rate as f64));
        t.set_missed_tick_behavior(MissedTickBehavior::Burst);
        t
    });
    let mut sent = 0;
    let mut out = Vec::new();
    while sent < plan.events && Instant::now() < deadline {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        out.clear();
        let sent_ns = subscriber::unix_nanos();
        for _ in 0..plan.batch.min(plan.events - sent) {
            sent += 1;
            let body = payload(sent, sent_ns, pad);
            out.extend_from_slice(format!("PUB {SUBJECT} {}\r\n{body}\r\n", body.len()).as_bytes());
        }
        write.write_all(&out).await.context("sending PUB")?;
    }
    write.write_all(b"PING\r\n").await.context("sending PING")?;
    // Only PONG, or a PING of the server's, can come: verbose is off.
    let confirmed = async {
        loop {
            let line = read_line(&mut lines).await?;
            match line.as_str() {
                "PONG" => return anyhow::Ok(()),
                "PING" => write.write_all(b"PONG\r\n").await.context("answering PING")?,
                l if l.starts_with("-ERR") => anyhow::bail!("nats-server refused a PUB: {l}"),
                _ => {}
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, confirmed).await.context("no PONG after the last PUB")??;
    Ok((1..=sent).collect())
}

/// One protocol line, without its `\r\n`, bounded in length and time.
async fn read_line(lines: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> anyhow::Result<String> {
    let mut line = String::new();
    let mut limited = tokio::io::AsyncReadExt::take(lines, MAX_LINE_BYTES);
    let n = tokio::time::timeout(REPLY_TIMEOUT, limited.read_line(&mut line))
        .await
        .context("nats-server said nothing")??;
    anyhow::ensure!(n > 0, "nats-server closed the connection");
    Ok(line.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_anywhere_are_read_once_whole() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"INFO {\"server_id\":\"x\"}\r\n");
        for seq in 1..=5 {
            let body = payload(seq, 1_000, "abc");
            stream.extend_from_slice(format!("MSG {SUBJECT} 1 {}\r\n{body}\r\n", body.len()).as_bytes());
        }
        stream.extend_from_slice(b"PING\r\n");
        for cut in 0..stream.len() {
            let (sink, mut seen, mut decoder) = (Sink::new(1), Seen::new(0, 100), Decoder::default());
            let first = decoder.take(&stream[..cut], 2_000_000, &mut seen, &sink, 0).unwrap();
            let second = decoder.take(&stream[cut..], 2_000_000, &mut seen, &sink, 0).unwrap();
            assert!((1..=5).all(|s| seen.has(s)), "cut {cut}");
            assert_eq!((seen.duplicates, seen.errors, seen.out_of_order), (0, 0, 0), "cut {cut}");
            assert!(first == Reply::Pong || second == Reply::Pong, "cut {cut}");
            assert_eq!(sink.merged().from_send.len(), 5);
        }
    }

    #[test]
    fn an_err_and_an_unknown_line_end_the_stream() {
        let (sink, mut seen) = (Sink::new(1), Seen::new(0, 10));
        let err = Decoder::default().take(b"-ERR 'Slow Consumer'\r\n", 0, &mut seen, &sink, 0);
        assert!(matches!(err, Err(NatsError::Refused(e)) if e.contains("Slow Consumer")));
        let unknown = Decoder::default().take(b"HELLO\r\n", 0, &mut seen, &sink, 0);
        assert!(matches!(unknown, Err(NatsError::Unknown(_))));
        let bad = Decoder::default().take(b"MSG a 1 x\r\n", 0, &mut seen, &sink, 0);
        assert!(matches!(bad, Err(NatsError::BadSize(_))));
    }
}
