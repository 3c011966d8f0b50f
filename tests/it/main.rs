//! Integration tests: a real server, real sockets, a real SQLite file.

mod api;
mod auth;
mod browser;
mod chromium;
mod cli;
mod config_file;
mod durability;
mod harness;
mod pages;
mod poll_sse;
mod security;
mod swarm;
mod ws;
