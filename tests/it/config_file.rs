//! `swarmfeed config` and `serve`: flags > environment > file > defaults, unknown keys
//! and values of the wrong type named with the file.

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;

/// The binary with none of the caller's `SWARMFEED_…` variables, run in `dir`.
fn bare(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("SWARMFEED_") {
            command.env_remove(var);
        }
    }
    command.current_dir(dir);
    command
}

fn outcome(out: Output) -> (bool, String, String) {
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `swarmfeed --config FILE config ARGS…` with `file` as the settings file.
fn config(args: &[&str], env: &[(&str, &str)], file: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    std::fs::write(&path, file).unwrap();
    let out = bare(dir.path()).arg("--config").arg(&path).arg("config").args(args).envs(env.iter().copied()).output();
    outcome(out.unwrap())
}

#[test]
fn flags_beat_environment_which_beats_the_file_which_beats_defaults() {
    let file = "max_frames_per_sec = 7\nring_capacity = 77\nbid_window = 3.5\n";
    let (ok, out, err) = config(&["--max-frames-per-sec", "1"], &[("SWARMFEED_RING_CAPACITY", "55")], file);
    assert!(ok, "{err}");
    assert!(out.contains("max_frames_per_sec = 1\n"), "flag over file: {out}");
    assert!(out.contains("ring_capacity = 55\n"), "environment over file: {out}");
    assert!(out.contains("bid_window = 3.5\n"), "file over default: {out}");
    assert!(out.contains("max_conns_per_ip = 50\n"), "defaults stay: {out}");
}

#[test]
fn a_flag_beats_its_own_variable_and_both_beat_the_file() {
    let file = "ring_capacity = 77\nno_auth = false\nallowed_hosts = [\"file.example\"]\n";
    let env = [("SWARMFEED_RING_CAPACITY", "55"), ("SWARMFEED_ALLOWED_HOSTS", "env.example,other.example")];
    let (ok, out, err) = config(&["--ring-capacity", "1", "--no-auth"], &env, file);
    assert!(ok, "{err}");
    assert!(out.contains("ring_capacity = 1\n"), "flag over variable: {out}");
    assert!(out.contains("no_auth = true\n"), "a switch over the file's false: {out}");
    assert!(out.contains("allowed_hosts = [\"env.example\", \"other.example\"]\n"), "variable over file: {out}");
    let (ok, out, err) = config(&[], &[], file);
    assert!(ok, "{err}");
    assert!(out.contains("ring_capacity = 77\n") && out.contains("\"file.example\""), "the file alone: {out}");
}

#[test]
fn the_file_is_found_by_variable_or_in_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("swarmfeed.toml"), "ring_capacity = 33\n").unwrap();
    let (ok, out, err) = outcome(bare(dir.path()).arg("config").output().unwrap());
    assert!(ok && out.contains("ring_capacity = 33\n"), "./swarmfeed.toml: {out}{err}");
    let other = tempfile::tempdir().unwrap();
    let named = other.path().join("elsewhere.toml");
    std::fs::write(&named, "ring_capacity = 44\n").unwrap();
    let (ok, out, err) = outcome(bare(dir.path()).env("SWARMFEED_CONFIG", &named).arg("config").output().unwrap());
    assert!(ok && out.contains("ring_capacity = 44\n"), "SWARMFEED_CONFIG over ./swarmfeed.toml: {out}{err}");
    let (ok, _, err) = outcome(bare(dir.path()).args(["--config", "missing.toml", "config"]).output().unwrap());
    assert!(!ok && err.contains("cannot read missing.toml"), "{err}");
}

#[test]
fn an_unknown_key_is_an_error_naming_it_and_the_file() {
    let (ok, _, err) = config(&[], &[], "max_frame_per_sec = 1\n");
    assert!(!ok);
    assert!(err.contains("settings.toml: unknown key \"max_frame_per_sec\""), "{err}");
    let (ok, _, err) = config(&[], &[], "log = \"debug\"\n");
    assert!(!ok && err.contains("unknown key \"log\""), "the program's own options are no keys: {err}");
}

#[test]
fn a_value_of_the_wrong_type_is_an_error_naming_the_key() {
    for (file, said) in [
        ("ring_capacity = \"big\"\n", "settings.toml: ring_capacity takes a number, not \"big\""),
        ("max_frames_per_sec = -1\n", "settings.toml: max_frames_per_sec = -1: "),
        (
            "bind = \"localhost\"\n",
            "settings.toml: bind = \"localhost\": expected an address or a host name with a port",
        ),
    ] {
        let (ok, _, err) = config(&[], &[], file);
        assert!(!ok, "{file}");
        assert!(err.contains(said), "{file}: {err}");
    }
}

#[test]
fn serve_runs_with_the_files_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    std::fs::write(&path, "no_auth = true\nbind = \"0.0.0.0:0\"\n").unwrap();
    let out = bare(dir.path()).arg("--config").arg(&path).args(["serve", "--data-dir"]).arg(dir.path()).output();
    let (ok, _, err) = outcome(out.unwrap());
    assert!(!ok, "the file's bind and no_auth reached serve");
    assert!(err.contains("--no-auth is only allowed on a loopback address, not 0.0.0.0:0"), "{err}");
    std::fs::write(&path, "ring_capacity = \"big\"\n").unwrap();
    let (ok, _, err) = outcome(bare(dir.path()).arg("--config").arg(&path).arg("serve").output().unwrap());
    assert!(!ok && err.contains("ring_capacity takes a number"), "{err}");
}

#[test]
fn serve_help_shows_every_flag_with_its_variable_and_default() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, help, err) = outcome(bare(dir.path()).args(["serve", "--help"]).output().unwrap());
    assert!(ok, "{err}");
    // Each flag's entry: its line and the indented lines of help under it.
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('-') && indent < 8 {
            entries.push(String::new());
        }
        if let Some(entry) = entries.last_mut() {
            entry.push(' ');
            entry.push_str(line.trim());
        }
    }
    let cli = swarmfeed::cli::Cli::command();
    for arg in cli.find_subcommand("serve").unwrap().get_arguments() {
        let long = format!("--{}", arg.get_long().unwrap());
        let entry = entries
            .iter()
            .find(|e| e.split_whitespace().next() == Some(long.as_str()))
            .unwrap_or_else(|| panic!("{long} is shown: {help}"));
        let env = arg.get_env().unwrap_or_else(|| panic!("{long} reads a variable")).to_string_lossy();
        assert!(entry.contains(&format!("[env: {env}")), "{long}: {entry}");
        // A switch's default (off) goes without saying.
        if arg.get_action().takes_values() {
            for default in arg.get_default_values() {
                assert!(entry.contains(&format!("[default: {}]", default.to_string_lossy())), "{long}: {entry}");
            }
        }
    }
}

#[test]
fn a_configuration_that_cannot_run_is_refused() {
    let (ok, _, err) = config(&[], &[], "no_auth = true\nbind = \"0.0.0.0:8000\"\n");
    assert!(!ok);
    assert!(err.contains("loopback"), "{err}");
}

#[test]
fn the_database_password_is_masked_in_the_printout() {
    let (ok, out, err) = config(&[], &[], "database = \"postgres://sf:hunter2@db.example:5432/feed\"\n");
    assert!(ok, "{err}");
    assert!(out.contains("database = \"postgres://sf:****@db.example:5432/feed\""), "{out}");
    assert!(!out.contains("hunter2"));
}
