//! `serve --demo`: a small living swarm, so a newcomer sees the feed move at once.
//!
//! Persona agents join through the coordinator, watch the feed for auctions through a
//! cursor (as any client would), bid in their own style, work on what they win (tool
//! calls, then success or failure) and now and then leave and come back. A poster
//! adds tasks at a steady pace. Everything goes through [`CoordinatorHandle`], the
//! same path the HTTP API uses; the demo has no back door into the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::coordinator::{Answer, Command, CommandError, CoordinatorHandle};
use super::events::SwarmEvent;
use crate::cursor::{Cursor, Step};
use crate::event::Event;
use crate::filter::{Filter, FilterSpec};
use crate::hub::{Hub, ReadLimit};
use crate::store::Store;

/// Default seconds between demo tasks (`--demo-task-interval`).
pub(crate) const DEFAULT_TASK_INTERVAL: Duration = Duration::from_secs(6);
/// How often a persona says it is alive; well inside the default agent timeout.
const HEARTBEAT: Duration = Duration::from_secs(20);
const CURSOR_LIMIT: ReadLimit = ReadLimit { max_events: 100, max_bytes: 1 << 20 };

#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Time between posted tasks. Default [`DEFAULT_TASK_INTERVAL`].
    pub task_interval: Duration,
}

impl Default for DemoSettings {
    fn default() -> Self {
        DemoSettings { task_interval: DEFAULT_TASK_INTERVAL }
    }
}

/// A demo agent's character.
struct Persona {
    id: &'static str,
    name: &'static str,
    capabilities: &'static [&'static str],
    /// Typical bid, sats.
    base_bid: u64,
    /// Bid spread as a fraction of `base_bid`.
    spread: f64,
    /// Chance of bidding on a task outside its capabilities.
    curiosity: f64,
    /// Chance a task it works on succeeds.
    reliability: f64,
    /// Tools it reaches for.
    tools: &'static [&'static str],
}

const PERSONAS: &[Persona] = &[
    Persona {
        id: "echo",
        name: "Echo",
        capabilities: &["summarise", "search"],
        base_bid: 40,
        spread: 0.2,
        curiosity: 0.3,
        reliability: 0.95,
        tools: &["web_search", "read_url"],
    },
    Persona {
        id: "forge",
        name: "Forge",
        capabilities: &["code", "build", "test"],
        base_bid: 120,
        spread: 0.3,
        curiosity: 0.1,
        reliability: 0.85,
        tools: &["run_tests", "compile", "git_diff"],
    },
    Persona {
        id: "seer",
        name: "Seer",
        capabilities: &["analyse", "forecast"],
        base_bid: 200,
        spread: 0.1,
        curiosity: 0.2,
        reliability: 0.97,
        tools: &["query_db", "plot"],
    },
    Persona {
        id: "scout",
        name: "Scout",
        capabilities: &["search", "scrape", "monitor"],
        base_bid: 25,
        spread: 0.5,
        curiosity: 0.6,
        reliability: 0.7,
        tools: &["fetch", "web_search"],
    },
    Persona {
        id: "quill",
        name: "Quill",
        capabilities: &["write", "summarise", "translate"],
        base_bid: 60,
        spread: 0.25,
        curiosity: 0.25,
        reliability: 0.9,
        tools: &["spellcheck", "translate"],
    },
    Persona {
        id: "bolt",
        name: "Bolt",
        capabilities: &["build", "deploy", "monitor"],
        base_bid: 90,
        spread: 0.4,
        curiosity: 0.15,
        reliability: 0.8,
        tools: &["deploy", "healthcheck"],
    },
];

/// Tasks the poster picks from, with the capability each needs.
const TASKS: &[(&str, &str)] = &[
    ("Summarise yesterday's agent error logs", "summarise"),
    ("Search for recent papers on auction-based task allocation", "search"),
    ("Fix the flaky integration test in the payments module", "code"),
    ("Build the release candidate for v2.3", "build"),
    ("Forecast next week's task volume", "forecast"),
    ("Analyse bid prices across the last 100 auctions", "analyse"),
    ("Scrape the status pages of our upstream providers", "scrape"),
    ("Write release notes for the dashboard update", "write"),
    ("Translate the onboarding guide into Spanish", "translate"),
    ("Deploy the new relay to the staging cluster", "deploy"),
    ("Monitor the Lightning node's channel balances", "monitor"),
    ("Run the test suite against the new storage engine", "test"),
];

/// Starts the demo swarm; it stops when `shutdown` fires.
pub(crate) fn spawn(
    settings: DemoSettings,
    coordinator: CoordinatorHandle,
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut set = JoinSet::new();
        for persona in PERSONAS {
            let agent = Agent {
                persona,
                coordinator: coordinator.clone(),
                rng: StdRng::from_os_rng(),
                cursor: Cursor::new(hub.clone(), store.clone(), watch_filter(), None),
                descriptions: HashMap::new(),
            };
            set.spawn(agent.run(shutdown.clone()));
        }
        set.spawn(post_tasks(settings, coordinator, shutdown.clone()));
        while let Some(done) = set.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a demo task failed");
            }
        }
        tracing::info!("demo swarm stopped");
    })
}

fn watch_filter() -> Filter {
    Filter::from_spec(FilterSpec {
        types: vec!["task.created".into(), "task.bidding".into(), "task.assigned".into()],
        ..FilterSpec::default()
    })
    // Constant, valid types.
    .expect("valid demo filter")
}

async fn post_tasks(settings: DemoSettings, coordinator: CoordinatorHandle, shutdown: CancellationToken) {
    let mut rng = StdRng::from_os_rng();
    let mut tick = tokio::time::interval(settings.task_interval);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let (description, _) = TASKS[rng.random_range(0..TASKS.len())];
                if let Err(e) = coordinator.run(Command::PostTask { description: description.into() }).await {
                    tracing::debug!(error = %e, "demo could not post a task");
                }
            }
        }
    }
}

struct Agent {
    persona: &'static Persona,
    coordinator: CoordinatorHandle,
    rng: StdRng,
    cursor: Cursor,
    /// Descriptions of tasks seen created and not yet bid on; bounded by
    /// [`MAX_REMEMBERED_TASKS`].
    descriptions: HashMap<String, String>,
}

/// Task descriptions a persona remembers between `task.created` and `task.bidding`.
const MAX_REMEMBERED_TASKS: usize = 64;

impl Agent {
    async fn command(&self, command: Command) -> Result<Answer, CommandError> {
        let result = self.coordinator.run(command).await;
        if let Err(e) = &result {
            tracing::debug!(agent = self.persona.id, error = %e, "demo command refused");
        }
        result
    }

    async fn join(&self) {
        let p = self.persona;
        let _ = self
            .command(Command::Join {
                name: p.name.into(),
                agent_id: Some(p.id.into()),
                capabilities: p.capabilities.iter().map(|c| (*c).to_owned()).collect(),
            })
            .await;
    }

    async fn run(mut self, shutdown: CancellationToken) {
        self.join().await;
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            // About once every few minutes a persona steps away for a while.
            let wander = Duration::from_secs(self.rng.random_range(120..360));
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = heartbeat.tick() => {
                    if self.command(Command::Heartbeat { agent_id: self.persona.id.into() }).await.is_err() {
                        self.join().await;
                    }
                }
                () = tokio::time::sleep(wander) => {
                    let _ = self.command(Command::Leave { agent_id: self.persona.id.into() }).await;
                    let away = Duration::from_secs(self.rng.random_range(10..40));
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(away) => self.join().await,
                    }
                }
                step = self.cursor.next(CURSOR_LIMIT) => {
                    let Ok(Step::Events(events)) = step else { continue };
                    for e in events {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = self.react(&e) => {}
                        }
                    }
                }
            }
        }
    }

    async fn react(&mut self, event: &Event) {
        match SwarmEvent::decode(event) {
            Some(SwarmEvent::TaskCreated { task_id, description, .. }) => {
                if self.descriptions.len() >= MAX_REMEMBERED_TASKS {
                    self.descriptions.clear();
                }
                self.descriptions.insert(task_id, description.to_lowercase());
            }
            Some(SwarmEvent::TaskBidding { task_id, closes_ms: Some(closes), .. }) => {
                self.maybe_bid(&task_id, closes).await
            }
            Some(SwarmEvent::TaskAssigned { task_id, agent_id, .. }) if agent_id == self.persona.id => {
                self.work(&task_id).await;
            }
            _ => {}
        }
    }

    async fn maybe_bid(&mut self, task_id: &str, closes: i64) {
        let p = self.persona;
        let left_ms = closes - chrono::Utc::now().timestamp_millis();
        if left_ms < 300 {
            return;
        }
        let description = self.descriptions.remove(task_id).unwrap_or_default();
        let needed = TASKS.iter().find(|(d, _)| d.to_lowercase() == description).map(|(_, c)| *c);
        let fits = needed.is_some_and(|c| p.capabilities.contains(&c));
        if !fits && !self.rng.random_bool(p.curiosity) {
            return;
        }
        // Think for a moment, but bid well inside the window.
        let think = self.rng.random_range(200..(left_ms as u64 * 2 / 3).clamp(300, 6_000));
        tokio::time::sleep(Duration::from_millis(think)).await;
        let jitter = 1.0 + self.rng.random_range(-p.spread..=p.spread);
        let premium = if fits { 1.0 } else { 1.5 };
        let bid_sats = ((p.base_bid as f64) * jitter * premium).round().max(1.0) as u64;
        let _ = self.command(Command::Bid { task_id: task_id.into(), agent_id: p.id.into(), bid_sats }).await;
    }

    async fn work(&mut self, task_id: &str) {
        let p = self.persona;
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(300..1500))).await;
        if self.command(Command::Start { task_id: task_id.into(), agent_id: Some(p.id.into()) }).await.is_err() {
            return;
        }
        for _ in 0..self.rng.random_range(1..=3) {
            let tool = p.tools[self.rng.random_range(0..p.tools.len())];
            let mut args = Map::new();
            args.insert("attempt".into(), json!(1));
            let _ = self
                .command(Command::Tool { task_id: task_id.into(), tool_name: tool.into(), status: None, data: args })
                .await;
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(500..2500))).await;
            let ok = self.rng.random_bool(0.9);
            let mut outcome = Map::new();
            outcome.insert("duration_ms".into(), json!(self.rng.random_range(40..900)));
            if !ok {
                outcome.insert("error".into(), json!("upstream timed out"));
            }
            let status = if ok { "completed" } else { "failed" };
            let _ = self
                .command(Command::Tool {
                    task_id: task_id.into(),
                    tool_name: tool.into(),
                    status: Some(status.into()),
                    data: outcome,
                })
                .await;
        }
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(500..2000))).await;
        let command = if self.rng.random_bool(p.reliability) {
            Command::Complete { task_id: task_id.into(), result: Some(json!(format!("{} finished the job", p.name))) }
        } else {
            Command::Fail { task_id: task_id.into(), reason: "could not reproduce the issue".into() }
        };
        let _ = self.command(command).await;
    }
}
