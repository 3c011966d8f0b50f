//! Integration tests: a real server, real sockets, a real SQLite file or a real
//! PostgreSQL server (`SWARMFEED_TEST_STORE=postgres`; `multinode` always).

mod api;
mod auth;
mod browser;
mod browser_actions;
mod browser_login;
mod browser_search;
mod chromium;
mod cli;
mod config_file;
mod database;
mod durability;
mod harness;
mod multinode;
mod pages;
mod poll_sse;
mod projection;
mod revocation;
mod search;
mod security;
mod sessions;
mod swarm;
mod ws;
