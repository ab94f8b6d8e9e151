//! The DIMSE association server against dcmtk's own tools (Debian's
//! `dcmtk`, installed by scripts/services.sh): who may associate, and the
//! Verification service.

mod common;

use std::process::Command;

use common::*;

/// A hub whose DICOM server knows MODALITY1 (echo and store) and ECHOONLY
/// from 127.0.0.1, and FARAWAY from another address.
async fn dicom_hub() -> (Hub, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let storage = std::env::temp_dir().join(format!("carehub-dicom-{}", uuid::Uuid::new_v4().simple()));
    let hub = start_hub_with(
        fresh_db().await,
        vec![
            ("CAREHUB_DICOM__ENABLED", "true".to_owned()),
            ("CAREHUB_DICOM__LISTEN", listen.clone()),
            ("CAREHUB_DICOM__IDLE_SECS", "2".to_owned()),
            ("CAREHUB_DICOM__PEERS__MODALITY__AE_TITLE", "MODALITY1".to_owned()),
            (
                "CAREHUB_DICOM__PEERS__MODALITY__ADDRESSES",
                "[\"127.0.0.1\"]".to_owned(),
            ),
            (
                "CAREHUB_DICOM__PEERS__MODALITY__SERVICES",
                "[\"echo\", \"store\"]".to_owned(),
            ),
            ("CAREHUB_DICOM__PEERS__ECHO__AE_TITLE", "ECHOONLY".to_owned()),
            ("CAREHUB_DICOM__PEERS__ECHO__ADDRESSES", "[\"127.0.0.1\"]".to_owned()),
            ("CAREHUB_DICOM__STORAGE", storage.to_string_lossy().into_owned()),
            ("CAREHUB_DICOM__PEERS__FAR__AE_TITLE", "FARAWAY".to_owned()),
            ("CAREHUB_DICOM__PEERS__FAR__ADDRESSES", "[\"192.0.2.7\"]".to_owned()),
        ],
    )
    .await;
    (hub, port.to_string())
}

/// Runs dcmtk's `echoscu` calling `called` as `calling`: (success, what it printed).
fn echoscu(port: &str, calling: &str, called: &str) -> (bool, String) {
    let out = Command::new("echoscu")
        .args(["-aet", calling, "-aec", called, "-to", "10", "127.0.0.1", port])
        .output()
        .expect("echoscu (dcmtk; scripts/services.sh up installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_configured_peer_is_verified_and_every_other_association_is_rejected_with_its_reason() {
    let (hub, port) = dicom_hub().await;
    let (ok, said) = echoscu(&port, "MODALITY1", "CAREHUB");
    assert!(ok, "C-ECHO from the configured peer: {said}");
    // Twice on one run: a second association works as well as the first.
    let (again, said) = echoscu(&port, "MODALITY1", "CAREHUB");
    assert!(again, "{said}");

    let (ok, said) = echoscu(&port, "STRANGER", "CAREHUB");
    assert!(!ok, "an unknown calling AE title is refused: {said}");
    assert!(said.contains("Association Rejected"), "{said}");
    assert!(
        said.to_lowercase().contains("calling ae title not recognized"),
        "{said}"
    );

    let (ok, said) = echoscu(&port, "MODALITY1", "NOTCAREHUB");
    assert!(!ok, "a wrong called AE title is refused: {said}");
    assert!(said.to_lowercase().contains("called ae title not recognized"), "{said}");

    // A known title from an address it was not given is not that peer.
    let (ok, said) = echoscu(&port, "FARAWAY", "CAREHUB");
    assert!(!ok, "a peer calling from another address is refused: {said}");
    assert!(
        said.to_lowercase().contains("calling ae title not recognized"),
        "{said}"
    );
    drop(hub);
}

#[tokio::test]
async fn a_silent_or_garbled_peer_is_cut_off_and_the_server_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (hub, port) = dicom_hub().await;
    let addr = format!("127.0.0.1:{port}");
    // Not DICOM at all: an A-ASSOCIATE-RQ type byte with a length far past what follows, then garbage.
    let mut garbled = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    garbled
        .write_all(&[0x01, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xde, 0xad])
        .await
        .expect("write");
    garbled.shutdown().await.ok();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(40), garbled.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the garbled association is closed, not held");
    // Silent: connected, says nothing; cut off after idle_secs (2 here).
    let mut silent = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let started = std::time::Instant::now();
    let mut nothing = Vec::new();
    let cut = tokio::time::timeout(std::time::Duration::from_secs(20), silent.read_to_end(&mut nothing)).await;
    assert!(cut.is_ok(), "a silent peer is cut off");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "not before its idle time"
    );
    // Meanwhile and after, a real peer is served.
    let (ok, said) = echoscu(&port, "MODALITY1", "CAREHUB");
    assert!(ok, "{said}");
    drop(hub);
}

/// A DICOM file made by dcmtk's `dump2dcm` from a text dump: Secondary
/// Capture, the given instance UID and patient id.
fn instance(dir: &std::path::Path, name: &str, sop_instance: &str, patient_id: &str) -> std::path::PathBuf {
    let dump = dir.join(format!("{name}.dump"));
    std::fs::write(
        &dump,
        format!(
            "(0008,0016) UI [1.2.840.10008.5.1.4.1.1.7]\n\
             (0008,0018) UI [{sop_instance}]\n\
             (0008,0060) CS [OT]\n\
             (0008,0050) SH [ACC-0001]\n\
             (0010,0020) LO [{patient_id}]\n\
             (0020,000d) UI [1.2.826.0.1.3680043.9.7433.1]\n\
             (0020,000e) UI [1.2.826.0.1.3680043.9.7433.1.2]\n"
        ),
    )
    .expect("dump");
    let file = dir.join(format!("{name}.dcm"));
    let out = Command::new("dump2dcm")
        .arg(&dump)
        .arg(&file)
        .output()
        .expect("dump2dcm (dcmtk)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    file
}

/// dcmtk's `storescu` sending `file` as `calling`: what it printed.
fn storescu(port: &str, calling: &str, file: &std::path::Path) -> String {
    let out = Command::new("storescu")
        .args(["-v", "-aet", calling, "-aec", "CAREHUB", "-to", "10", "127.0.0.1", port])
        .arg(file)
        .output()
        .expect("storescu (dcmtk)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_stored_instance_is_kept_by_its_hash_and_indexed_before_success_and_a_resend_is_harmless() {
    let (hub, port) = dicom_hub().await;
    let dir = std::env::temp_dir().join(format!("carehub-dcm-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let uid = "1.2.826.0.1.3680043.9.7433.1.1";
    let first = instance(&dir, "first", uid, "PID-0001");
    let said = storescu(&port, "MODALITY1", &first);
    assert!(said.contains("Received Store Response (Success)"), "{said}");

    // Answered after the commit: the metadata row and the onward record are there now.
    let pool = &hub.db.pool;
    let meta: (String, Vec<u8>) = sqlx::query_as("SELECT status, raw FROM message WHERE connector = 'dicom'")
        .fetch_one(pool)
        .await
        .expect("one stored instance");
    let meta_json: serde_json::Value = serde_json::from_slice(&meta.1).expect("metadata is JSON");
    assert_eq!(meta_json["sop_instance_uid"], uid);
    assert_eq!(meta_json["patient_id"], "PID-0001");
    assert_eq!(meta_json["accession_number"], "ACC-0001");
    assert_eq!(meta_json["study_instance_uid"], "1.2.826.0.1.3680043.9.7433.1");
    let sha = meta_json["sha256"].as_str().expect("hash").to_owned();
    assert_eq!(
        count(
            pool,
            "SELECT count(*) FROM outbox WHERE payload->>'type' = 'carehub.dicom.instance.received.v1'"
        )
        .await,
        1
    );
    // The kept file is the instance: the data set as sent, readable by dcmtk.
    let storage = env_value(&hub.envs, "CAREHUB_DICOM__STORAGE");
    let kept = std::path::Path::new(&storage)
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(&sha);
    let dumped = Command::new("dcmdump").arg(&kept).output().expect("dcmdump");
    assert!(dumped.status.success(), "{}", String::from_utf8_lossy(&dumped.stderr));
    assert!(String::from_utf8_lossy(&dumped.stdout).contains("PID-0001"));

    // The same instance again: success, no second row, no second record.
    let said = storescu(&port, "MODALITY1", &first);
    assert!(said.contains("Received Store Response (Success)"), "{said}");
    assert_eq!(
        count(pool, "SELECT count(*) FROM message WHERE connector = 'dicom'").await,
        1
    );

    // The same UID with other content: kept as a new version, with a warning.
    let other = instance(&dir, "other", uid, "PID-0002");
    let said = storescu(&port, "MODALITY1", &other);
    assert!(said.contains("Warning"), "{said}");
    assert_eq!(
        count(pool, "SELECT count(*) FROM message WHERE connector = 'dicom'").await,
        2
    );
    assert_eq!(count(pool, "SELECT count(*) FROM message_conflict").await, 1);

    // A peer allowed to echo only may not store: refused, nothing kept.
    let said = storescu(&port, "ECHOONLY", &first);
    assert!(!said.contains("Received Store Response (Success)"), "{said}");
    assert_eq!(
        count(pool, "SELECT count(*) FROM message WHERE connector = 'dicom'").await,
        2
    );
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(storage);
}
