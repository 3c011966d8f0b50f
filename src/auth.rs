//! Tokens and scopes (DESIGN §6): issuing, hashing, and resolving a presented token.
//!
//! Only the SHA-256 of a token is stored. Lookups go by that hash, so the time a
//! lookup takes says nothing about how close a guess was to a real token. Owns the
//! in-memory cache of valid tokens; the HTTP layer (`http::auth`) decides which scope
//! each route needs.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::store::{Store, StoreError, TokenRecord};

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
    /// The token's hash, to check later that it is still valid; `None` when auth is off.
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
    pub fn in_session(self, session_hash: String) -> Self {
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

/// `bytes` random bytes from the OS-seeded CSPRNG, hex-encoded.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// How long a token seen valid is trusted without reading the store again. Bounds how
/// long a token revoked by another process (`swarmfeed token revoke`) keeps working;
/// revocations through this server take effect at once.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(10);

/// Resolves presented tokens, with a cache of the valid ones.
pub struct Tokens {
    store: Arc<dyn Store>,
    /// Hash → principal and when it was read, for tokens seen valid. Bounded by the
    /// number of issued tokens; unknown tokens are never cached. Locked only for a map
    /// access.
    valid: RwLock<HashMap<String, (Principal, Instant)>>,
    /// Bumped on every revocation, so open streams re-check their token at once.
    revocations: watch::Sender<u64>,
}

impl Tokens {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Tokens { store, valid: RwLock::new(HashMap::new()), revocations: watch::Sender::new(0) }
    }

    /// The principal for `token`, or `None` when it is unknown or revoked.
    ///
    /// # Errors
    /// The token table could not be read.
    pub async fn resolve(&self, token: &str) -> Result<Option<Principal>, StoreError> {
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
    pub async fn resolve_hash(&self, h: &str) -> Result<Option<Principal>, StoreError> {
        if let Some((p, read)) = self.valid.read().unwrap_or_else(|p| p.into_inner()).get(h)
            && read.elapsed() < TOKEN_RECHECK
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

    /// Whether `principal`'s token is still valid (not revoked since it was resolved),
    /// and, for a browser, its session still open.
    ///
    /// # Errors
    /// The token or session table could not be read.
    pub async fn still_valid(&self, principal: &Principal) -> Result<bool, StoreError> {
        let token_valid = match &principal.hash {
            None => true,
            Some(h) => self.resolve_hash(h).await?.is_some(),
        };
        Ok(match (&principal.session, token_valid) {
            (Some(session), true) => self.store.session_by_hash(session).await?.is_some(),
            (_, valid) => valid,
        })
    }

    /// Tells open streams that a browser session ended through this server (logout,
    /// `DELETE /api/sessions/{id}`), so that streams opened with it re-check now.
    pub fn session_ended(&self) {
        self.revocations.send_modify(|n| *n += 1);
    }

    /// A receiver that changes whenever a token is revoked, or a session ended,
    /// through this server.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Revokes token `id`; false when there is no such live token.
    ///
    /// # Errors
    /// The token table could not be written.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        let revoked = self.store.revoke_token(id).await?;
        if revoked {
            self.valid.write().unwrap_or_else(|p| p.into_inner()).retain(|_, (p, _)| p.token_id != id);
            self.revocations.send_modify(|n| *n += 1);
        }
        Ok(revoked)
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
pub async fn bootstrap_admin(store: &dyn Store, data_dir: &Path) -> Result<Option<Issued>, BootstrapError> {
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
        let revocations = tokens.revocations();
        assert!(tokens.revoke(&reader.id).await.unwrap());
        assert!(!tokens.revoke(&reader.id).await.unwrap(), "revoking twice changes nothing");
        assert!(revocations.has_changed().unwrap());
        assert!(!tokens.still_valid(&principal).await.unwrap());
        assert!(tokens.resolve(&reader.token).await.unwrap().is_none());
        assert_eq!(tokens.list().await.unwrap().iter().filter(|t| t.revoked).count(), 1);
        assert!(tokens.resolve("nonsense").await.unwrap().is_none());
    }
}
