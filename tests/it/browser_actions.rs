//! Operator actions from the pages, in headless Chromium (DESIGN §10): a person opens
//! an action, confirms it, and the page comes back showing what it did, on a desktop
//! and on a phone; a read-scope viewer sees no actions.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chromium::Browser;
use crate::harness::{TestApp, spawn_with};

const DESKTOP: (u32, u32) = (1400, 1000);
const PHONE: (u32, u32) = (375, 800);

/// A server whose auctions stay open for the whole test, with agent `echo` joined and
/// one task posted; answers the task's id.
async fn swarm_with_a_task() -> (TestApp, String) {
    let app = spawn_with(|c| c.coordinator.bid_window = Duration::from_secs(3600)).await;
    let (status, _) =
        app.post_raw("/swarm/agents", &json!({"name": "Echo", "agent_id": "echo"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) =
        app.post_raw("/swarm/tasks", &json!({"description": "resize the disk"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let task_id = body["task_id"].as_str().unwrap().to_owned();
    (app, task_id)
}

/// Whether the element `css` finds is rendered (a closed disclosure hides its body:
/// `checkVisibility` sees that, where layout boxes may not).
async fn shown(browser: &Browser, css: &str) -> bool {
    let script = format!("const e = document.querySelector({css:?}); return !!e && e.checkVisibility()");
    browser.eval(&script).await == json!(true)
}

#[tokio::test]
async fn an_operator_cancels_a_task_from_its_page_after_confirming() {
    let (app, task_id) = swarm_with_a_task().await;
    let ops = app.named_token("ops-alice", "write").await;
    let base = format!("http://{}", app.addr);
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base, &ops).await;
    let path = format!("/swarm/tasks/{task_id}");
    browser.goto(&format!("{base}{path}")).await;
    browser.wait_for_path(&path).await;

    let cancel = "form[action$='/cancel']";
    assert!(shown(&browser, "details.confirm:has(form[action$='/close']) > summary").await, "a bidding task closes");
    assert!(!shown(&browser, &format!("{cancel} button[type='submit']")).await, "nothing is done before confirming");
    browser.click("details.confirm:has(form[action$='/cancel']) > summary").await;
    assert!(shown(&browser, &format!("{cancel} button[type='submit']")).await, "the confirmation shows the button");
    browser.type_into(&format!("{cancel} input[name='reason']"), "wrong repo").await;
    browser.screenshot("actions-cancel-confirm-1400").await;
    browser.click(&format!("{cancel} button[type='submit']")).await;
    browser
        .wait_for(
            "the task page to show the task cancelled",
            "document.querySelector('.page-head .badge')?.textContent === 'cancelled'",
        )
        .await;
    browser.wait_for_path(&path).await;
    let facts = browser.text("dl.facts").await;
    assert!(facts.contains("Cancelled because") && facts.contains("wrong repo"), "{facts}");
    assert!(!shown(&browser, cancel).await, "a cancelled task offers no cancel");
    assert!(browser.eval("return !!document.querySelector(\"form[action$='/retry']\")").await == json!(true));
    browser.resize(PHONE.0, PHONE.1).await;
    browser.screenshot("actions-cancelled-375").await;

    let events = app.all_events().await;
    let cancelled: Vec<&Value> = events.iter().filter(|e| e["event_type"] == "task.cancelled").collect();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["data"], json!({"actor": "ops-alice", "reason": "wrong repo"}));

    // The agent page offers Remove to the same person.
    browser.resize(DESKTOP.0, DESKTOP.1).await;
    browser.goto(&format!("{base}/swarm/agents/echo")).await;
    browser.wait_for_path("/swarm/agents/echo").await;
    browser.click("details.confirm:has(form[action$='/remove']) > summary").await;
    browser.click("form[action$='/remove'] button[type='submit']").await;
    browser
        .wait_for(
            "the agent page to show it offline",
            "document.querySelector('.page-head .badge')?.textContent === 'offline'",
        )
        .await;
    let events = app.all_events().await;
    let left = events.iter().find(|e| e["event_type"] == "agent.left").expect("agent.left");
    assert_eq!(left["data"]["reason"], "removed");
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_read_scope_viewer_sees_no_actions() {
    let (app, task_id) = swarm_with_a_task().await;
    let read = app.named_token("watcher", "read").await;
    let base = format!("http://{}", app.addr);
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base, &read).await;
    for path in [format!("/swarm/tasks/{task_id}"), "/swarm/agents/echo".to_owned()] {
        browser.goto(&format!("{base}{path}")).await;
        browser.wait_for_path(&path).await;
        browser.wait_for("the page's facts", "!!document.querySelector('.page-head .badge')").await;
        let actions = browser
            .eval(
                "return document.querySelectorAll('.actions, details.confirm, form[method=post]:not(.logout)').length",
            )
            .await;
        assert_eq!(actions, json!(0), "{path}");
    }
    // The same pages offer them to a writer.
    let ops = app.named_token("ops", "write").await;
    browser.logout().await;
    browser.login(&base, &ops).await;
    browser.goto(&format!("{base}/swarm/tasks/{task_id}")).await;
    browser.wait_for("the actions", "document.querySelectorAll('details.confirm').length === 2").await;
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn on_a_phone_an_operator_closes_an_auction_now_and_removes_an_agent_after_confirming() {
    let (app, task_id) = swarm_with_a_task().await;
    let bid = json!({"agent_id": "echo", "bid_sats": 7}).to_string();
    let (status, _) = app.post_raw(&format!("/swarm/tasks/{task_id}/bids"), &bid, Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED);
    let ops = app.named_token("ops-bob", "write").await;
    let base = format!("http://{}", app.addr);
    let browser = Browser::start(PHONE.0, PHONE.1).await;
    browser.login(&base, &ops).await;
    let path = format!("/swarm/tasks/{task_id}");
    browser.goto(&format!("{base}{path}")).await;
    browser.wait_for_path(&path).await;

    let close = "form[action$='/close']";
    assert!(!shown(&browser, &format!("{close} button[type='submit']")).await, "nothing is done before confirming");
    browser.click(&format!("details.confirm:has({close}) > summary")).await;
    assert!(shown(&browser, &format!("{close} button[type='submit']")).await, "the confirmation shows the button");
    browser.screenshot("actions-close-confirm-375").await;
    browser.click(&format!("{close} button[type='submit']")).await;
    browser
        .wait_for(
            "the task page to show the auction settled",
            "document.querySelector('.page-head .badge')?.textContent === 'assigned'",
        )
        .await;
    assert!(!shown(&browser, close).await, "an assigned task offers no close");
    let events = app.all_events().await;
    let closed: Vec<&Value> = events.iter().filter(|e| e["event_type"] == "auction.closed").collect();
    assert_eq!(closed.len(), 1, "closed once");
    let assigned = events.iter().find(|e| e["event_type"] == "task.assigned").expect("task.assigned");
    assert_eq!(assigned["agent_id"], "echo");

    browser.goto(&format!("{base}/swarm/agents/echo")).await;
    browser.wait_for_path("/swarm/agents/echo").await;
    let remove = "form[action$='/remove']";
    assert!(!shown(&browser, &format!("{remove} button[type='submit']")).await, "nothing is done before confirming");
    browser.click(&format!("details.confirm:has({remove}) > summary")).await;
    assert!(shown(&browser, &format!("{remove} button[type='submit']")).await, "the confirmation shows the button");
    browser.screenshot("actions-remove-confirm-375").await;
    browser.click(&format!("{remove} button[type='submit']")).await;
    browser
        .wait_for(
            "the agent page to show it offline",
            "document.querySelector('.page-head .badge')?.textContent === 'offline'",
        )
        .await;
    let events = app.all_events().await;
    let left = events.iter().find(|e| e["event_type"] == "agent.left").expect("agent.left");
    assert_eq!((&left["data"]["reason"], &left["data"]["actor"]), (&json!("removed"), &json!("ops-bob")));
    browser.close().await;
    app.stop().await;
}
