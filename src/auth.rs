//! Tokens and scopes (DESIGN §6): issuing, hashing, and resolving a presented token.
//!
//! Only the SHA-256 of a token is stored. Lookups go by that hash, so the time a
//! lookup takes says nothing about how close a guess was to a real token. Owns the
//! in-memory cache of valid tokens and the set of revoked ones, which open streams
//! watch ([`Revocation`]); the HTTP layer (`http::auth`) decides which scope each
//! route needs.
//!
//! Revocation reaches a node three ways, all into the same set: through this node
//! ([`Tokens::revoke`], at once), through a notification from the shared store
//! (another node or the CLI on PostgreSQL, within milliseconds), and through a re-read
//! of the token table every [`REVOCATION_SWEEP`] (the CLI on SQLite, a lost
//! notification). Streams never read the store to learn of it: one read per node per
//! sweep serves them all. The browser sessions that open streams were made with are
//! watched the same way, so a stream also ends when its session does.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::store::{RevocationSignal, Store, StoreError, TokenRecord};

/// File in the data directory that holds the first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Every token starts with this, so leaked ones are easy to scan for.
const TOKEN_PREFIX: &str = "sf_";

/// What a token may do. Each scope includes the ones below it: `admin` ⊃ `write` ⊃
/// `read`, so a producer's token can also watch the feed it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Dashboards and subscriptions.
    Read,
    /// Ingest and the coordinator.
    Write,
    /// Token management.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "write" => Ok(Scope::Write),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?}; expected read, write or admin")),
        }
    }
}

/// Who is calling: the resolved token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub scope: Scope,
    /// The token's hash; `None` when auth is off, for a caller no revocation can end.
    /// Private, so a principal only comes from a resolved token or [`Principal::anonymous`].
    hash: Option<String>,
    /// The hash of the browser session's secret when the caller came with a session
    /// cookie, so an open stream also ends when that session does (logout, an admin's
    /// `DELETE /api/sessions/{id}`).
    session: Option<String>,
}

impl Principal {
    /// The caller when auth is off (`--no-auth` on loopback): may do everything.
    pub fn anonymous() -> Self {
        Principal { token_id: "-".into(), name: "anonymous".into(), scope: Scope::Admin, hash: None, session: None }
    }

    /// This principal, acting through the browser session whose secret hashes to
    /// `session_hash`.
    pub(crate) fn in_session(self, session_hash: String) -> Self {
        Principal { session: Some(session_hash), ..self }
    }

    pub fn may(&self, needed: Scope) -> bool {
        self.scope >= needed
    }
}

/// A freshly issued token: the secret is shown once and never stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub token: String,
}

/// The SHA-256 of a secret (a token, a session's or a login code's), as stored.
pub(crate) fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Longest secret (a session's, a login code's) that is looked up; real ones are 68
/// characters.
const MAX_SECRET_CHARS: usize = 128;

/// Whether `value` can be a secret this server made with `prefix`: the prefix, then
/// hex, within [`MAX_SECRET_CHARS`]. Anything else is never looked up, and a value that
/// passes can go back into a header or a log line unescaped.
pub(crate) fn is_secret_shaped(value: &str, prefix: &str) -> bool {
    value.starts_with(prefix)
        && value.len() <= MAX_SECRET_CHARS
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `bytes` random bytes from the OS-seeded CSPRNG, hex-encoded.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// How long a token seen valid is trusted without reading the store again. A cached
/// token is also refused as soon as it is in the revoked set, so this does not bound
/// revocation ([`REVOCATION_SWEEP`] does); it spares the store a read per request.
pub(crate) const TOKEN_RECHECK: Duration = Duration::from_secs(10);

/// Default period of the re-read of revoked tokens (`Config::revocation_sweep`): the
/// bound on how long a token revoked by another process without a notification (the
/// CLI on SQLite, a PostgreSQL notification lost to a dropped connection) keeps its
/// streams and its access. DESIGN §6 asks for "within seconds"; at 2 s it costs each
/// node one read of the token table every 2 s, whatever the number of streams.
pub const REVOCATION_SWEEP: Duration = Duration::from_secs(2);

/// Resolves presented tokens, with a cache of the valid ones and the set of revoked
/// ones.
pub struct Tokens {
    store: Arc<dyn Store>,
    /// Hash → principal and when it was read, for tokens seen valid. Bounded by the
    /// number of issued tokens; unknown tokens are never cached. Locked only for a map
    /// access.
    valid: RwLock<HashMap<String, (Principal, Instant)>>,
    revoked: Arc<Revoked>,
}

/// Ids of the tokens this node knows to be revoked, the browser sessions its streams
/// were opened with, and a signal that something ended. Shared by [`Tokens`] and every
/// open stream's [`Revocation`].
struct Revoked {
    /// Bounded by the token table: only ids of tokens the store says are revoked go
    /// in, and none ever comes out (a revoked token stays revoked). Locked only for a
    /// set access, never across an await.
    ids: RwLock<HashSet<String>>,
    /// Session hash → the watch its open streams share. Bounded by the open streams:
    /// an entry whose streams have all gone is dropped at the next sweep. Locked only
    /// for a map access, never across an await.
    sessions: Mutex<HashMap<String, Weak<SessionWatch>>>,
    /// Bumped after ids were added or a session was marked ended, so streams look
    /// again.
    grew: watch::Sender<u64>,
    /// Asks [`follow_revocations`] for a sweep now (a session ended on this node).
    sweep_now: Notify,
}

/// Whether one browser session, shared by the streams opened with it, has ended.
struct SessionWatch {
    ended: AtomicBool,
}

impl Revoked {
    fn contains(&self, token_id: &str) -> bool {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).contains(token_id)
    }
}

/// One stream's watch on its token: [`Revocation::revoked`] completes once the token
/// is known revoked on this node. Holds no store connection and reads nothing: it
/// looks at the node's revoked set each time the set grows. A clone watches the same
/// token.
#[derive(Clone)]
pub struct Revocation {
    revoked: Arc<Revoked>,
    grew: watch::Receiver<u64>,
    /// `None` for the anonymous caller of `--no-auth`, which has no token to revoke.
    token_id: Option<String>,
    /// The browser session the stream was opened with, if it came with a cookie.
    session: Option<Arc<SessionWatch>>,
}

impl Revocation {
    /// Whether the token is known revoked, or the session known ended, now.
    pub(crate) fn is_revoked(&self) -> bool {
        self.token_id.as_deref().is_some_and(|id| self.revoked.contains(id))
            || self.session.as_ref().is_some_and(|s| s.ended.load(Ordering::Acquire))
    }

    /// Completes once the token is known revoked or the session ended. Cancel-safe, so a stream may make
    /// it afresh in each `select!`: a growth of the set that happened while it was
    /// not polled is still seen, because the receiver keeps the last version it saw.
    pub async fn revoked(&mut self) {
        loop {
            // Looked at after the receiver marked what it has seen: a revocation
            // added before this look is found by it, one added after wakes `changed`.
            if self.is_revoked() {
                return;
            }
            if self.grew.changed().await.is_err() {
                // The sender lives as long as `Tokens`; without it nothing is revoked.
                return std::future::pending().await;
            }
        }
    }
}

impl Tokens {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Tokens {
            store,
            valid: RwLock::new(HashMap::new()),
            revoked: Arc::new(Revoked {
                ids: RwLock::new(HashSet::new()),
                sessions: Mutex::new(HashMap::new()),
                grew: watch::Sender::new(0),
                sweep_now: Notify::new(),
            }),
        }
    }

    /// The principal for `token`, or `None` when it is unknown or revoked.
    ///
    /// # Errors
    /// The token table could not be read.
    pub(crate) async fn resolve(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        self.resolve_hash(&hash(token)).await
    }

    /// The principal of the token whose secret hashes to `h` (a session's token), or
    /// `None` when it is unknown or revoked.
    ///
    /// # Errors
    /// The token table could not be read.
    pub(crate) async fn resolve_hash(&self, h: &str) -> Result<Option<Principal>, StoreError> {
        if let Some((p, read)) = self.valid.read().unwrap_or_else(|p| p.into_inner()).get(h)
            && read.elapsed() < TOKEN_RECHECK
            && !self.revoked.contains(&p.token_id)
        {
            return Ok(Some(p.clone()));
        }
        let record = self.store.token_by_hash(h).await?;
        let principal = record.filter(|r| !r.revoked).and_then(|record| match record.scope.parse::<Scope>() {
            Ok(scope) => {
                Some(Principal { token_id: record.id, name: record.name, scope, hash: Some(h.to_owned()), session: None })
            }
            Err(_) => {
                tracing::warn!(token_id = %record.id, scope = %record.scope, "stored token has an unknown scope; refusing it");
                None
            }
        });
        let mut valid = self.valid.write().unwrap_or_else(|p| p.into_inner());
        match &principal {
            Some(p) => valid.insert(h.to_owned(), (p.clone(), Instant::now())),
            None => valid.remove(h),
        };
        Ok(principal)
    }

    /// A watch on `principal`'s token for a stream it opened. It also sees a revocation
    /// that came before it was made (between the request's authentication and now):
    /// the set keeps every revocation it learned.
    pub fn revocation(&self, principal: &Principal) -> Revocation {
        let session = principal.session.as_ref().map(|hash| {
            let mut open = self.revoked.sessions.lock().unwrap_or_else(|p| p.into_inner());
            match open.get(hash).and_then(Weak::upgrade) {
                Some(watch) => watch,
                None => {
                    let watch = Arc::new(SessionWatch { ended: AtomicBool::new(false) });
                    open.insert(hash.clone(), Arc::downgrade(&watch));
                    watch
                }
            }
        });
        Revocation {
            revoked: Arc::clone(&self.revoked),
            grew: self.revoked.grew.subscribe(),
            token_id: principal.hash.as_ref().map(|_| principal.token_id.clone()),
            session,
        }
    }

    /// Tells this node's streams that a browser session ended through this server
    /// (logout, `DELETE /api/sessions/{id}`): the sessions of open streams are looked
    /// at again at once, and those opened with an ended one end.
    pub(crate) fn session_ended(&self) {
        // A permit is kept if the sweeping task is busy, so the wake-up is not lost.
        self.revoked.sweep_now.notify_one();
    }

    /// Revokes token `id`; false when there is no such live token. This node's
    /// streams of that token end, and its requests are refused, from the moment this
    /// returns; other nodes learn of it through the store ([`follow_revocations`]).
    ///
    /// # Errors
    /// The token table could not be written.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let revoked = self.store.revoke_token(id).await?;
        if revoked {
            self.learn_revoked([id.to_owned()]);
        }
        Ok(revoked)
    }

    /// Re-reads which tokens are revoked, whoever revoked them; returns how many this
    /// node did not know of.
    ///
    /// # Errors
    /// The token table could not be read.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let tokens = self.store.list_tokens().await?;
        Ok(self.learn_revoked(tokens.into_iter().filter(|t| t.revoked).map(|t| t.id)))
    }

    /// Looks again at the sessions this node's streams were opened with, and marks
    /// those that ended (logged out anywhere, ended by an admin, expired, or their
    /// token revoked); returns how many. One read for all of them, never one per
    /// stream.
    ///
    /// # Errors
    /// The session table could not be read.
    pub(crate) async fn sweep_sessions(&self, sessions: &dyn LiveSessions) -> Result<usize, StoreError> {
        let open: Vec<(String, Arc<SessionWatch>)> = {
            let mut open = self.revoked.sessions.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|_, w| w.strong_count() > 0);
            open.iter().filter_map(|(h, w)| Some((h.clone(), w.upgrade()?))).collect()
        };
        let open: Vec<_> = open.into_iter().filter(|(_, w)| !w.ended.load(Ordering::Acquire)).collect();
        if open.is_empty() {
            return Ok(0);
        }
        let hashes: Vec<String> = open.iter().map(|(h, _)| h.clone()).collect();
        let live = sessions.live_among(&hashes).await?;
        let mut ended = 0;
        for (hash, watch) in open {
            if !live.contains(&hash) {
                watch.ended.store(true, Ordering::Release);
                ended += 1;
            }
        }
        if ended > 0 {
            self.revoked.grew.send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(ended)
    }

    /// Adds `ids` to the revoked set, drops them from the cache and, when any was
    /// new, wakes the streams. Returns how many were new.
    fn learn_revoked(&self, ids: impl IntoIterator<Item = String>) -> usize {
        let added: Vec<String> = {
            let mut known = self.revoked.ids.write().unwrap_or_else(|p| p.into_inner());
            ids.into_iter().filter(|id| known.insert(id.clone())).collect()
        };
        if !added.is_empty() {
            self.valid.write().unwrap_or_else(|p| p.into_inner()).retain(|_, (p, _)| !added.contains(&p.token_id));
            // After the ids are in the set: a stream woken by this finds them there.
            self.revoked.grew.send_modify(|n| *n = n.wrapping_add(1));
        }
        added.len()
    }

    /// Every token's record (never its secret).
    ///
    /// # Errors
    /// The token table could not be read.
    pub async fn list(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.store.list_tokens().await
    }

    /// Issues a new token with `scope`.
    ///
    /// # Errors
    /// The token could not be stored.
    pub async fn issue(&self, scope: Scope, name: &str) -> Result<Issued, StoreError> {
        issue(self.store.as_ref(), scope, name).await
    }
}

/// Where the sweep learns which sessions of open streams still live: the browser
/// sessions ([`crate::sessions::Sessions`]), which know their own expiry.
#[async_trait::async_trait]
pub(crate) trait LiveSessions: Send + Sync {
    /// Of `hashes`, the sessions still live, in one read.
    ///
    /// # Errors
    /// The store could not be read.
    async fn live_among(&self, hashes: &[String]) -> Result<std::collections::HashSet<String>, StoreError>;
}

/// Keeps `tokens`' revoked set, and the state of the sessions of open streams, current
/// until `stop`: re-reads them every `every` (the first time at once), as soon as
/// `feed` says another process revoked a token or ended a session, and as soon as a
/// session ends through this node.
/// A failed read is logged and tried again at the next wake-up; streams stay open
/// meanwhile rather than drop every viewer over a passing fault.
pub(crate) async fn follow_revocations(
    tokens: &Tokens,
    sessions: &dyn LiveSessions,
    mut feed: Option<RevocationSignal>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut timer = tokio::time::interval(every);
    // A sweep that ran late is not made up for with a burst of them.
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = async {
                match feed.as_mut() {
                    Some(feed) => feed.changed().await,
                    None => std::future::pending().await,
                }
            } => {}
            () = tokens.revoked.sweep_now.notified() => {}
            _ = timer.tick() => {}
        }
        match tokens.sweep().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(newly_revoked = n, "learned of revoked tokens; their streams end"),
            Err(e) => tracing::warn!(error = %e, "could not re-read revoked tokens; trying again"),
        }
        match tokens.sweep_sessions(sessions).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(ended = n, "browser sessions with open streams ended; their streams end"),
            Err(e) => tracing::warn!(error = %e, "could not re-read the sessions of open streams; trying again"),
        }
    }
}

/// Issues a token straight into a store (the CLI uses this without a server).
///
/// # Errors
/// The token could not be stored.
pub async fn issue(store: &dyn Store, scope: Scope, name: &str) -> Result<Issued, StoreError> {
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32));
    let id = random_hex(8);
    let record = TokenRecord {
        id: id.clone(),
        name: name.to_owned(),
        scope: scope.as_str().to_owned(),
        created_ms: chrono::Utc::now().timestamp_millis(),
        revoked: false,
    };
    store.insert_token(record, hash(&token)).await?;
    Ok(Issued { id, name: name.to_owned(), scope, token })
}

/// Errors making the first admin token.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not write {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// On a store with no tokens at all, issues an admin token and writes it to
/// `<data_dir>/admin.token`, readable by the owner only. Returns it when it made one.
///
/// # Errors
/// The store or the file could not be written.
pub(crate) async fn bootstrap_admin(store: &dyn Store, data_dir: &Path) -> Result<Option<Issued>, BootstrapError> {
    if store.token_count().await? > 0 {
        return Ok(None);
    }
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    // With a shared store nothing else creates the directory. Made before the token is
    // stored: a token stored but never written out would lock the admin out for good.
    std::fs::create_dir_all(data_dir)
        .map_err(|source| BootstrapError::File { path: data_dir.display().to_string(), source })?;
    let issued = issue(store, Scope::Admin, "admin (first start)").await?;
    write_private(&path, &format!("{}\n", issued.token))
        .map_err(|source| BootstrapError::File { path: path.display().to_string(), source })?;
    Ok(Some(issued))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn scopes_include_the_ones_below() {
        let admin = Principal { scope: Scope::Admin, ..Principal::anonymous() };
        let read = Principal { scope: Scope::Read, ..Principal::anonymous() };
        assert!(admin.may(Scope::Write) && admin.may(Scope::Read));
        assert!(read.may(Scope::Read) && !read.may(Scope::Write));
        assert!("owner".parse::<Scope>().is_err());
    }

    #[tokio::test]
    async fn issued_tokens_resolve_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1).unwrap());
        let first = bootstrap_admin(store.as_ref(), dir.path()).await.unwrap().unwrap();
        assert!(bootstrap_admin(store.as_ref(), dir.path()).await.unwrap().is_none(), "only on first start");
        let on_disk = std::fs::read_to_string(dir.path().join(ADMIN_TOKEN_FILE)).unwrap();
        assert_eq!(on_disk.trim(), first.token);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let tokens = Tokens::new(Arc::clone(&store));
        assert_eq!(tokens.resolve(&first.token).await.unwrap().unwrap().scope, Scope::Admin);
        let reader = tokens.issue(Scope::Read, "dash").await.unwrap();
        assert_eq!(tokens.resolve(&reader.token).await.unwrap().unwrap().scope, Scope::Read);
        assert!(tokens.resolve("sf_0000").await.unwrap().is_none());
        let principal = tokens.resolve(&reader.token).await.unwrap().unwrap();
        let mut revocation = tokens.revocation(&principal);
        assert!(!revocation.is_revoked());
        assert!(tokens.revoke(&reader.id).await.unwrap());
        assert!(!tokens.revoke(&reader.id).await.unwrap(), "revoking twice changes nothing");
        assert!(revocation.is_revoked());
        tokio::time::timeout(Duration::from_secs(1), revocation.revoked()).await.expect("the watch completes");
        assert!(tokens.resolve(&reader.token).await.unwrap().is_none());
        assert_eq!(tokens.list().await.unwrap().iter().filter(|t| t.revoked).count(), 1);
        assert!(tokens.resolve("nonsense").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_token_revoked_behind_the_servers_back_is_refused_after_a_sweep_though_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1).unwrap());
        let tokens = Tokens::new(Arc::clone(&store));
        let reader = tokens.issue(Scope::Read, "dash").await.unwrap();
        let principal = tokens.resolve(&reader.token).await.unwrap().expect("valid, and now cached");
        let mut revocation = tokens.revocation(&principal);
        let watching = tokio::spawn(async move {
            revocation.revoked().await;
        });
        // What `swarmfeed token revoke` does: the store, not this `Tokens`.
        assert!(store.revoke_token(&reader.id).await.unwrap());
        assert!(tokens.resolve(&reader.token).await.unwrap().is_some(), "the cache does not know yet");
        assert!(!watching.is_finished());
        assert_eq!(tokens.sweep().await.unwrap(), 1);
        tokio::time::timeout(Duration::from_secs(1), watching).await.expect("the stream's watch completes").unwrap();
        assert!(tokens.resolve(&reader.token).await.unwrap().is_none(), "refused though it was cached");
        assert_eq!(tokens.sweep().await.unwrap(), 0, "nothing new the second time");
    }

    #[tokio::test]
    async fn a_stream_opened_with_a_session_is_ended_by_the_sweep_once_the_session_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1).unwrap());
        let tokens = Tokens::new(Arc::clone(&store));
        let sessions = crate::sessions::Sessions::new(Arc::clone(&store), Default::default());
        let reader = tokens.issue(Scope::Read, "dash").await.unwrap();
        let principal = tokens.resolve(&reader.token).await.unwrap().unwrap();
        let (ended, kept) = (sessions.start(&principal).await.unwrap(), sessions.start(&principal).await.unwrap());
        let in_session = |secret: &str| principal.clone().in_session(hash(secret));
        let (gone, stays) =
            (tokens.revocation(&in_session(&ended.secret)), tokens.revocation(&in_session(&kept.secret)));
        let same_session = tokens.revocation(&in_session(&ended.secret));
        assert_eq!(tokens.sweep_sessions(&sessions).await.unwrap(), 0, "both sessions live");
        assert!(sessions.end_by_id(&ended.id).await.unwrap());
        assert_eq!(tokens.sweep_sessions(&sessions).await.unwrap(), 1, "one look for the two streams of one session");
        assert!(gone.is_revoked() && same_session.is_revoked());
        assert!(!stays.is_revoked(), "another session of the same token goes on");
        drop((gone, same_session, stays));
        assert_eq!(tokens.sweep_sessions(&sessions).await.unwrap(), 0);
        assert!(tokens.revoked.sessions.lock().unwrap().is_empty(), "sessions without streams are forgotten");
    }
}
