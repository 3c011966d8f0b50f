//! The coordinator's rules (DESIGN §7), pure: [`decide`] takes the swarm as the log
//! says it is, a command and the time, and answers the events the command yields or
//! why it is refused. No I/O, no clock, no randomness: the coordinator reads the time
//! and makes new ids, then appends what `decide` answers and folds it.
//!
//! Which auctions to settle and which agents to time out is the coordinator's choice
//! (it acts only on what it manages, and only while it leads); whether a settlement or
//! a time-out is still due is decided here, so a settled auction is never settled
//! again and an agent already gone does not leave twice.

use std::time::Duration;

use serde_json::{Map, Value};

use super::auction::{self, Settlement};
use super::events::{SwarmEvent, ToolStatus};
use super::projection::{Agent, AgentStatus, Projection, TaskStatus};
use crate::event::MAX_NAME_CHARS;

/// Longest task description, characters.
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most capabilities an agent may declare.
const MAX_CAPABILITIES: usize = 32;
/// Longest agent name or capability, characters.
const MAX_AGENT_NAME_CHARS: usize = 64;

/// A command with everything it needs: new ids already made, the bidding window set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Command {
    /// `agent_id` is the one asked for, or one made for it that no agent has.
    Join {
        name: String,
        agent_id: String,
        capabilities: Vec<String>,
    },
    Leave {
        agent_id: String,
    },
    /// An operator removes the agent: it leaves (reason `removed`) and its tasks fail.
    Remove {
        agent_id: String,
    },
    /// `status` as sent: only `idle` and `busy` are accepted.
    Status {
        agent_id: String,
        status: String,
    },
    /// Changes nothing in the log; refused for an agent that is not online.
    Heartbeat {
        agent_id: String,
    },
    /// `task_id` is new; bidding stays open for `window`.
    PostTask {
        task_id: String,
        description: String,
        window: Duration,
    },
    Bid {
        task_id: String,
        agent_id: String,
        bid_sats: u64,
    },
    /// `agent_id`, when given, must be the winner.
    Start {
        task_id: String,
        agent_id: Option<String>,
    },
    Complete {
        task_id: String,
        result: Option<Value>,
    },
    Fail {
        task_id: String,
        reason: String,
    },
    /// `status` as sent (`called`, `completed`, `failed`; `None` is `called`).
    Tool {
        task_id: String,
        tool_name: String,
        status: Option<String>,
        data: Map<String, Value>,
    },
    /// Close an auction whose window has passed and assign it, or fail it.
    Settle {
        task_id: String,
    },
    /// An operator closes an auction now, before its window passes, and it is settled
    /// as the window's end would settle it.
    Close {
        task_id: String,
    },
    /// An operator cancels a task that has not finished.
    Cancel {
        task_id: String,
        reason: String,
    },
    /// A new task (`task_id`, new) with the description of the failed or cancelled
    /// task `retry_of`, auctioned for `window`.
    Retry {
        task_id: String,
        retry_of: String,
        window: Duration,
    },
    /// An agent that went silent leaves, and its tasks fail.
    TimeOut {
        agent_id: String,
    },
}

/// A command the swarm's rules refuse: an expected outcome, not a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// The events `command` yields against `swarm` at `now_ms`, in the order they are to
/// be committed.
///
/// # Errors
/// [`Rejected`] naming what was wrong; nothing is to be committed then.
pub(crate) fn decide(swarm: &Projection, command: Command, now_ms: i64) -> Result<Vec<SwarmEvent>, Rejected> {
    match command {
        Command::Join { name, agent_id, capabilities } => join(swarm, name, agent_id, capabilities),
        Command::Leave { agent_id } => {
            let agent = online_agent(swarm, &agent_id)?;
            Ok(departure(agent, "left"))
        }
        Command::Remove { agent_id } => {
            let agent = online_agent(swarm, &agent_id)?;
            Ok(departure(agent, "removed"))
        }
        Command::Status { agent_id, status } => {
            let status = match status.as_str() {
                "idle" => AgentStatus::Idle,
                "busy" => AgentStatus::Busy,
                _ => return Err(invalid("status", "must be \"idle\" or \"busy\"")),
            };
            let agent = online_agent(swarm, &agent_id)?;
            Ok(vec![SwarmEvent::AgentStatusChanged { agent_id, name: agent.name.clone(), status: Some(status) }])
        }
        Command::Heartbeat { agent_id } => online_agent(swarm, &agent_id).map(|_| Vec::new()),
        Command::PostTask { task_id, description, window } => {
            check_text("description", &description, MAX_DESCRIPTION_CHARS)?;
            Ok(post(task_id, description, None, window, now_ms))
        }
        Command::Retry { task_id, retry_of, window } => {
            let original = swarm.task(&retry_of).ok_or_else(|| not_found_task(&retry_of))?;
            if !matches!(original.status, TaskStatus::Failed | TaskStatus::Cancelled) {
                return Err(Rejected::Conflict(format!(
                    "task {retry_of:?} is {}; only a failed or cancelled task is retried",
                    original.status.as_str()
                )));
            }
            Ok(post(task_id, original.description.clone(), Some(retry_of), window, now_ms))
        }
        Command::Cancel { task_id, reason } => {
            check_text("reason", &reason, MAX_DESCRIPTION_CHARS)?;
            let task = swarm.task(&task_id).ok_or_else(|| not_found_task(&task_id))?;
            if task.status.is_finished() {
                return Err(Rejected::Conflict(format!(
                    "task {task_id:?} is {}; only a task that has not finished is cancelled",
                    task.status.as_str()
                )));
            }
            Ok(vec![SwarmEvent::TaskCancelled { agent_id: task.winner.clone(), task_id, reason }])
        }
        Command::Bid { task_id, agent_id, bid_sats } => bid(swarm, task_id, agent_id, bid_sats, now_ms),
        Command::Start { task_id, agent_id } => {
            let winner = assignee(swarm, &task_id, &[TaskStatus::Assigned], agent_id.as_deref())?;
            Ok(vec![SwarmEvent::TaskStarted { task_id, agent_id: Some(winner) }])
        }
        Command::Complete { task_id, result } => {
            let winner = assignee(swarm, &task_id, &[TaskStatus::Assigned, TaskStatus::Started], None)?;
            Ok(vec![SwarmEvent::TaskCompleted { task_id, agent_id: Some(winner), result }])
        }
        Command::Fail { task_id, reason } => {
            check_text("reason", &reason, MAX_DESCRIPTION_CHARS)?;
            let winner = assignee(swarm, &task_id, &[TaskStatus::Assigned, TaskStatus::Started], None)?;
            Ok(vec![SwarmEvent::TaskFailed { task_id, agent_id: Some(winner), reason }])
        }
        Command::Tool { task_id, tool_name, status, data } => {
            check_name("tool_name", &tool_name, MAX_NAME_CHARS)?;
            let status = match status.as_deref() {
                None => ToolStatus::Called,
                Some(s) => ToolStatus::parse(s)
                    .ok_or_else(|| invalid("status", "must be \"called\", \"completed\" or \"failed\""))?,
            };
            let winner = assignee(swarm, &task_id, &[TaskStatus::Assigned, TaskStatus::Started], None)?;
            Ok(vec![SwarmEvent::Tool { task_id, agent_id: Some(winner), status, tool_name, data }])
        }
        Command::Settle { task_id } => {
            let task = swarm.task(&task_id).ok_or_else(|| not_found_task(&task_id))?;
            if task.is_bidding() && task.closes_ms.is_some_and(|c| now_ms < c) {
                return Err(Rejected::Conflict(format!("bidding on {task_id:?} is still open")));
            }
            settle(swarm, task_id)
        }
        Command::Close { task_id } => settle(swarm, task_id),
        Command::TimeOut { agent_id } => {
            let agent = online_agent(swarm, &agent_id)?;
            Ok(departure(agent, "timeout"))
        }
    }
}

fn join(
    swarm: &Projection,
    name: String,
    agent_id: String,
    capabilities: Vec<String>,
) -> Result<Vec<SwarmEvent>, Rejected> {
    check_name("name", &name, MAX_AGENT_NAME_CHARS)?;
    if capabilities.len() > MAX_CAPABILITIES {
        return Err(invalid("capabilities", format!("at most {MAX_CAPABILITIES}")));
    }
    for c in &capabilities {
        check_name("capabilities", c, MAX_AGENT_NAME_CHARS)?;
    }
    check_id("agent_id", &agent_id)?;
    if swarm.agent(&agent_id).is_some_and(|a| a.status != AgentStatus::Offline) {
        return Err(Rejected::Conflict(format!("agent {agent_id:?} has already joined")));
    }
    Ok(vec![SwarmEvent::AgentJoined { agent_id, name, capabilities }])
}

fn bid(
    swarm: &Projection,
    task_id: String,
    agent_id: String,
    bid_sats: u64,
    now_ms: i64,
) -> Result<Vec<SwarmEvent>, Rejected> {
    let bid_sats = auction::check_bid(bid_sats).map_err(|message| Rejected::Invalid { field: "bid_sats", message })?;
    let task = swarm.task(&task_id).ok_or_else(|| not_found_task(&task_id))?;
    let agent_name = online_agent(swarm, &agent_id)?.name.clone();
    if task.status.is_finished() {
        return Err(Rejected::Conflict(format!("task {task_id:?} is {}; bidding is closed", task.status.as_str())));
    }
    let open = task.is_bidding() && task.closes_ms.is_none_or(|c| now_ms < c);
    if !open {
        return Err(Rejected::Conflict(format!("bidding on {task_id:?} is closed")));
    }
    if task.bids.iter().any(|b| b.agent_id == agent_id) {
        return Err(Rejected::Conflict(format!("agent {agent_id:?} already bid on {task_id:?}")));
    }
    Ok(vec![SwarmEvent::BidSubmitted { task_id, agent_id, bid_sats, agent_name }])
}

/// A new task and its open auction.
/// A retry of `original`, a task the projection has let go of (it keeps the latest
/// finished tasks only) but the board keeps: the same rule as [`Command::Retry`].
pub(crate) fn retry_from_board(
    task_id: String,
    original: &crate::store::board::BoardTask,
    window: Duration,
    now_ms: i64,
) -> Result<Vec<SwarmEvent>, Rejected> {
    use crate::store::board::BoardStatus;
    if !matches!(original.status, BoardStatus::Failed | BoardStatus::Cancelled) {
        return Err(Rejected::Conflict(format!(
            "task {:?} is {}; only a failed or cancelled task is retried",
            original.task_id,
            original.status.as_str()
        )));
    }
    Ok(post(task_id, original.description.clone(), Some(original.task_id.clone()), window, now_ms))
}

fn post(
    task_id: String,
    description: String,
    retry_of: Option<String>,
    window: Duration,
    now_ms: i64,
) -> Vec<SwarmEvent> {
    let closes_ms = now_ms.saturating_add(i64::try_from(window.as_millis()).unwrap_or(i64::MAX));
    vec![
        SwarmEvent::TaskCreated { task_id: task_id.clone(), description, retry_of },
        SwarmEvent::TaskBidding { task_id, closes_ms: Some(closes_ms), window_secs: Some(window.as_secs_f64()) },
    ]
}

/// `auction.closed`, then `task.assigned` to the winner or `task.failed` without one,
/// whether or not the window has passed (the caller checks when that matters).
fn settle(swarm: &Projection, task_id: String) -> Result<Vec<SwarmEvent>, Rejected> {
    let task = swarm.task(&task_id).ok_or_else(|| not_found_task(&task_id))?;
    if !task.is_bidding() {
        return Err(Rejected::Conflict(format!(
            "task {task_id:?} is {}; closing an auction needs it bidding",
            closed_state(task)
        )));
    }
    let bids = task.bids.len() as u64;
    Ok(match auction::settle(task, swarm) {
        Settlement::Assigned { agent_id, agent_name, bid_sats } => vec![
            SwarmEvent::AuctionClosed { task_id: task_id.clone(), bids, winner: Some((agent_id.clone(), bid_sats)) },
            SwarmEvent::TaskAssigned { task_id, agent_id, bid_sats: Some(bid_sats), agent_name },
        ],
        Settlement::NoBids => vec![
            SwarmEvent::AuctionClosed { task_id: task_id.clone(), bids, winner: None },
            SwarmEvent::TaskFailed { task_id, agent_id: None, reason: "no bids received".into() },
        ],
    })
}

/// The state a task not taking bids is in, as a refusal names it: a bidding task
/// whose auction closed without an outcome says so.
fn closed_state(task: &super::projection::Task) -> &'static str {
    if task.status == TaskStatus::Bidding { "closed to bids" } else { task.status.as_str() }
}

/// `agent.left` and the failure of each task the agent held.
fn departure(agent: &Agent, reason: &str) -> Vec<SwarmEvent> {
    let name = &agent.name;
    let gone = match reason {
        "timeout" => "timed out",
        "removed" => "was removed",
        _ => "left",
    };
    let mut events =
        vec![SwarmEvent::AgentLeft { agent_id: agent.agent_id.clone(), name: name.clone(), reason: reason.to_owned() }];
    events.extend(agent.current_tasks.iter().map(|task_id| SwarmEvent::TaskFailed {
        task_id: task_id.clone(),
        agent_id: Some(agent.agent_id.clone()),
        reason: format!("agent {name} {gone}"),
    }));
    events
}

fn online_agent<'a>(swarm: &'a Projection, agent_id: &str) -> Result<&'a Agent, Rejected> {
    let agent = swarm.agent(agent_id).ok_or_else(|| Rejected::NotFound(format!("no agent {agent_id:?}")))?;
    if agent.status == AgentStatus::Offline {
        return Err(Rejected::Conflict(format!("agent {agent_id:?} is offline; join again first")));
    }
    Ok(agent)
}

/// The agent a task is assigned to, if the task is in one of `states` (and, when
/// `agent` is given, assigned to that agent).
fn assignee(swarm: &Projection, task_id: &str, states: &[TaskStatus], agent: Option<&str>) -> Result<String, Rejected> {
    let task = swarm.task(task_id).ok_or_else(|| not_found_task(task_id))?;
    let winner = match &task.winner {
        Some(winner) if states.contains(&task.status) => winner,
        _ => {
            let wanted: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            return Err(Rejected::Conflict(format!(
                "task {task_id:?} is {}; this step needs it {}",
                task.status.as_str(),
                wanted.join(" or ")
            )));
        }
    };
    if let Some(a) = agent
        && a != winner
    {
        return Err(Rejected::Conflict(format!("task {task_id:?} is assigned to {winner:?}, not {a:?}")));
    }
    Ok(winner.clone())
}

fn not_found_task(id: &str) -> Rejected {
    Rejected::NotFound(format!("no task {id:?}"))
}

fn invalid(field: &'static str, message: impl Into<String>) -> Rejected {
    Rejected::Invalid { field, message: message.into() }
}

/// Ids are short printable names: letters, digits, `-`, `_`, `.`.
fn check_id(field: &'static str, id: &str) -> Result<(), Rejected> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(invalid(field, "must be 1 to 64 letters, digits, '-', '_' or '.'")) }
}

/// A name shown as it is (an agent's name, a capability, a tool): text, without the
/// control and invisible formatting characters refused in identifiers.
fn check_name(field: &'static str, text: &str, max: usize) -> Result<(), Rejected> {
    check_text(field, text, max)?;
    match text.chars().find(|c| !crate::event::is_identifier_char(*c)) {
        Some(c) => Err(invalid(
            field,
            format!("must not contain control or invisible formatting characters (found U+{:04X})", c as u32),
        )),
        None => Ok(()),
    }
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), Rejected> {
    if text.trim().is_empty() {
        Err(invalid(field, "must not be empty"))
    } else if text.chars().count() > max {
        Err(invalid(field, format!("must be at most {max} characters")))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A swarm folded from what `decide` answered, as the coordinator folds it.
    struct Swarm {
        projection: Projection,
        now_ms: i64,
    }

    impl Swarm {
        fn new() -> Self {
            Swarm { projection: Projection::default(), now_ms: 1_000_000 }
        }

        /// Decides `command` and folds what it yields.
        fn run(&mut self, command: Command) -> Result<Vec<SwarmEvent>, Rejected> {
            let events = decide(&self.projection, command, self.now_ms)?;
            for e in &events {
                let seq = self.projection.seq + 1;
                self.projection.apply(&e.committed(seq, self.now_ms));
            }
            Ok(events)
        }

        fn join(&mut self, agent: &str) {
            let name = agent.to_uppercase();
            self.run(Command::Join { name, agent_id: agent.into(), capabilities: vec![] }).unwrap();
        }

        fn post(&mut self, task: &str) {
            let window = Duration::from_secs(15);
            self.run(Command::PostTask { task_id: task.into(), description: "d".into(), window }).unwrap();
        }

        fn bid(&mut self, task: &str, agent: &str, bid_sats: u64) -> Result<Vec<SwarmEvent>, Rejected> {
            self.run(Command::Bid { task_id: task.into(), agent_id: agent.into(), bid_sats })
        }

        fn settle(&mut self, task: &str) -> Result<Vec<SwarmEvent>, Rejected> {
            self.run(Command::Settle { task_id: task.into() })
        }
    }

    fn conflict(r: Result<Vec<SwarmEvent>, Rejected>) -> bool {
        matches!(r, Err(Rejected::Conflict(_)))
    }

    #[test]
    fn a_task_is_posted_with_its_bidding_window() {
        let mut s = Swarm::new();
        let events = s
            .run(Command::PostTask { task_id: "t".into(), description: "d".into(), window: Duration::from_secs(15) })
            .unwrap();
        assert_eq!(
            events[1],
            SwarmEvent::TaskBidding {
                task_id: "t".into(),
                closes_ms: Some(s.now_ms + 15_000),
                window_secs: Some(15.0)
            }
        );
        assert!(s.projection.task("t").unwrap().is_bidding());
    }

    #[test]
    fn a_bid_needs_an_online_agent_an_open_auction_and_one_bid_per_agent() {
        let mut s = Swarm::new();
        s.join("a");
        assert!(matches!(s.bid("t", "a", 5), Err(Rejected::NotFound(_))));
        s.post("t");
        assert!(matches!(s.bid("t", "b", 5), Err(Rejected::NotFound(_))));
        assert!(matches!(s.bid("t", "a", 0), Err(Rejected::Invalid { field: "bid_sats", .. })));
        assert_eq!(s.bid("t", "a", 5).unwrap().len(), 1);
        assert!(conflict(s.bid("t", "a", 4)), "one bid per agent");
        s.run(Command::Leave { agent_id: "a".into() }).unwrap();
        assert!(conflict(s.bid("t", "a", 4)), "offline agents do not bid");
    }

    #[test]
    fn an_auction_is_not_settled_before_its_window_passes() {
        let mut s = Swarm::new();
        s.post("t");
        assert!(conflict(s.settle("t")));
        s.now_ms += 15_000;
        let events = s.settle("t").unwrap();
        assert_eq!(
            events[1],
            SwarmEvent::TaskFailed { task_id: "t".into(), agent_id: None, reason: "no bids received".into() }
        );
    }

    #[test]
    fn a_bid_at_the_closing_time_is_refused() {
        let mut s = Swarm::new();
        s.join("a");
        s.post("t");
        s.now_ms += 15_000 - 1;
        s.bid("t", "a", 1).unwrap();
        s.join("b");
        s.now_ms += 1;
        assert!(conflict(s.bid("t", "b", 1)));
    }

    #[test]
    fn leaving_fails_the_agents_tasks() {
        let mut s = Swarm::new();
        s.join("a");
        s.post("t");
        s.bid("t", "a", 5).unwrap();
        s.now_ms += 15_000;
        s.settle("t").unwrap();
        let events = s.run(Command::TimeOut { agent_id: "a".into() }).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            SwarmEvent::TaskFailed {
                task_id: "t".into(),
                agent_id: Some("a".into()),
                reason: "agent A timed out".into()
            }
        );
        assert!(conflict(s.run(Command::TimeOut { agent_id: "a".into() })), "gone once");
    }

    #[test]
    fn steps_out_of_order_are_refused_and_name_the_state() {
        let mut s = Swarm::new();
        s.post("t");
        let Err(Rejected::Conflict(m)) = s.run(Command::Start { task_id: "t".into(), agent_id: None }) else {
            panic!("a task still bidding cannot start");
        };
        assert_eq!(m, r#"task "t" is bidding; this step needs it assigned"#);
        let tool =
            Command::Tool { task_id: "t".into(), tool_name: "grep".into(), status: Some("x".into()), data: Map::new() };
        assert!(matches!(s.run(tool), Err(Rejected::Invalid { field: "status", .. })));
    }

    #[test]
    fn joining_checks_the_name_and_the_id() {
        let mut s = Swarm::new();
        let join =
            |name: &str, id: &str| Command::Join { name: name.into(), agent_id: id.into(), capabilities: vec![] };
        assert!(matches!(s.run(join(" ", "a")), Err(Rejected::Invalid { field: "name", .. })));
        assert!(matches!(s.run(join("A\u{200b}", "a")), Err(Rejected::Invalid { field: "name", .. })));
        assert!(matches!(s.run(join("A", "a b")), Err(Rejected::Invalid { field: "agent_id", .. })));
        s.run(join("A", "a")).unwrap();
        assert!(conflict(s.run(join("A", "a"))), "an online agent joins once");
    }

    fn cancel(s: &mut Swarm, task: &str) -> Result<Vec<SwarmEvent>, Rejected> {
        s.run(Command::Cancel { task_id: task.into(), reason: "wrong repo".into() })
    }

    /// A task posted, bid on by `a` and settled: assigned to `a`.
    fn assigned(s: &mut Swarm, task: &str) {
        s.post(task);
        s.bid(task, "a", 5).unwrap();
        s.now_ms += 15_000;
        s.settle(task).unwrap();
    }

    #[test]
    fn a_task_is_cancelled_in_any_state_before_it_finishes_and_only_then() {
        let mut s = Swarm::new();
        s.join("a");
        s.post("bidding");
        assert_eq!(
            cancel(&mut s, "bidding").unwrap(),
            vec![SwarmEvent::TaskCancelled { task_id: "bidding".into(), agent_id: None, reason: "wrong repo".into() }]
        );
        assert_eq!(s.projection.task("bidding").unwrap().status, TaskStatus::Cancelled);
        assert_eq!(s.projection.open_auctions().count(), 0, "a cancelled task leaves the open auctions");
        assigned(&mut s, "assigned");
        assert_eq!(s.projection.agent("a").unwrap().status, AgentStatus::Busy);
        let events = cancel(&mut s, "assigned").unwrap();
        assert!(matches!(&events[0], SwarmEvent::TaskCancelled { agent_id: Some(a), .. } if a == "a"));
        let agent = s.projection.agent("a").unwrap();
        assert_eq!((agent.status, agent.tasks_failed), (AgentStatus::Idle, 0), "the agent is free, not failed");
        let Err(Rejected::Conflict(m)) = cancel(&mut s, "assigned") else { panic!("cancelled once") };
        assert_eq!(m, r#"task "assigned" is cancelled; only a task that has not finished is cancelled"#);
        assigned(&mut s, "done");
        s.run(Command::Complete { task_id: "done".into(), result: None }).unwrap();
        let Err(Rejected::Conflict(m)) = cancel(&mut s, "done") else { panic!("a completed task stays so") };
        assert!(m.contains("is completed"), "{m}");
        assert!(matches!(cancel(&mut s, "nope"), Err(Rejected::NotFound(_))));
        let blank = Command::Cancel { task_id: "x".into(), reason: " ".into() };
        assert!(matches!(s.run(blank), Err(Rejected::Invalid { field: "reason", .. })));
    }

    #[test]
    fn a_cancelled_task_takes_no_bids_and_is_never_settled() {
        let mut s = Swarm::new();
        s.join("a");
        s.post("t");
        cancel(&mut s, "t").unwrap();
        let Err(Rejected::Conflict(m)) = s.bid("t", "a", 5) else { panic!("no bids after a cancel") };
        assert_eq!(m, r#"task "t" is cancelled; bidding is closed"#);
        s.now_ms += 15_000;
        let Err(Rejected::Conflict(m)) = s.settle("t") else { panic!("never settled") };
        assert_eq!(m, r#"task "t" is cancelled; closing an auction needs it bidding"#);
        assert!(conflict(s.run(Command::Close { task_id: "t".into() })));
    }

    #[test]
    fn a_retry_is_a_new_task_naming_the_failed_or_cancelled_one() {
        let mut s = Swarm::new();
        s.post("t");
        let retry = |from: &str, to: &str| Command::Retry {
            task_id: to.into(),
            retry_of: from.into(),
            window: Duration::from_secs(15),
        };
        let Err(Rejected::Conflict(m)) = s.run(retry("t", "r1")) else { panic!("a bidding task is not retried") };
        assert_eq!(m, r#"task "t" is bidding; only a failed or cancelled task is retried"#);
        cancel(&mut s, "t").unwrap();
        let events = s.run(retry("t", "r1")).unwrap();
        assert_eq!(
            events[0],
            SwarmEvent::TaskCreated { task_id: "r1".into(), description: "d".into(), retry_of: Some("t".into()) }
        );
        let r1 = s.projection.task("r1").unwrap();
        assert!(r1.is_bidding());
        assert_eq!(r1.retry_of.as_deref(), Some("t"));
        s.now_ms += 15_000;
        s.settle("r1").unwrap();
        assert_eq!(s.projection.task("r1").unwrap().status, TaskStatus::Failed, "no bids");
        s.run(retry("r1", "r2")).unwrap();
        assert!(matches!(s.run(retry("nope", "r3")), Err(Rejected::NotFound(_))));
    }

    #[test]
    fn closing_now_settles_before_the_window_passes_and_only_while_bidding() {
        let mut s = Swarm::new();
        s.join("a");
        s.post("t");
        s.bid("t", "a", 5).unwrap();
        let events = s.run(Command::Close { task_id: "t".into() }).unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[1], SwarmEvent::TaskAssigned { agent_id, .. } if agent_id == "a"));
        let Err(Rejected::Conflict(m)) = s.run(Command::Close { task_id: "t".into() }) else { panic!("closed once") };
        assert_eq!(m, r#"task "t" is assigned; closing an auction needs it bidding"#);
        s.now_ms += 15_000;
        assert!(conflict(s.settle("t")), "the window's end finds it settled");
    }

    #[test]
    fn removing_an_agent_fails_its_tasks_with_reason_removed() {
        let mut s = Swarm::new();
        s.join("a");
        assigned(&mut s, "t");
        let events = s.run(Command::Remove { agent_id: "a".into() }).unwrap();
        assert_eq!(
            events,
            vec![
                SwarmEvent::AgentLeft { agent_id: "a".into(), name: "A".into(), reason: "removed".into() },
                SwarmEvent::TaskFailed {
                    task_id: "t".into(),
                    agent_id: Some("a".into()),
                    reason: "agent A was removed".into()
                },
            ]
        );
        assert!(conflict(s.run(Command::Remove { agent_id: "a".into() })), "removed once");
    }

    /// Bids by agent (0..6) and amount, each tried in turn; some are refused (a second
    /// bid by the same agent), which the properties take into account.
    fn bids() -> impl Strategy<Value = Vec<(usize, u64)>> {
        proptest::collection::vec((0usize..6, 1u64..50), 0..24)
    }

    /// An auction with `bids` tried on it, its window passed, then settled.
    fn auction(bids: &[(usize, u64)]) -> (Swarm, Vec<(String, u64)>, Vec<SwarmEvent>) {
        let mut s = Swarm::new();
        for a in 0..6 {
            s.join(&format!("a{a}"));
        }
        s.post("t");
        let mut accepted = Vec::new();
        for (agent, sats) in bids {
            let agent = format!("a{agent}");
            if s.bid("t", &agent, *sats).is_ok() {
                accepted.push((agent, *sats));
            }
        }
        s.now_ms += 15_000;
        let settled = s.settle("t").unwrap();
        (s, accepted, settled)
    }

    proptest! {
        #[test]
        fn exactly_one_winner_the_lowest_bid_and_the_earliest_on_a_tie(bids in bids()) {
            let (s, accepted, settled) = auction(&bids);
            let assigned: Vec<_> = settled.iter().filter_map(|e| match e {
                SwarmEvent::TaskAssigned { agent_id, bid_sats, .. } => Some((agent_id.clone(), bid_sats.unwrap())),
                _ => None,
            }).collect();
            // `min_by_key` keeps the first of equal minimums: the earliest bid.
            let best = accepted.iter().min_by_key(|(_, sats)| *sats).cloned();
            match best {
                Some(best) => prop_assert_eq!(assigned, vec![best]),
                None => prop_assert!(assigned.is_empty()),
            }
            let task = s.projection.task("t").unwrap();
            prop_assert_eq!(task.winner.is_some(), !accepted.is_empty());
        }

        #[test]
        fn nothing_is_accepted_after_the_close(bids in bids(), late in (0usize..6, 1u64..50)) {
            let (mut s, _, _) = auction(&bids);
            let before = s.projection.task("t").unwrap().bids.clone();
            let late_agent = format!("a{}", late.0);
            prop_assert!(conflict(s.bid("t", &late_agent, late.1)));
            prop_assert_eq!(&s.projection.task("t").unwrap().bids, &before);
        }

        #[test]
        fn an_auction_is_settled_once(bids in bids()) {
            let (mut s, _, settled) = auction(&bids);
            prop_assert_eq!(settled.len(), 2);
            prop_assert!(conflict(s.settle("t")));
        }

        /// Whatever order bids, a close now, a cancel and the window's end come in, the
        /// auction is settled at most once, and never once the task is cancelled; a
        /// cancelled task is never assigned afterwards.
        #[test]
        fn close_now_and_cancel_settle_at_most_once(
            steps in proptest::collection::vec(0u8..5, 0..16),
            bids in bids(),
        ) {
            let mut s = Swarm::new();
            for a in 0..6 {
                s.join(&format!("a{a}"));
            }
            s.post("t");
            let mut bids = bids.into_iter();
            let (mut settlements, mut cancelled) = (0, false);
            for step in steps {
                let outcome = match step {
                    0 => bids.next().map(|(a, sats)| s.bid("t", &format!("a{a}"), sats)),
                    1 => Some(s.run(Command::Close { task_id: "t".into() })),
                    2 => Some(cancel(&mut s, "t")),
                    3 => {
                        s.now_ms += 15_000;
                        Some(s.settle("t"))
                    }
                    _ => Some(s.run(Command::Start { task_id: "t".into(), agent_id: None })),
                };
                let Some(Ok(events)) = outcome else { continue };
                for e in &events {
                    match e {
                        SwarmEvent::AuctionClosed { .. } => {
                            prop_assert!(!cancelled, "a cancelled task is never settled");
                            settlements += 1;
                        }
                        SwarmEvent::TaskAssigned { .. } | SwarmEvent::TaskStarted { .. } => {
                            prop_assert!(!cancelled, "a cancelled task is never assigned or started");
                        }
                        SwarmEvent::TaskCancelled { .. } => {
                            prop_assert!(!cancelled, "cancelled once");
                            cancelled = true;
                        }
                        _ => {}
                    }
                }
            }
            prop_assert!(settlements <= 1);
            let task = s.projection.task("t").unwrap();
            prop_assert_eq!(cancelled, task.status == TaskStatus::Cancelled);
            if cancelled {
                prop_assert!(!task.is_bidding());
            }
        }
    }
}
