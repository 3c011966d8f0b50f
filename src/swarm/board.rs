//! The boards' fold: committed swarm events → the task and agent rows of
//! [`crate::store::board`] they change.
//!
//! Pure, like [`super::projection`]: no I/O and no clock. It starts from the rows the
//! events mention as the store has them ([`Board::new`]), folds events into them, and
//! hands back the rows it changed ([`Board::changes`]). It keeps every task and agent
//! it is given, finished or not, which is what lets the board reach past the
//! projection's in-memory bounds; the follower saves the rows and the seq they reach
//! in one transaction.
//!
//! Its rules are the projection's: a bid counts while the auction is open, a finished
//! task changes no more, a completed task pays its winner its bid, a failed one counts
//! against it and a cancelled one neither; an agent is offline once it left, busy while
//! it has a task, else what it last reported (idle by default). One difference: a task
//! not yet announced as bidding (`task.created` alone) is on the board as `bidding`,
//! the status of a task waiting for an agent.

use std::collections::{BTreeMap, BTreeSet};

use super::events::SwarmEvent;
use super::projection::{AgentStatus, is_swarm_type};
use crate::event::Event;
use crate::store::board::{BoardAgent, BoardAgentStatus, BoardChanges, BoardStatus, BoardTask};

/// The task and agent ids whose rows folding `events` reads: every task and agent they
/// name. The winners of those tasks are named by their own `task.assigned` or come
/// with [`winners`].
pub(crate) fn ids_named(events: &[std::sync::Arc<Event>]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut tasks = BTreeSet::new();
    let mut agents = BTreeSet::new();
    for e in events.iter().filter(|e| is_swarm_type(&e.event_type)) {
        if let Some(t) = e.task_id.as_deref() {
            tasks.insert(t.to_owned());
        }
        if let Some(a) = e.agent_id.as_deref() {
            agents.insert(a.to_owned());
        }
    }
    (tasks, agents)
}

/// The agents `tasks` were assigned to: a task that finishes credits its winner, who
/// need not be named by the finishing event.
pub(crate) fn winners(tasks: &[BoardTask]) -> BTreeSet<String> {
    tasks.iter().filter_map(|t| t.agent_id.clone()).collect()
}

/// Rows being folded, and which of them changed.
#[derive(Debug, Default)]
pub(crate) struct Board {
    tasks: BTreeMap<String, BoardTask>,
    agents: BTreeMap<String, BoardAgent>,
    changed_tasks: BTreeSet<String>,
    changed_agents: BTreeSet<String>,
}

impl Board {
    /// Starts from the stored rows of the tasks and agents the events will touch.
    pub(crate) fn new(tasks: Vec<BoardTask>, agents: Vec<BoardAgent>) -> Self {
        Board {
            tasks: tasks.into_iter().map(|t| (t.task_id.clone(), t)).collect(),
            agents: agents.into_iter().map(|a| (a.agent_id.clone(), a)).collect(),
            ..Board::default()
        }
    }

    /// The changed rows, to be saved as the fold from `from_seq` to `to_seq`.
    pub(crate) fn changes(mut self, from_seq: u64, to_seq: u64) -> BoardChanges {
        BoardChanges {
            from_seq,
            to_seq,
            tasks: self.changed_tasks.iter().filter_map(|id| self.tasks.remove(id)).collect(),
            agents: self.changed_agents.iter().filter_map(|id| self.agents.remove(id)).collect(),
        }
    }

    /// Folds one committed event. Only swarm types change anything.
    pub(crate) fn apply(&mut self, event: &Event) {
        if !is_swarm_type(&event.event_type) {
            return;
        }
        let at = event.ts_ms;
        if let Some(a) = event.agent_id.as_deref().and_then(|id| self.agents.get_mut(id)) {
            a.last_seen_ms = at;
            self.changed_agents.insert(a.agent_id.clone());
        }
        let Some(decoded) = SwarmEvent::decode(event) else { return };
        match decoded {
            SwarmEvent::AgentJoined { agent_id, name, capabilities } => {
                self.agent_joined(agent_id, name, capabilities, at)
            }
            SwarmEvent::AgentLeft { agent_id, .. } => self.agent(&agent_id, |a| a.status = BoardAgentStatus::Offline),
            SwarmEvent::AgentStatusChanged { agent_id, status, .. } => {
                let status = status.map(|s| match s {
                    AgentStatus::Busy => BoardAgentStatus::Busy,
                    AgentStatus::Idle | AgentStatus::Offline => BoardAgentStatus::Idle,
                });
                self.agent(&agent_id, |a| {
                    a.reported = status.or(a.reported);
                    refresh(a);
                });
            }
            SwarmEvent::TaskCreated { task_id, description, retry_of } => {
                if !self.tasks.contains_key(&task_id) {
                    self.changed_tasks.insert(task_id.clone());
                    self.tasks.insert(
                        task_id.clone(),
                        BoardTask {
                            task_id,
                            description,
                            status: BoardStatus::Bidding,
                            created_seq: event.seq,
                            created_ms: at,
                            updated_ms: at,
                            agent_id: None,
                            bid_sats: None,
                            bids: 0,
                            retry_of,
                            reason: None,
                            auction_closed: false,
                        },
                    );
                }
            }
            SwarmEvent::TaskBidding { task_id, .. } => {
                self.open_task(&task_id, at, |t| t.status = BoardStatus::Bidding)
            }
            SwarmEvent::BidSubmitted { task_id, .. } => self.open_task(&task_id, at, |t| {
                if !t.auction_closed {
                    t.bids += 1;
                }
            }),
            SwarmEvent::AuctionClosed { task_id, .. } => self.open_task(&task_id, at, |t| t.auction_closed = true),
            SwarmEvent::TaskAssigned { task_id, agent_id, bid_sats, .. } => {
                let mut previous = None;
                self.open_task(&task_id, at, |t| {
                    previous = t.agent_id.replace(agent_id.clone());
                    t.status = BoardStatus::Assigned;
                    t.bid_sats = bid_sats;
                });
                if !self.is_open(&task_id) {
                    return;
                }
                // Assigned anew: the agent it had no longer works on it.
                if let Some(previous) = previous {
                    self.agent(&previous, |a| {
                        a.open_tasks = a.open_tasks.saturating_sub(1);
                        refresh(a);
                    });
                }
                self.agent(&agent_id, |a| {
                    a.open_tasks += 1;
                    refresh(a);
                });
            }
            SwarmEvent::TaskStarted { task_id, .. } => {
                self.open_task(&task_id, at, |t| t.status = BoardStatus::Running)
            }
            SwarmEvent::Tool { task_id, .. } => self.open_task(&task_id, at, |_| {}),
            SwarmEvent::TaskCompleted { task_id, .. } => self.finished(&task_id, BoardStatus::Completed, None, at),
            SwarmEvent::TaskFailed { task_id, reason, .. } => {
                self.finished(&task_id, BoardStatus::Failed, Some(reason), at);
            }
            SwarmEvent::TaskCancelled { task_id, reason, .. } => {
                self.finished(&task_id, BoardStatus::Cancelled, Some(reason), at);
            }
        }
    }

    fn agent_joined(&mut self, agent_id: String, name: String, capabilities: Vec<String>, at: i64) {
        let agent = self.agents.entry(agent_id.clone()).or_insert_with(|| BoardAgent {
            agent_id: agent_id.clone(),
            name: String::new(),
            status: BoardAgentStatus::Idle,
            capabilities: Vec::new(),
            tasks_done: 0,
            tasks_failed: 0,
            sats_earned: 0,
            last_seen_ms: at,
            open_tasks: 0,
            reported: None,
        });
        agent.name = name;
        agent.capabilities = capabilities;
        agent.status = BoardAgentStatus::Idle;
        agent.reported = None;
        agent.last_seen_ms = at;
        refresh(agent);
        self.changed_agents.insert(agent_id);
    }

    /// Changes agent `id` by `f`, when it is on the board (it joined).
    fn agent(&mut self, id: &str, f: impl FnOnce(&mut BoardAgent)) {
        if let Some(a) = self.agents.get_mut(id) {
            f(a);
            self.changed_agents.insert(id.to_owned());
        }
    }

    fn is_open(&self, task_id: &str) -> bool {
        self.tasks.get(task_id).is_some_and(|t| !t.status.is_finished())
    }

    /// Changes task `id` by `f`, when it is on the board and not finished; events
    /// about finished or unknown tasks change nothing.
    fn open_task(&mut self, id: &str, at: i64, f: impl FnOnce(&mut BoardTask)) {
        if let Some(t) = self.tasks.get_mut(id).filter(|t| !t.status.is_finished()) {
            f(t);
            t.updated_ms = at;
            self.changed_tasks.insert(id.to_owned());
        }
    }

    fn finished(&mut self, task_id: &str, status: BoardStatus, reason: Option<String>, at: i64) {
        let mut settled = None;
        self.open_task(task_id, at, |t| {
            t.status = status;
            t.reason = reason;
            settled = Some((t.agent_id.clone(), t.bid_sats.unwrap_or(0)));
        });
        let Some((Some(winner), bid)) = settled else { return };
        self.agent(&winner, |a| {
            a.open_tasks = a.open_tasks.saturating_sub(1);
            match status {
                BoardStatus::Completed => {
                    a.tasks_done += 1;
                    a.sats_earned = a.sats_earned.saturating_add(bid);
                }
                BoardStatus::Failed => a.tasks_failed += 1,
                _ => {}
            }
            refresh(a);
        });
    }
}

/// An online agent is busy while it has a task, else what it reported, else idle.
fn refresh(a: &mut BoardAgent) {
    if a.status == BoardAgentStatus::Offline {
        return;
    }
    a.status = if a.open_tasks > 0 { BoardAgentStatus::Busy } else { a.reported.unwrap_or(BoardAgentStatus::Idle) };
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::swarm::projection::Projection;

    fn lifecycle() -> Vec<SwarmEvent> {
        vec![
            SwarmEvent::AgentJoined { agent_id: "echo".into(), name: "Echo".into(), capabilities: vec!["code".into()] },
            SwarmEvent::AgentJoined { agent_id: "forge".into(), name: "Forge".into(), capabilities: vec![] },
            SwarmEvent::TaskCreated { task_id: "t1".into(), description: "sort logs".into(), retry_of: None },
            SwarmEvent::TaskBidding { task_id: "t1".into(), closes_ms: None, window_secs: None },
            SwarmEvent::BidSubmitted {
                task_id: "t1".into(),
                agent_id: "echo".into(),
                bid_sats: 30,
                agent_name: "".into(),
            },
            SwarmEvent::BidSubmitted {
                task_id: "t1".into(),
                agent_id: "forge".into(),
                bid_sats: 40,
                agent_name: "".into(),
            },
            SwarmEvent::AuctionClosed { task_id: "t1".into(), bids: 2, winner: Some(("echo".into(), 30)) },
            SwarmEvent::BidSubmitted {
                task_id: "t1".into(),
                agent_id: "forge".into(),
                bid_sats: 1,
                agent_name: "".into(),
            },
            SwarmEvent::TaskAssigned {
                task_id: "t1".into(),
                agent_id: "echo".into(),
                bid_sats: Some(30),
                agent_name: "".into(),
            },
            SwarmEvent::TaskStarted { task_id: "t1".into(), agent_id: Some("echo".into()) },
            SwarmEvent::TaskCompleted { task_id: "t1".into(), agent_id: Some("echo".into()), result: None },
            SwarmEvent::TaskCreated { task_id: "t2".into(), description: "again".into(), retry_of: Some("t0".into()) },
            SwarmEvent::TaskAssigned {
                task_id: "t2".into(),
                agent_id: "forge".into(),
                bid_sats: Some(5),
                agent_name: "".into(),
            },
            SwarmEvent::TaskFailed { task_id: "t2".into(), agent_id: None, reason: "disk full".into() },
            SwarmEvent::TaskCompleted { task_id: "t2".into(), agent_id: None, result: None },
            SwarmEvent::TaskCreated { task_id: "t3".into(), description: "new".into(), retry_of: None },
        ]
    }

    fn committed(events: &[SwarmEvent]) -> Vec<Arc<Event>> {
        events.iter().enumerate().map(|(i, e)| Arc::new(e.committed(i as u64 + 1, 1_000 * (i as i64 + 1)))).collect()
    }

    /// Folds `events` in steps of `step`, each starting from the rows the previous saved,
    /// as the follower does.
    fn fold_in_steps(
        events: &[Arc<Event>],
        step: usize,
    ) -> (BTreeMap<String, BoardTask>, BTreeMap<String, BoardAgent>) {
        let mut tasks: BTreeMap<String, BoardTask> = BTreeMap::new();
        let mut agents: BTreeMap<String, BoardAgent> = BTreeMap::new();
        for chunk in events.chunks(step) {
            let (task_ids, mut agent_ids) = ids_named(chunk);
            let loaded: Vec<BoardTask> = task_ids.iter().filter_map(|id| tasks.get(id).cloned()).collect();
            agent_ids.extend(winners(&loaded));
            let mut board = Board::new(loaded, agent_ids.iter().filter_map(|id| agents.get(id).cloned()).collect());
            for e in chunk {
                board.apply(e);
            }
            let changes = board.changes(0, 0);
            tasks.extend(changes.tasks.into_iter().map(|t| (t.task_id.clone(), t)));
            agents.extend(changes.agents.into_iter().map(|a| (a.agent_id.clone(), a)));
        }
        (tasks, agents)
    }

    #[test]
    fn tasks_and_agents_fold_as_the_projection_counts_them() {
        let events = committed(&lifecycle());
        let (tasks, agents) = fold_in_steps(&events, events.len());
        let t1 = &tasks["t1"];
        assert_eq!(
            (t1.status, t1.bids, t1.bid_sats, t1.agent_id.as_deref()),
            (BoardStatus::Completed, 2, Some(30), Some("echo"))
        );
        assert_eq!((t1.created_seq, t1.created_ms, t1.updated_ms), (3, 3_000, 11_000));
        let t2 = &tasks["t2"];
        assert_eq!(
            (t2.status, t2.reason.as_deref(), t2.retry_of.as_deref()),
            (BoardStatus::Failed, Some("disk full"), Some("t0"))
        );
        assert_eq!(tasks["t3"].status, BoardStatus::Bidding, "a created task waits for an agent");

        let mut projection = Projection::default();
        for e in &events {
            projection.apply(e);
        }
        for id in ["echo", "forge"] {
            let (board, folded) = (&agents[id], projection.agent(id).unwrap());
            assert_eq!(
                (board.tasks_done, board.tasks_failed, board.sats_earned, board.status.as_str()),
                (folded.tasks_completed, folded.tasks_failed, folded.sats_earned, folded.status.as_str()),
                "{id}"
            );
        }
        assert_eq!(agents["echo"].capabilities, ["code"]);
    }

    #[test]
    fn folding_in_steps_gives_the_rows_folding_at_once_gives() {
        let events = committed(&lifecycle());
        let whole = fold_in_steps(&events, events.len());
        for step in 1..events.len() {
            assert_eq!(fold_in_steps(&events, step), whole, "steps of {step}");
        }
    }

    #[test]
    fn an_agent_is_busy_with_a_task_and_offline_once_it_left() {
        let mut events = lifecycle();
        events.truncate(9);
        let (_, agents) = fold_in_steps(&committed(&events), 4);
        assert_eq!(agents["echo"].status, BoardAgentStatus::Busy);
        events.push(SwarmEvent::AgentLeft { agent_id: "echo".into(), name: "Echo".into(), reason: "timeout".into() });
        let (_, agents) = fold_in_steps(&committed(&events), 4);
        assert_eq!(agents["echo"].status, BoardAgentStatus::Offline);
    }

    #[test]
    fn only_changed_rows_are_saved() {
        let events = committed(&lifecycle());
        let mut board = Board::new(Vec::new(), Vec::new());
        board.apply(&events[2]);
        let changes = board.changes(4, 9);
        assert_eq!((changes.from_seq, changes.to_seq), (4, 9));
        assert_eq!(changes.tasks.len(), 1);
        assert!(changes.agents.is_empty());
    }
}
