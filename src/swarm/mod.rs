//! The swarm: what the log says about agents and tasks, and the built-in coordinator
//! that runs auctions.
//!
//! The flow: a command → [`rules::decide`] (pure) → [`events::SwarmEvent`]s → the
//! writer → the log → [`projection`] folds them → [`snapshot`] views for the API and
//! the pages. JSON is only at the two edges: the log's `data` and the API's bodies.
//!
//! - [`events`]: the swarm's events as a typed enum, read from and written to the log.
//! - [`projection`]: the pure fold of committed events into agents, tasks, totals.
//! - [`rules`]: what a command must be and which events it yields; pure.
//! - [`auction`]: who wins, and what a bid must be.
//! - [`coordinator`]: the task that owns the live projection, decides commands,
//!   appends what they yield and folds it (I/O only: channels, writer, cursor,
//!   leadership, timers).
//! - [`board`]: the pure fold of committed events into the task and agent boards'
//!   stored rows, which keep every task of the retained log.
//! - [`board_follower`]: the task that folds the log into the boards behind the writer
//!   and saves them with the seq they reach.
//! - [`history`]: the swarm as it stood at any past seq: snapshots of the projection
//!   stored behind the writer, and the short fold from the nearest one.
//! - [`snapshot`]: the typed views of agents, tasks, bids, auctions and totals that
//!   `GET /api/swarm` and the pages share.
//! - [`demo`]: persona agents that use the coordinator like real ones would.

pub(crate) mod auction;
pub(crate) mod board;
pub(crate) mod board_follower;
pub(crate) mod coordinator;
pub(crate) mod demo;
pub(crate) mod events;
pub(crate) mod history;
pub(crate) mod projection;
pub(crate) mod rules;
pub(crate) mod snapshot;
