//! The `swarmfeed` binary: parses the command line and runs it.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use swarmfeed::cli::{Cli, Command, TokenCommand};
use swarmfeed::server::Application;

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
            let store = swarmfeed::store::open(&data.data_dir, data.database.as_deref(), 1).await.with_context(
                || match &data.database {
                    Some(_) => "opening the store in the --database".to_owned(),
                    None => format!("opening the store in {}", data.data_dir.display()),
                },
            )?;
            let name = name.unwrap_or_else(|| format!("{scope} token"));
            let issued = swarmfeed::auth::issue(store.as_ref(), scope, &name).await.context("storing the token")?;
            eprintln!("token {} ({}, scope {}); shown once, keep it safe:", issued.id, issued.name, issued.scope);
            println!("{}", issued.token);
            Ok(())
        }
    }
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
