//! `data` of the FHIR contracts.

use serde::{Deserialize, Serialize};

/// `data` of `carehub.fhir.resource.written.v1`: a Patient or ServiceRequest
/// an EHR wrote to the FHIR endpoint, which the intake pipeline applies to
/// the canonical record. The resource itself stays in the FHIR store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceWritten {
    pub resource_type: String,
    pub id: String,
    pub version_id: i32,
    /// The EHR's client id: the clinic of the orders it places.
    pub client: String,
}
