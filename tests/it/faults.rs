//! Faults the server must ride out without losing what it acknowledged: a full disk
//! under the SQLite log, and a full tablespace under the PostgreSQL one. Each test
//! arranges the fault for real (a size-limited tmpfs, which needs root, as the test
//! command and CI have).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::database::{prefix, server_url, suite_on_postgres};
use crate::harness::{
    BinaryServer, LIBFAKETIME, TestApp, WAIT, WsClient, all_events, assert_acknowledged_stored_once, seqs, spawn_with,
};
use crate::pg_cluster::Cluster;

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

/// One producer's outcome: what was acknowledged, and how its outage went.
#[derive(Default)]
struct Produced {
    acknowledged: Vec<(String, u64)>,
    refusals: usize,
    first_refusal: Option<std::time::Instant>,
    /// The first acknowledgement after a refusal: when ingest came back.
    back: Option<std::time::Instant>,
}

#[tokio::test]
async fn a_postgresql_restart_mid_ingest_answers_503_then_two_nodes_recover_with_nothing_lost() {
    let cluster = match Cluster::start() {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: this test restarts a PostgreSQL cluster of its own, and {why}");
            return;
        }
    };
    let name = format!("{}_restart_{}", prefix(), uuid::Uuid::now_v7().simple());
    let url = swarmfeed::store::postgres::create_database(&cluster.url(), &name).await.unwrap();
    let node = |url: String| {
        spawn_with(move |c| {
            c.database = Some(url);
            c.max_frames_per_sec = 0;
        })
    };
    let a = node(url.clone()).await;
    let b = node(url.clone()).await;
    let token = a.admin.clone();
    let mut viewer = WsClient::connect(b.addr, Some(&token)).await.unwrap();
    viewer.subscribe(Some(0), json!({})).await;

    // One producer per node. Each sends batches of 10 with ids of its own and re-sends
    // a refused batch, as a client following Retry-After would, but sooner, so the
    // outage is measured to a tenth of a second. Bounded in batches and time.
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let (progress, progressed) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let mut producers = Vec::new();
    for (n, addr) in [a.addr, b.addr].into_iter().enumerate() {
        let (http, token, progress) = (http.clone(), token.clone(), Arc::clone(&progress));
        producers.push(tokio::spawn(async move {
            let mut produced = Produced::default();
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            for i in 0..300 {
                let batch: Vec<Value> = (0..10)
                    .map(|j| json!({"id": format!("n{n}-{i}-{j}"), "event_type": "tool.called", "source": "restart"}))
                    .collect();
                loop {
                    assert!(std::time::Instant::now() < deadline, "node {n}: ingest did not recover within 90 s");
                    let resp = http
                        .post(format!("http://{addr}/api/events"))
                        .bearer_auth(&token)
                        .json(&batch)
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("node {n}: a request must be answered within 15 s: {e}"));
                    let status = resp.status();
                    if status == StatusCode::CREATED {
                        let answer: Value = resp.json().await.unwrap();
                        for e in answer["events"].as_array().unwrap() {
                            let (id, seq) = (e["id"].as_str().unwrap(), e["seq"].as_u64().unwrap());
                            produced.acknowledged.push((id.to_owned(), seq));
                        }
                        if produced.refusals > 0 && produced.back.is_none() {
                            produced.back = Some(std::time::Instant::now());
                        }
                        progress.send_modify(|p| *p += 10);
                        break;
                    }
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "node {n}: {}", resp.text().await.unwrap());
                    assert!(resp.headers().contains_key("retry-after"), "node {n}: a 503 carries Retry-After");
                    produced.first_refusal.get_or_insert_with(std::time::Instant::now);
                    produced.back = None;
                    produced.refusals += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            produced
        }));
    }

    // Restart PostgreSQL once each producer has a few hundred events in.
    let mut progressed = progressed;
    tokio::time::timeout(WAIT, progressed.wait_for(|p| *p >= 600)).await.expect("ingest runs").unwrap();
    let restarted_at = std::time::Instant::now();
    // The cluster comes back from the blocking task, to be stopped when the test ends.
    let cluster = tokio::task::spawn_blocking(move || cluster.restart().map(|()| cluster))
        .await
        .unwrap()
        .expect("pg_ctl restart");
    let restart_took = restarted_at.elapsed();

    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    let mut refusals = 0;
    for (n, p) in producers.into_iter().enumerate() {
        let produced = p.await.unwrap();
        refusals += produced.refusals;
        if let (Some(first), Some(back)) = (produced.first_refusal, produced.back) {
            eprintln!(
                "node {n}: {} refusals (503); ingest back {:.2} s after the first, {:.2} s after the restart began",
                produced.refusals,
                (back - first).as_secs_f64(),
                back.saturating_duration_since(restarted_at).as_secs_f64()
            );
        }
        for (id, seq) in produced.acknowledged {
            assert!(acknowledged.insert(id, seq).is_none(), "an id is acknowledged once");
        }
    }
    eprintln!("pg_ctl restart -m fast took {:.2} s; {refusals} refusals in all", restart_took.as_secs_f64());

    // A leader is elected again: a coordinator command succeeds on one of the nodes.
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            for node in [&a, &b] {
                let resp = http
                    .post(node.url("/swarm/agents"))
                    .bearer_auth(&token)
                    .json(&json!({"name": "after-restart"}))
                    .send()
                    .await
                    .unwrap();
                if resp.status() == StatusCode::CREATED {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(joined.is_ok(), "a coordinator leader is elected again within 30 s");

    // Nothing acknowledged is lost, seq is gapless, and the viewer on node b saw every
    // event once, in order, across the outage.
    let stored = a.all_events().await;
    let stored_seqs = seqs(&stored);
    assert_eq!(stored_seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "seq is gapless");
    let by_id: HashMap<&str, u64> =
        stored.iter().map(|e| (e["id"].as_str().unwrap(), e["seq"].as_u64().unwrap())).collect();
    assert_eq!(by_id.len(), stored.len(), "each id stored once");
    for (id, seq) in &acknowledged {
        assert_eq!(by_id.get(id.as_str()), Some(seq), "acknowledged {id} is stored with its seq");
    }
    let (seen, _) = tokio::time::timeout(WAIT, viewer.collect_events(stored.len())).await.expect("viewer catches up");
    assert_eq!(seqs(&seen), stored_seqs, "the viewer saw every event once, in order");
    a.stop().await;
    b.stop().await;
    drop(cluster);
}

/// What the fault-injecting proxy does to the bytes between a node and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Forwards as it comes.
    Pass,
    /// Holds each chunk this long before forwarding it.
    Delay(Duration),
    /// Forwards nothing and answers nothing; connections stay open, as in a network
    /// partition. Ends with [`Proxy::heal`], which closes what it stalled.
    Blackhole,
}

/// A TCP proxy on loopback between swarmfeed and PostgreSQL that injects latency, a
/// silent blackhole, or resets.
struct Proxy {
    addr: std::net::SocketAddr,
    link: tokio::sync::watch::Sender<Link>,
    /// Bumped to close every connection open now (a reset, or a partition's end).
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, link_rx) = tokio::sync::watch::channel(Link::Pass);
        let (generation, generation_rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { return };
                let (link, mut generation) = (link_rx.clone(), generation_rx.clone());
                generation.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, link.clone()) => {}
                        () = pump(server_read, client_write, link) => {}
                        _ = generation.changed() => {}
                    }
                    // Dropping both halves closes both sockets: PostgreSQL ends the
                    // session (releasing its locks) and the node sees its connection go.
                });
            }
        });
        Proxy { addr, link, generation, task }
    }

    /// `database_url`, reached through this proxy.
    fn url_for(&self, database_url: &str) -> String {
        let mut url: reqwest::Url = database_url.parse().unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.to_string()
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }

    /// Closes every connection open now; new ones pass.
    fn reset(&self) {
        self.link.send_replace(Link::Pass);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Ends a blackhole: the connections it stalled are closed, as a partition's end
    /// leaves them broken, and new ones pass.
    fn heal(&self) {
        self.reset();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address of the suite's PostgreSQL server, which a [`Proxy`] forwards to.
fn postgres_addr() -> std::net::SocketAddr {
    let url: reqwest::Url = server_url().parse().unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432)).parse().unwrap()
}

/// Copies one direction under the proxy's current [`Link`].
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut link: tokio::sync::watch::Receiver<Link>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // In a blackhole nothing is read, so nothing is forwarded or acknowledged
        // beyond what the kernel buffers.
        if link.wait_for(|l| *l != Link::Blackhole).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let now = *link.borrow();
        match now {
            Link::Delay(d) => tokio::time::sleep(d).await,
            // The partition began while this chunk was read: it is never delivered.
            Link::Blackhole => {
                let _ = link.wait_for(|_| false).await;
                return;
            }
            Link::Pass => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// `(status, code, how long the answer took)` of one POST of `body` to `path`.
async fn timed_post(app: &TestApp, path: &str, body: &Value) -> (StatusCode, Value, Duration) {
    timed_post_as(app, &app.admin, path, body).await
}

/// [`timed_post`] as `token`: a node that joins a log which already has tokens makes
/// no admin token of its own, so the first node's serves them all.
async fn timed_post_as(app: &TestApp, token: &str, path: &str, body: &Value) -> (StatusCode, Value, Duration) {
    let started = std::time::Instant::now();
    let request = app.http.post(app.url(path)).bearer_auth(token).json(body).send();
    let resp = tokio::time::timeout(Duration::from_secs(15), request)
        .await
        .unwrap_or_else(|_| panic!("POST {path} must be answered within 15 s, not hang"))
        .unwrap();
    let status = resp.status();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(resp.headers().contains_key("retry-after"), "a 503 carries Retry-After");
    }
    (status, resp.json().await.unwrap_or(Value::Null), started.elapsed())
}

#[tokio::test]
async fn latency_a_blackhole_and_resets_between_a_node_and_postgresql_cost_503s_within_the_timeout_and_nothing_acknowledged()
 {
    let db = crate::database::Database::fresh().await;
    let proxy = Proxy::start(postgres_addr()).await;
    let through_proxy = proxy.url_for(&db.url);
    let store_timeout = Duration::from_secs(2);
    let app = spawn_with(|c| {
        c.database = Some(through_proxy);
        c.store_timeout = store_timeout;
    })
    .await;
    let mut acknowledged: HashMap<String, u64> = HashMap::new();
    let mut batch_no = 0;
    let mut post_batch = async |app: &TestApp, acknowledged: &mut HashMap<String, u64>| {
        batch_no += 1;
        let body: Vec<Value> = (0..5)
            .map(|i| json!({"id": format!("b{batch_no}-{i}"), "event_type": "tool.called", "source": "proxy"}))
            .collect();
        let (status, answer, took) = timed_post(app, "/api/events", &json!(body)).await;
        if status == StatusCode::CREATED {
            for e in answer["events"].as_array().unwrap() {
                acknowledged.insert(e["id"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap());
            }
        }
        (status, answer, took)
    };

    // Latency: 50 ms each way slows commits but fails none.
    proxy.set(Link::Delay(Duration::from_millis(50)));
    for _ in 0..3 {
        let (status, answer, took) = post_batch(&app, &mut acknowledged).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert!(took >= Duration::from_millis(100), "the delay is in the path ({took:?})");
    }

    // A silent blackhole. The node gives up the coordinator's lock: commands are
    // refused as not_leader within a few seconds, so it settles no auction it cannot
    // log (each try before then waits out the store timeout: the figure is to 2 s).
    proxy.set(Link::Blackhole);
    let blackholed_at = std::time::Instant::now();
    let stepped_down = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (status, answer, _) = timed_post(&app, "/swarm/agents", &json!({"name": "Echo"})).await;
            assert_ne!(status, StatusCode::CREATED, "nothing is committed through a blackhole");
            if answer["error"]["code"] == "not_leader" {
                return blackholed_at.elapsed();
            }
        }
    })
    .await
    .expect("a blackholed leader steps down within 10 s");
    eprintln!("the blackholed leader stepped down within {:.2} s of the blackhole", stepped_down.as_secs_f64());
    // Every request is answered 503 within the store timeout, never a 500 and never a
    // hang; nothing is acknowledged.
    for _ in 0..2 {
        let (status, answer, took) = post_batch(&app, &mut acknowledged).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
        assert!(took < store_timeout * 3, "answered in {took:?}, within the store timeout");
    }

    // The partition ends: the node reconnects by itself and ingest resumes.
    proxy.heal();
    let healed_at = std::time::Instant::now();
    let resumed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (status, answer, _) = post_batch(&app, &mut acknowledged).await;
            match status {
                StatusCode::CREATED => return healed_at.elapsed(),
                StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(Duration::from_millis(100)).await,
                other => panic!("after the blackhole: {other} {answer}"),
            }
        }
    })
    .await
    .expect("ingest resumes after the blackhole");
    eprintln!("ingest resumed {:.2} s after the blackhole ended", resumed.as_secs_f64());

    // Resets: every connection is cut mid-use; requests meanwhile get 503 at worst.
    for _ in 0..3 {
        proxy.reset();
        let resumed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let (status, answer, _) = post_batch(&app, &mut acknowledged).await;
                match status {
                    StatusCode::CREATED => return,
                    StatusCode::SERVICE_UNAVAILABLE => tokio::time::sleep(Duration::from_millis(100)).await,
                    other => panic!("after a reset: {other} {answer}"),
                }
            }
        })
        .await;
        assert!(resumed.is_ok(), "ingest resumes after a reset");
    }
    // And the coordinator is led again.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (status, _, _) = timed_post(&app, "/swarm/agents", &json!({"name": "Echo"})).await;
            if status == StatusCode::CREATED {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the node leads again");

    // Every acknowledged event is stored once, with its seq, and seq is gapless.
    assert_acknowledged_stored_once(&app.all_events().await, &acknowledged);
    app.stop().await;
    drop(proxy);
    db.drop().await;
}

/// Whether `app` leads the coordinator now, asked with a command that changes nothing:
/// cancelling a task no one posted is refused as unknown by the leader and as
/// `not_leader` by the others.
async fn leads(app: &TestApp, token: &str) -> bool {
    let (status, answer, _) = timed_post_as(app, token, "/swarm/tasks/no-such-task/cancel", &json!({})).await;
    match (status, answer["error"]["code"].as_str()) {
        (StatusCode::SERVICE_UNAVAILABLE, Some("not_leader")) => false,
        (StatusCode::NOT_FOUND, _) => true,
        other => panic!("the leadership probe: {other:?} {answer}"),
    }
}

/// How long after `since` `app`'s leadership first reads `leading`, checked every 50 ms
/// for at most `within`.
async fn leadership_becomes(
    app: &TestApp,
    token: &str,
    leading: bool,
    since: std::time::Instant,
    within: Duration,
) -> Duration {
    tokio::time::timeout(within, async {
        while leads(app, token).await != leading {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        since.elapsed()
    })
    .await
    .unwrap_or_else(|_| panic!("leadership did not become {leading} within {within:?}"))
}

/// `task_id`'s status as `app`'s board has it.
async fn task_status(app: &TestApp, token: &str, task_id: &str) -> Option<String> {
    let (status, task) = app.get_as(&format!("/api/tasks/{task_id}"), Some(token)).await;
    (status == StatusCode::OK).then(|| task["status"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_leader_cut_off_by_a_silent_partition_steps_down_before_a_peer_takes_over_and_the_auction_is_settled_once() {
    let db = crate::database::Database::fresh().await;
    let proxy = Proxy::start(postgres_addr()).await;
    let window = Duration::from_secs(3);
    let a = {
        let url = proxy.url_for(&db.url);
        spawn_with(move |c| {
            c.database = Some(url);
            c.store_timeout = Duration::from_secs(2);
            c.coordinator.bid_window = window;
        })
        .await
    };
    let b = {
        let url = db.url.clone();
        spawn_with(move |c| {
            c.database = Some(url);
            c.coordinator.bid_window = window;
        })
        .await
    };
    let token = a.admin.clone();
    assert!(leads(&a, &token).await && !leads(&b, &token).await, "the first node started leads");

    // An auction on the leader, with a bid, whose window ends inside the partition.
    let (status, joined) =
        a.post_raw("/swarm/agents", &json!({"name": "Echo", "agent_id": "echo"}).to_string(), Some(&token)).await;
    assert_eq!(status, StatusCode::CREATED, "{joined}");
    let (status, posted) =
        a.post_raw("/swarm/tasks", &json!({"description": "Sort the logs"}).to_string(), Some(&token)).await;
    assert_eq!(status, StatusCode::CREATED, "{posted}");
    let task_id = posted["task_id"].as_str().unwrap().to_owned();
    let (status, bid) = a
        .post_raw(
            &format!("/swarm/tasks/{task_id}/bids"),
            &json!({"agent_id": "echo", "bid_sats": 12}).to_string(),
            Some(&token),
        )
        .await;
    assert!(status.is_success(), "{bid}");

    // Events flow into the leader, so the cut finds its writer inside a commit, most
    // likely holding the `log_head` lock every node's commit takes first.
    let ledger = Arc::new(std::sync::Mutex::new(HashMap::<String, u64>::new()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let producer = |node: &TestApp, name: &'static str| {
        let (http, addr, token, ledger, mut stopped) =
            (node.http.clone(), node.addr, token.clone(), Arc::clone(&ledger), stopped.clone());
        tokio::spawn(async move {
            let mut longest_wait = Duration::ZERO;
            let mut last_ack = std::time::Instant::now();
            for i in 0..2_000 {
                let body: Vec<Value> = (0..10)
                    .map(|j| json!({"id": format!("{name}-{i}-{j}"), "event_type": "tool.called", "source": name}))
                    .collect();
                let request = http.post(format!("http://{addr}/api/events")).bearer_auth(&token).json(&body).send();
                tokio::select! {
                    _ = stopped.changed() => break,
                    answer = tokio::time::timeout(Duration::from_secs(15), request) => {
                        let Ok(Ok(resp)) = answer else { continue };
                        if resp.status() != StatusCode::CREATED {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                        let answer: Value = resp.json().await.unwrap();
                        let mut ledger = ledger.lock().unwrap();
                        for e in answer["events"].as_array().unwrap() {
                            ledger.insert(e["id"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap());
                        }
                        longest_wait = longest_wait.max(last_ack.elapsed());
                        last_ack = std::time::Instant::now();
                    }
                }
            }
            longest_wait
        })
    };
    let into_a = producer(&a, "a");
    while ledger.lock().unwrap().len() < 30 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The leader's every connection to PostgreSQL goes silent: nothing forwarded,
    // nothing closed. It must stop leading before PostgreSQL frees its lock, and the
    // peer must take the lock within seconds, not when TCP keepalive gives up.
    // Meanwhile the peer goes on committing: a lock the cut-off node held mid-commit
    // is freed once it has waited on that node for the node's store timeout.
    proxy.set(Link::Blackhole);
    let cut_at = std::time::Instant::now();
    let into_b = producer(&b, "b");
    let (stepped_down, took_over) = tokio::join!(
        leadership_becomes(&a, &token, false, cut_at, Duration::from_secs(10)),
        leadership_becomes(&b, &token, true, cut_at, Duration::from_secs(20)),
    );
    eprintln!(
        "cut off, the leader stepped down after {:.2} s; its peer took over after {:.2} s",
        stepped_down.as_secs_f64(),
        took_over.as_secs_f64()
    );
    assert!(
        stepped_down < took_over,
        "the old leader stops ({stepped_down:?}) before the new one starts ({took_over:?})"
    );

    // The new leader settles the auction whose window ended while no node led.
    tokio::time::timeout(Duration::from_secs(10), async {
        while task_status(&b, &token, &task_id).await.as_deref() != Some("assigned") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the new leader settles the auction");

    stop.send_replace(true);
    let (_, longest_wait) = (into_a.await.unwrap(), into_b.await.unwrap());
    eprintln!("the peer's longest wait for a commit during the partition: {:.2} s", longest_wait.as_secs_f64());
    assert!(longest_wait < Duration::from_secs(6), "the peer's commits stalled for {longest_wait:?}");

    // The partition ends. The old leader reconnects, follows the log, and does not lead.
    proxy.heal();
    tokio::time::timeout(Duration::from_secs(20), async {
        while task_status(&a, &token, &task_id).await.as_deref() != Some("assigned") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the old leader sees the settlement once it reconnects");
    tokio::time::sleep(window).await;
    assert!(!leads(&a, &token).await && leads(&b, &token).await, "leadership stays with the node that took it");

    // One settlement, stored once: the window closed once and the task was assigned once.
    let stored = a.all_events().await;
    assert_acknowledged_stored_once(&stored, ledger.lock().unwrap().iter());
    let settled: Vec<&str> = stored
        .iter()
        .filter_map(|e| e["id"].as_str())
        .filter(|id| id.starts_with(&format!("sf:settle.{task_id}.")))
        .collect();
    assert_eq!(settled, [format!("sf:settle.{task_id}.closed"), format!("sf:settle.{task_id}.outcome")], "{stored:?}");
    let assigned = stored.iter().filter(|e| e["event_type"] == "task.assigned" && e["task_id"] == task_id.as_str());
    assert_eq!(assigned.count(), 1, "assigned once");
    a.stop().await;
    b.stop().await;
    drop(proxy);
    db.drop().await;
}

/// Runs `sql` on the suite's PostgreSQL server as its superuser.
async fn as_superuser(sql: &str) {
    let (client, connection) = tokio_postgres::connect(&server_url(), tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
    drop(client);
    let _ = connection.await;
}

/// Ends every session of the node on `database`, as a failover does: the node's
/// connections reopen, and take the database's defaults as they now are.
async fn fail_over(database: &str) {
    as_superuser(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    ))
    .await;
}

/// Posts batches of ids of their own until one is answered `want`, bounded; records
/// what was acknowledged, and refuses any answer but 201 and 503.
async fn post_until(
    app: &TestApp,
    acknowledged: &mut HashMap<String, u64>,
    n: &mut usize,
    want: StatusCode,
    code: Option<&str>,
) -> Value {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            *n += 1;
            let body: Vec<Value> = (0..5)
                .map(|i| json!({"id": format!("r{n}-{i}"), "event_type": "tool.called", "source": "failover"}))
                .collect();
            let (status, answer, _) = timed_post(app, "/api/events", &json!(body)).await;
            match status {
                StatusCode::CREATED => {
                    for e in answer["events"].as_array().unwrap() {
                        acknowledged.insert(e["id"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap());
                    }
                }
                StatusCode::SERVICE_UNAVAILABLE => {}
                other => panic!("{other} {answer}: only 201 or 503 while the store fails over"),
            }
            if status == want && code.is_none_or(|c| answer["error"]["code"] == c) {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want} {code:?} within 30 s"))
}

#[tokio::test]
async fn a_store_that_comes_back_read_only_refuses_ingest_with_503_store_read_only_and_ingest_resumes_once_it_takes_writes()
 {
    // A failover onto a standby: every session ends, and the server the node reconnects
    // to takes no writes (SQLSTATE 25006) until it is promoted.
    let db = crate::database::Database::fresh().await;
    let app = {
        let url = db.url.clone();
        spawn_with(move |c| {
            c.database = Some(url);
            c.store_timeout = Duration::from_secs(2);
        })
        .await
    };
    let (mut acknowledged, mut n) = (HashMap::new(), 0);
    post_until(&app, &mut acknowledged, &mut n, StatusCode::CREATED, None).await;

    as_superuser(&format!("ALTER DATABASE {} SET default_transaction_read_only = on", db.name)).await;
    fail_over(&db.name).await;
    let refused =
        post_until(&app, &mut acknowledged, &mut n, StatusCode::SERVICE_UNAVAILABLE, Some("store_read_only")).await;
    assert!(refused["error"]["message"].as_str().unwrap().contains("takes no writes"), "{refused}");
    let stored_while_read_only = app.all_events().await.len();
    assert_eq!(stored_while_read_only, acknowledged.len(), "nothing of a refused batch is stored");
    // Reads go on meanwhile.
    let (status, _) = app.get("/api/events?limit=1").await;
    assert_eq!(status, StatusCode::OK, "reads are served from a read-only store");

    // Promoted: the node's sessions end once more and it takes writes again by itself.
    as_superuser(&format!("ALTER DATABASE {} RESET default_transaction_read_only", db.name)).await;
    fail_over(&db.name).await;
    let started = std::time::Instant::now();
    post_until(&app, &mut acknowledged, &mut n, StatusCode::CREATED, None).await;
    eprintln!("ingest resumed {:.2} s after the store took writes again", started.elapsed().as_secs_f64());

    let stored = app.all_events().await;
    assert_acknowledged_stored_once(&stored, &acknowledged);
    assert_eq!(stored.len(), acknowledged.len(), "nothing unacknowledged is stored");
    app.stop().await;
    db.drop().await;
}

/// What the crash loop's clients know: every id acknowledged with its seq, the ids sent
/// but not acknowledged (to be re-sent after the restart), and what the viewer saw.
#[derive(Default)]
struct Ledger {
    acknowledged: HashMap<String, u64>,
    unanswered: Vec<Value>,
    seen: Vec<u64>,
}

impl Ledger {
    fn acknowledge(&mut self, answer: &Value) {
        for e in answer["events"].as_array().unwrap() {
            let (id, seq) = (e["id"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap());
            if let Some(before) = self.acknowledged.insert(id.clone(), seq) {
                assert_eq!(before, seq, "{id} is acknowledged with one seq, whenever it is sent");
            }
        }
    }
}

/// Sends `body` to /api/events; `Some(answer)` on 201, `None` when the server went away.
async fn post_or_gone(http: &reqwest::Client, addr: std::net::SocketAddr, token: &str, body: &Value) -> Option<Value> {
    let resp = http.post(format!("http://{addr}/api/events")).bearer_auth(token).json(body).send().await.ok()?;
    let status = resp.status();
    let answer: Value = resp.json().await.ok()?;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    Some(answer)
}

/// The swarm as `GET /api/swarm` shows it, less what depends on the clock of the read.
async fn swarm_state(http: &reqwest::Client, addr: std::net::SocketAddr, token: &str) -> Value {
    let url = format!("http://{addr}/api/swarm?tasks_limit=1000&agents_limit=1000");
    let mut state: Value = http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap();
    for auction in state["auctions"].as_array_mut().into_iter().flatten() {
        auction.as_object_mut().unwrap().remove("seconds_left");
    }
    state
}

#[tokio::test]
async fn fifty_kill_9s_at_random_moments_under_mixed_load_lose_nothing_and_repeat_nothing() {
    use rand::Rng;
    let seed: u64 = rand::random();
    eprintln!("crash loop seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    // Auctions stay open for the whole test, so the swarm changes only by what the test
    // sends, and a snapshot before a kill can be compared with the fold after it.
    let flags = ["--max-frames-per-sec", "0", "--bid-window", "3600", "--agent-timeout", "3600"];
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let ledger = Arc::new(std::sync::Mutex::new(Ledger::default()));
    let started = std::time::Instant::now();
    let kills = 50;
    let mut token = String::new();
    for cycle in 0..kills {
        assert!(started.elapsed() < Duration::from_secs(240), "the loop is bounded in time; at cycle {cycle}");
        let server = BinaryServer::start(dir.path(), &flags).await;
        if token.is_empty() {
            token = server.admin_token();
        }
        let addr = server.addr;

        // Before new load: the batches the last kill left unanswered are re-sent with
        // their ids; each answers its one seq, stored or not before the kill.
        let unanswered = std::mem::take(&mut ledger.lock().unwrap().unanswered);
        for body in unanswered {
            let answer = post_or_gone(&http, addr, &token, &body).await.expect("the server is up");
            ledger.lock().unwrap().acknowledge(&answer);
        }

        // The log as stored: gapless, each id once, every acknowledged id with its seq.
        let stored = all_events(&http, addr, &token).await;
        let stored_seqs = seqs(&stored);
        assert_eq!(stored_seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "cycle {cycle}: seq is gapless");
        let by_id: HashMap<&str, u64> =
            stored.iter().map(|e| (e["id"].as_str().unwrap(), e["seq"].as_u64().unwrap())).collect();
        assert_eq!(by_id.len(), stored.len(), "cycle {cycle}: each id stored once");
        for (id, seq) in &ledger.lock().unwrap().acknowledged {
            assert_eq!(by_id.get(id.as_str()), Some(seq), "cycle {cycle}: acknowledged {id} is stored with its seq");
        }

        // Every tenth cycle, a quiet kill: the swarm folded event by event before it
        // must equal the swarm folded afresh from the log after it.
        if cycle % 10 == 9 {
            let post = |path: &str, body: Value| {
                http.post(format!("http://{addr}{path}")).bearer_auth(&token).json(&body).send()
            };
            let agent = format!("agent-{cycle}");
            let joined = post("/swarm/agents", json!({"name": agent, "agent_id": agent})).await.unwrap();
            assert_eq!(joined.status(), StatusCode::CREATED);
            let task: Value = post("/swarm/tasks", json!({"description": format!("task {cycle}")}))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let task_id = task["task_id"].as_str().unwrap();
            let bid = post(&format!("/swarm/tasks/{task_id}/bids"), json!({"agent_id": agent, "bid_sats": 10 + cycle}))
                .await
                .unwrap();
            assert!(bid.status().is_success(), "bid accepted");
            let before = swarm_state(&http, addr, &token).await;
            server.kill9().await;
            let server = BinaryServer::start(dir.path(), &flags).await;
            let after = swarm_state(&http, server.addr, &token).await;
            assert_eq!(after, before, "cycle {cycle}: the fold after a restart equals the live one");
            server.kill9().await;
            continue;
        }

        // A viewer resumes from the last seq it saw and records what arrives.
        let since = ledger.lock().unwrap().seen.last().copied().unwrap_or(0);
        let mut viewer = WsClient::connect(addr, Some(&token)).await.unwrap();
        viewer.subscribe(Some(since), json!({})).await;
        let watching = {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                while let Some(message) = viewer.next_message().await {
                    let tokio_tungstenite::tungstenite::Message::Text(text) = message else { break };
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    let events = match frame["type"].as_str() {
                        Some("event") => vec![frame["payload"].clone()],
                        Some("batch") => frame["payload"].as_array().unwrap().clone(),
                        _ => continue,
                    };
                    ledger.lock().unwrap().seen.extend(seqs(&events));
                }
            })
        };

        // Mixed load: batches of 10 and single events, each with ids of its own, and
        // coordinator commands, until the kill.
        let mut load = Vec::new();
        for producer in 0..2 {
            let (http, token, ledger) = (http.clone(), token.clone(), Arc::clone(&ledger));
            load.push(tokio::spawn(async move {
                for i in 0..1_000 {
                    let size = if producer == 0 { 10 } else { 1 };
                    let body: Vec<Value> = (0..size)
                        .map(|j| json!({"id": format!("c{cycle}-p{producer}-{i}-{j}"), "event_type": "tool.called", "source": "crash"}))
                        .collect();
                    let body = json!(body);
                    match post_or_gone(&http, addr, &token, &body).await {
                        Some(answer) => ledger.lock().unwrap().acknowledge(&answer),
                        None => {
                            ledger.lock().unwrap().unanswered.push(body);
                            return;
                        }
                    }
                }
            }));
        }
        {
            let (http, token) = (http.clone(), token.clone());
            load.push(tokio::spawn(async move {
                for i in 0..1_000 {
                    let body = json!({"name": format!("worker {cycle}-{i}")});
                    let sent =
                        http.post(format!("http://{addr}/swarm/agents")).bearer_auth(&token).json(&body).send().await;
                    match sent {
                        Ok(resp) => {
                            assert!(resp.status().is_success() || resp.status() == StatusCode::SERVICE_UNAVAILABLE)
                        }
                        Err(_) => return,
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..400))).await;
        server.kill9().await;
        for task in load {
            task.await.unwrap();
        }
        watching.await.unwrap();
    }

    // What the viewer saw across every restart: each seq once, in order, none skipped.
    let seen = std::mem::take(&mut ledger.lock().unwrap().seen);
    assert!(!seen.is_empty());
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>(), "the viewer saw no gap and no repeat");
    eprintln!(
        "{kills} kills in {:.1} s: {} events acknowledged, {} seen by the resuming viewer",
        started.elapsed().as_secs_f64(),
        ledger.lock().unwrap().acknowledged.len(),
        seen.len()
    );
}

#[tokio::test]
async fn a_wall_clock_stepped_back_or_forward_neither_reorders_the_log_nor_moves_auction_deadlines() {
    if !Path::new(LIBFAKETIME).exists() {
        eprintln!("SKIPPED: stepping a server's wall clock needs {LIBFAKETIME} (Debian's libfaketime)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let offset = dir.path().join("clock-offset");
    std::fs::write(&offset, "+0\n").unwrap();
    let offset_path = offset.display().to_string();
    let env = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME_TIMESTAMP_FILE", offset_path.as_str()),
        ("FAKETIME_NO_CACHE", "1"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let flags = ["--bid-window", "2", "--max-frames-per-sec", "0"];
    let server = BinaryServer::start_with_env(&data, "127.0.0.1:0", &flags, &env).await;
    let (addr, token) = (server.addr, server.admin_token());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
    let post = |path: &str, body: Value| {
        let request = http.post(format!("http://{addr}{path}")).bearer_auth(&token).json(&body).send();
        async move {
            let resp = request.await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{status} {body}");
            body
        }
    };
    let tick =
        |n: usize| json!((0..n).map(|_| json!({"event_type": "tool.called", "source": "clock"})).collect::<Vec<_>>());
    let mut viewer = WsClient::connect(addr, Some(&token)).await.unwrap();
    viewer.subscribe(Some(0), json!({"types": ["task.*", "auction.*", "tool.*"]})).await;

    post("/api/events", tick(5)).await;
    let agent = post("/swarm/agents", json!({"name": "Echo"})).await["agent_id"].as_str().unwrap().to_owned();

    // Stepped back an hour while an auction of 2 s is open: it still closes after 2 s,
    // not after an hour and 2 s.
    let back_task =
        post("/swarm/tasks", json!({"description": "closes on time"})).await["task_id"].as_str().unwrap().to_owned();
    post(&format!("/swarm/tasks/{back_task}/bids"), json!({"agent_id": agent, "bid_sats": 5})).await;
    std::fs::write(&offset, "-1h\n").unwrap();
    post("/api/events", tick(5)).await;

    // Stepped forward a day: an auction posted now closes after its 2 s, not at once.
    std::fs::write(&offset, "+0\n").unwrap();
    let posted = std::time::Instant::now();
    let ahead_task = post("/swarm/tasks", json!({"description": "does not close early"})).await["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(&offset, "+1d\n").unwrap();
    post("/api/events", tick(5)).await;

    let mut assigned_back = false;
    let mut failed_ahead = None;
    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        let mut seen = Vec::new();
        while !(assigned_back && failed_ahead.is_some()) {
            let event = viewer.next_event().await;
            if event["event_type"] == "task.assigned" && event["task_id"] == back_task.as_str() {
                assigned_back = true;
            }
            // No bids: the second auction ends with the task failed.
            if event["event_type"] == "task.failed" && event["task_id"] == ahead_task.as_str() {
                failed_ahead = Some(posted.elapsed());
            }
            seen.push(event);
        }
        seen
    })
    .await
    .expect("both auctions settle within 20 s, whatever the wall clock did");
    let ahead_took = failed_ahead.unwrap();
    assert!(
        ahead_took >= Duration::from_millis(1_500),
        "closed {ahead_took:?} after it was posted, before its 2 s window"
    );

    // The log's order is seq's, and commit times never go backwards with it.
    let stored = all_events(&http, addr, &token).await;
    assert_eq!(seqs(&stored), (1..=stored.len() as u64).collect::<Vec<_>>());
    let times: Vec<&str> = stored.iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "commit times never go backwards: {times:?}");
    assert!(seen.len() >= 10);
    std::fs::write(&offset, "+0\n").unwrap();
    server.terminate().await;
}
