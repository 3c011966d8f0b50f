//! The coordinator leader: whichever node holds one advisory lock, on a connection of
//! its own. The others wait for it on theirs, and PostgreSQL hands it on when the
//! holder's session ends.

use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::Client;

use super::{PostgresStore, RECONNECT_DELAY, connect};
use crate::store::{Leadership, StoreError};

/// The advisory lock whose holder is the coordinator leader. Advisory locks are per
/// database, so nodes of different logs on one server do not contend.
const LEADER_LOCK_KEY: i64 = 0x5357_4152_4d5f_4c44; // "SWARM_LD"
/// How often the leader checks that its lock's connection is still alive. A node that
/// lost it stops acting as leader within two of these: the next check, and its answer
/// deadline.
const LEASE_CHECK: Duration = Duration::from_secs(1);
/// How long PostgreSQL keeps the lock's session once it hears nothing on it
/// (`idle_session_timeout`). Without it a leader cut off by a silent partition keeps
/// the lock until TCP keepalive gives up on its socket, two hours by default, and no
/// node leads meanwhile. The leader's checks keep a healthy session busy every
/// [`LEASE_CHECK`]; cut off, it steps down within `2 × LEASE_CHECK` of its last answer,
/// and PostgreSQL frees the lock no sooner than this after the last check it served,
/// so the old leader has stopped before the new one starts.
const LOCK_SESSION_IDLE: Duration = Duration::from_secs(5);
const _: () = assert!(LOCK_SESSION_IDLE.as_secs() >= 2 * LEASE_CHECK.as_secs() + 2);

impl PostgresStore {
    /// [`Store::leadership`](crate::store::Store::leadership): this node's place in the
    /// election, kept for as long as the returned value lives.
    pub(super) async fn open_leadership(&self) -> Result<Leadership, StoreError> {
        let (client, running) = connect_for_lock(&self.config).await?;
        // Tried once here, so a node that is alone leads from its first command on.
        let held_now: bool =
            client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK_KEY]).await?.try_get(0)?;
        if held_now {
            tracing::info!("this node holds the coordinator lock");
        }
        let (held, watch) = watch::channel(held_now);
        let keeper = tokio::spawn(keep_leadership(self.config.clone(), (client, running), held));
        Ok(Leadership::kept_by(watch, keeper))
    }
}

/// Holds, or waits for, the coordinator lock for as long as it runs (until its
/// [`Leadership`] is dropped, which closes the session and so frees the lock).
async fn keep_leadership(
    config: super::tls::Target,
    first: (Client, tokio::task::JoinHandle<()>),
    held: watch::Sender<bool>,
) {
    let mut connection = Some(first);
    loop {
        let error = lead(&config, connection.take(), &held).await;
        if held.send_replace(false) {
            tracing::warn!(error = %error, "lost the coordinator lock; this node stops leading");
        } else {
            tracing::warn!(error = %error, "could not wait for the coordinator lock; retrying");
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// Opens the lock's connection, asking PostgreSQL to end its session (and so free
/// the lock) after [`LOCK_SESSION_IDLE`] without a word from this node.
async fn connect_for_lock(config: &super::tls::Target) -> Result<(Client, tokio::task::JoinHandle<()>), StoreError> {
    let (client, running) = connect(config).await?;
    let set = format!("SET idle_session_timeout = {}", LOCK_SESSION_IDLE.as_millis());
    match client.batch_execute(&set).await {
        Ok(()) => {}
        // PostgreSQL before 14 has no such setting: leadership still passes on when a
        // leader exits or its connection breaks, but not promptly across a partition.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_OBJECT) => {
            tracing::warn!(
                "this PostgreSQL has no idle_session_timeout (before 14): a leader cut off by a \
                 silent partition keeps the coordinator lock until TCP keepalive ends its session"
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok((client, running))
}

/// Takes the lock on one connection (blocking until the holder's session ends, if
/// another node has it) and keeps it until that connection fails; returns why.
async fn lead(
    config: &super::tls::Target,
    connection: Option<(Client, tokio::task::JoinHandle<()>)>,
    held: &watch::Sender<bool>,
) -> StoreError {
    let (client, mut running) = match connection {
        Some(c) => c,
        None => match connect_for_lock(config).await {
            Ok(c) => c,
            Err(e) => return e,
        },
    };
    if !*held.borrow() {
        // The holder's lock is released by PostgreSQL when its session ends: when its
        // node exits or dies (the kernel closes its socket) or its connection breaks.
        let lock = format!("SELECT pg_advisory_lock({LEADER_LOCK_KEY})");
        tokio::select! {
            locked = client.batch_execute(&lock) => {
                if let Err(e) = locked {
                    return e.into();
                }
            }
            _ = &mut running => return StoreError::Worker("the lock connection closed".into()),
        }
        tracing::info!("this node took the coordinator lock");
        held.send_replace(true);
    }
    let mut check = tokio::time::interval(LEASE_CHECK);
    loop {
        tokio::select! {
            _ = &mut running => return StoreError::Worker("the lock connection closed".into()),
            _ = check.tick() => match tokio::time::timeout(LEASE_CHECK, client.simple_query("SELECT 1")).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return e.into(),
                Err(_) => return StoreError::Worker("the lock connection stopped answering".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::PostgresStore;
    use super::super::test_support::Scratch;
    use crate::store::Store;

    #[tokio::test]
    async fn one_node_leads_at_a_time_and_the_lock_passes_on_when_it_goes() {
        let db = Scratch::new().await;
        let a = PostgresStore::connect(&db.url, 1).await.unwrap();
        let b = PostgresStore::connect(&db.url, 1).await.unwrap();
        let first = a.leadership().await.unwrap();
        let mut second = b.leadership().await.unwrap();
        assert!(first.is_held(), "the first node alone takes the lock at once");
        assert!(!second.is_held());
        drop(first);
        let held = tokio::time::timeout(Duration::from_secs(10), second.changed()).await.expect("taken over");
        assert!(held && second.is_held());
        drop((a, b, second));
        db.drop().await;
    }
}
