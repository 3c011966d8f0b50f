//! Alert rules (DESIGN §11): a threshold and an absence rule each fire and resolve
//! exactly once, as events in the log; rules and their state survive a restart without
//! a second firing; bad bodies and small scopes are refused and change nothing; the
//! live page shows a banner while a rule fires.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::chromium::Browser;
use crate::database::{Database, suite_on_postgres};
use crate::harness::{TestApp, WsClient, spawn_app, spawn_with};

async fn post_alert(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    app.post_raw("/api/alerts", &body.to_string(), Some(&app.admin)).await
}

/// Adds `body` as a rule and answers its id.
async fn add_rule(app: &TestApp, body: Value) -> String {
    let (status, rule) = post_alert(app, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    assert_eq!(rule["state"], "ok", "{rule}");
    rule["id"].as_str().unwrap().to_owned()
}

/// A WebSocket that receives the log's alert events, from now on.
async fn alert_events(app: &TestApp) -> WsClient {
    let mut ws = app.ws().await;
    ws.subscribe(None, json!({ "types": ["alert.*"] })).await;
    ws
}

/// The stored events of `event_type` for rule `id`.
async fn logged(app: &TestApp, event_type: &str, id: &str) -> Vec<Value> {
    app.all_events().await.into_iter().filter(|e| e["event_type"] == event_type && e["data"]["rule_id"] == id).collect()
}

/// The rule `id` as `GET /api/alerts` lists it.
async fn listed(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get("/api/alerts").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["alerts"].as_array().unwrap().iter().find(|a| a["id"] == id).cloned().unwrap_or(Value::Null)
}

async fn post_event(app: &TestApp, event: Value) {
    let (status, body) = app.post_events(&event).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_threshold_rule_fires_once_when_n_events_come_within_the_window_and_resolves_once() {
    let app = spawn_app().await;
    let mut alerts = alert_events(&app).await;
    let id = add_rule(
        &app,
        json!({"name": "deploys failing", "filter": {"types": ["deploy.failed"]}, "threshold": 3, "window_secs": 2}),
    )
    .await;
    let failed = |n: u64| json!({"event_type": "deploy.failed", "source": "ci", "data": {"n": n}});
    post_event(&app, json!([failed(1), failed(2)])).await;
    post_event(&app, json!({"event_type": "deploy.started", "source": "ci"})).await;
    post_event(&app, failed(3)).await;

    let firing = alerts.next_event().await;
    assert_eq!(firing["event_type"], "alert.firing", "{firing}");
    assert_eq!(firing["data"], json!({"rule_id": id, "name": "deploys failing", "count": 3}));
    assert_eq!(firing["source"], format!("alerts/{id}"));
    let id_of_firing = firing["id"].as_str().unwrap();
    assert!(id_of_firing.starts_with(&format!("sf:alert.{id}.")) && id_of_firing.ends_with(".firing"), "{firing}");
    assert_eq!(listed(&app, &id).await["state"], "firing");

    // A fourth failure while it fires fires nothing more; the rule clears once fewer
    // than three of the failures lie in the last two seconds.
    post_event(&app, failed(4)).await;
    let resolved = alerts.next_event().await;
    assert_eq!(resolved["event_type"], "alert.resolved", "{resolved}");
    assert_eq!(resolved["data"]["rule_id"], id.as_str());
    assert_eq!(resolved["id"], id_of_firing.replace(".firing", ".resolved"));
    assert!(resolved["seq"].as_u64() > firing["seq"].as_u64());

    assert_eq!(logged(&app, "alert.firing", &id).await.len(), 1);
    assert_eq!(logged(&app, "alert.resolved", &id).await.len(), 1);
    let rule = listed(&app, &id).await;
    assert_eq!(rule["state"], "ok", "{rule}");
    assert_eq!(rule["threshold"], 3);
    app.stop().await;
}

#[tokio::test]
async fn an_absence_rule_fires_once_when_its_events_stop_and_resolves_once_when_one_comes() {
    let app = spawn_app().await;
    let mut alerts = alert_events(&app).await;
    let id = add_rule(
        &app,
        json!({"name": "Echo went silent", "filter": {"types": ["agent.*"], "agent_id": "echo"}, "absent_secs": 2}),
    )
    .await;
    // Another agent's events do not count.
    post_event(&app, json!({"event_type": "agent.status_changed", "source": "s", "agent_id": "forge"})).await;

    let firing = alerts.next_event().await;
    assert_eq!(firing["event_type"], "alert.firing", "{firing}");
    assert_eq!(firing["data"], json!({"rule_id": id, "name": "Echo went silent"}), "no count for an absence");

    post_event(&app, json!({"event_type": "agent.status_changed", "source": "s", "agent_id": "echo"})).await;
    let resolved = alerts.next_event().await;
    assert_eq!(resolved["event_type"], "alert.resolved", "{resolved}");
    assert_eq!(logged(&app, "alert.firing", &id).await.len(), 1);
    assert_eq!(logged(&app, "alert.resolved", &id).await.len(), 1);
    let rule = listed(&app, &id).await;
    assert_eq!((rule["state"].as_str(), rule["absent_secs"].as_u64()), (Some("ok"), Some(2)), "{rule}");
    assert!(rule["last_match_at"].is_string(), "{rule}");

    let resp = app.http.delete(app.url(&format!("/api/alerts/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(listed(&app, &id).await, Value::Null);
    let again = app.http.delete(app.url(&format!("/api/alerts/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_firing_rule_logs_its_resolution() {
    let app = spawn_app().await;
    let mut alerts = alert_events(&app).await;
    let id = add_rule(&app, json!({"name": "any", "filter": {}, "threshold": 1, "window_secs": 3600})).await;
    post_event(&app, json!({"event_type": "x.y", "source": "s"})).await;
    assert_eq!(alerts.next_event().await["event_type"], "alert.firing");
    let resp = app.http.delete(app.url(&format!("/api/alerts/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resolved = alerts.next_event().await;
    assert_eq!(resolved["event_type"], "alert.resolved", "{resolved}");
    assert_eq!(resolved["data"]["reason"], "rule deleted");
    app.stop().await;
}

#[tokio::test]
async fn rules_survive_a_restart_and_their_state_is_rebuilt_without_a_second_firing() {
    let dir = tempfile::tempdir().unwrap();
    let database = if suite_on_postgres() { Some(Database::for_data_dir(dir.path()).await) } else { None };
    let url = database.as_ref().map(|d| d.url.clone());
    let start = || {
        let (data_dir, url) = (dir.path().to_path_buf(), url.clone());
        spawn_with(move |c| {
            c.data_dir = data_dir;
            c.database = url;
        })
    };
    let mut app = start().await;
    let mut alerts = alert_events(&app).await;
    let burst = add_rule(
        &app,
        json!({"name": "burst", "filter": {"types": ["job.failed"]}, "threshold": 2, "window_secs": 3600}),
    )
    .await;
    let silent = add_rule(&app, json!({"name": "silent", "filter": {"types": ["never.seen"]}, "absent_secs": 1})).await;
    post_event(&app, json!([{"event_type": "job.failed", "source": "s"}, {"event_type": "job.failed", "source": "s"}]))
        .await;
    let mut fired = Vec::new();
    for _ in 0..2 {
        let e = alerts.next_event().await;
        assert_eq!(e["event_type"], "alert.firing", "{e}");
        fired.push(e["data"]["rule_id"].as_str().unwrap().to_owned());
    }
    fired.sort();
    let mut both = vec![burst.clone(), silent.clone()];
    both.sort();
    assert_eq!(fired, both);
    drop(alerts);
    app.stop().await;

    app = start().await;
    app.admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim().to_owned();
    // The evaluator answers only once it has rebuilt the rules and acted on them, so
    // a second firing would be in the log by now.
    let rule = listed(&app, &burst).await;
    assert_eq!((rule["state"].as_str(), rule["count"].as_u64()), (Some("firing"), Some(2)), "{rule}");
    assert_eq!(listed(&app, &silent).await["state"], "firing");
    for id in [&burst, &silent] {
        assert_eq!(logged(&app, "alert.firing", id).await.len(), 1, "rule {id} fired once");
        assert!(logged(&app, "alert.resolved", id).await.is_empty());
    }
    // One more failure is counted on top of the rebuilt window, and still fires nothing.
    let mut alerts = alert_events(&app).await;
    post_event(&app, json!({"event_type": "never.seen", "source": "s"})).await;
    let resolved = alerts.next_event().await;
    assert_eq!(
        (resolved["event_type"].as_str(), resolved["data"]["rule_id"].as_str()),
        (Some("alert.resolved"), Some(silent.as_str()))
    );
    assert_eq!(logged(&app, "alert.firing", &burst).await.len(), 1);
    app.stop().await;
    if let Some(db) = database {
        db.drop().await;
    }
}

#[tokio::test]
async fn bad_rules_are_refused_naming_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let cases = [
        (json!({"filter": {}, "absent_secs": 5}), "name"),
        (json!({"name": " ", "filter": {}, "absent_secs": 5}), "name"),
        (json!({"name": "x", "absent_secs": 5}), "filter"),
        (json!({"name": "x", "filter": {"types": ["NotAType"]}, "absent_secs": 5}), "filter.types"),
        (json!({"name": "x", "filter": {"colour": "red"}, "absent_secs": 5}), "filter.colour"),
        (json!({"name": "x", "filter": {}, "threshold": 0, "window_secs": 5}), "threshold"),
        (json!({"name": "x", "filter": {}, "threshold": 10_001, "window_secs": 5}), "threshold"),
        (json!({"name": "x", "filter": {}, "threshold": "3", "window_secs": 5}), "threshold"),
        (json!({"name": "x", "filter": {}, "threshold": 3}), "window_secs"),
        (json!({"name": "x", "filter": {}, "threshold": 3, "window_secs": 86_401}), "window_secs"),
        (json!({"name": "x", "filter": {}, "absent_secs": 0}), "absent_secs"),
        (json!({"name": "x", "filter": {}, "threshold": 3, "window_secs": 5, "absent_secs": 5}), "absent_secs"),
        (json!({"name": "x", "filter": {}}), "threshold"),
        (json!({"name": "x", "filter": {}, "absent_secs": 5, "extra": 1}), "extra"),
    ];
    for (body, field) in cases {
        let (status, answer) = post_alert(&app, &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert_eq!(answer["error"]["field"], field, "{body} → {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(field), "{answer}");
    }
    let (status, answer) = app.post_raw("/api/alerts", "{not json", Some(&app.admin)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")));
    let (_, list) = app.get("/api/alerts").await;
    assert_eq!(list, json!({"alerts": []}), "nothing was stored");
    assert!(app.all_events().await.is_empty(), "nothing was logged");
    app.stop().await;
}

#[tokio::test]
async fn read_and_write_scopes_may_not_see_or_change_rules() {
    let app = spawn_app().await;
    let id = add_rule(&app, json!({"name": "kept", "filter": {}, "absent_secs": 3600})).await;
    let body = json!({"name": "mine", "filter": {}, "absent_secs": 5}).to_string();
    for scope in ["read", "write"] {
        let token = app.token(scope).await;
        let (status, _) = app.post_raw("/api/alerts", &body, Some(&token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{scope} POST");
        let (status, _) = app.get_as("/api/alerts", Some(&token)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{scope} GET");
        let resp = app.http.delete(app.url(&format!("/api/alerts/{id}"))).bearer_auth(&token).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{scope} DELETE");
        let page = app.http.get(app.url("/swarm/alerts")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::FORBIDDEN, "{scope} page");
    }
    let (_, list) = app.get("/api/alerts").await;
    let names: Vec<&str> = list["alerts"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["kept"]);
    app.stop().await;
}

#[tokio::test]
async fn an_admin_adds_a_rule_on_the_alerts_page_and_the_live_page_shows_a_banner_while_it_fires() {
    let app = spawn_app().await;
    let base = format!("http://{}", app.addr);
    let browser = Browser::start(1400, 1000).await;
    browser.login(&base, &app.admin).await;
    browser.click("nav.top-nav a[href='/swarm/alerts']").await;
    browser.wait_for_path("/swarm/alerts").await;
    browser.type_into("form.alert-form input[name='name']", "probe went quiet").await;
    browser.type_into("form.alert-form input[name='types']", "probe.beat").await;
    browser.click("form.alert-form input[name='kind'][value='absence']").await;
    browser.type_into("form.alert-form input[name='absent_secs']", "2").await;
    browser.click("form.alert-form button[type='submit']").await;
    browser.wait_for("the rule listed", "!!document.querySelector('li.alert-rule[data-rule]')").await;
    let id = browser.eval("return document.querySelector('li.alert-rule').dataset.rule").await;
    let id = id.as_str().unwrap().to_owned();

    browser.goto(&format!("{base}/swarm/live")).await;
    browser.wait_live(None).await;
    browser
        .wait_for(
            "the banner to show the firing rule",
            &format!("!!document.querySelector('#alert-banner:not([hidden]) [data-rule=\"{id}\"]')"),
        )
        .await;
    assert!(browser.text("#alert-banner").await.contains("Alert: probe went quiet"));
    browser.screenshot("alerts-banner-1400").await;
    browser.resize(375, 800).await;
    browser.screenshot("alerts-banner-375").await;

    post_event(&app, json!({"event_type": "probe.beat", "source": "probe"})).await;
    browser.wait_for("the banner to go once resolved", "document.getElementById('alert-banner').hidden").await;

    // The rule is deleted from its page, after confirming.
    browser.resize(1400, 1000).await;
    browser.goto(&format!("{base}/swarm/alerts")).await;
    browser.wait_for_path("/swarm/alerts").await;
    browser.screenshot("alerts-page-1400").await;
    browser.click("li.alert-rule details.confirm > summary").await;
    browser.click("li.alert-rule details.confirm button[type='submit']").await;
    browser.wait_for("the rule gone", "!document.querySelector('li.alert-rule')").await;
    let (_, list) = app.get("/api/alerts").await;
    assert_eq!(list, json!({"alerts": []}));
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn with_two_nodes_only_the_leader_logs_alerts_and_a_takeover_fires_nothing_twice() {
    let db = Database::fresh().await;
    let node = || {
        let url = db.url.clone();
        spawn_with(move |c| c.database = Some(url))
    };
    let leader = node().await;
    let mut follower = node().await;
    follower.admin = leader.admin.clone();
    let mut alerts = alert_events(&follower).await;
    // Added on the node that does not lead: the leader finds it in the store.
    let id = add_rule(&follower, json!({"name": "quiet", "filter": {"types": ["probe.beat"]}, "absent_secs": 1})).await;
    let firing = alerts.next_event().await;
    assert_eq!(
        (firing["event_type"].as_str(), firing["data"]["rule_id"].as_str()),
        (Some("alert.firing"), Some(id.as_str()))
    );
    leader.stop().await;

    // The follower leads once its coordinator does; it answers after acting on the
    // rules, so a second firing would be in the log by then.
    let join = json!({"name": "Echo"}).to_string();
    let led = tokio::time::timeout(crate::harness::WAIT, async {
        loop {
            let (status, _) = follower.post_raw("/swarm/agents", &join, Some(&follower.admin)).await;
            if status == StatusCode::CREATED {
                return;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "not the leader yet");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(led.is_ok(), "the follower took over");
    assert_eq!(listed(&follower, &id).await["state"], "firing");
    assert_eq!(logged(&follower, "alert.firing", &id).await.len(), 1, "the takeover fired nothing again");

    // The new leader acts: a beat resolves the rule, once.
    post_event(&follower, json!({"event_type": "probe.beat", "source": "probe"})).await;
    let resolved = alerts.next_event().await;
    assert_eq!(resolved["event_type"], "alert.resolved", "{resolved}");
    assert_eq!(resolved["id"], firing["id"].as_str().unwrap().replace(".firing", ".resolved"));
    follower.stop().await;
    db.drop().await;
}
