//! The command line: `swarmfeed serve` and `swarmfeed token create`.
//!
//! Every flag also reads an environment variable `SWARMFEED_…`. This module only
//! parses; `config` checks the result and `main` runs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::Scope;
use crate::config::Config;
use crate::redact::Redactor;
use crate::swarm::demo::DemoSettings;
use crate::telemetry::LogFormat;

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SWARMFEED_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub data: DataArgs,
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
    /// Read-only database connections.
    #[arg(long, env = "SWARMFEED_READ_CONNECTIONS", default_value_t = crate::store::sqlite::DEFAULT_READ_CONNECTIONS)]
    pub read_connections: usize,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory for the database and admin.token.
    #[arg(long, env = "SWARMFEED_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Keep the log in this PostgreSQL database (postgres://user@host/db) instead of
    /// SQLite in the data directory; every node given the same URL shares one log.
    #[arg(long, env = "SWARMFEED_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
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
}

/// A flag whose value cannot work.
#[derive(Debug, thiserror::Error)]
pub enum BadFlag {
    #[error("--redact-key is not a valid regular expression: {0}")]
    RedactKey(#[from] regex::Error),
    #[error("{flag} must be a positive number of seconds, not {value}")]
    Seconds { flag: &'static str, value: f64 },
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration, BadFlag> {
    Duration::try_from_secs_f64(value).ok().filter(|d| !d.is_zero()).ok_or(BadFlag::Seconds { flag, value })
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
            ..Config::default()
        };
        config.writer.queue_events = self.writer_queue_events;
        config.ingest.max_data_bytes = self.max_data_bytes;
        config.ingest.redactor = Redactor::new(&self.redact_key)?;
        config.coordinator.bid_window = seconds("--bid-window", self.bid_window)?;
        config.coordinator.agent_timeout = seconds("--agent-timeout", self.agent_timeout)?;
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
    fn unknown_scopes_are_refused() {
        assert!(Cli::try_parse_from(["swarmfeed", "token", "create", "--scope", "root"]).is_err());
    }
}
