//! Readings from `/proc`: resident memory, CPU time and the open-file limit of a process
//! (the server's, by `--pid`, or the harness's own).
//!
//! Linux only, like the figures it serves. Nothing here changes a process.

use std::io;

use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`). Linux fixes it at 100
/// on every architecture the harness runs on.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// A process to read.
#[derive(Debug, Clone)]
pub struct Proc {
    dir: String,
}

/// One reading of a process's resources.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    /// Resident set size, bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set size, bytes (`VmHWM`).
    pub peak_rss_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_secs: f64,
}

impl Proc {
    pub fn me() -> Self {
        Proc { dir: "/proc/self".into() }
    }

    pub fn pid(pid: u32) -> Self {
        Proc { dir: format!("/proc/{pid}") }
    }

    /// # Errors
    /// The process is gone or `/proc` is unreadable.
    pub fn usage(&self) -> io::Result<Usage> {
        let status = std::fs::read_to_string(format!("{}/status", self.dir))?;
        Ok(Usage {
            rss_bytes: status_kib(&status, "VmRSS:")? * 1024,
            peak_rss_bytes: status_kib(&status, "VmHWM:")? * 1024,
            cpu_secs: self.cpu_secs()?,
        })
    }

    /// User plus system CPU time, seconds: fields 14 and 15 of `/proc/PID/stat`.
    fn cpu_secs(&self) -> io::Result<f64> {
        let stat = std::fs::read_to_string(format!("{}/stat", self.dir))?;
        // The command name (field 2) may hold spaces and parentheses; fields after
        // the last ')' are plain numbers, starting with field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).ok_or_else(|| bad("no ')' in stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<u64>().ok()).ok_or_else(|| bad("short stat"));
        Ok((tick(14)? + tick(15)?) as f64 / CLOCK_TICKS_PER_SEC)
    }

    /// The soft limit on open files, `None` when unlimited.
    ///
    /// # Errors
    /// `/proc/PID/limits` is unreadable or has no such line.
    pub fn open_files_limit(&self) -> io::Result<Option<u64>> {
        let limits = std::fs::read_to_string(format!("{}/limits", self.dir))?;
        let line = limits.lines().find(|l| l.starts_with("Max open files")).ok_or_else(|| bad("no open-file limit"))?;
        let soft = line["Max open files".len()..].split_whitespace().next().ok_or_else(|| bad("empty limit"))?;
        Ok(soft.parse().ok())
    }
}

/// Kernel memory held by TCP sockets on the whole machine, bytes (`/proc/net/sockstat`,
/// `TCP: … mem N`, in pages of 4 KiB).
///
/// # Errors
/// The file is unreadable or has no such field.
pub fn tcp_mem_bytes() -> io::Result<u64> {
    /// Page size of every machine the harness runs on (x86-64, aarch64 with 4 KiB pages).
    const PAGE_BYTES: u64 = 4096;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat")?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:")).ok_or_else(|| bad("no TCP line"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let pages = fields
        .windows(2)
        .find(|w| w[0] == "mem")
        .and_then(|w| w[1].parse::<u64>().ok())
        .ok_or_else(|| bad("no TCP mem"))?;
    Ok(pages * PAGE_BYTES)
}

fn status_kib(status: &str, key: &str) -> io::Result<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad(key))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected /proc format: {what}"))
}

/// Refuses to start a run that would hit `proc`'s open-file limit half-way, with the
/// fix in the message. `needed` counts sockets the run opens in that process.
///
/// # Errors
/// The limit is lower than `needed` plus a margin for everything else the process has
/// open.
pub fn check_open_files(proc: &Proc, who: &str, needed: u64) -> anyhow::Result<()> {
    /// Files a process holds besides the run's sockets (listener, database, WAL, logs).
    const MARGIN: u64 = 64;
    match proc.open_files_limit() {
        Ok(Some(limit)) if limit < needed + MARGIN => anyhow::bail!(
            "{who} may open only {limit} files and this run needs about {}; raise the limit with \
             `ulimit -n 65536` (at most `ulimit -Hn`) in the shell that starts it",
            needed + MARGIN
        ),
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!("warning: cannot read the open-file limit of {who}: {e}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_can_read_itself() {
        let u = Proc::me().usage().unwrap();
        assert!(u.rss_bytes > 0 && u.peak_rss_bytes >= u.rss_bytes);
        assert!(u.cpu_secs >= 0.0);
        assert!(Proc::me().open_files_limit().is_ok());
    }
}
