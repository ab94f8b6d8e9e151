//! `[database]` and the PostgreSQL pool, created lazily so that `serve`
//! starts (and `/readyz` answers false) while the database is still unreachable.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use carehub_core::SensitiveString;
use serde::{Deserialize, Serialize};

/// PostgreSQL, home of the canonical record, message store, audit trail and outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL (`postgres://user:password@host:port/database`). Secret: never logged.
    #[serde(default = "default_database_url")]
    pub url: SensitiveString,
    /// Most connections in the pool.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Seconds to wait for a connection before an operation fails.
    #[serde(default = "default_acquire_timeout_secs")]
    pub acquire_timeout_secs: u64,
}

fn default_database_url() -> SensitiveString {
    SensitiveString::new("postgres://postgres:postgres@127.0.0.1:5432/carehub")
}
const fn default_max_connections() -> u32 {
    16
}
const fn default_acquire_timeout_secs() -> u64 {
    5
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: default_database_url(),
            max_connections: default_max_connections(),
            acquire_timeout_secs: default_acquire_timeout_secs(),
        }
    }
}

/// A lazily connecting pool. Fails only when the URL itself is malformed.
pub fn pool(cfg: &DatabaseConfig) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(cfg.url.expose())?.application_name("carehub");
    Ok(PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(Duration::from_secs(cfg.acquire_timeout_secs))
        .connect_lazy_with(opts))
}

/// `host:port/database`, to name the server in logs and errors without credentials.
pub fn describe(cfg: &DatabaseConfig) -> String {
    match PgConnectOptions::from_str(cfg.url.expose()) {
        Ok(o) => format!("{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or("")),
        Err(_) => "<malformed database url>".to_owned(),
    }
}

/// True when `SELECT 1` answers within `timeout`.
pub async fn reachable(pool: &PgPool, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await,
        Ok(Ok(_))
    )
}
