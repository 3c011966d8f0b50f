//! The command line: `swarmfeed serve`, `token`, `tail` and `emit`.
//!
//! Each setting is declared here once: its flag, its environment variable
//! `SWARMFEED_…`, its default and its help, in one field. `serve`'s flags are also the
//! keys of `swarmfeed.toml`, whose values `file_config` gives clap as their defaults.
//! This module only parses; `config` checks the result, `client` does the client work
//! and `main` runs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::Scope;
use crate::config::Config;
use crate::config::Limits;
use crate::redact::Redactor;
use crate::sessions::{DEFAULT_IDLE, DEFAULT_MAX_AGE, SessionSettings};
use crate::swarm::demo::DemoSettings;
use crate::swarm::projection::ProjectionLimits;
use crate::telemetry::LogFormat;

/// Where the client commands and `login-link` find the server without `--url`: the
/// address `serve` listens on by default.
const DEFAULT_URL: &str = "http://127.0.0.1:8000";

#[derive(Debug, Parser)]
#[command(name = "swarmfeed", version, about = "A durable, live activity feed for swarms of agents")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter, e.g. `info` or `swarmfeed=debug`.
    #[arg(long, global = true, env = "SWARMFEED_LOG", default_value = "info")]
    pub log: String,
    /// Log format.
    #[arg(long, global = true, env = "SWARMFEED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Settings file (TOML) for `serve` and `config`; without it, ./swarmfeed.toml is
    /// read if present.
    #[arg(long, global = true, env = "SWARMFEED_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print the effective configuration (flags > environment > file > defaults).
    Config(Box<ServeArgs>),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a one-time login link for the dashboard (valid once, for
    /// --login-link-minutes). Without --scope it logs in as the admin token in
    /// <data-dir>/admin.token; with --scope it issues a new token of that scope.
    LoginLink(LoginLinkArgs),
    /// Watch the live feed in a terminal; resumes exactly after a dropped connection.
    Tail(TailArgs),
    /// Post one event, or a JSON-lines file of them, to a running server.
    Emit(EmitArgs),
    /// Manage a running server's webhooks (admin token).
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

/// The subcommands that read `swarmfeed.toml`: `serve`, and `config`, which prints
/// what `serve` would run with. Both take [`ServeArgs`], whose flags are the file's keys.
pub(crate) const READ_THE_SETTINGS_FILE: [&str; 2] = ["serve", "config"];

impl Command {
    /// Whether this is one of [`READ_THE_SETTINGS_FILE`].
    pub fn reads_settings_file(&self) -> bool {
        matches!(self, Command::Serve(_) | Command::Config(_))
    }
}

#[derive(Debug, Args, serde::Serialize)]
pub struct ServeArgs {
    /// Address to listen on: an IP address or a host name, with a port
    /// (`localhost:8000`).
    #[arg(long, env = "SWARMFEED_BIND", default_value_t = crate::config::DEFAULT_BIND, value_parser = parse_bind)]
    pub bind: SocketAddr,
    #[command(flatten)]
    #[serde(flatten)]
    pub data: DataArgs,
    /// Serve HTTPS and WSS with this certificate chain (PEM, leaf first); reloaded,
    /// with --tls-key, on SIGHUP.
    #[arg(long, env = "SWARMFEED_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SWARMFEED_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve without authentication (only allowed on a loopback address).
    #[arg(long, env = "SWARMFEED_NO_AUTH")]
    pub no_auth: bool,
    /// Event frames per second per subscription; more events are coalesced into
    /// batches. 0 sends every event at once.
    #[arg(long, env = "SWARMFEED_MAX_FRAMES_PER_SEC", default_value_t = crate::config::DEFAULT_MAX_FRAMES_PER_SEC)]
    pub max_frames_per_sec: u32,
    /// Recent events kept in memory for live viewers.
    #[arg(long, env = "SWARMFEED_RING_CAPACITY", default_value_t = crate::hub::DEFAULT_RING_CAPACITY)]
    pub ring_capacity: usize,
    /// Events that may wait for a commit before ingest answers 503.
    #[arg(long, env = "SWARMFEED_WRITER_QUEUE_EVENTS", default_value_t = crate::writer::DEFAULT_QUEUE_EVENTS)]
    pub writer_queue_events: usize,
    /// Largest request body, bytes.
    #[arg(long, env = "SWARMFEED_MAX_BODY_BYTES", default_value_t = crate::config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest `data` of one event, serialised, bytes.
    #[arg(long, env = "SWARMFEED_MAX_DATA_BYTES", default_value_t = crate::ingest::DEFAULT_MAX_DATA_BYTES)]
    pub max_data_bytes: usize,
    /// Keys whose values are redacted at ingest, at any depth (a regular expression).
    #[arg(long, env = "SWARMFEED_REDACT_KEY", default_value = crate::redact::DEFAULT_KEY_PATTERN)]
    pub redact_key: String,
    /// Run a demo swarm of persona agents that join, bid, work and fail.
    #[arg(long, env = "SWARMFEED_DEMO")]
    pub demo: bool,
    /// Seconds between tasks the demo posts.
    #[arg(long, env = "SWARMFEED_DEMO_TASK_INTERVAL", default_value_t = crate::swarm::demo::DEFAULT_TASK_INTERVAL.as_secs_f64())]
    pub demo_task_interval: f64,
    /// Seconds an auction takes bids.
    #[arg(long, env = "SWARMFEED_BID_WINDOW", default_value_t = crate::swarm::coordinator::DEFAULT_BID_WINDOW.as_secs_f64())]
    pub bid_window: f64,
    /// Seconds of silence after which an agent is logged as left (reason timeout).
    #[arg(long, env = "SWARMFEED_AGENT_TIMEOUT", default_value_t = crate::swarm::coordinator::DEFAULT_AGENT_TIMEOUT.as_secs_f64())]
    pub agent_timeout: f64,
    /// Unfinished tasks the swarm projection keeps; past it the oldest leaves it (the
    /// log keeps it).
    #[arg(long, env = "SWARMFEED_MAX_OPEN_TASKS", default_value_t = ProjectionLimits::default().open_tasks)]
    pub max_open_tasks: usize,
    /// Online agents the swarm projection keeps; past it the one heard from longest ago
    /// leaves it.
    #[arg(long, env = "SWARMFEED_MAX_ONLINE_AGENTS", default_value_t = ProjectionLimits::default().online_agents)]
    pub max_online_agents: usize,
    /// Bids kept per auction; past it the worst bid goes (never the winner).
    #[arg(long, env = "SWARMFEED_MAX_BIDS_PER_AUCTION", default_value_t = ProjectionLimits::default().bids_per_auction)]
    pub max_bids_per_auction: usize,
    /// Finished tasks the swarm projection keeps; the oldest leave first.
    #[arg(long, env = "SWARMFEED_MAX_FINISHED_TASKS", default_value_t = ProjectionLimits::default().finished_tasks)]
    pub max_finished_tasks: usize,
    /// Offline agents the swarm projection keeps; the longest gone leave first.
    #[arg(long, env = "SWARMFEED_MAX_OFFLINE_AGENTS", default_value_t = ProjectionLimits::default().offline_agents)]
    pub max_offline_agents: usize,
    /// Concurrent connections per client IP (0 = no limit).
    #[arg(long, env = "SWARMFEED_MAX_CONNS_PER_IP", default_value_t = crate::config::DEFAULT_MAX_CONNS_PER_IP)]
    pub max_conns_per_ip: u32,
    /// Concurrent connections in all (0 = no limit).
    #[arg(long, env = "SWARMFEED_MAX_CONNECTIONS", default_value_t = crate::config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: u32,
    /// WebSocket and event-stream handshakes per client IP per second (0 = no limit).
    #[arg(long, env = "SWARMFEED_HANDSHAKES_PER_IP_PER_SEC", default_value_t = crate::config::DEFAULT_HANDSHAKES_PER_IP_PER_SEC)]
    pub handshakes_per_ip_per_sec: u32,
    /// HTTP requests per client IP per second (0 = no limit).
    #[arg(long, env = "SWARMFEED_REQUESTS_PER_IP_PER_SEC", default_value_t = crate::config::DEFAULT_REQUESTS_PER_IP_PER_SEC)]
    pub requests_per_ip_per_sec: u32,
    /// Events ingested per token per second (0 = no limit).
    #[arg(long, env = "SWARMFEED_INGEST_RATE_PER_TOKEN", default_value_t = crate::config::DEFAULT_INGEST_RATE_PER_TOKEN)]
    pub ingest_rate_per_token: u32,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "SWARMFEED_HEADER_TIMEOUT", default_value_t = crate::config::DEFAULT_HEADER_TIMEOUT.as_secs_f64())]
    pub header_timeout: f64,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "SWARMFEED_BODY_TIMEOUT", default_value_t = crate::config::DEFAULT_BODY_TIMEOUT.as_secs_f64())]
    pub body_timeout: f64,
    /// Seconds a response or stream may go without the client reading any of it before
    /// the connection is closed.
    #[arg(long, env = "SWARMFEED_WRITE_TIMEOUT", default_value_t = crate::config::DEFAULT_WRITE_TIMEOUT.as_secs_f64())]
    pub write_timeout: f64,
    /// Bytes all request bodies being received may hold together; over it, 503 with
    /// Retry-After (0 = no budget). At least --max-body-bytes.
    #[arg(long, env = "SWARMFEED_MAX_INFLIGHT_BODY_BYTES", default_value_t = crate::config::DEFAULT_MAX_INFLIGHT_BODY_BYTES)]
    pub max_inflight_body_bytes: usize,
    /// An origin (scheme://host[:port]) besides this server's own whose pages may use
    /// it; repeat for several.
    #[arg(long = "allowed-origin", env = "SWARMFEED_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// A host name, besides IP addresses and localhost, that requests may name in
    /// `Host` (e.g. feed.example.com, the name users open); repeat for several.
    /// Guards against DNS rebinding.
    #[arg(long = "allowed-host", env = "SWARMFEED_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,
    /// Keep only events newer than this many days (pruned in the background).
    #[arg(long, env = "SWARMFEED_RETAIN_DAYS")]
    pub retain_days: Option<u32>,
    /// Keep only this many newest events (pruned in the background).
    #[arg(long, env = "SWARMFEED_RETAIN_EVENTS")]
    pub retain_events: Option<u64>,
    /// Days after its commit that a pruned event's id still answers a re-send with its
    /// original seq (0 forgets pruned ids at once).
    #[arg(long, env = "SWARMFEED_IDEMPOTENCY_DAYS", default_value_t = crate::retention::DEFAULT_IDEMPOTENCY_DAYS)]
    pub idempotency_days: u32,
    /// Read-only database connections.
    #[arg(long, env = "SWARMFEED_READ_CONNECTIONS", default_value_t = crate::store::sqlite::DEFAULT_READ_CONNECTIONS)]
    pub read_connections: usize,
    /// Seconds a PostgreSQL commit or read may take before it is abandoned and the
    /// client told 503: what a stalled network costs a request at most.
    #[arg(long, env = "SWARMFEED_STORE_TIMEOUT", default_value_t = crate::store::postgres::DEFAULT_TIMEOUT.as_secs_f64())]
    pub store_timeout: f64,
    /// Minutes without use after which a browser session ends.
    #[arg(long, env = "SWARMFEED_SESSION_IDLE_MINUTES", default_value_t = DEFAULT_IDLE.as_secs_f64() / 60.0)]
    pub session_idle_minutes: f64,
    /// Days after which a browser session ends, used or not.
    #[arg(long, env = "SWARMFEED_SESSION_MAX_DAYS", default_value_t = DEFAULT_MAX_AGE.as_secs_f64() / 86_400.0)]
    pub session_max_days: f64,
    #[command(flatten)]
    #[serde(flatten)]
    pub login_link: LoginLinkMinutes,
    /// Let webhooks send to loopback, private, link-local and unique-local addresses
    /// (refused by default: SSRF protection).
    #[arg(long, env = "SWARMFEED_WEBHOOK_ALLOW_PRIVATE")]
    pub webhook_allow_private: bool,
    /// Seconds before a failed webhook delivery is tried again; doubled after each
    /// further failure.
    #[arg(long, env = "SWARMFEED_WEBHOOK_RETRY_MIN_SECS", default_value_t = crate::webhook::DEFAULT_RETRY_MIN.as_secs_f64())]
    pub webhook_retry_min_secs: f64,
    /// Longest wait, in seconds, between attempts of a failing webhook delivery.
    #[arg(long, env = "SWARMFEED_WEBHOOK_RETRY_MAX_SECS", default_value_t = crate::webhook::DEFAULT_RETRY_MAX.as_secs_f64())]
    pub webhook_retry_max_secs: f64,
}

/// How long a login link works, for `serve` (the link it prints) and `login-link`.
#[derive(Debug, Args, serde::Serialize)]
pub struct LoginLinkMinutes {
    /// Minutes a printed login link stays valid (it works once).
    #[arg(long, env = "SWARMFEED_LOGIN_LINK_MINUTES", default_value_t = crate::login_link::DEFAULT_VALID_FOR.as_secs_f64() / 60.0)]
    pub login_link_minutes: f64,
}

impl LoginLinkMinutes {
    /// # Errors
    /// The number of minutes is not positive.
    pub fn valid_for(&self) -> Result<Duration, BadFlag> {
        minutes("--login-link-minutes", self.login_link_minutes)
    }
}

#[derive(Debug, Args)]
pub struct LoginLinkArgs {
    /// Issue a new token with this scope (read, write or admin) for the link, instead
    /// of using the admin token in <data-dir>/admin.token.
    #[arg(long)]
    pub scope: Option<Scope>,
    /// A name for the new token (with --scope), to recognise it in `token list`.
    #[arg(long, requires = "scope")]
    pub name: Option<String>,
    /// The server's base URL, as a browser reaches it.
    #[arg(long, env = "SWARMFEED_URL", default_value = DEFAULT_URL)]
    pub url: String,
    #[command(flatten)]
    pub valid: LoginLinkMinutes,
    #[command(flatten)]
    pub data: DataArgs,
}

#[derive(Debug, Args, serde::Serialize)]
pub struct DataArgs {
    /// Directory for the database and admin.token.
    #[arg(long, env = "SWARMFEED_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Keep the log in this PostgreSQL database (postgres://user@host/db) instead of
    /// SQLite in the data directory; every node given the same URL shares one log.
    #[arg(long, env = "SWARMFEED_DATABASE", hide_env_values = true)]
    #[serde(serialize_with = "masked_url", skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Prints a database URL with its password, if any, replaced by `****`.
fn masked_url<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&url.as_deref().map(mask_password).unwrap_or_default())
}

/// `postgres://user:secret@host/db` → `postgres://user:****@host/db`.
pub(crate) fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let Some((credentials, host)) = rest.rsplit_once('@') else { return url.to_owned() };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:****@{host}"),
        None => url.to_owned(),
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token and print it (once: only its hash is kept).
    Create {
        /// read (dashboards, subscriptions), write (ingest, coordinator) or admin.
        #[arg(long)]
        scope: Scope,
        /// A name to recognise it by.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List tokens (ids, names, scopes; never secrets).
    List {
        #[command(flatten)]
        data: DataArgs,
    },
    /// Revoke a token by id; running servers end its streams and refuse it within 2 s
    /// (at once on PostgreSQL, which notifies every node).
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
        #[command(flatten)]
        data: DataArgs,
    },
}

/// `--bind`: an address, or a host name with a port resolved once at start. Of a
/// name's addresses an IPv4 one is preferred, as `localhost` users expect 127.0.0.1.
fn parse_bind(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(value)
        .map_err(|e| format!("expected an address or a host name with a port, like localhost:8000 ({e})"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{value} resolves to no address"))
}

/// Where a client command finds the server and its credentials. Clients never open
/// the store, so only the data directory (for `admin.token`) is asked for.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The server's base URL.
    #[arg(long, env = "SWARMFEED_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// Bearer token; without it, `<data-dir>/admin.token` is used if it exists.
    #[arg(long, env = "SWARMFEED_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's data directory, to read its `admin.token` when no token is given.
    #[arg(long, env = "SWARMFEED_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// With an https:// URL, trust the CA certificates of this PEM file instead of the
    /// system's roots.
    #[arg(long, env = "SWARMFEED_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl RemoteArgs {
    /// The token to send: `--token` (or `SWARMFEED_TOKEN`), else the admin token a
    /// local server wrote on first start, else none (a `--no-auth` server).
    ///
    /// # Errors
    /// `admin.token` exists but cannot be read.
    pub fn resolve_token(&self) -> std::io::Result<Option<String>> {
        if let Some(t) = &self.token {
            return Ok(Some(t.trim().to_owned()));
        }
        let path = self.data_dir.join(crate::auth::ADMIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t.trim().to_owned()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which events a client command follows (`tail`) or a webhook delivers: the server's
/// filter (DESIGN §2), as flags.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Event types: exact types or prefixes ending in `.*`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only events of this task.
    #[arg(long)]
    pub task: Option<String>,
    /// Only events of this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only events from this source.
    #[arg(long)]
    pub source: Option<String>,
}

impl FilterArgs {
    /// The filter these flags describe, as the server's API takes it.
    pub fn into_spec(self) -> crate::filter::FilterSpec {
        crate::filter::FilterSpec { types: self.types, task_id: self.task, agent_id: self.agent, source: self.source }
    }
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Start after this seq (0 = from the oldest retained event); without it, only
    /// events from now on.
    #[arg(long)]
    pub since: Option<u64>,
    /// Print from `--since` up to the newest event as it was when tail started, then
    /// exit 0 instead of following the log live.
    #[arg(long, requires = "since")]
    pub until_head: bool,
    /// Print each event's JSON payload, exactly as the server sent it, one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EmitArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// The event type, e.g. `task.created`.
    #[arg(required_unless_present = "file")]
    pub event_type: Option<String>,
    /// The component or agent that emits it.
    #[arg(long, required_unless_present = "file")]
    pub source: Option<String>,
    /// The task it concerns.
    #[arg(long)]
    pub task: Option<String>,
    /// The agent it concerns.
    #[arg(long)]
    pub agent: Option<String>,
    /// Event data, a JSON object, e.g. `{"description":"sort the logs"}`.
    #[arg(long)]
    pub data: Option<String>,
    /// Idempotency key: posting the same id again stores nothing new. Default: a new
    /// UUIDv7, so that retries of this one command never duplicate it.
    #[arg(long)]
    pub id: Option<String>,
    /// Post every event of a JSON-lines file (one event object a line), in batches.
    #[arg(long, conflicts_with_all = ["event_type", "source", "task", "agent", "data", "id"])]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Add a webhook and print its id and secret (the secret only this once).
    Add(WebhookAddArgs),
    /// List webhooks: where they send, how far behind they are, whether they fail.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Remove a webhook by id; its deliveries stop.
    Rm {
        /// The webhook's id, as `webhook list` shows it.
        id: String,
        #[command(flatten)]
        remote: RemoteArgs,
    },
}

#[derive(Debug, Args)]
pub struct WebhookAddArgs {
    /// Where to POST deliveries: an http:// or https:// URL.
    pub target: String,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// `standard` (signed batches of events) or `slack` (one text message per event).
    #[arg(long, value_parser = ["standard", "slack"])]
    pub format: Option<String>,
    /// Also deliver the events after this seq; without it, only events from now on.
    #[arg(long)]
    pub since: Option<u64>,
}

/// A flag whose value cannot work.
#[derive(Debug, thiserror::Error)]
pub enum BadFlag {
    #[error("--redact-key is not a valid regular expression: {0}")]
    RedactKey(#[from] regex::Error),
    #[error("{flag} must be a positive number of seconds, not {value}")]
    Seconds { flag: &'static str, value: f64 },
    #[error("{flag} must be a positive number of minutes, not {value}")]
    Minutes { flag: &'static str, value: f64 },
    #[error("{flag} must be a positive number of days, not {value}")]
    Days { flag: &'static str, value: f64 },
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration, BadFlag> {
    Duration::try_from_secs_f64(value).ok().filter(|d| !d.is_zero()).ok_or(BadFlag::Seconds { flag, value })
}

fn minutes(flag: &'static str, value: f64) -> Result<Duration, BadFlag> {
    seconds(flag, value * 60.0).map_err(|_| BadFlag::Minutes { flag, value })
}

fn days(flag: &'static str, value: f64) -> Result<Duration, BadFlag> {
    seconds(flag, value * 86_400.0).map_err(|_| BadFlag::Days { flag, value })
}

impl ServeArgs {
    /// # Errors
    /// `--redact-key` does not compile, or a duration is not a positive number.
    pub fn into_config(self) -> Result<Config, BadFlag> {
        let mut config = Config {
            bind: self.bind,
            data_dir: self.data.data_dir,
            database: self.data.database,
            no_auth: self.no_auth,
            max_frames_per_sec: self.max_frames_per_sec,
            ring_capacity: self.ring_capacity,
            max_body_bytes: self.max_body_bytes,
            read_connections: self.read_connections,
            store_timeout: seconds("--store-timeout", self.store_timeout)?,
            tls: self.tls_cert.zip(self.tls_key).map(|(cert, key)| crate::tls::TlsFiles { cert, key }),
            ..Config::default()
        };
        config.writer.queue_events = self.writer_queue_events;
        config.ingest.max_data_bytes = self.max_data_bytes;
        config.ingest.redactor = Redactor::new(&self.redact_key)?;
        config.coordinator.bid_window = seconds("--bid-window", self.bid_window)?;
        config.coordinator.agent_timeout = seconds("--agent-timeout", self.agent_timeout)?;
        config.coordinator.projection = ProjectionLimits {
            open_tasks: self.max_open_tasks,
            online_agents: self.max_online_agents,
            bids_per_auction: self.max_bids_per_auction,
            finished_tasks: self.max_finished_tasks,
            offline_agents: self.max_offline_agents,
        };
        config.limits = Limits {
            max_conns_per_ip: self.max_conns_per_ip,
            max_connections: self.max_connections,
            handshakes_per_ip_per_sec: self.handshakes_per_ip_per_sec,
            requests_per_ip_per_sec: self.requests_per_ip_per_sec,
            ingest_rate_per_token: self.ingest_rate_per_token,
            header_timeout: seconds("--header-timeout", self.header_timeout)?,
            body_timeout: seconds("--body-timeout", self.body_timeout)?,
            write_timeout: seconds("--write-timeout", self.write_timeout)?,
            max_inflight_body_bytes: self.max_inflight_body_bytes,
        };
        config.allowed_origins = self.allowed_origins;
        config.sessions = SessionSettings {
            idle: minutes("--session-idle-minutes", self.session_idle_minutes)?,
            max_age: days("--session-max-days", self.session_max_days)?,
            login_link: self.login_link.valid_for()?,
        };
        // Names compare case-insensitively and without the root dot; `Config::validate`
        // refuses what is not a name.
        config.allowed_hosts =
            self.allowed_hosts.iter().map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).collect();
        config.retention.days = self.retain_days;
        config.retention.events = self.retain_events;
        config.retention.idempotency_days = self.idempotency_days;
        config.webhooks.allow_private = self.webhook_allow_private;
        config.webhooks.retry_min = seconds("--webhook-retry-min-secs", self.webhook_retry_min_secs)?;
        config.webhooks.retry_max = seconds("--webhook-retry-max-secs", self.webhook_retry_max_secs)?;
        if self.demo {
            config.demo =
                Some(DemoSettings { task_interval: seconds("--demo-task-interval", self.demo_task_interval)? });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults_match_the_design() {
        let cli = Cli::try_parse_from(["swarmfeed", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let config = args.into_config().unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8000");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.max_frames_per_sec, 10);
        assert_eq!(config.database, None, "SQLite unless told otherwise");
        assert_eq!(config.sessions, SessionSettings::default(), "720 idle minutes, 30 days, 15-minute links");
        let webhooks = &config.webhooks;
        assert!(!webhooks.allow_private, "private destinations are refused unless allowed");
        assert_eq!((webhooks.retry_min, webhooks.retry_max), (Duration::from_secs(1), Duration::from_secs(300)));
        assert_eq!(webhooks.attempt_timeout, Duration::from_secs(10));
    }

    #[test]
    fn a_database_url_selects_the_shared_store() {
        let url = "postgres://postgres@127.0.0.1:5432/swarmfeed";
        let cli = Cli::try_parse_from(["swarmfeed", "serve", "--database", url]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.into_config().unwrap().database.as_deref(), Some(url));
        let cli = Cli::try_parse_from(["swarmfeed", "token", "create", "--scope", "read", "--database", url]).unwrap();
        let Command::Token(TokenCommand::Create { data, .. }) = cli.command else { panic!("not token create") };
        assert_eq!(data.database.as_deref(), Some(url));
    }

    #[test]
    fn durations_must_be_positive() {
        let cli = Cli::try_parse_from(["swarmfeed", "serve", "--bid-window", "0"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert!(matches!(args.into_config(), Err(BadFlag::Seconds { flag: "--bid-window", .. })));
        let cli = Cli::try_parse_from(["swarmfeed", "serve", "--demo", "--bid-window", "2.5"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let config = args.into_config().unwrap();
        assert_eq!(config.coordinator.bid_window, Duration::from_millis(2500));
        assert!(config.demo.is_some());
    }

    #[test]
    fn emit_needs_a_type_and_source_or_a_file_but_not_both() {
        assert!(Cli::try_parse_from(["swarmfeed", "emit", "task.created", "--source", "s"]).is_ok());
        assert!(Cli::try_parse_from(["swarmfeed", "emit", "--file", "e.jsonl"]).is_ok());
        assert!(Cli::try_parse_from(["swarmfeed", "emit", "task.created"]).is_err());
        assert!(Cli::try_parse_from(["swarmfeed", "emit", "task.created", "--source", "s", "--file", "e"]).is_err());
    }

    #[test]
    fn tail_types_are_comma_separated() {
        let cli =
            Cli::try_parse_from(["swarmfeed", "tail", "--types", "task.*,bid.submitted", "--since", "0"]).unwrap();
        let Command::Tail(args) = cli.command else { panic!("not tail") };
        assert_eq!(args.filter.types, ["task.*", "bid.submitted"]);
        assert_eq!(args.since, Some(0));
    }

    #[test]
    fn the_token_flag_wins_over_the_admin_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let remote = |token: Option<&str>| RemoteArgs {
            url: String::new(),
            ca_file: None,
            token: token.map(str::to_owned),
            data_dir: dir.path().to_path_buf(),
        };
        assert_eq!(remote(None).resolve_token().unwrap(), None, "no file, no flag: no token");
        std::fs::write(dir.path().join(crate::auth::ADMIN_TOKEN_FILE), "from-file\n").unwrap();
        assert_eq!(remote(None).resolve_token().unwrap().as_deref(), Some("from-file"));
        assert_eq!(remote(Some("flag")).resolve_token().unwrap().as_deref(), Some("flag"));
    }

    #[test]
    fn database_passwords_are_masked() {
        assert_eq!(mask_password("postgres://sf:hunter2@db:5432/feed"), "postgres://sf:****@db:5432/feed");
        assert_eq!(mask_password("postgres://sf@db/feed"), "postgres://sf@db/feed");
        assert_eq!(mask_password("not a url"), "not a url");
    }

    #[test]
    fn session_lifetimes_must_be_positive() {
        for (flag, value) in
            [("--session-idle-minutes", "0"), ("--session-max-days", "-1"), ("--login-link-minutes", "nan")]
        {
            let cli = Cli::try_parse_from(["swarmfeed", "serve", &format!("{flag}={value}")]).unwrap();
            let Command::Serve(args) = cli.command else { panic!("not serve") };
            let e = args.into_config().unwrap_err().to_string();
            assert!(e.starts_with(flag), "{e}");
        }
        let cli = Cli::try_parse_from(["swarmfeed", "serve", "--session-idle-minutes", "1.5"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.into_config().unwrap().sessions.idle, Duration::from_secs(90));
        assert!(Cli::try_parse_from(["swarmfeed", "login-link", "--name", "phone"]).is_err(), "--name needs --scope");
        assert!(Cli::try_parse_from(["swarmfeed", "login-link", "--scope", "read", "--name", "phone"]).is_ok());
    }

    #[test]
    fn allowed_hosts_repeat_or_come_comma_separated_and_are_lower_cased() {
        let cli = Cli::try_parse_from([
            "swarmfeed",
            "serve",
            "--allowed-host",
            "Feed.Example.com.",
            "--allowed-host",
            "a.example,b.example",
            "--write-timeout",
            "2.5",
            "--max-inflight-body-bytes",
            "33554432",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        let config = args.into_config().unwrap();
        assert_eq!(config.allowed_hosts, ["feed.example.com", "a.example", "b.example"]);
        assert_eq!(config.limits.write_timeout, Duration::from_millis(2500));
        assert_eq!(config.limits.max_inflight_body_bytes, 32 * 1024 * 1024);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn bind_takes_a_host_name_or_an_address() {
        assert_eq!(parse_bind("localhost:8000").unwrap().to_string(), "127.0.0.1:8000");
        assert_eq!(parse_bind("[::1]:9").unwrap().to_string(), "[::1]:9");
        assert!(parse_bind("localhost").is_err(), "a port is needed");
    }

    #[test]
    fn clients_are_not_offered_a_database() {
        for client in ["tail", "emit"] {
            let cli = Cli::try_parse_from(["swarmfeed", client, "--database", "postgres://x/y"]);
            assert!(cli.is_err(), "{client} --database is refused");
        }
    }

    #[test]
    fn the_commands_that_read_the_settings_file_are_named_alike_in_both_places() {
        use clap::CommandFactory;
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let name = sub.get_name();
            // The least each subcommand takes; help and token have subcommands of their own.
            let argv: Vec<&str> = match name {
                "emit" => vec!["swarmfeed", name, "--file", "f"],
                "token" | "webhook" => vec!["swarmfeed", name, "list"],
                _ => vec!["swarmfeed", name],
            };
            let parsed = Cli::try_parse_from(argv).unwrap().command;
            assert_eq!(parsed.reads_settings_file(), READ_THE_SETTINGS_FILE.contains(&name), "{name}");
        }
    }

    #[test]
    fn unknown_scopes_are_refused() {
        assert!(Cli::try_parse_from(["swarmfeed", "token", "create", "--scope", "root"]).is_err());
    }
}
