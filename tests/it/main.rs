//! Integration tests: a real server, real sockets, a real SQLite file or a real
//! PostgreSQL server (`SWARMFEED_TEST_STORE=postgres`; `multinode` always).

mod alerts;
mod api;
mod auth;
mod boards;
mod browser;
mod browser_actions;
mod browser_boards;
mod browser_login;
mod browser_search;
mod browser_time_travel;
mod chromium;
mod cli;
mod config_file;
mod database;
mod durability;
mod faults;
mod harness;
mod multinode;
mod otlp;
mod pages;
mod pg_cluster;
mod poll_sse;
mod postgres_tls;
mod projection;
mod revocation;
mod search;
mod security;
mod sessions;
mod swarm;
mod time_travel;
mod tls;
mod webhooks;
mod ws;
