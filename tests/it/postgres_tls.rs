//! PostgreSQL over TLS, end to end with the real binary: a cluster of the test's own
//! with `ssl = on` and a pg_hba.conf that rejects plain TCP connections (as managed
//! services do), reached with each `sslmode`. The verifying modes succeed with the
//! right `sslrootcert` and refuse a wrong CA or a host name the certificate does not
//! name, saying so; `disable` is refused by the server.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::harness::ready_addr;
use crate::pg_cluster::{Cluster, ServerTls};
use crate::tls::TestCa;

/// How a start of the server against one URL ended.
enum Start {
    Ready {
        child: tokio::process::Child,
        addr: SocketAddr,
    },
    /// The server exited before it was ready; everything it wrote to stderr.
    Refused(String),
}

/// Starts `serve --database url` on a fresh data dir and waits until it is ready or
/// has exited.
async fn serve(url: &str, data: &Path) -> Start {
    let mut child = Command::new(env!("CARGO_BIN_EXE_swarmfeed"))
        .env_remove("SWARMFEED_DATABASE")
        .args(["--log-format", "json", "serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--database", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    match ready_addr(&mut lines, |line| said.push(line)).await {
        Some(addr) => {
            // Drains stderr so the server never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Start::Ready { child, addr }
        }
        None => Start::Refused(said.join("\n")),
    }
}

/// Starts the server on `url`, stores one event through it and reads it back. The
/// first start on the database writes the admin token to its data dir; later ones
/// find tokens in the store and reuse that one.
async fn works(url: &str, data: &Path, source: &str, token: &mut Option<String>) {
    let Start::Ready { mut child, addr } = serve(url, data).await else {
        panic!("the server did not start on {url}");
    };
    let token = token
        .get_or_insert_with(|| std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned())
        .clone();
    let http = reqwest::Client::new();
    let posted = http
        .post(format!("http://{addr}/api/events"))
        .bearer_auth(&token)
        .json(&json!([{"event_type": "agent.joined", "source": source, "agent_id": "echo"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), reqwest::StatusCode::CREATED, "{url}: {}", posted.text().await.unwrap());
    let read: Value = http
        .get(format!("http://{addr}/api/events?source={source}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["events"].as_array().map(Vec::len), Some(1), "{url}: {read}");
    child.kill().await.unwrap();
}

/// Starts the server on `url` and returns what it said when it refused to start.
async fn refused(url: &str, data: &Path) -> String {
    match serve(url, data).await {
        Start::Ready { .. } => panic!("the server started on {url}, which should have been refused"),
        Start::Refused(said) => said,
    }
}

#[tokio::test]
async fn every_sslmode_against_a_postgresql_that_requires_tls() {
    let files = tempfile::tempdir().unwrap();
    let path = |name: &str| files.path().join(name);
    let ca = TestCa::new("swarmfeed test database CA");
    ca.write_cert(&path("ca.pem"));
    // The certificate names localhost only, so 127.0.0.1 is a name it does not hold.
    ca.write_leaf(&["localhost"], &path("server.pem"), &path("server.key"));
    TestCa::new("some other CA").write_cert(&path("other-ca.pem"));
    let cluster = match Cluster::start_tls_only(ServerTls { cert: &path("server.pem"), key: &path("server.key") }) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: this test starts a PostgreSQL cluster of its own, and {why}");
            return;
        }
    };
    let port = cluster.port();
    let ca_file = path("ca.pem").display().to_string();
    let other_ca = path("other-ca.pem").display().to_string();
    let url = |host: &str, params: &str| format!("postgres://postgres@{host}:{port}/postgres?{params}");
    let data = |name: &str| {
        let dir = files.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        dir
    };

    let mut token = None;
    // What a managed service's documentation asks for: the chain and the name checked.
    works(&url("localhost", &format!("sslmode=verify-full&sslrootcert={ca_file}")), &data("full"), "full", &mut token)
        .await;
    // The chain only: the address is not a name on the certificate, and that is fine.
    works(&url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca_file}")), &data("ca"), "ca", &mut token).await;
    // Encrypted, nothing verified; and the default, which takes TLS when offered.
    works(&url("127.0.0.1", "sslmode=require"), &data("require"), "require", &mut token).await;
    works(&url("127.0.0.1", "sslmode=prefer"), &data("prefer"), "prefer", &mut token).await;

    let said = refused(&url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca_file}")), &data("name")).await;
    assert!(said.contains("certificate") && said.contains("not valid for name"), "a name it does not hold: {said}");
    let said = refused(&url("localhost", &format!("sslmode=verify-full&sslrootcert={other_ca}")), &data("wrong")).await;
    assert!(said.contains("not signed by a CA in sslrootcert"), "a CA that did not sign it: {said}");
    let said =
        refused(&url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={other_ca}")), &data("wrong-ca")).await;
    assert!(said.contains("not signed by a CA in sslrootcert"), "verify-ca with a CA that did not sign it: {said}");
    let said = refused(&url("127.0.0.1", "sslmode=disable"), &data("plain")).await;
    assert!(
        said.contains("pg_hba.conf rejects") && said.contains("only over TLS: set sslmode=verify-full"),
        "a plain connection is refused, and told which setting to change: {said}"
    );
    let said =
        refused(&url("127.0.0.1", "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"), &data("missing")).await;
    assert!(said.contains("/nonexistent/ca.pem"), "a root certificate file that is not there is named: {said}");
}
