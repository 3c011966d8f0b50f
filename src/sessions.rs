//! Browser sessions (DESIGN §9): starting, resolving, expiring and ending them.
//!
//! A session is a random secret in the browser's cookie. The store keeps only the
//! secret's hash, the token the session acts as, and when it was created and last used,
//! so every node resolves it, a restart keeps it, and a stolen database holds nothing a
//! browser could present. Owns a session's life: the idle timeout, the maximum age, how
//! often use is written back, and pruning. Does not own the cookie header
//! (`http::session`) nor the token's validity (`auth::Tokens`): a session is only ever
//! as valid as its token, and revoking the token deletes its sessions.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{self, Principal};
use crate::store::{SessionRecord, Store, StoreError};

/// Every session secret starts with this, so a leaked cookie value is recognisable.
const SECRET_PREFIX: &str = "sfs_";
/// Random bytes in a session secret: 256 bits, far beyond guessing.
const SECRET_BYTES: usize = 32;
/// Last use is written back at most this often per session: the idle timeout is
/// counted in hours, and a write per page view or API call would cost more than it
/// tells.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Default `--session-idle-minutes`: 12 hours without use end a session.
pub(crate) const DEFAULT_IDLE: Duration = Duration::from_secs(720 * 60);
/// Default `--session-max-days`: no session outlives 30 days.
pub(crate) const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// How long sessions and login links live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// Without use for this long a session ends (`--session-idle-minutes`,
    /// `SWARMFEED_SESSION_IDLE_MINUTES`; default 720).
    pub idle: Duration,
    /// No session lives longer than this (`--session-max-days`,
    /// `SWARMFEED_SESSION_MAX_DAYS`; default 30).
    pub max_age: Duration,
    /// A login link works this long after it is made (`--login-link-minutes`,
    /// `SWARMFEED_LOGIN_LINK_MINUTES`; default 15).
    pub login_link: Duration,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            idle: DEFAULT_IDLE,
            max_age: DEFAULT_MAX_AGE,
            login_link: crate::login_link::DEFAULT_VALID_FOR,
        }
    }
}

/// A session just started: its public id and the secret for the cookie, shown once.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: String,
    pub secret: String,
}

/// A live session found by its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub session_id: String,
    /// The secret's hash: what a stream keeps to check later that the session lives.
    pub session_hash: String,
    /// The hash of the token the session acts as, resolved by `auth::Tokens`.
    pub token_hash: String,
}

/// The sessions of every node, kept in the store.
pub struct Sessions {
    store: Arc<dyn Store>,
    settings: SessionSettings,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether `v` can be a session secret: only what [`Sessions::start`] makes, so a
/// cookie value can go back into a header or a log line unescaped.
pub(crate) fn is_secret_shaped(v: &str) -> bool {
    auth::is_secret_shaped(v, SECRET_PREFIX)
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>, settings: SessionSettings) -> Self {
        Sessions { store, settings }
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Starts a new session for `principal`'s token. Every login gets a new id, so a
    /// session id planted before login (fixation) is never the one that is trusted.
    /// Ended and expired sessions of every token are pruned first, which keeps the
    /// table as small as the sessions in use.
    ///
    /// # Errors
    /// The store could not be written.
    pub async fn start(&self, principal: &Principal) -> Result<Started, StoreError> {
        let now = now_ms();
        self.prune(now).await?;
        let secret = format!("{SECRET_PREFIX}{}", auth::random_hex(SECRET_BYTES));
        let id = auth::random_hex(8);
        self.store.insert_session(&id, &auth::hash(&secret), &principal.token_id, now).await?;
        Ok(Started { id, secret })
    }

    /// The live session whose cookie holds `secret`. An expired one is deleted and
    /// answers `None`, like an unknown one.
    ///
    /// # Errors
    /// The store could not be read or written.
    pub async fn resolve(&self, secret: &str) -> Result<Option<Resolved>, StoreError> {
        if !is_secret_shaped(secret) {
            return Ok(None);
        }
        let session_hash = auth::hash(secret);
        let Some(found) = self.store.session_by_hash(&session_hash).await? else { return Ok(None) };
        let now = now_ms();
        let s = &found.session;
        if self.expired(s, now) {
            self.store.delete_session(&s.id).await?;
            tracing::info!(session_id = %s.id, token_id = %s.token_id, "browser session expired");
            return Ok(None);
        }
        if now - s.last_used_ms >= millis(TOUCH_EVERY) {
            self.store.touch_session(&s.id, now).await?;
        }
        Ok(Some(Resolved { session_id: found.session.id, session_hash, token_hash: found.token_hash }))
    }

    /// Whether the session with `session_hash` still exists and has not expired: an
    /// open stream's check that nobody ended it since.
    ///
    /// # Errors
    /// The store could not be read.
    pub async fn is_live(&self, session_hash: &str) -> Result<bool, StoreError> {
        let found = self.store.session_by_hash(session_hash).await?;
        Ok(found.is_some_and(|f| !self.expired(&f.session, now_ms())))
    }

    /// When `s` expires unless it is used again: the idle timeout after its last use,
    /// or its maximum age, whichever comes first (ms since the epoch).
    pub fn expires_ms(&self, s: &SessionRecord) -> i64 {
        let idle_ends = s.last_used_ms.saturating_add(millis(self.settings.idle));
        idle_ends.min(s.created_ms.saturating_add(millis(self.settings.max_age)))
    }

    fn expired(&self, s: &SessionRecord, now: i64) -> bool {
        now > self.expires_ms(s)
    }

    /// Ends the session whose cookie holds `secret` (logout); false when there was
    /// none. The cookie's value is worthless from then on, on every node.
    ///
    /// # Errors
    /// The store could not be read or written.
    pub async fn end(&self, secret: &str) -> Result<bool, StoreError> {
        if !is_secret_shaped(secret) {
            return Ok(false);
        }
        match self.store.session_by_hash(&auth::hash(secret)).await? {
            Some(found) => self.store.delete_session(&found.session.id).await,
            None => Ok(false),
        }
    }

    /// Ends session `id` (an admin's `DELETE /api/sessions/{id}`); false when there is
    /// no such session.
    ///
    /// # Errors
    /// The store could not be written.
    pub async fn end_by_id(&self, id: &str) -> Result<bool, StoreError> {
        self.store.delete_session(id).await
    }

    /// Every live session, newest first. Expired ones are pruned first, so the list
    /// shows only sessions a browser could still use.
    ///
    /// # Errors
    /// The store could not be read or written.
    pub async fn list(&self) -> Result<Vec<SessionRecord>, StoreError> {
        self.prune(now_ms()).await?;
        self.store.list_sessions().await
    }

    async fn prune(&self, now: i64) -> Result<(), StoreError> {
        let pruned = self
            .store
            .prune_sessions(now - millis(self.settings.idle), now - millis(self.settings.max_age), now)
            .await?;
        if pruned > 0 {
            tracing::debug!(pruned, "pruned expired sessions and login codes");
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl auth::LiveSessions for Sessions {
    /// Of `hashes` (the sessions of a node's open streams), those still live, read at
    /// once rather than one [`Sessions::is_live`] each.
    ///
    /// # Errors
    /// The store could not be read.
    async fn live_among(&self, hashes: &[String]) -> Result<std::collections::HashSet<String>, StoreError> {
        let now = now_ms();
        let found = self.store.sessions_by_hashes(hashes).await?;
        Ok(found.into_iter().filter(|(_, s)| !self.expired(s, now)).map(|(hash, _)| hash).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Scope, Tokens};
    use crate::store::sqlite::SqliteStore;

    async fn setup(settings: SessionSettings) -> (tempfile::TempDir, Arc<dyn Store>, Tokens, Sessions) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1).unwrap());
        let tokens = Tokens::new(Arc::clone(&store));
        let sessions = Sessions::new(Arc::clone(&store), settings);
        (dir, store, tokens, sessions)
    }

    #[tokio::test]
    async fn a_session_resolves_to_its_token_until_it_is_ended() {
        let (_dir, _store, tokens, sessions) = setup(SessionSettings::default()).await;
        let issued = tokens.issue(Scope::Read, "dash").await.unwrap();
        let principal = tokens.resolve(&issued.token).await.unwrap().unwrap();
        let first = sessions.start(&principal).await.unwrap();
        let second = sessions.start(&principal).await.unwrap();
        assert_ne!(first.secret, second.secret, "every login gets a new secret");
        assert_ne!(first.id, second.id);
        assert!(!first.secret.contains(&issued.token) && is_secret_shaped(&first.secret));
        let resolved = sessions.resolve(&first.secret).await.unwrap().unwrap();
        assert_eq!(resolved.session_id, first.id);
        assert_eq!(tokens.resolve_hash(&resolved.token_hash).await.unwrap().unwrap().token_id, issued.id);
        assert_eq!(sessions.list().await.unwrap().len(), 2);
        assert!(sessions.end(&first.secret).await.unwrap());
        assert!(sessions.resolve(&first.secret).await.unwrap().is_none(), "the old cookie is worthless");
        assert!(!sessions.is_live(&resolved.session_hash).await.unwrap());
        assert!(!sessions.end(&first.secret).await.unwrap(), "ending twice changes nothing");
        assert!(sessions.end_by_id(&second.id).await.unwrap());
        assert!(sessions.list().await.unwrap().is_empty());
        assert!(sessions.resolve("sf_not_a_session").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn revoking_the_token_ends_its_sessions() {
        let (_dir, _store, tokens, sessions) = setup(SessionSettings::default()).await;
        let issued = tokens.issue(Scope::Admin, "ops").await.unwrap();
        let principal = tokens.resolve(&issued.token).await.unwrap().unwrap();
        let started = sessions.start(&principal).await.unwrap();
        assert!(tokens.revoke(&issued.id).await.unwrap());
        assert!(sessions.resolve(&started.secret).await.unwrap().is_none());
        assert!(sessions.list().await.unwrap().is_empty(), "the revoked token's sessions are gone");
    }

    #[tokio::test]
    async fn idle_and_old_sessions_expire() {
        let settings = SessionSettings {
            idle: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            ..SessionSettings::default()
        };
        let (_dir, store, tokens, sessions) = setup(settings).await;
        let issued = tokens.issue(Scope::Read, "dash").await.unwrap();
        let principal = tokens.resolve(&issued.token).await.unwrap().unwrap();
        let now = now_ms();
        // Sessions written as if started in the past, by the store directly.
        let idle = format!("{SECRET_PREFIX}idle");
        store.insert_session("idle", &auth::hash(&idle), &issued.id, now - 61_000).await.unwrap();
        let old = format!("{SECRET_PREFIX}old");
        store.insert_session("old", &auth::hash(&old), &issued.id, now - 3_601_000).await.unwrap();
        store.touch_session("old", now).await.unwrap();
        assert!(sessions.resolve(&idle).await.unwrap().is_none(), "idle past the timeout");
        assert!(sessions.resolve(&old).await.unwrap().is_none(), "older than the maximum age");
        let fresh = sessions.start(&principal).await.unwrap();
        assert!(sessions.resolve(&fresh.secret).await.unwrap().is_some());
        assert_eq!(store.list_sessions().await.unwrap().len(), 1, "expired sessions were deleted");
    }
}
