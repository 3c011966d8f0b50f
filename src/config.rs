//! The server's settings, validated once at start.
//!
//! Owns every limit and default of the running server and the rule that ties them
//! together (`--no-auth` only on loopback). Declaring and parsing the settings (flags,
//! environment variables, the settings file) is `cli`'s job; this module only holds
//! and checks the result.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use crate::hub::{DEFAULT_RING_CAPACITY, ReadLimit};
use crate::ingest::IngestRules;
use crate::retention::RetentionSettings;
use crate::sessions::SessionSettings;
use crate::swarm::coordinator::CoordinatorSettings;
use crate::swarm::demo::DemoSettings;
use crate::webhook::WebhookSettings;
use crate::writer::WriterSettings;

/// Most bytes of events in one frame (or SSE flush, or poll answer), beside at most
/// 5 000 events. A frame is held whole while it is sent, and a WebSocket keeps a write
/// buffer as large as the largest frame it has sent, so a viewer that fell behind costs
/// up to about twice this. 1 MiB rather than 4: a quarter of the bound, while a viewer
/// paced to 10 frames/s can still be sent 10 MB/s. In a burst that 1 000 subscribers
/// could not keep up with, the server held 1.2 GB, from 1.3–2.2 GB before.
pub(crate) const FRAME_MAX_BYTES: usize = 1024 * 1024;
/// Default address to listen on (`--bind`): loopback, so that a first start is not
/// reachable from the network.
pub(crate) const DEFAULT_BIND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8000));
/// Default directory of the database and `admin.token` (`--data-dir`).
pub(crate) const DEFAULT_DATA_DIR: &str = "./data";
/// Default WebSocket event frames per second per subscription (the ADR's limit).
pub(crate) const DEFAULT_MAX_FRAMES_PER_SEC: u32 = 10;
/// Default cap on a request body, bytes: room for a full batch of 1 000 events.
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Cap on one message from a WebSocket client (DESIGN §3).
pub(crate) const MAX_CLIENT_FRAME_BYTES: usize = 64 * 1024;
/// Bad client messages tolerated on one WebSocket before it is closed (DESIGN §3).
pub(crate) const MAX_CLIENT_ERRORS: u32 = 10;

#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; default 127.0.0.1:8000 (`--bind`, `SWARMFEED_BIND`).
    pub bind: SocketAddr,
    /// Holds the database and `admin.token`; default ./data (`--data-dir`).
    pub data_dir: PathBuf,
    /// A `postgres://` URL to share one log between several nodes; `None` (the
    /// default) keeps the log in SQLite inside `data_dir` (`--database`,
    /// `SWARMFEED_DATABASE`).
    pub database: Option<String>,
    /// Serve HTTPS and WSS with this certificate and key (`--tls-cert`, `--tls-key`,
    /// `SWARMFEED_TLS_CERT`, `SWARMFEED_TLS_KEY`); `None` (the default) serves plain
    /// HTTP.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Serve without credentials; refused unless `bind` is loopback.
    pub no_auth: bool,
    /// Event frames per second per subscription; 0 sends each event at once.
    pub max_frames_per_sec: u32,
    /// Recent events kept in memory; older ones are read from the store.
    pub ring_capacity: usize,
    /// What one frame (or SSE flush, or poll answer) may carry.
    pub frame_limit: ReadLimit,
    pub writer: WriterSettings,
    pub ingest: IngestRules,
    /// Cap on a request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Read-only database connections (SQLite), or pooled ones (PostgreSQL).
    pub read_connections: usize,
    /// How long a PostgreSQL commit or read may take (`--store-timeout`).
    pub store_timeout: Duration,
    /// How long shutdown waits for connections to close before giving up on them.
    pub shutdown_grace: Duration,
    /// Interval of SSE keep-alive comments and WebSocket pings.
    pub keepalive: Duration,
    /// How often the node re-reads which tokens are revoked: the bound on how long a
    /// token revoked by another process without a notification keeps its streams
    /// (default [`crate::auth::REVOCATION_SWEEP`], 2 s; no flag).
    pub revocation_sweep: Duration,
    /// Bid window, agent timeout and the coordinator's source name.
    pub coordinator: CoordinatorSettings,
    /// Run the built-in persona swarm (`--demo`).
    pub demo: Option<DemoSettings>,
    /// Connection, request, handshake and ingest limits, and client timeouts.
    pub limits: Limits,
    /// Origins besides this server's own host whose pages may open streams and send
    /// state-changing requests (`--allowed-origin`, repeatable).
    pub allowed_origins: Vec<String>,
    /// Names besides IP literals and `localhost` that `Host` may carry (`--allowed-host`,
    /// repeatable, `SWARMFEED_ALLOWED_HOSTS`): lower-case, without port. Checked on
    /// every request without auth, and wherever `Origin` is compared against `Host`.
    pub allowed_hosts: Vec<String>,
    /// How much of the log to keep (`--retain-days`, `--retain-events`); all by default.
    pub retention: RetentionSettings,
    /// How long browser sessions and login links live.
    pub sessions: SessionSettings,
    /// Where webhooks may send and how they retry.
    pub webhooks: WebhookSettings,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--no-auth is only allowed on a loopback address, not {0}; bind to 127.0.0.1 or use tokens")]
    NoAuthOffLoopback(SocketAddr),
    #[error("{name} must be at least {min}")]
    TooSmall { name: &'static str, min: usize },
    #[error(
        "--max-inflight-body-bytes ({budget}) must be at least --max-body-bytes ({body}), or no ingest body could be received"
    )]
    BodyBudgetBelowBody { budget: usize, body: usize },
    #[error("--allowed-host {0:?} is not a host name; give a name like feed.example.com, without scheme, port or path")]
    AllowedHost(String),
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: DEFAULT_BIND,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            database: None,
            tls: None,
            no_auth: false,
            max_frames_per_sec: DEFAULT_MAX_FRAMES_PER_SEC,
            ring_capacity: DEFAULT_RING_CAPACITY,
            frame_limit: ReadLimit { max_events: 5_000, max_bytes: FRAME_MAX_BYTES },
            writer: WriterSettings::default(),
            ingest: IngestRules::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            read_connections: crate::store::sqlite::DEFAULT_READ_CONNECTIONS,
            store_timeout: crate::store::postgres::DEFAULT_TIMEOUT,
            shutdown_grace: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            revocation_sweep: crate::auth::REVOCATION_SWEEP,
            coordinator: CoordinatorSettings::default(),
            demo: None,
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            retention: RetentionSettings::default(),
            sessions: SessionSettings::default(),
            webhooks: WebhookSettings::default(),
        }
    }
}

impl Config {
    /// The scheme this server's pages are served with: `https` when it serves TLS
    /// itself. Behind a TLS-terminating proxy it is `http`, and the public origin is
    /// listed with `--allowed-origin https://…`.
    pub fn served_scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// # Errors
    /// The first setting that cannot work, named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.no_auth && !self.bind.ip().is_loopback() {
            return Err(ConfigError::NoAuthOffLoopback(self.bind));
        }
        let mins = [
            ("--ring-capacity", self.ring_capacity, 1),
            ("--writer-queue-events", self.writer.queue_events, crate::ingest::MAX_BATCH),
            ("--read-connections", self.read_connections, 1),
            ("--max-body-bytes", self.max_body_bytes, 1024),
            ("--max-open-tasks", self.coordinator.projection.open_tasks, 1),
            ("--max-online-agents", self.coordinator.projection.online_agents, 1),
            ("--max-bids-per-auction", self.coordinator.projection.bids_per_auction, 1),
        ];
        if self.coordinator.bid_window.is_zero() {
            return Err(ConfigError::TooSmall { name: "--bid-window", min: 1 });
        }
        if self.coordinator.agent_timeout.is_zero() {
            return Err(ConfigError::TooSmall { name: "--agent-timeout", min: 1 });
        }
        if self.retention.events == Some(0) {
            return Err(ConfigError::TooSmall { name: "--retain-events", min: 1 });
        }
        if self.retention.days == Some(0) {
            return Err(ConfigError::TooSmall { name: "--retain-days", min: 1 });
        }
        for (name, value, min) in mins {
            if value < min {
                return Err(ConfigError::TooSmall { name, min });
            }
        }
        let budget = self.limits.max_inflight_body_bytes;
        if budget != 0 && budget < self.max_body_bytes {
            return Err(ConfigError::BodyBudgetBelowBody { budget, body: self.max_body_bytes });
        }
        if let Some(bad) = self.allowed_hosts.iter().find(|h| !is_host_name(h)) {
            return Err(ConfigError::AllowedHost(bad.clone()));
        }
        Ok(())
    }
}

/// A DNS name as `--allowed-host` takes it: lower-case labels of letters, digits,
/// `-` and `_`, separated by dots. IP literals need no listing (every one is accepted).
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_auth_is_refused_off_loopback() {
        let mut c = Config { no_auth: true, ..Config::default() };
        assert!(c.validate().is_ok());
        c.bind = "0.0.0.0:8000".parse().unwrap();
        assert!(matches!(c.validate(), Err(ConfigError::NoAuthOffLoopback(_))));
        c.bind = "[::1]:8000".parse().unwrap();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_writer_queue_smaller_than_a_batch_is_refused() {
        let mut c = Config::default();
        c.writer.queue_events = 10;
        assert!(matches!(c.validate(), Err(ConfigError::TooSmall { name: "--writer-queue-events", .. })));
    }

    #[test]
    fn a_body_budget_smaller_than_one_ingest_body_is_refused() {
        let mut c = Config::default();
        c.limits.max_inflight_body_bytes = c.max_body_bytes - 1;
        assert!(matches!(c.validate(), Err(ConfigError::BodyBudgetBelowBody { .. })));
        c.limits.max_inflight_body_bytes = 0;
        assert!(c.validate().is_ok(), "0 switches the budget off");
    }

    #[test]
    fn allowed_hosts_must_be_bare_names() {
        for bad in ["https://feed.example", "feed.example:8000", "feed.example/x", "", "a..b"] {
            let c = Config { allowed_hosts: vec![bad.to_owned()], ..Config::default() };
            assert!(matches!(c.validate(), Err(ConfigError::AllowedHost(_))), "{bad}");
        }
        let c = Config { allowed_hosts: vec!["feed.example.com".to_owned()], ..Config::default() };
        assert!(c.validate().is_ok());
    }
}

// The abuse limits of DESIGN §6, set here and enforced by `http::limits`; a limit of
// 0 switches it off.

/// Default concurrent connections per client IP (`--max-conns-per-ip`).
pub(crate) const DEFAULT_MAX_CONNS_PER_IP: u32 = 50;
/// Default concurrent connections in all (`--max-connections`).
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 20_000;
/// Default WebSocket/SSE handshakes per client IP per second (`--handshakes-per-ip-per-sec`).
pub(crate) const DEFAULT_HANDSHAKES_PER_IP_PER_SEC: u32 = 20;
/// Default HTTP requests per client IP per second (`--requests-per-ip-per-sec`).
pub(crate) const DEFAULT_REQUESTS_PER_IP_PER_SEC: u32 = 1_000;
/// Default ingested events per token per second (`--ingest-rate-per-token`).
pub(crate) const DEFAULT_INGEST_RATE_PER_TOKEN: u32 = 20_000;
/// Default budget for the bytes of all request bodies being received at once
/// (`--max-inflight-body-bytes`): eight full 16 MiB ingest batches. The bench's
/// producers post batches of a few hundred KiB, far below it.
pub(crate) const DEFAULT_MAX_INFLIGHT_BODY_BYTES: usize = 128 * 1024 * 1024;
/// Default time a client has to send a request's headers (`--header-timeout`).
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's body (`--body-timeout`).
pub(crate) const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default seconds a response may make no progress towards a client that does not
/// read it (`--write-timeout`).
pub(crate) const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The limits in force.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_conns_per_ip: u32,
    pub max_connections: u32,
    pub handshakes_per_ip_per_sec: u32,
    pub requests_per_ip_per_sec: u32,
    pub ingest_rate_per_token: u32,
    /// A client must send a request's headers within this (slowloris defence).
    pub header_timeout: Duration,
    /// A client must send a request's body within this.
    pub body_timeout: Duration,
    /// A response (or a stream's frame) that makes no progress towards the client for
    /// this long ends the connection, so a client that never reads cannot hold it.
    pub write_timeout: Duration,
    /// Bytes all request bodies being received may hold together; 0 = no budget.
    pub max_inflight_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns_per_ip: DEFAULT_MAX_CONNS_PER_IP,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshakes_per_ip_per_sec: DEFAULT_HANDSHAKES_PER_IP_PER_SEC,
            requests_per_ip_per_sec: DEFAULT_REQUESTS_PER_IP_PER_SEC,
            ingest_rate_per_token: DEFAULT_INGEST_RATE_PER_TOKEN,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            max_inflight_body_bytes: DEFAULT_MAX_INFLIGHT_BODY_BYTES,
        }
    }
}

impl Limits {
    /// No limit at all: for load tests from one address.
    pub fn unlimited() -> Self {
        Limits {
            max_conns_per_ip: 0,
            max_connections: 0,
            handshakes_per_ip_per_sec: 0,
            requests_per_ip_per_sec: 0,
            ingest_rate_per_token: 0,
            ..Limits::default()
        }
    }
}
