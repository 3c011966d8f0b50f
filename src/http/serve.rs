//! The accept loop: connections are admitted under the per-IP and total caps, served
//! by hyper as HTTP/1.1 with a header-read timeout and a write timeout, and drained on
//! shutdown.
//!
//! Owns the listener and the connection slots. Each connection's slot travels with its
//! socket into a WebSocket after an upgrade, so a long-lived stream counts against its
//! IP for as long as it lives, not only while its handshake does.
//!
//! With `--tls-cert`, every connection is TLS (rustls, `crate::tls`) and speaks the same
//! HTTP/1.1 inside it; ALPN offers `http/1.1` alone.
//!
//! Cleartext HTTP/2 is not served, on purpose (docs/SECURITY.md): one h2 connection
//! carries up to hundreds of concurrent streams, and every cap here counts sockets.
//! Serving HTTP/1.1 alone keeps "one connection, at most one request in flight" true,
//! so `--max-conns-per-ip` and `--max-connections` bound requests, not only sockets.
//! A connection that opens with the HTTP/2 preface is closed at once.
//!
//! Timeouts run from the first byte: hyper's HTTP/1 header timeout starts when the
//! connection starts waiting for a request head, before any byte has arrived, and
//! again while a kept-alive connection waits for its next request. So a socket that
//! sends nothing is closed after `--header-timeout`, like a slow one.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::limits::{ConnCounter, ConnSlot, OverLimit};
use crate::config::Limits;
use crate::metrics::Metrics;

/// Most bytes hyper buffers to read one request head (and writes ahead per
/// connection). hyper's default is about 400 KiB; a head with a session cookie and a
/// bearer token needs under 8 KiB. At 64 KiB, `--max-connections` (20 000) heads in
/// the making hold at most 1.3 GB, rather than 8 GB.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most bytes of a connection's output the kernel holds unsent (`TCP_NOTSENT_LOWAT`);
/// past it a write waits, and the session with it. Left alone, Linux grows the send
/// buffer of a socket whose client stopped reading to `tcp_wmem`'s 4 MiB: each of
/// 1 000 stalled viewers soaked up about 1 MiB of events before its writes ever waited,
/// the server built and wrote every frame for them as for a live viewer (twice the CPU
/// of the live ones alone), and the kernel's TCP memory neared its pressure mark, which
/// slowed the live viewers' sockets too (live p99 7–19× the run without them; with
/// this bound 1.2–4.6× over the whole run and 0.5–1.4× once they have stalled, see
/// docs/BENCHMARKS.md). The bound is on unsent bytes only, so the bytes in flight to a
/// client that reads still grow with the path's bandwidth and delay, and catch-up
/// reads were as fast with it. At 64 KiB the stalled viewers took longer to stall and
/// live p99 beside them was 50 and 106 ms in two runs, against 16–45 ms in six at 16 KiB.
const UNSENT_BYTES: u32 = 16 * 1024;

/// A socket together with its place under the connection caps, written under the
/// write timeout.
struct Tracked {
    stream: TcpStream,
    _slot: ConnSlot,
    write_timeout: Duration,
    /// Running while a write is blocked on a client that does not read; reset by any
    /// progress. A stream that keeps being read is never cut, however long it lives.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Tracked {
    /// Passes a write's outcome through, and fails it once the socket has accepted
    /// nothing for the write timeout.
    fn timed<T>(&mut self, cx: &mut Context<'_>, outcome: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if outcome.is_ready() {
            self.stalled = None;
            return outcome;
        }
        let timeout = self.write_timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing within the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.timed(cx, outcome)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let outcome = Pin::new(&mut self.stream).poll_flush(cx);
        self.timed(cx, outcome)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let outcome = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.timed(cx, outcome)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let outcome = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.timed(cx, outcome)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Answers a connection that is over a cap with a bare 429 and closes it (after the
/// TLS handshake when serving TLS, or the client would see only a broken handshake).
/// Bounded in time, so refused connections cannot pile up.
async fn refuse(stream: TcpStream, over: OverLimit, tls: Option<TlsAcceptor>) {
    let body = format!(
        r#"{{"error":{{"code":"rate_limited","message":"too many connections ({}); retry later"}}}}"#,
        over.limit
    );
    let response = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: {}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        over.retry_secs(),
        body.len()
    );
    async fn answer<S: AsyncWrite + Unpin>(mut stream: S, response: &[u8]) -> std::io::Result<()> {
        stream.write_all(response).await?;
        stream.shutdown().await
    }
    let write = async {
        match tls {
            None => answer(stream, response.as_bytes()).await,
            Some(acceptor) => answer(acceptor.accept(stream).await?, response.as_bytes()).await,
        }
    };
    // The peer may already be gone; nothing more is owed to it.
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// Where connections come from: the bound socket and, with `--tls-cert`, the TLS every
/// connection is accepted through.
pub(crate) struct Endpoint {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<TlsAcceptor>,
}

/// The first byte of a TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Whether a connection to the TLS port opens with a TLS handshake. One that does not
/// is plain HTTP sent to the wrong scheme: it is told so in plain HTTP (400) and
/// closed, so a client sees why rather than a broken connection that it might retry.
async fn speaks_tls(stream: &mut TcpStream) -> bool {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) if first[0] == TLS_HANDSHAKE_RECORD => true,
        Ok(1) => {
            let body =
                r#"{"error":{"code":"invalid_url","message":"this server speaks HTTPS: use https:// (and wss://)"}}"#;
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n\
                 content-length: {}\r\n\r\n{body}",
                body.len()
            );
            // The peer may already be gone; nothing more is owed to it.
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
            false
        }
        _ => false,
    }
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting and waits up to
/// `grace` for open connections to finish. `limits` gives the header and write
/// timeouts. With `tls`, every connection is a TLS one: the handshake must finish
/// within the header timeout, and the write timeout watches the socket beneath it.
///
/// # Errors
/// Never at present; accept errors (such as running out of file descriptors) are
/// logged and retried after a short pause.
pub(crate) async fn serve(
    Endpoint { listener, tls }: Endpoint,
    app: Router,
    conns: Arc<ConnCounter>,
    metrics: Arc<Metrics>,
    limits: &Limits,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let connections = TaskTracker::new();
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(MAX_HEAD_BYTES);
    let (write_timeout, handshake_timeout) = (limits.write_timeout, limits.header_timeout);
    loop {
        let (stream, addr) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing before the next one");
                    // Backoff, so a full descriptor table does not become a busy loop.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match conns.admit(addr.ip()) {
            Ok(slot) => slot,
            Err(over) => {
                tracing::debug!(%addr, limit = over.limit, "connection refused");
                metrics.rejected("too_many_connections");
                tokio::spawn(refuse(stream, over, tls.clone()));
                continue;
            }
        };
        // Latency matters more than packet count for a live feed.
        let _ = stream.set_nodelay(true);
        // Best effort, as above: a kernel without the option buffers as it always did.
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_BYTES);
        let service = app.clone().map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
            request
        });
        let (builder, tls, shutdown) = (builder.clone(), tls.clone(), shutdown.clone());
        connections.spawn(async move {
            let io = match tls {
                None => Either::Left(Tracked { stream, _slot: slot, write_timeout, stalled: None }),
                Some(acceptor) => {
                    let handshake = async move {
                        let mut stream = stream;
                        if !speaks_tls(&mut stream).await {
                            return Err(std::io::Error::other("the client spoke plain HTTP, or nothing"));
                        }
                        acceptor.accept(Tracked { stream, _slot: slot, write_timeout, stalled: None }).await
                    };
                    // A handshake that never finishes holds its slot no longer than a
                    // request head that never comes.
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        done = tokio::time::timeout(handshake_timeout, handshake) => match done {
                            Ok(Ok(tls)) => Either::Right(tls),
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %addr, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%addr, "TLS handshake not finished within the header timeout");
                                return;
                            }
                        },
                    }
                }
            };
            let connection =
                builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service)).with_upgrades();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = shutdown.cancelled() => {
                    // Finish the request in flight, if any, then close; an idle
                    // connection closes at once.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::trace!(error = %e, %addr, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!(?grace, "connections still open after the grace period; closing them");
    }
    Ok(())
}
