//! The `swarmfeed` binary: parses the command line and runs it.

use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use swarmfeed::cli::{Cli, Command, TokenCommand};
use swarmfeed::file_config;
use swarmfeed::server::Application;
use swarmfeed::store::Store;
use swarmfeed::store::sqlite::SqliteStore;

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    swarmfeed::telemetry::init(&cli.log, cli.log_format);
    let layered = layer_file(cli.command, cli.config.as_deref(), &matches);
    match async { run(layered?).await }.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Fills the settings file's values into `serve` and `config` where no flag or
/// environment variable set them.
fn layer_file(command: Command, file: Option<&std::path::Path>, matches: &clap::ArgMatches) -> anyhow::Result<Command> {
    let (name, mut args) = match command {
        Command::Serve(args) => ("serve", args),
        Command::Config(args) => ("config", args),
        other => return Ok(other),
    };
    if let Some((path, settings)) = file_config::load(file)? {
        tracing::info!(path = %path.display(), "reading settings file");
        // The subcommand matched, so its matches exist.
        let sub = matches.subcommand_matches(name).expect("subcommand matches");
        settings.apply(&mut args, sub);
    }
    Ok(if name == "serve" { Command::Serve(args) } else { Command::Config(args) })
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Config(args) => {
            print!("{}", toml::to_string(&*args).context("printing the configuration")?);
            // Validate as `serve` would, so the printout is a configuration that runs.
            args.into_config()?.validate()?;
            Ok(())
        }
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
