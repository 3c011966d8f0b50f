//! The `swarmfeed` binary: parses the command line and runs it.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use swarmfeed::cli::{Cli, Command, TokenCommand};
use swarmfeed::server::Application;
use swarmfeed::store::Store;
use swarmfeed::store::sqlite::SqliteStore;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    swarmfeed::telemetry::init(&cli.log, cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Token(TokenCommand::Create { scope, name, data }) => {
            let store = open_store(&data.data_dir)?;
            let name = name.unwrap_or_else(|| format!("{scope} token"));
            let issued = swarmfeed::auth::issue(&store, scope, &name).await.context("storing the token")?;
            eprintln!("token {} ({}, scope {}); shown once, keep it safe:", issued.id, issued.name, issued.scope);
            println!("{}", issued.token);
            Ok(())
        }
        Command::Token(TokenCommand::List { data }) => {
            let store = open_store(&data.data_dir)?;
            println!("{:<18} {:<6} {:<8} {:<25} NAME", "ID", "SCOPE", "STATE", "CREATED");
            for t in store.list_tokens().await.context("reading tokens")? {
                let state = if t.revoked { "revoked" } else { "active" };
                let created = swarmfeed::event::format_timestamp(t.created_ms);
                println!("{:<18} {:<6} {:<8} {:<25} {}", t.id, t.scope, state, created, t.name);
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { id, data }) => {
            let store = open_store(&data.data_dir)?;
            if store.revoke_token(&id).await.context("revoking the token")? {
                eprintln!("token {id} revoked");
                Ok(())
            } else {
                anyhow::bail!("no live token with id {id:?} (see `swarmfeed token list`)")
            }
        }
    }
}

fn open_store(data_dir: &std::path::Path) -> anyhow::Result<SqliteStore> {
    SqliteStore::open(data_dir, 1).with_context(|| format!("opening the store in {}", data_dir.display()))
}

async fn serve(args: swarmfeed::cli::ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let data_dir = config.data_dir.clone();
    let app = Application::build(config).await.context("starting swarmfeed")?;
    if let Some(admin) = app.first_admin_token() {
        let path = data_dir.join(swarmfeed::auth::ADMIN_TOKEN_FILE);
        eprintln!("First start: an admin token was written to {}.", path.display());
        eprintln!("Log in at http://{}/login?token={}", app.addr(), admin.token);
    }
    let shutdown = app.shutdown_token();
    let signals = tokio::spawn(swarmfeed::shutdown::cancel_on_signal(shutdown.clone()));
    let result = app.run().await.context("serving");
    shutdown.cancel();
    // The signal task ends as soon as the token is cancelled.
    let _ = signals.await;
    result
}
