//! Assembling and running the server: store, hub, writer, router, listener.
//!
//! [`Application::build`] binds first (port 0 works; [`Application::addr`] tells the
//! real one) so tests and `main` share one path. [`Application::run`] serves until the
//! shutdown token fires, then stops in order: stop accepting and close every stream,
//! wait for in-flight requests, and only then let the writer commit its queue and stop.
//! It also supervises the long-running tasks: one that ends before shutdown stops the
//! server the same way, and `run` returns [`RunError::TaskEnded`] naming it (crash-only:
//! a supervisor restarts the process).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

use crate::auth::{BootstrapError, Issued, Tokens, bootstrap_admin, follow_revocations};
use crate::config::{Config, ConfigError};
use crate::http::{AppState, Shared, router};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::store::{CommitFeed, StoreError};
use crate::tls::ServerTls;
use crate::writer::{self, Fanout};
use crate::{follower, store};

/// Connections the kernel queues, accepted but not yet taken by the accept loop; the
/// kernel caps it at `net.core.somaxconn` (4096 here). `TcpListener::bind` asked for
/// 128: 500 viewers connecting at once overflowed it (`TcpExtListenOverflows`), each
/// dropped handshake waited a second for the client to retry, and 10 000 subscriptions
/// took 15.7–17.2 s to open against nats-server's 1.1–1.2 s (it asks for somaxconn).
/// With 4096: 0.9–1.3 s and no overflow (`idle-versus-nats --connections 10000
/// --ramp 500`, old and new binary alternately, 2026-12-05).
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`], `SO_REUSEADDR` set as `TcpListener::bind`
/// sets it (a restart need not wait out the old sockets' `TIME_WAIT`).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The webhooks' HTTP client could not be built.
    #[error("{0}")]
    Webhooks(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    tasks: Tasks,
    admin: Option<Issued>,
    /// The certificate served with `--tls-cert`, if any.
    tls: Option<ServerTls>,
}

/// The long-running tasks besides the listener, each with its own stop signal so that
/// they stop in order: the demo with the listener, then the coordinator once no
/// request can reach it, then the writer once nothing can produce, then the follower
/// (of a shared log) once the writer's last commits are published.
struct Tasks {
    writer: Supervised,
    writer_stop: CancellationToken,
    follower: Option<(Supervised, CancellationToken)>,
    coordinator: Supervised,
    /// The alert evaluator; it appends events, so it stops with the coordinator,
    /// before the writer.
    alerts: Supervised,
    coordinator_stop: CancellationToken,
    demo: Option<Supervised>,
    retention: Option<Supervised>,
    /// Folds the log into the task and agent boards; stops with the listener.
    board: Supervised,
    /// Stores snapshots of the swarm projection for `?at=`; stops with the listener.
    history: Supervised,
    /// Indexes committed events for search, behind the writer; stops with the listener.
    search: Supervised,
    /// Keeps the revoked-token set current (notifications and the periodic re-read);
    /// stops with the listener.
    revocations: Supervised,
    /// Delivers webhooks while this node leads; stops with the listener.
    webhooks: Supervised,
}

/// A long-running task by name. Each runs until its stop signal: one that ends
/// before it has failed, and the server stops rather than serve without it.
struct Supervised {
    name: &'static str,
    /// `None` once the task has been seen to end.
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Supervised {
    fn new(name: &'static str, handle: tokio::task::JoinHandle<()>) -> Self {
        Supervised { name, handle: Some(handle) }
    }

    /// Completes when the task ends, with why; never, once it has been seen to end.
    /// Cancel-safe.
    async fn ended(&mut self) -> (&'static str, String) {
        let Some(handle) = self.handle.as_mut() else { return std::future::pending().await };
        let result = handle.await;
        self.handle = None;
        let why = match result {
            Ok(()) => "it returned; its log says why".to_owned(),
            Err(e) => e.to_string(),
        };
        (self.name, why)
    }

    /// Waits for the task to finish after its stop signal.
    async fn join(self) {
        if let Some(handle) = self.handle
            && let Err(e) = handle.await
        {
            tracing::error!(task = self.name, error = %e, "task failed");
        }
    }
}

/// Completes when `task` (if there is one) ends; never when there is none.
async fn ended_if_any(task: Option<&mut Supervised>) -> (&'static str, String) {
    match task {
        Some(task) => task.ended().await,
        None => std::future::pending().await,
    }
}

impl Tasks {
    /// Completes when any long-running task ends, naming it and why. Cancel-safe.
    async fn first_to_end(&mut self) -> (&'static str, String) {
        tokio::select! {
            ended = self.writer.ended() => ended,
            ended = self.coordinator.ended() => ended,
            ended = self.alerts.ended() => ended,
            ended = self.revocations.ended() => ended,
            ended = self.webhooks.ended() => ended,
            ended = ended_if_any(self.follower.as_mut().map(|(f, _)| f)) => ended,
            ended = ended_if_any(self.retention.as_mut()) => ended,
            ended = self.board.ended() => ended,
            ended = self.history.ended() => ended,
            ended = self.search.ended() => ended,
            ended = ended_if_any(self.demo.as_mut()) => ended,
        }
    }
}

/// Why [`Application::run`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Serve(#[from] std::io::Error),
    /// Crash-only: a supervisor restarts the process, which rebuilds every task.
    #[error("the {task} task ended before shutdown ({why}); swarmfeed stopped")]
    TaskEnded { task: &'static str, why: String },
}

impl Application {
    /// Opens the store, starts the writer and binds the listener.
    ///
    /// # Errors
    /// The configuration is invalid, the store cannot be opened, or the address
    /// cannot be bound.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        // Before the store: a certificate that cannot be used is a mistake to report
        // at once, not after migrations have run.
        let tls = config.tls.clone().map(ServerTls::load).transpose()?;
        let store =
            store::open(&config.data_dir, config.database.as_deref(), config.read_connections, config.store_timeout)
                .await?;
        let admin = if config.no_auth { None } else { bootstrap_admin(store.as_ref(), &config.data_dir).await? };
        // Listening starts before the head is read, so a commit of another node in
        // between is announced, not missed (the follower's timer would catch it too).
        let feed = store.commit_feed().await?;
        let revocation_feed = store.revocation_feed().await?;
        let bounds = store.bounds().await?;
        let hub = Arc::new(Hub::new(bounds, config.ring_capacity));
        let metrics = Arc::new(Metrics::default());
        let (fanout, follower) = match feed {
            CommitFeed::OnlyWriter => (Fanout::Direct, None),
            CommitFeed::Shared(signal) => {
                let stop = CancellationToken::new();
                let (handle, task) = follower::spawn(
                    Arc::clone(&hub),
                    Arc::clone(&store),
                    signal,
                    follower::CATCH_UP_INTERVAL,
                    stop.clone(),
                );
                (Fanout::Follower(handle), Some((task, stop)))
            }
        };
        let writer_stop = CancellationToken::new();
        let (writer, writer_task) = writer::spawn(
            store.writer().await?,
            Arc::clone(&hub),
            fanout,
            Arc::clone(&metrics),
            config.writer.clone(),
            writer_stop.clone(),
        );
        // One election for the coordinator and the alert evaluator: the node that
        // leads does both.
        let leadership = store.leadership().await?;
        let webhook_leadership = leadership.follower();
        let coordinator_stop = CancellationToken::new();
        let (alerts, alerts_task) = crate::alert::spawn(
            crate::alert::Parts {
                hub: Arc::clone(&hub),
                store: Arc::clone(&store),
                writer: writer.clone(),
                ingest: config.ingest.clone(),
                leadership: leadership.clone(),
            },
            coordinator_stop.clone(),
        );
        let (coordinator, coordinator_task) = crate::swarm::coordinator::spawn(
            config.coordinator.clone(),
            leadership,
            Arc::clone(&hub),
            Arc::clone(&store),
            writer.clone(),
            config.ingest.clone(),
            coordinator_stop.clone(),
        );
        let listener = listen(config.bind).map_err(|source| StartError::Bind { addr: config.bind, source })?;
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.bind, source })?;
        tracing::info!(
            %addr,
            head = bounds.head,
            oldest = bounds.oldest,
            shared_log = follower.is_some(),
            "swarmfeed ready"
        );
        let shutdown = CancellationToken::new();
        let config_limits = config.limits.clone();
        let demo_task = config.demo.clone().map(|settings| {
            crate::swarm::demo::spawn(
                settings,
                coordinator.clone(),
                Arc::clone(&hub),
                Arc::clone(&store),
                shutdown.clone(),
            )
        });
        let webhooks = crate::webhook::Webhooks::default();
        let webhooks_task = crate::webhook::spawn(
            Arc::clone(&store),
            Arc::clone(&hub),
            Arc::clone(&metrics),
            config.webhooks.clone(),
            webhooks.clone(),
            webhook_leadership,
            shutdown.clone(),
        )
        .map_err(|e| StartError::Webhooks(e.to_string()))?;
        let retention_task = config.retention.is_enabled().then(|| {
            crate::retention::spawn(config.retention.clone(), Arc::clone(&hub), Arc::clone(&store), shutdown.clone())
        });
        let (board, board_task) =
            crate::swarm::board_follower::spawn(Arc::clone(&hub), Arc::clone(&store), shutdown.clone());
        let history_task = crate::swarm::history::spawn(
            Arc::clone(&hub),
            Arc::clone(&store),
            config.coordinator.projection.clone(),
            shutdown.clone(),
        );
        let search = crate::search::SearchProgress::default();
        let search_task =
            tokio::spawn(crate::search::run_indexer(Arc::clone(&store), search.clone(), shutdown.clone()));
        let state = AppState::new(Shared {
            tokens: Tokens::new(Arc::clone(&store)),
            sessions: Sessions::new(Arc::clone(&store), config.sessions.clone()),
            config,
            store,
            hub,
            writer,
            coordinator,
            alerts,
            board,
            limiters: crate::http::limits::Limiters::new(&config_limits),
            conns: crate::http::limits::ConnCounter::new(&config_limits),
            metrics,
            search,
            shutdown,
            webhooks,
            ended_early: std::sync::OnceLock::new(),
        });
        let revocations_task = {
            let state = state.clone();
            let (every, stop) = (state.config.revocation_sweep, state.shutdown.clone());
            tokio::spawn(async move {
                follow_revocations(&state.tokens, &state.sessions, revocation_feed, every, stop).await
            })
        };
        let tasks = Tasks {
            writer: Supervised::new("writer", writer_task),
            writer_stop,
            follower: follower.map(|(task, stop)| (Supervised::new("follower", task), stop)),
            coordinator: Supervised::new("coordinator", coordinator_task),
            alerts: Supervised::new("alerts", alerts_task),
            coordinator_stop,
            demo: demo_task.map(|task| Supervised::new("demo", task)),
            retention: retention_task.map(|task| Supervised::new("retention", task)),
            board: Supervised::new("board", board_task),
            history: Supervised::new("swarm history", history_task),
            search: Supervised::new("search indexer", search_task),
            revocations: Supervised::new("revocations", revocations_task),
            webhooks: Supervised::new("webhooks", webhooks_task),
        };
        Ok(Application { listener, addr, state, tasks, admin, tls })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin token made on this first start, if this was one.
    pub fn first_admin_token(&self) -> Option<&Issued> {
        self.admin.as_ref()
    }

    /// A fresh one-time login code for the admin token in `<data-dir>/admin.token`,
    /// printed at every start so that a restart (or a first start that failed after
    /// writing the file) always leaves a way in. `None` when that file is missing or its
    /// token was revoked.
    ///
    /// # Errors
    /// The file cannot be read or the store written.
    pub async fn login_link(&self) -> Result<Option<String>, crate::login_link::LinkError> {
        crate::login_link::mint_for_admin_file(
            self.state.store.as_ref(),
            &self.state.config.data_dir,
            self.state.config.sessions.login_link,
        )
        .await
    }

    /// Cancel it to stop the server.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until the shutdown token is cancelled, or a long-running task ends,
    /// then stops in order.
    ///
    /// # Errors
    /// The listener failed, or a long-running task ended before shutdown.
    pub async fn run(self) -> Result<(), RunError> {
        let Application { listener, state, mut tasks, tls, .. } = self;
        let shutdown = state.shutdown.clone();
        let grace = state.config.shutdown_grace;
        let conns = Arc::clone(&state.conns);
        let metrics = Arc::clone(&state.metrics);
        let limits = state.config.limits.clone();
        let health = state.clone();
        // Reloading stops with the listener; it is not supervised, since a server that
        // cannot reload still serves its certificate.
        let reloads = tls.clone().map(|tls| tokio::spawn(tls.reload_on_hangup(shutdown.clone())));
        let acceptor = tls.as_ref().map(|tls| tls.acceptor().clone());
        let endpoint = crate::http::serve::Endpoint { listener, tls: acceptor };
        let serving =
            crate::http::serve::serve(endpoint, router(state), conns, metrics, &limits, shutdown.clone(), grace);
        tokio::pin!(serving);
        let mut ended_early = None;
        let served = tokio::select! {
            served = &mut serving => served,
            (task, why) = tasks.first_to_end() => {
                // Tasks that stop with the listener (revocations, retention, the board, the swarm history, search, the demo)
                // end as soon as shutdown is signalled, before serving has wound down:
                // that is their stop, not a failure.
                if !shutdown.is_cancelled() {
                    tracing::error!(task, why, "a long-running task ended before shutdown; stopping so that a supervisor restarts swarmfeed");
                    // Set once: only the first task to end is the cause.
                    let _ = health.ended_early.set(format!("the {task} task ended: {why}"));
                    ended_early = Some((task, why));
                    shutdown.cancel();
                }
                serving.await
            }
        };
        if let Some(demo) = tasks.demo {
            demo.join().await;
        }
        if let Some(reloads) = reloads
            && let Err(e) = reloads.await
        {
            tracing::error!(error = %e, "the TLS reload task failed");
        }
        tasks.revocations.join().await;
        tasks.webhooks.join().await;
        tasks.search.join().await;
        if let Some(retention) = tasks.retention {
            retention.join().await;
        }
        tasks.board.join().await;
        tasks.history.join().await;
        tasks.coordinator_stop.cancel();
        tasks.coordinator.join().await;
        tasks.alerts.join().await;
        tasks.writer_stop.cancel();
        tasks.writer.join().await;
        if let Some((follower, stop)) = tasks.follower {
            stop.cancel();
            follower.join().await;
        }
        tracing::info!("swarmfeed stopped");
        match ended_early {
            Some((task, why)) => Err(RunError::TaskEnded { task, why }),
            None => Ok(served?),
        }
    }
}
