//! The dashboard in headless Chromium: live updates, filters, pause, restarts,
//! transport fallback, escaping, and layout at phone and desktop widths.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use swarmfeed::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::chromium::Browser;
use crate::harness::{BinaryServer, TestApp, spawn_app, spawn_with};

const DESKTOP: (u32, u32) = (1400, 1000);
const PHONE: (u32, u32) = (375, 812);

/// Posts one event and returns its seq.
async fn post(app_base: &str, token: &str, event: Value) -> u64 {
    let resp = reqwest::Client::new()
        .post(format!("{app_base}/api/events"))
        .bearer_auth(token)
        .json(&event)
        .send()
        .await
        .expect("posted");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["events"][0]["seq"].as_u64().unwrap()
}

/// Posts several events in one request and returns their seqs.
async fn post_all(app_base: &str, token: &str, events: Value) -> Vec<u64> {
    let resp = reqwest::Client::new()
        .post(format!("{app_base}/api/events"))
        .bearer_auth(token)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body: Value = resp.json().await.unwrap();
    body["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn base(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

fn row(seq: u64) -> String {
    format!("document.querySelector('#feed > li[data-seq=\"{seq}\"]')")
}

#[tokio::test]
async fn an_event_posted_through_the_api_appears_in_the_open_live_page_within_a_second() {
    let app = spawn_app().await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base(&app), &app.admin).await;
    browser.wait_live(Some("ws")).await;

    let posted = Instant::now();
    let seq = post(
        &base(&app),
        &app.admin,
        json!({"event_type": "task.created", "source": "browser-test", "task_id": "t-live", "data": {"description": "watch me"}}),
    )
    .await;
    browser.wait_within("the new row", &row(seq), Duration::from_secs(1).saturating_sub(posted.elapsed())).await;
    assert!(posted.elapsed() <= Duration::from_secs(1), "shown after {:?}", posted.elapsed());
    assert_eq!(browser.feed_seqs().await.first(), Some(&seq), "newest on top");
    let text = browser.text(&format!("#feed > li[data-seq=\"{seq}\"]")).await;
    assert!(text.contains("📝") && text.contains("Task created") && text.contains("New task: watch me"), "{text}");
    assert!(text.contains("browser-test") && text.contains("task t-live"), "{text}");
    let time = browser.text(&format!("#feed > li[data-seq=\"{seq}\"] time")).await;
    assert!(time.len() == 8 && time.chars().filter(|c| *c == ':').count() == 2, "HH:MM:SS, got {time}");
    assert_eq!(browser.eval("return document.getElementById('feed').getAttribute('aria-live')").await, "polite");
    browser
        .wait_for(
            "the last-event age",
            "/last event \\d+ s ago/.test(document.getElementById('last-event').textContent)",
        )
        .await;

    // The lists follow the same stream: an agent that joins shows up without a reload.
    let (status, _) = app.post_raw("/swarm/agents", &json!({"name": "Zephyr"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    browser
        .wait_for("the new agent in the list", "document.getElementById('agents').textContent.includes('Zephyr')")
        .await;
    browser
        .wait_for("the agent tile to count it", "document.getElementById('stat-tiles').textContent.includes('1 / 1')")
        .await;
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_type_filter_chip_hides_other_types_and_stays_in_the_url() {
    let app = spawn_app().await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base(&app), &app.admin).await;
    browser.click(".chips a[data-types='task.*']").await;
    browser.wait_for("the filtered page", "location.search.includes('types=task.*')").await;
    browser.wait_live(None).await;
    assert_eq!(
        browser
            .eval("return document.querySelector(\".chips a[data-types='task.*']\").getAttribute('aria-current')")
            .await,
        "true"
    );

    let hidden =
        post(&base(&app), &app.admin, json!({"event_type": "bid.submitted", "source": "t", "data": {"bid_sats": 5}}))
            .await;
    let shown = post(&base(&app), &app.admin, json!({"event_type": "task.started", "source": "t"})).await;
    // The bid was committed first, so once the task row is here the bid would be too.
    browser.wait_for("the matching row", &row(shown)).await;
    assert_eq!(browser.feed_seqs().await, vec![shown], "bid #{hidden} must be filtered out");
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn pause_buffers_new_events_and_resume_shows_them_in_order() {
    let app = spawn_app().await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base(&app), &app.admin).await;
    browser.wait_live(None).await;
    let before = post(
        &base(&app),
        &app.admin,
        json!({"event_type": "system.info", "source": "t", "data": {"message": "before"}}),
    )
    .await;
    browser.wait_for("the first row", &row(before)).await;

    browser.click("#pause").await;
    assert_eq!(browser.eval("return document.getElementById('pause').getAttribute('aria-pressed')").await, "true");
    let held = post_all(
        &base(&app),
        &app.admin,
        json!(
            (0..3)
                .map(|i| json!({"event_type": "system.info", "source": "t", "data": {"message": format!("held {i}")}}))
                .collect::<Vec<_>>()
        ),
    )
    .await;
    browser.wait_for("the resume count", "document.getElementById('pause').textContent === 'Resume (3 new)'").await;
    assert_eq!(browser.feed_seqs().await, vec![before], "nothing shown while paused");

    browser.click("#pause").await;
    let expected: Vec<u64> = held.iter().rev().copied().chain([before]).collect();
    assert_eq!(browser.feed_seqs().await, expected, "newest on top, each once");
    assert_eq!(browser.text("#pause").await, "Pause");

    // A hidden tab pauses by itself and resumes when it is shown again.
    let visibility = |hidden: bool| {
        format!(
            "Object.defineProperty(document, 'hidden', {{ value: {hidden}, configurable: true }});
             document.dispatchEvent(new Event('visibilitychange'));"
        )
    };
    browser.eval(&visibility(true)).await;
    assert_eq!(browser.eval("return document.getElementById('pause').getAttribute('aria-pressed')").await, "true");
    let while_hidden = post(&base(&app), &app.admin, json!({"event_type": "system.info", "source": "t"})).await;
    browser
        .wait_for("the hidden tab's count", "document.getElementById('pause').textContent === 'Resume (1 new)'")
        .await;
    browser.eval(&visibility(false)).await;
    assert_eq!(browser.feed_seqs().await.first(), Some(&while_hidden));
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_restarted_server_shows_reconnecting_then_live_and_each_missed_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &[]).await;
    let (addr, token) = (server.addr, server.admin_token());
    let base_url = format!("http://{addr}");
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base_url, &token).await;
    browser.wait_live(Some("ws")).await;
    let first =
        post(&base_url, &token, json!({"event_type": "system.info", "source": "t", "data": {"message": "first"}}))
            .await;
    browser.wait_for("the first row", &row(first)).await;

    server.terminate().await;
    browser
        .wait_for("the reconnecting indicator", "document.getElementById('conn').dataset.state === 'reconnecting'")
        .await;
    // While the page cannot reach its server, events are written by another instance
    // on the same data directory.
    let elsewhere = BinaryServer::start(dir.path(), &[]).await;
    let missed = post_all(
        &format!("http://{}", elsewhere.addr),
        &token,
        json!(
            (0..3)
                .map(|i| json!({"event_type": "task.completed", "source": "t", "task_id": format!("m{i}")}))
                .collect::<Vec<_>>()
        ),
    )
    .await;
    elsewhere.terminate().await;

    let server = BinaryServer::start_at(dir.path(), &addr.to_string(), &[]).await;
    browser.wait_live(Some("ws")).await;
    for seq in &missed {
        browser.wait_for("a missed row", &row(*seq)).await;
    }
    let after =
        post(&base_url, &token, json!({"event_type": "system.info", "source": "t", "data": {"message": "after"}}))
            .await;
    browser.wait_for("the row after the restart", &row(after)).await;
    let seqs = browser.feed_seqs().await;
    let expected: Vec<u64> = [after].into_iter().chain(missed.iter().rev().copied()).chain([first]).collect();
    assert_eq!(seqs, expected, "each event once, newest on top");
    browser.close().await;
    server.terminate().await;
}

/// A proxy in front of the server that refuses WebSocket upgrades (like a proxy that
/// does not pass them), and, with `refuse_streams`, event streams too. Each request
/// gets its own upstream connection (`Connection: close`), so every request is seen.
struct RefusingProxy {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RefusingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn refusing_proxy(upstream: SocketAddr, refuse_streams: bool) -> RefusingProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        while let Ok((client, _)) = listener.accept().await {
            connections.spawn(relay(client, upstream, refuse_streams));
        }
    });
    RefusingProxy { addr, task }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, refuse_streams: bool) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let refuse = text.contains("\r\nupgrade: websocket") || (refuse_streams && text.contains("text/event-stream"));
    if refuse {
        // The client learns nothing more from a failed write; the connection ends here.
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
        return;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let request = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut rewritten: String = request
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n\r\n");
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    if server.write_all(rewritten.as_bytes()).await.is_err() || server.write_all(&head[end + 4..]).await.is_err() {
        return;
    }
    // Either side closing ends the relay; errors are the browser or server going away.
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

async fn follows_the_log_through_a_proxy(refuse_streams: bool, transport: &str) {
    let app = spawn_app().await;
    let proxy = refusing_proxy(app.addr, refuse_streams).await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&format!("http://{}", proxy.addr), &app.admin).await;
    browser.wait_live(Some(transport)).await;
    let seq = post(
        &base(&app),
        &app.admin,
        json!({"event_type": "task.failed", "source": "t", "data": {"reason": "fallback works"}}),
    )
    .await;
    browser.wait_for("the row over the fallback", &row(seq)).await;
    let text = browser.text(&format!("#feed > li[data-seq=\"{seq}\"]")).await;
    assert!(text.contains("Task failed: fallback works"), "{text}");
    assert_eq!(browser.feed_seqs().await, vec![seq]);
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn with_websockets_refused_the_page_updates_over_server_sent_events() {
    follows_the_log_through_a_proxy(false, "sse").await;
}

#[tokio::test]
async fn with_websockets_and_event_streams_refused_the_page_updates_by_long_polling() {
    follows_the_log_through_a_proxy(true, "poll").await;
}

const IMG: &str = "<img src=x onerror=alert(1)>";
const SCRIPT: &str = "<script>window.__xss=1</script>";

/// No markup from events made it into the DOM and nothing ran.
async fn assert_inert(browser: &Browser, page: &str, must_show: &[&str]) {
    let checks = browser
        .eval(
            r#"return {
                imgs: document.querySelectorAll('img').length,
                foreignScripts: [...document.scripts].filter(s => !s.src || new URL(s.src).pathname.indexOf('/assets/') !== 0).length,
                ran: window.__xss !== undefined,
                text: document.body.innerText,
            }"#,
        )
        .await;
    assert_eq!(checks["imgs"], 0, "{page}: an <img> was created");
    assert_eq!(checks["foreignScripts"], 0, "{page}: a <script> was created");
    assert_eq!(checks["ran"], false, "{page}: injected script ran");
    let text = checks["text"].as_str().unwrap();
    for s in must_show {
        assert!(text.contains(s), "{page} does not show {s:?} as text");
    }
}

#[tokio::test]
async fn markup_in_events_shows_as_text_on_every_page_and_nothing_runs() {
    let app = spawn_app().await;
    let (status, joined) =
        app.post_raw("/swarm/agents", &json!({"name": SCRIPT, "agent_id": "evil"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{joined}");
    let (status, task) = app.post_raw("/swarm/tasks", &json!({"description": IMG}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    let task_id = task["task_id"].as_str().unwrap().to_owned();
    post(
        &base(&app),
        &app.admin,
        json!({"event_type": "system.error", "source": "<b>src</b>", "task_id": task_id, "agent_id": "evil",
               "data": {"message": format!("{IMG} {SCRIPT}")}}),
    )
    .await;

    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base(&app), &app.admin).await;
    let pages = [
        ("/swarm/live", vec![IMG, SCRIPT, "<b>src</b>"]),
        ("/swarm/events", vec![IMG, SCRIPT, "<b>src</b>"]),
        (&*format!("/swarm/tasks/{task_id}"), vec![IMG, SCRIPT]),
        ("/swarm/agents/evil", vec![SCRIPT, IMG]),
        ("/swarm/tasks", vec![IMG]),
        ("/swarm/agents", vec![SCRIPT]),
    ];
    for (path, texts) in &pages {
        browser.goto(&format!("{}{path}", base(&app))).await;
        browser.wait_for("the page to load", "document.readyState === 'complete'").await;
        assert_inert(&browser, path, texts).await;
    }
    // Live rows, over each transport.
    for transport in ["ws", "sse", "poll"] {
        browser.goto(&format!("{}/swarm/live?transport={transport}", base(&app))).await;
        browser.wait_live(Some(transport)).await;
        let seq = post(
            &base(&app),
            &app.admin,
            json!({"event_type": "task.failed", "source": "t", "data": {"reason": format!("{SCRIPT}{IMG} via {transport}")}}),
        )
        .await;
        browser.wait_for("the live row", &row(seq)).await;
        assert_inert(&browser, transport, &[&format!("{SCRIPT}{IMG} via {transport}")]).await;
    }
    browser.close().await;
    app.stop().await;
}

/// A small swarm written as events (like an external coordinator would): agents, an
/// open auction, a finished and a failed task, a warning and an error with a long word.
async fn seed(app: &TestApp) -> String {
    let closes = swarmfeed::event::format_timestamp(chrono::Utc::now().timestamp_millis() + 600_000);
    let mut events = Vec::new();
    for (id, name) in
        [("echo", "Echo"), ("forge", "Forge"), ("seer", "Seer"), ("quill-with-a-rather-long-agent-id", "Quill")]
    {
        events.push(json!({"event_type": "agent.joined", "source": "coordinator", "agent_id": id, "data": {"name": name, "capabilities": ["summarise", "code"]}}));
    }
    let task = |id: &str, what: &str| json!({"event_type": "task.created", "source": "coordinator", "task_id": id, "data": {"description": what}});
    let step = |t: &str, id: &str, agent: Option<&str>, data: Value| json!({"event_type": t, "source": "coordinator", "task_id": id, "agent_id": agent, "data": data});
    events.extend([
        task("t-done", "Summarise the incident report for the on-call channel"),
        step("task.bidding", "t-done", None, json!({"closes_at": closes})),
        step("bid.submitted", "t-done", Some("echo"), json!({"bid_sats": 120})),
        step("bid.submitted", "t-done", Some("forge"), json!({"bid_sats": 80})),
        step("auction.closed", "t-done", None, json!({})),
        step("task.assigned", "t-done", Some("forge"), json!({"bid_sats": 80})),
        step("task.started", "t-done", Some("forge"), json!({})),
        step("tool.called", "t-done", Some("forge"), json!({"tool_name": "web_search"})),
        step("tool.completed", "t-done", Some("forge"), json!({"tool_name": "web_search"})),
        step("task.completed", "t-done", Some("forge"), json!({"result": "done"})),
        task("t-open", "Translate the onboarding guide into Spanish"),
        step("task.bidding", "t-open", None, json!({"closes_at": closes})),
        step("bid.submitted", "t-open", Some("seer"), json!({"bid_sats": 45})),
        step("bid.submitted", "t-open", Some("quill-with-a-rather-long-agent-id"), json!({"bid_sats": 60})),
        task("t-fail", "Benchmark the storage engine"),
        step("task.bidding", "t-fail", None, json!({"closes_at": closes})),
        step("bid.submitted", "t-fail", Some("echo"), json!({"bid_sats": 30})),
        step("auction.closed", "t-fail", None, json!({})),
        step("task.assigned", "t-fail", Some("echo"), json!({"bid_sats": 30})),
        step("task.started", "t-fail", Some("echo"), json!({})),
        step("tool.failed", "t-fail", Some("echo"), json!({"tool_name": "fio"})),
        step("task.failed", "t-fail", Some("echo"), json!({"reason": "disk full"})),
        json!({"event_type": "system.warning", "source": "monitor", "data": {"message": "queue depth above 80%"}}),
        json!({"event_type": "system.error", "source": "monitor", "data": {"message": format!("unreachable: {}", "x".repeat(150))}}),
    ]);
    post_all(&base(app), &app.admin, Value::Array(events)).await;
    "t-done".to_owned()
}

/// A webhook to a port nothing listens on, with a long path: the Webhooks page shows
/// it failing (once an attempt has been made), and its URL must wrap on a phone.
async fn seed_webhook(app: &TestApp) {
    let url = "http://127.0.0.1:9/hooks/a-rather-long-path-that-has-to-wrap-on-a-phone-without-any-sideways-scrolling";
    let body = json!({ "url": url, "since": 0, "filter": { "types": ["task.*", "agent.*"] } }).to_string();
    let (status, answer) = app.post_raw("/api/webhooks", &body, Some(&app.admin)).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{answer}");
}

#[tokio::test]
async fn every_page_fits_375_and_1400_pixels_without_horizontal_scrolling() {
    let app = spawn_with(|c: &mut Config| {
        c.max_frames_per_sec = 0;
        c.webhooks.allow_private = true;
    })
    .await;
    let task = seed(&app).await;
    seed_webhook(&app).await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base(&app), &app.admin).await;
    let pages = [
        ("live", "/swarm/live".to_owned(), "document.getElementById('conn').dataset.state === 'live'"),
        ("events", "/swarm/events".to_owned(), "document.querySelector('#chart .uplot')"),
        ("task", format!("/swarm/tasks/{task}"), "document.getElementById('conn').dataset.state === 'live'"),
        (
            "agent",
            "/swarm/agents/quill-with-a-rather-long-agent-id".to_owned(),
            "document.getElementById('conn').dataset.state === 'live'",
        ),
        ("webhooks", "/swarm/webhooks".to_owned(), "document.querySelector('.webhook')"),
        ("tasks", "/swarm/tasks".to_owned(), "document.getElementById('conn').dataset.state === 'live'"),
        ("agents", "/swarm/agents".to_owned(), "document.getElementById('conn').dataset.state === 'live'"),
    ];
    for (width, height) in [PHONE, DESKTOP] {
        browser.resize(width, height).await;
        for (name, path, ready) in &pages {
            browser.goto(&format!("{}{path}", base(&app))).await;
            browser.wait_for(&format!("{name} to be ready"), ready).await;
            let fits = browser
                .eval("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
                .await;
            let (scroll, client) = (fits[0].as_u64().unwrap(), fits[1].as_u64().unwrap());
            let shot = browser.screenshot(&format!("{name}-{width}")).await;
            assert!(
                scroll <= client,
                "{path} at {width}px scrolls sideways: {scroll} > {client} (see {})",
                shot.display()
            );
        }
    }
    browser.close().await;
    app.stop().await;
}

/// A Chrome DevTools Protocol command, sent through chromedriver's `goog/cdp/execute`.
#[derive(Debug)]
struct Cdp {
    method: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &reqwest::Url,
        session: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::POST, Some(json!({"cmd": self.method, "params": self.params}).to_string()))
    }
}

/// Runs `source` in every document the browser opens from now on, before the page's
/// own scripts: what an extension's content script at `document_start` does.
async fn before_every_page(browser: &Browser, source: &str) {
    let cmd = Cdp { method: "Page.addScriptToEvaluateOnNewDocument", params: json!({ "source": source }) };
    browser.client.issue_cmd(cmd).await.expect("chromedriver runs the DevTools command");
}

/// What an extension or a proxy's injected script that blocks WebSockets does: the
/// constructor throws, as Chromium's own throws a `SecurityError` for a URL it refuses.
const THROWING_WEBSOCKET: &str = r#"
    window.__blockedSockets = 0;
    window.WebSocket = function () {
        window.__blockedSockets++;
        throw new DOMException("WebSocket blocked", "SecurityError");
    };"#;

/// The same for server-sent events.
const THROWING_EVENTSOURCE: &str = r#"
    window.__blockedStreams = 0;
    window.EventSource = function () {
        window.__blockedStreams++;
        throw new DOMException("EventSource blocked", "SecurityError");
    };"#;

#[tokio::test]
async fn when_the_websocket_constructor_throws_the_page_follows_over_sse_then_long_poll() {
    let app = spawn_app().await;
    let first = post(&base(&app), &app.admin, json!({"event_type": "task.created", "source": "t"})).await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    before_every_page(&browser, THROWING_WEBSOCKET).await;
    browser.login(&base(&app), &app.admin).await;
    browser.wait_live(Some("sse")).await;
    assert_eq!(browser.eval("return window.__blockedSockets > 0").await, true, "the page tried a WebSocket first");
    let second = post(&base(&app), &app.admin, json!({"event_type": "task.started", "source": "t"})).await;
    browser.wait_for("the row over SSE", &row(second)).await;
    assert_eq!(browser.feed_seqs().await, vec![second, first], "each event once, newest first");

    // With event streams blocked the same way too, long-poll; an event posted while
    // the page is falling back shows once, after the ones rendered with the page.
    before_every_page(&browser, THROWING_EVENTSOURCE).await;
    browser.goto(&format!("{}/swarm/live", base(&app))).await;
    let third = post(&base(&app), &app.admin, json!({"event_type": "task.completed", "source": "t"})).await;
    browser.wait_live(Some("poll")).await;
    assert_eq!(browser.eval("return window.__blockedStreams > 0").await, true, "the page tried SSE before polling");
    browser.wait_for("the row posted during the fallback", &row(third)).await;
    let fourth = post(&base(&app), &app.admin, json!({"event_type": "task.failed", "source": "t"})).await;
    browser.wait_for("the row by long-poll", &row(fourth)).await;
    assert_eq!(browser.feed_seqs().await, vec![fourth, third, second, first], "each event once, in order");
    browser.close().await;
    app.stop().await;
}

/// Records the document's Content-Security-Policy violations in `window.__violations`.
const CSP_LISTENER: &str = r#"
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", function (e) {
        window.__violations.push(e.effectiveDirective + " blocked " + (e.blockedURI || "?") + " at " + e.sourceFile + ":" + e.lineNumber);
    });"#;

/// Asserts that the open page broke the CSP nowhere. A violation is reported in a task
/// queued after it happens: one made here on purpose (an inline `style` attribute)
/// comes after every earlier one, and shows that the listener hears them.
async fn assert_no_violations(browser: &Browser, page: &str) {
    browser.eval("document.body.insertAdjacentHTML('beforeend', '<i style=\"color: red\"></i>'); return null").await;
    browser
        .wait_for(
            &format!("{page}: the CSP to refuse an inline style attribute"),
            "window.__violations.some(v => v.startsWith('style-src-attr'))",
        )
        .await;
    let violations = browser.eval("return window.__violations").await;
    let violations: Vec<&str> = violations.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(violations.len(), 1, "{page} broke the CSP: {violations:#?}");
}

#[tokio::test]
async fn every_page_works_under_the_content_security_policy_without_a_violation() {
    let app = spawn_with(|c: &mut Config| {
        c.max_frames_per_sec = 0;
        c.webhooks.allow_private = true;
    })
    .await;
    let task = seed(&app).await;
    seed_webhook(&app).await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    before_every_page(&browser, CSP_LISTENER).await;
    browser.goto(&format!("{}/login", base(&app))).await;
    browser.wait_for("the login page", "document.readyState === 'complete' && document.querySelector('form')").await;
    assert_no_violations(&browser, "/login").await;

    browser.login(&base(&app), &app.admin).await;
    let live = "document.getElementById('conn').dataset.state === 'live'";
    let pages = [
        ("/swarm/live".to_owned(), live),
        ("/swarm/events".to_owned(), "document.querySelector('#chart .uplot')"),
        (format!("/swarm/tasks/{task}"), live),
        ("/swarm/agents/forge".to_owned(), live),
        ("/swarm/webhooks".to_owned(), "document.querySelector('.webhook')"),
        // The boards follow task and agent events, not tool calls: live is enough here.
        (
            "/swarm/tasks".to_owned(),
            "!!document.getElementById('task-board') && document.getElementById('conn').dataset.state === 'live'",
        ),
        (
            "/swarm/agents".to_owned(),
            "!!document.getElementById('agent-board') && document.getElementById('conn').dataset.state === 'live'",
        ),
    ];
    for (path, ready) in &pages {
        browser.goto(&format!("{}{path}", base(&app))).await;
        browser.wait_for(&format!("{path} to work"), ready).await;
        if *ready == live {
            // A live row swapped in is part of the page working.
            let seq = post(
                &base(&app),
                &app.admin,
                json!({"event_type": "tool.called", "source": "coordinator", "task_id": task, "agent_id": "forge",
                       "data": {"tool_name": "grep"}}),
            )
            .await;
            browser.wait_for(&format!("{path}: the live row"), &row(seq)).await;
        }
        assert_no_violations(&browser, path).await;
    }
    browser.close().await;
    app.stop().await;
}
