//! The servers the side-by-side modes start themselves: a swarmfeed binary and a
//! private nats-server, each on free loopback ports, with a temporary directory of
//! its own (swarmfeed's data, nats-server's configuration and both servers' logs).
//!
//! A [`Launched`] server is killed and its directory removed when dropped, so a run
//! that fails half-way leaves nothing behind. nats-server never gets the shared client
//! port 4222: its configuration names ports found free a moment before.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

use crate::procfs::Proc;

/// Longest a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How often readiness is tried.
const READY_POLL: Duration = Duration::from_millis(50);
/// The last bytes of a server's log quoted when it fails to start.
const LOG_TAIL_BYTES: usize = 2000;

/// Which server a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Swarmfeed,
    Nats,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Swarmfeed => "swarmfeed",
            Kind::Nats => "nats-server",
        }
    }
}

/// A running server the harness started.
pub struct Launched {
    pub kind: Kind,
    child: Child,
    dir: PathBuf,
    /// Where subscribers connect: swarmfeed's `/ws`, nats-server's WebSocket gateway.
    pub ws_url: String,
    /// swarmfeed's base URL (POST `/api/events`); nats-server's plain client port.
    pub http_url: String,
    pub client_addr: SocketAddr,
}

impl Launched {
    /// Starts `binary` as `swarmfeed serve` on a fresh data directory, with the
    /// settings of docs/BENCHMARKS.md: no auth, no per-IP limits (every connection
    /// comes from loopback), no frame pacing.
    ///
    /// # Errors
    /// The binary is missing, does not start or never accepts connections.
    pub async fn swarmfeed(binary: &Path) -> anyhow::Result<Self> {
        let dir = fresh_dir("swarmfeed")?;
        let port = free_port()?;
        let mut command = Command::new(binary);
        command
            .args(["--log", "warn", "serve", "--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.join("data"))
            .args(["--no-auth", "--max-frames-per-sec", "0", "--max-conns-per-ip", "0"])
            .args(["--handshakes-per-ip-per-sec", "0", "--requests-per-ip-per-sec", "0"])
            .args(["--ingest-rate-per-token", "0", "--max-connections", "0"]);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut launched = Self::start(Kind::Swarmfeed, command, dir, addr, format!("ws://{addr}/ws"), addr).await?;
        launched.http_url = format!("http://{addr}");
        Ok(launched)
    }

    /// Starts `binary` as a nats-server of its own: a client port and a plain
    /// WebSocket gateway, both on loopback.
    ///
    /// # Errors
    /// The binary is missing, does not start or never accepts connections.
    pub async fn nats(binary: &Path) -> anyhow::Result<Self> {
        let dir = fresh_dir("nats")?;
        let (client, ws) = (free_port()?, free_port()?);
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!("listen: \"127.0.0.1:{client}\"\nwebsocket {{\n  listen: \"127.0.0.1:{ws}\"\n  no_tls: true\n}}\n"),
        )
        .context("writing nats-server's configuration")?;
        let mut command = Command::new(binary);
        command.arg("-c").arg(&config);
        let client_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client));
        let ws_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ws));
        let mut launched =
            Self::start(Kind::Nats, command, dir, ws_addr, format!("ws://{ws_addr}/"), client_addr).await?;
        // Both listeners must be up, whichever opens first.
        wait_ready(&mut launched, client_addr).await?;
        Ok(launched)
    }

    async fn start(
        kind: Kind,
        mut command: Command,
        dir: PathBuf,
        ready_at: SocketAddr,
        ws_url: String,
        client_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(dir.join("server.log")).context("creating the server's log")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("sharing the log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({:?})", kind.name(), command.get_program()))?;
        let mut launched = Launched { kind, child, dir, ws_url, http_url: String::new(), client_addr };
        wait_ready(&mut launched, ready_at).await?;
        Ok(launched)
    }

    /// The server's process, to read its CPU time and memory.
    pub fn proc(&self) -> Proc {
        Proc::pid(self.child.id())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the server's log, for an error message.
    fn log_tail(&self) -> String {
        let log = std::fs::read(self.dir.join("server.log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(LOG_TAIL_BYTES)..]).into_owned()
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Killed, not asked: the figures are taken and the data is thrown away.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `addr` accepts a connection; fails early if the server has exited.
async fn wait_ready(launched: &mut Launched, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = launched.child.try_wait() {
            anyhow::bail!("{} exited ({status}) before listening: {}", launched.kind.name(), launched.log_tail());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} did not listen on {addr} within {READY_TIMEOUT:?}: {}",
            launched.kind.name(),
            launched.log_tail()
        );
        tokio::time::sleep(READY_POLL).await;
    }
}

/// A port free on 127.0.0.1 a moment ago. Another process may take it before the
/// server binds it; the server then fails to start and says so.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr().context("reading a free port")?.port())
}

/// A new, empty directory under the system's temporary directory.
fn fresh_dir(what: &str) -> anyhow::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("swarmfeed-bench-{what}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Runs `measure` against swarmfeed, then against nats-server: each started fresh and
/// stopped before the other starts, so the two never share the cores.
///
/// # Errors
/// A server could not start, or its measurement failed (named).
pub async fn each_in_turn<T>(
    swarmfeed: &Path,
    nats: &Path,
    measure: impl AsyncFn(&Launched) -> anyhow::Result<T>,
) -> anyhow::Result<(T, T)> {
    let server = Launched::swarmfeed(swarmfeed).await?;
    let sf = measure(&server).await.context("swarmfeed's run")?;
    drop(server);
    let server = Launched::nats(nats).await?;
    let nt = measure(&server).await.context("nats-server's run")?;
    drop(server);
    Ok((sf, nt))
}
