//! Durability and resumption with the real binary: `kill -9`, restarts, slow readers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::harness::{BinaryServer, WsClient, all_events, rss_bytes, seqs};

async fn post(http: &reqwest::Client, server_addr: std::net::SocketAddr, token: &str, body: &Value) -> Option<Value> {
    let resp = http.post(format!("http://{server_addr}/api/events")).bearer_auth(token).json(body).send().await.ok()?;
    if resp.status() != 201 {
        return None;
    }
    resp.json().await.ok()
}

#[tokio::test]
async fn every_acknowledged_event_survives_kill_9_exactly_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &[]).await;
    let token = server.admin_token();
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let http = reqwest::Client::new();
    let (progress, mut progressed) = tokio::sync::watch::channel(0usize);
    let progress = Arc::new(progress);
    let mut producers = Vec::new();
    for p in 0..4 {
        let (http, token, acked, addr) = (http.clone(), token.clone(), Arc::clone(&acked), server.addr);
        let progress = Arc::clone(&progress);
        producers.push(tokio::spawn(async move {
            // Bounded: at most 2 000 requests per producer.
            for i in 0..2_000 {
                let batch: Vec<Value> = (0..10)
                    .map(|j| json!({"id": format!("p{p}-{i}-{j}"), "event_type": "task.created", "source": "durability"}))
                    .collect();
                let Some(answer) = post(&http, addr, &token, &json!(batch)).await else { return };
                let mut acked = acked.lock().unwrap();
                for e in answer["events"].as_array().unwrap() {
                    acked.insert(e["id"].as_str().unwrap().to_owned(), e["seq"].as_u64().unwrap());
                }
                progress.send_replace(acked.len());
            }
        }));
    }
    // Kill while the producers are mid-stream.
    tokio::time::timeout(crate::harness::WAIT, progressed.wait_for(|n| *n >= 1_000))
        .await
        .expect("producers make progress")
        .unwrap();
    server.kill9().await;
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let server = BinaryServer::start(dir.path(), &[]).await;
    let stored = all_events(&http, server.addr, &token).await;
    let stored_seqs = seqs(&stored);
    assert_eq!(stored_seqs, (1..=stored.len() as u64).collect::<Vec<_>>(), "gapless, ascending");
    let by_id: HashMap<&str, u64> =
        stored.iter().map(|e| (e["id"].as_str().unwrap(), e["seq"].as_u64().unwrap())).collect();
    assert_eq!(by_id.len(), stored.len(), "each id once");
    for (id, seq) in &acked {
        assert_eq!(by_id.get(id.as_str()), Some(seq), "acknowledged {id} is stored with its seq");
    }
    server.terminate().await;
}

#[tokio::test]
async fn a_subscriber_resumes_with_since_across_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &["--max-frames-per-sec", "0"]).await;
    let token = server.admin_token();
    let http = reqwest::Client::new();
    let batch = |from: usize| {
        json!(
            (from..from + 25)
                .map(|i| json!({"event_type": "bid.submitted", "source": "r", "data": {"i": i}}))
                .collect::<Vec<_>>()
        )
    };
    post(&http, server.addr, &token, &batch(0)).await.unwrap();
    let mut ws = WsClient::connect(server.addr, Some(&token)).await.unwrap();
    ws.subscribe(Some(10), json!({})).await;
    post(&http, server.addr, &token, &batch(25)).await.unwrap();
    let (first, _) = ws.collect_events(40).await;
    let mut seen = seqs(&first);
    server.kill9().await;

    let server = BinaryServer::start(dir.path(), &["--max-frames-per-sec", "0"]).await;
    post(&http, server.addr, &token, &batch(50)).await.unwrap();
    let mut ws = WsClient::connect(server.addr, Some(&token)).await.unwrap();
    ws.subscribe(Some(*seen.last().unwrap()), json!({})).await;
    post(&http, server.addr, &token, &batch(75)).await.unwrap();
    let (rest, _) = ws.collect_events(50).await;
    seen.extend(seqs(&rest));
    assert_eq!(seen, (11..=100).collect::<Vec<_>>(), "every later event exactly once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
}

#[tokio::test]
async fn a_client_that_does_not_read_lags_on_its_cursor_instead_of_growing_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &["--max-frames-per-sec", "0", "--ring-capacity", "256"]).await;
    let token = server.admin_token();
    let http = reqwest::Client::new();
    let pad = "x".repeat(1000);
    let mut next_id = 0;
    // 100 events (~110 KiB) to a POST, not the API's 1 000: each 1 MiB body leaves the
    // allocator holding a different few MiB of freed buffers at any moment, and RSS
    // sampled after such posts swung by up to 16 MiB with no subscriber at all. At this
    // size it stays within 6 MiB over 90 MiB of posts, and the stalled reader's own
    // cost (one pending frame) shows as 1-4 MiB; buffering its backlog would be 30+.
    const PER_POST: usize = 100;
    let mut post_mib = |http: reqwest::Client, mib: usize| {
        let start = next_id;
        next_id += mib * 1000;
        let (token, pad, addr) = (token.clone(), pad.clone(), server.addr);
        async move {
            for chunk in 0..mib * 1000 / PER_POST {
                let body: Vec<Value> = (0..PER_POST)
                    .map(|i| json!({"id": format!("m{}", start + chunk * PER_POST + i), "event_type": "tool.called", "source": "m", "data": {"pad": pad}}))
                    .collect();
                post(&http, addr, &token, &json!(body)).await.expect("accepted");
            }
        }
    };
    // Warm the store's caches and the allocator first, so the measurement sees growth
    // caused by the stalled client only.
    post_mib(http.clone(), 30).await;
    let mut stalled = WsClient::connect(server.addr, Some(&token)).await.unwrap();
    stalled.subscribe(None, json!({})).await;
    let before = rss_bytes(server.pid());
    post_mib(http.clone(), 30).await;
    let after = rss_bytes(server.pid());
    let growth = after.saturating_sub(before);
    eprintln!("30 MiB behind a stalled reader grew the server by {} KiB", growth / 1024);
    assert!(growth < 12 * 1024 * 1024, "30 MiB behind a stalled reader grew the server by {} KiB", growth / 1024);
    // It was lagging, not lost: once it reads, it gets all 30 000 in order.
    let (got, _) = stalled.collect_events(30_000).await;
    assert_eq!(seqs(&got), (30_001..=60_000).collect::<Vec<_>>());
    server.terminate().await;
}

#[tokio::test]
async fn the_server_still_stops_on_sigterm_when_its_log_reader_has_gone() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmfeed"))
        .args(["--log-format", "json", "serve", "--bind", "127.0.0.1:0", "--no-auth", "--data-dir"])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(crate::harness::WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("swarmfeed ready") {
                return;
            }
        }
    })
    .await
    .expect("server ready");
    // The log collector goes away: every later log line fails to write.
    drop(lines);
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(crate::harness::WAIT, child.wait()).await.expect("it stops").unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_resent_id_answers_its_original_seq_after_retention_pruned_the_event() {
    let app = crate::harness::spawn_with(|c| {
        c.retention.events = Some(2);
        c.retention.interval = std::time::Duration::from_millis(50);
    })
    .await;
    let (status, first) =
        app.post_events(&json!({"id": "order-17", "event_type": "task.created", "source": "shop"})).await;
    assert_eq!(status, 201, "{first}");
    let original = first["events"][0]["seq"].as_u64().unwrap();
    let (status, _) = app.post_events(&crate::harness::events("a.b", 5)).await;
    assert_eq!(status, 201);
    let pruned = tokio::time::timeout(crate::harness::WAIT, async {
        while app.get("/api/events/order-17").await.0 != 404 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(pruned.is_ok(), "retention pruned the event");

    let (status, again) =
        app.post_events(&json!({"id": "order-17", "event_type": "task.created", "source": "shop"})).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["events"][0]["seq"].as_u64(), Some(original), "the original seq, not a new one");
    assert_eq!(again["events"][0]["duplicate"], true);
    let head = app.get("/api/events?order=desc&limit=1").await.1["events"][0]["seq"].as_u64().unwrap();
    assert_eq!(head, original + 5, "nothing new was stored");
    app.stop().await;
}

/// Opens `/ws` on a socket whose receive buffer is a few KiB, subscribes with `batch`
/// frames from `since` (live without it) and reads only the `subscribed` frame: a
/// viewer that then stops reading, whose backlog the kernel cannot hide.
async fn stalled_viewer(
    addr: std::net::SocketAddr,
    token: &str,
    since: Option<u64>,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await.expect("upgrade");
    let mut subscribe = json!({"action": "subscribe", "channel": "events", "batch": true});
    if let Some(since) = since {
        subscribe["since"] = json!(since);
    }
    ws.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    let reply = loop {
        match tokio::time::timeout(crate::harness::WAIT, ws.next()).await.expect("subscribed in time") {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(Message::Text(reply))) => break reply,
            other => panic!("expected the subscribed frame, got {other:?}"),
        }
    };
    assert!(reply.contains(r#""type":"subscribed""#), "{reply}");
    ws
}

/// Bytes the kernel holds at the server's end of the loopback connection between
/// `server` and `client`, sent but unacknowledged and unsent: `tx_queue` in
/// `/proc/net/tcp`, which prints addresses as the raw 32-bit value in hex and ports
/// in hex.
fn server_send_queue(server: std::net::SocketAddr, client: std::net::SocketAddr) -> Option<u64> {
    let hex = |addr: std::net::SocketAddr| match addr {
        std::net::SocketAddr::V4(v4) => Some(format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port())),
        std::net::SocketAddr::V6(_) => None,
    };
    let (local, remote) = (hex(server)?, hex(client)?);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(2) != Some(&remote.as_str()) {
            return None;
        }
        u64::from_str_radix(fields.get(4)?.split(':').next()?, 16).ok()
    })
}

#[tokio::test]
async fn the_server_leaves_little_unsent_in_the_kernel_for_a_viewer_that_stopped_reading() {
    // Linux grows the send buffer of a socket whose reader stopped to 4 MiB (tcp_wmem),
    // and the server would build and write a megabyte of frames into it as for a live
    // viewer; TCP_NOTSENT_LOWAT makes its writes wait after a few KiB instead.
    let app = crate::harness::spawn_app().await;
    let viewer = stalled_viewer(app.addr, &app.admin, None).await;
    let client = viewer.get_ref().local_addr().unwrap();
    let pad = "x".repeat(2000);
    for start in (0..1000).step_by(100) {
        let body: Vec<Value> = (start..start + 100)
            .map(|i| json!({"id": format!("u{i}"), "event_type": "system.error", "source": "s", "data": {"message": pad}}))
            .collect();
        let (status, answer) = app.post_events(&json!(body)).await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{answer}");
    }
    // 2 MiB committed: the server writes what the socket takes, then waits.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let queued = server_send_queue(app.addr, client).expect("the server's end of the viewer's connection");
    eprintln!("the kernel holds {} KiB for the stalled viewer", queued / 1024);
    assert!(queued <= 256 * 1024, "{} KiB queued in the kernel for a viewer that reads nothing", queued / 1024);
    drop(viewer);
    app.stop().await;
}

/// What a stalled viewer may cost the server beyond its kernel socket buffers (issue
/// 19: 128 KiB), and the margin for what the debug binary, the allocator, the posts
/// and RSS sampling add at the peak. Two figures are asserted, over 300 viewers so the
/// allocator's noise is spread thin. What the viewers go on holding once stalled is
/// held to the promise: 64–80 KiB measured (the three transports, run one at a time;
/// event streams took 109 KiB with 32 KiB chunks, 68 KiB with 16 KiB). The peak while
/// their sessions read their last steps at once has shown 164–493 KiB over 100 viewers
/// beside other tests, so it is held to 1 MiB, which still fails on a buffered backlog
/// (6 MiB a viewer here). The release binary's figure, 1 000 viewers, is the bench's
/// (`swarmfeed-bench stalled`: 17–29 KiB, docs/BENCHMARKS.md).
const STALLED_VIEWER_BYTES: u64 = 128 * 1024;
const STALLED_MARGIN_BYTES: u64 = 896 * 1024;

/// A transport's stalled viewer.
#[derive(Debug, Clone, Copy)]
enum Stalled {
    /// `/ws`, subscribed with `batch` frames.
    Ws,
    /// `/ws/html`, subscribed from its URL.
    WsHtml,
    /// `/api/stream`.
    Sse,
}

/// One viewer that stopped reading, whichever its transport.
enum StalledViewer {
    Ws(Box<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>),
    Raw(tokio::net::TcpStream),
}

impl StalledViewer {
    /// Reads until the server ends the connection; false if it is still open after
    /// the wait.
    async fn ended(self) -> bool {
        use futures_util::StreamExt;
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(crate::harness::WAIT, async {
            match self {
                StalledViewer::Ws(mut ws) => while let Some(Ok(_)) = ws.next().await {},
                StalledViewer::Raw(mut tcp) => {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(1..) = tcp.read(&mut buf).await {}
                }
            }
        })
        .await
        .is_ok()
    }
}

/// A socket whose receive buffer is a few KiB: a viewer whose backlog the kernel
/// cannot hide.
async fn small_socket(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Opens a live viewer of `kind` and reads only what says it is subscribed.
async fn open_stalled(addr: std::net::SocketAddr, token: &str, kind: Stalled) -> StalledViewer {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    match kind {
        Stalled::Ws => StalledViewer::Ws(Box::new(stalled_viewer(addr, token, None).await)),
        Stalled::WsHtml => {
            let mut request = format!("ws://{addr}/ws/html").into_client_request().unwrap();
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
            let (mut ws, _) =
                tokio_tungstenite::client_async(request, small_socket(addr).await).await.expect("upgrade");
            let notice = loop {
                match tokio::time::timeout(crate::harness::WAIT, ws.next()).await.expect("subscribed in time") {
                    Some(Ok(Message::Ping(_))) => continue,
                    Some(Ok(Message::Text(notice))) => break notice,
                    other => panic!("expected the subscribed notice, got {other:?}"),
                }
            };
            assert!(notice.contains(r#"data-state="subscribed""#), "{notice}");
            StalledViewer::Ws(Box::new(ws))
        }
        Stalled::Sse => {
            let mut tcp = small_socket(addr).await;
            let head = format!("GET /api/stream HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\r\n");
            tcp.write_all(head.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0; 1024];
            while !String::from_utf8_lossy(&got).contains("event: subscribed") {
                let n = tokio::time::timeout(crate::harness::WAIT, tcp.read(&mut buf))
                    .await
                    .expect("subscribed in time")
                    .unwrap();
                assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
            assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
            StalledViewer::Raw(tcp)
        }
    }
}

/// 300 viewers of `kind` stop reading while 3 000 events of 2 KiB (6 MiB) go by, far
/// more than their socket buffers hold: the server's RSS may grow by at most
/// [`STALLED_VIEWER_BYTES`] and the margin for each at its peak, and go on holding at
/// most [`STALLED_VIEWER_BYTES`] for each once they have stalled. Then they are closed
/// after the write timeout (5 s, longer than the measuring takes). Returns the server, its data directory and an admin token; the
/// 3 000 events are seqs 3 001 to 6 000.
async fn stalled_viewers_cost_a_bounded_amount(kind: Stalled) -> (BinaryServer, tempfile::TempDir, String) {
    const VIEWERS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &["--write-timeout", "5", "--ring-capacity", "256"]).await;
    let token = server.admin_token();
    let http = reqwest::Client::new();
    let pad = "x".repeat(2000);
    let post_events = |from: usize, count: usize| {
        let (http, token, pad, addr) = (http.clone(), token.clone(), pad.clone(), server.addr);
        async move {
            // Posts of 100 (~210 KiB): see the test above on why not the API's 1 000.
            for start in (from..from + count).step_by(100) {
                // An error's message is in its HTML row, so `/ws/html` has as much to
                // send as the JSON transports.
                let body: Vec<Value> = (start..start + 100)
                    .map(|i| json!({"id": format!("s{i}"), "event_type": "system.error", "source": "s", "data": {"message": pad}}))
                    .collect();
                post(&http, addr, &token, &json!(body)).await.expect("accepted");
            }
        }
    };
    // Warm the store's caches and the allocator, as the test above does.
    post_events(0, 3000).await;
    let mut stalled = Vec::new();
    for _ in 0..VIEWERS {
        stalled.push(open_stalled(server.addr, &token, kind).await);
    }
    let before = rss_bytes(server.pid());
    post_events(3000, 3000).await;
    // The most the server held over the next second, while each session read its
    // steps and stalled on them; paced at 10 steps a second, that is ten steps each.
    let mut peak = rss_bytes(server.pid());
    for _ in 0..10 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        peak = peak.max(rss_bytes(server.pid()));
    }
    let per_viewer = peak.saturating_sub(before) / VIEWERS as u64;
    // What they go on holding, once every session has stalled and let go of its step.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let held = rss_bytes(server.pid()).saturating_sub(before) / VIEWERS as u64;
    eprintln!(
        "{kind:?}: RSS growth per stalled viewer: {} KiB at the peak, {} KiB held",
        per_viewer / 1024,
        held / 1024
    );
    assert!(
        held <= STALLED_VIEWER_BYTES,
        "a stalled {kind:?} viewer goes on holding {} KiB of the server",
        held / 1024
    );
    assert!(
        per_viewer <= STALLED_VIEWER_BYTES + STALLED_MARGIN_BYTES,
        "a stalled {kind:?} viewer cost the server {} KiB",
        per_viewer / 1024
    );
    // Each is let go after the write timeout: what it reads ends, short of the head.
    let viewer = stalled.pop().unwrap();
    drop(stalled);
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert!(viewer.ended().await, "the stalled {kind:?} viewer was closed after the write timeout");
    (server, dir, token)
}

#[tokio::test]
async fn viewers_that_never_read_get_bounded_frames_are_let_go_and_resume_exactly() {
    use futures_util::StreamExt;
    /// `FRAME_CHUNK_BYTES` of event weight, which is more than the events' JSON, and
    /// the batch envelope.
    const MAX_FRAME: usize = 32 * 1024 + 64;
    let (server, _dir, token) = stalled_viewers_cost_a_bounded_amount(Stalled::Ws).await;
    // Catching up from where it subscribed, a viewer gets every event exactly once, in
    // frames no larger than a laggard's: a backlog of 6 MiB is never one frame.
    let mut resumed = stalled_viewer(server.addr, &token, Some(3000)).await;
    let mut last = 3000;
    let caught_up = tokio::time::timeout(crate::harness::WAIT, async {
        while last < 6000 {
            let item = resumed.next().await;
            let Some(Ok(message)) = item else { panic!("the stream ended at {last}: {item:?}") };
            let tokio_tungstenite::tungstenite::Message::Text(text) = message else { continue };
            // What tungstenite copies into the connection's write buffer, and a stalled
            // client leaves there: one frame, never the backlog.
            assert!(text.len() <= MAX_FRAME, "a {} byte frame for a laggard", text.len());
            let frame: Value = serde_json::from_str(&text).unwrap();
            for event in frame["payload"].as_array().cloned().unwrap_or_else(|| vec![frame["payload"].clone()]) {
                let seq = event["seq"].as_u64().unwrap();
                assert_eq!(seq, last + 1, "in order, none skipped or repeated");
                last = seq;
            }
        }
    })
    .await;
    assert!(caught_up.is_ok(), "caught up within the wait; got to {last}");
    server.terminate().await;
}

#[tokio::test]
async fn html_websocket_viewers_that_never_read_cost_a_bounded_amount_and_are_let_go() {
    let (server, _dir, _) = stalled_viewers_cost_a_bounded_amount(Stalled::WsHtml).await;
    server.terminate().await;
}

#[tokio::test]
async fn event_stream_viewers_that_never_read_cost_a_bounded_amount_are_let_go_and_resume_exactly() {
    let (server, _dir, token) = stalled_viewers_cost_a_bounded_amount(Stalled::Sse).await;
    // `Last-Event-ID`, as a browser sends it on reconnecting, resumes exactly.
    let resp = reqwest::Client::new()
        .get(format!("http://{}/api/stream", server.addr))
        .bearer_auth(&token)
        .header("last-event-id", "3000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let (mut text, mut last) = (String::new(), 3000);
    let caught_up = tokio::time::timeout(crate::harness::WAIT, async {
        use futures_util::StreamExt;
        while last < 6000 {
            let chunk = body.next().await.expect("the stream goes on").unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            // Whole messages only; a partial one waits for the next chunk.
            while let Some(end) = text.find("\n\n") {
                let message: String = text.drain(..end + 2).collect();
                if let Some(id) = message.lines().find_map(|l| l.strip_prefix("id: ")) {
                    let seq: u64 = id.parse().unwrap();
                    assert_eq!(seq, last + 1, "in order, none skipped or repeated");
                    last = seq;
                }
            }
        }
    })
    .await;
    assert!(caught_up.is_ok(), "caught up within the wait; got to {last}");
    server.terminate().await;
}
