//! The browser's way in (DESIGN §9), over plain HTTP and through the real binary:
//! form login and logout, server-side sessions, one-time login links, and the
//! refusals (a token in a URL, a cross-site form). Runs on SQLite and on PostgreSQL;
//! the browser does the same in `browser`, and several nodes in `multinode`.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::Value;

use crate::database::{Database, suite_on_postgres};
use crate::harness::{BinaryServer, TestApp, WsClient, spawn_app};

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Posts the login form as a browser on the server's own page does (with its origin)
/// and returns the answer.
async fn post_login(addr: std::net::SocketAddr, token: &str, origin: Option<&str>) -> reqwest::Response {
    let mut req = no_redirects()
        .post(format!("http://{addr}/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={token}&next=%2Fswarm%2Fevents"));
    if let Some(origin) = origin {
        req = req.header(ORIGIN, origin);
    }
    req.send().await.unwrap()
}

/// Logs in with the form and returns the `Cookie` header value it set.
pub async fn form_login(addr: std::net::SocketAddr, token: &str) -> String {
    let resp = post_login(addr, token, Some(&format!("http://{addr}"))).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/swarm/events");
    cookie_of(&resp)
}

/// The `name=value` of the session cookie a response set.
fn cookie_of(resp: &reqwest::Response) -> String {
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    set.split(';').next().unwrap().to_owned()
}

/// The status of `GET path` with `cookie`.
async fn status_with(app_addr: std::net::SocketAddr, path: &str, cookie: &str) -> StatusCode {
    no_redirects().get(format!("http://{app_addr}{path}")).header(COOKIE, cookie).send().await.unwrap().status()
}

async fn sessions(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get("/api/sessions").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["sessions"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_form_login_gets_a_fresh_session_that_holds_no_token() {
    let app = spawn_app().await;
    let first = form_login(app.addr, &app.admin).await;
    let second = form_login(app.addr, &app.admin).await;
    assert_ne!(first, second, "a new session id at every login");
    for cookie in [&first, &second] {
        assert!(cookie.starts_with("swarmfeed_session=sfs_"), "{cookie}");
        assert!(!cookie.contains(&app.admin), "the cookie is not the token");
        assert_eq!(status_with(app.addr, "/api/events", cookie).await, StatusCode::OK);
        assert_eq!(status_with(app.addr, "/swarm/live", cookie).await, StatusCode::OK);
    }
    let listed = sessions(&app).await;
    assert_eq!(listed.len(), 2);
    for s in &listed {
        assert_eq!(s["scope"], "admin");
        assert!(s["id"].is_string() && s["token_id"].is_string() && s["expires_at"].is_string(), "{s}");
    }
    let text = Value::Array(listed).to_string();
    assert!(!text.contains("sfs_") && !text.contains(&app.admin), "no secret is listed: {text}");
    app.stop().await;
}

#[tokio::test]
async fn logout_deletes_the_session_so_the_old_cookie_is_worthless() {
    let app = spawn_app().await;
    let cookie = form_login(app.addr, &app.admin).await;
    let resp = no_redirects()
        .post(app.url("/logout"))
        .header(COOKIE, &cookie)
        .header(ORIGIN, format!("http://{}", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/login");
    assert!(resp.headers()[SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    // A browser that ignored the cleared cookie, or a thief who copied it, gets nothing.
    assert_eq!(status_with(app.addr, "/api/events", &cookie).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status_with(app.addr, "/swarm/live", &cookie).await, StatusCode::SEE_OTHER, "back to the login form");
    assert!(sessions(&app).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_admin_ends_sessions_and_revoking_a_token_ends_its_sessions() {
    let app = spawn_app().await;
    let reader = app.token("read").await;
    let reader_cookie = form_login(app.addr, &reader).await;
    let admin_cookie = form_login(app.addr, &app.admin).await;
    assert_eq!(app.get_as("/api/sessions", Some(&reader)).await.0, StatusCode::FORBIDDEN, "admin scope only");

    let listed = sessions(&app).await;
    let reader_session = listed.iter().find(|s| s["scope"] == "read").unwrap();
    let id = reader_session["id"].as_str().unwrap();
    let resp = app.http.delete(app.url(&format!("/api/sessions/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(status_with(app.addr, "/api/events", &reader_cookie).await, StatusCode::UNAUTHORIZED);
    let resp = app.http.delete(app.url(&format!("/api/sessions/{id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "ending twice names the missing session");
    assert_eq!(status_with(app.addr, "/api/events", &admin_cookie).await, StatusCode::OK, "other sessions live on");

    let second_reader = form_login(app.addr, &reader).await;
    let (_, tokens) = app.get("/api/tokens").await;
    let token_id = tokens["tokens"].as_array().unwrap().iter().find(|t| t["scope"] == "read").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp =
        app.http.delete(app.url(&format!("/api/tokens/{token_id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(status_with(app.addr, "/api/events", &second_reader).await, StatusCode::UNAUTHORIZED);
    assert!(sessions(&app).await.iter().all(|s| s["scope"] == "admin"), "the revoked token's sessions are gone");
    app.stop().await;
}

#[tokio::test]
async fn a_same_origin_form_post_logs_in_and_a_cross_site_one_is_refused() {
    let app = spawn_app().await;
    // What Chromium sends from the login page under the server's Referrer-Policy.
    let resp = no_redirects().get(app.url("/login")).send().await.unwrap();
    assert_eq!(resp.headers()["referrer-policy"], "same-origin");
    assert_eq!(
        post_login(app.addr, &app.admin, Some(&format!("http://{}", app.addr))).await.status(),
        StatusCode::SEE_OTHER
    );
    for foreign in ["http://evil.example", "null", &format!("http://{}.evil.example", app.addr.ip())] {
        let resp = post_login(app.addr, &app.admin, Some(foreign)).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{foreign}");
        assert!(resp.headers().get(SET_COOKIE).is_none(), "{foreign}: no session");
        assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "forbidden_origin");
    }
    let resp = post_login(app.addr, "sf_wrong", Some(&format!("http://{}", app.addr))).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(SET_COOKIE).is_none());
    assert!(resp.text().await.unwrap().contains("unknown or revoked"));
    app.stop().await;
}

#[tokio::test]
async fn a_token_in_a_login_url_is_refused_with_a_page_that_says_what_to_do() {
    let app = spawn_app().await;
    let resp = no_redirects().get(app.url(&format!("/login?token={}", app.admin))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get(SET_COOKIE).is_none(), "no session from a URL token");
    let page = resp.text().await.unwrap();
    assert!(page.contains("never accepted in a URL") && page.contains("swarmfeed login-link"), "{page}");
    assert!(page.contains("name=\"token\""), "the form is offered instead");
    assert!(sessions(&app).await.is_empty());
    app.stop().await;
}

/// `swarmfeed login-link` for the server whose data dir (or database) is `dir`.
async fn cli_login_link(dir: &std::path::Path, url: &str, extra: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
    match suite_on_postgres() {
        true => command.env("SWARMFEED_DATABASE", Database::for_data_dir(dir).await.url),
        false => command.env_remove("SWARMFEED_DATABASE"),
    };
    command.args(["login-link", "--url", url, "--data-dir"]).arg(dir).args(extra).output().await.unwrap()
}

#[tokio::test]
async fn printed_login_links_work_once_and_carry_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &[]).await;
    let base = format!("http://{}", server.addr);
    let printed = server.login_link().await;
    assert!(printed.starts_with(&format!("{base}/login?code=sfl_")), "{printed}");
    assert!(!printed.contains(&server.admin_token()), "no token in the printed link");

    let out = cli_login_link(dir.path(), &base, &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_cli = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(from_cli.starts_with(&format!("{base}/login?code=sfl_")) && from_cli != printed, "{from_cli}");

    for link in [&printed, &from_cli] {
        let resp = no_redirects().get(link).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{link}");
        let cookie = cookie_of(&resp);
        let page = resp.text().await.unwrap();
        assert!(page.contains("http-equiv=\"refresh\"") && page.contains("url=/swarm/live"), "{page}");
        assert_eq!(status_with(server.addr, "/swarm/live", &cookie).await, StatusCode::OK);
        let again = no_redirects().get(link).send().await.unwrap();
        assert_eq!(again.status(), StatusCode::UNAUTHORIZED, "a link works once");
        assert!(again.headers().get(SET_COOKIE).is_none());
        assert!(again.text().await.unwrap().contains("each link works once"));
    }

    // A link for a new read token, named; the token shows in the list, not the output.
    let out = cli_login_link(dir.path(), &base, &["--scope", "read", "--name", "phone"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let link = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("sf_"), "the token itself is never printed");
    let resp = no_redirects().get(&link).send().await.unwrap();
    let cookie = cookie_of(&resp);
    let http = reqwest::Client::new();
    let admin = server.admin_token();
    let listed: Value =
        http.get(format!("{base}/api/sessions")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    assert!(listed["sessions"].as_array().unwrap().iter().any(|s| s["token_name"] == "phone" && s["scope"] == "read"));
    assert_eq!(status_with(server.addr, "/swarm/live", &cookie).await, StatusCode::OK);
    let resp = http.post(format!("{base}/api/tokens")).bearer_auth(&cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "a cookie is no bearer token");

    let out = cli_login_link(dir.path(), &base, &["--login-link-minutes", "0"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--login-link-minutes must be a positive number"));
    server.terminate().await;
}

#[tokio::test]
async fn a_session_and_a_fresh_link_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = BinaryServer::start(dir.path(), &[]).await;
    let first_link = server.login_link().await;
    let cookie = form_login(server.addr, &server.admin_token()).await;
    assert!(server.terminate().await.success());

    let server = BinaryServer::start(dir.path(), &[]).await;
    assert_eq!(status_with(server.addr, "/swarm/live", &cookie).await, StatusCode::OK, "still logged in");
    let second_link = server.login_link().await;
    let code = |link: &str| link.split("code=").nth(1).unwrap().to_owned();
    assert_ne!(code(&first_link), code(&second_link), "every start prints a fresh link");
    let resp = no_redirects().get(&second_link).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    server.terminate().await;
}

#[tokio::test]
async fn a_stream_opened_with_a_session_closes_when_the_session_ends() {
    let app = spawn_app().await;
    let origin = format!("http://{}", app.addr);
    let open = |cookie: String| {
        let origin = origin.clone();
        async move {
            let mut ws = WsClient::connect_with(app.addr, &[("cookie", &cookie), ("origin", &origin)]).await.unwrap();
            ws.subscribe(None, serde_json::json!({})).await;
            ws
        }
    };
    let ended_by_admin = form_login(app.addr, &app.admin).await;
    let first_id = sessions(&app).await[0]["id"].as_str().unwrap().to_owned();
    let logged_out = form_login(app.addr, &app.admin).await;
    let mut by_admin = open(ended_by_admin).await;
    let mut by_logout = open(logged_out.clone()).await;

    let resp =
        app.http.delete(app.url(&format!("/api/sessions/{first_id}"))).bearer_auth(&app.admin).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_closed_with_policy(by_admin.next_message().await);

    let resp = no_redirects()
        .post(app.url("/logout"))
        .header(COOKIE, &logged_out)
        .header(ORIGIN, &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_closed_with_policy(by_logout.next_message().await);
    app.stop().await;
}

fn assert_closed_with_policy(message: Option<tokio_tungstenite::tungstenite::Message>) {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    match message {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Policy),
        other => panic!("expected close 1008, got {other:?}"),
    }
}

#[tokio::test]
async fn a_first_start_that_fails_after_writing_the_admin_token_still_leaves_a_way_in() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
    match suite_on_postgres() {
        true => command.env("SWARMFEED_DATABASE", Database::for_data_dir(dir.path()).await.url),
        false => command.env_remove("SWARMFEED_DATABASE"),
    };
    let out = command
        .args(["serve", "--bind", &taken.local_addr().unwrap().to_string(), "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "the port is taken");
    assert!(dir.path().join("admin.token").exists(), "the token was written before the bind failed");

    let server = BinaryServer::start(dir.path(), &[]).await;
    let resp = no_redirects().get(server.login_link().await).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the second start's link logs in");
    assert_eq!(status_with(server.addr, "/swarm/live", &cookie_of(&resp)).await, StatusCode::OK);
    server.terminate().await;
}
