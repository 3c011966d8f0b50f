//! Databases made and dropped for tests: each test of the integration suite, the
//! unit tests here and the commit-rate example get a database of their own. Built only
//! for tests and with the `test-support` feature, which the crate's own
//! dev-dependency on itself turns on, so the product carries no code that creates or
//! drops databases.

use super::{StoreError, connect, parse_url};

/// `url` with its database name replaced by `name` (for `postgres://` URLs).
pub fn url_with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..].find('/').map_or(base.len(), |i| authority + i);
    let mut out = format!("{}/{name}", &base[..path]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn check_database_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(()) } else { Err(StoreError::BadUrl(format!("{name:?} is not a plain database name"))) }
}

/// Creates the empty database `name` on the server of `server_url` and returns its
/// URL. The test suites give each test a database of its own this way.
///
/// # Errors
/// The name is not lowercase letters, digits and `_`, or the server refused.
pub async fn create_database(server_url: &str, name: &str) -> Result<String, StoreError> {
    check_database_name(name)?;
    let (client, _running) = connect(&parse_url(server_url)?).await?;
    client.batch_execute(&format!("CREATE DATABASE {name}")).await?;
    Ok(url_with_database(server_url, name))
}

/// Drops the database `name` on the server of `server_url`, closing its sessions.
///
/// # Errors
/// The name is not a plain name, or the server refused.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), StoreError> {
    check_database_name(name)?;
    let (client, _running) = connect(&parse_url(server_url)?).await?;
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    Ok(())
}

/// The server the tests use: `SWARMFEED_TEST_POSTGRES` (set by `scripts/test`), or
/// the local default.
#[cfg(test)]
fn server() -> String {
    std::env::var("SWARMFEED_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped when the guard is.
#[cfg(test)]
pub(super) struct Scratch {
    pub(super) url: String,
    name: String,
}

#[cfg(test)]
impl Scratch {
    pub(super) async fn new() -> Self {
        let prefix = std::env::var("SWARMFEED_TEST_DB_PREFIX").unwrap_or_else(|_| "sftest".into());
        let name = format!("{prefix}_unit_{}", uuid::Uuid::now_v7().simple());
        let url = create_database(&server(), &name).await.expect("test PostgreSQL answers");
        Scratch { url, name }
    }

    pub(super) async fn drop(self) {
        drop_database(&server(), &self.name).await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_url;
    use super::*;

    #[test]
    fn database_urls_get_the_new_name_and_keep_their_options() {
        assert_eq!(url_with_database("postgres://u@h:5/postgres", "x"), "postgres://u@h:5/x");
        assert_eq!(url_with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(url_with_database("postgresql://h/db?sslmode=disable", "x"), "postgresql://h/x?sslmode=disable");
        assert!(parse_url("mysql://h/db").is_err());
        assert!(check_database_name("a; DROP").is_err());
    }
}
