//! A PostgreSQL cluster of a test's own: initdb in a temporary directory, served on a
//! free loopback port, so a test can restart it or make it demand TLS without touching
//! the shared server.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running cluster, stopped when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

/// What a TLS-only cluster serves: its certificate and key (PEM files to copy in).
pub struct ServerTls<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

impl Cluster {
    /// Starts one that takes plain connections, or says why it cannot (no initdb on
    /// this machine).
    pub fn start() -> Result<Self, String> {
        let cluster = Self::init()?;
        cluster.pg_ctl(&["start"])?;
        Ok(cluster)
    }

    /// Starts one with `ssl = on` serving `tls`, whose pg_hba.conf takes TCP connections
    /// only over TLS (`hostssl`) and rejects plain ones, as managed services do.
    pub fn start_tls_only(tls: ServerTls<'_>) -> Result<Self, String> {
        let cluster = Self::init()?;
        let data = PathBuf::from(cluster.data_dir());
        let copy = |from: &Path, to: &str| -> Result<(), String> {
            std::fs::copy(from, data.join(to)).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
            cluster.own(&data.join(to))
        };
        copy(tls.cert, "server.crt")?;
        copy(tls.key, "server.key")?;
        // PostgreSQL refuses a key others may read.
        cluster.run_as_owner("chmod", &["0600", &data.join("server.key").display().to_string()])?;
        let conf = "\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n";
        append(&data.join("postgresql.conf"), conf)?;
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n";
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| format!("cannot write pg_hba.conf: {e}"))?;
        cluster.pg_ctl(&["start"])?;
        Ok(cluster)
    }

    /// initdb into a fresh directory, not yet started.
    fn init() -> Result<Self, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no /usr/lib/postgresql: {e}"))?
            .filter_map(|d| d.ok().map(|d| d.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .ok_or("initdb is not installed")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cluster = Cluster { bin, dir, port };
        // initdb refuses to run as root; the cluster then belongs to the postgres user.
        cluster.own(cluster.dir.path())?;
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
        )?;
        Ok(cluster)
    }

    pub fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every session is ended, as in a planned failover.
    pub fn restart(&self) -> Result<(), String> {
        self.pg_ctl(&["restart", "-m", "fast"])
    }

    fn pg_ctl(&self, action: &[&str]) -> Result<(), String> {
        let log = self.dir.path().join("server.log").display().to_string();
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let data = self.data_dir();
        let mut args = vec!["-D", &data, "-l", &log, "-w", "-o", &options];
        args.extend_from_slice(action);
        self.run("pg_ctl", &args)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        self.run_as_owner(&self.bin.join(tool).display().to_string(), args)
    }

    /// Runs `program` as the cluster's owner: the postgres user when this runs as root.
    fn run_as_owner(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = command.args(args).output().map_err(|e| format!("cannot run {program}: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!("{program} failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        }
    }

    /// Gives `path` to the postgres user when this runs as root (it already owns it
    /// otherwise).
    fn own(&self, path: &Path) -> Result<(), String> {
        if !running_as_root() {
            return Ok(());
        }
        match Command::new("chown").arg("postgres").arg(path).status() {
            Ok(s) if s.success() => Ok(()),
            _ => Err(format!("cannot give {} to the postgres user", path.display())),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
    }
}

fn append(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut file =
        std::fs::OpenOptions::new().append(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether this process runs as root (from /proc, so no unsafe call to `geteuid`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}
