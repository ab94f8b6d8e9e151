//! The connector kit: what every carehub connector is built from, so that a
//! rule or a mechanism lives in one place (see `docs/connector.md`).
//!
//! - [`ingress`]: [`Ingress`], the one store-before-acknowledge path: a
//!   group-committed transaction writes the message-store row, the onward
//!   record (outbox) or the dead letter, and the audit entry.
//! - [`component`]: [`Component`] and [`Registry`]: what `carehub serve`
//!   runs, the topics it creates, whose dead letters `dlq replay` hands back.
//! - [`http`]: what protects every HTTP listener (connection cap, deadlines,
//!   size limits, one error shape per listener).
//! - [`delivery`]: [`Deliver`], one kind of receiver, and [`DeliveryRunner`],
//!   which feeds it a topic in order, retries, remembers what was delivered
//!   across crashes and dead-letters refusals (with `<topic>.dlq`).

pub mod component;
pub mod delivery;
pub mod http;
pub mod ingress;

pub use carehub_kafka::wait;
pub use carehub_schema::ChangedContent;
pub use component::{BoxError, Component, Registry, Replayed, Runtime, Task, Topics};
pub use delivery::{Deliver, Delivery, DeliveryComponent, DeliveryRunner, MakeDeliverer, replay};
pub use ingress::{Arrival, Ingress, IngressSpec, Judgement, Stored};

/// Errors of the kit's runners.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Kafka(#[from] carehub_kafka::Error),
    #[error(transparent)]
    Store(#[from] carehub_schema::Error),
    #[error("dead letter {id} is {status}, not open")]
    NotOpen { id: i64, status: String },
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
