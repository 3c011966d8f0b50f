//! The open-file limit, raised by the harness itself: every connection of a run is a
//! file in the harness and one in the server, and the servers the side-by-side modes
//! start inherit the harness's limit.
//!
//! The soft limit is raised up to the hard one, which any process may do; past the
//! hard limit only a privileged process (`CAP_SYS_RESOURCE`) can go, up to the
//! kernel's `fs.nr_open`.

use std::io;

/// Files a process holds besides a run's sockets (listeners, database, logs): the
/// margin of [`crate::procfs::check_open_files`] and then some.
const MARGIN: u64 = 256;

/// Raises this process's open-file limit to at least `sockets` plus a margin, and
/// returns the soft limit now in force.
///
/// # Errors
/// The limit cannot be read, or cannot go that high (past the hard limit without the
/// privilege to raise it).
pub fn raise(sockets: u64) -> anyhow::Result<u64> {
    let wanted = sockets + MARGIN;
    let (soft, hard) = get()?;
    if soft >= wanted {
        return Ok(soft);
    }
    let new_hard = hard.max(wanted);
    set(wanted, new_hard).map_err(|e| {
        anyhow::anyhow!(
            "raising the open-file limit from {soft} (hard {hard}) to {wanted}: {e}; start the run as a user \
             allowed to (root, or with CAP_SYS_RESOURCE), or ask for fewer connections"
        )
    })?;
    Ok(wanted)
}

fn get() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `getrlimit` writes one `rlimit` through a pointer to a live, owned value.
    let failed = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0;
    if failed {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

fn set(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: `setrlimit` reads one `rlimit` through a pointer to a live value.
    let failed = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0;
    if failed {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_already_high_enough_is_left_alone() {
        let (soft, hard) = get().unwrap();
        assert_eq!(raise(0).unwrap(), soft.max(MARGIN));
        assert_eq!(get().unwrap().1, hard.max(MARGIN), "the hard limit is not raised when it need not be");
    }
}
