//! Which store the suite runs against, and a PostgreSQL database of its own for each
//! test.
//!
//! `SWARMFEED_TEST_STORE=postgres` runs the core suite on PostgreSQL (`scripts/test`
//! does so in a second pass); otherwise it runs on SQLite. The server is
//! `SWARMFEED_TEST_POSTGRES`, by default the local one on 127.0.0.1:5432. Databases are
//! named `<SWARMFEED_TEST_DB_PREFIX>_…` (default `sftest`), so `scripts/test` can drop
//! what a run left behind.

use std::path::Path;

use sha2::Digest;
use swarmfeed::store::StoreError;
use swarmfeed::store::postgres::{create_database, drop_database};

/// The PostgreSQL server the tests use.
pub fn server_url() -> String {
    std::env::var("SWARMFEED_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Whether the core suite runs on PostgreSQL.
pub fn suite_on_postgres() -> bool {
    std::env::var("SWARMFEED_TEST_STORE").is_ok_and(|s| s == "postgres")
}

pub fn prefix() -> String {
    std::env::var("SWARMFEED_TEST_DB_PREFIX").unwrap_or_else(|_| "sftest".into())
}

/// A database of a test's own.
pub struct Database {
    pub url: String,
    pub name: String,
}

impl Database {
    /// A new, empty database.
    pub async fn fresh() -> Self {
        let name = format!("{}_{}", prefix(), uuid::Uuid::now_v7().simple());
        let url = create_database(&server_url(), &name).await.expect("the test PostgreSQL server answers");
        Database { url, name }
    }

    /// The database that belongs to `data_dir`, made on first use: a server restarted
    /// on the same directory finds the same log, as it would find its SQLite file.
    pub async fn for_data_dir(data_dir: &Path) -> Self {
        let hash = hex::encode(sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes()));
        let name = format!("{}_dir_{}", prefix(), &hash[..24]);
        let url = match create_database(&server_url(), &name).await {
            Ok(url) => url,
            Err(StoreError::Postgres(e)) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
                swarmfeed::store::postgres::url_with_database(&server_url(), &name)
            }
            Err(e) => panic!("the test PostgreSQL server answers: {e}"),
        };
        Database { url, name }
    }

    /// Drops it, closing any session still on it.
    pub async fn drop(self) {
        drop_database(&server_url(), &self.name).await.expect("test database dropped");
    }
}
