use thiserror::Error;

/// Errors of the canonical store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{entity} not found: {key}")]
    NotFound { entity: &'static str, key: String },
    #[error("invalid data: {0}")]
    Invalid(String),
    /// A shared write (the audit writer's batch) failed; the reason as text.
    #[error("write failed: {0}")]
    Unavailable(String),
}

impl Error {
    /// True when retrying the same operation later may succeed (connection
    /// lost, database restarting, serialization conflict, pool exhausted).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => is_transient_sqlx(e),
            _ => false,
        }
    }
}

impl Error {
    /// The SQLSTATE of a database error, for logs and dead-letter reasons
    /// (the code names the failure without quoting any data).
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Database(sqlx::Error::Database(db)) => db.code().map(|c| match c {
                std::borrow::Cow::Borrowed(b) => b,
                std::borrow::Cow::Owned(_) => "other",
            }),
            _ => None,
        }
    }
}

pub(crate) fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            // Class 08 (connection), 40 (serialization/deadlock), 53 (resources),
            // 57P (operator intervention: shutdown, restart).
            db.code().is_some_and(|c| {
                c.starts_with("08") || c.starts_with("40") || c.starts_with("53") || c.starts_with("57P")
            })
        }
        _ => false,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
