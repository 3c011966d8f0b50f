//! The `swarmfeed` binary: parses the command line and runs it.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use swarmfeed::cli::{Cli, Command, EmitArgs, LoginLinkArgs, TailArgs, TokenCommand, WebhookCommand};
use swarmfeed::file_config;
use swarmfeed::server::Application;

/// mimalloc instead of glibc's malloc: the writer frees on its own thread what request
/// tasks allocated on others, which glibc serves from contended arenas (`_int_free`,
/// `malloc_consolidate`: a quarter of ingest's CPU). In process, ingest went from
/// 183 000 to 235 000 events/s with it (`swarmfeed-bench ingest-local`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = parse(Cli::command());
    // The client commands speak to their user on stderr themselves; routine `info`
    // logs (such as the Ctrl-C notice) would only interleave with that.
    let client = matches!(cli.command, Command::Tail(_) | Command::Emit(_) | Command::Webhook(_));
    let log = if client && cli.log == "info" { "warn" } else { cli.log.as_str() };
    swarmfeed::telemetry::init(log, cli.log_format);
    let layered = with_settings_file(cli.command, cli.config.as_deref());
    match async { run(layered?).await }.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", said_once(&e));
            ExitCode::FAILURE
        }
    }
}

/// The command line parsed by `command`; a usage error, `--help` or `--version`
/// prints and exits.
fn parse(command: clap::Command) -> Cli {
    let matches = command.try_get_matches().unwrap_or_else(|e| better_suggestion(e).exit());
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// `serve` and `config` parsed again with the settings file's values as the defaults
/// of their flags, so that clap puts flags and environment variables above the file.
/// The first parse is what found the file (`--config`, `SWARMFEED_CONFIG`).
fn with_settings_file(command: Command, file: Option<&std::path::Path>) -> anyhow::Result<Command> {
    if !command.reads_settings_file() {
        return Ok(command);
    }
    let Some(settings) = file_config::load(file)? else { return Ok(command) };
    tracing::info!(path = %settings.path().display(), "reading settings file");
    Ok(parse(settings.command()?).command)
}

/// `e` and its causes joined by `: `, each said once. Many errors put their cause in
/// their own message (so a log line that shows only the top one is complete) and also
/// return it as `source()`; printing the chain as it is would say the cause twice
/// ("cannot listen on …: Address already in use: Address already in use").
fn said_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut last = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !last.is_empty() && last.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        last = text;
    }
    out
}

/// clap suggests the flag spelt most like an unknown one, which for `--data` is
/// `--database` (a PostgreSQL URL); whoever types `--data` means `--data-dir`.
fn better_suggestion(mut e: clap::Error) -> clap::Error {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let meant_data_dir = e.kind() == ErrorKind::UnknownArgument
        && matches!(e.get(ContextKind::InvalidArg), Some(ContextValue::String(arg))
            if arg == "--data" || arg.starts_with("--data="));
    if meant_data_dir {
        e.insert(ContextKind::SuggestedArg, ContextValue::String("--data-dir".to_owned()));
        // clap also shows how to use the flag it suggested.
        if let Some(ContextValue::StyledStr(usage)) = e.get(ContextKind::Usage) {
            let usage = usage.to_string().replace("--database <DATABASE>", "--data-dir <DATA_DIR>");
            e.insert(ContextKind::Usage, ContextValue::StyledStr(usage.into()));
        }
    }
    e
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
        Command::Tail(args) => tail(args).await,
        Command::Emit(args) => emit(args).await,
        Command::LoginLink(args) => login_link(args).await,
        Command::Webhook(command) => webhook(command).await,
        Command::Token(TokenCommand::Create { scope, name, data }) => {
            let store = open_store(&data).await?;
            let name = name.unwrap_or_else(|| format!("{scope} token"));
            let issued = swarmfeed::auth::issue(store.as_ref(), scope, &name).await.context("storing the token")?;
            eprintln!("token {} ({}, scope {}); shown once, keep it safe:", issued.id, issued.name, issued.scope);
            println!("{}", issued.token);
            Ok(())
        }
        Command::Token(TokenCommand::List { data }) => {
            let store = open_store(&data).await?;
            println!("{:<18} {:<6} {:<8} {:<25} NAME", "ID", "SCOPE", "STATE", "CREATED");
            for t in store.list_tokens().await.context("reading tokens")? {
                let state = if t.revoked { "revoked" } else { "active" };
                let created = swarmfeed::event::format_timestamp(t.created_ms);
                println!("{:<18} {:<6} {:<8} {:<25} {}", t.id, t.scope, state, created, t.name);
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { id, data }) => {
            let store = open_store(&data).await?;
            if store.revoke_token(&id).await.context("revoking the token")? {
                eprintln!("token {id} revoked");
                Ok(())
            } else {
                anyhow::bail!("no live token with id {id:?} (see `swarmfeed token list`)")
            }
        }
    }
}

/// The store a token command works on: `--database` when given, else the SQLite file
/// in `--data-dir`.
async fn open_store(data: &swarmfeed::cli::DataArgs) -> anyhow::Result<std::sync::Arc<dyn swarmfeed::store::Store>> {
    swarmfeed::store::open(&data.data_dir, data.database.as_deref(), 1, swarmfeed::store::postgres::DEFAULT_TIMEOUT)
        .await
        .with_context(|| match &data.database {
            Some(_) => "opening the store in the --database".to_owned(),
            None => format!("opening the store in {}", data.data_dir.display()),
        })
}

/// `swarmfeed login-link`: a one-time link, as the admin token of the data dir or as a
/// new token of `--scope`.
async fn login_link(args: LoginLinkArgs) -> anyhow::Result<()> {
    use swarmfeed::login_link;
    let valid_for = args.valid.valid_for()?;
    swarmfeed::client::remote::base_url(&args.url)?;
    let store = open_store(&args.data).await?;
    let code = match args.scope {
        Some(scope) => {
            let name = args.name.unwrap_or_else(|| format!("login link ({scope})"));
            let issued = swarmfeed::auth::issue(store.as_ref(), scope, &name).await.context("storing the token")?;
            eprintln!(
                "Issued token {} ({}, scope {}) for this link; revoke it to end its sessions.",
                issued.id, name, scope
            );
            login_link::mint(store.as_ref(), &issued.id, valid_for).await.context("storing the login code")?
        }
        None => login_link::mint_for_admin_file(store.as_ref(), &args.data.data_dir, valid_for)
            .await
            .context("making a login link for the admin token")?
            .with_context(|| {
                format!(
                    "no live admin token in {}; use --scope read|write|admin to issue a new token for the link",
                    args.data.data_dir.join(swarmfeed::auth::ADMIN_TOKEN_FILE).display()
                )
            })?,
    };
    eprintln!("Open this link within {} minutes; it works once:", args.valid.login_link_minutes);
    println!("{}", login_link::url(&args.url, &code));
    Ok(())
}

/// A line for the person who started the server, on stderr. A server outlives its
/// terminal or log collector: once stderr is gone the line is dropped, where
/// `eprintln!` would panic.
fn tell(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    // Nobody is left to tell when stderr is closed.
    let _ = writeln!(std::io::stderr(), "{line}");
}

async fn serve(args: swarmfeed::cli::ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let data_dir = config.data_dir.clone();
    let listening = swarmfeed::shutdown::Signals::listen().context("listening for SIGINT and SIGTERM")?;
    let app = Application::build(config).await.context("starting swarmfeed")?;
    if app.first_admin_token().is_some() {
        let path = data_dir.join(swarmfeed::auth::ADMIN_TOKEN_FILE);
        tell(format_args!("First start: an admin token was written to {}.", path.display()));
    }
    let base = swarmfeed::login_link::reachable_base(app.state().config.served_scheme(), app.addr());
    if app.state().config.no_auth {
        tell(format_args!("Open {base}/swarm/live (no login: --no-auth)."));
    } else {
        match app.login_link().await {
            Ok(Some(code)) => {
                let minutes = app.state().config.sessions.login_link.as_secs() / 60;
                let url = swarmfeed::login_link::url(&base, &code);
                tell(format_args!("Log in at {url} (works once, for {minutes} minutes)"));
            }
            Ok(None) => tell(format_args!(
                "Log in at {base}/login with a token; `swarmfeed login-link` prints a one-time link \
                 (there is no live admin token in {}).",
                data_dir.join(swarmfeed::auth::ADMIN_TOKEN_FILE).display()
            )),
            Err(e) => tell(format_args!("Could not make a login link ({e}); log in at {base}/login with a token.")),
        }
    }
    let shutdown = app.shutdown_token();
    let signals = tokio::spawn(listening.cancel_on_signal(shutdown.clone()));
    let result = app.run().await.context("serving");
    shutdown.cancel();
    // The signal task ends as soon as the token is cancelled.
    let _ = signals.await;
    result
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    use swarmfeed::client::tail::{Output, Tail, TailOptions, use_color};
    let token = args.remote.resolve_token().context("reading the admin token")?;
    let output = if args.json {
        Output::Json
    } else {
        let no_color = std::env::var_os("NO_COLOR");
        Output::Text { color: use_color(std::io::stdout().is_terminal(), no_color.as_deref()) }
    };
    let filter = args.filter.into_spec();
    let mut tail = Tail::new(TailOptions {
        url: args.remote.url,
        ca_file: args.remote.ca_file,
        token,
        filter,
        since: args.since,
        until_head: args.until_head,
        output,
    })
    .context("starting tail")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listening = swarmfeed::shutdown::Signals::listen().context("listening for SIGINT and SIGTERM")?;
    let signals = tokio::spawn(listening.cancel_on_signal(shutdown.clone()));
    let result = tail.run(&mut tokio::io::stdout(), shutdown.clone()).await;
    shutdown.cancel();
    // The signal task ends as soon as the token is cancelled.
    let _ = signals.await;
    result.context("tail stopped")
}

async fn emit(args: EmitArgs) -> anyhow::Result<()> {
    use swarmfeed::client::emit::{BATCH_EVENTS, Emitter, EventFlags, check_file, post_file, single_event};
    let token = args.remote.resolve_token().context("reading the admin token")?;
    let emitter = Emitter::new(&args.remote.url, token, args.remote.ca_file.as_deref()).context("starting emit")?;
    let Some(path) = args.file else {
        // clap requires TYPE and --source unless --file is given.
        let event = single_event(EventFlags {
            event_type: args.event_type.unwrap_or_default(),
            source: args.source.unwrap_or_default(),
            task: args.task,
            agent: args.agent,
            data: args.data,
            id: args.id,
        })
        .context("building the event")?;
        let accepted = emitter.post_one(&event).await.context("posting the event")?;
        if accepted.duplicate {
            eprintln!("id {:?} was stored before; nothing new was stored", accepted.id);
        }
        println!("{}", accepted.seq);
        return Ok(());
    };
    let checked = check_file(&path).await.context("checking the file; nothing was posted")?;
    // A counter, not a bar: it only has to show a large file is moving.
    let show = std::io::stderr().is_terminal() && checked.events > BATCH_EVENTS;
    let report = post_file(&emitter, &checked, |done, total| {
        if show {
            eprint!("\rposted {done} of {total} events ({}%)", done * 100 / total.max(1));
        }
    })
    .await;
    if show {
        eprintln!();
    }
    let report = report.context("posting the file")?;
    let seqs = report.seqs.map(|(lo, hi)| format!(", seqs {lo} to {hi}")).unwrap_or_default();
    println!(
        "{} events from {}: {} stored, {} stored before{seqs}",
        report.events,
        path.display(),
        report.new,
        report.duplicates
    );
    Ok(())
}

/// `swarmfeed webhook add|list|rm`, over the server's admin API.
async fn webhook(command: WebhookCommand) -> anyhow::Result<()> {
    use swarmfeed::client::webhook::{NewWebhook, WebhookClient};
    let remote = match &command {
        WebhookCommand::Add(args) => &args.remote,
        WebhookCommand::List { remote } | WebhookCommand::Rm { remote, .. } => remote,
    };
    let token = remote.resolve_token().context("reading the admin token")?;
    let client = WebhookClient::new(&remote.url, token, remote.ca_file.as_deref()).context("starting webhook")?;
    match command {
        WebhookCommand::Add(args) => {
            let new = NewWebhook {
                url: args.target,
                filter: args.filter.into_spec(),
                format: args.format,
                since: args.since,
            };
            let created = client.add(&new).await.context("adding the webhook")?;
            eprintln!("webhook {} added; its signing secret is shown once, keep it safe:", created.id);
            println!("{}", created.id);
            println!("{}", created.secret);
        }
        WebhookCommand::List { .. } => {
            let webhooks = client.list().await.context("listing the webhooks")?;
            println!(
                "{:<20} {:<8} {:>10} {:>8} {:<6} {:<25} URL",
                "ID", "FORMAT", "DELIVERED", "LAG", "STATUS", "FAILING SINCE"
            );
            for w in webhooks {
                let status = w.last_status.map_or_else(|| "-".to_owned(), |s| s.to_string());
                let failing = w.failing_since.unwrap_or_else(|| "-".to_owned());
                println!(
                    "{:<20} {:<8} {:>10} {:>8} {:<6} {:<25} {}",
                    w.id, w.format, w.delivered_seq, w.lag, status, failing, w.url
                );
                if let Some(error) = w.last_error {
                    println!("    last error: {error}");
                }
                if w.filter.as_object().is_some_and(|f| !f.is_empty()) {
                    println!("    filter: {}", w.filter);
                }
            }
        }
        WebhookCommand::Rm { id, .. } => {
            client.remove(&id).await.with_context(|| format!("removing webhook {id}"))?;
            eprintln!("webhook {id} removed");
        }
    }
    Ok(())
}
