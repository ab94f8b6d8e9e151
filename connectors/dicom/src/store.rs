//! The Storage service (C-STORE, PS3.4 annex B) as an SCP: an instance is
//! written to the instance storage as its fragments arrive, kept (fsynced)
//! under its content hash, its metadata read from the kept file (never from
//! memory, up to the pixel data), checked against the command, and stored
//! through the ingress — metadata row and onward record in one commit —
//! before the status is answered. Success only after all of that.

use std::sync::Arc;

use carehub_connector_kit::{Arrival, Ingress, Judgement, Stored};
use carehub_schema::contracts::InstanceReceived;
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, OpenFileOptions};

use crate::dimse::status;
use crate::storage::{InstanceStore, InstanceWriter, StorageError};

/// What a C-STORE ends with: its status and, for a non-success, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: u16,
    pub comment: Option<String>,
}

impl Outcome {
    fn fail(status: u16, comment: impl Into<String>) -> Self {
        Outcome {
            status,
            comment: Some(comment.into()),
        }
    }
}

/// A storage SOP class (PS3.4 annex B: under 1.2.840.10008.5.1.4.1.1).
pub fn is_storage_class(uid: &str) -> bool {
    uid.starts_with("1.2.840.10008.5.1.4.1.1.")
}

/// A UID as PS3.5 9.1 has it: 1 to 64 characters, digits in dot-separated
/// components, no component with a leading zero.
pub fn is_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()) && (c == "0" || !c.starts_with('0')))
}

/// One instance being received.
pub struct Receiving {
    writer: Option<Box<dyn InstanceWriter>>,
    /// Set when the instance is refused before its data ends: the rest is read and dropped.
    refused: Option<Outcome>,
    pub sop_class: String,
    pub sop_instance: String,
}

impl std::fmt::Debug for Receiving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiving")
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

/// The C-STORE service of one server.
#[derive(Clone)]
pub struct StoreService {
    pub store: Arc<dyn InstanceStore>,
    pub ingress: Ingress,
    pub max_instance_bytes: u64,
}

impl std::fmt::Debug for StoreService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreService")
            .field("max_instance_bytes", &self.max_instance_bytes)
            .finish_non_exhaustive()
    }
}

impl StoreService {
    /// A C-STORE-RQ arrived: its data set follows. `allowed`: the peer may store.
    pub fn begin(&self, sop_class: &str, sop_instance: &str, transfer_syntax: &str, allowed: bool) -> Receiving {
        let mut r = Receiving {
            writer: None,
            refused: None,
            sop_class: sop_class.to_owned(),
            sop_instance: sop_instance.to_owned(),
        };
        if !allowed {
            r.refused = Some(Outcome::fail(status::NOT_AUTHORIZED, "this peer may not store"));
        } else if !is_storage_class(sop_class) {
            r.refused = Some(Outcome::fail(
                status::SOP_CLASS_NOT_SUPPORTED,
                "not a storage SOP class",
            ));
        } else if !is_uid(sop_class) || !is_uid(sop_instance) {
            r.refused = Some(Outcome::fail(
                status::CANNOT_UNDERSTAND,
                "the command's UIDs are not UIDs",
            ));
        } else {
            match self.start_file(sop_class, sop_instance, transfer_syntax) {
                Ok(w) => r.writer = Some(w),
                Err(e) => r.refused = Some(Outcome::fail(status::OUT_OF_RESOURCES, e.to_string())),
            }
        }
        r
    }

    /// A DICOM file (PS3.10): preamble, `DICM`, the file meta group, then
    /// the data set exactly as it arrives.
    fn start_file(&self, class: &str, instance: &str, ts: &str) -> Result<Box<dyn InstanceWriter>, StorageError> {
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(class)
            .media_storage_sop_instance_uid(instance)
            .transfer_syntax(ts)
            .implementation_class_uid(dicom_ul::IMPLEMENTATION_CLASS_UID)
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut head = vec![0u8; 128];
        head.extend_from_slice(b"DICM");
        meta.write(&mut head)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut w = self
            .store
            .begin(self.max_instance_bytes.saturating_add(head.len() as u64))?;
        w.write(&head)?;
        Ok(w)
    }

    /// A fragment of the data set.
    pub fn data(&self, r: &mut Receiving, bytes: &[u8]) {
        if r.refused.is_some() {
            return;
        }
        if let Some(w) = r.writer.as_mut()
            && let Err(e) = w.write(bytes)
        {
            r.writer = None; // dropped: nothing left behind
            r.refused = Some(Outcome::fail(status::OUT_OF_RESOURCES, e.to_string()));
        }
    }

    /// The data set ended: keep, check, store; then the status.
    pub async fn finish(&self, mut r: Receiving, peer: &str, calling_ae: &str) -> Outcome {
        if let Some(refused) = r.refused.take() {
            return refused;
        }
        let Some(writer) = r.writer.take() else {
            return Outcome::fail(status::OUT_OF_RESOURCES, "no storage");
        };
        let store = self.store.clone();
        // File work off the async threads.
        let kept = match tokio::task::spawn_blocking(move || writer.keep()).await {
            Ok(Ok(kept)) => kept,
            Ok(Err(e)) => return Outcome::fail(status::OUT_OF_RESOURCES, e.to_string()),
            Err(_) => return Outcome::fail(status::OUT_OF_RESOURCES, "storage task failed"),
        };
        let Some(path) = store.path_of(&kept.sha256) else {
            return Outcome::fail(status::OUT_OF_RESOURCES, "no storage path");
        };
        let meta = match tokio::task::spawn_blocking(move || read_metadata(&path)).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return Outcome::fail(status::CANNOT_UNDERSTAND, e),
            Err(_) => return Outcome::fail(status::CANNOT_UNDERSTAND, "metadata task failed"),
        };
        if meta.get("sop_class_uid").and_then(|v| v.as_str()) != Some(r.sop_class.as_str())
            || meta.get("sop_instance_uid").and_then(|v| v.as_str()) != Some(r.sop_instance.as_str())
        {
            return Outcome::fail(
                status::DATA_SET_MISMATCH,
                "the data set's SOP class or instance is not the command's",
            );
        }
        let mut meta = meta;
        meta.insert("sha256".into(), kept.sha256.clone().into());
        meta.insert("size".into(), kept.size.into());
        let partition_key = meta
            .get("study_instance_uid")
            .and_then(|v| v.as_str())
            .unwrap_or(&r.sop_instance)
            .to_owned();
        let raw = serde_json::to_vec(&meta).unwrap_or_default();
        let arrival = Arrival {
            key: format!("dicom:{}", r.sop_instance),
            partition_key,
            message_type: Some(r.sop_class.clone()),
            control_id: Some(r.sop_instance.clone()),
            peer: peer.to_owned(),
            origin: format!("dimse:{calling_ae}@{peer}"),
            raw,
            judgement: Judgement::Accept,
        };
        match self.ingress.store(arrival).await {
            Ok(Stored::New { .. } | Stored::Duplicate { changed: false, .. }) => Outcome {
                status: status::SUCCESS,
                comment: None,
            },
            Ok(Stored::NewVersion { .. } | Stored::Duplicate { changed: true, .. }) => Outcome {
                status: status::WARNING_NEW_VERSION,
                comment: Some("stored as a new version of an instance received before with other content".into()),
            },
            Ok(Stored::Unstorable { reason, .. }) => Outcome::fail(status::CANNOT_UNDERSTAND, reason),
            Err(e) => Outcome::fail(status::OUT_OF_RESOURCES, e.to_string()),
        }
    }
}

/// The onward record of a stored instance.
pub fn onward(message_id: uuid::Uuid, arrival: &Arrival) -> carehub_schema::Envelope {
    let meta: serde_json::Value = serde_json::from_slice(&arrival.raw).unwrap_or_default();
    let calling_ae = arrival
        .origin
        .strip_prefix("dimse:")
        .and_then(|o| o.split('@').next())
        .unwrap_or_default()
        .to_owned();
    InstanceReceived {
        message_id,
        sha256: meta["sha256"].as_str().unwrap_or_default().to_owned(),
        peer: arrival.peer.clone(),
        calling_ae,
    }
    .into_envelope(&arrival.key)
}

/// What the message store indexes of an instance, read from its file up
/// to the pixel data.
fn read_metadata(path: &std::path::Path) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| format!("the data set does not parse: {e}"))?;
    let text = |tag| -> serde_json::Value {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
            .map_or(serde_json::Value::Null, serde_json::Value::String)
    };
    let mut m = serde_json::Map::new();
    for (name, tag) in [
        ("sop_class_uid", tags::SOP_CLASS_UID),
        ("sop_instance_uid", tags::SOP_INSTANCE_UID),
        ("study_instance_uid", tags::STUDY_INSTANCE_UID),
        ("series_instance_uid", tags::SERIES_INSTANCE_UID),
        ("patient_id", tags::PATIENT_ID),
        ("issuer_of_patient_id", tags::ISSUER_OF_PATIENT_ID),
        ("accession_number", tags::ACCESSION_NUMBER),
        ("modality", tags::MODALITY),
        ("study_date", tags::STUDY_DATE),
        ("series_number", tags::SERIES_NUMBER),
        ("instance_number", tags::INSTANCE_NUMBER),
    ] {
        m.insert(name.to_owned(), text(tag));
    }
    m.insert(
        "transfer_syntax_uid".to_owned(),
        obj.meta()
            .transfer_syntax()
            .trim_end_matches(['\0', ' '])
            .to_owned()
            .into(),
    );
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_checked_as_ps3_5_has_them() {
        assert!(is_uid("1.2.840.10008.5.1.4.1.1.7"));
        assert!(is_uid("1.2.0.3"));
        assert!(!is_uid(""));
        assert!(!is_uid("1..2"));
        assert!(!is_uid("1.02"));
        assert!(!is_uid("../../etc/passwd"));
        assert!(!is_uid(&"1.".repeat(40)));
        assert!(is_storage_class("1.2.840.10008.5.1.4.1.1.104.3"), "Encapsulated STL");
        assert!(!is_storage_class("1.2.840.10008.1.1"), "Verification");
    }
}
