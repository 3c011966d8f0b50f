//! The dashboard over plain HTTP: login and the session cookie, redirects, assets,
//! and the HTML encodings of the transports (`/ws/html`, SSE and long-poll with
//! `format=html`). What a browser does with them is in `browser`.

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::{TestApp, WAIT, spawn_app};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Logs in with the form and returns the `Cookie` header value it set.
async fn login(app: &TestApp) -> String {
    let resp = no_redirects()
        .post(app.url("/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={}&next=%2Fswarm%2Fevents", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/swarm/events");
    let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn pages_without_a_session_redirect_to_login_while_the_api_answers_401() {
    let app = spawn_app().await;
    let http = no_redirects();
    for (path, next) in
        [("/swarm/live", "%2Fswarm%2Flive"), ("/swarm/events?types=task.*", "%2Fswarm%2Fevents%3Ftypes%3Dtask.*")]
    {
        let resp = http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(resp.headers()[LOCATION], format!("/login?next={next}"));
    }
    let resp = http.get(app.url("/swarm/live/panels")).header("hx-request", "true").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers()["hx-redirect"], "/login?next=%2Fswarm%2Flive%2Fpanels");
    let resp = http.get(app.url("/api/events")).header(COOKIE, "swarmfeed_session=sf_forged").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    let resp = http.get(app.url("/")).send().await.unwrap();
    assert_eq!(resp.headers()[LOCATION], "/swarm/live");
    let resp = http.get(app.url("/login")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("name=\"token\""));
    app.stop().await;
}

#[tokio::test]
async fn the_session_cookie_opens_pages_and_the_api_until_logout() {
    let app = spawn_app().await;
    let cookie = login(&app).await;
    let http = no_redirects();
    for path in ["/swarm/live", "/swarm/events", "/swarm/live/panels"] {
        let resp = http.get(app.url(path)).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(resp.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"), "{path}");
    }
    let resp = http.get(app.url("/api/events")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = http.get(app.url("/swarm/tasks/nope")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let resp = http.post(app.url("/logout")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(resp.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    app.stop().await;
}

#[tokio::test]
async fn pages_have_no_inline_script_style_or_event_handler() {
    let app = spawn_app().await;
    let (status, task) = app.post_raw("/swarm/tasks", &json!({"description": "d"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, agent) = app.post_raw("/swarm/agents", &json!({"name": "n"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let cookie = login(&app).await;
    let paths = [
        "/login".to_owned(),
        "/swarm/live".to_owned(),
        "/swarm/live/panels".to_owned(),
        "/swarm/events".to_owned(),
        format!("/swarm/tasks/{}", task["task_id"].as_str().unwrap()),
        format!("/swarm/agents/{}", agent["agent_id"].as_str().unwrap()),
    ];
    let handler = regex::Regex::new(r"(?i)<[^>]*\son[a-z]+\s*=").unwrap();
    for path in &paths {
        let resp = app.http.get(app.url(path)).header(COOKIE, &cookie).send().await.unwrap();
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self';") && csp.contains("style-src 'self';"), "{path}: {csp}");
        let html = resp.text().await.unwrap();
        // A Content-Security-Policy without 'unsafe-inline' must not break any page.
        for (i, _) in html.match_indices("<script") {
            assert!(html[i..].starts_with("<script defer src=\"/assets/"), "{path}: inline script at {i}");
        }
        assert!(!html.contains(" style="), "{path}: inline style");
        assert!(!html.contains("<style"), "{path}: style element");
        assert!(!handler.is_match(&html), "{path}: inline event handler");
    }
    app.stop().await;
}

#[tokio::test]
async fn assets_are_embedded_and_revalidate_with_their_etag() {
    let app = spawn_app().await;
    let resp = app.http.get(app.url("/assets/vendor/htmx.org/htmx.min.js")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
    let etag = resp.headers()["etag"].clone();
    let resp = app
        .http
        .get(app.url("/assets/vendor/htmx.org/htmx.min.js"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(app.http.get(app.url("/assets/../Cargo.toml")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_html(app: &TestApp, query: &str, token: Option<&str>) -> Result<Ws, Option<u16>> {
    let mut request = format!("ws://{}/ws/html{query}", app.addr).into_client_request().unwrap();
    if let Some(t) = token {
        request.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Some(resp.status().as_u16())),
        Err(_) => Err(None),
    }
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn ws_html_streams_escaped_fragments_for_the_subscription_in_its_url() {
    let app = spawn_app().await;
    assert_eq!(ws_html(&app, "", None).await.err(), Some(Some(401)));
    assert_eq!(ws_html(&app, "?types=Bad", Some(&app.admin)).await.err(), Some(Some(400)));
    app.post_events(&json!([
        {"event_type": "bid.submitted", "source": "t", "data": {"bid_sats": 1}},
        {"event_type": "task.created", "source": "t", "data": {"description": "<script>x()</script>"}},
    ]))
    .await;

    let mut ws = ws_html(&app, "?since=0&types=task.*", Some(&app.admin)).await.unwrap();
    let subscribed = next_text(&mut ws).await;
    assert!(
        subscribed.contains(r#"id="feed-notice""#) && subscribed.contains(r#"data-state="subscribed""#),
        "{subscribed}"
    );
    let rows = next_text(&mut ws).await;
    assert!(rows.starts_with(r#"<ol id="feed-incoming" hx-swap-oob="beforeend">"#), "{rows}");
    assert!(rows.contains(r#"data-seq="2""#) && !rows.contains(r#"data-seq="1""#), "the filter holds: {rows}");
    assert!(rows.contains("&lt;script&gt;x()&lt;/script&gt;") && !rows.contains("<script"), "{rows}");

    // What htmx's ws-send sends: form fields as strings, plus HEADERS.
    ws.send(Message::Text(
        json!({"since": "0", "types": "bid.*", "HEADERS": {"HX-Request": "true"}}).to_string().into(),
    ))
    .await
    .unwrap();
    assert!(next_text(&mut ws).await.contains(r#"data-state="subscribed""#));
    let rows = next_text(&mut ws).await;
    assert!(rows.contains(r#"data-seq="1""#) && !rows.contains(r#"data-seq="2""#), "{rows}");
    ws.send(Message::Text(r#"{"since":"soon"}"#.into())).await.unwrap();
    let error = next_text(&mut ws).await;
    assert!(error.contains(r#"data-state="error""#) && error.contains("since must be a seq"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn sse_and_long_poll_render_rows_with_format_html() {
    let app = spawn_app().await;
    app.post_events(&json!({"event_type": "system.error", "source": "t", "data": {"message": "<b>boom</b>"}})).await;
    let (status, page) = app.get("/api/events/poll?format=html&after=0&wait=0").await;
    assert_eq!(status, StatusCode::OK);
    let html = page["html"].as_str().unwrap();
    assert!(
        html.contains(r#"data-seq="1""#) && html.contains("&lt;b&gt;boom&lt;/b&gt;") && html.contains("ev--bad"),
        "{html}"
    );
    assert_eq!(page["next"], 1);

    let resp = app.http.get(app.url("/api/stream?format=html&since=0")).bearer_auth(&app.admin).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while !text.contains("id: 1\n") || !text.contains("</li>\n\n") {
        let chunk = tokio::time::timeout(WAIT, body.next()).await.expect("sse in time").unwrap().unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.contains("id: 1\ndata: <li class=\"ev ev--bad\""), "{text}");
    let (status, err) = app.get("/api/events/poll?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    app.stop().await;
}

#[tokio::test]
async fn the_events_page_offers_exports_of_its_filter_that_the_session_may_download() {
    let app = spawn_app().await;
    let batch: Vec<_> = (0..6)
        .map(|i| json!({"event_type": if i % 2 == 0 { "task.created" } else { "tool.called" }, "source": format!("s{}", i % 3)}))
        .collect();
    assert_eq!(app.post_events(&json!(batch)).await.0, StatusCode::CREATED);
    let cookie = login(&app).await;
    let http = no_redirects();
    let page = http
        .get(app.url("/swarm/events?types=task.*&source=s0&task_id=&range=1h"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hrefs: Vec<String> = page
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|h| h.starts_with("/api/events/export?"))
        .map(|h| h.replace("&amp;", "&"))
        .collect();
    assert_eq!(hrefs.len(), 2, "a CSV and an NDJSON link: {hrefs:?}");
    let csv = &hrefs[0];
    assert!(csv.contains("types=task.*") && csv.contains("source=s0") && csv.contains("from="), "{csv}");
    assert!(csv.ends_with("format=csv") && hrefs[1].ends_with("format=ndjson"), "{hrefs:?}");
    assert!(
        !csv.contains("task_id") && !csv.contains("range"),
        "blank fields and the page's range are not passed: {csv}"
    );
    let resp = http.get(app.url(csv)).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-disposition"].to_str().unwrap().starts_with("attachment"));
    let body = resp.text().await.unwrap();
    let seqs: Vec<&str> =
        body.split("\r\n").skip(1).filter(|r| !r.is_empty()).map(|r| r.split(',').next().unwrap()).collect();
    assert_eq!(seqs, vec!["1"], "seq 1 is the only task.created from s0 (seq 4 is from s0 but a tool call)");
    app.stop().await;
}

/// SQLite only: the test holds the search database's write lock itself, which is how
/// it makes the index fall behind on purpose.
#[tokio::test]
async fn the_events_page_says_when_search_lags_behind_the_log() {
    if crate::database::suite_on_postgres() {
        return;
    }
    let app = spawn_app().await;
    let page = |q: &'static str| {
        let req = app.http.get(app.url(&format!("/swarm/events?q={q}"))).bearer_auth(&app.admin);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let found = |html: &str| html.contains("data-seq=\"1\"");
    // The indexer cannot write while this transaction holds the lock.
    let mut lock = rusqlite::Connection::open(app.dir.path().join("search.db")).unwrap();
    let held = lock.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
    let (status, _) =
        app.post_events(&json!({"event_type": "system.info", "source": "s", "data": {"m": "walrus"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    let html = page("walrus").await;
    assert!(html.contains("Search is 1 event behind the log"), "{html}");
    assert!(!found(&html), "not indexed yet");
    drop(held);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let html = page("walrus").await;
        if found(&html) {
            assert!(!html.contains("behind the log"), "caught up, no note");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never indexed");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}
