//! carehub's DICOM edge (PS3.7, PS3.8): the DIMSE association server.
//!
//! ```text
//! modality / PACS ──A-ASSOCIATE──▶ DimseListener ── PeerPolicy (deny by default)
//!                 ──C-ECHO-RQ────▶               ◀─ C-ECHO-RSP
//!                 ──C-STORE-RQ───▶ StoreService ─▶ InstanceStore (fsync, by hash)
//!                                               ─▶ Ingress (metadata row + outbox, one commit)
//!                                               ◀─ C-STORE-RSP (success only after both)
//! ```
//!
//! Today: association control per peer (called AE, calling AE, source
//! address, services), Verification (C-ECHO) and Storage (C-STORE). The
//! imaging pipeline, the worklist and DICOMweb are issue 16's next steps.

pub mod component;
pub mod config;
pub mod dimse;
pub mod listener;
pub mod policy;
pub mod storage;
pub mod store;

pub use config::{DicomConfig, PeerConfig, Service};
pub use listener::DimseListener;
pub use storage::{FileStore, InstanceStore, Kept};

/// The connector's name in the message store, metrics and the audit trail.
pub const CONNECTOR: &str = "dicom";
