//! The swarm as it stood at any moment (`GET /api/swarm?at=…`, `/swarm/live?at=…`).
//!
//! The projection is a pure fold of the log, so the swarm after event S is the fold of
//! events 1..=S. Folding ten million events takes most of a minute, so a task follows
//! the log behind the writer with a projection of its own ([`spawn`]) and stores it
//! every [`SNAPSHOT_EVERY`] seqs, at exact multiples of it; [`fold_at`] then starts
//! from the newest snapshot at or before S and folds at most that many events more.
//!
//! It owns the snapshots and nothing else: it never writes to the log, and ingest
//! never waits for it (the follower reads committed events back from the store, a
//! short pause after the head moved). Snapshots are folded under the same
//! [`ProjectionLimits`] as the coordinator's live projection, and a fold starts only
//! from one folded under the same limits ([`limits_key`]), so the past and the live
//! fold agree; after a change of limits the follower folds the log afresh.
//!
//! Retention: a moment before the oldest event kept cannot be folded (its events are
//! gone) and is refused ([`PastError::Pruned`]); snapshots older than the oldest event
//! kept are deleted with it (`retention::prune`), and at most [`MAX_SNAPSHOTS`] are
//! kept in all, the oldest going first.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::projection::{Projection, ProjectionLimits};
use crate::hub::Hub;
use crate::store::{Query, Store, StoreError};

/// Seqs between two stored snapshots: the most events a past fold reads and folds
/// after its snapshot. Chosen from the projection rebuild figure (docs/BENCHMARKS.md,
/// "Swarm projection rebuild": 100 000 events folded from the store in about 0.5 s),
/// which puts the longest fold, 9 999 events, near 50 ms. Measured on a log of
/// 10 000 000 events: about 25 ms for it, request included (docs/BENCHMARKS.md, "The swarm
/// at any moment on a log of 10 million events").
pub(crate) const SNAPSHOT_EVERY: u64 = 10_000;
/// Snapshots kept (of the limits in use); past it the oldest go. 2 000 cover the last
/// 20 000 000 events; a moment before the oldest snapshot folds from the oldest event
/// and may be refused as too far ([`MAX_FOLD`]).
pub(crate) const MAX_SNAPSHOTS: usize = 2_000;
/// The most events one past fold reads before it answers [`PastError::CatchingUp`]:
/// more only happens while the follower has not yet passed the moment (a first start
/// on an existing log, or new limits), and it bounds the work of one request.
pub(crate) const MAX_FOLD: u64 = 4 * SNAPSHOT_EVERY;
/// Events read from the store at a time.
const FOLD_PAGE: usize = 5_000;
/// How long the follower lets commits gather after the head moved, so that a busy
/// writer's commits are read back a page at a time, not one by one.
const FOLLOW_PAUSE: Duration = Duration::from_millis(200);
/// How long the follower waits before trying again after the store failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The limits a snapshot was folded under, as stored beside it: open tasks, online
/// agents, bids per auction, finished tasks, offline agents.
pub(crate) fn limits_key(l: &ProjectionLimits) -> String {
    format!("{}/{}/{}/{}/{}", l.open_tasks, l.online_agents, l.bids_per_auction, l.finished_tasks, l.offline_agents)
}

/// A moment asked for: a seq, or a time (the last event committed at or before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Seq(u64),
    /// Milliseconds since the epoch.
    Time(i64),
}

impl At {
    /// `at` as a seq (digits) or an RFC 3339 time; `None` when it is neither.
    pub(crate) fn parse(at: &str) -> Option<At> {
        let at = at.trim();
        if !at.is_empty() && at.bytes().all(|b| b.is_ascii_digit()) {
            return at.parse().ok().map(At::Seq);
        }
        crate::event::parse_timestamp(at).map(At::Time)
    }
}

/// A moment resolved against the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moment {
    /// The last event folded: the seq asked for (the head when beyond it), or the last
    /// event committed at or before the time asked for; 0 before any.
    pub seq: u64,
    /// When event `seq` was committed; `None` for seq 0.
    pub ts_ms: Option<i64>,
    /// The log's head and oldest retained seq when the moment was resolved.
    pub head: u64,
    pub oldest: u64,
}

/// Why the swarm at a moment cannot be shown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PastError {
    #[error("at is before the oldest event kept (seq {oldest}): retention pruned what came before")]
    Pruned { oldest: u64 },
    /// The follower has not yet stored a snapshot near the moment.
    #[error("the swarm's history is still being folded up to seq {seq}; try again shortly")]
    CatchingUp { seq: u64 },
    /// Only a damaged store yields it.
    #[error("the stored swarm snapshot at seq {seq} cannot be read: {source}")]
    Damaged {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Resolves `at` against the log as it is now.
///
/// # Errors
/// [`PastError::Pruned`] for a moment before the oldest event kept; the store failed.
pub(crate) async fn resolve(store: &dyn Store, at: At) -> Result<Moment, PastError> {
    let bounds = store.bounds().await?;
    let seq = match at {
        At::Seq(seq) => seq.min(bounds.head),
        // Commit times do not go down as seqs go up (each writer keeps them so): the
        // last event at or before `t` has every earlier one before it. None at all is
        // the empty swarm, or a moment retention pruned.
        At::Time(t) => store.last_seq_at_or_before(t).await?.unwrap_or(bounds.oldest.saturating_sub(1)),
    };
    // Seq 0 of a log never pruned is the empty swarm; past pruning, whatever came
    // before the oldest event kept cannot be folded.
    if bounds.oldest > 1 && seq < bounds.oldest {
        return Err(PastError::Pruned { oldest: bounds.oldest });
    }
    let ts_ms = if seq == 0 { None } else { store.get_by_seq(seq).await?.map(|e| e.ts_ms) };
    Ok(Moment { seq, ts_ms, head: bounds.head, oldest: bounds.oldest })
}

/// The swarm as it was after event `moment.seq`: the newest snapshot at or before it,
/// and the events after the snapshot up to it, folded under `limits`.
///
/// # Errors
/// [`PastError::CatchingUp`] when that would fold more than [`MAX_FOLD`] events; the
/// store failed, or a stored snapshot is damaged.
pub(crate) async fn fold_at(
    store: &dyn Store,
    limits: &ProjectionLimits,
    moment: &Moment,
) -> Result<Projection, PastError> {
    let key = limits_key(limits);
    let mut p = match store.swarm_snapshot_at_or_before(&key, moment.seq).await? {
        // A snapshot older than the oldest event kept has lost the events after it.
        Some((seq, body)) if seq + 1 >= moment.oldest => stored(&body, limits, seq)?,
        _ => Projection::new(limits.clone()),
    };
    let from = p.seq.max(moment.oldest.saturating_sub(1));
    if moment.seq.saturating_sub(from) > MAX_FOLD {
        return Err(PastError::CatchingUp { seq: moment.seq });
    }
    fold_up_to(store, &mut p, moment.seq).await?;
    Ok(p)
}

/// A stored snapshot read back as folded up to `seq`.
fn stored(body: &[u8], limits: &ProjectionLimits, seq: u64) -> Result<Projection, PastError> {
    let mut p = Projection::from_stored(body, limits.clone()).map_err(|source| PastError::Damaged { seq, source })?;
    // Every event up to `seq` was folded, whether or not the last was a swarm event.
    p.seq = seq;
    Ok(p)
}

/// Folds `p` on from where it is up to `upto`, reading the events by seq (the primary
/// key; the fold passes over other types itself). Returns false when events it had not
/// folded were pruned under it (the log has a gap after `p.seq`).
async fn fold_up_to(store: &dyn Store, p: &mut Projection, upto: u64) -> Result<bool, StoreError> {
    while p.seq < upto {
        let q = Query { after: Some(p.seq), before: Some(upto + 1), limit: FOLD_PAGE, ..Query::default() };
        let events = store.query(q).await?;
        if events.first().is_some_and(|e| e.seq > p.seq + 1) && p.seq > 0 {
            return Ok(false);
        }
        for e in &events {
            p.apply(e);
        }
        if events.len() < FOLD_PAGE {
            p.seq = upto;
        }
    }
    Ok(true)
}

/// Folds `p` on up to `head`, storing it at every multiple of [`SNAPSHOT_EVERY`] it
/// passes. When events were pruned before it folded them, it starts over from the
/// oldest event kept, as the coordinator does.
///
/// # Errors
/// The store failed; `p` is as far as it got.
pub(crate) async fn catch_up(store: &dyn Store, key: &str, p: &mut Projection, head: u64) -> Result<(), StoreError> {
    while p.seq < head {
        let mark = (p.seq / SNAPSHOT_EVERY + 1) * SNAPSHOT_EVERY;
        if !fold_up_to(store, p, mark.min(head)).await? {
            tracing::warn!(seq = p.seq, "retention pruned events the swarm history had not folded; refolding");
            *p = p.emptied();
            continue;
        }
        if p.seq == mark {
            store.save_swarm_snapshot(key, mark, p.to_stored(), MAX_SNAPSHOTS).await?;
        }
    }
    Ok(())
}

/// Starts the follower that stores snapshots of the projection folded under `limits`.
pub(crate) fn spawn(
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    limits: ProjectionLimits,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = follow(&hub, store.as_ref(), &limits) => outcome,
            };
            let Err(e) = outcome;
            tracing::error!(error = %e, "the swarm history could not follow the log; will retry");
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(RETRY_AFTER) => {}
            }
        }
    })
}

/// Follows the log from the newest usable snapshot until the store fails.
async fn follow(
    hub: &Hub,
    store: &dyn Store,
    limits: &ProjectionLimits,
) -> Result<std::convert::Infallible, StoreError> {
    let key = limits_key(limits);
    let oldest = store.bounds().await?.oldest;
    let mut p = match store.swarm_snapshot_at_or_before(&key, u64::MAX).await? {
        Some((seq, body)) if seq + 1 >= oldest => stored(&body, limits, seq).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the newest swarm snapshot is damaged; folding the log afresh");
            Projection::new(limits.clone())
        }),
        _ => Projection::new(limits.clone()),
    };
    let mut head = hub.watch();
    loop {
        let now = *head.borrow_and_update();
        catch_up(store, &key, &mut p, now).await?;
        if head.changed().await.is_err() {
            // The hub is gone: the server is stopping, and the select above ends this.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(FOLLOW_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_a_seq_or_an_rfc3339_time() {
        assert_eq!(At::parse("42"), Some(At::Seq(42)));
        assert_eq!(At::parse("0"), Some(At::Seq(0)));
        assert_eq!(At::parse("2026-12-05T14:00:00Z"), Some(At::Time(1_796_479_200_000)));
        for bad in ["", "-1", "4.2", "yesterday", "99999999999999999999999", "2026-13-01T00:00:00Z"] {
            assert_eq!(At::parse(bad), None, "{bad:?}");
        }
    }
}
