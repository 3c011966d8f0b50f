//! TLS, end to end with the real binary: `serve --tls-cert --tls-key` answering `emit`
//! over https and `tail` over wss with `--ca-file`, reloading its certificate on
//! SIGHUP (and keeping the old one when the new files are bad). Certificates come
//! from certificate authorities made here at run time; no key is committed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::harness::{WAIT, ready_addr};

/// A certificate authority of the test's own.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        TestCa { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// Writes the CA's certificate to `path` (a `--ca-file`, an `sslrootcert`).
    pub fn write_cert(&self, path: &Path) {
        std::fs::write(path, self.issuer.pem()).unwrap();
    }

    /// A certificate for `names` (host names or IP addresses) signed by this CA, and its
    /// key, written to `cert` and `key` (PEM; the key in PKCS#8).
    pub fn write_leaf(&self, names: &[&str], cert: &Path, key: &Path) {
        let key_pair = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "swarmfeed test server");
        let leaf = params.signed_by(&key_pair, &self.issuer).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, key_pair.serialize_pem()).unwrap();
    }
}

/// Files of one test: a CA file per CA, the served certificate and key, a data dir.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Files { dir: tempfile::tempdir().unwrap() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `swarmfeed serve` over TLS, its stderr lines kept to see what it logged.
struct TlsServer {
    child: Child,
    addr: SocketAddr,
    token: String,
    logs: watch::Receiver<Vec<String>>,
}

impl TlsServer {
    async fn start(files: &Files) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_swarmfeed"))
            .env_remove("SWARMFEED_DATABASE")
            .args(["--log-format", "json", "serve", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(files.path("data"))
            .arg("--tls-cert")
            .arg(files.path("server.pem"))
            .arg("--tls-key")
            .arg(files.path("server.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = ready_addr(&mut lines, |_| {}).await.expect("the server exited before it was ready");
        let (kept, logs) = watch::channel(Vec::new());
        // Drains stderr so the server never blocks on a full pipe; ends with it.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                kept.send_modify(|kept| kept.push(line));
            }
        });
        let token = std::fs::read_to_string(files.path("data").join("admin.token")).unwrap().trim().to_owned();
        TlsServer { child, addr, token, logs }
    }

    /// The URL clients use: by name, as the certificate says.
    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn hang_up(&self) {
        let pid = self.child.id().expect("running").to_string();
        assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    }

    /// Waits until the server has logged a line containing `words`.
    async fn logged(&mut self, words: &str) {
        let said = self.logs.wait_for(|lines| lines.iter().any(|l| l.contains(words)));
        if !matches!(tokio::time::timeout(WAIT, said).await, Ok(Ok(_))) {
            panic!("the server did not log {words:?}; it logged:\n{}", self.logs.borrow().join("\n"));
        }
    }
}

/// The binary as a client of `server`, running `subcommand`, with nothing from the
/// caller's environment.
fn client(server: &TlsServer, url: &str, subcommand: &[&str], ca_file: Option<&Path>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_swarmfeed"));
    for var in ["SWARMFEED_URL", "SWARMFEED_DATA_DIR", "SWARMFEED_CA_FILE", "NO_COLOR"] {
        command.env_remove(var);
    }
    command.env("SWARMFEED_TOKEN", &server.token).env("SWARMFEED_URL", url).args(subcommand).kill_on_drop(true);
    if let Some(ca) = ca_file {
        command.arg("--ca-file").arg(ca);
    }
    command
}

/// `swarmfeed emit` of one event to `url`; its output.
async fn emit(server: &TlsServer, url: &str, ca_file: Option<&Path>, source: &str) -> Output {
    let mut command = client(server, url, &["emit", "task.created", "--source", source], ca_file);
    command.stdin(Stdio::null());
    let output = tokio::time::timeout(WAIT, command.output()).await;
    output.unwrap_or_else(|_| panic!("emit --source {source} did not end in time")).expect("emit runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn emit_posts_over_https_and_tail_follows_over_wss_trusting_the_ca_file() {
    let files = Files::new();
    let ca = TestCa::new("swarmfeed test CA");
    ca.write_cert(&files.path("ca.pem"));
    ca.write_leaf(&["localhost", "127.0.0.1"], &files.path("server.pem"), &files.path("server.key"));
    let server = TlsServer::start(&files).await;
    let ca_file = files.path("ca.pem");

    let mut tail = client(&server, &server.url(), &["tail", "--json", "--since", "0"], Some(&ca_file))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tail starts");
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();

    let posted = emit(&server, &server.url(), Some(&ca_file), "over-https").await;
    assert!(posted.status.success(), "emit over https: {}", text(&posted.stderr));
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.expect("tail prints in time").unwrap().unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["source"], "over-https", "tail got the event over wss");

    // The system's roots do not know the test CA: refused, and said why.
    let untrusted = emit(&server, &server.url(), None, "untrusted").await;
    assert!(!untrusted.status.success());
    assert!(text(&untrusted.stderr).contains("--ca-file"), "{}", text(&untrusted.stderr));
    assert!(text(&untrusted.stderr).to_lowercase().contains("certificate"), "{}", text(&untrusted.stderr));
    // Plain http to the TLS port is told, in plain http, to use https.
    let plain = emit(&server, &format!("http://{}", server.addr), None, "plain").await;
    assert!(!plain.status.success());
    assert!(text(&plain.stderr).contains("use https://"), "{}", text(&plain.stderr));
    // A CA file that is not one is named.
    std::fs::write(files.path("junk.pem"), "not a certificate").unwrap();
    let junk = emit(&server, &server.url(), Some(&files.path("junk.pem")), "junk").await;
    assert!(!junk.status.success());
    assert!(text(&junk.stderr).contains("--ca-file"), "{}", text(&junk.stderr));
    tail.start_kill().unwrap();
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_and_a_bad_one_keeps_the_old() {
    let files = Files::new();
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    old_ca.write_cert(&files.path("old-ca.pem"));
    new_ca.write_cert(&files.path("new-ca.pem"));
    let (cert, key) = (files.path("server.pem"), files.path("server.key"));
    old_ca.write_leaf(&["localhost"], &cert, &key);
    let mut server = TlsServer::start(&files).await;
    let (old, new) = (files.path("old-ca.pem"), files.path("new-ca.pem"));
    assert!(emit(&server, &server.url(), Some(&old), "before").await.status.success());

    // A broken certificate file: the reload fails, says why, and changes nothing.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n").unwrap();
    server.hang_up();
    server.logged("not reloaded").await;
    assert!(server.logs.borrow().iter().any(|l| l.contains("--tls-cert")), "the log names the file");
    let still = emit(&server, &server.url(), Some(&old), "after a bad reload").await;
    assert!(still.status.success(), "the old certificate is still served: {}", text(&still.stderr));

    // A certificate from another CA: served from the next handshake on.
    new_ca.write_leaf(&["localhost"], &cert, &key);
    server.hang_up();
    server.logged("TLS certificate reloaded").await;
    let renewed = emit(&server, &server.url(), Some(&new), "after the reload").await;
    assert!(renewed.status.success(), "the new certificate is served: {}", text(&renewed.stderr));
    let stale = emit(&server, &server.url(), Some(&old), "old trust").await;
    assert!(!stale.status.success(), "the old certificate is no longer served");
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_stops_the_start_and_names_both_files() {
    let files = Files::new();
    let ca = TestCa::new("swarmfeed test CA");
    ca.write_leaf(&["localhost"], &files.path("server.pem"), &files.path("other.key"));
    ca.write_leaf(&["localhost"], &files.path("other.pem"), &files.path("server.key"));
    let run = Command::new(env!("CARGO_BIN_EXE_swarmfeed"))
        .env_remove("SWARMFEED_DATABASE")
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(files.path("data"))
        .arg("--tls-cert")
        .arg(files.path("server.pem"))
        .arg("--tls-key")
        .arg(files.path("server.key"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, run).await.expect("exits in time").unwrap();
    assert!(!out.status.success());
    let said = text(&out.stderr);
    assert!(said.contains("do not go together") && said.contains("server.key"), "{said}");
    // A flag alone is refused before anything starts.
    let alone = Command::new(env!("CARGO_BIN_EXE_swarmfeed"))
        .args(["serve", "--tls-cert", "x.pem"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, alone).await.expect("exits in time").unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--tls-key"), "{}", text(&out.stderr));
}

/// A browser's path over https: the login link printed at start is https, the login
/// form posted from the server's own https origin is taken (the Origin check knows the
/// scheme it serves), and the session cookie is `Secure`, so it never travels in clear.
#[tokio::test]
async fn a_person_logs_in_over_https_with_the_printed_link_and_with_the_form() {
    let files = Files::new();
    let ca = TestCa::new("swarmfeed test CA");
    ca.write_cert(&files.path("ca.pem"));
    ca.write_leaf(&["localhost", "127.0.0.1"], &files.path("server.pem"), &files.path("server.key"));
    let mut server = TlsServer::start(&files).await;
    let root = reqwest::Certificate::from_pem(&std::fs::read(files.path("ca.pem")).unwrap()).unwrap();
    let browser = reqwest::Client::builder()
        .add_root_certificate(root)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session_cookie = |response: &reqwest::Response| -> String {
        let cookie = response.headers()[reqwest::header::SET_COOKIE].to_str().unwrap().to_owned();
        assert!(cookie.contains("; Secure"), "a session cookie over TLS is Secure: {cookie}");
        cookie.split(';').next().unwrap().to_owned()
    };

    server.logged("Log in at https://").await;
    let link = server
        .logs
        .borrow()
        .iter()
        .find_map(|l| l.split("Log in at ").nth(1).map(|rest| rest.split_whitespace().next().unwrap().to_owned()))
        .unwrap();
    let opened = browser.get(&link).send().await.unwrap();
    assert_eq!(opened.status(), reqwest::StatusCode::OK, "the printed link {link} logs in");
    let from_link = session_cookie(&opened);

    let origin = format!("https://localhost:{}", server.addr.port());
    let posted = browser
        .post(format!("{origin}/login"))
        .header(reqwest::header::ORIGIN, &origin)
        .form(&[("token", server.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), reqwest::StatusCode::SEE_OTHER, "the form from the server's own https origin");
    let from_form = session_cookie(&posted);

    for cookie in [from_link, from_form] {
        let live =
            browser.get(format!("{origin}/swarm/live")).header(reqwest::header::COOKIE, &cookie).send().await.unwrap();
        assert_eq!(live.status(), reqwest::StatusCode::OK, "the dashboard with {cookie}");
    }
    // The same form from the cleartext origin of the same host is another origin.
    let foreign = browser
        .post(format!("{origin}/login"))
        .header(reqwest::header::ORIGIN, format!("http://localhost:{}", server.addr.port()))
        .form(&[("token", server.token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), reqwest::StatusCode::FORBIDDEN);
}
