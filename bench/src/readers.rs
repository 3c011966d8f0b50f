//! Reader threads: every subscription of a run read by `--client-threads` plain
//! threads over epoll (mio), not by a tokio task and a tungstenite stream each.
//!
//! The harness shares the server's two cores, so what it spends reading a frame is
//! taken from the server it measures. With a task per connection each delivery cost the
//! harness a task wake-up, tungstenite's buffer handling, a second `recv` that only
//! finds the socket empty, and a full JSON parse: about 7.8 µs, 0.8 of a core at 10 000
//! subscribers and 10 events/s. Here a readable socket is read once into a buffer the
//! thread shares between its sockets, its frames are checked in place
//! ([`subscriber::on_frame`]), and a read shorter than the buffer ends the turn: the
//! socket's queue was emptied, and mio's edge-triggered poll reports it again when more
//! arrives. Each thread records into a latency shard of its own.
//!
//! A connection keeps bytes of its own only for a frame split across reads.

use std::io::{ErrorKind, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::nats;
use crate::subscriber::{self, Seen, Sink};
use crate::wire::{self, Frame, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, Subscribed};

/// Bytes read from a socket at a time, shared by all of one thread's sockets. A frame
/// of one event is a few hundred bytes; a burst's batch frames, up to 1 MiB, take a
/// few reads.
const SCRATCH_BYTES: usize = 256 * 1024;
/// Readiness events taken from the kernel per poll.
const EVENTS_PER_POLL: usize = 1024;
/// How often a thread looks at the stop flag when nothing arrives.
const STOP_CHECK: Duration = Duration::from_millis(20);
/// The token of each thread's waker; connections are numbered from 0.
const WAKE: Token = Token(usize::MAX);
/// Close frame payload: status 1000, normal closure.
const NORMAL_CLOSURE: [u8; 2] = 1000u16.to_be_bytes();

/// A subscription handed to a reader thread.
struct Opened {
    subscribed: Subscribed,
    seen: Seen,
    protocol: Protocol,
}

/// What a subscription's frames carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// swarmfeed's `/ws`: one JSON message per text frame.
    Swarmfeed,
    /// nats-server's WebSocket gateway: the NATS protocol as a byte stream, in frames
    /// cut wherever the server's writes were.
    Nats,
}

/// One reader thread and the way to hand it connections.
struct Reader {
    thread: JoinHandle<Vec<Seen>>,
    inbox: mpsc::Sender<Opened>,
    waker: Arc<Waker>,
}

/// The reader threads of a run. Dropping it stops them without waiting.
pub struct Readers {
    readers: Vec<Reader>,
    stop: Arc<AtomicBool>,
    added: usize,
}

impl Readers {
    /// Starts `threads` reader threads recording into `sink`, thread `i` into shard `i`.
    ///
    /// # Errors
    /// A thread or its poller could not be created.
    pub fn start(threads: usize, sink: &Arc<Sink>) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let readers = (0..threads.max(1))
            .map(|shard| {
                let poll = Poll::new().context("creating a reader's poller")?;
                let waker = Arc::new(Waker::new(poll.registry(), WAKE).context("creating a reader's waker")?);
                let (inbox, arrivals) = mpsc::channel();
                let (sink, stop) = (Arc::clone(sink), Arc::clone(&stop));
                let thread = std::thread::Builder::new()
                    .name(format!("reader-{shard}"))
                    .spawn(move || read_loop(poll, &arrivals, &sink, shard, &stop))
                    .context("starting a reader thread")?;
                Ok(Reader { thread, inbox, waker })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Readers { readers, stop, added: 0 })
    }

    /// Hands a subscribed socket to the next thread in turn.
    ///
    /// # Errors
    /// The socket could not be made non-blocking, or its thread has ended.
    pub fn add(&mut self, subscribed: Subscribed, seen: Seen) -> anyhow::Result<()> {
        self.add_speaking(subscribed, seen, Protocol::Swarmfeed)
    }

    /// [`Readers::add`] for a subscription whose frames carry `protocol`.
    ///
    /// # Errors
    /// As [`Readers::add`]'s.
    pub fn add_speaking(&mut self, subscribed: Subscribed, seen: Seen, protocol: Protocol) -> anyhow::Result<()> {
        subscribed.stream.set_nonblocking(true).context("making a socket non-blocking")?;
        let reader = &self.readers[self.added % self.readers.len()];
        reader.inbox.send(Opened { subscribed, seen, protocol }).ok().context("a reader thread has ended")?;
        reader.waker.wake().context("waking a reader thread")?;
        self.added += 1;
        Ok(())
    }

    /// Connections handed over so far.
    pub fn len(&self) -> usize {
        self.added
    }

    /// Stops every thread, after each closes its connections, and returns what every
    /// subscription saw.
    ///
    /// # Errors
    /// A reader thread panicked.
    pub fn finish(mut self) -> anyhow::Result<Vec<Seen>> {
        self.stop_all();
        let mut seen = Vec::with_capacity(self.added);
        for reader in std::mem::take(&mut self.readers) {
            seen.extend(reader.thread.join().map_err(|_| anyhow::anyhow!("a reader thread panicked"))?);
        }
        Ok(seen)
    }

    fn stop_all(&self) {
        self.stop.store(true, Ordering::Release);
        for reader in &self.readers {
            // A thread whose poller is gone has ended already.
            let _ = reader.waker.wake();
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// One connection on a reader thread.
struct Connection {
    stream: TcpStream,
    seen: Seen,
    /// The start of a frame not yet whole.
    partial: Vec<u8>,
    /// A text message whose frames are not all in yet (the server does not fragment,
    /// but the protocol allows it).
    message: Vec<u8>,
    /// For a nats-server subscription, its protocol stream.
    nats: Option<nats::Decoder>,
}

/// The connection ended before the run did: a close frame, an EOF, an error or a
/// broken frame.
struct Ended;

fn read_loop(
    mut poll: Poll,
    arrivals: &mpsc::Receiver<Opened>,
    sink: &Sink,
    shard: usize,
    stop: &AtomicBool,
) -> Vec<Seen> {
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut done = Vec::new();
    let mut events = Events::with_capacity(EVENTS_PER_POLL);
    let mut scratch = vec![0u8; SCRATCH_BYTES];
    loop {
        if let Err(e) = poll.poll(&mut events, Some(STOP_CHECK))
            && e.kind() != ErrorKind::Interrupted
        {
            eprintln!("warning: a reader thread's poll failed ({e}); its subscriptions end here");
            break;
        }
        for event in &events {
            // The waker's token matches no slot; a closed connection's slot is empty.
            let Some(slot) = connections.get_mut(event.token().0) else { continue };
            let ended = slot.as_mut().is_some_and(|c| c.on_readable(&mut scratch, sink, shard).is_err());
            if let Some(mut connection) = slot.take_if(|_| ended) {
                // Deregistering a socket about to be closed cannot matter if it fails.
                let _ = poll.registry().deregister(&mut connection.stream);
                connection.seen.closed_early = true;
                done.push(connection.seen);
            }
        }
        while let Ok(Opened { subscribed, seen, protocol }) = arrivals.try_recv() {
            let token = Token(connections.len());
            let mut connection = Connection {
                stream: TcpStream::from_std(subscribed.stream),
                seen,
                partial: Vec::new(),
                message: Vec::new(),
                nats: (protocol == Protocol::Nats).then(nats::Decoder::default),
            };
            let registered = poll.registry().register(&mut connection.stream, token, Interest::READABLE);
            // Bytes that came with `subscribed` are the first of the stream.
            let leftover_ok = connection.take(&subscribed.leftover, subscriber::unix_nanos(), sink, shard).is_ok();
            if registered.is_err() || !leftover_ok {
                connection.seen.closed_early = true;
                done.push(connection.seen);
                connections.push(None);
            } else {
                connections.push(Some(connection));
            }
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
    }
    for mut connection in connections.into_iter().flatten() {
        // Best effort: the figures are taken, and the socket closes when dropped.
        let _ = connection.stream.write_all(&wire::client_frame(OP_CLOSE, &NORMAL_CLOSURE));
        done.push(connection.seen);
    }
    done
}

impl Connection {
    /// Reads what the socket has; `Err` when the connection is done.
    fn on_readable(&mut self, scratch: &mut [u8], sink: &Sink, shard: usize) -> Result<(), Ended> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Err(Ended),
                Ok(n) => {
                    // Stamped before checking: the check is the harness's cost.
                    let now_ns = subscriber::unix_nanos();
                    self.take(&scratch[..n], now_ns, sink, shard)?;
                    // A short read emptied the socket's queue; the poller reports the
                    // next arrival, so a second `recv` would only return WouldBlock.
                    if n < scratch.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Ended),
            }
        }
    }

    /// Takes bytes read at `now_ns`: checks the whole frames and keeps the rest.
    fn take(&mut self, bytes: &[u8], now_ns: u64, sink: &Sink, shard: usize) -> Result<(), Ended> {
        if self.partial.is_empty() {
            let used = self.frames(bytes, now_ns, sink, shard)?;
            self.partial.extend_from_slice(&bytes[used..]);
        } else {
            let mut partial = std::mem::take(&mut self.partial);
            partial.extend_from_slice(bytes);
            let used = self.frames(&partial, now_ns, sink, shard)?;
            partial.drain(..used);
            self.partial = partial;
        }
        Ok(())
    }

    /// Handles the whole frames at the start of `bytes`; returns the bytes they span.
    fn frames(&mut self, bytes: &[u8], now_ns: u64, sink: &Sink, shard: usize) -> Result<usize, Ended> {
        let mut used = 0;
        loop {
            let (frame, len) = match wire::parse(&bytes[used..]) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return Ok(used),
                Err(e) => {
                    eprintln!("warning: a subscription ends on a broken frame: {e}");
                    return Err(Ended);
                }
            };
            used += len;
            self.frame(frame, now_ns, sink, shard)?;
        }
    }

    fn frame(&mut self, frame: Frame<'_>, now_ns: u64, sink: &Sink, shard: usize) -> Result<(), Ended> {
        if let Some(decoder) = self.nats.as_mut()
            && matches!(frame.opcode, OP_TEXT | OP_BINARY | OP_CONTINUATION)
        {
            // A stream, not messages: frame boundaries mean nothing to it.
            return match decoder.take(frame.payload, now_ns, &mut self.seen, sink, shard) {
                Ok(nats::Reply::None) => Ok(()),
                Ok(nats::Reply::Pong) => self.send_small(&nats::pong_frame()),
                Err(e) => {
                    eprintln!("warning: a NATS subscription ends: {e}");
                    Err(Ended)
                }
            };
        }
        match frame.opcode {
            OP_TEXT if frame.fin && self.message.is_empty() => {
                subscriber::on_frame(frame.payload, now_ns, &mut self.seen, sink, shard);
            }
            OP_TEXT | OP_CONTINUATION => {
                if frame.opcode == OP_CONTINUATION && self.message.is_empty() {
                    self.seen.errors += 1;
                    return Ok(());
                }
                self.message.extend_from_slice(frame.payload);
                if frame.fin {
                    let message = std::mem::take(&mut self.message);
                    subscriber::on_frame(&message, now_ns, &mut self.seen, sink, shard);
                }
            }
            OP_PING => {
                // The keep-alive: unanswered, the server closes the connection. A pong
                // this small only fails to fit a socket buffer that is already full, and
                // the next ping asks again.
                self.send_small(&wire::client_frame(OP_PONG, frame.payload))?;
            }
            OP_PONG => {}
            OP_CLOSE => return Err(Ended),
            // Binary frames are not part of the protocol.
            _ => self.seen.errors += 1,
        }
        Ok(())
    }

    /// Writes a frame this small (a pong) in one go, or not at all when the socket
    /// buffer is already full: the next ping asks again.
    fn send_small(&mut self, frame: &[u8]) -> Result<(), Ended> {
        match self.stream.write(frame) {
            Ok(n) if n == frame.len() => Ok(()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
            // Half a frame written would corrupt the stream: end it instead.
            Ok(_) | Err(_) => Err(Ended),
        }
    }
}
