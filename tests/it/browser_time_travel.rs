//! The live page's past view in headless Chromium, at 1 400 and 375 px: a person opens
//! the swarm as it stood while an auction was taking bids, sees the auction with its
//! bids and the feed up to that moment under a banner that says it is not live, moves
//! the scrubber back one event, and returns to live.

use serde_json::{Value, json};

use crate::chromium::Browser;
use crate::harness::{TestApp, spawn_app};

const DESKTOP: (u32, u32) = (1400, 1000);
const PHONE: (u32, u32) = (375, 800);

/// The seqs of the past feed's rows, top to bottom.
const ROWS: &str = "return [...document.querySelectorAll('#past-feed > li')].map(li => Number(li.dataset.seq))";

async fn post(app: &TestApp, events: Value) -> u64 {
    let (status, body) = app.post_events(&events).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    body["events"].as_array().unwrap().last().unwrap()["seq"].as_u64().unwrap()
}

#[tokio::test]
async fn a_person_views_the_swarm_at_a_past_moment_scrubs_back_and_returns_to_live() {
    let app = spawn_app().await;
    let ev = |t: &str, task: Option<&str>, agent: Option<&str>, data: Value| json!({"event_type": t, "source": "producer", "task_id": task, "agent_id": agent, "data": data});
    let bidding = post(
        &app,
        json!([
            ev("agent.joined", None, Some("echo"), json!({"name": "Echo"})),
            ev("agent.joined", None, Some("forge"), json!({"name": "Forge"})),
            ev("task.created", Some("t1"), None, json!({"description": "sort the logs"})),
            ev("task.bidding", Some("t1"), None, json!({"closes_at": "2099-01-01T00:00:00Z"})),
            ev("bid.submitted", Some("t1"), Some("echo"), json!({"bid_sats": 30})),
            ev("bid.submitted", Some("t1"), Some("forge"), json!({"bid_sats": 20})),
        ]),
    )
    .await;
    assert_eq!(bidding, 6);
    let head = post(
        &app,
        json!([
            ev("auction.closed", Some("t1"), None, json!({"bids": 2})),
            ev("task.assigned", Some("t1"), Some("forge"), json!({"bid_sats": 20})),
            ev("task.failed", Some("t1"), Some("forge"), json!({"reason": "disk full"})),
        ]),
    )
    .await;
    let base = format!("http://{}", app.addr);
    for (width, height) in [DESKTOP, PHONE] {
        let browser = Browser::start(width, height).await;
        browser.login(&base, &app.admin).await;
        browser.goto(&format!("{base}/swarm/live?at={bidding}")).await;
        browser.wait_for("the past view", "document.getElementById('time-travel')").await;
        let status = browser.text("#time-status").await;
        assert!(status.contains(&format!("seq {bidding}")) && status.contains("Not live"), "{status}");
        let auctions = browser.text("#auctions").await;
        assert!(auctions.contains("sort the logs"), "the auction open then: {auctions}");
        assert!(auctions.contains("forge") && auctions.contains("20 sats"), "its lowest bid: {auctions}");
        assert!(auctions.contains("echo") && auctions.contains("30 sats"), "and the other: {auctions}");
        assert_eq!(browser.eval(ROWS).await, json!([6, 5, 4, 3, 2, 1]), "the feed up to that moment");
        assert_eq!(browser.eval("return document.getElementById('conn')").await, Value::Null, "nothing live");
        let range = browser.eval("const r = document.getElementById('at'); return [r.min, r.max, r.value]").await;
        assert_eq!(range, json!(["0", head.to_string(), bidding.to_string()]));
        let shot = browser.screenshot(&format!("time-travel-{width}")).await;
        let fits =
            browser.eval("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]").await;
        assert!(fits[0].as_u64() <= fits[1].as_u64(), "scrolls sideways at {width}px: {fits} (see {})", shot.display());

        // One step back with the keyboard on the scrubber: letting go shows that moment.
        browser.type_into("#at", "\u{E012}").await;
        let back = bidding - 1;
        browser
            .wait_for(
                "the moment before",
                &format!("new URLSearchParams(location.search).get('at') === '{back}' && document.getElementById('time-status')"),
            )
            .await;
        assert!(browser.text("#time-status").await.contains(&format!("seq {back}")));
        let auctions = browser.text("#auctions").await;
        assert!(auctions.contains("echo") && !auctions.contains("forge"), "forge had not bid yet: {auctions}");
        assert_eq!(browser.eval(ROWS).await, json!([5, 4, 3, 2, 1]));
        browser.screenshot(&format!("time-travel-scrubbed-{width}")).await;

        browser.click("#back-to-live").await;
        browser.wait_for_path("/swarm/live").await;
        browser.wait_live(None).await;
        assert_eq!(browser.eval("return document.getElementById('time-travel')").await, Value::Null);
        assert_eq!(browser.feed_seqs().await, (1..=head).rev().collect::<Vec<_>>(), "the whole feed, live");
        assert!(browser.text("#auctions").await.contains("No task is taking bids"), "the auction has closed since");
        browser.screenshot(&format!("time-travel-live-{width}")).await;
        browser.close().await;
    }
    app.stop().await;
}
