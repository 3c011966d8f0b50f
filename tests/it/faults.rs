//! Faults the server must ride out without losing what it acknowledged: a full disk
//! under the SQLite log, and a full tablespace under the PostgreSQL one. Each test
//! arranges the fault for real (a size-limited tmpfs, which needs root, as the test
//! command and CI have).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::database::{prefix, server_url, suite_on_postgres};
use crate::harness::{TestApp, WAIT, seqs, spawn_with};

/// A tmpfs of a fixed size mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB, or says why it cannot (not root, no mount).
    fn mount(mib: u32) -> Result<Self, String> {
        let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(SmallDisk { path, _parent: parent })
    }

    /// Fills the disk with a file until at most `leave` bytes are free; returns its path.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let free = fs_free_bytes(&self.path);
        let size = free.saturating_sub(leave);
        // tmpfs allocates on write, so the bytes are written, not only the length set.
        std::fs::write(&filler, vec![0u8; usize::try_from(size).unwrap()]).expect("filler written");
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the server under test may still hold files open while it stops.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn fs_free_bytes(path: &Path) -> u64 {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().expect("df runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df prints the free bytes")
}

/// A batch of `n` events with ids `{prefix}-{i}`, each with 2 KiB of data, so a few
/// batches fill what is left of a small disk.
fn batch(prefix: &str, n: usize) -> Value {
    let pad = "x".repeat(2048);
    let events: Vec<Value> = (0..n)
        .map(|i| json!({ "id": format!("{prefix}-{i}"), "event_type": "disk.test", "source": "faults", "data": { "pad": pad } }))
        .collect();
    Value::Array(events)
}

#[tokio::test]
async fn a_full_disk_refuses_ingest_with_507_and_ingest_resumes_by_itself_when_space_returns() {
    if suite_on_postgres() {
        // This test is about the SQLite log's disk; the next one is PostgreSQL's.
        return;
    }
    let Some(disk) = small_disk() else { return };
    let data_dir = disk.path.join("data");
    let app = spawn_with(|c| c.data_dir = data_dir.clone()).await;
    fill_the_disk_then_free_it(&app, &disk).await;
    app.stop().await;
}

#[tokio::test]
async fn a_full_tablespace_under_postgresql_refuses_ingest_with_507_and_resumes_when_space_returns() {
    let Some(disk) = small_disk() else { return };
    let Some(tablespace) = Tablespace::on(&disk).await else { return };
    let url = tablespace.url.clone();
    let app = spawn_with(|c| c.database = Some(url)).await;
    fill_the_disk_then_free_it(&app, &disk).await;
    app.stop().await;
    tablespace.drop().await;
}

/// A 16 MiB tmpfs, or `None` (with the reason printed) where mounting is not allowed.
fn small_disk() -> Option<SmallDisk> {
    match SmallDisk::mount(16) {
        Ok(disk) => Some(disk),
        Err(why) => {
            eprintln!("SKIPPED: a full disk needs a size-limited tmpfs, and {why}; run the suite as root");
            None
        }
    }
}

/// A PostgreSQL tablespace on a small disk and a database in it: the server's data
/// directory (and its WAL) stay where they are, so only this database's tables fill up.
struct Tablespace {
    url: String,
    name: String,
}

impl Tablespace {
    /// `None` (with the reason printed) when the test server is not on this machine.
    async fn on(disk: &SmallDisk) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await.unwrap();
        let connection = tokio::spawn(connection);
        let row = client.query_one("SHOW data_directory", &[]).await.unwrap();
        let data_directory: String = row.get(0);
        // The tablespace's directory must belong to the server's own OS user.
        let Ok(owner) = std::fs::metadata(&data_directory) else {
            eprintln!("SKIPPED: the test PostgreSQL's data directory {data_directory} is not on this machine");
            return None;
        };
        std::os::unix::fs::chown(&disk.path, Some(owner.uid()), Some(owner.gid())).unwrap();
        let name = format!("{}_full_{}", prefix(), uuid::Uuid::now_v7().simple());
        let location = disk.path.display().to_string().replace('\'', "''");
        client.batch_execute(&format!("CREATE TABLESPACE {name} LOCATION '{location}'")).await.unwrap();
        client.batch_execute(&format!("CREATE DATABASE {name} TABLESPACE {name}")).await.unwrap();
        drop(client);
        let _ = connection.await;
        let url = swarmfeed::store::postgres::url_with_database(&server_url(), &name);
        Some(Tablespace { url, name })
    }

    async fn drop(self) {
        let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await.unwrap();
        let connection = tokio::spawn(connection);
        let name = self.name;
        client.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
        client.batch_execute(&format!("DROP TABLESPACE {name}")).await.unwrap();
        drop(client);
        let _ = connection.await;
    }
}

/// Fills the store's disk while posting batches until one is refused, checks the
/// refusal and that nothing else broke, frees the space and checks that ingest resumes
/// and every acknowledged event is stored exactly once.
async fn fill_the_disk_then_free_it(app: &TestApp, disk: &SmallDisk) {
    let mut viewer = app.ws().await;
    viewer.subscribe(Some(0), json!({})).await;

    let (status, _) = app.post_events(&batch("before", 10)).await;
    assert_eq!(status, StatusCode::CREATED);
    let filler = disk.fill_leaving(256 * 1024);

    // Post until the disk refuses; every batch acknowledged before then must survive.
    let mut acknowledged: Vec<String> = (0..10).map(|i| format!("before-{i}")).collect();
    let mut refused = None;
    for round in 0..200 {
        let body = batch(&format!("r{round}"), 20);
        let resp = app.http.post(app.url("/api/events")).bearer_auth(&app.admin).json(&body).send().await.unwrap();
        match resp.status() {
            StatusCode::CREATED => acknowledged.extend((0..20).map(|i| format!("r{round}-{i}"))),
            StatusCode::INSUFFICIENT_STORAGE => {
                let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let answer: Value = resp.json().await.unwrap();
                refused = Some((round, body, retry_after, answer));
                break;
            }
            other => panic!("round {round}: expected 201 or 507, got {other}: {}", resp.text().await.unwrap()),
        }
    }
    let (round, refused_body, retry_after, answer) = refused.expect("the disk filled within 200 batches");
    assert_eq!(answer["error"]["code"], "storage_full", "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("disk is full"), "{answer}");
    assert!(retry_after.is_some_and(|s| s.parse::<u64>().unwrap() > 0), "507 carries Retry-After");

    // The server is still up: reads answer, and the viewer got everything acknowledged.
    let (status, _) = app.get("/api/events?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    let (seen, _) =
        tokio::time::timeout(WAIT, viewer.collect_events(acknowledged.len())).await.expect("viewer keeps up");
    let seen_ids: Vec<&str> = seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(seen_ids, acknowledged.iter().map(String::as_str).collect::<Vec<_>>());

    // Space returns; the refused batch goes in as it is, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = app.post_events(&refused_body).await;
    assert_eq!(status, StatusCode::CREATED, "ingest resumes once space is freed: {body}");
    acknowledged.extend((0..20).map(|i| format!("r{round}-{i}")));

    // Every acknowledged event is stored exactly once, under gapless seqs.
    let stored = app.all_events().await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in &stored {
        *counts.entry(e["id"].as_str().unwrap()).or_default() += 1;
    }
    for id in &acknowledged {
        assert_eq!(counts.get(id.as_str()), Some(&1), "{id} stored exactly once");
    }
    let seqs = seqs(&stored);
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "seq is gapless");
}
