//! LISTEN: the dedicated connections that hear other nodes' commits and revocations,
//! reconnecting after a loss. What a notification means is the holder's business: the
//! follower reads the log, the stream keepers re-read revoked tokens.

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, Client};

use super::{PgConnection, PostgresStore, RECONNECT_DELAY};
use crate::store::{CommitFeed, CommitSignal, RevocationSignal, StoreError};

/// The channel every writer NOTIFYs after a commit, with the new head as payload.
pub(super) const NOTIFY_CHANNEL: &str = "swarmfeed_log";
/// The channel [`Store::revoke_token`](crate::store::Store::revoke_token) NOTIFYs, with
/// the revoked token's id as payload, whoever revokes: a node's admin API or
/// `swarmfeed token revoke --database …`.
pub(super) const REVOKE_CHANNEL: &str = "swarmfeed_revoked";

impl PostgresStore {
    /// [`Store::commit_feed`](crate::store::Store::commit_feed): every node's commits.
    pub(super) async fn open_commit_feed(&self) -> Result<CommitFeed, StoreError> {
        // The first connection is made here so that an unreachable server fails the
        // start, not a background task.
        let first = self.config.connect_raw().await?;
        let (committed, signal) = watch::channel(0);
        let on_message = move |payload: Option<&str>| {
            // `None` (listening again after a gap) needs nothing: the follower's
            // catch-up timer reads what was missed.
            if let Some(head) = payload.and_then(|p| p.parse::<u64>().ok()) {
                committed.send_if_modified(|known| {
                    let newer = head > *known;
                    *known = (*known).max(head);
                    newer
                });
            }
        };
        let listener = tokio::spawn(listen(self.config.clone(), first, NOTIFY_CHANNEL, on_message));
        Ok(CommitFeed::Shared(CommitSignal::new(signal, listener)))
    }

    /// [`Store::revocation_feed`](crate::store::Store::revocation_feed): every revoked
    /// token and ended session.
    pub(super) async fn open_revocation_feed(&self) -> Result<Option<RevocationSignal>, StoreError> {
        let first = self.config.connect_raw().await?;
        let (notified, signal) = watch::channel(0u64);
        // Every notification, and every (re)start of listening (notifications sent
        // while not listening are lost), wakes the holder to re-read revoked tokens.
        let on_message = move |_: Option<&str>| notified.send_modify(|n| *n = n.wrapping_add(1));
        let listener = tokio::spawn(listen(self.config.clone(), first, REVOKE_CHANNEL, on_message));
        Ok(Some(RevocationSignal::new(signal, listener)))
    }
}

/// Hands every NOTIFY on `channel` to `on_message` (`Some(payload)`), reconnecting for
/// as long as it runs (until the signal that holds it is dropped). While it is
/// disconnected notifications are lost, so each time LISTEN takes effect it calls
/// `on_message(None)`; the holders' timers read what was missed either way.
async fn listen(
    config: super::tls::Target,
    first: (Client, PgConnection),
    channel: &'static str,
    mut on_message: impl FnMut(Option<&str>) + Send + 'static,
) {
    let mut connection = Some(first);
    loop {
        let error = match connection.take() {
            Some((client, conn)) => listen_on(client, conn, channel, &mut on_message).await,
            None => match config.connect_raw().await {
                Ok((client, conn)) => listen_on(client, conn, channel, &mut on_message).await,
                Err(e) => e.into(),
            },
        };
        tracing::warn!(error = %error, channel, "stopped listening; reconnecting (a timer covers the gap)");
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// LISTENs on one connection until it fails, and returns why.
async fn listen_on(
    client: Client,
    mut connection: PgConnection,
    channel: &'static str,
    on_message: &mut (impl FnMut(Option<&str>) + Send),
) -> StoreError {
    // Notifications arrive as messages of the connection itself, so this task drives
    // the connection's I/O rather than handing it to a task of its own.
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let sql = format!("LISTEN {channel}");
    let listen = client.batch_execute(&sql);
    tokio::pin!(listen);
    let mut listening = false;
    loop {
        tokio::select! {
            done = &mut listen, if !listening => match done {
                Ok(()) => {
                    listening = true;
                    on_message(None);
                }
                Err(e) => return e.into(),
            },
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(n))) => on_message(Some(n.payload())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.into(),
                None => return StoreError::Worker("the LISTEN connection closed".into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::PostgresStore;
    use super::super::test_support::Scratch;
    use crate::store::conformance::new_event;
    use crate::store::{CommitFeed, Store};

    #[tokio::test]
    async fn every_node_hears_of_every_commit() {
        let db = Scratch::new().await;
        let a = PostgresStore::connect(&db.url, 1).await.unwrap();
        let b = PostgresStore::connect(&db.url, 1).await.unwrap();
        let CommitFeed::Shared(mut heard) = b.commit_feed().await.unwrap() else { panic!("postgres is shared") };
        let mut w = a.writer().await.unwrap();
        // LISTEN may still be on its way: commit until the signal reports the head.
        let mut n = 0;
        let head = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                n += 1;
                w.append(vec![new_event(&format!("e{n}"), "a.b")]).await.unwrap();
                if let Ok(head) = tokio::time::timeout(Duration::from_millis(200), heard.changed()).await {
                    return head;
                }
            }
        })
        .await
        .expect("a commit is announced");
        assert!(head >= 1 && head <= n);
        drop((a, b, heard));
        db.drop().await;
    }
}
