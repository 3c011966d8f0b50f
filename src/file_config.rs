//! `swarmfeed.toml`: the settings file under the flags and environment variables.
//!
//! Precedence is flag > environment variable > file > built-in default: a file value
//! is used only where clap reports that the value came from its default. Keys are the
//! flags' names in snake_case (`max_frames_per_sec = 0`); an unknown key is an error
//! that names it, so a typo never silently leaves a default in force.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::cli::ServeArgs;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "swarmfeed.toml";

/// Every setting `swarmfeed serve` takes, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// An address or a host name with a port, as `--bind`.
    #[serde(default, deserialize_with = "bind_address")]
    bind: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    /// A PostgreSQL URL, as `--database`.
    database: Option<String>,
    no_auth: Option<bool>,
    max_frames_per_sec: Option<u32>,
    ring_capacity: Option<usize>,
    writer_queue_events: Option<usize>,
    max_body_bytes: Option<usize>,
    max_data_bytes: Option<usize>,
    /// One redaction pattern, as `--redact-key`.
    redact_key: Option<String>,
    /// Several redaction patterns; a key matching any of them is redacted.
    redact_keys: Option<Vec<String>>,
    demo: Option<bool>,
    demo_task_interval: Option<f64>,
    bid_window: Option<f64>,
    agent_timeout: Option<f64>,
    max_conns_per_ip: Option<u32>,
    max_connections: Option<u32>,
    handshakes_per_ip_per_sec: Option<u32>,
    requests_per_ip_per_sec: Option<u32>,
    ingest_rate_per_token: Option<u32>,
    header_timeout: Option<f64>,
    body_timeout: Option<f64>,
    write_timeout: Option<f64>,
    max_inflight_body_bytes: Option<usize>,
    allowed_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
    retain_days: Option<u32>,
    retain_events: Option<u64>,
    read_connections: Option<usize>,
    session_idle_minutes: Option<f64>,
    session_max_days: Option<f64>,
    login_link_minutes: Option<f64>,
    idempotency_days: Option<u32>,
    max_open_tasks: Option<usize>,
    max_online_agents: Option<usize>,
    max_bids_per_auction: Option<usize>,
    max_finished_tasks: Option<usize>,
    max_offline_agents: Option<usize>,
}

/// `bind` read as `--bind` reads it, host names included.
fn bind_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    crate::cli::parse_bind(&text).map(Some).map_err(serde::de::Error::custom)
}

/// A settings file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: use either redact_key or redact_keys, not both")]
    BothRedactions { path: String },
}

/// Reads the settings file: `explicit` if given (it must exist), else
/// [`DEFAULT_FILE`] in the working directory if there is one.
///
/// # Errors
/// The file cannot be read, is not TOML, or has a key or value that does not fit.
pub fn load(explicit: Option<&Path>) -> Result<Option<(PathBuf, FileConfig)>, FileError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
        None => return Ok(None),
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| FileError::Read { path: shown.clone(), source })?;
    let file: FileConfig =
        toml::from_str(&text).map_err(|e| FileError::Parse { path: shown.clone(), message: e.to_string() })?;
    if file.redact_key.is_some() && file.redact_keys.is_some() {
        return Err(FileError::BothRedactions { path: shown });
    }
    Ok(Some((path, file)))
}

/// Whether the user set `id` on the command line or in the environment.
fn set_by_user(matches: &ArgMatches, id: &str) -> bool {
    matches!(matches.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable))
}

impl FileConfig {
    /// Fills into `args` every value the user did not give as a flag or variable.
    pub fn apply(self, args: &mut ServeArgs, matches: &ArgMatches) {
        macro_rules! layer {
            ($($field:ident => $target:expr),* $(,)?) => {
                $(
                    if let Some(value) = self.$field
                        && !set_by_user(matches, stringify!($field))
                    {
                        $target = value;
                    }
                )*
            };
        }
        let redact_key = self.redact_keys.map(|list| {
            // One alternation: a key matching any listed pattern is redacted.
            list.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|")
        });
        if let Some(value) = redact_key.or(self.redact_key)
            && !set_by_user(matches, "redact_key")
        {
            args.redact_key = value;
        }
        if let Some(value) = self.allowed_origins
            && !set_by_user(matches, "allowed_origins")
        {
            args.allowed_origins = value;
        }
        if let Some(value) = self.allowed_hosts
            && !set_by_user(matches, "allowed_hosts")
        {
            args.allowed_hosts = value;
        }
        if let Some(value) = self.database
            && !set_by_user(matches, "database")
        {
            args.data.database = Some(value);
        }
        if let Some(value) = self.retain_days
            && !set_by_user(matches, "retain_days")
        {
            args.retain_days = Some(value);
        }
        if let Some(value) = self.retain_events
            && !set_by_user(matches, "retain_events")
        {
            args.retain_events = Some(value);
        }
        layer! {
            bind => args.bind,
            data_dir => args.data.data_dir,
            no_auth => args.no_auth,
            max_frames_per_sec => args.max_frames_per_sec,
            ring_capacity => args.ring_capacity,
            writer_queue_events => args.writer_queue_events,
            max_body_bytes => args.max_body_bytes,
            max_data_bytes => args.max_data_bytes,
            demo => args.demo,
            demo_task_interval => args.demo_task_interval,
            bid_window => args.bid_window,
            agent_timeout => args.agent_timeout,
            max_conns_per_ip => args.max_conns_per_ip,
            max_connections => args.max_connections,
            handshakes_per_ip_per_sec => args.handshakes_per_ip_per_sec,
            requests_per_ip_per_sec => args.requests_per_ip_per_sec,
            ingest_rate_per_token => args.ingest_rate_per_token,
            header_timeout => args.header_timeout,
            body_timeout => args.body_timeout,
            write_timeout => args.write_timeout,
            max_inflight_body_bytes => args.max_inflight_body_bytes,
            read_connections => args.read_connections,
            session_idle_minutes => args.session_idle_minutes,
            session_max_days => args.session_max_days,
            login_link_minutes => args.login_link.login_link_minutes,
            idempotency_days => args.idempotency_days,
            max_open_tasks => args.max_open_tasks,
            max_online_agents => args.max_online_agents,
            max_bids_per_auction => args.max_bids_per_auction,
            max_finished_tasks => args.max_finished_tasks,
            max_offline_agents => args.max_offline_agents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, FromArgMatches};

    fn serve_args(argv: &[&str], file: &str) -> ServeArgs {
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let Command::Serve(mut args) = cli.command else { panic!("serve") };
        let file: FileConfig = toml::from_str(file).unwrap();
        file.apply(&mut args, matches.subcommand_matches("serve").unwrap());
        *args
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let args = serve_args(
            &["swarmfeed", "serve", "--max-frames-per-sec", "3"],
            "max_frames_per_sec = 7\nring_capacity = 99\nbind = \"127.0.0.1:9000\"",
        );
        assert_eq!(args.max_frames_per_sec, 3, "flag wins");
        assert_eq!(args.ring_capacity, 99, "file fills a default");
        assert_eq!(args.bind.to_string(), "127.0.0.1:9000");
        let named = serve_args(&["swarmfeed", "serve"], "bind = \"localhost:9001\"");
        assert_eq!(named.bind.to_string(), "127.0.0.1:9001", "a host name, as --bind takes");
        assert!(toml::from_str::<FileConfig>("bind = \"localhost\"").is_err(), "a port is needed");
    }

    #[test]
    fn the_file_sets_allowed_hosts_the_body_budget_and_the_write_timeout() {
        let args = serve_args(
            &["swarmfeed", "serve", "--write-timeout", "5"],
            "allowed_hosts = [\"Feed.Example.com\"]\nmax_inflight_body_bytes = 33554432\nwrite_timeout = 9",
        );
        assert_eq!(args.write_timeout, 5.0, "flag wins");
        let config = args.into_config().unwrap();
        assert_eq!(config.allowed_hosts, ["feed.example.com"]);
        assert_eq!(config.limits.max_inflight_body_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = toml::from_str::<FileConfig>("max_frame_per_sec = 1").unwrap_err().to_string();
        assert!(err.contains("max_frame_per_sec"), "{err}");
        assert!(toml::from_str::<FileConfig>("ring_capacity = \"big\"").is_err());
    }

    #[test]
    fn a_list_of_redaction_patterns_becomes_one_alternation() {
        let args = serve_args(&["swarmfeed", "serve"], "redact_keys = [\"(?i)^ssn$\", \"iban\"]");
        assert_eq!(args.redact_key, "(?:(?i)^ssn$)|(?:iban)");
        let config = args.into_config().unwrap();
        let mut v = serde_json::json!({"SSN": 1, "iban": 2, "password": 3});
        config.ingest.redactor.redact(&mut v);
        assert_eq!(v, serde_json::json!({"SSN": "[REDACTED]", "iban": "[REDACTED]", "password": 3}));
    }

    #[test]
    fn a_named_file_must_exist() {
        assert!(matches!(load(Some(Path::new("/nonexistent/swarmfeed.toml"))), Err(FileError::Read { .. })));
    }
}
