//! The swarm: what the log says about agents and tasks, and the built-in coordinator
//! that runs auctions.
//!
//! - [`events`]: the swarm's events as a typed enum, read from and written to the log.
//! - [`projection`]: the pure fold of committed events into agents, tasks, totals.
//! - [`auction`]: who wins, and what a bid must be.
//! - [`coordinator`]: the task that owns the live projection and handles commands.
//! - [`demo`]: persona agents that use the coordinator like real ones would.

pub mod auction;
pub mod coordinator;
pub mod demo;
pub mod events;
pub mod projection;
pub mod rules;
pub mod snapshot;
