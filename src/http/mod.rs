//! The HTTP surface: the router, shared state, authentication, the JSON API, the
//! streaming endpoints' handlers (over [`crate::transport`]), the browser login and the
//! dashboard's pages and assets.
//!
//! [`router`] builds the whole app without a socket, so tests can drive it directly;
//! `server` binds it. Routes are grouped by the scope they need, and the group's
//! middleware checks it, so no handler can forget to.

pub(crate) mod alerts;
pub(crate) mod api;
pub(crate) mod assets;
pub(crate) mod auth;
pub(crate) mod boards;
pub(crate) mod error;
pub(crate) mod export;
pub(crate) mod limits;
pub(crate) mod openapi;
pub(crate) mod origin;
pub(crate) mod otlp;
pub(crate) mod pages;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod session;
pub(crate) mod streams;
pub(crate) mod swarm;
pub(crate) mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post};
use tokio_util::sync::CancellationToken;

use crate::alert::AlertsHandle;
use crate::auth::{Scope, Tokens};
use crate::config::Config;
use crate::hub::Hub;
use crate::sessions::Sessions;
use crate::store::Store;
use crate::swarm::board_follower::BoardHandle;
use crate::swarm::coordinator::CoordinatorHandle;
use crate::writer::WriterHandle;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub hub: Arc<Hub>,
    pub writer: WriterHandle,
    pub coordinator: CoordinatorHandle,
    /// The alert evaluator: rules' states, and a reload after one is added or deleted.
    pub(crate) alerts: AlertsHandle,
    /// How far the task and agent boards have folded the log.
    pub board: BoardHandle,
    pub tokens: Tokens,
    /// Browser sessions, kept in the store.
    pub sessions: Sessions,
    /// Per-IP request and handshake rates, per-token ingest rate.
    pub limiters: limits::Limiters,
    /// Open connections per IP and in all.
    pub conns: Arc<limits::ConnCounter>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// How far the search index has come, set by its indexer.
    pub search: crate::search::SearchProgress,
    /// Cancelled once, on shutdown; every stream and loop watches it.
    pub shutdown: CancellationToken,
    /// Tells the webhooks' scheduler of this node's changes, and reads their positions.
    pub webhooks: crate::webhook::Webhooks,
    /// Set when a long-running task (writer, coordinator, …) ended before shutdown:
    /// which, and why. The node is failing and about to exit; `/readyz` says so.
    pub ended_early: std::sync::OnceLock<String>,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The whole application.
pub(crate) fn router(state: AppState) -> Router {
    let read = Router::new()
        .route("/ws", get(streams::ws))
        .route("/ws/html", get(streams::ws_html))
        .route("/api/stream", get(streams::sse))
        .route("/api/events/poll", get(streams::poll))
        .route("/api/events", get(api::list_events))
        .route("/api/events/export", get(export::export_events))
        .route("/api/events/{key}", get(api::get_event))
        .route("/api/summary", get(api::summary))
        .route("/api/event-types", get(api::event_types))
        .route("/api/swarm", get(swarm::snapshot))
        .route("/api/tasks", get(boards::list_tasks))
        .route("/api/tasks/{id}", get(boards::get_task))
        .route("/api/agents", get(boards::list_agents))
        .route("/api/agents/{id}", get(boards::get_agent))
        .route("/metrics", get(api::metrics))
        .route_layer(middleware::from_fn_with_state((state.clone(), Scope::Read), auth::require));
    let write = Router::new()
        .route("/api/events", post(api::post_events))
        .route("/v1/traces", post(otlp::traces))
        .route("/v1/logs", post(otlp::logs))
        .route("/swarm/agents", post(swarm::join))
        .route("/swarm/agents/{id}", delete(swarm::leave))
        .route("/swarm/agents/{id}/remove", post(swarm::remove))
        .route("/swarm/agents/{id}/status", post(swarm::status))
        .route("/swarm/agents/{id}/heartbeat", post(swarm::heartbeat))
        .route("/swarm/tasks", post(swarm::post_task))
        .route("/swarm/tasks/{id}/bids", post(swarm::bid))
        .route("/swarm/tasks/{id}/start", post(swarm::start))
        .route("/swarm/tasks/{id}/complete", post(swarm::complete))
        .route("/swarm/tasks/{id}/fail", post(swarm::fail))
        .route("/swarm/tasks/{id}/tools", post(swarm::tools))
        .route("/swarm/tasks/{id}/cancel", post(swarm::cancel))
        .route("/swarm/tasks/{id}/retry", post(swarm::retry))
        .route("/swarm/tasks/{id}/close", post(swarm::close))
        .route_layer(middleware::from_fn_with_state((state.clone(), Scope::Write), auth::require));
    let admin = Router::new()
        .route("/api/tokens", post(api::post_token).get(api::list_tokens))
        .route("/api/tokens/{id}", delete(api::revoke_token))
        .route("/api/sessions", get(api::list_sessions))
        .route("/api/sessions/{id}", delete(api::end_session))
        .route("/api/alerts", post(alerts::create).get(alerts::list))
        .route("/api/alerts/{id}", delete(alerts::delete))
        .route("/api/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/api/webhooks/{id}", delete(webhooks::delete))
        .route_layer(middleware::from_fn_with_state((state.clone(), Scope::Admin), auth::require));
    // Pages send a browser without a session to /login instead of answering 401.
    let pages = Router::new()
        .route("/swarm/live", get(pages::live::page_handler))
        .route("/swarm/live/panels", get(pages::live::panels))
        .route("/swarm/live/alerts", get(pages::alerts::banner_handler))
        .route("/swarm/alerts", get(pages::alerts::page_handler).post(pages::alerts::add))
        .route("/swarm/alerts/{id}/delete", post(pages::alerts::remove))
        .route("/swarm/events", get(pages::log::page_handler))
        .route("/swarm/tasks", get(pages::tasks::page_handler))
        .route("/swarm/board/tasks", get(pages::tasks::board_fragment))
        .route("/swarm/tasks/{id}", get(pages::task::page_handler))
        .route("/swarm/agents", get(pages::agents::page_handler))
        .route("/swarm/board/agents", get(pages::agents::board_fragment))
        .route("/swarm/agents/{id}", get(pages::agent::page_handler))
        .route("/swarm/webhooks", get(pages::webhooks::page_handler))
        .route_layer(middleware::from_fn_with_state(state.clone(), pages::require_session));
    let open = Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/api/openapi.json", get(openapi::document))
        .route("/", get(pages::root))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/assets/{*path}", get(assets::serve));
    Router::new()
        .merge(read)
        .merge(pages)
        .merge(write)
        .merge(admin)
        .merge(open)
        .fallback(api::not_found)
        // `limits::bodies` caps each body by route and charges the in-flight budget; it
        // runs after the Host, Origin and rate checks, so a refused request holds nothing.
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.config.limits.body_timeout))
        .layer(middleware::from_fn_with_state(state.clone(), limits::bodies))
        .layer(middleware::from_fn_with_state(state.clone(), origin::check))
        .layer(middleware::from_fn_with_state(state.clone(), origin::host_check))
        .layer(middleware::from_fn_with_state(state.clone(), limits::per_ip))
        .layer(middleware::from_fn_with_state(state.clone(), api::count_rejections))
        .layer(middleware::from_fn(origin::security_headers))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(api::panicked))
        .with_state(state)
}
