//! Integration tests: a real server, real sockets, a real SQLite file.

mod api;
mod auth;
mod cli;
mod durability;
mod harness;
mod poll_sse;
mod security;
mod swarm;
mod ws;
