//! The PostgreSQL pool, created lazily so that `serve` starts (and `/readyz`
//! answers false) while the database is still unreachable.

use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;

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
