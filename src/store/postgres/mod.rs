//! The shared store: one PostgreSQL database behind several swarmfeed nodes
//! (DESIGN §5, `--database postgres://…`).
//!
//! Owns the PostgreSQL schema and its migrations (a `schema_version` table), a small
//! pool of connections for reads and token writes, and four dedicated connections per
//! node: the writer's ([`writer::PostgresWriter`]), the one that LISTENs for commits of every
//! node ([`CommitFeed::Shared`]), the one that LISTENs for revoked tokens
//! ([`RevocationSignal`]), and the one that holds the coordinator's advisory
//! lock ([`Leadership`]). It does not publish to the hub: the follower does that from
//! what this store reads back.
//!
//! Behaviour matches the SQLite store: the same columns and indexes (text in the
//! bytewise `"C"` collation so that type-prefix ranges and orderings agree), the same
//! query text (`store::sql`), the same answers for duplicates and bounds.
//!
//! One file per concern:
//! - `mod.rs`: [`PostgresStore`], its URL, its read pool and dedicated connections.
//! - `schema.rs`: the tables, their migrations, and the lock that makes nodes take turns.
//! - `reads.rs`: the [`Store`] impl: queries, tokens, sessions, login codes, retention.
//! - `writer.rs`: [`writer::PostgresWriter`], group commit under the `log_head` lock (why seq
//!   is gapless is argued beside the transaction).
//! - `notify.rs`: LISTEN for other nodes' commits and for revocations.
//! - `leader.rs`: the coordinator's advisory lock, held through [`Leadership`].
//! - `tls.rs`: `sslmode` and `sslrootcert`, through rustls, for every connection.
//! - `test_support.rs`: databases made and dropped for tests (feature `test-support`).
//!
//! [`CommitFeed::Shared`]: super::CommitFeed::Shared
//! [`RevocationSignal`]: super::RevocationSignal
//! [`Leadership`]: super::Leadership
//! [`Store`]: super::Store

mod board;
mod leader;
mod notify;
mod reads;
mod schema;
#[cfg(any(test, feature = "test-support"))]
mod test_support;
mod tls;
mod writer;

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::Client;

use self::tls::{PgConnection, Target};

use super::{Condition, StoreError};

#[cfg(any(test, feature = "test-support"))]
pub use self::test_support::{create_database, drop_database, url_with_database};

/// How long a read waits for a pooled connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long a commit or a read may take before it is abandoned (`--store-timeout`,
/// `SWARMFEED_STORE_TIMEOUT`): a stalled network costs a request this much at most,
/// and the client then gets 503. PostgreSQL's own timeouts cannot fire when the
/// server never hears from this node, so the clock runs here.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before a lost LISTEN or lock connection is opened again.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// A PostgreSQL error with the server's message, which `tokio_postgres::Error`'s own
/// `Display` leaves out ("db error").
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        // pg_hba.conf's refusal of a plain connection ends in "no encryption": the
        // server (a managed one, typically) wants TLS, which only sslmode=disable (or a
        // server without TLS under prefer) leaves out. Say which setting to change.
        let hint = if db.code() == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            && db.message().ends_with("no encryption")
        {
            "; PostgreSQL accepts this connection only over TLS: set sslmode=verify-full (with sslrootcert=FILE for \
             a private CA) or sslmode=require in --database instead of sslmode=disable"
        } else {
            ""
        };
        return format!("{}: {}{hint}", db.severity(), db.message());
    }
    let text = e.to_string();
    match std::error::Error::source(e).map(ToString::to_string) {
        Some(source) if !text.contains(&source) => format!("{text}: {source}"),
        _ => text,
    }
}

/// What a PostgreSQL error means for a client (see [`Condition`]), by its SQLSTATE
/// class, or by the lack of one: an error without a server's answer is the connection's.
pub(crate) fn condition(e: &tokio_postgres::Error) -> Condition {
    let Some(code) = e.code() else {
        return Condition::Unavailable;
    };
    match code.code() {
        // disk_full; 53000 insufficient_resources covers a full temp or WAL volume.
        "53100" | "53000" => Condition::OutOfSpace,
        // read_only_sql_transaction: a standby, or a database set read-only.
        "25006" => Condition::ReadOnly,
        // Class 08, connection exceptions; 57P01–57P03, the server shutting down,
        // crashed or still starting; 53300, too many connections.
        c if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300") => Condition::Unavailable,
        _ => Condition::Fault,
    }
}

/// Runs `work`, or gives up on it after `after` with [`StoreError::TimedOut`].
async fn within<T>(
    what: &'static str,
    after: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(after, work).await.unwrap_or(Err(StoreError::TimedOut { what, after }))
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Postgres(e)
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => StoreError::Postgres(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

/// The PostgreSQL store.
pub struct PostgresStore {
    /// Where the dedicated connections (writer, LISTEN, lock) connect, and with what
    /// TLS; the pool's connections use the same.
    config: Target,
    /// Connections for reads and token writes; `--read-connections` of them at most.
    pool: Pool,
    writer_taken: AtomicBool,
    /// How long a commit or a read may take; see [`DEFAULT_TIMEOUT`].
    timeout: Duration,
}

/// Parses `--database`, refusing anything but a `postgres://` URL.
fn parse_url(url: &str) -> Result<Target, StoreError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::BadUrl("it does not start with postgres://".into()));
    }
    let mut target = Target::parse(url)?;
    let config = &mut target.config;
    if config.get_application_name().is_none() {
        config.application_name("swarmfeed");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok(target)
}

/// Opens a dedicated connection and runs its I/O on a task of its own, which ends
/// when the returned client is dropped or the server goes away; the returned handle
/// completes then, which is how the lock keeper notices a lost session.
async fn connect(config: &Target) -> Result<(Client, tokio::task::JoinHandle<()>), StoreError> {
    let (client, connection) = config.connect_raw().await?;
    let running = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %describe(&e), "postgres connection ended");
        }
    });
    Ok((client, running))
}

/// Has PostgreSQL end this connection's session should it sit inside a transaction,
/// waiting for this node, for longer than `timeout`. A node cut off by a silent
/// partition mid-transaction would otherwise keep its row locks (the `log_head` lock
/// every commit of every node takes first) until TCP keepalive gave up on its socket,
/// two hours by default, and no node could commit meanwhile. The node itself abandons
/// such a transaction after the same `timeout`; a healthy one waits on this node only
/// for a round trip between statements.
async fn bound_idle_transactions(client: &Client, timeout: Duration) -> Result<(), tokio_postgres::Error> {
    let set = format!("SET idle_in_transaction_session_timeout = {}", timeout.as_millis().max(1));
    client.batch_execute(&set).await
}

impl PostgresStore {
    /// Connects to the database at `url`, migrating its schema, with a pool of up to
    /// `read_connections` connections for reads.
    ///
    /// # Errors
    /// The URL is not a `postgres://` URL, the server cannot be reached, or the
    /// schema is newer than this build.
    pub async fn connect(url: &str, read_connections: usize) -> Result<Self, StoreError> {
        Self::connect_with_timeout(url, read_connections, DEFAULT_TIMEOUT).await
    }

    /// [`PostgresStore::connect`], with commits and reads abandoned after `timeout`.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub async fn connect_with_timeout(
        url: &str,
        read_connections: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let config = parse_url(url)?;
        schema::migrate(&config).await?;
        let manager = Manager::from_config(
            config.config.clone(),
            config.tls.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(read_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .post_create(Hook::async_fn(move |client, _| {
                Box::pin(async move { bound_idle_transactions(client, timeout).await.map_err(HookError::Backend) })
            }))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        Ok(PostgresStore { config, pool, writer_taken: AtomicBool::new(false), timeout })
    }
}
