//! carehub's canonical record and the tables that make the hub trustworthy.
//!
//! - [`model`]: the canonical types (patient, order, observation, …) and their tables.
//! - [`MessageStore`]: every inbound message, raw and verbatim, with an idempotency key.
//! - [`AuditLog`]: the append-only, hash-chained audit trail.
//! - [`Outbox`]: outbound events written in the same transaction as the change.
//! - [`DeadLetters`]: what could not be handled, with the reason, for replay.
//! - [`fhir_store`]: FHIR resources as EHRs wrote them, every version verbatim.
//! - [`Envelope`]: the versioned envelope every Kafka payload travels in;
//!   [`contracts`]: every payload's type name and `data`.
//!
//! All writes take a `&mut PgConnection` so that callers compose them inside one
//! transaction: that transaction is the hub's commit point.

pub mod audit;
pub mod consumed;
pub mod contracts;
pub mod db;
pub mod dead_letter;
pub mod envelope;
pub mod error;
pub mod fhir_store;
pub mod group_commit;
pub mod lab;
pub mod lab_batch;
pub mod message_store;
pub mod model;
pub mod order_book;
pub mod outbox;
pub mod patient_batch;
pub mod records;
pub mod repo;
pub mod views;

pub use audit::{Action, ActorKind, AuditEntry, AuditLog, AuditWriter, ChainBreak};
pub use dead_letter::{DeadLetter, DeadLetters, NewDeadLetter};
pub use envelope::Envelope;
pub use error::{Error, Result};
pub use group_commit::GroupCommit;
pub use message_store::{ChangedContent, ClaimedBatch, Ingested, MessageStore, NewMessage, StoredMessage};
pub use outbox::{OUTBOX_LANES, Outbox, OutboxRow, UnsentEvent, all_lanes};

use sqlx::PgPool;

/// The canonical schema's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Applies pending migrations and makes sure the message-store partitions for
/// the coming months exist. Running it on a migrated database changes nothing.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    MessageStore::ensure_partitions(pool).await?;
    Ok(())
}
