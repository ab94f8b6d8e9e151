//! The DIMSE association server against dcmtk's own tools (Debian's
//! `dcmtk`, installed by scripts/services.sh): who may associate, and the
//! Verification service.

mod common;

use std::process::Command;

use common::*;

/// A hub whose DICOM server knows one peer, MODALITY1, from 127.0.0.1.
async fn dicom_hub() -> (Hub, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
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
