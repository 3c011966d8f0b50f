//! Full-text search through the API (`q=` on `GET /api/events` and the export), its
//! lag behind the log, retention, and the summary's ranges. Runs on SQLite, and on
//! PostgreSQL with `SWARMFEED_TEST_STORE=postgres`.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, WAIT, seqs, spawn_app, spawn_with};

/// The index's lag as `/metrics` tells it, and the head.
async fn search_lag(app: &TestApp) -> (u64, u64) {
    let text = app.http.get(app.url("/metrics")).bearer_auth(&app.admin).send().await.unwrap().text().await.unwrap();
    let gauge = |name: &str| -> u64 {
        let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    (gauge("swarmfeed_search_lag_events"), gauge("swarmfeed_head_seq"))
}

/// Waits until the search index has taken in every event up to `head`. The indexer
/// gives no signal outside the process but its gauge, so the gauge is read until it
/// says so, within [`WAIT`].
pub async fn indexed_up_to(app: &TestApp, head: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (lag, seen) = search_lag(app).await;
        if seen >= head && lag == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the index still lags {lag} events behind {seen}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A batch of events a search can tell apart, committed; returns the head.
pub async fn post_disk_events(app: &TestApp) -> u64 {
    let (status, body) = app
        .post_events(&json!([
            {"event_type": "system.error", "source": "node-a", "data": {"message": "Disk full on /var"}},
            {"event_type": "system.warning", "source": "node-b", "data": {"message": "disk almost full"}},
            {"event_type": "task.assigned", "source": "coordinator", "agent_id": "forge", "task_id": "t1",
             "data": {"bid_sats": 42}},
            {"event_type": "tool.failed", "source": "forge", "agent_id": "forge", "task_id": "t1",
             "data": {"tool_name": "df", "error": "DISK FULL"}},
            {"event_type": "system.info", "source": "node-a", "data": {"message": "all quiet"}},
            {"event_type": "system.error", "source": "node-a", "data": {"message": "disk full again", "device": "sda"}},
        ]))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["events"][5]["seq"].as_u64().unwrap()
}

async fn search(app: &TestApp, query: &str) -> (Vec<u64>, Value) {
    let (status, body) = app.get(&format!("/api/events?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    (seqs(body["events"].as_array().unwrap()), body["next"].clone())
}

#[tokio::test]
async fn q_combines_with_every_filter_and_pages_in_seq_order() {
    let app = spawn_app().await;
    let head = post_disk_events(&app).await;
    indexed_up_to(&app, head).await;

    assert_eq!(search(&app, "q=disk+full").await.0, vec![1, 2, 4, 6], "all words, any case, any order");
    assert_eq!(search(&app, "q=%22disk+full%22").await.0, vec![1, 4, 6], "a quoted phrase");
    assert_eq!(search(&app, "q=forge+42").await.0, vec![3], "the display text");
    assert_eq!(search(&app, "q=sd*").await.0, vec![6], "a prefix");
    assert_eq!(search(&app, "q=disk&types=system.*").await.0, vec![1, 2, 6]);
    assert_eq!(search(&app, "q=disk&source=node-a").await.0, vec![1, 6]);
    assert_eq!(search(&app, "q=full&agent_id=forge").await.0, vec![4]);
    assert_eq!(search(&app, "q=disk&task_id=t1").await.0, vec![4]);
    assert_eq!(search(&app, "q=disk&after=1&before=6").await.0, vec![2, 4]);
    assert_eq!(search(&app, "q=disk&from=2000-01-01T00:00:00Z").await.0.len(), 4);
    assert_eq!(search(&app, "q=").await.0.len(), 6, "a blank q is no search");

    // Pages of two, by the cursor each page returns, in both orders.
    let mut got = Vec::new();
    let mut next = None;
    loop {
        let after = next.map(|n: u64| format!("&after={n}")).unwrap_or_default();
        let (page, cursor) = search(&app, &format!("q=disk&limit=2{after}")).await;
        got.extend(page);
        match cursor.as_u64() {
            Some(n) => next = Some(n),
            None => break,
        }
    }
    assert_eq!(got, vec![1, 2, 4, 6]);
    let (first, cursor) = search(&app, "q=disk&limit=3&order=desc").await;
    assert_eq!((first, cursor.as_u64()), (vec![6, 4, 2], Some(2)));
    assert_eq!(search(&app, "q=disk&limit=3&order=desc&before=2").await.0, vec![1]);
    app.stop().await;
}

#[tokio::test]
async fn a_bad_q_is_a_400_naming_q_and_query_syntax_is_matched_as_words() {
    let app = spawn_app().await;
    let head = post_disk_events(&app).await;
    indexed_up_to(&app, head).await;
    let long = "a".repeat(201);
    let crowded = (0..17).map(|i| format!("w{i}")).collect::<Vec<_>>().join("+");
    for bad in [long.as_str(), "%22%22", "!!!+...", "*", "-", crowded.as_str()] {
        let (status, body) = app.get(&format!("/api/events?q={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "q={bad}: {body}");
        assert_eq!(body["error"]["field"], "q", "{body}");
        let (status, _) = app.get(&format!("/api/events/export?q={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "export q={bad}");
    }
    // What FTS5 or to_tsquery would read as operators: only the words count.
    for (q, want) in [
        ("disk%22+NEAR(full", vec![]),
        ("%22disk", vec![1, 2, 4, 6]),
        ("disk+OR+quiet", vec![]),
        ("full+%26+!disk+|+x%27", vec![]),
        ("(sda)", vec![6]),
        ("%5Edisk+-full+sda:", vec![6]),
    ] {
        assert_eq!(search(&app, &format!("q={q}")).await.0, want, "q={q}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_export_with_q_downloads_only_the_matches() {
    let app = spawn_app().await;
    let head = post_disk_events(&app).await;
    indexed_up_to(&app, head).await;
    let get = |query: &'static str| {
        app.http.get(app.url(&format!("/api/events/export?{query}"))).bearer_auth(&app.admin).send()
    };
    let ndjson = get("q=disk+full&source=node-a").await.unwrap().text().await.unwrap();
    let lines: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(seqs(&lines), vec![1, 6]);
    let csv = get("format=csv&q=%22disk+full%22").await.unwrap().text().await.unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(rows.iter().all(|r| r.to_lowercase().contains("disk full")), "{csv}");
    app.stop().await;
}

#[tokio::test]
async fn a_new_event_is_found_within_a_second_of_its_commit() {
    let app = spawn_app().await;
    let head = post_disk_events(&app).await;
    indexed_up_to(&app, head).await;
    let (status, _) =
        app.post_events(&json!({"event_type": "system.info", "source": "s", "data": {"m": "zebra"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    let committed = Instant::now();
    loop {
        if search(&app, "q=zebra").await.0 == vec![head + 1] {
            break;
        }
        assert!(committed.elapsed() < WAIT, "never found");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = committed.elapsed();
    assert!(took <= Duration::from_secs(1), "found {took:?} after its commit");
    app.stop().await;
}

#[tokio::test]
async fn events_retention_prunes_are_no_longer_found() {
    let app = spawn_with(|c| {
        c.retention.events = Some(3);
        c.retention.interval = Duration::from_millis(50);
    })
    .await;
    let head = post_disk_events(&app).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = app.get("/api/events").await;
        assert_eq!(status, StatusCode::OK);
        if seqs(body["events"].as_array().unwrap()) == vec![4, 5, 6] {
            break;
        }
        assert!(Instant::now() < deadline, "retention never pruned: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    indexed_up_to(&app, head).await;
    assert_eq!(search(&app, "q=disk").await.0, vec![4, 6]);
    assert_eq!(search(&app, "q=forge").await.0, Vec::<u64>::new(), "the pruned task.assigned");
    app.stop().await;
}

#[tokio::test]
async fn the_summary_counts_the_last_hour_day_or_week_in_buckets_from_the_store() {
    let app = spawn_app().await;
    post_disk_events(&app).await;
    for (query, minutes, width, count) in [
        ("", 60, 1, 60),
        ("range=hour", 60, 1, 60),
        ("range=day", 1440, 15, 96),
        ("range=week", 10_080, 60, 168),
        ("minutes=300", 300, 5, 60),
    ] {
        let (status, body) = app.get(&format!("/api/summary?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        assert_eq!(body["minutes"], minutes, "{query}");
        assert_eq!(body["bucket_minutes"], width, "{query}");
        let buckets = body["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), count, "{query}");
        assert_eq!(body["total"], 6, "{query}");
        // Posted a moment ago: in the current bucket, or the one before if it just began.
        let recent: u64 = buckets.iter().rev().take(2).map(|b| b["total"].as_u64().unwrap()).sum();
        assert_eq!(recent, 6, "{query}");
        assert_eq!(body["by_type"]["system.error"], 2, "{query}");
        // Buckets start at multiples of their width, one width apart.
        let starts: Vec<i64> = buckets
            .iter()
            .map(|b| chrono::DateTime::parse_from_rfc3339(b["minute"].as_str().unwrap()).unwrap().timestamp())
            .collect();
        assert!(starts.iter().all(|s| s % (width * 60) == 0), "{query}");
        assert!(starts.windows(2).all(|w| w[1] - w[0] == width * 60), "{query}");
    }
    for bad in ["range=month", "range=day&minutes=60", "minutes=0", "minutes=10081"] {
        let (status, body) = app.get(&format!("/api/summary?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_events_page_searches_and_its_export_links_and_chart_keep_q_and_the_range() {
    let app = spawn_app().await;
    let head = post_disk_events(&app).await;
    indexed_up_to(&app, head).await;
    let path = "/swarm/events?q=%22disk+full%22&source=node-a&chart=day";
    let resp = app.http.get(app.url(path)).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Disk full on /var") && html.contains("disk full again"), "the matches are shown");
    assert!(!html.contains("disk almost full") && !html.contains("all quiet"), "nothing else is");
    assert!(html.contains(r#"value="&quot;disk full&quot;""#), "the box keeps the search");
    assert!(html.contains("/api/events/export?source=node-a&amp;q=%22disk%20full%22&amp;format=csv"), "{html}");
    assert!(html.contains(r#"data-summary="/api/summary?range=day""#), "the chart draws the chosen range");
    assert!(html.contains("By type, last day"));
    let (status, body) = app.get("/swarm/events?q=%22%22").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_q_and_the_summarys_range() {
    let app = spawn_app().await;
    let (status, doc) = app.get_as("/api/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let params = |path: &str, name: &str| -> Value {
        let list = doc["paths"][path]["get"]["parameters"].as_array().unwrap_or_else(|| panic!("{path}"));
        list.iter().find(|p| p["name"] == name).cloned().unwrap_or_else(|| panic!("{path} has no {name}"))
    };
    for path in ["/api/events", "/api/events/export"] {
        let q = params(path, "q");
        assert!(q["description"].as_str().unwrap().contains("phrase"), "{path}: {q}");
    }
    assert!(params("/api/summary", "range")["description"].as_str().unwrap().contains("week"));
    assert!(params("/api/summary", "minutes").is_object());
    app.stop().await;
}
