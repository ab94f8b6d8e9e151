//! The FHIR R4 (4.0.1) endpoint for EHRs: an axum server over the canonical
//! record and the resources EHRs write, SMART-style bearer tokens, every
//! access audited.
//!
//! - [`auth`]: bearer tokens, SMART scopes, roles.
//! - [`server`]: routes, read, search ([`search`]), OperationOutcomes, AuditEvent.
//! - [`resources`]: canonical record → FHIR (where each column goes).
//! - [`store`]: stored version or canonical resource; what a write does.
//! - [`mod@write`], [`bundle`], [`commit`]: create, update, delete, history,
//!   batch and transaction Bundles, group commit.
//! - [`validate`], [`raw`]: R4 validation; resources kept verbatim.
//! - [`push`]: [`EhrPush`], order status pushed to subscribed EHRs (the
//!   connector kit's delivery).

pub mod auth;
pub mod bundle;
pub mod commit;
pub mod guard;
pub mod push;
pub mod raw;
pub mod resources;
pub mod search;
pub mod server;
pub mod store;
pub mod validate;
pub mod write;

pub use auth::{Access, AuthConfig, AuthError, Authenticator, Claims, Grant, Principal, Role, Scope};
pub use push::EhrPush;
pub use server::{
    BoundFhir, EhrSubscriber, FhirConfig, Hl7Converter, Outcome, ServeError, bind, capability_statement, router, serve,
};
