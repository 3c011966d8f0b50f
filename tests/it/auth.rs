//! Token auth on every event path (DESIGN §6).

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{WsClient, events, spawn_app};

#[tokio::test]
async fn every_event_path_refuses_missing_or_wrong_credentials() {
    let app = spawn_app().await;
    let paths =
        ["/api/events", "/api/events/1", "/api/events/poll?wait=0", "/api/stream", "/api/summary", "/api/event-types"];
    for path in paths {
        for token in [None, Some("sf_wrong"), Some("not-even-a-token")] {
            let (status, body) = app.get_as(path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {token:?}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    let (status, _) = app.post_raw("/api/events", &events("a.b", 1).to_string(), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(WsClient::connect(app.addr, None).await.err(), Some(Some(401)));
    assert_eq!(WsClient::connect(app.addr, Some("sf_nope")).await.err(), Some(Some(401)));
    let resp = app.http.get(app.url("/api/events")).header("authorization", "Basic YTpi").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert!(app.all_events().await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn scopes_are_enforced() {
    let app = spawn_app().await;
    let read = app.token("read").await;
    let write = app.token("write").await;
    let (status, err) = app.post_raw("/api/events", &events("a.b", 1).to_string(), Some(&read)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(err["error"]["code"], "forbidden");
    assert_eq!(app.post_raw("/api/events", &events("a.b", 1).to_string(), Some(&write)).await.0, StatusCode::CREATED);
    assert_eq!(app.get_as("/api/events", Some(&read)).await.0, StatusCode::OK);
    assert_eq!(app.get_as("/api/events", Some(&write)).await.0, StatusCode::OK, "write includes read");
    assert!(WsClient::connect(app.addr, Some(&read)).await.is_ok());
    let (status, _) = app.post_raw("/api/tokens", &json!({"scope": "admin"}).to_string(), Some(&write)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only admin issues tokens");
    for (body, field) in [
        (json!({"scope": "root"}), "scope"),
        (json!({"name": "dash"}), "scope"),
        (json!({"scope": "read", "name": 7}), "name"),
        (json!({"scope": "read", "owner": "me"}), "owner"),
    ] {
        let (status, err) = app.post_raw("/api/tokens", &body.to_string(), Some(&app.admin)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["field"], field, "{body} → {err}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_first_start_writes_a_private_admin_token_once() {
    let app = spawn_app().await;
    let path = app.dir.path().join("admin.token");
    assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), app.admin);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    app.stop().await;
}

#[tokio::test]
async fn no_auth_is_refused_off_loopback() {
    let config = swarmfeed::config::Config {
        no_auth: true,
        bind: "0.0.0.0:0".parse().unwrap(),
        data_dir: tempfile::tempdir().unwrap().path().to_path_buf(),
        ..Default::default()
    };
    let err = swarmfeed::server::Application::build(config).await.err().expect("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_case() {
    let app = spawn_app().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let resp = app
            .http
            .get(app.url("/api/events"))
            .header("authorization", format!("{scheme} {}", app.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{scheme}");
    }
    let resp = app
        .http
        .get(app.url("/api/events"))
        .header("authorization", format!("Basic {}", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "another scheme is refused");
    app.stop().await;
}
