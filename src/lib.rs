//! swarmfeed: a durable, live activity feed for swarms of agents.
//!
//! ```text
//! producers ─► http::api ─► ingest ─► writer ─► store (commit, seq)
//!                (validate, redact, id)    │        │ other nodes' commits (shared log)
//!                                          │        ▼
//!                                          │     follower ─┐
//!                                          └───────────────┴─► hub (head + ring) ─► cursor ─► transport ─► viewers
//!                                                                                     └─ reads the store when behind
//!                                                                  hub ─► cursor ─► swarm::board_follower ─► store (boards)
//! ```
//!
//! With one node the writer publishes its commits to the hub itself; with several
//! nodes on one PostgreSQL log the follower publishes every node's commits, in order.
//! The task and agent boards are folded from the log like any viewer's cursor, behind
//! the writer, into tables of the store.
//!
//! - [`event`]: the event, its limits, the known-type table, its severity, its one
//!   declared JSON shape and the encoding that writes it.
//! - [`ingest`]: producer JSON → validated, redacted events (all or nothing).
//! - [`redact`]: secrets in event data, replaced before storage.
//! - [`otlp`]: OpenTelemetry spans and log records (OTLP/HTTP) → events through the same
//!   rules.
//! - [`writer`]: the single writer task; group commit behind a bounded queue.
//! - [`store`]: the only SQL; the `Store` interface, its SQLite and PostgreSQL
//!   implementations, and the task and agent board tables.
//! - [`follower`]: in a log shared by several nodes, publishes every commit to the hub.
//! - [`hub`]: head seq, ring of recent events, wake-ups.
//! - [`retention`]: pruning old events in the background, with exact resets.
//! - [`search`]: full-text search: the words of an event and of `q=`, and the indexer
//!   that follows the log to keep the store's search index a moment behind the writer.
//! - [`cursor`]: one subscription's filter and position; ring or store.
//! - [`filter`]: what a viewer wants: its four fields declared once, parsed and matched.
//! - [`transport`]: WebSocket (JSON and HTML), SSE and long-poll encoders over one
//!   cursor; given a stream context, a revocation and a validated filter, they know
//!   nothing of HTTP routing, auth or error bodies.
//! - [`view`]: server-rendered, auto-escaped HTML: the page shell and the event row.
//! - [`http`]: router, auth middleware and browser sessions, the JSON API (webhooks'
//!   included), its
//!   errors and its one filter extractor, the export (NDJSON or CSV, a page at a time),
//!   the task and agent boards' API,
//!   the streaming endpoints' thin handlers over
//!   [`transport`], the OpenAPI document and its schemas, the dashboard's pages and
//!   embedded assets.
//! - [`swarm`]: the swarm's events as a typed enum, their fold into agents and tasks,
//!   the coordinator's pure rules and the task that runs auctions by them, the views
//!   the API and the pages share, the boards' fold and the task that keeps it in the
//!   store behind the writer, and the demo swarm.
//! - [`auth`]: tokens, scopes, the first admin token.
//! - [`sessions`]: browser sessions kept in the store: start, resolve, expire, end.
//! - [`login_link`]: one-time login codes, and the address a printed link points at.
//! - [`alert`]: alert rules, their windows, and the evaluator that logs
//!   `alert.firing` and `alert.resolved` as ordinary events (on the leader only).
//! - [`metrics`]: counters and histograms for `/metrics`.
//! - [`webhook`]: the log pushed to other programs: each webhook a durable cursor,
//!   delivered signed (Standard Webhooks) by the leader, retried, SSRF-guarded.
//! - [`cli`]: every setting declared once (flag, variable, default, help);
//!   [`file_config`] gives `swarmfeed.toml`'s values to it as defaults; [`config`] holds
//!   and checks the result.
//! - [`tls`]: rustls for the server's certificate (reloaded on SIGHUP) and the
//!   clients' trust roots; PostgreSQL's `sslmode` lives with its store.
//! - [`telemetry`], [`shutdown`], [`server`]: running it.
//! - [`client`]: the command-line clients (`tail` watches the feed, or prints it up
//!   to the head and exits, `emit` posts
//!   events, `webhook` adds, lists and removes webhooks), which reach the server over
//!   HTTP like any other program.

// Items are `pub(crate)` unless the binary, the tests or the load generator need them;
// the lint keeps a new `pub` from leaking out of a private module.
#![warn(unreachable_pub)]

pub(crate) mod alert;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub(crate) mod cursor;
pub mod event;
pub mod file_config;
pub mod filter;
// The fuzz targets' way in (fuzz/), not an API.
pub(crate) mod follower;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http;
pub mod hub;
pub mod ingest;
pub mod login_link;
pub mod metrics;
pub mod otlp;
pub mod redact;
pub(crate) mod retention;
pub mod search;
pub mod server;
pub(crate) mod sessions;
pub mod shutdown;
pub mod store;
pub(crate) mod swarm;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub(crate) mod view;
pub mod webhook;
pub mod writer;
