//! The swarm projection stays bounded whatever producers post (DESIGN §6): a flood of
//! tasks, agents or bids costs a capped amount of memory, and `/api/swarm` answers a
//! page, not the whole swarm.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::spawn_with;

/// `count` events of `event_type`, each with its own `task_id` or `agent_id` made by
/// `key`, posted in batches of 1 000.
async fn flood(app: &crate::harness::TestApp, count: usize, make: impl Fn(usize) -> Value) {
    for start in (0..count).step_by(1_000) {
        let batch: Vec<Value> = (start..(start + 1_000).min(count)).map(&make).collect();
        let (status, body) = app.post_events(&Value::Array(batch)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

#[tokio::test]
async fn a_flood_of_tasks_agents_and_bids_leaves_the_projection_and_its_pages_bounded() {
    let app = spawn_with(|c| {
        c.coordinator.projection.open_tasks = 500;
        c.coordinator.projection.online_agents = 300;
        c.coordinator.projection.bids_per_auction = 50;
    })
    .await;
    flood(&app, 20_000, |i| {
        json!({"event_type": "task.created", "source": "flood", "task_id": format!("t{i:05}"), "data": {"description": "x"}})
    })
    .await;
    flood(&app, 2_000, |i| {
        json!({"event_type": "agent.joined", "source": "flood", "agent_id": format!("a{i:05}"), "data": {"name": "n"}})
    })
    .await;
    let mut bids = vec![json!({"event_type": "task.bidding", "source": "flood", "task_id": "t19999", "data": {}})];
    bids.extend((0..999).map(|i| {
        json!({"event_type": "bid.submitted", "source": "flood", "task_id": "t19999",
               "agent_id": format!("a{:05}", 1_000 + i), "data": {"bid_sats": 10_000 - i}})
    }));
    let (status, _) = app.post_events(&Value::Array(bids)).await;
    assert_eq!(status, StatusCode::CREATED);

    let resp = app.http.get(app.url("/api/swarm")).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.bytes().await.unwrap();
    assert!(bytes.len() < 256 * 1024, "a page, not the swarm: {} bytes", bytes.len());
    let swarm: Value = serde_json::from_slice(&bytes).unwrap();
    let totals = &swarm["totals"];
    assert_eq!(totals["tasks_total"], 20_000, "the totals still count everything");
    assert_eq!(totals["tasks_open"], 500);
    assert_eq!(totals["tasks_dropped"], 19_500);
    assert_eq!(totals["agents_active"], 300);
    assert_eq!(totals["agents_dropped"], 1_700);
    assert_eq!(swarm["tasks"].as_array().unwrap().len(), 100, "the default page");
    assert_eq!(swarm["agents"].as_array().unwrap().len(), 200);
    let auction = swarm["auctions"].as_array().unwrap().iter().find(|a| a["task_id"] == "t19999").unwrap();
    assert_eq!(auction["bids"].as_array().unwrap().len(), 50, "bids per auction are capped");
    assert_eq!(auction["lowest_bid"], 10_000 - 998, "the best bid is kept");

    // The cursors walk every task and agent the projection holds, once each.
    let mut seen_tasks = 0;
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/api/swarm?tasks_limit=1000&tasks_before={b}"),
            None => "/api/swarm?tasks_limit=1000".to_owned(),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen_tasks += page["tasks"].as_array().unwrap().len();
        match page["tasks_next"].as_u64() {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen_tasks, 500);
    let (_, page) = app.get("/api/swarm?agents_limit=250").await;
    let next = page["agents_next"].as_str().unwrap().to_owned();
    let (_, rest) = app.get(&format!("/api/swarm?agents_limit=250&agents_after={next}")).await;
    assert_eq!(rest["agents"].as_array().unwrap().len(), 50);
    assert!(rest["agents_next"].is_null());

    for bad in ["tasks_limit=0", "agents_limit=1001", "tasks_limit=x", "page=2"] {
        let (status, body) = app.get(&format!("/api/swarm?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    // The coordinator still answers commands at once.
    let (status, body) = app.post_raw("/swarm/agents", &json!({"name": "late"}).to_string(), Some(&app.admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_flood_of_distinct_types_is_summarised_as_the_busiest_twenty_and_other() {
    let app = crate::harness::spawn_app().await;
    // 25 busy types (3 events each) and 2 000 types of one event each.
    let mut events: Vec<Value> =
        (0..75).map(|i| json!({"event_type": format!("busy.t{}", i % 25), "source": "s"})).collect();
    events.extend((0..925).map(|i| json!({"event_type": format!("rare.t{i}"), "source": "s"})));
    assert_eq!(app.post_events(&Value::Array(events)).await.0, StatusCode::CREATED);
    for range in [925..1_925, 1_925..2_000] {
        let rare: Vec<Value> = range.map(|i| json!({"event_type": format!("rare.t{i}"), "source": "s"})).collect();
        assert_eq!(app.post_events(&Value::Array(rare)).await.0, StatusCode::CREATED);
    }

    let (status, summary) = app.get("/api/summary?minutes=5").await;
    assert_eq!(status, StatusCode::OK);
    let by_type = summary["by_type"].as_object().unwrap();
    assert_eq!(by_type.len(), 20, "only the busiest types are named");
    assert!(by_type.keys().all(|t| t.starts_with("busy.")), "{by_type:?}");
    assert_eq!(summary["total"], 2_075);
    assert_eq!(summary["other"], 2_075 - 60);
    let bucket_types: usize =
        summary["buckets"].as_array().unwrap().iter().map(|b| b["by_type"].as_object().unwrap().len()).max().unwrap();
    assert!(bucket_types <= 20);

    let cookie = crate::sessions::form_login(app.addr, &app.admin).await;
    let page = app
        .http
        .get(app.url("/swarm/events"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counts = &page[page.find("id=\"counts-title\"").unwrap()..page.find("events in all").unwrap()];
    assert_eq!(counts.matches("class=\"count\"").count(), 20, "the busiest twenty are listed");
    assert!(counts.contains("2015 of other types"), "the rest are one line");
    assert!(!counts.contains("rare."), "no rare type is listed by name");
    app.stop().await;
}
