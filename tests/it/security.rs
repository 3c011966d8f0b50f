//! Attacks that must be refused while an honest client keeps being served (DESIGN §6).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use swarmfeed::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::{TestApp, WAIT, WsClient, events, spawn_app, spawn_with};

/// A TCP connection to `addr` from the loopback address `from` (any 127.x works), so
/// one test can be several clients.
async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0))?;
    socket.connect(addr).await
}

fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(from.parse::<IpAddr>().unwrap()).build().unwrap()
}

/// The honest client still gets answers.
async fn honest_client_is_served(app: &TestApp) {
    let (status, _) = app.get("/api/events?limit=1").await;
    assert_eq!(status, StatusCode::OK, "the honest client is still served");
}

#[tokio::test]
async fn a_revoked_token_loses_its_open_streams_and_its_access() {
    let app = spawn_app().await;
    let (status, issued) =
        app.post_raw("/api/tokens", &json!({"scope": "read", "name": "dash"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (token, id) = (issued["token"].as_str().unwrap().to_owned(), issued["id"].as_str().unwrap().to_owned());
    let mut ws = WsClient::connect(app.addr, Some(&token)).await.unwrap();
    ws.subscribe(None, json!({})).await;
    let sse = app.http.get(app.url("/api/stream")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let mut sse = sse.bytes_stream();
    let (_, listed) = app.get("/api/tokens").await;
    assert!(listed["tokens"].as_array().unwrap().iter().any(|t| t["id"] == id && t["revoked"] == false));
    assert!(!listed.to_string().contains(&token), "secrets are never listed");

    let resp = app.http.delete(app.url(&format!("/api/tokens/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    match ws.next_message().await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected close 1008, got {other:?}"),
    }
    let ended = tokio::time::timeout(WAIT, async { while let Some(Ok(_)) = sse.next().await {} }).await;
    assert!(ended.is_ok(), "the event stream ends");
    assert_eq!(app.get_as("/api/events", Some(&token)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(WsClient::connect(app.addr, Some(&token)).await.err(), Some(Some(401)));
    let resp = app.http.delete(app.url(&format!("/api/tokens/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "already revoked");
    app.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_can_neither_open_a_socket_nor_post() {
    let app = spawn_with(|c| c.allowed_origins = vec!["https://dash.example.com".into()]).await;
    let upgrade = |origin: &'static str| {
        let mut request = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {}", app.admin).parse().unwrap());
        request.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match upgrade("http://evil.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("foreign origin upgraded: {:?}", other.map(|_| ())),
    }
    let own: &'static str = Box::leak(format!("http://{}", app.addr).into_boxed_str());
    assert!(upgrade(own).await.is_ok(), "the server's own pages may");
    assert!(upgrade("https://dash.example.com").await.is_ok(), "an allowed origin may");
    let resp = app
        .http
        .post(app.url("/api/events"))
        .bearer_auth(&app.admin)
        .header("origin", "http://evil.example")
        .json(&events("a.b", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "forbidden_origin");
    assert!(app.all_events().await.is_empty(), "nothing was stored");
    app.stop().await;
}

#[tokio::test]
async fn a_thousand_connections_from_one_ip_are_capped_and_others_are_served() {
    let app = spawn_with(|c| c.limits = Limits { max_conns_per_ip: 50, ..Limits::unlimited() }).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..1000 {
        let mut s = connect_from("127.0.0.2", app.addr).await.unwrap();
        // Each connection asks for something, so an admitted one stays open (keep-alive)
        // and a refused one gets its answer.
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        if head.starts_with("HTTP/1.1 429") {
            refused += 1;
        } else {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            held.push(s);
        }
    }
    assert_eq!(held.len(), 50);
    assert_eq!(refused, 950);
    honest_client_is_served(&app).await;
    drop(held);
    app.stop().await;
}

#[tokio::test]
async fn a_slowloris_client_is_cut_off_and_others_are_served() {
    let app = spawn_with(|c| c.limits.header_timeout = Duration::from_millis(500)).await;
    let mut slow = connect_from("127.0.0.3", app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = Instant::now();
    let drip = async {
        // One header line at a time, never finishing; bounded at 20 lines.
        for i in 0..20 {
            if slow.write_all(format!("x-drip-{i}: y\r\n").as_bytes()).await.is_err() {
                return;
            }
            honest_client_is_served(&app).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    drip.await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, slow.read_to_end(&mut buf)).await.expect("server closes the connection");
    assert!(started.elapsed() < Duration::from_secs(4), "cut off after the header timeout");
    app.stop().await;
}

#[tokio::test]
async fn handshake_and_request_rates_are_limited_per_ip_with_retry_after() {
    let app = spawn_with(|c| {
        c.limits = Limits { handshakes_per_ip_per_sec: 5, requests_per_ip_per_sec: 40, ..Limits::unlimited() }
    })
    .await;
    let attacker = client_from("127.0.0.4");
    let mut limited = 0;
    for _ in 0..10 {
        let resp = attacker.get(app.url("/api/stream")).bearer_auth(&app.admin).send().await.unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(resp.headers().contains_key("retry-after"));
            limited += 1;
        }
    }
    assert!((4..=5).contains(&limited), "five handshakes a second, then 429; {limited} refused");
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(attacker.get(app.url("/healthz")).send().await.unwrap().status());
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS));
    honest_client_is_served(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_over_its_ingest_rate_gets_429_and_only_accepted_events_are_stored() {
    let app = spawn_with(|c| c.limits = Limits { ingest_rate_per_token: 100, ..Limits::unlimited() }).await;
    let (first, _) = app.post_events(&events("a.b", 100)).await;
    assert_eq!(first, StatusCode::CREATED);
    let resp =
        app.http.post(app.url("/api/events")).bearer_auth(&app.admin).json(&events("a.b", 50)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let writer = app.token("write").await;
    let (other, _) = app.post_raw("/api/events", &events("a.b", 10).to_string(), Some(&writer)).await;
    assert_eq!(other, StatusCode::CREATED, "other tokens are not held back");
    assert_eq!(app.all_events().await.len(), 110);
    app.stop().await;
}

#[tokio::test]
async fn hostile_bodies_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let deep =
        format!(r#"{{"event_type":"a.b","source":"s","data":{}1{}}}"#, "{\"a\":[".repeat(5_000), "]}".repeat(5_000));
    let (status, err) = app.post_raw("/api/events", &deep, Some(&app.admin)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let limits: [(&str, usize); 5] =
        [("id", 128), ("source", 128), ("task_id", 128), ("agent_id", 128), ("event_type", 64)];
    for (field, max) in limits {
        let value = |n: usize| if field == "event_type" { format!("a.{}", "b".repeat(n - 2)) } else { "x".repeat(n) };
        let mut ok = json!({"event_type": "a.b", "source": "s"});
        ok[field] = json!(value(max));
        assert_eq!(app.post_events(&ok).await.0, StatusCode::CREATED, "{field} at its limit");
        let mut over = ok.clone();
        over[field] = json!(value(max + 1));
        let (status, err) = app.post_events(&over).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field} past its limit");
        assert_eq!(err["error"]["field"], field);
    }
    let at_limit = json!({"event_type": "a.b", "source": "s", "data": {"k": "x".repeat(16 * 1024 - 8)}});
    assert_eq!(app.post_events(&at_limit).await.0, StatusCode::CREATED, "data at 16 KiB");
    let over = json!({"event_type": "a.b", "source": "s", "data": {"k": "x".repeat(16 * 1024 - 7)}});
    assert_eq!(app.post_events(&over).await.0, StatusCode::BAD_REQUEST, "data one byte past 16 KiB");
    assert_eq!(app.all_events().await.len(), 6, "exactly the accepted events");
    honest_client_is_served(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn a_silent_websocket_client_is_closed_as_idle() {
    let app = spawn_with(|c| c.keepalive = Duration::from_millis(100)).await;
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({})).await;
    // Read nothing, so no pong goes back, for longer than three keepalive periods.
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The server closes the socket: the client sees the close frame, or, when its
    // belated pong hits the closed socket first, the broken connection.
    loop {
        match tokio::time::timeout(WAIT, ws.stream.next()).await.expect("the server closes an idle socket") {
            Some(Ok(Message::Ping(_))) => continue,
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(frame.code, CloseCode::Away);
                assert_eq!(frame.reason.as_str(), "idle timeout");
                break;
            }
            None | Some(Err(_)) => break,
            other => panic!("expected an idle close, got {other:?}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn responses_carry_the_security_headers() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/healthz")).send().await.unwrap();
    let h = resp.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("script-src 'self' 'unsafe-inline'"));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    let resp = app.http.get(app.url("/api/events")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("content-security-policy"), "on refusals too");
    app.stop().await;
}

/// The resident memory of this process, KiB: the in-process server and the test's own
/// clients (nextest runs each test in a process of its own).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Prints the memory figures of a flood test, for docs/SECURITY.md.
fn report_rss(test: &str, before: u64, during: u64, after: u64) {
    eprintln!("{test}: RSS before {before} KiB, during {during} KiB, after {after} KiB");
}

/// Reads a response head from a raw socket: everything up to the blank line, or what
/// came before the server closed; panics after [`WAIT`].
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect("an answer within the wait");
    String::from_utf8_lossy(&head).into_owned()
}

/// A request head announcing a body of `length` bytes to `path`.
fn post_head(path: &str, token: &str, length: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {length}\r\n\r\n"
    )
}

#[tokio::test]
async fn a_flood_of_large_login_bodies_is_refused_before_the_bodies_are_sent() {
    let app = spawn_app().await;
    let before = rss_kib();
    // 45 connections each announce a 15 MiB login form and start sending it.
    let mut flood = Vec::new();
    for _ in 0..45 {
        let mut s = connect_from("127.0.0.2", app.addr).await.unwrap();
        s.write_all(post_head("/login", "", 15 * 1024 * 1024).as_bytes()).await.unwrap();
        // The server may answer and close before this part arrives.
        let _ = s.write_all(&[b'a'; 1024]).await;
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 413"), "refused at once, not after 15 MiB: {head}");
        flood.push(s);
    }
    let during = rss_kib();
    honest_client_is_served(&app).await;
    drop(flood);
    report_rss("login body flood", before, during, rss_kib());
    assert!(during < before + 50 * 1024, "45 announced 15 MiB bodies hold no memory: {before} → {during} KiB");
    app.stop().await;
}

#[tokio::test]
async fn only_ingest_takes_large_bodies_and_commands_are_capped_at_64_kib() {
    let app = spawn_app().await;
    let big_task = json!({"description": "x".repeat(100 * 1024)}).to_string();
    let (status, err) = app.post_raw("/swarm/tasks", &big_task, Some(&app.admin)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["error"]["code"], "payload_too_large");
    assert!(err["error"]["message"].as_str().unwrap().contains("65536"), "{err}");
    // Without a Content-Length (chunked), the cap is enforced as the body arrives.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..100).map(|_| Ok(vec![b' '; 1024])).collect();
    let resp = app
        .http
        .post(app.url("/api/tokens"))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "payload_too_large");
    let (_, tokens) = app.get("/api/tokens").await;
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 1, "no token was made: only the admin's");
    // A 1.2 MB batch is still ingest's to take.
    let batch: Vec<Value> = (0..100)
        .map(|n| json!({"event_type": "a.b", "source": "s", "data": {"n": n, "pad": "x".repeat(12_000)}}))
        .collect();
    let (status, _) = app.post_events(&Value::Array(batch)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.all_events().await.len(), 100, "only the batch was stored");
    app.stop().await;
}

#[tokio::test]
async fn slow_bodies_beyond_the_in_flight_budget_get_503_and_give_it_back_when_dropped() {
    const BODY: usize = 256 * 1024;
    let app = spawn_with(|c| {
        c.max_body_bytes = BODY;
        c.limits.max_inflight_body_bytes = 4 * BODY;
    })
    .await;
    let before = rss_kib();
    // Four slow ingest bodies reserve the whole budget and stall after 1 KiB.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from("127.0.0.3", app.addr).await.unwrap();
        s.write_all(post_head("/api/events", &app.admin, BODY).as_bytes()).await.unwrap();
        s.write_all(&[b' '; 1024]).await.unwrap();
        slow.push(s);
    }
    // One event, padded with JSON whitespace to the full body cap.
    let one = events("a.b", 1).to_string();
    let full_body = format!("{one}{}", " ".repeat(BODY - one.len()));
    let post = |client: reqwest::Client, body: reqwest::Body| {
        client.post(app.url("/api/events")).bearer_auth(&app.admin).body(body).send()
    };
    // The slow bodies reach the budget in their own time; from then on, every body
    // that does not fit is refused. Bounded: 100 tries.
    let mut refused = None;
    for _ in 0..100 {
        let resp = post(client_from("127.0.0.4"), full_body.clone().into()).await.unwrap();
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::CREATED, "served while the budget has room");
    }
    let refused = refused.expect("the budget is spent by the slow bodies");
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "server_busy");
    // A chunked body is charged as it arrives, and refused the same way.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(b"[".to_vec()), Ok(vec![b' '; 8 * 1024])];
    let resp =
        post(client_from("127.0.0.4"), reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let during = rss_kib();
    honest_client_is_served(&app).await;
    // A slow body that goes away gives its share back.
    drop(slow.pop());
    let mut accepted = false;
    for _ in 0..100 {
        let resp = post(client_from("127.0.0.4"), events("a.b", 1).to_string().into()).await.unwrap();
        if resp.status() == StatusCode::CREATED {
            accepted = true;
            break;
        }
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(accepted, "the budget was given back");
    drop(slow);
    report_rss("slow body flood", before, during, rss_kib());
    app.stop().await;
}

#[tokio::test]
async fn a_prior_knowledge_http2_client_cannot_open_streams_past_the_per_ip_limit() {
    let app = spawn_with(|c| c.limits = Limits { max_conns_per_ip: 50, ..Limits::unlimited() }).await;
    let before = rss_kib();
    let tcp = connect_from("127.0.0.5", app.addr).await.unwrap();
    let answered = tokio::time::timeout(WAIT, async {
        let Ok((client, connection)) = h2::client::handshake(tcp).await else { return 0 };
        let driver = tokio::spawn(connection);
        let mut responses = Vec::new();
        for _ in 0..190 {
            let Ok(mut ready) = client.clone().ready().await else { break };
            let request = http::Request::get(format!("http://{}/api/events/poll?after=1000000&wait=1", app.addr))
                .header("authorization", format!("Bearer {}", app.admin))
                .body(())
                .unwrap();
            match ready.send_request(request, true) {
                Ok((response, _)) => responses.push(response),
                Err(_) => break,
            }
        }
        let mut answered = 0;
        for response in responses {
            if response.await.is_ok_and(|r| r.status() == http::StatusCode::OK) {
                answered += 1;
            }
        }
        driver.abort();
        answered
    })
    .await
    .expect("the HTTP/2 attempt ends within the wait");
    assert_eq!(answered, 0, "no stream is served over cleartext HTTP/2");
    // The raw preface is refused: the socket closes (an HTTP/1.1 error would do too),
    // never answered with an HTTP/2 SETTINGS frame.
    let mut raw = connect_from("127.0.0.5", app.addr).await.unwrap();
    // The server may refuse before the SETTINGS frame is written.
    let _ = raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut reply)).await.expect("the server closes it");
    assert!(reply.is_empty() || reply.starts_with(b"HTTP/1.1 "), "{:?}", String::from_utf8_lossy(&reply));
    // The address is not locked out, and the limit still counts what it serves.
    let resp = client_from("127.0.0.5").get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    honest_client_is_served(&app).await;
    report_rss("HTTP/2 stream flood", before, rss_kib(), rss_kib());
    app.stop().await;
}

#[tokio::test]
async fn silent_sockets_are_closed_after_the_header_timeout_and_do_not_lock_anyone_out() {
    let app = spawn_with(|c| {
        c.limits = Limits {
            max_conns_per_ip: 50,
            max_connections: 50,
            header_timeout: Duration::from_millis(500),
            ..Limits::unlimited()
        }
    })
    .await;
    let before = rss_kib();
    // 50 sockets that never send a byte fill the per-IP and the total cap.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(connect_from("127.0.0.6", app.addr).await.unwrap());
    }
    let during = rss_kib();
    let started = Instant::now();
    for s in &mut silent {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a silent socket is closed by the server");
    }
    assert!(started.elapsed() < Duration::from_secs(3), "closed after the header timeout: {:?}", started.elapsed());
    // The caps count them no longer: the same IP and everyone else are served.
    let resp = client_from("127.0.0.6").get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    honest_client_is_served(&app).await;
    report_rss("silent socket flood", before, during, rss_kib());
    app.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_that_goes_silent_is_closed_after_the_header_timeout() {
    let app = spawn_with(|c| c.limits.header_timeout = Duration::from_millis(500)).await;
    let mut s = connect_from("127.0.0.6", app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut rest)).await.expect("closed").unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn unread_large_responses_are_cut_after_the_write_timeout_and_free_their_memory() {
    let app = spawn_with(|c| c.limits.write_timeout = Duration::from_secs(1)).await;
    // 1000 events of 16 KiB: one page of all of them is 16 MB.
    for _ in 0..4 {
        let batch: Vec<Value> = (0..250)
            .map(|_| json!({"event_type": "a.b", "source": "s", "data": {"pad": "x".repeat(16_000)}}))
            .collect();
        assert_eq!(app.post_events(&Value::Array(batch)).await.0, StatusCode::CREATED);
    }
    let full = app.http.get(app.url("/api/events?limit=1000")).bearer_auth(&app.admin).send().await.unwrap();
    let full = full.bytes().await.unwrap();
    let full_len = full.len();
    assert!(full_len > 16_000_000, "{full_len}");
    // Sent in chunks, the page is still the one page: every event once, in order.
    let page: Value = serde_json::from_slice(&full).unwrap();
    let seqs: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    assert_eq!(page["next"], 1000);
    let (_, desc) = app.get("/api/events?limit=450&order=desc&before=901").await;
    let seqs: Vec<u64> = desc["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (451..=900).rev().collect::<Vec<_>>());
    assert_eq!(desc["next"], 451);
    let (_, tail) = app.get("/api/events?limit=1000&after=850").await;
    assert_eq!(tail["events"].as_array().unwrap().len(), 150);
    assert_eq!(tail["next"], Value::Null, "a short page has no next");
    let baseline = open_connections(&app).await;
    let before = rss_kib();
    // 20 clients ask for the whole page and read none of it.
    let mut unread = Vec::new();
    for _ in 0..20 {
        let mut s = connect_from("127.0.0.7", app.addr).await.unwrap();
        let request = format!(
            "GET /api/events?limit=1000 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\r\n",
            app.admin
        );
        s.write_all(request.as_bytes()).await.unwrap();
        unread.push(s);
    }
    // The attack is not reading. The server builds the 20 pages in its own time, and
    // must then drop each one the write timeout after the client stopped taking it.
    let mut during = rss_kib();
    let cut = tokio::time::timeout(WAIT, async {
        while open_connections(&app).await > baseline {
            during = during.max(rss_kib());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(cut.is_ok(), "every unread response is dropped after the write timeout");
    honest_client_is_served(&app).await;
    for s in &mut unread {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut got)).await.expect("the server ended the response");
        assert!(got.len() < full_len, "cut short: {} of {full_len} bytes", got.len());
    }
    drop(unread);
    let after = rss_kib();
    report_rss("unread response flood", before, during, after);
    // Whole pages held until read would be 20 × 16 MB and more.
    assert!(during < before + 160 * 1024, "20 unread pages pin little: {before} → {during} KiB");
    honest_client_is_served(&app).await;
    app.stop().await;
}

/// The server's `swarmfeed_open_connections` gauge, the asking one included.
async fn open_connections(app: &TestApp) -> u64 {
    let resp = app.http.get(app.url("/metrics")).bearer_auth(&app.admin).send().await.unwrap();
    let text = resp.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("swarmfeed_open_connections "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("swarmfeed_open_connections in /metrics") as u64
}

/// A request as a page on `attacker.example` makes it once its name resolves to this
/// server: foreign `Host`, matching `Origin`.
fn rebound(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.header("host", "attacker.example").header("origin", "http://attacker.example")
}

#[tokio::test]
async fn dns_rebinding_against_a_no_auth_server_gets_nowhere() {
    let app = spawn_with(|c| {
        c.no_auth = true;
        c.allowed_hosts = vec!["feed.example".into()];
    })
    .await;
    let token = rebound(app.http.post(app.url("/api/tokens"))).json(&json!({"scope": "admin"})).send().await.unwrap();
    assert_eq!(token.status(), StatusCode::FORBIDDEN);
    let body = token.json::<Value>().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden_host");
    assert!(body["error"]["message"].as_str().unwrap().contains("--allowed-host"), "{body}");
    let post = rebound(app.http.post(app.url("/api/events"))).json(&events("a.b", 1)).send().await.unwrap();
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
    let read = app.http.get(app.url("/api/events")).header("host", "attacker.example").send().await.unwrap();
    assert_eq!(read.status(), StatusCode::FORBIDDEN, "without auth, reads are refused too");
    let mut upgrade = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
    upgrade.headers_mut().insert("host", "attacker.example".parse().unwrap());
    upgrade.headers_mut().insert("origin", "http://attacker.example".parse().unwrap());
    match tokio_tungstenite::connect_async(upgrade).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("a rebound page opened /ws: {:?}", other.map(|_| ())),
    }
    assert!(app.all_events().await.is_empty(), "nothing was stored");
    // This server's own names keep working, port and all.
    let port = app.addr.port();
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("feed.example:{port}")] {
        let resp = app
            .http
            .post(app.url("/api/events"))
            .header("host", &host)
            .header("origin", format!("http://{host}"))
            .json(&events("a.b", 1))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED, "{host}");
    }
    app.stop().await;
}

#[tokio::test]
async fn with_auth_the_origin_check_needs_a_host_of_this_server_and_the_same_scheme() {
    let app = spawn_app().await;
    let upgrade = |host: &str, origin: &str| {
        let mut request = format!("ws://{}/ws", app.addr).into_client_request().unwrap();
        request.headers_mut().insert("authorization", format!("Bearer {}", app.admin).parse().unwrap());
        request.headers_mut().insert("host", host.parse().unwrap());
        request.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(request)
    };
    match upgrade("attacker.example", "http://attacker.example").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("a rebound page opened /ws: {:?}", other.map(|_| ())),
    }
    let own = app.addr.to_string();
    match upgrade(&own, &format!("https://{own}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("an https origin passed for an http server: {:?}", other.map(|_| ())),
    }
    assert!(upgrade(&own, &format!("http://{own}")).await.is_ok(), "the server's own page may");
    // A program (no Origin) is judged by its token alone, whatever name it used.
    let resp = app.http.get(app.url("/api/events")).bearer_auth(&app.admin).header("host", "feed.example").send().await;
    assert_eq!(resp.unwrap().status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_websocket_whose_client_reads_nothing_is_closed_after_the_write_timeout() {
    let app = spawn_with(|c| {
        c.limits.write_timeout = Duration::from_secs(1);
        c.max_frames_per_sec = 0;
    })
    .await;
    // 16 MB of events, more than the socket buffers of both ends hold.
    for _ in 0..4 {
        let batch: Vec<Value> = (0..250)
            .map(|_| json!({"event_type": "a.b", "source": "s", "data": {"pad": "x".repeat(16_000)}}))
            .collect();
        assert_eq!(app.post_events(&Value::Array(batch)).await.0, StatusCode::CREATED);
    }
    let baseline = open_connections(&app).await;
    let mut ws = app.ws().await;
    // Replay from the start, then read nothing more.
    ws.subscribe(Some(0), json!({})).await;
    let closed = tokio::time::timeout(WAIT, async {
        while open_connections(&app).await > baseline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(closed.is_ok(), "the server let the socket go after the write timeout");
    honest_client_is_served(&app).await;
    app.stop().await;
}
