//! The swarm as the API and the pages show it: typed views of the projection, one
//! set for both. `GET /api/swarm` serialises a [`SwarmSnapshot`]; the live and agent
//! pages render the same structs, so a field renamed here is renamed everywhere, and a
//! field removed fails to compile where it was shown.
//!
//! Tasks, bids and totals are shown as the projection holds them ([`Task`], [`Bid`],
//! [`Totals`]); agents and auctions gain the times in RFC 3339 that clients read.

use std::collections::BTreeSet;

use serde::Serialize;

use super::projection::{Agent, AgentStatus, Bid, Projection, Task, Totals};
use crate::event::format_timestamp;

/// The most tasks or agents one snapshot page holds.
pub(crate) const MAX_PAGE: usize = 1_000;
/// Open auctions one snapshot lists; `auctions_more` counts the rest.
pub(crate) const MAX_AUCTIONS: usize = 100;

/// Which part of the swarm a snapshot shows: the totals, the open auctions, and a page
/// each of tasks (newest first) and agents (by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmPage {
    /// Tasks to show, at most [`MAX_PAGE`].
    pub tasks_limit: usize,
    /// Only tasks created before this seq (the previous page's `tasks_next`).
    pub tasks_before: Option<u64>,
    /// Agents to show, at most [`MAX_PAGE`].
    pub agents_limit: usize,
    /// Only agents whose id sorts after this one (the previous page's `agents_next`).
    pub agents_after: Option<String>,
}

impl Default for SwarmPage {
    fn default() -> Self {
        SwarmPage { tasks_limit: 100, tasks_before: None, agents_limit: 200, agents_after: None }
    }
}

/// One page of the swarm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwarmSnapshot {
    /// The last seq folded.
    pub seq: u64,
    pub agents: Vec<AgentView>,
    /// The last agent id of this page when more follow: the next page's `agents_after`.
    pub agents_next: Option<String>,
    pub tasks: Vec<Task>,
    /// The seq of this page's oldest task when more follow: the next page's `tasks_before`.
    pub tasks_next: Option<u64>,
    /// Open auctions, at most [`MAX_AUCTIONS`].
    pub auctions: Vec<AuctionView>,
    /// Open auctions past `auctions`.
    pub auctions_more: usize,
    pub totals: Totals,
}

/// An agent, with its times in RFC 3339 beside the milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentView {
    pub agent_id: String,
    pub name: String,
    pub status: AgentStatus,
    pub capabilities: Vec<String>,
    pub last_seen_ms: i64,
    pub last_seen: String,
    pub joined_ms: i64,
    pub joined_at: String,
    pub tasks_completed: u64,
    pub tasks_failed: u64,
    pub sats_earned: u64,
    /// Tasks assigned to it and not finished.
    pub current_tasks: BTreeSet<String>,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        AgentView {
            agent_id: a.agent_id.clone(),
            name: a.name.clone(),
            status: a.status,
            capabilities: a.capabilities.clone(),
            last_seen_ms: a.last_seen_ms,
            last_seen: format_timestamp(a.last_seen_ms),
            joined_ms: a.joined_ms,
            joined_at: format_timestamp(a.joined_ms),
            tasks_completed: a.tasks_completed,
            tasks_failed: a.tasks_failed,
            sats_earned: a.sats_earned,
            current_tasks: a.current_tasks.clone(),
        }
    }
}

/// A task taking bids.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuctionView {
    pub task_id: String,
    pub description: String,
    /// In the order they came.
    pub bids: Vec<Bid>,
    /// The lowest bid so far.
    pub lowest_bid: Option<u64>,
    /// When bidding closes, RFC 3339.
    pub closes_at: Option<String>,
    /// Seconds until bidding closes, at the time of the snapshot.
    pub seconds_left: Option<f64>,
}

impl AuctionView {
    fn new(t: &Task, now_ms: i64) -> Self {
        AuctionView {
            task_id: t.task_id.clone(),
            description: t.description.clone(),
            bids: t.bids.clone(),
            lowest_bid: t.best_bid(|_| true).map(|b| b.bid_sats),
            closes_at: t.closes_ms.map(format_timestamp),
            seconds_left: t.closes_ms.map(|c| (c - now_ms).max(0) as f64 / 1000.0),
        }
    }
}

/// A page of the projection at `now_ms`. Its work is bounded by the page, not by the
/// swarm: tasks come from an index by creation, agents from a map by id.
pub(crate) fn snapshot(p: &Projection, page: &SwarmPage, now_ms: i64) -> SwarmSnapshot {
    let agents_limit = page.agents_limit.min(MAX_PAGE);
    let mut agents: Vec<AgentView> =
        p.agents_after(page.agents_after.as_deref()).take(agents_limit + 1).map(AgentView::from).collect();
    let agents_next = (agents.len() > agents_limit).then(|| {
        agents.truncate(agents_limit);
        agents.last().map(|a| a.agent_id.clone()).unwrap_or_default()
    });
    let tasks_limit = page.tasks_limit.min(MAX_PAGE);
    let mut tasks: Vec<Task> = p.tasks_newest_first(page.tasks_before).take(tasks_limit + 1).cloned().collect();
    let tasks_next = (tasks.len() > tasks_limit).then(|| {
        tasks.truncate(tasks_limit);
        tasks.last().map_or(0, |t| t.created_seq)
    });
    let open_auctions = p.open_auctions().count();
    SwarmSnapshot {
        seq: p.seq,
        agents,
        agents_next,
        tasks,
        tasks_next,
        auctions: p.open_auctions().take(MAX_AUCTIONS).map(|t| AuctionView::new(t, now_ms)).collect(),
        auctions_more: open_auctions.saturating_sub(MAX_AUCTIONS),
        totals: p.totals(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::events::SwarmEvent;

    fn keys(value: &serde_json::Value) -> Vec<&str> {
        value.as_object().unwrap().keys().map(String::as_str).collect()
    }

    /// Clients read these names; a rename here is a change to the API.
    #[test]
    fn a_snapshot_keeps_the_field_names_clients_read() {
        let mut p = Projection::default();
        let events = [
            SwarmEvent::AgentJoined { agent_id: "a".into(), name: "A".into(), capabilities: vec![] },
            SwarmEvent::AgentJoined { agent_id: "b".into(), name: "B".into(), capabilities: vec![] },
            SwarmEvent::TaskCreated { task_id: "t".into(), description: "d".into(), retry_of: None },
            SwarmEvent::TaskBidding { task_id: "t".into(), closes_ms: Some(9_000), window_secs: Some(5.0) },
            SwarmEvent::BidSubmitted { task_id: "t".into(), agent_id: "a".into(), bid_sats: 3, agent_name: "A".into() },
        ];
        for (i, e) in events.iter().enumerate() {
            p.apply(&e.committed(i as u64 + 1, 4_000));
        }
        let page = SwarmPage { agents_limit: 1, ..SwarmPage::default() };
        let s = serde_json::to_value(snapshot(&p, &page, 6_500)).unwrap();
        assert_eq!(
            keys(&s),
            ["agents", "agents_next", "auctions", "auctions_more", "seq", "tasks", "tasks_next", "totals"]
        );
        assert_eq!(s["agents_next"], "a", "one agent a page: the next page starts after a");
        assert_eq!(
            keys(&s["agents"][0]),
            [
                "agent_id",
                "capabilities",
                "current_tasks",
                "joined_at",
                "joined_ms",
                "last_seen",
                "last_seen_ms",
                "name",
                "sats_earned",
                "status",
                "tasks_completed",
                "tasks_failed"
            ]
        );
        let auction = &s["auctions"][0];
        assert_eq!(keys(auction), ["bids", "closes_at", "description", "lowest_bid", "seconds_left", "task_id"]);
        assert_eq!((auction["lowest_bid"].as_u64(), auction["seconds_left"].as_f64()), (Some(3), Some(2.5)));
        assert_eq!(keys(&auction["bids"][0]), ["agent_id", "at_ms", "bid_sats", "seq"]);
        assert_eq!(s["tasks"][0]["status"], "bidding");
    }
}
