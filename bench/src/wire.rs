//! The client side of a WebSocket, by hand: the opening handshake and frames
//! (RFC 6455), for [`readers`](crate::readers), which read thousands of subscriptions
//! on one thread and so cannot hand each socket to tungstenite.
//!
//! [`subscribe`] connects, upgrades and subscribes with tokio, then gives the socket
//! back as a std stream together with any bytes already read past `subscribed`: owning
//! the handshake is what makes those bytes reachable. [`parse`] reads one server frame
//! in place; [`client_frame`] builds one masked client frame.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use reqwest::Url;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tungstenite::handshake::derive_accept_key;

/// Largest server frame accepted: the server's frames stay under 1 MiB.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
/// Largest HTTP response head accepted for the upgrade.
const MAX_HEAD_BYTES: usize = 16 * 1024;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One frame from the server, borrowed from the bytes it was read from.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub fin: bool,
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// What makes bytes from the server not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("a frame sets reserved bits (no extension was negotiated)")]
    Reserved,
    #[error("a frame from the server is masked")]
    Masked,
    #[error("a frame of {0} bytes is over the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(u64),
}

/// The frame `bytes` begin with and the bytes it spans, or `None` until it is whole.
///
/// # Errors
/// The bytes break RFC 6455 for a server frame, or announce an over-size one.
pub fn parse(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let [b0, b1, rest @ ..] = bytes else { return Ok(None) };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (len, extended) = match b1 & 0x7f {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
            _ => return Ok(None),
        },
        127 => match rest.first_chunk::<8>() {
            Some(eight) => (u64::from_be_bytes(*eight), 8),
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    if len > MAX_FRAME_BYTES as u64 {
        return Err(FrameError::TooLarge(len));
    }
    let start = 2 + extended;
    let end = start + len as usize;
    if bytes.len() < end {
        return Ok(None);
    }
    Ok(Some((Frame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, payload: &bytes[start..end] }, end)))
}

/// One whole client frame: clients must mask what they send.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask: [u8; 4] = rand::random();
    let mut out = Vec::with_capacity(payload.len() + 14);
    push_header(&mut out, opcode, Some(mask), payload.len());
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// One whole, unmasked frame, as a server sends it.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    push_header(&mut out, opcode, None, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A final frame's header: opcode, the length in its shortest form, and the mask key
/// when there is one.
fn push_header(out: &mut Vec<u8>, opcode: u8, mask: Option<[u8; 4]>, len: usize) {
    let masked = if mask.is_some() { 0x80 } else { 0 };
    out.push(0x80 | opcode);
    match len {
        n if n < 126 => out.push(masked | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// A subscribed socket, handed over to plain reads.
pub struct Subscribed {
    pub stream: std::net::TcpStream,
    /// Bytes read past the `subscribed` frame: the start of what follows it.
    pub leftover: Vec<u8>,
    /// The head the server reported in `subscribed`.
    pub head: u64,
}

/// The `subscribe` action for every event: live, or after `since`. It asks for
/// `batch` frames, as swarmfeed's own clients do, so the figures are for the frames
/// those get; the frame readers count the events of either kind.
pub fn subscribe_request(since: Option<u64>) -> String {
    match since {
        Some(since) => format!(r#"{{"action":"subscribe","channel":"events","since":{since},"batch":true}}"#),
        None => r#"{"action":"subscribe","channel":"events","batch":true}"#.to_owned(),
    }
}

#[derive(Deserialize)]
struct Control {
    #[serde(rename = "type")]
    kind: String,
    head: Option<u64>,
}

/// The head a reply to `subscribe` reports.
///
/// # Errors
/// The reply is not JSON, or not `subscribed`.
pub fn subscribed_head(reply: &[u8]) -> anyhow::Result<u64> {
    let control: Control = serde_json::from_slice(reply).context("parsing the reply to subscribe")?;
    anyhow::ensure!(control.kind == "subscribed", "subscribe answered {}", String::from_utf8_lossy(reply));
    Ok(control.head.unwrap_or(0))
}

/// Connects to `url` (`ws://host:port/path`), upgrades and subscribes live.
///
/// # Errors
/// The connection, the upgrade or the subscription failed, or took over `timeout`.
pub async fn subscribe(url: &str, timeout: Duration) -> anyhow::Result<Subscribed> {
    subscribe_from(url, None, timeout).await
}

/// [`subscribe`], connecting from `source` when given.
///
/// # Errors
/// As [`subscribe`]'s.
pub async fn subscribe_from(url: &str, source: Option<Ipv4Addr>, timeout: Duration) -> anyhow::Result<Subscribed> {
    tokio::time::timeout(timeout, subscribe_now(url, source))
        .await
        .with_context(|| format!("no subscription within {timeout:?}"))?
}

async fn subscribe_now(url: &str, source: Option<Ipv4Addr>) -> anyhow::Result<Subscribed> {
    let (mut stream, mut buf) = upgrade(url, source).await?;
    let subscribe = client_frame(OP_TEXT, subscribe_request(None).as_bytes());
    stream.write_all(&subscribe).await.context("sending subscribe")?;
    // Only `subscribed` can come first (nothing is delivered before the cursor exists),
    // though a keep-alive ping may come before it.
    loop {
        let parsed = parse(&buf).context("reading the reply to subscribe")?;
        let Some((frame, used)) = parsed else {
            read_more(&mut stream, &mut buf).await.context("reading the reply to subscribe")?;
            continue;
        };
        match frame.opcode {
            OP_TEXT => {
                anyhow::ensure!(frame.fin, "the reply to subscribe is fragmented");
                let head = subscribed_head(frame.payload)?;
                buf.drain(..used);
                let stream = stream.into_std().context("handing the socket over")?;
                return Ok(Subscribed { stream, leftover: buf, head });
            }
            OP_PING => {
                let pong = client_frame(OP_PONG, frame.payload);
                stream.write_all(&pong).await.context("answering a ping")?;
            }
            OP_CLOSE => anyhow::bail!("closed while subscribing: {}", String::from_utf8_lossy(frame.payload)),
            _ => {}
        }
        buf.drain(..used);
    }
}

/// Connects to `url` (`ws://host:port/path`), from `source` when given (a loopback
/// address of its own gives another range of ephemeral ports), and upgrades; returns
/// the socket and any bytes read past the response head.
///
/// # Errors
/// The connection or the upgrade failed.
pub async fn upgrade(url: &str, source: Option<Ipv4Addr>) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let url = Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    let host = url.host_str().context("the WebSocket URL has no host")?;
    let port = url.port_or_known_default().context("the WebSocket URL has no port")?;
    // `host_str` keeps an IPv6 literal's brackets, right for `Host` but not for resolving.
    let addrs = url.socket_addrs(|| None).with_context(|| format!("resolving {host}"))?;
    let mut stream = match source {
        None => TcpStream::connect(&*addrs).await.with_context(|| format!("connecting to {host}:{port}"))?,
        Some(source) => {
            let to = addrs.first().copied().with_context(|| format!("{host} resolves to nothing"))?;
            let socket = TcpSocket::new_v4().context("creating a socket")?;
            socket.bind(SocketAddr::from((source, 0))).with_context(|| format!("binding to {source}"))?;
            socket.connect(to).await.with_context(|| format!("connecting to {host}:{port} from {source}"))?
        }
    };
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;

    let key = tungstenite::handshake::client::generate_key();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        url.path()
    );
    stream.write_all(request.as_bytes()).await.context("sending the upgrade request")?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(at) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            break at + 4;
        }
        anyhow::ensure!(buf.len() < MAX_HEAD_BYTES, "the upgrade response head is over {MAX_HEAD_BYTES} bytes");
        read_more(&mut stream, &mut buf).await.context("reading the upgrade response")?;
    };
    check_upgrade(&buf[..head_end], &key)?;
    buf.drain(..head_end);
    Ok((stream, buf))
}

/// Reads what is there into `buf`; the peer closing is an error here.
pub async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    anyhow::ensure!(n > 0, "the server closed the connection");
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Checks that an HTTP response head accepts the upgrade asked for with `key`.
fn check_upgrade(head: &[u8], key: &str) -> anyhow::Result<()> {
    let head = std::str::from_utf8(head).context("the upgrade response is not text")?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        anyhow::bail!("the server answered {status:?} to the upgrade (a 401 means it needs --no-auth)");
    }
    let accept = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, value)| value.trim());
    anyhow::ensure!(
        accept == Some(derive_accept_key(key.as_bytes()).as_str()),
        "the upgrade response's Sec-WebSocket-Accept does not match the key sent"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_every_length_form_parse_only_once_whole() {
        for len in [0, 5, 125, 126, 300, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut bytes = server_frame(OP_TEXT, &payload);
            bytes.extend_from_slice(b"next");
            let whole = bytes.len() - 4;
            for cut in [0, 1, 2, 3, whole - 1] {
                assert_eq!(parse(&bytes[..cut.min(whole - 1)]), Ok(None), "len {len} cut {cut}");
            }
            let (frame, used) = parse(&bytes).unwrap().unwrap();
            assert_eq!((frame.fin, frame.opcode, frame.payload, used), (true, OP_TEXT, &payload[..], whole));
        }
        let mut continuation = server_frame(OP_CONTINUATION, b"x");
        continuation[0] &= 0x7f;
        let (frame, _) = parse(&continuation).unwrap().unwrap();
        assert!(!frame.fin && frame.opcode == OP_CONTINUATION);
    }

    #[test]
    fn frames_that_break_the_rules_are_refused() {
        assert_eq!(parse(&[0x81 | 0x40, 0]), Err(FrameError::Reserved));
        assert_eq!(parse(&[0x81, 0x80 | 1, 0, 0, 0, 0, b'x']), Err(FrameError::Masked));
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(MAX_FRAME_BYTES as u64 + 1).to_be_bytes());
        assert_eq!(parse(&huge), Err(FrameError::TooLarge(MAX_FRAME_BYTES as u64 + 1)));
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_payload() {
        for len in [0, 7, 125, 126, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 13) as u8).collect();
            let frame = client_frame(OP_TEXT, &payload);
            assert_eq!(frame[0], 0x81);
            assert!(frame[1] & 0x80 != 0, "mask bit");
            let (len7, at) = (frame[1] & 0x7f, 2);
            let (len_read, at) = match len7 {
                126 => (u16::from_be_bytes([frame[at], frame[at + 1]]) as usize, at + 2),
                127 => (u64::from_be_bytes(frame[at..at + 8].try_into().unwrap()) as usize, at + 8),
                n => (n as usize, at),
            };
            assert_eq!(len_read, len);
            let mask = &frame[at..at + 4];
            let unmasked: Vec<u8> = frame[at + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn only_subscribed_answers_a_subscribe() {
        let request: serde_json::Value = serde_json::from_str(&subscribe_request(Some(5))).unwrap();
        assert_eq!(request["since"], 5);
        assert_eq!(request["batch"], true, "the bench reads batch frames");
        assert!(serde_json::from_str::<serde_json::Value>(&subscribe_request(None)).unwrap().get("since").is_none());
        assert_eq!(subscribed_head(br#"{"type":"subscribed","head":42}"#).unwrap(), 42);
        let refused = subscribed_head(br#"{"type":"error","code":"bad_request"}"#).unwrap_err().to_string();
        assert!(refused.contains("bad_request"), "{refused}");
        assert!(subscribed_head(b"not json").is_err());
    }

    #[test]
    fn the_upgrade_must_be_a_101_with_the_right_accept() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let ok = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(check_upgrade(ok.as_bytes(), key).is_ok());
        let wrong = ok.replace("s3pP", "XXXX");
        assert!(check_upgrade(wrong.as_bytes(), key).unwrap_err().to_string().contains("Sec-WebSocket-Accept"));
        let refused = "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        assert!(check_upgrade(refused.as_bytes(), key).unwrap_err().to_string().contains("--no-auth"));
    }
}
