//! Integration tests: a real server, real sockets, a real SQLite file or a real
//! PostgreSQL server (`SWARMFEED_TEST_STORE=postgres`; `multinode` always).

mod api;
mod auth;
mod database;
mod durability;
mod harness;
mod multinode;
mod poll_sse;
mod swarm;
mod ws;
