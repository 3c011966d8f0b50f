//! Structured logs through `tracing`, as text for people or JSON for collectors.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Log output format (`--log-format`, `SWARMFEED_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. `filter` is an `EnvFilter` directive such as
/// `info` or `swarmfeed=debug,tower_http=info`; logs go to stderr.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("invalid log filter {filter:?} ({e}); using \"info\"");
        EnvFilter::new("info")
    });
    // A failed write to stderr (a log collector that went away) must cost the log line,
    // never the task that logged it: with internal-error logging on, tracing reports
    // the failure with `eprintln!`, which panics on that same broken stderr, and a
    // panicking signal task would leave the server unable to shut down.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_on_stderr())
        .log_internal_errors(false);
    // `try_init` fails only if a subscriber is already set (tests); keeping it is right.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Colour codes only for a person at a terminal: in a file, a pipe or a collector they
/// are noise in every line. `NO_COLOR` (https://no-color.org) turns them off there too.
fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
