//! `swarmfeed.toml`: the settings file under the flags and environment variables.
//!
//! The file declares no setting of its own. Its keys are the ids of `serve`'s flags
//! (the flag's name in snake_case: `max_frames_per_sec = 0`), and its values become
//! those flags' defaults before the command line is parsed, so clap itself gives the
//! order flag > environment variable > file > built-in default, and each value goes
//! through its flag's own parser (`bind` takes a host name as `--bind` does). A new
//! flag of `serve` is a new key, with nothing to add here.
//!
//! A key that is no flag of `serve` is an error that names it, so a typo never
//! silently leaves a default in force; so is a value of the wrong TOML type, or one
//! its flag's parser refuses. The program's own options (`--log`, `--log-format`,
//! `--config`) are not keys: they are read before the file is. Only `redact_keys`, a
//! list of patterns joined into one `redact_key`, belongs to the file alone.

use std::any::TypeId;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, CommandFactory};

use crate::cli::{Cli, READ_THE_SETTINGS_FILE};

/// The file read when `--config` is not given, if it exists.
pub(crate) const DEFAULT_FILE: &str = "swarmfeed.toml";

/// The file's own key: several redaction patterns, a key matching any of them being
/// redacted. It becomes `redact_key`, so the two cannot both be given.
const REDACT_KEYS: &str = "redact_keys";

/// A settings file, read and parsed as TOML; its keys are checked against the flags
/// by [`SettingsFile::command`].
#[derive(Debug)]
pub struct SettingsFile {
    path: PathBuf,
    table: toml::Table,
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
    #[error("{path}: unknown key {key:?}; the keys are the flags of `swarmfeed serve --help`, in snake_case")]
    UnknownKey { path: String, key: String },
    #[error("{path}: {key} takes {expected}, not {found}")]
    WrongType { path: String, key: String, expected: &'static str, found: String },
    #[error("{path}: {key} = {value}: {reason}")]
    BadValue { path: String, key: String, value: String, reason: String },
    #[error("{path}: use either redact_key or redact_keys, not both")]
    BothRedactions { path: String },
}

/// Reads the settings file: `explicit` if given (it must exist), else
/// [`DEFAULT_FILE`] in the working directory if there is one.
///
/// # Errors
/// The file cannot be read or is not TOML.
pub fn load(explicit: Option<&Path>) -> Result<Option<SettingsFile>, FileError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
        None => return Ok(None),
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|source| FileError::Read { path: path.display().to_string(), source })?;
    SettingsFile::parse(path, &text).map(Some)
}

/// One setting the file gives: the flag's id and its values as the flag's text.
type FlagDefault = (String, Vec<String>);

impl SettingsFile {
    /// `text`, read from `path` (which only names it in errors).
    ///
    /// # Errors
    /// `text` is not TOML.
    pub fn parse(path: PathBuf, text: &str) -> Result<Self, FileError> {
        match toml::from_str(text) {
            Ok(table) => Ok(SettingsFile { path, table }),
            Err(e) => Err(FileError::Parse { path: path.display().to_string(), message: e.to_string() }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole command line, [`Cli::command`], with the file's values as the
    /// defaults of the flags of `serve` and `config`.
    ///
    /// # Errors
    /// A key is no flag of `serve`, or its value has the wrong type or is refused by
    /// the flag's parser.
    pub fn command(&self) -> Result<Command, FileError> {
        let mut cli = Cli::command();
        // `Cli` declares `serve`; were it missing, every run would say so.
        let serve = cli.find_subcommand("serve").expect("Cli has a serve subcommand");
        let defaults = self.defaults(serve)?;
        for name in READ_THE_SETTINGS_FILE {
            cli = cli.mut_subcommand(name, |sub| {
                defaults.iter().fold(sub, |sub, (id, values)| sub.mut_arg(id, |arg| arg.default_values(values)))
            });
        }
        Ok(cli)
    }

    /// Every key of the file as a default of one of `serve`'s flags, checked.
    fn defaults(&self, serve: &Command) -> Result<Vec<FlagDefault>, FileError> {
        if self.table.contains_key("redact_key") && self.table.contains_key(REDACT_KEYS) {
            return Err(FileError::BothRedactions { path: self.shown() });
        }
        self.table.iter().map(|(key, value)| self.default(serve, key, value)).collect()
    }

    fn default(&self, serve: &Command, key: &str, value: &toml::Value) -> Result<FlagDefault, FileError> {
        let flag = if key == REDACT_KEYS { "redact_key" } else { key };
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_id() == flag && !arg.is_global_set())
            .ok_or_else(|| FileError::UnknownKey { path: self.shown(), key: key.to_owned() })?;
        let kind = Kind::of(arg);
        let many = key == REDACT_KEYS || takes_many(arg);
        let wrong_type = || FileError::WrongType {
            path: self.shown(),
            key: key.to_owned(),
            expected: if many { kind.list() } else { kind.one() },
            found: value.to_string(),
        };
        let items = match value {
            toml::Value::Array(items) if many => items.as_slice(),
            toml::Value::Array(_) => return Err(wrong_type()),
            _ if many => return Err(wrong_type()),
            _ => std::slice::from_ref(value),
        };
        let mut values: Vec<String> =
            items.iter().map(|item| kind.text(item)).collect::<Option<_>>().ok_or_else(wrong_type)?;
        for (item, text) in items.iter().zip(&values) {
            check(arg, text).map_err(|reason| FileError::BadValue {
                path: self.shown(),
                key: key.to_owned(),
                value: item.to_string(),
                reason,
            })?;
        }
        if key == REDACT_KEYS {
            // One alternation: a key matching any listed pattern is redacted.
            values = vec![values.iter().map(|p| format!("(?:{p})")).collect::<Vec<_>>().join("|")];
        }
        Ok((flag.to_owned(), values))
    }

    fn shown(&self) -> String {
        self.path.display().to_string()
    }
}

/// Whether the flag may be given several times (`--allowed-host`), so its key takes
/// a list.
fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// Runs `value` through the flag's own parser, as clap will once it is the flag's
/// default, so that a value it refuses is named here by its key and file, rather than
/// later as the flag the user never typed.
fn check(arg: &Arg, value: &str) -> Result<(), String> {
    let mut probe = Arg::new("value")
        .long("value")
        .action(arg.get_action().clone())
        .value_parser(arg.get_value_parser().clone())
        .default_value(value.to_owned());
    if let Some(delimiter) = arg.get_value_delimiter() {
        probe = probe.value_delimiter(delimiter);
    }
    match Command::new("probe").arg(probe).try_get_matches_from(["probe"]) {
        Ok(_) => Ok(()),
        // The parser's own words are the cause; clap's wrap would name the probe.
        Err(e) => Err(std::error::Error::source(&e).map_or_else(|| e.kind().to_string(), ToString::to_string)),
    }
}

/// The TOML type of a setting, from the type its flag parses to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Switch,
    Number,
    Text,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        let parsed = arg.get_value_parser().type_id();
        let numbers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<f32>(),
            TypeId::of::<f64>(),
        ];
        if parsed == TypeId::of::<bool>() {
            Kind::Switch
        } else if numbers.iter().any(|n| parsed == *n) {
            Kind::Number
        } else {
            Kind::Text
        }
    }

    /// `value` as the text the flag's parser reads, if it has this kind's TOML type. A
    /// number may be an integer or a float: the flag's parser tells which it takes.
    fn text(self, value: &toml::Value) -> Option<String> {
        match (self, value) {
            (Kind::Switch, toml::Value::Boolean(b)) => Some(b.to_string()),
            (Kind::Number, toml::Value::Integer(n)) => Some(n.to_string()),
            // `{:?}` keeps the point (`1000.0`), so a flag that counts refuses a float.
            (Kind::Number, toml::Value::Float(x)) => Some(format!("{x:?}")),
            (Kind::Text, toml::Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn one(self) -> &'static str {
        match self {
            Kind::Switch => "true or false",
            Kind::Number => "a number",
            Kind::Text => "a string",
        }
    }

    fn list(self) -> &'static str {
        match self {
            Kind::Switch => "a list of true or false",
            Kind::Number => "a list of numbers",
            Kind::Text => "a list of strings",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command as Sub, ServeArgs};
    use clap::FromArgMatches;

    fn file(text: &str) -> SettingsFile {
        SettingsFile::parse(PathBuf::from("test.toml"), text).unwrap()
    }

    fn layered(argv: &[&str], text: &str) -> Result<ServeArgs, FileError> {
        let cli = file(text).command()?;
        let matches = cli.try_get_matches_from(argv).unwrap();
        let Sub::Serve(args) = Cli::from_arg_matches(&matches).unwrap().command else { panic!("serve") };
        Ok(*args)
    }

    fn serve_args(argv: &[&str], text: &str) -> ServeArgs {
        layered(argv, text).unwrap()
    }

    fn error(text: &str) -> String {
        layered(&["swarmfeed", "serve"], text).unwrap_err().to_string()
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
        assert_eq!(args.max_conns_per_ip, crate::config::DEFAULT_MAX_CONNS_PER_IP, "defaults stay");
        let named = serve_args(&["swarmfeed", "serve"], "bind = \"localhost:9001\"");
        assert_eq!(named.bind.to_string(), "127.0.0.1:9001", "a host name, as --bind takes");
        let e = error("bind = \"localhost\"");
        assert!(e.starts_with("test.toml: bind = \"localhost\": expected an address"), "a port is needed: {e}");
    }

    #[test]
    fn every_kind_of_flag_takes_its_value_from_the_file() {
        let args = serve_args(
            &["swarmfeed", "serve"],
            "no_auth = true\ndemo = true\nbid_window = 3\nretain_days = 30\n\
             database = \"postgres://x@db/feed\"\ndata_dir = \"/srv/feed\"\nlogin_link_minutes = 2.5",
        );
        assert!(args.no_auth && args.demo, "switches");
        assert_eq!(args.bid_window, 3.0, "an integer where seconds may have a fraction");
        assert_eq!(args.retain_days, Some(30), "a setting without a built-in default");
        assert_eq!(args.data.database.as_deref(), Some("postgres://x@db/feed"));
        assert_eq!(args.data.data_dir, PathBuf::from("/srv/feed"));
        assert_eq!(args.login_link.login_link_minutes, 2.5);
        let off = serve_args(&["swarmfeed", "serve", "--no-auth"], "no_auth = false");
        assert!(off.no_auth, "the flag wins over the file's false");
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
        let flagged =
            serve_args(&["swarmfeed", "serve", "--allowed-host", "a.example"], "allowed_hosts = [\"b.example\"]");
        assert_eq!(flagged.allowed_hosts, ["a.example"], "a repeated flag replaces the file's list, not adds to it");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key_and_the_file() {
        let e = error("max_frame_per_sec = 1");
        assert!(e.starts_with("test.toml: unknown key \"max_frame_per_sec\""), "{e}");
        for program_option in ["log = \"debug\"", "log_format = \"json\"", "config = \"x.toml\"", "help = true"] {
            assert!(error(program_option).contains("unknown key"), "{program_option}");
        }
    }

    #[test]
    fn values_of_the_wrong_type_name_the_key() {
        for (text, expected) in [
            ("ring_capacity = \"big\"", "test.toml: ring_capacity takes a number, not \"big\""),
            ("ring_capacity = \"99\"", "test.toml: ring_capacity takes a number, not \"99\""),
            ("no_auth = \"yes\"", "test.toml: no_auth takes true or false, not \"yes\""),
            ("data_dir = 5", "test.toml: data_dir takes a string, not 5"),
            ("allowed_hosts = \"a.example\"", "test.toml: allowed_hosts takes a list of strings, not \"a.example\""),
            (
                "allowed_hosts = [\"a.example\", 1]",
                "test.toml: allowed_hosts takes a list of strings, not [\"a.example\", 1]",
            ),
            ("ring_capacity = [1]", "test.toml: ring_capacity takes a number, not [1]"),
            ("ring_capacity = -1", "test.toml: ring_capacity = -1: invalid digit"),
            ("max_frames_per_sec = 2.5", "test.toml: max_frames_per_sec = 2.5: invalid digit"),
            (
                "max_frames_per_sec = 5000000000",
                "test.toml: max_frames_per_sec = 5000000000: 5000000000 is not in 0..=4294967295",
            ),
            ("allowed_hosts = []\nmax_body_bytes = 1e3", "test.toml: max_body_bytes = 1000.0: invalid digit"),
        ] {
            let e = error(text);
            assert!(e.starts_with(expected), "{text}: {e}");
        }
    }

    #[test]
    fn a_list_of_redaction_patterns_becomes_one_alternation() {
        let args = serve_args(&["swarmfeed", "serve"], "redact_keys = [\"(?i)^ssn$\", \"iban\"]");
        assert_eq!(args.redact_key, "(?:(?i)^ssn$)|(?:iban)");
        let config = args.into_config().unwrap();
        let mut v = serde_json::json!({"SSN": 1, "iban": 2, "password": 3});
        config.ingest.redactor.redact(&mut v);
        assert_eq!(v, serde_json::json!({"SSN": "[REDACTED]", "iban": "[REDACTED]", "password": 3}));
        let e = error("redact_key = \"a\"\nredact_keys = [\"b\"]");
        assert_eq!(e, "test.toml: use either redact_key or redact_keys, not both");
        assert!(error("redact_keys = \"a\"").starts_with("test.toml: redact_keys takes a list of strings"));
    }

    #[test]
    fn the_file_sets_the_defaults_of_config_as_of_serve() {
        let cli = file("ring_capacity = 99").command().unwrap();
        let matches = cli.try_get_matches_from(["swarmfeed", "config"]).unwrap();
        let Sub::Config(args) = Cli::from_arg_matches(&matches).unwrap().command else { panic!("config") };
        assert_eq!(args.ring_capacity, 99);
    }

    #[test]
    fn a_named_file_must_exist_and_be_toml() {
        assert!(matches!(load(Some(Path::new("/nonexistent/swarmfeed.toml"))), Err(FileError::Read { .. })));
        let e = SettingsFile::parse(PathBuf::from("bad.toml"), "ring_capacity = ").unwrap_err().to_string();
        assert!(e.starts_with("bad.toml: "), "{e}");
    }
}
