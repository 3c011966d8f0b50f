//! The coordinator (DESIGN §7): agents join and leave, tasks are auctioned, work is
//! started, tooled, completed or failed.
//!
//! One task owns the swarm state: a [`Projection`] folded from the log through its
//! own cursor, plus the liveness clock of the agents it manages. Commands arrive over
//! a bounded channel and are handled one at a time, so concurrent bids and an
//! auction's close are ordered: a bid is either committed before the close or refused
//! with 409, never half-applied. Every event goes through the same ingest rules and
//! writer as a producer's, and the state changes only by folding committed events.
//!
//! The coordinator settles only the auctions it opened and times out only the agents
//! it registered (events whose `source` is its own), so an external coordinator that
//! posts events can share the log without being second-guessed.
//!
//! With several nodes on one log, every node runs this task and folds the log (so any
//! node serves `GET /api/swarm`), but only the holder of the store's [`Leadership`]
//! acts: it handles commands, settles auctions and times agents out. The others answer
//! commands with [`CommandError::NotLeader`]. Every node uses the same `source`, so a
//! node that takes over recognises the auctions and agents of the one before it, folds
//! the log up to the store's head, and settles what is due. Settlement events carry ids
//! derived from the task, so even two nodes that both believe they lead (a lock lost
//! while a commit was in flight) store one settlement: the second is a duplicate.
//! Those ids are in the server's own namespace (`sf:`, refused to producers at
//! ingest), so no producer can take one first and leave the task bidding forever; a
//! settlement whose id is nevertheless held by another event is logged as an error and
//! listed in [`CoordinatorHandle::problems`] (shown by `/readyz`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::auction::{self, Settlement};
use super::projection::{AgentStatus, Projection, ProjectionLimits, SWARM_TYPES, TaskStatus};
use crate::cursor::{Cursor, CursorError, Step};
use crate::event::{MAX_NAME_CHARS, format_timestamp};
use crate::filter::{Filter, FilterSpec};
use crate::hub::{Hub, ReadLimit};
use crate::ingest::{IngestRules, SERVER_ID_PREFIX};
use crate::store::{Appended, Leadership, Store};
use crate::writer::{AppendError, WriterHandle};

/// Default bidding window (`--bid-window`).
pub const DEFAULT_BID_WINDOW: Duration = Duration::from_secs(15);
/// Default silence after which an agent is timed out (`--agent-timeout`).
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(90);
/// Commands that may wait for the coordinator; beyond it callers get 503.
const COMMAND_QUEUE: usize = 1024;
/// Longest task description, characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most capabilities an agent may declare.
const MAX_CAPABILITIES: usize = 32;
/// How often agent liveness is checked.
const LIVENESS_TICK: Duration = Duration::from_secs(1);
/// How soon a node that gained leadership but could not read the log tries again.
const TAKEOVER_RETRY: Duration = Duration::from_secs(1);
/// Problems kept for `/readyz`; older ones are dropped (the log has them all).
const MAX_PROBLEMS: usize = 20;
/// What one fold step reads.
const FOLD_LIMIT: ReadLimit = ReadLimit { max_events: 5_000, max_bytes: 8 * 1024 * 1024 };

#[derive(Debug, Clone)]
pub struct CoordinatorSettings {
    /// How long an auction takes bids. Default [`DEFAULT_BID_WINDOW`].
    pub bid_window: Duration,
    /// Silence after which a managed agent gets `agent.left` (reason timeout).
    pub agent_timeout: Duration,
    /// The `source` of the coordinator's events; also how it recognises what it manages.
    pub source: String,
    /// How much of the swarm the projection keeps in memory.
    pub projection: ProjectionLimits,
}

impl Default for CoordinatorSettings {
    fn default() -> Self {
        CoordinatorSettings {
            bid_window: DEFAULT_BID_WINDOW,
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
            source: "coordinator".into(),
            projection: ProjectionLimits::default(),
        }
    }
}

/// A command for the coordinator. Field checks beyond types happen in the coordinator,
/// so every caller (HTTP, the demo) gets the same answers.
#[derive(Debug, Clone)]
pub enum Command {
    Join {
        name: String,
        agent_id: Option<String>,
        capabilities: Vec<String>,
    },
    Leave {
        agent_id: String,
    },
    Status {
        agent_id: String,
        status: String,
    },
    Heartbeat {
        agent_id: String,
    },
    PostTask {
        description: String,
    },
    Bid {
        task_id: String,
        agent_id: String,
        bid_sats: u64,
    },
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
    Tool {
        task_id: String,
        tool_name: String,
        status: Option<String>,
        data: Map<String, Value>,
    },
    /// One page of the projection, as `GET /api/swarm` serves it.
    Snapshot(SwarmPage),
    /// One agent, as the agent page shows it.
    Agent {
        agent_id: String,
    },
}

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

/// The most tasks or agents one snapshot page holds.
pub const MAX_PAGE: usize = 1_000;
/// Open auctions one snapshot lists; `auctions_more` counts the rest.
pub const MAX_AUCTIONS: usize = 100;
/// How long a built snapshot serves page views while the log does not move: the
/// seconds left in each auction are the only part that changes by itself.
const SNAPSHOT_FRESH: Duration = Duration::from_secs(1);

impl Default for SwarmPage {
    fn default() -> Self {
        SwarmPage { tasks_limit: 100, tasks_before: None, agents_limit: 200, agents_after: None }
    }
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

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("the coordinator is busy")]
    Busy,
    #[error("the coordinator has stopped")]
    Stopped,
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("the coordinator's events were refused by ingest: {0}")]
    Ingest(String),
    #[error("this node is not the coordinator leader; send coordinator commands to the node that leads")]
    NotLeader,
}

type Reply = oneshot::Sender<Result<Value, CommandError>>;

/// A cheap handle for sending commands.
#[derive(Clone)]
pub struct CoordinatorHandle {
    commands: mpsc::Sender<(Command, Reply)>,
    problems: Arc<Problems>,
}

/// Faults the coordinator found that only an operator can resolve (a settlement id
/// held by another event), newest last, at most [`MAX_PROBLEMS`].
#[derive(Debug, Default)]
struct Problems(Mutex<VecDeque<String>>);

impl Problems {
    fn report(&self, problem: String) {
        // A std Mutex, held only to push or copy, never across an await; a panic
        // elsewhere cannot leave the list half-written, so poison is ignored.
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if list.len() == MAX_PROBLEMS {
            list.pop_front();
        }
        list.push_back(problem);
    }

    fn list(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }
}

impl CoordinatorHandle {
    /// Runs `command` and returns its answer (the JSON the API sends back).
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when the swarm's rules refuse it, `Busy` when the
    /// queue is full, `Stopped` on shutdown, `Append` when the commit failed.
    pub async fn run(&self, command: Command) -> Result<Value, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands.try_send((command, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommandError::Busy,
            mpsc::error::TrySendError::Closed(_) => CommandError::Stopped,
        })?;
        answer.await.map_err(|_| CommandError::Stopped)?
    }

    /// What the coordinator could not do and an operator must look at, oldest first;
    /// empty when all is well.
    pub fn problems(&self) -> Vec<String> {
        self.problems.list()
    }
}

/// Starts the coordinator. It first folds the whole log (commands wait meanwhile),
/// then, while it leads, settles auctions whose window passed while no node led, and
/// serves.
pub fn spawn(
    settings: CoordinatorSettings,
    leadership: Leadership,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    writer: WriterHandle,
    rules: IngestRules,
    shutdown: CancellationToken,
) -> (CoordinatorHandle, tokio::task::JoinHandle<()>) {
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let filter = Filter::from_spec(FilterSpec {
        types: SWARM_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        ..FilterSpec::default()
    })
    // A constant list of valid patterns.
    .expect("swarm types are valid patterns");
    let problems = Arc::new(Problems::default());
    let coordinator = Coordinator {
        problems: Arc::clone(&problems),
        cursor: Cursor::new(hub.clone(), Arc::clone(&store), filter, Some(0)),
        hub,
        store,
        leadership,
        leading: false,
        projection: Projection::new(settings.projection.clone()),
        writer,
        rules,
        settings,
        managed_agents: HashSet::new(),
        managed_auctions: HashSet::new(),
        last_heard: HashMap::new(),
        snapshot_cache: None,
    };
    let task = tokio::spawn(coordinator.run(rx, shutdown));
    (CoordinatorHandle { commands, problems }, task)
}

struct Coordinator {
    /// Shared with every handle, for `/readyz`.
    problems: Arc<Problems>,
    cursor: Cursor,
    hub: Arc<Hub>,
    /// Read for the log's head when taking over, which may be ahead of this node's hub.
    store: Arc<dyn Store>,
    leadership: Leadership,
    /// Whether this node acts as the coordinator now: set only once the fold has
    /// caught up with the log as it was when leadership was gained.
    leading: bool,
    projection: Projection,
    writer: WriterHandle,
    rules: IngestRules,
    settings: CoordinatorSettings,
    /// Agents whose `agent.joined` this coordinator wrote: it times them out.
    managed_agents: HashSet<String>,
    /// Auctions whose `task.bidding` this coordinator wrote: it settles them.
    managed_auctions: HashSet<String>,
    /// When each managed, online agent was last heard from.
    last_heard: HashMap<String, Instant>,
    /// The last snapshot built: its page, the seq it shows, when it was built. Page
    /// views ask for the same page over and over; they share one build per seq.
    snapshot_cache: Option<(SwarmPage, u64, Instant, Value)>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn not_found_agent(id: &str) -> Rejected {
    Rejected::NotFound(format!("no agent {id:?}"))
}

fn not_found_task(id: &str) -> Rejected {
    Rejected::NotFound(format!("no task {id:?}"))
}

/// Ids are short printable names: letters, digits, `-`, `_`, `.`.
fn check_id(field: &'static str, id: &str) -> Result<(), Rejected> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Rejected::Invalid { field, message: "must be 1 to 64 letters, digits, '-', '_' or '.'".into() })
    }
}

/// A name shown as it is (an agent's name, a capability, a tool): text, without the
/// control and invisible formatting characters refused in identifiers.
fn check_name(field: &'static str, text: &str, max: usize) -> Result<(), Rejected> {
    check_text(field, text, max)?;
    match text.chars().find(|c| !crate::event::is_identifier_char(*c)) {
        Some(c) => Err(Rejected::Invalid {
            field,
            message: format!("must not contain control or invisible formatting characters (found U+{:04X})", c as u32),
        }),
        None => Ok(()),
    }
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), Rejected> {
    if text.trim().is_empty() {
        Err(Rejected::Invalid { field, message: "must not be empty".into() })
    } else if text.chars().count() > max {
        Err(Rejected::Invalid { field, message: format!("must be at most {max} characters") })
    } else {
        Ok(())
    }
}

fn short_id(prefix: &str) -> String {
    use rand::Rng;
    format!("{prefix}{:08x}", rand::rng().random::<u32>())
}

impl Coordinator {
    async fn run(mut self, mut commands: mpsc::Receiver<(Command, Reply)>, shutdown: CancellationToken) {
        let started = std::time::Instant::now();
        let head = self.hub.head();
        let rebuilt = tokio::select! {
            () = shutdown.cancelled() => return,
            rebuilt = self.fold_until(head) => rebuilt,
        };
        if let Err(e) = rebuilt {
            tracing::error!(error = %e, "coordinator could not rebuild the swarm from the log; it is not serving");
            return;
        }
        tracing::info!(events = head, elapsed_ms = started.elapsed().as_millis() as u64, "swarm projection rebuilt");
        self.report_stuck_auctions();
        if self.leadership.is_held() {
            self.take_lead(&shutdown).await;
        }
        let mut liveness = tokio::time::interval(LIVENESS_TICK);
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry = tokio::time::interval(TAKEOVER_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = if self.leading { self.next_deadline() } else { None };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                held = self.leadership.changed() => {
                    if held && !self.leading {
                        self.take_lead(&shutdown).await;
                    } else if !held && self.leading {
                        self.step_down();
                    }
                }
                // Leadership was gained but the log could not be read then.
                _ = retry.tick(), if !self.leading && self.leadership.is_held() => self.take_lead(&shutdown).await,
                () = sleep_until_opt(deadline) => self.settle_due().await,
                command = commands.recv() => {
                    let Some((command, reply)) = command else { break };
                    let answer = self.handle(command).await;
                    // A caller that gave up waiting needs no answer; the command took effect.
                    let _ = reply.send(answer);
                }
                step = self.cursor.next(FOLD_LIMIT) => {
                    if let Err(e) = self.fold_step(step) {
                        tracing::error!(error = %e, "coordinator stopped following the log");
                        break;
                    }
                }
                _ = liveness.tick(), if self.leading => self.time_out_silent_agents().await,
            }
        }
        tracing::info!("coordinator stopped");
    }

    /// Becomes the acting coordinator: folds everything committed before leadership
    /// was gained (the previous leader's last events included, which this node's hub
    /// may not have yet), then starts the liveness clock of every managed agent afresh.
    /// Auctions that are due are settled by the loop's next deadline. When the log
    /// cannot be read, this node does not act yet; the loop tries again.
    async fn take_lead(&mut self, shutdown: &CancellationToken) {
        let caught_up = tokio::select! {
            () = shutdown.cancelled() => return,
            caught_up = self.catch_up_with_store() => caught_up,
        };
        if let Err(e) = caught_up {
            tracing::error!(error = %e, "coordinator could not catch up with the log before leading; will retry");
            return;
        }
        let now = Instant::now();
        self.last_heard = self
            .managed_agents
            .iter()
            .filter(|id| self.projection.agent(id).is_some_and(|a| a.status != AgentStatus::Offline))
            .map(|id| (id.clone(), now))
            .collect();
        self.leading = true;
        tracing::info!(
            seq = self.cursor.position(),
            auctions = self.managed_auctions.len(),
            "this node is the coordinator leader"
        );
    }

    async fn catch_up_with_store(&mut self) -> Result<(), CursorError> {
        let head = self.store.bounds().await?.head;
        self.fold_until(head).await
    }

    /// Stops acting: another node may lead now.
    fn step_down(&mut self) {
        self.leading = false;
        self.last_heard.clear();
        tracing::warn!("this node is no longer the coordinator leader");
    }

    fn fold_step(&mut self, step: Result<Step, CursorError>) -> Result<(), CursorError> {
        match step? {
            Step::Events(events) => {
                for e in &events {
                    if e.source.as_ref() == self.settings.source {
                        match (&*e.event_type, e.task_id.as_deref(), e.agent_id.as_deref()) {
                            ("task.bidding", Some(t), _) => {
                                self.managed_auctions.insert(t.to_owned());
                            }
                            ("agent.joined", _, Some(a)) => {
                                self.managed_agents.insert(a.to_owned());
                            }
                            _ => {}
                        }
                    }
                    self.projection.apply(e);
                }
            }
            Step::Reset { oldest } => {
                // Retention removed events the fold had not read: start over from what
                // is left rather than fold a log with a hole in it.
                tracing::warn!(oldest, "swarm log was pruned under the coordinator; refolding");
                self.projection = self.projection.emptied();
            }
        }
        Ok(())
    }

    /// Folds until the cursor has passed `seq` (events this coordinator just committed,
    /// or the head of the log), whether or not the last events are swarm events.
    async fn fold_until(&mut self, seq: u64) -> Result<(), CursorError> {
        while self.cursor.position() < seq {
            let step = self.cursor.next_until(seq, FOLD_LIMIT).await;
            self.fold_step(step)?;
        }
        Ok(())
    }

    /// Commits events (each a JSON object as a producer would post it) and folds them.
    async fn emit(&mut self, events: Vec<Value>) -> Result<Vec<u64>, CommandError> {
        Ok(self.append(events).await?.iter().map(|o| o.seq).collect())
    }

    /// [`Self::emit`], answering what the writer did with each event.
    async fn append(&mut self, events: Vec<Value>) -> Result<Vec<Appended>, CommandError> {
        let mut new = Vec::with_capacity(events.len());
        for (i, mut e) in events.into_iter().enumerate() {
            e["source"] = json!(self.settings.source);
            let Value::Object(map) = e else { unreachable!("emit takes objects") };
            new.push(self.rules.server_event(i, map).map_err(|e| CommandError::Ingest(e.to_string()))?);
        }
        let outcomes = self.writer.append(new).await?;
        if let Some(last) = outcomes.iter().map(|o| o.seq).max() {
            self.fold_until(last).await.map_err(|e| CommandError::Ingest(e.to_string()))?;
        }
        Ok(outcomes)
    }

    fn heard(&mut self, agent_id: &str) {
        if self.managed_agents.contains(agent_id) {
            self.last_heard.insert(agent_id.to_owned(), Instant::now());
        }
    }

    fn online_agent(&self, agent_id: &str) -> Result<&super::projection::Agent, Rejected> {
        let agent = self.projection.agent(agent_id).ok_or_else(|| not_found_agent(agent_id))?;
        if agent.status == AgentStatus::Offline {
            return Err(Rejected::Conflict(format!("agent {agent_id:?} is offline; join again first")));
        }
        Ok(agent)
    }

    async fn handle(&mut self, command: Command) -> Result<Value, CommandError> {
        if !self.leading && !matches!(command, Command::Snapshot(_) | Command::Agent { .. }) {
            return Err(CommandError::NotLeader);
        }
        match command {
            Command::Snapshot(page) => Ok(self.cached_snapshot(page)),
            Command::Agent { agent_id } => {
                let agent = self.projection.agent(&agent_id).ok_or_else(|| not_found_agent(&agent_id))?;
                Ok(agent_view(agent))
            }
            Command::Join { name, agent_id, capabilities } => self.join(name, agent_id, capabilities).await,
            Command::Leave { agent_id } => {
                let agent = self.online_agent(&agent_id)?;
                let events = self.departure(&agent_id, &agent.name.clone(), "left");
                self.emit(events).await?;
                self.last_heard.remove(&agent_id);
                Ok(json!({ "agent_id": agent_id, "status": "offline" }))
            }
            Command::Status { agent_id, status } => {
                if !matches!(status.as_str(), "idle" | "busy") {
                    return Err(
                        Rejected::Invalid { field: "status", message: "must be \"idle\" or \"busy\"".into() }.into()
                    );
                }
                let name = self.online_agent(&agent_id)?.name.clone();
                self.heard(&agent_id);
                self.emit(vec![json!({
                    "event_type": "agent.status_changed", "agent_id": agent_id, "data": {"name": name, "status": status}
                })])
                .await?;
                Ok(json!({ "agent_id": agent_id, "status": status }))
            }
            Command::Heartbeat { agent_id } => {
                let status = self.online_agent(&agent_id)?.status;
                self.heard(&agent_id);
                Ok(json!({ "agent_id": agent_id, "status": status }))
            }
            Command::PostTask { description } => {
                check_text("description", &description, MAX_DESCRIPTION_CHARS)?;
                let mut task_id = short_id("task-");
                while self.projection.task(&task_id).is_some() {
                    task_id = short_id("task-");
                }
                let window = self.settings.bid_window;
                let closes_at = format_timestamp(now_ms() + window.as_millis() as i64);
                self.emit(vec![
                    json!({"event_type": "task.created", "task_id": task_id, "data": {"description": description}}),
                    json!({"event_type": "task.bidding", "task_id": task_id,
                           "data": {"closes_at": closes_at, "window_secs": window.as_secs_f64()}}),
                ])
                .await?;
                Ok(json!({ "task_id": task_id, "closes_at": closes_at }))
            }
            Command::Bid { task_id, agent_id, bid_sats } => {
                let sats =
                    auction::check_bid(bid_sats).map_err(|message| Rejected::Invalid { field: "bid_sats", message })?;
                let task = self.projection.task(&task_id).ok_or_else(|| not_found_task(&task_id))?;
                let name = self.online_agent(&agent_id)?.name.clone();
                let open = task.is_bidding() && task.closes_ms.is_none_or(|c| now_ms() < c);
                if !open {
                    return Err(Rejected::Conflict(format!("bidding on {task_id:?} is closed")).into());
                }
                if task.bids.iter().any(|b| b.agent_id == agent_id) {
                    return Err(Rejected::Conflict(format!("agent {agent_id:?} already bid on {task_id:?}")).into());
                }
                self.heard(&agent_id);
                let seqs = self
                    .emit(vec![json!({"event_type": "bid.submitted", "task_id": task_id, "agent_id": agent_id,
                                      "data": {"bid_sats": sats, "agent": name}})])
                    .await?;
                Ok(json!({ "task_id": task_id, "agent_id": agent_id, "bid_sats": sats, "seq": seqs[0] }))
            }
            Command::Start { task_id, agent_id } => {
                let winner = self.assignee(&task_id, &[TaskStatus::Assigned], agent_id.as_deref())?;
                self.heard(&winner);
                self.emit(vec![json!({"event_type": "task.started", "task_id": task_id, "agent_id": winner})]).await?;
                Ok(json!({ "task_id": task_id, "status": "started" }))
            }
            Command::Complete { task_id, result } => {
                let winner = self.assignee(&task_id, &[TaskStatus::Assigned, TaskStatus::Started], None)?;
                self.heard(&winner);
                self.emit(vec![json!({"event_type": "task.completed", "task_id": task_id, "agent_id": winner,
                                      "data": {"result": result}})])
                    .await?;
                Ok(json!({ "task_id": task_id, "status": "completed" }))
            }
            Command::Fail { task_id, reason } => {
                check_text("reason", &reason, MAX_DESCRIPTION_CHARS)?;
                let winner = self.assignee(&task_id, &[TaskStatus::Assigned, TaskStatus::Started], None)?;
                self.heard(&winner);
                self.emit(vec![json!({"event_type": "task.failed", "task_id": task_id, "agent_id": winner,
                                      "data": {"reason": reason}})])
                    .await?;
                Ok(json!({ "task_id": task_id, "status": "failed" }))
            }
            Command::Tool { task_id, tool_name, status, mut data } => {
                check_name("tool_name", &tool_name, MAX_NAME_CHARS)?;
                let event_type = match status.as_deref() {
                    None | Some("called") => "tool.called",
                    Some("completed") => "tool.completed",
                    Some("failed") => "tool.failed",
                    Some(_) => {
                        return Err(Rejected::Invalid {
                            field: "status",
                            message: "must be \"called\", \"completed\" or \"failed\"".into(),
                        }
                        .into());
                    }
                };
                let winner = self.assignee(&task_id, &[TaskStatus::Assigned, TaskStatus::Started], None)?;
                self.heard(&winner);
                data.insert("tool_name".into(), json!(tool_name));
                let seqs = self
                    .emit(vec![json!({"event_type": event_type, "task_id": task_id, "agent_id": winner, "data": data})])
                    .await?;
                Ok(json!({ "task_id": task_id, "event_type": event_type, "seq": seqs[0] }))
            }
        }
    }

    async fn join(
        &mut self,
        name: String,
        agent_id: Option<String>,
        capabilities: Vec<String>,
    ) -> Result<Value, CommandError> {
        check_name("name", &name, 64)?;
        if capabilities.len() > MAX_CAPABILITIES {
            return Err(
                Rejected::Invalid { field: "capabilities", message: format!("at most {MAX_CAPABILITIES}") }.into()
            );
        }
        for c in &capabilities {
            check_name("capabilities", c, 64)?;
        }
        let agent_id = match agent_id {
            Some(id) => {
                check_id("agent_id", &id)?;
                if self.projection.agent(&id).is_some_and(|a| a.status != AgentStatus::Offline) {
                    return Err(Rejected::Conflict(format!("agent {id:?} has already joined")).into());
                }
                id
            }
            None => {
                let slug: String = name
                    .to_lowercase()
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .take(40)
                    .collect();
                let mut id = short_id(&format!("{slug}-"));
                while self.projection.agent(&id).is_some() {
                    id = short_id(&format!("{slug}-"));
                }
                id
            }
        };
        self.emit(vec![json!({"event_type": "agent.joined", "agent_id": agent_id,
                               "data": {"name": name, "capabilities": capabilities}})])
            .await?;
        self.heard(&agent_id);
        Ok(json!({ "agent_id": agent_id }))
    }

    /// The agent a task is assigned to, if the task is in one of `states` (and, when
    /// `agent` is given, assigned to that agent).
    fn assignee(&self, task_id: &str, states: &[TaskStatus], agent: Option<&str>) -> Result<String, Rejected> {
        let task = self.projection.task(task_id).ok_or_else(|| not_found_task(task_id))?;
        if !states.contains(&task.status) || task.winner.is_none() {
            let state = serde_json::to_value(task.status).ok().and_then(|v| v.as_str().map(str::to_owned));
            return Err(Rejected::Conflict(format!(
                "task {task_id:?} is {}; this step needs it {}",
                state.unwrap_or_default(),
                states
                    .iter()
                    .filter_map(|s| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_owned)))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )));
        }
        let winner = task.winner.clone().unwrap_or_default();
        if let Some(a) = agent
            && a != winner
        {
            return Err(Rejected::Conflict(format!("task {task_id:?} is assigned to {winner:?}, not {a:?}")));
        }
        Ok(winner)
    }

    /// `agent.left` and the failure of each task the agent held.
    fn departure(&self, agent_id: &str, name: &str, reason: &str) -> Vec<Value> {
        let mut events = vec![json!({"event_type": "agent.left", "agent_id": agent_id,
                                     "data": {"name": name, "reason": reason}})];
        if let Some(agent) = self.projection.agent(agent_id) {
            for task_id in &agent.current_tasks {
                events.push(json!({"event_type": "task.failed", "task_id": task_id, "agent_id": agent_id,
                                   "data": {"reason": format!("agent {name} {}", if reason == "timeout" { "timed out" } else { "left" })}}));
            }
        }
        events
    }

    /// When the next managed auction closes.
    fn next_deadline(&self) -> Option<Instant> {
        let now = now_ms();
        self.managed_auctions
            .iter()
            .filter_map(|id| self.projection.task(id))
            .filter(|t| t.is_bidding())
            .map(|t| t.closes_ms.unwrap_or(now))
            .min()
            .map(|c| Instant::now() + Duration::from_millis(c.saturating_sub(now).max(0) as u64))
    }

    /// Settles every managed auction whose window has passed: `auction.closed`, then
    /// `task.assigned` or `task.failed`, in one commit.
    async fn settle_due(&mut self) {
        let now = now_ms();
        let mut due: Vec<String> = self
            .managed_auctions
            .iter()
            .filter(|id| {
                self.projection.task(id).is_some_and(|t| t.is_bidding() && t.closes_ms.is_none_or(|c| c <= now))
            })
            .cloned()
            .collect();
        due.sort();
        self.managed_auctions.retain(|id| self.projection.task(id).is_some_and(|t| t.is_bidding()));
        for task_id in due {
            let Some(task) = self.projection.task(&task_id) else { continue };
            let bids = task.bids.len();
            let mut events = Vec::with_capacity(2);
            let (closed_id, outcome_id) = settlement_ids(&task_id);
            match auction::settle(task, &self.projection) {
                Settlement::Assigned { agent_id, agent_name, bid_sats } => {
                    events.push(json!({"id": closed_id, "event_type": "auction.closed", "task_id": task_id,
                                       "data": {"bids": bids, "winner": agent_id, "winning_bid": bid_sats}}));
                    events.push(json!({"id": outcome_id, "event_type": "task.assigned", "task_id": task_id,
                                       "agent_id": agent_id, "data": {"bid_sats": bid_sats, "agent": agent_name}}));
                }
                Settlement::NoBids => {
                    events.push(json!({"id": closed_id, "event_type": "auction.closed", "task_id": task_id,
                                       "data": {"bids": bids}}));
                    events.push(json!({"id": outcome_id, "event_type": "task.failed", "task_id": task_id,
                                       "data": {"reason": "no bids received"}}));
                }
            }
            match self.append(events).await {
                Ok(appended) => self.check_settlement(&task_id, &appended).await,
                Err(e) => {
                    // The auction stays open in the projection, so the next deadline
                    // check retries it; nothing was half-written (one transaction).
                    tracing::error!(error = %e, task_id, "could not settle auction; will retry");
                    return;
                }
            }
            self.managed_auctions.remove(&task_id);
        }
    }

    /// Auctions of this coordinator whose `auction.closed` is in the log but whose
    /// outcome is not: settlements are committed whole, so only a settlement id held
    /// by another event leaves one so. Reported by every node once it has rebuilt the
    /// swarm from the log (a fact of the log, whichever node leads), so that the
    /// problem outlives the restart of the node that first met it.
    fn report_stuck_auctions(&self) {
        for t in self.managed_auctions.iter().filter_map(|id| self.projection.task(id)) {
            if t.auction_closed && t.status == TaskStatus::Bidding {
                let problem = format!(
                    "task {:?} was not settled: its auction closed without an outcome (an event holds the \
                     settlement id {:?}); the task stays bidding until an operator fails or cancels it",
                    t.task_id,
                    settlement_ids(&t.task_id).1
                );
                tracing::error!(task_id = %t.task_id, "{problem}");
                self.problems.report(problem);
            }
        }
    }

    /// A settlement event that came back a duplicate is expected only when this
    /// auction's settlement is already in the log (another node that believed it led
    /// wrote it). Any other event under that id means the task was never settled: an
    /// error an operator must see, since retrying would meet the same id.
    async fn check_settlement(&mut self, task_id: &str, appended: &[Appended]) {
        for a in appended.iter().filter(|a| a.duplicate) {
            let holder = match self.store.get_by_seq(a.seq).await {
                Ok(holder) => holder,
                Err(e) => {
                    tracing::error!(error = %e, task_id, seq = a.seq, "could not read the event holding a settlement id");
                    continue;
                }
            };
            let ours = holder.as_ref().is_some_and(|e| {
                e.source.as_ref() == self.settings.source
                    && e.task_id.as_deref() == Some(task_id)
                    && matches!(&*e.event_type, "auction.closed" | "task.assigned" | "task.failed")
            });
            if ours {
                continue;
            }
            let held_by = holder.map_or_else(
                || "an event no longer in the log".to_owned(),
                |e| format!("event {} ({} from {:?})", e.seq, e.event_type, e.source.as_ref()),
            );
            let problem = format!(
                "task {task_id:?} was not settled: its settlement id {:?} is held by {held_by}; the task stays \
                 bidding until an operator fails or cancels it",
                a.id
            );
            tracing::error!(task_id, id = %a.id, seq = a.seq, "{problem}");
            self.problems.report(problem);
        }
    }

    async fn time_out_silent_agents(&mut self) {
        let timeout = self.settings.agent_timeout;
        let silent: Vec<String> =
            self.last_heard.iter().filter(|(_, heard)| heard.elapsed() >= timeout).map(|(id, _)| id.clone()).collect();
        for agent_id in silent {
            let Some(agent) = self.projection.agent(&agent_id).filter(|a| a.status != AgentStatus::Offline) else {
                self.last_heard.remove(&agent_id);
                continue;
            };
            let events = self.departure(&agent_id, &agent.name.clone(), "timeout");
            match self.emit(events).await {
                Ok(_) => {
                    tracing::info!(agent_id, "agent timed out");
                    self.last_heard.remove(&agent_id);
                }
                Err(e) => tracing::error!(error = %e, agent_id, "could not time out agent; will retry"),
            }
        }
    }

    /// [`Coordinator::snapshot`], built at most once per seq and second for a page.
    fn cached_snapshot(&mut self, page: SwarmPage) -> Value {
        let seq = self.projection.seq;
        if let Some((cached_page, cached_seq, built, value)) = &self.snapshot_cache
            && *cached_page == page
            && *cached_seq == seq
            && built.elapsed() < SNAPSHOT_FRESH
        {
            return value.clone();
        }
        let value = self.snapshot(&page);
        self.snapshot_cache = Some((page, seq, Instant::now(), value.clone()));
        value
    }

    /// A page of the projection. Its work is bounded by the page, not by the swarm:
    /// tasks come from an index by creation, agents from a map by id.
    fn snapshot(&self, page: &SwarmPage) -> Value {
        let now = now_ms();
        let p = &self.projection;
        let agents_limit = page.agents_limit.min(MAX_PAGE);
        let mut agents: Vec<Value> =
            p.agents_after(page.agents_after.as_deref()).take(agents_limit + 1).map(agent_view).collect();
        let agents_next = (agents.len() > agents_limit).then(|| {
            agents.truncate(agents_limit);
            agents.last().map(|a| a["agent_id"].clone()).unwrap_or_default()
        });
        let tasks_limit = page.tasks_limit.min(MAX_PAGE);
        let mut tasks: Vec<&super::projection::Task> =
            p.tasks_newest_first(page.tasks_before).take(tasks_limit + 1).collect();
        let tasks_next = (tasks.len() > tasks_limit).then(|| {
            tasks.truncate(tasks_limit);
            tasks.last().map_or(0, |t| t.created_seq)
        });
        let tasks: Vec<Value> = tasks.into_iter().map(|t| serde_json::to_value(t).unwrap_or_default()).collect();
        let open_auctions = p.open_auctions().count();
        let auctions: Vec<Value> = p
            .open_auctions()
            .take(MAX_AUCTIONS)
            .map(|t| {
                json!({
                    "task_id": t.task_id,
                    "description": t.description,
                    "bids": t.bids,
                    "lowest_bid": t.best_bid(|_| true).map(|b| b.bid_sats),
                    "closes_at": t.closes_ms.map(format_timestamp),
                    "seconds_left": t.closes_ms.map(|c| (c - now).max(0) as f64 / 1000.0),
                })
            })
            .collect();
        json!({
            "seq": p.seq,
            "agents": agents,
            "agents_next": agents_next,
            "tasks": tasks,
            "tasks_next": tasks_next,
            "auctions": auctions,
            "auctions_more": open_auctions.saturating_sub(MAX_AUCTIONS),
            "totals": p.totals(),
        })
    }
}

/// An agent as the API and the pages show it, with its times in RFC 3339.
fn agent_view(a: &super::projection::Agent) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or_default();
    v["last_seen"] = json!(format_timestamp(a.last_seen_ms));
    v["joined_at"] = json!(format_timestamp(a.joined_ms));
    v
}

/// The ids of an auction's settlement events. Derived from the task, so settling the
/// same auction twice (two nodes that both think they lead) stores it once: the log's
/// idempotent ids make the second a duplicate. Long task ids are hashed to stay within
/// the id limit.
fn settlement_ids(task_id: &str) -> (String, String) {
    use sha2::Digest;
    let key = if task_id.len() <= 96 { task_id.to_owned() } else { hex::encode(sha2::Sha256::digest(task_id)) };
    (format!("{SERVER_ID_PREFIX}settle.{key}.closed"), format!("{SERVER_ID_PREFIX}settle.{key}.outcome"))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settlement_ids_depend_only_on_the_task_and_fit_the_id_limit() {
        assert_eq!(settlement_ids("task-1"), settlement_ids("task-1"));
        assert_ne!(settlement_ids("task-1").0, settlement_ids("task-2").0);
        let long = "t".repeat(crate::event::MAX_NAME_CHARS);
        let (closed, outcome) = settlement_ids(&long);
        assert!(closed.len() <= crate::event::MAX_ID_CHARS && outcome.len() <= crate::event::MAX_ID_CHARS);
        assert_ne!(closed, outcome);
        assert!(
            closed.starts_with(SERVER_ID_PREFIX) && outcome.starts_with(SERVER_ID_PREFIX),
            "ids producers cannot take"
        );
    }
}
