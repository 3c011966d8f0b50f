//! The task and agent boards in headless Chromium (DESIGN §10), as an operator uses
//! them: from the header to every failed task in two clicks, a retry that links back
//! to the original, a task posted from the form, a board that follows the log, and the
//! live page on a phone leading with its feed.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chromium::Browser;
use crate::harness::{TestApp, spawn_with};

const DESKTOP: (u32, u32) = (1400, 1000);
/// A small phone's first screen.
const PHONE: (u32, u32) = (375, 667);

async fn call(app: &TestApp, path: &str, body: Value) -> Value {
    let (status, answer) = app.post_raw(path, &body.to_string(), Some(&app.admin)).await;
    assert!(status.is_success(), "{path}: {answer}");
    answer
}

/// A task posted and closed without bids: it fails ("no bids received").
async fn failed_task(app: &TestApp, description: &str) -> String {
    let posted = call(app, "/swarm/tasks", json!({"description": description})).await;
    let id = posted["task_id"].as_str().unwrap().to_owned();
    call(app, &format!("/swarm/tasks/{id}/close"), json!({})).await;
    id
}

#[tokio::test]
async fn an_operator_finds_a_failed_task_in_two_clicks_retries_it_and_posts_one_from_the_form() {
    let app = spawn_with(|c| c.coordinator.bid_window = Duration::from_secs(3600)).await;
    let (status, _) =
        app.post_raw("/swarm/agents", &json!({"name": "Echo", "agent_id": "echo"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let failed = failed_task(&app, "resize the disk").await;
    failed_task(&app, "rotate the logs").await;
    call(&app, "/swarm/tasks", json!({"description": "still bidding"})).await;
    let ops = app.named_token("ops-alice", "write").await;
    let base = format!("http://{}", app.addr);
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base, &ops).await;

    // Two clicks: the header's Tasks link, then the Failed tab.
    browser.click("nav.top-nav a[href='/swarm/tasks']").await;
    browser.wait_for_path("/swarm/tasks").await;
    browser.click("#task-board a.chip[data-status='failed']").await;
    browser.wait_for("the failed tab", "location.search === '?status=failed'").await;
    browser.wait_for("the failed tasks", "document.querySelectorAll('#task-board .board-row').length === 2").await;
    let tab = browser.text("#task-board a.chip[aria-current='page']").await;
    assert_eq!(tab, "Failed 2");
    browser.screenshot("tasks-failed-1400").await;

    // The task, Retry, its confirmation: the browser lands on the retry, which links back.
    browser.click(&format!("#task-board .board-row[data-task='{failed}'] a.board-title")).await;
    browser.wait_for_path(&format!("/swarm/tasks/{failed}")).await;
    browser.click("details.confirm:has(form[action$='/retry']) > summary").await;
    browser.click("form[action$='/retry'] button[type='submit']").await;
    browser
        .wait_for(
            "the retry's page",
            &format!("location.pathname.startsWith('/swarm/tasks/') && location.pathname !== '/swarm/tasks/{failed}'"),
        )
        .await;
    let back = format!("dl.facts a[href='/swarm/tasks/{failed}']");
    browser.wait_for("the link back to the original", &format!("!!document.querySelector({back:?})")).await;
    let retry_path = browser.eval("return location.pathname").await.as_str().unwrap().to_owned();
    let retry_id = retry_path.trim_start_matches("/swarm/tasks/").to_owned();
    let retried = app.get(&format!("/api/tasks/{retry_id}")).await.1;
    assert_eq!(
        (retried["retry_of"].as_str(), retried["description"].as_str()),
        (Some(failed.as_str()), Some("resize the disk"))
    );
    browser.click(&back).await;
    browser.wait_for_path(&format!("/swarm/tasks/{failed}")).await;

    // The board follows the log: a task posted elsewhere appears without a reload.
    browser.click("nav.top-nav a[href='/swarm/tasks']").await;
    browser.wait_for_path("/swarm/tasks").await;
    browser.wait_live(None).await;
    let elsewhere = call(&app, "/swarm/tasks", json!({"description": "posted elsewhere"})).await;
    let elsewhere = elsewhere["task_id"].as_str().unwrap().to_owned();
    browser
        .wait_for(
            "the new task on the board",
            &format!("!!document.querySelector(\"#task-board .board-row[data-task='{elsewhere}']\")"),
        )
        .await;

    // Post a task from the form: the browser lands on its page.
    browser.click("details.post-task > summary").await;
    browser.type_into("#description", "Rotate the keys").await;
    browser.click("form[action='/swarm/tasks'][method='post'] button[type='submit']").await;
    browser
        .wait_for(
            "the new task's page",
            "location.pathname.startsWith('/swarm/tasks/') && document.querySelector('h1.page-title')?.textContent === 'Rotate the keys'",
        )
        .await;
    browser.screenshot("task-posted-1400").await;

    browser.resize(PHONE.0, PHONE.1).await;
    browser.goto(&format!("{base}/swarm/tasks?status=failed")).await;
    browser.wait_for("the failed tasks", "document.querySelectorAll('#task-board .board-row').length === 2").await;
    browser.screenshot("tasks-375").await;
    browser.goto(&format!("{base}/swarm/agents")).await;
    browser.wait_for("the agents", "!!document.querySelector(\"#agent-board tr[data-agent='echo']\")").await;
    browser.screenshot("agents-375").await;
    browser.resize(DESKTOP.0, DESKTOP.1).await;
    browser.screenshot("agents-1400").await;
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn on_a_phone_the_live_page_shows_the_feed_in_the_first_screen() {
    let app = spawn_with(|c| c.coordinator.bid_window = Duration::from_secs(3600)).await;
    for (id, name) in [("echo", "Echo"), ("forge", "Forge"), ("seer", "Seer")] {
        call(&app, "/swarm/agents", json!({"name": name, "agent_id": id})).await;
    }
    for d in ["sort the logs", "resize the disk", "rotate the keys"] {
        call(&app, "/swarm/tasks", json!({"description": d})).await;
    }
    let base = format!("http://{}", app.addr);
    let browser = Browser::start(PHONE.0, PHONE.1).await;
    browser.login(&base, &app.admin).await;
    browser.wait_live(None).await;
    let layout = browser
        .eval(
            "const tiles = document.getElementById('stat-tiles').getBoundingClientRect();
             const first = document.querySelector('#feed > li').getBoundingClientRect();
             const rows = new Set([...document.querySelectorAll('#stat-tiles .tile')].map(t => t.getBoundingClientRect().top));
             return { tilesHeight: tiles.height, tileRows: rows.size, firstRowBottom: first.bottom, screen: window.innerHeight };",
        )
        .await;
    browser.screenshot("live-phone-375").await;
    assert_eq!(layout["tileRows"], 1, "the tiles are one row: {layout}");
    assert!(layout["tilesHeight"].as_f64().unwrap() < 80.0, "and compact: {layout}");
    let (bottom, screen) = (layout["firstRowBottom"].as_f64().unwrap(), layout["screen"].as_f64().unwrap());
    assert!(bottom <= screen, "the newest event is in the first screen: {layout}");
    // The desktop layout is unchanged: tiles in a grid above the feed and side panels.
    browser.resize(DESKTOP.0, DESKTOP.1).await;
    let rows = browser
        .eval("return new Set([...document.querySelectorAll('#stat-tiles .tile')].map(t => t.getBoundingClientRect().top)).size")
        .await;
    assert_eq!(rows, json!(1), "six tiles fit one row at 1 400 px too");
    browser.close().await;
    app.stop().await;
}

/// Waits until the browser's URL (path and query) is one `arrived` accepts, checked from
/// here: a navigation, even to the same path, ends any script waiting inside the page
/// it leaves.
async fn wait_for_url(browser: &Browser, what: &str, arrived: impl Fn(&str, Option<&str>) -> bool) {
    let found = tokio::time::timeout(crate::harness::WAIT, async {
        loop {
            if let Ok(url) = browser.client.current_url().await
                && arrived(url.path(), url.query())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "the browser never reached {what}");
}

/// One task's events from a producer: posted, a bid, assigned to echo, failed.
fn failed_lifecycle(task: &str, description: &str) -> Value {
    json!([
        {"event_type": "task.created", "source": "ext", "task_id": task, "data": {"description": description}},
        {"event_type": "task.bidding", "source": "ext", "task_id": task},
        {"event_type": "bid.submitted", "source": "ext", "task_id": task, "agent_id": "echo", "data": {"bid_sats": 7}},
        {"event_type": "task.assigned", "source": "ext", "task_id": task, "agent_id": "echo", "data": {"bid_sats": 7}},
        {"event_type": "task.failed", "source": "ext", "task_id": task, "agent_id": "echo", "data": {"reason": "disk full"}},
    ])
}

#[tokio::test]
async fn from_the_live_page_one_click_lists_the_failed_tasks_of_the_last_day_whose_retries_and_moments_link_back() {
    // A task failed three days ago on the server's own clock, two failed just now.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let Some((server, clock)) = crate::harness::BinaryServer::with_clock(&data, "-3d", &[]).await else { return };
    let (base, token) = (format!("http://{}", server.addr), server.admin_token());
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let request = http.post(format!("{base}{path}")).bearer_auth(&token).json(&body).send();
        async move {
            let resp = request.await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        }
    };
    post("/api/events".into(), failed_lifecycle("old-disk", "an old failure")).await;
    clock.set("+0");
    post("/api/events".into(), failed_lifecycle("new-disk", "resize the disk")).await;
    post("/api/events".into(), failed_lifecycle("new-logs", "rotate the logs")).await;

    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base, &token).await;
    browser.wait_for("the failed count", "document.getElementById('failed-tasks')?.textContent === '3'").await;
    browser.screenshot("live-failed-link-1400").await;
    browser.click("#failed-tasks").await;
    wait_for_url(&browser, "the failed tasks of the last day", |path, query| {
        path == "/swarm/tasks" && query == Some("status=failed&within=day")
    })
    .await;
    let rows = "return [...document.querySelectorAll('#task-board .board-row')].map(r => r.dataset.task)";
    browser.wait_for("two rows", "document.querySelectorAll('#task-board .board-row').length === 2").await;
    assert_eq!(
        browser.eval(rows).await,
        json!(["new-logs", "new-disk"]),
        "the failure of three days ago is not listed"
    );
    assert_eq!(browser.text("#task-board a.chip[aria-current='page']").await, "Failed 2");
    assert_eq!(browser.text("nav.windows a.chip[aria-current='page']").await, "Last day");
    browser.screenshot("tasks-failed-last-day-1400").await;
    // The week's chip keeps the tab and brings the older one back.
    browser.click("nav.windows a.chip[data-within='week']").await;
    wait_for_url(&browser, "the week", |path, query| {
        path == "/swarm/tasks" && query == Some("status=failed&within=week")
    })
    .await;
    browser.wait_for("three rows", "document.querySelectorAll('#task-board .board-row').length === 3").await;
    browser.goto(&format!("{base}/swarm/tasks?status=failed&within=day")).await;

    // Retry one: the retry links back to the original, and the original to its retry.
    browser.click("#task-board .board-row[data-task='new-disk'] a.board-title").await;
    browser.wait_for_path("/swarm/tasks/new-disk").await;
    browser.click("details.confirm:has(form[action$='/retry']) > summary").await;
    browser.click("form[action$='/retry'] button[type='submit']").await;
    wait_for_url(&browser, "the retry's page", |path, _| {
        path.starts_with("/swarm/tasks/") && path != "/swarm/tasks/new-disk"
    })
    .await;
    let back = "dl.facts a[href='/swarm/tasks/new-disk']";
    browser.wait_for("the link back to the original", &format!("!!document.querySelector({back:?})")).await;
    let retry =
        browser.eval("return location.pathname").await.as_str().unwrap().trim_start_matches("/swarm/tasks/").to_owned();
    browser.click(back).await;
    browser.wait_for_path("/swarm/tasks/new-disk").await;
    let forward = format!("dl.facts dd.retries a[href='/swarm/tasks/{retry}']");
    browser.wait_for("the link to the retry", &format!("!!document.querySelector({forward:?})")).await;
    browser.screenshot("task-retried-1400").await;

    // Its failure in the timeline opens the swarm at that moment.
    let failed_seq =
        browser.eval("return Number(document.querySelector(\"li[data-type='task.failed']\").dataset.seq)").await;
    let failed_seq = failed_seq.as_u64().unwrap();
    browser.click("li[data-type='task.failed'] a.ev-seq").await;
    browser.wait_for_path("/swarm/live").await;
    browser
        .wait_for(
            "the swarm then",
            &format!("location.search === '?at={failed_seq}' && !!document.getElementById('time-travel')"),
        )
        .await;
    let last = browser
        .eval("return Math.max(...[...document.querySelectorAll('#past-feed > li')].map(li => Number(li.dataset.seq)))")
        .await;
    assert_eq!(last.as_u64(), Some(failed_seq), "the feed stops at the failure");

    // On a phone: the same link from the compact tiles.
    browser.resize(PHONE.0, PHONE.1).await;
    browser.goto(&format!("{base}/swarm/live")).await;
    browser.wait_for("the failed count", "!!document.getElementById('failed-tasks')").await;
    browser.click("#failed-tasks").await;
    wait_for_url(&browser, "the failed tasks of the last day", |path, query| {
        path == "/swarm/tasks" && query == Some("status=failed&within=day")
    })
    .await;
    browser.wait_for("two rows", "document.querySelectorAll('#task-board .board-row').length === 2").await;
    browser.screenshot("tasks-failed-last-day-375").await;
    browser.close().await;
    server.terminate().await;
}
