//! One-time login links (DESIGN §9): `/login?code=…`.
//!
//! No long-lived secret travels in a URL: a link carries a code that logs a browser in
//! once, within `--login-link-minutes`, as the token it was made for. The store keeps
//! the code's hash only, and taking it deletes it, so of two browsers (or two nodes)
//! opening the same link exactly one gets in. Owns making codes, taking them, and the
//! address a printed link points at. Does not own the session that follows
//! (`sessions`) or the page (`http::session`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::auth::{self, ADMIN_TOKEN_FILE};
use crate::store::{Store, StoreError};

/// Default `--login-link-minutes`: a printed link works for 15 minutes.
pub(crate) const DEFAULT_VALID_FOR: Duration = Duration::from_secs(15 * 60);
/// Every code starts with this; it is no token, and says so.
const CODE_PREFIX: &str = "sfl_";
/// Random bytes in a code: 256 bits.
const CODE_BYTES: usize = 32;

/// What opening a link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redeemed {
    /// The code was good: log in as the token with this hash.
    Token(String),
    /// The code was real but its time ran out.
    Expired,
    /// The code was real but its token has been revoked since.
    Revoked,
    /// No such code: never made, or used already.
    Unknown,
}

/// Why no link could be made.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not read {path}: {source}")]
    AdminFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Makes a code that logs in once as token `token_id`, valid for `valid_for`.
///
/// # Errors
/// The store could not be written.
pub async fn mint(store: &dyn Store, token_id: &str, valid_for: Duration) -> Result<String, StoreError> {
    let code = format!("{CODE_PREFIX}{}", auth::random_hex(CODE_BYTES));
    let now = chrono::Utc::now().timestamp_millis();
    let expires = now.saturating_add(i64::try_from(valid_for.as_millis()).unwrap_or(i64::MAX));
    store.insert_login_code(&auth::hash(&code), token_id, now, expires).await?;
    Ok(code)
}

/// Makes a code for the admin token in `<data_dir>/admin.token`, when that file exists
/// and its token is live: what `serve` prints at every start and `login-link` without
/// `--scope` prints. `None` when there is no such file or its token was revoked.
///
/// # Errors
/// The file exists but cannot be read, or the store failed.
pub async fn mint_for_admin_file(
    store: &dyn Store,
    data_dir: &Path,
    valid_for: Duration,
) -> Result<Option<String>, LinkError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(t) => t.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LinkError::AdminFile { path: path.display().to_string(), source }),
    };
    let Some(record) = store.token_by_hash(&auth::hash(&token)).await?.filter(|r| !r.revoked) else {
        return Ok(None);
    };
    Ok(Some(mint(store, &record.id, valid_for).await?))
}

/// Takes `code`: it works at most once.
///
/// # Errors
/// The store could not be written.
pub(crate) async fn redeem(store: &dyn Store, code: &str) -> Result<Redeemed, StoreError> {
    if !auth::is_secret_shaped(code, CODE_PREFIX) {
        return Ok(Redeemed::Unknown);
    }
    let Some(taken) = store.take_login_code(&auth::hash(code)).await? else { return Ok(Redeemed::Unknown) };
    if taken.expires_ms < chrono::Utc::now().timestamp_millis() {
        return Ok(Redeemed::Expired);
    }
    Ok(taken.token_hash.map_or(Redeemed::Revoked, Redeemed::Token))
}

/// The link that logs in with `code` on the server at `base` (`http://host:port`).
pub fn url(base: &str, code: &str) -> String {
    format!("{}/login?code={code}", base.trim_end_matches('/'))
}

/// The base URL a person can open for a server bound to `bind` and serving `scheme`
/// (`http`, or `https` when it serves TLS). A wildcard bind
/// (`0.0.0.0`, `::`) is reachable at every address of the machine; the link names one
/// that a phone on the same network can open (the first non-loopback address of the
/// matching family), or loopback when the machine has none.
pub fn reachable_base(scheme: &str, bind: SocketAddr) -> String {
    let ip = if bind.ip().is_unspecified() {
        lan_address(bind.ip()).unwrap_or_else(|| loopback(bind.ip()))
    } else {
        bind.ip()
    };
    format!("{scheme}://{}", SocketAddr::new(ip, bind.port()))
}

fn loopback(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    }
}

/// The first usable non-loopback address of this machine: IPv4 first (what a phone
/// types most easily, and what `::` also accepts on a dual-stack socket), then a global
/// IPv6 address for an IPv6 bind. Link-local addresses need a zone a URL cannot carry.
fn lan_address(bind: IpAddr) -> Option<IpAddr> {
    let addrs = match if_addrs::get_if_addrs() {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, "could not list this machine's addresses");
            return None;
        }
    };
    let usable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80,
    };
    let ips: Vec<IpAddr> = addrs.iter().map(if_addrs::Interface::ip).filter(usable).collect();
    let v4 = ips.iter().copied().find(IpAddr::is_ipv4);
    let v6 = ips.iter().copied().find(IpAddr::is_ipv6);
    match bind {
        IpAddr::V4(_) => v4,
        IpAddr::V6(_) => v4.or(v6),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::{Scope, Tokens};
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn a_code_logs_in_once_and_only_before_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1).unwrap());
        let tokens = Tokens::new(Arc::clone(&store));
        let issued = tokens.issue(Scope::Read, "phone").await.unwrap();
        let code = mint(store.as_ref(), &issued.id, DEFAULT_VALID_FOR).await.unwrap();
        assert!(!code.contains(&issued.token), "the link never carries the token");
        let Redeemed::Token(hash) = redeem(store.as_ref(), &code).await.unwrap() else { panic!("first use logs in") };
        assert_eq!(tokens.resolve_hash(&hash).await.unwrap().unwrap().token_id, issued.id);
        assert_eq!(redeem(store.as_ref(), &code).await.unwrap(), Redeemed::Unknown, "a second use is refused");

        let stale = mint(store.as_ref(), &issued.id, Duration::ZERO).await.unwrap();
        // Expiry is to the millisecond; make sure one has passed.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(redeem(store.as_ref(), &stale).await.unwrap(), Redeemed::Expired);

        let orphan = mint(store.as_ref(), &issued.id, DEFAULT_VALID_FOR).await.unwrap();
        let other = tokens.issue(Scope::Read, "other").await.unwrap();
        let kept = mint(store.as_ref(), &other.id, DEFAULT_VALID_FOR).await.unwrap();
        assert!(tokens.revoke(&issued.id).await.unwrap());
        assert_eq!(redeem(store.as_ref(), &orphan).await.unwrap(), Redeemed::Unknown, "revoking deletes its codes");
        assert!(matches!(redeem(store.as_ref(), &kept).await.unwrap(), Redeemed::Token(_)));
        assert_eq!(redeem(store.as_ref(), "sfl_<script>").await.unwrap(), Redeemed::Unknown);
    }

    #[tokio::test]
    async fn the_admin_file_gets_a_link_while_its_token_lives() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path(), 1).unwrap());
        assert_eq!(mint_for_admin_file(store.as_ref(), dir.path(), DEFAULT_VALID_FOR).await.unwrap(), None);
        let admin = auth::bootstrap_admin(store.as_ref(), dir.path()).await.unwrap().unwrap();
        let code = mint_for_admin_file(store.as_ref(), dir.path(), DEFAULT_VALID_FOR).await.unwrap().unwrap();
        assert!(matches!(redeem(store.as_ref(), &code).await.unwrap(), Redeemed::Token(_)));
        assert!(store.revoke_token(&admin.id).await.unwrap());
        assert_eq!(mint_for_admin_file(store.as_ref(), dir.path(), DEFAULT_VALID_FOR).await.unwrap(), None);
    }

    #[test]
    fn printed_links_name_an_address_a_browser_can_open() {
        assert_eq!(reachable_base("http", "127.0.0.1:8000".parse().unwrap()), "http://127.0.0.1:8000");
        assert_eq!(reachable_base("https", "127.0.0.1:8443".parse().unwrap()), "https://127.0.0.1:8443");
        assert_eq!(reachable_base("http", "[::1]:8000".parse().unwrap()), "http://[::1]:8000");
        for wildcard in ["0.0.0.0:8000", "[::]:8000"] {
            let base = reachable_base("http", wildcard.parse().unwrap());
            let host: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
            assert!(!host.ip().is_unspecified(), "{wildcard} → {base}");
            assert_eq!(host.port(), 8000);
        }
        assert_eq!(url("http://h:1/", "sfl_x"), "http://h:1/login?code=sfl_x");
    }
}
