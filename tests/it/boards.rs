//! The task and agent boards (DESIGN §10): `GET /api/tasks`, `/api/agents` and their
//! one-item forms, kept in the store so they cover the whole retained log, and the
//! post-a-task form of `/swarm/tasks`.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::database::{Database, suite_on_postgres};
use crate::harness::{TestApp, spawn_app, spawn_with};

/// One external task's events: created, then failed or completed by `agent`.
fn lifecycle(task: &str, description: &str, agent: &str, outcome: &str) -> Vec<Value> {
    vec![
        json!({"event_type": "task.created", "source": "ext", "task_id": task, "data": {"description": description}}),
        json!({"event_type": "task.bidding", "source": "ext", "task_id": task}),
        json!({"event_type": "bid.submitted", "source": "ext", "task_id": task, "agent_id": agent, "data": {"bid_sats": 7}}),
        json!({"event_type": "task.assigned", "source": "ext", "task_id": task, "agent_id": agent, "data": {"bid_sats": 7}}),
        json!({"event_type": outcome, "source": "ext", "task_id": task, "agent_id": agent, "data": {"reason": "disk full"}}),
    ]
}

async fn post_all(app: &TestApp, events: Vec<Value>) {
    post_all_as(app, &app.admin, events).await;
}

async fn post_all_as(app: &TestApp, token: &str, events: Vec<Value>) {
    for chunk in events.chunks(1000) {
        let (status, body) = app.post_raw("/api/events", &Value::Array(chunk.to_vec()).to_string(), Some(token)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
}

async fn get_as(app: &TestApp, token: &str, path: &str) -> Value {
    let (status, body) = app.get_as(path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// Every task of `path` (a `/api/tasks` query), following `next` page by page.
async fn every_task(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let mut tasks = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page = match &next {
            Some(after) => get_as(app, token, &format!("{path}{sep}after={after}")).await,
            None => get_as(app, token, path).await,
        };
        tasks.extend(page["tasks"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(after) => next = Some(after.to_owned()),
            None => return tasks,
        }
    }
}

fn ids(tasks: &[Value]) -> Vec<&str> {
    tasks.iter().map(|t| t["task_id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn the_board_keeps_every_finished_task_past_the_projections_bound_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = if suite_on_postgres() { Some(Database::for_data_dir(dir.path()).await) } else { None };
    let url = database.as_ref().map(|d| d.url.clone());
    let start = || {
        let url = url.clone();
        let data_dir = dir.path().to_path_buf();
        spawn_with(move |c| {
            c.data_dir = data_dir;
            c.database = url;
        })
    };
    let app = start().await;
    let admin = app.admin.clone();
    post_all(
        &app,
        vec![json!({"event_type": "agent.joined", "source": "ext", "agent_id": "echo", "data": {"name": "Echo"}})],
    )
    .await;
    let mut events = Vec::new();
    for i in 0..640 {
        let outcome = if i % 2 == 0 { "task.failed" } else { "task.completed" };
        events.extend(lifecycle(&format!("t{i:03}"), &format!("Job number {i}"), "echo", outcome));
    }
    post_all(&app, events).await;

    let finished_in_memory =
        get_as(&app, &admin, "/api/swarm?tasks_limit=1000").await["tasks"].as_array().unwrap().len();
    assert!(finished_in_memory <= 500, "the projection keeps at most 500 finished tasks, not {finished_in_memory}");
    let all = every_task(&app, &admin, "/api/tasks?limit=100").await;
    assert_eq!(all.len(), 640, "the board keeps them all");
    let expected: Vec<String> = (0..640).rev().map(|i| format!("t{i:03}")).collect();
    assert_eq!(ids(&all), expected, "newest first, each once");
    let failed = every_task(&app, &admin, "/api/tasks?status=failed&limit=1000").await;
    assert_eq!(failed.len(), 320);
    let oldest = get_as(&app, &admin, "/api/tasks/t000").await;
    assert_eq!(oldest["status"], "failed");
    assert_eq!(oldest["reason"], "disk full");
    assert_eq!(
        (oldest["agent_id"].as_str(), oldest["bid_sats"].as_u64(), oldest["bids"].as_u64()),
        (Some("echo"), Some(7), Some(1))
    );
    let echo = get_as(&app, &admin, "/api/agents/echo").await;
    assert_eq!(
        (echo["tasks_done"].as_u64(), echo["tasks_failed"].as_u64(), echo["sats_earned"].as_u64()),
        (Some(320), Some(320), Some(320 * 7))
    );
    app.stop().await;

    let app = start().await;
    let again = every_task(&app, &admin, "/api/tasks?limit=1000").await;
    assert_eq!(ids(&again), expected, "a restart keeps the board");
    assert_eq!(get_as(&app, &admin, "/api/agents/echo").await, echo, "and counts nothing twice");
    // It goes on folding from where it stopped.
    post_all_as(&app, &admin, lifecycle("t640", "After the restart", "echo", "task.failed")).await;
    let newest = &get_as(&app, &admin, "/api/tasks?limit=1").await["tasks"][0];
    assert_eq!((newest["task_id"].as_str(), newest["status"].as_str()), (Some("t640"), Some("failed")));
    // The oldest failed task is long out of the projection; it is retried from the board.
    let (status, retried) = app.post_raw("/swarm/tasks/t000/retry", "", Some(&admin)).await;
    assert_eq!(status, StatusCode::CREATED, "{retried}");
    let retry = get_as(&app, &admin, &format!("/api/tasks/{}", retried["task_id"].as_str().unwrap())).await;
    assert_eq!((retry["retry_of"].as_str(), retry["description"].as_str()), (Some("t000"), Some("Job number 0")));
    let (status, body) = app.post_raw("/swarm/tasks/t001/retry", "", Some(&admin)).await;
    assert_eq!(status, StatusCode::CONFLICT, "a completed task is not retried: {body}");
    app.stop().await;
    if let Some(db) = database {
        db.drop().await;
    }
}

#[tokio::test]
async fn tasks_filter_by_status_agent_and_text_and_pages_stay_stable_while_tasks_arrive() {
    let app = spawn_app().await;
    let admin = app.admin.clone();
    let mut events = Vec::new();
    events.extend(lifecycle("a1", "Resize the DISK", "echo", "task.failed"));
    events.extend(lifecycle("a2", "Sort the logs", "forge", "task.completed"));
    events.extend(lifecycle("a3", "Index 100%_done", "echo", "task.completed"));
    events.push(
        json!({"event_type": "task.created", "source": "ext", "task_id": "a4", "data": {"description": "Waiting"}}),
    );
    events.push(
        json!({"event_type": "task.created", "source": "ext", "task_id": "a5", "data": {"description": "Started"}}),
    );
    events.push(json!({"event_type": "task.assigned", "source": "ext", "task_id": "a5", "agent_id": "seer", "data": {"bid_sats": 3}}));
    events.push(json!({"event_type": "task.started", "source": "ext", "task_id": "a5", "agent_id": "seer"}));
    events.push(
        json!({"event_type": "task.created", "source": "ext", "task_id": "a6", "data": {"description": "Stop me"}}),
    );
    events.push(
        json!({"event_type": "task.cancelled", "source": "ext", "task_id": "a6", "data": {"reason": "wrong repo"}}),
    );
    post_all(&app, events).await;

    let tasks = |path: &'static str| {
        let (app, admin) = (&app, admin.clone());
        async move { ids(get_as(app, &admin, path).await["tasks"].as_array().unwrap()).join(",") }
    };
    assert_eq!(tasks("/api/tasks").await, "a6,a5,a4,a3,a2,a1");
    assert_eq!(tasks("/api/tasks?status=bidding").await, "a4");
    assert_eq!(tasks("/api/tasks?status=running").await, "a5");
    assert_eq!(tasks("/api/tasks?status=completed").await, "a3,a2");
    assert_eq!(tasks("/api/tasks?status=failed").await, "a1");
    assert_eq!(tasks("/api/tasks?status=cancelled").await, "a6");
    assert_eq!(tasks("/api/tasks?status=assigned").await, "");
    assert_eq!(tasks("/api/tasks?agent_id=echo").await, "a3,a1");
    assert_eq!(tasks("/api/tasks?q=disk").await, "a1", "any case");
    assert_eq!(tasks("/api/tasks?q=A2").await, "a2", "the id matches too");
    assert_eq!(tasks("/api/tasks?q=100%25_").await, "a3", "literally");
    assert_eq!(tasks("/api/tasks?status=completed&agent_id=echo&q=index").await, "a3");
    let a5 = get_as(&app, &admin, "/api/tasks/a5").await;
    let keys: Vec<&str> = a5.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["agent_id", "bid_sats", "bids", "created_at", "description", "status", "task_id", "updated_at"]);

    // A page, then new tasks, then the next page: it continues where the first ended.
    let first = get_as(&app, &admin, "/api/tasks?limit=4").await;
    assert_eq!(ids(first["tasks"].as_array().unwrap()), ["a6", "a5", "a4", "a3"]);
    let after = first["next"].as_str().unwrap().to_owned();
    post_all(&app, (0..3).map(|i| json!({"event_type": "task.created", "source": "ext", "task_id": format!("n{i}"), "data": {"description": "new"}})).collect()).await;
    let second = get_as(&app, &admin, &format!("/api/tasks?limit=4&after={after}")).await;
    assert_eq!(ids(second["tasks"].as_array().unwrap()), ["a2", "a1"]);
    assert!(second.get("next").is_none(), "the last page has no next: {second}");
    app.stop().await;
}

#[tokio::test]
async fn bad_board_parameters_are_refused_naming_the_field() {
    let app = spawn_app().await;
    for (path, field) in [
        ("/api/tasks?status=done", "status"),
        ("/api/tasks?status=started", "status"),
        ("/api/tasks?limit=0", "limit"),
        ("/api/tasks?limit=1001", "limit"),
        ("/api/tasks?limit=ten", "limit"),
        ("/api/tasks?after=-4", "after"),
        ("/api/tasks?after=abc", "after"),
        ("/api/agents?status=asleep", "status"),
        ("/api/agents?limit=0", "limit"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(field), "{path}: {body}");
    }
    let (status, body) = app.get("/api/tasks?colour=red").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("colour"), "{body}");
    let (status, body) = app.get("/api/tasks/nope").await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (status, _) = app.get("/api/agents/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get_as("/api/tasks", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn the_agent_board_shows_status_capabilities_counts_and_sats() {
    let app = spawn_with(|c| c.coordinator.bid_window = Duration::from_secs(3600)).await;
    let reader = app.token("read").await;
    for (id, name) in [("echo", "Echo"), ("forge", "Forge"), ("seer", "Seer")] {
        let body = json!({"name": name, "agent_id": id, "capabilities": ["code", "search"]});
        let (status, body) = app.post_raw("/swarm/agents", &body.to_string(), Some(&app.admin)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, posted) = app.post_raw("/swarm/tasks", &json!({"description": "Sort"}).to_string(), Some(&app.admin)).await;
    let task = posted["task_id"].as_str().unwrap().to_owned();
    let call = |path: String, body: Value| {
        let app = &app;
        async move {
            let (status, body) = app.post_raw(&path, &body.to_string(), Some(&app.admin)).await;
            assert!(status.is_success(), "{path}: {body}");
        }
    };
    call(format!("/swarm/tasks/{task}/bids"), json!({"agent_id": "forge", "bid_sats": 40})).await;
    call(format!("/swarm/tasks/{task}/close"), json!({})).await;
    call(format!("/swarm/tasks/{task}/complete"), json!({"result": "ok"})).await;
    call("/swarm/agents/seer/remove".into(), json!({})).await;
    let (_, second) =
        app.post_raw("/swarm/tasks", &json!({"description": "Index"}).to_string(), Some(&app.admin)).await;
    let second = second["task_id"].as_str().unwrap().to_owned();
    call(format!("/swarm/tasks/{second}/bids"), json!({"agent_id": "echo", "bid_sats": 9})).await;
    call(format!("/swarm/tasks/{second}/close"), json!({})).await;

    let agents = get_as(&app, &reader, "/api/agents").await;
    let by_id = |id: &str| agents["agents"].as_array().unwrap().iter().find(|a| a["agent_id"] == id).unwrap().clone();
    let forge = by_id("forge");
    assert_eq!(forge["status"], "idle");
    assert_eq!(forge["capabilities"], json!(["code", "search"]));
    assert_eq!((forge["tasks_done"].as_u64(), forge["sats_earned"].as_u64()), (Some(1), Some(40)));
    assert!(forge["last_seen"].as_str().unwrap().ends_with('Z'), "{forge}");
    assert_eq!(by_id("echo")["status"], "busy", "assigned the second task");
    assert_eq!(by_id("seer")["status"], "offline");
    let busy = get_as(&app, &reader, "/api/agents?status=busy").await;
    assert_eq!(busy["agents"].as_array().unwrap().len(), 1);
    let page = get_as(&app, &reader, "/api/agents?limit=2").await;
    assert_eq!(page["next"], "forge");
    let rest = get_as(&app, &reader, "/api/agents?limit=2&after=forge").await;
    assert_eq!(rest["agents"][0]["agent_id"], "seer");
    let done = get_as(&app, &reader, &format!("/api/tasks/{task}")).await;
    assert_eq!(
        (done["status"].as_str(), done["agent_id"].as_str(), done["bids"].as_u64()),
        (Some("completed"), Some("forge"), Some(1))
    );
    app.stop().await;
}

/// Posts `form` to `/swarm/tasks` as a page's form does (asking for HTML back).
async fn post_task_form(app: &TestApp, token: &str, form: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(app.url("/swarm/tasks"))
        .bearer_auth(token)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "text/html")
        .body(form.to_owned())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_post_form_lands_on_the_new_task_and_shows_a_refusal_in_the_form() {
    let app = spawn_with(|c| c.coordinator.bid_window = Duration::from_secs(3600)).await;
    let reader = app.token("read").await;
    let page = |token: String| {
        let app = &app;
        async move {
            let resp = app.http.get(app.url("/swarm/tasks")).bearer_auth(token).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.text().await.unwrap()
        }
    };
    assert!(page(app.admin.clone()).await.contains(r#"method="post" action="/swarm/tasks""#), "a writer sees the form");
    let read_only = page(reader.clone()).await;
    assert!(
        !read_only.contains(r#"method="post" action="/swarm/tasks""#) && read_only.contains("Tasks"),
        "a reader does not"
    );

    let resp = post_task_form(&app, &app.admin, "description=Rotate+the+keys").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let task_id = location.strip_prefix("/swarm/tasks/").expect("the new task's page").to_owned();
    let task = get_as(&app, &reader, &format!("/api/tasks/{task_id}")).await;
    assert_eq!((task["description"].as_str(), task["status"].as_str()), (Some("Rotate the keys"), Some("bidding")));

    let resp = post_task_form(&app, &app.admin, "description=+++").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"id="post-error""#) && html.contains("description must not be empty"), "{html}");
    assert!(html.contains(r#"method="post" action="/swarm/tasks""#), "the form is shown again");
    let resp = post_task_form(&app, &reader, "description=x").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "a reader may not post");

    let tasks = get_as(&app, &reader, "/api/tasks").await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1, "the refusals stored nothing");
    let seen: HashSet<&str> = ids(tasks["tasks"].as_array().unwrap()).into_iter().collect();
    assert!(seen.contains(task_id.as_str()));
    app.stop().await;
}

#[tokio::test]
async fn the_boards_pages_show_tabs_with_counts_and_keep_filters_in_their_links() {
    let app = spawn_app().await;
    let mut events = lifecycle("p1", "Resize <b>disk</b>", "echo", "task.failed");
    events.extend(lifecycle("p2", "Sort logs", "echo", "task.completed"));
    events.push(json!({"event_type": "agent.joined", "source": "ext", "agent_id": "echo", "data": {"name": "Echo", "capabilities": ["code"]}}));
    post_all(&app, events).await;
    let get = |path: &'static str| {
        let app = &app;
        async move {
            let resp = app.http.get(app.url(path)).bearer_auth(&app.admin).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            resp.text().await.unwrap()
        }
    };
    let html = get("/swarm/tasks?status=failed&agent_id=echo").await;
    assert!(html.contains(r#"href="/swarm/tasks?status=failed&amp;agent_id=echo" aria-current="page""#), "{html}");
    assert!(html.contains(r#"Failed <span class="count">1</span>"#), "{html}");
    assert!(html.contains(r#"Completed <span class="count">1</span>"#), "{html}");
    assert!(html.contains("Resize &lt;b&gt;disk&lt;/b&gt;"), "escaped: {html}");
    assert!(html.contains(r#"data-task="p1""#) && !html.contains(r#"data-task="p2""#), "filtered: {html}");
    assert!(html.contains(r#"hx-get="/swarm/board/tasks?status=failed&amp;agent_id=echo""#), "{html}");
    assert!(html.contains(r#"href="/swarm/tasks" aria-current="page""#), "the header's Tasks link is current");
    let fragment = get("/swarm/board/tasks?status=completed").await;
    assert!(fragment.starts_with("<div id=\"task-board\"") && fragment.contains(r#"data-task="p2""#), "{fragment}");
    let agents = get("/swarm/agents").await;
    assert!(agents.contains(r#"href="/swarm/agents/echo""#) && agents.contains("Echo"), "{agents}");
    let (status, _) = app.get("/swarm/tasks?status=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test]
async fn nodes_sharing_one_log_fold_one_board_and_count_nothing_twice() {
    // Always on PostgreSQL: the only store several nodes share.
    let db = Database::fresh().await;
    let node = || {
        let url = db.url.clone();
        spawn_with(move |c| c.database = Some(url))
    };
    let a = node().await;
    let token = a.admin.clone();
    let b = node().await;
    post_all_as(
        &a,
        &token,
        vec![json!({"event_type": "agent.joined", "source": "ext", "agent_id": "echo", "data": {"name": "Echo"}})],
    )
    .await;
    // Both nodes take events at once; each follows the whole log.
    let (mut on_a, mut on_b) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let events = lifecycle(&format!("m{i:02}"), "shared", "echo", "task.completed");
        if i % 2 == 0 { on_a.extend(events) } else { on_b.extend(events) }
    }
    tokio::join!(post_all_as(&a, &token, on_a), post_all_as(&b, &token, on_b));
    // A node learns of its peer's events through LISTEN/NOTIFY, a moment after they
    // commit: wait for both boards to catch up, bounded, before counting.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for n in [&a, &b] {
        let tasks = loop {
            let tasks = every_task(n, &token, "/api/tasks?status=completed&limit=25").await;
            if tasks.len() >= 60 || tokio::time::Instant::now() > deadline {
                break tasks;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(tasks.len(), 60, "every node's board has every task");
        let echo = get_as(n, &token, "/api/agents/echo").await;
        assert_eq!((echo["tasks_done"].as_u64(), echo["sats_earned"].as_u64()), (Some(60), Some(60 * 7)), "{echo}");
    }
    a.stop().await;
    b.stop().await;
    db.drop().await;
}

/// Posts `events` to a real server as `token`.
async fn post_to(http: &reqwest::Client, base: &str, token: &str, events: Vec<Value>) {
    let resp = http.post(format!("{base}/api/events")).bearer_auth(token).json(&events).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", resp.text().await.unwrap());
}

/// `GET {path}` from a real server: its status and body.
async fn get_from(http: &reqwest::Client, base: &str, token: &str, path: &str) -> (StatusCode, Value) {
    let resp = http.get(format!("{base}{path}")).bearer_auth(token).send().await.unwrap();
    (resp.status(), resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn within_keeps_the_tasks_that_changed_in_the_last_hour_day_or_week_with_status_and_paging() {
    // Tasks finish three days ago, two hours ago and now, on the server's own clock.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let Some((server, clock)) = crate::harness::BinaryServer::with_clock(&data, "-3d", &[]).await else { return };
    let (base, token) = (format!("http://{}", server.addr), server.admin_token());
    let http = reqwest::Client::new();
    let mut events = lifecycle("old-failed", "three days ago", "echo", "task.failed");
    events.extend(lifecycle("old-done", "three days ago", "echo", "task.completed"));
    post_to(&http, &base, &token, events).await;
    clock.set("-2h");
    post_to(&http, &base, &token, lifecycle("mid-failed", "two hours ago", "echo", "task.failed")).await;
    clock.set("+0");
    let mut events = lifecycle("new-failed-1", "just now", "echo", "task.failed");
    events.extend(lifecycle("new-done", "just now", "echo", "task.completed"));
    events.extend(lifecycle("new-failed-2", "just now", "echo", "task.failed"));
    post_to(&http, &base, &token, events).await;

    let ids = |page: &Value| -> Vec<String> {
        page["tasks"].as_array().unwrap().iter().map(|t| t["task_id"].as_str().unwrap().to_owned()).collect()
    };
    let list = |query: &'static str| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let (status, page) = get_from(&http, &base, &token, &format!("/api/tasks?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            page
        }
    };
    let failed_today = list("status=failed&within=day").await;
    assert_eq!(ids(&failed_today), ["new-failed-2", "new-failed-1", "mid-failed"], "{failed_today}");
    assert_eq!(ids(&list("status=failed&within=hour").await), ["new-failed-2", "new-failed-1"]);
    assert_eq!(
        ids(&list("status=failed&within=week").await),
        ["new-failed-2", "new-failed-1", "mid-failed", "old-failed"]
    );
    assert_eq!(ids(&list("status=failed").await).len(), 4, "no window: every failed task");
    assert_eq!(ids(&list("within=hour").await), ["new-failed-2", "new-done", "new-failed-1"], "every status");
    assert_eq!(ids(&list("within=day&q=two+hours").await), ["mid-failed"], "with the other filters");

    // Paging within the window: one at a time, nothing older than a day.
    let first = list("status=failed&within=day&limit=1").await;
    assert_eq!(ids(&first), ["new-failed-2"]);
    let mut seen = ids(&first);
    let mut next = first["next"].as_str().map(str::to_owned);
    while let Some(after) = next {
        let path = format!("/api/tasks?status=failed&within=day&limit=1&after={after}");
        let (status, page) = get_from(&http, &base, &token, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(ids(&page));
        next = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, ids(&failed_today));

    // The page's tabs count the window's tasks.
    let resp = http.get(format!("{base}/swarm/tasks?status=failed&within=day")).bearer_auth(&token).send().await;
    let html = resp.unwrap().text().await.unwrap();
    assert!(html.contains(r#"data-status="failed">Failed <span class="count">3</span>"#), "{html}");
    assert!(html.contains(r#"aria-current="page" data-within="day""#), "{html}");

    let (status, body) = get_from(&http, &base, &token, "/api/tasks?status=failed&within=month").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "within", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("hour, day, week") && message.contains("month"), "{message}");
    server.terminate().await;
}
