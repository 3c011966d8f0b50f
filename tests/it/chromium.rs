//! Headless Chromium for the browser tests: a chromedriver of our own on a free port,
//! a fresh profile, and helpers that wait on the page's DOM under a deadline (a
//! bounded loop of short checks run inside the page, never a blind sleep).
//!
//! Needs Debian's `chromium` and `chromium-driver`; `./scripts/test` installs them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::WAIT;

/// Chromium's switches: headless, no sandbox (tests run as root in CI), and nothing
/// that talks to the network on its own.
const SWITCHES: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
];

/// A program on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a Chromium session `width` pixels wide.
    pub async fn start(width: u32, height: u32) -> Browser {
        let chromium =
            on_path("chromium").expect("chromium is not installed: apt-get install chromium chromium-driver");
        let chromedriver =
            on_path("chromedriver").expect("chromedriver is not installed: apt-get install chromium-driver");
        let port = {
            // The port is free once this listener is dropped; chromedriver takes it next.
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().unwrap().port()
        };
        let mut driver = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("started successfully") {
                    return;
                }
            }
            panic!("chromedriver exited before it was ready");
        })
        .await
        .expect("chromedriver ready in time");
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = SWITCHES.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={width},{height}"));
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({ "binary": chromium, "args": args }));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a chromium session");
        client
            .update_timeouts(TimeoutConfiguration::new(Some(WAIT + Duration::from_secs(5)), Some(WAIT), None))
            .await
            .unwrap();
        let browser = Browser { client, driver, _profile: profile };
        browser.resize(width, height).await;
        browser
    }

    /// Makes the viewport `width` × `height` CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let inner = self.eval("return window.innerWidth").await;
        assert_eq!(inner, json!(width), "viewport width");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Logs in as a person does: opens the login page, types the token into the form
    /// and clicks "Log in".
    pub async fn login(&self, base: &str, token: &str) {
        self.goto(&format!("{base}/login")).await;
        self.type_into("#token", token).await;
        self.click("form[action='/login'] button[type='submit']").await;
        self.wait_for("the live page after login", "location.pathname === '/swarm/live'").await;
    }

    /// Logs out with the header's button, and waits for the login page.
    pub async fn logout(&self) {
        self.click("form.logout button[type='submit']").await;
        self.wait_for_path("/login").await;
    }

    /// Waits until the page the browser shows is at `path`, across navigations the
    /// page starts by itself (which end any script waiting inside the old page).
    pub async fn wait_for_path(&self, path: &str) {
        let arrived = tokio::time::timeout(WAIT, async {
            loop {
                if let Ok(url) = self.client.current_url().await
                    && url.path() == path
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(arrived.is_ok(), "the browser never reached {path}");
    }

    /// Types `text` into the element `css` finds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        field.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Runs `body` (a function body; `return` gives the value) in the page.
    pub async fn eval(&self, body: &str) -> Value {
        self.client.execute(body, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// Waits until the JavaScript expression `condition` holds, checking every 20 ms, for
    /// at most `within`. Each check is its own short script run from here rather than one
    /// long asynchronous script in the page: a condition that waits on a navigation (a
    /// form submitted by script, a redirect) would otherwise lose its page mid-wait, and
    /// chromedriver answers that with an error instead of the result. A check that fails
    /// that way counts as "not yet".
    pub async fn wait_within(&self, what: &str, condition: &str, within: Duration) {
        let script = format!("try {{ return !!({condition}); }} catch (e) {{ return false; }}");
        let deadline = tokio::time::Instant::now() + within;
        let mut last_error;
        loop {
            last_error = match self.client.execute(&script, vec![]).await {
                Ok(Value::Bool(true)) => return,
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            };
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let state = self.eval("return document.getElementById('conn')?.outerHTML ?? location.href").await;
        let error = last_error.map(|e| format!("; the last check failed: {e}")).unwrap_or_default();
        panic!("timed out after {within:?} waiting for {what} ({condition}); page: {state}{error}");
    }

    pub async fn wait_for(&self, what: &str, condition: &str) {
        self.wait_within(what, condition, WAIT).await;
    }

    /// Waits until the feed's connection indicator says live (over `transport`, if given).
    pub async fn wait_live(&self, transport: Option<&str>) {
        let cond = match transport {
            Some(t) => format!(
                "document.getElementById('conn').dataset.state === 'live' && document.getElementById('conn').dataset.transport === '{t}'"
            ),
            None => "document.getElementById('conn').dataset.state === 'live'".to_owned(),
        };
        self.wait_for("the feed to be live", &cond).await;
    }

    /// The seqs of the feed's rows, top to bottom.
    pub async fn feed_seqs(&self) -> Vec<u64> {
        let v =
            self.eval("return [...document.querySelectorAll('#feed > li')].map(li => Number(li.dataset.seq))").await;
        v.as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect()
    }

    pub async fn click(&self, css: &str) {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}")).click().await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}")).text().await.unwrap()
    }

    /// Saves a PNG of the viewport as `target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"), PathBuf::from);
        let dir = target.join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(mut self) {
        // Ending the session quits Chromium; then chromedriver goes. Either failing
        // means it is gone already, which is what we want.
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
