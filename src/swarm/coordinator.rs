//! The coordinator (DESIGN §7, §10): agents join and leave, tasks are auctioned, work is
//! started, tooled, completed, failed, cancelled or retried.
//!
//! One task owns the swarm state: a [`Projection`] folded from the log through its
//! own cursor, plus the liveness clock of the agents it manages. Commands arrive over
//! a bounded channel and are handled one at a time, so concurrent bids and an
//! auction's close are ordered: a bid is either committed before the close or refused
//! with 409, never half-applied. Every event goes through the same ingest rules and
//! writer as a producer's, and the state changes only by folding committed events.
//!
//! Each command is decide → append → fold: [`rules::decide`] says, without I/O, which
//! [`SwarmEvent`]s the command yields or why it is refused; this task appends them
//! through the writer and folds them back from the log before it answers. What is
//! left here is I/O: the channel, the writer, the cursor, leadership and timers, and
//! what `decide` must not make itself (new ids, the time, the bidding window).
//!
//! An operator's commands (DESIGN §10: cancel, retry, close an auction now, remove an
//! agent) go the same way. A command run for someone ([`CoordinatorHandle::run_as`])
//! logs events whose `data.actor` names them; settlements at a window's end and
//! time-outs are the coordinator's own and carry none, nor do the demo's personas.
//! Closing an auction now writes the settlement ids the window's end would, so the
//! two can never both settle it.
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

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::SwarmEvent;
use super::projection::{AgentStatus, Projection, ProjectionLimits, SWARM_TYPES, TaskStatus};
use super::rules::{self, Rejected, decide};
use super::snapshot::{AgentView, SwarmPage, SwarmSnapshot, snapshot};
use crate::cursor::{Cursor, CursorError, Step};
use crate::event::format_timestamp;
use crate::filter::{Filter, FilterSpec};
use crate::hub::{Hub, ReadLimit};
use crate::ingest::{IngestRules, SERVER_ID_PREFIX};
use crate::store::{Appended, Leadership, Store};
use crate::writer::{AppendError, WriterHandle};

/// Default bidding window (`--bid-window`).
pub(crate) const DEFAULT_BID_WINDOW: Duration = Duration::from_secs(15);
/// Default silence after which an agent is timed out (`--agent-timeout`).
pub(crate) const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(90);
/// Requests that may wait for the coordinator; beyond it callers get 503.
const COMMAND_QUEUE: usize = 1024;
/// How often agent liveness is checked.
const LIVENESS_TICK: Duration = Duration::from_secs(1);
/// How soon a node that gained leadership but could not read the log tries again.
const TAKEOVER_RETRY: Duration = Duration::from_secs(1);
/// Problems kept for `/readyz`; older ones are dropped (the log has them all).
const MAX_PROBLEMS: usize = 20;
/// What one fold step reads.
const FOLD_LIMIT: ReadLimit = ReadLimit { max_events: 5_000, max_bytes: 8 * 1024 * 1024 };
/// How long a built snapshot serves page views while the log does not move: the
/// seconds left in each auction are the only part that changes by itself.
const SNAPSHOT_FRESH: Duration = Duration::from_secs(1);

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

/// A command for the coordinator, as a client sends it. Checks beyond types happen
/// in [`rules::decide`], so every caller (HTTP, the demo) gets the same answers; the
/// coordinator only adds what `decide` must not make itself (new ids, the window).
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
    /// An operator removes an agent (`agent.left`, reason `removed`).
    Remove {
        agent_id: String,
    },
    /// An operator cancels a task; without a reason it is "no reason given".
    Cancel {
        task_id: String,
        reason: Option<String>,
    },
    /// An operator retries a failed or cancelled task as a new one.
    Retry {
        task_id: String,
    },
    /// An operator closes a task's auction now.
    Close {
        task_id: String,
    },
}

/// What a command did, as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// Join.
    Joined { agent_id: String },
    /// Leave (`offline`), status (what was reported), heartbeat (the agent's status).
    Agent { agent_id: String, status: AgentStatus },
    /// A task posted and its auction open.
    Posted { task_id: String, closes_at: String },
    /// A retry posted (`task_id`, new) and its auction open.
    Retried { task_id: String, retry_of: String, closes_at: String },
    /// A bid counted.
    Bid { task_id: String, agent_id: String, bid_sats: u64, seq: u64 },
    /// A task started, completed or failed.
    Task { task_id: String, status: TaskStatus },
    /// A tool call logged.
    Tool { task_id: String, event_type: &'static str, seq: u64 },
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

type Reply<T> = oneshot::Sender<Result<T, CommandError>>;

/// What the coordinator task is asked: a command (leader only), or a read of the
/// projection (any node).
enum Request {
    Command(Command, Option<String>, Reply<Answer>),
    Snapshot(SwarmPage, Reply<SwarmSnapshot>),
    Agent(String, Reply<AgentView>),
}

/// A cheap handle for sending commands.
#[derive(Clone)]
pub struct CoordinatorHandle {
    requests: mpsc::Sender<Request>,
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
    /// Runs `command` for no one in particular (the demo's persona agents): its
    /// events carry no `data.actor`.
    ///
    /// # Errors
    /// As [`CoordinatorHandle::run_as`].
    pub async fn run(&self, command: Command) -> Result<Answer, CommandError> {
        self.ask(|reply| Request::Command(command, None, reply)).await
    }

    /// Runs `command` asked by `actor` (the name of the token or session's token that
    /// sent it), which every event it logs carries as `data.actor`, and returns what
    /// it did.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when the swarm's rules refuse it, `Busy` when the
    /// queue is full, `Stopped` on shutdown, `Append` when the commit failed,
    /// `NotLeader` on a node that does not lead.
    pub async fn run_as(&self, actor: &str, command: Command) -> Result<Answer, CommandError> {
        self.ask(|reply| Request::Command(command, Some(actor.to_owned()), reply)).await
    }

    /// One page of the projection, as `GET /api/swarm` serves it.
    ///
    /// # Errors
    /// `Busy` when the queue is full, `Stopped` on shutdown.
    pub async fn snapshot(&self, page: SwarmPage) -> Result<SwarmSnapshot, CommandError> {
        self.ask(|reply| Request::Snapshot(page, reply)).await
    }

    /// One agent, as the agent page shows it.
    ///
    /// # Errors
    /// [`Rejected::NotFound`] when the projection does not hold it; `Busy`, `Stopped`.
    pub async fn agent(&self, agent_id: String) -> Result<AgentView, CommandError> {
        self.ask(|reply| Request::Agent(agent_id, reply)).await
    }

    async fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.requests.try_send(request(reply)).map_err(|e| match e {
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
pub(crate) fn spawn(
    settings: CoordinatorSettings,
    leadership: Leadership,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    writer: WriterHandle,
    rules: IngestRules,
    shutdown: CancellationToken,
) -> (CoordinatorHandle, tokio::task::JoinHandle<()>) {
    let (requests, rx) = mpsc::channel(COMMAND_QUEUE);
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
        deadlines: HashMap::new(),
        last_heard: HashMap::new(),
        snapshot_cache: None,
    };
    let task = tokio::spawn(coordinator.run(rx, shutdown));
    (CoordinatorHandle { requests, problems }, task)
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
    /// When each managed auction closes on this node's monotonic clock. The log says
    /// when in wall-clock time (`closes_ms`, which every node can read); it is turned
    /// into an instant once, when this node first meets the auction or takes the lead,
    /// so a wall clock stepped back or forward afterwards neither holds an auction
    /// open for the size of the step nor closes it early.
    deadlines: HashMap<String, Instant>,
    /// When each managed, online agent was last heard from.
    last_heard: HashMap<String, Instant>,
    /// The last snapshot built: its page, when it was built, and the snapshot (which
    /// holds its seq). Page views ask for the same page over and over; they share one
    /// build per seq.
    snapshot_cache: Option<(SwarmPage, Instant, SwarmSnapshot)>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn short_id(prefix: &str) -> String {
    use rand::Rng;
    format!("{prefix}{:08x}", rand::rng().random::<u32>())
}

impl Coordinator {
    async fn run(mut self, mut requests: mpsc::Receiver<Request>, shutdown: CancellationToken) {
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
                // No deadline, no timer: the guard disables the branch (the instant is unused).
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => self.settle_due().await,
                request = requests.recv() => {
                    let Some(request) = request else { break };
                    self.serve(request).await;
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
        // The previous leader's clock set these auctions' instants, if any: read their
        // wall-clock close times afresh.
        self.deadlines.clear();
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

    /// Decides `command` against the projection and, when it yields events, commits
    /// and folds them, answering what the writer did with each.
    async fn act(&mut self, command: rules::Command, actor: Option<&str>) -> Result<Vec<Appended>, CommandError> {
        let events = decide(&self.projection, command, now_ms())?;
        self.append(&events, None, actor).await
    }

    /// Commits events and folds them. A settlement's two events take the ids
    /// [`settlement_ids`] derives from its task. Each event's `data.actor` is `actor`,
    /// who asked for the command; events the coordinator logs by its own clock
    /// (settlements at a window's end, time-outs) and the demo's have none, and their
    /// `source` says who wrote them.
    async fn append(
        &mut self,
        events: &[SwarmEvent],
        ids: Option<(String, String)>,
        actor: Option<&str>,
    ) -> Result<Vec<Appended>, CommandError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = ids.map(|(closed, outcome)| [closed, outcome].into_iter());
        let mut new = Vec::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            let mut object = e.to_json();
            if let Some(actor) = actor {
                // Who asked is about the request, not the swarm's state: it is added
                // here, at the edge with the log, and no fold reads it.
                let data = object.entry("data").or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(data) = data {
                    data.insert("actor".into(), Value::String(actor.to_owned()));
                }
            }
            if let Some(id) = ids.as_mut().and_then(Iterator::next) {
                object.insert("id".into(), Value::String(id));
            }
            object.insert("source".into(), Value::String(self.settings.source.clone()));
            new.push(self.rules.server_event(i, object).map_err(|e| CommandError::Ingest(e.to_string()))?);
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

    async fn serve(&mut self, request: Request) {
        // A caller that gave up waiting needs no answer; a command took effect anyway.
        match request {
            Request::Command(command, actor, reply) => {
                let answer = self.handle(command, actor.as_deref()).await;
                let _ = reply.send(answer);
            }
            Request::Snapshot(page, reply) => {
                let _ = reply.send(Ok(self.cached_snapshot(page)));
            }
            Request::Agent(agent_id, reply) => {
                let agent = self.projection.agent(&agent_id).map(AgentView::from);
                let _ = reply.send(agent.ok_or_else(|| Rejected::NotFound(format!("no agent {agent_id:?}")).into()));
            }
        }
    }

    /// The agent a task is assigned to: whom the task's steps are heard from.
    fn winner(&self, task_id: &str) -> Option<String> {
        self.projection.task(task_id).and_then(|t| t.winner.clone())
    }

    async fn handle(&mut self, command: Command, actor: Option<&str>) -> Result<Answer, CommandError> {
        if !self.leading {
            return Err(CommandError::NotLeader);
        }
        match command {
            Command::Join { name, agent_id, capabilities } => {
                let agent_id = agent_id.unwrap_or_else(|| self.new_agent_id(&name));
                self.act(rules::Command::Join { name, agent_id: agent_id.clone(), capabilities }, actor).await?;
                self.heard(&agent_id);
                Ok(Answer::Joined { agent_id })
            }
            Command::Leave { agent_id } => {
                self.act(rules::Command::Leave { agent_id: agent_id.clone() }, actor).await?;
                self.last_heard.remove(&agent_id);
                Ok(Answer::Agent { agent_id, status: AgentStatus::Offline })
            }
            Command::Status { agent_id, status } => {
                let events =
                    decide(&self.projection, rules::Command::Status { agent_id: agent_id.clone(), status }, now_ms())?;
                self.heard(&agent_id);
                let status = match events.first() {
                    Some(SwarmEvent::AgentStatusChanged { status: Some(status), .. }) => *status,
                    _ => AgentStatus::Idle,
                };
                self.append(&events, None, actor).await?;
                Ok(Answer::Agent { agent_id, status })
            }
            Command::Heartbeat { agent_id } => {
                self.act(rules::Command::Heartbeat { agent_id: agent_id.clone() }, actor).await?;
                self.heard(&agent_id);
                let status = self.projection.agent(&agent_id).map_or(AgentStatus::Idle, |a| a.status);
                Ok(Answer::Agent { agent_id, status })
            }
            Command::PostTask { description } => {
                let task_id = self.new_task_id();
                let window = self.settings.bid_window;
                let events = decide(
                    &self.projection,
                    rules::Command::PostTask { task_id: task_id.clone(), description, window },
                    now_ms(),
                )?;
                let closes_at = closes_at(&events);
                self.append(&events, None, actor).await?;
                Ok(Answer::Posted { task_id, closes_at })
            }
            Command::Bid { task_id, agent_id, bid_sats } => {
                let events = decide(
                    &self.projection,
                    rules::Command::Bid { task_id: task_id.clone(), agent_id: agent_id.clone(), bid_sats },
                    now_ms(),
                )?;
                self.heard(&agent_id);
                let appended = self.append(&events, None, actor).await?;
                let seq = appended.first().map_or(0, |a| a.seq);
                Ok(Answer::Bid { task_id, agent_id, bid_sats, seq })
            }
            Command::Start { task_id, agent_id } => {
                self.task_step(rules::Command::Start { task_id: task_id.clone(), agent_id }, &task_id, actor).await?;
                Ok(Answer::Task { task_id, status: TaskStatus::Started })
            }
            Command::Complete { task_id, result } => {
                self.task_step(rules::Command::Complete { task_id: task_id.clone(), result }, &task_id, actor).await?;
                Ok(Answer::Task { task_id, status: TaskStatus::Completed })
            }
            Command::Fail { task_id, reason } => {
                self.task_step(rules::Command::Fail { task_id: task_id.clone(), reason }, &task_id, actor).await?;
                Ok(Answer::Task { task_id, status: TaskStatus::Failed })
            }
            Command::Tool { task_id, tool_name, status, data } => {
                let command = rules::Command::Tool { task_id: task_id.clone(), tool_name, status, data };
                let (events, appended) = self.task_step(command, &task_id, actor).await?;
                let event_type = events.first().map_or("tool.called", SwarmEvent::event_type);
                let seq = appended.first().map_or(0, |a| a.seq);
                Ok(Answer::Tool { task_id, event_type, seq })
            }
            Command::Remove { agent_id } => {
                self.act(rules::Command::Remove { agent_id: agent_id.clone() }, actor).await?;
                self.last_heard.remove(&agent_id);
                Ok(Answer::Agent { agent_id, status: AgentStatus::Offline })
            }
            Command::Cancel { task_id, reason } => {
                let reason = reason.unwrap_or_else(|| "no reason given".to_owned());
                self.act(rules::Command::Cancel { task_id: task_id.clone(), reason }, actor).await?;
                self.managed_auctions.remove(&task_id);
                Ok(Answer::Task { task_id, status: TaskStatus::Cancelled })
            }
            Command::Retry { task_id: retry_of } => {
                let task_id = self.new_task_id();
                let window = self.settings.bid_window;
                let events = if self.projection.task(&retry_of).is_some() {
                    let command =
                        rules::Command::Retry { task_id: task_id.clone(), retry_of: retry_of.clone(), window };
                    decide(&self.projection, command, now_ms())?
                } else {
                    // An older task than the projection keeps: the board has it.
                    let (found, _) = self
                        .store
                        .board_rows(vec![retry_of.clone()], Vec::new())
                        .await
                        .map_err(|e| AppendError::Store(Arc::new(e)))?;
                    let original = found.first().ok_or_else(|| Rejected::NotFound(format!("no task {retry_of:?}")))?;
                    rules::retry_from_board(task_id.clone(), original, window, now_ms())?
                };
                let closes_at = closes_at(&events);
                self.append(&events, None, actor).await?;
                Ok(Answer::Retried { task_id, retry_of, closes_at })
            }
            Command::Close { task_id } => {
                let events = decide(&self.projection, rules::Command::Close { task_id: task_id.clone() }, now_ms())?;
                // The ids of a settlement at the window's end: closed once, whichever
                // comes first, even with two nodes that both believe they lead.
                let appended = self.append(&events, Some(settlement_ids(&task_id)), actor).await?;
                self.check_settlement(&task_id, &appended).await;
                self.managed_auctions.remove(&task_id);
                let status = self.projection.task(&task_id).map_or(TaskStatus::Failed, |t| t.status);
                Ok(Answer::Task { task_id, status })
            }
        }
    }

    /// A step of an assigned task: its winner is heard from, then the step is logged.
    /// Answers the events logged and what the writer did with each.
    async fn task_step(
        &mut self,
        command: rules::Command,
        task_id: &str,
        actor: Option<&str>,
    ) -> Result<(Vec<SwarmEvent>, Vec<Appended>), CommandError> {
        let events = decide(&self.projection, command, now_ms())?;
        if let Some(winner) = self.winner(task_id) {
            self.heard(&winner);
        }
        let appended = self.append(&events, None, actor).await?;
        Ok((events, appended))
    }

    /// A new task's id, no task's id yet.
    fn new_task_id(&self) -> String {
        let mut task_id = short_id("task-");
        while self.projection.task(&task_id).is_some() {
            task_id = short_id("task-");
        }
        task_id
    }

    /// An id for an agent that did not ask for one: its name's letters and digits and a
    /// random suffix, no agent's id yet.
    fn new_agent_id(&self, name: &str) -> String {
        let slug: String =
            name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(40).collect();
        let mut id = short_id(&format!("{slug}-"));
        while self.projection.agent(&id).is_some() {
            id = short_id(&format!("{slug}-"));
        }
        id
    }

    /// When the next managed auction closes, on the monotonic clock; each auction's
    /// instant is fixed the first time it is asked for (see `deadlines`).
    fn next_deadline(&mut self) -> Option<Instant> {
        let (wall, now) = (now_ms(), Instant::now());
        let mut next: Option<Instant> = None;
        for id in &self.managed_auctions {
            let Some(task) = self.projection.task(id).filter(|t| t.is_bidding()) else { continue };
            let left = task.closes_ms.map_or(0, |c| c.saturating_sub(wall).max(0) as u64);
            let at = *self.deadlines.entry(id.clone()).or_insert_with(|| now + Duration::from_millis(left));
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    /// Settles every managed auction whose window has passed on the monotonic clock:
    /// `auction.closed`, then `task.assigned` or `task.failed`, in one commit.
    async fn settle_due(&mut self) {
        // Fixes the instants of auctions not met yet.
        self.next_deadline();
        let now = Instant::now();
        let mut due: Vec<(String, Option<i64>)> = self
            .managed_auctions
            .iter()
            .filter(|id| self.deadlines.get(*id).is_some_and(|at| *at <= now))
            .filter_map(|id| self.projection.task(id).filter(|t| t.is_bidding()).map(|t| (id.clone(), t.closes_ms)))
            .collect();
        due.sort();
        self.managed_auctions.retain(|id| self.projection.task(id).is_some_and(|t| t.is_bidding()));
        self.deadlines.retain(|id, _| self.managed_auctions.contains(id));
        for (task_id, closes_ms) in due {
            // The window has passed by this node's monotonic clock; a wall clock set
            // back since must not make the rules think it still open.
            let now_ms = now_ms().max(closes_ms.unwrap_or(i64::MIN));
            let command = rules::Command::Settle { task_id: task_id.clone() };
            let Ok(events) = decide(&self.projection, command, now_ms) else {
                continue;
            };
            match self.append(&events, Some(settlement_ids(&task_id)), None).await {
                Ok(appended) => self.check_settlement(&task_id, &appended).await,
                Err(e) => {
                    // The auction stays open in the projection, so the next deadline
                    // check retries it; nothing was half-written (one transaction).
                    tracing::error!(error = %e, task_id, "could not settle auction; will retry");
                    return;
                }
            }
            self.managed_auctions.remove(&task_id);
            self.deadlines.remove(&task_id);
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
            // Refused when the agent is gone already: there is nothing left to time out.
            let Ok(events) = decide(&self.projection, rules::Command::TimeOut { agent_id: agent_id.clone() }, now_ms())
            else {
                self.last_heard.remove(&agent_id);
                continue;
            };
            match self.append(&events, None, None).await {
                Ok(_) => {
                    tracing::info!(agent_id, "agent timed out");
                    self.last_heard.remove(&agent_id);
                }
                Err(e) => tracing::error!(error = %e, agent_id, "could not time out agent; will retry"),
            }
        }
    }

    /// [`snapshot`], built at most once per seq and second for a page.
    fn cached_snapshot(&mut self, page: SwarmPage) -> SwarmSnapshot {
        if let Some((cached_page, built, cached)) = &self.snapshot_cache
            && *cached_page == page
            && cached.seq == self.projection.seq
            && built.elapsed() < SNAPSHOT_FRESH
        {
            return cached.clone();
        }
        let built = snapshot(&self.projection, &page, now_ms());
        self.snapshot_cache = Some((page, Instant::now(), built.clone()));
        built
    }
}

/// When the auction a new task's events open closes, as the API writes it.
fn closes_at(events: &[SwarmEvent]) -> String {
    events
        .iter()
        .find_map(|e| match e {
            SwarmEvent::TaskBidding { closes_ms, .. } => *closes_ms,
            _ => None,
        })
        .map(format_timestamp)
        .unwrap_or_default()
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
