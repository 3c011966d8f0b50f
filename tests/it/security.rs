//! Attacks that must be refused while an honest client keeps being served (DESIGN §6).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use swarmfeed::http::limits::Limits;
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
