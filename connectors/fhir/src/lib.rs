//! The FHIR R4 (4.0.1) endpoint for EHRs: an axum server over the canonical
//! record, SMART-style bearer tokens, every access audited.
//!
//! Built so far: bearer-token authentication and SMART scopes ([`auth`]),
//! `GET /metadata`, read and search ([`search`]) of Patient, ServiceRequest,
//! Task, Observation, Practitioner and Organization ([`resources`]: where
//! each canonical column goes). Writes,
//! history, Bundles and the EHR push are the rest of the FHIR issue.

pub mod auth;
pub mod bundle;
pub mod commit;
pub mod raw;
pub mod resources;
pub mod search;
pub mod server;
pub mod store;
pub mod validate;
pub mod write;

pub use auth::{Access, AuthConfig, AuthError, Authenticator, Claims, Grant, Principal, Role, Scope};
pub use server::{EhrSubscriber, FhirConfig, Hl7Converter, Outcome, ServeError, capability_statement, router, serve};
