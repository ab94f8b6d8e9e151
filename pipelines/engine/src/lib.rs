//! The pipeline engine: how one record becomes canonical state, exactly once.
//!
//! For each record the [`Engine`] opens one PostgreSQL transaction and, in it,
//! stores the record in the message store, claims its event id for this
//! pipeline (a second delivery finds the claim and is skipped), runs the
//! pipeline's [`Handler`] (canonical writes, outbox events, audit entries) and
//! commits. Only after that commit may the source acknowledge the record
//! (Kafka offset commit). A handler that rejects the record sends it to the
//! dead letters with the reason; a transient failure (database down) is
//! returned so the source retries without acknowledging.
//!
//! [`ConsumerRunner`] feeds a Kafka consumer group into an engine.

mod component;
mod engine;
mod flows;
mod handler;
mod runner;
mod set_pass;

pub use component::PipelineComponent;
pub use engine::{Engine, InboundRecord, Processed, ReplayOutcome};
pub use handler::{Context, Handled, Handler, HandlerError, OutboxBuffer, OutboxEvent, StoredRef};
pub use runner::{ConsumerRunner, MAX_BATCH};

/// Errors that leave the record unacknowledged: retry later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("storage unavailable: {0}")]
    Store(#[from] carehub_schema::Error),
    #[error("dead letter {0} not found")]
    UnknownDeadLetter(i64),
    #[error("dead letter {id} belongs to pipeline {consumer:?}, not to {pipeline:?}")]
    WrongPipeline {
        id: i64,
        consumer: String,
        pipeline: String,
    },
}

impl Error {
    /// True when the same record may go through later unchanged (database
    /// unreachable, restarting, a serialization conflict). A failure that is
    /// not transient is the record's own: it is retried a bounded number of
    /// times, then dead-lettered, and never holds its partition.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
