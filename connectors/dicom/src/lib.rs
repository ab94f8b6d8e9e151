//! carehub's DICOM edge (PS3.7, PS3.8): the DIMSE association server.
//!
//! ```text
//! modality / PACS ──A-ASSOCIATE──▶ DimseListener ── PeerPolicy (deny by default)
//!                 ──C-ECHO-RQ────▶               ◀─ C-ECHO-RSP
//! ```
//!
//! Today: association control per peer (called AE, calling AE, source
//! address, services) and the Verification service (C-ECHO). Storage
//! (C-STORE through the ingress), the worklist and DICOMweb are issue 16's
//! next steps.

pub mod component;
pub mod config;
pub mod dimse;
pub mod listener;
pub mod policy;
pub mod storage;

pub use config::{DicomConfig, PeerConfig, Service};
pub use listener::DimseListener;
pub use storage::{FileStore, InstanceStore, Kept};

/// The connector's name in the message store, metrics and the audit trail.
pub const CONNECTOR: &str = "dicom";
