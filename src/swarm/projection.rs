//! The swarm projection: agents, tasks, auctions and totals, folded from committed
//! events only (DESIGN §1).
//!
//! The fold looks at event types, ids and `data`, never at `source`, so a log written
//! by an external coordinator yields the same swarm as one written by the built-in
//! coordinator. It is pure: no I/O, no clock (times come from the events), so it is
//! rebuilt exactly by replaying the log. The coordinator owns the live instance.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::events::{SwarmEvent, ToolStatus, result_text};
use crate::event::Event;

/// How much of the swarm the projection keeps in memory. Past each cap the oldest
/// leaves the projection (the log keeps it, and the totals still count it), so a
/// producer that floods `task.created` or `agent.joined` costs a bounded amount of
/// memory and every snapshot a bounded amount of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionLimits {
    /// Unfinished tasks (`--max-open-tasks`, `SWARMFEED_MAX_OPEN_TASKS`; default
    /// 10 000); past it the oldest open task leaves, counted in `tasks_dropped`.
    pub open_tasks: usize,
    /// Agents not offline (`--max-online-agents`, `SWARMFEED_MAX_ONLINE_AGENTS`;
    /// default 10 000); past it the one heard from longest ago leaves, counted in
    /// `agents_dropped`.
    pub online_agents: usize,
    /// Bids kept per auction (`--max-bids-per-auction`,
    /// `SWARMFEED_MAX_BIDS_PER_AUCTION`; default 1 000); past it the worst bid (the
    /// highest, the latest on a tie) goes, which never changes who wins.
    pub bids_per_auction: usize,
    /// Finished tasks (`--max-finished-tasks`, `SWARMFEED_MAX_FINISHED_TASKS`; default
    /// 500); the oldest leave first.
    pub finished_tasks: usize,
    /// Offline agents (`--max-offline-agents`, `SWARMFEED_MAX_OFFLINE_AGENTS`; default
    /// 500); the longest gone leave first.
    pub offline_agents: usize,
}

impl Default for ProjectionLimits {
    fn default() -> Self {
        ProjectionLimits {
            open_tasks: 10_000,
            online_agents: 10_000,
            bids_per_auction: 1_000,
            finished_tasks: 500,
            offline_agents: 500,
        }
    }
}

/// The event types the projection reads; everything else passes it by.
pub(crate) const SWARM_TYPES: &[&str] = &["agent.*", "task.*", "bid.*", "auction.*", "tool.*"];

/// Whether events of `event_type` can change the projection (it matches [`SWARM_TYPES`]).
pub(crate) fn is_swarm_type(event_type: &str) -> bool {
    SWARM_TYPES.iter().any(|p| event_type.starts_with(&p[..p.len() - 1]))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Idle,
    Busy,
    Offline,
}

impl AgentStatus {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Idle => "idle",
            AgentStatus::Busy => "busy",
            AgentStatus::Offline => "offline",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub agent_id: String,
    pub name: String,
    pub status: AgentStatus,
    pub capabilities: Vec<String>,
    /// Commit time of the agent's latest event, ms.
    pub last_seen_ms: i64,
    pub joined_ms: i64,
    pub tasks_completed: u64,
    pub tasks_failed: u64,
    pub sats_earned: u64,
    /// Tasks assigned to it and not finished.
    pub current_tasks: BTreeSet<String>,
    /// A status the agent reported itself (`agent.status_changed`), shown while it has
    /// no task. Kept in a stored snapshot ([`Projection::to_stored`]); the API shows
    /// agents as `AgentView`, which leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reported: Option<AgentStatus>,
}

impl Agent {
    fn refresh_status(&mut self) {
        if self.status == AgentStatus::Offline {
            return;
        }
        self.status =
            if self.current_tasks.is_empty() { self.reported.unwrap_or(AgentStatus::Idle) } else { AgentStatus::Busy };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Created,
    Bidding,
    Assigned,
    Started,
    Completed,
    Failed,
    /// An operator cancelled it (`task.cancelled`) before it finished.
    Cancelled,
}

impl TaskStatus {
    /// The status as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Created => "created",
            TaskStatus::Bidding => "bidding",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Started => "started",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Nothing more happens to the task: completed, failed or cancelled.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bid {
    pub agent_id: String,
    pub bid_sats: u64,
    pub seq: u64,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: String,
    pub description: String,
    pub status: TaskStatus,
    /// The failed or cancelled task this one retries (`data.retry_of` of `task.created`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    pub bids: Vec<Bid>,
    pub winner: Option<String>,
    pub winning_bid: Option<u64>,
    pub result: Option<String>,
    pub reason: Option<String>,
    pub created_ms: i64,
    /// Seq of `task.created`: orders tasks as the log does, even within one commit.
    /// Not in the API's JSON, nor in a stored snapshot, which restores it from
    /// `Projection::by_created`.
    #[serde(skip_serializing, default)]
    pub created_seq: u64,
    /// When bidding closes, as announced by `task.bidding` (`data.closes_at`).
    pub closes_ms: Option<i64>,
    pub assigned_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub tool_calls: u64,
    /// `auction.closed` was seen: no more bids count.
    pub auction_closed: bool,
    /// Bids that arrived past `--max-bids-per-auction` and were dropped (the worst
    /// ones; never the winner).
    pub bids_dropped: u64,
}

impl Task {
    /// Bidding is open: announced and not yet closed.
    pub fn is_bidding(&self) -> bool {
        self.status == TaskStatus::Bidding && !self.auction_closed
    }

    /// The winning bid by the auction rule: lowest `bid_sats`, earliest (lowest seq)
    /// on a tie, among bids accepted by `eligible`.
    pub fn best_bid(&self, eligible: impl Fn(&str) -> bool) -> Option<&Bid> {
        self.bids.iter().filter(|b| eligible(&b.agent_id)).min_by_key(|b| (b.bid_sats, b.seq))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub events: u64,
    pub agents_total: u64,
    pub agents_active: u64,
    pub tasks_total: u64,
    pub tasks_completed: u64,
    pub tasks_failed: u64,
    pub open_auctions: u64,
    pub sats_paid: u64,
    /// Unfinished tasks in the projection.
    pub tasks_open: u64,
    /// Open tasks that left the projection past `--max-open-tasks`.
    pub tasks_dropped: u64,
    /// Online agents that left the projection past `--max-online-agents`.
    pub agents_dropped: u64,
}

/// The swarm as the log says it is.
///
/// Serialised whole (less its limits) as a stored snapshot of the swarm's past
/// (`swarm::history`): every field is state the fold reads, so a projection read back
/// folds on exactly as the one written would have.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Projection {
    /// The last seq folded.
    pub seq: u64,
    /// Not stored: a snapshot is only read back under the limits it was folded with
    /// (`swarm::history::limits_key`).
    #[serde(skip)]
    limits: ProjectionLimits,
    agents: BTreeMap<String, Agent>,
    tasks: BTreeMap<String, Task>,
    /// Every task's id by the seq of its `task.created`: tasks newest first, a page at
    /// a time, without sorting them all.
    by_created: BTreeMap<u64, String>,
    /// Unfinished task ids by the seq of their `task.created`, to bound them.
    open: BTreeMap<u64, String>,
    /// Finished task ids, oldest first, to bound `tasks`.
    finished: VecDeque<String>,
    /// Offline agent ids, longest gone first, to bound `agents`.
    offline: VecDeque<String>,
    events: u64,
    tasks_total: u64,
    tasks_completed: u64,
    tasks_failed: u64,
    sats_paid: u64,
    tasks_dropped: u64,
    agents_dropped: u64,
}

impl Projection {
    /// An empty projection that keeps to `limits`.
    pub(crate) fn new(limits: ProjectionLimits) -> Self {
        Projection { limits, ..Projection::default() }
    }

    /// The same limits, nothing folded: what a refold starts from.
    pub(crate) fn emptied(&self) -> Self {
        Projection::new(self.limits.clone())
    }

    /// The projection as a stored snapshot: compact JSON of every field but the limits.
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        // Maps with string or integer keys and plain structs: serialising cannot fail.
        serde_json::to_vec(self).expect("a projection serialises to JSON")
    }

    /// A projection read back from [`Projection::to_stored`], keeping to `limits` (the
    /// ones it was folded with).
    ///
    /// # Errors
    /// The bytes are not a stored projection (a damaged row).
    pub(crate) fn from_stored(bytes: &[u8], limits: ProjectionLimits) -> Result<Self, serde_json::Error> {
        let mut p: Projection = serde_json::from_slice(bytes)?;
        p.limits = limits;
        // `created_seq` is left out of the JSON (the API's too); the index by creation
        // holds it for every task the projection keeps.
        for (seq, id) in &p.by_created {
            if let Some(t) = p.tasks.get_mut(id) {
                t.created_seq = *seq;
            }
        }
        Ok(p)
    }

    /// Tasks newest first (by their `task.created`), starting below `before` (a seq
    /// from [`Task::created_seq`]) when given.
    pub(crate) fn tasks_newest_first(&self, before: Option<u64>) -> impl Iterator<Item = &Task> {
        self.by_created.range(..before.unwrap_or(u64::MAX)).rev().filter_map(|(_, id)| self.tasks.get(id))
    }

    /// Agents by id, starting after `after` when given.
    pub(crate) fn agents_after(&self, after: Option<&str>) -> impl Iterator<Item = &Agent> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        self.agents.range((start, Bound::Unbounded)).map(|(_, a)| a)
    }

    pub(crate) fn agent(&self, agent_id: &str) -> Option<&Agent> {
        self.agents.get(agent_id)
    }

    pub(crate) fn task(&self, task_id: &str) -> Option<&Task> {
        self.tasks.get(task_id)
    }

    #[cfg(test)]
    pub(crate) fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values()
    }

    #[cfg(test)]
    pub(crate) fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    /// Tasks whose bidding is open.
    pub(crate) fn open_auctions(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().filter(|t| t.is_bidding())
    }

    pub(crate) fn totals(&self) -> Totals {
        let active = self.agents.values().filter(|a| a.status != AgentStatus::Offline).count() as u64;
        Totals {
            events: self.events,
            agents_total: self.agents.len() as u64,
            agents_active: active,
            tasks_total: self.tasks_total,
            tasks_completed: self.tasks_completed,
            tasks_failed: self.tasks_failed,
            open_auctions: self.open_auctions().count() as u64,
            sats_paid: self.sats_paid,
            tasks_open: self.open.len() as u64,
            tasks_dropped: self.tasks_dropped,
            agents_dropped: self.agents_dropped,
        }
    }

    /// Folds one committed event. Events at or below `seq` were folded already and are
    /// ignored, so replaying an overlapping range is harmless. Every swarm-typed event
    /// counts and marks its agent as seen; only those that decode to a
    /// [`SwarmEvent`] change more.
    pub(crate) fn apply(&mut self, event: &Event) {
        if event.seq <= self.seq {
            return;
        }
        self.seq = event.seq;
        if !is_swarm_type(&event.event_type) {
            return;
        }
        self.events += 1;
        let at = event.ts_ms;
        if let Some(a) = event.agent_id.as_deref().and_then(|id| self.agents.get_mut(id)) {
            a.last_seen_ms = at;
        }
        if let Some(swarm_event) = SwarmEvent::decode(event) {
            self.fold(swarm_event, event.seq, at);
        }
    }

    /// Folds one decoded event committed at `seq`, time `at`.
    fn fold(&mut self, event: SwarmEvent, seq: u64, at: i64) {
        match event {
            SwarmEvent::AgentJoined { agent_id, name, capabilities } => {
                self.agent_joined(agent_id, name, capabilities, at);
            }
            SwarmEvent::AgentLeft { agent_id, .. } => self.agent_left(&agent_id),
            SwarmEvent::AgentStatusChanged { agent_id, status, .. } => self.agent_status_changed(&agent_id, status),
            SwarmEvent::TaskCreated { task_id, description, retry_of } => {
                self.task_created(task_id, description, retry_of, seq, at);
            }
            SwarmEvent::TaskBidding { task_id, closes_ms, .. } => self.task_bidding(&task_id, closes_ms),
            SwarmEvent::BidSubmitted { task_id, agent_id, bid_sats, .. } => {
                self.bid_submitted(&task_id, agent_id, bid_sats, seq, at);
            }
            SwarmEvent::AuctionClosed { task_id, .. } => self.auction_closed(&task_id, at),
            SwarmEvent::TaskAssigned { task_id, agent_id, bid_sats, .. } => {
                self.task_assigned(&task_id, agent_id, bid_sats, at);
            }
            SwarmEvent::TaskStarted { task_id, .. } => self.task_started(&task_id, at),
            SwarmEvent::Tool { task_id, status, .. } => self.tool(&task_id, status),
            SwarmEvent::TaskCompleted { task_id, result, .. } => {
                self.task_finished(&task_id, Outcome::Completed(result.map(result_text)), at);
            }
            SwarmEvent::TaskFailed { task_id, reason, .. } => self.task_finished(&task_id, Outcome::Failed(reason), at),
            SwarmEvent::TaskCancelled { task_id, reason, .. } => {
                self.task_finished(&task_id, Outcome::Cancelled(reason), at);
            }
        }
    }

    fn agent_joined(&mut self, id: String, name: String, capabilities: Vec<String>, at: i64) {
        self.offline.retain(|o| *o != id);
        let coming_online = self.agents.get(&id).is_none_or(|a| a.status == AgentStatus::Offline);
        if coming_online {
            self.make_room_for_an_online_agent();
        }
        let agent = self.agents.entry(id.clone()).or_insert_with(|| Agent {
            agent_id: id,
            name: String::new(),
            status: AgentStatus::Idle,
            capabilities: Vec::new(),
            last_seen_ms: at,
            joined_ms: at,
            tasks_completed: 0,
            tasks_failed: 0,
            sats_earned: 0,
            current_tasks: BTreeSet::new(),
            reported: None,
        });
        agent.name = name;
        agent.capabilities = capabilities;
        agent.joined_ms = at;
        agent.status = AgentStatus::Idle;
        agent.reported = None;
        agent.refresh_status();
    }

    fn agent_left(&mut self, agent_id: &str) {
        let Some(a) = self.agents.get_mut(agent_id) else { return };
        a.status = AgentStatus::Offline;
        self.offline.push_back(agent_id.to_owned());
        while self.offline.len() > self.limits.offline_agents {
            if let Some(gone) = self.offline.pop_front() {
                self.agents.remove(&gone);
            }
        }
    }

    fn agent_status_changed(&mut self, agent_id: &str, status: Option<AgentStatus>) {
        let Some(a) = self.agents.get_mut(agent_id) else { return };
        a.reported = status.or(a.reported);
        a.refresh_status();
    }

    fn task_created(&mut self, id: String, description: String, retry_of: Option<String>, seq: u64, at: i64) {
        if self.tasks.contains_key(&id) {
            return;
        }
        self.tasks_total += 1;
        self.make_room_for_an_open_task();
        self.by_created.insert(seq, id.clone());
        self.open.insert(seq, id.clone());
        self.tasks.insert(
            id.clone(),
            Task {
                task_id: id,
                description,
                status: TaskStatus::Created,
                retry_of,
                bids: Vec::new(),
                winner: None,
                winning_bid: None,
                result: None,
                reason: None,
                created_ms: at,
                created_seq: seq,
                closes_ms: None,
                assigned_ms: None,
                started_ms: None,
                finished_ms: None,
                tool_calls: 0,
                auction_closed: false,
                bids_dropped: 0,
            },
        );
    }

    fn task_bidding(&mut self, task_id: &str, closes_ms: Option<i64>) {
        let Some(t) = self.open_task(task_id) else { return };
        t.status = TaskStatus::Bidding;
        t.closes_ms = closes_ms;
    }

    fn bid_submitted(&mut self, task_id: &str, agent_id: String, bid_sats: u64, seq: u64, at: i64) {
        let max_bids = self.limits.bids_per_auction;
        let Some(t) = self.open_task(task_id) else { return };
        if t.auction_closed {
            return;
        }
        t.bids.push(Bid { agent_id, bid_sats, seq, at_ms: at });
        if t.bids.len() > max_bids {
            // The worst bid can never win: the auction's outcome is unchanged.
            if let Some(worst) = t.bids.iter().enumerate().max_by_key(|(_, b)| (b.bid_sats, b.seq)).map(|(i, _)| i) {
                t.bids.swap_remove(worst);
                t.bids.sort_by_key(|b| b.seq);
                t.bids_dropped += 1;
            }
        }
    }

    fn auction_closed(&mut self, task_id: &str, at: i64) {
        // Bidding is over; the assignment or failure that follows says how.
        if let Some(t) = self.open_task(task_id) {
            t.auction_closed = true;
            t.closes_ms = t.closes_ms.or(Some(at));
        }
    }

    fn task_assigned(&mut self, task_id: &str, agent_id: String, bid_sats: Option<u64>, at: i64) {
        let Some(t) = self.open_task(task_id) else { return };
        t.status = TaskStatus::Assigned;
        t.winner = Some(agent_id.clone());
        t.winning_bid = bid_sats;
        t.assigned_ms = Some(at);
        let tid = t.task_id.clone();
        if let Some(a) = self.agents.get_mut(&agent_id) {
            a.current_tasks.insert(tid);
            a.refresh_status();
        }
    }

    fn task_started(&mut self, task_id: &str, at: i64) {
        if let Some(t) = self.open_task(task_id) {
            t.status = TaskStatus::Started;
            t.started_ms = Some(at);
        }
    }

    fn tool(&mut self, task_id: &str, status: ToolStatus) {
        // A call counts once, when it is made; its outcome is reported separately.
        if status == ToolStatus::Called
            && let Some(t) = self.open_task(task_id)
        {
            t.tool_calls += 1;
        }
    }

    /// `task.completed`, `task.failed` or `task.cancelled`. A cancelled task leaves its
    /// auction (no longer open, so never settled) and its agent, which counts it neither
    /// done nor failed.
    fn task_finished(&mut self, task_id: &str, outcome: Outcome, at: i64) {
        let Some(t) = self.open_task(task_id) else { return };
        let completed = matches!(outcome, Outcome::Completed(_));
        let cancelled = matches!(outcome, Outcome::Cancelled(_));
        t.finished_ms = Some(at);
        match outcome {
            Outcome::Completed(result) => {
                t.status = TaskStatus::Completed;
                t.result = result;
            }
            Outcome::Failed(reason) => {
                t.status = TaskStatus::Failed;
                t.reason = Some(reason);
            }
            Outcome::Cancelled(reason) => {
                t.status = TaskStatus::Cancelled;
                t.reason = Some(reason);
            }
        }
        let (tid, winner, bid) = (t.task_id.clone(), t.winner.clone(), t.winning_bid.unwrap_or(0));
        let created_seq = t.created_seq;
        self.open.remove(&created_seq);
        if completed {
            self.tasks_completed += 1;
            self.sats_paid += bid;
        } else if !cancelled {
            self.tasks_failed += 1;
        }
        if let Some(a) = winner.as_deref().and_then(|w| self.agents.get_mut(w)) {
            a.current_tasks.remove(&tid);
            if completed {
                a.tasks_completed += 1;
                a.sats_earned += bid;
            } else if !cancelled {
                a.tasks_failed += 1;
            }
            a.refresh_status();
        }
        self.finished.push_back(tid);
        while self.finished.len() > self.limits.finished_tasks {
            if let Some(old) = self.finished.pop_front()
                && let Some(gone) = self.tasks.remove(&old)
            {
                self.by_created.remove(&gone.created_seq);
            }
        }
    }

    /// At the open-task cap, the oldest open task leaves the projection (its winner,
    /// if any, no longer counts it as current).
    fn make_room_for_an_open_task(&mut self) {
        while self.open.len() >= self.limits.open_tasks.max(1) {
            let Some((seq, id)) = self.open.pop_first() else { return };
            self.by_created.remove(&seq);
            self.tasks_dropped += 1;
            let Some(task) = self.tasks.remove(&id) else { continue };
            if let Some(a) = task.winner.as_deref().and_then(|w| self.agents.get_mut(w)) {
                a.current_tasks.remove(&id);
                a.refresh_status();
            }
        }
    }

    /// At the online-agent cap, the online agent heard from longest ago leaves the
    /// projection. A scan, but only of a swarm already at its cap.
    fn make_room_for_an_online_agent(&mut self) {
        let online = self.agents.len() - self.offline.len();
        if online < self.limits.online_agents.max(1) {
            return;
        }
        let quietest = self
            .agents
            .values()
            .filter(|a| a.status != AgentStatus::Offline)
            .min_by_key(|a| (a.last_seen_ms, a.agent_id.clone()))
            .map(|a| a.agent_id.clone());
        if let Some(id) = quietest {
            self.agents.remove(&id);
            self.agents_dropped += 1;
        }
    }

    /// The task `task_id` if it exists and is not finished; events about finished or
    /// unknown tasks change nothing.
    fn open_task(&mut self, task_id: &str) -> Option<&mut Task> {
        self.tasks.get_mut(task_id).filter(|t| !t.status.is_finished())
    }
}

/// How a task finished, with what the event said about it.
enum Outcome {
    Completed(Option<String>),
    Failed(String),
    Cancelled(String),
}

/// The `data` object of a committed event.
pub(crate) fn event_data(event: &Event) -> Map<String, Value> {
    #[derive(serde::Deserialize)]
    struct Payload {
        data: Map<String, Value>,
    }
    // Payloads are made by `Event::encode` from a stored JSON object; a payload that
    // fails to parse would be a bug there, and folds as empty data rather than a crash.
    serde_json::from_slice::<Payload>(&event.payload()).map(|p| p.data).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventParts, format_timestamp};

    pub(crate) struct Log {
        pub events: Vec<Event>,
    }

    impl Log {
        pub(super) fn new() -> Self {
            Log { events: Vec::new() }
        }

        pub(super) fn push(
            &mut self,
            event_type: &str,
            task: Option<&str>,
            agent: Option<&str>,
            data: Value,
        ) -> &mut Self {
            let seq = self.events.len() as u64 + 1;
            self.events.push(
                Event::encode(EventParts {
                    seq,
                    id: &format!("e{seq}"),
                    event_type,
                    source: "test",
                    task_id: task,
                    agent_id: agent,
                    ts_ms: 1_000 * seq as i64,
                    data: &data.to_string(),
                })
                .unwrap(),
            );
            self
        }

        pub(super) fn fold(&self) -> Projection {
            let mut p = Projection::default();
            for e in &self.events {
                p.apply(e);
            }
            p
        }
    }

    fn lifecycle(log: &mut Log) {
        use serde_json::json;
        log.push("agent.joined", None, Some("echo"), json!({"name": "Echo", "capabilities": ["code"]}))
            .push("agent.joined", None, Some("forge"), json!({"name": "Forge"}))
            .push("task.created", Some("t1"), None, json!({"description": "sort logs"}))
            .push("task.bidding", Some("t1"), None, json!({"closes_at": format_timestamp(60_000)}))
            .push("bid.submitted", Some("t1"), Some("echo"), json!({"bid_sats": 30}))
            .push("bid.submitted", Some("t1"), Some("forge"), json!({"bid_sats": 30}))
            .push("auction.closed", Some("t1"), None, json!({"bids": 2}));
    }

    #[test]
    fn a_full_lifecycle_folds_into_agents_tasks_and_totals() {
        use serde_json::json;
        let mut log = Log::new();
        lifecycle(&mut log);
        let p = log.fold();
        let t = p.task("t1").unwrap();
        assert!(t.auction_closed && !t.is_bidding(), "closed, not yet assigned");
        assert_eq!(t.best_bid(|_| true).unwrap().agent_id, "echo", "earliest wins a tie");
        assert_eq!(t.closes_ms, Some(60_000));
        log.push("task.assigned", Some("t1"), Some("echo"), json!({"bid_sats": 30}));
        let p = log.fold();
        assert_eq!(p.agent("echo").unwrap().status, AgentStatus::Busy);
        assert_eq!(p.task("t1").unwrap().status, TaskStatus::Assigned);
        log.push("task.started", Some("t1"), Some("echo"), json!({}))
            .push("tool.called", Some("t1"), Some("echo"), json!({"tool_name": "grep"}))
            .push("task.completed", Some("t1"), Some("echo"), json!({"result": "done"}));
        let p = log.fold();
        let echo = p.agent("echo").unwrap();
        assert_eq!((echo.status, echo.tasks_completed, echo.sats_earned), (AgentStatus::Idle, 1, 30));
        let t = p.task("t1").unwrap();
        assert_eq!((t.status, t.tool_calls, t.result.as_deref()), (TaskStatus::Completed, 1, Some("done")));
        let totals = p.totals();
        assert_eq!((totals.tasks_completed, totals.sats_paid, totals.agents_active), (1, 30, 2));
    }

    #[test]
    fn folding_is_idempotent_and_ignores_other_types() {
        let mut log = Log::new();
        lifecycle(&mut log);
        log.push("bench.tick", None, None, serde_json::json!({}));
        let mut p = log.fold();
        let once = format!("{:?}", p);
        for e in &log.events {
            p.apply(e);
        }
        assert_eq!(format!("{:?}", p), once);
        assert_eq!(p.totals().events, 7);
    }

    #[test]
    fn a_stored_projection_reads_back_equal_and_folds_on_alike() {
        use serde_json::json;
        let mut log = Log::new();
        lifecycle(&mut log);
        log.push("agent.status_changed", None, Some("forge"), json!({"status": "busy"}))
            .push("task.assigned", Some("t1"), Some("echo"), json!({"bid_sats": 30}))
            .push("task.created", Some("t2"), None, json!({"description": "x", "retry_of": "t0"}));
        let limits = ProjectionLimits { finished_tasks: 1, ..ProjectionLimits::default() };
        let split = log.events.len() - 1;
        let first = log.events[..split].to_vec();
        let mut live = Projection::new(limits.clone());
        first.iter().for_each(|e| live.apply(e));
        let mut restored = Projection::from_stored(&live.to_stored(), limits).unwrap();
        assert_eq!(format!("{restored:?}"), format!("{live:?}"), "every field, the limits and created_seq included");
        log.push("task.completed", Some("t1"), Some("echo"), json!({})).push(
            "task.failed",
            Some("t2"),
            None,
            json!({"reason": "r"}),
        );
        for e in &log.events[split..] {
            live.apply(e);
            restored.apply(e);
        }
        assert_eq!(format!("{restored:?}"), format!("{live:?}"));
        assert!(Projection::from_stored(b"{\"seq\":", ProjectionLimits::default()).is_err());
    }

    #[test]
    fn leaving_makes_an_agent_offline_and_rejoining_brings_it_back() {
        use serde_json::json;
        let mut log = Log::new();
        log.push("agent.joined", None, Some("seer"), json!({"name": "Seer"})).push(
            "agent.left",
            None,
            Some("seer"),
            json!({"reason": "timeout"}),
        );
        assert_eq!(log.fold().agent("seer").unwrap().status, AgentStatus::Offline);
        log.push("agent.joined", None, Some("seer"), json!({"name": "Seer"}));
        assert_eq!(log.fold().agent("seer").unwrap().status, AgentStatus::Idle);
    }

    #[test]
    fn finished_tasks_are_bounded() {
        use serde_json::json;
        let mut log = Log::new();
        let max = ProjectionLimits::default().finished_tasks;
        for i in 0..max + 10 {
            let id = format!("t{i}");
            log.push("task.created", Some(&id), None, json!({"description": "x"})).push(
                "task.failed",
                Some(&id),
                None,
                json!({"reason": "no bids received"}),
            );
        }
        let p = log.fold();
        assert_eq!(p.tasks().count(), max);
        assert_eq!(p.totals().tasks_failed, (max + 10) as u64);
        assert_eq!(p.tasks_newest_first(None).count(), max, "the paging index is bounded too");
    }

    fn fold_with(log: &Log, limits: ProjectionLimits) -> Projection {
        let mut p = Projection::new(limits);
        for e in &log.events {
            p.apply(e);
        }
        p
    }

    #[test]
    fn open_tasks_are_bounded_and_the_oldest_leave_first() {
        use serde_json::json;
        let mut log = Log::new();
        for i in 0..25 {
            log.push("task.created", Some(&format!("t{i}")), None, json!({"description": "x"}));
        }
        let p = fold_with(&log, ProjectionLimits { open_tasks: 10, ..ProjectionLimits::default() });
        assert_eq!(p.tasks().count(), 10);
        assert!(p.task("t14").is_none() && p.task("t15").is_some(), "the newest ten stay");
        let totals = p.totals();
        assert_eq!((totals.tasks_total, totals.tasks_open, totals.tasks_dropped), (25, 10, 15));
        let page: Vec<_> = p.tasks_newest_first(None).take(3).map(|t| t.task_id.as_str()).collect();
        assert_eq!(page, ["t24", "t23", "t22"]);
        let next = p.tasks_newest_first(None).nth(2).unwrap().created_seq;
        assert_eq!(p.tasks_newest_first(Some(next)).next().unwrap().task_id, "t21", "a cursor continues the page");
    }

    #[test]
    fn online_agents_are_bounded_and_the_quietest_leaves() {
        use serde_json::json;
        let mut log = Log::new();
        for i in 0..5 {
            log.push("agent.joined", None, Some(&format!("a{i}")), json!({"name": "n"}));
        }
        // a0 speaks again, so a1 is now the quietest.
        log.push("agent.status_changed", None, Some("a0"), json!({"status": "busy"}));
        log.push("agent.joined", None, Some("a5"), json!({"name": "n"}));
        let p = fold_with(&log, ProjectionLimits { online_agents: 5, ..ProjectionLimits::default() });
        let ids: Vec<_> = p.agents().map(|a| a.agent_id.as_str()).collect();
        assert_eq!(ids, ["a0", "a2", "a3", "a4", "a5"]);
        assert_eq!(p.totals().agents_dropped, 1);
        let after: Vec<_> = p.agents_after(Some("a3")).map(|a| a.agent_id.as_str()).collect();
        assert_eq!(after, ["a4", "a5"]);
    }

    #[test]
    fn bids_past_the_cap_drop_the_worst_and_never_change_the_winner() {
        use serde_json::json;
        let mut log = Log::new();
        log.push("task.created", Some("t"), None, json!({"description": "x"}));
        log.push("task.bidding", Some("t"), None, json!({}));
        for (agent, sats) in [("a", 50), ("b", 10), ("c", 90), ("d", 10), ("e", 70), ("f", 5)] {
            log.push("bid.submitted", Some("t"), Some(agent), json!({"bid_sats": sats}));
        }
        let unbounded = log.fold();
        let p = fold_with(&log, ProjectionLimits { bids_per_auction: 3, ..ProjectionLimits::default() });
        let t = p.task("t").unwrap();
        let kept: Vec<_> = t.bids.iter().map(|b| b.agent_id.as_str()).collect();
        assert_eq!(kept, ["b", "d", "f"], "the three best, in the order they came");
        assert_eq!(t.bids_dropped, 3);
        let winner = |p: &Projection| p.task("t").unwrap().best_bid(|_| true).unwrap().agent_id.clone();
        assert_eq!(winner(&p), winner(&unbounded));
    }
}
