//! The way in, in headless Chromium (DESIGN §9): a person types the token into the
//! login form and clicks, stays logged in across a server restart, logs out with the
//! button, and a form on another site cannot log anyone in.

use axum::response::Html;
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use tokio::net::TcpListener;

use crate::chromium::Browser;
use crate::harness::{BinaryServer, spawn_app};

const DESKTOP: (u32, u32) = (1400, 1000);

#[tokio::test]
async fn a_person_logs_in_with_the_form_stays_in_across_a_restart_and_logs_out_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &[]).await;
    let addr = server.addr;
    let base = format!("http://{addr}");
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&base, &server.admin_token()).await;
    browser.wait_live(Some("ws")).await;
    let cookie = browser.client.get_named_cookie("swarmfeed_session").await.expect("a session cookie");
    let cookie = format!("swarmfeed_session={}", cookie.value());
    assert!(cookie.starts_with("swarmfeed_session=sfs_") && !cookie.contains(&server.admin_token()));

    assert!(server.terminate().await.success());
    let server = BinaryServer::start_at(dir.path(), &addr.to_string(), &[]).await;
    // The open page reconnects by itself; a reload finds the session still there.
    browser.wait_live(None).await;
    browser.goto(&format!("{base}/swarm/events")).await;
    browser.wait_for_path("/swarm/events").await;

    browser.logout().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resp = http.get(format!("{base}/api/events")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "the old cookie is worthless after logout");
    browser.goto(&format!("{base}/swarm/live")).await;
    browser.wait_for_path("/login").await;
    browser.close().await;
    server.terminate().await;
}

#[tokio::test]
async fn a_login_form_on_another_site_is_refused() {
    let app = spawn_app().await;
    // Another origin (same host, another port) serving a page whose form posts a
    // token to swarmfeed's /login, as a phishing or login-CSRF page would.
    let foreign = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let foreign_addr = foreign.local_addr().unwrap();
    let page = format!(
        r#"<!doctype html><form method="post" action="http://{}/login">
           <input name="token" value="{}"><button type="submit">go</button></form>"#,
        app.addr, app.admin
    );
    let router = axum::Router::new().route("/", axum::routing::get(move || async move { Html(page) }));
    let serving = tokio::spawn(async move { axum::serve(foreign, router).await });

    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.goto(&format!("http://{foreign_addr}/")).await;
    browser.click("button[type='submit']").await;
    browser.wait_for_path("/login").await;
    let body = browser.eval("return document.body.innerText").await;
    assert!(body.as_str().unwrap().contains("forbidden_origin"), "{body}");
    assert!(browser.client.get_named_cookie("swarmfeed_session").await.is_err(), "no session was started");
    let (_, sessions) = app.get("/api/sessions").await;
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 0);
    browser.close().await;
    serving.abort();
    app.stop().await;
}

#[tokio::test]
async fn an_open_dashboard_goes_back_to_the_login_form_when_its_session_is_ended() {
    let app = spawn_app().await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.login(&format!("http://{}", app.addr), &app.admin).await;
    browser.wait_live(Some("ws")).await;
    let (_, sessions) = app.get("/api/sessions").await;
    let id = sessions["sessions"][0]["id"].as_str().unwrap().to_owned();
    let resp = app.http.delete(app.url(&format!("/api/sessions/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    browser.wait_for_path("/login").await;
    let next = browser.eval("return new URLSearchParams(location.search).get('next')").await;
    assert_eq!(next, "/swarm/live", "it comes back here after logging in again");
    browser.close().await;
    app.stop().await;
}
