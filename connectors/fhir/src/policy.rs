//! Who may see what: the served types, the token's grant for a read, a
//! patient token's compartment, and the audit entries of reads (served or
//! refused). Used by the HTTP handlers and by Bundles alike.

use carehub_schema::{Action, AuditEntry};
use serde_json::json;

use crate::auth::{Access, Grant, Principal};
use crate::outcome::{Outcome, Status};
use crate::store::{self, Served};

pub fn not_found(resource_type: &str, id: &str) -> Outcome {
    Outcome::new(
        Status::NOT_FOUND,
        "not-found",
        format!("{resource_type}/{id} is not known"),
    )
}

pub fn gone(resource_type: &str, id: &str) -> Outcome {
    Outcome::new(Status::GONE, "deleted", format!("{resource_type}/{id} was deleted"))
}

/// A patient-scoped token reaches only its patient's compartment. Outside
/// it the answer is the one an unknown id gets (404), so the token cannot
/// tell which ids exist (hardening item 13).
pub fn in_reach(grant: &Grant, served: &Served, resource_type: &str, id: &str) -> Result<(), Outcome> {
    match grant {
        Grant::Patient(p) if !served.in_compartment(*p) => Err(not_found(resource_type, id)),
        _ => Ok(()),
    }
}

/// The audit entry of a read that was refused (scope, compartment): the
/// attempt is on the trail as well as the reads that were served.
pub fn refused_read_entry(
    principal: &Principal,
    resource_type: &str,
    id: &str,
    origin: String,
    why: &Outcome,
) -> AuditEntry {
    read_entry(principal, resource_type, id, origin)
        .detail(json!({ "outcome": "refused", "status": why.status().as_u16() }))
}

pub fn read_entry(principal: &Principal, resource_type: &str, id: &str, origin: String) -> AuditEntry {
    AuditEntry::new(
        principal.actor_kind(),
        principal.actor(),
        Action::Read,
        store::audit_entity(resource_type),
    )
    .entity(id)
    .origin(origin)
}

/// Resource types in a patient's compartment (what `patient/` scopes reach).
pub const IN_PATIENT_COMPARTMENT: &[&str] = &[
    "Patient",
    "ServiceRequest",
    "Task",
    "Observation",
    "DiagnosticReport",
    "DocumentReference",
    "ImagingStudy",
    "Invoice",
];

/// 404 for a type this server does not serve.
pub fn served_type(resource_type: &str) -> Result<(), Outcome> {
    if store::is_served(resource_type) {
        Ok(())
    } else {
        Err(Outcome::new(
            Status::NOT_FOUND,
            "not-supported",
            format!("resource type {resource_type} is not served (see /metadata)"),
        ))
    }
}

pub fn read_grant(principal: &Principal, resource_type: &str) -> Result<Grant, Outcome> {
    match principal.grant(resource_type, Access::Read) {
        Grant::None => Err(Outcome::new(
            Status::FORBIDDEN,
            "forbidden",
            format!("the token's scopes do not allow reading {resource_type}"),
        )),
        g => Ok(g),
    }
}
