//! `swarmfeed config`: flags > environment > file > defaults, unknown keys named.

use std::process::Command;

fn config(args: &[&str], env: &[(&str, &str)], file: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("swarmfeed.toml");
    std::fs::write(&path, file).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_swarmfeed"))
        .arg("--config")
        .arg(&path)
        .arg("config")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
fn an_unknown_key_is_an_error_naming_it() {
    let (ok, _, err) = config(&[], &[], "max_frame_per_sec = 1\n");
    assert!(!ok);
    assert!(err.contains("max_frame_per_sec"), "{err}");
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
