//! The FHIR R4 (4.0.1) endpoint for EHRs: an axum server over the canonical
//! record and the resources EHRs write, SMART-style bearer tokens, every
//! access audited.
//!
//! - [`auth`]: bearer tokens, SMART scopes, roles.
//! - [`http`]: the HTTP layer: routes, extractors, OperationOutcome
//!   responses, read, search ([`search`]), writes, AuditEvent, its guard.
//! - The domain, no HTTP in it: [`outcome`] (success or OperationOutcome),
//!   [`policy`] (who sees what), [`resources`] (canonical record → FHIR,
//!   where each column goes), [`store`] (stored version or canonical
//!   resource; what a write does), [`bundle`] and [`commit`] (batch and
//!   transaction Bundles, group commit).
//! - [`config`]: the `[fhir]` section.
//! - [`validate`], [`raw`]: R4 validation; resources kept verbatim.
//! - [`push`]: [`EhrPush`], order status pushed to subscribed EHRs (the
//!   connector kit's delivery).

pub mod auth;
pub mod bundle;
pub mod commit;
pub mod component;
pub mod config;
pub mod http;
pub mod outcome;
pub mod policy;
pub mod push;
pub mod raw;
pub mod resources;
pub mod search;
pub mod store;
pub mod validate;

pub use auth::{Access, AuthConfig, AuthError, Authenticator, Claims, Grant, Principal, Role, Scope};
pub use config::{EhrSubscriber, FhirConfig};
pub use http::{BoundFhir, Hl7Converter, ServeError, bind, capability_statement, router, serve};
pub use outcome::{Outcome, Status};
pub use push::EhrPush;
